//! Downlink commands: verified before they act, carried out on the device's own bus, and
//! always answered with an ack.
//!
//! Design constraints:
//! - Nothing acts before [`protocol::command::open`] passed: ingest's Ed25519 signature,
//!   this gateway as the target, expiry, issue time, and the replay window. The window is
//!   persisted (written to a temporary file, fsynced, renamed) before the command acts, so
//!   that neither a restart nor a power cut reopens it to a replay.
//! - A write may only name a writable point of the device's profile and only a value
//!   within its `min..=max`; the profile maps the point to a register, so a command can
//!   never name a raw register. A broadcast (`play`, `stop`) is delivered whole into the
//!   device's mailbox, where the device verifies the signature again itself.
//! - Every command gets an ack from here: `refused` (with the check that failed) before
//!   acting, `failed` (with the Modbus error by name) if the device did not take it,
//!   `done` for a write carried out and read back, `delivered` for a mailbox delivery.
//!   Reasons the gateway gives end in `(gateway)`.
//! - A device whose mailbox has a command log (a speaker) is not taken at its word that
//!   the write succeeded: the gateway reads the log in the same job as the write and acks
//!   the device's own verdict and progress (`delivered`, `playing`, `played`,
//!   `interrupted`, `refused`, `failed`, `done`), following the command every 400 ms until
//!   it is final ([`crate::report`]), each ack with the speaker's signed receipt of that
//!   state, relayed unchanged. Refusals in the log of envelopes the gateway never
//!   wrote (someone on the bus) are acked too, from the regular polls ([`Executor::on_log`]).
//! - Writes and reads go to the task that owns the device's link ([`crate::modbus::Job`]),
//!   so they wait their turn on an RS-485 bus instead of colliding with a poll.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use protocol::command::{self, AckState, Action, CommandAck, ReplayWindow};
use tokio::sync::{mpsc, oneshot};

use crate::modbus::value::{self, Table};
use crate::modbus::{Attempts, Job, MAX_WRITE_REGISTERS, Op};
use crate::profile::{Mailbox, Profile};
use crate::report;
use daemon::Clock;

/// File of the persisted replay window, in the queue directory.
pub const REPLAY_FILE: &str = "commands.window";
/// Refusals per device remembered as reported by a follow, so that the regular poll does
/// not report them a second time.
const REMEMBERED_PER_DEVICE: usize = 32;

/// How to reach one device: its profile and the queue of the task that owns its link.
#[derive(Debug, Clone)]
pub struct Route {
    /// The device's profile (writable points, mailbox).
    pub profile: Arc<Profile>,
    /// Its unit id.
    pub unit: u8,
    /// How hard to try.
    pub attempts: Attempts,
    /// Jobs for its link's task.
    pub jobs: mpsc::Sender<Job>,
}

/// Why a command did not act: refused before acting, or failed on the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Refused before acting; the reason names the check.
    Refused(String),
    /// Accepted but the device did not take it.
    Failed(String),
}

/// What the follows of one device report themselves.
#[derive(Debug, Clone, Default)]
struct Told {
    /// Commands being followed now.
    following: Vec<u64>,
    /// `(command, log sequence)` of refusals a follow reported, newest last.
    refusals: VecDeque<(u64, u16)>,
}

/// Verifies and carries out commands.
pub struct Executor {
    gateway: String,
    key: Option<VerifyingKey>,
    window: Mutex<ReplayWindow>,
    window_path: Option<PathBuf>,
    routes: RwLock<HashMap<String, Route>>,
    clock: Clock,
    /// Per device: commands being followed now (they report their own refusal) and
    /// `(command, log sequence)` of refusals a follow reported, newest last.
    told: Mutex<HashMap<String, Told>>,
    /// Per device: the command log sequence last looked at by [`Executor::on_log`].
    log_seen: Mutex<HashMap<String, u16>>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").field("gateway", &self.gateway).field("has_key", &self.key.is_some()).finish()
    }
}

impl Executor {
    /// An executor for `gateway`. `key` is ingest's public key (without it every command
    /// is refused); the replay window is kept in `state_dir` (in memory if `None`).
    pub fn new(gateway: &str, key: Option<[u8; 32]>, state_dir: Option<&Path>, clock: Clock) -> Executor {
        let key = key.and_then(|k| VerifyingKey::from_bytes(&k).ok());
        let window_path = state_dir.map(|d| d.join(REPLAY_FILE));
        let now = u64::try_from(clock().0).unwrap_or(0);
        let window = window_path.as_deref().map(|p| load_window(p, now)).unwrap_or_default();
        Executor {
            gateway: gateway.into(),
            key,
            window: Mutex::new(window),
            window_path,
            routes: RwLock::new(HashMap::new()),
            clock,
            told: Mutex::new(HashMap::new()),
            log_seen: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces the device routes (at start and after a configuration change).
    pub fn set_routes(&self, routes: HashMap<String, Route>) {
        *self.routes.write().unwrap_or_else(|e| e.into_inner()) = routes;
    }

    fn route(&self, device: &str) -> Option<Route> {
        self.routes.read().unwrap_or_else(|e| e.into_inner()).get(device).cloned()
    }

    /// Verifies a signed command from the downlink, carries it out, and sends its acks to
    /// `acks`: one for a write, one or more for a broadcast (the speaker's own progress,
    /// until the command is final). Commands must be admitted in the order they arrived:
    /// the agent calls [`Executor::admit`] in order and runs [`Executor::carry_out`] as
    /// a task; this is both in one, for a caller with one command at a time.
    pub async fn handle(&self, wire: &[u8], acks: &mpsc::Sender<CommandAck>) {
        match self.admit(wire) {
            Ok(cmd) => self.carry_out(cmd, wire, acks).await,
            Err(refusal) => {
                let _ = acks.send(refusal).await;
            }
        }
    }

    /// The gateway's own checks on a command from the downlink: the command to carry out,
    /// or the ack that refuses it. See [`Executor::admit_all`].
    pub fn admit(&self, wire: &[u8]) -> Result<command::Command, CommandAck> {
        self.admit_all(std::slice::from_ref(&wire))
            .pop()
            .unwrap_or_else(|| Err(self.refusal(wire, AckState::Failed, "nothing admitted (gateway)".into())))
    }

    /// The gateway's own checks on commands that arrived together, in the order they
    /// arrived: for each, the command to carry out or the ack that refuses it. Order
    /// matters: the replay window refuses an id more than 63 below the highest it has seen,
    /// so commands verified out of order (a burst to twenty speakers, each on its own task)
    /// would refuse good ones. The window is persisted once for the whole group (one fsync
    /// instead of one per command) before any of them acts; if that fails, none acts.
    pub fn admit_all(&self, wires: &[&[u8]]) -> Vec<Result<command::Command, CommandAck>> {
        let now = (self.clock)();
        let Some(key) = self.key else {
            let why = "no_key: this gateway has no command_key (gateway)";
            return wires.iter().map(|w| Err(self.refusal(w, AckState::Refused, why.into()))).collect();
        };
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let before = *window;
        let out: Vec<_> = wires
            .iter()
            .map(|wire| {
                command::open(wire, &key, &self.gateway, now, &mut window).map_err(|e| {
                    let id = command::peek_id(wire).unwrap_or(0);
                    tracing::warn!(message = "Command refused.", id, reason = e.code(), detail = %e);
                    self.refusal(wire, AckState::Refused, format!("{}: {e} (gateway)", e.code()))
                })
            })
            .collect();
        if out.iter().any(Result::is_ok)
            && let Some(path) = &self.window_path
            && let Err(error) = save_window(path, &window)
        {
            *window = before;
            tracing::error!(message = "Cannot persist the command replay window.", file = %path.display(), %error);
            let why = format!("cannot persist replay window: {error} (gateway)");
            return wires
                .iter()
                .zip(out)
                .map(|(w, r)| r.and_then(|_| Err(self.refusal(w, AckState::Failed, why.clone()))))
                .collect();
        }
        out
    }

    fn refusal(&self, wire: &[u8], state: AckState, reason: String) -> CommandAck {
        CommandAck {
            id: command::peek_id(wire).unwrap_or(0),
            device: String::new(),
            ts: (self.clock)(),
            state,
            reason: Some(reason),
            receipt: None,
        }
    }

    /// Carries out an admitted command and sends its acks to `acks`.
    pub async fn carry_out(&self, cmd: command::Command, wire: &[u8], acks: &mpsc::Sender<CommandAck>) {
        let ack = |id: u64, device: String, state: AckState, reason: Option<String>| CommandAck {
            id,
            device,
            ts: (self.clock)(),
            state,
            reason,
            receipt: None,
        };
        tracing::info!(message = "Command verified.", id = cmd.id, device = %cmd.device, action = ?cmd.action);
        let result = match &cmd.action {
            Action::Write { point, value } => {
                self.write_point(&cmd.device, point, *value).await.map(|note| (AckState::Done, note))
            }
            Action::Play(_) | Action::Stop { .. } => match self.route(&cmd.device) {
                Some(route) if route.profile.mailbox.is_some_and(|m| m.log.is_some()) => {
                    self.deliver_and_follow(&cmd, &route, wire, acks).await;
                    return;
                }
                _ => self.deliver(&cmd.device, wire).await.map(|()| (AckState::Delivered, None)),
            },
        };
        let ack = match result {
            Ok((state, note)) => ack(cmd.id, cmd.device, state, note),
            Err(Outcome::Refused(r)) => {
                tracing::warn!(message = "Command refused by the profile.", id = cmd.id, reason = %r);
                ack(cmd.id, cmd.device, AckState::Refused, Some(format!("{r} (gateway)")))
            }
            Err(Outcome::Failed(r)) => {
                tracing::warn!(message = "Command failed on the device.", id = cmd.id, reason = %r);
                ack(cmd.id, cmd.device, AckState::Failed, Some(format!("{r} (gateway)")))
            }
        };
        let _ = acks.send(ack).await;
    }

    /// Writes a broadcast envelope into a speaker's mailbox and reads its command log in
    /// the same job, then acks what the speaker reports until the command is final.
    async fn deliver_and_follow(
        &self,
        cmd: &command::Command,
        route: &Route,
        wire: &[u8],
        acks: &mpsc::Sender<CommandAck>,
    ) {
        let device = cmd.device.clone();
        let send = |state: AckState, reason: Option<String>, receipt: Option<protocol::receipt::SignedReceipt>| {
            let receipt = receipt.map(Box::new);
            let ack = CommandAck { id: cmd.id, device: device.clone(), ts: (self.clock)(), state, reason, receipt };
            async move {
                let _ = acks.send(ack).await;
            }
        };
        let (Some(mailbox), Some(log)) = (route.profile.mailbox, route.profile.mailbox.and_then(|m| m.log)) else {
            return;
        };
        let mut ops = match mailbox_ops(&mailbox, wire) {
            Ok(ops) => ops,
            Err(r) => return send(AckState::Refused, Some(format!("{r} (gateway)")), None).await,
        };
        let read = Op::Read { table: log.table, address: log.address, count: log.count() };
        // The latest receipt in the same job: the speaker's signed word on the change the
        // log shows, without a second trip through the link's queue.
        let latest = Op::Read {
            table: log.table,
            address: protocol::receipt::LATEST_BASE,
            count: protocol::receipt::LATEST_REGISTERS,
        };
        ops.push(read.clone());
        ops.push(latest.clone());
        self.with_told(&device, |t| t.following.push(cmd.id));
        let first = match run(route, ops).await {
            Ok(mut words) => {
                let latest = words.pop().unwrap_or_default();
                (words.pop().unwrap_or_default(), latest)
            }
            Err(Outcome::Failed(e) | Outcome::Refused(e)) => {
                self.done_following(&device, cmd.id, &report::Ending::Silent(e.clone()));
                tracing::warn!(message = "The speaker did not take a broadcast command.", id = cmd.id, %device, error = %e);
                return send(AckState::Failed, Some(format!("the speaker did not answer: {e} (gateway)")), None).await;
            }
        };
        tracing::info!(message = "Wrote a broadcast command into a speaker's mailbox.", id = cmd.id, %device, bytes = wire.len());
        let now = (self.clock)();
        let left = u64::try_from(cmd.expires_at.0.saturating_sub(now.0)).unwrap_or(0);
        let deadline = Duration::from_millis(left) + report::EXPIRY_GRACE;
        // Each look reads the sequence register; the whole log only when it moved.
        let seen = Arc::new(Mutex::new(first.0.first().copied()));
        let seq_read = Op::Read { table: log.table, address: log.address, count: 1 };
        let err = |o: Outcome| match o {
            Outcome::Failed(e) | Outcome::Refused(e) => e,
        };
        let reread = |force: bool| {
            let (route, seq_read, seen) = (route.clone(), seq_read.clone(), seen.clone());
            let look = vec![read.clone(), latest.clone()];
            async move {
                if !force {
                    let seq = run_job(&route, vec![seq_read], true).await.map_err(err)?;
                    let seq = seq.first().and_then(|w| w.first()).copied();
                    if seq.is_some() && seq == *seen.lock().unwrap_or_else(|e| e.into_inner()) {
                        return Ok(None);
                    }
                }
                let mut words = run_job(&route, look, true).await.map_err(err)?;
                let latest = words.pop().unwrap_or_default();
                let log = words.pop().unwrap_or_default();
                *seen.lock().unwrap_or_else(|e| e.into_inner()) = log.first().copied();
                Ok(Some((log, latest)))
            }
        };
        // After a slot changed and the latest receipt is of another change: that slot's
        // receipt block. Not a background job: the ack waits on it.
        let receipt = |slot: usize| {
            let route = route.clone();
            let op = Op::Read {
                table: log.table,
                address: protocol::receipt::block_address(slot),
                count: protocol::receipt::BLOCK_REGISTERS,
            };
            async move { Ok(run(&route, vec![op]).await.map_err(err)?.pop().unwrap_or_default()) }
        };
        let who = report::Followed { command: cmd.id, gateway: &self.gateway, device: &device };
        let ending = report::follow(who, first, reread, receipt, send, deadline).await;
        self.done_following(&device, cmd.id, &ending);
        tracing::info!(message = "Followed a broadcast command to its end.", id = cmd.id, %device, ending = ?ending);
    }

    fn with_told<T>(&self, device: &str, f: impl FnOnce(&mut Told) -> T) -> T {
        let mut told = self.told.lock().unwrap_or_else(|e| e.into_inner());
        f(told.entry(device.to_string()).or_default())
    }

    /// The follow of `id` ended: it no longer reports, and a refusal it reported is told.
    fn done_following(&self, device: &str, id: u64, ending: &report::Ending) {
        self.with_told(device, |t| {
            t.following.retain(|c| *c != id);
            if let report::Ending::Final { state: protocol::speaker::CommandState::Refused, seq } = ending {
                t.refusals.push_back((id, *seq));
                while t.refusals.len() > REMEMBERED_PER_DEVICE {
                    t.refusals.pop_front();
                }
            }
        });
    }

    /// A device's command log as a regular poll read it: acks for the envelopes it refused
    /// that this gateway did not write (forged, tampered or replayed ones put on its bus by
    /// someone else), each once. The first log seen of a device only sets where to start.
    pub fn on_log(&self, device: &str, words: &[u16]) -> Vec<CommandAck> {
        let Some(block) = protocol::speaker::decode_log(words) else { return Vec::new() };
        let since = self.log_seen.lock().unwrap_or_else(|e| e.into_inner()).insert(device.to_string(), block.seq);
        let Some(since) = since else { return Vec::new() };
        let told = self.with_told(device, |t| t.clone());
        let told = |slot: &protocol::speaker::SlotReport| {
            told.following.contains(&slot.command) || told.refusals.contains(&(slot.command, slot.seq))
        };
        report::foreign_refusals(&block, since, told)
            .into_iter()
            .map(|slot| {
                let (state, reason) = slot.ack();
                tracing::warn!(
                    message = "A speaker refused an envelope this gateway did not write.",
                    device,
                    id = slot.command,
                    reason = reason.unwrap_or("refused")
                );
                CommandAck {
                    id: slot.command,
                    device: device.to_string(),
                    ts: (self.clock)(),
                    state,
                    reason: Some(format!("{} (speaker)", reason.unwrap_or("refused"))),
                    receipt: None,
                }
            })
            .collect()
    }

    /// Writes a writable point of a device within its profile's range, then reads it back.
    /// Returns a note when the read-back differs (a momentary coil, a device that limits
    /// the value itself).
    pub async fn write_point(&self, device: &str, point: &str, value: f64) -> Result<Option<String>, Outcome> {
        let route = self
            .route(device)
            .ok_or_else(|| Outcome::Refused(format!("unknown_device: '{device}' is not behind this gateway")))?;
        let w = route.profile.writable(point).ok_or_else(|| {
            Outcome::Refused(format!("not_writable: '{point}' is not a writable point of {}", route.profile.model))
        })?;
        if !(value >= w.min && value <= w.max) {
            return Err(Outcome::Refused(format!(
                "out_of_range: {value} is outside the allowed {}..={} {} of '{point}'",
                w.min, w.max, w.unit
            )));
        }
        let words = value::encode(value, w.ty, w.order, w.scale, w.offset)
            .map_err(|e| Outcome::Refused(format!("out_of_range: {e}")))?;
        let count = u16::try_from(words.len()).unwrap_or(u16::MAX);
        let ops = vec![
            Op::Write { table: w.table, address: w.address, words: words.clone() },
            Op::Read { table: w.table, address: w.address, count },
        ];
        let back = run(&route, ops).await?;
        let read = back.first().cloned().unwrap_or_default();
        let same = if w.table == Table::Coil {
            read.first().map(|v| *v != 0) == words.first().map(|v| *v != 0)
        } else {
            read == words
        };
        tracing::info!(message = "Wrote a point.", device, point, value, read_back_matches = same);
        Ok((!same).then(|| format!("wrote {words:?}, read back {read:?}")))
    }

    /// Delivers a signed envelope into a device's mailbox (see [`mailbox_ops`]).
    pub async fn deliver(&self, device: &str, envelope: &[u8]) -> Result<(), Outcome> {
        let route = self
            .route(device)
            .ok_or_else(|| Outcome::Refused(format!("unknown_device: '{device}' is not behind this gateway")))?;
        let mailbox = route
            .profile
            .mailbox
            .ok_or_else(|| Outcome::Refused(format!("no_mailbox: {} has no command mailbox", route.profile.model)))?;
        let ops = mailbox_ops(&mailbox, envelope).map_err(Outcome::Refused)?;
        run(&route, ops).await?;
        tracing::info!(message = "Delivered a signed command into a mailbox.", device, bytes = envelope.len());
        Ok(())
    }

    /// Checks a prepared envelope (a local rule's announcement) without the replay window,
    /// which the receiving device keeps, and delivers it.
    pub async fn deliver_prepared(&self, device: &str, envelope: &[u8]) -> Result<(), Outcome> {
        let key = self.key.ok_or_else(|| Outcome::Refused("no_key: this gateway has no command_key".into()))?;
        let cmd = command::check(envelope, &key, &self.gateway, (self.clock)())
            .map_err(|e| Outcome::Refused(format!("{}: {e}", e.code())))?;
        if cmd.device != device {
            return Err(Outcome::Refused(format!("wrong_device: the envelope is for '{}'", cmd.device)));
        }
        self.deliver(device, envelope).await
    }
}

async fn run(route: &Route, ops: Vec<Op>) -> Result<Vec<Vec<u16>>, Outcome> {
    run_job(route, ops, false).await
}

/// Runs `ops` on the device's link; a `background` job waits behind every other.
async fn run_job(route: &Route, ops: Vec<Op>, background: bool) -> Result<Vec<Vec<u16>>, Outcome> {
    let (reply, rx) = oneshot::channel();
    let job = Job { unit: route.unit, ops, attempts: route.attempts, background, reply };
    route.jobs.send(job).await.map_err(|_| Outcome::Failed("the device's link is not running".into()))?;
    match rx.await {
        Ok(Ok(words)) => Ok(words),
        Ok(Err(e)) => Err(Outcome::Failed(e.to_string())),
        Err(_) => Err(Outcome::Failed("the device's link stopped before answering".into())),
    }
}

/// The writes that put `envelope` into `mailbox`: the bytes packed big-endian two to a
/// register from the mailbox's second register, in writes of at most 123 registers, then
/// the length in bytes into its first register, last, as the commit. An envelope of at
/// most 122 registers goes in one write, the length word first.
pub fn mailbox_ops(mailbox: &Mailbox, envelope: &[u8]) -> Result<Vec<Op>, String> {
    if envelope.is_empty() || envelope.len() > mailbox.capacity() || envelope.len() > usize::from(u16::MAX) {
        return Err(format!(
            "too_large: a {}-byte command does not fit a mailbox of {} bytes",
            envelope.len(),
            mailbox.capacity()
        ));
    }
    let words: Vec<u16> =
        envelope.chunks(2).map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])).collect();
    if words.len() < MAX_WRITE_REGISTERS {
        // Length and data in one write, one request on the bus: the device stores every
        // word of a write before it commits (docs/BROADCAST.md, "Mailbox").
        let mut all = Vec::with_capacity(words.len() + 1);
        all.push(envelope.len() as u16);
        all.extend(words);
        return Ok(vec![Op::Write { table: mailbox.table, address: mailbox.address, words: all }]);
    }
    let mut ops: Vec<Op> = words
        .chunks(MAX_WRITE_REGISTERS)
        .enumerate()
        .map(|(i, chunk)| Op::Write {
            table: mailbox.table,
            address: mailbox.address + 1 + (i * MAX_WRITE_REGISTERS) as u16,
            words: chunk.to_vec(),
        })
        .collect();
    ops.push(Op::Write { table: mailbox.table, address: mailbox.address, words: vec![envelope.len() as u16] });
    Ok(ops)
}

/// The persisted window. A damaged file is not trusted: the window then starts at `now_ms`
/// with every older id taken, which refuses every command issued before now (ingest's ids
/// are at least its clock in milliseconds, see `ingest::command`) and nothing newer.
fn load_window(path: &Path, now_ms: u64) -> ReplayWindow {
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() == 20 && crc32fast::hash(&bytes[..16]).to_le_bytes() == bytes[16..20] => {
            let highest = u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default());
            let seen = u64::from_le_bytes(bytes[8..16].try_into().unwrap_or_default());
            ReplayWindow::from_state(highest, seen)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ReplayWindow::new(),
        other => {
            tracing::error!(
                message = "The command replay window is damaged; refusing every command issued before now.",
                file = %path.display(),
                detail = ?other.map(|b| b.len())
            );
            ReplayWindow::from_state(now_ms, u64::MAX)
        }
    }
}

fn save_window(path: &Path, window: &ReplayWindow) -> std::io::Result<()> {
    use std::io::Write as _;
    let (highest, seen) = window.state();
    let mut bytes = Vec::with_capacity(20);
    bytes.extend_from_slice(&highest.to_le_bytes());
    bytes.extend_from_slice(&seen.to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_goes_into_the_mailbox_data_first_and_length_last() {
        let mb = Mailbox { table: Table::Holding, address: 1000, size: 1000, log: None };
        let env: Vec<u8> = (0..=255u8).cycle().take(301).collect();
        let ops = mailbox_ops(&mb, &env).unwrap();
        let Op::Write { address, words, .. } = &ops[0] else { panic!() };
        assert_eq!((*address, words.len(), words[0]), (1001, 123, 0x0001));
        let Op::Write { address, words, .. } = &ops[1] else { panic!() };
        assert_eq!((*address, words.len()), (1124, 28));
        assert_eq!(*words.last().unwrap(), 0x2C00, "an odd last byte is padded with zero");
        assert_eq!(ops[2], Op::Write { table: Table::Holding, address: 1000, words: vec![301] });
        assert!(mailbox_ops(&Mailbox { size: 10, ..mb }, &env).unwrap_err().starts_with("too_large"));
        let short = mailbox_ops(&mb, &env[..243]).unwrap();
        assert_eq!(short.len(), 1, "one write: {short:?}");
        let Op::Write { address, words, .. } = &short[0] else { panic!() };
        assert_eq!((*address, words.len(), words[0], words[1]), (1000, 123, 243, 0x0001), "length first, then data");
    }

    #[test]
    fn the_replay_window_survives_a_restart_and_a_damaged_file_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(REPLAY_FILE);
        let mut w = ReplayWindow::new();
        w.mark(42);
        save_window(&path, &w).unwrap();
        assert_eq!(load_window(&path, 5000), w);
        std::fs::write(&path, b"garbage").unwrap();
        let w = load_window(&path, 5000);
        assert!(!w.is_fresh(4999) && !w.is_fresh(5000) && w.is_fresh(5001));
    }
}
