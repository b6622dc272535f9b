//! The broadcast configuration: which levels need a second operator's approval (per
//! tenant), named speaker groups, and the dispatcher's timing.
//!
//! It is the `[broadcast]` table of ingest's config file ([`BroadcastConfig::from_table`];
//! optional: the defaults below apply without it), parsed through `conf` so every mistake
//! names file, line and reason:
//!
//! ```toml
//! [broadcast]
//! # Levels that need a second, different operator's approval before anything is sent.
//! approval_levels = ["red", "orange"]
//!
//! [broadcast.tenants.county]
//! approval_levels = ["red", "orange", "yellow"]
//!
//! [broadcast.groups.riverside]
//! tenant = "county"
//! speakers = ["dongcun-speaker-1", "xicun-speaker-1"]
//!
//! [broadcast.dispatch]
//! ack_timeout_ms = 10000
//! backoff_initial_ms = 1000
//! backoff_max_ms = 15000
//! ```
//!
//! The old place, `broadcast.toml` in ingest's data directory (the same keys at the top
//! level), is still read for one release when the config file has no `[broadcast]`, with a
//! warning naming the new place ([`BroadcastConfig::load_or_default`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use conf::{ConfigErrors, Problems, Source, Spanned};
use protocol::command::Level;
use serde::Deserialize;

use super::model::parse_level;

/// File name of the broadcast configuration in the data directory (the old place).
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

    /// `data_dir/broadcast.toml` (the old place, with a warning naming the new one) if it
    /// exists, else the defaults.
    pub fn load_or_default(data_dir: &Path) -> Result<BroadcastConfig, ConfigErrors> {
        match BroadcastConfig::load_old_place(data_dir)? {
            Some(c) => Ok(c),
            None => Ok(BroadcastConfig::default()),
        }
    }

    /// `data_dir/broadcast.toml` if it exists (`None` otherwise), with a warning that it is
    /// to move into ingest.toml's `[broadcast]`: the old place is read for one release more.
    pub fn load_old_place(data_dir: &Path) -> Result<Option<BroadcastConfig>, ConfigErrors> {
        let path = data_dir.join(FILE);
        if !path.exists() {
            return Ok(None);
        }
        tracing::warn!(
            message = "Broadcast settings read from their old place; move them into ingest.toml as its [broadcast] table (the old place is read for this release only).",
            path = %path.display()
        );
        BroadcastConfig::from_source(&Source::read(&path)?).map(Some)
    }

    /// The `[broadcast]` table of ingest's config file (`None`: the file has none); errors
    /// name the lines of that file.
    pub fn from_table(src: &Source) -> Result<Option<BroadcastConfig>, ConfigErrors> {
        let root: Root = src.parse()?;
        root.broadcast.map(|spec| BroadcastConfig::from_spec(src, spec)).transpose()
    }

    /// Parses and validates the text of `broadcast.toml` (the old place); every problem is
    /// reported.
    pub fn from_source(src: &Source) -> Result<BroadcastConfig, ConfigErrors> {
        BroadcastConfig::from_spec(src, src.parse()?)
    }

    fn from_spec(src: &Source, spec: Spec) -> Result<BroadcastConfig, ConfigErrors> {
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
        let d = spec.dispatch.unwrap_or_else(|| Spanned::new(0..0, DispatchSpec::default()));
        let span = d.span();
        let d = d.into_inner();
        if d.backoff_initial_ms == 0 || d.backoff_max_ms < d.backoff_initial_ms || d.ack_timeout_ms == 0 {
            problems.push(src.error_at(
                Some(span),
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

/// The `[broadcast]` table, alone: ingest's own config ([`crate::config`]) reads the rest
/// of the file, so other keys are no concern here.
#[derive(Debug, Deserialize)]
struct Root {
    broadcast: Option<Spec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    approval_levels: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    tenants: BTreeMap<String, TenantSpec>,
    #[serde(default)]
    groups: BTreeMap<String, Spanned<GroupSpec>>,
    dispatch: Option<Spanned<DispatchSpec>>,
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

    #[test]
    fn the_broadcast_table_of_ingest_toml_is_checked_at_its_lines_and_may_be_absent() {
        let text =
            "data_dir = \"d\"\n[broadcast]\napproval_levels = [\"red\"]\n[broadcast.dispatch]\nack_timeout_ms = 0\n";
        let e = BroadcastConfig::from_table(&Source::from_text("ingest.toml", text)).unwrap_err().to_string();
        assert!(e.contains("ingest.toml:4:1: dispatch: ack_timeout_ms"), "{e}");
        let good = text.replace("ack_timeout_ms = 0", "ack_timeout_ms = 5000");
        let c = BroadcastConfig::from_table(&Source::from_text("ingest.toml", good))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("[broadcast] is there"));
        assert!(!c.needs_approval("county", Level::Orange));
        assert_eq!(c.dispatch.ack_timeout, Duration::from_secs(5));
        let none = BroadcastConfig::from_table(&Source::from_text("ingest.toml", "data_dir = \"d\"\n"));
        assert_eq!(none, Ok(None));
    }

    #[test]
    fn the_broadcast_table_of_the_example_ingest_config_parses() {
        let src = Source::from_text("ingest.example.toml", crate::config::EXAMPLE);
        let c = BroadcastConfig::from_table(&src).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.is_some_and(|c| c.needs_approval("county", Level::Red)));
    }

    #[test]
    fn the_old_place_is_still_read_and_its_absence_means_defaults() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(BroadcastConfig::load_old_place(dir.path()), Ok(None));
        assert_eq!(BroadcastConfig::load_or_default(dir.path()), Ok(BroadcastConfig::default()));
        std::fs::write(dir.path().join(FILE), "approval_levels = [\"red\"]\n").unwrap_or_else(|e| panic!("{e}"));
        let c = BroadcastConfig::load_or_default(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(!c.needs_approval("county", Level::Orange));
    }
}
