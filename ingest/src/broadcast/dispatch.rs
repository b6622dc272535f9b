//! The dispatcher: releases broadcasts, sends each speaker its signed command, follows the
//! speakers' acks, retries, expires and cancels, and writes every step to the audit log.
//!
//! Design constraints:
//! - One task owns every change. API calls, acks and timers reach it as messages; it
//!   takes all that are waiting, applies them under one lock, writes the resulting audit
//!   events with one group-committed fsync, and only then replies, publishes commands and
//!   tells live subscribers. Nothing reaches a speaker that the audit log does not have,
//!   and no two changes race.
//! - Event-sourced: every change is an [`AuditEvent`], and [`State::apply`] is the only
//!   code that changes state, live and on replay alike. After a restart, replaying the
//!   audit log rebuilds every broadcast and delivery exactly; only timers (retry, ack
//!   deadline) are runtime and restart from "now": queued deliveries are sent at once,
//!   sent ones get a fresh ack deadline.
//! - Deliveries move only as [`super::model::Delivery::advance`] allows: a late ack never
//!   moves one backwards, a stale failure of an older attempt never requeues a newer one,
//!   and only the gateway a command went to may ack it.
//! - A speaker's state is the speaker's word: an ack that says `delivered`, `playing`,
//!   `played`, `interrupted` or `done`, or carries a receipt at all, is acted on only if
//!   its [`protocol::receipt`] verifies with the key enrolled for that speaker (checked
//!   before the dispatcher's lock, `check_receipt`) and names this command, speaker,
//!   gateway and broadcast, a state that supports the ack's, and a counter not older than
//!   the last one accepted for the delivery (`receipt_verdict`). Anything else is
//!   refused under a fixed reason (`broadcast_receipts_refused{reason}`) and reaches
//!   neither the audit log nor the delivery. The gateway's own findings (`failed`: the
//!   speaker did not answer; `refused` by the gateway's checks) carry no receipt and can
//!   never say that anything played. An accepted receipt is kept in the audit event, so
//!   the log holds the speaker's signature of every state it recorded.
//! - Retries: a command with no ack within `ack_timeout`, or one the gateway could not
//!   carry out (speaker offline: the Modbus write timed out), goes back to `queued` and is
//!   sent again as a new command (new id, same broadcast id, so the speaker never plays
//!   it twice) after a backoff that doubles from `backoff_initial` to `backoff_max`, with
//!   ±20 % jitter per speaker. Retries stop at expiry. A refusal (forged, tampered,
//!   expired, replayed) or the speaker's own failure (amplifier) is final: retrying a
//!   refused command would not make it better, and the refusal is audited.
//! - Pre-emption happens on the speaker; the dispatcher only records it (`preempted`,
//!   then `playing` again or `interrupted`), so a red broadcast never waits for ingest.
//! - Cancel marks every unfinished delivery `cancelled` at once and sends a `Stop` to each
//!   speaker that may have the broadcast, retried until confirmed or expired.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use protocol::Timestamp;
use protocol::command::{AckState, Action, CommandAck, Playback};
use protocol::receipt::SignedReceipt;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::audit::Audit;
use super::config::DispatchConfig;
use super::model::{Broadcast, BroadcastId, BroadcastState, Delivery, DeliveryState, Stop};
use super::path::{CommandPath, CommandRequest};
use super::{BroadcastError, Live};
use crate::auth::Principal;
use crate::time::Clock;

/// One event of the audit log, and the only way state changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AuditEvent {
    /// A broadcast was created, with the speakers its targets resolved to (speaker ->
    /// gateway). Without approval it is released at once: every delivery `queued`.
    Created {
        /// The broadcast.
        broadcast: Box<Broadcast>,
        /// Whether it waits for a second operator.
        needs_approval: bool,
        /// Speaker -> gateway.
        speakers: BTreeMap<String, String>,
    },
    /// A second operator approved it: released, every delivery `queued`.
    Approved {
        /// The broadcast.
        broadcast: BroadcastId,
        /// Who approved.
        by: String,
    },
    /// A second operator refused to release it, with the reason: nothing was sent, every
    /// delivery is `cancelled`, and it is final.
    Rejected {
        /// The broadcast.
        broadcast: BroadcastId,
        /// Who refused it.
        by: String,
        /// Why, in their words.
        reason: String,
    },
    /// An operator cancelled it.
    Cancelled {
        /// The broadcast.
        broadcast: BroadcastId,
        /// Who cancelled.
        by: String,
    },
    /// A delivery changed state.
    Delivery {
        /// The broadcast.
        broadcast: BroadcastId,
        /// The speaker.
        speaker: String,
        /// The new state.
        state: DeliveryState,
        /// Commands sent so far for it.
        attempt: u32,
        /// The command concerned (the one just sent, or the one acked).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        command: Option<u64>,
        /// Why (refusal check, gateway error, speaker reason).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// The speaker's signed receipt this state was recorded on (the proof that it
        /// played, checkable later with the speaker's public key).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        receipt: Option<Box<SignedReceipt>>,
    },
    /// A `Stop` went to a speaker of a cancelled broadcast.
    StopSent {
        /// The broadcast.
        broadcast: BroadcastId,
        /// The speaker.
        speaker: String,
        /// The stop command's id.
        command: u64,
    },
    /// The speaker (or its gateway) confirmed the stop.
    StopConfirmed {
        /// The broadcast.
        broadcast: BroadcastId,
        /// The speaker.
        speaker: String,
        /// The command that confirmed it.
        command: u64,
    },
    /// A gateway or speaker refused a command: forged, tampered, expired, replayed,
    /// misaddressed. Recorded whether or not the command is one of ours.
    Refused {
        /// The gateway that reported it.
        gateway: String,
        /// The device it named, if known.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        device: String,
        /// The command id the envelope claimed.
        command: u64,
        /// The check that failed.
        reason: String,
        /// The broadcast, when the id is one of ours.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        broadcast: Option<BroadcastId>,
        /// The speaker, when the id is one of ours.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        speaker: Option<String>,
    },
    /// The broadcast finished: completed (every delivery final) or expired unapproved.
    Finished {
        /// The broadcast.
        broadcast: BroadcastId,
        /// `completed` or `expired`.
        state: BroadcastState,
    },
}

/// A refusal as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// When it was recorded.
    pub at: Timestamp,
    /// The gateway that reported it.
    pub gateway: String,
    /// The speaker.
    pub speaker: Option<String>,
    /// The command id the envelope claimed.
    pub command: u64,
    /// The check that failed.
    pub reason: String,
}

/// A broadcast with its deliveries.
#[derive(Debug, Clone)]
pub struct Record {
    /// The broadcast.
    pub broadcast: Broadcast,
    /// Where it stands.
    pub state: BroadcastState,
    /// Whether it needed a second operator.
    pub needs_approval: bool,
    /// Who approved it.
    pub approved_by: Option<String>,
    /// When.
    pub approved_at: Option<Timestamp>,
    /// When it was released to the speakers (approval, or creation without one).
    pub released_at: Option<Timestamp>,
    /// Who refused to release it, when, and why.
    pub rejected: Option<Rejection>,
    /// Who cancelled it.
    pub cancelled_by: Option<String>,
    /// When.
    pub cancelled_at: Option<Timestamp>,
    /// When it finished.
    pub finished_at: Option<Timestamp>,
    /// Per speaker.
    pub deliveries: BTreeMap<String, Delivery>,
    /// Refusals of its commands.
    pub refusals: Vec<Refusal>,
    /// Its decisions, oldest first.
    pub trail: Vec<TrailEntry>,
}

fn entry(at: Timestamp, action: &'static str, by: Option<&str>, reason: Option<&str>) -> TrailEntry {
    TrailEntry { at, action, by: by.map(str::to_string), reason: reason.map(str::to_string) }
}

/// A second operator's refusal to release a broadcast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// Who refused it.
    pub by: String,
    /// When.
    pub at: Timestamp,
    /// Why.
    pub reason: String,
}

/// One decision in a broadcast's life, for its trail on the page: what the audit log says
/// about the broadcast as a whole (per-speaker steps are on each delivery).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrailEntry {
    /// When it was recorded.
    pub at: Timestamp,
    /// `created`, `approved`, `rejected`, `cancelled`, `completed` or `expired`.
    pub action: &'static str,
    /// Who did it (none for what the dispatcher concluded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The reason given (a rejection's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What a command id stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CommandRef {
    broadcast: BroadcastId,
    speaker: String,
    stop: bool,
}

/// Everything the dispatcher knows.
#[derive(Debug, Default)]
pub struct State {
    records: BTreeMap<BroadcastId, Record>,
    commands: HashMap<u64, CommandRef>,
    /// Highest command id seen in the log (for the command path's id counter).
    pub(crate) last_command: u64,
    last_id: BroadcastId,
    /// Runtime timers: when a delivery is next due (send, or its ack deadline).
    due: HashMap<(BroadcastId, String), Timestamp>,
    /// Runtime timers of stops not yet confirmed.
    stop_due: HashMap<(BroadcastId, String), Timestamp>,
    /// Refusals of commands that are not ours (forgeries), newest last, bounded.
    pub(crate) foreign_refusals: Vec<Refusal>,
    /// Per delivery: the highest receipt counter accepted (rebuilt from the audit log).
    receipt_counters: HashMap<(BroadcastId, String), u64>,
}

const MAX_FOREIGN_REFUSALS: usize = 1000;

impl State {
    /// A broadcast.
    pub fn record(&self, id: BroadcastId) -> Option<&Record> {
        self.records.get(&id)
    }

    /// Every broadcast, oldest first.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.records.values()
    }

    /// The next broadcast id: above every one used and at least the clock in ms, so ids
    /// stay unique across a reset of the data directory (speakers remember recent ids).
    fn next_id(&mut self, now: Timestamp) -> BroadcastId {
        self.last_id = (self.last_id + 1).max(u64::try_from(now.0).unwrap_or(0));
        self.last_id
    }

    /// Applies one event. The only place that changes broadcasts and deliveries.
    pub fn apply(&mut self, event: &AuditEvent, at: Timestamp) {
        match event {
            AuditEvent::Created { broadcast, needs_approval, speakers } => {
                let state = if *needs_approval { DeliveryState::Pending } else { DeliveryState::Queued };
                let deliveries =
                    speakers.iter().map(|(s, g)| (s.clone(), Delivery::new(s.clone(), g.clone(), state, at))).collect();
                self.last_id = self.last_id.max(broadcast.id);
                self.records.insert(
                    broadcast.id,
                    Record {
                        broadcast: (**broadcast).clone(),
                        state: if *needs_approval { BroadcastState::PendingApproval } else { BroadcastState::Active },
                        needs_approval: *needs_approval,
                        approved_by: None,
                        approved_at: None,
                        released_at: (!needs_approval).then_some(at),
                        rejected: None,
                        cancelled_by: None,
                        cancelled_at: None,
                        finished_at: None,
                        deliveries,
                        refusals: Vec::new(),
                        trail: vec![entry(at, "created", Some(&broadcast.created_by), None)],
                    },
                );
            }
            AuditEvent::Approved { broadcast, by } => {
                if let Some(r) = self.records.get_mut(broadcast) {
                    r.state = BroadcastState::Active;
                    r.approved_by = Some(by.clone());
                    r.approved_at = Some(at);
                    r.released_at = Some(at);
                    r.trail.push(entry(at, "approved", Some(by), None));
                    for d in r.deliveries.values_mut() {
                        d.advance(DeliveryState::Queued, None, at);
                    }
                }
            }
            AuditEvent::Rejected { broadcast, by, reason } => {
                if let Some(r) = self.records.get_mut(broadcast) {
                    r.state = BroadcastState::Rejected;
                    r.rejected = Some(Rejection { by: by.clone(), at, reason: reason.clone() });
                    r.finished_at = Some(at);
                    r.trail.push(entry(at, "rejected", Some(by), Some(reason)));
                    for d in r.deliveries.values_mut() {
                        d.advance(DeliveryState::Cancelled, Some(format!("rejected by {by}: {reason}")), at);
                    }
                }
            }
            AuditEvent::Cancelled { broadcast, by } => {
                if let Some(r) = self.records.get_mut(broadcast) {
                    r.state = BroadcastState::Cancelled;
                    r.cancelled_by = Some(by.clone());
                    r.cancelled_at = Some(at);
                    r.trail.push(entry(at, "cancelled", Some(by), None));
                }
            }
            AuditEvent::Delivery { broadcast, speaker, state, attempt, command, reason, receipt } => {
                if let Some(r) = receipt {
                    let last = self.receipt_counters.entry((*broadcast, speaker.clone())).or_default();
                    *last = (*last).max(r.receipt.counter);
                }
                if let Some(d) = self.records.get_mut(broadcast).and_then(|r| r.deliveries.get_mut(speaker)) {
                    d.advance(*state, reason.clone(), at);
                    d.attempts = d.attempts.max(*attempt);
                    if *state == DeliveryState::Sent
                        && let Some(id) = command
                    {
                        if !d.commands.contains(id) {
                            d.commands.push(*id);
                        }
                        self.commands
                            .insert(*id, CommandRef { broadcast: *broadcast, speaker: speaker.clone(), stop: false });
                    }
                }
                if let Some(id) = command {
                    self.last_command = self.last_command.max(*id);
                }
            }
            AuditEvent::StopSent { broadcast, speaker, command } => {
                if let Some(d) = self.records.get_mut(broadcast).and_then(|r| r.deliveries.get_mut(speaker)) {
                    d.stop.get_or_insert(Stop { commands: Vec::new(), confirmed: false }).commands.push(*command);
                }
                self.commands
                    .insert(*command, CommandRef { broadcast: *broadcast, speaker: speaker.clone(), stop: true });
                self.last_command = self.last_command.max(*command);
            }
            AuditEvent::StopConfirmed { broadcast, speaker, .. } => {
                if let Some(s) = self
                    .records
                    .get_mut(broadcast)
                    .and_then(|r| r.deliveries.get_mut(speaker))
                    .and_then(|d| d.stop.as_mut())
                {
                    s.confirmed = true;
                }
            }
            AuditEvent::Refused { gateway, device, command, reason, broadcast, speaker } => {
                let refusal = Refusal {
                    at,
                    gateway: gateway.clone(),
                    speaker: speaker.clone().or_else(|| (!device.is_empty()).then(|| device.clone())),
                    command: *command,
                    reason: reason.clone(),
                };
                match broadcast.and_then(|b| self.records.get_mut(&b)) {
                    Some(r) => r.refusals.push(refusal),
                    None => {
                        self.foreign_refusals.push(refusal);
                        if self.foreign_refusals.len() > MAX_FOREIGN_REFUSALS {
                            self.foreign_refusals.remove(0);
                        }
                    }
                }
            }
            AuditEvent::Finished { broadcast, state } => {
                if let Some(r) = self.records.get_mut(broadcast) {
                    r.state = *state;
                    r.finished_at = Some(at);
                    r.trail.push(entry(at, state.as_str(), None, None));
                    if *state == BroadcastState::Expired {
                        for d in r.deliveries.values_mut() {
                            d.advance(DeliveryState::Expired, Some("expired before approval".into()), at);
                        }
                    }
                }
            }
        }
    }

    /// After a replay: timers from now. Queued deliveries are due at once, sent ones get
    /// a fresh ack deadline, unconfirmed stops are sent again.
    pub fn resume(&mut self, now: Timestamp, config: &DispatchConfig) {
        for r in self.records.values() {
            for (s, d) in &r.deliveries {
                let key = (r.broadcast.id, s.clone());
                match (r.state, d.state) {
                    (BroadcastState::Active, DeliveryState::Queued) => {
                        self.due.insert(key, now);
                    }
                    (BroadcastState::Active, DeliveryState::Sent) => {
                        self.due.insert(key, later(now, config.ack_timeout));
                    }
                    (BroadcastState::Cancelled, _) if d.stop.as_ref().is_some_and(|s| !s.confirmed) => {
                        self.stop_due.insert(key, now);
                    }
                    _ => {}
                }
            }
        }
    }
}

fn later(t: Timestamp, d: Duration) -> Timestamp {
    Timestamp(t.0.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
}

/// Retry delay after `attempts` sends: doubling from the initial delay to the cap, ±20 %
/// by a hash of the speaker so that a village's speakers do not retry in lockstep.
pub fn backoff(config: &DispatchConfig, attempts: u32, speaker: &str) -> Duration {
    let base =
        config.backoff_initial.saturating_mul(1u32 << attempts.saturating_sub(1).min(16)).min(config.backoff_max);
    let h = speaker.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3));
    let jitter = 0.8 + 0.4 * ((h % 1000) as f64 / 1000.0);
    base.mul_f64(jitter)
}

/// A command to send, decided under the lock and sent after the audit is durable.
#[derive(Debug, Clone)]
struct Outgoing {
    broadcast: BroadcastId,
    speaker: String,
    request: CommandRequest,
    stop: bool,
}

/// What one step of the dispatcher produced.
#[derive(Default)]
struct Effects {
    audit: Vec<(Timestamp, AuditEvent)>,
    sends: Vec<Outgoing>,
    replies: Vec<Reply>,
    touched: BTreeSet<BroadcastId>,
}

enum Reply {
    Id(oneshot::Sender<Result<BroadcastId, BroadcastError>>, Result<BroadcastId, BroadcastError>),
}

/// A request to the dispatcher.
pub(crate) enum Msg {
    Create {
        broadcast: Box<Broadcast>,
        needs_approval: bool,
        speakers: BTreeMap<String, String>,
        reply: oneshot::Sender<Result<BroadcastId, BroadcastError>>,
    },
    Approve {
        id: BroadcastId,
        by: Principal,
        reply: oneshot::Sender<Result<BroadcastId, BroadcastError>>,
    },
    Reject {
        id: BroadcastId,
        by: Principal,
        reason: String,
        reply: oneshot::Sender<Result<BroadcastId, BroadcastError>>,
    },
    Cancel {
        id: BroadcastId,
        by: Principal,
        reply: oneshot::Sender<Result<BroadcastId, BroadcastError>>,
    },
    /// An ack from a gateway, with what the check of its receipt's signature found.
    Ack(String, CommandAck, ReceiptCheck),
}

/// What checking the signature of an ack's receipt found: done as acks arrive, before
/// the dispatcher's lock, since it is the one costly step (an Ed25519 verification).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReceiptCheck {
    /// The ack carries no receipt.
    Absent,
    /// The speaker it names has no key enrolled.
    NoKey,
    /// It does not verify with that speaker's key (or is not a signature).
    Bad,
    /// It verifies with the key enrolled for the speaker it names.
    Verified,
}

/// Checks the signature of an ack's receipt against the key enrolled for the speaker the
/// receipt names. Whether it is the right speaker, command and state is
/// [`receipt_verdict`]'s business, under the lock.
pub(crate) fn check_receipt(inventory: &crate::inventory::Inventory, ack: &CommandAck) -> ReceiptCheck {
    let Some(signed) = &ack.receipt else { return ReceiptCheck::Absent };
    let Some(key) = inventory.speaker_key(&signed.receipt.device) else { return ReceiptCheck::NoKey };
    match signed.verify(&key) {
        Ok(()) => ReceiptCheck::Verified,
        Err(_) => ReceiptCheck::Bad,
    }
}

/// Refusal codes of acks whose receipt does not prove them (the label values of
/// `broadcast_receipts_refused`).
pub mod receipt_reason {
    /// A state only the speaker can tell (`delivered`, `playing`, `played`,
    /// `interrupted`, `done`) without the speaker's receipt.
    pub const MISSING: &str = "receipt_missing";
    /// The speaker has no key enrolled: none of its states can be recorded.
    pub const NO_KEY: &str = "receipt_no_key";
    /// The receipt does not verify with the speaker's key: not the speaker's word.
    pub const BAD_SIGNATURE: &str = "receipt_bad_signature";
    /// A real receipt of another command, speaker, gateway, broadcast, or of a state that
    /// does not support the ack's (a `playing` offered as `played`).
    pub const MISMATCH: &str = "receipt_mismatch";
    /// Older than a receipt already accepted for this delivery: a replay.
    pub const REPLAYED: &str = "receipt_replayed";
}

/// Whether `ack` (for command `ack.id` of `broadcast` to `speaker` behind `gateway`) may
/// be acted on, given its receipt's signature check and the highest receipt counter
/// accepted for the delivery so far; the refusal code if not.
pub(crate) fn receipt_verdict(
    ack: &CommandAck,
    check: ReceiptCheck,
    gateway: &str,
    broadcast: BroadcastId,
    speaker: &str,
    last_counter: u64,
) -> Result<(), &'static str> {
    let speaker_word = matches!(
        ack.state,
        AckState::Delivered | AckState::Playing | AckState::Played | AckState::Interrupted | AckState::Done
    );
    let Some(signed) = &ack.receipt else {
        return if speaker_word { Err(receipt_reason::MISSING) } else { Ok(()) };
    };
    match check {
        ReceiptCheck::Verified => {}
        ReceiptCheck::NoKey => return Err(receipt_reason::NO_KEY),
        ReceiptCheck::Bad | ReceiptCheck::Absent => return Err(receipt_reason::BAD_SIGNATURE),
    }
    // The command id binds the receipt; the broadcast id is checked when the terminal
    // knew it (0 on a refusal of an envelope it could not open).
    let r = &signed.receipt;
    if r.command != ack.id
        || r.device != speaker
        || r.gateway != gateway
        || (r.broadcast != broadcast && r.broadcast != 0)
        || !r.supports(ack.state)
    {
        return Err(receipt_reason::MISMATCH);
    }
    if r.counter < last_counter {
        return Err(receipt_reason::REPLAYED);
    }
    Ok(())
}

/// Label of a delivery state.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// The state.
    pub state: String,
}

/// Label of a refusal reason.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The check that failed (`bad_signature`, `replayed`, ...).
    pub reason: String,
}

/// Label of a receipt refusal: one of [`receipt_reason`]'s codes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReceiptLabel {
    /// The code.
    pub reason: &'static str,
}

/// Label of a command kind.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `play` or `stop`.
    pub kind: &'static str,
}

/// The dispatcher's Prometheus metrics (registered under ingest's prefix).
#[derive(Clone)]
pub struct DispatchMetrics {
    /// Delivery state changes, by new state.
    pub transitions: Family<StateLabel, Counter>,
    /// Commands sent, by kind.
    pub commands: Family<KindLabel, Counter>,
    /// Commands refused by a gateway or speaker, by reason.
    pub refusals: Family<ReasonLabel, Counter>,
    /// Acks refused because the speaker's receipt does not prove them, by code.
    pub receipt_refusals: Family<ReceiptLabel, Counter>,
    /// Time from a broadcast's release to each speaker's first `playing`.
    pub release_to_playing: Histogram,
    /// Time of one audit append (one fsync for the events of a step).
    pub audit_append: Histogram,
    /// Broadcasts not finished.
    pub active: Gauge,
}

impl DispatchMetrics {
    /// New metrics, registered with ingest's registry.
    pub fn register(metrics: &crate::metrics::Metrics) -> DispatchMetrics {
        let m = DispatchMetrics {
            transitions: Family::default(),
            commands: Family::default(),
            refusals: Family::default(),
            receipt_refusals: Family::default(),
            release_to_playing: Histogram::new(exponential_buckets(0.05, 2.0, 12)),
            audit_append: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            active: Gauge::default(),
        };
        metrics.register(
            "broadcast_delivery_transitions",
            "Broadcast delivery state changes, by new state",
            m.transitions.clone(),
        );
        metrics.register("broadcast_commands_sent", "Signed broadcast commands sent, by kind", m.commands.clone());
        metrics.register(
            "broadcast_refusals",
            "Commands refused by a gateway or speaker, by reason",
            m.refusals.clone(),
        );
        metrics.register(
            "broadcast_receipts_refused",
            "Speaker acks refused because the speaker's signed receipt does not prove them, by reason",
            m.receipt_refusals.clone(),
        );
        metrics.register(
            "broadcast_release_to_playing_seconds",
            "Time from a broadcast's release (approval) to each speaker's first playing",
            m.release_to_playing.clone(),
        );
        metrics.register(
            "broadcast_audit_append_seconds",
            "Time of one durable broadcast audit append",
            m.audit_append.clone(),
        );
        metrics.register("broadcast_active", "Broadcasts not finished", m.active.clone());
        m
    }
}

/// Locks the state, recovering from a panic in another holder (every step leaves it
/// consistent: events are applied whole).
pub(crate) fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The dispatcher task.
pub(crate) struct Dispatcher {
    pub(crate) state: Arc<Mutex<State>>,
    pub(crate) path: Arc<dyn CommandPath>,
    pub(crate) audit: Audit,
    pub(crate) rx: mpsc::UnboundedReceiver<Msg>,
    pub(crate) live: broadcast::Sender<Live>,
    pub(crate) metrics: DispatchMetrics,
    pub(crate) clock: Clock,
    pub(crate) config: DispatchConfig,
}

impl Dispatcher {
    /// Runs until `shutdown`.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let wait = self.next_wait();
            let mut msgs = Vec::new();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                m = self.rx.recv() => match m {
                    Some(m) => msgs.push(m),
                    None => return,
                },
                _ = tokio::time::sleep(wait) => {}
            }
            while let Ok(m) = self.rx.try_recv() {
                msgs.push(m);
            }
            let now = (self.clock)();
            let mut fx = Effects::default();
            {
                let mut st = lock(&self.state);
                for m in msgs {
                    self.handle(&mut st, m, now, &mut fx);
                }
                self.tick(&mut st, now, &mut fx);
                self.finish(&mut st, now, &mut fx);
            }
            self.commit(fx).await;
        }
    }

    /// Time until the next timer, at most a second (expiry is checked then too).
    fn next_wait(&self) -> Duration {
        let now = (self.clock)();
        let st = lock(&self.state);
        let next = st.due.values().chain(st.stop_due.values()).min().copied();
        let ms = next.map_or(1000, |t| (t.0 - now.0).clamp(0, 1000));
        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }

    /// Applies an event now and queues it for the audit log.
    fn emit(&self, st: &mut State, now: Timestamp, event: AuditEvent, fx: &mut Effects) {
        if let AuditEvent::Delivery { broadcast, speaker, state, .. } = &event {
            let first = st
                .records
                .get(broadcast)
                .and_then(|r| r.deliveries.get(speaker))
                .is_some_and(|d| !d.reached.contains_key(state));
            self.metrics.transitions.get_or_create(&StateLabel { state: state.as_str().into() }).inc();
            if first
                && *state == DeliveryState::Playing
                && let Some(released) = st.records.get(broadcast).and_then(|r| r.released_at)
            {
                self.metrics.release_to_playing.observe((now.0 - released.0).max(0) as f64 / 1000.0);
            }
        }
        if let Some(b) = broadcast_of(&event) {
            fx.touched.insert(b);
        }
        st.apply(&event, now);
        fx.audit.push((now, event));
    }

    fn handle(&self, st: &mut State, msg: Msg, now: Timestamp, fx: &mut Effects) {
        match msg {
            Msg::Create { broadcast, needs_approval, speakers, reply } => {
                let mut broadcast = *broadcast;
                broadcast.id = st.next_id(now);
                broadcast.created_at = now;
                let id = broadcast.id;
                tracing::info!(
                    message = "Broadcast created.",
                    broadcast = id,
                    level = super::model::level_name(broadcast.level),
                    speakers = speakers.len(),
                    needs_approval,
                    by = %broadcast.created_by
                );
                let keys: Vec<String> = speakers.keys().cloned().collect();
                self.emit(
                    st,
                    now,
                    AuditEvent::Created { broadcast: Box::new(broadcast), needs_approval, speakers },
                    fx,
                );
                if !needs_approval {
                    for s in keys {
                        st.due.insert((id, s), now);
                    }
                }
                fx.replies.push(Reply::Id(reply, Ok(id)));
            }
            Msg::Approve { id, by, reply } => {
                let result = self.approve(st, id, &by, now, fx);
                fx.replies.push(Reply::Id(reply, result.map(|()| id)));
            }
            Msg::Reject { id, by, reason, reply } => {
                let result = self.reject(st, id, &by, reason, now, fx);
                fx.replies.push(Reply::Id(reply, result.map(|()| id)));
            }
            Msg::Cancel { id, by, reply } => {
                let result = self.cancel(st, id, &by, now, fx);
                fx.replies.push(Reply::Id(reply, result.map(|()| id)));
            }
            Msg::Ack(gateway, ack, check) => self.on_ack(st, &gateway, ack, check, now, fx),
        }
    }

    fn approve(
        &self,
        st: &mut State,
        id: BroadcastId,
        by: &Principal,
        now: Timestamp,
        fx: &mut Effects,
    ) -> Result<(), BroadcastError> {
        let r = st.records.get(&id).ok_or(BroadcastError::NotFound(id))?;
        if r.state != BroadcastState::PendingApproval {
            return Err(BroadcastError::Conflict(format!(
                "broadcast {id} is {}, not waiting for approval",
                serde_json::to_value(r.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
            )));
        }
        if r.broadcast.created_by == by.name {
            return Err(BroadcastError::Forbidden(format!(
                "'{}' created broadcast {id}; a second, different operator must approve it",
                by.name
            )));
        }
        if now >= r.broadcast.expires_at {
            return Err(BroadcastError::Conflict(format!("broadcast {id} has expired")));
        }
        let speakers: Vec<String> = r.deliveries.keys().cloned().collect();
        tracing::info!(message = "Broadcast approved.", broadcast = id, by = %by.name);
        self.emit(st, now, AuditEvent::Approved { broadcast: id, by: by.name.clone() }, fx);
        for s in speakers {
            st.due.insert((id, s), now);
        }
        Ok(())
    }

    /// A second operator refuses to release a pending broadcast. Like approval, it is the
    /// decision of someone other than the creator (who cancels their own instead).
    fn reject(
        &self,
        st: &mut State,
        id: BroadcastId,
        by: &Principal,
        reason: String,
        now: Timestamp,
        fx: &mut Effects,
    ) -> Result<(), BroadcastError> {
        let r = st.records.get(&id).ok_or(BroadcastError::NotFound(id))?;
        if r.state != BroadcastState::PendingApproval {
            return Err(BroadcastError::Conflict(format!(
                "broadcast {id} is {}, not waiting for approval",
                r.state.as_str()
            )));
        }
        if r.broadcast.created_by == by.name {
            return Err(BroadcastError::Forbidden(format!(
                "'{}' created broadcast {id}; a second, different operator decides on it (the creator may cancel it)",
                by.name
            )));
        }
        tracing::warn!(message = "Broadcast rejected.", broadcast = id, by = %by.name, %reason);
        self.emit(st, now, AuditEvent::Rejected { broadcast: id, by: by.name.clone(), reason }, fx);
        Ok(())
    }

    fn cancel(
        &self,
        st: &mut State,
        id: BroadcastId,
        by: &Principal,
        now: Timestamp,
        fx: &mut Effects,
    ) -> Result<(), BroadcastError> {
        let r = st.records.get(&id).ok_or(BroadcastError::NotFound(id))?;
        if r.state.is_final() {
            return Err(BroadcastError::Conflict(format!("broadcast {id} has already finished")));
        }
        let deliveries: Vec<(String, DeliveryState, u32)> = r
            .deliveries
            .values()
            .filter(|d| !d.state.is_final())
            .map(|d| (d.speaker.clone(), d.state, d.attempts))
            .collect();
        tracing::warn!(message = "Broadcast cancelled.", broadcast = id, by = %by.name, unfinished = deliveries.len());
        self.emit(st, now, AuditEvent::Cancelled { broadcast: id, by: by.name.clone() }, fx);
        for (speaker, state, attempts) in deliveries {
            st.due.remove(&(id, speaker.clone()));
            let event = AuditEvent::Delivery {
                broadcast: id,
                speaker: speaker.clone(),
                state: DeliveryState::Cancelled,
                attempt: attempts,
                command: None,
                reason: Some(format!("cancelled by {}", by.name)),
                receipt: None,
            };
            self.emit(st, now, event, fx);
            if state.speaker_may_have_it() || (state == DeliveryState::Queued && attempts > 0) {
                st.stop_due.insert((id, speaker), now);
            }
        }
        Ok(())
    }

    fn on_ack(
        &self,
        st: &mut State,
        gateway: &str,
        ack: CommandAck,
        check: ReceiptCheck,
        now: Timestamp,
        fx: &mut Effects,
    ) {
        let reason = ack.reason.clone();
        let Some(cref) = st.commands.get(&ack.id).cloned() else {
            if ack.state == AckState::Refused {
                let reason = reason.unwrap_or_else(|| "refused".into());
                self.count_refusal(&reason);
                tracing::warn!(message = "A command that ingest did not issue was refused.", %gateway, id = ack.id, %reason);
                let event = AuditEvent::Refused {
                    gateway: gateway.into(),
                    device: ack.device.clone(),
                    command: ack.id,
                    reason,
                    broadcast: None,
                    speaker: None,
                };
                self.emit(st, now, event, fx);
            }
            return;
        };
        let Some(record) = st.records.get(&cref.broadcast) else { return };
        let cancelled = record.state == BroadcastState::Cancelled;
        let Some(d) = record.deliveries.get(&cref.speaker) else { return };
        if d.gateway != gateway {
            tracing::warn!(message = "Ack from a gateway the command did not go to; ignored.", %gateway, id = ack.id, expected = %d.gateway);
            return;
        }
        let latest = d.commands.last() == Some(&ack.id);
        let (state, attempts, stop) = (d.state, d.attempts, d.stop.clone());
        let key = (cref.broadcast, cref.speaker.clone());
        let last_counter = st.receipt_counters.get(&key).copied().unwrap_or(0);
        if let Err(code) = receipt_verdict(&ack, check, gateway, cref.broadcast, &cref.speaker, last_counter) {
            self.metrics.receipt_refusals.get_or_create(&ReceiptLabel { reason: code }).inc();
            tracing::warn!(
                message = "Ack refused: the speaker's own receipt does not prove it.",
                %gateway,
                speaker = %cref.speaker,
                id = ack.id,
                state = ?ack.state,
                reason = code
            );
            return;
        }
        if ack.state == AckState::Refused {
            let r = reason.clone().unwrap_or_else(|| "refused".into());
            self.count_refusal(&r);
            tracing::warn!(message = "Command refused.", %gateway, speaker = %cref.speaker, id = ack.id, reason = %r);
            let event = AuditEvent::Refused {
                gateway: gateway.into(),
                device: ack.device.clone(),
                command: ack.id,
                reason: r,
                broadcast: Some(cref.broadcast),
                speaker: Some(cref.speaker.clone()),
            };
            self.emit(st, now, event, fx);
        }
        if cref.stop {
            let confirmed = stop.is_some_and(|s| s.confirmed);
            match ack.state {
                AckState::Done | AckState::Delivered | AckState::Interrupted if !confirmed => {
                    st.stop_due.remove(&key);
                    let event =
                        AuditEvent::StopConfirmed { broadcast: cref.broadcast, speaker: cref.speaker, command: ack.id };
                    self.emit(st, now, event, fx);
                }
                AckState::Failed if !confirmed => {
                    st.stop_due.insert(key, later(now, backoff(&self.config, attempts, &cref.speaker)));
                }
                _ => {}
            }
            return;
        }
        let text = reason.clone().unwrap_or_default();
        let target = match ack.state {
            AckState::Delivered => Some(DeliveryState::Delivered),
            AckState::Playing => Some(DeliveryState::Playing),
            AckState::Played => Some(DeliveryState::Played),
            AckState::Interrupted if text.starts_with("preempted") => Some(DeliveryState::Preempted),
            AckState::Interrupted if text.starts_with("stopped") && cancelled => {
                if stop.as_ref().is_some_and(|s| !s.confirmed) {
                    st.stop_due.remove(&key);
                    let event = AuditEvent::StopConfirmed {
                        broadcast: cref.broadcast,
                        speaker: cref.speaker.clone(),
                        command: ack.id,
                    };
                    self.emit(st, now, event, fx);
                }
                None
            }
            AckState::Interrupted if text.starts_with("expired") => Some(DeliveryState::Expired),
            AckState::Interrupted => Some(DeliveryState::Interrupted),
            AckState::Refused if latest && matches!(state, DeliveryState::Queued | DeliveryState::Sent) => {
                Some(if text.starts_with("expired") { DeliveryState::Expired } else { DeliveryState::Failed })
            }
            AckState::Refused => None,
            AckState::Failed if is_speaker_verdict(&text) => {
                Some(if text.starts_with("expired") { DeliveryState::Expired } else { DeliveryState::Failed })
            }
            // The gateway could not reach the speaker: retry, unless a newer attempt is out.
            AckState::Failed if latest && matches!(state, DeliveryState::Sent | DeliveryState::Delivered) => {
                Some(DeliveryState::Queued)
            }
            AckState::Failed | AckState::Done => None,
        };
        let Some(target) = target else { return };
        if !super::model::allowed(state, target) {
            return;
        }
        let event = AuditEvent::Delivery {
            broadcast: cref.broadcast,
            speaker: cref.speaker.clone(),
            state: target,
            attempt: attempts,
            command: Some(ack.id),
            reason,
            receipt: ack.receipt,
        };
        self.emit(st, now, event, fx);
        match target {
            DeliveryState::Queued => {
                st.due.insert(key, later(now, backoff(&self.config, attempts, &cref.speaker)));
            }
            t if t.is_final() || t != DeliveryState::Sent => {
                st.due.remove(&key);
            }
            _ => {}
        }
    }

    fn count_refusal(&self, reason: &str) {
        let code = reason.split([':', ' ']).next().unwrap_or("refused").to_string();
        self.metrics.refusals.get_or_create(&ReasonLabel { reason: code }).inc();
    }

    /// Sends what is due, times out what waited too long, expires what is past expiry.
    fn tick(&self, st: &mut State, now: Timestamp, fx: &mut Effects) {
        let due: Vec<(BroadcastId, String)> =
            st.due.iter().filter(|(_, t)| **t <= now).map(|(k, _)| k.clone()).collect();
        for key in due {
            st.due.remove(&key);
            let Some(r) = st.records.get(&key.0) else { continue };
            if r.state != BroadcastState::Active {
                continue;
            }
            let Some(d) = r.deliveries.get(&key.1) else { continue };
            match d.state {
                DeliveryState::Queued if now < r.broadcast.expires_at => {
                    let b = &r.broadcast;
                    let request = CommandRequest {
                        tenant: b.tenant.clone(),
                        gateway: d.gateway.clone(),
                        device: d.speaker.clone(),
                        action: Action::Play(Playback {
                            broadcast: b.id,
                            level: b.level,
                            content: b.content.clone(),
                            repeat: b.repeat,
                            volume: b.volume,
                            start_at: b.start_at,
                        }),
                        expires_at: b.expires_at,
                        issued_by: r.approved_by.clone().unwrap_or_else(|| b.created_by.clone()),
                    };
                    fx.sends.push(Outgoing { broadcast: key.0, speaker: key.1.clone(), request, stop: false });
                }
                DeliveryState::Sent => {
                    // No ack at all: the gateway may be offline. Send again.
                    let event = AuditEvent::Delivery {
                        broadcast: key.0,
                        speaker: key.1.clone(),
                        state: DeliveryState::Queued,
                        attempt: d.attempts,
                        command: None,
                        reason: Some(format!("no ack within {} ms", self.config.ack_timeout.as_millis())),
                        receipt: None,
                    };
                    let attempts = d.attempts;
                    self.emit(st, now, event, fx);
                    st.due.insert(key.clone(), later(now, backoff(&self.config, attempts, &key.1)));
                }
                _ => {}
            }
        }
        let stops: Vec<(BroadcastId, String)> =
            st.stop_due.iter().filter(|(_, t)| **t <= now).map(|(k, _)| k.clone()).collect();
        for key in stops {
            st.stop_due.remove(&key);
            let Some(r) = st.records.get(&key.0) else { continue };
            let Some(d) = r.deliveries.get(&key.1) else { continue };
            if d.stop.as_ref().is_some_and(|s| s.confirmed) || now >= r.broadcast.expires_at {
                continue;
            }
            let request = CommandRequest {
                tenant: r.broadcast.tenant.clone(),
                gateway: d.gateway.clone(),
                device: d.speaker.clone(),
                action: Action::Stop { broadcast: key.0 },
                expires_at: r.broadcast.expires_at,
                issued_by: r.cancelled_by.clone().unwrap_or_default(),
            };
            fx.sends.push(Outgoing { broadcast: key.0, speaker: key.1, request, stop: true });
        }
        self.expire(st, now, fx);
    }

    fn expire(&self, st: &mut State, now: Timestamp, fx: &mut Effects) {
        let grace = later(Timestamp(0), self.config.expiry_grace).0;
        let mut events = Vec::new();
        for r in st.records.values().filter(|r| !r.state.is_final() && now >= r.broadcast.expires_at) {
            let id = r.broadcast.id;
            if r.state == BroadcastState::PendingApproval {
                events.push(AuditEvent::Finished { broadcast: id, state: BroadcastState::Expired });
                continue;
            }
            let late = now.0 >= r.broadcast.expires_at.0.saturating_add(grace);
            for d in r.deliveries.values() {
                let reason = match d.state {
                    DeliveryState::Pending | DeliveryState::Queued | DeliveryState::Sent => {
                        "not delivered before expiry"
                    }
                    DeliveryState::Delivered | DeliveryState::Preempted | DeliveryState::Playing if late => {
                        "no word from the speaker after expiry"
                    }
                    _ => continue,
                };
                events.push(AuditEvent::Delivery {
                    broadcast: id,
                    speaker: d.speaker.clone(),
                    state: DeliveryState::Expired,
                    attempt: d.attempts,
                    command: None,
                    reason: Some(reason.into()),
                    receipt: None,
                });
            }
        }
        for e in events {
            if let AuditEvent::Delivery { broadcast, speaker, .. } = &e {
                st.due.remove(&(*broadcast, speaker.clone()));
            }
            self.emit(st, now, e, fx);
        }
    }

    /// Marks broadcasts whose deliveries are all final as completed.
    fn finish(&self, st: &mut State, now: Timestamp, fx: &mut Effects) {
        let done: Vec<BroadcastId> = st
            .records
            .values()
            .filter(|r| r.state == BroadcastState::Active && r.deliveries.values().all(|d| d.state.is_final()))
            .map(|r| r.broadcast.id)
            .collect();
        for id in done {
            tracing::info!(message = "Broadcast completed.", broadcast = id);
            self.emit(st, now, AuditEvent::Finished { broadcast: id, state: BroadcastState::Completed }, fx);
        }
        self.metrics.active.set(st.records.values().filter(|r| !r.state.is_final()).count() as i64);
    }

    /// Makes the step durable, then replies, sends and tells live subscribers.
    async fn commit(&self, fx: Effects) {
        let Effects { audit, sends, replies, mut touched } = fx;
        let durable = self.write(&audit).await;
        for reply in replies {
            match reply {
                Reply::Id(tx, result) => {
                    let result = match (&durable, result) {
                        (Err(e), _) => Err(BroadcastError::Audit(e.clone())),
                        (Ok(()), r) => r,
                    };
                    let _ = tx.send(result);
                }
            }
        }
        if durable.is_err() {
            // Nothing goes out that the log does not have; the timers retry the sends.
            let mut st = lock(&self.state);
            let now = (self.clock)();
            for s in &sends {
                let key = (s.broadcast, s.speaker.clone());
                if s.stop {
                    st.stop_due.insert(key, later(now, self.config.backoff_max))
                } else {
                    st.due.insert(key, later(now, self.config.backoff_max))
                };
            }
            return;
        }
        self.tell(&audit, &touched);
        if sends.is_empty() {
            return;
        }
        // One batch: signed and audited with one fsync, then published.
        let requests = sends.iter().map(|s| s.request.clone()).collect();
        let sent = self.path.send_all(requests).await;
        let results: Vec<_> = sends.into_iter().zip(sent).collect();
        let now = (self.clock)();
        let mut fx = Effects::default();
        {
            let mut st = lock(&self.state);
            for (s, r) in results {
                let key = (s.broadcast, s.speaker.clone());
                match r {
                    Ok(id) if s.stop => {
                        self.metrics.commands.get_or_create(&KindLabel { kind: "stop" }).inc();
                        self.emit(
                            &mut st,
                            now,
                            AuditEvent::StopSent { broadcast: s.broadcast, speaker: s.speaker.clone(), command: id },
                            &mut fx,
                        );
                        let n = st
                            .records
                            .get(&s.broadcast)
                            .and_then(|r| r.deliveries.get(&s.speaker))
                            .and_then(|d| d.stop.as_ref())
                            .map_or(1, |x| x.commands.len());
                        let retry = self.config.ack_timeout.max(backoff(
                            &self.config,
                            u32::try_from(n).unwrap_or(u32::MAX),
                            &s.speaker,
                        ));
                        st.stop_due.insert(key, later(now, retry));
                    }
                    Ok(id) => {
                        self.metrics.commands.get_or_create(&KindLabel { kind: "play" }).inc();
                        let attempts = st
                            .records
                            .get(&s.broadcast)
                            .and_then(|r| r.deliveries.get(&s.speaker))
                            .map_or(0, |d| d.attempts)
                            + 1;
                        let event = AuditEvent::Delivery {
                            broadcast: s.broadcast,
                            speaker: s.speaker.clone(),
                            state: DeliveryState::Sent,
                            attempt: attempts,
                            command: Some(id),
                            reason: None,
                            receipt: None,
                        };
                        self.emit(&mut st, now, event, &mut fx);
                        st.due.insert(key, later(now, self.config.ack_timeout));
                    }
                    Err(e) => {
                        tracing::warn!(message = "Could not send a broadcast command; will retry.", speaker = %s.speaker, error = %e);
                        let attempts = st
                            .records
                            .get(&s.broadcast)
                            .and_then(|r| r.deliveries.get(&s.speaker))
                            .map_or(0, |d| d.attempts);
                        let delay = later(now, backoff(&self.config, attempts.max(1), &s.speaker));
                        if s.stop {
                            st.stop_due.insert(key, delay)
                        } else {
                            st.due.insert(key, delay)
                        };
                    }
                }
            }
        }
        touched.extend(fx.touched.iter().copied());
        if self.write(&fx.audit).await.is_ok() {
            self.tell(&fx.audit, &fx.touched);
        }
    }

    async fn write(&self, events: &[(Timestamp, AuditEvent)]) -> Result<(), super::audit::AuditError> {
        if events.is_empty() {
            return Ok(());
        }
        let lines =
            events.iter().map(|(t, e)| (*t, serde_json::to_string(e).unwrap_or_else(|_| "{}".into()))).collect();
        let result = self.audit.append(lines).await;
        if let Err(e) = &result {
            tracing::error!(message = "Broadcast audit log not writable; nothing sent for this step.", error = %e);
        }
        result
    }

    /// Live progress for subscribers: every delivery change, and counts per broadcast.
    fn tell(&self, events: &[(Timestamp, AuditEvent)], touched: &BTreeSet<BroadcastId>) {
        if self.live.receiver_count() == 0 {
            return;
        }
        for (at, e) in events {
            let _ = self.live.send(Live::event(*at, e));
        }
        let st = lock(&self.state);
        for id in touched {
            if let Some(r) = st.records.get(id) {
                let _ = self.live.send(Live::progress(r));
            }
        }
    }
}

fn broadcast_of(e: &AuditEvent) -> Option<BroadcastId> {
    match e {
        AuditEvent::Created { broadcast, .. } => Some(broadcast.id),
        AuditEvent::Approved { broadcast, .. }
        | AuditEvent::Rejected { broadcast, .. }
        | AuditEvent::Cancelled { broadcast, .. }
        | AuditEvent::Delivery { broadcast, .. }
        | AuditEvent::StopSent { broadcast, .. }
        | AuditEvent::StopConfirmed { broadcast, .. }
        | AuditEvent::Finished { broadcast, .. } => Some(*broadcast),
        AuditEvent::Refused { broadcast, .. } => *broadcast,
    }
}

/// True if a `failed` ack carries the speaker's own verdict (final), not the gateway's
/// failure to reach it (worth a retry). Speaker reasons are the firmware's reason codes.
fn is_speaker_verdict(reason: &str) -> bool {
    ["not_ready", "queue_full", "invalid", "expired", "unsupported_action", "fault", "wrong_device", "not_provisioned"]
        .iter()
        .any(|code| reason.starts_with(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_a_bounded_jitter() {
        let c = DispatchConfig::default();
        let b1 = backoff(&c, 1, "dongcun-speaker-1");
        let b3 = backoff(&c, 3, "dongcun-speaker-1");
        let b20 = backoff(&c, 20, "dongcun-speaker-1");
        assert!(b1 >= Duration::from_millis(800) && b1 <= Duration::from_millis(1200), "{b1:?}");
        assert!(b3 >= Duration::from_millis(3200) && b3 <= Duration::from_millis(4800), "{b3:?}");
        assert!(b20 <= Duration::from_millis(18_000), "{b20:?}");
        assert_ne!(backoff(&c, 1, "a"), backoff(&c, 1, "b"));
    }

    #[test]
    fn a_speakers_verdict_is_told_from_a_gateways_failure_to_reach_it() {
        assert!(is_speaker_verdict("not_ready: amplifier or horn line faulty"));
        assert!(!is_speaker_verdict("Modbus timeout after 3 attempts"));
    }

    /// What speaker `dongcun-speaker-1` behind `gw-dongcun` signs about command 77 of
    /// broadcast 9.
    fn receipt(state: protocol::speaker::CommandState, counter: u64) -> protocol::receipt::Receipt {
        protocol::receipt::Receipt {
            gateway: "gw-dongcun".into(),
            device: "dongcun-speaker-1".into(),
            command: 77,
            broadcast: 9,
            state: state as u16,
            reason: 0,
            counter,
        }
    }

    fn ack(state: AckState, receipt: Option<protocol::receipt::Receipt>) -> CommandAck {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]);
        CommandAck {
            id: 77,
            device: "dongcun-speaker-1".into(),
            ts: Timestamp(0),
            state,
            reason: None,
            receipt: receipt.map(|r| Box::new(r.signed(&key))),
        }
    }

    fn verdict(ack: &CommandAck, check: ReceiptCheck, last: u64) -> Result<(), &'static str> {
        receipt_verdict(ack, check, "gw-dongcun", 9, "dongcun-speaker-1", last)
    }

    #[test]
    fn check_receipt_verifies_with_the_key_enrolled_for_the_speaker_it_names() {
        use crate::inventory::{Device, Inventory, InventoryFile};
        let enrolled = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]).verifying_key().to_bytes();
        let hex: String = enrolled.iter().map(|b| format!("{b:02x}")).collect();
        let speaker = |id: &str, key: Option<String>| Device {
            id: id.into(),
            kind: protocol::DeviceKind::Speaker,
            site: "dongcun".into(),
            gateway: "gw-dongcun".into(),
            model: String::new(),
            lat: None,
            lon: None,
            public_key: key,
        };
        let inv = Inventory::from_file(InventoryFile {
            devices: vec![speaker("dongcun-speaker-1", Some(hex)), speaker("dongcun-speaker-2", None)],
            ..InventoryFile::default()
        });
        let played = receipt(protocol::speaker::CommandState::Played, 5);
        assert_eq!(check_receipt(&inv, &ack(AckState::Played, Some(played.clone()))), ReceiptCheck::Verified);
        assert_eq!(check_receipt(&inv, &ack(AckState::Played, None)), ReceiptCheck::Absent);
        let mut forged = ack(AckState::Played, Some(played.clone()));
        forged.receipt = Some(Box::new(played.clone().signed(&ed25519_dalek::SigningKey::from_bytes(&[4u8; 32]))));
        assert_eq!(check_receipt(&inv, &forged), ReceiptCheck::Bad, "signed by someone else");
        let other = protocol::receipt::Receipt { device: "dongcun-speaker-2".into(), ..played };
        assert_eq!(check_receipt(&inv, &ack(AckState::Played, Some(other))), ReceiptCheck::NoKey);
    }

    #[test]
    fn a_speaker_state_is_acted_on_only_with_the_speakers_receipt_of_that_command_and_state() {
        use protocol::speaker::CommandState as S;
        let ok = ReceiptCheck::Verified;
        // Positive controls: the speaker's own receipts of this command.
        assert_eq!(verdict(&ack(AckState::Played, Some(receipt(S::Played, 5))), ok, 4), Ok(()));
        assert_eq!(
            verdict(&ack(AckState::Delivered, Some(receipt(S::Playing, 5))), ok, 5),
            Ok(()),
            "same receipt twice"
        );
        assert_eq!(verdict(&ack(AckState::Failed, None), ReceiptCheck::Absent, 0), Ok(()), "the gateway's finding");
        assert_eq!(verdict(&ack(AckState::Refused, None), ReceiptCheck::Absent, 0), Ok(()), "the gateway's check");
        // A played nobody signed, or not the speaker, or without a key enrolled.
        for state in [AckState::Delivered, AckState::Playing, AckState::Played, AckState::Interrupted, AckState::Done] {
            assert_eq!(verdict(&ack(state, None), ReceiptCheck::Absent, 0), Err(receipt_reason::MISSING));
        }
        let played = ack(AckState::Played, Some(receipt(S::Played, 5)));
        assert_eq!(verdict(&played, ReceiptCheck::Bad, 0), Err(receipt_reason::BAD_SIGNATURE));
        assert_eq!(verdict(&played, ReceiptCheck::NoKey, 0), Err(receipt_reason::NO_KEY));
        // The speaker's real receipts, moved: another command, another speaker's delivery,
        // another gateway or broadcast, or a "playing" offered as "played".
        let mut other_command = played.clone();
        other_command.id = 78;
        assert_eq!(verdict(&other_command, ok, 0), Err(receipt_reason::MISMATCH));
        assert_eq!(
            receipt_verdict(&played, ok, "gw-dongcun", 9, "dongcun-speaker-2", 0),
            Err(receipt_reason::MISMATCH)
        );
        assert_eq!(receipt_verdict(&played, ok, "gw-xicun", 9, "dongcun-speaker-1", 0), Err(receipt_reason::MISMATCH));
        assert_eq!(
            receipt_verdict(&played, ok, "gw-dongcun", 10, "dongcun-speaker-1", 0),
            Err(receipt_reason::MISMATCH)
        );
        let playing_as_played = ack(AckState::Played, Some(receipt(S::Playing, 6)));
        assert_eq!(verdict(&playing_as_played, ok, 0), Err(receipt_reason::MISMATCH));
        // Replayed: older than a receipt already accepted for the delivery.
        let preempted = ack(AckState::Interrupted, Some(receipt(S::Preempted, 3)));
        assert_eq!(verdict(&preempted, ok, 3), Ok(()));
        assert_eq!(verdict(&preempted, ok, 4), Err(receipt_reason::REPLAYED));
    }

    #[test]
    fn a_rejection_replays_into_a_final_broadcast_with_every_delivery_cancelled_and_its_reason_on_the_trail() {
        let broadcast = Broadcast {
            id: 9,
            tenant: "county".into(),
            level: protocol::command::Level::Red,
            content: super::super::model::Content::Tts { text: "山洪预警".into() },
            targets: vec![super::super::model::Target::Village("dongcun".into())],
            repeat: 1,
            volume: None,
            start_at: None,
            expires_at: Timestamp(600_000),
            event: "flood".into(),
            category: "Met".into(),
            headline: None,
            description: None,
            instruction: None,
            cap: None,
            created_by: "zhang".into(),
            created_at: Timestamp(1_000),
        };
        let speakers = BTreeMap::from([("dongcun-speaker-1".to_string(), "gw-dongcun".to_string())]);
        let rejected = AuditEvent::Rejected { broadcast: 9, by: "li".into(), reason: "wrong village".into() };
        // As the audit log stores it, and back.
        let line = serde_json::to_string(&rejected).unwrap();
        assert!(line.contains("\"type\":\"rejected\""), "{line}");
        let read: AuditEvent = serde_json::from_str(&line).unwrap();
        let mut st = State::default();
        st.apply(
            &AuditEvent::Created { broadcast: Box::new(broadcast), needs_approval: true, speakers },
            Timestamp(1_000),
        );
        st.apply(&read, Timestamp(2_000));
        let r = st.record(9).unwrap();
        assert_eq!(r.state, BroadcastState::Rejected);
        assert!(r.state.is_final());
        let d = &r.deliveries["dongcun-speaker-1"];
        assert_eq!(d.state, DeliveryState::Cancelled);
        assert_eq!(d.reason.as_deref(), Some("rejected by li: wrong village"));
        let x = r.rejected.as_ref().unwrap();
        assert_eq!((x.by.as_str(), x.at, x.reason.as_str()), ("li", Timestamp(2_000), "wrong village"));
        let trail: Vec<(&str, Option<&str>)> = r.trail.iter().map(|e| (e.action, e.by.as_deref())).collect();
        assert_eq!(trail, [("created", Some("zhang")), ("rejected", Some("li"))]);
    }
}
