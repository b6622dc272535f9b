//! A simulated county driving the real rules and alerts, in accelerated simulated time.
//!
//! What is real: the county's physics and firmware register maps, the gateway's device
//! profiles and their decoding (the same read plans and word orders a gateway uses), the
//! store (readings are appended durably, batch by batch, before the rules see them, as the
//! pipeline does), the rule packs shipped with ingest, the evaluator, the alert manager and
//! its log. What is played: the gateway's polling loop and MQTT (the harness reads the
//! registers through `County::read` instead of Modbus TCP, and hands durable readings to
//! the rules as the pipeline's sink would), and ingest's clock (it reads simulated time).
//! A gateway whose cabinet lost power publishes nothing and its status goes offline, as its
//! MQTT last will would say.

use std::sync::Arc;
use std::time::Duration;

use gateway::modbus::plan;
use gateway::modbus::value::{self, Table as GwTable};
use gateway::profile::Profile;
use ingest::alerts::model::{Alert, AlertState};
use ingest::alerts::{AlertEvent, Alerts, AlertsOptions, Deps};
use ingest::inventory::Inventory;
use protocol::{Batch, DeviceId, Metric, Quality, Reading, Timestamp};
use simulator::{County, CountySpec, SimError, Table};
use store::{Store, StoreConfig};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// 2025-04-07 00:00 in Beijing: a Monday in early April (barn THI stays under 72).
pub(crate) const APRIL_7: i64 = 1_743_955_200_000;
/// 2025-04-04 10:00 in Beijing: scenarios warm up for three days from here.
pub(crate) const APRIL_4_10AM: i64 = 1_743_732_000_000;
pub(crate) const HOUR_MS: i64 = 3_600_000;

fn table(t: GwTable) -> Table {
    match t {
        GwTable::Coil => Table::Coil,
        GwTable::Discrete => Table::Discrete,
        GwTable::Input => Table::Input,
        GwTable::Holding => Table::Holding,
    }
}

/// One device as its gateway polls it.
struct Polled {
    id: DeviceId,
    profile: Arc<Profile>,
    plan: plan::Plan,
    interval_ms: i64,
    next_ms: i64,
    online: Option<bool>,
}

struct Gw {
    id: String,
    seq: u64,
    devices: Vec<Polled>,
    powered: bool,
}

/// A county, a store and the rules, stepped together.
pub(crate) struct Sim {
    pub(crate) county: County,
    pub(crate) alerts: Alerts,
    pub(crate) inventory: Arc<Inventory>,
    store: Arc<Store>,
    gateways: Vec<Gw>,
    events: broadcast::Receiver<AlertEvent>,
    /// Every event seen, with the simulated time it was seen at.
    pub(crate) seen: Vec<(i64, AlertEvent)>,
    step_ms: i64,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
    pub(crate) readings: u64,
}

impl Sim {
    /// A county of `spec` from `start`, stepped every `step_ms` (devices poll at their
    /// plan interval, at least once a step).
    pub(crate) async fn new(spec: CountySpec, start: i64, step_ms: i64) -> Sim {
        let county = County::with_start(spec, Timestamp(start));
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, _) = Store::open(StoreConfig::new(dir.path().join("store"))).expect("store");
        let store = Arc::new(store);
        let inventory = Arc::new(Inventory::from_file(ingest::demo::inventory_of(county.plan())));
        // Its villages' inlet meters are district inlets, not household meters (as in the demo).
        inventory.set_districts(ingest::demo::districts_of(county.plan()));
        let clock_county = county.clone();
        let clock: ingest::pipeline::Clock = Arc::new(move || clock_county.now());
        let stop = CancellationToken::new();
        let deps = Deps {
            store: store.clone(),
            inventory: inventory.clone(),
            metrics: Arc::new(ingest::metrics::Metrics::default()),
            clock,
            data_dir: dir.path().to_path_buf(),
        };
        let opts = AlertsOptions { manual_ticks: true, ..AlertsOptions::default() };
        let alerts = Alerts::start(opts, deps, stop.clone()).expect("alerts start");
        let events = alerts.subscribe();
        let gateways = gateways(&county, start, step_ms);
        for g in county.plan().gateways.iter() {
            inventory.set_gateway_online(&g.id, true);
        }
        Sim {
            county,
            alerts,
            inventory,
            store,
            gateways,
            events,
            seen: Vec::new(),
            step_ms,
            stop,
            _dir: dir,
            readings: 0,
        }
    }

    /// Changes the step (and the shortest poll interval) from now on.
    pub(crate) fn set_step(&mut self, step_ms: i64) {
        self.step_ms = step_ms;
        let plan = self.county.plan().clone();
        for (g, gp) in self.gateways.iter_mut().zip(&plan.gateways) {
            for (d, dp) in g.devices.iter_mut().zip(&gp.devices) {
                d.interval_ms = (dp.interval_ms as i64).max(step_ms);
            }
        }
    }

    /// Sim time now.
    pub(crate) fn now(&self) -> i64 {
        self.county.now().0
    }

    /// Polls one device as its gateway would; `None` if it does not answer.
    fn poll(county: &County, d: &Polled, ts: Timestamp) -> Option<Vec<Reading>> {
        let mut responses = Vec::with_capacity(d.plan.reads.len());
        for r in &d.plan.reads {
            match county.read(&d.id, table(r.table), r.start, r.count) {
                Ok(w) => responses.push(w),
                Err(SimError::Offline(_)) => return None,
                Err(e) => panic!("{}: {e}", d.id),
            }
        }
        let mut out = Vec::new();
        for (point, loc) in d.profile.points.iter().zip(&d.plan.locations) {
            let words = &responses[loc.read][usize::from(loc.offset)..];
            let raw = value::decode(&words[..usize::from(point.width())], point.ty, point.order);
            let v = value::engineering(raw, point.scale, point.offset, point.bit);
            out.push(Reading {
                device: d.id.clone(),
                metric: point.metric.clone(),
                ts,
                value: v,
                quality: Quality::Good,
            });
        }
        if let Some(slots) = &d.profile.slots {
            let count = county.read(&d.id, table(slots.table), slots.count_address, 1).ok()?[0].min(slots.max);
            let per_read = (slots.table.max_read() / slots.stride).max(1);
            let mut words = Vec::new();
            let mut done = 0u16;
            while done < count {
                let n = per_read.min(count - done);
                words.extend(
                    county.read(&d.id, table(slots.table), slots.base + done * slots.stride, n * slots.stride).ok()?,
                );
                done += n;
            }
            for slot in words.chunks_exact(usize::from(slots.stride)) {
                let id = match value::decode(slot, slots.id_type, value::WordOrder::Abcd) {
                    value::Raw::Int(i) if i > 0 => u64::try_from(i).unwrap_or(0),
                    _ => continue,
                };
                let device = DeviceId::from(slots.device_id(id));
                for p in &slots.points {
                    let raw = value::decode(&slot[usize::from(p.address)..][..usize::from(p.width())], p.ty, p.order);
                    let v = value::engineering(raw, p.scale, p.offset, p.bit);
                    out.push(Reading {
                        device: device.clone(),
                        metric: p.metric.clone(),
                        ts,
                        value: v,
                        quality: Quality::Good,
                    });
                }
            }
        }
        Some(out)
    }

    /// Advances one step: physics, polls, durable append, rules, tick.
    pub(crate) async fn step(&mut self) {
        self.county.advance(Duration::from_millis(self.step_ms as u64));
        let now = self.now();
        let ts = Timestamp(now);
        let batches = poll_gateways(&self.county, &mut self.gateways, &self.inventory, now);
        let outcomes = self.store.append_batches(&batches).expect("store append");
        for (b, o) in batches.into_iter().zip(outcomes) {
            if matches!(o, store::AppendOutcome::Stored { .. }) {
                self.readings += b.readings.len() as u64;
                self.alerts.feed(b.readings).await;
            }
        }
        self.alerts.tick(ts).await;
        self.alerts.flush().await;
        while let Ok(e) = self.events.try_recv() {
            self.seen.push((now, e));
        }
    }

    /// Steps until `until` (sim ms).
    pub(crate) async fn run_until(&mut self, until: i64) {
        while self.now() < until {
            self.step().await;
        }
    }

    /// Steps until an alert of `rule` fires (returns it) or `deadline` passes.
    pub(crate) async fn until_firing(&mut self, rule: &str, deadline: i64) -> Option<Alert> {
        loop {
            if let Some(a) = self.firing_of(rule) {
                return Some(a);
            }
            if self.now() >= deadline {
                return None;
            }
            self.step().await;
        }
    }

    /// Steps until the alert `id` is resolved (returns it) or `deadline` passes.
    pub(crate) async fn until_resolved(&mut self, id: u64, deadline: i64) -> Option<Alert> {
        loop {
            let a = self.alerts.with_manager(|m| m.alert(id).cloned());
            if let Some(a) = a.filter(|a| a.state == AlertState::Resolved) {
                return Some(a);
            }
            if self.now() >= deadline {
                return None;
            }
            self.step().await;
        }
    }

    /// The firing event of `rule`, if one was seen.
    pub(crate) fn firing_of(&self, rule: &str) -> Option<Alert> {
        self.seen.iter().find_map(|(_, e)| match e {
            AlertEvent::Firing { alert } if alert.rule == rule => Some(alert.clone()),
            _ => None,
        })
    }

    /// Rules of every alert that fired so far, with their entity, in order.
    pub(crate) fn fired(&self) -> Vec<(String, String, i64)> {
        self.seen
            .iter()
            .filter_map(|(_, e)| match e {
                AlertEvent::Firing { alert } => {
                    Some((alert.rule.clone(), alert.entity.id().to_string(), alert.fired_at.map_or(0, |t| t.0)))
                }
                _ => None,
            })
            .collect()
    }

    /// Every alert record (any state).
    pub(crate) fn all_alerts(&self) -> Vec<Alert> {
        self.alerts.with_manager(|m| m.alerts(|_| true, 100_000))
    }
}

/// One poll round of every powered gateway at `now`: their batches.
fn poll_gateways(county: &County, gateways: &mut [Gw], inventory: &Inventory, now: i64) -> Vec<Batch> {
    let ts = Timestamp(now);
    let mut batches = Vec::new();
    for g in gateways {
        let powered = county.gateway_powered(&g.id);
        if powered != g.powered {
            // The broker publishes the last will when the gateway drops off; its first
            // status after power returns says online.
            inventory.set_gateway_online(&g.id, powered);
            g.powered = powered;
        }
        if !powered {
            continue;
        }
        let mut readings = Vec::new();
        for d in &mut g.devices {
            if now < d.next_ms {
                continue;
            }
            d.next_ms = now + d.interval_ms;
            let polled = Sim::poll(county, d, ts);
            let online = polled.is_some();
            if d.online != Some(online) {
                // The gateway's health reading on a change of state.
                readings.push(Reading::new(
                    d.id.clone(),
                    Metric::new("device_online"),
                    ts,
                    f64::from(u8::from(online)),
                ));
                d.online = Some(online);
            }
            readings.extend(polled.unwrap_or_default());
        }
        // The gateway's own queue reading, as every health interval.
        readings.push(Reading::new(g.id.as_str(), Metric::new("queue_depth"), ts, 0.0));
        g.seq += 1;
        batches.push(Batch { gateway: g.id.clone(), seq: g.seq, readings });
    }
    batches
}

/// The county's gateways without store or rules: what the benchmarks feed elsewhere.
pub(crate) struct Poller {
    pub(crate) county: County,
    pub(crate) inventory: Arc<Inventory>,
    gateways: Vec<Gw>,
    step_ms: i64,
}

impl Poller {
    /// Gateways of a county of `spec` from `start`, polling every `step_ms`.
    pub(crate) fn new(spec: CountySpec, start: i64, step_ms: i64) -> Poller {
        let county = County::with_start(spec, Timestamp(start));
        let inventory = Arc::new(Inventory::from_file(ingest::demo::inventory_of(county.plan())));
        // Its villages' inlet meters are district inlets, not household meters (as in the demo).
        inventory.set_districts(ingest::demo::districts_of(county.plan()));
        let gateways = gateways(&county, start, step_ms);
        Poller { county, inventory, gateways, step_ms }
    }

    /// Advances one step and polls.
    pub(crate) fn step(&mut self) -> Vec<Batch> {
        self.county.advance(Duration::from_millis(self.step_ms as u64));
        let now = self.county.now().0;
        poll_gateways(&self.county, &mut self.gateways, &self.inventory, now)
    }
}

fn gateways(county: &County, start: i64, step_ms: i64) -> Vec<Gw> {
    let (library, errors) = gateway::Library::builtin();
    assert!(errors.is_empty(), "{errors:?}");
    county
        .plan()
        .gateways
        .iter()
        .map(|g| Gw {
            id: g.id.clone(),
            seq: 0,
            powered: true,
            devices: g
                .devices
                .iter()
                .map(|d| {
                    let profile = library.get(&d.model).expect("profile of every simulated model");
                    let spans: Vec<_> = profile.points.iter().map(|p| (p.table, p.address, p.width())).collect();
                    Polled {
                        id: DeviceId::new(&d.id),
                        plan: plan::plan(&spans, profile.max_gap),
                        profile,
                        interval_ms: (d.interval_ms as i64).max(step_ms),
                        next_ms: start,
                        online: None,
                    }
                })
                .collect(),
        })
        .collect()
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Minutes, for people reading a table.
pub(crate) fn minutes(ms: i64) -> String {
    let m = ms as f64 / 60_000.0;
    if m < 120.0 { format!("{m:.1} min") } else { format!("{:.1} h", m / 60.0) }
}
