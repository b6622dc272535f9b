//! The embedded time-series store: what ingest keeps readings in by default.
//!
//! Readings arrive in a write-ahead log (`wal`, made durable by group commit in `commit`)
//! and an in-memory head (`head`). A checkpoint seals the head into compressed blocks
//! (`block`: pco with delta-of-delta timestamps) in one redb database (`disk`), one block
//! per series and time partition, recomputes that partition's 1-minute and 1-hour roll-ups
//! (`rollup`), and then deletes the log segments it covered. Retention drops whole partitions per metric family. The
//! on-disk format is in `docs/STORE.md`.
//!
//! Design constraints:
//! - Nothing acknowledged is ever lost: [`Store::append_batches`] returns only after the
//!   batches are durable (written and fdatasynced to the log). Ingest acks the MQTT message
//!   and sends the gateway its delivery ack only after that.
//! - Exactly-once effect: a batch's `(gateway, seq)` is in the same log record as its
//!   readings and, after a checkpoint, in the same database commit as its blocks. A batch at
//!   or below the gateway's stored seq is a duplicate and is not stored again, also when
//!   the log is replayed.
//! - A torn write at the end of the log (power cut, `kill -9` mid-append) is detected by
//!   length and CRC, reported in [`OpenReport`] and a warning, and cut off; it never stops
//!   the store from opening.
//! - Group commit: callers pass every batch they have at hand, and one fsync covers them;
//!   calls from several threads at once share fsyncs too (`commit`).
//! - One point per `(series, timestamp)`: writing a timestamp again replaces the value (the
//!   later write wins) and is counted once in roll-ups.
//! - Open time is bounded by `checkpoint_points`: only the log after the last checkpoint
//!   is replayed, never the whole history.
//! - Queries read the head first and the database second, so a checkpoint committing in
//!   between can show a point twice (merged away by timestamp) but never lose one.
//! - The log's file I/O goes through [`fs::Fs`]: the real file system ([`Store::open`]) or
//!   one given to [`Store::open_on`], such as [`fs::SimFs`], on which tests cut the power
//!   at every step and check that every acknowledged batch survived
//!   (`store/tests/power_cut.rs`). The database file is always on the real file system.

use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;

use protocol::{Batch, Metric, Quality, Reading, Timestamp};

mod block;
mod commit;
mod config;
mod disk;
mod error;
mod head;
mod rollup;
mod varint;
mod wal;

pub use config::{FsyncPolicy, Retention, StoreConfig, default_retention};
pub use disk::{CheckpointReport, RetentionReport};
pub use error::StoreError;
/// The file systems the write-ahead log can run on (see [`Store::open_on`]).
pub use frames::fs;
pub use rollup::{DAY_MS, HOUR_MS, MINUTE_MS, Resolution};

use block::Points;
use head::Head;
use rollup::Folder;

/// What [`Store::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Log records replayed (those after the last checkpoint).
    pub records: u64,
    /// Bytes of torn or corrupt log tails that were cut off (0 after a clean shutdown).
    pub torn_bytes: u64,
    /// Log segments replayed.
    pub wal_segments: u64,
    /// Replayed batches skipped because their seq was already stored.
    pub duplicates: u64,
    /// Series known after opening.
    pub series: usize,
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

/// One bucket of a bucketed query: what a chart draws for one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Start of the bucket, a multiple of the step since the epoch.
    pub start: Timestamp,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean of the values.
    pub mean: f64,
    /// Points in the bucket (each timestamp once).
    pub count: u64,
    /// Value of the newest point.
    pub last: f64,
}

/// Sizes of the store, for monitoring and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of the database file (sealed blocks and roll-ups).
    pub database_bytes: u64,
    /// Bytes of the current log segment.
    pub wal_bytes: u64,
    /// Series known.
    pub series: usize,
    /// Points in the head, not yet sealed.
    pub head_points: usize,
}

/// Bytes of the sealed blocks per tier: what the data costs before the database's page
/// overhead, for the benchmark's bytes-per-reading figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockBytes {
    /// Raw point blocks.
    pub raw: u64,
    /// 1-minute roll-up blocks.
    pub minute: u64,
    /// 1-hour roll-up blocks.
    pub hour: u64,
}

/// The embedded store. Share it behind an `Arc`; every method takes `&self`.
pub struct Store {
    shared: Arc<Shared>,
    sealer: Option<JoinHandle<()>>,
}

struct Shared {
    config: StoreConfig,
    /// The log and the seqs written to it; its lock orders the log.
    writer: Mutex<Writer>,
    /// Group commit: durability and log-ordered application to the head.
    commit: commit::Commit,
    head: RwLock<Head>,
    disk: disk::Disk,
    /// One checkpoint or retention run at a time.
    maintenance: Mutex<()>,
    sealer: Mutex<SealerState>,
    sealer_wake: Condvar,
    /// Tells appenders held back by a full head that a checkpoint finished.
    sealed: Condvar,
}

/// What the writer lock guards.
struct Writer {
    wal: wal::Wal,
    /// Each gateway's highest seq written to the log, durable or not yet: duplicates are
    /// judged against it, so two concurrent calls cannot both store one seq.
    reserved: std::collections::HashMap<String, u64>,
    /// When the log was last cut back after a failure (see [`Shared::recover_log`]).
    last_recovery: Option<std::time::Instant>,
}

/// Least time between two attempts to take appends again after a failed write: a disk that
/// is still full costs one cut and one fsync per interval, not one per caller.
const RECOVERY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Default)]
struct SealerState {
    wanted: bool,
    stop: bool,
    /// The last background checkpoint failed: do not hold appenders back for it.
    failing: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

impl Store {
    /// Opens (or creates) the store: loads the sealed state and replays the log after the
    /// last checkpoint.
    pub fn open(config: StoreConfig) -> Result<(Store, OpenReport), StoreError> {
        Store::open_on(config, fs::from_env())
    }

    /// Opens the store with its write-ahead log on `log_fs` (the database stays on the real
    /// file system): tests pass a [`fs::SimFs`] to cut the power under the log.
    pub fn open_on(config: StoreConfig, log_fs: Arc<dyn fs::Fs>) -> Result<(Store, OpenReport), StoreError> {
        config.validate().map_err(|errors| StoreError::Config(errors.join("; ")))?;
        std::fs::create_dir_all(&config.dir).map_err(StoreError::io(&config.dir))?;
        let (disk, loaded) = disk::Disk::open(&config)?;
        let mut head = Head::default();
        for (sid, info) in loaded.series {
            head.load_series(sid, info).map_err(|e| StoreError::corrupt(disk.path(), e))?;
        }
        for (g, seq) in &loaded.gateways {
            head.load_gateway(g, *seq);
        }
        for (sid, l) in loaded.latest {
            head.load_latest(sid, l);
        }
        let mut report = OpenReport::default();
        let wal_dir = config.dir.join("wal");
        let (wal, stats) = wal::Wal::open(log_fs, &wal_dir, config.fsync, loaded.wal_checkpoint, |rec| {
            if let Some((gateway, seq)) = rec.batch {
                if head.gateway_seq(gateway).is_some_and(|s| seq <= s) {
                    report.duplicates += 1;
                    return;
                }
                head.set_gateway_seq(gateway, seq);
            }
            let mut cache = None;
            for r in rec.readings {
                head.insert(r.device, &r.metric, r.ts, r.value, r.quality, &mut cache);
            }
        })?;
        report.records = stats.records;
        report.torn_bytes = stats.torn_bytes;
        report.wal_segments = stats.segments;
        report.series = head.series.len();
        if report.torn_bytes > 0 {
            tracing::warn!(
                message = "Cut a torn tail off the write-ahead log.",
                bytes = report.torn_bytes,
                dir = %wal_dir.display()
            );
        }
        let background = config.background_checkpoints;
        let reserved = head.gateways().map(|(g, s)| (g.to_string(), s)).collect();
        let commit = commit::Commit::new(wal.sync_handle(), wal.fsync_policy());
        let shared = Arc::new(Shared {
            config,
            writer: Mutex::new(Writer { wal, reserved, last_recovery: None }),
            commit,
            head: RwLock::new(head),
            disk,
            maintenance: Mutex::new(()),
            sealer: Mutex::new(SealerState::default()),
            sealer_wake: Condvar::new(),
            sealed: Condvar::new(),
        });
        let sealer = if background {
            let s = shared.clone();
            let handle = std::thread::Builder::new()
                .name("store-sealer".into())
                .spawn(move || s.run_sealer())
                .map_err(StoreError::io(&shared.config.dir))?;
            shared.wake_sealer_if_full();
            Some(handle)
        } else {
            None
        };
        Ok((Store { shared, sealer }, report))
    }

    /// Stores gateway batches durably, at most once per `(gateway, seq)`.
    ///
    /// Batches of one gateway must come in seq order; a batch at or below the gateway's
    /// stored seq (or one accepted earlier in the same call) is a duplicate. One fsync
    /// covers the whole call.
    pub fn append_batches(&self, batches: &[Batch]) -> Result<Vec<AppendOutcome>, StoreError> {
        let s = &*self.shared;
        let mut outcomes = Vec::with_capacity(batches.len());
        let ticket = {
            let mut w = lock(&s.writer);
            s.recover_log(&mut w)?;
            w.wal.begin();
            // Seqs accepted earlier in this same call count too.
            let mut pending: Vec<(&str, u64)> = Vec::new();
            for b in batches {
                let stored = pending
                    .iter()
                    .rev()
                    .find(|(g, _)| *g == b.gateway)
                    .map(|(_, s)| *s)
                    .or_else(|| w.reserved.get(&b.gateway).copied());
                if stored.is_some_and(|s| b.seq <= s) {
                    outcomes.push(AppendOutcome::Duplicate);
                } else {
                    pending.push((&b.gateway, b.seq));
                    outcomes.push(AppendOutcome::Stored { readings: b.readings.len() });
                    w.wal.push_batch(b);
                }
            }
            if pending.is_empty() {
                return Ok(outcomes);
            }
            w.wal.write()?;
            for (g, seq) in pending {
                match w.reserved.get_mut(g) {
                    Some(s) => *s = (*s).max(seq),
                    None => {
                        w.reserved.insert(g.to_string(), seq);
                    }
                }
            }
            s.commit.issue(w.wal.sync_handle())
        };
        let durable = s.commit.wait_durable(ticket);
        s.commit.apply_in_order(ticket, || {
            if durable.is_ok() {
                let mut head = write(&s.head);
                for (b, o) in batches.iter().zip(&outcomes) {
                    if let AppendOutcome::Stored { .. } = o {
                        head.set_gateway_seq(&b.gateway, b.seq);
                        insert_readings(&mut head, &b.readings);
                    }
                }
            }
        });
        durable?;
        s.after_append();
        Ok(outcomes)
    }

    /// Stores readings that come without a gateway batch (line protocol). Durable on return.
    pub fn append_readings(&self, readings: &[Reading]) -> Result<(), StoreError> {
        if readings.is_empty() {
            return Ok(());
        }
        let s = &*self.shared;
        let ticket = {
            let mut w = lock(&s.writer);
            s.recover_log(&mut w)?;
            w.wal.begin();
            w.wal.push_readings(readings);
            w.wal.write()?;
            s.commit.issue(w.wal.sync_handle())
        };
        let durable = s.commit.wait_durable(ticket);
        s.commit.apply_in_order(ticket, || {
            if durable.is_ok() {
                insert_readings(&mut write(&s.head), readings);
            }
        });
        durable?;
        s.after_append();
        Ok(())
    }

    /// How long this store keeps each tier of `family`'s data: what a writer of old data
    /// (a backfill through line protocol) checks against, since older raw points would be
    /// dropped by the next retention run.
    pub fn retention(&self, family: protocol::Family) -> Retention {
        self.shared.config.retention_for(family)
    }

    /// The highest seq of `gateway` that is durable, if any.
    pub fn gateway_seq(&self, gateway: &str) -> Option<u64> {
        read(&self.shared.head).gateway_seq(gateway)
    }

    /// The newest point of every series, ordered by device and metric.
    pub fn latest(&self) -> Vec<LatestPoint> {
        let head = read(&self.shared.head);
        let mut out: Vec<LatestPoint> = head
            .latest()
            .map(|(info, (ts, value, q))| LatestPoint {
                device: info.device.to_string(),
                metric: info.metric.clone(),
                point: Point { ts: Timestamp(ts), value, quality: Quality::from_code(q).unwrap_or(Quality::Bad) },
            })
            .collect();
        out.sort_by(|a, b| (&a.device, a.metric.name()).cmp(&(&b.device, b.metric.name())));
        out
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
        let s = &*self.shared;
        let Some((sid, family, head_points)) = s.head_points(device, metric, from.0, to.0) else {
            return Ok(Vec::new());
        };
        let txn = s.disk.reader()?;
        let sealed = s.disk.raw(&txn, sid, family, from.0, to.0)?;
        let merged = Points::merge(&sealed, &head_points);
        Ok((0..merged.len().min(limit))
            .map(|i| Point {
                ts: Timestamp(merged.ts[i]),
                value: merged.values[i],
                quality: Quality::from_code(merged.quality[i]).unwrap_or(Quality::Bad),
            })
            .collect())
    }

    /// Buckets of `step_ms` over `[from, to)` of one series: min, max, mean, count, last.
    ///
    /// Buckets are aligned to multiples of the step since the epoch; empty buckets are left
    /// out. The answer comes from the coarsest data that gives it exactly (see
    /// [`Resolution::for_query`]): 1-hour roll-ups when the step and both ends are whole
    /// hours, 1-minute roll-ups when they are whole minutes, raw points otherwise.
    pub fn range_bucketed(
        &self,
        device: &str,
        metric: &str,
        from: Timestamp,
        to: Timestamp,
        step_ms: i64,
    ) -> Result<Vec<Bucket>, StoreError> {
        if step_ms <= 0 {
            return Err(StoreError::BadQuery(format!("step_ms ({step_ms}) must be positive")));
        }
        if from > to {
            return Err(StoreError::BadQuery(format!("from ({}) is after to ({})", from.0, to.0)));
        }
        let (from, to) = (from.0, to.0);
        let s = &*self.shared;
        let Some((sid, family, head_points)) = s.head_points(device, metric, from, to) else { return Ok(Vec::new()) };
        let txn = s.disk.reader()?;
        let mut folder = Folder::new(step_ms);
        match Resolution::for_query(from, to, step_ms) {
            Resolution::Raw => {
                let sealed = s.disk.raw(&txn, sid, family, from, to)?;
                if head_points.is_empty() {
                    folder.add_points(&sealed);
                } else {
                    folder.add_points(&Points::merge(&sealed, &head_points));
                }
            }
            tier => {
                // Partitions with unsealed points: their sealed roll-ups are stale, so
                // recompute them from raw (sealed + head, one point per timestamp). In
                // between, the sealed roll-ups answer. Partition ends are whole hours, so
                // the pieces line up with the tier's buckets.
                let fresh: BTreeSet<i64> = head_points.ts.iter().map(|&t| s.disk.raw_partition_of(t)).collect();
                let mut cursor = from;
                for &part in &fresh {
                    let (lo, hi) = (part.max(from), s.disk.raw_partition_end(part).min(to));
                    if cursor < lo {
                        s.disk.rollups(&txn, tier, sid, family, cursor..lo, &mut |a| folder.add(a))?;
                    }
                    let raw = s.disk.raw(&txn, sid, family, lo, hi)?;
                    let a = head_points.ts.partition_point(|&t| t < lo);
                    let b = head_points.ts.partition_point(|&t| t < hi);
                    let mut unsealed = Points::default();
                    unsealed.extend_from(&head_points, a..b);
                    for agg in rollup::aggregate(&Points::merge(&raw, &unsealed), tier.width_ms()) {
                        folder.add(&agg);
                    }
                    cursor = hi;
                }
                if cursor < to {
                    s.disk.rollups(&txn, tier, sid, family, cursor..to, &mut |a| folder.add(a))?;
                }
            }
        }
        Ok(folder
            .finish()
            .into_iter()
            .map(|a| Bucket {
                start: Timestamp(a.start),
                min: a.min,
                max: a.max,
                mean: a.sum / a.count as f64,
                count: a.count,
                last: a.last,
            })
            .collect())
    }

    /// Why the store refuses writes, if it does: a write or fdatasync of its log failed (a
    /// full disk, an I/O error) and no later append has managed to cut the log back to what
    /// was durable yet (appends try at most once a second; see [`Shared::recover_log`]).
    /// Health checks report it, so that an operator sees a full disk as it happens.
    pub fn refuses_writes(&self) -> Option<String> {
        self.shared.commit.poisoned().map(|path| {
            format!(
                "the write-ahead log {} failed a write or fsync (disk full?): the store takes no writes until an append finds the disk writable again",
                path.display()
            )
        })
    }

    /// Seals everything appended so far into compressed blocks and deletes the log it
    /// covered. The background thread does this when the head holds `checkpoint_points`;
    /// call it to control when (tests, a clean shutdown that wants a fast next open).
    pub fn checkpoint(&self) -> Result<CheckpointReport, StoreError> {
        self.shared.checkpoint()
    }

    /// Drops every partition that ends before `now` minus its family's retention for its
    /// tier. Ingest calls it periodically with the wall clock; it takes the time as an
    /// argument so that tests need no clock. Later points for dropped raw partitions are
    /// discarded when sealed.
    pub fn enforce_retention(&self, now: Timestamp) -> Result<RetentionReport, StoreError> {
        let s = &*self.shared;
        let _one = lock(&s.maintenance);
        let report = s.disk.enforce_retention(&s.config, now.0)?;
        if !report.dropped.is_empty() {
            tracing::info!(message = "Dropped expired partitions.", partitions = report.dropped.len());
        }
        Ok(report)
    }

    /// Bytes of the sealed blocks per tier (reads every block's length: a diagnostic, not
    /// for the hot path).
    pub fn block_bytes(&self) -> Result<BlockBytes, StoreError> {
        let [raw, minute, hour] = self.shared.disk.block_bytes()?;
        Ok(BlockBytes { raw, minute, hour })
    }

    /// Shuts the store down cleanly: stops the background sealer, seals the head (so the
    /// next open replays nothing) and compacts the database file, giving the pages freed by
    /// earlier checkpoints back to the file system. Dropping the store without closing it
    /// loses nothing either: the log has everything since the last checkpoint.
    pub fn close(mut self) -> Result<(), StoreError> {
        self.stop_sealer();
        self.shared.checkpoint()?;
        let dir = self.shared.config.dir.clone();
        let shared = Arc::get_mut(&mut self.shared).ok_or_else(|| {
            StoreError::Config(format!("close of the store in {}: it is still in use", dir.display()))
        })?;
        shared.disk.compact()
    }

    fn stop_sealer(&mut self) {
        lock(&self.shared.sealer).stop = true;
        self.shared.sealer_wake.notify_all();
        self.shared.sealed.notify_all();
        if let Some(h) = self.sealer.take() {
            let _ = h.join();
        }
    }

    /// Sizes of the store's files and head.
    pub fn usage(&self) -> Usage {
        let s = &*self.shared;
        let wal_bytes = lock(&s.writer).wal.segment_bytes();
        let head = read(&s.head);
        Usage {
            database_bytes: s.disk.file_bytes(),
            wal_bytes,
            series: head.series.len(),
            head_points: head.active_points(),
        }
    }
}

fn insert_readings(head: &mut Head, readings: &[Reading]) {
    let mut cache = None;
    for r in readings {
        head.insert(r.device.as_str(), &r.metric, r.ts.0, r.value, r.quality.code(), &mut cache);
    }
}

impl Shared {
    /// Before an append: if a failed write or fdatasync poisoned the log, cut it back to
    /// what was durable and take appends again (at most once per [`RECOVERY_INTERVAL`]).
    /// Every group in flight has finished first (failed ones apply nothing), and the seqs
    /// reserved by groups that never became durable are given back, so their resends are
    /// stored rather than judged duplicates. Call under the writer lock.
    fn recover_log(&self, w: &mut Writer) -> Result<(), StoreError> {
        if w.wal.check().is_ok() {
            return Ok(());
        }
        let now = std::time::Instant::now();
        if w.last_recovery.is_some_and(|t| now.duration_since(t) < RECOVERY_INTERVAL) {
            return w.wal.check();
        }
        w.last_recovery = Some(now);
        self.commit.wait_all_applied();
        match w.wal.recover() {
            Ok(Some(cut)) => {
                w.reserved = read(&self.head).gateways().map(|(g, s)| (g.to_string(), s)).collect();
                tracing::warn!(
                    message = "The write-ahead log takes appends again after a failed write: cut back to what was durable.",
                    unacknowledged_bytes_cut = cut,
                    dir = %self.config.dir.display()
                );
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(error) => {
                tracing::warn!(message = "The write-ahead log still cannot be cut back; appends stay refused.", %error);
                Err(error)
            }
        }
    }

    /// The series id, family and head points of a series in `[from, to)`.
    fn head_points(&self, device: &str, metric: &str, from: i64, to: i64) -> Option<(u32, protocol::Family, Points)> {
        let head = read(&self.head);
        let sid = head.lookup(device, &Metric::new(metric))?;
        let family = head.series[sid as usize].family;
        Some((sid, family, head.points(sid, from, to)))
    }

    fn checkpoint(&self) -> Result<CheckpointReport, StoreError> {
        let _one = lock(&self.maintenance);
        let (segment, cut) = {
            let mut w = lock(&self.writer);
            // Groups written but not yet in the head would be in the sealed segments and
            // missing from the cut.
            self.commit.wait_all_applied();
            let mut head = write(&self.head);
            if !head.is_dirty() {
                return Ok(CheckpointReport::default());
            }
            let segment = w.wal.rotate()?;
            self.commit.set_handle(w.wal.sync_handle());
            (segment, head.begin_seal())
        };
        let result = self.disk.seal(&self.config, &cut, segment);
        write(&self.head).end_seal(&cut, result.is_ok());
        let report = result?;
        lock(&self.writer).wal.remove_upto(segment);
        if report.expired_points > 0 {
            tracing::warn!(
                message = "Discarded late points whose raw partition retention had already dropped.",
                points = report.expired_points
            );
        }
        Ok(report)
    }

    /// After an append: start a checkpoint when the head is full, and hold the caller back
    /// while the head is far over its limit (the sealer cannot keep up).
    fn after_append(&self) {
        if !self.config.background_checkpoints {
            return;
        }
        self.wake_sealer_if_full();
        let limit = self.config.checkpoint_points.saturating_mul(4);
        let mut state = lock(&self.sealer);
        while !state.stop && !state.failing && read(&self.head).active_points() >= limit {
            state = self.sealed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn wake_sealer_if_full(&self) {
        let full = {
            let head = read(&self.head);
            head.active_points() >= self.config.checkpoint_points && !head.is_sealing()
        };
        if full {
            lock(&self.sealer).wanted = true;
            self.sealer_wake.notify_one();
        }
    }

    fn run_sealer(&self) {
        loop {
            {
                let mut state = lock(&self.sealer);
                while !state.wanted && !state.stop {
                    state = self.sealer_wake.wait(state).unwrap_or_else(|e| e.into_inner());
                }
                if state.stop {
                    return;
                }
                state.wanted = false;
            }
            let result = self.checkpoint();
            if let Err(error) = &result {
                tracing::error!(message = "Checkpoint failed; the log keeps the data.", %error);
            }
            let mut state = lock(&self.sealer);
            state.failing = result.is_err();
            self.sealed.notify_all();
            drop(state);
            // Points that arrived during the checkpoint may already fill the head again.
            if result.is_ok() {
                self.wake_sealer_if_full();
            }
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.stop_sealer();
    }
}

#[cfg(test)]
mod tests;
