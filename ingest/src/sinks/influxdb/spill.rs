//! The spill: batches of line protocol waiting on disk while the server cannot be reached.
//!
//! One file per batch, `<seq:020>-<readings>.lp`, holding exactly the body of the request
//! that failed (or would have been sent), so draining is resending files oldest first.
//!
//! Design constraints:
//! - Order: files are numbered; the sink sends the oldest first and sends nothing from
//!   memory while any file waits, so a series reaches the server in the order it was
//!   stored.
//! - A file appears whole or not at all: written as `.tmp`, fsynced, renamed. Leftover
//!   `.tmp` files (a crash mid-write) are deleted at open.
//! - Bounded: beyond `max_bytes` the oldest files are dropped and counted, the way a full
//!   Vector disk buffer with `when_full = drop_newest` would drop, but keeping the newest
//!   data, which is what an operator looks at first.
//! - The spill survives restarts: a sink that starts with files in it drains them first.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// One spilled batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpillFile {
    pub(crate) path: PathBuf,
    pub(crate) readings: u64,
    pub(crate) bytes: u64,
}

/// The spill directory of one sink.
#[derive(Debug)]
pub(crate) struct Spill {
    dir: PathBuf,
    files: VecDeque<SpillFile>,
    next: u64,
    bytes: u64,
    readings: u64,
    max_bytes: u64,
}

impl Spill {
    /// Opens (creating) `dir` and lists what an earlier run left.
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Spill> {
        std::fs::create_dir_all(dir)?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let Some(stem) = name.strip_suffix(".lp") else { continue };
            let Some((seq, n)) = stem.split_once('-') else { continue };
            let (Ok(seq), Ok(readings)) = (seq.parse::<u64>(), n.parse::<u64>()) else { continue };
            let bytes = entry.metadata()?.len();
            found.push((seq, SpillFile { path, readings, bytes }));
        }
        found.sort_by_key(|(seq, _)| *seq);
        let next = found.last().map_or(1, |(seq, _)| seq + 1);
        let files: VecDeque<SpillFile> = found.into_iter().map(|(_, f)| f).collect();
        let bytes = files.iter().map(|f| f.bytes).sum();
        let readings = files.iter().map(|f| f.readings).sum();
        Ok(Spill { dir: dir.to_path_buf(), files, next, bytes, readings, max_bytes })
    }

    /// Writes a batch as the newest file. Returns the readings of older files dropped to
    /// stay under the size limit.
    pub(crate) fn push(&mut self, body: &[u8], readings: u64) -> std::io::Result<u64> {
        let name = format!("{:020}-{readings}.lp", self.next);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(body)?;
            f.sync_data()?;
        }
        std::fs::rename(&tmp, &path)?;
        self.next += 1;
        let bytes = body.len() as u64;
        self.files.push_back(SpillFile { path, readings, bytes });
        self.bytes += bytes;
        self.readings += readings;
        let mut dropped = 0;
        while self.bytes > self.max_bytes && self.files.len() > 1 {
            if let Some(f) = self.pop_front() {
                dropped += f.readings;
            }
        }
        Ok(dropped)
    }

    /// The oldest batch and its body.
    pub(crate) fn front(&self) -> Option<(&SpillFile, std::io::Result<Vec<u8>>)> {
        self.files.front().map(|f| (f, std::fs::read(&f.path)))
    }

    /// Deletes the oldest batch (sent, or unsendable).
    pub(crate) fn pop_front(&mut self) -> Option<SpillFile> {
        let f = self.files.pop_front()?;
        if let Err(error) = std::fs::remove_file(&f.path) {
            tracing::warn!(message = "Could not delete a spill file.", %error, file = %f.path.display());
        }
        self.bytes -= f.bytes;
        self.readings -= f.readings;
        Some(f)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Readings waiting on disk.
    pub(crate) fn readings(&self) -> u64 {
        self.readings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_come_back_oldest_first_also_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spill::open(dir.path(), 1 << 20).unwrap();
        s.push(b"a v=1 1\n", 1).unwrap();
        s.push(b"a v=2 2\na v=3 3\n", 2).unwrap();
        std::fs::write(dir.path().join("x.lp.tmp"), b"torn").unwrap();
        drop(s);
        let mut s = Spill::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.readings(), 3);
        assert!(!dir.path().join("x.lp.tmp").exists());
        assert_eq!(s.front().unwrap().1.unwrap(), b"a v=1 1\n");
        s.pop_front();
        s.push(b"a v=4 4\n", 1).unwrap();
        assert_eq!(s.front().unwrap().1.unwrap(), b"a v=2 2\na v=3 3\n");
        s.pop_front();
        assert_eq!(s.front().unwrap().0.readings, 1);
        s.pop_front();
        assert!(s.is_empty());
        assert_eq!(s.readings(), 0);
    }

    #[test]
    fn a_full_spill_drops_its_oldest_batches() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spill::open(dir.path(), 20).unwrap();
        assert_eq!(s.push(&[b'x'; 15], 5).unwrap(), 0);
        assert_eq!(s.push(&[b'y'; 15], 7).unwrap(), 5);
        assert_eq!(s.readings(), 7);
        assert_eq!(s.front().unwrap().1.unwrap(), vec![b'y'; 15]);
    }
}
