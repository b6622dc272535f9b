//! The `[[sinks]]` table of type `influxdb`.
//!
//! ```toml
//! [[sinks]]
//! type = "influxdb"
//! url = "http://127.0.0.1:8086"
//! org = "county"
//! bucket = "telemetry"
//! token = "..."
//! ```
//!
//! Everything else has a default; see `ingest.example.toml` for each setting and why.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A validated InfluxDB sink configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct InfluxDbConfig {
    /// Name in logs, metrics labels and the spill directory (default `influxdb`).
    pub name: String,
    /// Base URL of the server (`http://host:8086`); `/api/v2/write` is appended.
    pub url: String,
    /// Organisation (InfluxDB 2; VictoriaMetrics ignores it).
    pub org: String,
    /// Bucket (InfluxDB 2; VictoriaMetrics ignores it).
    pub bucket: String,
    /// API token (`Authorization: Token ...`); may be empty for servers without auth.
    pub token: String,
    /// Most readings in one request.
    pub batch_max_readings: usize,
    /// A partial batch is sent after this long.
    pub flush_interval: Duration,
    /// Readings held in memory before they go to the spill directory.
    pub memory_max_readings: usize,
    /// Where batches wait on disk while the server is unreachable.
    pub spill_dir: PathBuf,
    /// Most bytes in the spill directory; beyond it the oldest batches are dropped (and
    /// counted as failed).
    pub spill_max_bytes: u64,
    /// One request's time limit.
    pub request_timeout: Duration,
    /// First wait after a failed request; doubles up to `retry_max`.
    pub retry_initial: Duration,
    /// Longest wait between retries.
    pub retry_max: Duration,
}

impl InfluxDbConfig {
    /// A sink to `url` with every other setting at its default; spill under `data_dir`.
    pub fn new(url: &str, org: &str, bucket: &str, token: &str, data_dir: &Path) -> InfluxDbConfig {
        InfluxDbConfig {
            name: default_name(),
            url: url.trim_end_matches('/').to_string(),
            org: org.into(),
            bucket: bucket.into(),
            token: token.into(),
            batch_max_readings: default_batch_max_readings(),
            flush_interval: Duration::from_millis(default_flush_interval_ms()),
            memory_max_readings: default_memory_max_readings(),
            spill_dir: data_dir.join("spill").join(default_name()),
            spill_max_bytes: default_spill_max_bytes(),
            request_timeout: Duration::from_secs(default_request_timeout_secs()),
            retry_initial: Duration::from_millis(default_retry_initial_ms()),
            retry_max: Duration::from_millis(default_retry_max_ms()),
        }
    }
}

/// The table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InfluxDbSpec {
    #[serde(default = "default_name")]
    name: String,
    url: String,
    #[serde(default)]
    org: String,
    #[serde(default)]
    bucket: String,
    #[serde(default)]
    token: String,
    #[serde(default = "default_batch_max_readings")]
    batch_max_readings: usize,
    #[serde(default = "default_flush_interval_ms")]
    flush_interval_ms: u64,
    #[serde(default = "default_memory_max_readings")]
    memory_max_readings: usize,
    spill_dir: Option<PathBuf>,
    #[serde(default = "default_spill_max_bytes")]
    spill_max_bytes: u64,
    #[serde(default = "default_request_timeout_secs")]
    request_timeout_secs: u64,
    #[serde(default = "default_retry_initial_ms")]
    retry_initial_ms: u64,
    #[serde(default = "default_retry_max_ms")]
    retry_max_ms: u64,
}

fn default_name() -> String {
    "influxdb".into()
}
const fn default_batch_max_readings() -> usize {
    5_000
}
const fn default_flush_interval_ms() -> u64 {
    1_000
}
const fn default_memory_max_readings() -> usize {
    100_000
}
const fn default_spill_max_bytes() -> u64 {
    1024 * 1024 * 1024
}
const fn default_request_timeout_secs() -> u64 {
    10
}
const fn default_retry_initial_ms() -> u64 {
    500
}
const fn default_retry_max_ms() -> u64 {
    30_000
}

impl InfluxDbSpec {
    /// Checks every setting, reporting each problem through `problem`.
    pub(crate) fn validate(self, data_dir: &Path, mut problem: impl FnMut(String)) -> InfluxDbConfig {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            problem(format!("influxdb sink '{}': url '{}' must start with http:// or https://", self.name, self.url));
        }
        if protocol::id::validate(&self.name).is_err() {
            problem(format!("influxdb sink name '{}' must be letters, digits, '_', '-' or '.'", self.name));
        }
        if self.batch_max_readings == 0 {
            problem(format!("influxdb sink '{}': batch_max_readings must be at least 1", self.name));
        }
        if self.memory_max_readings < self.batch_max_readings {
            problem(format!(
                "influxdb sink '{}': memory_max_readings ({}) must be at least batch_max_readings ({})",
                self.name, self.memory_max_readings, self.batch_max_readings
            ));
        }
        if self.flush_interval_ms == 0 || self.request_timeout_secs == 0 || self.retry_initial_ms == 0 {
            problem(format!(
                "influxdb sink '{}': flush_interval_ms, request_timeout_secs and retry_initial_ms must be positive",
                self.name
            ));
        }
        if self.retry_max_ms < self.retry_initial_ms {
            problem(format!("influxdb sink '{}': retry_max_ms must be at least retry_initial_ms", self.name));
        }
        let spill_dir = match self.spill_dir {
            Some(d) => data_dir.join(d),
            None => data_dir.join("spill").join(&self.name),
        };
        InfluxDbConfig {
            url: self.url.trim_end_matches('/').to_string(),
            org: self.org,
            bucket: self.bucket,
            token: self.token,
            batch_max_readings: self.batch_max_readings,
            flush_interval: Duration::from_millis(self.flush_interval_ms),
            memory_max_readings: self.memory_max_readings,
            spill_dir,
            spill_max_bytes: self.spill_max_bytes,
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            retry_initial: Duration::from_millis(self.retry_initial_ms),
            retry_max: Duration::from_millis(self.retry_max_ms),
            name: self.name,
        }
    }
}

/// Why a sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The spill directory cannot be opened.
    #[error("influxdb sink '{sink}': spill directory {}: {source}", dir.display())]
    Spill {
        /// The sink.
        sink: String,
        /// The directory.
        dir: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The HTTP client cannot be built.
    #[error("influxdb sink '{sink}': {reason}")]
    Client {
        /// The sink.
        sink: String,
        /// What the client said.
        reason: String,
    },
}
