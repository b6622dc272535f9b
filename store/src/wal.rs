//! The write-ahead log: numbered segment files of framed, checksummed records.
//!
//! Files: `wal/<segment:016>.log`, numbered from 1. Appends go to the newest segment. A
//! checkpoint rotates to a fresh segment, seals everything up to the old one into the
//! database, records that segment number there, and then deletes the segments it covers.
//!
//! Frame: `len:u32 LE | crc32(payload):u32 LE | payload`. One record per frame:
//!
//! ```text
//! record  = kind:u8 (1 batch, 2 readings) [gateway:bytes seq:varint] n:varint reading*
//! reading = device:varint (0: same as previous, else len+1 then the bytes)
//!           metric:varint (catalogue id, or 0 then name:bytes)
//!           ts:zigzag varint (delta from the previous reading's ts; the first from 0)
//!           value:f64 LE  quality:u8
//! bytes   = len:varint then the bytes
//! ```
//!
//! Design constraints:
//! - A record of a batch carries the gateway and seq with the readings, so the seq memory
//!   is durable exactly when the data is.
//! - Records are only appended. Writing (`write`) and syncing are separate so that several
//!   writers' frames can share one fdatasync (group commit, see `crate::commit`). A new
//!   segment's directory entry is synced before anything is appended to it, and a segment
//!   is synced before the log rotates away from it.
//! - At open, in each segment the first frame that is short, too long, fails its CRC or
//!   does not decode ends that segment: the rest is a torn tail. It is reported, cut off
//!   (so it is reported once) and never a reason to refuse to open.
//! - After a failed write or fsync the log is poisoned: what reached the disk past the last
//!   successful fdatasync is unknown (the kernel may have dropped the dirty pages, or kept
//!   half a frame), so it refuses appends. [`Wal::recover`] ends that: it cuts the segment
//!   back to the length the last successful fdatasync covered (nothing past it was
//!   acknowledged), syncs the cut, and takes appends again. A disk that is still full
//!   fails the next write and poisons the log again; nothing is lost either way.
//! - Encoding reuses one buffer: the hot path allocates nothing per reading.
//! - All file I/O goes through [`frames::fs::Fs`] (the real file system, or a simulated one
//!   that can lose power in tests): one call per group written or synced, none per record.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use frames::fs::{FileRef, Fs};

use protocol::{Batch, Metric, Reading};

use crate::config::FsyncPolicy;
use crate::error::StoreError;
use crate::varint::{self, Reader};

const KIND_BATCH: u8 = 1;
const KIND_READINGS: u8 = 2;
/// Refuse absurd frame lengths instead of allocating them (a corrupt length field).
const MAX_FRAME: u32 = 256 * 1024 * 1024;

/// A reading as replayed: borrowed from the log's bytes.
pub(crate) struct ReplayReading<'a> {
    pub(crate) device: &'a str,
    pub(crate) metric: Metric,
    pub(crate) ts: i64,
    pub(crate) value: f64,
    pub(crate) quality: u8,
}

/// A record as replayed.
pub(crate) struct ReplayRecord<'a> {
    /// `(gateway, seq)` of a batch record; `None` for line-protocol readings.
    pub(crate) batch: Option<(&'a str, u64)>,
    pub(crate) readings: &'a [ReplayReading<'a>],
}

/// What replaying the log found.
#[derive(Debug, Default)]
pub(crate) struct ReplayStats {
    pub(crate) records: u64,
    pub(crate) segments: u64,
    pub(crate) torn_bytes: u64,
}

pub(crate) struct Wal {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    file: FileRef,
    path: PathBuf,
    segment: u64,
    fsync: FsyncPolicy,
    buf: Vec<u8>,
    /// Shared with the syncers, whose failed fsync poisons the log too.
    poisoned: Arc<AtomicBool>,
    /// Bytes of the current segment written and made durable, shared with the syncers.
    marks: Arc<Marks>,
}

/// How far the current segment is written, and how far a successful fdatasync covered it.
#[derive(Debug, Default)]
pub(crate) struct Marks {
    /// Bytes appended by successful writes.
    written: AtomicU64,
    /// Bytes covered by the last successful fdatasync.
    durable: AtomicU64,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:016}.log"))
}

/// The segment numbers in `dir`, ascending. Files that are not segments are left alone.
fn list_segments(fs: &dyn Fs, dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut out: Vec<u64> = fs
        .list(dir)
        .map_err(StoreError::io(dir))?
        .iter()
        .filter_map(|name| name.strip_suffix(".log")?.parse().ok())
        .collect();
    out.sort_unstable();
    Ok(out)
}

impl Wal {
    /// Opens the log in `dir`, deletes segments up to `checkpointed` (already sealed), and
    /// replays the rest in order into `apply`. Torn tails are cut off. Appends then go to a
    /// fresh segment.
    pub(crate) fn open(
        fs: Arc<dyn Fs>,
        dir: &Path,
        fsync: FsyncPolicy,
        checkpointed: u64,
        mut apply: impl FnMut(&ReplayRecord<'_>),
    ) -> Result<(Wal, ReplayStats), StoreError> {
        fs.create_dir_all(dir).map_err(StoreError::io(dir))?;
        let mut stats = ReplayStats::default();
        let mut last = checkpointed;
        for n in list_segments(&*fs, dir)? {
            let path = segment_path(dir, n);
            if n <= checkpointed {
                // Sealed by a checkpoint that committed before it could delete them.
                fs.remove_file(&path).map_err(StoreError::io(&path))?;
                continue;
            }
            last = last.max(n);
            stats.segments += 1;
            let file = fs.open(&path, false).map_err(StoreError::io(&path))?;
            let bytes = file.read_all().map_err(StoreError::io(&path))?;
            let mut pos = 0usize;
            while let Some((payload, next)) = frames::frame_at(&bytes, pos, MAX_FRAME) {
                let Some(()) = decode_record(payload, &mut apply) else { break };
                stats.records += 1;
                pos = next;
            }
            let torn = (bytes.len() - pos) as u64;
            if torn > 0 {
                tracing::warn!(
                    message = "Cut a torn tail off a write-ahead log segment.",
                    bytes = torn,
                    file = %path.display()
                );
                stats.torn_bytes += torn;
                file.set_len(pos as u64).map_err(StoreError::io(&path))?;
                file.sync_all().map_err(StoreError::io(&path))?;
            }
        }
        let segment = last + 1;
        let (file, path) = create_segment(&*fs, dir, segment)?;
        let wal = Wal {
            fs,
            dir: dir.to_path_buf(),
            file,
            path,
            segment,
            fsync,
            buf: Vec::new(),
            poisoned: Arc::new(AtomicBool::new(false)),
            marks: Arc::default(),
        };
        Ok((wal, stats))
    }

    /// Refuses to go on after a failed write.
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        if self.poisoned.load(Ordering::Acquire) {
            Err(StoreError::Poisoned { path: self.path.clone() })
        } else {
            Ok(())
        }
    }

    /// Starts a group of records to commit together.
    pub(crate) fn begin(&mut self) {
        self.buf.clear();
    }

    /// Adds a batch record to the group.
    pub(crate) fn push_batch(&mut self, b: &Batch) {
        self.frame(|out| {
            out.push(KIND_BATCH);
            put_bytes(out, b.gateway.as_bytes());
            varint::put_u64(out, b.seq);
            put_readings(out, &b.readings);
        });
    }

    /// Adds a line-protocol readings record to the group.
    pub(crate) fn push_readings(&mut self, readings: &[Reading]) {
        self.frame(|out| {
            out.push(KIND_READINGS);
            put_readings(out, readings);
        });
    }

    fn frame(&mut self, body: impl FnOnce(&mut Vec<u8>)) {
        let start = frames::begin(&mut self.buf);
        body(&mut self.buf);
        frames::finish(&mut self.buf, start);
    }

    /// Writes the group to the file, not yet durable: see [`Wal::sync_handle`].
    pub(crate) fn write(&mut self) -> Result<(), StoreError> {
        self.check()?;
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(source) = self.file.append(&self.buf) {
            self.poisoned.store(true, Ordering::Release);
            return Err(StoreError::Io { path: self.path.clone(), source });
        }
        self.marks.written.fetch_add(self.buf.len() as u64, Ordering::AcqRel);
        Ok(())
    }

    /// Takes appends again after a failed write or fdatasync (call under the writer lock,
    /// with no group in flight). Cuts the segment back to what the last successful
    /// fdatasync covered, so that nothing unacknowledged (a torn frame, a group whose sync
    /// failed) stays in the log to reappear at the next open, and syncs the cut. Returns
    /// the bytes of whole unacknowledged groups cut (a torn partial write comes on top), or
    /// `None` if the log was not poisoned. Fails, still poisoned, when the file system
    /// fails the cut too.
    pub(crate) fn recover(&mut self) -> Result<Option<u64>, StoreError> {
        if !self.poisoned.load(Ordering::Acquire) {
            return Ok(None);
        }
        let keep = if self.fsync == FsyncPolicy::Never {
            self.marks.written.load(Ordering::Acquire)
        } else {
            self.marks.durable.load(Ordering::Acquire)
        };
        let cut = self.marks.written.load(Ordering::Acquire).saturating_sub(keep);
        self.file.set_len(keep).map_err(StoreError::io(&self.path))?;
        if self.fsync != FsyncPolicy::Never {
            self.file.sync_all().map_err(StoreError::io(&self.path))?;
        }
        self.marks.written.store(keep, Ordering::Release);
        self.marks.durable.store(keep, Ordering::Release);
        self.poisoned.store(false, Ordering::Release);
        Ok(Some(cut))
    }

    /// Writes the group and makes it durable with one fdatasync (single-writer use).
    #[cfg(test)]
    pub(crate) fn commit(&mut self) -> Result<(), StoreError> {
        self.write()?;
        sync(&self.sync_handle(), self.fsync)
    }

    /// What a syncer needs to make everything written so far durable.
    pub(crate) fn sync_handle(&self) -> SyncHandle {
        SyncHandle {
            file: self.file.clone(),
            path: self.path.clone(),
            poisoned: self.poisoned.clone(),
            marks: self.marks.clone(),
        }
    }

    pub(crate) fn fsync_policy(&self) -> FsyncPolicy {
        self.fsync
    }

    /// Starts a new segment; returns the number of the one it closed. Everything appended
    /// so far is in segments up to that number, and durable.
    pub(crate) fn rotate(&mut self) -> Result<u64, StoreError> {
        self.check()?;
        sync(&self.sync_handle(), self.fsync)?;
        let closed = self.segment;
        let (file, path) = create_segment(&*self.fs, &self.dir, closed + 1)?;
        self.file = file;
        self.path = path;
        self.segment = closed + 1;
        self.marks = Arc::default();
        Ok(closed)
    }

    /// Deletes the segments up to `upto`, which a committed checkpoint covers. A failure is
    /// only logged: the next open deletes them, as the checkpoint says they are sealed.
    pub(crate) fn remove_upto(&self, upto: u64) {
        let Ok(segments) = list_segments(&*self.fs, &self.dir) else { return };
        for n in segments.into_iter().filter(|&n| n <= upto) {
            let path = segment_path(&self.dir, n);
            if let Err(error) = self.fs.remove_file(&path) {
                tracing::warn!(message = "Could not delete a sealed log segment.", %error, file = %path.display());
            }
        }
    }

    /// Bytes appended to the current segment.
    pub(crate) fn segment_bytes(&self) -> u64 {
        self.marks.written.load(Ordering::Acquire)
    }
}

/// The file a group was written to, for the fdatasync that makes it durable.
#[derive(Clone)]
pub(crate) struct SyncHandle {
    pub(crate) file: FileRef,
    pub(crate) path: PathBuf,
    pub(crate) poisoned: Arc<AtomicBool>,
    pub(crate) marks: Arc<Marks>,
}

impl SyncHandle {
    /// A handle on a fresh log file (tests of the group commit).
    #[cfg(test)]
    pub(crate) fn new(file: FileRef, path: PathBuf) -> SyncHandle {
        SyncHandle { file, path, poisoned: Arc::new(AtomicBool::new(false)), marks: Arc::default() }
    }
}

/// fdatasync under `policy`: on success everything written before it started is durable
/// (the mark [`Wal::recover`] cuts back to); a failure poisons the log.
pub(crate) fn sync(handle: &SyncHandle, policy: FsyncPolicy) -> Result<(), StoreError> {
    if policy == FsyncPolicy::Never {
        return Ok(());
    }
    let written = handle.marks.written.load(Ordering::Acquire);
    match handle.file.sync_data() {
        Ok(()) => {
            handle.marks.durable.fetch_max(written, Ordering::AcqRel);
            Ok(())
        }
        Err(source) => {
            handle.poisoned.store(true, Ordering::Release);
            Err(StoreError::Io { path: handle.path.clone(), source })
        }
    }
}

fn create_segment(fs: &dyn Fs, dir: &Path, n: u64) -> Result<(FileRef, PathBuf), StoreError> {
    let path = segment_path(dir, n);
    let file = fs.open(&path, true).map_err(StoreError::io(&path))?;
    // The new file's name must survive a crash before anything durable is written to it.
    fs.sync_dir(dir).map_err(StoreError::io(dir))?;
    Ok((file, path))
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    varint::put_u64(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_readings(out: &mut Vec<u8>, readings: &[Reading]) {
    varint::put_u64(out, readings.len() as u64);
    let mut prev_device: Option<&str> = None;
    let mut prev_ts = 0i64;
    for r in readings {
        let device = r.device.as_str();
        if prev_device == Some(device) {
            out.push(0);
        } else {
            varint::put_u64(out, device.len() as u64 + 1);
            out.extend_from_slice(device.as_bytes());
            prev_device = Some(device);
        }
        match r.metric.def() {
            Some(def) => varint::put_u64(out, u64::from(def.id)),
            None => {
                out.push(0);
                put_bytes(out, r.metric.name().as_bytes());
            }
        }
        varint::put_i64(out, r.ts.0.wrapping_sub(prev_ts));
        prev_ts = r.ts.0;
        out.extend_from_slice(&r.value.to_le_bytes());
        out.push(r.quality.code());
    }
}

/// Decodes one record and hands it to `apply`; `None` if it does not decode.
fn decode_record(payload: &[u8], apply: &mut impl FnMut(&ReplayRecord<'_>)) -> Option<()> {
    let mut r = Reader::new(payload);
    let batch = match r.u8()? {
        KIND_BATCH => {
            let gateway = std::str::from_utf8(r.bytes()?).ok()?;
            Some((gateway, r.u64()?))
        }
        KIND_READINGS => None,
        _ => return None,
    };
    let n = usize::try_from(r.u64()?).ok()?;
    // Replay is not the hot path: one vector per record is fine.
    let mut readings = Vec::with_capacity(n.min(payload.len()));
    let mut device: Option<&str> = None;
    let mut ts = 0i64;
    for _ in 0..n {
        let d = r.u64()?;
        if d > 0 {
            let len = usize::try_from(d - 1).ok()?;
            device = Some(std::str::from_utf8(r.take(len)?).ok()?);
        }
        let metric = match r.u64()? {
            0 => Metric::new(std::str::from_utf8(r.bytes()?).ok()?),
            id => Metric::from_id(u16::try_from(id).ok()?)?,
        };
        ts = ts.wrapping_add(r.i64()?);
        let value = r.f64()?;
        let quality = r.u8()?;
        protocol::Quality::from_code(quality)?;
        readings.push(ReplayReading { device: device?, metric, ts, value, quality });
    }
    if !r.is_empty() {
        return None;
    }
    apply(&ReplayRecord { batch, readings: &readings });
    Some(())
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::io::Write;

    use protocol::{Quality, Timestamp};

    use super::*;

    fn batch(seq: u64) -> Batch {
        Batch {
            gateway: "g".into(),
            seq,
            readings: vec![
                Reading::new("d", Metric::new("ph"), Timestamp(seq as i64), 7.1),
                Reading { quality: Quality::Bad, ..Reading::new("d", Metric::new("my_custom"), Timestamp(-5), -0.0) },
                Reading::new("e", Metric::new("ph"), Timestamp(i64::MAX), f64::MAX),
            ],
        }
    }

    /// Replayed records: seq and `(device, metric, ts, value bits, quality)` of each reading.
    type Seen = Vec<(Option<u64>, Vec<(String, String, i64, u64, u8)>)>;

    fn replay(dir: &Path, checkpointed: u64) -> (Seen, ReplayStats) {
        let mut seen = Vec::new();
        let (_, stats) = Wal::open(Arc::new(frames::fs::RealFs), dir, FsyncPolicy::Always, checkpointed, |rec| {
            seen.push((
                rec.batch.map(|b| b.1),
                rec.readings
                    .iter()
                    .map(|r| (r.device.to_string(), r.metric.name().to_string(), r.ts, r.value.to_bits(), r.quality))
                    .collect(),
            ))
        })
        .unwrap();
        (seen, stats)
    }

    fn append(dir: &Path, batches: &[Batch]) -> u64 {
        let (mut wal, _) = Wal::open(Arc::new(frames::fs::RealFs), dir, FsyncPolicy::Always, 0, |_| {}).unwrap();
        wal.begin();
        batches.iter().for_each(|b| wal.push_batch(b));
        wal.commit().unwrap();
        wal.segment
    }

    #[test]
    fn records_round_trip_with_custom_metrics_extremes_and_quality() {
        let dir = tempfile::tempdir().unwrap();
        append(dir.path(), &[batch(1)]);
        let (seen, stats) = replay(dir.path(), 0);
        assert_eq!(stats.records, 1);
        let b = batch(1);
        let expect: Vec<_> = b
            .readings
            .iter()
            .map(|r| (r.device.to_string(), r.metric.name().to_string(), r.ts.0, r.value.to_bits(), r.quality.code()))
            .collect();
        assert_eq!(seen, vec![(Some(1), expect)]);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_reported_once_and_the_log_keeps_working() {
        let dir = tempfile::tempdir().unwrap();
        let seg = append(dir.path(), &[batch(1), batch(2)]);
        // A power cut in the middle of the third frame.
        let path = segment_path(dir.path(), seg);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, 1, 2]).unwrap();
        drop(f);

        let (seen, stats) = replay(dir.path(), 0);
        assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), vec![Some(1), Some(2)]);
        assert_eq!(stats.torn_bytes, 10);
        append(dir.path(), &[batch(3)]);
        let (seen, stats) = replay(dir.path(), 0);
        assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), vec![Some(1), Some(2), Some(3)]);
        assert_eq!(stats.torn_bytes, 0);
    }

    #[test]
    fn a_flipped_bit_ends_the_segment_at_the_damaged_record() {
        let dir = tempfile::tempdir().unwrap();
        let seg = append(dir.path(), &[batch(1), batch(2)]);
        let path = segment_path(dir.path(), seg);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let (seen, stats) = replay(dir.path(), 0);
        assert_eq!(seen.len(), 1);
        assert!(stats.torn_bytes > 0);
    }

    #[test]
    fn checkpointed_segments_are_deleted_and_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let first = append(dir.path(), &[batch(1)]);
        append(dir.path(), &[batch(2)]);
        let (seen, stats) = replay(dir.path(), first);
        assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), vec![Some(2)]);
        assert_eq!(stats.segments, 1);
        assert!(!segment_path(dir.path(), first).exists());
    }
}
