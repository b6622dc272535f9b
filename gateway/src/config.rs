//! The gateway's configuration: one TOML file (see `gateway.example.toml`, printed by
//! `gateway generate-config`).
//!
//! The file is parsed into spanned spec types (`deny_unknown_fields` everywhere),
//! validated as a whole (every problem with its line), and turned into the plain
//! [`GatewayConfig`] the agent runs on. The demo and tests build a [`GatewayConfig`] in
//! code and go through [`GatewayConfig::validate`] too. A configuration received on the
//! retained config topic goes through [`GatewayConfig::from_source`] like a file, named
//! after its topic.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use conf::{ConfigError, ConfigErrors, Problems, Source, Spanned};
use protocol::codec::Codec;
use serde::Deserialize;

use crate::profile::Library;
use crate::rules::{self, LocalRule};

/// The example configuration shipped with the gateway.
pub const EXAMPLE: &str = include_str!("../gateway.example.toml");

/// Everything the gateway needs to run.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// This gateway's id; it appears in every topic it uses.
    pub gateway: String,
    /// Tenant the gateway belongs to.
    pub tenant: String,
    /// Ingest's Ed25519 public key: commands must be signed with its private half.
    /// Without it every command is refused.
    pub command_key: Option<[u8; 32]>,
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
    /// RS-485 buses (Modbus RTU) by name.
    pub buses: Vec<BusConfig>,
    /// The devices to poll.
    pub devices: Vec<DeviceConfig>,
    /// Rules the gateway runs itself, so a village is not blind while its link is down.
    pub rules: Vec<LocalRule>,
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
    /// TLS (rustls), when the URL is `mqtts://`.
    pub tls: Option<TlsConfig>,
    /// SHA-256 of the broker's CA certificate (`AB:CD:...`, as ingest prints it): with it,
    /// the gateway trusts only that certificate of `ca_file`, and refuses to start if the
    /// file does not hold it (`mqtt.ca_sha256`).
    pub ca_sha256: Option<String>,
    /// Payload codec of telemetry.
    pub codec: Codec,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// Most batches published and not yet confirmed at once.
    pub max_inflight: u16,
    /// Longest wait between reconnect attempts (backoff doubles from 1 s up to this).
    pub reconnect_max: Duration,
}

impl Default for MqttConfig {
    fn default() -> MqttConfig {
        MqttConfig {
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: String::new(),
            credentials: None,
            tls: None,
            ca_sha256: None,
            codec: Codec::Binary,
            keep_alive: Duration::from_secs(default_keep_alive_secs()),
            max_inflight: default_max_inflight(),
            reconnect_max: Duration::from_secs(default_reconnect_max_secs()),
        }
    }
}

/// TLS to the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM file of the CA that signed the broker's certificate; `None` trusts the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for brokers that authenticate gateways by
    /// certificate (mosquitto `require_certificate`).
    pub client_auth: Option<(PathBuf, PathBuf)>,
}

/// How readings become batches and how batches are resent.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishConfig {
    /// Readings are collected this long before they are sealed into a batch (and synced
    /// to disk: one fdatasync per interval).
    pub interval: Duration,
    /// A batch is sealed early when it has this many readings.
    pub max_readings: usize,
    /// A published batch without a delivery ack is sent again after this.
    pub resend_after: Duration,
    /// Most batches published per second, so the drain after an outage leaves room on a
    /// cellular link for status, acks and commands.
    pub max_batches_per_sec: u32,
}

impl Default for PublishConfig {
    fn default() -> PublishConfig {
        PublishConfig {
            interval: Duration::from_millis(default_publish_interval_ms()),
            max_readings: default_max_readings(),
            resend_after: Duration::from_millis(default_resend_after_ms()),
            max_batches_per_sec: default_max_batches_per_sec(),
        }
    }
}

/// The store-and-forward queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// Where the queue (and the command replay window) lives; `None` keeps both in memory
    /// (tests only: nothing survives a restart).
    pub dir: Option<PathBuf>,
    /// Most bytes of queued batches; the oldest are dropped (and counted) beyond it.
    pub max_bytes: u64,
}

impl Default for QueueConfig {
    fn default() -> QueueConfig {
        QueueConfig { dir: None, max_bytes: default_queue_max_bytes() }
    }
}

/// Parity of a serial line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    /// No parity bit (then Modbus wants two stop bits, though many devices use one).
    #[default]
    None,
    /// Even parity (the Modbus default).
    Even,
    /// Odd parity.
    Odd,
}

/// One RS-485 bus: a serial port with devices behind it by unit id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusConfig {
    /// Name devices refer to.
    pub name: String,
    /// Serial device (`/dev/ttyS1`, `/dev/ttyUSB0`).
    pub port: PathBuf,
    /// Baud rate.
    pub baud: u32,
    /// Parity.
    pub parity: Parity,
    /// Data bits (7 or 8).
    pub data_bits: u8,
    /// Stop bits (1 or 2).
    pub stop_bits: u8,
    /// Extra silence after each answer before the next request, for slow devices.
    pub turnaround: Duration,
}

impl BusConfig {
    /// Silence between frames: 3.5 character times (11 bits a character), or the fixed
    /// 1.75 ms the Modbus serial line guide sets above 19200 baud, plus the turnaround.
    pub fn frame_gap(&self) -> Duration {
        let t35 = if self.baud > 19_200 {
            Duration::from_micros(1750)
        } else {
            Duration::from_micros((3.5 * 11.0 * 1e6 / f64::from(self.baud.max(1))) as u64)
        };
        t35 + self.turnaround
    }
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
    /// Retries of a request that timed out or broke, with doubling backoff.
    pub retries: u8,
    /// Wait before the first retry.
    pub retry_backoff: Duration,
}

impl DeviceConfig {
    /// A device reached over Modbus TCP with the default timing.
    pub fn tcp(id: &str, profile: &str, addr: SocketAddr, unit: u8) -> DeviceConfig {
        DeviceConfig {
            id: id.into(),
            profile: profile.into(),
            site: None,
            interval: Duration::from_millis(default_interval_ms()),
            transport: Transport::Tcp(addr),
            unit,
            timeout: Duration::from_millis(default_timeout_ms()),
            retries: default_retries(),
            retry_backoff: Duration::from_millis(default_retry_backoff_ms()),
        }
    }
}

/// How a device is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Modbus TCP at this address (a device, or an RS-485 converter).
    Tcp(SocketAddr),
    /// Modbus RTU on the named bus.
    Rtu(String),
}

// ---- file format ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    gateway: Spanned<String>,
    tenant: Spanned<String>,
    command_key: Option<Spanned<String>>,
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
    buses: Vec<Spanned<BusSpec>>,
    #[serde(default)]
    devices: Vec<Spanned<DeviceSpec>>,
    #[serde(default)]
    rules: Vec<Spanned<rules::RuleSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MqttSpec {
    url: String,
    client_id: Option<String>,
    username: Option<String>,
    password: Option<String>,
    ca_file: Option<PathBuf>,
    ca_sha256: Option<String>,
    client_cert_file: Option<PathBuf>,
    client_key_file: Option<PathBuf>,
    #[serde(default)]
    codec: Codec,
    #[serde(default = "default_keep_alive_secs")]
    keep_alive_secs: u64,
    #[serde(default = "default_max_inflight")]
    max_inflight: u16,
    #[serde(default = "default_reconnect_max_secs")]
    reconnect_max_secs: u64,
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
    #[serde(default = "default_max_batches_per_sec")]
    max_batches_per_sec: u32,
}

impl Default for PublishSpec {
    fn default() -> PublishSpec {
        PublishSpec {
            interval_ms: default_publish_interval_ms(),
            max_readings: default_max_readings(),
            resend_after_ms: default_resend_after_ms(),
            max_batches_per_sec: default_max_batches_per_sec(),
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
struct BusSpec {
    name: String,
    port: PathBuf,
    #[serde(default = "default_baud")]
    baud: u32,
    #[serde(default)]
    parity: Parity,
    #[serde(default = "default_data_bits")]
    data_bits: u8,
    #[serde(default = "default_stop_bits")]
    stop_bits: u8,
    #[serde(default)]
    turnaround_ms: u64,
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
    bus: Option<String>,
    #[serde(default = "default_unit")]
    unit: u8,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "default_retries")]
    retries: u8,
    #[serde(default = "default_retry_backoff_ms")]
    retry_backoff_ms: u64,
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
const fn default_reconnect_max_secs() -> u64 {
    60
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
const fn default_max_batches_per_sec() -> u32 {
    20
}
const fn default_queue_max_bytes() -> u64 {
    64 * 1024 * 1024
}
const fn default_baud() -> u32 {
    9600
}
const fn default_data_bits() -> u8 {
    8
}
const fn default_stop_bits() -> u8 {
    1
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
const fn default_retries() -> u8 {
    1
}
const fn default_retry_backoff_ms() -> u64 {
    100
}

impl GatewayConfig {
    /// A config with no devices, for code that builds one (the demo, tests).
    pub fn new(gateway: &str, tenant: &str, mqtt: MqttConfig) -> GatewayConfig {
        let client_id = if mqtt.client_id.is_empty() { gateway.to_string() } else { mqtt.client_id.clone() };
        GatewayConfig {
            gateway: gateway.into(),
            tenant: tenant.into(),
            command_key: None,
            mqtt: MqttConfig { client_id, ..mqtt },
            publish: PublishConfig::default(),
            queue: QueueConfig::default(),
            profile_dirs: Vec::new(),
            health_interval: Duration::from_secs(default_health_interval_secs()),
            buses: Vec::new(),
            devices: Vec::new(),
            rules: Vec::new(),
        }
    }

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
        let command_key = spec.command_key.as_ref().and_then(|k| match parse_key(k.get_ref()) {
            Ok(key) => Some(key),
            Err(reason) => {
                problems.push(src.error(k, format!("command_key: {reason}")));
                None
            }
        });
        let mqtt = mqtt(src, &spec.mqtt, spec.gateway.get_ref(), &mut problems);
        let mut buses: Vec<BusConfig> = Vec::new();
        for b in &spec.buses {
            let bus = bus(src, b, &mut problems);
            if buses.iter().any(|x| x.name == bus.name) {
                problems.push(src.error(b, format!("bus '{}' is listed twice", bus.name)));
            }
            buses.push(bus);
        }
        let mut devices = Vec::with_capacity(spec.devices.len());
        for d in &spec.devices {
            if let Some(device) = device(src, d, library, &buses, &mut problems) {
                if devices.iter().any(|x: &DeviceConfig| x.id == device.id) {
                    problems.push(src.error(d, format!("device '{}' is listed twice", device.id)));
                }
                devices.push(device);
            }
        }
        if spec.publish.interval_ms == 0 || spec.publish.max_readings == 0 || spec.publish.max_batches_per_sec == 0 {
            problems.push(src.error_at(
                None,
                "publish.interval_ms, publish.max_readings and publish.max_batches_per_sec must be positive",
            ));
        }
        let rules: Vec<LocalRule> =
            spec.rules.iter().filter_map(|r| rules::parse(src, r, &devices, library, &mut problems)).collect();
        problems.finish(GatewayConfig {
            gateway: spec.gateway.into_inner(),
            tenant: spec.tenant.into_inner(),
            command_key,
            mqtt,
            publish: PublishConfig {
                interval: Duration::from_millis(spec.publish.interval_ms.max(1)),
                max_readings: spec.publish.max_readings.max(1),
                resend_after: Duration::from_millis(spec.publish.resend_after_ms),
                max_batches_per_sec: spec.publish.max_batches_per_sec.max(1),
            },
            queue: QueueConfig { dir: spec.queue.dir, max_bytes: spec.queue.max_bytes },
            profile_dirs: spec.profile_dirs,
            health_interval: Duration::from_secs(spec.health_interval_secs.max(1)),
            buses,
            devices,
            rules,
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
            if let Transport::Rtu(bus) = &d.transport
                && !self.buses.iter().any(|b| &b.name == bus)
            {
                problems.push(err(format!("device '{}': no bus '{bus}'", d.id)));
            }
        }
        problems.finish(())
    }

    /// The bus called `name`.
    pub fn bus(&self, name: &str) -> Option<&BusConfig> {
        self.buses.iter().find(|b| b.name == name)
    }
}

/// A 32-byte Ed25519 public key in hex.
pub fn parse_key(hex: &str) -> Result<[u8; 32], String> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return Err(format!("expected 64 hex digits (an Ed25519 public key), got {}", hex.len()));
    }
    let mut key = [0u8; 32];
    for (i, out) in key.iter_mut().enumerate() {
        *out = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| "not hexadecimal".to_string())?;
    }
    ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|_| "not a valid Ed25519 public key".to_string())?;
    Ok(key)
}

/// A SHA-256 fingerprint as `AB:CD:...` (upper case, colons), from hex with or without
/// colons; `None` if it is not 32 bytes of hex.
pub fn normalise_sha256(text: &str) -> Option<String> {
    let hex: String = text.chars().filter(|c| *c != ':' && !c.is_whitespace()).collect();
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())).then(|| {
        hex.to_ascii_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect::<Vec<_>>()
            .join(":")
    })
}

fn mqtt(src: &Source, spec: &Spanned<MqttSpec>, gateway: &str, problems: &mut Problems) -> MqttConfig {
    let m = spec.get_ref();
    let (host, port, tls) = match daemon::parse_broker_url(&m.url) {
        Ok(hp) => hp,
        Err(reason) => {
            problems.push(src.error(spec, format!("mqtt.url '{}': {reason}", m.url)));
            (String::new(), 0, false)
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
    let client_auth = match (&m.client_cert_file, &m.client_key_file) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        (None, None) => None,
        _ => {
            problems.push(src.error(spec, "mqtt.client_cert_file and mqtt.client_key_file go together"));
            None
        }
    };
    let tls_files = m.ca_file.is_some() || client_auth.is_some();
    if tls_files && !tls {
        problems.push(src.error(spec, "TLS files are set but mqtt.url is not mqtts://"));
    }
    for f in m.ca_file.iter().chain(client_auth.iter().flat_map(|(c, k)| [c, k])) {
        if tls && !f.is_file() {
            problems.push(src.error(spec, format!("TLS file '{}' does not exist", f.display())));
        }
    }
    let ca_sha256 = m.ca_sha256.as_deref().and_then(|pin| match normalise_sha256(pin) {
        Some(p) if m.ca_file.is_some() => Some(p),
        Some(_) => {
            problems.push(src.error(spec, "mqtt.ca_sha256 pins a certificate of mqtt.ca_file: set ca_file too"));
            None
        }
        None => {
            problems.push(src.error(spec, format!("mqtt.ca_sha256 '{pin}': expected 64 hex digits (colons allowed)")));
            None
        }
    });
    MqttConfig {
        host,
        port,
        client_id: m.client_id.clone().unwrap_or_else(|| gateway.to_string()),
        credentials,
        tls: tls.then(|| TlsConfig { ca_file: m.ca_file.clone(), client_auth }),
        ca_sha256,
        codec: m.codec,
        keep_alive: Duration::from_secs(m.keep_alive_secs.max(5)),
        max_inflight: m.max_inflight.max(1),
        reconnect_max: Duration::from_secs(m.reconnect_max_secs.max(1)),
    }
}

fn bus(src: &Source, spec: &Spanned<BusSpec>, problems: &mut Problems) -> BusConfig {
    let b = spec.get_ref();
    if !matches!(b.data_bits, 7 | 8) {
        problems.push(src.error(spec, format!("bus '{}': data_bits must be 7 or 8", b.name)));
    }
    if !matches!(b.stop_bits, 1 | 2) {
        problems.push(src.error(spec, format!("bus '{}': stop_bits must be 1 or 2", b.name)));
    }
    if !(300..=1_000_000).contains(&b.baud) {
        problems.push(src.error(spec, format!("bus '{}': baud {} is not a serial line speed", b.name, b.baud)));
    }
    BusConfig {
        name: b.name.clone(),
        port: b.port.clone(),
        baud: b.baud,
        parity: b.parity,
        data_bits: b.data_bits,
        stop_bits: b.stop_bits,
        turnaround: Duration::from_millis(b.turnaround_ms),
    }
}

fn device(
    src: &Source,
    spec: &Spanned<DeviceSpec>,
    library: &Library,
    buses: &[BusConfig],
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
    if !(1..=247).contains(&d.unit) {
        errors.push(src.error(spec, format!("device '{}': unit {} is not a Modbus unit id (1-247)", d.id, d.unit)));
    }
    let transport = match (&d.tcp, &d.bus) {
        (Some(addr), None) => match addr.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(a)) => Some(Transport::Tcp(a)),
            Ok(None) | Err(_) => {
                errors.push(src.error(spec, format!("device '{}': tcp '{addr}' is not host:port", d.id)));
                None
            }
        },
        (None, Some(bus)) if buses.iter().any(|b| &b.name == bus) => Some(Transport::Rtu(bus.clone())),
        (None, Some(bus)) => {
            errors.push(src.error(spec, format!("device '{}': no [[buses]] entry named '{bus}'", d.id)));
            None
        }
        _ => {
            errors.push(
                src.error(spec, format!("device '{}': needs either `tcp = \"host:port\"` or `bus = NAME`", d.id)),
            );
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
        retries: d.retries,
        retry_backoff: Duration::from_millis(d.retry_backoff_ms),
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
        assert!(cfg.devices.iter().any(|d| matches!(d.transport, Transport::Rtu(_))));
        assert!(cfg.devices.iter().any(|d| matches!(d.transport, Transport::Tcp(_))));
        assert!(!cfg.rules.is_empty());
        assert!(cfg.bus("rs485-1").is_some());
        assert!(cfg.command_key.is_some());
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

[[devices]]
id = "m-3"
profile = "m1"
bus = "rs485-9"
"#;
        let errs = GatewayConfig::from_source(&Source::from_text("gw.toml", text), &library()).unwrap_err();
        let text = errs.to_string();
        assert!(text.contains("gw.toml:7:1: device 'm-1': no profile 'nope' (known: m1)"), "{text}");
        assert!(text.contains("gw.toml:12:1: device 'm/2': id contains '/'"), "{text}");
        assert!(text.contains("interval_ms 10 is below 100"), "{text}");
        assert!(text.contains("gw.toml:18:1: device 'm-3': no [[buses]] entry named 'rs485-9'"), "{text}");
    }

    #[test]
    fn a_deliver_rule_needs_a_mailbox_and_a_signed_envelope() {
        let mut lib = library();
        lib.add(&Source::from_text(
            "s.toml",
            "model = \"spk\"\nkind = \"speaker\"\n[[points]]\nmetric = \"speaker_volume\"\naddress = 0\ntype = \"u16\"\nunit = \"%\"\n[mailbox]\naddress = 1000\nsize = 1000\n",
        ))
        .unwrap();
        let envelope = EXAMPLE.split("envelope = \"").nth(1).and_then(|s| s.split('"').next()).unwrap();
        let text = |profile: &str, env: &str| {
            format!(
                "gateway = \"g\"\ntenant = \"t\"\n[mqtt]\nurl = \"mqtt://h\"\n[[devices]]\nid = \"s\"\nprofile = \"{profile}\"\ntcp = \"127.0.0.1:502\"\n\
                 [[rules]]\nname = \"r\"\ndevice = \"s\"\nmetric = \"speaker_volume\"\nbelow = 1\ndeliver = {{ device = \"s\", envelope = \"{env}\" }}\n"
            )
        };
        let cfg = GatewayConfig::from_source(&Source::from_text("gw.toml", text("spk", envelope)), &lib).unwrap();
        assert!(matches!(&cfg.rules[0].action, crate::rules::RuleAction::Deliver { envelope: e, .. } if e[0] == 0xC5));
        let e = GatewayConfig::from_source(&Source::from_text("gw.toml", text("m1", envelope)), &lib).unwrap_err();
        assert!(e.to_string().contains("gw.toml:9:1: rule 'r': device 's' (m1) has no mailbox"), "{e}");
        let e = GatewayConfig::from_source(&Source::from_text("gw.toml", text("spk", "c5ff")), &lib).unwrap_err();
        assert!(e.to_string().contains("envelope is not the hex of a signed command"), "{e}");
    }

    #[test]
    fn a_bad_command_key_is_refused_at_its_line() {
        let text = "gateway = \"g\"\ntenant = \"t\"\ncommand_key = \"abc\"\n[mqtt]\nurl = \"mqtt://h\"\n";
        let e = GatewayConfig::from_source(&Source::from_text("gw.toml", text), &library()).unwrap_err();
        assert!(e.to_string().contains("gw.toml:3:15: command_key: expected 64 hex digits"), "{e}");
    }

    #[test]
    fn the_rtu_frame_gap_follows_the_baud_rate() {
        let mut bus = BusConfig {
            name: "b".into(),
            port: "/dev/null".into(),
            baud: 9600,
            parity: Parity::Even,
            data_bits: 8,
            stop_bits: 1,
            turnaround: Duration::ZERO,
        };
        assert_eq!(bus.frame_gap(), Duration::from_micros(4010));
        bus.baud = 115_200;
        assert_eq!(bus.frame_gap(), Duration::from_micros(1750));
        bus.turnaround = Duration::from_millis(100);
        assert_eq!(bus.frame_gap(), Duration::from_micros(101_750));
    }

    #[test]
    fn a_pinned_ca_fingerprint_is_read_normalised_and_needs_its_ca_file() {
        let pin = "ab:".repeat(31) + "ab";
        assert_eq!(normalise_sha256(&"AB".repeat(32)), Some(pin.to_uppercase()));
        assert_eq!(normalise_sha256(&pin), Some(pin.to_uppercase()));
        assert_eq!(normalise_sha256("abc"), None);
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "").unwrap();
        let text = |extra: &str| {
            format!("gateway = \"g\"\ntenant = \"t\"\n[mqtt]\nurl = \"mqtts://h\"\n{extra}ca_sha256 = \"{pin}\"\n")
        };
        let with_file = text(&format!("ca_file = \"{}\"\n", ca.display()));
        let cfg = GatewayConfig::from_source(&Source::from_text("gw.toml", with_file), &library())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.mqtt.ca_sha256, Some(pin.to_uppercase()));
        let e = GatewayConfig::from_source(&Source::from_text("gw.toml", text("")), &library()).unwrap_err();
        assert!(e.to_string().contains("mqtt.ca_sha256 pins a certificate of mqtt.ca_file"), "{e}");
    }
}
