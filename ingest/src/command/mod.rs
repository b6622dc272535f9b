//! Issuing signed commands to gateways, tracking their acks, and the audit log.
//!
//! A pump start or a broadcast must be impossible to forge even for someone who controls
//! the broker, so ingest signs every command with its own Ed25519 key and gateways (and
//! speakers) verify it before acting (`protocol::command`).
//!
//! Design constraints:
//! - The signing key is generated on first start and kept in `data_dir/command.key`
//!   (32 bytes, mode 0600); its public half is served at `GET /api/v1/keys/commands` and
//!   goes into each gateway's config as `command_key`.
//! - Command ids increase across restarts: an id is at least ingest's clock in
//!   milliseconds and above every id in the audit log, because a gateway's replay window
//!   refuses an id more than 63 below the highest it has seen.
//! - Deliberate and audited: every issue is appended to `data_dir/commands.audit.jsonl`
//!   (one JSON object a line, fsynced) before the command is published, with who issued
//!   it; every ack that comes back is appended too (after it is passed on to subscribers:
//!   it reports what already happened). The log is append-only. An operator's write
//!   carries the reason they gave ([`Commander::issue_because`]): it is in the audit line
//!   and in the record `GET /api/v1/commands/{id}` shows.
//! - Generic: [`Commander::issue`] takes any [`Action`] (a write, a broadcast `play`, a
//!   `stop`). The broadcast dispatcher issues through the same Commander (it implements
//!   `broadcast::path::CommandPath`), so one key, one id sequence and one ack stream serve
//!   every command, and a gateway configured with this key verifies them all.
//! - Group commit: [`Commander::issue_all`] signs a batch (a broadcast to a thousand
//!   speakers) with one fsync of the audit log, and acks that arrive together are written
//!   with one fsync, so the log never becomes the bottleneck of a county-wide broadcast.
//! - Bounded: a signed command larger than [`MAX_SIGNED_COMMAND_BYTES`] is refused before
//!   it is audited or published ([`CommandError::TooLarge`]). One oversized publish used to
//!   make the broker drop ingest's connection, and the persistent session resent it after
//!   every reconnect: ingest stayed off the broker until restart (issue 12). The HTTP API
//!   also accepts a write only to a writable point of the device's profile
//!   ([`profiles`]).

mod api;
pub mod profiles;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ed25519_dalek::SigningKey;
use protocol::Timestamp;
use protocol::command::{Action, Command, CommandAck};
use protocol::topic::{self, Channel};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::sources::mqtt::Downlink;
use crate::tasks::Tasks;
use crate::time::Clock;

pub use api::routes;

/// File of the signing key in the data directory.
pub const KEY_FILE: &str = "command.key";
/// File of the audit log in the data directory.
pub const AUDIT_FILE: &str = "commands.audit.jsonl";
/// Largest signed command ingest publishes: what every verifier accepts
/// (`protocol::command::MAX_COMMAND_BYTES`, 16 KiB), far under the broker's packet limits
/// (1 MiB for gateways, 2 MiB for ingest's own session). A larger command could never be
/// carried out anyway.
pub const MAX_SIGNED_COMMAND_BYTES: usize = protocol::command::MAX_COMMAND_BYTES;
/// Commands remembered in memory for `GET /api/v1/commands/{id}` (the audit log keeps all).
const REMEMBERED: usize = 10_000;
/// Most acks written to the audit log with one fsync.
const ACK_GROUP: usize = 512;

/// Why a command could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The key or the audit log could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The key file is not a key.
    #[error("{0}: not a 32-byte Ed25519 key; move it away to make a new one (gateways then need the new public key)")]
    BadKey(PathBuf),
    /// The command could not be published to the broker.
    #[error("publishing to the broker: {0}")]
    Publish(String),
    /// The audit log could not be written, so the command was not sent.
    #[error("the command audit log: {0}")]
    Audit(String),
    /// The signed command would be larger than [`MAX_SIGNED_COMMAND_BYTES`]: refused before
    /// it was audited or published.
    #[error("the signed command would be {bytes} bytes, over the limit of {limit} bytes (MAX_SIGNED_COMMAND_BYTES)")]
    TooLarge {
        /// Its size signed.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
}

/// What an operator (or the broadcast dispatcher) asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    /// Tenant of the gateway.
    pub tenant: String,
    /// The gateway the device is behind.
    pub gateway: String,
    /// The device.
    pub device: String,
    /// What to do.
    pub action: Action,
    /// How long the command may wait before it must not be carried out.
    pub ttl: std::time::Duration,
    /// An exact expiry instead of `ttl` (a broadcast's own expiry, which the speaker
    /// checks before it starts); `None` for `now + ttl`.
    pub expires_at: Option<Timestamp>,
    /// Who asked (the token's holder), for the audit log.
    pub issued_by: String,
}

/// A command as issued, with the acks that came back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    /// The signed command.
    pub command: Command,
    /// Who issued it.
    pub issued_by: String,
    /// Why, as the operator gave it (not signed: it is for people and the audit log).
    pub reason: Option<String>,
    /// Acks in the order they arrived.
    pub acks: Vec<CommandAck>,
}

/// How long after its expiry a command without any ack counts as timed out: the gateway
/// refuses a command that arrives expired, so past this nothing more will be done with it.
pub const TIMEOUT_GRACE_MS: i64 = 5_000;

/// Where a command stands for the person who sent it, from its acks and the clock.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// `sent` (no word from the gateway yet), `accepted` (delivered), `written` (done and
    /// read back), `refused`, `failed`, `timed_out` (no ack by its expiry), or a
    /// broadcast's `playing`, `played`, `interrupted`.
    pub state: &'static str,
    /// Why, for refused and failed commands (the gateway's words, with its check's code).
    pub reason: Option<String>,
    /// When that state was reached (the ack's time, or the expiry for `timed_out`).
    pub at: Option<Timestamp>,
    /// True when nothing more will come: every state but `sent`, `accepted` and `playing`.
    pub last: bool,
}

impl Record {
    /// The command's outcome at `now`: its latest ack, or `timed_out` once it expired
    /// [`TIMEOUT_GRACE_MS`] ago without one.
    pub fn outcome(&self, now: Timestamp) -> Outcome {
        use protocol::command::AckState;
        match self.acks.last() {
            Some(ack) => {
                let state = match ack.state {
                    AckState::Delivered => "accepted",
                    AckState::Done => "written",
                    AckState::Playing => "playing",
                    AckState::Played => "played",
                    AckState::Interrupted => "interrupted",
                    AckState::Refused => "refused",
                    AckState::Failed => "failed",
                };
                // A write's delivery is not its end; a broadcast's delivered is as far as a
                // speaker without a command log reports.
                let last = match ack.state {
                    AckState::Delivered => !matches!(self.command.action, Action::Write { .. }),
                    AckState::Playing => false,
                    _ => true,
                };
                Outcome { state, reason: ack.reason.clone(), at: Some(ack.ts), last }
            }
            None if now.0 > self.command.expires_at.0.saturating_add(TIMEOUT_GRACE_MS) => {
                Outcome { state: "timed_out", reason: None, at: Some(self.command.expires_at), last: true }
            }
            None => Outcome { state: "sent", reason: None, at: None, last: false },
        }
    }
}

/// One line of the audit log.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum AuditLine {
    Issued {
        ts: Timestamp,
        id: u64,
        issued_by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        command: serde_json::Value,
    },
    Ack {
        ts: Timestamp,
        gateway: String,
        ack: serde_json::Value,
    },
}

struct Inner {
    key: SigningKey,
    downlink: Downlink,
    clock: Clock,
    audit: Mutex<Audit>,
    records: Mutex<(HashMap<u64, Record>, std::collections::VecDeque<u64>)>,
    acks: broadcast::Sender<(String, CommandAck)>,
    writable: profiles::WritablePoints,
}

struct Audit {
    file: File,
    path: PathBuf,
    last_id: u64,
}

/// Issues commands and tracks their acks. Cheap to clone.
#[derive(Clone)]
pub struct Commander {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Commander {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commander").field("public_key", &self.public_key_hex()).finish()
    }
}

impl Commander {
    /// Loads (or makes) the signing key and opens the audit log in `data_dir`, and follows
    /// the command acks that the MQTT source receives.
    pub fn open(
        data_dir: &Path,
        downlink: Downlink,
        acks_in: &broadcast::Sender<(String, CommandAck)>,
        clock: Clock,
        tasks: &Tasks,
        shutdown: CancellationToken,
    ) -> Result<Commander, CommandError> {
        let key = load_or_create_key(&data_dir.join(KEY_FILE))?;
        let audit = Audit::open(&data_dir.join(AUDIT_FILE))?;
        let (acks, _) = broadcast::channel(1024);
        let inner = Arc::new(Inner {
            key,
            downlink,
            clock,
            audit: Mutex::new(audit),
            records: Mutex::new((HashMap::new(), std::collections::VecDeque::new())),
            acks,
            writable: profiles::WritablePoints::builtin(),
        });
        let commander = Commander { inner };
        let mut rx = acks_in.subscribe();
        let weak = Arc::downgrade(&commander.inner);
        tasks.spawn("command-acks", async move {
            loop {
                let mut batch = Vec::new();
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    a = rx.recv() => a,
                };
                match next {
                    Ok(first) => batch.push(first),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(message = "Missed command acks (too many at once).", missed = n);
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
                // Whatever arrived meanwhile goes into the same fsync.
                while batch.len() < ACK_GROUP
                    && let Ok(more) = rx.try_recv()
                {
                    batch.push(more);
                }
                let Some(inner) = weak.upgrade() else { return };
                let commander = Commander { inner };
                commander.record_acks(batch);
            }
        });
        tracing::info!(message = "Command signing key ready.", public_key = %commander.public_key_hex());
        Ok(commander)
    }

    /// The public key gateways verify commands with, as hex (their `command_key`).
    pub fn public_key_hex(&self) -> String {
        hex(&self.inner.key.verifying_key().to_bytes())
    }

    /// The public key as bytes.
    pub fn public_key(&self) -> [u8; 32] {
        self.inner.key.verifying_key().to_bytes()
    }

    /// The writable point names of a device model (its profile's `[[writable]]`), or
    /// `None` if ingest knows no profile of that model.
    pub fn writable_points(&self, model: &str) -> Option<&[String]> {
        self.inner.writable.of(model)
    }

    /// Signs a command, appends it to the audit log (fsynced), publishes it to the
    /// gateway, and returns its id. Acks arrive later through [`Commander::subscribe`] and
    /// [`Commander::get`].
    pub async fn issue(&self, req: Issue) -> Result<u64, CommandError> {
        self.issue_all(vec![req]).await.pop().unwrap_or_else(|| Err(CommandError::Publish("nothing issued".into())))
    }

    /// Issues one command with the operator's reason, which goes into the audit line and
    /// the record (a pump started from the dashboard says why).
    pub async fn issue_because(&self, req: Issue, reason: String) -> Result<u64, CommandError> {
        self.issue_with(vec![req], vec![Some(reason)])
            .await
            .pop()
            .unwrap_or_else(|| Err(CommandError::Publish("nothing issued".into())))
    }

    /// Issues a batch: signs every command and appends them to the audit log with one
    /// fsync, then publishes each. Returns one result per request, in order; if the audit
    /// log cannot be written, nothing is published and every result is that error.
    pub async fn issue_all(&self, reqs: Vec<Issue>) -> Vec<Result<u64, CommandError>> {
        let reasons = vec![None; reqs.len()];
        self.issue_with(reqs, reasons).await
    }

    async fn issue_with(&self, reqs: Vec<Issue>, reasons: Vec<Option<String>>) -> Vec<Result<u64, CommandError>> {
        let signed = match self.sign_all(&reqs, &reasons) {
            Ok(s) => s,
            Err(CommandError::TooLarge { bytes, limit }) => {
                tracing::warn!(
                    message = "Command too large; none of the batch sent.",
                    bytes,
                    limit,
                    commands = reqs.len()
                );
                return reqs.iter().map(|_| Err(CommandError::TooLarge { bytes, limit })).collect();
            }
            Err(e) => {
                let text = e.to_string();
                tracing::error!(message = "Cannot audit commands; none sent.", error = %text, commands = reqs.len());
                return reqs.iter().map(|_| Err(CommandError::Audit(text.clone()))).collect();
            }
        };
        let mut out = Vec::with_capacity(signed.len());
        for (req, (cmd, wire)) in reqs.iter().zip(signed) {
            let topic = topic::topic(&req.tenant, &req.gateway, Channel::Command);
            match self.inner.downlink.publish(topic, wire, false).await {
                Ok(()) => {
                    tracing::debug!(message = "Command issued.", id = cmd.id, device = %cmd.device, by = %req.issued_by);
                    out.push(Ok(cmd.id));
                }
                Err(e) => out.push(Err(CommandError::Publish(e.to_string()))),
            }
        }
        out
    }

    /// Signs and audits a command without publishing it: a prepared announcement that a
    /// gateway's local rule delivers later. Returns the signed envelope.
    pub fn prepare(&self, req: Issue) -> Result<(u64, Vec<u8>), CommandError> {
        let (cmd, wire) = self
            .sign_all(std::slice::from_ref(&req), &[None])?
            .pop()
            .ok_or(CommandError::Audit("nothing signed".into()))?;
        Ok((cmd.id, wire))
    }

    /// Makes every later id larger than `id` (the highest id another log of this ingest
    /// knows, e.g. the broadcast audit log written before both shared this sequence).
    pub fn ids_above(&self, id: u64) {
        let mut audit = self.inner.audit.lock().unwrap_or_else(|e| e.into_inner());
        audit.last_id = audit.last_id.max(id);
    }

    /// Signs every request, checks every envelope against [`MAX_SIGNED_COMMAND_BYTES`]
    /// (one over it refuses the batch: nothing audited, no id used), audits them with one
    /// fsync, and remembers them.
    fn sign_all(&self, reqs: &[Issue], reasons: &[Option<String>]) -> Result<Vec<(Command, Vec<u8>)>, CommandError> {
        let now = (self.inner.clock)();
        let mut audit = self.inner.audit.lock().unwrap_or_else(|e| e.into_inner());
        let mut id = audit.last_id;
        let mut cmds = Vec::with_capacity(reqs.len());
        let mut wires = Vec::with_capacity(reqs.len());
        let mut lines = Vec::with_capacity(reqs.len());
        for (n, req) in reqs.iter().enumerate() {
            id = (id + 1).max(u64::try_from(now.0).unwrap_or(0));
            let ttl = i64::try_from(req.ttl.as_millis()).unwrap_or(i64::MAX);
            let cmd = Command {
                id,
                tenant: req.tenant.clone(),
                gateway: req.gateway.clone(),
                device: req.device.clone(),
                issued_at: now,
                expires_at: req.expires_at.unwrap_or(Timestamp(now.0.saturating_add(ttl))),
                action: req.action.clone(),
            };
            let wire = cmd.sign(&self.inner.key);
            if wire.len() > MAX_SIGNED_COMMAND_BYTES {
                return Err(CommandError::TooLarge { bytes: wire.len(), limit: MAX_SIGNED_COMMAND_BYTES });
            }
            lines.push(AuditLine::Issued {
                ts: now,
                id,
                issued_by: req.issued_by.clone(),
                reason: reasons.get(n).cloned().flatten(),
                command: serde_json::to_value(&cmd).unwrap_or_default(),
            });
            cmds.push(cmd);
            wires.push(wire);
        }
        audit.append_all(&lines)?;
        audit.last_id = id;
        drop(audit);
        let mut records = self.inner.records.lock().unwrap_or_else(|e| e.into_inner());
        for (n, (cmd, req)) in cmds.iter().zip(reqs).enumerate() {
            let record = Record {
                command: cmd.clone(),
                issued_by: req.issued_by.clone(),
                reason: reasons.get(n).cloned().flatten(),
                acks: Vec::new(),
            };
            records.0.insert(cmd.id, record);
            records.1.push_back(cmd.id);
        }
        while records.1.len() > REMEMBERED {
            if let Some(old) = records.1.pop_front() {
                records.0.remove(&old);
            }
        }
        drop(records);
        Ok(cmds.into_iter().zip(wires).collect())
    }

    /// A command issued since ingest started, with its acks.
    pub fn get(&self, id: u64) -> Option<Record> {
        self.inner.records.lock().unwrap_or_else(|e| e.into_inner()).0.get(&id).cloned()
    }

    /// The newest commands to `device` since ingest started (at most `limit`), newest first.
    pub fn recent(&self, device: &str, limit: usize) -> Vec<Record> {
        let records = self.inner.records.lock().unwrap_or_else(|e| e.into_inner());
        records
            .1
            .iter()
            .rev()
            .filter_map(|id| records.0.get(id))
            .filter(|r| r.command.device == device)
            .take(limit)
            .cloned()
            .collect()
    }

    /// Ingest's clock now (when a command counts as timed out).
    pub fn now(&self) -> Timestamp {
        (self.inner.clock)()
    }

    /// The writable points ingest knows, with unit and range, by device model.
    pub fn points(&self) -> &profiles::WritablePoints {
        &self.inner.writable
    }

    /// Acks as they arrive: `(gateway, ack)`.
    pub fn subscribe(&self) -> broadcast::Receiver<(String, CommandAck)> {
        self.inner.acks.subscribe()
    }

    /// Attaches acks to their commands, passes them on to subscribers, and appends them
    /// to the audit log (one fsync for the batch). An ack reports what already happened at
    /// the gateway, so subscribers (the broadcast dispatcher, which makes its own record
    /// durable before it acts) need not wait for this fsync; the next batch does.
    fn record_acks(&self, batch: Vec<(String, CommandAck)>) {
        let ts = (self.inner.clock)();
        let lines: Vec<AuditLine> = batch
            .iter()
            .map(|(gateway, ack)| AuditLine::Ack {
                ts,
                gateway: gateway.clone(),
                ack: serde_json::to_value(ack).unwrap_or_default(),
            })
            .collect();
        let mut records = self.inner.records.lock().unwrap_or_else(|e| e.into_inner());
        for (gateway, ack) in &batch {
            match records.0.get_mut(&ack.id) {
                // An ack only counts from the gateway the command went to.
                Some(r) if r.command.gateway == *gateway => r.acks.push(ack.clone()),
                Some(_) => tracing::warn!(message = "Ack from the wrong gateway ignored.", id = ack.id, %gateway),
                None => tracing::debug!(message = "Ack of an unknown command.", id = ack.id, %gateway),
            }
        }
        drop(records);
        for item in batch {
            let _ = self.inner.acks.send(item);
        }
        if let Err(error) = self.inner.audit.lock().unwrap_or_else(|e| e.into_inner()).append_all(&lines) {
            tracing::error!(message = "Cannot write command acks to the audit log.", %error, acks = lines.len());
        }
    }
}

impl Audit {
    fn open(path: &Path) -> Result<Audit, CommandError> {
        let io = |source| CommandError::Io { path: path.to_path_buf(), source };
        let mut last_id = 0;
        if let Ok(f) = File::open(path) {
            for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
                if let Ok(AuditLine::Issued { id, .. }) = serde_json::from_str::<AuditLine>(&line) {
                    last_id = last_id.max(id);
                }
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
        Ok(Audit { file, path: path.to_path_buf(), last_id })
    }

    /// Appends lines with one write and one fsync (group commit).
    fn append_all(&mut self, lines: &[AuditLine]) -> Result<(), CommandError> {
        if lines.is_empty() {
            return Ok(());
        }
        let io = |source| CommandError::Io { path: self.path.clone(), source };
        let mut bytes = Vec::with_capacity(lines.len() * 256);
        for line in lines {
            bytes.extend(serde_json::to_vec(line).unwrap_or_default());
            bytes.push(b'\n');
        }
        self.file.write_all(&bytes).map_err(io)?;
        self.file.sync_data().map_err(|source| CommandError::Io { path: self.path.clone(), source })
    }
}

/// Loads ingest's key from `path`, or makes it (mode 0600) if there is none: the command
/// key, which also signs delivery acks and configurations and derives the link keys.
pub fn load_or_create_key(path: &Path) -> Result<SigningKey, CommandError> {
    let io = |source| CommandError::Io { path: path.to_path_buf(), source };
    match std::fs::read(path) {
        Ok(bytes) => {
            let bytes: [u8; 32] = bytes.try_into().map_err(|_| CommandError::BadKey(path.to_path_buf()))?;
            Ok(SigningKey::from_bytes(&bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SigningKey::generate(&mut rand_core::OsRng);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let tmp = path.with_extension("tmp");
            let mut options = OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let _ = std::fs::remove_file(&tmp);
            let mut f = options.open(&tmp).map_err(io)?;
            f.write_all(&key.to_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
            std::fs::rename(&tmp, path).map_err(io)?;
            tracing::info!(message = "Made a new command signing key.", file = %path.display());
            Ok(key)
        }
        Err(e) => Err(io(e)),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let a = load_or_create_key(&path).unwrap();
        let b = load_or_create_key(&path).unwrap();
        assert_eq!(a.to_bytes(), b.to_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(load_or_create_key(&path), Err(CommandError::BadKey(_))));
    }

    #[tokio::test]
    async fn a_command_over_the_size_limit_is_refused_before_it_is_audited_or_published() {
        let dir = tempfile::tempdir().unwrap();
        // A client that never connects: a publish only queues, nothing leaves the process.
        let (source, _not_running) = crate::sources::mqtt::connect(crate::sources::mqtt::Connection {
            host: "127.0.0.1".into(),
            port: 9,
            client_id: "test".into(),
            credentials: None,
        });
        let stop = CancellationToken::new();
        let commander = Commander::open(
            dir.path(),
            source.downlink.clone(),
            &source.command_acks,
            daemon::system_clock(),
            &Tasks::new(),
            stop.clone(),
        )
        .unwrap();
        let write = |point: String| Issue {
            tenant: "county".into(),
            gateway: "gw-1".into(),
            device: "pump-1".into(),
            action: Action::Write { point, value: 1.0 },
            ttl: std::time::Duration::from_secs(60),
            expires_at: None,
            issued_by: "op".into(),
        };
        // The attack of issue 12: a 1.1 MB point.
        let err = commander.issue(write("p".repeat(1_100_000))).await.unwrap_err();
        assert!(matches!(err, CommandError::TooLarge { limit: MAX_SIGNED_COMMAND_BYTES, .. }), "{err}");
        assert!(err.to_string().contains("over the limit of 16384 bytes"), "{err}");
        // Just over the limit, also refused; nothing of either reached the audit log.
        let err = commander.issue(write("p".repeat(MAX_SIGNED_COMMAND_BYTES))).await.unwrap_err();
        assert!(matches!(err, CommandError::TooLarge { .. }), "{err}");
        let audit = std::fs::read_to_string(dir.path().join(AUDIT_FILE)).unwrap_or_default();
        assert!(!audit.contains("ppp"), "an oversized command was audited");
        // Positive control: a normal command is signed, audited and queued.
        let id = commander.issue(write("level_start_setpoint".into())).await.unwrap();
        assert!(commander.get(id).is_some());
        let audit = std::fs::read_to_string(dir.path().join(AUDIT_FILE)).unwrap_or_default();
        assert!(audit.contains(&format!("\"id\":{id}")), "{audit}");
        stop.cancel();
    }

    fn record(acks: Vec<CommandAck>) -> Record {
        Record {
            command: Command {
                id: 7,
                tenant: "county".into(),
                gateway: "gw".into(),
                device: "pump".into(),
                issued_at: Timestamp(0),
                expires_at: Timestamp(60_000),
                action: Action::Write { point: "pump_run".into(), value: 1.0 },
            },
            issued_by: "op".into(),
            reason: Some("restart after the relay was reset".into()),
            acks,
        }
    }

    fn ack(state: protocol::command::AckState, reason: Option<&str>) -> CommandAck {
        CommandAck {
            id: 7,
            device: "pump".into(),
            ts: Timestamp(1_000),
            state,
            reason: reason.map(Into::into),
            receipt: None,
        }
    }

    #[test]
    fn a_write_is_sent_until_the_gateway_answers_and_timed_out_past_its_expiry_without_an_answer() {
        use protocol::command::AckState;
        let sent = record(vec![]);
        assert_eq!(sent.outcome(Timestamp(30_000)).state, "sent");
        assert!(!sent.outcome(Timestamp(30_000)).last);
        assert_eq!(sent.outcome(Timestamp(60_000 + TIMEOUT_GRACE_MS)).state, "sent", "the grace is inclusive");
        let late = sent.outcome(Timestamp(60_001 + TIMEOUT_GRACE_MS));
        assert_eq!((late.state, late.last, late.at), ("timed_out", true, Some(Timestamp(60_000))));
        // An answer wins whenever it comes.
        let written = record(vec![ack(AckState::Done, None)]).outcome(Timestamp(999_999));
        assert_eq!((written.state, written.last), ("written", true));
        let accepted = record(vec![ack(AckState::Delivered, None)]).outcome(Timestamp(1));
        assert_eq!((accepted.state, accepted.last), ("accepted", false), "a write's delivery is not its end");
        let refused = record(vec![ack(AckState::Refused, Some("out_of_range: 9 (gateway)"))]).outcome(Timestamp(1));
        assert_eq!((refused.state, refused.reason.as_deref()), ("refused", Some("out_of_range: 9 (gateway)")));
    }

    #[tokio::test]
    async fn an_operators_reason_reaches_the_audit_log_and_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let (source, _not_running) = crate::sources::mqtt::connect(crate::sources::mqtt::Connection {
            host: "127.0.0.1".into(),
            port: 9,
            client_id: "test".into(),
            credentials: None,
        });
        let stop = CancellationToken::new();
        let commander = Commander::open(
            dir.path(),
            source.downlink.clone(),
            &source.command_acks,
            daemon::system_clock(),
            &Tasks::new(),
            stop.clone(),
        )
        .unwrap();
        let issue = |device: &str| Issue {
            tenant: "county".into(),
            gateway: "gw-1".into(),
            device: device.into(),
            action: Action::Write { point: "pump_run".into(), value: 1.0 },
            ttl: std::time::Duration::from_secs(60),
            expires_at: None,
            issued_by: "li.wei".into(),
        };
        let id = commander.issue_because(issue("pump-1"), "relay reset by the technician".into()).await.unwrap();
        let plain = commander.issue(issue("pump-2")).await.unwrap();
        assert_eq!(commander.get(id).and_then(|r| r.reason).as_deref(), Some("relay reset by the technician"));
        assert_eq!(commander.get(plain).and_then(|r| r.reason), None, "a command without a reason has none");
        let audit = std::fs::read_to_string(dir.path().join(AUDIT_FILE)).unwrap_or_default();
        let line = audit.lines().find(|l| l.contains(&format!("\"id\":{id}"))).unwrap_or_default();
        assert!(line.contains("\"reason\":\"relay reset by the technician\""), "{audit}");
        assert_eq!(commander.recent("pump-1", 5).len(), 1);
        stop.cancel();
    }

    #[test]
    fn ids_keep_increasing_across_restarts_from_the_audit_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_FILE);
        let mut audit = Audit::open(&path).unwrap();
        let line = AuditLine::Issued {
            ts: Timestamp(0),
            id: 9_000_000_000_000,
            issued_by: "op".into(),
            reason: None,
            command: serde_json::Value::Null,
        };
        audit.append_all(&[line]).unwrap();
        drop(audit);
        assert_eq!(Audit::open(&path).unwrap().last_id, 9_000_000_000_000);
    }
}
