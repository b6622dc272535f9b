//! Speaker receipts: a loudspeaker terminal's own signed word on where a broadcast command
//! stands (received, playing, played, refused, ...), so that "it played" is the speaker's
//! statement, relayed by the gateway and checked by ingest, never the gateway's or the
//! broker's.
//!
//! The terminal signs exactly what its command log slot holds (docs/BROADCAST.md: command
//! id, broadcast id, state code, reason code) with its own Ed25519 key, prefixed with
//! [`DOMAIN`] and bound to the gateway and device ids it was provisioned with. The codes
//! are the terminal's register values (`firmware::speaker::CommandState` and `Reason`),
//! not an ack state: the signer signs words it already has, and ingest maps them to an ack
//! state after the signature verified.
//!
//! Invariants:
//! - A receipt is about one command id, and ingest issues every command id once: a replayed
//!   receipt repeats a state ingest already has, so receipts need no counter.
//! - [`Receipt::verify`] allocates only the signed message and keeps no state.
//! - The signed bytes are canonical ([`Receipt::to_bytes`]): a verifier never re-encodes
//!   JSON to check a signature.

use alloc::string::String;
use alloc::vec::Vec;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::varint::{put_str, put_u64};

/// Prefix of every signed receipt.
pub const DOMAIN: &[u8] = b"village-telemetry/receipt/v1\0";

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
    /// The canonical bytes that are signed (after [`DOMAIN`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(DOMAIN.len() + self.gateway.len() + self.device.len() + 32);
        out.extend_from_slice(DOMAIN);
        put_str(&mut out, &self.gateway);
        put_str(&mut out, &self.device);
        put_u64(&mut out, self.command);
        put_u64(&mut out, self.broadcast);
        out.extend_from_slice(&self.state.to_be_bytes());
        out.extend_from_slice(&self.reason.to_be_bytes());
        out
    }

    /// Signs it with the speaker's key: 64 bytes, which the terminal exposes in its
    /// registers next to the slot.
    pub fn sign(&self, key: &SigningKey) -> [u8; 64] {
        key.sign(&self.to_bytes()).to_bytes()
    }

    /// Signs it and wraps it for relaying.
    pub fn signed(self, key: &SigningKey) -> SignedReceipt {
        let sig = hex(&self.sign(key));
        SignedReceipt { receipt: self, sig }
    }

    /// Checks a raw signature against the speaker's public key.
    pub fn verify(&self, key: &VerifyingKey, sig: &[u8; 64]) -> Result<(), ReceiptError> {
        key.verify_strict(&self.to_bytes(), &Signature::from_bytes(sig)).map_err(|_| ReceiptError::BadSignature)
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
        ] {
            let forged = SignedReceipt { receipt: changed, sig: real.sig.clone() };
            assert_eq!(forged.verify(&vk), Err(ReceiptError::BadSignature));
        }
        for bad in ["", "zz", &"0".repeat(127), &"g".repeat(128)] {
            let s = SignedReceipt { receipt: played(), sig: bad.into() };
            assert_eq!(s.verify(&vk), Err(ReceiptError::Malformed));
        }
    }
}
