//! The alerts config file (`alerts.example.toml`): where the rule packs are, the
//! lifecycle's damping times, and the notifiers.

use std::path::{Path, PathBuf};

use conf::{ConfigErrors, Problems, Source, Spanned};
use serde::Deserialize;

use super::manager::Lifecycle;
use super::model::Severity;

/// The example alerts config.
pub const EXAMPLE: &str = include_str!("../../alerts.example.toml");

/// A notifier, chosen by `type`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
pub enum NotifierConfig {
    /// JSON POSTed to a URL, signed, retried.
    Webhook {
        /// Where to POST (http; https needs a TLS-enabled build).
        url: String,
        /// HMAC-SHA256 key of the `X-VT-Signature` header.
        secret: String,
        /// Least severity sent.
        #[serde(default = "default_min_severity")]
        min_severity: Severity,
        /// Tenants sent (empty: all).
        #[serde(default)]
        tenants: Vec<String>,
        /// Retries after the first attempt.
        #[serde(default = "default_retries")]
        max_retries: u32,
        /// Timeout of one attempt.
        #[serde(default = "default_timeout_ms")]
        timeout_ms: u64,
    },
    /// JSON published on an MQTT topic through ingest's broker connection.
    Mqtt {
        /// Topic template: `{tenant}`, `{severity}`, `{event}`.
        #[serde(default = "default_topic")]
        topic: String,
        /// Least severity sent.
        #[serde(default = "default_min_severity")]
        min_severity: Severity,
        /// Tenants sent (empty: all).
        #[serde(default)]
        tenants: Vec<String>,
    },
}

const fn default_retries() -> u32 {
    5
}
const fn default_timeout_ms() -> u64 {
    5_000
}
fn default_min_severity() -> Severity {
    Severity::Warning
}
fn default_topic() -> String {
    "vt-alerts/{tenant}/{severity}".into()
}
const fn default_resolve_after_secs() -> u64 {
    300
}
const fn default_reopen_within_secs() -> u64 {
    1800
}
const fn default_history_limit() -> usize {
    100_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    rules: Option<PathBuf>,
    #[serde(default = "default_resolve_after_secs")]
    resolve_after_secs: u64,
    #[serde(default = "default_reopen_within_secs")]
    reopen_within_secs: u64,
    #[serde(default = "default_history_limit")]
    history_limit: usize,
    #[serde(default)]
    notifiers: Vec<Spanned<NotifierConfig>>,
}

/// The alerts config.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlertsConfig {
    /// A rule pack file or a directory of them; `None`: the packs built into ingest.
    pub rules: Option<PathBuf>,
    /// Damping and history.
    pub lifecycle: Lifecycle,
    /// Where events go.
    pub notifiers: Vec<NotifierConfig>,
}

impl AlertsConfig {
    /// Reads and validates an alerts config; paths are relative to the file.
    pub fn load(path: &Path) -> Result<AlertsConfig, ConfigErrors> {
        let src = Source::read(path)?;
        AlertsConfig::from_source(&src, path.parent().unwrap_or(Path::new(".")))
    }

    /// Parses and validates config text.
    pub fn from_source(src: &Source, base: &Path) -> Result<AlertsConfig, ConfigErrors> {
        let spec: Spec = src.parse()?;
        let mut problems = Problems::new();
        for n in &spec.notifiers {
            match n.get_ref() {
                NotifierConfig::Webhook { url, secret, .. } => {
                    if !url.starts_with("http://") && !url.starts_with("https://") {
                        problems.push(src.error(n, format!("webhook url '{url}' must start with http:// or https://")));
                    }
                    if secret.len() < 16 {
                        problems.push(src.error(n, "webhook secret must be at least 16 characters"));
                    }
                }
                NotifierConfig::Mqtt { topic, .. } => {
                    if topic.contains('#') || topic.contains('+') || topic.is_empty() {
                        problems.push(src.error(n, format!("mqtt topic '{topic}' must be a plain topic")));
                    }
                }
            }
        }
        problems.finish(AlertsConfig {
            rules: spec.rules.map(|r| base.join(r)),
            lifecycle: Lifecycle {
                resolve_after_ms: (spec.resolve_after_secs * 1000) as i64,
                reopen_within_ms: (spec.reopen_within_secs * 1000) as i64,
                history_limit: spec.history_limit,
            },
            notifiers: spec.notifiers.into_iter().map(Spanned::into_inner).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        let cfg = AlertsConfig::from_source(&Source::from_text("alerts.example.toml", EXAMPLE), Path::new("/etc/vt"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.notifiers.len(), 2);
        assert_eq!(cfg.lifecycle.resolve_after_ms, 300_000);
    }

    #[test]
    fn a_short_secret_is_refused_at_its_line() {
        let text = "[[notifiers]]\ntype = \"webhook\"\nurl = \"http://x\"\nsecret = \"short\"\n";
        let e = AlertsConfig::from_source(&Source::from_text("a.toml", text), Path::new(".")).unwrap_err();
        assert!(e.to_string().contains("a.toml:1:1: webhook secret must be at least 16 characters"), "{e}");
    }
}
