//! The herd's day: cows flagged for fever, estrus or a rumination drop against their own
//! baselines, with the evidence, most urgent first; herd averages; heat-stress hours.
//!
//! Flags come from the herd rules themselves: the `animal_baseline` rules in force (the
//! alert manager's, else the shipped dairy pack) are replayed by a fresh
//! [`Evaluator`] over each cow's history, from as far back as their baseline reaches to the
//! day's end, so a cow is judged against her own normal exactly as the live rules learn it.
//! The replay is fed 10-minute means from the minute roll-ups rather than every reading:
//! the rules smooth over 30 minutes to 2 hours and hold for 30 minutes or more, so an
//! episode the live rules flag is flagged here too, its start and end within ten minutes
//! of theirs (a flag that lasted under ten minutes longer than its hold can be missed).
//!
//! Heat stress: THI (NRC formula, DOMAIN.md) per minute, from the barn sensor's own `thi`
//! series where it has one, else from its temperature and humidity; hours per band
//! (68-71 mild, 72-79 moderate, 80-89 severe, >= 90 extreme).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use protocol::{DeviceKind, Metric, Reading, Timestamp};
use store::Store;

use super::model::{BarnHeat, Condition, CowFlag, Evidence, HerdAverages, HerdReport};
use super::period::{DAY_MS, HOUR_MS, Span};
use super::{ReportError, ReportsState};
use crate::auth::Reader;
use crate::rules::eval::Evaluator;
use crate::rules::kinds::animal_baseline::{AnimalBaseline, AnimalMethod};
use crate::rules::kinds::{Kind, Rule};
use crate::rules::stats::Cond;
use crate::time::rfc3339;

/// Width of the means the rules are replayed on.
pub const REPLAY_STEP_MS: i64 = 10 * 60_000;
const MINUTE_MS: i64 = 60_000;

/// The animal-baseline rules in force: the alert manager's, else the shipped packs'.
fn herd_rules(state: &ReportsState) -> Vec<Rule> {
    let all: Vec<Rule> = match &state.alerts {
        Some(a) => a.rules().iter().map(|r| (**r).clone()).collect(),
        None => crate::rules::config::RuleSet::defaults().map(|s| s.rules).unwrap_or_default(),
    };
    all.into_iter().filter(|r| matches!(r.kind, Kind::AnimalBaseline(_))).collect()
}

fn params(rule: &Rule) -> Option<&AnimalBaseline> {
    match &rule.kind {
        Kind::AnimalBaseline(k) => Some(k),
        _ => None,
    }
}

fn condition(k: &AnimalBaseline) -> Condition {
    match k.method {
        AnimalMethod::Rise { .. } => Condition::Fever,
        AnimalMethod::RatioAbove { .. } => Condition::Estrus,
        AnimalMethod::RatioBelow { .. } => Condition::RuminationDrop,
    }
}

/// One flag found by the replay, before it has its evidence.
#[derive(Debug, Clone)]
struct Found {
    cow: String,
    rule: Arc<Rule>,
    since: i64,
    until: Option<i64>,
    value: f64,
}

/// Replays the rules over one cow; returns the firing intervals that touch the day.
fn replay(
    state: &ReportsState,
    e: &mut Evaluator,
    rules: &[Rule],
    cow: &str,
    span: &Span,
    back_ms: i64,
) -> Result<(Vec<Found>, bool), ReportError> {
    let metrics: Vec<Metric> = rules.iter().filter_map(params).map(|k| k.metric.clone()).collect();
    let mut readings: Vec<Reading> = Vec::new();
    for m in &metrics {
        if readings.iter().any(|r| r.metric == *m) {
            continue;
        }
        for b in state.store.range_bucketed(
            cow,
            m.name(),
            Timestamp(span.from - back_ms),
            Timestamp(span.to),
            REPLAY_STEP_MS,
        )? {
            readings.push(Reading::new(cow, m.clone(), Timestamp(b.start.0 + REPLAY_STEP_MS), b.mean));
        }
    }
    let reporting = readings.iter().any(|r| r.ts.0 > span.from);
    readings.sort_by_key(|r| r.ts.0);
    let mut open: HashMap<String, Found> = HashMap::new();
    let mut out = Vec::new();
    for s in e.readings(&readings) {
        match s.cond {
            Cond::Firing { since } => {
                open.insert(
                    s.rule.id.clone(),
                    Found {
                        cow: cow.to_string(),
                        rule: s.rule.clone(),
                        since,
                        until: None,
                        value: s.value.unwrap_or(0.0),
                    },
                );
            }
            Cond::Clear => {
                if let Some(mut f) = open.remove(&s.rule.id) {
                    f.until = Some(s.at);
                    if s.at > span.from {
                        out.push(f);
                    }
                }
            }
            Cond::Pending { .. } => {}
        }
    }
    out.extend(open.into_values().filter(|f| f.since < span.to));
    Ok((out, reporting))
}

/// Her hourly means over `[from, to)`.
fn hourly(store: &Store, cow: &str, metric: &str, from: i64, to: i64) -> Result<Vec<(i64, f64)>, ReportError> {
    Ok(store
        .range_bucketed(cow, metric, Timestamp(from), Timestamp(to), HOUR_MS)?
        .into_iter()
        .map(|b| (b.start.0, b.mean))
        .collect())
}

fn evidence(store: &Store, f: &Found, k: &AnimalBaseline, span: &Span) -> Result<Evidence, ReportError> {
    let metric = k.metric.name();
    let readings = hourly(store, &f.cow, metric, span.from, span.to)?;
    // Her normal: the baseline's span before the flag, at the flag's hour of day where the
    // rule compares hours of day.
    let history = hourly(store, &f.cow, metric, f.since - k.baseline_ms, f.since - f.since.rem_euclid(HOUR_MS))?;
    let hour = |t: i64| (t + (k.utc_offset_hours * HOUR_MS as f64) as i64).rem_euclid(DAY_MS) / HOUR_MS;
    let used: Vec<f64> = history
        .iter()
        .filter(|(t, _)| !k.hour_of_day || (hour(*t) - hour(f.since)).abs() <= 1)
        .map(|(_, v)| *v)
        .collect();
    let (comparison, threshold) = match k.method {
        AnimalMethod::Rise { by } => ("rise", by),
        AnimalMethod::RatioAbove { ratio } | AnimalMethod::RatioBelow { ratio } => ("ratio", ratio),
    };
    Ok(Evidence {
        metric: metric.to_string(),
        unit: Metric::new(metric).unit().to_string(),
        comparison: comparison.into(),
        value: f.value,
        threshold,
        baseline: (!used.is_empty()).then(|| used.iter().sum::<f64>() / used.len() as f64),
        readings: readings.into_iter().map(|(t, v)| (rfc3339(Timestamp(t)), v)).collect(),
    })
}

/// How far beyond its limit a flag is (1 at the limit).
fn beyond(e: &Evidence) -> f64 {
    if e.comparison == "rise" || e.threshold >= 1.0 {
        e.value / e.threshold.max(1e-9)
    } else {
        e.threshold / e.value.max(1e-9)
    }
}

fn heat(store: &Store, barn: &str, span: &Span) -> Result<BarnHeat, ReportError> {
    let (a, b) = (Timestamp(span.from), Timestamp(span.to));
    let mut thi: Vec<f64> = store.range_bucketed(barn, "thi", a, b, MINUTE_MS)?.into_iter().map(|x| x.mean).collect();
    if thi.is_empty() {
        let t: BTreeMap<i64, f64> = store
            .range_bucketed(barn, "barn_temperature", a, b, MINUTE_MS)?
            .into_iter()
            .map(|x| (x.start.0, x.mean))
            .collect();
        for h in store.range_bucketed(barn, "relative_humidity", a, b, MINUTE_MS)? {
            if let Some(t) = t.get(&h.start.0) {
                // NRC: THI = (1.8 T + 32) - (0.55 - 0.0055 RH)(1.8 T - 26) (DOMAIN.md, as the `thi` rule).
                thi.push((1.8 * t + 32.0) - (0.55 - 0.0055 * h.mean) * (1.8 * t - 26.0));
            }
        }
    }
    let hours = |lo: f64, hi: f64| thi.iter().filter(|v| **v >= lo && **v < hi).count() as f64 / 60.0;
    let (moderate, severe, extreme) = (hours(72.0, 80.0), hours(80.0, 90.0), hours(90.0, f64::INFINITY));
    Ok(BarnHeat {
        device: barn.to_string(),
        mild_hours: hours(68.0, 72.0),
        moderate_hours: moderate,
        severe_hours: severe,
        extreme_hours: extreme,
        stress_hours: moderate + severe + extreme,
        max_thi: thi.iter().copied().reduce(f64::max),
        hours_with_data: thi.len() as f64 / 60.0,
    })
}

/// The herd report of one local day for the herds `reader` may see.
pub fn report(state: &ReportsState, reader: &Reader, span: &Span) -> Result<HerdReport, ReportError> {
    let rules = herd_rules(state);
    let back_ms = rules.iter().filter_map(params).map(|k| k.baseline_ms + k.smoothing_ms).max().unwrap_or(0);
    let devices = state.inventory.devices();
    let visible = |id: &str| state.inventory.tenant_of(id).is_some_and(|t| reader.may_see(&t));
    let mut found = Vec::new();
    let mut averages = HerdAverages::default();
    let mut sums: BTreeMap<&str, (f64, u32)> = BTreeMap::new();
    // One evaluator for the herd: each cow's series is her own, fed one cow at a time.
    let mut evaluator = Evaluator::new(rules.clone(), state.inventory.clone(), None);
    for d in devices.iter().filter(|d| d.kind == DeviceKind::CowCollar && visible(&d.id)) {
        let (flags, reporting) = replay(state, &mut evaluator, &rules, &d.id, span, back_ms)?;
        if !reporting {
            // A collar hub (its cows are the devices) or a cow without data that day.
            let ever = state.store.range_bucketed(
                &d.id,
                "body_temperature",
                Timestamp(span.from - back_ms),
                Timestamp(span.to),
                DAY_MS,
            )?;
            averages.cows += u32::from(!ever.is_empty());
            continue;
        }
        averages.cows += 1;
        averages.cows_reporting += 1;
        for metric in ["body_temperature", "activity", "rumination", "milk_yield"] {
            let b = state.store.range_bucketed(&d.id, metric, Timestamp(span.from), Timestamp(span.to), HOUR_MS)?;
            let n: u64 = b.iter().map(|x| x.count).sum();
            if n > 0 {
                let mean = b.iter().map(|x| x.mean * x.count as f64).sum::<f64>() / n as f64;
                let e = sums.entry(metric).or_default();
                e.0 += mean;
                e.1 += 1;
            }
        }
        found.extend(flags);
    }
    let mean = |m: &str| sums.get(m).filter(|s| s.1 > 0).map(|s| s.0 / f64::from(s.1));
    averages.body_temperature_c = mean("body_temperature");
    averages.activity = mean("activity");
    averages.rumination = mean("rumination");
    averages.milk_yield = mean("milk_yield");
    let mut flagged = Vec::new();
    for f in &found {
        let Some(k) = params(&f.rule) else { continue };
        let ev = evidence(&state.store, f, k, span)?;
        let (a, b) = (f.since.max(span.from), f.until.unwrap_or(span.to).min(span.to));
        flagged.push(CowFlag {
            cow: f.cow.clone(),
            condition: condition(k),
            rule: f.rule.id.clone(),
            severity: format!("{:?}", f.rule.severity).to_lowercase(),
            since: rfc3339(Timestamp(f.since)),
            until: f.until.filter(|u| *u <= span.to).map(|u| rfc3339(Timestamp(u))),
            hours: (b - a).max(0) as f64 / HOUR_MS as f64,
            rank: 0,
            evidence: ev,
        });
    }
    // Most urgent first: severity, still flagged at the day's end, how far beyond the limit.
    let sev = |s: &str| match s {
        "critical" => 0,
        "warning" => 1,
        _ => 2,
    };
    flagged.sort_by(|x, y| {
        sev(&x.severity)
            .cmp(&sev(&y.severity))
            .then(x.until.is_some().cmp(&y.until.is_some()))
            .then(beyond(&y.evidence).total_cmp(&beyond(&x.evidence)))
            .then(x.cow.cmp(&y.cow))
    });
    for (i, f) in flagged.iter_mut().enumerate() {
        f.rank = i as u32 + 1;
    }
    let mut heat_stress = Vec::new();
    for d in devices.iter().filter(|d| d.kind == DeviceKind::BarnClimate && visible(&d.id)) {
        heat_stress.push(heat(&state.store, &d.id, span)?);
    }
    Ok(HerdReport {
        period: span.period(),
        flagged,
        averages,
        heat_stress,
        method: format!(
            "Flags: the animal_baseline rules ({}) replayed over each cow's 10-minute means (minute roll-ups) \
             from her baseline's start to the day's end. Averages: per-cow means of the day (hour roll-ups), \
             then the mean over cows. Heat stress: minute means of THI.",
            rules.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use protocol::DeviceKind;

    use super::*;
    use crate::reports::testing::{APRIL_7, state, write};

    #[test]
    fn a_cow_with_fever_is_flagged_against_her_own_normal_with_the_evidence() {
        let (s, _dir) = state(&[
            ("cow-1", DeviceKind::CowCollar, "farm"),
            ("cow-2", DeviceKind::CowCollar, "farm"),
            ("barn", DeviceKind::BarnClimate, "farm"),
        ]);
        let day = APRIL_7 + 3 * DAY_MS;
        let onset = day + 10 * HOUR_MS;
        // Three normal days, then cow-1 runs 1.2 °C above her 38.6 from 10:00; cow-2 stays well.
        let normal = |t: i64| 38.6 + 0.1 * ((t / 600_000) % 3) as f64;
        write(&s, "cow-1", "body_temperature", APRIL_7, day + DAY_MS, 300_000, |t| {
            normal(t) + if t >= onset { 1.2 } else { 0.0 }
        });
        write(&s, "cow-2", "body_temperature", APRIL_7, day + DAY_MS, 300_000, normal);
        // Six hours of moderate heat stress in the barn.
        write(&s, "barn", "thi", day, day + DAY_MS, 60_000, |t| {
            if t >= onset && t < onset + 6 * HOUR_MS { 75.0 } else { 65.0 }
        });
        let r = report(&s, &Reader(None), &Span::day(day)).unwrap();
        assert_eq!(r.flagged.len(), 1, "{:?}", r.flagged);
        let f = &r.flagged[0];
        assert_eq!((f.cow.as_str(), f.condition, f.rule.as_str(), f.rank), ("cow-1", Condition::Fever, "cow-fever", 1));
        let since = crate::time::parse(&f.since).unwrap().0;
        assert!(since >= onset && since <= onset + 2 * HOUR_MS, "{}", f.since);
        assert!(f.evidence.value >= 0.8 && f.evidence.threshold == 0.8, "{:?}", f.evidence);
        assert!(f.evidence.baseline.is_some_and(|b| (b - 38.7).abs() < 0.1), "{:?}", f.evidence);
        assert_eq!(f.evidence.readings.len(), 24);
        assert_eq!((r.averages.cows, r.averages.cows_reporting), (2, 2));
        assert_eq!(r.heat_stress[0].moderate_hours, 6.0);
        assert_eq!(r.heat_stress[0].stress_hours, 6.0);
        // A county reader sees no herd.
        let county = Reader(Some(crate::auth::Principal::new("c", crate::auth::Role::Viewer, vec!["county".into()])));
        let hidden = report(&s, &county, &Span::day(day)).unwrap();
        assert!(hidden.flagged.is_empty() && hidden.averages.cows == 0 && hidden.heat_stress.is_empty());
    }
}
