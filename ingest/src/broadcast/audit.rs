//! The broadcast audit log: append-only JSON lines, fsynced, each line chained to the one
//! before by SHA-256, so that an edited, removed or inserted line shows.
//!
//! One line per event (created, approved, cancelled, every command sent, every delivery
//! change), in the order they happened:
//!
//! ```text
//! {"seq":7,"ts":"2026-11-23T06:15:38.123Z","prev":"<hex of line 6's hash>","hash":"<hex>","event":{...}}
//! ```
//!
//! `hash` = SHA-256 of `prev + "\n" + seq + "\n" + ts + "\n" + event`, where `event` is the
//! exact JSON text of the line's `event` field; line 1's `prev` is 64 zeros. Anyone can
//! check a copy of the file with [`verify`] (or a few lines of Python) without ingest.
//!
//! Design constraints:
//! - Durable before it acts: callers append the events of a step and wait for the fsync
//!   before they publish anything, so nothing reaches a speaker that the log does not have.
//! - Group commit: one writer thread takes every request waiting and writes them with one
//!   `fdatasync`, so a broadcast to 1,000 speakers costs a few fsyncs, not thousands.
//! - A write that fails is rolled back (the file is cut back to its previous length and
//!   the chain to its previous head) and reported to every waiting caller.
//! - A torn last line (power cut mid-write: no newline) is cut off at open with a warning;
//!   any complete line that does not chain is tampering, and opening fails naming the line.
//! - The writer works on `store::fs` (the real file system, or `SimFs` in the power-cut
//!   test), and the log's directory is synced at open, so a new log's name survives a power
//!   cut as its synced lines do.
//! - The log is also ingest's memory of broadcasts: replaying it rebuilds every broadcast
//!   and delivery after a restart (see `dispatch`).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;
use protocol::Timestamp;
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use store::fs::{FileRef, Fs, RealFs};
use tokio::sync::oneshot;

use crate::time::rfc3339;

/// File of the audit log in the data directory.
pub const FILE: &str = "broadcasts.audit.jsonl";
/// `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Why the audit log cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// Reading or writing the file failed.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        reason: String,
    },
    /// A complete line does not chain: the file was edited.
    #[error(
        "{path}:{line}: the audit log does not verify ({reason}); it was edited after it was written. Keep it as evidence and move it away to start a new log"
    )]
    Tampered {
        /// The file.
        path: PathBuf,
        /// 1-based line number of the first line that does not verify.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The writer thread is gone (ingest is stopping).
    #[error("the audit log writer has stopped")]
    Stopped,
}

/// One line read back.
#[derive(Debug)]
pub struct Recorded {
    /// Its sequence number (1-based).
    pub seq: u64,
    /// When it was written.
    pub ts: Timestamp,
    /// The event's JSON.
    pub event: Box<RawValue>,
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Complete lines, all chained.
    pub lines: u64,
    /// The hash of the last line (the chain's head).
    pub head: String,
}

#[derive(Deserialize)]
struct Line {
    seq: u64,
    ts: String,
    prev: String,
    hash: String,
    event: Box<RawValue>,
}

fn hash(prev: &str, seq: u64, ts: &str, event: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(seq.to_string().as_bytes());
    h.update(b"\n");
    h.update(ts.as_bytes());
    h.update(b"\n");
    h.update(event.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads and checks a log. Returns the events, what verified, and the length of the
/// complete lines (a torn tail lies beyond it).
fn read(path: &Path) -> Result<(Vec<Recorded>, Verified, u64), AuditError> {
    let io = |e: std::io::Error| AuditError::Io { path: path.to_path_buf(), reason: e.to_string() };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(e)),
    };
    parse(path, &bytes)
}

/// Checks the bytes of a log read from `path` (named in errors).
fn parse(path: &Path, bytes: &[u8]) -> Result<(Vec<Recorded>, Verified, u64), AuditError> {
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let tampered = |line: usize, reason: String| AuditError::Tampered { path: path.to_path_buf(), line, reason };
    let mut out = Vec::new();
    let mut head = GENESIS.to_string();
    let mut seq = 0u64;
    // Complete lines without the last newline, so that splitting yields no empty remainder.
    let body = &bytes[..complete.saturating_sub(1)];
    for (i, raw) in body.split(|&b| b == b'\n').enumerate().filter(|_| complete > 0) {
        let n = i + 1;
        let text = std::str::from_utf8(raw).map_err(|_| tampered(n, "not UTF-8".into()))?;
        let line: Line = serde_json::from_str(text).map_err(|e| tampered(n, format!("not an audit line: {e}")))?;
        if line.seq != seq + 1 {
            return Err(tampered(n, format!("sequence {} follows {seq}", line.seq)));
        }
        if line.prev != head {
            return Err(tampered(n, "prev is not the hash of the line before".into()));
        }
        let expected = hash(&line.prev, line.seq, &line.ts, line.event.get());
        if line.hash != expected {
            return Err(tampered(n, "hash does not match the line".into()));
        }
        let ts = crate::time::parse(&line.ts).map_err(|e| tampered(n, e))?;
        seq = line.seq;
        head = line.hash;
        out.push(Recorded { seq, ts, event: line.event });
    }
    Ok((out, Verified { lines: seq, head }, complete as u64))
}

/// Checks a log file without opening it for writing: every line chains to the one before.
pub fn verify(path: &Path) -> Result<Verified, AuditError> {
    read(path).map(|(_, v, _)| v)
}

struct Request {
    events: Vec<(Timestamp, String)>,
    done: oneshot::Sender<Result<(), AuditError>>,
}

/// The open log. Cheap to clone.
#[derive(Clone)]
pub struct Audit {
    tx: mpsc::Sender<Request>,
    path: PathBuf,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit").field("path", &self.path).finish()
    }
}

struct Writer {
    file: FileRef,
    path: PathBuf,
    len: u64,
    seq: u64,
    head: String,
    append_seconds: Option<Histogram>,
}

impl Audit {
    /// Opens (or creates) the log, verifies it, cuts a torn tail, and starts the writer.
    /// Returns the log and every event in it, for replay.
    pub fn open(path: &Path, append_seconds: Option<Histogram>) -> Result<(Audit, Vec<Recorded>), AuditError> {
        Audit::open_on(&RealFs, path, append_seconds).map(|(audit, events, _)| (audit, events))
    }

    /// [`Audit::open`] on any file system (the power-cut test runs it on `SimFs`); also
    /// returns how many bytes of a torn last line were cut off (0 for none).
    pub fn open_on(
        fs: &dyn Fs,
        path: &Path,
        append_seconds: Option<Histogram>,
    ) -> Result<(Audit, Vec<Recorded>, u64), AuditError> {
        let io = |e: std::io::Error| AuditError::Io { path: path.to_path_buf(), reason: e.to_string() };
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        fs.create_dir_all(dir).map_err(io)?;
        let file = fs.open(path, true).map_err(io)?;
        // The name of a log created just now is durable only once its directory is.
        fs.sync_dir(dir).map_err(io)?;
        let bytes = file.read_all().map_err(io)?;
        let (events, verified, complete) = parse(path, &bytes)?;
        let len = bytes.len() as u64;
        if len > complete {
            tracing::warn!(
                message = "Cut a torn last line off the broadcast audit log (a write was interrupted).",
                file = %path.display(),
                bytes = len - complete
            );
            file.set_len(complete).map_err(io)?;
            file.sync_data().map_err(io)?;
        }
        let writer = Writer {
            file,
            path: path.to_path_buf(),
            len: complete,
            seq: verified.lines,
            head: verified.head,
            append_seconds,
        };
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new().name("broadcast-audit".into()).spawn(move || writer.run(rx)).map_err(io)?;
        Ok((Audit { tx, path: path.to_path_buf() }, events, len - complete))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends events `(time, event JSON)` and returns once they are on disk.
    pub async fn append(&self, events: Vec<(Timestamp, String)>) -> Result<(), AuditError> {
        if events.is_empty() {
            return Ok(());
        }
        let (done, rx) = oneshot::channel();
        self.tx.send(Request { events, done }).map_err(|_| AuditError::Stopped)?;
        rx.await.map_err(|_| AuditError::Stopped)?
    }
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            batch.extend(rx.try_iter());
            let started = Instant::now();
            let result = self.write(&batch);
            if let Some(h) = &self.append_seconds {
                h.observe(started.elapsed().as_secs_f64());
            }
            for r in batch {
                let _ = r.done.send(result.clone());
            }
        }
    }

    fn write(&mut self, batch: &[Request]) -> Result<(), AuditError> {
        let (seq0, head0, len0) = (self.seq, self.head.clone(), self.len);
        let mut buf = String::new();
        for (ts, event) in batch.iter().flat_map(|r| r.events.iter()) {
            self.seq += 1;
            let ts = rfc3339(*ts);
            let h = hash(&self.head, self.seq, &ts, event);
            buf.push_str(&format!(
                "{{\"seq\":{},\"ts\":\"{ts}\",\"prev\":\"{}\",\"hash\":\"{h}\",\"event\":{event}}}\n",
                self.seq, self.head
            ));
            self.head = h;
        }
        // The sync before the acknowledgement: callers act (publish) only after it.
        let result = self.file.append(buf.as_bytes()).and_then(|()| self.file.sync_data());
        match result {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                tracing::error!(message = "Broadcast audit log write failed; rolled back.", file = %self.path.display(), error = %e);
                let _ = self.file.set_len(len0);
                (self.seq, self.head, self.len) = (seq0, head0, len0);
                Err(AuditError::Io { path: self.path.clone(), reason: e.to_string() })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::fs::{SimFs, Tear};

    fn event(n: u32) -> (Timestamp, String) {
        (Timestamp(1_763_900_000_000 + i64::from(n)), format!("{{\"type\":\"test\",\"n\":{n}}}"))
    }

    #[tokio::test]
    async fn appended_lines_chain_and_come_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let (audit, events) = Audit::open(&path, None).unwrap();
        assert!(events.is_empty());
        audit.append(vec![event(1), event(2)]).await.unwrap();
        audit.append(vec![event(3)]).await.unwrap();
        drop(audit);
        let v = verify(&path).unwrap();
        assert_eq!(v.lines, 3);
        let (audit, events) = Audit::open(&path, None).unwrap();
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(events[2].event.get(), "{\"type\":\"test\",\"n\":3}");
        audit.append(vec![event(4)]).await.unwrap();
        assert_eq!(verify(&path).unwrap().lines, 4);
    }

    #[tokio::test]
    async fn an_edited_line_is_found_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let (audit, _) = Audit::open(&path, None).unwrap();
        audit.append(vec![event(1), event(2), event(3)]).await.unwrap();
        drop(audit);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("\"n\":2", "\"n\":9", 1)).unwrap();
        let err = verify(&path).unwrap_err();
        assert!(matches!(err, AuditError::Tampered { line: 2, .. }), "{err}");
        assert!(Audit::open(&path, None).is_err(), "a tampered log is not appended to");
        // Removing a line breaks the chain too.
        let lines: Vec<&str> = text.lines().collect();
        std::fs::write(&path, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
        assert!(matches!(verify(&path), Err(AuditError::Tampered { line: 2, .. })));
    }

    #[tokio::test]
    async fn a_torn_last_line_is_cut_off_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let (audit, _) = Audit::open(&path, None).unwrap();
        audit.append(vec![event(1)]).await.unwrap();
        drop(audit);
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut f, b"{\"seq\":2,\"ts\":\"20").unwrap();
        drop(f);
        let (audit, events) = Audit::open(&path, None).unwrap();
        assert_eq!(events.len(), 1);
        audit.append(vec![event(2)]).await.unwrap();
        assert_eq!(verify(&path).unwrap().lines, 2);
    }

    /// The power-cut test's scenario: groups of events appended one after another, the log
    /// reopened halfway (so open's own file operations are cut points too).
    const GROUPS: [&[u32]; 6] = [&[1], &[2, 3, 4], &[5], &[6, 7], &[8], &[9, 10, 11]];
    const REOPEN_AFTER: usize = 3;

    /// Runs the scenario on `fs` until an operation fails (the power cut). Returns the events
    /// acknowledged (their `append` returned `Ok`) and every event sent, in order.
    fn run_until_cut(fs: &SimFs, path: &Path) -> (Vec<String>, Vec<String>) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (mut acked, mut sent) = (Vec::new(), Vec::new());
        let Ok((mut audit, _, _)) = Audit::open_on(fs, path, None) else { return (acked, sent) };
        for (i, group) in GROUPS.iter().enumerate() {
            if i == REOPEN_AFTER {
                drop(audit);
                match Audit::open_on(fs, path, None) {
                    Ok((a, _, _)) => audit = a,
                    Err(_) => return (acked, sent),
                }
            }
            let events: Vec<(Timestamp, String)> = group.iter().map(|&n| event(n)).collect();
            sent.extend(events.iter().map(|(_, e)| e.clone()));
            if rt.block_on(audit.append(events.clone())).is_err() {
                return (acked, sent);
            }
            acked.extend(events.into_iter().map(|(_, e)| e));
        }
        (acked, sent)
    }

    #[test]
    fn every_acknowledged_record_survives_a_power_cut_at_every_step_and_the_chain_goes_on() {
        let path = Path::new("/data").join(FILE);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let clean = SimFs::new();
        let (all, _) = run_until_cut(&clean, &path);
        assert_eq!(all.len(), 11, "the scenario runs through without a cut");
        let ops = clean.ops();
        assert!(ops >= 8, "open, reopen and six appends are cut points ({ops})");
        let mut torn_cases = 0;
        for cut in 0..ops {
            for tear in Tear::ALL {
                let case = format!("cut at operation {cut}, {tear:?}");
                let fs = SimFs::new();
                fs.cut_at_op(cut);
                let (acked, sent) = run_until_cut(&fs, &path);
                assert!(fs.is_dead(), "{case}: the cut happened");
                let back = fs.power_cut(tear);
                let found = back.contents(&path).unwrap_or_default();
                let tail = found.len() - found.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                let (audit, events, cut_off) = Audit::open_on(&back, &path, None)
                    .unwrap_or_else(|e| panic!("{case}: the log reopens after a power cut: {e}"));
                // Every acknowledged record is there, in order; anything beyond was sent
                // (the group in flight at the cut), nothing is made up.
                let texts: Vec<&str> = events.iter().map(|r| r.event.get()).collect();
                assert!(texts.len() >= acked.len(), "{case}: acked {}, found {}", acked.len(), texts.len());
                assert_eq!(texts[..acked.len()], acked, "{case}: the acknowledged records");
                assert_eq!(texts[..], sent[..texts.len()], "{case}: only records that were sent");
                assert!(events.iter().enumerate().all(|(i, r)| r.seq == i as u64 + 1), "{case}: seqs");
                // A torn tail is cut off and reported.
                assert_eq!(cut_off, tail as u64, "{case}: the torn tail is reported");
                torn_cases += usize::from(tail > 0);
                // New records chain on, and they and the cut are durable.
                rt.block_on(audit.append(vec![event(100)]))
                    .unwrap_or_else(|e| panic!("{case}: appending after the reopen: {e}"));
                drop(audit);
                let again = back.power_cut(Tear::Lose);
                let bytes = again.contents(&path).unwrap_or_else(|| {
                    panic!("{case}: the log is gone after a second power cut (its name was not synced)")
                });
                let (events2, verified, complete) =
                    parse(&path, &bytes).unwrap_or_else(|e| panic!("{case}: the chain verifies: {e}"));
                assert_eq!(complete, bytes.len() as u64, "{case}: no torn tail is left");
                assert_eq!(verified.lines, texts.len() as u64 + 1, "{case}: the new record chained on");
                assert_eq!(events2.last().map(|r| r.event.get()), Some(event(100).1.as_str()));
            }
        }
        assert!(torn_cases > 0, "some cuts leave a torn last line");
    }
}
