//! Sinks: where durable readings go besides the embedded store.
//!
//! The embedded store is always on: it is what makes delivery exactly-once (the
//! `(gateway, seq)` memory lives in it). Sinks are extra destinations, each chosen by a
//! `[[sinks]]` table with a `type`, and built by a `match` in [`build`]. A sink sees a reading
//! only after the store made it durable (see [`Sink`]); the pipeline is what calls them.
//!
//! - [`influxdb`]: InfluxDB v2 write API (InfluxDB 2/3, VictoriaMetrics), through the
//!   `influxdb2` crate, with batching, retries and a disk spill.

pub mod influxdb;

use std::path::Path;
use std::sync::Arc;

use conf::{Problems, Source, Spanned};
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Something that wants every reading once it is durable: the rule engine, the InfluxDB
/// sink. Called on the pipeline's thread, so it must not block: queue and return.
pub trait Sink: Send + Sync {
    /// Name for logs.
    fn name(&self) -> &'static str;
    /// Readings of one tenant that are now durable.
    fn accept(&self, tenant: &str, readings: &[protocol::Reading]);
}

/// A configured sink.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkConfig {
    /// Line protocol to an InfluxDB v2 write API.
    Influxdb(influxdb::InfluxDbConfig),
}

/// `[[sinks]]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
pub(crate) enum SinkSpec {
    Influxdb(influxdb::config::InfluxDbSpec),
}

/// Validates every `[[sinks]]` table; relative paths are relative to `data_dir`.
pub(crate) fn from_specs(
    specs: Vec<Spanned<SinkSpec>>,
    src: &Source,
    data_dir: &Path,
    problems: &mut Problems,
) -> Vec<SinkConfig> {
    let mut out = Vec::new();
    let mut names = std::collections::HashSet::new();
    for spanned in specs {
        let at = src.error(&spanned, "");
        match spanned.into_inner() {
            SinkSpec::Influxdb(spec) => {
                let c = spec.validate(data_dir, |reason| {
                    problems.push(conf::ConfigError { reason, ..at.clone() });
                });
                if !names.insert(c.name.clone()) {
                    problems.push(conf::ConfigError {
                        reason: format!("two sinks are named '{}': give each a name", c.name),
                        ..at.clone()
                    });
                }
                out.push(SinkConfig::Influxdb(c));
            }
        }
    }
    out
}

/// Running sinks: what the pipeline and the line-protocol endpoint feed, and the tasks to
/// wait for at shutdown (they spill what they still hold).
pub struct Running {
    /// The sinks.
    pub sinks: Vec<Arc<dyn Sink>>,
    /// Their background tasks.
    pub tasks: Vec<JoinHandle<()>>,
}

/// Starts every configured sink (inside a tokio runtime).
pub fn build(
    configs: &[SinkConfig],
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Result<Running, influxdb::StartError> {
    let mut running = Running { sinks: Vec::new(), tasks: Vec::new() };
    if configs.is_empty() {
        return Ok(running);
    }
    let influx_metrics = influxdb::SinkMetrics::register(metrics);
    for c in configs {
        match c {
            SinkConfig::Influxdb(cfg) => {
                let (sink, task) =
                    influxdb::InfluxDbSink::start(cfg.clone(), influx_metrics.clone(), shutdown.child_token())?;
                running.sinks.push(Arc::new(sink));
                running.tasks.push(task);
            }
        }
    }
    Ok(running)
}
