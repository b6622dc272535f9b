//! The command path: how the dispatcher gets a signed command to one speaker and hears
//! back, behind one small trait so that tests can stand in for the transport without the
//! dispatcher knowing.
//!
//! [`CommandPath`] is "sign these commands for these speakers, send them through their
//! gateways, and give me the acks". In production it is ingest's
//! [`Commander`](crate::command::Commander): the same Ed25519 key (`data_dir/command.key`),
//! the same id sequence and audit log (`data_dir/commands.audit.jsonl`) and the same ack
//! stream as every other command, so a gateway configured with ingest's `command_key`
//! verifies a broadcast exactly as it verifies a pump write.
//!
//! Design constraints:
//! - One key and one id sequence for everything ingest signs: a gateway keeps one replay
//!   window per issuer, and two sequences from one key would refuse each other's ids.
//! - A batch ([`CommandPath::send_all`]) is signed and audited with one fsync, then
//!   published, so a thousand-speaker broadcast does not wait on a thousand fsyncs.

use std::future::Future;
use std::pin::Pin;

use protocol::Timestamp;
use protocol::command::{Action, CommandAck};
use tokio::sync::broadcast;

use crate::command::{Commander, Issue};

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
    /// The command could not be signed, audited or published.
    #[error("sending a command: {0}")]
    Send(String),
}

/// A boxed future, so the trait stays object-safe.
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<u64, PathError>> + Send + 'a>>;

/// A boxed future of a batch's results, one per request in order.
pub type SendAllFuture<'a> = Pin<Box<dyn Future<Output = Vec<Result<u64, PathError>>> + Send + 'a>>;

/// Sends signed commands to speakers and hears their acks.
pub trait CommandPath: Send + Sync + 'static {
    /// Signs `request`, sends it towards the speaker, and returns the command id.
    fn send(&self, request: CommandRequest) -> SendFuture<'_>;

    /// Sends a batch; one result per request, in order. The default sends one by one.
    fn send_all(&self, requests: Vec<CommandRequest>) -> SendAllFuture<'_> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(requests.len());
            for r in requests {
                out.push(self.send(r).await);
            }
            out
        })
    }

    /// Acks as they arrive: `(gateway, ack)`.
    fn acks(&self) -> broadcast::Receiver<(String, CommandAck)>;

    /// The public key speakers and gateways verify with.
    fn public_key(&self) -> [u8; 32];

    /// Makes every later command id larger than `id`, the highest the broadcast audit log
    /// knows (a replay window refuses an id it has seen or one far below the highest).
    fn ids_above(&self, id: u64) {
        let _ = id;
    }
}

fn issue_of(r: CommandRequest) -> Issue {
    Issue {
        tenant: r.tenant,
        gateway: r.gateway,
        device: r.device,
        action: r.action,
        ttl: std::time::Duration::ZERO,
        expires_at: Some(r.expires_at),
        issued_by: r.issued_by,
    }
}

impl CommandPath for Commander {
    fn send(&self, request: CommandRequest) -> SendFuture<'_> {
        Box::pin(async move { self.issue(issue_of(request)).await.map_err(|e| PathError::Send(e.to_string())) })
    }

    fn send_all(&self, requests: Vec<CommandRequest>) -> SendAllFuture<'_> {
        Box::pin(async move {
            let issues = requests.into_iter().map(issue_of).collect();
            self.issue_all(issues).await.into_iter().map(|r| r.map_err(|e| PathError::Send(e.to_string()))).collect()
        })
    }

    fn acks(&self) -> broadcast::Receiver<(String, CommandAck)> {
        self.subscribe()
    }

    fn public_key(&self) -> [u8; 32] {
        Commander::public_key(self)
    }

    fn ids_above(&self, id: u64) {
        Commander::ids_above(self, id);
    }
}
