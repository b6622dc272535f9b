//! The metric catalogue: every metric the system knows, with its canonical unit.
//!
//! Units come from here and never from a reading, so two devices that report the same
//! metric can always be compared. Device profiles convert vendor units into these (a
//! meter that counts litres gets `scale = 0.001` to report m³).
//!
//! Invariants:
//! - `id` is part of the binary wire format: never reuse or renumber one. Add new metrics
//!   at the end.
//! - `name` is what JSON, the API, the store and InfluxDB measurements use.
//! - `range` is the physically plausible span. A value outside it is a broken sensor or a
//!   decoding error (wrong word order, wrong scale), and ingest refuses it rather than let
//!   it poison baselines and roll-ups.

use alloc::string::String;
use core::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Groups metrics by what they describe; retention and dashboards are set per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Hydraulics of the supply: flow, volume, pressure, tank level.
    Water,
    /// Drinking-water quality (GB 5749-2022 parameters).
    WaterQuality,
    /// Pumps: run state, motor current, fault words.
    Pump,
    /// One animal: body temperature, activity, rumination, milk.
    Animal,
    /// Barn climate.
    Barn,
    /// Village loudspeakers.
    Speaker,
    /// Health of devices, gateways and their queues.
    Health,
    /// Written through the line-protocol endpoint; not in the catalogue.
    External,
}

/// One entry of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricDef {
    /// Stable wire id of the binary codec (1-based; 0 means "custom name follows").
    pub id: u16,
    /// Stable name used in JSON, the API and the store.
    pub name: &'static str,
    /// Canonical unit (UCUM-like text shown to people).
    pub unit: &'static str,
    /// What the metric describes.
    pub family: Family,
    /// One line for people reading the API or a dashboard legend.
    pub description: &'static str,
    /// Physically plausible span, inclusive. Outside it a value is a fault, not a reading.
    pub range: (f64, f64),
}

macro_rules! catalogue {
    ($( $id:literal $name:literal $unit:literal $family:ident ($lo:expr, $hi:expr) $desc:literal; )*) => {
        /// Every metric the system knows, ordered by wire id.
        pub static CATALOGUE: &[MetricDef] = &[
            $( MetricDef { id: $id, name: $name, unit: $unit, family: Family::$family, description: $desc, range: ($lo, $hi) }, )*
        ];
    };
}

catalogue! {
    // --- drinking-water supply ---
    1  "flow"              "m3/h"    Water        (-100_000.0, 100_000.0) "Volume flow rate; negative is reverse flow.";
    2  "volume_total"      "m3"      Water        (0.0, 1.0e10)           "Totalised volume register of a meter (a counter: it rolls over and resets).";
    3  "pressure"          "MPa"     Water        (-0.1, 4.0)             "Gauge pressure; network ends must stay >= 0.14 MPa.";
    4  "tank_level"        "m"       Water        (-1.0, 100.0)           "Water depth in a storage tank above its outlet.";
    // --- water quality, GB 5749-2022 ---
    5  "free_chlorine"     "mg/L"    WaterQuality (0.0, 50.0)             "Free chlorine residual.";
    6  "turbidity"         "NTU"     WaterQuality (0.0, 4000.0)           "Turbidity.";
    7  "ph"                "pH"      WaterQuality (0.0, 14.0)             "pH.";
    8  "conductivity"      "uS/cm"   WaterQuality (0.0, 200_000.0)        "Electrical conductivity (TDS ~ 0.5-0.7 x uS/cm).";
    9  "water_temperature" "°C"      WaterQuality (-5.0, 100.0)           "Water temperature.";
    // --- pumps ---
    10 "pump_running"      "bool"    Pump         (0.0, 1.0)              "Pump run feedback: 1 running, 0 stopped.";
    11 "pump_current"      "A"       Pump         (0.0, 5000.0)           "Motor current.";
    12 "fault_word"        "bits"    Pump         (0.0, 4_294_967_295.0)  "Device fault and alarm bits as reported (see the device profile for their meaning).";
    // --- dairy: one animal ---
    13 "body_temperature"  "°C"      Animal       (30.0, 45.0)            "Body (reticular or collar) temperature.";
    14 "activity"          "steps/h" Animal       (0.0, 20_000.0)         "Activity: steps per hour.";
    15 "rumination"        "min/h"   Animal       (0.0, 60.0)             "Minutes ruminating in the last hour (400-550 min/day healthy).";
    16 "milk_yield"        "kg"      Animal       (0.0, 100.0)            "Milk yield of the last milking.";
    17 "milk_conductivity" "mS/cm"   Animal       (0.0, 30.0)             "Milk electrical conductivity of the last milking.";
    // --- barn ---
    18 "barn_temperature"  "°C"      Barn         (-50.0, 70.0)           "Air temperature in the barn.";
    19 "relative_humidity" "%"       Barn         (0.0, 100.0)            "Relative humidity in the barn.";
    // --- loudspeakers ---
    20 "speaker_online"    "bool"    Speaker      (0.0, 1.0)              "Speaker terminal reports its amplifier and horn line ready.";
    21 "speaker_volume"    "%"       Speaker      (0.0, 100.0)            "Playback volume.";
    22 "playback_state"    "state"   Speaker      (0.0, 15.0)             "0 idle, 1 playing, 2 interrupted, 3 fault.";
    // --- health of devices, gateways and queues ---
    23 "device_online"     "bool"    Health       (0.0, 1.0)              "The gateway reached the device on its last poll.";
    24 "poll_success_ratio" "ratio"  Health       (0.0, 1.0)              "Share of successful polls over the recent window.";
    25 "response_time"     "ms"      Health       (0.0, 3_600_000.0)      "Device response time of the last successful poll.";
    26 "queue_fill"        "ratio"   Health       (0.0, 1.0)              "Fill level of the gateway's store-and-forward queue.";
    27 "queue_oldest_age"  "s"       Health       (0.0, 1.0e9)            "Age of the oldest unconfirmed batch in the gateway queue.";
    28 "queue_dropped"     "batches" Health       (0.0, 1.0e15)           "Batches dropped because the queue was full (a counter).";
    29 "battery_voltage"   "V"       Health       (0.0, 100.0)            "Battery voltage of a battery-powered device.";
    30 "valve_open"        "bool"    Water        (0.0, 1.0)              "Valve state of a meter with a shut-off valve: 1 open.";
    31 "queue_depth"       "batches" Health       (0.0, 1.0e12)           "Unconfirmed batches in the gateway queue.";
    32 "pump_flow"         "m3/h"    Pump         (-100_000.0, 100_000.0) "Flow delivered by the pump itself (into the tank), as opposed to the station's outlet flow.";
    33 "thi"               "index"   Barn         (0.0, 130.0)            "Temperature-humidity index (NRC formula) as the barn sensor computes it.";
    34 "volume_frozen"     "m3"      Water        (0.0, 1.0e10)           "A meter's forward total frozen at local midnight (its daily frozen reading): the day's opening read for billing.";
}

/// Looks a metric up by its stable name.
pub fn by_name(name: &str) -> Option<&'static MetricDef> {
    CATALOGUE.iter().find(|m| m.name == name)
}

/// Looks a metric up by its binary wire id.
pub fn by_id(id: u16) -> Option<&'static MetricDef> {
    // Ids are dense and 1-based; fall back to a scan if that ever stops being true.
    match CATALOGUE.get(usize::from(id).wrapping_sub(1)) {
        Some(m) if m.id == id => Some(m),
        _ => CATALOGUE.iter().find(|m| m.id == id),
    }
}

/// A metric name: one of the catalogue's, or a custom one written through line protocol.
///
/// Catalogue metrics are a reference to a static entry, so decoding a reading of a known
/// metric does not allocate.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Metric(Repr);

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Repr {
    Known(u16),
    Custom(String),
}

impl Metric {
    /// A metric from its name; names in the catalogue become catalogue metrics.
    pub fn new(name: &str) -> Metric {
        match by_name(name) {
            Some(def) => Metric(Repr::Known(def.id)),
            None => Metric(Repr::Custom(String::from(name))),
        }
    }

    /// The catalogue metric with this wire id, if there is one.
    pub fn from_id(id: u16) -> Option<Metric> {
        by_id(id).map(|def| Metric(Repr::Known(def.id)))
    }

    /// The catalogue entry, or `None` for a custom metric.
    pub fn def(&self) -> Option<&'static MetricDef> {
        match &self.0 {
            Repr::Known(id) => by_id(*id),
            Repr::Custom(_) => None,
        }
    }

    /// The metric's name.
    pub fn name(&self) -> &str {
        match &self.0 {
            Repr::Known(id) => by_id(*id).map_or("", |d| d.name),
            Repr::Custom(name) => name,
        }
    }

    /// The canonical unit, empty for custom metrics (their writer did not say).
    pub fn unit(&self) -> &'static str {
        self.def().map_or("", |d| d.unit)
    }
}

impl fmt::Debug for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Metric({})", self.name())
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<&'static MetricDef> for Metric {
    fn from(def: &'static MetricDef) -> Metric {
        Metric(Repr::Known(def.id))
    }
}

impl Serialize for Metric {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Metric {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Metric, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Metric;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a metric name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Metric, E> {
                Ok(Metric::new(v))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_ids_are_dense_unique_and_stable() {
        for (i, m) in CATALOGUE.iter().enumerate() {
            assert_eq!(usize::from(m.id), i + 1, "{} is out of order", m.name);
            assert_eq!(by_name(m.name).map(|d| d.id), Some(m.id));
            assert!(m.range.0 < m.range.1, "{} has an empty range", m.name);
        }
        // The binary codec depends on these never moving.
        assert_eq!(by_name("flow").map(|d| d.id), Some(1));
        assert_eq!(by_name("body_temperature").map(|d| d.id), Some(13));
        assert_eq!(by_name("playback_state").map(|d| d.id), Some(22));
    }

    #[test]
    fn the_catalogue_covers_every_family_the_county_needs() {
        for name in [
            "flow",
            "volume_total",
            "pressure",
            "tank_level",
            "free_chlorine",
            "turbidity",
            "ph",
            "conductivity",
            "water_temperature",
            "pump_running",
            "pump_current",
            "fault_word",
            "body_temperature",
            "activity",
            "rumination",
            "milk_yield",
            "milk_conductivity",
            "barn_temperature",
            "relative_humidity",
            "speaker_online",
            "speaker_volume",
            "playback_state",
        ] {
            assert!(by_name(name).is_some(), "{name} missing from the catalogue");
        }
    }

    #[test]
    fn known_names_become_catalogue_metrics_and_others_stay_custom() {
        let m = Metric::new("ph");
        assert_eq!(m.unit(), "pH");
        assert_eq!(m, Metric::from_id(7).unwrap());
        let c = Metric::new("cpu_usage_idle");
        assert!(c.def().is_none());
        assert_eq!(c.name(), "cpu_usage_idle");
        assert_eq!(c.unit(), "");
    }
}
