//! `staleness`: no data from a device for `missed` expected intervals (given, or learned
//! from the device's own gaps), and at least `min_silence_secs`. The devices of one gateway
//! that all fall silent together are one alert for the gateway.
//!
//! Invariants:
//! - data arriving is what counts, whatever its quality (a device sending bad values is not
//!   silent);
//! - devices behind a gateway that is down (the `gateway_offline` kind, which ticks first)
//!   raise nothing, and neither does the group;
//! - the silences are walked on scan passes only (every few seconds), not on every tick.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use conf::Spanned;
use protocol::Metric;
use serde::{Deserialize, Serialize};

use super::{Check, Devices, Feed, Kind, RuleState, Series, Step, Tick, Ticks, active_devices, active_groups};
use crate::rules::signal::{Entity, signal};
use crate::rules::spec::{Ctx, DeviceMeta};
use crate::rules::stats::{Cond, Hold};

/// The keys of a staleness rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    metric: Option<Spanned<String>>,
    missed: Option<u32>,
    expected_interval_secs: Option<u64>,
    min_silence_secs: Option<u64>,
    group_min_devices: Option<u32>,
}

/// A compiled staleness rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Staleness {
    /// Only this metric counts as data (default: any non-health metric).
    pub metric: Option<Metric>,
    /// Missed intervals before the device is stale.
    pub missed: u32,
    /// The interval the device should report at; learned from its data when `None`.
    pub expected_ms: Option<i64>,
    /// Never stale before this much silence.
    pub min_silence_ms: i64,
    /// At least this many silent devices of one gateway, all of its selected ones,
    /// make one gateway-level alert instead of one per device.
    pub group_min_devices: u32,
}

impl super::Spec for Spec {
    const NAME: &'static str = "staleness";
    type Compiled = Staleness;

    fn compile(self, ctx: &mut Ctx<'_>) -> Option<Staleness> {
        let metric = match &self.metric {
            Some(_) => ctx.metric(&self.metric, None),
            None => None,
        };
        let missed = self.missed.unwrap_or(3);
        if missed == 0 {
            ctx.fail("missed must be at least 1");
        }
        Some(Staleness {
            metric,
            missed,
            expected_ms: self.expected_interval_secs.map(|v| ctx.secs("expected_interval_secs", Some(v), 1)),
            min_silence_ms: ctx.secs("min_silence_secs", self.min_silence_secs, 300),
            group_min_devices: self.group_min_devices.unwrap_or(2).max(2),
        })
    }
}

impl From<Staleness> for Kind {
    fn from(k: Staleness) -> Kind {
        Kind::Staleness(k)
    }
}

impl Check for Staleness {
    fn name(&self) -> &'static str {
        <Spec as super::Spec>::NAME
    }

    fn feed(&self) -> Feed {
        Feed::Arrivals(self.metric.clone())
    }

    fn ticks(&self) -> Option<Ticks> {
        Some(Ticks::Then)
    }

    fn start(&self) -> Box<dyn RuleState> {
        Box::new(State { k: self.clone(), series: Series::new(), groups: HashMap::new() })
    }
}

#[derive(Debug)]
struct Silence {
    hold: Hold,
    last: i64,
    interval: Option<f64>,
    meta: Arc<DeviceMeta>,
}

#[derive(Debug)]
struct State {
    k: Staleness,
    series: Series<Silence>,
    /// Per gateway: the condition of "all its selected devices silent".
    groups: HashMap<String, Hold>,
}

impl RuleState for State {
    fn reading(&mut self, cx: &mut Step<'_>) {
        let ts = cx.reading.ts.0;
        let Some(s) = self.series.get_mut(&**cx.device) else {
            let s = Silence { hold: Hold::default(), last: ts, interval: None, meta: cx.meta.clone() };
            self.series.insert(cx.device.clone(), s);
            return;
        };
        if ts > s.last {
            let gap = (ts - s.last) as f64;
            s.interval = Some(s.interval.map_or(gap, |iv| iv + 0.2 * (gap - iv)));
            s.last = ts;
        }
    }

    fn tick(&mut self, cx: &mut Tick<'_>) {
        if !cx.scan {
            return;
        }
        let Staleness { missed, expected_ms, min_silence_ms, group_min_devices, .. } = self.k;
        let now = cx.now;
        let is_stale = |last: i64, interval: Option<f64>| {
            let iv = expected_ms.map(|e| e as f64).or(interval).unwrap_or(0.0);
            (now - last) as f64 > (f64::from(missed) * iv).max(min_silence_ms as f64)
        };
        // Pass 1: per gateway, devices and silent devices (and the oldest silence). Keys
        // borrow the states; only the few gateways are turned into owned strings.
        let summary: Vec<(String, u32, u32, i64)> = {
            let mut by_gateway: HashMap<&str, (u32, u32, i64)> = HashMap::new();
            for s in self.series.values() {
                let e = by_gateway.entry(s.meta.gateway.as_str()).or_insert((0, 0, i64::MAX));
                e.0 += 1;
                if is_stale(s.last, s.interval) {
                    e.1 += 1;
                    e.2 = e.2.min(s.last);
                }
            }
            by_gateway.into_iter().map(|(g, (n, s, o))| (g.to_string(), n, s, o)).collect()
        };
        let grouped: HashSet<&str> = summary
            .iter()
            .filter(|(_, n, s, _)| *s == *n && *n >= group_min_devices)
            .map(|(g, ..)| g.as_str())
            .collect();
        // Pass 2: each device, unless its gateway is down or silent as a whole.
        for s in self.series.values_mut() {
            let stale = is_stale(s.last, s.interval);
            let suppressed = cx.down.contains(&s.meta.gateway) || grouped.contains(s.meta.gateway.as_str());
            let c = if suppressed { s.hold.reset() } else { s.hold.step(stale, !stale, now, 0, 0) };
            if let Some(c) = c {
                let c = match c {
                    Cond::Firing { .. } => Cond::Firing { since: s.last },
                    c => c,
                };
                let silent_s = Some(((now - s.last) / 1000) as f64);
                cx.out.push(signal(cx.rule, Entity::Device(s.meta.id.clone()), Some(&s.meta), c, silent_s, now));
            }
        }
        for (gw, n, s, oldest) in &summary {
            let raise = grouped.contains(gw.as_str()) && !cx.down.contains(gw);
            let hold = self.groups.entry(gw.clone()).or_default();
            let c = if cx.down.contains(gw) { hold.reset() } else { hold.step(raise, !raise, now, 0, 0) };
            if let Some(c) = c {
                let c = match c {
                    Cond::Firing { .. } => Cond::Firing { since: *oldest },
                    c => c,
                };
                let meta = cx.devices.get(gw).cloned();
                let mut sig =
                    signal(cx.rule, Entity::Gateway(gw.clone()), meta.as_deref(), c, Some(f64::from(*s)), now);
                sig.summary = format!("{} ({s} of {n} devices silent)", sig.summary);
                cx.out.push(sig);
            }
        }
    }

    fn active(&self, devices: &Devices) -> Vec<(Entity, Option<Arc<DeviceMeta>>)> {
        let mut a = active_devices(&self.series, devices, |s| Some(&s.hold));
        a.extend(active_groups(&self.groups, |g| Entity::Gateway(g.to_string()), |h| h));
        a
    }

    fn series(&self) -> usize {
        self.series.len()
    }
}
