//! The sink's queue and worker: batches, retries with backoff, the spill.
//!
//! Design constraints:
//! - [`Sink::accept`] is called on the pipeline's thread after the store's fsync: it only
//!   encodes the readings as line protocol and queues them, never waits for the network.
//! - One worker task per sink sends batches of at most `batch_max_readings` (or what
//!   arrived within `flush_interval`). A request that fails for a reason a retry can fix
//!   (no connection, timeout, 429, 5xx) moves its batch to the spill and the sink is
//!   "down": from then on batches go to the spill behind it, and the worker retries the
//!   oldest spilled batch after a backoff (doubling from `retry_initial` to `retry_max`)
//!   until one succeeds, then drains the spill oldest first before sending from memory
//!   again. So a series reaches the server in the order it was stored.
//! - A batch the server refuses (other 4xx: bad data, bad token) will never succeed: it is
//!   logged and counted as failed, not retried forever.
//! - Memory is bounded: beyond `memory_max_readings` queued, the oldest are spilled even
//!   while the server is up (it is slower than the input).
//! - At shutdown the worker spills whatever it still holds, so a clean restart loses
//!   nothing; a crash loses at most what was in memory (the store still has it).
//! - Spill files are written with plain (blocking) file I/O on the worker task: a batch
//!   of a few hundred KB and one fdatasync, only while the server is down or slower than
//!   the input; the pipeline never waits for it.
//! - Delivery states are counted: `queued` (memory), `spilled` (disk) as gauges; `written`
//!   and `failed` as counters, all in readings, labelled with the sink's name.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use influxdb2::RequestError;
use influxdb2::api::write::TimestampPrecision;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use protocol::{Quality, Reading};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::InfluxDbConfig;
use super::spill::Spill;
use crate::codec::line_protocol::{push_float, push_measurement, push_tag};
use crate::metrics::Metrics;
use crate::sinks::Sink;

/// Label of a sink's metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct SinkLabel {
    /// The sink's configured name.
    pub(super) sink: String,
}

/// The InfluxDB sinks' metrics (registered once, labelled per sink).
#[derive(Clone, Default)]
pub struct SinkMetrics {
    queued: Family<SinkLabel, Gauge>,
    spilled: Family<SinkLabel, Gauge>,
    written: Family<SinkLabel, Counter>,
    failed: Family<SinkLabel, Counter>,
    retries: Family<SinkLabel, Counter>,
}

impl SinkMetrics {
    /// Registers the families under ingest's prefix.
    pub fn register(metrics: &Metrics) -> SinkMetrics {
        let m = SinkMetrics::default();
        metrics.register("influxdb_queued_readings", "Readings in memory waiting for InfluxDB", m.queued.clone());
        metrics.register(
            "influxdb_spilled_readings",
            "Readings on disk waiting for InfluxDB to come back",
            m.spilled.clone(),
        );
        metrics.register("influxdb_written_readings", "Readings InfluxDB accepted", m.written.clone());
        metrics.register(
            "influxdb_failed_readings",
            "Readings InfluxDB refused, or dropped from a full spill",
            m.failed.clone(),
        );
        metrics.register("influxdb_retries", "Failed InfluxDB requests that will be retried", m.retries.clone());
        m
    }

    fn handles(&self, name: &str) -> Handles {
        let l = SinkLabel { sink: name.to_string() };
        Handles {
            queued: self.queued.get_or_create(&l).clone(),
            spilled: self.spilled.get_or_create(&l).clone(),
            written: self.written.get_or_create(&l).clone(),
            failed: self.failed.get_or_create(&l).clone(),
            retries: self.retries.get_or_create(&l).clone(),
        }
    }
}

#[derive(Clone)]
struct Handles {
    queued: Gauge,
    spilled: Gauge,
    written: Counter,
    failed: Counter,
    retries: Counter,
}

/// Readings encoded as line protocol, as one `accept` call handed them over.
struct Chunk {
    text: String,
    readings: u64,
}

/// The sink as the pipeline sees it.
pub struct InfluxDbSink {
    tx: mpsc::UnboundedSender<Chunk>,
    h: Handles,
}

/// Appends one reading as a line (see the module docs of `super` for the mapping).
pub fn encode_reading(out: &mut String, tenant: &str, r: &Reading) {
    push_measurement(out, r.metric.name());
    out.push_str(",device=");
    push_tag(out, r.device.as_str());
    out.push_str(",tenant=");
    push_tag(out, tenant);
    out.push_str(" value=");
    push_float(out, r.value);
    if r.quality != Quality::Good {
        let _ = write!(out, ",quality={}i", r.quality.code());
    }
    let _ = writeln!(out, " {}", r.ts.0);
}

impl Sink for InfluxDbSink {
    fn name(&self) -> &'static str {
        "influxdb"
    }

    fn accept(&self, tenant: &str, readings: &[Reading]) {
        if readings.is_empty() {
            return;
        }
        let mut text = String::with_capacity(readings.len() * 72);
        for r in readings {
            encode_reading(&mut text, tenant, r);
        }
        let n = readings.len() as u64;
        self.h.queued.inc_by(n as i64);
        if self.tx.send(Chunk { text, readings: n }).is_err() {
            // The worker has stopped (shutdown): nothing can take them any more.
            self.h.queued.dec_by(n as i64);
            self.h.failed.inc_by(n);
        }
    }
}

/// Why a request failed.
enum SendError {
    /// No connection, timeout, 429, 5xx: try again later.
    Retryable(String),
    /// The server refused the data itself: retrying cannot help.
    Refused(String),
}

impl InfluxDbSink {
    /// Opens the spill and starts the worker on the current tokio runtime.
    pub fn start(
        cfg: InfluxDbConfig,
        metrics: SinkMetrics,
        shutdown: CancellationToken,
    ) -> Result<(InfluxDbSink, JoinHandle<()>), crate::sinks::influxdb::config::StartError> {
        let spill = Spill::open(&cfg.spill_dir, cfg.spill_max_bytes).map_err(|source| {
            super::config::StartError::Spill { sink: cfg.name.clone(), dir: cfg.spill_dir.clone(), source }
        })?;
        let client = influxdb2::ClientBuilder::new(cfg.url.clone(), cfg.org.clone(), cfg.token.clone())
            .build()
            .map_err(|e| super::config::StartError::Client { sink: cfg.name.clone(), reason: e.to_string() })?;
        let h = metrics.handles(&cfg.name);
        h.spilled.set(spill.readings() as i64);
        if !spill.is_empty() {
            tracing::info!(
                message = "InfluxDB sink has spilled batches from an earlier run; draining them first.",
                sink = %cfg.name,
                readings = spill.readings()
            );
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let backoff = cfg.retry_initial;
        let worker = Worker {
            cfg,
            client,
            spill,
            pending: VecDeque::new(),
            pending_readings: 0,
            h: h.clone(),
            backoff,
            retry_at: Some(Instant::now()),
            flush_at: None,
        };
        let task = tokio::spawn(worker.run(rx, shutdown));
        Ok((InfluxDbSink { tx, h }, task))
    }
}

struct Worker {
    cfg: InfluxDbConfig,
    client: influxdb2::Client,
    spill: Spill,
    pending: VecDeque<Chunk>,
    pending_readings: u64,
    h: Handles,
    backoff: Duration,
    /// When to retry the oldest spilled batch.
    retry_at: Option<Instant>,
    /// When to send a partial batch.
    flush_at: Option<Instant>,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Chunk>, shutdown: CancellationToken) {
        loop {
            let retry = if self.spill.is_empty() { None } else { self.retry_at };
            let deadline = match (self.flush_at, retry) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    while let Ok(c) = rx.try_recv() {
                        self.push(c);
                    }
                    self.spill_all("shutdown");
                    return;
                }
                c = rx.recv() => match c {
                    Some(c) => self.push(c),
                    None => {
                        self.spill_all("shutdown");
                        return;
                    }
                },
                _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => {}
            }
            self.absorb(&mut rx);
            if !self.spill.is_empty() && self.retry_at.is_none_or(|t| t <= Instant::now()) {
                self.drain_spill(&mut rx).await;
            }
            self.flush().await;
        }
    }

    /// Takes a chunk into memory, spilling the oldest beyond the memory limit.
    fn push(&mut self, c: Chunk) {
        if self.pending.is_empty() {
            self.flush_at = Some(Instant::now() + self.cfg.flush_interval);
        }
        self.pending_readings += c.readings;
        self.pending.push_back(c);
        while self.pending_readings > self.cfg.memory_max_readings as u64 {
            let (body, n) = self.take_batch();
            self.spill_batch(body, n, "memory full");
        }
    }

    /// Takes everything already waiting in the channel.
    fn absorb(&mut self, rx: &mut mpsc::UnboundedReceiver<Chunk>) {
        while let Ok(c) = rx.try_recv() {
            self.push(c);
        }
    }

    /// The oldest chunks, up to a batch.
    fn take_batch(&mut self) -> (Bytes, u64) {
        let mut text = String::new();
        let mut n = 0u64;
        while let Some(c) = self.pending.front() {
            if n > 0 && n + c.readings > self.cfg.batch_max_readings as u64 {
                break;
            }
            let Some(c) = self.pending.pop_front() else { break };
            if text.is_empty() {
                text = c.text;
            } else {
                text.push_str(&c.text);
            }
            n += c.readings;
        }
        self.pending_readings -= n;
        self.h.queued.dec_by(n as i64);
        self.flush_at = if self.pending.is_empty() { None } else { Some(Instant::now() + self.cfg.flush_interval) };
        (Bytes::from(text), n)
    }

    /// Sends full batches, and a partial one once its flush time has come.
    async fn flush(&mut self) {
        loop {
            let due = self.flush_at.is_some_and(|t| t <= Instant::now());
            if self.pending.is_empty() || !(self.pending_readings >= self.cfg.batch_max_readings as u64 || due) {
                return;
            }
            let (body, n) = self.take_batch();
            if !self.spill.is_empty() {
                // Down: keep the order behind what is already spilled.
                self.spill_batch(body, n, "server down");
                continue;
            }
            match self.send(body.clone()).await {
                Ok(()) => {
                    self.h.written.inc_by(n);
                }
                Err(SendError::Retryable(reason)) => {
                    self.h.retries.inc();
                    tracing::warn!(
                        message = "InfluxDB write failed; spilling to disk and retrying.",
                        sink = %self.cfg.name,
                        %reason,
                        retry_in_ms = self.backoff.as_millis() as u64
                    );
                    self.retry_at = Some(Instant::now() + self.backoff);
                    self.spill_batch(body, n, "server down");
                }
                Err(SendError::Refused(reason)) => {
                    self.h.failed.inc_by(n);
                    tracing::error!(message = "InfluxDB refused a batch; dropping it.", sink = %self.cfg.name, readings = n, %reason);
                }
            }
        }
    }

    /// Resends spilled batches oldest first until one fails or none is left.
    async fn drain_spill(&mut self, rx: &mut mpsc::UnboundedReceiver<Chunk>) {
        let mut drained = 0u64;
        while let Some((file, body)) = self.spill.front() {
            let readings = file.readings;
            let body = match body {
                Ok(b) => b,
                Err(error) => {
                    tracing::error!(message = "Cannot read a spill file; dropping it.", %error, file = %file.path.display());
                    self.spill.pop_front();
                    self.h.failed.inc_by(readings);
                    continue;
                }
            };
            match self.send(Bytes::from(body)).await {
                Ok(()) => {
                    self.spill.pop_front();
                    self.h.written.inc_by(readings);
                    drained += readings;
                    self.backoff = self.cfg.retry_initial;
                }
                Err(SendError::Refused(reason)) => {
                    self.spill.pop_front();
                    self.h.failed.inc_by(readings);
                    tracing::error!(message = "InfluxDB refused a spilled batch; dropping it.", sink = %self.cfg.name, readings, %reason);
                }
                Err(SendError::Retryable(reason)) => {
                    self.h.retries.inc();
                    self.backoff = (self.backoff * 2).min(self.cfg.retry_max);
                    self.retry_at = Some(Instant::now() + self.backoff);
                    tracing::debug!(message = "InfluxDB still unreachable.", sink = %self.cfg.name, %reason, retry_in_ms = self.backoff.as_millis() as u64);
                    break;
                }
            }
            self.h.spilled.set(self.spill.readings() as i64);
            // Keep taking input while draining a long spill, so memory stays bounded.
            self.absorb(rx);
        }
        self.h.spilled.set(self.spill.readings() as i64);
        if drained > 0 && self.spill.is_empty() {
            tracing::info!(message = "InfluxDB is back; spill drained.", sink = %self.cfg.name, readings = drained);
        }
    }

    fn spill_batch(&mut self, body: Bytes, n: u64, why: &'static str) {
        match self.spill.push(&body, n) {
            Ok(dropped) => {
                if dropped > 0 {
                    self.h.failed.inc_by(dropped);
                    tracing::warn!(message = "InfluxDB spill is full; dropped its oldest batches.", sink = %self.cfg.name, readings = dropped);
                }
            }
            Err(error) => {
                self.h.failed.inc_by(n);
                tracing::error!(message = "Cannot write to the InfluxDB spill; dropping a batch.", sink = %self.cfg.name, %error, readings = n, why);
            }
        }
        self.h.spilled.set(self.spill.readings() as i64);
    }

    fn spill_all(&mut self, why: &'static str) {
        while !self.pending.is_empty() {
            let (body, n) = self.take_batch();
            self.spill_batch(body, n, why);
        }
    }

    async fn send(&self, body: Bytes) -> Result<(), SendError> {
        let write = self.client.write_line_protocol_with_precision(
            &self.cfg.org,
            &self.cfg.bucket,
            body,
            TimestampPrecision::Milliseconds,
        );
        match tokio::time::timeout(self.cfg.request_timeout, write).await {
            Err(_) => Err(SendError::Retryable(format!("no answer within {:?}", self.cfg.request_timeout))),
            Ok(Ok(())) => Ok(()),
            Ok(Err(RequestError::Http { status, text })) => {
                let reason = format!("{status}: {text}");
                if status.as_u16() == 429 || status.is_server_error() {
                    Err(SendError::Retryable(reason))
                } else {
                    Err(SendError::Refused(reason))
                }
            }
            Ok(Err(e)) => Err(SendError::Retryable(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use protocol::{Metric, Timestamp};

    use super::*;
    use crate::codec::line_protocol::{FieldValue, LineBuf, parse_line};

    #[test]
    fn a_reading_becomes_one_line_that_parses_back() {
        let mut out = String::new();
        let r = Reading::new("dongcun-meter-001", Metric::new("pressure"), Timestamp(1_700_000_000_123), 0.31);
        encode_reading(&mut out, "county", &r);
        assert_eq!(out, "pressure,device=dongcun-meter-001,tenant=county value=0.31 1700000000123\n");
        let bad = Reading { quality: Quality::Bad, ..r };
        out.clear();
        encode_reading(&mut out, "county", &bad);
        let mut buf = LineBuf::default();
        assert!(parse_line(out.trim_end(), &mut buf).unwrap());
        assert_eq!(buf.fields, vec![("value".into(), FieldValue::Float(0.31)), ("quality".into(), FieldValue::Int(2))]);
    }
}
