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
//!   it; every ack that comes back is appended too. The log is append-only.
//! - Generic: [`Commander::issue`] takes any [`Action`] (a write, a broadcast `play`, a
//!   `stop`), so the broadcast dispatcher issues through the same path and follows the
//!   acks with [`Commander::subscribe`].

mod api;

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

use crate::mqtt::Downlink;
use crate::pipeline::Clock;

pub use api::routes;

/// File of the signing key in the data directory.
pub const KEY_FILE: &str = "command.key";
/// File of the audit log in the data directory.
pub const AUDIT_FILE: &str = "commands.audit.jsonl";
/// Commands remembered in memory for `GET /api/v1/commands/{id}` (the audit log keeps all).
const REMEMBERED: usize = 10_000;

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
    /// Acks in the order they arrived.
    pub acks: Vec<CommandAck>,
}

/// One line of the audit log.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum AuditLine {
    Issued { ts: Timestamp, id: u64, issued_by: String, command: serde_json::Value },
    Ack { ts: Timestamp, gateway: String, ack: serde_json::Value },
}

struct Inner {
    key: SigningKey,
    downlink: Downlink,
    clock: Clock,
    audit: Mutex<Audit>,
    records: Mutex<(HashMap<u64, Record>, std::collections::VecDeque<u64>)>,
    acks: broadcast::Sender<(String, CommandAck)>,
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
        });
        let commander = Commander { inner };
        let mut rx = acks_in.subscribe();
        let weak = Arc::downgrade(&commander.inner);
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok((gateway, ack)) => match weak.upgrade() {
                        Some(inner) => Commander { inner }.record_ack(&gateway, ack),
                        None => return,
                    },
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(message = "Missed command acks (too many at once).", missed = n)
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
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

    /// Signs a command, appends it to the audit log (fsynced), publishes it to the
    /// gateway, and returns its id. Acks arrive later through [`Commander::subscribe`] and
    /// [`Commander::get`].
    pub async fn issue(&self, req: Issue) -> Result<u64, CommandError> {
        let (cmd, wire) = self.sign(&req)?;
        let topic = topic::topic(&req.tenant, &req.gateway, Channel::Command);
        self.inner.downlink.publish(topic, wire, false).await.map_err(|e| CommandError::Publish(e.to_string()))?;
        tracing::info!(message = "Command issued.", id = cmd.id, device = %cmd.device, by = %req.issued_by);
        Ok(cmd.id)
    }

    /// Signs and audits a command without publishing it: a prepared announcement that a
    /// gateway's local rule delivers later. Returns the signed envelope.
    pub fn prepare(&self, req: Issue) -> Result<(u64, Vec<u8>), CommandError> {
        let (cmd, wire) = self.sign(&req)?;
        Ok((cmd.id, wire))
    }

    fn sign(&self, req: &Issue) -> Result<(Command, Vec<u8>), CommandError> {
        let now = (self.inner.clock)();
        let mut audit = self.inner.audit.lock().unwrap_or_else(|e| e.into_inner());
        let id = (audit.last_id + 1).max(u64::try_from(now.0).unwrap_or(0));
        let ttl = i64::try_from(req.ttl.as_millis()).unwrap_or(i64::MAX);
        let cmd = Command {
            id,
            tenant: req.tenant.clone(),
            gateway: req.gateway.clone(),
            device: req.device.clone(),
            issued_at: now,
            expires_at: Timestamp(now.0.saturating_add(ttl)),
            action: req.action.clone(),
        };
        let line = AuditLine::Issued {
            ts: now,
            id,
            issued_by: req.issued_by.clone(),
            command: serde_json::to_value(&cmd).unwrap_or_default(),
        };
        audit.append(&line)?;
        audit.last_id = id;
        drop(audit);
        let mut records = self.inner.records.lock().unwrap_or_else(|e| e.into_inner());
        records.0.insert(id, Record { command: cmd.clone(), issued_by: req.issued_by.clone(), acks: Vec::new() });
        records.1.push_back(id);
        while records.1.len() > REMEMBERED {
            if let Some(old) = records.1.pop_front() {
                records.0.remove(&old);
            }
        }
        drop(records);
        let wire = cmd.sign(&self.inner.key);
        Ok((cmd, wire))
    }

    /// A command issued since ingest started, with its acks.
    pub fn get(&self, id: u64) -> Option<Record> {
        self.inner.records.lock().unwrap_or_else(|e| e.into_inner()).0.get(&id).cloned()
    }

    /// Acks as they arrive: `(gateway, ack)`.
    pub fn subscribe(&self) -> broadcast::Receiver<(String, CommandAck)> {
        self.inner.acks.subscribe()
    }

    fn record_ack(&self, gateway: &str, ack: CommandAck) {
        let line = AuditLine::Ack {
            ts: (self.inner.clock)(),
            gateway: gateway.to_string(),
            ack: serde_json::to_value(&ack).unwrap_or_default(),
        };
        if let Err(error) = self.inner.audit.lock().unwrap_or_else(|e| e.into_inner()).append(&line) {
            tracing::error!(message = "Cannot write a command ack to the audit log.", %error);
        }
        let mut records = self.inner.records.lock().unwrap_or_else(|e| e.into_inner());
        match records.0.get_mut(&ack.id) {
            // An ack only counts from the gateway the command went to.
            Some(r) if r.command.gateway == gateway => r.acks.push(ack.clone()),
            Some(_) => tracing::warn!(message = "Ack from the wrong gateway ignored.", id = ack.id, %gateway),
            None => tracing::debug!(message = "Ack of an unknown command.", id = ack.id, %gateway),
        }
        drop(records);
        let _ = self.inner.acks.send((gateway.to_string(), ack));
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

    fn append(&mut self, line: &AuditLine) -> Result<(), CommandError> {
        let io = |source| CommandError::Io { path: self.path.clone(), source };
        let mut bytes = serde_json::to_vec(line).unwrap_or_default();
        bytes.push(b'\n');
        self.file.write_all(&bytes).map_err(io)?;
        self.file.sync_data().map_err(|source| CommandError::Io { path: self.path.clone(), source })
    }
}

fn load_or_create_key(path: &Path) -> Result<SigningKey, CommandError> {
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

    #[test]
    fn ids_keep_increasing_across_restarts_from_the_audit_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_FILE);
        let mut audit = Audit::open(&path).unwrap();
        let line = AuditLine::Issued {
            ts: Timestamp(0),
            id: 9_000_000_000_000,
            issued_by: "op".into(),
            command: serde_json::Value::Null,
        };
        audit.append(&line).unwrap();
        drop(audit);
        assert_eq!(Audit::open(&path).unwrap().last_id, 9_000_000_000_000);
    }
}
