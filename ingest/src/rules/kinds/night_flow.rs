//! `night_flow`: the minimum of `smoothing_secs` means of a flow in the local night window,
//! against the median of the previous `baseline_nights` (nights that raised are left out).
//!
//! Invariant: nights are computed from the store, not from memory, so the baseline
//! survives a restart of ingest; each device is judged once per local day, after the
//! night window ends.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use conf::Spanned;
use protocol::{Metric, Quality};
use serde::{Deserialize, Serialize};

use super::{Check, Devices, Feed, Kind, RuleState, Step, Tick, Ticks, active_groups};
use crate::rules::signal::{Entity, signal};
use crate::rules::spec::{Ctx, DeviceMeta};
use crate::rules::stats::{self, Cond, Hold};

/// The keys of a night-flow rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    metric: Option<Spanned<String>>,
    night_start_hour: Option<f64>,
    night_end_hour: Option<f64>,
    utc_offset_hours: Option<f64>,
    baseline_nights: Option<u32>,
    min_nights: Option<u32>,
    rise_pct: Option<f64>,
    min_rise: Option<f64>,
    smoothing_secs: Option<u64>,
}

/// A compiled night-flow rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NightFlow {
    /// The flow metric.
    pub metric: Metric,
    /// Night window start, local hour.
    pub start_hour: f64,
    /// Night window end, local hour.
    pub end_hour: f64,
    /// Local time offset from UTC, hours.
    pub utc_offset_hours: f64,
    /// Nights in the baseline.
    pub baseline_nights: u32,
    /// Fewest nights to judge.
    pub min_nights: u32,
    /// Raise when tonight is this much above the baseline, percent.
    pub rise_pct: f64,
    /// ...and at least this much in absolute terms.
    pub min_rise: f64,
    /// Means over this long before taking the minimum.
    pub smoothing_ms: i64,
}

impl super::Spec for Spec {
    const NAME: &'static str = "night_flow";
    type Compiled = NightFlow;

    fn compile(self, ctx: &mut Ctx<'_>) -> Option<NightFlow> {
        let tz = ctx.utc_offset(self.utc_offset_hours);
        let metric = ctx.metric(&self.metric, Some("flow"))?;
        let start_hour = self.night_start_hour.unwrap_or(2.0);
        let end_hour = self.night_end_hour.unwrap_or(4.0);
        if !(0.0..24.0).contains(&start_hour) || !(0.0..=24.0).contains(&end_hour) || end_hour <= start_hour {
            ctx.fail("the night window needs 0 <= night_start_hour < night_end_hour <= 24");
        }
        let baseline_nights = self.baseline_nights.unwrap_or(7).max(1);
        Some(NightFlow {
            metric,
            start_hour,
            end_hour,
            utc_offset_hours: tz,
            baseline_nights,
            min_nights: self.min_nights.unwrap_or(3).clamp(1, baseline_nights),
            rise_pct: ctx.positive("rise_pct", self.rise_pct, 50.0),
            min_rise: self.min_rise.unwrap_or(0.0).max(0.0),
            smoothing_ms: ctx.secs("smoothing_secs", self.smoothing_secs, 900),
        })
    }
}

impl From<NightFlow> for Kind {
    fn from(k: NightFlow) -> Kind {
        Kind::NightFlow(k)
    }
}

impl Check for NightFlow {
    fn name(&self) -> &'static str {
        <Spec as super::Spec>::NAME
    }

    fn feed(&self) -> Feed {
        Feed::Values(vec![self.metric.clone()])
    }

    fn ticks(&self) -> Option<Ticks> {
        Some(Ticks::Then)
    }

    fn start(&self) -> Box<dyn RuleState> {
        Box::new(State { k: self.clone(), seen: HashSet::new(), nights: HashMap::new() })
    }
}

#[derive(Debug, Default)]
struct Nights {
    hold: Hold,
    /// The last local day evaluated.
    last_day: Option<i64>,
    /// Each night's minimum, and whether it raised (raised nights stay out of the baseline).
    nights: BTreeMap<i64, (f64, bool)>,
}

#[derive(Debug)]
struct State {
    k: NightFlow,
    /// Devices whose flow was seen (the series to judge).
    seen: HashSet<Arc<str>>,
    nights: HashMap<String, Nights>,
}

impl RuleState for State {
    fn reading(&mut self, cx: &mut Step<'_>) {
        if !self.seen.contains(&**cx.device) {
            self.seen.insert(cx.device.clone());
        }
    }

    fn tick(&mut self, cx: &mut Tick<'_>) {
        let k = &self.k;
        let now = cx.now;
        let Some(store) = cx.store.cloned() else { return };
        let day = stats::local_day(now, k.utc_offset_hours);
        if stats::local_hour(now, k.utc_offset_hours) < k.end_hour {
            return;
        }
        for dev in &self.seen {
            let Some(meta) = cx.devices.get(&**dev).cloned() else { continue };
            let st = self.nights.entry(dev.to_string()).or_default();
            if st.last_day == Some(day) {
                continue;
            }
            st.last_day = Some(day);
            let mnf = |d: i64| -> Option<f64> {
                let from = stats::local_time(d, k.start_hour, k.utc_offset_hours);
                let to = stats::local_time(d, k.end_hour, k.utc_offset_hours);
                let points = store
                    .range(dev, k.metric.name(), protocol::Timestamp(from), protocol::Timestamp(to), 1_000_000)
                    .ok()?;
                let mut buckets: BTreeMap<i64, (f64, u32)> = BTreeMap::new();
                for p in points.iter().filter(|p| p.quality != Quality::Bad && p.value.is_finite()) {
                    let b = buckets.entry((p.ts.0 - from) / k.smoothing_ms).or_default();
                    b.0 += p.value;
                    b.1 += 1;
                }
                // Only full-enough buckets: a bucket of one sample is not a mean.
                let max_n = buckets.values().map(|b| b.1).max()?;
                buckets.values().filter(|b| b.1 * 2 >= max_n).map(|b| b.0 / f64::from(b.1)).reduce(f64::min)
            };
            for n in 1..=i64::from(k.baseline_nights) {
                if !st.nights.contains_key(&(day - n))
                    && let Some(m) = mnf(day - n)
                {
                    st.nights.insert(day - n, (m, false));
                }
            }
            let Some(tonight) = mnf(day) else { continue };
            let mut base: Vec<f64> = (1..=i64::from(k.baseline_nights))
                .filter_map(|n| st.nights.get(&(day - n)))
                .filter(|(_, raised)| !raised)
                .map(|(m, _)| *m)
                .collect();
            base.sort_by(f64::total_cmp);
            let judged = base.len() >= k.min_nights as usize;
            let baseline = if base.is_empty() { 0.0 } else { base[base.len() / 2] };
            let raise = judged && tonight > baseline * (1.0 + k.rise_pct / 100.0) && tonight - baseline >= k.min_rise;
            st.nights.insert(day, (tonight, raise));
            while st.nights.len() > (k.baseline_nights as usize + 2) {
                st.nights.pop_first();
            }
            let at = stats::local_time(day, k.end_hour, k.utc_offset_hours);
            if let Some(c) = st.hold.step(raise, !raise, at, 0, 0) {
                let c = match c {
                    Cond::Firing { .. } => {
                        Cond::Firing { since: stats::local_time(day, k.start_hour, k.utc_offset_hours) }
                    }
                    c => c,
                };
                let v = Some((tonight * 1000.0).round() / 1000.0);
                let mut s = signal(cx.rule, Entity::Device(dev.to_string()), Some(&meta), c, v, at);
                if judged {
                    s.summary = format!("{} (baseline {:.3})", s.summary, baseline);
                }
                cx.out.push(s);
            }
        }
    }

    fn active(&self, _devices: &Devices) -> Vec<(Entity, Option<Arc<DeviceMeta>>)> {
        active_groups(&self.nights, |d| Entity::Device(d.to_string()), |n| &n.hold)
    }

    fn series(&self) -> usize {
        self.seen.len()
    }
}
