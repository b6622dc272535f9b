//! Ingest's configuration: one TOML file (`ingest.example.toml`, printed by
//! `ingest generate-config`), or the defaults the demo builds in code.
//!
//! The file is the one configuration root: besides what this module reads, its `[alerts]`
//! table belongs to [`crate::alerts::config`] and its `[broadcast]` table to
//! [`crate::broadcast::config`], which read them from the same text (so their errors name
//! lines of this file). Here they are only allowed, not read, which keeps this module
//! free of those subsystems.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use conf::{ConfigErrors, Problems, Source, Spanned};
use serde::Deserialize;

use crate::auth::{Role, TokenConfig};

/// The example configuration.
pub const EXAMPLE: &str = include_str!("../ingest.example.toml");

/// Everything ingest needs to run.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Where the store and ingest's own state live.
    pub data_dir: PathBuf,
    /// The broker: embedded, or an external one.
    pub broker: BrokerConfig,
    /// The embedded broker's TLS listener and whether its plain one may leave loopback.
    pub broker_exposure: crate::broker::Exposure,
    /// Address of the HTTP API and dashboard.
    pub http: SocketAddr,
    /// The device inventory file (sites, gateways, devices); `None` when built in code.
    pub inventory: Option<PathBuf>,
    /// Limits on what is accepted.
    pub limits: Limits,
    /// API tokens.
    pub tokens: Vec<TokenConfig>,
    /// The embedded store: durability, checkpoints, retention.
    pub store: StoreSettings,
    /// Destinations besides the embedded store (InfluxDB).
    pub sinks: Vec<crate::sinks::SinkConfig>,
    /// People's sessions: expiry, cookie, lockout (`[sessions]`).
    pub sessions: SessionSettings,
}

/// People's sessions (`[sessions]`): how long they last, the cookie, and the lockout
/// after failed sign-ins (docs/SECURITY.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSettings {
    /// A session nobody used for this long ends (the dashboard's background polling does
    /// not count as use).
    pub idle_timeout: Duration,
    /// A session ends this long after sign-in, used or not.
    pub absolute_timeout: Duration,
    /// Mark the cookie `Secure` (sent over HTTPS only): set it when people reach ingest
    /// through an HTTPS reverse proxy, as they should from outside the county's network.
    pub cookie_secure: bool,
    /// Failed sign-ins of one user name within `lockout_window` after which it is locked.
    pub lockout_failures: u32,
    /// Failed sign-ins from one client address within `lockout_window` after which it is
    /// locked.
    pub lockout_failures_per_ip: u32,
    /// The window failures are counted in; a lock lifts when its oldest failure leaves it.
    pub lockout_window: Duration,
}

impl Default for SessionSettings {
    fn default() -> SessionSettings {
        SessionSettings {
            idle_timeout: Duration::from_secs(default_idle_timeout_secs()),
            absolute_timeout: Duration::from_secs(default_absolute_timeout_secs()),
            cookie_secure: false,
            lockout_failures: default_lockout_failures(),
            lockout_failures_per_ip: default_lockout_failures_per_ip(),
            lockout_window: Duration::from_secs(default_lockout_window_secs()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionsSpec {
    #[serde(default = "default_idle_timeout_secs")]
    idle_timeout_secs: u64,
    #[serde(default = "default_absolute_timeout_secs")]
    absolute_timeout_secs: u64,
    #[serde(default)]
    cookie_secure: bool,
    #[serde(default = "default_lockout_failures")]
    lockout_failures: u32,
    #[serde(default = "default_lockout_failures_per_ip")]
    lockout_failures_per_ip: u32,
    #[serde(default = "default_lockout_window_secs")]
    lockout_window_secs: u64,
}

const fn default_idle_timeout_secs() -> u64 {
    30 * 60
}
const fn default_absolute_timeout_secs() -> u64 {
    12 * 3600
}
const fn default_lockout_failures() -> u32 {
    5
}
const fn default_lockout_failures_per_ip() -> u32 {
    20
}
const fn default_lockout_window_secs() -> u64 {
    15 * 60
}

/// Reads `[sessions]`; a zero that would end every session at once or lock everyone out
/// is reported.
fn session_settings(src: &Source, spanned: &Spanned<SessionsSpec>, problems: &mut Problems) -> SessionSettings {
    let s = spanned.get_ref();
    for (name, value) in [
        ("idle_timeout_secs", s.idle_timeout_secs),
        ("absolute_timeout_secs", s.absolute_timeout_secs),
        ("lockout_failures", u64::from(s.lockout_failures)),
        ("lockout_failures_per_ip", u64::from(s.lockout_failures_per_ip)),
        ("lockout_window_secs", s.lockout_window_secs),
    ] {
        if value == 0 {
            problems.push(src.error(spanned, format!("sessions.{name} must be at least 1")));
        }
    }
    if s.idle_timeout_secs > s.absolute_timeout_secs {
        problems.push(src.error(spanned, "sessions.idle_timeout_secs must not exceed absolute_timeout_secs"));
    }
    SessionSettings {
        idle_timeout: Duration::from_secs(s.idle_timeout_secs),
        absolute_timeout: Duration::from_secs(s.absolute_timeout_secs),
        cookie_secure: s.cookie_secure,
        lockout_failures: s.lockout_failures,
        lockout_failures_per_ip: s.lockout_failures_per_ip,
        lockout_window: Duration::from_secs(s.lockout_window_secs),
    }
}

/// How ingest runs its embedded store (`[store]`).
#[derive(Debug, Clone, PartialEq)]
pub struct StoreSettings {
    /// fdatasync before acknowledging (`always`), or leave it to the OS (`never`: survives
    /// a killed ingest, not a power cut).
    pub fsync: store::FsyncPolicy,
    /// Seal the log into compressed blocks once this many points are unsealed.
    pub checkpoint_points: usize,
    /// Retention per metric family that overrides `store::default_retention`.
    pub retention: std::collections::BTreeMap<protocol::Family, store::Retention>,
    /// How often expired partitions are dropped.
    pub retention_interval: Duration,
}

impl Default for StoreSettings {
    fn default() -> StoreSettings {
        StoreSettings {
            fsync: store::FsyncPolicy::Always,
            checkpoint_points: default_checkpoint_points(),
            retention: Default::default(),
            retention_interval: Duration::from_secs(default_retention_interval_secs()),
        }
    }
}

impl StoreSettings {
    /// The store's own configuration for a store in `dir`.
    pub fn store_config(&self, dir: PathBuf) -> store::StoreConfig {
        let mut c = store::StoreConfig::new(dir);
        c.fsync = self.fsync;
        c.checkpoint_points = self.checkpoint_points;
        c.retention = self.retention.clone();
        c
    }
}

/// Which broker ingest subscribes through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerConfig {
    /// Start rumqttd in-process, listening on this address, and subscribe through it.
    Embedded {
        /// MQTT listener for gateways.
        listen: SocketAddr,
    },
    /// Subscribe through a broker someone else runs.
    External {
        /// Broker host.
        host: String,
        /// Broker port.
        port: u16,
        /// Username and password.
        credentials: Option<(String, String)>,
    },
}

/// Limits on input. Everything outside them is refused with a counted reason.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Largest telemetry payload accepted.
    pub max_payload_bytes: usize,
    /// How far in the future a reading's time may be (clock skew).
    pub max_future: Duration,
    /// How old a reading may be (a gateway's queue after a long outage). Guards MQTT input
    /// against a gateway with a wrong clock.
    pub max_age: Duration,
    /// How old a line-protocol reading may be (`/api/v2/write`): history brought in from
    /// an old system (docs/INFLUXDB.md, "Backfill"). `None`: as far back as the store keeps
    /// the raw points of the reading's metric family (`store.retention`). Never less than
    /// `max_age`.
    pub backfill_max_age: Option<Duration>,
    /// Largest `/api/v2/write` body, before and after gzip.
    pub max_write_body_bytes: usize,
    /// Most HTTP connections open at once; one more is closed as soon as it is accepted
    /// (counted in `ingest_http_connections_refused_total`).
    pub http_max_connections: usize,
    /// How long a client has to send a request's whole header, and how long an idle
    /// kept-alive connection stays open.
    pub http_header_timeout: Duration,
    /// How long a request may take from its header until the response starts (reading
    /// its body included); a streamed response (server-sent events) is not cut.
    pub http_request_timeout: Duration,
    /// Line protocol: most values (readings) one request may carry, after gzip.
    pub write_max_readings: usize,
    /// Line protocol: most devices one request may register.
    pub write_max_new_devices: usize,
    /// Line protocol: most devices registered through it, in all.
    pub write_max_devices: usize,
    /// Line protocol: most series (device, metric) one request may create.
    pub write_max_new_series: usize,
    /// Line protocol: most series it may write to, in all (every series the store
    /// holds counts).
    pub write_max_series: usize,
}

impl Limits {
    /// The age limit of a line-protocol reading whose metric family keeps raw points for
    /// `raw_retention`: `backfill_max_age` if set, else that retention; never less than
    /// `max_age` (a config that widened `max_age_days` keeps accepting what it did).
    pub fn backfill_age(&self, raw_retention: Duration) -> Duration {
        self.backfill_max_age.unwrap_or(raw_retention).max(self.max_age)
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_payload_bytes: default_max_payload_bytes(),
            max_future: Duration::from_secs(default_max_future_secs()),
            max_age: Duration::from_secs(default_max_age_days() * 86_400),
            backfill_max_age: None,
            max_write_body_bytes: default_max_write_body_bytes(),
            http_max_connections: default_http_max_connections(),
            http_header_timeout: Duration::from_secs(default_http_header_timeout_secs()),
            http_request_timeout: Duration::from_secs(default_http_request_timeout_secs()),
            write_max_readings: default_write_max_readings(),
            write_max_new_devices: default_write_max_new_devices(),
            write_max_devices: default_write_max_devices(),
            write_max_new_series: default_write_max_new_series(),
            write_max_series: default_write_max_series(),
        }
    }
}

// ---- file format ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    data_dir: PathBuf,
    #[serde(default = "default_http")]
    http: Spanned<String>,
    inventory: PathBuf,
    #[serde(default = "default_broker")]
    broker: Spanned<BrokerSpec>,
    #[serde(default)]
    limits: Option<Spanned<LimitsSpec>>,
    #[serde(default)]
    tokens: Vec<Spanned<TokenSpec>>,
    #[serde(default)]
    store: Option<Spanned<StoreSpec>>,
    #[serde(default)]
    sinks: Vec<Spanned<crate::sinks::SinkSpec>>,
    #[serde(default)]
    sessions: Option<Spanned<SessionsSpec>>,
    /// Read by `alerts::config::AlertsConfig::from_table`.
    #[serde(default, rename = "alerts")]
    _alerts: Option<serde::de::IgnoredAny>,
    /// Read by `broadcast::config::BroadcastConfig::from_table`.
    #[serde(default, rename = "broadcast")]
    _broadcast: Option<serde::de::IgnoredAny>,
}

fn default_broker() -> Spanned<BrokerSpec> {
    Spanned::new(0..0, BrokerSpec::default())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreSpec {
    #[serde(default = "default_fsync")]
    fsync: String,
    #[serde(default = "default_checkpoint_points")]
    checkpoint_points: usize,
    #[serde(default = "default_retention_interval_secs")]
    retention_interval_secs: u64,
    #[serde(default)]
    retention: std::collections::BTreeMap<String, RetentionSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionSpec {
    raw_days: i64,
    minute_days: i64,
    hour_days: i64,
}

fn default_fsync() -> String {
    "always".into()
}
const fn default_checkpoint_points() -> usize {
    2_000_000
}
const fn default_retention_interval_secs() -> u64 {
    3_600
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
enum BrokerSpec {
    Embedded {
        #[serde(default = "default_mqtt_listen")]
        listen: String,
        tls_listen: Option<String>,
        tls_cert_file: Option<PathBuf>,
        tls_key_file: Option<PathBuf>,
        #[serde(default)]
        tls_names: Vec<String>,
        #[serde(default)]
        insecure: bool,
    },
    External {
        url: String,
        username: Option<String>,
        password: Option<String>,
    },
}

impl Default for BrokerSpec {
    fn default() -> BrokerSpec {
        BrokerSpec::Embedded {
            listen: default_mqtt_listen(),
            tls_listen: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_names: Vec::new(),
            insecure: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsSpec {
    #[serde(default = "default_max_payload_bytes")]
    max_payload_bytes: usize,
    #[serde(default = "default_max_future_secs")]
    max_future_secs: u64,
    #[serde(default = "default_max_age_days")]
    max_age_days: u64,
    #[serde(default)]
    backfill_max_age_days: Option<u64>,
    #[serde(default = "default_max_write_body_bytes")]
    max_write_body_bytes: usize,
    #[serde(default = "default_http_max_connections")]
    http_max_connections: usize,
    #[serde(default = "default_http_header_timeout_secs")]
    http_header_timeout_secs: u64,
    #[serde(default = "default_http_request_timeout_secs")]
    http_request_timeout_secs: u64,
    #[serde(default = "default_write_max_readings")]
    write_max_readings: usize,
    #[serde(default = "default_write_max_new_devices")]
    write_max_new_devices: usize,
    #[serde(default = "default_write_max_devices")]
    write_max_devices: usize,
    #[serde(default = "default_write_max_new_series")]
    write_max_new_series: usize,
    #[serde(default = "default_write_max_series")]
    write_max_series: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenSpec {
    token: String,
    role: Role,
    #[serde(default)]
    tenants: Vec<String>,
    #[serde(default)]
    name: String,
}

fn default_http() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:8080".to_string())
}
fn default_mqtt_listen() -> String {
    "127.0.0.1:1883".to_string()
}
const fn default_max_payload_bytes() -> usize {
    256 * 1024
}
const fn default_max_future_secs() -> u64 {
    300
}
const fn default_max_age_days() -> u64 {
    30
}
const fn default_max_write_body_bytes() -> usize {
    32 * 1024 * 1024
}
const fn default_http_max_connections() -> usize {
    1_024
}
const fn default_http_header_timeout_secs() -> u64 {
    10
}
const fn default_http_request_timeout_secs() -> u64 {
    60
}
const fn default_write_max_readings() -> usize {
    100_000
}
const fn default_write_max_new_devices() -> usize {
    1_000
}
const fn default_write_max_devices() -> usize {
    10_000
}
const fn default_write_max_new_series() -> usize {
    10_000
}
const fn default_write_max_series() -> usize {
    100_000
}

impl IngestConfig {
    /// A config with every default: no inventory file, no tokens, default limits and store,
    /// no sinks; HTTP on a free local port. Tests and embedders start here and change
    /// what they care about, so a new setting does not break every caller.
    pub fn new(data_dir: PathBuf, broker: BrokerConfig) -> IngestConfig {
        IngestConfig {
            data_dir,
            broker,
            broker_exposure: crate::broker::Exposure::default(),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            inventory: None,
            limits: Limits::default(),
            tokens: Vec::new(),
            store: StoreSettings::default(),
            sinks: Vec::new(),
            sessions: SessionSettings::default(),
        }
    }

    /// Reads and validates a config file; relative paths are relative to the file.
    pub fn load(path: &Path) -> Result<IngestConfig, ConfigErrors> {
        let src = Source::read(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        IngestConfig::from_source(&src, base)
    }

    /// Parses and validates configuration text.
    pub fn from_source(src: &Source, base: &Path) -> Result<IngestConfig, ConfigErrors> {
        let spec: Spec = src.parse()?;
        let mut problems = Problems::new();
        let http = spec.http.get_ref().parse::<SocketAddr>().unwrap_or_else(|_| {
            problems.push(
                src.error(&spec.http, format!("http '{}' is not an address like 127.0.0.1:8080", spec.http.get_ref())),
            );
            SocketAddr::from(([127, 0, 0, 1], 8080))
        });
        let broker_span = spec.broker.span();
        let mut broker_exposure = crate::broker::Exposure::default();
        let broker = match spec.broker.into_inner() {
            BrokerSpec::Embedded { listen, tls_listen, tls_cert_file, tls_key_file, tls_names, insecure } => {
                let at = || Some(broker_span.clone());
                let listen = listen.parse().unwrap_or_else(|_| {
                    problems.push(
                        src.error_at(at(), format!("broker.listen '{listen}' is not an address like 127.0.0.1:1883")),
                    );
                    SocketAddr::from(([127, 0, 0, 1], 1883))
                });
                if let Some(reason) = crate::broker::check_listen(&listen, insecure) {
                    problems.push(src.error_at(at(), reason));
                }
                let tls_listen = tls_listen.map(|a| {
                    a.parse().unwrap_or_else(|_| {
                        problems.push(
                            src.error_at(at(), format!("broker.tls_listen '{a}' is not an address like 0.0.0.0:8883")),
                        );
                        SocketAddr::from(([127, 0, 0, 1], 8883))
                    })
                });
                let cert_files = match (tls_cert_file, tls_key_file) {
                    (Some(c), Some(k)) => Some((base.join(c), base.join(k))),
                    (None, None) => None,
                    _ => {
                        problems.push(src.error_at(at(), "broker.tls_cert_file and broker.tls_key_file go together"));
                        None
                    }
                };
                if tls_listen.is_none() && cert_files.is_some() {
                    problems.push(src.error_at(at(), "broker.tls_cert_file is set but there is no broker.tls_listen"));
                }
                broker_exposure = crate::broker::Exposure { tls_listen, cert_files, tls_names, insecure };
                BrokerConfig::Embedded { listen }
            }
            BrokerSpec::External { url, username, password } => {
                let (host, port) = daemon::parse_mqtt_url(&url).unwrap_or_else(|reason| {
                    problems.push(src.error_at(None, format!("broker.url '{url}': {reason}")));
                    (String::new(), 0)
                });
                let credentials = match (username, password) {
                    (Some(u), Some(p)) => Some((u, p)),
                    (None, None) => None,
                    _ => {
                        problems
                            .push(src.error_at(Some(broker_span), "broker.username and broker.password go together"));
                        None
                    }
                };
                BrokerConfig::External { host, port, credentials }
            }
        };
        let mut tokens: Vec<TokenConfig> = Vec::new();
        for t in &spec.tokens {
            let ts = t.get_ref();
            if let Some(reason) = crate::auth::check_secret(&ts.token) {
                problems.push(src.error(t, reason));
            } else if tokens.iter().any(|k| k.token == ts.token) {
                problems.push(src.error(t, "token is listed twice: give each holder a token of its own"));
            }
            tokens.push(TokenConfig {
                token: ts.token.clone(),
                role: ts.role,
                tenants: ts.tenants.clone(),
                name: ts.name.clone(),
            });
        }
        let limits = match &spec.limits {
            Some(l) => limits(src, l, &mut problems),
            None => Limits::default(),
        };
        let data_dir = base.join(spec.data_dir);
        let store = match spec.store {
            None => StoreSettings::default(),
            Some(st) => store_settings(src, &st, &mut problems),
        };
        let sinks = crate::sinks::from_specs(spec.sinks, src, &data_dir, &mut problems);
        let sessions = match &spec.sessions {
            Some(s) => session_settings(src, s, &mut problems),
            None => SessionSettings::default(),
        };
        problems.finish(IngestConfig {
            sessions,
            data_dir,
            store,
            sinks,
            broker,
            broker_exposure,
            http,
            inventory: Some(base.join(spec.inventory)),
            limits,
            tokens,
        })
    }
}

/// Reads `[limits]`; a limit of 0 that would refuse everything (or time out at once) is
/// reported.
fn limits(src: &Source, spanned: &Spanned<LimitsSpec>, problems: &mut Problems) -> Limits {
    let l = spanned.get_ref();
    for (name, value) in [
        ("http_max_connections", l.http_max_connections as u64),
        ("http_header_timeout_secs", l.http_header_timeout_secs),
        ("http_request_timeout_secs", l.http_request_timeout_secs),
        ("write_max_readings", l.write_max_readings as u64),
        ("write_max_new_devices", l.write_max_new_devices as u64),
        ("write_max_new_series", l.write_max_new_series as u64),
        ("backfill_max_age_days", l.backfill_max_age_days.unwrap_or(1)),
    ] {
        if value == 0 {
            problems.push(src.error(spanned, format!("limits.{name} must be at least 1")));
        }
    }
    Limits {
        max_payload_bytes: l.max_payload_bytes,
        max_future: Duration::from_secs(l.max_future_secs),
        max_age: Duration::from_secs(l.max_age_days.saturating_mul(86_400)),
        backfill_max_age: l.backfill_max_age_days.map(|d| Duration::from_secs(d.saturating_mul(86_400))),
        max_write_body_bytes: l.max_write_body_bytes,
        http_max_connections: l.http_max_connections,
        http_header_timeout: Duration::from_secs(l.http_header_timeout_secs),
        http_request_timeout: Duration::from_secs(l.http_request_timeout_secs),
        write_max_readings: l.write_max_readings,
        write_max_new_devices: l.write_max_new_devices,
        write_max_devices: l.write_max_devices,
        write_max_new_series: l.write_max_new_series,
        write_max_series: l.write_max_series,
    }
}

/// Validates `[store]`: the fsync policy, and retention per family (a known family,
/// `raw_days <= minute_days <= hour_days`), through the store's own validation.
fn store_settings(src: &Source, st: &Spanned<StoreSpec>, problems: &mut Problems) -> StoreSettings {
    let spec = st.get_ref();
    let mut out = StoreSettings {
        checkpoint_points: spec.checkpoint_points,
        retention_interval: Duration::from_secs(spec.retention_interval_secs.max(1)),
        ..StoreSettings::default()
    };
    out.fsync = match spec.fsync.as_str() {
        "always" => store::FsyncPolicy::Always,
        "never" => store::FsyncPolicy::Never,
        other => {
            problems.push(src.error(st, format!("store.fsync '{other}' must be \"always\" or \"never\"")));
            store::FsyncPolicy::Always
        }
    };
    for (name, r) in &spec.retention {
        match serde_json::from_value::<protocol::Family>(serde_json::Value::String(name.clone())) {
            Ok(family) => {
                out.retention.insert(family, store::Retention::days(r.raw_days, r.minute_days, r.hour_days));
            }
            Err(_) => problems.push(src.error(
                st,
                format!("store.retention.{name}: no such metric family (water, water_quality, pump, animal, barn, speaker, health, external)"),
            )),
        }
    }
    if let Err(errors) = out.store_config(PathBuf::from(".")).validate() {
        for e in errors {
            problems.push(src.error(st, format!("store: {e}")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        let cfg = IngestConfig::from_source(&Source::from_text("ingest.example.toml", EXAMPLE), Path::new("/etc/vt"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.data_dir, Path::new("/var/lib/vt-ingest"));
        assert!(matches!(cfg.broker, BrokerConfig::Embedded { .. }));
    }

    #[test]
    fn a_bad_broker_listen_address_is_reported_at_the_broker_table() {
        let text = "data_dir = \"d\"\ninventory = \"i.toml\"\n[broker]\ntype = \"embedded\"\nlisten = \"nowhere\"\n";
        let e = IngestConfig::from_source(&Source::from_text("i.toml", text), Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("i.toml:3:1: broker.listen 'nowhere'"), "{e}");
        let good = text.replace("nowhere", "127.0.0.1:1883");
        assert!(IngestConfig::from_source(&Source::from_text("i.toml", good), Path::new(".")).is_ok());
        // Plain MQTT on a network address: refused at the table without `insecure`,
        // accepted with it (and warned about at every start).
        let open = text.replace("nowhere", "0.0.0.0:1883");
        let e = IngestConfig::from_source(&Source::from_text("i.toml", open.clone()), Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(e.contains("i.toml:3:1: broker.listen 0.0.0.0:1883 is plain MQTT on a network address"), "{e}");
        let insecure = format!("{open}insecure = true\n");
        let cfg = IngestConfig::from_source(&Source::from_text("i.toml", insecure), Path::new("."))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(cfg.broker_exposure.insecure);
    }

    #[test]
    fn the_backfill_age_is_read_from_limits_and_zero_is_refused() {
        let base = "data_dir = \"d\"\ninventory = \"i.toml\"\n[limits]\n";
        let cfg = IngestConfig::from_source(&Source::from_text("i.toml", base), Path::new("."))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.limits.backfill_max_age, None, "by default, the family's retention");
        let text = format!("{base}backfill_max_age_days = 400\n");
        let cfg = IngestConfig::from_source(&Source::from_text("i.toml", text), Path::new("."))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.limits.backfill_max_age, Some(Duration::from_secs(400 * 86_400)));
        let text = format!("{base}backfill_max_age_days = 0\n");
        let e = IngestConfig::from_source(&Source::from_text("i.toml", text), Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("limits.backfill_max_age_days must be at least 1"), "{e}");
    }

    #[test]
    fn the_sessions_table_is_read_and_a_zero_or_an_idle_past_the_absolute_limit_is_reported() {
        let example = IngestConfig::from_source(&Source::from_text("e.toml", EXAMPLE), Path::new("."))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(example.sessions, SessionSettings::default());
        assert_eq!(example.sessions.idle_timeout, Duration::from_secs(1800));
        let text =
            "data_dir = \"d\"\ninventory = \"i.toml\"\n[sessions]\nidle_timeout_secs = 60\ncookie_secure = true\n";
        let cfg = IngestConfig::from_source(&Source::from_text("i.toml", text), Path::new("."))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.sessions.idle_timeout, Duration::from_secs(60));
        assert!(cfg.sessions.cookie_secure);
        assert_eq!(cfg.sessions.lockout_failures, 5);
        let bad =
            "data_dir = \"d\"\ninventory = \"i.toml\"\n[sessions]\nidle_timeout_secs = 90000\nlockout_failures = 0\n";
        let e = IngestConfig::from_source(&Source::from_text("i.toml", bad), Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("i.toml:3:1: sessions.lockout_failures must be at least 1"), "{e}");
        assert!(e.contains("idle_timeout_secs must not exceed absolute_timeout_secs"), "{e}");
    }

    #[test]
    fn a_bad_address_and_a_short_token_are_both_reported() {
        let text = "data_dir = \"d\"\ninventory = \"i.toml\"\nhttp = \"localhost\"\n[[tokens]]\ntoken = \"short\"\nrole = \"admin\"\n";
        let e = IngestConfig::from_source(&Source::from_text("i.toml", text), Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("i.toml:3:8: http 'localhost' is not an address"), "{e}");
        assert!(e.contains("i.toml:4:1: token must be at least 16 characters"), "{e}");
    }

    #[test]
    fn the_example_token_is_refused_at_its_line() {
        // The example config ships its [[tokens]] block commented out; uncommented as it
        // is, the placeholder secret is refused with file and line.
        let block = EXAMPLE
            .split("# [[tokens]]")
            .nth(1)
            .and_then(|rest| rest.split("\n\n").next())
            .unwrap_or_else(|| panic!("the example has a commented [[tokens]] block"));
        let uncommented: String =
            format!("[[tokens]]{block}").lines().map(|l| l.trim_start_matches("# ")).collect::<Vec<_>>().join("\n");
        let text = format!("data_dir = \"d\"\ninventory = \"i.toml\"\n{uncommented}\n");
        let e = IngestConfig::from_source(&Source::from_text("ingest.toml", text.clone()), Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ingest.toml:3:1: token 'change-me-to-a-long-random-string' is the example's placeholder"),
            "{e}"
        );
        // Positive control: the same block with a real secret loads, and the secret is kept
        // for hashing at start (the file's format is unchanged).
        let good = text.replace("change-me-to-a-long-random-string", "3f9a0c1d7e5b2a4c6d8e0f1a2b3c4d5e");
        let cfg = IngestConfig::from_source(&Source::from_text("ingest.toml", good.clone()), Path::new("."))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.tokens[0].token, "3f9a0c1d7e5b2a4c6d8e0f1a2b3c4d5e");
        // The same secret twice is refused at the second.
        let twice = format!("{good}{}", &good[good.find("[[tokens]]").unwrap_or(0)..]);
        let e = IngestConfig::from_source(&Source::from_text("ingest.toml", twice), Path::new(".")).unwrap_err();
        assert!(e.to_string().contains("token is listed twice"), "{e}");
    }

    #[test]
    fn store_retention_and_an_influxdb_sink_are_read_and_checked() {
        let text = "data_dir = \"d\"\ninventory = \"i.toml\"\n[store]\nfsync = \"never\"\n[store.retention.health]\nraw_days = 7\nminute_days = 30\nhour_days = 365\n[[sinks]]\ntype = \"influxdb\"\nurl = \"http://127.0.0.1:8428/\"\n";
        let cfg = IngestConfig::from_source(&Source::from_text("i.toml", text), Path::new("/srv"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.store.fsync, store::FsyncPolicy::Never);
        assert_eq!(cfg.store.retention[&protocol::Family::Health], store::Retention::days(7, 30, 365));
        let crate::sinks::SinkConfig::Influxdb(sink) = &cfg.sinks[0];
        assert_eq!(sink.url, "http://127.0.0.1:8428");
        assert_eq!(sink.spill_dir, Path::new("/srv/d/spill/influxdb"));

        let bad = "data_dir = \"d\"\ninventory = \"i.toml\"\n[store]\nfsync = \"sometimes\"\n[store.retention.cows]\nraw_days = 1\nminute_days = 1\nhour_days = 1\n[store.retention.health]\nraw_days = 9\nminute_days = 1\nhour_days = 1\n[[sinks]]\ntype = \"influxdb\"\nurl = \"localhost:8086\"\nbatch_max_readings = 0\n";
        let e = IngestConfig::from_source(&Source::from_text("i.toml", bad), Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("i.toml:3:1: store.fsync 'sometimes'"), "{e}");
        assert!(e.contains("store.retention.cows: no such metric family"), "{e}");
        assert!(e.contains("retention of Health must satisfy"), "{e}");
        assert!(
            e.contains("i.toml:13:1: influxdb sink 'influxdb': url 'localhost:8086' must start with http://"),
            "{e}"
        );
        assert!(e.contains("batch_max_readings must be at least 1"), "{e}");
    }
}
