//! The gateway's configuration: one TOML file (see `gateway.example.toml`, printed by
//! `gateway generate-config`).
//!
//! The file is parsed into spanned spec types, validated as a whole (every problem with
//! its line), and turned into the plain [`GatewayConfig`] the agent runs on. The demo and
//! tests build a [`GatewayConfig`] in code and go through [`GatewayConfig::validate`] too.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use conf::{ConfigError, ConfigErrors, Problems, Source, Spanned};
use protocol::codec::Codec;
use serde::Deserialize;

use crate::profile::Library;

/// The example configuration shipped with the gateway.
pub const EXAMPLE: &str = include_str!("../gateway.example.toml");

/// Everything the gateway needs to run.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// This gateway's id; it appears in every topic it uses.
    pub gateway: String,
    /// Tenant the gateway belongs to.
    pub tenant: String,
    /// The broker and how to talk to it.
    pub mqtt: MqttConfig,
    /// Batching and resending.
    pub publish: PublishConfig,
    /// The store-and-forward queue.
    pub queue: QueueConfig,
    /// Directories of extra profiles, beside the built-in library.
    pub profile_dirs: Vec<PathBuf>,
    /// How often device health is published as readings even when nothing changed.
    pub health_interval: Duration,
    /// The devices to poll.
    pub devices: Vec<DeviceConfig>,
}

/// The MQTT uplink.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// MQTT client id (defaults to the gateway id).
    pub client_id: String,
    /// Username and password, when the broker wants them.
    pub credentials: Option<(String, String)>,
    /// Payload codec of telemetry.
    pub codec: Codec,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// Most batches published and not yet confirmed at once.
    pub max_inflight: u16,
}

/// How readings become batches and how batches are resent.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishConfig {
    /// Readings are collected this long before they are sealed into a batch.
    pub interval: Duration,
    /// A batch is sealed early when it has this many readings.
    pub max_readings: usize,
    /// A published batch without a delivery ack is sent again after this.
    pub resend_after: Duration,
}

/// The store-and-forward queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// Where the queue lives; `None` keeps it in memory (tests only).
    pub dir: Option<PathBuf>,
    /// Most bytes of queued batches; the oldest are dropped (and counted) beyond it.
    pub max_bytes: u64,
}

/// One device behind the gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceConfig {
    /// Device id (for a slot table, the hub's id; its slots are devices of their own).
    pub id: String,
    /// Profile model to read it with.
    pub profile: String,
    /// Where it is (informational; the inventory in ingest is authoritative).
    pub site: Option<String>,
    /// Poll interval.
    pub interval: Duration,
    /// How it is reached.
    pub transport: Transport,
    /// Modbus unit id.
    pub unit: u8,
    /// How long to wait for an answer.
    pub timeout: Duration,
}

/// How a device is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Modbus TCP at this address (a device, or an RS-485 converter).
    Tcp(SocketAddr),
}

// ---- file format ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    gateway: Spanned<String>,
    tenant: Spanned<String>,
    mqtt: Spanned<MqttSpec>,
    #[serde(default)]
    publish: PublishSpec,
    #[serde(default)]
    queue: QueueSpec,
    #[serde(default)]
    profile_dirs: Vec<PathBuf>,
    #[serde(default = "default_health_interval_secs")]
    health_interval_secs: u64,
    #[serde(default)]
    devices: Vec<Spanned<DeviceSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MqttSpec {
    url: String,
    client_id: Option<String>,
    username: Option<String>,
    password: Option<String>,
    #[serde(default)]
    codec: Codec,
    #[serde(default = "default_keep_alive_secs")]
    keep_alive_secs: u64,
    #[serde(default = "default_max_inflight")]
    max_inflight: u16,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishSpec {
    #[serde(default = "default_publish_interval_ms")]
    interval_ms: u64,
    #[serde(default = "default_max_readings")]
    max_readings: usize,
    #[serde(default = "default_resend_after_ms")]
    resend_after_ms: u64,
}

impl Default for PublishSpec {
    fn default() -> PublishSpec {
        PublishSpec {
            interval_ms: default_publish_interval_ms(),
            max_readings: default_max_readings(),
            resend_after_ms: default_resend_after_ms(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueSpec {
    dir: Option<PathBuf>,
    #[serde(default = "default_queue_max_bytes")]
    max_bytes: u64,
}

impl Default for QueueSpec {
    fn default() -> QueueSpec {
        QueueSpec { dir: None, max_bytes: default_queue_max_bytes() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceSpec {
    id: String,
    profile: String,
    site: Option<String>,
    #[serde(default = "default_interval_ms")]
    interval_ms: u64,
    tcp: Option<String>,
    #[serde(default = "default_unit")]
    unit: u8,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
}

const fn default_health_interval_secs() -> u64 {
    60
}
const fn default_keep_alive_secs() -> u64 {
    30
}
const fn default_max_inflight() -> u16 {
    32
}
const fn default_publish_interval_ms() -> u64 {
    1000
}
const fn default_max_readings() -> usize {
    1000
}
const fn default_resend_after_ms() -> u64 {
    15_000
}
const fn default_queue_max_bytes() -> u64 {
    64 * 1024 * 1024
}
const fn default_interval_ms() -> u64 {
    5000
}
const fn default_unit() -> u8 {
    1
}
const fn default_timeout_ms() -> u64 {
    1000
}

impl GatewayConfig {
    /// Reads, parses and validates a config file against the profile library.
    pub fn load(path: &Path, library: &Library) -> Result<GatewayConfig, ConfigErrors> {
        GatewayConfig::from_source(&Source::read(path)?, library)
    }

    /// Parses and validates configuration text.
    pub fn from_source(src: &Source, library: &Library) -> Result<GatewayConfig, ConfigErrors> {
        let spec: Spec = src.parse()?;
        let mut problems = Problems::new();
        for id in [&spec.gateway, &spec.tenant] {
            if let Err(e) = protocol::id::validate(id.get_ref()) {
                problems.push(src.error(id, format!("'{}': {e}", id.get_ref())));
            }
        }
        let mqtt = mqtt(src, &spec.mqtt, spec.gateway.get_ref(), &mut problems);
        let mut devices = Vec::with_capacity(spec.devices.len());
        for d in &spec.devices {
            if let Some(device) = device(src, d, library, &mut problems) {
                if devices.iter().any(|x: &DeviceConfig| x.id == device.id) {
                    problems.push(src.error(d, format!("device '{}' is listed twice", device.id)));
                }
                devices.push(device);
            }
        }
        if spec.publish.interval_ms == 0 || spec.publish.max_readings == 0 {
            problems.push(src.error_at(None, "publish.interval_ms and publish.max_readings must be positive"));
        }
        problems.finish(GatewayConfig {
            gateway: spec.gateway.into_inner(),
            tenant: spec.tenant.into_inner(),
            mqtt,
            publish: PublishConfig {
                interval: Duration::from_millis(spec.publish.interval_ms.max(1)),
                max_readings: spec.publish.max_readings.max(1),
                resend_after: Duration::from_millis(spec.publish.resend_after_ms),
            },
            queue: QueueConfig { dir: spec.queue.dir, max_bytes: spec.queue.max_bytes },
            profile_dirs: spec.profile_dirs,
            health_interval: Duration::from_secs(spec.health_interval_secs.max(1)),
            devices,
        })
    }

    /// Checks a config built in code against the library: the same rules as a file.
    pub fn validate(&self, library: &Library) -> Result<(), ConfigErrors> {
        let name = format!("config of {}", self.gateway);
        let err = |reason: String| ConfigError { file: name.clone().into(), line: None, column: None, reason };
        let mut problems = Problems::new();
        for id in [&self.gateway, &self.tenant] {
            if let Err(e) = protocol::id::validate(id) {
                problems.push(err(format!("'{id}': {e}")));
            }
        }
        for (i, d) in self.devices.iter().enumerate() {
            if let Err(e) = protocol::id::validate(&d.id) {
                problems.push(err(format!("device '{}': {e}", d.id)));
            }
            if library.get(&d.profile).is_none() {
                problems.push(err(format!("device '{}': no profile '{}'", d.id, d.profile)));
            }
            if self.devices[..i].iter().any(|x| x.id == d.id) {
                problems.push(err(format!("device '{}' is listed twice", d.id)));
            }
        }
        problems.finish(())
    }
}

fn mqtt(src: &Source, spec: &Spanned<MqttSpec>, gateway: &str, problems: &mut Problems) -> MqttConfig {
    let m = spec.get_ref();
    let (host, port) = match parse_mqtt_url(&m.url) {
        Ok(hp) => hp,
        Err(reason) => {
            problems.push(src.error(spec, format!("mqtt.url '{}': {reason}", m.url)));
            (String::new(), 0)
        }
    };
    let credentials = match (&m.username, &m.password) {
        (Some(u), Some(p)) => Some((u.clone(), p.clone())),
        (None, None) => None,
        _ => {
            problems.push(src.error(spec, "mqtt.username and mqtt.password go together"));
            None
        }
    };
    MqttConfig {
        host,
        port,
        client_id: m.client_id.clone().unwrap_or_else(|| gateway.to_string()),
        credentials,
        codec: m.codec,
        keep_alive: Duration::from_secs(m.keep_alive_secs.max(5)),
        max_inflight: m.max_inflight.max(1),
    }
}

/// `mqtt://host:port` (port 1883 if left out).
pub fn parse_mqtt_url(url: &str) -> Result<(String, u16), String> {
    let rest = url.strip_prefix("mqtt://").ok_or("must start with mqtt://")?;
    let rest = rest.trim_end_matches('/');
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => {
            let port = port.parse::<u16>().map_err(|_| format!("port '{port}' is not a number from 1 to 65535"))?;
            Ok((host.trim_matches(['[', ']']).to_string(), port))
        }
        None if !rest.is_empty() => Ok((rest.to_string(), 1883)),
        _ => Err("host is missing".into()),
    }
}

fn device(
    src: &Source,
    spec: &Spanned<DeviceSpec>,
    library: &Library,
    problems: &mut Problems,
) -> Option<DeviceConfig> {
    let d = spec.get_ref();
    let mut errors: Vec<ConfigError> = Vec::new();
    if let Err(e) = protocol::id::validate(&d.id) {
        errors.push(src.error(spec, format!("device '{}': {e}", d.id)));
    }
    if library.get(&d.profile).is_none() {
        let known = library.models().join(", ");
        errors.push(src.error(spec, format!("device '{}': no profile '{}' (known: {known})", d.id, d.profile)));
    }
    if d.interval_ms < 100 {
        errors.push(src.error(spec, format!("device '{}': interval_ms {} is below 100", d.id, d.interval_ms)));
    }
    let transport = match &d.tcp {
        Some(addr) => match addr.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(a)) => Some(Transport::Tcp(a)),
            Ok(None) | Err(_) => {
                errors.push(src.error(spec, format!("device '{}': tcp '{addr}' is not host:port", d.id)));
                None
            }
        },
        None => {
            errors.push(src.error(spec, format!("device '{}': needs `tcp = \"host:port\"`", d.id)));
            None
        }
    };
    let ok = errors.is_empty();
    errors.into_iter().for_each(|e| problems.push(e));
    let transport = transport.filter(|_| ok)?;
    Some(DeviceConfig {
        id: d.id.clone(),
        profile: d.profile.clone(),
        site: d.site.clone(),
        interval: Duration::from_millis(d.interval_ms),
        transport,
        unit: d.unit,
        timeout: Duration::from_millis(d.timeout_ms.max(1)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn library() -> Library {
        let mut lib = Library::default();
        lib.add(&Source::from_text(
            "m.toml",
            "model = \"m1\"\nkind = \"water_meter\"\n[[points]]\nmetric = \"flow\"\naddress = 0\ntype = \"u16\"\nunit = \"m3/h\"\n",
        ))
        .unwrap();
        lib
    }

    #[test]
    fn the_example_config_parses() {
        let (lib, errors) = Library::builtin();
        assert!(errors.is_empty());
        let cfg = GatewayConfig::from_source(&Source::from_text("gateway.example.toml", EXAMPLE), &lib);
        let cfg = cfg.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.gateway, "gw-dongcun");
        assert!(!cfg.devices.is_empty());
    }

    #[test]
    fn every_device_problem_is_reported_with_its_line() {
        let text = r#"
gateway = "gw-1"
tenant = "county"
[mqtt]
url = "mqtt://127.0.0.1:1883"

[[devices]]
id = "m-1"
profile = "nope"
tcp = "127.0.0.1:502"

[[devices]]
id = "m/2"
profile = "m1"
tcp = "127.0.0.1:502"
interval_ms = 10
"#;
        let errs = GatewayConfig::from_source(&Source::from_text("gw.toml", text), &library()).unwrap_err();
        let text = errs.to_string();
        assert!(text.contains("gw.toml:7:1: device 'm-1': no profile 'nope' (known: m1)"), "{text}");
        assert!(text.contains("gw.toml:12:1: device 'm/2': id contains '/'"), "{text}");
        assert!(text.contains("interval_ms 10 is below 100"), "{text}");
    }

    #[test]
    fn mqtt_urls_are_checked() {
        assert_eq!(parse_mqtt_url("mqtt://broker:1884"), Ok(("broker".into(), 1884)));
        assert_eq!(parse_mqtt_url("mqtt://broker"), Ok(("broker".into(), 1883)));
        assert!(parse_mqtt_url("http://broker").is_err());
        assert!(parse_mqtt_url("mqtt://broker:x").is_err());
    }
}
