//! Speaker receipts: a loudspeaker terminal's own signed word on where a command stands
//! (received, playing, played, refused, ...), so that "it played" is the speaker's
//! statement, relayed by the gateway and checked by ingest, never the gateway's or the
//! broker's.
//!
//! The terminal signs exactly what its command log slot holds (docs/BROADCAST.md: command
//! id, broadcast id, state code, reason code) with its own Ed25519 key, prefixed with
//! [`DOMAIN`], bound to the gateway and device ids it was provisioned with, and numbered
//! with its receipt counter. The codes are the terminal's register values
//! ([`crate::speaker::CommandState`] and [`crate::speaker::Reason`]), not an ack state:
//! the signer signs words it already has, and ingest maps them to an ack state after the
//! signature verified ([`Receipt::supports`]).
//!
//! # Registers
//!
//! The terminal shows each slot's receipt next to its command log (input registers; the
//! counter in [`crate::speaker::ORDER`]):
//!
//! | address | type | meaning |
//! |---|---|---|
//! | 300 + 37 s + 0 | u16 | slot s: the log sequence (the slot's +10 register) the receipt was made at; 0 before the first |
//! | 300 + 37 s + 1-4 | u64 | slot s: the receipt counter |
//! | 300 + 37 s + 5-36 | bytes | slot s: the 64-byte Ed25519 signature, big-endian, two a register |
//! | 600-615 | bytes | the terminal's own public key (32 bytes, big-endian, two a register); 0 when it has none |
//! | 640 | u16 | the slot whose receipt was signed last, plus one; 0 before the first |
//! | 641-677 | | that slot's receipt block, as at 300 + 37 s |
//!
//! A gateway reads the latest receipt ([`LATEST_BASE`], [`LATEST_REGISTERS`]) in the same
//! job as the command log, so the receipt of the change it sees usually comes with it;
//! when the latest is of another slot it reads that slot's block ([`block_address`],
//! [`BLOCK_REGISTERS`] registers, one read). It relays a receipt only if the block's
//! sequence word equals the slot's: otherwise the slot moved on in between and it reads
//! the log again.
//!
//! Invariants:
//! - The counter increases by one with every receipt the terminal signs, across all its
//!   commands, and never goes back (a board persists it, see `firmware::speaker`): a
//!   verifier that keeps the highest counter it accepted for a delivery refuses an older
//!   receipt of the same command replayed after a newer one (a `preempted` after the
//!   `playing` that resumed it). A receipt names its command id, so it cannot be moved
//!   to another command, and ingest issues every command id once.
//! - [`Receipt::verify`] allocates only the signed message and keeps no state.
//! - The signed bytes are canonical ([`Receipt::to_bytes`]): a verifier never re-encodes
//!   JSON to check a signature.

use alloc::string::String;
use alloc::vec::Vec;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::command::AckState;
use crate::modbus;
use crate::speaker::{CommandState, LOG_BASE, ORDER, SLOT_BASE, SLOT_STRIDE, SLOTS, SlotReport};
use crate::varint::{put_str, put_u64};

/// Prefix of every signed receipt.
pub const DOMAIN: &[u8] = b"village-telemetry/receipt/v2\0";
/// First input register of slot 0's receipt block.
pub const RECEIPT_BASE: u16 = 300;
/// Registers of one slot's receipt block: sequence, counter, signature.
pub const BLOCK_REGISTERS: u16 = 1 + 4 + 32;
/// First input register of the terminal's public key (16 registers).
pub const PUBLIC_KEY_BASE: u16 = 600;
/// Registers of the public key.
pub const PUBLIC_KEY_REGISTERS: u16 = 16;
/// First input register of the latest receipt: slot + 1, then that slot's block.
pub const LATEST_BASE: u16 = 640;
/// Registers of the latest receipt.
pub const LATEST_REGISTERS: u16 = 1 + BLOCK_REGISTERS;

/// The latest receipt read at [`LATEST_BASE`]: the slot it belongs to and its block;
/// `None` before the first receipt, or if `regs` is not the whole of it.
pub fn decode_latest(regs: &[u16]) -> Option<(usize, ReceiptBlock)> {
    if regs.len() != usize::from(LATEST_REGISTERS) || regs[0] == 0 {
        return None;
    }
    Some((usize::from(regs[0] - 1), ReceiptBlock::decode(&regs[1..])?))
}

/// First input register of slot `slot`'s receipt block.
pub const fn block_address(slot: usize) -> u16 {
    RECEIPT_BASE + BLOCK_REGISTERS * slot as u16
}

/// The slot index that holds `command` in a command log block (input [`LOG_BASE`]), to
/// know which receipt block to read.
pub fn slot_of(log: &[u16], command: u64) -> Option<usize> {
    let base = usize::from(SLOT_BASE - LOG_BASE);
    let stride = usize::from(SLOT_STRIDE);
    (0..SLOTS).find(|i| {
        log.get(base + i * stride..base + i * stride + 4)
            .is_some_and(|w| command != 0 && modbus::to_u64([w[0], w[1], w[2], w[3]], ORDER) == command)
    })
}

/// One slot's receipt block as the terminal shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptBlock {
    /// The log sequence of the slot change the receipt is about (0: none yet).
    pub seq: u16,
    /// The receipt counter.
    pub counter: u64,
    /// The signature.
    pub sig: [u8; 64],
}

impl Default for ReceiptBlock {
    fn default() -> ReceiptBlock {
        ReceiptBlock { seq: 0, counter: 0, sig: [0; 64] }
    }
}

impl ReceiptBlock {
    /// Register `i` (0..[`BLOCK_REGISTERS`]) of the block; `None` past its end.
    pub fn word(&self, i: u16) -> Option<u16> {
        match i {
            0 => Some(self.seq),
            1..=4 => modbus::part(modbus::from_u64(self.counter, ORDER), i - 1),
            5..=36 => {
                let at = usize::from(i - 5) * 2;
                Some(u16::from_be_bytes([self.sig[at], self.sig[at + 1]]))
            }
            _ => None,
        }
    }

    /// Decodes a block read from the registers; `None` unless `regs` is one whole block.
    pub fn decode(regs: &[u16]) -> Option<ReceiptBlock> {
        if regs.len() != usize::from(BLOCK_REGISTERS) {
            return None;
        }
        let mut sig = [0u8; 64];
        for (i, w) in regs[5..].iter().enumerate() {
            sig[2 * i..2 * i + 2].copy_from_slice(&w.to_be_bytes());
        }
        Some(ReceiptBlock { seq: regs[0], counter: modbus::to_u64([regs[1], regs[2], regs[3], regs[4]], ORDER), sig })
    }
}

/// What a speaker signs about one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The gateway the speaker was provisioned behind.
    pub gateway: String,
    /// The speaker's device id.
    pub device: String,
    /// The command id.
    pub command: u64,
    /// The broadcast it is about (0 if unknown).
    pub broadcast: u64,
    /// The slot state code (1 received .. 8 done).
    pub state: u16,
    /// The reason code (0 none).
    pub reason: u16,
    /// The terminal's receipt counter: +1 for every receipt it signs.
    pub counter: u64,
}

/// A receipt with the speaker's signature, as the gateway relays it inside a command ack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReceipt {
    /// What was signed.
    #[serde(flatten)]
    pub receipt: Receipt,
    /// The signature, 128 lower-case hex digits.
    pub sig: String,
}

/// Why a receipt was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptError {
    /// The signature is not 64 bytes of hex.
    Malformed,
    /// It does not verify with the speaker's enrolled key.
    BadSignature,
}

impl ReceiptError {
    /// A short stable name for metrics.
    pub const fn code(&self) -> &'static str {
        match self {
            ReceiptError::Malformed => "malformed",
            ReceiptError::BadSignature => "bad_signature",
        }
    }
}

impl core::fmt::Display for ReceiptError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ReceiptError::Malformed => f.write_str("speaker receipt signature is not 64 bytes of hex"),
            ReceiptError::BadSignature => f.write_str("speaker receipt does not verify with the speaker's key"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ReceiptError {}

impl Receipt {
    /// The receipt of a command log slot, as the terminal signs it and as a gateway
    /// rebuilds it from the slot and its block.
    pub fn of_slot(gateway: &str, device: &str, slot: &SlotReport, counter: u64) -> Receipt {
        Receipt {
            gateway: gateway.into(),
            device: device.into(),
            command: slot.command,
            broadcast: slot.broadcast,
            state: slot.state as u16,
            reason: slot.reason as u16,
            counter,
        }
    }

    /// The canonical bytes that are signed ([`DOMAIN`] first).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(DOMAIN.len() + self.gateway.len() + self.device.len() + 40);
        out.extend_from_slice(DOMAIN);
        put_str(&mut out, &self.gateway);
        put_str(&mut out, &self.device);
        put_u64(&mut out, self.command);
        put_u64(&mut out, self.broadcast);
        out.extend_from_slice(&self.state.to_be_bytes());
        out.extend_from_slice(&self.reason.to_be_bytes());
        put_u64(&mut out, self.counter);
        out
    }

    /// Signs it with the speaker's key: 64 bytes, which the terminal exposes in its
    /// registers next to the slot.
    pub fn sign(&self, key: &SigningKey) -> [u8; 64] {
        key.sign(&self.to_bytes()).to_bytes()
    }

    /// Signs it and wraps it for relaying.
    pub fn signed(self, key: &SigningKey) -> SignedReceipt {
        let sig = self.sign(key);
        self.with_signature(&sig)
    }

    /// Wraps it with a signature read from the terminal's registers, for relaying.
    pub fn with_signature(self, sig: &[u8; 64]) -> SignedReceipt {
        SignedReceipt { receipt: self, sig: hex(sig) }
    }

    /// Checks a raw signature against the speaker's public key.
    pub fn verify(&self, key: &VerifyingKey, sig: &[u8; 64]) -> Result<(), ReceiptError> {
        key.verify_strict(&self.to_bytes(), &Signature::from_bytes(sig)).map_err(|_| ReceiptError::BadSignature)
    }

    /// Whether an ack in `ack` state may rest on this receipt: the state the gateway
    /// reports for the slot (`SlotReport::ack`), or `delivered`, which every state after
    /// the terminal accepted the command implies (a gateway that first sees a slot at
    /// `playing` acks `delivered` and `playing` with the same receipt).
    pub fn supports(&self, ack: AckState) -> bool {
        let Some(state) = CommandState::from_code(self.state) else { return false };
        let own = match state {
            CommandState::Received => AckState::Delivered,
            CommandState::Refused => AckState::Refused,
            CommandState::Playing => AckState::Playing,
            CommandState::Played => AckState::Played,
            CommandState::Interrupted | CommandState::Preempted => AckState::Interrupted,
            CommandState::Failed => AckState::Failed,
            CommandState::Done => AckState::Done,
        };
        let accepted = matches!(
            state,
            CommandState::Playing | CommandState::Played | CommandState::Interrupted | CommandState::Preempted
        );
        ack == own || (accepted && ack == AckState::Delivered)
    }
}

impl SignedReceipt {
    /// Checks the relayed receipt against the speaker's public key.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), ReceiptError> {
        let sig = unhex64(&self.sig).ok_or(ReceiptError::Malformed)?;
        self.receipt.verify(key, &sig)
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn unhex64(s: &str) -> Option<[u8; 64]> {
    let b = s.as_bytes();
    if b.len() != 128 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; 64];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nibble(b[2 * i])? << 4) | nibble(b[2 * i + 1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speaker() -> SigningKey {
        SigningKey::from_bytes(&[4u8; 32])
    }

    fn played() -> Receipt {
        Receipt {
            gateway: "gw-dongcun".into(),
            device: "dongcun-speaker-1".into(),
            command: 77,
            broadcast: 9,
            state: 4,
            reason: 0,
            counter: 12,
        }
    }

    #[test]
    fn a_receipt_signed_by_the_speaker_verifies_and_round_trips_as_json() {
        let signed = played().signed(&speaker());
        assert_eq!(signed.verify(&speaker().verifying_key()), Ok(()));
        let json = serde_json::to_string(&signed).unwrap();
        let back: SignedReceipt = serde_json::from_str(&json).unwrap();
        assert_eq!(back, signed);
        assert_eq!(back.verify(&speaker().verifying_key()), Ok(()));
    }

    #[test]
    fn a_receipt_not_signed_by_that_speaker_or_changed_is_refused() {
        let vk = speaker().verifying_key();
        assert_eq!(played().signed(&speaker()).verify(&vk), Ok(()), "positive control");
        // Signed by someone else (a gateway, the broker, another speaker).
        assert_eq!(played().signed(&SigningKey::from_bytes(&[5u8; 32])).verify(&vk), Err(ReceiptError::BadSignature));
        // A real "received" turned into "played", or moved to another command or speaker.
        let real = Receipt { state: 1, ..played() }.signed(&speaker());
        for changed in [
            Receipt { state: 4, ..real.receipt.clone() },
            Receipt { command: 78, ..real.receipt.clone() },
            Receipt { broadcast: 10, ..real.receipt.clone() },
            Receipt { reason: 3, ..real.receipt.clone() },
            Receipt { device: "dongcun-speaker-2".into(), ..real.receipt.clone() },
            Receipt { gateway: "gw-xicun".into(), ..real.receipt.clone() },
            Receipt { counter: 13, ..real.receipt.clone() },
        ] {
            let forged = SignedReceipt { receipt: changed, sig: real.sig.clone() };
            assert_eq!(forged.verify(&vk), Err(ReceiptError::BadSignature));
        }
        for bad in ["", "zz", &"0".repeat(127), &"g".repeat(128)] {
            let s = SignedReceipt { receipt: played(), sig: bad.into() };
            assert_eq!(s.verify(&vk), Err(ReceiptError::Malformed));
        }
    }

    #[test]
    fn a_receipt_block_round_trips_through_registers_and_names_its_slot() {
        let sig = played().sign(&speaker());
        let block = ReceiptBlock { seq: 7, counter: 0x0102_0304_0506_0708, sig };
        let regs: Vec<u16> = (0..BLOCK_REGISTERS).map(|i| block.word(i).unwrap()).collect();
        assert_eq!(block.word(BLOCK_REGISTERS), None);
        assert_eq!(&regs[1..5], &[0x0102, 0x0304, 0x0506, 0x0708], "counter in ABCD order");
        assert_eq!(regs[5], u16::from_be_bytes([sig[0], sig[1]]));
        assert_eq!(ReceiptBlock::decode(&regs), Some(block));
        assert_eq!(ReceiptBlock::decode(&regs[1..]), None);
        assert_eq!(block_address(0), 300);
        assert_eq!(block_address(SLOTS - 1) + BLOCK_REGISTERS, 596, "below the public key at 600");
        assert!(block_address(SLOTS - 1) + BLOCK_REGISTERS <= PUBLIC_KEY_BASE);
        assert!(BLOCK_REGISTERS <= crate::modbus::Table::Input.max_read());
        const { assert!(PUBLIC_KEY_BASE + PUBLIC_KEY_REGISTERS <= LATEST_BASE) };
        let mut latest = alloc::vec![3u16];
        latest.extend(&regs);
        assert_eq!(decode_latest(&latest), Some((2, block)));
        latest[0] = 0;
        assert_eq!(decode_latest(&latest), None, "no receipt yet");
        assert_eq!(decode_latest(&latest[1..]), None);

        let mut log = [0u16; crate::speaker::LOG_REGISTERS as usize];
        let slot2 = usize::from(SLOT_BASE - LOG_BASE + 2 * SLOT_STRIDE);
        log[slot2..slot2 + 4].copy_from_slice(&modbus::from_u64(77, ORDER));
        assert_eq!(slot_of(&log, 77), Some(2));
        assert_eq!(slot_of(&log, 78), None);
        assert_eq!(slot_of(&log, 0), None, "an empty slot holds no command");
    }

    #[test]
    fn a_receipt_supports_its_own_ack_state_and_delivered_once_accepted_only() {
        let at = |state: CommandState| Receipt { state: state as u16, ..played() };
        assert!(at(CommandState::Played).supports(AckState::Played));
        assert!(at(CommandState::Played).supports(AckState::Delivered));
        assert!(at(CommandState::Playing).supports(AckState::Playing));
        assert!(at(CommandState::Preempted).supports(AckState::Interrupted));
        assert!(at(CommandState::Received).supports(AckState::Delivered));
        assert!(at(CommandState::Done).supports(AckState::Done));
        assert!(at(CommandState::Refused).supports(AckState::Refused));
        // A real "received" or "playing" is no proof that it played.
        assert!(!at(CommandState::Received).supports(AckState::Played));
        assert!(!at(CommandState::Playing).supports(AckState::Played));
        assert!(!at(CommandState::Refused).supports(AckState::Delivered));
        assert!(!at(CommandState::Failed).supports(AckState::Delivered));
        assert!(!Receipt { state: 99, ..played() }.supports(AckState::Played));
    }
}
