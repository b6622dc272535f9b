//! What rules produce: a [`Signal`] when a rule's condition changes for an [`Entity`], at a
//! [`Severity`]. The alert manager (the `alerts` module) turns signals into alert lifecycles.
//!
//! These types live here, with the rules, because rules are the lower layer: `alerts`
//! imports `rules`, never the other way round (the alerts model re-exports
//! [`Severity`] and [`Entity`] for the alert records).
//!
//! Invariant: a signal's summary is its rule's template filled in with the entity's
//! device, site, gateway, district and value ([`render`]).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Rule;
use crate::rules::spec::DeviceMeta;
use crate::rules::stats::Cond;

/// How bad it is. Ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing; nobody needs to act now.
    Info,
    /// Someone should look today.
    Warning,
    /// Someone must act now (supply, safety, a sick animal).
    Critical,
}

impl Severity {
    /// Every severity.
    pub const ALL: [Severity; 3] = [Severity::Info, Severity::Warning, Severity::Critical];

    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Severity, String> {
        Severity::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("severity '{s}' must be info, warning or critical"))
    }
}

/// What an alert is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "id")]
pub enum Entity {
    /// One device (a cow is a device).
    Device(String),
    /// A whole gateway and everything behind it.
    Gateway(String),
    /// A supply district.
    District(String),
}

impl Entity {
    /// The id inside.
    pub fn id(&self) -> &str {
        match self {
            Entity::Device(s) | Entity::Gateway(s) | Entity::District(s) => s,
        }
    }
}

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

/// A signal of `rule` about `entity` (placed by `meta` where known), its summary filled in.
pub fn signal(
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
