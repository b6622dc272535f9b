//! Ingest's configuration: one TOML file (`ingest.example.toml`, printed by
//! `ingest generate-config`), or the defaults the demo builds in code.

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
    /// Address of the HTTP API and dashboard.
    pub http: SocketAddr,
    /// The device inventory file (sites, gateways, devices); `None` when built in code.
    pub inventory: Option<PathBuf>,
    /// Limits on what is accepted.
    pub limits: Limits,
    /// API tokens.
    pub tokens: Vec<TokenConfig>,
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
    /// How old a reading may be (a gateway's queue after a long outage).
    pub max_age: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_payload_bytes: default_max_payload_bytes(),
            max_future: Duration::from_secs(default_max_future_secs()),
            max_age: Duration::from_secs(default_max_age_days() * 86_400),
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
    #[serde(default)]
    broker: BrokerSpec,
    #[serde(default)]
    limits: LimitsSpec,
    #[serde(default)]
    tokens: Vec<Spanned<TokenSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
enum BrokerSpec {
    Embedded {
        #[serde(default = "default_mqtt_listen")]
        listen: String,
    },
    External {
        url: String,
        username: Option<String>,
        password: Option<String>,
    },
}

impl Default for BrokerSpec {
    fn default() -> BrokerSpec {
        BrokerSpec::Embedded { listen: default_mqtt_listen() }
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
}

impl Default for LimitsSpec {
    fn default() -> LimitsSpec {
        LimitsSpec {
            max_payload_bytes: default_max_payload_bytes(),
            max_future_secs: default_max_future_secs(),
            max_age_days: default_max_age_days(),
        }
    }
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

impl IngestConfig {
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
        let broker = match spec.broker {
            BrokerSpec::Embedded { listen } => match listen.parse() {
                Ok(listen) => BrokerConfig::Embedded { listen },
                Err(_) => {
                    problems.push(
                        src.error_at(None, format!("broker.listen '{listen}' is not an address like 127.0.0.1:1883")),
                    );
                    BrokerConfig::Embedded { listen: SocketAddr::from(([127, 0, 0, 1], 1883)) }
                }
            },
            BrokerSpec::External { url, username, password } => {
                let (host, port) = gateway::config::parse_mqtt_url(&url).unwrap_or_else(|reason| {
                    problems.push(src.error_at(None, format!("broker.url '{url}': {reason}")));
                    (String::new(), 0)
                });
                let credentials = match (username, password) {
                    (Some(u), Some(p)) => Some((u, p)),
                    (None, None) => None,
                    _ => {
                        problems.push(src.error_at(None, "broker.username and broker.password go together"));
                        None
                    }
                };
                BrokerConfig::External { host, port, credentials }
            }
        };
        let mut tokens = Vec::new();
        for t in &spec.tokens {
            let ts = t.get_ref();
            if ts.token.len() < 16 {
                problems.push(src.error(t, "token must be at least 16 characters"));
            }
            tokens.push(TokenConfig {
                token: ts.token.clone(),
                role: ts.role,
                tenants: ts.tenants.clone(),
                name: ts.name.clone(),
            });
        }
        problems.finish(IngestConfig {
            data_dir: base.join(spec.data_dir),
            broker,
            http,
            inventory: Some(base.join(spec.inventory)),
            limits: Limits {
                max_payload_bytes: spec.limits.max_payload_bytes,
                max_future: Duration::from_secs(spec.limits.max_future_secs),
                max_age: Duration::from_secs(spec.limits.max_age_days * 86_400),
            },
            tokens,
        })
    }
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
    fn a_bad_address_and_a_short_token_are_both_reported() {
        let text = "data_dir = \"d\"\ninventory = \"i.toml\"\nhttp = \"localhost\"\n[[tokens]]\ntoken = \"short\"\nrole = \"admin\"\n";
        let e = IngestConfig::from_source(&Source::from_text("i.toml", text), Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("i.toml:3:8: http 'localhost' is not an address"), "{e}");
        assert!(e.contains("i.toml:4:1: token must be at least 16 characters"), "{e}");
    }
}
