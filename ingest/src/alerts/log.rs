//! The alert log: alert state, silences and proposed broadcasts persisted as JSON lines
//! under ingest's data dir (`alerts/log.jsonl`).
//!
//! Design constraints:
//! - Append-only between compactions: every change appends the whole new record (an
//!   alert, a silence, a proposal, or the drop of a pending alert that never fired).
//!   Replaying the file in order gives the latest version of every record.
//! - A torn last line (power cut mid-write) is skipped with a warning; every complete
//!   line before it counts.
//! - Compaction writes the live records to a temporary file, fsyncs it and renames it
//!   over the log, so a crash leaves the old or the new log, never half of one.
//! - Durability: [`Log::sync`] is called once per batch of changes, not per line.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::model::{Alert, ProposedBroadcast, Silence};

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    /// The latest version of an alert.
    Alert(Alert),
    /// A pending alert whose condition ended before it fired: forget it.
    Drop {
        /// Its id.
        id: u64,
    },
    /// The latest version of a silence.
    Silence(Silence),
    /// The latest version of a proposed broadcast.
    Proposal(ProposedBroadcast),
}

/// Errors of the alert log; they say which file.
#[derive(Debug, thiserror::Error)]
#[error("alert log {path}: {source}")]
pub struct LogError {
    /// The file.
    pub path: PathBuf,
    /// What the OS said.
    pub source: std::io::Error,
}

/// The open log.
#[derive(Debug)]
pub struct Log {
    path: PathBuf,
    file: File,
    lines: u64,
    dirty: bool,
}

impl Log {
    /// Opens (or creates) `dir/log.jsonl` and returns its records in order.
    pub fn open(dir: &Path) -> Result<(Log, Vec<Record>), LogError> {
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LogError { path, source }
        };
        std::fs::create_dir_all(dir).map_err(err(dir))?;
        let path = dir.join("log.jsonl");
        let mut records = Vec::new();
        let mut lines = 0;
        if path.exists() {
            let f = File::open(&path).map_err(err(&path))?;
            for (n, line) in BufReader::new(f).lines().enumerate() {
                let line = line.map_err(err(&path))?;
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<Record>(&line) {
                    Ok(r) => {
                        records.push(r);
                        lines += 1;
                    }
                    Err(e) => tracing::warn!(
                        message = "Skipped an unreadable line of the alert log.",
                        path = %path.display(),
                        line = n + 1,
                        error = %e
                    ),
                }
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(err(&path))?;
        Ok((Log { path, file, lines, dirty: false }, records))
    }

    /// Appends a record (durable after the next [`Log::sync`]).
    pub fn append(&mut self, r: &Record) -> Result<(), LogError> {
        let mut line = serde_json::to_vec(r).map_err(|e| LogError { path: self.path.clone(), source: e.into() })?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(|source| LogError { path: self.path.clone(), source })?;
        self.lines += 1;
        self.dirty = true;
        Ok(())
    }

    /// Makes appended records durable.
    pub fn sync(&mut self) -> Result<(), LogError> {
        if self.dirty {
            self.file.sync_data().map_err(|source| LogError { path: self.path.clone(), source })?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Lines in the file.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Replaces the log with `live` records.
    pub fn compact(&mut self, live: impl Iterator<Item = Record>) -> Result<(), LogError> {
        let tmp = self.path.with_extension("jsonl.tmp");
        let err = |source| LogError { path: tmp.clone(), source };
        let mut out = std::io::BufWriter::new(File::create(&tmp).map_err(err)?);
        let mut n = 0;
        for r in live {
            serde_json::to_writer(&mut out, &r).map_err(|e| err(e.into()))?;
            out.write_all(b"\n").map_err(err)?;
            n += 1;
        }
        let f = out.into_inner().map_err(|e| err(e.into_error()))?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|source| LogError { path: self.path.clone(), source })?;
        self.lines = n;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::model::{Matchers, SilenceKind};
    use protocol::Timestamp;

    fn silence(id: u64, reason: &str) -> Record {
        Record::Silence(Silence {
            id,
            kind: SilenceKind::Silence,
            matchers: Matchers { site: Some("s".into()), ..Matchers::default() },
            starts_at: Timestamp(0),
            ends_at: Timestamp(10),
            reason: reason.into(),
            created_by: "op".into(),
            tenant: "county".into(),
            created_at: Timestamp(0),
        })
    }

    #[test]
    fn records_survive_reopening_and_compaction_keeps_only_what_is_live() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, recs) = Log::open(dir.path()).unwrap();
            assert!(recs.is_empty());
            log.append(&silence(1, "a")).unwrap();
            log.append(&silence(1, "b")).unwrap();
            log.sync().unwrap();
        }
        let (mut log, recs) = Log::open(dir.path()).unwrap();
        assert_eq!(recs, vec![silence(1, "a"), silence(1, "b")]);
        log.compact([silence(1, "b")].into_iter()).unwrap();
        log.append(&silence(2, "c")).unwrap();
        log.sync().unwrap();
        let (_, recs) = Log::open(dir.path()).unwrap();
        assert_eq!(recs, vec![silence(1, "b"), silence(2, "c")]);
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_the_rest_is_read() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = Log::open(dir.path()).unwrap();
            log.append(&silence(1, "a")).unwrap();
            log.sync().unwrap();
        }
        let mut f = OpenOptions::new().append(true).open(dir.path().join("log.jsonl")).unwrap();
        f.write_all(b"{\"record\":\"silence\",\"id\":").unwrap();
        let (_, recs) = Log::open(dir.path()).unwrap();
        assert_eq!(recs, vec![silence(1, "a")]);
    }
}
