//! The alerts config: where the rule packs are, the lifecycle's damping times, and the
//! notifiers.
//!
//! It is the `[alerts]` table of ingest's config file ([`AlertsConfig::from_table`]), so
//! that `ingest check` validates it with the rest. The old place, a file of its own given
//! with `--alerts` (`alerts.example.toml`, [`AlertsConfig::load`]), is still read for one
//! release, with a warning naming the new place. Either way every mistake names file, line
//! and reason, and relative paths are relative to the file they are written in.

use std::path::{Path, PathBuf};

use conf::{ConfigErrors, Problems, Source, Spanned};
use serde::Deserialize;

use super::manager::Lifecycle;
use super::model::Severity;

/// The example alerts config in its old place (a file of its own, `--alerts`).
pub const EXAMPLE: &str = include_str!("../../alerts.example.toml");

/// A notifier, chosen by `type`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
pub enum NotifierConfig {
    /// JSON POSTed to a URL, signed, retried.
    Webhook {
        /// Where to POST: `http://` only. The webhook client is built without TLS, so an
        /// `https://` URL is refused at load (not at the first alert); put a local relay
        /// that adds TLS (a reverse proxy) in front of an https receiver.
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

/// The `[alerts]` table, alone: ingest's own config ([`crate::config`]) reads the rest of
/// the file, so other keys are no concern here.
#[derive(Debug, Deserialize)]
struct Root {
    alerts: Option<Spec>,
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

    /// The `[alerts]` table of ingest's config file (`None`: the file has none); errors
    /// name the lines of that file, and `rules` is relative to it (`base`).
    pub fn from_table(src: &Source, base: &Path) -> Result<Option<AlertsConfig>, ConfigErrors> {
        let root: Root = src.parse()?;
        root.alerts.map(|spec| AlertsConfig::from_spec(src, spec, base)).transpose()
    }

    /// Parses and validates the text of an alerts file in its old place.
    pub fn from_source(src: &Source, base: &Path) -> Result<AlertsConfig, ConfigErrors> {
        AlertsConfig::from_spec(src, src.parse()?, base)
    }

    fn from_spec(src: &Source, spec: Spec, base: &Path) -> Result<AlertsConfig, ConfigErrors> {
        let mut problems = Problems::new();
        for n in &spec.notifiers {
            match n.get_ref() {
                NotifierConfig::Webhook { url, secret, .. } => {
                    if url.get(..8).is_some_and(|p| p.eq_ignore_ascii_case("https://")) {
                        problems.push(src.error(
                            n,
                            format!(
                                "webhook url '{url}': https is not supported (ingest's HTTP client is built without TLS); use http:// to a local relay that adds TLS"
                            ),
                        ));
                    } else if !url.starts_with("http://") {
                        problems.push(src.error(n, format!("webhook url '{url}' must start with http://")));
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
    fn the_alerts_table_of_the_example_ingest_config_parses() {
        let src = Source::from_text("ingest.example.toml", crate::config::EXAMPLE);
        let cfg = AlertsConfig::from_table(&src, Path::new("/etc/vt")).unwrap_or_else(|e| panic!("{e}"));
        let cfg = cfg.unwrap_or_else(|| panic!("the example has an [alerts] table"));
        assert_eq!(cfg.notifiers.len(), 2);
        assert_eq!(cfg.lifecycle.resolve_after_ms, 300_000);
    }

    #[test]
    fn the_alerts_table_is_checked_at_its_lines_in_ingest_toml_and_may_be_absent() {
        let text = "data_dir = \"d\"\ninventory = \"i.toml\"\n[alerts]\nrules = \"packs\"\n[[alerts.notifiers]]\ntype = \"webhook\"\nurl = \"ftp://x\"\nsecret = \"0123456789abcdef\"\n";
        let e = AlertsConfig::from_table(&Source::from_text("ingest.toml", text), Path::new(".")).unwrap_err();
        assert!(e.to_string().contains("ingest.toml:5:1: webhook url 'ftp://x' must start with http://"), "{e}");
        let good = text.replace("ftp://x", "http://x");
        let cfg = AlertsConfig::from_table(&Source::from_text("ingest.toml", good), Path::new("/etc/vt"))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("[alerts] is there"));
        assert_eq!(cfg.rules.as_deref(), Some(Path::new("/etc/vt/packs")));
        let none = AlertsConfig::from_table(&Source::from_text("ingest.toml", "data_dir = \"d\"\n"), Path::new("."));
        assert_eq!(none, Ok(None));
    }

    #[test]
    fn an_https_webhook_is_refused_at_load_because_the_client_has_no_tls() {
        let text =
            "[[notifiers]]\ntype = \"webhook\"\nurl = \"https://hooks.example.org/a\"\nsecret = \"0123456789abcdef\"\n";
        let e = AlertsConfig::from_source(&Source::from_text("a.toml", text), Path::new(".")).unwrap_err();
        assert!(
            e.to_string().contains("a.toml:1:1: webhook url 'https://hooks.example.org/a': https is not supported"),
            "{e}"
        );
        let upper = text.replace("https://", "HTTPS://");
        assert!(AlertsConfig::from_source(&Source::from_text("a.toml", upper), Path::new(".")).is_err());
        // Positive control: the same notifier over http loads.
        let good = text.replace("https://", "http://");
        assert!(AlertsConfig::from_source(&Source::from_text("a.toml", good), Path::new(".")).is_ok());
    }

    #[test]
    fn a_short_secret_is_refused_at_its_line() {
        let text = "[[notifiers]]\ntype = \"webhook\"\nurl = \"http://x\"\nsecret = \"short\"\n";
        let e = AlertsConfig::from_source(&Source::from_text("a.toml", text), Path::new(".")).unwrap_err();
        assert!(e.to_string().contains("a.toml:1:1: webhook secret must be at least 16 characters"), "{e}");
    }
}
