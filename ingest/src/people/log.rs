//! The people's audit log: who did what, when, from where. Sign-ins (and failed ones),
//! sign-outs, user changes, and the actions handlers record through
//! [`crate::auth::Trail`] (broadcasts created, approved, refused, cancelled; alerts
//! acknowledged; silences; commands).
//!
//! Design constraints:
//! - The file is written by the broadcast audit log's writer
//!   ([`crate::broadcast::audit::Audit`]): JSON lines, each chained to the one before by
//!   SHA-256, fsynced before `record` returns, many callers per fsync (group commit), a
//!   torn last line cut at open, an edited line refused at open. One tested writer for
//!   both logs; what a broadcast played stays in the broadcast log, and a line here says
//!   only who acted on which broadcast from where.
//! - Bounded on disk: past [`MAX_FILE_BYTES`] the file becomes `people.audit.1.jsonl`
//!   (replacing the one before) and a new chain starts, so at most two files are kept.
//! - Bounded in memory: the newest [`REMEMBERED`] entries answer queries.
//! - Queries are filtered by who asks: an entry of a tenant is shown to those who may see
//!   that tenant; an entry of no tenant (a sign-in, a user change) to readers of every
//!   tenant, to the actor, and to readers who share a tenant with the person it concerns.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use protocol::Timestamp;
use serde::{Deserialize, Serialize};

use crate::auth::AuditEntry;
use crate::broadcast::audit::{Audit, AuditError};

/// The log's file in the data directory.
pub const FILE: &str = "people.audit.jsonl";
/// The previous file, once the log outgrew [`MAX_FILE_BYTES`].
pub const OLD_FILE: &str = "people.audit.1.jsonl";
/// Size past which the file is rotated.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Entries kept in memory for queries.
pub const REMEMBERED: usize = 20_000;
/// Most entries one query returns.
pub const MAX_LIMIT: usize = 1_000;

/// One entry as it is stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// When (RFC 3339).
    pub ts: String,
    /// When (ms), for filtering.
    #[serde(skip)]
    pub ms: i64,
    /// What happened.
    #[serde(flatten)]
    pub entry: AuditEntry,
}

/// A query (`GET /api/v1/audit?actor=&action=&from=&to=&q=&limit=`).
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Only this actor.
    pub actor: Option<String>,
    /// Only actions equal to this or starting with it and a dot (`broadcast` matches
    /// `broadcast.approve`).
    pub action: Option<String>,
    /// From this time (ms), inclusive.
    pub from: Option<i64>,
    /// Until this time (ms), exclusive.
    pub to: Option<i64>,
    /// Text anywhere in the entry (case-insensitive).
    pub q: Option<String>,
    /// Most entries, newest first.
    pub limit: usize,
}

/// The open log.
pub struct PeopleLog {
    writer: tokio::sync::RwLock<Audit>,
    recent: Mutex<VecDeque<Entry>>,
    bytes: AtomicU64,
    dir: PathBuf,
    /// Size past which the file is rotated ([`MAX_FILE_BYTES`]; smaller in tests).
    max_bytes: u64,
}

impl std::fmt::Debug for PeopleLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeopleLog").field("dir", &self.dir).finish()
    }
}

fn parse_event(ts: Timestamp, event: &str) -> Option<Entry> {
    let entry: AuditEntry = serde_json::from_str(event).ok()?;
    Some(Entry { ts: crate::time::rfc3339(ts), ms: ts.0, entry })
}

impl PeopleLog {
    /// Opens (or creates) the log in `dir` and reads its newest entries back.
    pub fn open(dir: &Path) -> Result<PeopleLog, AuditError> {
        PeopleLog::open_with_limit(dir, MAX_FILE_BYTES)
    }

    /// [`PeopleLog::open`], rotating past `max_bytes`.
    pub fn open_with_limit(dir: &Path, max_bytes: u64) -> Result<PeopleLog, AuditError> {
        let path = dir.join(FILE);
        let (audit, events) = Audit::open(&path, None)?;
        let mut recent = VecDeque::with_capacity(REMEMBERED.min(events.len()));
        let skip = events.len().saturating_sub(REMEMBERED);
        for r in events.iter().skip(skip) {
            if let Some(e) = parse_event(r.ts, r.event.get()) {
                recent.push_back(e);
            }
        }
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Ok(PeopleLog {
            writer: tokio::sync::RwLock::new(audit),
            recent: Mutex::new(recent),
            bytes: AtomicU64::new(bytes),
            dir: dir.to_path_buf(),
            max_bytes,
        })
    }

    /// Appends an entry at `ts`; returns once it is durable.
    pub async fn record(&self, ts: Timestamp, entry: AuditEntry) -> Result<(), AuditError> {
        let text = serde_json::to_string(&entry)
            .map_err(|e| AuditError::Io { path: self.dir.join(FILE), reason: e.to_string() })?;
        let len = text.len() as u64 + 200;
        {
            let writer = self.writer.read().await;
            writer.append(vec![(ts, text)]).await?;
        }
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() >= REMEMBERED {
                recent.pop_front();
            }
            recent.push_back(Entry { ts: crate::time::rfc3339(ts), ms: ts.0, entry });
        }
        if self.bytes.fetch_add(len, Ordering::Relaxed) + len > self.max_bytes {
            self.rotate().await;
        }
        Ok(())
    }

    /// Moves the full file aside and starts a new chain (see the module's constraints).
    async fn rotate(&self) {
        let mut writer = self.writer.write().await;
        if self.bytes.load(Ordering::Relaxed) <= self.max_bytes {
            return; // another caller rotated it meanwhile
        }
        let (path, old) = (self.dir.join(FILE), self.dir.join(OLD_FILE));
        // Appends hold the read lock until their line is durable: none is in flight.
        match std::fs::rename(&path, &old)
            .map_err(|e| e.to_string())
            .and_then(|()| Audit::open(&path, None).map_err(|e| e.to_string()))
        {
            Ok((fresh, _)) => {
                *writer = fresh;
                self.bytes.store(0, Ordering::Relaxed);
                tracing::info!(message = "People's audit log rotated.", file = %path.display(), previous = %old.display());
            }
            Err(error) => tracing::error!(message = "Cannot rotate the people's audit log; it keeps growing.", %error),
        }
    }

    /// The entries matching `q` that `visible` lets through, newest first.
    pub fn query(&self, q: &Query, visible: impl Fn(&Entry) -> bool) -> Vec<Entry> {
        let text = q.q.as_ref().map(|t| t.to_lowercase()).filter(|t| !t.is_empty());
        let limit = q.limit.clamp(1, MAX_LIMIT);
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent
            .iter()
            .rev()
            .filter(|e| q.actor.as_ref().is_none_or(|a| a.is_empty() || &e.entry.actor == a))
            .filter(|e| {
                q.action.as_ref().is_none_or(|a| {
                    a.is_empty()
                        || e.entry.action == *a
                        || e.entry.action.strip_prefix(a.as_str()).is_some_and(|rest| rest.starts_with('.'))
                })
            })
            .filter(|e| q.from.is_none_or(|f| e.ms >= f) && q.to.is_none_or(|t| e.ms < t))
            .filter(|e| {
                text.as_ref().is_none_or(|t| {
                    serde_json::to_string(&e.entry).map(|s| s.to_lowercase().contains(t)).unwrap_or(false)
                })
            })
            .filter(|e| visible(e))
            .take(limit)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(actor: &str, action: &str, tenant: Option<&str>) -> AuditEntry {
        AuditEntry {
            actor: actor.into(),
            via: "session".into(),
            ip: Some("10.0.0.7".into()),
            action: action.into(),
            tenant: tenant.map(str::to_string),
            target: "42".into(),
            detail: json!({ "note": "水泵已复位" }),
        }
    }

    #[tokio::test]
    async fn entries_are_durable_chained_and_searchable_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let log = PeopleLog::open(dir.path()).unwrap();
        log.record(Timestamp(1_000), entry("wang", "signin", None)).await.unwrap();
        log.record(Timestamp(2_000), entry("wang", "broadcast.create", Some("county"))).await.unwrap();
        log.record(Timestamp(3_000), entry("li", "broadcast.approve", Some("county"))).await.unwrap();
        log.record(Timestamp(4_000), entry("li", "alert.ack", Some("dairy"))).await.unwrap();
        let all = |q: &Query| log.query(q, |_| true);
        let q = Query { limit: 100, ..Query::default() };
        assert_eq!(
            all(&q).iter().map(|e| e.entry.action.as_str()).collect::<Vec<_>>(),
            ["alert.ack", "broadcast.approve", "broadcast.create", "signin"]
        );
        let by = |f: Query| all(&Query { limit: 100, ..f }).len();
        assert_eq!(by(Query { action: Some("broadcast".into()), ..Query::default() }), 2);
        assert_eq!(by(Query { action: Some("broad".into()), ..Query::default() }), 0, "a prefix stops at a dot");
        assert_eq!(by(Query { actor: Some("li".into()), ..Query::default() }), 2);
        assert_eq!(by(Query { from: Some(2_000), to: Some(4_000), ..Query::default() }), 2);
        assert_eq!(by(Query { q: Some("水泵".into()), ..Query::default() }), 4);
        assert_eq!(by(Query { q: Some("10.0.0.7".into()), ..Query::default() }), 4);
        assert_eq!(all(&Query { limit: 1, ..Query::default() }).len(), 1);
        // The reader's filter applies.
        assert_eq!(log.query(&q, |e| e.entry.tenant.as_deref() == Some("county")).len(), 2);
        drop(log);
        // Durable, chained, and read back at open.
        assert_eq!(crate::broadcast::audit::verify(&dir.path().join(FILE)).unwrap().lines, 4);
        let log = PeopleLog::open(dir.path()).unwrap();
        let back = log.query(&q, |_| true);
        assert_eq!(back.len(), 4);
        assert_eq!(back[0].entry, entry("li", "alert.ack", Some("dairy")));
        assert_eq!(back[0].ts, "1970-01-01T00:00:04.000Z");
    }

    #[tokio::test]
    async fn a_full_log_is_rotated_so_at_most_two_files_are_kept_and_each_chain_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let log = PeopleLog::open_with_limit(dir.path(), 4_000).unwrap();
        for i in 0..60 {
            log.record(Timestamp(i), entry("wang", "alert.ack", Some("county"))).await.unwrap();
        }
        let (now, old) = (dir.path().join(FILE), dir.path().join(OLD_FILE));
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        assert!(size(&old) > 0, "rotated at least once");
        assert!(size(&now) <= 4_000 + 600 && size(&old) <= 4_000 + 600, "{} {}", size(&now), size(&old));
        let lines =
            crate::broadcast::audit::verify(&now).unwrap().lines + crate::broadcast::audit::verify(&old).unwrap().lines;
        assert!(lines < 60, "older files are dropped: {lines} lines kept");
        // Memory keeps the newest entries whatever the files hold.
        assert_eq!(log.query(&Query { limit: 1000, ..Query::default() }, |_| true).len(), 60);
    }
}
