//! Local rules: what the gateway does by itself, so that a village is not blind while its
//! 4G link is down.
//!
//! A rule watches one metric of one device and, when its condition becomes true, acts on
//! a device behind the same gateway: a write of a profile's writable point (a local alarm
//! output, a pump permissive) or the delivery of a prepared signed command into a device's
//! mailbox (an announcement ingest signed in advance, which the speaker verifies itself).
//!
//! Invariants:
//! - A rule fires once when its condition becomes true (edge, not level) and re-arms when
//!   the condition is false again past its hysteresis; `clear_value` is written then.
//! - By default a rule acts only while the uplink is down (`while_offline = true`): when
//!   the link is up, ingest's own rules and operators decide. A condition that is already
//!   true when the link drops fires at the next reading.
//! - Actions go through the same checks as remote commands: a write must be a writable
//!   point of the target's profile and inside its range (checked at load too), a prepared
//!   envelope must carry ingest's signature and not be expired (checked when it fires).

use conf::{Problems, Source, Spanned};
use protocol::{Metric, Reading, catalogue};
use serde::Deserialize;

use crate::config::DeviceConfig;
use crate::profile::Library;

/// A rule, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalRule {
    /// Name for logs.
    pub name: String,
    /// Device watched.
    pub device: String,
    /// Metric watched.
    pub metric: Metric,
    /// When it fires.
    pub condition: Condition,
    /// How far back past the threshold the value must go to re-arm.
    pub hysteresis: f64,
    /// Act only while the uplink is down.
    pub while_offline: bool,
    /// What it does.
    pub action: RuleAction,
}

/// A rule's condition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    /// Value below the threshold (a tank level under its floor).
    Below(f64),
    /// Value above the threshold.
    Above(f64),
    /// A bit of an integer value is set (a pump trip in a fault word).
    BitSet(u8),
}

impl Condition {
    /// True if `value` meets the condition; `armed_again` says whether it is far enough
    /// past the threshold (by `hysteresis`) to re-arm.
    fn eval(&self, value: f64, hysteresis: f64) -> (bool, bool) {
        match *self {
            Condition::Below(t) => (value < t, value >= t + hysteresis),
            Condition::Above(t) => (value > t, value <= t - hysteresis),
            Condition::BitSet(b) => {
                let set = value.is_finite() && value >= 0.0 && (value as u64 >> b) & 1 == 1;
                (set, !set)
            }
        }
    }
}

/// What a rule does when it fires.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleAction {
    /// Write a writable point of a device's profile.
    Write {
        /// The device.
        device: String,
        /// The writable point.
        point: String,
        /// Value when the rule fires.
        value: f64,
        /// Value when the condition clears (leave the output set if `None`).
        clear_value: Option<f64>,
    },
    /// Deliver a prepared signed command envelope into a device's mailbox.
    Deliver {
        /// The device.
        device: String,
        /// The signed envelope, as ingest issued it.
        envelope: Vec<u8>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleSpec {
    name: String,
    device: String,
    metric: String,
    below: Option<f64>,
    above: Option<f64>,
    bit: Option<u8>,
    #[serde(default)]
    hysteresis: f64,
    #[serde(default = "yes")]
    while_offline: bool,
    write: Option<WriteSpec>,
    deliver: Option<DeliverSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteSpec {
    device: String,
    point: String,
    value: f64,
    clear_value: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliverSpec {
    device: String,
    envelope: String,
}

fn yes() -> bool {
    true
}

/// Validates one rule against the configured devices and their profiles.
pub(crate) fn parse(
    src: &Source,
    spanned: &Spanned<RuleSpec>,
    devices: &[DeviceConfig],
    library: &Library,
    problems: &mut Problems,
) -> Option<LocalRule> {
    let r = spanned.get_ref();
    let mut errors: Vec<String> = Vec::new();
    let mut fail = |reason: String| errors.push(reason);
    if !devices.iter().any(|d| d.id == r.device) {
        fail(format!("watches device '{}', which is not configured", r.device));
    }
    if catalogue::by_name(&r.metric).is_none() {
        fail(format!("metric '{}' is not in the catalogue", r.metric));
    }
    let condition = match (r.below, r.above, r.bit) {
        (Some(t), None, None) if t.is_finite() => Some(Condition::Below(t)),
        (None, Some(t), None) if t.is_finite() => Some(Condition::Above(t)),
        (None, None, Some(b)) if b < 64 => Some(Condition::BitSet(b)),
        _ => {
            fail("needs exactly one of `below`, `above` (finite) or `bit` (0-63)".into());
            None
        }
    };
    if !(r.hysteresis.is_finite() && r.hysteresis >= 0.0) {
        fail("hysteresis must be finite and not negative".into());
    }
    let target_profile = |device: &str| devices.iter().find(|d| d.id == device).and_then(|d| library.get(&d.profile));
    let action = match (&r.write, &r.deliver) {
        (Some(w), None) => {
            match target_profile(&w.device) {
                None => fail(format!("writes to device '{}', which is not configured", w.device)),
                Some(p) => match p.writable(&w.point) {
                    None => fail(format!("'{}' is not a writable point of {}", w.point, p.model)),
                    Some(wr) => {
                        for v in std::iter::once(w.value).chain(w.clear_value) {
                            if !(v >= wr.min && v <= wr.max) {
                                fail(format!("value {v} is outside {}..={} of '{}'", wr.min, wr.max, w.point));
                            }
                        }
                    }
                },
            }
            Some(RuleAction::Write {
                device: w.device.clone(),
                point: w.point.clone(),
                value: w.value,
                clear_value: w.clear_value,
            })
        }
        (None, Some(d)) => {
            let envelope = decode_hex(&d.envelope);
            match target_profile(&d.device) {
                None => fail(format!("delivers to device '{}', which is not configured", d.device)),
                Some(p) if p.mailbox.is_none() => fail(format!("device '{}' ({}) has no mailbox", d.device, p.model)),
                Some(_) => {}
            }
            match envelope {
                Some(e) if protocol::command::peek_id(&e).is_some() => {
                    Some(RuleAction::Deliver { device: d.device.clone(), envelope: e })
                }
                _ => {
                    fail("envelope is not the hex of a signed command".into());
                    None
                }
            }
        }
        _ => {
            fail("needs exactly one of `write = {...}` or `deliver = {...}`".into());
            None
        }
    };
    if !errors.is_empty() {
        for e in errors {
            problems.push(src.error(spanned, format!("rule '{}': {e}", r.name)));
        }
        return None;
    }
    Some(LocalRule {
        name: r.name.clone(),
        device: r.device.clone(),
        metric: Metric::new(&r.metric),
        condition: condition?,
        hysteresis: r.hysteresis,
        while_offline: r.while_offline,
        action: action?,
    })
}

/// Hex text to bytes.
pub fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// The rules and whether each has fired.
#[derive(Debug, Default)]
pub struct Rules {
    rules: Vec<(LocalRule, bool)>,
}

/// What a rule asks for after a reading: act, or undo.
#[derive(Debug, Clone, PartialEq)]
pub enum Firing {
    /// The condition became true.
    Fire(LocalRule),
    /// The condition cleared; write `clear_value`.
    Clear(LocalRule),
}

impl Rules {
    /// Rules, none fired.
    pub fn new(rules: Vec<LocalRule>) -> Rules {
        Rules { rules: rules.into_iter().map(|r| (r, false)).collect() }
    }

    /// Evaluates readings; `offline` says whether the uplink is down.
    pub fn evaluate(&mut self, readings: &[Reading], offline: bool) -> Vec<Firing> {
        let mut out = Vec::new();
        for (rule, fired) in &mut self.rules {
            for r in readings.iter().filter(|r| r.device.as_str() == rule.device && r.metric == rule.metric) {
                let (met, rearm) = rule.condition.eval(r.value, rule.hysteresis);
                if met && !*fired && (offline || !rule.while_offline) {
                    *fired = true;
                    out.push(Firing::Fire(rule.clone()));
                } else if *fired && rearm {
                    *fired = false;
                    out.push(Firing::Clear(rule.clone()));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use protocol::Timestamp;

    use super::*;

    fn rule(condition: Condition, while_offline: bool) -> LocalRule {
        LocalRule {
            name: "r".into(),
            device: "pump".into(),
            metric: Metric::new("tank_level"),
            condition,
            hysteresis: 0.2,
            while_offline,
            action: RuleAction::Write {
                device: "pump".into(),
                point: "alarm".into(),
                value: 1.0,
                clear_value: Some(0.0),
            },
        }
    }

    fn level(v: f64) -> Vec<Reading> {
        vec![Reading::new("pump", Metric::new("tank_level"), Timestamp(0), v)]
    }

    #[test]
    fn a_rule_fires_once_while_offline_and_rearms_past_its_hysteresis() {
        let mut rules = Rules::new(vec![rule(Condition::Below(1.0), true)]);
        assert!(rules.evaluate(&level(0.5), false).is_empty(), "the link is up: ingest decides");
        assert!(matches!(rules.evaluate(&level(0.5), true)[..], [Firing::Fire(_)]));
        assert!(rules.evaluate(&level(0.4), true).is_empty(), "fires once, not on every reading");
        assert!(rules.evaluate(&level(1.1), true).is_empty(), "within the hysteresis");
        assert!(matches!(rules.evaluate(&level(1.3), true)[..], [Firing::Clear(_)]));
        assert!(matches!(rules.evaluate(&level(0.9), true)[..], [Firing::Fire(_)]));
    }

    #[test]
    fn a_fault_bit_fires_a_rule_that_runs_whatever_the_link() {
        let mut rules =
            Rules::new(vec![LocalRule { metric: Metric::new("fault_word"), ..rule(Condition::BitSet(0), false) }]);
        let trip = vec![Reading::new("pump", Metric::new("fault_word"), Timestamp(0), 0b101 as f64)];
        assert!(matches!(rules.evaluate(&trip, false)[..], [Firing::Fire(_)]));
        let ok = vec![Reading::new("pump", Metric::new("fault_word"), Timestamp(0), 0b100 as f64)];
        assert!(matches!(rules.evaluate(&ok, false)[..], [Firing::Clear(_)]));
    }

    #[test]
    fn hex_envelopes_decode() {
        assert_eq!(decode_hex("c501ff"), Some(vec![0xc5, 0x01, 0xff]));
        assert_eq!(decode_hex("c5f"), None);
        assert_eq!(decode_hex("zz"), None);
    }
}
