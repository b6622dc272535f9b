//! The InfluxDB sink: durable readings as line protocol to an InfluxDB v2 write API
//! (`/api/v2/write`: InfluxDB 2 and 3, VictoriaMetrics), through the `influxdb2` crate.
//!
//! Mapping (docs/INFLUXDB.md): one line per reading,
//! `<metric>,device=<device>,tenant=<tenant> value=<value>[,quality=<1|2>i] <ms>`, written
//! with `precision=ms`. `quality` is there only for uncertain (1) and bad (2) readings.
//!
//! - [`config`]: the `[[sinks]]` table of type `influxdb`.
//! - [`sink`]: the queue, batching, retries and the worker task.
//! - [`spill`]: batches kept on disk while the server cannot be reached.

pub mod config;
mod sink;
mod spill;

pub use config::{InfluxDbConfig, StartError};
pub use sink::{InfluxDbSink, SinkMetrics, encode_reading};
