//! Authenticated envelopes (`protocol::auth`) and speaker receipts (`protocol::receipt`):
//! the wrapping of every MQTT message between gateways and ingest, and a speaker's signed
//! word that a broadcast played.
//!
//! The first byte picks the mode (modulo 3), the second the channel of the topic:
//! - 0: the rest is a wire envelope from the broker. Whatever does not open is refused
//!   for the right reason (`Unsigned` without the magic, `TooLarge` past the limit); an
//!   envelope that opens under ingest's link key or signing key is exactly what sealing
//!   its body gives (canonical: no second form of a message verifies).
//! - 1: `counter:u64, flip:u16, xor:u8, signed:bool, body`: sealed and opened on the same
//!   topic it comes back whole; its header peeks as sealed; it grows by at most
//!   `MAX_OVERHEAD`; with any byte changed, or on another channel or gateway, it is refused.
//! - 2: the rest is a relayed receipt (JSON). One that verifies carries the speaker's own
//!   signature of it; a receipt built from the input signs, verifies, survives JSON, and
//!   stops verifying when its state changes.

use std::sync::OnceLock;

use protocol::auth::{self, AuthError, LinkKey, MAX_MESSAGE_BYTES, MAX_OVERHEAD};
use protocol::receipt::{Receipt, SignedReceipt};
use protocol::topic::{Channel, Topic};

use super::keys;
use crate::input::Input;

/// Both ends of the fuzzed gateway's link key (derived once: X25519 is the slow part).
fn links() -> &'static (LinkKey, LinkKey) {
    static LINKS: OnceLock<(LinkKey, LinkKey)> = OnceLock::new();
    LINKS.get_or_init(|| {
        let g = LinkKey::for_gateway(&keys::gateway(), &keys::ingest().verifying_key(), keys::TENANT, keys::GATEWAY)
            .expect("fixed keys are strong");
        let i = LinkKey::for_ingest(&keys::ingest(), &keys::gateway().verifying_key(), keys::TENANT, keys::GATEWAY)
            .expect("fixed keys are strong");
        (g, i)
    })
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8() % 3;
    let channel = Channel::ALL[usize::from(input.u8()) % Channel::ALL.len()];
    let topic = Topic::new(keys::TENANT, keys::GATEWAY, channel);
    match mode {
        0 => wire(input.rest(), &topic),
        1 => round_trip(&mut input, &topic),
        _ => receipt(&mut input),
    }
}

fn wire(wire: &[u8], topic: &Topic<'_>) {
    let (_, ingest_link) = links();
    let ingest = keys::ingest();
    let results = [
        auth::open_mac(wire, topic, ingest_link).map(|o| (o, auth::Scheme::Mac)),
        auth::open_signed(wire, topic, &ingest.verifying_key()).map(|o| (o, auth::Scheme::Ed25519)),
    ];
    for r in results {
        match r {
            Ok((o, scheme)) => {
                let sealed = match scheme {
                    auth::Scheme::Mac => auth::seal_mac(topic, ingest_link, o.counter, o.body),
                    auth::Scheme::Ed25519 => auth::seal_signed(topic, &ingest, o.counter, o.body),
                };
                assert_eq!(sealed, wire, "an envelope that opens is not the canonical sealing of its body");
                assert_eq!(auth::peek(wire).map(|h| h.counter), Ok(o.counter));
            }
            Err(AuthError::TooLarge(n)) => assert!(n == wire.len() && n > MAX_MESSAGE_BYTES),
            Err(AuthError::Unsigned) => assert!(!auth::is_envelope(wire)),
            Err(_) => assert!(auth::is_envelope(wire) && wire.len() <= MAX_MESSAGE_BYTES),
        }
    }
}

fn round_trip(input: &mut Input<'_>, topic: &Topic<'_>) {
    let (gateway_link, _) = links();
    let ingest = keys::ingest();
    let counter = input.u64();
    let flip = usize::from(input.u16());
    let xor = input.u8().max(1);
    let signed = input.bool();
    let body = input.rest();
    let wire = if signed {
        auth::seal_signed(topic, &ingest, counter, body)
    } else {
        auth::seal_mac(topic, gateway_link, counter, body)
    };
    let reopen = |wire: &[u8], topic: &Topic<'_>| open(wire, topic, signed).map(|o| (o.counter, o.body.to_vec()));
    assert!(wire.len() <= body.len() + MAX_OVERHEAD, "the envelope adds more than MAX_OVERHEAD");
    let header = auth::peek(&wire).expect("a sealed envelope peeks");
    assert_eq!(header.counter, counter);
    let opened = reopen(&wire, topic).expect("a sealed envelope opens on its own topic");
    assert_eq!(opened, (counter, body.to_vec()));

    let mut tampered = wire.clone();
    let at = flip % tampered.len();
    tampered[at] ^= xor;
    assert!(reopen(&tampered, topic).is_err(), "an envelope with byte {at} changed opened");
    let other_channel = Channel::ALL[(Channel::ALL.iter().position(|c| *c == topic.channel).unwrap_or(0) + 1) % 6];
    for moved in [
        Topic::new(topic.tenant, topic.gateway, other_channel),
        Topic::new(topic.tenant, "gw-xicun", topic.channel),
        Topic::new("farm", topic.gateway, topic.channel),
    ] {
        assert_eq!(reopen(&wire, &moved), Err(AuthError::BadSignature), "an envelope moved to {moved} opened");
    }
}

/// Opens an envelope as ingest does: under its link key with the fuzzed gateway, or
/// checking its own signature.
fn open<'a>(wire: &'a [u8], topic: &Topic<'_>, signed: bool) -> Result<auth::Opened<'a>, AuthError> {
    if signed {
        auth::open_signed(wire, topic, &keys::ingest().verifying_key())
    } else {
        auth::open_mac(wire, topic, &links().1)
    }
}

fn receipt(input: &mut Input<'_>) {
    let speaker = keys::speaker();
    let vk = speaker.verifying_key();
    let json = input.rest();
    if let Ok(relayed) = serde_json::from_slice::<SignedReceipt>(json)
        && relayed.verify(&vk).is_ok()
    {
        let own = relayed.receipt.clone().signed(&speaker);
        assert!(
            own.sig.eq_ignore_ascii_case(&relayed.sig),
            "a receipt verified with a signature the speaker never made"
        );
    }
    // A receipt made of the same bytes, as the speaker would sign it.
    let mut fields = Input::new(json);
    let receipt = Receipt {
        gateway: fields.text(),
        device: fields.text(),
        command: fields.u64(),
        broadcast: fields.u64(),
        state: fields.u16(),
        reason: fields.u16(),
        counter: fields.u64(),
    };
    let signed = receipt.clone().signed(&speaker);
    assert_eq!(signed.verify(&vk), Ok(()));
    let text = serde_json::to_vec(&signed).expect("a receipt serialises");
    let back: SignedReceipt = serde_json::from_slice(&text).expect("a serialised receipt parses");
    assert_eq!(back, signed);
    let recounted =
        SignedReceipt { receipt: Receipt { counter: receipt.counter ^ 1, ..receipt.clone() }, sig: signed.sig.clone() };
    assert!(recounted.verify(&vk).is_err(), "a receipt verified after its counter changed");
    let changed = SignedReceipt { receipt: Receipt { state: receipt.state ^ 1, ..receipt }, sig: signed.sig };
    assert!(changed.verify(&vk).is_err(), "a receipt verified after its state changed");
}
