//! The speaker terminal's command log, as the terminal writes it and the gateway reads it:
//! the register layout, the command states and reason codes, and the decoding of the block
//! into acks.
//!
//! This is a device <-> gateway contract: the firmware (`firmware::speaker`) keeps the log
//! and the gateway (`gateway::report`) turns it into acks, and both take the layout from
//! here so that neither can drift from the other.
//!
//! Layout (input registers; 64-bit ids in [`ORDER`]):
//!
//! | address | type | meaning |
//! |---|---|---|
//! | 100 | u16 | log sequence: +1 (wrapping) on every change below; poll this one register to see that something changed |
//! | 101 | u16 | verdict on the last mailbox envelope: 0 none yet, 1 received, 2 refused |
//! | 102 | u16 | reason code of that verdict ([`Reason`]; 0 when received) |
//! | 103-106 | u64 | command id of that envelope (as the envelope claims, for refused ones; 0 if unreadable) |
//! | 107 | u16 | number of slots ([`SLOTS`]) |
//! | 108-109 | u16 | reserved, read 0 |
//! | 110 + 12 s + 0-3 | u64 | slot s (0..8): command id (0: empty slot) |
//! | 110 + 12 s + 4-7 | u64 | slot s: broadcast id the command is about (0 if unknown) |
//! | 110 + 12 s + 8 | u16 | slot s: state ([`CommandState`]) |
//! | 110 + 12 s + 9 | u16 | slot s: reason code ([`Reason`]) |
//! | 110 + 12 s + 10 | u16 | slot s: the log sequence (input 100) at its last change |
//! | 110 + 12 s + 11 | u16 | slot s: repeat playing now (1-based; 0 when not playing) |
//!
//! Invariants:
//! - Input 100..=205 is one read of [`LOG_REGISTERS`] registers (within a Modbus read's
//!   125): a gateway that saw input 100 change reads the block and acks every slot whose
//!   sequence is newer than what it last saw.
//! - Reason codes 1-7 are [`crate::command::CommandError`]'s checks in the order
//!   [`crate::command::open`] makes them; codes never change meaning.

use alloc::vec::Vec;

use crate::command::CommandError;
use crate::modbus::{self, WordOrder};

/// Word order of the 64-bit ids (command and broadcast ids) in the terminal's registers.
pub const ORDER: WordOrder = WordOrder::Abcd;
/// Slots of the command log.
pub const SLOTS: usize = 8;
/// First input register of the command log block.
pub const LOG_BASE: u16 = 100;
/// First input register of slot 0.
pub const SLOT_BASE: u16 = 110;
/// Registers per slot.
pub const SLOT_STRIDE: u16 = 12;
/// Input registers of the whole command log block (100..=205), one read.
pub const LOG_REGISTERS: u16 = SLOT_BASE - LOG_BASE + SLOT_STRIDE * SLOTS as u16;

/// Where one command stands, as the command log reports it (slot register +8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum CommandState {
    /// Verified and accepted; waiting to play (queued, or its start time not reached).
    Received = 1,
    /// Refused before acting; the reason says which check failed.
    Refused = 2,
    /// Playing now.
    Playing = 3,
    /// Every repeat played.
    Played = 4,
    /// Cut short for good: stopped, a fault, or expired while suspended.
    Interrupted = 5,
    /// Suspended by a higher level; resumes when that one ends.
    Preempted = 6,
    /// Accepted but could not play: not ready, queue full, or expired before it started.
    Failed = 7,
    /// A stop command carried out.
    Done = 8,
}

impl CommandState {
    /// From the register value.
    pub const fn from_code(code: u16) -> Option<CommandState> {
        Some(match code {
            1 => CommandState::Received,
            2 => CommandState::Refused,
            3 => CommandState::Playing,
            4 => CommandState::Played,
            5 => CommandState::Interrupted,
            6 => CommandState::Preempted,
            7 => CommandState::Failed,
            8 => CommandState::Done,
            _ => return None,
        })
    }

    /// True once nothing more will happen to the command.
    pub const fn is_final(self) -> bool {
        !matches!(self, CommandState::Received | CommandState::Playing | CommandState::Preempted)
    }
}

/// Why a command was refused, failed or interrupted (slot register +9, input 102).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Reason {
    /// No reason (received, playing, played, done).
    None = 0,
    /// Not a signed command envelope, or a body that does not decode.
    Malformed = 1,
    /// Larger than the protocol's limit.
    TooLarge = 2,
    /// The signature does not verify with the issuer's key: forged or tampered.
    BadSignature = 3,
    /// Addressed to another gateway.
    WrongGateway = 4,
    /// Past its expiry (refused), or expired before it could start or resume.
    Expired = 5,
    /// Issued further in the future than clock skew explains.
    IssuedInFuture = 6,
    /// Its id was already used.
    Replayed = 7,
    /// Signed for another device behind the same gateway.
    WrongDevice = 8,
    /// The terminal has no command key: it refuses every command.
    NotProvisioned = 9,
    /// Not a broadcast action (a speaker has no writable points by command).
    UnsupportedAction = 10,
    /// Amplifier or horn line faulty.
    NotReady = 11,
    /// Too many playbacks waiting.
    QueueFull = 12,
    /// A value out of range (volume over 100).
    Invalid = 13,
    /// A higher level took over.
    Preempted = 14,
    /// A stop command for this broadcast.
    Stopped = 15,
    /// A fault of the amplifier or line cut the playback.
    Fault = 16,
}

impl Reason {
    /// Every reason, by code.
    pub const ALL: [Reason; 17] = [
        Reason::None,
        Reason::Malformed,
        Reason::TooLarge,
        Reason::BadSignature,
        Reason::WrongGateway,
        Reason::Expired,
        Reason::IssuedInFuture,
        Reason::Replayed,
        Reason::WrongDevice,
        Reason::NotProvisioned,
        Reason::UnsupportedAction,
        Reason::NotReady,
        Reason::QueueFull,
        Reason::Invalid,
        Reason::Preempted,
        Reason::Stopped,
        Reason::Fault,
    ];

    /// From the register value.
    pub fn from_code(code: u16) -> Option<Reason> {
        Reason::ALL.get(usize::from(code)).copied()
    }

    /// A short stable name, the same as `CommandError::code` for the protocol's checks.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::None => "none",
            Reason::Malformed => "malformed",
            Reason::TooLarge => "too_large",
            Reason::BadSignature => "bad_signature",
            Reason::WrongGateway => "wrong_gateway",
            Reason::Expired => "expired",
            Reason::IssuedInFuture => "issued_in_future",
            Reason::Replayed => "replayed",
            Reason::WrongDevice => "wrong_device",
            Reason::NotProvisioned => "not_provisioned",
            Reason::UnsupportedAction => "unsupported_action",
            Reason::NotReady => "not_ready",
            Reason::QueueFull => "queue_full",
            Reason::Invalid => "invalid",
            Reason::Preempted => "preempted",
            Reason::Stopped => "stopped",
            Reason::Fault => "fault",
        }
    }

    /// The reason for a refusal by one of [`crate::command::open`]'s checks.
    pub const fn of(e: &CommandError) -> Reason {
        match e {
            CommandError::Malformed(_) => Reason::Malformed,
            CommandError::TooLarge(_) => Reason::TooLarge,
            CommandError::BadSignature => Reason::BadSignature,
            CommandError::WrongGateway => Reason::WrongGateway,
            CommandError::Expired => Reason::Expired,
            CommandError::IssuedInFuture => Reason::IssuedInFuture,
            CommandError::Replayed => Reason::Replayed,
        }
    }
}

/// One command log slot as a gateway reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotReport {
    /// The command id.
    pub command: u64,
    /// The broadcast it is about (0 if unknown).
    pub broadcast: u64,
    /// Where it stands.
    pub state: CommandState,
    /// Why (refused, failed, interrupted), else [`Reason::None`].
    pub reason: Reason,
    /// The log sequence at its last change.
    pub seq: u16,
    /// Repeat playing now.
    pub repeat: u16,
}

/// The command log block (input [`LOG_BASE`], [`LOG_REGISTERS`] registers) decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogBlock {
    /// The log sequence (input 100).
    pub seq: u16,
    /// Verdict on the last envelope: `None` if none yet, `Some(Ok(id))` received,
    /// `Some(Err((id, reason)))` refused (id 0 if unreadable).
    pub verdict: Option<Result<u64, (u64, Reason)>>,
    /// Used slots.
    pub slots: Vec<SlotReport>,
}

/// Decodes the command log block; `None` if `regs` is not the whole block.
pub fn decode_log(regs: &[u16]) -> Option<LogBlock> {
    if regs.len() != usize::from(LOG_REGISTERS) {
        return None;
    }
    let id = |w: &[u16]| modbus::to_u64([w[0], w[1], w[2], w[3]], ORDER);
    let verdict_id = id(&regs[3..7]);
    let verdict = match regs[1] {
        1 => Some(Ok(verdict_id)),
        2 => Some(Err((verdict_id, Reason::from_code(regs[2]).unwrap_or(Reason::Malformed)))),
        _ => None,
    };
    let base = usize::from(SLOT_BASE - LOG_BASE);
    let stride = usize::from(SLOT_STRIDE);
    let slots = (0..SLOTS)
        .filter_map(|i| {
            let r = &regs[base + i * stride..base + (i + 1) * stride];
            let command = id(&r[0..4]);
            (command != 0).then_some(())?;
            Some(SlotReport {
                command,
                broadcast: id(&r[4..8]),
                state: CommandState::from_code(r[8])?,
                reason: Reason::from_code(r[9]).unwrap_or(Reason::None),
                seq: r[10],
                repeat: r[11],
            })
        })
        .collect();
    Some(LogBlock { seq: regs[0], verdict, slots })
}

impl SlotReport {
    /// The ack a gateway publishes for this slot: `(state, reason)`. The reason starts
    /// with the firmware's reason code (`bad_signature`, `preempted`, `not_ready`...), which
    /// is what ingest's dispatcher matches on.
    pub fn ack(&self) -> (crate::command::AckState, Option<&'static str>) {
        use crate::command::AckState as A;
        let reason = (self.reason != Reason::None).then(|| self.reason.as_str());
        match self.state {
            CommandState::Received => (A::Delivered, None),
            CommandState::Refused => (A::Refused, reason),
            CommandState::Playing => (A::Playing, None),
            CommandState::Played => (A::Played, None),
            CommandState::Interrupted => (A::Interrupted, reason),
            CommandState::Preempted => (A::Interrupted, Some(Reason::Preempted.as_str())),
            CommandState::Failed => (A::Failed, reason),
            CommandState::Done => (A::Done, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_block_fits_one_modbus_read() {
        assert_eq!(LOG_REGISTERS, 106);
        assert!(LOG_REGISTERS <= modbus::Table::Input.max_read());
    }

    #[test]
    fn every_code_round_trips_and_unknown_codes_do_not_decode() {
        for r in Reason::ALL {
            assert_eq!(Reason::from_code(r as u16), Some(r));
        }
        assert_eq!(Reason::from_code(17), None);
        assert_eq!(CommandState::from_code(8), Some(CommandState::Done));
        assert_eq!(CommandState::from_code(0), None);
        assert_eq!(Reason::of(&CommandError::Replayed), Reason::Replayed);
    }

    #[test]
    fn a_block_decodes_its_verdict_and_used_slots_only() {
        let mut regs = [0u16; LOG_REGISTERS as usize];
        regs[0] = 7;
        regs[1] = 2;
        regs[2] = Reason::BadSignature as u16;
        regs[3..7].copy_from_slice(&modbus::from_u64(91, ORDER));
        let slot = usize::from(SLOT_BASE - LOG_BASE) + usize::from(SLOT_STRIDE);
        regs[slot..slot + 4].copy_from_slice(&modbus::from_u64(90, ORDER));
        regs[slot + 4..slot + 8].copy_from_slice(&modbus::from_u64(4, ORDER));
        regs[slot + 8] = CommandState::Playing as u16;
        regs[slot + 10] = 7;
        regs[slot + 11] = 1;
        let block = decode_log(&regs).unwrap();
        assert_eq!(block.seq, 7);
        assert_eq!(block.verdict, Some(Err((91, Reason::BadSignature))));
        assert_eq!(
            block.slots,
            [SlotReport {
                command: 90,
                broadcast: 4,
                state: CommandState::Playing,
                reason: Reason::None,
                seq: 7,
                repeat: 1
            }]
        );
        assert_eq!(block.slots[0].ack(), (crate::command::AckState::Playing, None));
        assert!(decode_log(&regs[1..]).is_none());
    }
}
