//! The evaluator: every rule kind, fed with durable readings and with ticks of time.
//!
//! Design constraints:
//! - Streaming: a reading is looked at once, by the rules that select its device and
//!   metric, in O(rules that apply); per-series state is small and bounded (windows are
//!   trimmed, counters keep thinned checkpoints).
//! - Time is data time: reading-driven kinds use the reading's timestamp; tick-driven
//!   kinds (staleness, gateways, mass balance, night flow) use the time the caller passes
//!   to [`Evaluator::tick`], which is ingest's injectable clock. Nothing here sleeps or
//!   reads a wall clock, so an accelerated simulation behaves as real time does.
//! - Edge-triggered output: a [`Signal`] goes out when a condition changes (and on the
//!   first evaluation of a series, so that alerts restored after a restart learn their
//!   state); the alert manager turns signals into alert lifecycles.
//! - Suppression: devices behind a gateway that is down raise no staleness of their own,
//!   and the devices of a gateway that all fall silent together are one alert.
//! - History from the store: night-flow baselines are computed from the stored series,
//!   so they survive a restart of ingest.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use protocol::catalogue::Family;
use protocol::{DeviceKind, Metric, Quality, Reading};
use store::Store;

use super::config::{AnimalMethod, DeviceMeta, Direction, DriftMethod, Kind, PumpMode, Rule, Selector};
use super::counter::Consumption;
use super::stats::{self, Cond, Cusum, EwmaChart, Hold, Welford};
use crate::alerts::model::Entity;
use crate::inventory::Inventory;

/// A change of a rule's condition for one entity.
#[derive(Debug, Clone)]
pub struct Signal {
    /// The rule.
    pub rule: Arc<Rule>,
    /// What it is about.
    pub entity: Entity,
    /// Tenant of the entity.
    pub tenant: String,
    /// Device, site, gateway, district of the entity where they apply.
    pub device: Option<String>,
    /// See `device`.
    pub site: Option<String>,
    /// See `device`.
    pub gateway: Option<String>,
    /// See `device`.
    pub district: Option<String>,
    /// The condition now.
    pub cond: Cond,
    /// The value that decided it.
    pub value: Option<f64>,
    /// Data time of the evaluation.
    pub at: i64,
    /// The rule's summary, filled in.
    pub summary: String,
}

/// Per-series state of one rule.
#[derive(Debug)]
enum State {
    Threshold(Hold),
    Rate { hold: Hold, window: VecDeque<(i64, f64)> },
    Flatline { hold: Hold, reference: f64, since: i64, last: i64 },
    Drift(Box<DriftState>),
    Pump { hold: Hold, running: Option<(i64, f64)>, flow: Option<(i64, f64)>, learned: Option<f64> },
    Tank { hold: Hold, window: VecDeque<(i64, f64)> },
    Animal(Box<AnimalState>),
    Thi { hold: Hold, t: Option<(i64, f64)>, rh: Option<(i64, f64)> },
    Stale { hold: Hold, last: i64, interval: Option<f64>, meta: Arc<DeviceMeta> },
    Counter(Consumption),
    NightSeries,
}

#[derive(Debug, Default)]
struct Baseline {
    learn: Welford,
    mu: f64,
    var: f64,
    ready: bool,
}

#[derive(Debug)]
struct DriftState {
    hold: Hold,
    sub_start: i64,
    sum: f64,
    n: u32,
    bins: Vec<Baseline>,
    cusum: Cusum,
    ewma: EwmaChart,
}

#[derive(Debug)]
struct AnimalState {
    hold: Hold,
    first: i64,
    last: i64,
    smooth: f64,
    /// Start of the hour being collected, its sum and count, and whether anything in it
    /// looked abnormal (such an hour does not teach her normal).
    hour: i64,
    sum: f64,
    n: u32,
    abnormal: bool,
    /// Per bin (one, or one per local hour of day): her normal from completed hours, and
    /// how many hours made it (a plain mean until there are as many as the baseline's
    /// length, then an exponential average over that many).
    bins: Vec<Option<(f64, u64)>>,
}

/// The rules that apply to one device.
#[derive(Debug)]
struct DevicePlan {
    id: Arc<str>,
    meta: Arc<DeviceMeta>,
    /// Staleness rules selecting it, with the metric they count (`None`: any non-health).
    stale: Vec<(usize, Option<Metric>)>,
    /// Per metric, the rules its readings feed.
    metrics: Vec<(Metric, Vec<usize>)>,
}

/// One district in a mass balance: inflow counters, household counters, the number of
/// household meters the inventory has there, and an inflow device (for the alert's place).
type District<'a> = (Vec<&'a Consumption>, Vec<&'a Consumption>, usize, Option<Arc<DeviceMeta>>);

/// State of a group entity (gateway, district, a night-flow series).
#[derive(Debug, Default)]
struct GroupState {
    hold: Hold,
    /// Gateway: since when its status says offline.
    offline_since: Option<i64>,
    /// Night flow: the last local day evaluated, and each night's minimum (and whether
    /// it raised: raised nights stay out of the baseline).
    last_day: Option<i64>,
    nights: BTreeMap<i64, (f64, bool)>,
    /// Mass balance: when to evaluate next.
    next_eval: i64,
}

/// The rules and their state.
pub struct Evaluator {
    rules: Vec<Arc<Rule>>,
    by_metric: HashMap<Metric, Vec<usize>>,
    staleness: Vec<usize>,
    tick_rules: Vec<usize>,
    states: Vec<HashMap<Arc<str>, State>>,
    groups: Vec<HashMap<String, GroupState>>,
    devices: HashMap<String, Arc<DeviceMeta>>,
    /// Per device seen: which rules apply to which of its metrics (selectors are matched
    /// once per device, not once per reading).
    plans: HashMap<Arc<str>, Arc<DevicePlan>>,
    gateway_last: HashMap<String, i64>,
    inventory: Arc<Inventory>,
    store: Option<Arc<Store>>,
    out: Vec<Signal>,
    unknown_refreshes: u32,
    /// Data time of the last staleness pass: silences are minutes long, so a pass every
    /// few seconds is enough and keeps ticks cheap at 15,000 meters.
    last_stale_pass: Option<i64>,
}

/// Least time between two staleness passes (ms).
const STALE_PASS_MS: i64 = 5_000;

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator").field("rules", &self.rules.len()).finish_non_exhaustive()
    }
}

/// Every device the inventory knows, with what selectors match on.
pub fn device_metas(inventory: &Inventory) -> HashMap<String, Arc<DeviceMeta>> {
    let sites: HashMap<String, crate::inventory::Site> =
        inventory.sites().into_iter().map(|s| (s.id.clone(), s)).collect();
    inventory
        .devices()
        .into_iter()
        .map(|d| {
            let site = sites.get(&d.site);
            let gateway = if d.kind == DeviceKind::Gateway { d.id.clone() } else { d.gateway.clone() };
            let meta = DeviceMeta {
                tenant: site.map(|s| s.tenant.clone()).unwrap_or_default(),
                district: site.and_then(|s| s.district.clone()),
                village: site.and_then(|s| s.village.clone()),
                id: d.id.clone(),
                kind: d.kind,
                site: d.site,
                gateway,
            };
            (d.id, Arc::new(meta))
        })
        .collect()
}

/// Fills in a summary template.
pub fn render(template: &str, meta: Option<&DeviceMeta>, entity: &Entity, value: Option<f64>) -> String {
    let value = value.map_or_else(String::new, |v| {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    });
    let (device, site, gateway, district) = match meta {
        Some(m) => (m.id.as_str(), m.site.as_str(), m.gateway.as_str(), m.district.as_deref().unwrap_or("")),
        None => ("", "", "", ""),
    };
    let (gateway, district) = match entity {
        Entity::Gateway(g) => (g.as_str(), district),
        Entity::District(d) => (gateway, d.as_str()),
        Entity::Device(_) => (gateway, district),
    };
    template
        .replace("{device}", device)
        .replace("{site}", site)
        .replace("{gateway}", gateway)
        .replace("{district}", district)
        .replace("{value}", &value)
}

impl Evaluator {
    /// An evaluator of `rules` over `inventory`'s devices; `store` serves history.
    pub fn new(rules: Vec<Rule>, inventory: Arc<Inventory>, store: Option<Arc<Store>>) -> Evaluator {
        let rules: Vec<Arc<Rule>> = rules.into_iter().map(Arc::new).collect();
        let mut by_metric: HashMap<Metric, Vec<usize>> = HashMap::new();
        let mut staleness = Vec::new();
        let mut tick_rules = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            for m in r.kind.metrics() {
                by_metric.entry(m).or_default().push(i);
            }
            match &r.kind {
                Kind::Staleness { .. } => {
                    staleness.push(i);
                    tick_rules.push(i);
                }
                Kind::GatewayOffline { .. } | Kind::MassBalance { .. } | Kind::NightFlow { .. } => tick_rules.push(i),
                _ => {}
            }
            if let Kind::NightFlow { metric, .. } = &r.kind {
                by_metric.entry(metric.clone()).or_default().push(i);
            }
        }
        let devices = device_metas(&inventory);
        Evaluator {
            states: rules.iter().map(|_| HashMap::new()).collect(),
            groups: rules.iter().map(|_| HashMap::new()).collect(),
            rules,
            by_metric,
            staleness,
            tick_rules,
            devices,
            plans: HashMap::new(),
            gateway_last: HashMap::new(),
            inventory,
            store,
            out: Vec::new(),
            unknown_refreshes: 0,
            last_stale_pass: None,
        }
    }

    /// The rules.
    pub fn rules(&self) -> &[Arc<Rule>] {
        &self.rules
    }

    /// Replaces the rules, keeping the state of every rule whose definition did not
    /// change; conditions of rules that went away or changed are cleared.
    pub fn replace_rules(&mut self, rules: Vec<Rule>) -> Vec<Signal> {
        let mut next = Evaluator::new(rules, self.inventory.clone(), self.store.clone());
        next.gateway_last = std::mem::take(&mut self.gateway_last);
        let mut kept: HashSet<usize> = HashSet::new();
        for (i, r) in next.rules.iter().enumerate() {
            if let Some(j) = self.rules.iter().position(|o| **o == **r) {
                next.states[i] = std::mem::take(&mut self.states[j]);
                next.groups[i] = std::mem::take(&mut self.groups[j]);
                kept.insert(j);
            }
        }
        let mut cleared = Vec::new();
        for j in 0..self.rules.len() {
            if kept.contains(&j) {
                continue;
            }
            let rule = self.rules[j].clone();
            let now = i64::MAX;
            for (dev, st) in &mut self.states[j] {
                if let Some(h) = state_hold(st)
                    && h.active()
                {
                    let meta = self.devices.get(&**dev).cloned();
                    cleared.push(signal(
                        &rule,
                        Entity::Device(dev.to_string()),
                        meta.as_deref(),
                        Cond::Clear,
                        None,
                        now,
                    ));
                }
            }
            for (key, g) in &self.groups[j] {
                if g.hold.active() {
                    let entity = group_entity(&rule, key);
                    cleared.push(signal(&rule, entity, None, Cond::Clear, None, now));
                }
            }
        }
        *self = next;
        cleared
    }

    fn meta(&mut self, device: &str) -> Option<Arc<DeviceMeta>> {
        if let Some(m) = self.devices.get(device) {
            return Some(m.clone());
        }
        // A device added at run time (line protocol): refresh, but not on every reading of
        // a device nobody will ever register.
        if self.unknown_refreshes < 1000 {
            self.unknown_refreshes += 1;
            self.devices = device_metas(&self.inventory);
        }
        self.devices.get(device).cloned()
    }

    /// Looks at durable readings; returns the signals they caused.
    pub fn readings(&mut self, readings: &[Reading]) -> Vec<Signal> {
        for r in readings {
            self.reading(r);
        }
        std::mem::take(&mut self.out)
    }

    fn plan(&mut self, device: &str) -> Option<Arc<DevicePlan>> {
        if let Some(p) = self.plans.get(device) {
            return Some(p.clone());
        }
        let meta = self.meta(device)?;
        let id: Arc<str> = Arc::from(device);
        let mut stale = Vec::new();
        for &i in &self.staleness {
            if let Kind::Staleness { metric, .. } = &self.rules[i].kind
                && self.rules[i].select.matches(&meta)
            {
                stale.push((i, metric.clone()));
            }
        }
        let mut metrics = Vec::new();
        for (metric, idx) in &self.by_metric {
            let applies: Vec<usize> = idx
                .iter()
                .copied()
                .filter(|&i| {
                    let rule = &self.rules[i];
                    match &rule.kind {
                        Kind::MassBalance { inflow, meters, .. } => {
                            rule.select.matches(&meta) && (inflow.matches(&meta) || meters.matches(&meta))
                        }
                        _ => rule.select.matches(&meta),
                    }
                })
                .collect();
            if !applies.is_empty() {
                metrics.push((metric.clone(), applies));
            }
        }
        let plan = Arc::new(DevicePlan { id: id.clone(), meta, stale, metrics });
        self.plans.insert(id, plan.clone());
        Some(plan)
    }

    fn reading(&mut self, r: &Reading) {
        let Some(plan) = self.plan(&r.device) else { return };
        let meta = &plan.meta;
        let ts = r.ts.0;
        match self.gateway_last.get_mut(&meta.gateway) {
            Some(last) => *last = (*last).max(ts),
            None => {
                self.gateway_last.insert(meta.gateway.clone(), ts);
            }
        }
        if !plan.stale.is_empty() {
            let health = r.metric.def().is_some_and(|d| d.family == Family::Health);
            for (i, metric) in &plan.stale {
                let counts = match metric {
                    Some(m) => *m == r.metric,
                    None => !health,
                };
                if counts {
                    self.touch_stale(*i, &plan.id, &plan.meta, ts);
                }
            }
        }
        let good = r.quality != Quality::Bad && r.value.is_finite();
        if !good {
            return;
        }
        let Some((_, idx)) = plan.metrics.iter().find(|(m, _)| *m == r.metric) else { return };
        for &i in idx {
            let rule = self.rules[i].clone();
            self.apply(i, &rule, &plan.id, meta, r);
        }
    }

    fn touch_stale(&mut self, i: usize, id: &Arc<str>, meta: &Arc<DeviceMeta>, ts: i64) {
        let map = &mut self.states[i];
        let Some(st) = map.get_mut(&**id) else {
            map.insert(
                id.clone(),
                State::Stale { hold: Hold::default(), last: ts, interval: None, meta: meta.clone() },
            );
            return;
        };
        if let State::Stale { last, interval, .. } = st
            && ts > *last
        {
            let gap = (ts - *last) as f64;
            *interval = Some(interval.map_or(gap, |iv| iv + 0.2 * (gap - iv)));
            *last = ts;
        }
    }

    fn state(&mut self, i: usize, id: &Arc<str>, make: impl FnOnce() -> State) -> &mut State {
        let map = &mut self.states[i];
        if !map.contains_key(&**id) {
            map.insert(id.clone(), make());
        }
        // Just inserted if it was missing.
        map.get_mut(&**id).unwrap_or_else(|| unreachable!())
    }

    fn apply(&mut self, i: usize, rule: &Arc<Rule>, id: &Arc<str>, meta: &Arc<DeviceMeta>, r: &Reading) {
        let ts = r.ts.0;
        let v = r.value;
        let (for_ms, clear_for_ms) = (rule.for_ms, rule.clear_for_ms);
        let mut emit: Option<(Cond, Option<f64>)> = None;
        match &rule.kind {
            Kind::Threshold { above, below, clear, bit, .. } => {
                let x = match bit {
                    Some(b) if v >= 0.0 => ((v as u64 >> b) & 1) as f64,
                    Some(_) => 0.0,
                    None => v,
                };
                let (raise, clr) = match (above, below) {
                    (Some(a), _) => (x > *a, x <= *clear),
                    (_, Some(b)) => (x < *b, x >= *clear),
                    _ => (false, true),
                };
                if let State::Threshold(h) = self.state(i, id, || State::Threshold(Hold::default())) {
                    emit = h.step(raise, clr, ts, for_ms, clear_for_ms).map(|c| (c, Some(v)));
                }
            }
            Kind::RateOfChange { window_ms, rise, fall, .. } => {
                let st = self.state(i, id, || State::Rate { hold: Hold::default(), window: VecDeque::new() });
                if let State::Rate { hold, window } = st {
                    if window.back().is_some_and(|b| ts <= b.0) {
                        return;
                    }
                    window.push_back((ts, v));
                    while window.len() > 2 && window.get(1).is_some_and(|p| ts - p.0 >= *window_ms) {
                        window.pop_front();
                    }
                    let first = window.front().copied().unwrap_or((ts, v));
                    let enough = ts - first.0 >= window_ms / 2;
                    let up = v - first.1;
                    let raise = enough && (rise.is_some_and(|x| up >= x) || fall.is_some_and(|x| -up >= x));
                    emit = hold.step(raise, !raise, ts, for_ms, clear_for_ms).map(|c| (c, Some(up.abs())));
                }
            }
            Kind::Flatline { tolerance, .. } => {
                let st =
                    self.state(i, id, || State::Flatline { hold: Hold::default(), reference: v, since: ts, last: ts });
                if let State::Flatline { hold, reference, since, last } = st {
                    if ts <= *last && *since != ts {
                        return;
                    }
                    if (v - *reference).abs() > *tolerance || ts - *last > for_ms {
                        // It moved, or a gap in the data: no evidence it was stuck meanwhile.
                        *reference = v;
                        *since = ts;
                    }
                    *last = ts;
                    let flat = ts - *since >= for_ms;
                    emit = hold.step(flat, !flat, ts, 0, 0).map(|c| (c, Some(v)));
                }
            }
            Kind::Drift { .. } => emit = self.drift(i, rule, id, ts, v),
            Kind::PumpFlow { mode, min_flow_ratio, min_flow } => {
                let running_metric = r.metric.name() == "pump_running";
                let st = self.state(i, id, || State::Pump {
                    hold: Hold::default(),
                    running: None,
                    flow: None,
                    learned: None,
                });
                if let State::Pump { hold, running, flow, learned } = st {
                    if running_metric {
                        *running = Some((ts, v));
                    } else {
                        *flow = Some((ts, v));
                    }
                    let (Some((tr, run)), Some((tf, f))) = (*running, *flow) else { return };
                    if tr != tf {
                        return; // wait for both values of one poll
                    }
                    let on = run >= 0.5;
                    if on && f > *min_flow {
                        *learned = Some(learned.map_or(f, |l| l + 0.05 * (f - l)));
                    }
                    let limit = learned.map_or(*min_flow, |l| (l * min_flow_ratio).max(*min_flow));
                    let raise = match mode {
                        PumpMode::RunWithoutFlow => on && f < limit,
                        PumpMode::FlowWithoutRun => !on && f > limit,
                    };
                    emit = hold.step(raise, !raise, ts, for_ms, clear_for_ms).map(|c| (c, Some(f)));
                }
            }
            Kind::TankEmpty { trend_ms, floor, within_hours, .. } => {
                let st = self.state(i, id, || State::Tank { hold: Hold::default(), window: VecDeque::new() });
                if let State::Tank { hold, window } = st {
                    if window.back().is_some_and(|b| ts <= b.0) {
                        return;
                    }
                    window.push_back((ts, v));
                    while window.front().is_some_and(|p| ts - p.0 > *trend_ms) {
                        window.pop_front();
                    }
                    let span = window.front().map_or(0, |p| ts - p.0);
                    let s = if span >= trend_ms / 2 { stats::slope(window.iter().copied()) } else { None };
                    let tte_h = s.filter(|s| *s < 0.0).map(|s| ((v - floor).max(0.0) / -s) / 3_600_000.0);
                    let raise = tte_h.is_some_and(|h| h < *within_hours);
                    let clear = s.is_some() && tte_h.is_none_or(|h| h > within_hours * 1.5);
                    emit = hold.step(raise, clear, ts, for_ms, clear_for_ms).map(|c| (c, tte_h));
                }
            }
            Kind::AnimalBaseline { .. } => emit = self.animal(i, rule, id, ts, v),
            Kind::Thi { above, clear } => {
                let is_t = r.metric.name() == "barn_temperature";
                let st = self.state(i, id, || State::Thi { hold: Hold::default(), t: None, rh: None });
                if let State::Thi { hold, t, rh } = st {
                    if is_t {
                        *t = Some((ts, v));
                    } else {
                        *rh = Some((ts, v));
                    }
                    let (Some((tt, tv)), Some((th, hv))) = (*t, *rh) else { return };
                    if (tt - th).abs() > 60_000 {
                        return;
                    }
                    // NRC: THI = (1.8 T + 32) - (0.55 - 0.0055 RH)(1.8 T - 26) (DOMAIN.md).
                    let thi = (1.8 * tv + 32.0) - (0.55 - 0.0055 * hv) * (1.8 * tv - 26.0);
                    emit = hold
                        .step(thi >= *above, thi < *clear, tt.max(th), for_ms, clear_for_ms)
                        .map(|c| (c, Some((thi * 10.0).round() / 10.0)));
                }
            }
            Kind::MassBalance { modulus, window_ms, every_ms, max_gap_ms, .. } => {
                let keep = window_ms + max_gap_ms + every_ms;
                let checkpoint = (window_ms / 96).max(60_000);
                let st = self.state(i, id, || State::Counter(Consumption::new(*modulus, checkpoint, keep)));
                if let State::Counter(c) = st {
                    c.push(ts, v);
                }
            }
            Kind::NightFlow { .. } => {
                self.state(i, id, || State::NightSeries);
            }
            Kind::Staleness { .. } | Kind::GatewayOffline { .. } => {}
        }
        if let Some((cond, value)) = emit {
            self.out.push(signal(rule, Entity::Device(meta.id.clone()), Some(meta), cond, value, ts));
        }
    }

    fn drift(&mut self, i: usize, rule: &Arc<Rule>, id: &Arc<str>, ts: i64, v: f64) -> Option<(Cond, Option<f64>)> {
        let Kind::Drift {
            method,
            subgroup_ms,
            learn_subgroups,
            baseline_lambda,
            direction,
            min_sigma,
            hour_of_day,
            utc_offset_hours,
            ..
        } = &rule.kind
        else {
            return None;
        };
        let bins = if *hour_of_day { 24 } else { 1 };
        let st = self.state(i, id, || {
            State::Drift(Box::new(DriftState {
                hold: Hold::default(),
                sub_start: ts - ts.rem_euclid(*subgroup_ms),
                sum: 0.0,
                n: 0,
                bins: (0..bins).map(|_| Baseline::default()).collect(),
                cusum: Cusum::default(),
                ewma: EwmaChart::default(),
            }))
        });
        let State::Drift(d) = st else { return None };
        if ts < d.sub_start {
            return None;
        }
        let mut emit = None;
        if ts >= d.sub_start + subgroup_ms {
            if d.n > 0 {
                let mean = d.sum / f64::from(d.n);
                let bin =
                    if *hour_of_day { stats::local_hour(d.sub_start, *utc_offset_hours) as usize % 24 } else { 0 };
                let b = &mut d.bins[bin];
                if !b.ready {
                    b.learn.push(mean);
                    if b.learn.count() >= u64::from(*learn_subgroups) {
                        b.ready = true;
                        b.mu = b.learn.mean();
                        b.var = b.learn.variance();
                    }
                } else {
                    let sigma = b.var.sqrt().max(*min_sigma);
                    let z = (mean - b.mu) / sigma;
                    let (raise, clear) = match method {
                        DriftMethod::Cusum { k, h } => {
                            let (hi, lo) = d.cusum.push(z, *k);
                            let up = hi > *h;
                            let down = lo > *h;
                            let out = match direction {
                                Direction::Up => up,
                                Direction::Down => down,
                                Direction::Both => up || down,
                            };
                            (out, !out)
                        }
                        DriftMethod::Ewma { lambda, l } => {
                            let e = d.ewma.push(z, *lambda);
                            let lim = EwmaChart::limit(*lambda, *l);
                            let out = match direction {
                                Direction::Up => e > lim,
                                Direction::Down => e < -lim,
                                Direction::Both => e.abs() > lim,
                            };
                            (out, !out)
                        }
                    };
                    let c = d.hold.step(raise, clear, ts, rule.for_ms, rule.clear_for_ms);
                    if !d.hold.active() {
                        // In control: the baseline follows slow legitimate change.
                        let bl = *baseline_lambda;
                        b.mu += bl * (mean - b.mu);
                        b.var = (1.0 - bl) * b.var + bl * (mean - b.mu).powi(2);
                        if matches!(c, Some(Cond::Clear))
                            && let DriftMethod::Cusum { h, .. } = method
                        {
                            d.cusum.restart(h / 2.0);
                        }
                    }
                    emit = c.map(|c| (c, Some(mean)));
                }
            }
            d.sub_start = ts - ts.rem_euclid(*subgroup_ms);
            d.sum = 0.0;
            d.n = 0;
        }
        d.sum += v;
        d.n += 1;
        emit
    }

    fn animal(&mut self, i: usize, rule: &Arc<Rule>, id: &Arc<str>, ts: i64, v: f64) -> Option<(Cond, Option<f64>)> {
        const HOUR: i64 = 3_600_000;
        let Kind::AnimalBaseline {
            method,
            clear,
            baseline_ms,
            min_baseline_ms,
            smoothing_ms,
            hour_of_day,
            utc_offset_hours,
            ..
        } = &rule.kind
        else {
            return None;
        };
        let nbins = if *hour_of_day { 24 } else { 1 };
        // Hours in the baseline per bin: a bin of the day sees one hour a day.
        let span = if *hour_of_day { (baseline_ms / (24 * HOUR)).max(1) } else { (baseline_ms / HOUR).max(1) } as f64;
        let bin_of = |t: i64| if *hour_of_day { stats::local_hour(t, *utc_offset_hours) as usize % 24 } else { 0 };
        let st = self.state(i, id, || {
            State::Animal(Box::new(AnimalState {
                hold: Hold::default(),
                first: ts,
                last: ts,
                smooth: v,
                hour: ts - ts.rem_euclid(HOUR),
                sum: 0.0,
                n: 0,
                abnormal: false,
                bins: vec![None; nbins],
            }))
        });
        let State::Animal(a) = st else { return None };
        if ts <= a.last && ts != a.first {
            return None;
        }
        // A completed hour teaches her normal, unless it looked abnormal.
        let hour = ts - ts.rem_euclid(HOUR);
        if hour != a.hour {
            if a.n > 0 && !a.abnormal {
                let m = a.sum / f64::from(a.n);
                let b = &mut a.bins[bin_of(a.hour)];
                *b = Some(match *b {
                    None => (m, 1),
                    Some((mean, k)) => (mean + (m - mean) * (1.0 / (k + 1) as f64).max(1.0 / span), k + 1),
                });
            }
            a.hour = hour;
            a.sum = 0.0;
            a.n = 0;
            a.abnormal = false;
        }
        let dt = ts - a.last;
        a.last = ts;
        a.smooth += stats::alpha(dt, *smoothing_ms) * (v - a.smooth);
        let h = bin_of(ts);
        let reference = |bins: &[Option<(f64, u64)>], up: bool| -> Option<f64> {
            if bins.len() == 1 {
                return bins[0].map(|b| b.0);
            }
            let n = bins.len();
            let around = [bins[(h + n - 1) % n], bins[h], bins[(h + 1) % n]].map(|b| b.map(|b| b.0));
            let known = around.iter().flatten().copied();
            if up { known.reduce(f64::max) } else { known.reduce(f64::min) }
        };
        let judged = ts - a.first >= *min_baseline_ms;
        // (raise, clear, value, beyond the clear level)
        let (raise, clr, value, odd) = match method {
            AnimalMethod::Rise { by } => match reference(&a.bins, true) {
                Some(b) => {
                    let rise = a.smooth - b;
                    (judged && rise >= *by, rise < *clear, Some(rise), rise >= *clear)
                }
                None => (false, true, None, false),
            },
            AnimalMethod::RatioAbove { ratio } => match reference(&a.bins, true).filter(|b| *b > 0.0) {
                Some(b) => {
                    let r = a.smooth / b;
                    (judged && r >= *ratio, r < *clear, Some(r), r >= *clear)
                }
                None => (false, true, None, false),
            },
            AnimalMethod::RatioBelow { ratio } => match reference(&a.bins, false).filter(|b| *b > 0.0) {
                Some(b) => {
                    let r = a.smooth / b;
                    (judged && r <= *ratio, r > *clear, Some(r), r <= *clear)
                }
                None => (false, true, None, false),
            },
        };
        let c = a.hold.step(raise, clr, ts, rule.for_ms, rule.clear_for_ms);
        a.sum += v;
        a.n += 1;
        a.abnormal |= odd || a.hold.active();
        c.map(|c| (c, value.map(|x| (x * 1000.0).round() / 1000.0)))
    }

    /// Evaluates the time-driven kinds at `now` (ingest's clock).
    pub fn tick(&mut self, now: i64) -> Vec<Signal> {
        let down = self.gateways_down(now);
        let stale_pass = self.last_stale_pass.is_none_or(|l| now.saturating_sub(l) >= STALE_PASS_MS || now < l);
        if stale_pass {
            self.last_stale_pass = Some(now);
        }
        for k in 0..self.tick_rules.len() {
            let i = self.tick_rules[k];
            let rule = self.rules[i].clone();
            match &rule.kind {
                Kind::Staleness { .. } if stale_pass => self.tick_staleness(i, &rule, now, &down),
                Kind::MassBalance { .. } => self.tick_mass_balance(i, &rule, now),
                Kind::NightFlow { .. } => self.tick_night_flow(i, &rule, now),
                _ => {}
            }
        }
        std::mem::take(&mut self.out)
    }

    /// Runs the gateway rules; returns the gateways that are down now (their devices'
    /// staleness is suppressed).
    fn gateways_down(&mut self, now: i64) -> HashSet<String> {
        let mut down = HashSet::new();
        let gateways = self.inventory.gateways();
        for k in 0..self.tick_rules.len() {
            let i = self.tick_rules[k];
            let rule = self.rules[i].clone();
            let Kind::GatewayOffline { silence_ms, grace_ms } = rule.kind else { continue };
            for g in &gateways {
                let meta = self.devices.get(&g.id).cloned();
                let Some(meta) = meta else { continue };
                if !rule.select.matches(&meta) {
                    continue;
                }
                let last = self.gateway_last.get(&g.id).copied();
                let status = self.inventory.gateway_online(&g.id);
                let st = self.groups[i].entry(g.id.clone()).or_default();
                match status {
                    Some(false) => {
                        st.offline_since.get_or_insert(now);
                    }
                    _ => st.offline_since = None,
                }
                let by_status = st.offline_since.is_some_and(|s| now - s >= grace_ms);
                let silent = last.is_some_and(|l| now - l > silence_ms);
                let is_down = by_status || silent;
                if is_down || st.offline_since.is_some() {
                    down.insert(g.id.clone());
                }
                let since = match (by_status, last) {
                    (true, _) => st.offline_since,
                    (false, Some(l)) => Some(l),
                    _ => None,
                };
                if let Some(c) = st.hold.step(is_down, !is_down, now, rule.for_ms, rule.clear_for_ms) {
                    let c = match (c, since) {
                        (Cond::Firing { .. }, Some(s)) => Cond::Firing { since: s },
                        (c, _) => c,
                    };
                    let silent_s = last.map(|l| ((now - l) / 1000) as f64);
                    self.out.push(signal(&rule, Entity::Gateway(g.id.clone()), Some(&meta), c, silent_s, now));
                }
            }
        }
        down
    }

    fn tick_staleness(&mut self, i: usize, rule: &Arc<Rule>, now: i64, down: &HashSet<String>) {
        let Kind::Staleness { missed, expected_ms, min_silence_ms, group_min_devices, .. } = rule.kind else {
            return;
        };
        let is_stale = |last: i64, interval: Option<f64>| {
            let iv = expected_ms.map(|e| e as f64).or(interval).unwrap_or(0.0);
            (now - last) as f64 > (f64::from(missed) * iv).max(min_silence_ms as f64)
        };
        // Pass 1: per gateway, devices and silent devices (and the oldest silence). Keys
        // borrow the states; only the few gateways are turned into owned strings.
        let summary: Vec<(String, u32, u32, i64)> = {
            let mut by_gateway: HashMap<&str, (u32, u32, i64)> = HashMap::new();
            for st in self.states[i].values() {
                let State::Stale { last, interval, meta, .. } = st else { continue };
                let e = by_gateway.entry(meta.gateway.as_str()).or_insert((0, 0, i64::MAX));
                e.0 += 1;
                if is_stale(*last, *interval) {
                    e.1 += 1;
                    e.2 = e.2.min(*last);
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
        for st in self.states[i].values_mut() {
            let State::Stale { hold, last, interval, meta } = st else { continue };
            let stale = is_stale(*last, *interval);
            let suppressed = down.contains(&meta.gateway) || grouped.contains(meta.gateway.as_str());
            let c = if suppressed { hold.reset() } else { hold.step(stale, !stale, now, 0, 0) };
            if let Some(c) = c {
                let c = match c {
                    Cond::Firing { .. } => Cond::Firing { since: *last },
                    c => c,
                };
                let silent_s = Some(((now - *last) / 1000) as f64);
                self.out.push(signal(rule, Entity::Device(meta.id.clone()), Some(meta), c, silent_s, now));
            }
        }
        for (gw, n, s, oldest) in &summary {
            let raise = grouped.contains(gw.as_str()) && !down.contains(gw);
            let st = self.groups[i].entry(gw.clone()).or_default();
            let c = if down.contains(gw) { st.hold.reset() } else { st.hold.step(raise, !raise, now, 0, 0) };
            if let Some(c) = c {
                let c = match c {
                    Cond::Firing { .. } => Cond::Firing { since: *oldest },
                    c => c,
                };
                let meta = self.devices.get(gw).cloned();
                let mut sig = signal(rule, Entity::Gateway(gw.clone()), meta.as_deref(), c, Some(f64::from(*s)), now);
                sig.summary = format!("{} ({s} of {n} devices silent)", sig.summary);
                self.out.push(sig);
            }
        }
    }

    fn tick_mass_balance(&mut self, i: usize, rule: &Arc<Rule>, now: i64) {
        let Kind::MassBalance {
            inflow,
            meters,
            window_ms,
            every_ms,
            max_loss_pct,
            clear_loss_pct,
            max_gap_ms,
            min_inflow,
            ..
        } = &rule.kind
        else {
            return;
        };
        let due = self.groups[i].entry(String::new()).or_default();
        if now < due.next_eval {
            return;
        }
        due.next_eval = now + every_ms;
        // District -> (inflow counters, meter counters, meters in the inventory).
        let mut districts: BTreeMap<String, District<'_>> = BTreeMap::new();
        for meta in self.devices.values() {
            let Some(d) = meta.district.as_ref() else { continue };
            if !rule.select.matches(meta) {
                continue;
            }
            if meters.matches(meta) {
                districts.entry(d.clone()).or_default().2 += 1;
            }
        }
        for (dev, st) in &self.states[i] {
            let State::Counter(c) = st else { continue };
            let Some(meta) = self.devices.get(&**dev) else { continue };
            let Some(d) = meta.district.as_ref() else { continue };
            let e = districts.entry(d.clone()).or_default();
            if inflow.matches(meta) {
                e.0.push(c);
                e.3 = Some(meta.clone());
            } else if meters.matches(meta) {
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
            let fresh = |c: &Consumption| c.last_ts().is_some_and(|t| now - t <= *max_gap_ms);
            if !ins.iter().all(|c| fresh(c)) {
                continue;
            }
            let reporting: Vec<&Consumption> = ms.iter().copied().filter(|c| fresh(c)).collect();
            let missing = n_meters.saturating_sub(reporting.len());
            if reporting.is_empty() || missing as f64 > 0.02 * n_meters as f64 {
                continue;
            }
            let t_end = ins.iter().chain(reporting.iter()).filter_map(|c| c.last_ts()).min().unwrap_or(now);
            let t_start = t_end - window_ms;
            let total_in: Option<f64> = ins.iter().map(|c| c.between(t_start, t_end)).sum();
            let used: Option<f64> = reporting.iter().map(|c| c.between(t_start, t_end)).sum();
            let (Some(total_in), Some(used)) = (total_in, used) else { continue }; // still learning
            if total_in <= *min_inflow || total_in <= 0.0 {
                continue;
            }
            let used = used * n_meters.max(1) as f64 / reporting.len() as f64;
            let loss = (total_in - used) / total_in * 100.0;
            results.push((district, loss, in_meta, t_end));
        }
        for (district, loss, in_meta, t_end) in results {
            let st = self.groups[i].entry(district.clone()).or_default();
            let raise = loss > *max_loss_pct;
            let clear = loss < *clear_loss_pct;
            if let Some(c) = st.hold.step(raise, clear, t_end, rule.for_ms, rule.clear_for_ms) {
                let v = Some((loss * 10.0).round() / 10.0);
                let mut s = signal(rule, Entity::District(district.clone()), in_meta.as_deref(), c, v, t_end);
                s.device = None;
                s.district = Some(district);
                self.out.push(s);
            }
        }
    }

    fn tick_night_flow(&mut self, i: usize, rule: &Arc<Rule>, now: i64) {
        let Kind::NightFlow {
            metric,
            start_hour,
            end_hour,
            utc_offset_hours,
            baseline_nights,
            min_nights,
            rise_pct,
            min_rise,
            smoothing_ms,
        } = &rule.kind
        else {
            return;
        };
        let Some(store) = self.store.clone() else { return };
        let day = stats::local_day(now, *utc_offset_hours);
        if stats::local_hour(now, *utc_offset_hours) < *end_hour {
            return;
        }
        let devices: Vec<Arc<str>> = self.states[i].keys().cloned().collect();
        for dev in devices {
            let Some(meta) = self.devices.get(&*dev).cloned() else { continue };
            let st = self.groups[i].entry(dev.to_string()).or_default();
            if st.last_day == Some(day) {
                continue;
            }
            st.last_day = Some(day);
            let mnf = |d: i64| -> Option<f64> {
                let from = stats::local_time(d, *start_hour, *utc_offset_hours);
                let to = stats::local_time(d, *end_hour, *utc_offset_hours);
                let points = store
                    .range(&dev, metric.name(), protocol::Timestamp(from), protocol::Timestamp(to), 1_000_000)
                    .ok()?;
                let mut buckets: BTreeMap<i64, (f64, u32)> = BTreeMap::new();
                for p in points.iter().filter(|p| p.quality != Quality::Bad && p.value.is_finite()) {
                    let b = buckets.entry((p.ts.0 - from) / smoothing_ms).or_default();
                    b.0 += p.value;
                    b.1 += 1;
                }
                // Only full-enough buckets: a bucket of one sample is not a mean.
                let max_n = buckets.values().map(|b| b.1).max()?;
                buckets.values().filter(|b| b.1 * 2 >= max_n).map(|b| b.0 / f64::from(b.1)).reduce(f64::min)
            };
            for k in 1..=i64::from(*baseline_nights) {
                if !st.nights.contains_key(&(day - k))
                    && let Some(m) = mnf(day - k)
                {
                    st.nights.insert(day - k, (m, false));
                }
            }
            let Some(tonight) = mnf(day) else { continue };
            let mut base: Vec<f64> = (1..=i64::from(*baseline_nights))
                .filter_map(|k| st.nights.get(&(day - k)))
                .filter(|(_, raised)| !raised)
                .map(|(m, _)| *m)
                .collect();
            base.sort_by(f64::total_cmp);
            let judged = base.len() >= *min_nights as usize;
            let baseline = if base.is_empty() { 0.0 } else { base[base.len() / 2] };
            let raise = judged && tonight > baseline * (1.0 + rise_pct / 100.0) && tonight - baseline >= *min_rise;
            st.nights.insert(day, (tonight, raise));
            while st.nights.len() > (*baseline_nights as usize + 2) {
                st.nights.pop_first();
            }
            let at = stats::local_time(day, *end_hour, *utc_offset_hours);
            if let Some(c) = st.hold.step(raise, !raise, at, 0, 0) {
                let c = match c {
                    Cond::Firing { .. } => {
                        Cond::Firing { since: stats::local_time(day, *start_hour, *utc_offset_hours) }
                    }
                    c => c,
                };
                let v = Some((tonight * 1000.0).round() / 1000.0);
                let mut s = signal(rule, Entity::Device(dev.to_string()), Some(&meta), c, v, at);
                if judged {
                    s.summary = format!("{} (baseline {:.3})", s.summary, baseline);
                }
                self.out.push(s);
            }
        }
    }

    /// Series tracked, for the benchmark and `GET /api/v1/rules`.
    pub fn series(&self) -> Vec<usize> {
        self.states.iter().map(HashMap::len).collect()
    }
}

fn state_hold(st: &State) -> Option<&Hold> {
    match st {
        State::Threshold(h)
        | State::Rate { hold: h, .. }
        | State::Flatline { hold: h, .. }
        | State::Pump { hold: h, .. }
        | State::Tank { hold: h, .. }
        | State::Thi { hold: h, .. }
        | State::Stale { hold: h, .. } => Some(h),
        State::Drift(d) => Some(&d.hold),
        State::Animal(a) => Some(&a.hold),
        State::Counter(_) | State::NightSeries => None,
    }
}

fn group_entity(rule: &Rule, key: &str) -> Entity {
    match rule.kind {
        Kind::MassBalance { .. } => Entity::District(key.to_string()),
        Kind::NightFlow { .. } => Entity::Device(key.to_string()),
        _ => Entity::Gateway(key.to_string()),
    }
}

fn signal(
    rule: &Arc<Rule>,
    entity: Entity,
    meta: Option<&DeviceMeta>,
    cond: Cond,
    value: Option<f64>,
    at: i64,
) -> Signal {
    let summary = render(&rule.summary, meta, &entity, value);
    let device = match &entity {
        Entity::Device(d) => Some(d.clone()),
        _ => None,
    };
    Signal {
        rule: rule.clone(),
        tenant: meta.map(|m| m.tenant.clone()).unwrap_or_default(),
        site: meta.map(|m| m.site.clone()),
        gateway: match &entity {
            Entity::Gateway(g) => Some(g.clone()),
            _ => meta.map(|m| m.gateway.clone()),
        },
        district: meta.and_then(|m| m.district.clone()),
        device,
        entity,
        cond,
        value,
        at,
        summary,
    }
}

/// True if `s` selects any device of the inventory of one of `tenants` (empty: any).
pub fn selects_any(s: &Selector, devices: &HashMap<String, Arc<DeviceMeta>>, may_see: impl Fn(&str) -> bool) -> bool {
    devices.values().any(|d| may_see(&d.tenant) && s.matches(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{Device, GatewayInfo, InventoryFile, Site};
    use crate::rules::config::RuleSet;
    use conf::Source;
    use protocol::Timestamp;

    fn inventory() -> Arc<Inventory> {
        let site = |id: &str, kind: &str, tenant: &str| Site {
            id: id.into(),
            name: id.into(),
            kind: kind.into(),
            tenant: tenant.into(),
            lat: 0.0,
            lon: 0.0,
            village: (kind == "village").then(|| id.to_string()),
            district: (tenant == "county").then(|| "district-1".to_string()),
        };
        let dev = |id: &str, kind: DeviceKind, site: &str, gw: &str| Device {
            id: id.into(),
            kind,
            site: site.into(),
            gateway: gw.into(),
            model: String::new(),
            lat: None,
            lon: None,
        };
        let mut devices = vec![
            dev("pump", DeviceKind::PumpStation, "works", "gw-works"),
            dev("wq", DeviceKind::WaterQuality, "works", "gw-works"),
            dev("barn", DeviceKind::BarnClimate, "farm", "gw-farm"),
            dev("cow-1", DeviceKind::CowCollar, "farm", "gw-farm"),
        ];
        for m in 0..4 {
            devices.push(dev(&format!("m{m}"), DeviceKind::WaterMeter, "village", "gw-village"));
        }
        Arc::new(Inventory::from_file(InventoryFile {
            sites: vec![
                site("works", "waterworks", "county"),
                site("village", "village", "county"),
                site("farm", "farm", "dairy"),
            ],
            gateways: vec![
                GatewayInfo { id: "gw-works".into(), tenant: "county".into(), site: "works".into(), public_key: None },
                GatewayInfo { id: "gw-village".into(), tenant: "county".into(), site: "village".into(), public_key: None },
                GatewayInfo { id: "gw-farm".into(), tenant: "dairy".into(), site: "farm".into(), public_key: None },
            ],
            devices,
        }))
    }

    fn eval(text: &str) -> Evaluator {
        let set = RuleSet::from_sources(&[Source::from_text("t.toml", text)]).unwrap_or_else(|e| panic!("{e}"));
        Evaluator::new(set.rules, inventory(), None)
    }

    fn r(device: &str, metric: &str, ts: i64, v: f64) -> Reading {
        Reading::new(device, Metric::new(metric), Timestamp(ts), v)
    }

    fn conds(s: &[Signal]) -> Vec<(String, &'static str)> {
        s.iter()
            .map(|s| {
                let c = match s.cond {
                    Cond::Pending { .. } => "pending",
                    Cond::Firing { .. } => "firing",
                    Cond::Clear => "clear",
                };
                (s.entity.id().to_string(), c)
            })
            .collect()
    }

    const RULE: &str = "[[rules]]\nseverity = \"critical\"\nsummary = \"{device} at {value}\"\n";

    #[test]
    fn a_threshold_fires_after_its_hold_and_clears_past_its_hysteresis() {
        let mut e = eval(&format!(
            "{RULE}id = \"cl-low\"\nkind = \"threshold\"\nmetric = \"free_chlorine\"\nbelow = 0.3\nclear = 0.35\nfor_secs = 300\n"
        ));
        let mut all = Vec::new();
        for (t, v) in [(0, 0.6), (60, 0.2), (200, 0.25), (360, 0.2), (400, 0.32), (500, 0.4)] {
            all.extend(e.readings(&[r("pump", "free_chlorine", t * 1000, v)]));
        }
        assert_eq!(
            conds(&all),
            [("pump".into(), "clear"), ("pump".into(), "pending"), ("pump".into(), "firing"), ("pump".into(), "clear")]
        );
        assert_eq!(all[2].summary, "pump at 0.2");
        assert_eq!(all[3].at, 500_000, "0.32 is inside the hysteresis band: still firing");
    }

    #[test]
    fn a_fault_word_bit_is_its_own_condition() {
        let mut e = eval(&format!(
            "{RULE}id = \"trip\"\nkind = \"threshold\"\nmetric = \"fault_word\"\nbit = 0\nabove = 0.5\n"
        ));
        assert_eq!(conds(&e.readings(&[r("pump", "fault_word", 0, 256.0)])), [("pump".into(), "clear")]);
        assert_eq!(conds(&e.readings(&[r("pump", "fault_word", 1, 257.0)])), [("pump".into(), "firing")]);
    }

    #[test]
    fn devices_behind_a_silent_gateway_are_one_alert_not_one_each() {
        let mut e = eval(&format!(
            "{RULE}id = \"meters-silent\"\nkind = \"staleness\"\nmin_silence_secs = 60\nselect = {{ kind = \"water_meter\" }}\n"
        ));
        for t in 0..10 {
            let batch: Vec<Reading> = (0..4).map(|m| r(&format!("m{m}"), "volume_total", t * 10_000, 1.0)).collect();
            e.readings(&batch);
        }
        // One meter goes quiet: one device alert.
        for t in 10..20 {
            let batch: Vec<Reading> = (1..4).map(|m| r(&format!("m{m}"), "volume_total", t * 10_000, 1.0)).collect();
            e.readings(&batch);
        }
        let s = e.tick(200_000);
        assert!(conds(&s).contains(&("m0".into(), "firing")), "{:?}", conds(&s));
        // Then all of them: the device alert gives way to one gateway alert.
        let s = e.tick(400_000);
        let c = conds(&s);
        assert!(c.contains(&("gw-village".into(), "firing")), "{c:?}");
        assert!(c.contains(&("m0".into(), "clear")), "{c:?}");
        assert_eq!(c.iter().filter(|x| x.1 == "firing").count(), 1, "{c:?}");
    }

    #[test]
    fn a_gateway_that_says_offline_suppresses_the_staleness_of_its_devices() {
        let mut e = eval(&format!(
            "{RULE}id = \"gw\"\nkind = \"gateway_offline\"\ngrace_secs = 30\n\n{RULE}id = \"wq-silent\"\nkind = \"staleness\"\nmin_silence_secs = 60\nselect = {{ kind = \"water_quality\" }}\n"
        ));
        e.readings(&[r("wq", "ph", 0, 7.5), r("wq", "ph", 10_000, 7.5)]);
        e.tick(20_000);
        e.inventory.set_gateway_online("gw-works", false);
        let s = e.tick(30_000);
        assert!(conds(&s).iter().all(|c| c.1 != "firing"), "grace first: {:?}", conds(&s));
        let s = e.tick(70_000);
        assert_eq!(
            conds(&s).iter().filter(|c| c.1 == "firing").collect::<Vec<_>>(),
            [&("gw-works".to_string(), "firing")]
        );
        let s = e.tick(400_000);
        assert!(!conds(&s).iter().any(|c| c.0 == "wq" && c.1 == "firing"), "{:?}", conds(&s));
        e.inventory.set_gateway_online("gw-works", true);
        e.readings(&[r("wq", "ph", 410_000, 7.5)]);
        let s = e.tick(411_000);
        assert!(conds(&s).contains(&("gw-works".into(), "clear")), "{:?}", conds(&s));
    }

    #[test]
    fn district_loss_is_inflow_against_the_sum_of_household_meters() {
        let mut e = eval(&format!(
            "{RULE}id = \"loss\"\nkind = \"mass_balance\"\ninflow = {{ kind = \"pump_station\" }}\nmeters = {{ kind = \"water_meter\" }}\nwindow_secs = 3600\nevery_secs = 60\nmax_loss_pct = 25\n"
        ));
        let mut out = Vec::new();
        for step in 0..=240 {
            let t = step * 30_000;
            let h = step as f64 / 120.0;
            // 4 households at 1 m3/h; inflow 4.4 m3/h (10% loss), then a burst adds 3 m3/h after 2 h.
            let burst = if step > 120 { 3.0 * (h - 1.0) } else { 0.0 };
            let mut b = vec![r("pump", "volume_total", t, 4.4 * h + burst)];
            // m3 wraps its register on the way, m2 is replaced by a new meter at 1 h.
            b.push(r("m3", "volume_total", t, (4_294_967.0 + h) % 4_294_967.296));
            b.push(r("m2", "volume_total", t, if step < 120 { 500.0 + h } else { h - 1.0 }));
            for m in 0..2 {
                b.push(r(&format!("m{m}"), "volume_total", t, 100.0 + h));
            }
            e.readings(&b);
            out.extend(e.tick(t));
        }
        let fired: Vec<&Signal> = out.iter().filter(|s| matches!(s.cond, Cond::Firing { .. })).collect();
        assert_eq!(fired.len(), 1, "{:?}", conds(&out));
        assert_eq!(fired[0].entity, Entity::District("district-1".into()));
        // Before the burst the loss is the background 10% (rollover and replacement did not
        // turn into water); the burst from 1 h pushes the hour's loss over 25% once it
        // makes up 31% of the window: 19 minutes later.
        assert!((4_700_000..4_800_000).contains(&fired[0].at), "fired at {}", fired[0].at);
        assert!(fired[0].value.unwrap() > 25.0);
    }

    #[test]
    fn a_cow_is_compared_with_her_own_baseline() {
        let mut e = eval(&format!(
            "{RULE}id = \"fever\"\nkind = \"animal_baseline\"\nmetric = \"body_temperature\"\nmethod = \"rise\"\nrise = 0.8\nmin_baseline_hours = 24\nsmoothing_secs = 1800\nfor_secs = 1800\n"
        ));
        let mut out = Vec::new();
        for step in 0..(72 * 60) {
            let t = step * 60_000;
            let fever = if step > 60 * 60 { 1.2 } else { 0.0 };
            out.extend(e.readings(&[r("cow-1", "body_temperature", t, 39.1 + fever)]));
        }
        let fired = out.iter().find(|s| matches!(s.cond, Cond::Firing { .. })).expect("fever alert");
        let h = fired.at as f64 / 3_600_000.0;
        assert!((60.0..62.5).contains(&h), "fired at {h} h");
    }

    #[test]
    fn cusum_catches_a_sustained_shift_of_subgroup_means_and_ignores_noise() {
        let mut e = eval(&format!(
            "{RULE}id = \"ph-drift\"\nkind = \"drift\"\nmetric = \"ph\"\nmethod = \"cusum\"\nsubgroup_secs = 600\nlearn_subgroups = 12\nmin_sigma = 0.05\n"
        ));
        let mut rng = firmware::prng::Rng::new(1, 2);
        let mut out = Vec::new();
        for step in 0..(48 * 60) {
            let t = step * 60_000;
            let shift = if step > 24 * 60 { 0.1 } else { 0.0 };
            out.extend(e.readings(&[r("wq", "ph", t, 7.5 + shift + 0.05 * f64::from(rng.normal()))]));
        }
        let fired: Vec<&Signal> = out.iter().filter(|s| matches!(s.cond, Cond::Firing { .. })).collect();
        assert_eq!(fired.len(), 1, "{:?}", conds(&out));
        let h = fired[0].at as f64 / 3_600_000.0;
        assert!((24.0..27.0).contains(&h), "a 2-sigma shift at 24 h found at {h} h");
    }

    #[test]
    fn a_pump_that_runs_without_flow_is_caught_and_a_stopped_one_is_not() {
        let mut e =
            eval(&format!("{RULE}id = \"dry\"\nkind = \"pump_flow\"\nmode = \"run_without_flow\"\nfor_secs = 60\n"));
        let mut out = Vec::new();
        for step in 0..20 {
            let t = step * 10_000;
            let (run, flow) = match step {
                0..5 => (1.0, 40.0),
                5..10 => (0.0, 0.0),
                _ => (1.0, 0.5),
            };
            out.extend(e.readings(&[r("pump", "pump_running", t, run), r("pump", "pump_flow", t, flow)]));
        }
        assert_eq!(conds(&out), [("pump".into(), "clear"), ("pump".into(), "pending"), ("pump".into(), "firing")]);
        assert_eq!(out[2].at, 160_000);
    }

    #[test]
    fn a_draining_tank_projects_its_time_to_empty() {
        let mut e = eval(&format!("{RULE}id = \"tte\"\nkind = \"tank_empty\"\ntrend_secs = 1800\nwithin_hours = 1\n"));
        let mut out = Vec::new();
        for step in 0..=400 {
            let t = step * 10_000;
            // 2 m falling at 1 m/h: empty within the hour from 1 m on (after 1 h).
            out.extend(e.readings(&[r("pump", "tank_level", t, 2.0 - step as f64 * 10.0 / 3600.0)]));
        }
        let fired = out.iter().find(|s| matches!(s.cond, Cond::Firing { .. })).expect("fires");
        assert_eq!(fired.at, 3_610_000, "the first reading below 1 m");
    }

    #[test]
    fn barn_thi_is_computed_from_temperature_and_humidity() {
        let mut e = eval(&format!("{RULE}id = \"thi\"\nkind = \"thi\"\nabove = 80\nclear = 78\n"));
        let s = e.readings(&[r("barn", "barn_temperature", 0, 32.0), r("barn", "relative_humidity", 0, 70.0)]);
        assert_eq!(conds(&s), [("barn".into(), "firing")]);
        assert!((s[0].value.unwrap() - 84.4).abs() < 0.05, "{:?}", s[0].value);
    }

    #[test]
    fn a_stuck_value_is_a_flatline_and_a_moving_one_is_not() {
        let mut e = eval(&format!("{RULE}id = \"stuck\"\nkind = \"flatline\"\nmetric = \"ph\"\nfor_secs = 1800\n"));
        let mut out = Vec::new();
        for step in 0..60 {
            let v = if step < 20 { 7.5 + 0.01 * (step % 3) as f64 } else { 7.52 };
            out.extend(e.readings(&[r("wq", "ph", step * 60_000, v)]));
        }
        let fired = out.iter().find(|s| matches!(s.cond, Cond::Firing { .. })).expect("fires");
        assert_eq!(fired.at, 50 * 60_000, "30 minutes after the last change at 20 min");
    }
}
