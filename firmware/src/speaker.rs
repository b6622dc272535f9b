//! Village loudspeaker terminal: ready state, volume, signed broadcast commands, and the
//! playback state machine with level pre-emption.
//!
//! A playback is a broadcast id, a warning level, a clip duration and a repeat count. The
//! terminal plays the clip `repeat` times with a short gap and then the playback ends in
//! *played*. Levels follow the Emergency Response Law art. 42: 1 red is the highest.
//!
//! Design constraints:
//! - The terminal trusts nobody on its bus. A broadcast reaches it only as a command
//!   envelope signed by ingest, written into its mailbox (holding 1000..=1999, see
//!   [`crate::mailbox`]); it verifies the envelope itself with
//!   [`protocol::command::open`] (signature with the issuer's public key it was
//!   provisioned with, its own gateway id, expiry, issue time, replay window) and then
//!   checks that the command names this terminal. A gateway, a broker or anyone with a
//!   Modbus cable cannot make it play what ingest did not sign.
//! - Every envelope gets exactly one verdict, *received* or *refused* with a reason code,
//!   and every accepted playback is then reported as it moves (*playing*, *preempted*,
//!   *played*, *interrupted*, *failed*) in the command log registers, keyed by the
//!   command's id, so the gateway turns them into acks without guessing.
//! - A higher level pre-empts a lower one that is playing; the lower one is suspended and
//!   resumes (from the start of the repeat it was in) when the higher one ends, unless it
//!   expired meanwhile, in which case it is reported *interrupted* (reason `expired`). An
//!   equal or lower level waits its turn in a queue of [`QUEUE`] playbacks, ordered by
//!   level and then arrival. Local playbacks (the routine programme, [`Speaker::play`])
//!   are not resumed: they end *interrupted*.
//! - A playback never starts after its command's expiry or before its `start_at`; one
//!   that has started plays to its end.
//! - The same broadcast arriving again (a retry whose first copy did arrive) is not
//!   played twice: the new command id takes over the reports of the one already held.
//! - Its word is its own: with a key ([`Speaker::with_key`], a 32-byte seed kept in the
//!   board's key sector), every change of a command log slot is signed at once, before
//!   the change can be read, as a [`protocol::receipt::Receipt`] (gateway and device ids
//!   it was provisioned with, command id, broadcast id, state, reason, and a counter that
//!   grows with every receipt). The receipt sits in input 300 + 37 s next to the slot; a
//!   gateway relays it unchanged and ingest records `delivered`, `playing`, `played`,
//!   `interrupted` only on a receipt that verifies with the key enrolled for this
//!   terminal. A gateway or anyone on the bus can read a receipt but not make one.
//! - No allocation on the register path except the envelope's decoded strings, its
//!   signed message (the signature check's input) and a receipt's signed bytes; the
//!   envelope itself is checked where it lies in the mailbox, not copied; no panics on
//!   any input.
//!
//! States (`playback_state`, catalogue: 0 idle, 1 playing, 2 interrupted, 3 fault):
//!
//! ```text
//!   idle --play--> playing --all repeats done--> idle      (outcome: played)
//!   playing --stop--> interrupted --play--> playing
//!   playing --higher level--> playing (the higher one; the lower one waits to resume)
//!   any --amplifier or line fault--> fault --fault clears--> idle
//! ```
//!
//! Per command (command log slot `state`):
//!
//! ```text
//!   envelope --verified--> received --starts--> playing --done--> played
//!            \--refused (reason)          \           \--higher level--> preempted --> playing
//!                                          \           \--stop / fault--> interrupted
//!                                           \--expired before it started, not ready, queue full--> failed
//!   stop envelope --verified--> done (and the playback it names goes interrupted, reason stopped)
//! ```
//!
//! # Register map
//!
//! | table | address | type | order | scale | unit | meaning |
//! |---|---|---|---|---|---|---|
//! | discrete | 0 | bool | | | bool | ready: amplifier and horn line OK (`speaker_online`) |
//! | input | 0 | u16 | | | state | playback state: 0 idle, 1 playing, 2 interrupted, 3 fault |
//! | input | 1-4 | u64 | ABCD | | | broadcast id playing (0 when none) |
//! | input | 5 | u16 | | | | level of the playback (1 red .. 4 blue; 0 none) |
//! | input | 6 | u16 | | | | current repeat (1-based; 0 when not playing) |
//! | input | 7 | u16 | | | | repeats asked for |
//! | input | 8 | u16 | | | bits | fault bits: bit 0 amplifier, bit 1 horn line |
//! | input | 9 | u16 | | | | outcome of the last playback: 0 none, 1 played, 2 interrupted |
//! | input | 10-13 | u64 | ABCD | | | broadcast id of the last playback |
//! | input | 14 | u16 | | 1 | s | heartbeat: seconds since power-up (wraps) |
//! | input | 15 | u16 | | | | playbacks waiting (queued or suspended) |
//! | input | 16 | u16 | | | bool | 1 when a command key is provisioned |
//! | input | 17 | u16 | | | bool | 1 when the terminal has its own receipt key |
//! | input | 100 | u16 | | | | command log sequence: +1 (wrapping) on every change below; poll this one register to see that something changed |
//! | input | 101 | u16 | | | | verdict on the last mailbox envelope: 0 none yet, 1 received, 2 refused |
//! | input | 102 | u16 | | | | reason code of that verdict (table below; 0 when received) |
//! | input | 103-106 | u64 | ABCD | | | command id of that envelope (as the envelope claims, for refused ones; 0 if unreadable) |
//! | input | 107 | u16 | | | | number of command log slots ([`SLOTS`]) |
//! | input | 108-109 | u16 | | | | reserved, read 0 |
//! | input | 110 + 12 s + 0-3 | u64 | ABCD | | | slot s (0..8): command id (0: empty slot) |
//! | input | 110 + 12 s + 4-7 | u64 | ABCD | | | slot s: broadcast id the command is about (0 if unknown) |
//! | input | 110 + 12 s + 8 | u16 | | | | slot s: state ([`CommandState`]: 1 received, 2 refused, 3 playing, 4 played, 5 interrupted, 6 preempted, 7 failed, 8 done) |
//! | input | 110 + 12 s + 9 | u16 | | | | slot s: reason code |
//! | input | 110 + 12 s + 10 | u16 | | | | slot s: the log sequence (input 100) at its last change |
//! | input | 110 + 12 s + 11 | u16 | | | | slot s: repeat playing now (1-based; 0 when not playing) |
//! | input | 300 + 37 s + 0 | u16 | | | | slot s's receipt: the slot's log sequence (+10 above) it was signed at; 0 before the first |
//! | input | 300 + 37 s + 1-4 | u64 | ABCD | | | slot s's receipt: its counter |
//! | input | 300 + 37 s + 5-36 | | | | | slot s's receipt: the Ed25519 signature, 64 bytes, big-endian, two a register |
//! | input | 600-615 | | | | | the terminal's own public key, 32 bytes, big-endian, two a register (0 without a key) |
//! | input | 640 | u16 | | | | the slot whose receipt was signed last, plus one (0 before the first) |
//! | input | 641-677 | | | | | that slot's receipt block, as at 300 + 37 s |
//! | holding | 0 | u16 | | 1 | % | volume 0-100 (read-write; more is `IllegalDataValue`) |
//! | holding | 1000 | u16 | | | B | mailbox: envelope length in bytes; writing it commits (see [`crate::mailbox`]); reads 0 |
//! | holding | 1001-1999 | | | | | mailbox: envelope bytes, big-endian, two a register |
//!
//! Input 100..=205 is one read of 106 registers: a gateway that saw input 100 change reads
//! the block and acks every slot whose sequence is newer than what it last saw. That block's
//! layout, states and reasons are the contract with the gateway, defined in
//! [`protocol::speaker`] and re-exported here. The latest receipt (input 640-677) is a
//! second read in the same job, which usually carries the receipt of the change the
//! gateway sees; otherwise the slot's own block (input 300 + 37 s, 37 registers) is one
//! read more. The gateway relays a receipt when the block's first word equals the slot's
//! sequence ([`protocol::receipt`]).
//!
//! Reason codes ([`Reason`]): 0 none, 1 malformed, 2 too_large, 3 bad_signature,
//! 4 wrong_gateway, 5 expired, 6 issued_in_future, 7 replayed, 8 wrong_device,
//! 9 not_provisioned, 10 unsupported_action, 11 not_ready, 12 queue_full, 13 invalid,
//! 14 preempted, 15 stopped, 16 fault. Codes 1-7 are `protocol::command::CommandError`'s
//! checks in the order [`protocol::command::open`] makes them.
//!
//! The replay window lives in RAM here; a board keeps [`Speaker::replay_state`] in flash
//! and restores it at boot with [`Speaker::restore_replay_state`], or a power cycle would
//! reopen the window to commands that have not expired. Likewise the receipt counter
//! ([`Speaker::receipt_counter`], [`Speaker::restore_receipt_counter`]): a counter that
//! went back after a power cycle would make new receipts look like replays to ingest.

use alloc::string::String;
use alloc::vec::Vec;

use ed25519_dalek::{SigningKey, VerifyingKey};
use protocol::Timestamp;
use protocol::command::{self, Action, Content, Level, Playback, ReplayWindow};
use protocol::receipt::{
    BLOCK_REGISTERS, LATEST_BASE, LATEST_REGISTERS, PUBLIC_KEY_BASE, PUBLIC_KEY_REGISTERS, RECEIPT_BASE, Receipt,
    ReceiptBlock,
};

use protocol::modbus as words;

use crate::mailbox::{self, Mailbox, Written};
use crate::modbus::{Exception, RegisterMap, Table};

mod state;
pub use state::{BadState, STATE_BYTES};

/// The command log layout, its states and reasons are the contract with the gateway and
/// live in [`protocol::speaker`]; re-exported here because they are part of this
/// terminal's register map.
pub use protocol::speaker::{
    CommandState, LOG_BASE, LOG_REGISTERS, LogBlock, ORDER, Reason, SLOT_BASE, SLOT_STRIDE, SLOTS, SlotReport,
    decode_log,
};

/// Pause between repeats of a clip (s).
pub const REPEAT_GAP_S: f32 = 2.0;
/// First and last address of the signed-command mailbox (holding registers).
pub const MAILBOX: (u16, u16) = (1000, 1000 + mailbox::REGISTERS - 1);
/// Playbacks that may wait (queued, or suspended by a higher level) besides the one playing.
pub const QUEUE: usize = 4;
/// Text-to-speech speed for CJK characters (characters per second), to size a clip.
pub const TTS_CJK_PER_S: f32 = 4.0;
/// Text-to-speech speed for other characters (characters per second).
pub const TTS_OTHER_PER_S: f32 = 12.0;
/// Assumed length of an audio clip (s): the terminal learns the real one only when it
/// has fetched the file.
pub const AUDIO_CLIP_S: f32 = 30.0;

/// Fault bit: amplifier fault.
pub const FAULT_AMPLIFIER: u16 = 1 << 0;
/// Fault bit: horn line open or shorted.
pub const FAULT_LINE: u16 = 1 << 1;

/// The playback state, with its catalogue code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaybackState {
    /// Nothing plays.
    Idle = 0,
    /// A playback is under way.
    Playing = 1,
    /// The last playback was stopped.
    Interrupted = 2,
    /// The amplifier or line is faulty.
    Fault = 3,
}

/// How the last playback ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No playback has ended yet.
    None = 0,
    /// Every repeat played to the end.
    Played = 1,
    /// Stopped, pre-empted, or cut by a fault.
    Interrupted = 2,
}

/// A request to play, from the terminal's own schedule (the routine programme).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlayRequest {
    /// Broadcast id (the same on every speaker it goes to).
    pub broadcast: u64,
    /// Warning level; a higher one pre-empts a lower one.
    pub level: Level,
    /// Length of one play of the clip (s).
    pub duration_s: f32,
    /// How many times to play it (0 is taken as 1).
    pub repeat: u8,
    /// Volume for this and later playbacks, or keep the current one.
    pub volume: Option<u8>,
}

/// Why a local play request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayError {
    /// A playback of the same or a higher level is playing.
    Busy,
    /// The amplifier or horn line is faulty.
    NotReady,
    /// Duration not positive, or volume over 100.
    Invalid,
}

/// A refused envelope: the id it claimed (if readable) and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The command id as the envelope claims it.
    pub id: Option<u64>,
    /// Why.
    pub reason: Reason,
}

/// An envelope that passed every check: its command and the replay window with its id
/// marked, for the terminal to keep once it carries the command out.
struct Checked {
    cmd: command::Command,
    window: ReplayWindow,
}

/// The key is not a valid Ed25519 public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadKey;

/// What the terminal's self-test sees during one update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpeakerInputs {
    /// Amplifier healthy.
    pub amplifier_ok: bool,
    /// Horn line impedance within limits.
    pub line_ok: bool,
}

/// Who the terminal is and whom it trusts, set at installation.
#[derive(Debug, Clone)]
struct Identity {
    key: VerifyingKey,
    gateway: String,
    device: String,
}

/// A playback held by the terminal: playing, queued or suspended.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The command reporting on it (0 for a local playback).
    command: u64,
    /// Its command log slot.
    slot: Option<usize>,
    broadcast: u64,
    level: Level,
    duration_s: f32,
    repeat: u8,
    volume: Option<u8>,
    /// Not before (ms); `i64::MIN` for now.
    start_at_ms: i64,
    /// Never start or resume from here on (ms); `i64::MAX` for never.
    expires_at_ms: i64,
    /// Commanded playbacks resume after a pre-emption; local ones do not.
    resumable: bool,
    /// Arrival order, for equal levels.
    arrival: u32,
    started: bool,
    /// 1-based repeat now playing.
    repeat_now: u8,
    /// Seconds into the current repeat (negative during the gap before it).
    elapsed_s: f32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Slot {
    command: u64,
    broadcast: u64,
    state: u16,
    reason: u16,
    seq: u16,
    repeat: u16,
}

/// The command log: the last [`SLOTS`] commands and where each stands, and the
/// terminal's signed receipt of each slot's current state.
#[derive(Debug, Clone, Default)]
struct CommandLog {
    slots: [Slot; SLOTS],
    seq: u16,
    /// Per slot: the receipt of its last change (input 300 + 37 s).
    receipts: [ReceiptBlock; SLOTS],
    /// The terminal's own key and the ids it signs under; `None`: it signs nothing.
    signer: Option<Signer>,
    /// Receipts signed so far (the last counter used).
    counter: u64,
    /// The slot whose receipt was signed last (input 640-677 show it).
    last: Option<usize>,
}

/// What the terminal signs receipts with.
#[derive(Debug, Clone)]
struct Signer {
    key: SigningKey,
    /// The gateway and device ids it was provisioned with ("" until then).
    gateway: String,
    device: String,
}

impl CommandLog {
    /// Takes a slot for a new command: an empty one, else the one whose command is final
    /// and changed longest ago. Commands still in progress keep their slots (there are
    /// more slots than playbacks that can be held).
    fn open(&mut self, command: u64, broadcast: u64, state: CommandState, reason: Reason) -> usize {
        let seq = self.seq;
        let age = |s: &Slot| seq.wrapping_sub(s.seq);
        let free = |s: &Slot| s.command == 0 || CommandState::from_code(s.state).is_none_or(CommandState::is_final);
        let victim = (0..SLOTS)
            .filter(|&i| free(&self.slots[i]))
            .max_by_key(|&i| (self.slots[i].command == 0, age(&self.slots[i])))
            .unwrap_or_else(|| (0..SLOTS).max_by_key(|&i| age(&self.slots[i])).unwrap_or(0));
        self.slots[victim] = Slot { command, broadcast, ..Slot::default() };
        self.set(victim, command, state, reason, 0);
        victim
    }

    /// Updates a command's slot, if it still holds that command.
    fn set(&mut self, slot: usize, command: u64, state: CommandState, reason: Reason, repeat: u8) {
        if let Some(s) = self.slots.get_mut(slot).filter(|s| s.command == command && command != 0) {
            self.seq = self.seq.wrapping_add(1);
            *s = Slot { state: state as u16, reason: reason as u16, seq: self.seq, repeat: u16::from(repeat), ..*s };
            self.sign(slot);
        }
    }

    /// Signs the slot's state as it stands now, with the next counter: the receipt is in
    /// place before anyone can read the slot's new state. A change of the repeat alone
    /// (a new repeat of a playback) is signed too: cheap, and the block always matches the
    /// slot's sequence.
    fn sign(&mut self, slot: usize) {
        let (Some(signer), Some(s)) = (&self.signer, self.slots.get(slot)) else { return };
        self.counter = self.counter.saturating_add(1);
        let receipt = Receipt {
            gateway: signer.gateway.clone(),
            device: signer.device.clone(),
            command: s.command,
            broadcast: s.broadcast,
            state: s.state,
            reason: s.reason,
            counter: self.counter,
        };
        let sig = receipt.sign(&signer.key);
        self.receipts[slot] = ReceiptBlock { seq: s.seq, counter: self.counter, sig };
        self.last = Some(slot);
    }

    fn latest_register(&self, address: u16) -> Option<u16> {
        match (address.checked_sub(LATEST_BASE)?, self.last) {
            (0, last) => Some(last.map_or(0, |s| s as u16 + 1)),
            (i, Some(slot)) => self.receipts.get(slot)?.word(i - 1),
            (_, None) => Some(0),
        }
    }

    fn receipt_register(&self, address: u16) -> Option<u16> {
        let offset = address.checked_sub(RECEIPT_BASE)?;
        let block = self.receipts.get(usize::from(offset / BLOCK_REGISTERS))?;
        block.word(offset % BLOCK_REGISTERS)
    }
}

/// How a broadcast that left the terminal ended, to answer a late copy of it.
#[derive(Debug, Clone, Copy, Default)]
struct Finished {
    broadcast: u64,
    state: u16,
    reason: u16,
}

/// The verdict on the last mailbox envelope (input 101..=106).
#[derive(Debug, Clone, Copy, Default)]
struct Verdict {
    result: u16,
    reason: u16,
    id: u64,
}

/// The terminal.
#[derive(Debug, Clone)]
pub struct Speaker {
    volume: u8,
    faults: u16,
    state: PlaybackState,
    outcome: Outcome,
    last_broadcast: u64,
    uptime_s: f64,
    /// The terminal's clock (ms since the Unix epoch), kept by [`Speaker::set_clock`]
    /// and advanced by [`Speaker::update`].
    clock_ms: i64,
    identity: Option<Identity>,
    window: ReplayWindow,
    mailbox: Mailbox,
    current: Option<Entry>,
    waiting: Vec<Entry>,
    arrivals: u32,
    finished: [Finished; SLOTS],
    finished_next: usize,
    log: CommandLog,
    verdict: Verdict,
}

/// Seconds one play of `content` takes.
pub fn clip_seconds(content: &Content) -> f32 {
    match content {
        Content::Tts { text } => {
            let (cjk, other) = text
                .chars()
                .fold((0u32, 0u32), |(c, o), ch| if u32::from(ch) >= 0x2E80 { (c + 1, o) } else { (c, o + 1) });
            (cjk as f32 / TTS_CJK_PER_S + other as f32 / TTS_OTHER_PER_S).max(2.0)
        }
        Content::Audio { .. } => AUDIO_CLIP_S,
    }
}

impl Speaker {
    /// An idle, healthy terminal at `volume` percent (clamped to 100), not provisioned:
    /// it refuses every command until [`Speaker::provision`].
    pub fn new(volume: u8) -> Speaker {
        Speaker {
            volume: volume.min(100),
            faults: 0,
            state: PlaybackState::Idle,
            outcome: Outcome::None,
            last_broadcast: 0,
            uptime_s: 0.0,
            clock_ms: 0,
            identity: None,
            window: ReplayWindow::new(),
            mailbox: Mailbox::new(MAILBOX.0),
            current: None,
            waiting: Vec::with_capacity(QUEUE + 1),
            arrivals: 0,
            finished: [Finished::default(); SLOTS],
            finished_next: 0,
            log: CommandLog::default(),
            verdict: Verdict::default(),
        }
    }

    /// A terminal as [`Speaker::new`] that signs its receipts with the Ed25519 key made
    /// from `seed`: what a board calls at boot with the 32 bytes it keeps in its key
    /// sector (made once from its hardware random generator, docs/SECURITY.md).
    pub fn with_key(volume: u8, seed: [u8; 32]) -> Speaker {
        let mut s = Speaker::new(volume);
        s.set_receipt_key(seed);
        s
    }

    /// Sets the key the terminal signs its receipts with (32-byte seed): at boot, or on a
    /// key rotation over the local maintenance port. Receipts signed from now on use it.
    pub fn set_receipt_key(&mut self, seed: [u8; 32]) {
        let (gateway, device) = self.ids();
        self.log.signer = Some(Signer { key: SigningKey::from_bytes(&seed), gateway, device });
    }

    /// The terminal's own public key (input 600-615), what the installer enrols in the
    /// inventory; `None` before it has a key.
    pub fn public_key(&self) -> Option<[u8; 32]> {
        self.log.signer.as_ref().map(|s| s.key.verifying_key().to_bytes())
    }

    /// The last receipt counter used. A board keeps it in flash and restores it at boot
    /// with [`Speaker::restore_receipt_counter`] so that counters never repeat; to save
    /// flash wear it may store a reservation ahead (say `counter + 256`, rewritten when
    /// reached) and restore that: counters then skip, never go back.
    pub fn receipt_counter(&self) -> u64 {
        self.log.counter
    }

    /// Restores the receipt counter saved with [`Speaker::receipt_counter`]; never lowers it.
    pub fn restore_receipt_counter(&mut self, counter: u64) {
        self.log.counter = self.log.counter.max(counter);
    }

    /// Installs the issuer's public key and the terminal's own gateway and device ids, as
    /// an installer does once. Keeps the replay window and the receipt key and counter;
    /// receipts from now on name these ids.
    pub fn provision(&mut self, issuer_key: [u8; 32], gateway: &str, device: &str) -> Result<(), BadKey> {
        let key = VerifyingKey::from_bytes(&issuer_key).map_err(|_| BadKey)?;
        self.identity = Some(Identity { key, gateway: gateway.into(), device: device.into() });
        if let Some(signer) = &mut self.log.signer {
            signer.gateway = gateway.into();
            signer.device = device.into();
        }
        Ok(())
    }

    fn ids(&self) -> (String, String) {
        self.identity.as_ref().map(|i| (i.gateway.clone(), i.device.clone())).unwrap_or_default()
    }

    /// Sets the terminal's clock (from NTP, GNSS or the simulator).
    pub fn set_clock(&mut self, now: Timestamp) {
        self.clock_ms = now.0;
    }

    /// The terminal's clock.
    pub fn clock(&self) -> Timestamp {
        Timestamp(self.clock_ms)
    }

    /// The replay window's state, for a board to keep in flash.
    pub fn replay_state(&self) -> (u64, u64) {
        self.window.state()
    }

    /// Restores a replay window saved with [`Speaker::replay_state`].
    pub fn restore_replay_state(&mut self, (highest, seen): (u64, u64)) {
        self.window = ReplayWindow::from_state(highest, seen);
    }

    /// Amplifier and line are OK.
    pub fn ready(&self) -> bool {
        self.faults == 0
    }

    /// The playback state.
    pub fn state(&self) -> PlaybackState {
        self.state
    }

    /// How the last playback ended.
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// The broadcast playing, if any.
    pub fn playing(&self) -> Option<u64> {
        self.current.map(|c| c.broadcast)
    }

    /// Broadcasts waiting: queued, or suspended by a higher level.
    pub fn waiting(&self) -> impl Iterator<Item = u64> + '_ {
        self.waiting.iter().map(|e| e.broadcast)
    }

    /// Volume (%).
    pub fn volume(&self) -> u8 {
        self.volume
    }

    /// Where command `id` stands, if it is still in the command log.
    pub fn command_state(&self, id: u64) -> Option<(CommandState, Reason)> {
        let s = self.log.slots.iter().find(|s| s.command == id && id != 0)?;
        Some((CommandState::from_code(s.state)?, Reason::from_code(s.reason)?))
    }

    /// Starts a local playback (the routine programme), pre-empting a lower-level one.
    /// A local playback is not signed, not reported in the command log and not resumed.
    pub fn play(&mut self, request: PlayRequest) -> Result<(), PlayError> {
        if !(request.duration_s.is_finite() && request.duration_s > 0.0) || request.volume.is_some_and(|v| v > 100) {
            return Err(PlayError::Invalid);
        }
        if !self.ready() {
            return Err(PlayError::NotReady);
        }
        if self.current.is_some_and(|c| !request.level.preempts(c.level)) {
            return Err(PlayError::Busy);
        }
        let entry = self.entry(0, None, request.broadcast, request.level, request.duration_s, request.repeat);
        let entry = Entry { volume: request.volume, resumable: false, ..entry };
        if let Some(c) = self.current.take() {
            self.suspend(c);
        }
        self.start(entry);
        Ok(())
    }

    /// Stops `broadcast` if it plays or waits; true if it did.
    pub fn stop(&mut self, broadcast: u64) -> bool {
        let found = self.drop_broadcast(broadcast, Reason::Stopped);
        self.schedule();
        found
    }

    /// Verifies a signed command envelope and carries it out: what the mailbox calls on a
    /// commit, and what any other transport (a serial console, a test) calls directly.
    /// `now` is the terminal's clock. Returns the command id, or the refusal, which is
    /// also in the registers.
    pub fn accept_envelope(&mut self, bytes: &[u8], now: Timestamp) -> Result<u64, Refusal> {
        let checked = self.check(bytes, now);
        self.conclude(checked, now)
    }

    /// Carries out what [`Speaker::check`] found and records the verdict: the part of
    /// [`Speaker::accept_envelope`] that changes the terminal. Split from the check so the
    /// mailbox's commit checks the envelope where it lies, in the mailbox's registers,
    /// instead of a copy of up to 2 KB on the heap.
    fn conclude(&mut self, checked: Result<Checked, Refusal>, now: Timestamp) -> Result<u64, Refusal> {
        self.clock_ms = self.clock_ms.max(now.0);
        let result = checked.and_then(|c| self.carry_out(c));
        match result {
            Ok(id) => self.verdict = Verdict { result: 1, reason: 0, id },
            Err(r) => {
                self.verdict = Verdict { result: 2, reason: r.reason as u16, id: r.id.unwrap_or(0) };
                if let Some(id) = r.id.filter(|&id| id != 0) {
                    self.log.open(id, 0, CommandState::Refused, r.reason);
                } else {
                    self.log.seq = self.log.seq.wrapping_add(1);
                }
            }
        }
        result
    }

    /// Every check of an envelope, changing nothing: signature, gateway, expiry, replay
    /// and device. Not inlined: the signature check's frame (its lookup tables, 5.6 KiB)
    /// is on the stack only while it runs.
    #[inline(never)]
    fn check(&self, bytes: &[u8], now: Timestamp) -> Result<Checked, Refusal> {
        let refuse = |reason| Refusal { id: command::peek_id(bytes), reason };
        let Some(identity) = &self.identity else { return Err(refuse(Reason::NotProvisioned)) };
        // Check on a copy of the window and keep it only if the device matches too, so a
        // misrouted command does not burn its id for the speaker it was meant for.
        let mut window = self.window;
        let cmd = command::open(bytes, &identity.key, &identity.gateway, now, &mut window)
            .map_err(|e| refuse(Reason::of(&e)))?;
        if cmd.device != identity.device {
            return Err(Refusal { id: Some(cmd.id), reason: Reason::WrongDevice });
        }
        Ok(Checked { cmd, window })
    }

    /// Carries out a command that passed [`Speaker::check`].
    fn carry_out(&mut self, Checked { cmd, window }: Checked) -> Result<u64, Refusal> {
        self.window = window;
        let expires_at_ms = cmd.expires_at.0;
        match cmd.action {
            Action::Play(p) => self.enqueue(cmd.id, p, expires_at_ms),
            Action::Stop { broadcast } => {
                let found = self.drop_broadcast(broadcast, Reason::Stopped);
                if !found {
                    // A stop that overtook its play: remember the broadcast as stopped
                    // so the play is not started when it arrives.
                    self.remember(broadcast, CommandState::Interrupted, Reason::Stopped);
                }
                self.log.open(cmd.id, broadcast, CommandState::Done, Reason::None);
                self.schedule();
            }
            Action::Write { .. } => return Err(Refusal { id: Some(cmd.id), reason: Reason::UnsupportedAction }),
        }
        Ok(cmd.id)
    }

    fn enqueue(&mut self, id: u64, p: Playback, expires_at_ms: i64) {
        if p.volume.is_some_and(|v| v > 100) {
            self.log.open(id, p.broadcast, CommandState::Refused, Reason::Invalid);
            return;
        }
        // A copy of a broadcast already held: the new command reports on it.
        let playing = self.current.is_some_and(|c| c.broadcast == p.broadcast);
        let suspended = self.waiting.iter().find(|e| e.broadcast == p.broadcast).map(|e| e.started);
        if playing || suspended.is_some() {
            let state = match (playing, suspended) {
                (true, _) => CommandState::Playing,
                (false, Some(true)) => CommandState::Preempted,
                _ => CommandState::Received,
            };
            let slot = self.log.open(id, p.broadcast, state, Reason::None);
            let held = if playing {
                self.current.as_mut()
            } else {
                self.waiting.iter_mut().find(|e| e.broadcast == p.broadcast)
            };
            if let Some(e) = held {
                e.command = id;
                e.slot = Some(slot);
            }
            return;
        }
        if let Some(f) = self.finished.iter().find(|f| f.broadcast == p.broadcast && f.broadcast != 0).copied() {
            let state = CommandState::from_code(f.state).unwrap_or(CommandState::Played);
            self.log.open(id, p.broadcast, state, Reason::from_code(f.reason).unwrap_or(Reason::None));
            return;
        }
        if !self.ready() {
            self.log.open(id, p.broadcast, CommandState::Failed, Reason::NotReady);
            return;
        }
        if self.waiting.len() >= QUEUE {
            self.log.open(id, p.broadcast, CommandState::Failed, Reason::QueueFull);
            return;
        }
        let slot = self.log.open(id, p.broadcast, CommandState::Received, Reason::None);
        let entry = self.entry(id, Some(slot), p.broadcast, p.level, clip_seconds(&p.content), p.repeat);
        let entry =
            Entry { volume: p.volume, start_at_ms: p.start_at.map_or(i64::MIN, |t| t.0), expires_at_ms, ..entry };
        self.waiting.push(entry);
        self.schedule();
    }

    fn entry(
        &mut self,
        command: u64,
        slot: Option<usize>,
        broadcast: u64,
        level: Level,
        duration_s: f32,
        repeat: u8,
    ) -> Entry {
        self.arrivals = self.arrivals.wrapping_add(1);
        Entry {
            command,
            slot,
            broadcast,
            level,
            duration_s,
            repeat: repeat.max(1),
            volume: None,
            start_at_ms: i64::MIN,
            expires_at_ms: i64::MAX,
            resumable: true,
            arrival: self.arrivals,
            started: false,
            repeat_now: 1,
            elapsed_s: 0.0,
        }
    }

    fn report(&mut self, e: &Entry, state: CommandState, reason: Reason) {
        if let Some(slot) = e.slot {
            let repeat = if state == CommandState::Playing { e.repeat_now } else { 0 };
            self.log.set(slot, e.command, state, reason, repeat);
        }
    }

    fn remember(&mut self, broadcast: u64, state: CommandState, reason: Reason) {
        self.finished[self.finished_next] = Finished { broadcast, state: state as u16, reason: reason as u16 };
        self.finished_next = (self.finished_next + 1) % SLOTS;
    }

    /// Ends an entry for good.
    fn end(&mut self, e: Entry, state: CommandState, reason: Reason) {
        self.report(&e, state, reason);
        self.remember(e.broadcast, state, reason);
        if e.started {
            self.last_broadcast = e.broadcast;
            self.outcome = if state == CommandState::Played { Outcome::Played } else { Outcome::Interrupted };
        }
    }

    /// Takes the current playback off the amplifier for a higher one.
    fn suspend(&mut self, c: Entry) {
        if c.resumable {
            self.report(&c, CommandState::Preempted, Reason::Preempted);
            self.waiting.push(Entry { elapsed_s: 0.0, ..c });
        } else {
            self.end(c, CommandState::Interrupted, Reason::Preempted);
        }
    }

    fn start(&mut self, e: Entry) {
        if let Some(v) = e.volume {
            self.volume = v;
        }
        let e = Entry { started: true, ..e };
        self.report(&e, CommandState::Playing, Reason::None);
        self.current = Some(e);
        self.state = PlaybackState::Playing;
    }

    /// Removes `broadcast` wherever it is held; true if it was.
    fn drop_broadcast(&mut self, broadcast: u64, reason: Reason) -> bool {
        let mut found = false;
        if let Some(c) = self.current.filter(|c| c.broadcast == broadcast) {
            self.current = None;
            self.end(c, CommandState::Interrupted, reason);
            self.state = PlaybackState::Interrupted;
            found = true;
        }
        while let Some(i) = self.waiting.iter().position(|e| e.broadcast == broadcast) {
            let e = self.waiting.remove(i);
            let state = if e.started { CommandState::Interrupted } else { CommandState::Failed };
            self.end(e, state, reason);
            found = true;
        }
        found
    }

    /// Expires what waits too long, then starts or pre-empts as levels say.
    fn schedule(&mut self) {
        let now = self.clock_ms;
        while let Some(i) = self.waiting.iter().position(|e| now >= e.expires_at_ms) {
            let e = self.waiting.remove(i);
            let state = if e.started { CommandState::Interrupted } else { CommandState::Failed };
            self.end(e, state, Reason::Expired);
        }
        if !self.ready() {
            return;
        }
        let best = self
            .waiting
            .iter()
            .enumerate()
            .filter(|(_, e)| e.start_at_ms <= now)
            .min_by_key(|(_, e)| (e.level as u8, e.arrival))
            .map(|(i, e)| (i, e.level));
        let Some((i, level)) = best else { return };
        match self.current {
            None => {
                let e = self.waiting.remove(i);
                self.start(e);
            }
            Some(c) if level.preempts(c.level) => {
                let e = self.waiting.remove(i);
                self.current = None;
                self.suspend(c);
                self.start(e);
            }
            Some(_) => {}
        }
    }

    /// Runs the terminal for `dt_s` seconds with its self-test results.
    pub fn update(&mut self, inputs: &SpeakerInputs, dt_s: f32) {
        let dt_s = if dt_s.is_finite() { dt_s.max(0.0) } else { 0.0 };
        self.uptime_s += f64::from(dt_s);
        self.clock_ms = self.clock_ms.saturating_add((f64::from(dt_s) * 1000.0) as i64);
        let bit = |fault: bool, mask: u16| if fault { mask } else { 0 };
        self.faults = bit(!inputs.amplifier_ok, FAULT_AMPLIFIER) | bit(!inputs.line_ok, FAULT_LINE);
        if !self.ready() {
            if let Some(c) = self.current.take() {
                self.end(c, CommandState::Interrupted, Reason::Fault);
            }
            self.state = PlaybackState::Fault;
            self.schedule();
            return;
        }
        if self.state == PlaybackState::Fault {
            self.state = PlaybackState::Idle;
        }
        let mut left = dt_s;
        while let Some(mut c) = self.current {
            let remaining = c.duration_s - c.elapsed_s;
            if left < remaining {
                c.elapsed_s += left;
                self.current = Some(c);
                break;
            }
            left -= remaining;
            if c.repeat_now >= c.repeat {
                self.current = None;
                self.end(c, CommandState::Played, Reason::None);
                self.state = PlaybackState::Idle;
                self.schedule();
                continue;
            }
            c.repeat_now += 1;
            c.elapsed_s = -REPEAT_GAP_S;
            self.current = Some(c);
            self.report(&c, CommandState::Playing, Reason::None);
        }
        self.schedule();
    }

    fn log_register(&self, address: u16) -> Option<u16> {
        let id = |v: u64, i: u16| words::part(words::from_u64(v, ORDER), i);
        match address {
            100 => Some(self.log.seq),
            101 => Some(self.verdict.result),
            102 => Some(self.verdict.reason),
            103..=106 => id(self.verdict.id, address - 103),
            107 => Some(SLOTS as u16),
            108..=109 => Some(0),
            _ => {
                let offset = address.checked_sub(SLOT_BASE)?;
                let slot = self.log.slots.get(usize::from(offset / SLOT_STRIDE))?;
                match offset % SLOT_STRIDE {
                    i @ 0..=3 => id(slot.command, i),
                    i @ 4..=7 => id(slot.broadcast, i - 4),
                    8 => Some(slot.state),
                    9 => Some(slot.reason),
                    10 => Some(slot.seq),
                    _ => Some(slot.repeat),
                }
            }
        }
    }
}

impl RegisterMap for Speaker {
    fn register(&self, table: Table, address: u16) -> Option<u16> {
        let c = self.current;
        match (table, address) {
            (Table::Input, 0) => Some(self.state as u16),
            (Table::Input, 1..=4) => words::part(words::from_u64(self.playing().unwrap_or(0), ORDER), address - 1),
            (Table::Input, 5) => Some(c.map_or(0, |c| c.level as u16)),
            (Table::Input, 6) => Some(c.map_or(0, |c| u16::from(c.repeat_now))),
            (Table::Input, 7) => Some(c.map_or(0, |c| u16::from(c.repeat))),
            (Table::Input, 8) => Some(self.faults),
            (Table::Input, 9) => Some(self.outcome as u16),
            (Table::Input, 10..=13) => words::part(words::from_u64(self.last_broadcast, ORDER), address - 10),
            (Table::Input, 14) => Some((libm::floor(self.uptime_s) as u64 & 0xFFFF) as u16),
            (Table::Input, 15) => Some(self.waiting.len() as u16),
            (Table::Input, 16) => Some(u16::from(self.identity.is_some())),
            (Table::Input, 17) => Some(u16::from(self.log.signer.is_some())),
            (Table::Input, a) if (LOG_BASE..LOG_BASE + LOG_REGISTERS).contains(&a) => self.log_register(a),
            (Table::Input, a) if (RECEIPT_BASE..RECEIPT_BASE + BLOCK_REGISTERS * SLOTS as u16).contains(&a) => {
                self.log.receipt_register(a)
            }
            (Table::Input, a) if (LATEST_BASE..LATEST_BASE + LATEST_REGISTERS).contains(&a) => {
                self.log.latest_register(a)
            }
            (Table::Input, a) if (PUBLIC_KEY_BASE..PUBLIC_KEY_BASE + PUBLIC_KEY_REGISTERS).contains(&a) => {
                let key = self.public_key().unwrap_or([0; 32]);
                let at = usize::from(a - PUBLIC_KEY_BASE) * 2;
                Some(u16::from_be_bytes([key[at], key[at + 1]]))
            }
            (Table::Holding, 0) => Some(u16::from(self.volume)),
            (Table::Holding, a) => self.mailbox.register(a),
            _ => None,
        }
    }

    fn bit(&self, table: Table, address: u16) -> Option<bool> {
        (table == Table::Discrete && address == 0).then_some(self.ready())
    }

    fn write_registers(&mut self, address: u16, words: &[u16]) -> Result<(), Exception> {
        match (address, words) {
            (0, &[v]) if v <= 100 => {
                self.volume = v as u8;
                Ok(())
            }
            (0, &[_]) => Err(Exception::IllegalDataValue),
            (a, w) if self.mailbox.contains(a) => {
                if let Written::Commit(n) = self.mailbox.write(a, w)? {
                    let now = self.clock();
                    // Checked where it lies (no copy), then carried out: what
                    // `accept_envelope` does. The verdict goes to the registers; the write
                    // itself succeeded.
                    let checked = self.check(self.mailbox.envelope_bytes(n), now);
                    let _ = self.conclude(checked, now);
                }
                Ok(())
            }
            _ => Err(Exception::IllegalDataAddress),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::{read_bits, read_registers, write_registers};
    use ed25519_dalek::SigningKey;
    use protocol::command::Command;

    const OK: SpeakerInputs = SpeakerInputs { amplifier_ok: true, line_ok: true };
    const NOW: i64 = 1_700_000_000_000;

    fn req(broadcast: u64, level: Level, repeat: u8) -> PlayRequest {
        PlayRequest { broadcast, level, duration_s: 30.0, repeat, volume: None }
    }

    fn issuer() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn terminal() -> Speaker {
        let mut s = Speaker::new(70);
        s.provision(issuer().verifying_key().to_bytes(), "gw-dongcun", "dongcun-speaker-1").unwrap();
        s.set_clock(Timestamp(NOW));
        s
    }

    fn command(id: u64, action: Action) -> Command {
        Command {
            id,
            tenant: "county".into(),
            gateway: "gw-dongcun".into(),
            device: "dongcun-speaker-1".into(),
            issued_at: Timestamp(NOW - 1000),
            expires_at: Timestamp(NOW + 600_000),
            action,
        }
    }

    /// A TTS broadcast whose clip lasts `seconds` (4 CJK characters a second).
    fn play(id: u64, broadcast: u64, level: Level, seconds: usize, repeat: u8) -> Command {
        let text: String = core::iter::repeat_n('警', seconds * 4).collect();
        let content = Content::Tts { text };
        command(id, Action::Play(Playback { broadcast, level, content, repeat, volume: Some(90), start_at: None }))
    }

    /// Writes an envelope through the mailbox as a gateway does: data, then length.
    fn deliver(s: &mut Speaker, wire: &[u8]) {
        let words: Vec<u16> =
            wire.chunks(2).map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])).collect();
        for (i, chunk) in words.chunks(123).enumerate() {
            write_registers(s, MAILBOX.0 + 1 + (i * 123) as u16, chunk).unwrap();
        }
        write_registers(s, MAILBOX.0, &[wire.len() as u16]).unwrap();
    }

    /// The command log block as a gateway reads it: `(command, broadcast, state, reason)` per used slot.
    fn slots(s: &Speaker) -> Vec<(u64, u64, u16, u16)> {
        let mut regs = [0u16; LOG_REGISTERS as usize];
        read_registers(s, Table::Input, LOG_BASE, &mut regs).unwrap();
        let base = usize::from(SLOT_BASE - LOG_BASE);
        (0..SLOTS)
            .map(|i| &regs[base + i * 12..base + i * 12 + 12])
            .filter(|r| r[..4] != [0; 4])
            .map(|r| {
                let id = |w: &[u16]| words::to_u64([w[0], w[1], w[2], w[3]], ORDER);
                (id(&r[0..4]), id(&r[4..8]), r[8], r[9])
            })
            .collect()
    }

    fn state_of(s: &Speaker, id: u64) -> (CommandState, Reason) {
        s.command_state(id).unwrap()
    }

    #[test]
    fn a_playback_plays_every_repeat_and_ends_in_played() {
        let mut s = Speaker::new(70);
        s.play(req(42, Level::Blue, 2)).unwrap();
        s.update(&OK, 31.0);
        assert_eq!(s.state(), PlaybackState::Playing);
        let mut regs = [0u16; 17];
        read_registers(&s, Table::Input, 0, &mut regs).unwrap();
        assert_eq!(regs[0], 1);
        assert_eq!(words::to_u64([regs[1], regs[2], regs[3], regs[4]], ORDER), 42);
        assert_eq!(regs[6], 2, "second repeat");
        assert_eq!(regs[16], 0, "not provisioned");
        s.update(&OK, 30.0); // 30 s + 2 s gap + 30 s = 62 s: one second to go
        assert_eq!(s.state(), PlaybackState::Playing);
        s.update(&OK, 1.0);
        assert_eq!(s.state(), PlaybackState::Idle);
        assert_eq!(s.outcome(), Outcome::Played);
        read_registers(&s, Table::Input, 0, &mut regs).unwrap();
        assert_eq!(regs[9], Outcome::Played as u16);
        assert_eq!(words::to_u64([regs[10], regs[11], regs[12], regs[13]], ORDER), 42);
    }

    #[test]
    fn a_higher_level_preempts_a_local_playback_and_an_equal_level_is_refused() {
        let mut s = Speaker::new(70);
        s.play(req(1, Level::Yellow, 1)).unwrap();
        assert_eq!(s.play(req(2, Level::Yellow, 1)), Err(PlayError::Busy));
        assert_eq!(s.play(req(3, Level::Blue, 1)), Err(PlayError::Busy));
        s.play(req(4, Level::Red, 1)).unwrap();
        assert_eq!(s.playing(), Some(4));
        assert_eq!(s.outcome(), Outcome::Interrupted, "a local playback is not resumed");
        assert_eq!(s.waiting().count(), 0);
    }

    #[test]
    fn stop_interrupts_only_the_broadcast_named() {
        let mut s = Speaker::new(70);
        s.play(req(9, Level::Orange, 3)).unwrap();
        assert!(!s.stop(8));
        assert!(s.stop(9));
        assert_eq!(s.state(), PlaybackState::Interrupted);
        s.play(req(10, Level::Blue, 1)).unwrap();
        assert_eq!(s.state(), PlaybackState::Playing);
    }

    #[test]
    fn a_line_fault_interrupts_and_shows_until_it_clears() {
        let mut s = Speaker::new(70);
        s.play(req(5, Level::Blue, 1)).unwrap();
        s.update(&SpeakerInputs { amplifier_ok: true, line_ok: false }, 1.0);
        assert_eq!(s.state(), PlaybackState::Fault);
        assert_eq!(s.outcome(), Outcome::Interrupted);
        let mut ready = [true];
        read_bits(&s, Table::Discrete, 0, &mut ready).unwrap();
        assert!(!ready[0]);
        assert_eq!(s.play(req(6, Level::Red, 1)), Err(PlayError::NotReady));
        s.update(&OK, 1.0);
        assert_eq!(s.state(), PlaybackState::Idle);
    }

    #[test]
    fn volume_is_writable_within_0_to_100() {
        let mut s = Speaker::new(70);
        write_registers(&mut s, 0, &[85]).unwrap();
        assert_eq!(s.volume(), 85);
        assert_eq!(write_registers(&mut s, 0, &[101]), Err(Exception::IllegalDataValue));
        assert_eq!(write_registers(&mut s, 2000, &[1]), Err(Exception::IllegalDataAddress));
        assert_eq!(s.play(PlayRequest { volume: Some(120), ..req(1, Level::Blue, 1) }), Err(PlayError::Invalid));
    }

    #[test]
    fn a_signed_play_through_the_mailbox_is_received_plays_and_is_reported_played() {
        let mut s = terminal();
        deliver(&mut s, &play(100, 7, Level::Red, 3, 2).sign(&issuer()));
        let mut v = [0u16; 7];
        read_registers(&s, Table::Input, 100, &mut v).unwrap();
        assert_eq!(&v[1..3], &[1, 0], "received, no reason");
        assert_eq!(words::to_u64([v[3], v[4], v[5], v[6]], ORDER), 100);
        assert_eq!(slots(&s), [(100, 7, CommandState::Playing as u16, 0)]);
        assert_eq!(s.playing(), Some(7));
        assert_eq!(s.volume(), 90);
        let mut length = [9u16];
        read_registers(&s, Table::Holding, MAILBOX.0, &mut length).unwrap();
        assert_eq!(length, [0], "the mailbox reads empty once taken");
        s.update(&OK, 3.0 + REPEAT_GAP_S + 3.0);
        assert_eq!(state_of(&s, 100), (CommandState::Played, Reason::None));
        assert_eq!(s.outcome(), Outcome::Played);
    }

    #[test]
    fn forged_tampered_expired_replayed_and_misaddressed_envelopes_are_refused_with_their_reason() {
        let mut s = terminal();
        let forged = play(1, 1, Level::Red, 3, 1).sign(&SigningKey::from_bytes(&[8u8; 32]));
        let mut tampered = play(2, 1, Level::Red, 3, 1).sign(&issuer());
        let at = tampered.len() - 67; // the repeat count, just before volume and start time
        tampered[at] ^= 0x20;
        let expired = Command { expires_at: Timestamp(NOW - 1), ..play(3, 1, Level::Red, 3, 1) }.sign(&issuer());
        let other_gw = Command { gateway: "gw-xicun".into(), ..play(4, 1, Level::Red, 3, 1) }.sign(&issuer());
        let other_dev = Command { device: "dongcun-speaker-2".into(), ..play(5, 1, Level::Red, 3, 1) }.sign(&issuer());
        let write = command(6, Action::Write { point: "volume".into(), value: 100.0 }).sign(&issuer());
        let good = play(7, 1, Level::Blue, 3, 1).sign(&issuer());
        for (wire, id, reason) in [
            (&forged, 1, Reason::BadSignature),
            (&tampered, 2, Reason::BadSignature),
            (&expired, 3, Reason::Expired),
            (&other_gw, 4, Reason::WrongGateway),
            (&other_dev, 5, Reason::WrongDevice),
            (&write, 6, Reason::UnsupportedAction),
        ] {
            deliver(&mut s, wire);
            assert_eq!(state_of(&s, id), (CommandState::Refused, reason), "command {id}");
            assert_eq!(s.playing(), None, "command {id} must not play");
        }
        deliver(&mut s, &good);
        assert_eq!(state_of(&s, 7).0, CommandState::Playing);
        s.stop(1);
        deliver(&mut s, &good);
        let mut v = [0u16; 3];
        read_registers(&s, Table::Input, 100, &mut v).unwrap();
        assert_eq!((v[1], v[2]), (2, Reason::Replayed as u16), "the second copy is a replay");
        assert_eq!(s.accept_envelope(&[0xC5, 9], s.clock()), Err(Refusal { id: None, reason: Reason::Malformed }));
        let mut bare = Speaker::new(70);
        assert_eq!(bare.accept_envelope(&good, Timestamp(NOW)).unwrap_err().reason, Reason::NotProvisioned);
    }

    #[test]
    fn a_higher_level_preempts_a_commanded_playback_which_then_resumes() {
        let mut s = terminal();
        deliver(&mut s, &play(10, 1, Level::Yellow, 10, 1).sign(&issuer()));
        s.update(&OK, 4.0);
        deliver(&mut s, &play(11, 2, Level::Red, 3, 1).sign(&issuer()));
        assert_eq!(s.playing(), Some(2));
        assert_eq!(state_of(&s, 10), (CommandState::Preempted, Reason::Preempted));
        assert_eq!(s.waiting().collect::<Vec<_>>(), [1]);
        s.update(&OK, 3.0);
        assert_eq!(state_of(&s, 11).0, CommandState::Played);
        assert_eq!(s.playing(), Some(1), "the yellow one resumes");
        assert_eq!(state_of(&s, 10).0, CommandState::Playing);
        s.update(&OK, 10.0);
        assert_eq!(state_of(&s, 10).0, CommandState::Played, "resumed from the start of its repeat");
    }

    #[test]
    fn a_suspended_playback_that_expires_is_reported_interrupted() {
        let mut s = terminal();
        let yellow = Command { expires_at: Timestamp(NOW + 5_000), ..play(20, 1, Level::Yellow, 10, 1) };
        deliver(&mut s, &yellow.sign(&issuer()));
        s.update(&OK, 1.0);
        deliver(&mut s, &play(21, 2, Level::Orange, 8, 1).sign(&issuer()));
        s.update(&OK, 8.0);
        assert_eq!(state_of(&s, 21).0, CommandState::Played);
        assert_eq!(state_of(&s, 20), (CommandState::Interrupted, Reason::Expired));
        assert_eq!(s.playing(), None);
    }

    #[test]
    fn an_equal_level_waits_its_turn_and_a_start_time_is_kept() {
        let mut s = terminal();
        deliver(&mut s, &play(30, 1, Level::Orange, 3, 1).sign(&issuer()));
        deliver(&mut s, &play(31, 2, Level::Orange, 3, 1).sign(&issuer()));
        assert_eq!(state_of(&s, 31).0, CommandState::Received);
        let later = match play(32, 3, Level::Red, 3, 1).action {
            Action::Play(p) => Action::Play(Playback { start_at: Some(Timestamp(NOW + 60_000)), ..p }),
            a => a,
        };
        deliver(&mut s, &command(32, later).sign(&issuer()));
        assert_eq!(state_of(&s, 32).0, CommandState::Received, "not before its start time");
        s.update(&OK, 3.0);
        assert_eq!(s.playing(), Some(2));
        s.update(&OK, 56.0);
        assert_eq!(s.playing(), None);
        s.update(&OK, 1.0);
        assert_eq!(s.playing(), Some(3), "red starts on time");
        assert_eq!(state_of(&s, 31).0, CommandState::Played);
    }

    #[test]
    fn a_stop_command_interrupts_its_broadcast_and_a_late_play_of_it_does_not_start() {
        let mut s = terminal();
        deliver(&mut s, &play(40, 5, Level::Red, 10, 3).sign(&issuer()));
        deliver(&mut s, &command(41, Action::Stop { broadcast: 5 }).sign(&issuer()));
        assert_eq!(state_of(&s, 41).0, CommandState::Done);
        assert_eq!(state_of(&s, 40), (CommandState::Interrupted, Reason::Stopped));
        assert_eq!(s.state(), PlaybackState::Interrupted);
        deliver(&mut s, &command(42, Action::Stop { broadcast: 6 }).sign(&issuer()));
        deliver(&mut s, &play(43, 6, Level::Red, 3, 1).sign(&issuer()));
        assert_eq!(state_of(&s, 43), (CommandState::Interrupted, Reason::Stopped));
        assert_eq!(s.playing(), None);
    }

    #[test]
    fn a_retried_copy_of_a_broadcast_takes_over_its_reports_instead_of_playing_twice() {
        let mut s = terminal();
        deliver(&mut s, &play(50, 8, Level::Blue, 5, 1).sign(&issuer()));
        s.update(&OK, 1.0);
        deliver(&mut s, &play(51, 8, Level::Blue, 5, 1).sign(&issuer()));
        assert_eq!(state_of(&s, 51).0, CommandState::Playing);
        s.update(&OK, 4.0);
        assert_eq!(state_of(&s, 51).0, CommandState::Played);
        deliver(&mut s, &play(52, 8, Level::Blue, 5, 1).sign(&issuer()));
        assert_eq!(state_of(&s, 52).0, CommandState::Played);
        assert_eq!(s.playing(), None);
    }

    #[test]
    fn a_faulty_amplifier_fails_a_play_and_a_full_queue_refuses_more() {
        let mut s = terminal();
        s.update(&SpeakerInputs { amplifier_ok: false, line_ok: true }, 1.0);
        deliver(&mut s, &play(60, 1, Level::Red, 3, 1).sign(&issuer()));
        assert_eq!(state_of(&s, 60), (CommandState::Failed, Reason::NotReady));
        s.update(&OK, 1.0);
        deliver(&mut s, &play(61, 2, Level::Red, 30, 1).sign(&issuer()));
        for i in 0..QUEUE as u64 {
            deliver(&mut s, &play(62 + i, 3 + i, Level::Blue, 3, 1).sign(&issuer()));
        }
        deliver(&mut s, &play(70, 20, Level::Blue, 3, 1).sign(&issuer()));
        assert_eq!(state_of(&s, 70), (CommandState::Failed, Reason::QueueFull));
        assert_eq!(state_of(&s, 61).0, CommandState::Playing, "in-progress commands keep their slots");
    }

    #[test]
    fn a_gateway_decodes_the_log_block_into_acks() {
        let mut s = terminal();
        deliver(&mut s, &play(90, 4, Level::Red, 3, 1).sign(&issuer()));
        deliver(&mut s, &play(91, 5, Level::Red, 3, 1).sign(&SigningKey::from_bytes(&[9u8; 32])));
        let mut regs = [0u16; LOG_REGISTERS as usize];
        read_registers(&s, Table::Input, LOG_BASE, &mut regs).unwrap();
        let block = decode_log(&regs).unwrap();
        assert_eq!(block.verdict, Some(Err((91, Reason::BadSignature))));
        let by_id = |id| block.slots.iter().find(|r| r.command == id).unwrap();
        assert_eq!(by_id(90).ack(), (protocol::command::AckState::Playing, None));
        assert_eq!(by_id(91).ack(), (protocol::command::AckState::Refused, Some("bad_signature")));
        assert!(decode_log(&regs[1..]).is_none());
    }

    #[test]
    fn the_command_log_block_is_one_read_and_its_sequence_moves_on_every_change() {
        let mut s = terminal();
        let mut seq = [0u16];
        read_registers(&s, Table::Input, LOG_BASE, &mut seq).unwrap();
        deliver(&mut s, &play(80, 1, Level::Red, 2, 1).sign(&issuer()));
        let mut after = [0u16];
        read_registers(&s, Table::Input, LOG_BASE, &mut after).unwrap();
        assert_ne!(seq, after);
        let mut all = [0u16; LOG_REGISTERS as usize];
        assert!(LOG_REGISTERS as usize <= crate::modbus::MAX_READ_REGISTERS);
        read_registers(&s, Table::Input, LOG_BASE, &mut all).unwrap();
        assert_eq!(all[7], SLOTS as u16);
        for r in Reason::ALL {
            assert_eq!(Reason::from_code(r as u16), Some(r));
        }
    }

    /// The terminal's own key (what a board keeps in its key sector).
    const SPEAKER_SEED: [u8; 32] = [3u8; 32];

    fn signing_terminal() -> Speaker {
        let mut s = Speaker::with_key(70, SPEAKER_SEED);
        s.provision(issuer().verifying_key().to_bytes(), "gw-dongcun", "dongcun-speaker-1").unwrap();
        s.set_clock(Timestamp(NOW));
        s
    }

    /// What a gateway relays for command `id`: the slot from the log block and the
    /// receipt from the slot's block, read over the registers, with the sequence check.
    fn relayed(s: &Speaker, id: u64) -> protocol::receipt::SignedReceipt {
        let mut log = [0u16; LOG_REGISTERS as usize];
        read_registers(s, Table::Input, LOG_BASE, &mut log).unwrap();
        let slot = protocol::receipt::slot_of(&log, id).unwrap();
        let report = *decode_log(&log).unwrap().slots.iter().find(|r| r.command == id).unwrap();
        let mut regs = [0u16; BLOCK_REGISTERS as usize];
        read_registers(s, Table::Input, protocol::receipt::block_address(slot), &mut regs).unwrap();
        let block = ReceiptBlock::decode(&regs).unwrap();
        assert_eq!(block.seq, report.seq, "the receipt is in place when the slot's change is readable");
        Receipt::of_slot("gw-dongcun", "dongcun-speaker-1", &report, block.counter).with_signature(&block.sig)
    }

    fn key_from_registers(s: &Speaker) -> VerifyingKey {
        let mut regs = [0u16; PUBLIC_KEY_REGISTERS as usize];
        read_registers(s, Table::Input, PUBLIC_KEY_BASE, &mut regs).unwrap();
        let bytes: Vec<u8> = regs.iter().flat_map(|w| w.to_be_bytes()).collect();
        VerifyingKey::from_bytes(&bytes.try_into().unwrap()).unwrap()
    }

    #[test]
    fn every_state_of_a_command_is_signed_by_the_terminal_with_a_growing_counter() {
        let mut s = signing_terminal();
        let key = key_from_registers(&s);
        assert_eq!(key.to_bytes(), SigningKey::from_bytes(&SPEAKER_SEED).verifying_key().to_bytes());
        let mut flag = [0u16; 2];
        read_registers(&s, Table::Input, 16, &mut flag).unwrap();
        assert_eq!(flag, [1, 1], "command key provisioned, own key present");

        deliver(&mut s, &play(100, 7, Level::Red, 3, 1).sign(&issuer()));
        let playing = relayed(&s, 100);
        assert_eq!(playing.receipt.state, CommandState::Playing as u16);
        assert_eq!(playing.verify(&key), Ok(()));
        s.update(&OK, 3.5);
        let played = relayed(&s, 100);
        assert_eq!((played.receipt.state, played.receipt.broadcast), (CommandState::Played as u16, 7));
        assert_eq!(played.verify(&key), Ok(()));
        assert!(played.receipt.counter > playing.receipt.counter, "the counter grows with every receipt");
        assert_eq!(s.receipt_counter(), played.receipt.counter);
        let mut latest = [0u16; LATEST_REGISTERS as usize];
        read_registers(&s, Table::Input, LATEST_BASE, &mut latest).unwrap();
        let (slot, block) = protocol::receipt::decode_latest(&latest).expect("the latest receipt");
        assert_eq!(block.counter, played.receipt.counter, "the latest is the played");
        let mut log = [0u16; LOG_REGISTERS as usize];
        read_registers(&s, Table::Input, LOG_BASE, &mut log).unwrap();
        assert_eq!(protocol::receipt::slot_of(&log, 100), Some(slot));

        // What the gateway cannot do with it: claim `played` with the `playing` receipt,
        // move the `played` to another command, or sign one with another key.
        let forged = Receipt { state: CommandState::Played as u16, ..playing.receipt.clone() };
        assert!(forged.with_signature(&[0; 64]).verify(&key).is_err());
        let moved = protocol::receipt::SignedReceipt {
            receipt: Receipt { command: 101, ..played.receipt.clone() },
            sig: played.sig.clone(),
        };
        assert!(moved.verify(&key).is_err());
        assert!(played.receipt.clone().signed(&SigningKey::from_bytes(&[4u8; 32])).verify(&key).is_err());
    }

    #[test]
    fn refusals_are_signed_too_and_a_terminal_without_a_key_signs_nothing() {
        let mut s = signing_terminal();
        let forged = play(5, 1, Level::Red, 3, 1).sign(&SigningKey::from_bytes(&[8u8; 32]));
        deliver(&mut s, &forged);
        let refused = relayed(&s, 5);
        assert_eq!((refused.receipt.state, refused.receipt.reason), (2, Reason::BadSignature as u16));
        assert_eq!(refused.verify(&key_from_registers(&s)), Ok(()));

        let mut bare = terminal();
        assert_eq!(bare.public_key(), None);
        let mut regs = [9u16; PUBLIC_KEY_REGISTERS as usize];
        read_registers(&bare, Table::Input, PUBLIC_KEY_BASE, &mut regs).unwrap();
        assert_eq!(regs, [0; PUBLIC_KEY_REGISTERS as usize]);
        deliver(&mut bare, &play(6, 1, Level::Red, 3, 1).sign(&issuer()));
        let mut block = [9u16; BLOCK_REGISTERS as usize];
        read_registers(&bare, Table::Input, RECEIPT_BASE, &mut block).unwrap();
        assert_eq!(ReceiptBlock::decode(&block), Some(ReceiptBlock::default()), "no receipt without a key");
        let mut latest = [9u16; LATEST_REGISTERS as usize];
        read_registers(&bare, Table::Input, LATEST_BASE, &mut latest).unwrap();
        assert_eq!(protocol::receipt::decode_latest(&latest), None);
        assert_eq!(bare.receipt_counter(), 0);
    }

    #[test]
    fn a_restored_receipt_counter_never_goes_back() {
        let mut s = signing_terminal();
        s.restore_receipt_counter(1_000);
        deliver(&mut s, &play(1, 1, Level::Red, 3, 1).sign(&issuer()));
        assert_eq!(s.receipt_counter(), 1_002, "received, then playing");
        s.restore_receipt_counter(10);
        assert_eq!(s.receipt_counter(), 1_002);
        assert_eq!(relayed(&s, 1).receipt.counter, 1_002);
    }
}
