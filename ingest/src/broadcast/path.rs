//! The command path: how the dispatcher gets a signed command to one speaker and hears
//! back, behind one small trait so that the transport can change without the dispatcher.
//!
//! [`CommandPath`] is "sign this command for this speaker, send it through its gateway,
//! and give me the acks". [`MqttPath`] implements it on ingest's MQTT downlink: it signs
//! with ingest's Ed25519 command key and publishes on `vt/{tenant}/{gateway}/down/cmd`;
//! acks come from `vt/{tenant}/{gateway}/up/ack` through the MQTT source. When ingest's
//! generic command module (`ingest::command::Commander`, which also audits every command
//! it issues) is in the tree, an adapter of a few lines implements the trait on it and
//! the dispatcher does not change.
//!
//! Design constraints:
//! - The key is the one file every signer of this ingest uses, `data_dir/command.key`
//!   (32 bytes, mode 0600), made on first start; gateways and speakers are provisioned
//!   with its public half. One key, so one issuer's replay windows stay consistent.
//! - Command ids increase across restarts and are at least ingest's clock in ms
//!   (`max(last + 1, now)`), because a verifier's replay window refuses an id more than
//!   63 below the highest it has seen. The caller passes the highest id it knows from its
//!   own log at start.

use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Mutex;

use ed25519_dalek::SigningKey;
use protocol::Timestamp;
use protocol::command::{Action, Command, CommandAck};
use protocol::topic::{self, Channel};
use tokio::sync::broadcast;

use crate::mqtt::Downlink;
use crate::pipeline::Clock;

/// File of the command signing key in the data directory.
pub const KEY_FILE: &str = "command.key";

/// A command to send.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRequest {
    /// Tenant of the gateway.
    pub tenant: String,
    /// The speaker's gateway.
    pub gateway: String,
    /// The speaker.
    pub device: String,
    /// `Play` or `Stop`.
    pub action: Action,
    /// The command must not be carried out after this.
    pub expires_at: Timestamp,
    /// Who it is sent for (the operator who released the broadcast).
    pub issued_by: String,
}

/// Why a command could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// The key file could not be read or written.
    #[error("{path}: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The broker did not take the message.
    #[error("publishing to the broker: {0}")]
    Publish(String),
}

/// A boxed future, so the trait stays object-safe.
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<u64, PathError>> + Send + 'a>>;

/// Sends signed commands to speakers and hears their acks.
pub trait CommandPath: Send + Sync + 'static {
    /// Signs `request`, sends it towards the speaker, and returns the command id.
    fn send(&self, request: CommandRequest) -> SendFuture<'_>;

    /// Acks as they arrive: `(gateway, ack)`.
    fn acks(&self) -> broadcast::Receiver<(String, CommandAck)>;

    /// The public key speakers and gateways verify with.
    fn public_key(&self) -> [u8; 32];
}

/// [`CommandPath`] on ingest's MQTT downlink.
pub struct MqttPath {
    key: SigningKey,
    downlink: Downlink,
    acks: broadcast::Sender<(String, CommandAck)>,
    clock: Clock,
    last_id: Mutex<u64>,
}

impl std::fmt::Debug for MqttPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttPath").finish_non_exhaustive()
    }
}

impl MqttPath {
    /// Loads (or makes) the key in `data_dir` and publishes through `downlink`. `last_id`
    /// is the highest command id already used.
    pub fn open(
        data_dir: &Path,
        downlink: Downlink,
        acks: broadcast::Sender<(String, CommandAck)>,
        clock: Clock,
        last_id: u64,
    ) -> Result<MqttPath, PathError> {
        let key = load_or_create_key(&data_dir.join(KEY_FILE))?;
        Ok(MqttPath { key, downlink, acks, clock, last_id: Mutex::new(last_id) })
    }

    fn sign(&self, req: &CommandRequest) -> (u64, Vec<u8>) {
        let now = (self.clock)();
        let id = {
            let mut last = self.last_id.lock().unwrap_or_else(|e| e.into_inner());
            *last = (*last + 1).max(u64::try_from(now.0).unwrap_or(0));
            *last
        };
        let cmd = Command {
            id,
            tenant: req.tenant.clone(),
            gateway: req.gateway.clone(),
            device: req.device.clone(),
            issued_at: now,
            expires_at: req.expires_at,
            action: req.action.clone(),
        };
        (id, cmd.sign(&self.key))
    }
}

impl CommandPath for MqttPath {
    fn send(&self, request: CommandRequest) -> SendFuture<'_> {
        Box::pin(async move {
            let (id, wire) = self.sign(&request);
            let topic = topic::topic(&request.tenant, &request.gateway, Channel::Command);
            self.downlink.publish(topic, wire, false).await.map_err(|e| PathError::Publish(e.to_string()))?;
            Ok(id)
        })
    }

    fn acks(&self) -> broadcast::Receiver<(String, CommandAck)> {
        self.acks.subscribe()
    }

    fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }
}

/// Reads the 32-byte key, or makes one (mode 0600, written to a temporary file, fsynced,
/// renamed) if there is none.
pub fn load_or_create_key(path: &Path) -> Result<SigningKey, PathError> {
    let err = |e: std::io::Error| PathError::Key { path: path.to_path_buf(), reason: e.to_string() };
    match std::fs::read(path) {
        Ok(bytes) => {
            let bytes: [u8; 32] = bytes.try_into().map_err(|_| PathError::Key {
                path: path.to_path_buf(),
                reason:
                    "not a 32-byte Ed25519 key; move it away to make a new one (speakers then need the new public key)"
                        .into(),
            })?;
            Ok(SigningKey::from_bytes(&bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SigningKey::generate(&mut rand_core::OsRng);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(err)?;
            }
            let tmp = path.with_extension("tmp");
            let _ = std::fs::remove_file(&tmp);
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut f = options.open(&tmp).map_err(err)?;
            f.write_all(&key.to_bytes()).map_err(err)?;
            f.sync_all().map_err(err)?;
            std::fs::rename(&tmp, path).map_err(err)?;
            tracing::info!(message = "Made a new command signing key.", file = %path.display());
            Ok(key)
        }
        Err(e) => Err(err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let a = load_or_create_key(&path).unwrap();
        assert_eq!(load_or_create_key(&path).unwrap().to_bytes(), a.to_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::write(&path, b"short").unwrap();
        assert!(load_or_create_key(&path).is_err());
    }
}
