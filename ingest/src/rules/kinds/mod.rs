//! Rule kinds, one file each: the kind's spec (its own TOML keys), its compile step, its
//! compiled parameters, its state and its step (on readings) and tick (on time).
//!
//! The evaluator ([`super::eval`]) knows no kind: it routes readings and ticks to each
//! rule's [`RuleState`] as the kind's [`Check`] asks, and collects the [`Signal`]s.
//!
//! Adding a kind touches one new file here, one [`Kind`] variant, the arm of
//! [`Kind::check`] and the entry of [`KINDS`] (docs/ALERTS.md, "Adding a rule kind").
//! The test-only kind in `example.rs` is added exactly that way.
//!
//! Invariants:
//! - a kind's spec struct has `deny_unknown_fields`; its field names are the keys the kind
//!   takes, so nobody keeps a list of allowed keys by hand ([`super::config`] reads them
//!   from serde to say "`x` does not apply to a y rule");
//! - a compiled kind is plain data (`Clone + PartialEq + Serialize`): a rule whose
//!   definition did not change keeps its state on reload, and `GET /api/v1/rules` shows it;
//! - a [`RuleState`] holds a copy of its kind's parameters and every series of its rule.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;

use protocol::{Metric, Reading};
use serde::Serialize;
use serde::de::DeserializeOwned;
use store::Store;

use self::signal::Severity;
use self::signal::{Entity, Signal, signal};
use super::spec::{BroadcastSpec, Ctx, DeviceMeta, Selector};
use super::stats::{Cond, Hold};
use crate::inventory::Inventory;

/// The conversion into [`Kind`] and the [`Check`] of a kind that watches the metrics of its
/// `feed` expression (`self` named as given), keeps one state per device series in a
/// `State { k, series }` of its own file and is never ticked: most kinds. Written once here
/// so that a kind's file holds only what is its own.
macro_rules! series_kind {
    ($ty:ident => $variant:ident, feed: |$k:ident| $feed:expr) => {
        impl From<$ty> for super::Kind {
            fn from(k: $ty) -> super::Kind {
                super::Kind::$variant(k)
            }
        }

        impl super::Check for $ty {
            fn name(&self) -> &'static str {
                <Spec as super::Spec>::NAME
            }

            fn feed(&self) -> super::Feed {
                let $k = self;
                $feed
            }

            fn start(&self) -> Box<dyn super::RuleState> {
                Box::new(State { k: self.clone(), series: super::Series::new() })
            }
        }
    };
}

pub mod animal_baseline;
pub mod drift;
pub mod signal;

/// A compiled rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    /// Unique id; part of every alert's fingerprint.
    pub id: String,
    /// The pack file it came from.
    pub pack: String,
    /// Where in the file (for people reading `GET /api/v1/rules`).
    pub line: usize,
    /// Severity of its alerts.
    pub severity: Severity,
    /// Summary template: `{device}`, `{site}`, `{gateway}`, `{district}`, `{value}`.
    pub summary: String,
    /// For people.
    pub description: String,
    /// Which devices it looks at.
    pub select: Selector,
    /// How long the condition must hold before the alert fires.
    pub for_ms: i64,
    /// How long the clear condition must hold before the condition ends.
    pub clear_for_ms: i64,
    /// What it checks.
    #[serde(flatten)]
    pub kind: Kind,
    /// A broadcast to propose to the affected villages when it fires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broadcast: Option<BroadcastSpec>,
}

#[cfg(test)]
mod example;
pub mod flatline;
pub mod gateway_offline;
pub mod mass_balance;
pub mod night_flow;
pub mod pump_flow;
pub mod rate_of_change;
pub mod staleness;
pub mod tank_empty;
pub mod thi;
pub mod threshold;

/// The kind of a rule and its parameters; times in milliseconds. Serialised with the kind's
/// name in `kind` and its parameters beside it (`GET /api/v1/rules`).
///
/// Variants differ in size (a mass balance carries two selectors); rules are few and
/// built once, so boxing the large ones would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Kind {
    /// Value above or below a limit, with hysteresis and a hold time.
    Threshold(threshold::Threshold),
    /// Change of a value over a window.
    RateOfChange(rate_of_change::RateOfChange),
    /// No data from a device for a number of expected intervals.
    Staleness(staleness::Staleness),
    /// A whole gateway offline.
    GatewayOffline(gateway_offline::GatewayOffline),
    /// A value that does not move at all (stuck sensor).
    Flatline(flatline::Flatline),
    /// Drift of subgroup means against a learned baseline.
    Drift(drift::Drift),
    /// District loss: inflow against the sum of the district's meters.
    MassBalance(mass_balance::MassBalance),
    /// Minimum night flow above its baseline of the previous nights.
    NightFlow(night_flow::NightFlow),
    /// Pump state against pump flow.
    PumpFlow(pump_flow::PumpFlow),
    /// Tank level trend projects empty soon.
    TankEmpty(tank_empty::TankEmpty),
    /// An animal against her own recent normal.
    AnimalBaseline(animal_baseline::AnimalBaseline),
    /// Barn temperature-humidity index.
    Thi(thi::Thi),
    /// The example of adding a kind (tests only).
    #[cfg(test)]
    Example(example::Example),
}

impl Kind {
    /// The kind's behaviour.
    pub fn check(&self) -> &dyn Check {
        match self {
            Kind::Threshold(k) => k,
            Kind::RateOfChange(k) => k,
            Kind::Staleness(k) => k,
            Kind::GatewayOffline(k) => k,
            Kind::Flatline(k) => k,
            Kind::Drift(k) => k,
            Kind::MassBalance(k) => k,
            Kind::NightFlow(k) => k,
            Kind::PumpFlow(k) => k,
            Kind::TankEmpty(k) => k,
            Kind::AnimalBaseline(k) => k,
            Kind::Thi(k) => k,
            #[cfg(test)]
            Kind::Example(k) => k,
        }
    }

    /// The kind's name as written in packs.
    pub fn name(&self) -> &'static str {
        self.check().name()
    }
}

/// Every kind a pack may name, in the order error messages list them.
pub(crate) const KINDS: &[Entry] = &[
    Entry::of::<threshold::Spec>(),
    Entry::of::<rate_of_change::Spec>(),
    Entry::of::<staleness::Spec>(),
    Entry::of::<gateway_offline::Spec>(),
    Entry::of::<flatline::Spec>(),
    Entry::of::<drift::Spec>(),
    Entry::of::<mass_balance::Spec>(),
    Entry::of::<night_flow::Spec>(),
    Entry::of::<pump_flow::Spec>(),
    Entry::of::<tank_empty::Spec>(),
    Entry::of::<animal_baseline::Spec>(),
    Entry::of::<thi::Spec>(),
    #[cfg(test)]
    Entry::of::<example::Spec>(),
];

/// The TOML form of a kind: the keys it takes besides the common ones (`id`, `kind`,
/// `severity`, `summary`, `description`, `select`, `broadcast`), as a struct with
/// `deny_unknown_fields`.
pub trait Spec: DeserializeOwned {
    /// The name in packs (`kind = "..."`).
    const NAME: &'static str;
    /// What it compiles to.
    type Compiled: Into<Kind>;
    /// Checks the values and compiles them; every problem goes to `ctx` (all of them, each
    /// at its line), and `None` means the rule cannot be built.
    fn compile(self, ctx: &mut Ctx<'_>) -> Option<Self::Compiled>;
}

/// One kind of [`KINDS`]: its name, its keys, and how to build it from a rule's table.
pub(crate) struct Entry {
    /// The name in packs.
    pub name: &'static str,
    /// The keys of its spec.
    pub fields: fn() -> &'static [&'static str],
    /// Deserialises the kind's keys (a table holding only them) and compiles.
    pub build: for<'a, 'b> fn(&mut Ctx<'a>, toml::de::ValueDeserializer<'b>) -> Option<Kind>,
}

impl Entry {
    /// The entry of spec `S`.
    pub(crate) const fn of<S: Spec>() -> Entry {
        Entry { name: S::NAME, fields: super::spec::fields_of::<S>, build: build::<S> }
    }
}

fn build<S: Spec>(ctx: &mut Ctx<'_>, de: toml::de::ValueDeserializer<'_>) -> Option<Kind> {
    let spec = ctx.deserialize::<S>(de)?;
    spec.compile(ctx).map(Into::into)
}

/// Which readings reach a kind's [`RuleState::reading`].
#[derive(Debug, Clone, PartialEq)]
pub enum Feed {
    /// Good readings (quality not bad, finite value) of these metrics.
    Values(Vec<Metric>),
    /// Every reading that arrives, good or bad: of this metric, or (`None`) of any metric
    /// that is not a health metric. Data arriving is what counts (staleness).
    Arrivals(Option<Metric>),
}

/// When a kind runs on the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ticks {
    /// Before the others: it says which gateways are down ([`Tick::down`]).
    First,
    /// After the [`Ticks::First`] kinds.
    Then,
}

/// A kind's behaviour, as the evaluator sees it.
pub trait Check: Debug + Send + Sync {
    /// The name in packs.
    fn name(&self) -> &'static str;
    /// The readings it looks at.
    fn feed(&self) -> Feed;
    /// Whether (and in which order) it is ticked; `None`: readings only.
    fn ticks(&self) -> Option<Ticks> {
        None
    }
    /// True if readings of device `d` feed `rule` (the rule's selector, by default).
    fn selects(&self, rule: &Rule, d: &DeviceMeta) -> bool {
        rule.select.matches(d)
    }
    /// True if `rule` is shown to someone who may see device `d` (`GET /api/v1/rules`).
    fn visible(&self, rule: &Rule, d: &DeviceMeta) -> bool {
        rule.select.matches(d)
    }
    /// A new, empty state of one rule of this kind (its parameters copied in).
    fn start(&self) -> Box<dyn RuleState>;
}

/// The state of one rule: every series (device, gateway, district) it tracks.
pub trait RuleState: Debug + Send {
    /// Looks at one reading its kind's [`Check::feed`] lets through.
    fn reading(&mut self, _cx: &mut Step<'_>) {}
    /// Evaluates at time `cx.now` (kinds with [`Check::ticks`]).
    fn tick(&mut self, _cx: &mut Tick<'_>) {}
    /// Every entity whose condition is pending or firing now, with its device where known
    /// (cleared when the rule goes away on reload).
    fn active(&self, devices: &Devices) -> Vec<(Entity, Option<Arc<DeviceMeta>>)>;
    /// Device series tracked (for `GET /api/v1/rules` and the benchmark).
    fn series(&self) -> usize;
}

/// Devices by id, as selectors see them.
pub type Devices = HashMap<String, Arc<DeviceMeta>>;

/// Per-device states of one rule.
pub type Series<S> = HashMap<Arc<str>, S>;

/// One reading on its way into a rule.
pub struct Step<'a> {
    /// The rule.
    pub rule: &'a Arc<Rule>,
    /// The device's id (the key of per-device series).
    pub device: &'a Arc<str>,
    /// The device.
    pub meta: &'a Arc<DeviceMeta>,
    /// The reading.
    pub reading: &'a Reading,
    /// Where signals go.
    pub out: &'a mut Vec<Signal>,
}

impl Step<'_> {
    /// Emits a change of the device's condition at the reading's time.
    pub fn emit(&mut self, cond: Cond, value: Option<f64>) {
        let s =
            signal(self.rule, Entity::Device(self.meta.id.clone()), Some(self.meta), cond, value, self.reading.ts.0);
        self.out.push(s);
    }

    /// The state of this device's series, made by `make` if it has none yet.
    pub fn series<'s, S>(&self, series: &'s mut Series<S>, make: impl FnOnce() -> S) -> &'s mut S {
        series.entry(self.device.clone()).or_insert_with(make)
    }
}

/// One tick of time on its way into a rule.
pub struct Tick<'a> {
    /// The rule.
    pub rule: &'a Arc<Rule>,
    /// Now (ingest's clock, data time).
    pub now: i64,
    /// True on a scan pass: kinds that walk all their series every tick do so only then
    /// (a pass every few seconds keeps ticks cheap at 15,000 meters).
    pub scan: bool,
    /// Gateways down now: filled by the [`Ticks::First`] kinds, read by the others.
    pub down: &'a mut HashSet<String>,
    /// Every device the inventory knows.
    pub devices: &'a Devices,
    /// The inventory (gateway status).
    pub inventory: &'a Inventory,
    /// Newest data time from any device, per gateway.
    pub gateway_last: &'a HashMap<String, i64>,
    /// History, for kinds that compute baselines from the stored series.
    pub store: Option<&'a Arc<Store>>,
    /// Where signals go.
    pub out: &'a mut Vec<Signal>,
}

/// The active devices of per-device series whose condition is in `hold`.
pub fn active_devices<S>(
    series: &Series<S>,
    devices: &Devices,
    hold: impl Fn(&S) -> Option<&Hold>,
) -> Vec<(Entity, Option<Arc<DeviceMeta>>)> {
    series
        .iter()
        .filter(|(_, s)| hold(s).is_some_and(Hold::active))
        .map(|(dev, _)| (Entity::Device(dev.to_string()), devices.get(&**dev).cloned()))
        .collect()
}

/// The active group entities (gateways, districts) of `groups`.
pub fn active_groups<S>(
    groups: &HashMap<String, S>,
    entity: impl Fn(&str) -> Entity,
    hold: impl Fn(&S) -> &Hold,
) -> Vec<(Entity, Option<Arc<DeviceMeta>>)> {
    groups.iter().filter(|(_, g)| hold(g).active()).map(|(k, _)| (entity(k), None)).collect()
}
