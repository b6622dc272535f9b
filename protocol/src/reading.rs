//! Readings and batches: what a gateway measures and how it ships it.
//!
//! A [`Reading`] is one value of one metric of one device at one instant. A [`Batch`] is
//! the unit of delivery: the gateway numbers batches with `seq`, persists that number
//! across restarts, and keeps a batch in its on-disk queue until ingest confirms the batch
//! is durable. Ingest stores a `(gateway, seq)` at most once, so resending is harmless.
//!
//! Invariants:
//! - `ts` is the time the value was taken (milliseconds since the Unix epoch, UTC), not the
//!   time it was sent: a batch replayed after an outage keeps its original times.
//! - `value` is in the metric's canonical unit (see [`crate::catalogue`]).

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::catalogue::Metric;

/// Milliseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Milliseconds since the Unix epoch.
    pub const fn millis(self) -> i64 {
        self.0
    }
}

/// How far a value can be trusted, as the device or gateway judged it.
///
/// Follows the OPC UA good / uncertain / bad split, which vendors' status registers map
/// onto: an analyser that reports "over-range" gives an uncertain value, one that reports
/// "reading error" a bad one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    /// The device reported a normal measurement.
    #[default]
    Good,
    /// The device flagged the value (over- or under-range, warming up, calibrating).
    Uncertain,
    /// The device reported a measurement error; the value is kept for diagnosis only.
    Bad,
}

impl Quality {
    /// Two-bit code used by the binary codec.
    pub const fn code(self) -> u8 {
        match self {
            Quality::Good => 0,
            Quality::Uncertain => 1,
            Quality::Bad => 2,
        }
    }

    /// Inverse of [`Quality::code`].
    pub const fn from_code(code: u8) -> Option<Quality> {
        match code {
            0 => Some(Quality::Good),
            1 => Some(Quality::Uncertain),
            2 => Some(Quality::Bad),
            _ => None,
        }
    }
}

/// A device id, shared cheaply between the readings of one device.
///
/// Decoding a batch gives all readings of a device the same `Arc`, so a poll that yields
/// ten metrics allocates the id once.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(Arc<str>);

impl DeviceId {
    /// A device id (not validated; see [`crate::id::validate`]).
    pub fn new(id: &str) -> DeviceId {
        DeviceId(Arc::from(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for DeviceId {
    fn from(s: &str) -> DeviceId {
        DeviceId::new(s)
    }
}

impl From<String> for DeviceId {
    fn from(s: String) -> DeviceId {
        DeviceId(Arc::from(s))
    }
}

impl core::ops::Deref for DeviceId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Serialize for DeviceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<DeviceId, D::Error> {
        String::deserialize(d).map(DeviceId::from)
    }
}

/// One value of one metric of one device at one instant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reading {
    /// The device that measured it.
    pub device: DeviceId,
    /// What was measured; the unit comes from the catalogue.
    pub metric: Metric,
    /// When it was measured.
    pub ts: Timestamp,
    /// The value in the metric's canonical unit. May be NaN on the wire; ingest refuses it.
    #[serde(with = "value_serde")]
    pub value: f64,
    /// How far the value can be trusted.
    #[serde(default)]
    pub quality: Quality,
}

impl Reading {
    /// A good-quality reading.
    pub fn new(device: impl Into<DeviceId>, metric: Metric, ts: Timestamp, value: f64) -> Reading {
        Reading { device: device.into(), metric, ts, value, quality: Quality::Good }
    }
}

impl PartialEq for Reading {
    /// Values compare by bits, so a NaN reading equals its own round trip.
    fn eq(&self, other: &Reading) -> bool {
        self.device == other.device
            && self.metric == other.metric
            && self.ts == other.ts
            && self.value.to_bits() == other.value.to_bits()
            && self.quality == other.quality
    }
}

/// The unit of delivery from a gateway to ingest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// The gateway that took the readings; must match the gateway in the topic.
    pub gateway: String,
    /// Per-gateway sequence number, persisted across gateway restarts, strictly increasing.
    pub seq: u64,
    /// The readings, in the order they were taken.
    pub readings: Vec<Reading>,
}

/// JSON has no NaN or infinities; carry them as the strings `"NaN"`, `"Infinity"` and
/// `"-Infinity"` so that ingest can refuse them by name instead of failing to parse.
mod value_serde {
    use core::fmt;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_nan() {
            s.serialize_str("NaN")
        } else if v.is_infinite() {
            s.serialize_str(if *v > 0.0 { "Infinity" } else { "-Infinity" })
        } else {
            s.serialize_f64(*v)
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = f64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number, \"NaN\", \"Infinity\" or \"-Infinity\"")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
                Ok(v)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
                Ok(v as f64)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
                Ok(v as f64)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
                match v {
                    "NaN" => Ok(f64::NAN),
                    "Infinity" => Ok(f64::INFINITY),
                    "-Infinity" => Ok(f64::NEG_INFINITY),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}
