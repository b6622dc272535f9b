//! `mass_balance`: per supply district, inflow meters against the sum of the district's
//! household meters over `window_secs`, as a loss percentage (counters read as consumption
//! across rollover and replacement, `super::super::counter`).
//!
//! Invariants:
//! - late reads are not loss: the window ends where every counter has data, and meters
//!   silent for longer than `max_gap_secs` are left out (at most 2% of them, their share
//!   estimated from the others; more and the district is not judged);
//! - evaluated every `every_secs` of ingest's clock, not on readings;
//! - a district metered area's inlet meter (inventory `[[districts]]`) is never a
//!   household meter: it measures what the households and the leaks take together.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use conf::Spanned;
use protocol::Metric;
use serde::{Deserialize, Serialize};

use super::{Check, Devices, Feed, Kind, RuleState, Series, Step, Tick, Ticks, active_groups};
use crate::rules::counter::Consumption;
use crate::rules::kinds::Rule;
use crate::rules::signal::{Entity, signal};
use crate::rules::spec::{Ctx, DeviceMeta, SelectSpec, Selector};
use crate::rules::stats::Hold;

/// Counters of the simulated meters are u32 litres read as m³ (firmware/src/water_meter.rs).
pub const DEFAULT_MODULUS: f64 = 4_294_967.296;

/// The keys of a mass-balance rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    metric: Option<Spanned<String>>,
    inflow: Option<SelectSpec>,
    meters: Option<SelectSpec>,
    window_secs: Option<u64>,
    every_secs: Option<u64>,
    max_loss_pct: Option<f64>,
    clear_loss_pct: Option<f64>,
    counter_modulus: Option<f64>,
    max_gap_secs: Option<u64>,
    min_inflow: Option<f64>,
    for_secs: Option<u64>,
}

/// A compiled mass balance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MassBalance {
    /// Inflow meters (selected within the district).
    pub inflow: Selector,
    /// Household meters (selected within the district).
    pub meters: Selector,
    /// The counter metric.
    pub metric: Metric,
    /// Balance window.
    pub window_ms: i64,
    /// How often to evaluate.
    pub every_ms: i64,
    /// Raise above this loss.
    pub max_loss_pct: f64,
    /// Clear below this loss.
    pub clear_loss_pct: f64,
    /// Where the counter rolls over.
    pub modulus: f64,
    /// A meter silent for longer has no usable reading.
    pub max_gap_ms: i64,
    /// Less inflow than this over the window is not judged.
    pub min_inflow: f64,
}

impl super::Spec for Spec {
    const NAME: &'static str = "mass_balance";
    type Compiled = MassBalance;

    fn compile(self, ctx: &mut Ctx<'_>) -> Option<MassBalance> {
        ctx.hold(self.for_secs, None);
        let metric = ctx.metric(&self.metric, Some("volume_total"))?;
        let inflow = ctx.required("inflow", self.inflow).map(|x| ctx.selector(x)).unwrap_or_default();
        let meters = ctx.required("meters", self.meters).map(|x| ctx.selector(x)).unwrap_or_default();
        let max_loss_pct = ctx.positive("max_loss_pct", self.max_loss_pct, 25.0);
        let clear_loss_pct = self.clear_loss_pct.unwrap_or(max_loss_pct * 0.8);
        if clear_loss_pct > max_loss_pct {
            ctx.fail("clear_loss_pct must not be above max_loss_pct");
        }
        Some(MassBalance {
            inflow,
            meters,
            metric,
            window_ms: ctx.secs("window_secs", self.window_secs, 86_400),
            every_ms: ctx.secs("every_secs", self.every_secs, 900),
            max_loss_pct,
            clear_loss_pct,
            modulus: ctx.positive("counter_modulus", self.counter_modulus, DEFAULT_MODULUS),
            max_gap_ms: ctx.secs("max_gap_secs", self.max_gap_secs, 3600),
            min_inflow: self.min_inflow.unwrap_or(0.0).max(0.0),
        })
    }
}

impl From<MassBalance> for Kind {
    fn from(k: MassBalance) -> Kind {
        Kind::MassBalance(k)
    }
}

impl Check for MassBalance {
    fn name(&self) -> &'static str {
        <Spec as super::Spec>::NAME
    }

    fn feed(&self) -> Feed {
        Feed::Values(vec![self.metric.clone()])
    }

    fn ticks(&self) -> Option<Ticks> {
        Some(Ticks::Then)
    }

    fn selects(&self, rule: &Rule, d: &DeviceMeta) -> bool {
        rule.select.matches(d) && (self.inflow.matches(d) || self.meters.matches(d))
    }

    fn visible(&self, rule: &Rule, d: &DeviceMeta) -> bool {
        rule.select.matches(d) && self.inflow.matches(d)
    }

    fn start(&self) -> Box<dyn RuleState> {
        Box::new(State { k: self.clone(), series: Series::new(), districts: HashMap::new(), next_eval: 0 })
    }
}

/// One district in a balance: inflow counters, household counters, the number of household
/// meters the inventory has there, and an inflow device (for the alert's place).
type District<'a> = (Vec<&'a Consumption>, Vec<&'a Consumption>, usize, Option<Arc<DeviceMeta>>);

#[derive(Debug)]
struct State {
    k: MassBalance,
    series: Series<Consumption>,
    districts: HashMap<String, Hold>,
    /// When to evaluate next.
    next_eval: i64,
}

impl RuleState for State {
    fn reading(&mut self, cx: &mut Step<'_>) {
        let k = &self.k;
        let keep = k.window_ms + k.max_gap_ms + k.every_ms;
        let checkpoint = (k.window_ms / 96).max(60_000);
        let c = cx.series(&mut self.series, || Consumption::new(k.modulus, checkpoint, keep));
        c.push(cx.reading.ts.0, cx.reading.value);
    }

    fn tick(&mut self, cx: &mut Tick<'_>) {
        let now = cx.now;
        if now < self.next_eval {
            return;
        }
        let k = &self.k;
        self.next_eval = now + k.every_ms;
        let rule = cx.rule;
        // District -> (inflow counters, meter counters, meters in the inventory).
        let mut districts: BTreeMap<String, District<'_>> = BTreeMap::new();
        let inlets: std::collections::HashSet<String> =
            cx.inventory.districts().into_iter().flat_map(|d| d.inlets).collect();
        for meta in cx.devices.values() {
            let Some(d) = meta.district.as_ref() else { continue };
            if !rule.select.matches(meta) {
                continue;
            }
            if k.meters.matches(meta) && !inlets.contains(&meta.id) {
                districts.entry(d.clone()).or_default().2 += 1;
            }
        }
        for (dev, c) in &self.series {
            let Some(meta) = cx.devices.get(&**dev) else { continue };
            let Some(d) = meta.district.as_ref() else { continue };
            let e = districts.entry(d.clone()).or_default();
            if k.inflow.matches(meta) {
                e.0.push(c);
                e.3 = Some(meta.clone());
            } else if k.meters.matches(meta) && !inlets.contains(&meta.id) {
                e.1.push(c);
            }
        }
        let mut results = Vec::new();
        for (district, (ins, ms, n_meters, in_meta)) in districts {
            if ins.is_empty() || ms.is_empty() {
                continue;
            }
            // Late reads are not loss: the window ends where every counter has data, and
            // meters silent for longer than max_gap are left out (at most 2% of them), their
            // share estimated from the others.
            let fresh = |c: &Consumption| c.last_ts().is_some_and(|t| now - t <= k.max_gap_ms);
            if !ins.iter().all(|c| fresh(c)) {
                continue;
            }
            let reporting: Vec<&Consumption> = ms.iter().copied().filter(|c| fresh(c)).collect();
            let missing = n_meters.saturating_sub(reporting.len());
            if reporting.is_empty() || missing as f64 > 0.02 * n_meters as f64 {
                continue;
            }
            let t_end = ins.iter().chain(reporting.iter()).filter_map(|c| c.last_ts()).min().unwrap_or(now);
            let t_start = t_end - k.window_ms;
            let total_in: Option<f64> = ins.iter().map(|c| c.between(t_start, t_end)).sum();
            let used: Option<f64> = reporting.iter().map(|c| c.between(t_start, t_end)).sum();
            let (Some(total_in), Some(used)) = (total_in, used) else { continue }; // still learning
            if total_in <= k.min_inflow || total_in <= 0.0 {
                continue;
            }
            let used = used * n_meters.max(1) as f64 / reporting.len() as f64;
            let loss = (total_in - used) / total_in * 100.0;
            results.push((district, loss, in_meta, t_end));
        }
        for (district, loss, in_meta, t_end) in results {
            let hold = self.districts.entry(district.clone()).or_default();
            let raise = loss > k.max_loss_pct;
            let clear = loss < k.clear_loss_pct;
            if let Some(c) = hold.step(raise, clear, t_end, rule.for_ms, rule.clear_for_ms) {
                let v = Some((loss * 10.0).round() / 10.0);
                let mut s = signal(rule, Entity::District(district.clone()), in_meta.as_deref(), c, v, t_end);
                s.device = None;
                s.district = Some(district);
                cx.out.push(s);
            }
        }
    }

    fn active(&self, _devices: &Devices) -> Vec<(Entity, Option<Arc<DeviceMeta>>)> {
        active_groups(&self.districts, |d| Entity::District(d.to_string()), |h| h)
    }

    fn series(&self) -> usize {
        self.series.len()
    }
}
