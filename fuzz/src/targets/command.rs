//! The signed command envelope (`protocol::command`), as the gateway opens it from the
//! downlink and the speaker firmware opens it from its mailbox (both call
//! [`command::open`]).
//!
//! The first byte picks the mode:
//! - even: the rest is a wire envelope as anyone on the broker could publish it. A forgery
//!   must be refused without touching the replay window; an envelope that opens must be
//!   exactly what signing its command gives (canonical, so nothing else can pass), and
//!   opens only once.
//! - odd: `now:i16 (s from NOW_MS), flip:u16, xor:u8, body`. A body that decodes must
//!   re-encode to bytes that decode to the same command; signed with ingest's key it must
//!   get exactly the verdict a model of `open`'s documented checks gives (gateway, expiry,
//!   issue time, replay, in that order), then be refused as a replay; and the signed wire
//!   with any byte changed must be refused.

use ed25519_dalek::SigningKey;
use protocol::Timestamp;
use protocol::command::{self, Command, CommandError, MAX_CLOCK_SKEW_MS, MAX_COMMAND_BYTES, ReplayWindow};

use super::keys;
use crate::input::Input;

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let key = keys::ingest();
    if input.u8().is_multiple_of(2) {
        wire(input.rest(), &key);
    } else {
        let now = Timestamp(keys::NOW_MS + i64::from(input.u16() as i16) * 1000);
        let flip = usize::from(input.u16());
        let xor = input.u8();
        body(input.rest(), &key, now, flip, xor);
    }
}

/// An envelope from the broker.
fn wire(wire: &[u8], key: &SigningKey) {
    let vk = key.verifying_key();
    let peeked = command::peek_id(wire);
    let mut window = ReplayWindow::new();
    match command::open(wire, &vk, keys::GATEWAY, Timestamp(keys::NOW_MS), &mut window) {
        Ok(cmd) => {
            assert_eq!(cmd.sign(key), wire, "an envelope that opens is not the canonical signing of its command");
            assert_eq!(peeked, Some(cmd.id));
            let again = command::open(wire, &vk, keys::GATEWAY, Timestamp(keys::NOW_MS), &mut window);
            assert_eq!(again, Err(CommandError::Replayed));
        }
        Err(e) => {
            assert_eq!(window, ReplayWindow::new(), "a refused envelope ({e}) marked the replay window");
            if let CommandError::TooLarge(n) = e {
                assert!(n > MAX_COMMAND_BYTES && n == wire.len());
            }
        }
    }
}

/// A body the fuzzer wrote, signed by ingest.
fn body(body: &[u8], key: &SigningKey, now: Timestamp, flip: usize, xor: u8) {
    let Ok(cmd) = Command::from_bytes(body) else { return };
    let canonical = cmd.to_bytes();
    let back = Command::from_bytes(&canonical).expect("the canonical bytes of a decoded command decode");
    assert_eq!(back.to_bytes(), canonical, "canonical bytes are not stable");

    let wire = cmd.sign(key);
    let vk = key.verifying_key();
    assert_eq!(command::peek_id(&wire), if wire.len() > MAX_COMMAND_BYTES { None } else { Some(cmd.id) });
    let mut window = ReplayWindow::new();
    let got = command::open(&wire, &vk, keys::GATEWAY, now, &mut window);
    let want = model(&cmd, wire.len(), now, &ReplayWindow::new());
    assert_eq!(got.clone().map(|c| c.to_bytes()), want.map(|()| canonical.clone()), "open disagrees with the model");
    if got.is_ok() {
        assert_eq!(command::open(&wire, &vk, keys::GATEWAY, now, &mut window), Err(CommandError::Replayed));
    } else {
        assert_eq!(window, ReplayWindow::new(), "a refused command marked the replay window");
    }

    let mut tampered = wire.clone();
    let at = flip % tampered.len();
    tampered[at] ^= xor.max(1);
    let mut fresh = ReplayWindow::new();
    assert!(
        command::open(&tampered, &vk, keys::GATEWAY, now, &mut fresh).is_err(),
        "a signed command with byte {at} changed was accepted"
    );
}

/// `open`'s checks as its documentation states them, for a correctly signed command.
fn model(cmd: &Command, wire_len: usize, now: Timestamp, window: &ReplayWindow) -> Result<(), CommandError> {
    if wire_len > MAX_COMMAND_BYTES {
        return Err(CommandError::TooLarge(wire_len));
    }
    if cmd.gateway != keys::GATEWAY {
        return Err(CommandError::WrongGateway);
    }
    if now >= cmd.expires_at {
        return Err(CommandError::Expired);
    }
    if cmd.issued_at.0 > now.0.saturating_add(MAX_CLOCK_SKEW_MS) {
        return Err(CommandError::IssuedInFuture);
    }
    if !window.is_fresh(cmd.id) {
        return Err(CommandError::Replayed);
    }
    Ok(())
}
