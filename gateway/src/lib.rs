//! The edge agent for village pump houses, farm offices and broadcast rooms.
//!
//! It polls devices over Modbus as their profiles say, numbers what it read into batches,
//! keeps every batch until ingest confirms it is stored, and forwards batches over MQTT.
//! Read top-down:
//! - [`config`]: the gateway's TOML config, validated with file and line.
//! - [`profile`]: device profiles (one TOML per device model) and the built-in library.
//! - [`modbus`]: value decoding, read planning, TCP and RTU links, device reads, writes.
//! - [`poll`]: one polling task per endpoint (TCP address or RS-485 bus).
//! - [`health`]: per-device success ratio, last error, response time, online.
//! - [`queue`]: the on-disk store-and-forward queue of sealed batches until the delivery ack.
//! - [`uplink`]: MQTT (TLS): batches out, retained status, delivery acks, commands and
//!   configurations in.
//! - [`command`]: signed commands verified before they act, and their acks.
//! - [`report`]: a speaker's own verdicts from its command log, turned into acks.
//! - [`rules`]: local rules that act while the uplink is down.
//! - [`agent`]: wires it all together, and applies configurations from the config topic.
//!
//! The edge helpers it shares with ingest (the [`daemon::Clock`], reconnect backoff,
//! broker URLs, `--log-format`) live in `daemon`; the Modbus tables and word orders and
//! the speaker's command log layout, which it shares with the devices, live in `protocol`.

pub mod agent;
pub mod command;
pub mod config;
pub mod health;
pub mod identity;
pub mod modbus;
pub mod poll;
pub mod profile;
pub mod queue;
pub mod report;
pub mod rules;
pub mod trust;
pub mod uplink;

pub use agent::Gateway;
pub use config::GatewayConfig;
pub use profile::Library;

/// The gateway's software version, reported in its status.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
