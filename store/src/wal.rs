//! The write-ahead log: an append-only file of framed, checksummed records.
//!
//! Frame: `len:u32 LE | crc32(payload):u32 LE | payload`. A payload is one record:
//! `kind:u8` then either a binary-codec batch (kind 1: gateway, seq and readings, so the
//! gateway's seq is durable together with its data) or a binary-codec batch with an
//! empty gateway whose seq is ignored (kind 2: readings from line protocol).
//!
//! Invariants:
//! - Records are only ever appended; a frame is durable once `append` returned (under
//!   [`FsyncPolicy::Always`]).
//! - At open, the first frame whose length runs past the end of the file or whose CRC does
//!   not match ends the log: everything from there is a torn tail and is truncated.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use protocol::Batch;
use protocol::codec::{self, Codec};

use crate::{OpenReport, StoreError};

const FILE_NAME: &str = "wal.log";
const KIND_BATCH: u8 = 1;
const KIND_READINGS: u8 = 2;
/// Refuse absurd frame lengths instead of allocating them (a corrupt length field).
const MAX_FRAME: u32 = 64 * 1024 * 1024;

/// When appends are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fdatasync after every append call: nothing acknowledged is lost on power failure.
    Always,
    /// Leave it to the OS (tests and benchmarks that measure everything but the disk).
    Never,
}

/// A record as appended.
pub(crate) enum Record<'a> {
    Batch(&'a Batch),
    Readings(&'a [protocol::Reading]),
}

/// A record as replayed.
pub(crate) enum Owned {
    Batch(Batch),
    Readings(Vec<protocol::Reading>),
}

pub(crate) struct Wal {
    file: File,
    path: PathBuf,
    fsync: FsyncPolicy,
    buf: Vec<u8>,
}

impl Wal {
    /// Opens the log, replays every intact record into `apply`, and truncates a torn tail.
    pub(crate) fn open(
        dir: &Path,
        fsync: FsyncPolicy,
        mut apply: impl FnMut(Owned),
    ) -> Result<(Wal, OpenReport), StoreError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(FILE_NAME);
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(io(&path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io(&path))?;

        let mut report = OpenReport::default();
        let mut pos = 0usize;
        while let Some((payload, next)) = frame_at(&bytes, pos) {
            match decode_record(payload) {
                Some(record) => apply(record),
                None => break,
            }
            report.records += 1;
            pos = next;
        }
        report.torn_bytes = (bytes.len() - pos) as u64;
        if report.torn_bytes > 0 {
            file.set_len(pos as u64).map_err(io(&path))?;
            file.sync_all().map_err(io(&path))?;
        }
        file.seek(SeekFrom::End(0)).map_err(io(&path))?;
        Ok((Wal { file, path, fsync, buf: Vec::new() }, report))
    }

    /// Appends records and makes them durable with one sync.
    pub(crate) fn append(&mut self, records: &[Record<'_>]) -> Result<(), StoreError> {
        self.buf.clear();
        for r in records {
            let payload = encode_record(r);
            let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
            self.buf.extend_from_slice(&len.to_le_bytes());
            self.buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            self.buf.extend_from_slice(&payload);
        }
        let io = |source| StoreError::Io { path: self.path.clone(), source };
        self.file.write_all(&self.buf).map_err(io)?;
        if self.fsync == FsyncPolicy::Always {
            self.file.sync_data().map_err(|source| StoreError::Io { path: self.path.clone(), source })?;
        }
        Ok(())
    }
}

/// The payload of the intact frame at `pos`, and where the next frame starts.
fn frame_at(bytes: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let header = bytes.get(pos..pos + 8)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_FRAME {
        return None;
    }
    let end = pos + 8 + len as usize;
    let payload = bytes.get(pos + 8..end)?;
    (crc32fast::hash(payload) == crc).then_some((payload, end))
}

fn encode_record(r: &Record<'_>) -> Vec<u8> {
    match r {
        Record::Batch(b) => {
            let mut out = vec![KIND_BATCH];
            out.extend_from_slice(&codec::encode(b, Codec::Binary));
            out
        }
        Record::Readings(readings) => {
            let b = Batch { gateway: String::new(), seq: 0, readings: readings.to_vec() };
            let mut out = vec![KIND_READINGS];
            out.extend_from_slice(&codec::encode(&b, Codec::Binary));
            out
        }
    }
}

fn decode_record(payload: &[u8]) -> Option<Owned> {
    let (kind, rest) = payload.split_first()?;
    let batch = codec::binary::decode(rest).ok()?;
    match *kind {
        KIND_BATCH => Some(Owned::Batch(batch)),
        KIND_READINGS => Some(Owned::Readings(batch.readings)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use protocol::{Metric, Reading, Timestamp};

    use super::*;

    fn batch(seq: u64) -> Batch {
        Batch {
            gateway: "g".into(),
            seq,
            readings: vec![Reading::new("d", Metric::new("ph"), Timestamp(seq as i64), 7.1)],
        }
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_reported_and_the_log_keeps_working() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, _) = Wal::open(dir.path(), FsyncPolicy::Always, |_| {}).unwrap();
            wal.append(&[Record::Batch(&batch(1)), Record::Batch(&batch(2))]).unwrap();
        }
        // A power cut in the middle of the third frame.
        let path = dir.path().join(FILE_NAME);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, 1, 2]).unwrap();
        drop(f);

        let mut seqs = vec![];
        let (mut wal, report) = Wal::open(dir.path(), FsyncPolicy::Always, |r| {
            if let Owned::Batch(b) = r {
                seqs.push(b.seq)
            }
        })
        .unwrap();
        assert_eq!(seqs, vec![1, 2]);
        assert_eq!(report.torn_bytes, 10);
        wal.append(&[Record::Batch(&batch(3))]).unwrap();
        drop(wal);

        let mut seqs = vec![];
        let (_, report) = Wal::open(dir.path(), FsyncPolicy::Always, |r| {
            if let Owned::Batch(b) = r {
                seqs.push(b.seq)
            }
        })
        .unwrap();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(report.torn_bytes, 0);
    }

    #[test]
    fn a_flipped_bit_ends_the_log_at_the_damaged_record() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, _) = Wal::open(dir.path(), FsyncPolicy::Always, |_| {}).unwrap();
            wal.append(&[Record::Batch(&batch(1)), Record::Batch(&batch(2))]).unwrap();
        }
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let mut n = 0;
        let (_, report) = Wal::open(dir.path(), FsyncPolicy::Always, |_| n += 1).unwrap();
        assert_eq!(n, 1);
        assert!(report.torn_bytes > 0);
    }
}
