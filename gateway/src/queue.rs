//! The store-and-forward queue: every batch waits here, on disk, until ingest confirms it
//! is stored.
//!
//! Design constraints:
//! - A batch leaves the queue only on ingest's delivery ack (the highest seq durable in
//!   ingest's store), never on the broker's PUBACK: a broker can acknowledge and then die,
//!   and the embedded broker dies with ingest.
//! - A batch is durable before it is published: [`Queue::push`] writes it, the batcher
//!   syncs the segment ([`Queue::sync_handle`], `fdatasync`, outside the lock) and only then
//!   marks it publishable ([`Queue::mark_durable`]). So a seq that ingest has seen is never
//!   lost, and `seq` survives `kill -9` and power loss: it is recovered from the log.
//! - One `fdatasync` per sealed batch, i.e. one per publish interval, never one per
//!   reading (SD cards wear by write count). Acks and drops are appended without a sync of
//!   their own; the next batch's sync covers them. Losing one in a power cut only makes
//!   the gateway resend batches that ingest already has, which ingest recognises by seq.
//! - Unconfirmed batches are sent again after `resend_after`, and all of them, oldest
//!   first, after every reconnect. Publishing is strictly in seq order: ingest drops a seq
//!   at or below the highest it has stored, so sending a newer batch first would lose the
//!   older one.
//! - Bounded: beyond `max_bytes` of unconfirmed batches the oldest are dropped and counted,
//!   so a gateway cut off for weeks keeps the newest data rather than stopping. Disk use
//!   stays below `max_bytes` plus one segment.
//! - Small in memory: only each batch's position is kept in memory; payloads are read
//!   back from the segment files when they are (re)sent, so a full 64 MiB queue costs a
//!   few hundred kilobytes of RAM.
//!
//! On disk (`dir/`): segment files `<first-seq:020>.seg`, each a sequence of frames
//! `len:u32 LE | crc32(body):u32 LE | body`, body = `kind:u8 | ...`:
//! - kind 1, batch: `seq:u64 LE | sealed_at_ms:i64 LE | encoded batch` (the exact bytes
//!   published);
//! - kind 2, acked: `seq:u64 LE`, every batch up to `seq` is stored in ingest;
//! - kind 3, dropped: `seq:u64 LE`, every batch up to `seq` was dropped (queue full);
//! - kind 4, segment start: `next_seq:u64 LE`, the first frame of every segment, synced
//!   before anything else is written to it, so that the next seq is known even when every
//!   batch of older segments was acked and their files deleted.
//!
//! At open, segments are read oldest first; the first frame whose length runs past the
//! file or whose CRC does not match ends that segment (a torn write), and the file is cut
//! there. A segment whose batches were all acked or dropped is deleted, except the newest.
//!
//! With `dir = None` the same queue lives in memory (unit tests).
//!
//! File I/O goes through [`frames::fs::Fs`] ([`Queue::open_on`]): the real file system, or
//! in tests one that loses what was not synced at a simulated power cut, cut at every
//! file operation in turn (`every_published_batch_and_the_seq_survive_a_power_cut_at_every_step`).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::codec::{self, Codec};
use protocol::{Batch, Reading, Timestamp};

use frames::fs::{FileRef, Fs, RealFs};

use crate::config::QueueConfig;

const KIND_BATCH: u8 = 1;
const KIND_ACKED: u8 = 2;
const KIND_DROPPED: u8 = 3;
const KIND_START: u8 = 4;
use frames::HEADER;
/// A frame longer than this is corruption, not data (a batch is far smaller).
const MAX_FRAME: u32 = 64 * 1024 * 1024;
const SEGMENT_SUFFIX: &str = ".seg";

/// Why the queue could not do its job. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Reading, writing or syncing a queue file failed.
    #[error("queue file {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> QueueError + '_ {
    move |source| QueueError::Io { path: path.to_path_buf(), source }
}

/// What [`Queue::open`] found on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Unconfirmed batches recovered.
    pub batches: usize,
    /// The seq the next batch gets.
    pub next_seq: u64,
    /// Bytes of torn or corrupt frames cut off.
    pub torn_bytes: u64,
    /// Segment files read.
    pub segments: usize,
}

/// Where a batch lives.
#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    segment: u64,
    offset: u64,
    len: u32,
    sealed_at: Timestamp,
    sent_at: Option<Instant>,
    durable: bool,
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    file: FileRef,
    size: u64,
    /// Highest batch seq in this segment (0 if none).
    last_seq: u64,
}

/// Fill level and age, published as the gateway's own readings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueStats {
    /// Batches waiting.
    pub depth: usize,
    /// Bytes waiting.
    pub bytes: u64,
    /// `bytes / max_bytes`.
    pub fill: f64,
    /// Seconds since the oldest waiting batch was sealed.
    pub oldest_age_s: f64,
    /// Batches dropped because the queue was full, since start.
    pub dropped: u64,
}

/// The queue.
#[derive(Debug)]
pub struct Queue {
    gateway: String,
    codec: Codec,
    max_bytes: u64,
    segment_bytes: u64,
    dir: Option<PathBuf>,
    /// Where the segment files are (the real file system but in power-cut tests).
    fs: Arc<dyn Fs>,
    /// Segment files by the seq they start at; the last is the one appended to.
    segments: BTreeMap<u64, Segment>,
    /// In-memory payloads when there is no directory.
    memory: BTreeMap<u64, Arc<[u8]>>,
    entries: VecDeque<Entry>,
    bytes: u64,
    next_seq: u64,
    dropped: u64,
}

impl Queue {
    /// Opens (or creates) the queue in `config.dir`, recovering every unconfirmed batch and
    /// the next seq; without a directory, an empty in-memory queue whose first seq is 1.
    pub fn open(gateway: &str, codec: Codec, config: &QueueConfig) -> Result<(Queue, OpenReport), QueueError> {
        Queue::open_on(gateway, codec, config, Arc::new(RealFs))
    }

    /// [`Queue::open`] with the segment files on `fs` (tests pass a simulated file system
    /// to cut the power under the queue).
    pub fn open_on(
        gateway: &str,
        codec: Codec,
        config: &QueueConfig,
        fs: Arc<dyn Fs>,
    ) -> Result<(Queue, OpenReport), QueueError> {
        let max_bytes = config.max_bytes.max(1);
        let mut q = Queue {
            gateway: gateway.to_string(),
            codec,
            max_bytes,
            segment_bytes: (max_bytes / 8).clamp(64 * 1024, 4 * 1024 * 1024),
            dir: config.dir.clone(),
            fs,
            segments: BTreeMap::new(),
            memory: BTreeMap::new(),
            entries: VecDeque::new(),
            bytes: 0,
            next_seq: 1,
            dropped: 0,
        };
        let mut report = OpenReport { next_seq: 1, ..OpenReport::default() };
        if let Some(dir) = config.dir.clone() {
            q.recover(&dir, &mut report)?;
        }
        report.batches = q.entries.len();
        report.next_seq = q.next_seq;
        Ok((q, report))
    }

    /// An in-memory queue (tests).
    pub fn in_memory(gateway: &str, codec: Codec, max_bytes: u64) -> Queue {
        let config = QueueConfig { dir: None, max_bytes };
        // Without a directory nothing can fail.
        match Queue::open(gateway, codec, &config) {
            Ok((q, _)) => q,
            Err(e) => unreachable!("an in-memory queue does no I/O: {e}"),
        }
    }

    fn recover(&mut self, dir: &Path, report: &mut OpenReport) -> Result<(), QueueError> {
        self.fs.create_dir_all(dir).map_err(io_err(dir))?;
        let mut starts: Vec<u64> = self
            .fs
            .list(dir)
            .map_err(io_err(dir))?
            .iter()
            .filter_map(|n| n.strip_suffix(SEGMENT_SUFFIX)?.parse().ok())
            .collect();
        starts.sort_unstable();
        let mut max_seq = 0u64;
        let mut released = 0u64;
        for start in starts {
            let path = segment_path(dir, start);
            let file = self.fs.open(&path, false).map_err(io_err(&path))?;
            let bytes = file.read_all().map_err(io_err(&path))?;
            let mut pos = 0usize;
            let mut last_seq = 0u64;
            while let Some((body, next)) = frames::frame_at(&bytes, pos, MAX_FRAME) {
                let Some((&kind, rest)) = body.split_first() else { break };
                let seq = rest.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
                let Some(seq) = seq else { break };
                match kind {
                    KIND_BATCH if rest.len() >= 16 => {
                        let sealed_at = i64::from_le_bytes(rest[8..16].try_into().unwrap_or_default());
                        let payload_offset = (pos + HEADER + 17) as u64;
                        let len = u32::try_from(rest.len() - 16).unwrap_or(u32::MAX);
                        self.entries.push_back(Entry {
                            seq,
                            segment: start,
                            offset: payload_offset,
                            len,
                            sealed_at: Timestamp(sealed_at),
                            sent_at: None,
                            durable: true,
                        });
                        self.bytes += u64::from(len);
                        max_seq = max_seq.max(seq);
                        last_seq = last_seq.max(seq);
                    }
                    KIND_ACKED => released = released.max(seq),
                    KIND_DROPPED => released = released.max(seq),
                    KIND_START => max_seq = max_seq.max(seq.saturating_sub(1)),
                    _ => break,
                }
                pos = next;
            }
            let torn = (bytes.len() - pos) as u64;
            if torn > 0 {
                tracing::warn!(message = "Cut a torn tail off a queue segment.", file = %path.display(), bytes = torn);
                file.set_len(pos as u64).map_err(io_err(&path))?;
                file.sync_all().map_err(io_err(&path))?;
                report.torn_bytes += torn;
            }
            report.segments += 1;
            self.segments.insert(start, Segment { path, file, size: pos as u64, last_seq });
        }
        self.next_seq = max_seq + 1;
        self.release_up_to(released);
        self.delete_released_segments();
        Ok(())
    }

    /// Seals readings into the next batch and writes it; returns its seq. The batch is not
    /// published until [`Queue::mark_durable`] says its segment was synced.
    pub fn push(&mut self, readings: Vec<Reading>, now: Timestamp) -> Result<u64, QueueError> {
        let seq = self.next_seq;
        let batch = Batch { gateway: self.gateway.clone(), seq, readings };
        let payload = codec::encode(&batch, self.codec);
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let (segment, offset, durable) = if self.dir.is_some() {
            let mut body = Vec::with_capacity(17 + payload.len());
            body.push(KIND_BATCH);
            body.extend_from_slice(&seq.to_le_bytes());
            body.extend_from_slice(&now.0.to_le_bytes());
            body.extend_from_slice(&payload);
            let start = self.segment_for(body.len() as u64 + HEADER as u64, seq)?;
            let offset = self.append(start, &body)? + HEADER as u64 + 17;
            if let Some(s) = self.segments.get_mut(&start) {
                s.last_seq = seq;
            }
            (start, offset, false)
        } else {
            self.memory.insert(seq, payload.into());
            (0, 0, true)
        };
        self.next_seq += 1;
        self.bytes += u64::from(len);
        self.entries.push_back(Entry { seq, segment, offset, len, sealed_at: now, sent_at: None, durable });
        while self.bytes > self.max_bytes && self.entries.len() > 1 {
            let Some(old) = self.entries.front().map(|e| e.seq) else { break };
            self.release_up_to(old);
            self.dropped += 1;
            self.record(KIND_DROPPED, old);
            tracing::warn!(message = "Queue full: dropped the oldest batch.", seq = old, gateway = %self.gateway);
        }
        self.delete_released_segments();
        Ok(seq)
    }

    /// The file to `fdatasync` to make every batch pushed so far durable, or `None` when
    /// there is nothing to sync (in memory). Sync it without holding the queue's lock.
    pub fn sync_handle(&self) -> Option<(FileRef, u64)> {
        let (_, s) = self.segments.last_key_value()?;
        Some((s.file.clone(), self.next_seq.saturating_sub(1)))
    }

    /// Marks every batch up to `seq` durable (its segment was synced): it may go out now.
    pub fn mark_durable(&mut self, seq: u64) {
        for e in self.entries.iter_mut().filter(|e| e.seq <= seq) {
            e.durable = true;
        }
    }

    /// Forgets every batch up to and including `seq`: ingest has stored them.
    pub fn ack(&mut self, seq: u64) -> usize {
        let n = self.release_up_to(seq);
        if n > 0 {
            self.record(KIND_ACKED, seq);
            self.delete_released_segments();
        }
        n
    }

    /// Batches to publish now, oldest first: durable, and never sent or sent longer ago
    /// than `resend_after` without an ack. At most `limit`, and they are marked sent. A
    /// batch whose bytes cannot be read back is skipped and logged (the disk is failing).
    pub fn due(&mut self, now: Instant, resend_after: Duration, limit: usize) -> Vec<(u64, Arc<[u8]>)> {
        let mut picked = Vec::new();
        for (i, e) in self.entries.iter_mut().enumerate() {
            if picked.len() >= limit || !e.durable {
                break;
            }
            if e.sent_at.is_none_or(|t| now.duration_since(t) >= resend_after) {
                e.sent_at = Some(now);
                picked.push(i);
            }
        }
        picked.into_iter().filter_map(|i| self.payload(i).map(|p| (self.entries[i].seq, p))).collect()
    }

    /// Batches sent and not yet acked or due again: what is in flight.
    pub fn in_flight(&self, now: Instant, resend_after: Duration) -> usize {
        self.entries.iter().filter(|e| e.sent_at.is_some_and(|t| now.duration_since(t) < resend_after)).count()
    }

    /// Marks every batch unsent, so that after a reconnect they go again, in order.
    pub fn resend_all(&mut self) {
        self.entries.iter_mut().for_each(|e| e.sent_at = None);
    }

    /// The seq the next batch gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Fill level and age.
    pub fn stats(&self, now: Timestamp) -> QueueStats {
        QueueStats {
            depth: self.entries.len(),
            bytes: self.bytes,
            fill: self.bytes as f64 / self.max_bytes as f64,
            oldest_age_s: self.entries.front().map_or(0.0, |e| (now.0 - e.sealed_at.0).max(0) as f64 / 1000.0),
            dropped: self.dropped,
        }
    }

    fn payload(&self, index: usize) -> Option<Arc<[u8]>> {
        let e = &self.entries[index];
        if self.dir.is_none() {
            return self.memory.get(&e.seq).cloned();
        }
        let s = self.segments.get(&e.segment)?;
        let mut buf = vec![0u8; e.len as usize];
        match s.file.read_exact_at(&mut buf, e.offset) {
            Ok(()) => Some(buf.into()),
            Err(error) => {
                tracing::error!(message = "Cannot read a queued batch back.", seq = e.seq, file = %s.path.display(), %error);
                None
            }
        }
    }

    fn release_up_to(&mut self, seq: u64) -> usize {
        let mut n = 0;
        while self.entries.front().is_some_and(|e| e.seq <= seq) {
            if let Some(e) = self.entries.pop_front() {
                self.bytes -= u64::from(e.len);
                self.memory.remove(&e.seq);
                n += 1;
            }
        }
        n
    }

    /// Appends an ack or drop record, without a sync of its own (see the module doc).
    fn record(&mut self, kind: u8, seq: u64) {
        let Some(&start) = self.segments.keys().next_back() else { return };
        let mut body = [0u8; 9];
        body[0] = kind;
        body[1..].copy_from_slice(&seq.to_le_bytes());
        if let Err(error) = self.append(start, &body) {
            tracing::warn!(message = "Cannot record an ack in the queue; batches may be sent twice.", %error);
        }
    }

    /// The segment to append `len` bytes to, rolling to a new one when the active one is full.
    fn segment_for(&mut self, len: u64, seq: u64) -> Result<u64, QueueError> {
        if let Some((&start, s)) = self.segments.last_key_value()
            && (s.size + len <= self.segment_bytes || s.last_seq == 0)
        {
            return Ok(start);
        }
        self.roll(seq)
    }

    /// Starts segment `seq`: syncs the old one, writes and syncs the start frame, syncs the
    /// directory so the new file's name is durable too.
    fn roll(&mut self, seq: u64) -> Result<u64, QueueError> {
        let Some(dir) = self.dir.clone() else { return Ok(0) };
        if let Some((_, old)) = self.segments.last_key_value() {
            old.file.sync_data().map_err(io_err(&old.path))?;
        }
        let path = segment_path(&dir, seq);
        let file = self.fs.open(&path, true).map_err(io_err(&path))?;
        self.segments.insert(seq, Segment { path: path.clone(), file, size: 0, last_seq: 0 });
        let mut body = [0u8; 9];
        body[0] = KIND_START;
        body[1..].copy_from_slice(&seq.to_le_bytes());
        self.append(seq, &body)?;
        if let Some(s) = self.segments.get(&seq) {
            s.file.sync_data().map_err(io_err(&path))?;
        }
        self.fs.sync_dir(&dir).map_err(io_err(&dir))?;
        Ok(seq)
    }

    /// Writes one frame; returns the offset it starts at.
    fn append(&mut self, start: u64, body: &[u8]) -> Result<u64, QueueError> {
        let Some(s) = self.segments.get_mut(&start) else { return Ok(0) };
        let mut frame = Vec::with_capacity(HEADER + body.len());
        frames::append(&mut frame, body);
        let offset = s.size;
        s.file.append(&frame).map_err(io_err(&s.path))?;
        s.size += frame.len() as u64;
        Ok(offset)
    }

    /// Deletes segments (never the newest) that hold no unconfirmed batch.
    fn delete_released_segments(&mut self) {
        let oldest_live = self.entries.front().map(|e| e.segment);
        let newest = self.segments.keys().next_back().copied();
        let doomed: Vec<u64> = self
            .segments
            .keys()
            .copied()
            .filter(|s| Some(*s) != newest && oldest_live.is_none_or(|live| *s < live))
            .collect();
        for start in doomed {
            if let Some(s) = self.segments.remove(&start)
                && let Err(error) = self.fs.remove_file(&s.path)
            {
                tracing::warn!(message = "Cannot delete a confirmed queue segment.", file = %s.path.display(), %error);
            }
        }
    }
}

fn segment_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("{start:020}{SEGMENT_SUFFIX}"))
}

#[cfg(test)]
mod tests {
    use protocol::Metric;

    use super::*;

    fn readings(n: usize) -> Vec<Reading> {
        (0..n).map(|i| Reading::new("d", Metric::new("flow"), Timestamp(i as i64), 1.0)).collect()
    }

    fn on_disk(dir: &Path, max_bytes: u64) -> Queue {
        let cfg = QueueConfig { dir: Some(dir.to_path_buf()), max_bytes };
        Queue::open("gw", Codec::Json, &cfg).unwrap().0
    }

    fn push_durable(q: &mut Queue, n: usize) -> u64 {
        let seq = q.push(readings(n), Timestamp(0)).unwrap();
        if let Some((f, upto)) = q.sync_handle() {
            f.sync_data().unwrap();
            q.mark_durable(upto);
        }
        seq
    }

    fn seqs(q: &mut Queue) -> Vec<u64> {
        q.resend_all();
        q.due(Instant::now(), Duration::from_secs(60), usize::MAX).into_iter().map(|(s, _)| s).collect()
    }

    #[test]
    fn batches_leave_only_on_the_delivery_ack() {
        let mut q = Queue::in_memory("gw", Codec::Json, 1 << 20);
        let t = Instant::now();
        assert_eq!(push_durable(&mut q, 2), 1);
        assert_eq!(push_durable(&mut q, 2), 2);
        assert_eq!(q.due(t, Duration::from_secs(10), 10).len(), 2);
        assert_eq!(q.due(t, Duration::from_secs(10), 10).len(), 0, "sent, not yet due again");
        assert_eq!(q.ack(1), 1);
        assert_eq!(q.stats(Timestamp(0)).depth, 1);
        let again = q.due(t + Duration::from_secs(11), Duration::from_secs(10), 10);
        assert_eq!(again.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![2], "unconfirmed batches are resent");
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_them() {
        let mut q = Queue::in_memory("gw", Codec::Json, 1);
        for _ in 0..3 {
            push_durable(&mut q, 1);
        }
        let s = q.stats(Timestamp(5000));
        assert_eq!((s.depth, s.dropped), (1, 2));
        assert_eq!(s.oldest_age_s, 5.0);
        assert_eq!(q.due(Instant::now(), Duration::ZERO, 10)[0].0, 3, "the newest is kept");
    }

    #[test]
    fn a_batch_is_not_published_before_its_segment_is_synced() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = on_disk(dir.path(), 1 << 20);
        let seq = q.push(readings(1), Timestamp(0)).unwrap();
        assert!(q.due(Instant::now(), Duration::ZERO, 10).is_empty());
        let (f, upto) = q.sync_handle().unwrap();
        f.sync_data().unwrap();
        q.mark_durable(upto);
        assert_eq!(q.due(Instant::now(), Duration::ZERO, 10)[0].0, seq);
    }

    #[test]
    fn unconfirmed_batches_and_the_seq_survive_a_restart_in_order_with_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = on_disk(dir.path(), 1 << 20);
        for _ in 0..5 {
            push_durable(&mut q, 3);
        }
        let before: Vec<(u64, Arc<[u8]>)> = {
            q.resend_all();
            q.due(Instant::now(), Duration::ZERO, 10)
        };
        q.ack(2);
        drop(q);
        let cfg = QueueConfig { dir: Some(dir.path().to_path_buf()), max_bytes: 1 << 20 };
        let (mut q, report) = Queue::open("gw", Codec::Json, &cfg).unwrap();
        assert_eq!((report.batches, report.next_seq), (3, 6));
        let after = q.due(Instant::now(), Duration::ZERO, 10);
        assert_eq!(after.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(after[0].1, before[2].1, "a resent batch is the same bytes");
        assert_eq!(push_durable(&mut q, 1), 6);
    }

    #[test]
    fn the_seq_survives_even_when_every_batch_was_acked_and_segments_deleted() {
        let dir = tempfile::tempdir().unwrap();
        // Small segments so that the log rolls several times.
        let mut q = on_disk(dir.path(), 64 * 1024);
        for _ in 0..400 {
            let seq = push_durable(&mut q, 20);
            q.ack(seq);
        }
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 1, "confirmed segments are deleted");
        drop(q);
        let mut q = on_disk(dir.path(), 64 * 1024);
        assert_eq!(q.stats(Timestamp(0)).depth, 0);
        assert_eq!(push_durable(&mut q, 1), 401);
    }

    #[test]
    fn a_torn_write_at_any_byte_loses_at_most_the_batch_being_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = on_disk(dir.path(), 1 << 20);
        for _ in 0..3 {
            push_durable(&mut q, 2);
        }
        drop(q);
        let seg = std::fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
        let full = std::fs::read(&seg).unwrap();
        // Find where the third batch frame starts by reopening a copy cut at every length.
        for cut in (full.len() - 60)..full.len() {
            let d2 = tempfile::tempdir().unwrap();
            std::fs::write(d2.path().join(seg.file_name().unwrap()), &full[..cut]).unwrap();
            let mut q = on_disk(d2.path(), 1 << 20);
            let s = seqs(&mut q);
            assert!(s == vec![1, 2] || s == vec![1, 2, 3], "cut at {cut}: {s:?}");
            let next = push_durable(&mut q, 1);
            assert_eq!(next, s.len() as u64 + 1, "cut at {cut}: the seq continues after what survived");
            drop(q);
            let mut q = on_disk(d2.path(), 1 << 20);
            assert_eq!(seqs(&mut q).last(), Some(&next), "cut at {cut}: the log keeps working");
        }
    }

    #[test]
    fn disk_use_stays_bounded_when_the_link_is_down_for_long() {
        let dir = tempfile::tempdir().unwrap();
        let max = 256 * 1024;
        let mut q = on_disk(dir.path(), max);
        for _ in 0..2000 {
            push_durable(&mut q, 20);
        }
        let s = q.stats(Timestamp(0));
        assert!(s.bytes <= max && s.dropped > 0, "{s:?}");
        let used: u64 = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
        assert!(used <= max + q.segment_bytes + 4096, "{used} bytes on disk for a {max}-byte queue");
        drop(q);
        let mut q = on_disk(dir.path(), max);
        let s = seqs(&mut q);
        assert_eq!(s.last(), Some(&2000));
        assert!(s.windows(2).all(|w| w[1] == w[0] + 1), "what is kept is the newest, in order, without holes");
    }

    /// Batch `seq` of the power-cut test: its readings are a function of `seq`.
    fn readings_of(seq: u64) -> Vec<Reading> {
        (0..1 + seq % 4)
            .map(|i| Reading::new("d", Metric::new("flow"), Timestamp((seq * 100 + i) as i64), seq as f64))
            .collect()
    }

    /// What the power-cut scenario did before the power went.
    #[derive(Debug, Default)]
    struct Done {
        /// Highest seq marked durable: it may have been published, so ingest may have it.
        published: u64,
        /// Highest seq acked by ingest.
        acked: u64,
    }

    /// The batcher's and the uplink's calls, as `agent.rs` makes them: push, sync the
    /// segment through `sync_handle`, mark durable (publishable), ack what ingest stored.
    fn power_cut_scenario(fs: &frames::fs::SimFs, cfg: &QueueConfig) -> Done {
        let mut done = Done::default();
        let alive = |r: bool| {
            assert!(r || fs.is_dead(), "an operation failed with the power on");
            r && !fs.is_dead()
        };
        let Ok((mut q, _)) = Queue::open_on("gw", Codec::Json, cfg, Arc::new(fs.clone())) else {
            assert!(fs.is_dead(), "open failed with the power on");
            return done;
        };
        // Small segments: the log rolls, and confirmed segments are deleted, often.
        q.segment_bytes = 700;
        for seq in 1..=14u64 {
            if !alive(q.push(readings_of(seq), Timestamp(seq as i64)).is_ok()) {
                break;
            }
            if seq % 3 != 1 {
                let Some((file, upto)) = q.sync_handle() else { break };
                if !alive(file.sync_data().is_ok()) {
                    break;
                }
                q.mark_durable(upto);
                done.published = upto;
            }
            if seq % 4 == 0 {
                q.ack(done.published - 1);
                done.acked = done.published - 1;
                // An ack record is written without a sync and its failure only logged.
                if !alive(true) {
                    break;
                }
            }
        }
        done
    }

    /// A power cut at every file operation of a run of pushes, syncs and acks, with the
    /// unsynced bytes lost, half kept, kept or zeroed: every batch that was marked durable
    /// (so possibly published) and not acked is recovered with its exact bytes, the next
    /// seq is above every seq that may have been published (ingest would drop a reused one
    /// as a duplicate), and the recovered seqs are in order without holes.
    ///
    /// Tried on 2026-12-03: without the `sync_data` of the handle before `mark_durable` the
    /// test fails ("published up to 2, recovered []"); without the directory sync in `roll`
    /// it fails too (a new segment's name is lost with the batches in it). Without the sync
    /// of a new segment's start frame it still passes: the first batch's sync, which always
    /// follows a roll, covers that frame.
    #[test]
    fn every_published_batch_and_the_seq_survive_a_power_cut_at_every_step() {
        use frames::fs::{SimFs, Tear};
        let cfg = QueueConfig { dir: Some(PathBuf::from("/queue")), max_bytes: 1 << 20 };
        let fs = SimFs::new();
        let done = power_cut_scenario(&fs, &cfg);
        assert_eq!((done.published, done.acked), (14, 11), "without a cut the scenario runs to its end");
        let ops = fs.ops();
        let mut rolled = false;
        for cut in 0..=ops {
            for tear in Tear::ALL {
                let fs = SimFs::new();
                fs.cut_at_op(cut);
                let done = power_cut_scenario(&fs, &cfg);
                let after = fs.power_cut(tear);
                let what = format!("cut at op {cut} of {ops}, {tear:?}");
                let (mut q, report) = Queue::open_on("gw", Codec::Json, &cfg, Arc::new(after.clone()))
                    .unwrap_or_else(|e| panic!("{what}: the queue refused to open: {e}"));
                rolled |= report.segments > 1;
                q.resend_all();
                let got = q.due(Instant::now(), Duration::ZERO, usize::MAX);
                let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
                assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{what}: recovered {seqs:?}");
                for want in done.acked + 1..=done.published {
                    assert!(seqs.contains(&want), "{what}: published up to {}, recovered {seqs:?}", done.published);
                }
                assert!(q.next_seq() > done.published, "{what}: next seq {} reuses a published one", q.next_seq());
                for (seq, bytes) in &got {
                    let batch = Batch { gateway: "gw".into(), seq: *seq, readings: readings_of(*seq) };
                    assert_eq!(
                        **bytes,
                        *codec::encode(&batch, Codec::Json),
                        "{what}: batch {seq} is not what was pushed"
                    );
                }
                // The queue goes on from there.
                let next = q.next_seq();
                assert_eq!(q.push(readings_of(next), Timestamp(0)).unwrap(), next, "{what}");
            }
        }
        assert!(rolled, "the scenario should roll segments");
    }
}
