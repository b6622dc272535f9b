//! Per-device health: success ratio over recent polls, last error, response time, online.
//!
//! A device that stops answering must be reported, not silently skipped: every poll
//! outcome is recorded here, a change of online state is reported at once (as a
//! `device_online` reading and in the retained status), and the full picture is repeated
//! every health interval.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use protocol::status::DeviceHealth;
use protocol::{DeviceKind, Metric, Reading, Timestamp};

/// Polls remembered for the success ratio.
const WINDOW: usize = 20;

#[derive(Debug)]
struct State {
    kind: DeviceKind,
    model: String,
    outcomes: VecDeque<bool>,
    online: bool,
    last_error: Option<String>,
    response_ms: Option<f64>,
    last_report: Option<Instant>,
}

/// Health of every device of a gateway.
#[derive(Debug, Default)]
pub struct Health {
    devices: Mutex<HashMap<String, State>>,
}

impl Health {
    /// Registers a device before its first poll (it counts as offline until it answers).
    pub fn register(&self, id: &str, kind: DeviceKind, model: &str) {
        let mut d = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        d.entry(id.to_string()).or_insert_with(|| State {
            kind,
            model: model.to_string(),
            outcomes: VecDeque::with_capacity(WINDOW),
            online: false,
            last_error: None,
            response_ms: None,
            last_report: None,
        });
    }

    /// Forgets devices that are no longer configured (after a configuration change).
    pub fn retain<'a>(&self, ids: impl Iterator<Item = &'a str>) {
        let keep: std::collections::HashSet<&str> = ids.collect();
        let mut d = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        d.retain(|id, _| keep.contains(id.as_str()));
    }

    /// Records a poll outcome. Returns the health readings to publish now (on a change of
    /// online state, or when `interval` has passed since the last report), and whether
    /// the online state changed (the first poll counts as a change, so that a device that
    /// never answers is reported offline at once).
    pub fn record(
        &self,
        id: &str,
        outcome: Result<Duration, String>,
        now: Instant,
        ts: Timestamp,
        interval: Duration,
    ) -> (Vec<Reading>, bool) {
        let mut d = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        let Some(s) = d.get_mut(id) else { return (Vec::new(), false) };
        let ok = outcome.is_ok();
        if s.outcomes.len() == WINDOW {
            s.outcomes.pop_front();
        }
        s.outcomes.push_back(ok);
        match outcome {
            Ok(rt) => s.response_ms = Some(rt.as_secs_f64() * 1000.0),
            Err(e) => s.last_error = Some(e),
        }
        let changed = s.online != ok || s.last_report.is_none();
        s.online = ok;
        let due = s.last_report.is_none_or(|t| now.duration_since(t) >= interval);
        if !(changed || due) {
            return (Vec::new(), false);
        }
        s.last_report = Some(now);
        let mut out = vec![
            Reading::new(id, Metric::new("device_online"), ts, f64::from(u8::from(ok))),
            Reading::new(id, Metric::new("poll_success_ratio"), ts, ratio(&s.outcomes)),
        ];
        if let (true, Some(ms)) = (ok, s.response_ms) {
            out.push(Reading::new(id, Metric::new("response_time"), ts, (ms * 10.0).round() / 10.0));
        }
        (out, changed)
    }

    /// Health of every device, for the retained status.
    pub fn snapshot(&self) -> Vec<DeviceHealth> {
        let d = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<DeviceHealth> = d
            .iter()
            .map(|(id, s)| DeviceHealth {
                id: id.clone(),
                kind: s.kind,
                model: s.model.clone(),
                online: s.online,
                success_ratio: ratio(&s.outcomes),
                response_ms: s.response_ms,
                last_error: s.last_error.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}

fn ratio(outcomes: &VecDeque<bool>) -> f64 {
    if outcomes.is_empty() {
        return 0.0;
    }
    outcomes.iter().filter(|o| **o).count() as f64 / outcomes.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_that_stops_answering_is_reported_at_once() {
        let h = Health::default();
        h.register("m1", DeviceKind::WaterMeter, "meter");
        let t0 = Instant::now();
        let iv = Duration::from_secs(60);
        let (r, changed) = h.record("m1", Ok(Duration::from_millis(12)), t0, Timestamp(0), iv);
        assert!(changed);
        assert_eq!(r[0].value, 1.0);
        let (r, _) = h.record("m1", Ok(Duration::from_millis(12)), t0 + Duration::from_secs(1), Timestamp(1), iv);
        assert!(r.is_empty(), "nothing new to say within the interval");
        let (r, changed) =
            h.record("m1", Err("timeout after 1000 ms".into()), t0 + Duration::from_secs(2), Timestamp(2), iv);
        assert!(changed);
        assert_eq!(r[0].metric.name(), "device_online");
        assert_eq!(r[0].value, 0.0);
        assert!((r[1].value - 2.0 / 3.0).abs() < 1e-9);
        let s = h.snapshot();
        assert_eq!(s[0].last_error.as_deref(), Some("timeout after 1000 ms"));
        assert!(!s[0].online);
    }
}
