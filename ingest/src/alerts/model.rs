//! What an alert, a silence and a proposed broadcast are: the records operators see and
//! the alert log persists.
//!
//! Invariants:
//! - one fingerprint (rule + entity) has at most one open alert; a condition that repeats
//!   while the alert is open, or soon after it resolved, is the same alert (`flaps` counts);
//! - an alert's state only moves along pending -> firing -> (acknowledged) -> resolved;
//!   a pending alert whose condition ends before its hold time is dropped, never fired;
//! - silences and maintenance windows mute notifications; the alert is still recorded.

use std::str::FromStr;

use protocol::Timestamp;
use serde::{Deserialize, Serialize};

/// Severity and entity are what rules produce; they live with the rules (the lower module)
/// and are re-exported here, where the alert records use them.
pub use crate::rules::signal::{Entity, Severity};

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition holds, its hold time ("for 5 minutes") has not passed.
    Pending,
    /// The condition held long enough; notified.
    Firing,
    /// Firing, and an operator took it.
    Acknowledged,
    /// The condition ended (and stayed ended for the damping time).
    Resolved,
}

impl AlertState {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Acknowledged => "acknowledged",
            AlertState::Resolved => "resolved",
        }
    }

    /// True until resolved.
    pub fn is_open(self) -> bool {
        self != AlertState::Resolved
    }
}

impl FromStr for AlertState {
    type Err = String;
    fn from_str(s: &str) -> Result<AlertState, String> {
        [AlertState::Pending, AlertState::Firing, AlertState::Acknowledged, AlertState::Resolved]
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("state '{s}' must be pending, firing, acknowledged, resolved or active"))
    }
}

/// Who acknowledged, when, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    /// The token's holder.
    pub by: String,
    /// When.
    pub at: Timestamp,
    /// What they said.
    #[serde(default)]
    pub note: String,
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable id for the API.
    pub id: u64,
    /// `rule/entity-type/entity-id`: one fingerprint, one open alert.
    pub fingerprint: String,
    /// The rule that raised it.
    pub rule: String,
    /// Its severity.
    pub severity: Severity,
    /// Where it stands.
    pub state: AlertState,
    /// What it is about.
    pub entity: Entity,
    /// Tenant of the entity: who may see it.
    pub tenant: String,
    /// The device, when it is about one.
    #[serde(default)]
    pub device: Option<String>,
    /// The site of the entity.
    #[serde(default)]
    pub site: Option<String>,
    /// The gateway of the entity.
    #[serde(default)]
    pub gateway: Option<String>,
    /// The supply district of the entity.
    #[serde(default)]
    pub district: Option<String>,
    /// When the condition began (data time).
    pub started_at: Timestamp,
    /// When it fired (after the hold time).
    #[serde(default)]
    pub fired_at: Option<Timestamp>,
    /// When it resolved.
    #[serde(default)]
    pub resolved_at: Option<Timestamp>,
    /// The last value that kept the condition going.
    #[serde(default)]
    pub value: Option<f64>,
    /// One sentence for the operator.
    pub summary: String,
    /// The acknowledgement, if any.
    #[serde(default)]
    pub ack: Option<Ack>,
    /// The silence or maintenance window muting it now, if any.
    #[serde(default)]
    pub silenced_by: Option<u64>,
    /// How often the condition came back while the alert was open or just resolved.
    #[serde(default)]
    pub flaps: u32,
    /// When the condition last ended while the alert was still firing (flap damping).
    #[serde(default)]
    pub clearing_since: Option<Timestamp>,
    /// When the record last changed.
    pub updated_at: Timestamp,
}

/// A matcher: every named field must equal the alert's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matchers {
    /// Rule id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Device id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Site id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Gateway id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// District.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub district: Option<String>,
    /// Severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
}

impl Matchers {
    /// True if no field is named (such a silence would mute everything: refused).
    pub fn is_empty(&self) -> bool {
        *self == Matchers::default()
    }

    /// True if every named field equals the alert's.
    pub fn matches(&self, a: &Alert) -> bool {
        fn eq(m: &Option<String>, v: &Option<String>) -> bool {
            m.as_ref().is_none_or(|m| v.as_deref() == Some(m.as_str()))
        }
        self.rule.as_ref().is_none_or(|r| *r == a.rule)
            && eq(&self.device, &a.device)
            && eq(&self.site, &a.site)
            && eq(&self.gateway, &a.gateway)
            && eq(&self.district, &a.district)
            && self.severity.is_none_or(|s| s == a.severity)
    }
}

/// Whether a mute is an ad-hoc silence or planned maintenance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SilenceKind {
    /// An operator muted alerts they know about.
    #[default]
    Silence,
    /// Planned work (a pump overhaul, a mains flush): starts at a set time.
    Maintenance,
}

/// Mutes notifications of matching alerts between `starts_at` and `ends_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    /// Stable id.
    pub id: u64,
    /// Silence or maintenance window.
    pub kind: SilenceKind,
    /// What it mutes.
    pub matchers: Matchers,
    /// From.
    pub starts_at: Timestamp,
    /// Until.
    pub ends_at: Timestamp,
    /// Why.
    pub reason: String,
    /// Who.
    pub created_by: String,
    /// The tenant whose alerts it may mute.
    pub tenant: String,
    /// When it was made.
    pub created_at: Timestamp,
}

impl Silence {
    /// True at `now`.
    pub fn active(&self, now: Timestamp) -> bool {
        self.starts_at <= now && now < self.ends_at
    }

    /// True if it mutes `a` at `now`.
    pub fn mutes(&self, a: &Alert, now: Timestamp) -> bool {
        self.active(now) && self.tenant == a.tenant && self.matchers.matches(a)
    }
}

/// Where a proposed broadcast stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalState {
    /// Waiting for an operator.
    Proposed,
    /// An operator approved it; the broadcast dispatcher takes it from here.
    Approved,
    /// The alert resolved before anyone approved it.
    Withdrawn,
}

/// A broadcast an alert suggests to the villages it affects; an operator decides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposedBroadcast {
    /// Stable id.
    pub id: u64,
    /// The alert that proposed it.
    pub alert: u64,
    /// Tenant.
    pub tenant: String,
    /// Villages affected (site ids of villages).
    pub villages: Vec<String>,
    /// Text for the speakers.
    pub text: String,
    /// Warning level: red, orange, yellow, blue.
    pub level: String,
    /// Where it stands.
    pub state: ProposalState,
    /// When it was proposed.
    pub created_at: Timestamp,
    /// Who approved it.
    #[serde(default)]
    pub approved_by: Option<String>,
    /// When.
    #[serde(default)]
    pub approved_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> Alert {
        Alert {
            id: 1,
            fingerprint: "r/device/d".into(),
            rule: "r".into(),
            severity: Severity::Warning,
            state: AlertState::Firing,
            entity: Entity::Device("d".into()),
            tenant: "county".into(),
            device: Some("d".into()),
            site: Some("s".into()),
            gateway: None,
            district: None,
            started_at: Timestamp(0),
            fired_at: None,
            resolved_at: None,
            value: None,
            summary: String::new(),
            ack: None,
            silenced_by: None,
            flaps: 0,
            clearing_since: None,
            updated_at: Timestamp(0),
        }
    }

    #[test]
    fn a_silence_mutes_only_matching_alerts_of_its_tenant_in_its_window() {
        let s = Silence {
            id: 1,
            kind: SilenceKind::Silence,
            matchers: Matchers { site: Some("s".into()), ..Matchers::default() },
            starts_at: Timestamp(10),
            ends_at: Timestamp(20),
            reason: "flushing mains".into(),
            created_by: "op".into(),
            tenant: "county".into(),
            created_at: Timestamp(0),
        };
        let a = alert();
        assert!(s.mutes(&a, Timestamp(15)));
        assert!(!s.mutes(&a, Timestamp(20)), "ends_at is exclusive");
        assert!(!s.mutes(&Alert { tenant: "dairy".into(), ..a.clone() }, Timestamp(15)));
        assert!(!s.mutes(&Alert { site: Some("x".into()), ..a }, Timestamp(15)));
    }

    #[test]
    fn severities_and_states_parse_from_their_api_names() {
        assert_eq!("critical".parse::<Severity>(), Ok(Severity::Critical));
        assert!(Severity::Info < Severity::Critical);
        assert_eq!("acknowledged".parse::<AlertState>(), Ok(AlertState::Acknowledged));
        assert!("loud".parse::<Severity>().is_err());
    }
}
