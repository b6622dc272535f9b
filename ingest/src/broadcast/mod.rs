//! Emergency broadcast: one message to every loudspeaker of the affected villages, with
//! proof, speaker by speaker, that it played.
//!
//! - [`model`]: broadcasts, targets, per-speaker delivery states and their China feedback
//!   codes.
//! - [`cap`]: OASIS CAP 1.2 in (import) and out (export).
//! - [`targets`]: speakers, villages, areas, groups or "all", resolved to speakers.
//! - [`config`]: which levels need a second operator's approval, per tenant; groups;
//!   retry timing (`data_dir/broadcast.toml`).
//! - [`dispatch`]: the dispatcher (state machine, retries, expiry, cancel) and its audit
//!   events.
//! - [`path`]: the command path behind a small trait: sign for a speaker, send through
//!   its gateway, hear the acks.
//! - [`audit`]: the append-only, hash-chained, fsynced audit log that is also the
//!   broadcasts' persistence.
//! - `api`: `/api/v1/broadcasts...` and `/api/v1/speakers`, with live progress as
//!   server-sent events.
//!
//! [`Broadcasts`] is the handle the API, the demo and tests use. Invariants it keeps:
//! - Trust: nothing is sent before the event that decided it is durable in the audit log;
//!   red and orange (configurable per tenant) wait for a second, different operator.
//! - Every outside input is validated with a reason that names the field or element:
//!   levels, texts that must fit a speaker's mailbox, checksums, times, targets, CAP XML.

pub mod audit;
pub mod cap;
pub mod config;
pub mod dispatch;
pub mod model;
pub mod path;
pub mod targets;

mod api;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use protocol::command::{Action, Command, Level, Playback};
use protocol::{DeviceKind, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use api::routes;

use self::audit::{Audit, AuditError, Verified};
use self::cap::{Alert, CapError};
use self::config::{BroadcastConfig, MAX_TEXT_BYTES};
use self::dispatch::{AuditEvent, DispatchMetrics, Dispatcher, Msg, Record, State, lock};
use self::model::{
    Broadcast, BroadcastId, BroadcastState, CapInfo, Content, DELIVERY_STATES, Feedback, level_name, parse_level,
    parse_sha256, time,
};
use self::path::CommandPath;
use crate::auth::{Principal, Role};
use crate::inventory::Inventory;
use crate::metrics::Metrics;
use crate::time::Clock;

/// Bytes of a speaker's command mailbox (`firmware::mailbox`: 999 data registers).
pub const MAILBOX_BYTES: usize = 1998;
/// Longest a broadcast may stay valid.
pub const MAX_VALIDITY_MS: i64 = 7 * 86_400_000;
/// Longest reason a rejection may give.
pub const MAX_REASON_CHARS: usize = 500;
/// Expiry of an imported CAP alert that gives none.
pub const DEFAULT_CAP_VALIDITY_MS: i64 = 3_600_000;

/// Why a broadcast request failed.
#[derive(Debug, thiserror::Error)]
pub enum BroadcastError {
    /// The request is wrong; the text names the field.
    #[error("{0}")]
    Invalid(String),
    /// No such broadcast.
    #[error("no broadcast {0}")]
    NotFound(BroadcastId),
    /// The caller may not do this (role, tenant, approving one's own broadcast).
    #[error("{0}")]
    Forbidden(String),
    /// Not applicable now (approving one that is not pending, cancelling a finished one).
    #[error("{0}")]
    Conflict(String),
    /// The CAP document was refused.
    #[error(transparent)]
    Cap(#[from] CapError),
    /// The audit log could not be written: nothing was sent.
    #[error("audit log: {0}")]
    Audit(#[from] AuditError),
    /// The dispatcher is not running (ingest is stopping).
    #[error("the broadcast dispatcher has stopped")]
    Stopped,
}

/// Why the broadcast module could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// `broadcast.toml` is wrong.
    #[error("{0}")]
    Config(#[from] conf::ConfigErrors),
    /// The audit log cannot be read, or does not verify.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// A verified line is not an event this version knows.
    #[error("{path}: line {seq}: {reason}")]
    Replay {
        /// The audit log.
        path: PathBuf,
        /// The line's sequence number.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
}

/// What the broadcast module needs to start.
pub struct BroadcastOptions {
    /// Ingest's data directory (audit log, signing key, `broadcast.toml`).
    pub data_dir: PathBuf,
    /// The configuration; `None` reads `data_dir/broadcast.toml` or uses the defaults.
    pub config: Option<BroadcastConfig>,
    /// Sites, gateways, speakers.
    pub inventory: Arc<Inventory>,
    /// The store (speaker status for `/api/v1/speakers`).
    pub store: Arc<store::Store>,
    /// Ingest's metrics registry.
    pub metrics: Arc<Metrics>,
    /// Ingest's clock.
    pub clock: Clock,
    /// Where commands go: ingest's [`Commander`](crate::command::Commander) in production,
    /// so broadcasts share its key, id sequence, audit log and acks.
    pub path: Arc<dyn CommandPath>,
    /// Stops the dispatcher.
    pub shutdown: CancellationToken,
    /// Where the dispatcher's tasks are tracked, so that a stop waits for them.
    pub tasks: crate::tasks::Tasks,
}

/// Live progress: one server-sent event.
#[derive(Debug, Clone, Serialize)]
pub struct Live {
    /// The event name (`created`, `approved`, `rejected`, `cancelled`, `delivery`, `refused`,
    /// `stop_sent`, `stop_confirmed`, `finished`, `progress`).
    #[serde(skip)]
    pub name: &'static str,
    /// The broadcast, if the event is about one.
    #[serde(skip)]
    pub broadcast: Option<BroadcastId>,
    /// The event's data (JSON).
    pub data: Value,
}

impl Live {
    fn event(at: Timestamp, e: &AuditEvent) -> Live {
        let (name, broadcast) = match e {
            AuditEvent::Created { broadcast, .. } => ("created", Some(broadcast.id)),
            AuditEvent::Approved { broadcast, .. } => ("approved", Some(*broadcast)),
            AuditEvent::Rejected { broadcast, .. } => ("rejected", Some(*broadcast)),
            AuditEvent::Cancelled { broadcast, .. } => ("cancelled", Some(*broadcast)),
            AuditEvent::Delivery { broadcast, .. } => ("delivery", Some(*broadcast)),
            AuditEvent::StopSent { broadcast, .. } => ("stop_sent", Some(*broadcast)),
            AuditEvent::StopConfirmed { broadcast, .. } => ("stop_confirmed", Some(*broadcast)),
            AuditEvent::Refused { broadcast, .. } => ("refused", *broadcast),
            AuditEvent::Finished { broadcast, .. } => ("finished", Some(*broadcast)),
        };
        let mut data = match e {
            // A created broadcast can list a thousand speakers: send the gist.
            AuditEvent::Created { broadcast, needs_approval, speakers } => json!({
                "broadcast": broadcast.id, "level": level_name(broadcast.level),
                "needs_approval": needs_approval, "speakers": speakers.len(),
            }),
            other => serde_json::to_value(other).unwrap_or(Value::Null),
        };
        if let Value::Object(m) = &mut data {
            m.insert("at".into(), Value::String(time(at)));
            if let Some(state) =
                m.get("state").and_then(|s| serde_json::from_value::<model::DeliveryState>(s.clone()).ok())
                && name == "delivery"
            {
                m.insert("feedback".into(), json!(state.feedback() as u8));
            }
        }
        Live { name, broadcast, data }
    }

    fn progress(r: &Record) -> Live {
        Live {
            name: "progress",
            broadcast: Some(r.broadcast.id),
            data: json!({
                "broadcast": r.broadcast.id,
                "state": r.state,
                "counts": model::counts(r.deliveries.values()),
            }),
        }
    }
}

/// A broadcast request, as the API takes it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// `red`, `orange`, `yellow`, `blue` (or 1-4).
    pub level: String,
    /// Text for the speakers' TTS (or `audio`).
    #[serde(default)]
    pub text: Option<String>,
    /// An audio file and its SHA-256 (or `text`).
    #[serde(default)]
    pub audio: Option<AudioRef>,
    /// Speakers, villages, areas, groups, or `"all"`.
    pub targets: Vec<String>,
    /// RFC 3339 time or milliseconds since the epoch.
    pub expires_at: TimeInput,
    /// Plays per speaker, 1-10 (default 1).
    #[serde(default)]
    pub repeat: Option<u8>,
    /// Not before (RFC 3339 or ms).
    #[serde(default)]
    pub start_at: Option<TimeInput>,
    /// Volume in percent.
    #[serde(default)]
    pub volume: Option<u8>,
    /// The tenant (default: the token's only tenant, or the targets').
    #[serde(default)]
    pub tenant: Option<String>,
    /// CAP event (default by level).
    #[serde(default)]
    pub event: Option<String>,
    /// CAP category (default `Safety`).
    #[serde(default)]
    pub category: Option<String>,
    /// CAP headline.
    #[serde(default)]
    pub headline: Option<String>,
    /// CAP description.
    #[serde(default)]
    pub description: Option<String>,
    /// CAP instruction.
    #[serde(default)]
    pub instruction: Option<String>,
}

/// An audio reference.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioRef {
    /// `http(s)://` URL the speakers fetch.
    pub url: String,
    /// SHA-256 of the file, 64 hex digits.
    pub sha256: String,
}

/// A time in a request: RFC 3339 text or milliseconds since the epoch.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TimeInput {
    /// Milliseconds since the epoch.
    Ms(i64),
    /// RFC 3339.
    Text(String),
}

impl Default for TimeInput {
    fn default() -> TimeInput {
        TimeInput::Ms(0)
    }
}

impl TimeInput {
    fn parse(&self, field: &str) -> Result<Timestamp, String> {
        match self {
            TimeInput::Ms(ms) => Ok(Timestamp(*ms)),
            TimeInput::Text(t) => crate::time::parse(t).map_err(|e| format!("{field}: {e}")),
        }
    }
}

/// Options of a CAP import (`POST /api/v1/broadcasts/cap?...`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapImport {
    /// Comma-separated targets, instead of matching the alert's areas.
    #[serde(default)]
    pub targets: Option<String>,
    /// The tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Replaces the alert's expiry (for drills with an archived alert).
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Plays per speaker.
    #[serde(default)]
    pub repeat: Option<u8>,
}

/// What a CAP import did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum CapOutcome {
    /// An `Alert` or `Update` became this broadcast.
    Created {
        /// Its id.
        id: BroadcastId,
        /// True if its text was cut to fit the speakers' mailbox.
        text_cut: bool,
    },
    /// A `Cancel` cancelled these broadcasts.
    Cancelled {
        /// Their ids.
        ids: Vec<BroadcastId>,
    },
}

struct Inner {
    state: Arc<Mutex<State>>,
    tx: mpsc::UnboundedSender<Msg>,
    live: broadcast::Sender<Live>,
    inventory: Arc<Inventory>,
    store: Arc<store::Store>,
    config: BroadcastConfig,
    clock: Clock,
    public_key: [u8; 32],
    audit_path: PathBuf,
    /// Ends live streams when ingest stops, so a graceful shutdown does not wait on them.
    shutdown: CancellationToken,
}

/// The broadcast module's handle. Cheap to clone.
#[derive(Clone)]
pub struct Broadcasts {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Broadcasts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broadcasts").field("audit", &self.inner.audit_path).finish_non_exhaustive()
    }
}

impl Broadcasts {
    /// Loads the configuration, verifies and replays the audit log, and starts the
    /// dispatcher.
    pub fn open(options: BroadcastOptions) -> Result<Broadcasts, OpenError> {
        let BroadcastOptions { data_dir, config, inventory, store, metrics, clock, path, shutdown, tasks } = options;
        let config = match config {
            Some(c) => c,
            None => BroadcastConfig::load_or_default(&data_dir)?,
        };
        let dispatch_metrics = DispatchMetrics::register(&metrics);
        let audit_path = data_dir.join(audit::FILE);
        let (audit, events) = Audit::open(&audit_path, Some(dispatch_metrics.audit_append.clone()))?;
        let mut state = State::default();
        for r in &events {
            let event: AuditEvent = serde_json::from_str(r.event.get()).map_err(|e| OpenError::Replay {
                path: audit_path.clone(),
                seq: r.seq,
                reason: e.to_string(),
            })?;
            state.apply(&event, r.ts);
        }
        let now = clock();
        state.resume(now, &config.dispatch);
        path.ids_above(state.last_command);
        tracing::info!(
            message = "Broadcasts ready.",
            replayed_events = events.len(),
            broadcasts = state.records().count(),
            audit = %audit_path.display()
        );
        let state = Arc::new(Mutex::new(state));
        let (tx, rx) = mpsc::unbounded_channel();
        let (live, _) = broadcast::channel(16_384);
        // Acks go to the dispatcher's queue at once, so a burst of a thousand never
        // overflows the MQTT source's channel while the dispatcher is busy.
        // Receipt signatures are checked here, as acks arrive, not under the dispatcher's lock.
        let mut acks_rx = path.acks();
        let ack_tx = tx.clone();
        let stop = shutdown.clone();
        let keys = inventory.clone();
        tasks.spawn("broadcast-acks", async move {
            loop {
                let ack = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = acks_rx.recv() => a,
                };
                match ack {
                    Ok((gateway, ack)) => {
                        let check = dispatch::check_receipt(&keys, &ack);
                        if ack_tx.send(Msg::Ack(gateway, ack, check)).is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(message = "Missed command acks; their deliveries will be retried.", missed = n);
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        let public_key = path.public_key();
        let dispatcher = Dispatcher {
            state: state.clone(),
            path,
            audit,
            rx,
            live: live.clone(),
            metrics: dispatch_metrics,
            clock: clock.clone(),
            config: config.dispatch,
        };
        tasks.spawn("broadcast-dispatcher", dispatcher.run(shutdown.clone()));
        Ok(Broadcasts {
            inner: Arc::new(Inner {
                state,
                tx,
                live,
                inventory,
                store,
                config,
                clock,
                public_key,
                audit_path,
                shutdown,
            }),
        })
    }

    /// The public key speakers and gateways verify broadcast commands with.
    pub fn public_key(&self) -> [u8; 32] {
        self.inner.public_key
    }

    /// The audit log's file.
    pub fn audit_path(&self) -> &Path {
        &self.inner.audit_path
    }

    /// Checks the audit log's hash chain.
    pub fn verify_audit(&self) -> Result<Verified, AuditError> {
        audit::verify(&self.inner.audit_path)
    }

    /// Live progress of every broadcast.
    pub fn subscribe(&self) -> broadcast::Receiver<Live> {
        self.inner.live.subscribe()
    }

    /// Cancelled when ingest stops (live streams end then).
    pub fn stopping(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    fn now(&self) -> Timestamp {
        (self.inner.clock)()
    }

    async fn ask(
        &self,
        msg: Msg,
        rx: oneshot::Receiver<Result<BroadcastId, BroadcastError>>,
    ) -> Result<BroadcastId, BroadcastError> {
        self.inner.tx.send(msg).map_err(|_| BroadcastError::Stopped)?;
        rx.await.map_err(|_| BroadcastError::Stopped)?
    }

    /// Creates a broadcast; without the need for approval it goes out at once.
    pub async fn create(&self, by: &Principal, req: CreateRequest) -> Result<BroadcastId, BroadcastError> {
        by.require(Role::Operator).map_err(|e| BroadcastError::Forbidden(e.to_string()))?;
        let (broadcast, speakers) = self.draft(by, req, None)?;
        self.submit(broadcast, speakers).await
    }

    async fn submit(
        &self,
        broadcast: Broadcast,
        speakers: BTreeMap<String, String>,
    ) -> Result<BroadcastId, BroadcastError> {
        let needs_approval = self.inner.config.needs_approval(&broadcast.tenant, broadcast.level);
        let (reply, rx) = oneshot::channel();
        self.ask(Msg::Create { broadcast: Box::new(broadcast), needs_approval, speakers, reply }, rx).await
    }

    /// Validates a request into a broadcast and its speakers. Every problem is reported.
    fn draft(
        &self,
        by: &Principal,
        req: CreateRequest,
        cap: Option<CapInfo>,
    ) -> Result<(Broadcast, BTreeMap<String, String>), BroadcastError> {
        let now = self.now();
        let mut problems = Vec::new();
        let level = parse_level(&req.level);
        if level.is_none() {
            problems.push(format!("level '{}' is not one of red, orange, yellow, blue", req.level));
        }
        let content = match (&req.text, &req.audio) {
            (Some(text), None) => {
                let text = text.trim();
                if text.is_empty() {
                    problems.push("text is empty".into());
                } else if text.len() > MAX_TEXT_BYTES {
                    problems.push(format!("text of {} bytes exceeds {MAX_TEXT_BYTES} (a speaker's mailbox holds {MAILBOX_BYTES} bytes for the whole signed command)", text.len()));
                }
                Some(Content::Tts { text: text.to_string() })
            }
            (None, Some(a)) => {
                if !(a.url.starts_with("http://") || a.url.starts_with("https://"))
                    || a.url.len() > 512
                    || a.url.contains(char::is_whitespace)
                {
                    problems.push(format!("audio.url '{}' is not an http(s) URL of at most 512 bytes", a.url));
                }
                let sha256 = parse_sha256(&a.sha256);
                if sha256.is_none() {
                    problems.push("audio.sha256 must be 64 hex digits (the SHA-256 of the file)".into());
                }
                Some(Content::Audio { url: a.url.clone(), sha256: sha256.unwrap_or_default() })
            }
            (Some(_), Some(_)) => {
                problems.push("give text or audio, not both".into());
                None
            }
            (None, None) => {
                problems.push("text (for the speakers' TTS) or audio is required".into());
                None
            }
        };
        let expires_at = req.expires_at.parse("expires_at").map_err(|e| problems.push(e)).ok();
        if let Some(e) = expires_at {
            if e <= now {
                problems.push(format!("expires_at {} is not in the future", time(e)));
            } else if e.0 - now.0 > MAX_VALIDITY_MS {
                problems.push("expires_at is more than 7 days ahead".into());
            }
        }
        let start_at = req.start_at.as_ref().and_then(|s| s.parse("start_at").map_err(|e| problems.push(e)).ok());
        if let (Some(s), Some(e)) = (start_at, expires_at)
            && s >= e
        {
            problems.push("start_at must be before expires_at".into());
        }
        let repeat = req.repeat.unwrap_or(1);
        if !(1..=10).contains(&repeat) {
            problems.push(format!("repeat {repeat} is not within 1-10"));
        }
        if req.volume.is_some_and(|v| v > 100) {
            problems.push("volume must be 0-100".into());
        }
        let category = req.category.clone().unwrap_or_else(|| "Safety".into());
        if !cap::CATEGORIES.contains(&category.as_str()) {
            problems.push(format!("category '{category}' is not a CAP category ({})", cap::CATEGORIES.join(", ")));
        }
        for (name, v) in [
            ("event", &req.event),
            ("headline", &req.headline),
            ("description", &req.description),
            ("instruction", &req.instruction),
        ] {
            if v.as_ref().is_some_and(|v| v.len() > 4096) {
                problems.push(format!("{name} exceeds 4096 bytes"));
            }
        }
        let tenant = req.tenant.clone().or_else(|| (by.tenants.len() == 1).then(|| by.tenants[0].clone()));
        let resolved = targets::resolve(&req.targets, tenant.as_deref(), &self.inner.inventory, &self.inner.config)
            .map_err(|e| problems.push(e))
            .ok();
        if let Some(r) = &resolved
            && let Err(e) = by.require_tenant(&r.tenant)
        {
            return Err(BroadcastError::Forbidden(e.to_string()));
        }
        let (Some(level), Some(content), Some(expires_at), Some(resolved), true) =
            (level, content, expires_at, resolved, problems.is_empty())
        else {
            return Err(BroadcastError::Invalid(problems.join("; ")));
        };
        let event = req.event.clone().unwrap_or_else(|| default_event(level).into());
        let broadcast = Broadcast {
            id: 0,
            tenant: resolved.tenant.clone(),
            level,
            content,
            targets: resolved.targets,
            repeat,
            volume: req.volume,
            start_at,
            expires_at,
            event,
            category,
            headline: req.headline,
            description: req.description,
            instruction: req.instruction,
            cap,
            created_by: by.name.clone(),
            created_at: now,
        };
        check_fits_mailbox(&broadcast, &resolved.speakers)?;
        Ok((broadcast, resolved.speakers))
    }

    fn tenant_of(&self, id: BroadcastId) -> Result<String, BroadcastError> {
        lock(&self.inner.state).record(id).map(|r| r.broadcast.tenant.clone()).ok_or(BroadcastError::NotFound(id))
    }

    /// A second operator approves a broadcast: it goes out.
    pub async fn approve(&self, by: &Principal, id: BroadcastId) -> Result<BroadcastId, BroadcastError> {
        by.require(Role::Operator).map_err(|e| BroadcastError::Forbidden(e.to_string()))?;
        by.require_tenant(&self.tenant_of(id)?).map_err(|e| BroadcastError::Forbidden(e.to_string()))?;
        let (reply, rx) = oneshot::channel();
        self.ask(Msg::Approve { id, by: by.clone(), reply }, rx).await
    }

    /// A second operator refuses to release a broadcast that waits for approval, saying
    /// why (1-500 characters): it ends `rejected`, nothing is sent. The creator cannot
    /// reject their own (they cancel it).
    pub async fn reject(&self, by: &Principal, id: BroadcastId, reason: &str) -> Result<BroadcastId, BroadcastError> {
        by.require(Role::Operator).map_err(|e| BroadcastError::Forbidden(e.to_string()))?;
        by.require_tenant(&self.tenant_of(id)?).map_err(|e| BroadcastError::Forbidden(e.to_string()))?;
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(BroadcastError::Invalid("reason is required: say why the broadcast is rejected".into()));
        }
        if reason.chars().count() > MAX_REASON_CHARS {
            return Err(BroadcastError::Invalid(format!("reason exceeds {MAX_REASON_CHARS} characters")));
        }
        let (reply, rx) = oneshot::channel();
        self.ask(Msg::Reject { id, by: by.clone(), reason: reason.to_string(), reply }, rx).await
    }

    /// Cancels a broadcast everywhere.
    pub async fn cancel(&self, by: &Principal, id: BroadcastId) -> Result<BroadcastId, BroadcastError> {
        by.require(Role::Operator).map_err(|e| BroadcastError::Forbidden(e.to_string()))?;
        by.require_tenant(&self.tenant_of(id)?).map_err(|e| BroadcastError::Forbidden(e.to_string()))?;
        let (reply, rx) = oneshot::channel();
        self.ask(Msg::Cancel { id, by: by.clone(), reply }, rx).await
    }

    /// Imports a CAP 1.2 alert: an `Alert` or `Update` becomes a broadcast (subject to
    /// approval like any other), a `Cancel` cancels the broadcasts it references.
    pub async fn import_cap(
        &self,
        by: &Principal,
        xml: &str,
        options: CapImport,
    ) -> Result<CapOutcome, BroadcastError> {
        by.require(Role::Operator).map_err(|e| BroadcastError::Forbidden(e.to_string()))?;
        let alert = cap::parse(xml)?;
        match alert.info.msg_type.as_str() {
            "Cancel" => return self.cancel_referenced(by, &alert).await,
            "Ack" | "Error" => {
                return Err(BroadcastError::Conflict(format!(
                    "a CAP {} message is not a broadcast",
                    alert.info.msg_type
                )));
            }
            _ => {}
        }
        if alert.info.status == "Draft" {
            return Err(BroadcastError::Conflict("a CAP Draft is not issued".into()));
        }
        let now = self.now();
        let expires_at = match &options.expires_at {
            Some(t) => crate::time::parse(t).map_err(|e| BroadcastError::Invalid(format!("expires_at: {e}")))?,
            None => alert.expires.unwrap_or(Timestamp(now.0 + DEFAULT_CAP_VALIDITY_MS)),
        };
        let targets = match &options.targets {
            Some(t) => t.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            None if !alert.targets.is_empty() => alert.targets.iter().map(model::Target::spelled).collect(),
            None => self.match_areas(&alert)?,
        };
        let spoken = alert.tts_text(MAX_TEXT_BYTES);
        let text_cut = alert.audio.is_none() && spoken.len() < alert.tts_text(usize::MAX).len();
        let (text, audio) = match &alert.audio {
            Some((url, sha256)) => (None, Some(AudioRef { url: url.clone(), sha256: sha256.clone() })),
            None => (Some(spoken), None),
        };
        let req = CreateRequest {
            level: level_name(alert.level()).into(),
            text,
            audio,
            targets,
            expires_at: TimeInput::Ms(expires_at.0),
            repeat: options.repeat.or(alert.repeat_parameter),
            start_at: alert.effective.filter(|e| *e > now).map(|e| TimeInput::Ms(e.0)),
            volume: None,
            tenant: options.tenant.clone(),
            event: Some(alert.event.clone()),
            category: Some(alert.category.clone()),
            headline: alert.headline.clone(),
            description: alert.description.clone(),
            instruction: alert.instruction.clone(),
        };
        let (broadcast, speakers) = self.draft(by, req, Some(alert.info.clone()))?;
        tracing::info!(message = "CAP alert imported.", identifier = %alert.info.identifier, sender = %alert.info.sender, severity = %alert.info.severity);
        let id = self.submit(broadcast, speakers).await?;
        Ok(CapOutcome::Created { id, text_cut })
    }

    async fn cancel_referenced(&self, by: &Principal, alert: &Alert) -> Result<CapOutcome, BroadcastError> {
        let refs = alert.info.references.clone().unwrap_or_default();
        let wanted: Vec<(String, String)> = refs
            .split_whitespace()
            .filter_map(|r| {
                let mut parts = r.split(',');
                Some((parts.next()?.to_string(), parts.next()?.to_string()))
            })
            .collect();
        let ids: Vec<BroadcastId> = {
            let st = lock(&self.inner.state);
            st.records()
                .filter(|r| !r.state.is_final())
                .filter(|r| {
                    wanted.iter().any(|(sender, identifier)| {
                        r.broadcast.cap.as_ref().is_some_and(|c| c.sender == *sender && c.identifier == *identifier)
                            || (cap::sender(&r.broadcast.tenant) == *sender
                                && cap::identifier(&r.broadcast) == *identifier)
                    })
                })
                .map(|r| r.broadcast.id)
                .collect()
        };
        if ids.is_empty() {
            return Err(BroadcastError::Conflict(format!(
                "the CAP Cancel references no broadcast in progress ('{refs}')"
            )));
        }
        for id in &ids {
            self.cancel(by, *id).await?;
        }
        Ok(CapOutcome::Cancelled { ids })
    }

    /// Targets from a foreign alert's `areaDesc`s: each part (split at `,` `;` `、`) that
    /// names a village, area, speaker or group here.
    fn match_areas(&self, alert: &Alert) -> Result<Vec<String>, BroadcastError> {
        let mut found = Vec::new();
        for a in &alert.info.areas {
            for part in a.desc.split([',', ';', '、', '，', '；']).map(str::trim).filter(|p| !p.is_empty()) {
                if targets::resolve(&[part.to_string()], None, &self.inner.inventory, &self.inner.config).is_ok() {
                    found.push(part.to_string());
                }
            }
        }
        if found.is_empty() {
            let areas: Vec<&str> = alert.info.areas.iter().map(|a| a.desc.as_str()).collect();
            return Err(BroadcastError::Conflict(format!(
                "the alert's areas ({}) match no village, area or speaker here; name targets with ?targets=all or ?targets=dongcun,xicun",
                areas.join("; ")
            )));
        }
        Ok(found)
    }

    /// The rules a broadcast request is checked against, for a console to show before it
    /// sends (`GET /api/v1/broadcasts/rules`): the text limit, the longest validity, the
    /// repeat range, and which levels wait for a second operator, by default and for each
    /// tenant `may_see` admits.
    pub fn rules(&self, may_see: impl Fn(&str) -> bool) -> Value {
        let names = |levels: &[Level]| levels.iter().map(|l| level_name(*l)).collect::<Vec<_>>();
        let config = &self.inner.config;
        let tenants: BTreeMap<&str, Vec<&str>> = config
            .tenant_approval_levels
            .iter()
            .filter(|(t, _)| may_see(t))
            .map(|(t, levels)| (t.as_str(), names(levels)))
            .collect();
        json!({
            "max_text_bytes": MAX_TEXT_BYTES,
            "max_validity_ms": MAX_VALIDITY_MS,
            "repeat": { "min": 1, "max": 10 },
            "max_reason_chars": MAX_REASON_CHARS,
            "approval_levels": names(&config.approval_levels),
            "tenant_approval_levels": tenants,
        })
    }

    /// A broadcast with its deliveries, as the API shows it; `None` if unknown.
    pub fn view(&self, id: BroadcastId) -> Option<(String, Value)> {
        let st = lock(&self.inner.state);
        st.record(id).map(|r| (r.broadcast.tenant.clone(), view(r, true)))
    }

    /// The tenant of a broadcast.
    pub fn view_tenant(&self, id: BroadcastId) -> Option<String> {
        lock(&self.inner.state).record(id).map(|r| r.broadcast.tenant.clone())
    }

    /// Every broadcast, newest first, without deliveries: `(tenant, summary)`.
    pub fn list(&self) -> Vec<(String, Value)> {
        let st = lock(&self.inner.state);
        st.records()
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .map(|r| (r.broadcast.tenant.clone(), view(r, false)))
            .collect()
    }

    /// A broadcast as CAP 1.2 XML.
    pub fn export_cap(&self, id: BroadcastId) -> Option<(String, String)> {
        let st = lock(&self.inner.state);
        st.record(id).map(|r| {
            // A rejected broadcast was never issued: it exports as the Cancel of its alert.
            let (state, withdrawn) = match &r.rejected {
                Some(x) => (BroadcastState::Cancelled, Some(x.at)),
                None => (r.state, r.cancelled_at),
            };
            (r.broadcast.tenant.clone(), cap::export(&r.broadcast, state, withdrawn))
        })
    }

    /// Refusals of commands ingest did not issue (forgeries), newest last.
    pub fn foreign_refusals(&self) -> Value {
        serde_json::to_value(&lock(&self.inner.state).foreign_refusals).unwrap_or(Value::Null)
    }

    /// Every speaker with its status from its latest readings: `(tenant, view)`.
    pub fn speakers(&self) -> Vec<(String, Value)> {
        let inv = &self.inner.inventory;
        let sites: BTreeMap<String, crate::inventory::Site> =
            inv.sites().into_iter().map(|s| (s.id.clone(), s)).collect();
        let mut latest: BTreeMap<(String, &'static str), (f64, Timestamp)> = BTreeMap::new();
        for l in self.inner.store.latest() {
            let name = l.metric.name();
            if let Some(n) = ["device_online", "speaker_online", "speaker_volume", "playback_state", "fault_word"]
                .into_iter()
                .find(|n| *n == name)
            {
                latest.insert((l.device, n), (l.point.value, l.point.ts));
            }
        }
        let playing: BTreeMap<String, BroadcastId> = {
            let st = lock(&self.inner.state);
            st.records()
                .filter(|r| !r.state.is_final())
                .flat_map(|r| {
                    r.deliveries
                        .values()
                        .filter(|d| d.state == model::DeliveryState::Playing)
                        .map(move |d| (d.speaker.clone(), r.broadcast.id))
                })
                .collect()
        };
        inv.devices()
            .into_iter()
            .filter(|d| d.kind == DeviceKind::Speaker)
            .map(|d| {
                let site = sites.get(&d.site);
                let tenant = site.map(|s| s.tenant.clone()).unwrap_or_default();
                let get = |n: &'static str| latest.get(&(d.id.clone(), n)).copied();
                let state = get("playback_state").map(|(v, _)| match v as u16 {
                    0 => "idle",
                    1 => "playing",
                    2 => "interrupted",
                    3 => "fault",
                    _ => "unknown",
                });
                let faults: Vec<&str> = get("fault_word").map_or(Vec::new(), |(v, _)| {
                    let bits = v as u32;
                    [(1u32, "amplifier"), (2, "horn_line")]
                        .into_iter()
                        .filter(|(b, _)| bits & b != 0)
                        .map(|(_, n)| n)
                        .collect()
                });
                let view = json!({
                    "id": d.id,
                    "site": d.site,
                    "village": site.and_then(|s| s.village.clone()),
                    "district": site.and_then(|s| s.district.clone()),
                    "gateway": d.gateway,
                    "tenant": tenant,
                    "online": get("device_online").map(|(v, _)| v >= 0.5),
                    "ready": get("speaker_online").map(|(v, _)| v >= 0.5),
                    "volume": get("speaker_volume").map(|(v, _)| v),
                    "playback_state": state,
                    "playing": state.map(|s| s == "playing"),
                    "faults": faults,
                    "broadcast": playing.get(&d.id),
                    "last_seen": inv.last_seen(&d.id).map(time),
                });
                (tenant, view)
            })
            .collect()
    }
}

fn default_event(level: Level) -> &'static str {
    match level {
        Level::Red => "一级（红色）预警 Red warning",
        Level::Orange => "二级（橙色）预警 Orange warning",
        Level::Yellow => "三级（黄色）预警 Yellow warning",
        Level::Blue => "四级（蓝色）预警 Blue warning",
    }
}

/// Refuses a broadcast whose signed command would not fit a speaker's mailbox.
fn check_fits_mailbox(b: &Broadcast, speakers: &BTreeMap<String, String>) -> Result<(), BroadcastError> {
    let longest = speakers.iter().max_by_key(|(s, g)| s.len() + g.len());
    let Some((speaker, gateway)) = longest else { return Ok(()) };
    let probe = Command {
        id: u64::MAX,
        tenant: b.tenant.clone(),
        gateway: gateway.clone(),
        device: speaker.clone(),
        issued_at: Timestamp(i64::MAX),
        expires_at: Timestamp(i64::MAX),
        action: Action::Play(Playback {
            broadcast: u64::MAX,
            level: b.level,
            content: b.content.clone(),
            repeat: b.repeat,
            volume: b.volume,
            start_at: Some(Timestamp(i64::MAX)),
        }),
    };
    // Envelope: magic, a varint length of at most 3 bytes, body, 64-byte signature.
    let size = 1 + 3 + probe.to_bytes().len() + 64;
    if size > MAILBOX_BYTES {
        return Err(BroadcastError::Invalid(format!(
            "the signed command would be {size} bytes; a speaker's mailbox holds {MAILBOX_BYTES}: shorten the text"
        )));
    }
    Ok(())
}

/// Percentile of sorted values.
fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn view(r: &Record, deliveries: bool) -> Value {
    let b = &r.broadcast;
    let mut feedback: BTreeMap<u8, usize> = (0..=5).map(|c| (c, 0)).collect();
    for d in r.deliveries.values() {
        *feedback.entry(d.state.feedback() as u8).or_default() += 1;
    }
    let mut latencies: Vec<i64> = r
        .released_at
        .map(|rel| {
            r.deliveries
                .values()
                .filter_map(|d| d.reached.get(&model::DeliveryState::Playing).map(|t| t.0 - rel.0))
                .collect()
        })
        .unwrap_or_default();
    latencies.sort_unstable();
    let mut v = json!({
        "id": b.id,
        "tenant": b.tenant,
        "level": level_name(b.level),
        "level_number": b.level as u8,
        "state": r.state,
        "needs_approval": r.needs_approval,
        "content": b.content,
        "targets": b.targets.iter().map(model::Target::spelled).collect::<Vec<_>>(),
        "repeat": b.repeat,
        "volume": b.volume,
        "start_at": b.start_at.map(time),
        "expires_at": time(b.expires_at),
        "event": b.event,
        "category": b.category,
        "headline": b.headline,
        "description": b.description,
        "instruction": b.instruction,
        "cap": b.cap,
        "created_by": b.created_by,
        "created_at": time(b.created_at),
        "approved_by": r.approved_by,
        "approved_at": r.approved_at.map(time),
        "released_at": r.released_at.map(time),
        "rejected_by": r.rejected.as_ref().map(|x| &x.by),
        "rejected_at": r.rejected.as_ref().map(|x| time(x.at)),
        "rejection_reason": r.rejected.as_ref().map(|x| &x.reason),
        "cancelled_by": r.cancelled_by,
        "cancelled_at": r.cancelled_at.map(time),
        "finished_at": r.finished_at.map(time),
        "speakers": r.deliveries.len(),
        "counts": model::counts(r.deliveries.values()),
        "feedback": feedback,
        "release_to_playing_ms": {
            "count": latencies.len(),
            "p50": percentile(&latencies, 50.0),
            "p99": percentile(&latencies, 99.0),
            "max": latencies.last(),
        },
        "refusals": r.refusals,
        "trail": r.trail.iter().map(|e| {
            let mut v = json!({ "at": time(e.at), "action": e.action });
            if let Value::Object(m) = &mut v {
                if let Some(by) = &e.by {
                    m.insert("by".into(), json!(by));
                }
                if let Some(reason) = &e.reason {
                    m.insert("reason".into(), json!(reason));
                }
            }
            v
        }).collect::<Vec<_>>(),
    });
    if deliveries && let Value::Object(m) = &mut v {
        let list: Vec<Value> = r
            .deliveries
            .values()
            .map(|d| {
                json!({
                    "speaker": d.speaker,
                    "gateway": d.gateway,
                    "state": d.state,
                    "feedback": d.state.feedback() as u8,
                    "attempts": d.attempts,
                    "commands": d.commands,
                    "reason": d.reason,
                    "updated_at": time(d.updated_at),
                    "reached": d.reached.iter().map(|(s, t)| (s.as_str(), time(*t))).collect::<BTreeMap<_, _>>(),
                    "stop": d.stop,
                })
            })
            .collect();
        m.insert("deliveries".into(), Value::Array(list));
    }
    v
}

/// The feedback code names, for documentation and the API.
pub fn feedback_names() -> Vec<(u8, &'static str)> {
    let _ = DELIVERY_STATES;
    [
        Feedback::Unprocessed,
        Feedback::Waiting,
        Feedback::Playing,
        Feedback::Succeeded,
        Feedback::Failed,
        Feedback::Cancelled,
    ]
    .into_iter()
    .map(|f| {
        let name = match f {
            Feedback::Unprocessed => "unprocessed",
            Feedback::Waiting => "waiting",
            Feedback::Playing => "playing",
            Feedback::Succeeded => "succeeded",
            Feedback::Failed => "failed",
            Feedback::Cancelled => "cancelled",
        };
        (f as u8, name)
    })
    .collect()
}

impl BroadcastState {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            BroadcastState::PendingApproval => "pending_approval",
            BroadcastState::Active => "active",
            BroadcastState::Completed => "completed",
            BroadcastState::Cancelled => "cancelled",
            BroadcastState::Expired => "expired",
            BroadcastState::Rejected => "rejected",
        }
    }
}
