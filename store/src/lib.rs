//! The embedded time-series store: what ingest keeps readings in by default.
//!
//! Design constraints:
//! - Nothing acknowledged is ever lost: [`Store::append_batches`] returns only after the
//!   batches are durable (written and fsynced to the write-ahead log). Ingest acks the
//!   MQTT message and sends the gateway its delivery ack only after that.
//! - Exactly-once effect: each gateway's highest stored `seq` is stored in the same log
//!   record as its readings, so after any crash the store and its de-duplication memory
//!   agree. A batch at or below that seq is reported as a duplicate and not stored again.
//! - A torn write at the end of the log (power cut mid-append) is detected by length and
//!   CRC, reported in [`OpenReport`], and cut off; it never stops the store from opening.
//! - Group commit: callers pass every batch they have at hand, and one fsync covers them.
//!
//! This version keeps the series in memory and rebuilds them from the log at open; the
//! on-disk format is in `docs/STORE.md`.

use std::path::PathBuf;
use std::sync::Mutex;

use protocol::{Batch, Metric, Quality, Reading, Timestamp};

mod memory;
mod wal;

pub use wal::FsyncPolicy;

/// Where and how the store keeps its data.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory of the store's files; created if missing.
    pub dir: PathBuf,
    /// When appends reach the disk.
    pub fsync: FsyncPolicy,
}

impl StoreConfig {
    /// A store in `dir` that fsyncs every append (the safe default).
    pub fn new(dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig { dir: dir.into(), fsync: FsyncPolicy::Always }
    }
}

/// Errors of the store. I/O errors say which file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing a store file failed.
    #[error("store file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A query asked for something that cannot be answered.
    #[error("bad query: {0}")]
    BadQuery(String),
}

/// What [`Store::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Log records replayed.
    pub records: u64,
    /// Bytes of a torn or corrupt tail that were cut off (0 after a clean shutdown).
    pub torn_bytes: u64,
}

/// What happened to one batch passed to [`Store::append_batches`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Durable now; `readings` were stored.
    Stored {
        /// How many readings the batch carried.
        readings: usize,
    },
    /// Its `(gateway, seq)` was already stored; nothing was written.
    Duplicate,
}

/// One stored value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// When it was measured.
    pub ts: Timestamp,
    /// The value, in the metric's canonical unit.
    pub value: f64,
    /// Its quality.
    pub quality: Quality,
}

/// The newest point of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct LatestPoint {
    /// The device.
    pub device: String,
    /// The metric.
    pub metric: Metric,
    /// Its newest point.
    pub point: Point,
}

/// The embedded store. Cheap to share behind an `Arc`; methods take `&self`.
pub struct Store {
    wal: Mutex<wal::Wal>,
    index: memory::Index,
}

impl Store {
    /// Opens (or creates) the store and replays its log.
    pub fn open(config: StoreConfig) -> Result<(Store, OpenReport), StoreError> {
        let index = memory::Index::default();
        let (wal, report) = wal::Wal::open(&config.dir, config.fsync, |record| index.apply(record))?;
        if report.torn_bytes > 0 {
            tracing::warn!(
                message = "Cut a torn tail off the write-ahead log.",
                bytes = report.torn_bytes,
                dir = %config.dir.display()
            );
        }
        Ok((Store { wal: Mutex::new(wal), index }, report))
    }

    /// Stores gateway batches durably, at most once per `(gateway, seq)`.
    ///
    /// Batches of one gateway must come in seq order; a batch at or below the gateway's
    /// stored seq is a duplicate. One fsync covers the whole call.
    pub fn append_batches(&self, batches: &[Batch]) -> Result<Vec<AppendOutcome>, StoreError> {
        let mut wal = self.wal.lock().unwrap_or_else(|e| e.into_inner());
        let mut outcomes = Vec::with_capacity(batches.len());
        let mut fresh = Vec::with_capacity(batches.len());
        // Seqs accepted earlier in this same call count too.
        let mut pending: Vec<(&str, u64)> = Vec::new();
        for b in batches {
            let stored = pending
                .iter()
                .rev()
                .find(|(g, _)| *g == b.gateway)
                .map(|(_, s)| *s)
                .or_else(|| self.index.gateway_seq(&b.gateway));
            if stored.is_some_and(|s| b.seq <= s) {
                outcomes.push(AppendOutcome::Duplicate);
            } else {
                pending.push((&b.gateway, b.seq));
                outcomes.push(AppendOutcome::Stored { readings: b.readings.len() });
                fresh.push(b);
            }
        }
        if fresh.is_empty() {
            return Ok(outcomes);
        }
        let records: Vec<wal::Record<'_>> = fresh.iter().map(|b| wal::Record::Batch(b)).collect();
        wal.append(&records)?;
        for r in &records {
            self.index.apply_ref(r);
        }
        Ok(outcomes)
    }

    /// Stores readings that come without a gateway batch (line protocol). Durable on return.
    pub fn append_readings(&self, readings: &[Reading]) -> Result<(), StoreError> {
        if readings.is_empty() {
            return Ok(());
        }
        let mut wal = self.wal.lock().unwrap_or_else(|e| e.into_inner());
        let record = wal::Record::Readings(readings);
        wal.append(std::slice::from_ref(&record))?;
        self.index.apply_ref(&record);
        Ok(())
    }

    /// The highest seq of `gateway` that is durable, if any.
    pub fn gateway_seq(&self, gateway: &str) -> Option<u64> {
        self.index.gateway_seq(gateway)
    }

    /// The newest point of every series.
    pub fn latest(&self) -> Vec<LatestPoint> {
        self.index.latest()
    }

    /// Points of one series with `from <= ts < to`, oldest first, at most `limit`.
    pub fn range(
        &self,
        device: &str,
        metric: &str,
        from: Timestamp,
        to: Timestamp,
        limit: usize,
    ) -> Result<Vec<Point>, StoreError> {
        if from > to {
            return Err(StoreError::BadQuery(format!("from ({}) is after to ({})", from.0, to.0)));
        }
        Ok(self.index.range(device, metric, from, to, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(gw: &str, seq: u64, ts: i64, v: f64) -> Batch {
        Batch { gateway: gw.into(), seq, readings: vec![Reading::new("dev-1", Metric::new("flow"), Timestamp(ts), v)] }
    }

    #[test]
    fn a_stored_batch_survives_reopening_and_is_not_stored_twice() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, _) = Store::open(StoreConfig::new(dir.path())).unwrap();
            let out = s.append_batches(&[batch("g", 1, 1000, 1.5), batch("g", 2, 2000, 2.5)]).unwrap();
            assert_eq!(out, vec![AppendOutcome::Stored { readings: 1 }; 2]);
        }
        let (s, report) = Store::open(StoreConfig::new(dir.path())).unwrap();
        assert_eq!(report, OpenReport { records: 2, torn_bytes: 0 });
        assert_eq!(s.gateway_seq("g"), Some(2));
        assert_eq!(s.append_batches(&[batch("g", 2, 2000, 9.9)]).unwrap(), vec![AppendOutcome::Duplicate]);
        let pts = s.range("dev-1", "flow", Timestamp(0), Timestamp(10_000), 100).unwrap();
        assert_eq!(pts.iter().map(|p| p.value).collect::<Vec<_>>(), vec![1.5, 2.5]);
    }

    #[test]
    fn duplicates_within_one_call_are_caught_too() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(StoreConfig::new(dir.path())).unwrap();
        let out = s.append_batches(&[batch("g", 5, 1, 1.0), batch("g", 5, 1, 1.0), batch("h", 5, 1, 1.0)]).unwrap();
        assert_eq!(out[1], AppendOutcome::Duplicate);
        assert_eq!(out[2], AppendOutcome::Stored { readings: 1 });
    }

    #[test]
    fn latest_is_the_newest_by_time_not_by_arrival() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(StoreConfig::new(dir.path())).unwrap();
        s.append_batches(&[batch("g", 1, 5000, 5.0), batch("g", 2, 1000, 1.0)]).unwrap();
        let latest = s.latest();
        assert_eq!(latest.len(), 1);
        assert_eq!(latest[0].point.value, 5.0);
    }
}
