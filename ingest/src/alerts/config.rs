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
        /// The name contact lists of routes use, and the `notifier` label of its metrics
        /// (default: `webhook`).
        #[serde(default)]
        name: Option<String>,
        /// Where to POST: `https://` (the web PKI, plus `ca_file`) or `http://`.
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
        /// PEM file of further CA certificates to trust for this URL (a county's own CA),
        /// beside the system's web PKI roots. Relative to the config file.
        #[serde(default)]
        ca_file: Option<PathBuf>,
        /// Broadcast levels (`red`, `orange`, `yellow`, `blue`) whose outcome (played N
        /// of M, failures) is sent when such a broadcast finishes (default: none).
        #[serde(default)]
        broadcast_levels: Vec<String>,
    },
    /// JSON published on an MQTT topic through ingest's broker connection.
    Mqtt {
        /// See `webhook` (default: `mqtt`).
        #[serde(default)]
        name: Option<String>,
        /// Topic template: `{tenant}`, `{severity}`, `{event}`.
        #[serde(default = "default_topic")]
        topic: String,
        /// Least severity sent.
        #[serde(default = "default_min_severity")]
        min_severity: Severity,
        /// Tenants sent (empty: all).
        #[serde(default)]
        tenants: Vec<String>,
        /// See `webhook`.
        #[serde(default)]
        broadcast_levels: Vec<String>,
    },
    /// A WeCom (企业微信) group robot: `https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=KEY`.
    Wecom(RobotConfig),
    /// A DingTalk (钉钉) custom robot: `https://oapi.dingtalk.com/robot/send?access_token=T`,
    /// signed (加签) when `secret` is set.
    Dingtalk(RobotConfig),
    /// A Feishu/Lark (飞书) custom bot: `https://open.feishu.cn/open-apis/bot/v2/hook/ID`,
    /// signed (签名校验) when `secret` is set.
    Feishu(RobotConfig),
}

/// A group robot of a chat app (WeCom, DingTalk, Feishu): messages for people, in Chinese
/// by default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RobotConfig {
    /// See `webhook` (default: the type, `wecom`, `dingtalk`, `feishu`).
    #[serde(default)]
    pub name: Option<String>,
    /// The robot's webhook URL as the app shows it (it carries the robot's key or token:
    /// keep it as secret as `secret`). `https://`, or `http://` to a local relay.
    pub url: String,
    /// DingTalk: the `SEC...` secret of 加签; Feishu: the key of 签名校验. WeCom robots
    /// are not signed (their key is in the URL). Without it, nothing is signed.
    #[serde(default)]
    pub secret: Option<String>,
    /// `text` (default; mentions work everywhere) or `markdown` (WeCom, DingTalk).
    #[serde(default)]
    pub format: MessageFormat,
    /// `zh` (default) or `en`: the language of the messages.
    #[serde(default)]
    pub language: Language,
    /// A word every message starts with, for robots secured by keywords (自定义关键词).
    #[serde(default)]
    pub keyword: Option<String>,
    /// Least severity sent.
    #[serde(default = "default_min_severity")]
    pub min_severity: Severity,
    /// Tenants sent (empty: all).
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Retries after the first attempt (a refusal by the robot, HTTP 429 and 5xx, network
    /// errors), with backoff from 0.5 s doubling to at most 60 s.
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// Timeout of one attempt.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// See `webhook`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// See `webhook`.
    #[serde(default)]
    pub broadcast_levels: Vec<String>,
}

/// How a robot's message is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageFormat {
    /// Plain text.
    #[default]
    Text,
    /// The robot's markdown (a title in bold, one fact a line).
    Markdown,
}

/// The language of messages for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    /// 中文 (the county's groups).
    #[default]
    Zh,
    /// English.
    En,
}

/// Which kind of notifier, for labels and defaults.
impl NotifierConfig {
    /// `webhook`, `mqtt`, `wecom`, `dingtalk` or `feishu`.
    pub fn kind(&self) -> &'static str {
        match self {
            NotifierConfig::Webhook { .. } => "webhook",
            NotifierConfig::Mqtt { .. } => "mqtt",
            NotifierConfig::Wecom(_) => "wecom",
            NotifierConfig::Dingtalk(_) => "dingtalk",
            NotifierConfig::Feishu(_) => "feishu",
        }
    }

    /// Its name: the one given, or its kind.
    pub fn name(&self) -> &str {
        let given = match self {
            NotifierConfig::Webhook { name, .. } | NotifierConfig::Mqtt { name, .. } => name,
            NotifierConfig::Wecom(r) | NotifierConfig::Dingtalk(r) | NotifierConfig::Feishu(r) => &r.name,
        };
        given.as_deref().unwrap_or(self.kind())
    }

    /// Least severity and tenants it takes.
    pub fn filter(&self) -> (Severity, &[String]) {
        match self {
            NotifierConfig::Webhook { min_severity, tenants, .. }
            | NotifierConfig::Mqtt { min_severity, tenants, .. } => (*min_severity, tenants),
            NotifierConfig::Wecom(r) | NotifierConfig::Dingtalk(r) | NotifierConfig::Feishu(r) => {
                (r.min_severity, &r.tenants)
            }
        }
    }

    /// Broadcast levels whose outcomes it takes.
    pub fn broadcast_levels(&self) -> &[String] {
        match self {
            NotifierConfig::Webhook { broadcast_levels, .. } | NotifierConfig::Mqtt { broadcast_levels, .. } => {
                broadcast_levels
            }
            NotifierConfig::Wecom(r) | NotifierConfig::Dingtalk(r) | NotifierConfig::Feishu(r) => &r.broadcast_levels,
        }
    }
}

/// A route: which alerts it takes, and the contact lists they escalate through.
///
/// An alert the route matches goes to its first contact list when it fires; if nobody
/// acknowledges it within `escalate_after_mins`, to the next list, and so on to the last.
/// Acknowledging or resolving it stops the escalation (both are told to every list told
/// so far). A notifier named in any contact list gets alerts only through routes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique; kept with the escalation state (`data_dir/alerts/escalations.json`).
    pub name: String,
    /// Tenants it takes (empty: all).
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Rule ids it takes (empty: all).
    #[serde(default)]
    pub rules: Vec<String>,
    /// Site ids it takes (empty: all).
    #[serde(default)]
    pub sites: Vec<String>,
    /// Least severity it takes.
    #[serde(default = "default_min_severity")]
    pub min_severity: Severity,
    /// Minutes an alert may stay unacknowledged before the next list is told (at least 1).
    pub escalate_after_mins: u64,
    /// The contact lists, in order of escalation (at least one).
    pub contacts: Vec<ContactList>,
}

/// Who a route tells at one level: notifiers (by name) and whom to mention in them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactList {
    /// For people (`值班员`, `station chief`): shown in escalation messages.
    pub name: String,
    /// Notifier names (their `name`).
    pub notifiers: Vec<String>,
    /// Mobile numbers to @-mention (WeCom `mentioned_mobile_list`, DingTalk `atMobiles`).
    #[serde(default)]
    pub mobiles: Vec<String>,
    /// User ids to @-mention (WeCom `mentioned_list`, DingTalk `atUserIds`, Feishu
    /// `<at user_id>`: an open_id or user_id).
    #[serde(default)]
    pub user_ids: Vec<String>,
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
    #[serde(default)]
    routes: Vec<Spanned<RouteConfig>>,
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
    /// Escalation routes over the notifiers.
    pub routes: Vec<RouteConfig>,
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
        let mut names: Vec<&str> = Vec::new();
        for n in &spec.notifiers {
            for reason in notifier_problems(n.get_ref(), base) {
                problems.push(src.error(n, reason));
            }
            if let Some(given) = given_name(n.get_ref()) {
                if names.contains(&given) {
                    problems.push(src.error(n, format!("notifier name '{given}' is given twice")));
                }
                names.push(given);
            }
        }
        let mut routes: Vec<&str> = Vec::new();
        for r in &spec.routes {
            for reason in route_problems(r.get_ref(), &names) {
                problems.push(src.error(r, reason));
            }
            if routes.contains(&r.get_ref().name.as_str()) {
                problems.push(src.error(r, format!("route name '{}' is given twice", r.get_ref().name)));
            }
            routes.push(&r.get_ref().name);
        }
        let notifiers = spec
            .notifiers
            .into_iter()
            .map(Spanned::into_inner)
            .map(|mut n| {
                if let Some(ca) = ca_file_mut(&mut n) {
                    *ca = base.join(&*ca);
                }
                n
            })
            .collect();
        problems.finish(AlertsConfig {
            rules: spec.rules.map(|r| base.join(r)),
            lifecycle: Lifecycle {
                resolve_after_ms: (spec.resolve_after_secs * 1000) as i64,
                reopen_within_ms: (spec.reopen_within_secs * 1000) as i64,
                history_limit: spec.history_limit,
            },
            notifiers,
            routes: spec.routes.into_iter().map(Spanned::into_inner).collect(),
        })
    }
}

/// Broadcast levels a notifier may name.
const LEVELS: [&str; 4] = ["red", "orange", "yellow", "blue"];

fn given_name(n: &NotifierConfig) -> Option<&str> {
    match n {
        NotifierConfig::Webhook { name, .. } | NotifierConfig::Mqtt { name, .. } => name.as_deref(),
        NotifierConfig::Wecom(r) | NotifierConfig::Dingtalk(r) | NotifierConfig::Feishu(r) => r.name.as_deref(),
    }
}

fn ca_file_mut(n: &mut NotifierConfig) -> Option<&mut PathBuf> {
    match n {
        NotifierConfig::Webhook { ca_file, .. } => ca_file.as_mut(),
        NotifierConfig::Wecom(r) | NotifierConfig::Dingtalk(r) | NotifierConfig::Feishu(r) => r.ca_file.as_mut(),
        NotifierConfig::Mqtt { .. } => None,
    }
}

/// `http://` or `https://` (any case), with a host.
fn url_problem(kind: &str, url: &str) -> Option<String> {
    let lower = url.to_ascii_lowercase();
    let rest = lower.strip_prefix("https://").or_else(|| lower.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') => None,
        _ => Some(format!("{kind} url '{url}' must start with http:// or https:// and name a host")),
    }
}

/// Whether `path` holds at least one PEM certificate.
fn ca_problem(kind: &str, path: &Path, base: &Path) -> Option<String> {
    let path = base.join(path);
    let pem = match std::fs::read(&path) {
        Ok(p) => p,
        Err(e) => return Some(format!("{kind} ca_file '{}': {e}", path.display())),
    };
    let certs = rustls_pemfile::certs(&mut &pem[..]).collect::<Result<Vec<_>, _>>();
    match certs {
        Ok(c) if !c.is_empty() => None,
        Ok(_) => Some(format!("{kind} ca_file '{}': no PEM certificate in it", path.display())),
        Err(e) => Some(format!("{kind} ca_file '{}': {e}", path.display())),
    }
}

fn levels_problem(kind: &str, levels: &[String]) -> Option<String> {
    levels
        .iter()
        .find(|l| !LEVELS.contains(&l.as_str()))
        .map(|l| format!("{kind} broadcast level '{l}' must be one of red, orange, yellow, blue"))
}

fn notifier_problems(n: &NotifierConfig, base: &Path) -> Vec<String> {
    let kind = n.kind();
    let mut out = Vec::new();
    if given_name(n).is_some_and(|s| s.trim().is_empty()) {
        out.push(format!("{kind} name must not be empty"));
    }
    out.extend(levels_problem(kind, n.broadcast_levels()));
    match n {
        NotifierConfig::Webhook { url, secret, ca_file, .. } => {
            out.extend(url_problem(kind, url));
            if secret.len() < 16 {
                out.push("webhook secret must be at least 16 characters".into());
            }
            out.extend(ca_file.as_deref().and_then(|p| ca_problem(kind, p, base)));
        }
        NotifierConfig::Mqtt { topic, .. } => {
            if topic.contains('#') || topic.contains('+') || topic.is_empty() {
                out.push(format!("mqtt topic '{topic}' must be a plain topic"));
            }
        }
        NotifierConfig::Wecom(r) | NotifierConfig::Dingtalk(r) | NotifierConfig::Feishu(r) => {
            out.extend(url_problem(kind, &r.url));
            out.extend(r.ca_file.as_deref().and_then(|p| ca_problem(kind, p, base)));
            match (n, &r.secret) {
                (NotifierConfig::Wecom(_), Some(_)) => {
                    out.push("wecom robots are not signed (the key is in the url): remove `secret`".into())
                }
                (_, Some(s)) if s.trim().is_empty() => out.push(format!("{kind} secret must not be empty")),
                _ => {}
            }
            if matches!(n, NotifierConfig::Feishu(_)) && r.format == MessageFormat::Markdown {
                out.push("feishu custom bots take `format = \"text\"` here".into());
            }
            if r.keyword.as_deref().is_some_and(|k| k.trim().is_empty()) {
                out.push(format!("{kind} keyword must not be empty"));
            }
        }
    }
    out
}

/// Longest escalation step: a week.
const MAX_ESCALATE_MINS: u64 = 7 * 24 * 60;

fn route_problems(r: &RouteConfig, names: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let route = &r.name;
    if route.trim().is_empty() {
        out.push("route name must not be empty".into());
    }
    if r.escalate_after_mins == 0 || r.escalate_after_mins > MAX_ESCALATE_MINS {
        out.push(format!("route '{route}': escalate_after_mins must be 1 to {MAX_ESCALATE_MINS}"));
    }
    if r.contacts.is_empty() {
        out.push(format!("route '{route}' needs at least one contact list"));
    }
    for (i, c) in r.contacts.iter().enumerate() {
        if c.notifiers.is_empty() {
            out.push(format!("route '{route}': contact list {} ('{}') names no notifier", i + 1, c.name));
        }
        for n in &c.notifiers {
            if !names.contains(&n.as_str()) {
                out.push(format!(
                    "route '{route}': contact list {} ('{}') names notifier '{n}', which no notifier is named",
                    i + 1,
                    c.name
                ));
            }
        }
        if let Some(m) =
            c.mobiles.iter().find(|m| m.is_empty() || !m.chars().all(|ch| ch.is_ascii_digit() || ch == '+'))
        {
            out.push(format!("route '{route}': mobile '{m}' must be digits"));
        }
    }
    out
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
    fn the_commented_robots_of_the_example_ingest_config_parse_when_uncommented() {
        let example = crate::config::EXAMPLE;
        let marker = "# --- robots ---\n";
        let (start, end) = (example.find(marker), example.find("# --- end robots ---"));
        let (Some(start), Some(end)) = (start, end) else { panic!("the example has its robots block") };
        let start = start + marker.len();
        let block: String = example[start..end]
            .lines()
            .map(|l| l.strip_prefix("# ").or_else(|| l.strip_prefix('#')).unwrap_or(l))
            .map(|l| format!("{l}\n"))
            .collect();
        let text = example.replace(&example[start..end], &block);
        let src = Source::from_text("ingest.example.toml", text);
        let cfg = AlertsConfig::from_table(&src, Path::new("/etc/vt")).unwrap_or_else(|e| panic!("{e}"));
        let cfg = cfg.unwrap_or_else(|| panic!("the example has an [alerts] table"));
        assert_eq!(cfg.notifiers.len(), 5);
        assert_eq!(cfg.routes[0].contacts.len(), 3);
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
    fn an_https_webhook_loads_and_other_schemes_are_refused_at_load() {
        let text =
            "[[notifiers]]\ntype = \"webhook\"\nurl = \"https://hooks.example.org/a\"\nsecret = \"0123456789abcdef\"\n";
        assert!(AlertsConfig::from_source(&Source::from_text("a.toml", text), Path::new(".")).is_ok());
        let upper = text.replace("https://", "HTTPS://");
        assert!(AlertsConfig::from_source(&Source::from_text("a.toml", upper), Path::new(".")).is_ok());
        let ftp = text.replace("https://", "ftp://");
        let e = AlertsConfig::from_source(&Source::from_text("a.toml", ftp), Path::new(".")).unwrap_err();
        assert!(e.to_string().contains("a.toml:1:1: webhook url 'ftp://hooks.example.org/a' must start with"), "{e}");
    }

    const ROBOTS: &str = r#"
[[notifiers]]
type = "wecom"
name = "duty"
url = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=K"

[[notifiers]]
type = "dingtalk"
name = "chiefs"
url = "https://oapi.dingtalk.com/robot/send?access_token=T"
secret = "SECabc"
format = "markdown"
broadcast_levels = ["red", "orange"]

[[notifiers]]
type = "feishu"
url = "https://open.feishu.cn/open-apis/bot/v2/hook/X"
secret = "s"

[[routes]]
name = "water"
escalate_after_mins = 15
contacts = [
  { name = "值班员", notifiers = ["duty"], mobiles = ["13800000001"] },
  { name = "站长", notifiers = ["chiefs"] },
]
"#;

    #[test]
    fn robots_and_routes_load_with_their_names() {
        let cfg = AlertsConfig::from_source(&Source::from_text("a.toml", ROBOTS), Path::new("."))
            .unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = cfg.notifiers.iter().map(NotifierConfig::name).collect();
        assert_eq!(names, ["duty", "chiefs", "feishu"], "an unnamed notifier is called by its type");
        assert_eq!(cfg.routes[0].contacts[1].notifiers, ["chiefs"]);
        assert_eq!(cfg.notifiers[1].broadcast_levels(), ["red", "orange"]);
    }

    #[test]
    fn route_and_robot_mistakes_are_refused_with_their_lines() {
        let bad = ROBOTS
            .replace("notifiers = [\"chiefs\"]", "notifiers = [\"chefs\"]")
            .replace("escalate_after_mins = 15", "escalate_after_mins = 0")
            .replace("name = \"duty\"\nurl = \"https://qyapi", "name = \"duty\"\nsecret = \"x\"\nurl = \"https://qyapi")
            .replace("[\"red\", \"orange\"]", "[\"purple\"]");
        let e = AlertsConfig::from_source(&Source::from_text("a.toml", bad), Path::new(".")).unwrap_err();
        let e = e.to_string();
        for expected in [
            "a.toml:2:1: wecom robots are not signed",
            "a.toml:8:1: dingtalk broadcast level 'purple' must be one of",
            "a.toml:21:1: route 'water': escalate_after_mins must be 1 to",
            "a.toml:21:1: route 'water': contact list 2 ('站长') names notifier 'chefs', which no notifier is named",
        ] {
            assert!(e.contains(expected), "{expected}\n in\n{e}");
        }
        let missing =
            ROBOTS.replace("url = \"https://open.feishu", "ca_file = \"no-such-ca.pem\"\nurl = \"https://open.feishu");
        let e =
            AlertsConfig::from_source(&Source::from_text("a.toml", missing), Path::new("/nonexistent")).unwrap_err();
        assert!(e.to_string().contains("feishu ca_file '/nonexistent/no-such-ca.pem'"), "{e}");
    }

    #[test]
    fn a_short_secret_is_refused_at_its_line() {
        let text = "[[notifiers]]\ntype = \"webhook\"\nurl = \"http://x\"\nsecret = \"short\"\n";
        let e = AlertsConfig::from_source(&Source::from_text("a.toml", text), Path::new(".")).unwrap_err();
        assert!(e.to_string().contains("a.toml:1:1: webhook secret must be at least 16 characters"), "{e}");
    }
}
