//! Validation: what ingest refuses, and why.
//!
//! A batch is refused whole when its envelope is wrong (it cannot be trusted at all):
//! malformed, oversized, published under another gateway's topic, from a gateway nobody
//! registered. Otherwise each reading is judged on its own, so one bad sensor does not
//! cost the readings of its neighbours: a refused reading is counted and described, the
//! rest of the batch is stored.
//!
//! Every refusal has a [`Reason`] (a Prometheus label and an API field) and a sentence
//! that names what was wrong, kept in [`Rejections`] for the API.

use std::collections::VecDeque;
use std::sync::Mutex;

use protocol::topic::Topic;
use protocol::{Batch, Reading, Timestamp};
use serde::Serialize;

pub use crate::reason::Reason;

use crate::config::Limits;
use crate::inventory::{Inventory, Ownership};

/// One refusal, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejection {
    /// Why.
    pub reason: Reason,
    /// The topic it came on.
    pub topic: String,
    /// The device, for reading-level refusals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// What exactly was wrong.
    pub detail: String,
    /// When ingest refused it (ms since epoch).
    pub at: Timestamp,
}

/// The most recent refusals, for `/api/v1/rejections`.
#[derive(Debug, Default)]
pub struct Rejections {
    recent: Mutex<VecDeque<Rejection>>,
}

/// Refusals kept for the API.
const KEEP: usize = 200;

impl Rejections {
    /// Remembers a refusal, forgetting the oldest beyond [`KEEP`].
    pub fn push(&self, r: Rejection) {
        let mut q = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() == KEEP {
            q.pop_front();
        }
        q.push_back(r);
    }

    /// The most recent refusals, newest first.
    pub fn recent(&self) -> Vec<Rejection> {
        let q = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        q.iter().rev().cloned().collect()
    }
}

/// The result of a check: `Ok`, or the reason and a sentence.
pub type Checked = Result<(), (Reason, String)>;

/// Checks a batch's envelope against its topic and the inventory.
pub fn check_envelope(topic: &Topic<'_>, batch: &Batch, inventory: &Inventory) -> Result<(), (Reason, String)> {
    if batch.gateway != topic.gateway {
        return Err((
            Reason::TopicMismatch,
            format!(
                "batch says gateway '{}' but was published on the topic of gateway '{}'",
                batch.gateway, topic.gateway
            ),
        ));
    }
    let Some(gw) = inventory.gateway(topic.gateway) else {
        return Err((Reason::UnknownGateway, format!("gateway '{}' is not in the inventory", topic.gateway)));
    };
    if gw.tenant != topic.tenant {
        return Err((
            Reason::TopicMismatch,
            format!(
                "gateway '{}' belongs to tenant '{}' but published under tenant '{}'",
                gw.id, gw.tenant, topic.tenant
            ),
        ));
    }
    Ok(())
}

/// Checks one reading of a gateway's batch.
pub fn check_reading(
    gateway: &str,
    r: &Reading,
    inventory: &Inventory,
    limits: &Limits,
    now: Timestamp,
) -> Result<(), (Reason, String)> {
    check_owner(gateway, &r.device, inventory)?;
    check_value(r, limits, now)
}

/// Checks that `device` may be published by `gateway` (the part of [`check_reading`] that
/// depends only on the device, so a batch checks it once per device, not per reading).
pub fn check_owner(gateway: &str, device: &str, inventory: &Inventory) -> Checked {
    match inventory.ownership(gateway, device) {
        Ownership::Own => Ok(()),
        Ownership::Foreign => {
            let owner = inventory.device(device).map(|d| d.gateway).unwrap_or_default();
            Err((
                Reason::ForeignDevice,
                format!("gateway '{gateway}' sent a reading of '{device}', which belongs to gateway '{owner}'"),
            ))
        }
        Ownership::Unknown => Err((Reason::UnknownDevice, format!("device '{device}' is not in the inventory"))),
    }
}

/// Checks a reading's metric, value and time (shared with the line-protocol endpoint,
/// which has no gateway to check ownership against).
pub fn check_value(r: &Reading, limits: &Limits, now: Timestamp) -> Result<(), (Reason, String)> {
    let Some(def) = r.metric.def() else {
        return Err((Reason::UnknownMetric, format!("metric '{}' is not in the catalogue", r.metric)));
    };
    if !r.value.is_finite() {
        return Err((Reason::NotANumber, format!("{} of '{}' is {}", def.name, r.device, r.value)));
    }
    if r.value < def.range.0 || r.value > def.range.1 {
        return Err((
            Reason::OutOfRange,
            format!(
                "{} of '{}' is {} {}, outside the plausible {}..{} {}",
                def.name, r.device, r.value, def.unit, def.range.0, def.range.1, def.unit
            ),
        ));
    }
    check_time(r, limits, now)
}

/// Checks a reading's timestamp against ingest's clock. Every difference is saturating:
/// a timestamp is outside input, and `i64::MIN` or `i64::MAX` must give a clean refusal,
/// never an overflow (a panic in a debug build, a wrapped number in a release build).
pub fn check_time(r: &Reading, limits: &Limits, now: Timestamp) -> Result<(), (Reason, String)> {
    let future = i64::try_from(limits.max_future.as_millis()).unwrap_or(i64::MAX);
    let age = i64::try_from(limits.max_age.as_millis()).unwrap_or(i64::MAX);
    if r.ts.0 > now.0.saturating_add(future) {
        return Err((
            Reason::TimestampFuture,
            format!(
                "{} of '{}' is stamped {} s in the future",
                r.metric,
                r.device,
                r.ts.0.saturating_sub(now.0) / 1000
            ),
        ));
    }
    if r.ts.0 < now.0.saturating_sub(age) {
        return Err((
            Reason::TimestampPast,
            format!(
                "{} of '{}' is stamped {} days in the past",
                r.metric,
                r.device,
                now.0.saturating_sub(r.ts.0) / 86_400_000
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use protocol::Metric;

    use super::*;
    use crate::inventory::{Device, GatewayInfo, InventoryFile, Site};

    fn inventory() -> Inventory {
        Inventory::from_file(InventoryFile {
            sites: vec![Site {
                id: "s".into(),
                name: "S".into(),
                kind: "village".into(),
                tenant: "county".into(),
                lat: 0.0,
                lon: 0.0,
                village: None,
                district: None,
                township: None,
            }],
            gateways: vec![
                GatewayInfo { id: "gw-a".into(), tenant: "county".into(), site: "s".into(), public_key: None },
                GatewayInfo { id: "gw-b".into(), tenant: "county".into(), site: "s".into(), public_key: None },
            ],
            devices: vec![Device {
                id: "meter-1".into(),
                kind: protocol::DeviceKind::WaterMeter,
                site: "s".into(),
                gateway: "gw-a".into(),
                model: String::new(),
                lat: None,
                lon: None,
                public_key: None,
            }],
        })
    }

    const NOW: Timestamp = Timestamp(1_800_000_000_000);

    fn reading(device: &str, metric: &str, ts: i64, value: f64) -> Reading {
        Reading::new(device, Metric::new(metric), Timestamp(ts), value)
    }

    fn reason(r: Result<(), (Reason, String)>) -> Option<Reason> {
        r.err().map(|(reason, _)| reason)
    }

    #[test]
    fn each_kind_of_bad_reading_gets_its_own_reason() {
        let inv = inventory();
        let l = Limits::default();
        let check = |r: Reading| reason(check_reading("gw-a", &r, &inv, &l, NOW));
        assert_eq!(check(reading("meter-1", "flow", NOW.0, 1.0)), None);
        assert_eq!(check(reading("meter-9", "flow", NOW.0, 1.0)), Some(Reason::UnknownDevice));
        assert_eq!(check(reading("meter-1", "flux", NOW.0, 1.0)), Some(Reason::UnknownMetric));
        assert_eq!(check(reading("meter-1", "flow", NOW.0, f64::NAN)), Some(Reason::NotANumber));
        assert_eq!(check(reading("meter-1", "flow", NOW.0, f64::INFINITY)), Some(Reason::NotANumber));
        assert_eq!(check(reading("meter-1", "ph", NOW.0, 99.0)), Some(Reason::OutOfRange));
        assert_eq!(check(reading("meter-1", "flow", NOW.0 + 3_600_000, 1.0)), Some(Reason::TimestampFuture));
        assert_eq!(check(reading("meter-1", "flow", NOW.0 - 40 * 86_400_000, 1.0)), Some(Reason::TimestampPast));
        assert_eq!(check(reading("meter-1", "flow", 0, 1.0)), Some(Reason::TimestampPast));
        // A small clock skew is tolerated.
        assert_eq!(check(reading("meter-1", "flow", NOW.0 + 60_000, 1.0)), None);
    }

    #[test]
    fn extreme_timestamps_are_refused_cleanly_without_overflow() {
        let inv = inventory();
        let l = Limits::default();
        let check =
            |ts: i64, now: Timestamp| check_reading("gw-a", &reading("meter-1", "flow", ts, 1.0), &inv, &l, now);
        // Positive control: a reading stamped now passes, also at the ends of the clock.
        assert_eq!(check(NOW.0, NOW), Ok(()));
        let (r, detail) = check(i64::MIN, NOW).unwrap_err();
        assert_eq!(r, Reason::TimestampPast);
        assert!(detail.contains("days in the past"), "{detail}");
        let (r, detail) = check(i64::MAX, NOW).unwrap_err();
        assert_eq!(r, Reason::TimestampFuture);
        assert!(detail.contains("s in the future"), "{detail}");
        // A clock far in the past (or future) meets the opposite extreme: still no overflow.
        assert_eq!(check(i64::MAX, Timestamp(i64::MIN)).unwrap_err().0, Reason::TimestampFuture);
        assert_eq!(check(i64::MIN, Timestamp(i64::MAX)).unwrap_err().0, Reason::TimestampPast);
    }

    #[test]
    fn a_gateway_publishing_as_another_is_named_in_the_refusal() {
        let inv = inventory();
        let (r, detail) =
            check_reading("gw-b", &reading("meter-1", "flow", NOW.0, 1.0), &inv, &Limits::default(), NOW).unwrap_err();
        assert_eq!(r, Reason::ForeignDevice);
        assert_eq!(detail, "gateway 'gw-b' sent a reading of 'meter-1', which belongs to gateway 'gw-a'");

        let batch = Batch { gateway: "gw-a".into(), seq: 1, readings: vec![] };
        let topic = Topic::parse("vt/county/gw-b/up/telemetry").unwrap();
        assert_eq!(check_envelope(&topic, &batch, &inv).unwrap_err().0, Reason::TopicMismatch);
        let topic = Topic::parse("vt/dairy/gw-a/up/telemetry").unwrap();
        assert_eq!(check_envelope(&topic, &batch, &inv).unwrap_err().0, Reason::TopicMismatch);
        let topic = Topic::parse("vt/county/gw-z/up/telemetry").unwrap();
        let batch = Batch { gateway: "gw-z".into(), seq: 1, readings: vec![] };
        assert_eq!(check_envelope(&topic, &batch, &inv).unwrap_err().0, Reason::UnknownGateway);
    }
}
