//! Authenticated messages: the envelope every message on the MQTT plane travels in, so
//! that trust never rests on the broker.
//!
//! A message is authenticated end to end between its author and its reader: a gateway and
//! ingest, whatever broker (embedded, mosquitto, a cluster) carries it. Two schemes:
//!
//! - [`Scheme::Mac`]: HMAC-SHA256 under a *link key* that only one gateway and ingest can
//!   compute: X25519 Diffie-Hellman of the gateway's static key and ingest's static key
//!   (both Ed25519 keys, used in their Montgomery form), through HKDF-SHA256 bound to the
//!   tenant, the gateway id and both public keys ([`LinkKey`]). It is what the uplink
//!   uses: 0.7 µs to verify a binary batch against 46 µs for an Ed25519 signature
//!   (docs/SECURITY.md, measured by `examples/auth_cost.rs`), and the gateway needs no key
//!   but its own and ingest's public key, which it already has for commands.
//! - [`Scheme::Ed25519`]: a signature, for what more than one party must be able to check
//!   or what must stay verifiable by anyone holding the public key: ingest's remote
//!   configuration and delivery acks (signed by ingest's command key).
//!
//! Wire (version 1):
//!
//! ```text
//! 0xA5, version:u8 = 1, scheme:u8, key_id:[u8; 8], counter:varint, body_len:varint, body, tag
//! ```
//!
//! `tag` is 32 bytes (MAC) or 64 (Ed25519). What is authenticated is [`DOMAIN`], then the
//! tenant, the gateway and the channel of the topic the message travels on (length
//! prefixed), then every byte of the envelope before the tag. The topic is not repeated in
//! the envelope: the reader takes it from the topic the message arrived on, so a message
//! moved to another gateway's topic, another tenant's or another channel no longer
//! verifies.
//!
//! Invariants:
//! - [`open_mac`] and [`open_signed`] check size, envelope, scheme, key id, then the tag,
//!   and only then return the body; nothing in an unverified body is ever read. They keep
//!   no state and allocate nothing, so a flood of forgeries costs CPU only.
//! - The tag comparison is constant time (`hmac`'s `verify_slice`; Ed25519 `verify_strict`).
//! - `counter` is the author's freshness value, authenticated with the body. What it must
//!   be depends on the channel, and the reader checks it (see [`Freshness`]): a batch's
//!   `seq`; a strictly increasing value per gateway and channel for status and command
//!   acks; the configuration's version; ingest's increasing ack counter for delivery acks.
//! - A link key is never all zeros: a peer key of small order (which would make the
//!   Diffie-Hellman result predictable) is refused when the key is derived.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::topic::Topic;
use crate::varint::{Reader, put_str, put_u64};

/// First byte of an authenticated envelope. Neither `{` (a JSON batch) nor the binary
/// batch codec's magic, so an unauthenticated payload is told apart at the first byte.
pub const MAGIC: u8 = 0xA5;
/// Envelope version this module writes and reads.
pub const VERSION: u8 = 1;
/// Prefix of every authenticated message, so a tag here means nothing elsewhere (a
/// command signature, a speaker receipt).
pub const DOMAIN: &[u8] = b"village-telemetry/message/v1\0";
/// HKDF salt of the link key.
pub const LINK_KEY_SALT: &[u8] = b"village-telemetry/link-key/v1";
/// What a gateway's broker password is derived under (see [`LinkKey::broker_password`]).
pub const BROKER_PASSWORD_DOMAIN: &[u8] = b"village-telemetry/broker-password/v1";
/// Prefix of the hash that makes a key id.
const KEY_ID_DOMAIN: &[u8] = b"village-telemetry/key-id/v1\0";
/// Largest envelope accepted: the gateway's largest MQTT packet.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Bytes of the envelope around the body at most (header with two 10-byte varints, and
/// the longer tag): what a sender adds to a payload.
pub const MAX_OVERHEAD: usize = 3 + 8 + 10 + 10 + 64;

type HmacSha256 = Hmac<Sha256>;

/// How a message is authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Scheme {
    /// HMAC-SHA256 under the gateway's link key; 32-byte tag.
    Mac = 1,
    /// Ed25519 signature by the author's key; 64-byte tag.
    Ed25519 = 2,
}

impl Scheme {
    /// Length of the tag on the wire.
    pub const fn tag_len(self) -> usize {
        match self {
            Scheme::Mac => 32,
            Scheme::Ed25519 => 64,
        }
    }

    const fn from_code(code: u8) -> Option<Scheme> {
        match code {
            1 => Some(Scheme::Mac),
            2 => Some(Scheme::Ed25519),
            _ => None,
        }
    }
}

/// Names the key a message was authenticated with, so a reader that holds two (during a
/// rotation) knows which to try, and one that holds none refuses without trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// The id of an Ed25519 public key: the first 8 bytes of a domain-separated SHA-256.
    pub fn of(key: &VerifyingKey) -> KeyId {
        KeyId::hash(&[key.as_bytes()])
    }

    fn hash(parts: &[&[u8]]) -> KeyId {
        let mut h = Sha256::new();
        h.update(KEY_ID_DOMAIN);
        for p in parts {
            h.update(p);
        }
        let d = h.finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&d[..8]);
        KeyId(id)
    }
}

impl fmt::Display for KeyId {
    /// Lower-case hex, 16 digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A short fingerprint of a public key to read over the phone when a gateway is enrolled:
/// the key id as four groups of four upper-case hex digits (`3F2A-91C0-77B4-12DE`). 64
/// bits: finding a second key with the same fingerprint costs about 2^64 key generations.
pub fn fingerprint(key: &VerifyingKey) -> String {
    let id = KeyId::of(key);
    let mut s = String::with_capacity(19);
    for (i, b) in id.0.iter().enumerate() {
        if i > 0 && i % 2 == 0 {
            s.push('-');
        }
        let _ = fmt::write(&mut s, format_args!("{b:02X}"));
    }
    s
}

/// The symmetric key one gateway and ingest share, derived from their static key pairs:
/// `HKDF-SHA256(salt = LINK_KEY_SALT, ikm = X25519(own secret, peer public),
/// info = tenant | gateway | gateway public key | ingest public key)`.
///
/// Both sides compute the same key ([`LinkKey::for_gateway`], [`LinkKey::for_ingest`]);
/// nobody else can, not even another gateway of the same tenant. Binding the tenant and
/// the gateway id means a key enrolled for one gateway id cannot authenticate another.
#[derive(Clone)]
pub struct LinkKey {
    id: KeyId,
    key: [u8; 32],
}

impl fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl LinkKey {
    /// The gateway's side: its own key pair and ingest's public key.
    pub fn for_gateway(
        gateway_key: &SigningKey,
        ingest: &VerifyingKey,
        tenant: &str,
        gateway: &str,
    ) -> Result<LinkKey, AuthError> {
        let shared = ingest.to_montgomery().mul_clamped(gateway_key.to_scalar_bytes());
        LinkKey::derive(shared.to_bytes(), &gateway_key.verifying_key(), ingest, tenant, gateway)
    }

    /// Ingest's side: its own key pair and the gateway's enrolled public key.
    pub fn for_ingest(
        ingest_key: &SigningKey,
        gateway_public: &VerifyingKey,
        tenant: &str,
        gateway: &str,
    ) -> Result<LinkKey, AuthError> {
        let shared = gateway_public.to_montgomery().mul_clamped(ingest_key.to_scalar_bytes());
        LinkKey::derive(shared.to_bytes(), gateway_public, &ingest_key.verifying_key(), tenant, gateway)
    }

    fn derive(
        shared: [u8; 32],
        gateway_public: &VerifyingKey,
        ingest: &VerifyingKey,
        tenant: &str,
        gateway: &str,
    ) -> Result<LinkKey, AuthError> {
        if shared == [0u8; 32] || gateway_public.is_weak() || ingest.is_weak() {
            return Err(AuthError::WeakKey);
        }
        // HKDF-SHA256 (RFC 5869) with one block of output: extract, then expand.
        let mut extract = mac(LINK_KEY_SALT);
        extract.update(&shared);
        let prk = extract.finalize().into_bytes();
        let mut info = Vec::with_capacity(tenant.len() + gateway.len() + 66);
        put_str(&mut info, tenant);
        put_str(&mut info, gateway);
        info.extend_from_slice(gateway_public.as_bytes());
        info.extend_from_slice(ingest.as_bytes());
        let mut expand = mac(&prk);
        expand.update(&info);
        expand.update(&[1]);
        let okm = expand.finalize().into_bytes();
        let mut key = [0u8; 32];
        key.copy_from_slice(&okm);
        Ok(LinkKey { id: KeyId::hash(&[gateway_public.as_bytes(), ingest.as_bytes()]), key })
    }

    /// The id this link key puts in its envelopes: a hash of both public keys, so a
    /// rotation on either side gives a new id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The gateway's broker password: `HMAC(link key, BROKER_PASSWORD_DOMAIN)`, 32 hex
    /// digits. Both sides compute it, so nobody provisions or stores it; knowing it (it
    /// travels inside TLS to the broker) reveals nothing about the link key.
    pub fn broker_password(&self) -> String {
        let mut m = mac(&self.key);
        m.update(BROKER_PASSWORD_DOMAIN);
        let d = m.finalize().into_bytes();
        let mut s = String::with_capacity(32);
        for b in &d[..16] {
            let _ = fmt::write(&mut s, format_args!("{b:02x}"));
        }
        s
    }
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length: the error cannot happen.
    match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    }
}

/// Why a message was refused. Every variant is counted by ingest under [`AuthError::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// Not an authenticated envelope at all (an old sender, or garbage).
    Unsigned,
    /// An envelope that does not parse; what was wrong.
    Malformed(&'static str),
    /// Larger than [`MAX_MESSAGE_BYTES`].
    TooLarge(usize),
    /// Authenticated with another scheme than the reader requires for this channel.
    WrongScheme,
    /// The key id is not the reader's key: an unknown, rotated-out or revoked key.
    UnknownKey,
    /// The tag does not verify: forged, tampered, or moved to another topic.
    BadSignature,
    /// A key of small order (or a derived key of zeros): refused when enrolled.
    WeakKey,
}

impl AuthError {
    /// A short stable name for metrics and logs. Everything a forger can cause is
    /// `bad_signature` or `unsigned`, so a reason label has a handful of values.
    pub const fn code(&self) -> &'static str {
        match self {
            AuthError::Unsigned => "unsigned",
            AuthError::Malformed(_) | AuthError::TooLarge(_) => "malformed",
            AuthError::WrongScheme | AuthError::UnknownKey | AuthError::BadSignature => "bad_signature",
            AuthError::WeakKey => "weak_key",
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Unsigned => f.write_str("message is not authenticated"),
            AuthError::Malformed(what) => write!(f, "malformed authenticated message: {what}"),
            AuthError::TooLarge(n) => write!(f, "message of {n} bytes exceeds {MAX_MESSAGE_BYTES}"),
            AuthError::WrongScheme => f.write_str("message is authenticated with the wrong scheme for its channel"),
            AuthError::UnknownKey => f.write_str("message names a key the reader does not hold"),
            AuthError::BadSignature => f.write_str("authenticator does not verify (forged, tampered or moved)"),
            AuthError::WeakKey => f.write_str("key of small order refused"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for AuthError {}

/// The envelope's header, read without verifying anything: for a reader that must pick a
/// key by [`Header::key_id`] before it can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The scheme.
    pub scheme: Scheme,
    /// The key it claims to be authenticated with.
    pub key_id: KeyId,
    /// The author's freshness value (unverified here).
    pub counter: u64,
}

/// A verified message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened<'a> {
    /// The author's freshness value, authenticated with the body.
    pub counter: u64,
    /// The key that verified it.
    pub key_id: KeyId,
    /// The body (a batch in either codec, a JSON status, ack, configuration, ...).
    pub body: &'a [u8],
}

/// True if `payload` starts like an authenticated envelope (a cheap first look to tell it
/// from a bare JSON or binary payload).
pub fn is_envelope(payload: &[u8]) -> bool {
    payload.first() == Some(&MAGIC)
}

fn header(scheme: Scheme, key_id: KeyId, counter: u64, body_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(body_len + MAX_OVERHEAD);
    out.push(MAGIC);
    out.push(VERSION);
    out.push(scheme as u8);
    out.extend_from_slice(&key_id.0);
    put_u64(&mut out, counter);
    put_u64(&mut out, body_len as u64);
    out
}

/// The bound context: domain, tenant, gateway and channel of the topic.
fn context(topic: &Topic<'_>) -> Vec<u8> {
    let mut c = Vec::with_capacity(DOMAIN.len() + topic.tenant.len() + topic.gateway.len() + 24);
    c.extend_from_slice(DOMAIN);
    put_str(&mut c, topic.tenant);
    put_str(&mut c, topic.gateway);
    put_str(&mut c, topic.channel.suffix());
    c
}

/// Wraps `body` for `topic` under the link key: what gateways do to every uplink message.
pub fn seal_mac(topic: &Topic<'_>, key: &LinkKey, counter: u64, body: &[u8]) -> Vec<u8> {
    let mut out = header(Scheme::Mac, key.id, counter, body.len());
    out.extend_from_slice(body);
    let mut m = mac(&key.key);
    m.update(&context(topic));
    m.update(&out);
    let tag = m.finalize().into_bytes();
    out.extend_from_slice(&tag);
    out
}

/// Wraps `body` for `topic` with an Ed25519 signature: what ingest does to configurations
/// and delivery acks.
pub fn seal_signed(topic: &Topic<'_>, key: &SigningKey, counter: u64, body: &[u8]) -> Vec<u8> {
    let mut out = header(Scheme::Ed25519, KeyId::of(&key.verifying_key()), counter, body.len());
    out.extend_from_slice(body);
    let mut msg = context(topic);
    msg.extend_from_slice(&out);
    let sig = key.sign(&msg);
    out.extend_from_slice(&sig.to_bytes());
    out
}

/// An envelope taken apart, nothing verified yet.
struct Parts<'a> {
    header: Header,
    /// Every byte before the tag (what the tag covers, after the context).
    signed: &'a [u8],
    body: &'a [u8],
    tag: &'a [u8],
}

/// Splits an envelope into its header, the authenticated prefix (header and body), the
/// body and the tag; checks nothing cryptographic.
fn split(wire: &[u8]) -> Result<Parts<'_>, AuthError> {
    if wire.len() > MAX_MESSAGE_BYTES {
        return Err(AuthError::TooLarge(wire.len()));
    }
    if !is_envelope(wire) {
        return Err(AuthError::Unsigned);
    }
    let mut r = Reader::new(wire);
    let _ = r.u8();
    if r.u8() != Ok(VERSION) {
        return Err(AuthError::Malformed("unknown envelope version"));
    }
    let scheme = r.u8().ok().and_then(Scheme::from_code).ok_or(AuthError::Malformed("unknown scheme"))?;
    let mut key_id = [0u8; 8];
    key_id.copy_from_slice(r.take(8).map_err(|_| AuthError::Malformed("truncated key id"))?);
    let counter = r.u64().map_err(|_| AuthError::Malformed("bad counter"))?;
    let len = r.u64().map_err(|_| AuthError::Malformed("bad body length"))?;
    let len = usize::try_from(len).map_err(|_| AuthError::Malformed("bad body length"))?;
    let body = r.take(len).map_err(|_| AuthError::Malformed("truncated body"))?;
    let signed_end = r.position();
    let tag = r.take(scheme.tag_len()).map_err(|_| AuthError::Malformed("truncated tag"))?;
    if r.remaining() != 0 {
        return Err(AuthError::Malformed("trailing bytes after the tag"));
    }
    Ok(Parts { header: Header { scheme, key_id: KeyId(key_id), counter }, signed: &wire[..signed_end], body, tag })
}

/// Reads the header without verifying it (to pick the key to verify with).
pub fn peek(wire: &[u8]) -> Result<Header, AuthError> {
    split(wire).map(|p| p.header)
}

/// Verifies a MAC envelope that arrived on `topic` under `key`; returns the body only if
/// the tag verifies.
pub fn open_mac<'a>(wire: &'a [u8], topic: &Topic<'_>, key: &LinkKey) -> Result<Opened<'a>, AuthError> {
    let Parts { header: h, signed, body, tag } = split(wire)?;
    if h.scheme != Scheme::Mac {
        return Err(AuthError::WrongScheme);
    }
    if h.key_id != key.id {
        return Err(AuthError::UnknownKey);
    }
    let mut m = mac(&key.key);
    m.update(&context(topic));
    m.update(signed);
    m.verify_slice(tag).map_err(|_| AuthError::BadSignature)?;
    Ok(Opened { counter: h.counter, key_id: h.key_id, body })
}

/// Verifies an Ed25519 envelope that arrived on `topic`, signed by `key`; returns the body
/// only if the signature verifies.
pub fn open_signed<'a>(wire: &'a [u8], topic: &Topic<'_>, key: &VerifyingKey) -> Result<Opened<'a>, AuthError> {
    let Parts { header: h, signed, body, tag } = split(wire)?;
    if h.scheme != Scheme::Ed25519 {
        return Err(AuthError::WrongScheme);
    }
    if h.key_id != KeyId::of(key) {
        return Err(AuthError::UnknownKey);
    }
    let mut sig = [0u8; 64];
    sig.copy_from_slice(tag);
    let mut msg = context(topic);
    msg.extend_from_slice(signed);
    key.verify_strict(&msg, &Signature::from_bytes(&sig)).map_err(|_| AuthError::BadSignature)?;
    Ok(Opened { counter: h.counter, key_id: h.key_id, body })
}

/// Freshness of authenticated counters, in constant space per (author, channel): refuses
/// a counter already seen or too old, accepts each new one once.
///
/// For command acks (several in flight, arriving slightly out of order) use
/// [`Freshness::window`]: a replay window over the last 64 counters, as commands use.
/// For status, configurations and delivery acks (only the newest matters) use
/// [`Freshness::newest`]: strictly greater than the last accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Strictly increasing: the last accepted counter.
    Newest(u64),
    /// The command replay window (highest and the 64 below it).
    Window(crate::command::ReplayWindow),
}

impl Freshness {
    /// Nothing seen yet; only strictly newer counters pass.
    pub const fn newest() -> Freshness {
        Freshness::Newest(0)
    }

    /// Nothing seen yet; counters may arrive up to 64 out of order.
    pub const fn window() -> Freshness {
        Freshness::Window(crate::command::ReplayWindow::new())
    }

    /// True (and remembered) if `counter` is fresh; false for a replay or a stale one.
    /// Call only after the message verified, so a forgery cannot burn a counter.
    pub fn accept(&mut self, counter: u64) -> bool {
        match self {
            Freshness::Newest(last) => {
                if counter > *last {
                    *last = counter;
                    true
                } else {
                    false
                }
            }
            Freshness::Window(w) => {
                if w.is_fresh(counter) {
                    w.mark(counter);
                    true
                } else {
                    false
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;

    use super::*;
    use crate::topic::Channel;

    fn gateway_key() -> SigningKey {
        SigningKey::from_bytes(&[1u8; 32])
    }

    fn ingest_key() -> SigningKey {
        SigningKey::from_bytes(&[2u8; 32])
    }

    fn link(gateway: &str) -> (LinkKey, LinkKey) {
        let g = LinkKey::for_gateway(&gateway_key(), &ingest_key().verifying_key(), "county", gateway).unwrap();
        let i = LinkKey::for_ingest(&ingest_key(), &gateway_key().verifying_key(), "county", gateway).unwrap();
        (g, i)
    }

    const TELEMETRY: Topic<'static> = Topic::new("county", "gw-dongcun", Channel::Telemetry);
    const BODY: &[u8] = b"\x00batch bytes";

    #[test]
    fn both_sides_derive_the_same_link_key_and_nobody_else_does() {
        let (g, i) = link("gw-dongcun");
        assert_eq!(g.key, i.key);
        assert_eq!(g.id(), i.id());
        assert_eq!(g.broker_password(), i.broker_password());
        assert_eq!(g.broker_password().len(), 32);
        let other = SigningKey::from_bytes(&[3u8; 32]);
        let stranger = LinkKey::for_gateway(&other, &ingest_key().verifying_key(), "county", "gw-dongcun").unwrap();
        assert_ne!(stranger.key, g.key);
        let (b, _) = link("gw-xicun");
        assert_ne!(b.key, g.key, "the same key pair enrolled under another id gives another link key");
        assert_ne!(b.broker_password(), g.broker_password());
        let t = LinkKey::for_gateway(&gateway_key(), &ingest_key().verifying_key(), "farm", "gw-dongcun").unwrap();
        assert_ne!(t.key, g.key, "and under another tenant too");
    }

    #[test]
    fn a_mac_envelope_round_trips_and_verifies_on_its_topic() {
        let (g, i) = link("gw-dongcun");
        let wire = seal_mac(&TELEMETRY, &g, 41, BODY);
        assert!(is_envelope(&wire));
        assert_eq!(peek(&wire), Ok(Header { scheme: Scheme::Mac, key_id: g.id(), counter: 41 }));
        assert_eq!(open_mac(&wire, &TELEMETRY, &i), Ok(Opened { counter: 41, key_id: i.id(), body: BODY }));
        assert!(wire.len() <= BODY.len() + MAX_OVERHEAD);
    }

    #[test]
    fn every_tampering_of_a_mac_envelope_is_refused() {
        let (g, i) = link("gw-dongcun");
        let wire = seal_mac(&TELEMETRY, &g, 41, BODY);
        assert!(open_mac(&wire, &TELEMETRY, &i).is_ok(), "positive control");
        // Every single bit flipped anywhere: refused, never a panic, never accepted.
        for byte in 0..wire.len() {
            for bit in 0..8 {
                let mut t = wire.clone();
                t[byte] ^= 1 << bit;
                assert!(open_mac(&t, &TELEMETRY, &i).is_err(), "byte {byte} bit {bit}");
            }
        }
        // Moved to another gateway's, tenant's or channel's topic.
        for topic in [
            Topic::new("county", "gw-xicun", Channel::Telemetry),
            Topic::new("farm", "gw-dongcun", Channel::Telemetry),
            Topic::new("county", "gw-dongcun", Channel::Status),
        ] {
            assert_eq!(open_mac(&wire, &topic, &i), Err(AuthError::BadSignature), "{topic}");
        }
        // Made by someone with another key (the same id claimed): bad signature.
        let stranger = LinkKey { id: g.id(), key: [9u8; 32] };
        assert_eq!(open_mac(&seal_mac(&TELEMETRY, &stranger, 41, BODY), &TELEMETRY, &i), Err(AuthError::BadSignature));
        // Another gateway's link key (its own key pair, so its own id): unknown key.
        let b = LinkKey::for_gateway(
            &SigningKey::from_bytes(&[3u8; 32]),
            &ingest_key().verifying_key(),
            "county",
            "gw-xicun",
        )
        .unwrap();
        assert_eq!(open_mac(&seal_mac(&TELEMETRY, &b, 41, BODY), &TELEMETRY, &i), Err(AuthError::UnknownKey));
        // Truncated, extended, bare payloads.
        assert!(matches!(open_mac(&wire[..wire.len() - 1], &TELEMETRY, &i), Err(AuthError::Malformed(_))));
        let mut longer = wire.clone();
        longer.push(0);
        assert!(matches!(open_mac(&longer, &TELEMETRY, &i), Err(AuthError::Malformed(_))));
        assert_eq!(open_mac(b"{\"gateway\":\"gw-dongcun\"}", &TELEMETRY, &i), Err(AuthError::Unsigned));
        assert_eq!(open_mac(&[], &TELEMETRY, &i), Err(AuthError::Unsigned));
        let big = alloc::vec![MAGIC; MAX_MESSAGE_BYTES + 1];
        assert_eq!(open_mac(&big, &TELEMETRY, &i), Err(AuthError::TooLarge(MAX_MESSAGE_BYTES + 1)));
    }

    #[test]
    fn a_signed_envelope_round_trips_and_every_tampering_is_refused() {
        let topic = Topic::new("county", "gw-dongcun", Channel::Config);
        let vk = ingest_key().verifying_key();
        let wire = seal_signed(&topic, &ingest_key(), 7, b"[mqtt]\nhost = \"x\"\n");
        let opened = open_signed(&wire, &topic, &vk).unwrap();
        assert_eq!((opened.counter, opened.body), (7, &b"[mqtt]\nhost = \"x\"\n"[..]));
        for byte in 0..wire.len() {
            let mut t = wire.clone();
            t[byte] ^= 0x20;
            assert!(open_signed(&t, &topic, &vk).is_err(), "byte {byte}");
        }
        let other = Topic::new("county", "gw-xicun", Channel::Config);
        assert_eq!(open_signed(&wire, &other, &vk), Err(AuthError::BadSignature));
        let forger = SigningKey::from_bytes(&[5u8; 32]);
        assert_eq!(open_signed(&seal_signed(&topic, &forger, 8, b"x"), &topic, &vk), Err(AuthError::UnknownKey));
        // A MAC envelope where a signature is required, and the other way round.
        let (g, i) = link("gw-dongcun");
        assert_eq!(open_signed(&seal_mac(&topic, &g, 8, b"x"), &topic, &vk), Err(AuthError::WrongScheme));
        assert_eq!(open_mac(&wire, &topic, &i), Err(AuthError::WrongScheme));
    }

    #[test]
    fn a_small_order_peer_key_is_refused_when_the_link_key_is_derived() {
        // The identity point: every scalar multiple of it is the same known point.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = VerifyingKey::from_bytes(&identity).unwrap();
        assert_eq!(LinkKey::for_ingest(&ingest_key(), &weak, "county", "gw").unwrap_err(), AuthError::WeakKey);
        assert_eq!(LinkKey::for_gateway(&gateway_key(), &weak, "county", "gw").unwrap_err(), AuthError::WeakKey);
        assert!(LinkKey::for_gateway(&gateway_key(), &ingest_key().verifying_key(), "county", "gw").is_ok());
    }

    #[test]
    fn fingerprints_are_short_stable_and_differ_between_keys() {
        let f = fingerprint(&gateway_key().verifying_key());
        assert_eq!(f.len(), 19);
        assert_eq!(f.split('-').count(), 4);
        assert!(f.chars().all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_lowercase()), "{f}");
        assert_eq!(f, fingerprint(&gateway_key().verifying_key()));
        assert_ne!(f, fingerprint(&ingest_key().verifying_key()));
        assert_eq!(KeyId::of(&gateway_key().verifying_key()).to_string().len(), 16);
    }

    #[test]
    fn freshness_accepts_each_counter_once_and_refuses_stale_ones() {
        let mut n = Freshness::newest();
        assert!(!n.accept(0));
        assert!(n.accept(5));
        assert!(!n.accept(5), "a replay");
        assert!(!n.accept(4), "older than the newest");
        assert!(n.accept(6));
        let mut w = Freshness::window();
        assert!(w.accept(10));
        assert!(w.accept(8), "late but unseen");
        assert!(!w.accept(8), "a replay");
        assert!(!w.accept(10));
        assert!(w.accept(200));
        assert!(!w.accept(100), "older than the window");
        assert_eq!(AuthError::UnknownKey.code(), "bad_signature");
        assert_eq!(AuthError::Unsigned.code(), "unsigned");
    }
}
