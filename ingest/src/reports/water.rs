//! The water balance of every district metered area, per day and per month, in IWA terms:
//! system input volume (the inlets' counters), billed metered consumption (the customer
//! meters' counters), non-revenue water, CJJ 92-2016 leakage rates, and minimum night flow
//! with its trend and the leakage it implies.
//!
//! How a counter becomes volume: each meter's `volume_total` hour roll-ups are fed, hour by
//! hour, to the rules' [`Consumption`] (the hour's `max` just before its end, its `last` at
//! its end), so rollover, replacement and gaps read exactly as the `mass_balance` rule reads
//! them. Feeding `max` before `last` keeps a replacement inside an hour: the old meter's
//! rise up to its last reading, then the new meter's count.
//!
//! Design constraints:
//! - A silent meter or gateway is never read as "no use": across a silence the volume is
//!   the difference of the totals on either side (exact in sum), only its split over the
//!   silence is interpolated, and that split is reported as estimated where it decides a
//!   day's figure (a silence over midnight). A meter with nothing after the period's end
//!   yet is extrapolated at its own mean rate, one with nothing at all at the district's
//!   mean per meter: both are estimates and counted as such.
//! - One meter's series is in memory at a time: a month of 15,000 meters is a stream of
//!   small queries, not one large one.
//! - Hour roll-ups answer exactly when a reading's time within its hour does not matter:
//!   a day boundary falls on a whole hour, so the total at midnight is the last reading of
//!   the hour before it. The figure differs from raw points only by the use between a
//!   meter's last reading of that hour and the hour's end (one poll interval).

use std::collections::BTreeMap;

use protocol::Timestamp;
use store::{Bucket, Store};

use super::districts::{self, Dma};
use super::model::{
    Balance, Completeness, DayBalance, DistrictBalance, LeakageRate, MeterUse, Night, NightFlowTrend, Silence,
    WaterBalanceReport,
};
use super::period::{DAY_MS, HOUR_MS, Span, local_date};
use super::{ReportError, ReportsState};
use crate::auth::Reader;
use crate::rules::counter::{self, Consumption};
use crate::rules::kinds::Kind;
use crate::time::rfc3339;

/// Counters of the simulated and most real meters: u32 litres read as m³ (the same default
/// as the `mass_balance` rule's `counter_modulus`; a district-loss rule with its own
/// modulus overrides it).
pub const DEFAULT_MODULUS: f64 = 4_294_967.296;
/// How far before and after the period a counter is read, to have a total on either side
/// of a silence that crosses its edge.
pub const LOOKAROUND_MS: i64 = DAY_MS;
/// Nights before the period in the MNF baseline (DOMAIN.md: a rise over its baseline of a
/// few days signals a new leak; the `night-flow-rise` rule uses 7).
pub const BASELINE_NIGHTS: i64 = 7;
/// The night window, local hours (DOMAIN.md: minimum night flow 02:00-04:00).
pub const NIGHT: (i64, i64) = (2, 4);
/// Means of this long before taking the minimum (the `night-flow-rise` rule's smoothing).
pub const NIGHT_SMOOTHING_MS: i64 = 15 * 60_000;

const METRIC_TOTAL: &str = "volume_total";
const METRIC_FLOW: &str = "flow";

/// A counter's hour roll-ups as cumulative consumption.
struct CounterSeries {
    c: Consumption,
    /// Times of the points fed (sorted), for finding silences.
    times: Vec<i64>,
    /// (hour end, raw total) of each hour with data: the reads a bill shows.
    reads: Vec<(i64, f64)>,
    /// (time, total) fed in order: (hour end - 1 ms, max), (hour end, last).
    fed: Vec<(i64, f64)>,
}

impl CounterSeries {
    fn of(buckets: &[Bucket], modulus: f64) -> CounterSeries {
        let mut c = Consumption::new(modulus, 1, i64::MAX / 4);
        let mut times = Vec::with_capacity(buckets.len() * 2);
        let mut fed = Vec::with_capacity(buckets.len() * 2);
        let mut reads = Vec::with_capacity(buckets.len());
        for b in buckets {
            let end = b.start.0 + HOUR_MS;
            for (t, v) in [(end - 1, b.max), (end, b.last)] {
                if v.is_finite() && c.last_ts().is_none_or(|l| t > l) {
                    c.push(t, v);
                    times.push(t);
                    fed.push((t, v));
                }
            }
            if b.last.is_finite() {
                reads.push((end, b.last));
            }
        }
        CounterSeries { c, times, reads, fed }
    }

    fn first(&self) -> Option<i64> {
        self.times.first().copied()
    }

    fn last(&self) -> Option<i64> {
        self.times.last().copied()
    }

    /// Mean rate of use over the data (m³ per ms).
    fn rate(&self) -> f64 {
        match (self.first(), self.last()) {
            (Some(a), Some(b)) if b > a => self.c.between(a, b).unwrap_or(0.0) / (b - a) as f64,
            _ => 0.0,
        }
    }

    /// Cumulative use at `t`, extrapolated at the mean rate outside the data; `None` without data.
    fn cum(&self, t: i64) -> Option<f64> {
        let (a, b) = (self.first()?, self.last()?);
        let r = self.rate();
        if t < a {
            Some(self.c.at(a)? - r * (a - t) as f64)
        } else if t > b {
            Some(self.c.at(b)? + r * (t - b) as f64)
        } else {
            self.c.at(t)
        }
    }

    /// The silence around `t`: the points before and after it, when `t` is not a point.
    fn gap_around(&self, t: i64) -> Option<(i64, i64)> {
        let i = self.times.partition_point(|&x| x < t);
        if self.times.get(i) == Some(&t) {
            return None;
        }
        Some((*self.times.get(i.checked_sub(1)?)?, *self.times.get(i)?))
    }

    /// Use over `[a, b)` and the part of it that is estimated; `None` without any data.
    fn interval(&self, a: i64, b: i64) -> Option<(f64, f64)> {
        let (first, last) = (self.first()?, self.last()?);
        let vol = (self.cum(b)? - self.cum(a)?).max(0.0);
        let r = self.rate();
        // Extrapolated: before the first and after the last point.
        let mut est = r * ((first.min(b) - a).max(0) + (b - last.max(a)).max(0)) as f64;
        // Interpolated across a silence that crosses an edge of the interval.
        if let Some((_, q)) = self.gap_around(a).filter(|_| a >= first && a <= last) {
            est += (self.cum(q.min(b))? - self.cum(a)?).max(0.0);
        }
        if let Some((p, _)) = self.gap_around(b).filter(|_| b >= first && b <= last) {
            est += (self.cum(b)? - self.cum(p.max(a))?).max(0.0);
        }
        Some((vol, est.min(vol)))
    }

    /// Whether the counter was replaced (fell) or rolled over between `a` and `b`, read by
    /// the rules' own [`counter::step`].
    fn events(&self, a: i64, b: i64, modulus: f64) -> (bool, bool) {
        let (mut replaced, mut rolled) = (false, false);
        for w in self.fed.windows(2) {
            if w[1].0 <= a || w[1].0 > b {
                continue;
            }
            match counter::step(w[0].1, w[1].1, modulus) {
                counter::Step::Reset(_) => replaced = true,
                counter::Step::Rollover(_) => rolled = true,
                counter::Step::Increase(_) => {}
            }
        }
        (replaced, rolled)
    }
}

/// Hours of `[from, to)` with data, as a bitmap (index = hour since `from`).
fn hours_with_data(buckets: &[Bucket], from: i64, to: i64) -> Vec<bool> {
    let n = ((to - from) / HOUR_MS) as usize;
    let mut out = vec![false; n];
    for b in buckets {
        if b.start.0 >= from && b.start.0 < to && b.count > 0 {
            out[((b.start.0 - from) / HOUR_MS) as usize] = true;
        }
    }
    out
}

/// The counter modulus the district-loss rule uses, else [`DEFAULT_MODULUS`].
pub fn modulus(state: &ReportsState) -> f64 {
    state
        .alerts
        .as_ref()
        .and_then(|a| {
            a.rules().iter().find_map(|r| match &r.kind {
                Kind::MassBalance(m) => Some(m.modulus),
                _ => None,
            })
        })
        .unwrap_or(DEFAULT_MODULUS)
}

/// What one meter contributes to a district's figures.
#[derive(Debug, Default)]
struct MeterFigures {
    /// Per day: use (`None`: no data at all), estimated part.
    days: Vec<(Option<f64>, f64)>,
    /// Per night of the period: metered use 02:00-04:00 (m³).
    nights: Vec<Option<f64>>,
    /// Hours of the period with data.
    hours: Vec<bool>,
}

fn meter_figures(store: &Store, id: &str, span: &Span, modulus: f64) -> Result<MeterFigures, ReportError> {
    let buckets = store.range_bucketed(
        id,
        METRIC_TOTAL,
        Timestamp(span.from - LOOKAROUND_MS),
        Timestamp(span.to + LOOKAROUND_MS),
        HOUR_MS,
    )?;
    let s = CounterSeries::of(&buckets, modulus);
    let days = span.days().map(|d| s.interval(d, d + DAY_MS).map_or((None, 0.0), |(v, e)| (Some(v), e))).collect();
    let nights = span
        .days()
        .map(|d| {
            let (a, b) = (d + NIGHT.0 * HOUR_MS, d + NIGHT.1 * HOUR_MS);
            // Night use only where both ends were read: an interpolated night is no measurement.
            let read = |t: i64| s.gap_around(t).is_none() && s.first().is_some_and(|f| f <= t) && s.last() >= Some(t);
            (read(a) && read(b)).then(|| s.c.between(a, b)).flatten()
        })
        .collect();
    Ok(MeterFigures { days, nights, hours: hours_with_data(&buckets, span.from, span.to) })
}

/// One meter's billing figure over `span` (start and end reads, use, flags).
pub fn meter_use(store: &Store, meter: &str, span: &Span, modulus: f64) -> Result<MeterUse, ReportError> {
    let buckets = store.range_bucketed(
        meter,
        METRIC_TOTAL,
        Timestamp(span.from - LOOKAROUND_MS),
        Timestamp(span.to + LOOKAROUND_MS),
        HOUR_MS,
    )?;
    let s = CounterSeries::of(&buckets, modulus);
    let start = s.reads.iter().rev().find(|r| r.0 <= span.from).or_else(|| s.reads.iter().find(|r| r.0 > span.from));
    let end = s.reads.iter().rev().find(|r| r.0 <= span.to);
    let used = s.interval(span.from, span.to);
    let (replaced, rolled_over) = s.events(span.from, span.to, modulus);
    let hours = hours_with_data(&buckets, span.from, span.to);
    let missing_days = hours.chunks(24).filter(|d| !d.iter().any(|h| *h)).count() as u32;
    Ok(MeterUse {
        meter: meter.to_string(),
        start_read_m3: start.map(|r| r.1),
        start_at: start.map(|r| rfc3339(Timestamp(r.0))),
        end_read_m3: end.map(|r| r.1),
        end_at: end.map(|r| rfc3339(Timestamp(r.0))),
        consumption_m3: used.map(|u| u.0),
        estimated_m3: used.map_or(0.0, |u| u.1),
        replaced,
        rolled_over,
        missing_days,
        hours_with_data: hours.iter().filter(|h| **h).count() as u32,
    })
}

/// Sums of meters per day, and who was silent when.
#[derive(Debug, Default, Clone)]
struct Sums {
    /// Per day: volume, estimated part.
    days: Vec<(f64, f64)>,
    /// Meters with no data at all, per day.
    silent: Vec<u32>,
    /// Device-hours with data, per day.
    hours: Vec<u32>,
}

impl Sums {
    fn new(days: usize) -> Sums {
        Sums { days: vec![(0.0, 0.0); days], silent: vec![0; days], hours: vec![0; days] }
    }

    fn add(&mut self, f: &MeterFigures) {
        for (i, (v, e)) in f.days.iter().enumerate() {
            match v {
                Some(v) => {
                    self.days[i].0 += v;
                    self.days[i].1 += e;
                }
                None => self.silent[i] += 1,
            }
            self.hours[i] += f.hours[i * 24..(i + 1) * 24].iter().filter(|h| **h).count() as u32;
        }
    }

    /// Fills in the meters silent all day at the mean of the others (an estimate).
    fn fill_silent(&mut self, meters: usize) {
        for i in 0..self.days.len() {
            let silent = self.silent[i] as usize;
            let reporting = meters.saturating_sub(silent);
            if silent > 0 && reporting > 0 {
                let extra = self.days[i].0 / reporting as f64 * silent as f64;
                self.days[i].0 += extra;
                self.days[i].1 += extra;
            }
        }
    }
}

/// Everything computed for one district before it becomes JSON.
struct DistrictData {
    dma: Dma,
    input: Sums,
    used: Sums,
    /// Per night: customers' metered night use (m³ over the window), and whether every
    /// customer meter was read at both ends.
    night_use: Vec<(f64, u32)>,
    silences: Vec<Silence>,
    silences_total: u32,
    nights: Vec<Night>,
}

fn district_data(store: &Store, dma: Dma, span: &Span, modulus: f64) -> Result<DistrictData, ReportError> {
    let n = span.days().count();
    let hours = n * 24;
    let mut input = Sums::new(n);
    let mut used = Sums::new(n);
    let mut night_use = vec![(0.0, 0u32); n];
    // Per gateway: hours in which any of this district's devices on it reported.
    let mut gw_hours: BTreeMap<String, Vec<bool>> = BTreeMap::new();
    let mut device_hours: Vec<(String, &'static str, Vec<bool>)> = Vec::new();
    for (id, inlet) in dma.inlets.iter().map(|i| (i, true)).chain(dma.customers.iter().map(|c| (c, false))) {
        let f = meter_figures(store, id, span, modulus)?;
        if inlet {
            input.add(&f);
        } else {
            used.add(&f);
            for (i, u) in f.nights.iter().enumerate() {
                if let Some(u) = u {
                    night_use[i].0 += u;
                    night_use[i].1 += 1;
                }
            }
        }
        let gw = dma.gateway_of.get(id).cloned().unwrap_or_default();
        let g = gw_hours.entry(gw).or_insert_with(|| vec![false; hours]);
        for (a, b) in g.iter_mut().zip(&f.hours) {
            *a |= *b;
        }
        if f.hours.iter().any(|h| !*h) {
            device_hours.push((id.clone(), if inlet { "inlet" } else { "meter" }, f.hours));
        }
    }
    used.fill_silent(dma.customers.len());
    // Silences: whole gateways first, then devices outside their gateway's silences.
    let mut silences = Vec::new();
    for (gw, h) in &gw_hours {
        silences.extend(runs(h, span.from).into_iter().map(|(a, b)| silence("gateway", gw, a, b)));
    }
    for (id, what, h) in &device_hours {
        let gw = dma.gateway_of.get(id).and_then(|g| gw_hours.get(g));
        let own: Vec<bool> = h.iter().enumerate().map(|(i, x)| *x || gw.is_some_and(|g| !g[i])).collect();
        silences.extend(runs(&own, span.from).into_iter().map(|(a, b)| silence(what, id, a, b)));
    }
    let silences_total = silences.len() as u32;
    silences.truncate(Completeness::MAX_SILENCES);
    let nights = night_flow(store, &dma, span, &night_use)?;
    Ok(DistrictData { dma, input, used, night_use, silences, silences_total, nights })
}

/// Runs of hours without data: (start, end) in ms.
fn runs(hours: &[bool], from: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, h) in hours.iter().chain(std::iter::once(&true)).enumerate() {
        match (h, start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                out.push((from + s as i64 * HOUR_MS, from + i as i64 * HOUR_MS));
                start = None;
            }
            _ => {}
        }
    }
    out
}

fn silence(source: &str, id: &str, a: i64, b: i64) -> Silence {
    Silence {
        source: source.into(),
        id: id.into(),
        from: rfc3339(Timestamp(a)),
        to: rfc3339(Timestamp(b)),
        hours: (b - a) as f64 / HOUR_MS as f64,
    }
}

/// The summed 15-minute means of the inlets' flow over one night window; the minimum of
/// the buckets where every inlet reported, and whether all buckets were there.
fn night_minimum(store: &Store, inlets: &[String], night_start: i64) -> Result<(Option<f64>, bool), ReportError> {
    let (a, b) = (night_start, night_start + (NIGHT.1 - NIGHT.0) * HOUR_MS);
    let expected = ((b - a) / NIGHT_SMOOTHING_MS) as usize;
    let mut sum: BTreeMap<i64, (f64, usize)> = BTreeMap::new();
    for inlet in inlets {
        for q in store.range_bucketed(inlet, METRIC_FLOW, Timestamp(a), Timestamp(b), NIGHT_SMOOTHING_MS)? {
            let e = sum.entry(q.start.0).or_default();
            e.0 += q.mean;
            e.1 += 1;
        }
    }
    let full: Vec<f64> = sum.values().filter(|(_, k)| *k == inlets.len()).map(|(v, _)| *v).collect();
    let complete = !inlets.is_empty() && full.len() == expected;
    Ok((full.into_iter().reduce(f64::min), complete))
}

fn night_flow(store: &Store, dma: &Dma, span: &Span, night_use: &[(f64, u32)]) -> Result<Vec<Night>, ReportError> {
    let window_h = (NIGHT.1 - NIGHT.0) as f64;
    let mut history: Vec<(Option<f64>, bool)> = Vec::new();
    for k in (1..=BASELINE_NIGHTS).rev() {
        history.push(night_minimum(store, &dma.inlets, span.from - k * DAY_MS + NIGHT.0 * HOUR_MS)?);
    }
    let mut out = Vec::new();
    for (i, d) in span.days().enumerate() {
        let (mnf, complete) = night_minimum(store, &dma.inlets, d + NIGHT.0 * HOUR_MS)?;
        let mut base: Vec<f64> =
            history[history.len() - BASELINE_NIGHTS as usize..].iter().filter(|n| n.1).filter_map(|n| n.0).collect();
        base.sort_by(f64::total_cmp);
        let baseline = (base.len() >= 3).then(|| base[base.len() / 2]);
        let all_read = night_use[i].1 as usize == dma.customers.len() && !dma.customers.is_empty();
        let use_m3h = all_read.then(|| night_use[i].0 / window_h);
        out.push(Night {
            date: local_date(d),
            mnf_m3h: mnf,
            night_use_m3h: use_m3h,
            implied_leakage_m3h: mnf.zip(use_m3h).map(|(m, u)| (m - u).max(0.0)),
            baseline_m3h: baseline,
            change_m3h: mnf.zip(baseline).map(|(m, b)| m - b),
            complete,
        });
        history.push((mnf, complete));
    }
    Ok(out)
}

/// Balance of input, use and connections over `days` days.
fn balance(
    input: (f64, f64),
    used: (f64, f64),
    connections: u32,
    days: f64,
    coverage: (u64, u64),
    meters_silent: u32,
    silences: (Vec<Silence>, u32),
) -> Balance {
    let nrw = input.0 - used.0;
    let pct = |x: f64| (input.0 > 0.0).then(|| x / input.0 * 100.0);
    let comprehensive = pct(nrw);
    // CJJ 92-2016 R1: 0.08 x the share of supply metered at households.
    let r1 = pct(used.0).map(|share| 0.08 * share);
    let assessed = comprehensive.zip(r1).map(|(c, r)| c - r);
    let grade = assessed.map(|a| {
        if a <= 10.0 {
            "grade_1"
        } else if a <= 12.0 {
            "grade_2"
        } else {
            "above"
        }
        .to_string()
    });
    let coverage_pct = if coverage.1 == 0 { 0.0 } else { coverage.0 as f64 / coverage.1 as f64 * 100.0 };
    let complete = coverage.0 == coverage.1 && input.1 == 0.0 && used.1 == 0.0 && meters_silent == 0;
    Balance {
        system_input_m3: input.0,
        billed_metered_m3: used.0,
        nrw_m3: nrw,
        nrw_pct: comprehensive,
        nrw_l_per_connection_day: (connections > 0 && days > 0.0).then(|| nrw * 1000.0 / f64::from(connections) / days),
        leakage: LeakageRate {
            comprehensive_pct: comprehensive,
            household_metering_correction_pct: r1,
            assessed_pct: assessed,
            grade,
        },
        connections,
        completeness: Completeness {
            complete,
            coverage_pct,
            meters_expected: connections,
            meters_silent,
            estimated_input_m3: input.1,
            estimated_consumption_m3: used.1,
            silences: silences.0,
            silences_total: silences.1,
        },
    }
}

fn in_range(silences: &[Silence], a: i64, b: i64) -> Vec<Silence> {
    let a = rfc3339(Timestamp(a));
    let b = rfc3339(Timestamp(b));
    silences.iter().filter(|s| s.from < b && s.to > a).cloned().collect()
}

impl DistrictData {
    fn day(&self, i: usize, span: &Span) -> Balance {
        let d = span.from + i as i64 * DAY_MS;
        let devices = (self.dma.inlets.len() + self.dma.customers.len()) as u64;
        let hours = u64::from(self.input.hours[i] + self.used.hours[i]);
        let silences = in_range(&self.silences, d, d + DAY_MS);
        let n = silences.len() as u32;
        balance(
            self.input.days[i],
            self.used.days[i],
            self.dma.customers.len() as u32,
            1.0,
            (hours, devices * 24),
            self.used.silent[i],
            (silences, n),
        )
    }

    fn total(&self) -> Balance {
        let sum = |s: &Sums| s.days.iter().fold((0.0, 0.0), |a, d| (a.0 + d.0, a.1 + d.1));
        let days = self.input.days.len();
        let devices = (self.dma.inlets.len() + self.dma.customers.len()) as u64;
        let hours: u64 = self.input.hours.iter().chain(&self.used.hours).map(|h| u64::from(*h)).sum();
        balance(
            sum(&self.input),
            sum(&self.used),
            self.dma.customers.len() as u32,
            days as f64,
            (hours, devices * 24 * days as u64),
            self.used.silent.iter().copied().max().unwrap_or(0),
            (self.silences.clone(), self.silences_total),
        )
    }
}

/// Adds district balances into one (the county's).
fn add_up(parts: &[Balance], days: f64) -> Balance {
    let input =
        parts.iter().fold((0.0, 0.0), |a, b| (a.0 + b.system_input_m3, a.1 + b.completeness.estimated_input_m3));
    let used = parts
        .iter()
        .fold((0.0, 0.0), |a, b| (a.0 + b.billed_metered_m3, a.1 + b.completeness.estimated_consumption_m3));
    let connections = parts.iter().map(|b| b.connections).sum();
    // Coverage weighted by each district's device count (its connections plus its inlets ~ connections).
    let weight: f64 = parts.iter().map(|b| f64::from(b.connections.max(1))).sum();
    let cov = parts.iter().map(|b| b.completeness.coverage_pct * f64::from(b.connections.max(1))).sum::<f64>()
        / weight.max(1.0);
    let silent = parts.iter().map(|b| b.completeness.meters_silent).sum();
    let mut silences: Vec<Silence> = parts.iter().flat_map(|b| b.completeness.silences.clone()).collect();
    let total = parts.iter().map(|b| b.completeness.silences_total).sum();
    silences.truncate(Completeness::MAX_SILENCES);
    let mut b = balance(input, used, connections, days, (0, 0), silent, (silences, total));
    b.completeness.coverage_pct = cov;
    b.completeness.complete = parts.iter().all(|p| p.completeness.complete);
    b
}

/// Every district's data, computed on up to as many threads as there are cores (a month
/// of a county is ~15,000 small store queries; each district is independent), in order.
fn all_districts(store: &Store, dmas: Vec<Dma>, span: &Span, modulus: f64) -> Result<Vec<DistrictData>, ReportError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4).min(dmas.len().max(1));
    if threads <= 1 {
        return dmas.into_iter().map(|d| district_data(store, d, span, modulus)).collect();
    }
    let slots: Vec<Option<Result<DistrictData, ReportError>>> = (0..dmas.len()).map(|_| None).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let dmas: Vec<std::sync::Mutex<Option<Dma>>> = dmas.into_iter().map(|d| std::sync::Mutex::new(Some(d))).collect();
    let results = std::sync::Mutex::new(slots);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(cell) = dmas.get(i) else { break };
                    let Some(dma) = cell.lock().unwrap_or_else(|e| e.into_inner()).take() else { continue };
                    let r = district_data(store, dma, span, modulus);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                }
            });
        }
    });
    results.into_inner().unwrap_or_else(|e| e.into_inner()).into_iter().flatten().collect()
}

/// The water balance report over `span` for the districts `reader` may see (or one).
pub fn report(
    state: &ReportsState,
    reader: &Reader,
    span: &Span,
    district: Option<&str>,
) -> Result<WaterBalanceReport, ReportError> {
    let dmas = districts::resolve(&state.inventory, reader, district);
    if let Some(d) = district
        && dmas.is_empty()
    {
        return Err(ReportError::NotFound(format!("no district '{d}'")));
    }
    let modulus = modulus(state);
    let mut districts = Vec::with_capacity(dmas.len());
    let mut day_parts: Vec<Vec<Balance>> = vec![Vec::new(); span.days().count()];
    for data in all_districts(&state.store, dmas, span, modulus)? {
        let days: Vec<DayBalance> = span
            .days()
            .enumerate()
            .map(|(i, d)| DayBalance { date: local_date(d), balance: data.day(i, span) })
            .collect();
        for (i, d) in days.iter().enumerate() {
            day_parts[i].push(d.balance.clone());
        }
        let mnf: Vec<(i64, f64)> = data
            .nights
            .iter()
            .zip(span.days())
            .filter_map(|(n, d)| n.mnf_m3h.filter(|_| n.complete).map(|m| (d, m)))
            .collect();
        let leak: Vec<f64> = data.nights.iter().filter_map(|n| n.implied_leakage_m3h).collect();
        let _ = &data.night_use;
        districts.push(DistrictBalance {
            district: data.dma.id.clone(),
            name: data.dma.name.clone(),
            supply_district: data.dma.supply_district.clone(),
            inlets: data.dma.inlets.clone(),
            total: data.total(),
            night_flow: NightFlowTrend {
                trend_m3h_per_day: crate::rules::stats::slope(mnf.iter().copied()).map(|s| s * DAY_MS as f64),
                implied_leakage_m3h: (!leak.is_empty()).then(|| leak.iter().sum::<f64>() / leak.len() as f64),
                nights: data.nights,
            },
            days,
        });
    }
    let n_days = span.days().count() as f64;
    let totals: Vec<Balance> = districts.iter().map(|d| d.total.clone()).collect();
    Ok(WaterBalanceReport {
        period: span.period(),
        county: add_up(&totals, n_days),
        county_days: span
            .days()
            .zip(&day_parts)
            .map(|(d, parts)| DayBalance { date: local_date(d), balance: add_up(parts, 1.0) })
            .collect(),
        districts,
        method: "Counters: hour roll-ups of volume_total (each hour's max, then its last) read as consumption by \
                 the rules' counter semantics (rollover, replacement, gaps). Night flow: minimum of 15-minute means \
                 of the inlets' flow from minute roll-ups, 02:00-04:00 local."
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(hour: i64, max: f64, last: f64) -> Bucket {
        Bucket { start: Timestamp(hour * HOUR_MS), min: last.min(max), max, mean: last, count: 4, last }
    }

    const M: f64 = DEFAULT_MODULUS;

    #[test]
    fn a_replacement_inside_an_hour_keeps_the_old_meters_last_use_and_the_new_ones_count() {
        // Old meter 100 -> 101.5 within hour 1, replaced, the new one at 0.3 by the hour's end.
        let s = CounterSeries::of(&[bucket(0, 100.0, 100.0), bucket(1, 101.5, 0.3), bucket(2, 0.8, 0.8)], M);
        let (v, e) = s.interval(HOUR_MS, 3 * HOUR_MS).unwrap();
        assert!((v - 2.3).abs() < 1e-9, "{v}");
        assert_eq!(e, 0.0);
        assert_eq!(s.events(HOUR_MS, 3 * HOUR_MS, M), (true, false));
    }

    #[test]
    fn a_rollover_is_use_not_a_fall() {
        let s = CounterSeries::of(&[bucket(0, M - 0.5, M - 0.5), bucket(1, M - 0.1, 0.4)], M);
        let (v, _) = s.interval(HOUR_MS, 2 * HOUR_MS).unwrap();
        assert!((v - 0.9).abs() < 1e-6, "{v}");
        assert_eq!(s.events(0, 2 * HOUR_MS, M), (false, true));
    }

    #[test]
    fn a_silence_inside_a_day_loses_nothing_and_one_over_its_edge_is_estimated() {
        // 1 m3 an hour; hours 5-10 silent.
        let b: Vec<Bucket> =
            (-1..48).filter(|h| !(5..11).contains(h)).map(|h| bucket(h, (h + 1) as f64, (h + 1) as f64)).collect();
        let s = CounterSeries::of(&b, M);
        let (v, e) = s.interval(0, 24 * HOUR_MS).unwrap();
        assert!((v - 24.0).abs() < 1e-6 && e == 0.0, "{v} {e}");
        // The period [8 h, 30 h) starts inside the silence (5 h to 12 h): the volume of its
        // first four hours is an interpolated split.
        let (v, e) = s.interval(8 * HOUR_MS, 30 * HOUR_MS).unwrap();
        assert!((v - 22.0).abs() < 1e-6, "{v}");
        assert!((e - 4.0).abs() < 1e-3, "{e}");
    }

    #[test]
    fn nothing_read_after_the_end_is_extrapolated_and_said_to_be() {
        let b: Vec<Bucket> = (-1..20).map(|h| bucket(h, (h + 1) as f64, (h + 1) as f64)).collect();
        let s = CounterSeries::of(&b, M);
        let (v, e) = s.interval(0, 24 * HOUR_MS).unwrap();
        assert!((v - 24.0).abs() < 0.2, "{v}");
        assert!((e - 4.0).abs() < 0.2, "{e}");
    }

    #[test]
    fn runs_of_silent_hours_are_merged() {
        let h = [true, false, false, true, false];
        assert_eq!(runs(&h, 0), vec![(HOUR_MS, 3 * HOUR_MS), (4 * HOUR_MS, 5 * HOUR_MS)]);
    }
}
