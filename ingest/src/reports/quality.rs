//! Water-quality compliance per analyser against GB 5749-2022 (DOMAIN.md): the share of
//! readings within limits, the time out of limits and the longest excursion.
//!
//! Network analysers are held to the tap limits, a pump station's outlet probe to the
//! leaving-the-plant chlorine residual. Time out of limits runs from a reading out of
//! limits to the next reading within them (a silence inside an excursion counts as out:
//! nothing showed it ended).
//!
//! Reads minute roll-ups, and raw points only inside minutes that cross a limit: a minute
//! whose min and max are both within (or both beyond) the limit has all its readings
//! within (beyond) it, so counts are exact; where an excursion starts or ends on a minute
//! boundary its time is the minute's start (at most one poll interval early).

use protocol::{DeviceKind, Metric, Timestamp};
use store::Store;

use super::model::{AnalyserCompliance, Excursion, Limit, ParameterCompliance, QualityReport};
use super::period::Span;
use super::{ReportError, ReportsState};
use crate::auth::Reader;
use crate::time::rfc3339;

const MINUTE_MS: i64 = 60_000;

/// The limits a point is held to: (metric, min, max, source).
pub fn limits(kind: DeviceKind) -> &'static [(&'static str, Option<f64>, Option<f64>, &'static str)] {
    match kind {
        DeviceKind::WaterQuality => &[
            ("free_chlorine", Some(0.05), Some(2.0), "GB 5749-2022: free chlorine <= 2 mg/L, >= 0.05 mg/L at the tap"),
            (
                "turbidity",
                None,
                Some(1.0),
                "GB 5749-2022: turbidity <= 1 NTU (3 NTU where small supplies are limited by source or treatment)",
            ),
            ("ph", Some(6.5), Some(8.5), "GB 5749-2022: pH 6.5-8.5"),
            (
                "conductivity",
                None,
                Some(1430.0),
                "GB 5749-2022: TDS <= 1000 mg/L, read as conductivity at TDS = 0.7 x conductivity (a site factor, DOMAIN.md)",
            ),
        ],
        DeviceKind::PumpStation => &[(
            "free_chlorine",
            Some(0.3),
            Some(2.0),
            "GB 5749-2022: free chlorine >= 0.3 mg/L leaving the plant, <= 2 mg/L",
        )],
        _ => &[],
    }
}

#[derive(Debug, Default)]
struct Tally {
    samples: u64,
    within: u64,
    sum: f64,
    min: f64,
    max: f64,
    out_ms: i64,
    /// Current excursion: start, worst deviation and its value.
    open: Option<(i64, f64, f64)>,
    longest: Option<(i64, i64, f64)>,
    last_t: i64,
}

impl Tally {
    fn deviation(v: f64, lo: Option<f64>, hi: Option<f64>) -> f64 {
        (lo.map_or(f64::NEG_INFINITY, |l| l - v)).max(hi.map_or(f64::NEG_INFINITY, |h| v - h))
    }

    /// A stretch starting at `t` whose readings are all out (`worst`) or all in.
    fn at(&mut self, t: i64, out: bool, worst: f64, dev: f64) {
        match (&mut self.open, out) {
            (None, true) => self.open = Some((t, dev, worst)),
            (Some(o), true) => {
                if dev > o.1 {
                    o.1 = dev;
                    o.2 = worst;
                }
            }
            (Some(_), false) => self.close(t),
            (None, false) => {}
        }
    }

    fn close(&mut self, t: i64) {
        if let Some((a, _, worst)) = self.open.take() {
            self.out_ms += t - a;
            if self.longest.is_none_or(|l| t - a > l.1 - l.0) {
                self.longest = Some((a, t, worst));
            }
        }
    }
}

fn parameter(
    store: &Store,
    device: &str,
    (metric, lo, hi, source): (&str, Option<f64>, Option<f64>, &str),
    span: &Span,
) -> Result<ParameterCompliance, ReportError> {
    let within = |v: f64| lo.is_none_or(|l| v >= l) && hi.is_none_or(|h| v <= h);
    let minutes = store.range_bucketed(device, metric, Timestamp(span.from), Timestamp(span.to), MINUTE_MS)?;
    let mut t = Tally { min: f64::INFINITY, max: f64::NEG_INFINITY, ..Tally::default() };
    for m in &minutes {
        t.samples += m.count;
        t.sum += m.mean * m.count as f64;
        t.min = t.min.min(m.min);
        t.max = t.max.max(m.max);
        let start = m.start.0;
        t.last_t = start + MINUTE_MS;
        if within(m.min) && within(m.max) {
            t.within += m.count;
            t.at(start, false, 0.0, 0.0);
        } else if hi.is_some_and(|h| m.min > h) || lo.is_some_and(|l| m.max < l) {
            // Wholly beyond one limit.
            let (dmin, dmax) = (Tally::deviation(m.min, lo, hi), Tally::deviation(m.max, lo, hi));
            let (dev, worst) = if dmin >= dmax { (dmin, m.min) } else { (dmax, m.max) };
            t.at(start, true, worst, dev);
        } else {
            // Crosses a limit: read this minute's raw points.
            for p in store.range(device, metric, Timestamp(start), Timestamp(start + MINUTE_MS), usize::MAX)? {
                if !p.value.is_finite() {
                    continue;
                }
                let ok = within(p.value);
                t.within += u64::from(ok);
                t.at(p.ts.0, !ok, p.value, Tally::deviation(p.value, lo, hi));
            }
        }
    }
    let end = t.last_t.min(span.to);
    t.close(end);
    let has = t.samples > 0;
    Ok(ParameterCompliance {
        metric: metric.to_string(),
        unit: Metric::new(metric).unit().to_string(),
        limit: Limit { min: lo, max: hi, source: source.to_string() },
        samples: t.samples,
        within: t.within,
        within_pct: has.then(|| t.within as f64 / t.samples as f64 * 100.0),
        minutes_out: t.out_ms as f64 / MINUTE_MS as f64,
        longest_excursion: t.longest.map(|(a, b, worst)| Excursion {
            from: rfc3339(Timestamp(a)),
            to: rfc3339(Timestamp(b)),
            minutes: (b - a) as f64 / MINUTE_MS as f64,
            worst,
        }),
        min: has.then_some(t.min),
        mean: has.then(|| t.sum / t.samples as f64),
        max: has.then_some(t.max),
    })
}

/// The quality report over `span` for the analysers `reader` may see.
pub fn report(state: &ReportsState, reader: &Reader, span: &Span) -> Result<QualityReport, ReportError> {
    let sites: std::collections::HashMap<String, crate::inventory::Site> =
        state.inventory.sites().into_iter().map(|s| (s.id.clone(), s)).collect();
    let mut analysers = Vec::new();
    for d in state.inventory.devices() {
        let point = match d.kind {
            DeviceKind::WaterQuality => "network",
            DeviceKind::PumpStation => "plant_outlet",
            _ => continue,
        };
        let site = sites.get(&d.site);
        if !site.is_some_and(|s| reader.may_see(&s.tenant)) {
            continue;
        }
        let mut parameters = Vec::new();
        for l in limits(d.kind) {
            parameters.push(parameter(&state.store, &d.id, *l, span)?);
        }
        analysers.push(AnalyserCompliance {
            device: d.id.clone(),
            point: point.into(),
            site: d.site.clone(),
            district: site.and_then(|s| s.district.clone()),
            parameters,
        });
    }
    Ok(QualityReport { period: span.period(), analysers })
}

#[cfg(test)]
mod tests {
    use protocol::DeviceKind;

    use super::*;
    use crate::reports::period::{DAY_MS, HOUR_MS};
    use crate::reports::testing::{APRIL_7, state, write};

    #[test]
    fn an_excursion_is_timed_from_its_first_reading_out_to_the_next_reading_in() {
        let (s, _dir) = state(&[("wq", DeviceKind::WaterQuality, "village"), ("cow-1", DeviceKind::CowCollar, "farm")]);
        // Free chlorine 0.4 mg/L every 10 s, except 0.02 mg/L from 10:00:30 to 10:45:30.
        let (a, b) = (APRIL_7 + 10 * HOUR_MS + 30_000, APRIL_7 + 10 * HOUR_MS + 45 * 60_000 + 30_000);
        write(
            &s,
            "wq",
            "free_chlorine",
            APRIL_7,
            APRIL_7 + DAY_MS,
            10_000,
            |t| if t >= a && t < b { 0.02 } else { 0.4 },
        );
        write(&s, "wq", "ph", APRIL_7, APRIL_7 + DAY_MS, 10_000, |_| 7.4);
        let r = report(&s, &Reader(None), &Span::day(APRIL_7)).unwrap();
        assert_eq!(r.analysers.len(), 1);
        let cl = &r.analysers[0].parameters[0];
        assert_eq!((cl.metric.as_str(), cl.samples), ("free_chlorine", 8640));
        assert_eq!(cl.samples - cl.within, 270, "45 minutes of readings out");
        assert!((cl.minutes_out - 45.0).abs() < 1e-9, "{cl:?}");
        let ex = cl.longest_excursion.as_ref().unwrap();
        assert_eq!((ex.minutes, ex.worst), (45.0, 0.02));
        assert_eq!(ex.from, rfc3339(Timestamp(a)));
        // Positive control: pH stayed within 6.5-8.5 all day.
        let ph = r.analysers[0].parameters.iter().find(|p| p.metric == "ph").unwrap();
        assert_eq!((ph.within_pct, ph.minutes_out, ph.longest_excursion.is_none()), (Some(100.0), 0.0, true));
        // Turbidity was not measured: no samples, no percentage, not 0 % or 100 %.
        let tu = r.analysers[0].parameters.iter().find(|p| p.metric == "turbidity").unwrap();
        assert_eq!((tu.samples, tu.within_pct), (0, None));
        // A dairy reader sees no analyser of the county.
        let dairy = Reader(Some(crate::auth::Principal::new("d", crate::auth::Role::Viewer, vec!["dairy".into()])));
        assert!(report(&s, &dairy, &Span::day(APRIL_7)).unwrap().analysers.is_empty());
    }
}
