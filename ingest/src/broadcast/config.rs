//! The broadcast configuration: which levels need a second operator's approval (per
//! tenant), named speaker groups, and the dispatcher's timing.
//!
//! It lives in `broadcast.toml` in ingest's data directory (optional: the defaults below
//! apply without it), parsed through `conf` so every mistake names file, line and reason:
//!
//! ```toml
//! # Levels that need a second, different operator's approval before anything is sent.
//! approval_levels = ["red", "orange"]
//!
//! [tenants.county]
//! approval_levels = ["red", "orange", "yellow"]
//!
//! [groups.riverside]
//! tenant = "county"
//! speakers = ["dongcun-speaker-1", "xicun-speaker-1"]
//!
//! [dispatch]
//! ack_timeout_ms = 10000
//! backoff_initial_ms = 1000
//! backoff_max_ms = 15000
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use conf::{ConfigErrors, Problems, Source, Spanned};
use protocol::command::Level;
use serde::Deserialize;

use super::model::parse_level;

/// File name of the broadcast configuration in the data directory.
pub const FILE: &str = "broadcast.toml";

/// Longest TTS text in bytes: the signed command must fit a speaker's 1,998-byte mailbox
/// with room for its ids, times and signature.
pub const MAX_TEXT_BYTES: usize = 1500;

/// The broadcast configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct BroadcastConfig {
    /// Levels that need approval unless a tenant says otherwise (default red and orange).
    pub approval_levels: Vec<Level>,
    /// Per tenant: the levels that need approval there.
    pub tenant_approval_levels: BTreeMap<String, Vec<Level>>,
    /// Named groups: tenant and speakers.
    pub groups: BTreeMap<String, Group>,
    /// How the dispatcher retries.
    pub dispatch: DispatchConfig,
}

/// A named speaker group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The tenant its speakers belong to.
    pub tenant: String,
    /// Speaker ids.
    pub speakers: Vec<String>,
}

/// The dispatcher's timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchConfig {
    /// A command with no ack at all after this is sent again (the gateway may be offline).
    pub ack_timeout: Duration,
    /// First retry delay; doubles per attempt.
    pub backoff_initial: Duration,
    /// Longest retry delay, so an offline speaker catches up soon after it returns.
    pub backoff_max: Duration,
    /// After expiry, how long a speaker that has the broadcast (delivered, pre-empted) may
    /// still report before its delivery is called expired.
    pub expiry_grace: Duration,
}

impl Default for DispatchConfig {
    fn default() -> DispatchConfig {
        DispatchConfig {
            ack_timeout: Duration::from_millis(default_ack_timeout_ms()),
            backoff_initial: Duration::from_millis(default_backoff_initial_ms()),
            backoff_max: Duration::from_millis(default_backoff_max_ms()),
            expiry_grace: Duration::from_secs(default_expiry_grace_secs()),
        }
    }
}

impl Default for BroadcastConfig {
    fn default() -> BroadcastConfig {
        BroadcastConfig {
            approval_levels: vec![Level::Red, Level::Orange],
            tenant_approval_levels: BTreeMap::new(),
            groups: BTreeMap::new(),
            dispatch: DispatchConfig::default(),
        }
    }
}

impl BroadcastConfig {
    /// True if a broadcast of `level` for `tenant` needs a second operator's approval.
    pub fn needs_approval(&self, tenant: &str, level: Level) -> bool {
        self.tenant_approval_levels.get(tenant).unwrap_or(&self.approval_levels).contains(&level)
    }

    /// `data_dir/broadcast.toml` if it exists, else the defaults.
    pub fn load_or_default(data_dir: &Path) -> Result<BroadcastConfig, ConfigErrors> {
        let path = data_dir.join(FILE);
        if path.exists() { BroadcastConfig::from_source(&Source::read(&path)?) } else { Ok(BroadcastConfig::default()) }
    }

    /// Parses and validates configuration text; every problem is reported.
    pub fn from_source(src: &Source) -> Result<BroadcastConfig, ConfigErrors> {
        let spec: Spec = src.parse()?;
        let mut problems = Problems::new();
        let mut levels = |list: &[Spanned<String>]| -> Vec<Level> {
            list.iter()
                .filter_map(|l| {
                    let level = parse_level(l.get_ref());
                    if level.is_none() {
                        problems.push(
                            src.error(l, format!("level '{}' is not one of red, orange, yellow, blue", l.get_ref())),
                        );
                    }
                    level
                })
                .collect()
        };
        let approval_levels =
            spec.approval_levels.as_deref().map_or_else(|| vec![Level::Red, Level::Orange], &mut levels);
        let tenant_approval_levels =
            spec.tenants.iter().map(|(t, spec)| (t.clone(), levels(&spec.approval_levels))).collect();
        let mut groups = BTreeMap::new();
        for (name, g) in spec.groups {
            if let Err(e) = protocol::id::validate(&name) {
                problems.push(src.error(&g, format!("group '{name}': {e}")));
            }
            let g = g.into_inner();
            groups.insert(name, Group { tenant: g.tenant, speakers: g.speakers });
        }
        let d = spec.dispatch;
        if d.backoff_initial_ms == 0 || d.backoff_max_ms < d.backoff_initial_ms || d.ack_timeout_ms == 0 {
            problems.push(src.error_at(
                None,
                "dispatch: ack_timeout_ms and backoff_initial_ms must be positive and backoff_max_ms at least backoff_initial_ms",
            ));
        }
        let dispatch = DispatchConfig {
            ack_timeout: Duration::from_millis(d.ack_timeout_ms),
            backoff_initial: Duration::from_millis(d.backoff_initial_ms),
            backoff_max: Duration::from_millis(d.backoff_max_ms),
            expiry_grace: Duration::from_secs(d.expiry_grace_secs),
        };
        problems.finish(BroadcastConfig { approval_levels, tenant_approval_levels, groups, dispatch })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    approval_levels: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    tenants: BTreeMap<String, TenantSpec>,
    #[serde(default)]
    groups: BTreeMap<String, Spanned<GroupSpec>>,
    #[serde(default)]
    dispatch: DispatchSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantSpec {
    approval_levels: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupSpec {
    tenant: String,
    speakers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DispatchSpec {
    #[serde(default = "default_ack_timeout_ms")]
    ack_timeout_ms: u64,
    #[serde(default = "default_backoff_initial_ms")]
    backoff_initial_ms: u64,
    #[serde(default = "default_backoff_max_ms")]
    backoff_max_ms: u64,
    #[serde(default = "default_expiry_grace_secs")]
    expiry_grace_secs: u64,
}

impl Default for DispatchSpec {
    fn default() -> DispatchSpec {
        DispatchSpec {
            ack_timeout_ms: default_ack_timeout_ms(),
            backoff_initial_ms: default_backoff_initial_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            expiry_grace_secs: default_expiry_grace_secs(),
        }
    }
}

const fn default_ack_timeout_ms() -> u64 {
    10_000
}
const fn default_backoff_initial_ms() -> u64 {
    1_000
}
const fn default_backoff_max_ms() -> u64 {
    15_000
}
const fn default_expiry_grace_secs() -> u64 {
    300
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approvals_default_to_red_and_orange_and_a_tenant_can_change_them() {
        let src = Source::from_text(
            "broadcast.toml",
            "[tenants.county]\napproval_levels = [\"red\"]\n\n[groups.riverside]\ntenant = \"county\"\nspeakers = [\"a\"]\n",
        );
        let c = BroadcastConfig::from_source(&src).unwrap();
        assert!(c.needs_approval("dairy", Level::Orange));
        assert!(!c.needs_approval("county", Level::Orange));
        assert!(c.needs_approval("county", Level::Red));
        assert_eq!(c.groups["riverside"].speakers, ["a"]);
        assert!(!BroadcastConfig::default().needs_approval("x", Level::Yellow));
    }

    #[test]
    fn every_mistake_is_reported_with_its_line() {
        let src = Source::from_text(
            "broadcast.toml",
            "approval_levels = [\"red\", \"crimson\"]\n[tenants.county]\napproval_levels = [\"pink\"]\n",
        );
        let e = BroadcastConfig::from_source(&src).unwrap_err().to_string();
        assert!(e.contains("broadcast.toml:1:") && e.contains("crimson"), "{e}");
        assert!(e.contains("broadcast.toml:3:") && e.contains("pink"), "{e}");
        let src = Source::from_text("broadcast.toml", "aproval_levels = []\n");
        assert!(BroadcastConfig::from_source(&src).unwrap_err().to_string().contains("unknown field"));
    }
}
