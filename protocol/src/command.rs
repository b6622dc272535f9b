//! Signed downlink commands, their acks, and the replay window.
//!
//! A pump start or a flood warning must be impossible to forge even for someone who
//! controls the broker, so commands are signed end to end: ingest signs with its Ed25519
//! key, and the gateway (and, for speakers, the firmware) verifies before acting.
//!
//! Design constraints:
//! - The signature covers canonical bytes ([`Command::to_bytes`]), never a re-encoding,
//!   so a verifier checks exactly what the signer signed. The signed message is prefixed
//!   with [`DOMAIN`] so that a signature over a command cannot be replayed as anything else.
//! - [`open`] checks, in this order: envelope, signature, target gateway, expiry, issue
//!   time not in the future, replay. Only a command that passes all of them marks the
//!   replay window, so a forged copy cannot burn the id of a real command.
//! - No allocation beyond the decoded strings; the same code runs on Cortex-M.
//!
//! Wire: `0xC5, body_len:varint, body, signature:64`.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::reading::Timestamp;
use crate::varint::{ReadError, Reader, put_i64, put_str, put_u64};

/// First byte of a signed command on the wire.
pub const MAGIC: u8 = 0xC5;
/// Prefix of every signed message, so that a command signature means nothing elsewhere.
pub const DOMAIN: &[u8] = b"village-telemetry/command/v1\0";
/// How far a command's issue time may be ahead of the verifier's clock.
pub const MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;
/// Largest signed command accepted (a TTS text of a few thousand characters fits).
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;

const BODY_VERSION: u8 = 1;

/// A command to one device behind one gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Unique and increasing per issuer; the replay window remembers it.
    pub id: u64,
    /// Tenant of the target gateway.
    pub tenant: String,
    /// The gateway that must carry it out; any other refuses it.
    pub gateway: String,
    /// The device it acts on.
    pub device: String,
    /// When ingest issued it.
    pub issued_at: Timestamp,
    /// After this it must not be carried out.
    pub expires_at: Timestamp,
    /// What to do.
    pub action: Action,
}

/// What a command asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// Write a writable point named in the device's profile; the profile maps it to a
    /// register and bounds its range, so the command cannot name a raw register.
    Write {
        /// Name of the writable point (for example `pump_run` or `level_start_setpoint`).
        point: String,
        /// Value in the point's engineering unit.
        value: f64,
    },
    /// Play a broadcast on a speaker.
    Play(Playback),
    /// Stop a broadcast that is queued or playing.
    Stop {
        /// The broadcast to stop.
        broadcast: u64,
    },
}

/// Warning level (Emergency Response Law art. 42): 1 red is the highest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Level 1, the highest.
    Red = 1,
    /// Level 2.
    Orange = 2,
    /// Level 3.
    Yellow = 3,
    /// Level 4, the lowest.
    Blue = 4,
}

impl Level {
    /// From the standard's number 1..=4.
    pub const fn from_number(n: u8) -> Option<Level> {
        match n {
            1 => Some(Level::Red),
            2 => Some(Level::Orange),
            3 => Some(Level::Yellow),
            4 => Some(Level::Blue),
            _ => None,
        }
    }

    /// True if a broadcast at `self` pre-empts one playing at `other`.
    pub fn preempts(self, other: Level) -> bool {
        (self as u8) < (other as u8)
    }
}

/// A broadcast as a speaker receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Playback {
    /// Broadcast id (the same on every speaker it goes to).
    pub broadcast: u64,
    /// Warning level; a higher one pre-empts a lower one that is playing.
    pub level: Level,
    /// What to play. In a command's JSON (ingest's command audit log and API) the audio
    /// checksum stays the array of 32 numbers it has always been there; see [`Content`].
    #[serde(with = "content_in_command")]
    pub content: Content,
    /// How many times to play it, at least once.
    pub repeat: u8,
    /// Volume in percent, or keep the speaker's own.
    pub volume: Option<u8>,
    /// Do not start before this time.
    pub start_at: Option<Timestamp>,
}

/// What a speaker plays: the one content type of a broadcast, from ingest's API and audit
/// log through the signed command to the speaker.
///
/// JSON: `{"type": "tts", "text": ...}` or `{"type": "audio", "url": ..., "sha256": ...}`
/// with the checksum as 64 lowercase hex digits (any case is read), as ingest's broadcast
/// API and audit log spell it. Inside a [`Playback`] the checksum is an array of 32
/// numbers instead, the form commands have always had in JSON, so neither log changes.
/// The signed bytes ([`Command::to_bytes`]) are neither: the checksum is 32 raw bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    /// Text read out by the speaker's text-to-speech.
    Tts {
        /// The text.
        text: String,
    },
    /// An audio file the speaker fetches and checks before playing.
    Audio {
        /// Where to fetch it.
        url: String,
        /// SHA-256 of the file; a speaker refuses a file that does not match.
        #[serde(with = "sha256_hex")]
        sha256: [u8; 32],
    },
}

impl Content {
    /// The text, for TTS content.
    pub fn text(&self) -> Option<&str> {
        match self {
            Content::Tts { text } => Some(text),
            Content::Audio { .. } => None,
        }
    }
}

/// 64 hex digits (either case, surrounding blanks ignored) into the 32 bytes of a SHA-256.
pub fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A SHA-256 as 64 lowercase hex digits, the inverse of [`parse_sha256`].
pub fn sha256_hex(sha256: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for b in sha256 {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xF)]));
    }
    out
}

/// Serde for a checksum as hex digits (see [`Content`]).
mod sha256_hex {
    use alloc::string::String;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(sha256: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::sha256_hex(sha256))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let hex = String::deserialize(d)?;
        super::parse_sha256(&hex).ok_or_else(|| D::Error::custom("sha256 must be 64 hex digits"))
    }
}

/// Serde for [`Content`] inside a command: the checksum as 32 numbers (see [`Content`]).
mod content_in_command {
    use alloc::string::String;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Content;

    #[derive(Serialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum Ref<'a> {
        Tts { text: &'a str },
        Audio { url: &'a str, sha256: &'a [u8; 32] },
    }

    #[derive(Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum Owned {
        Tts { text: String },
        Audio { url: String, sha256: [u8; 32] },
    }

    pub(super) fn serialize<S: Serializer>(content: &Content, s: S) -> Result<S::Ok, S::Error> {
        match content {
            Content::Tts { text } => Ref::Tts { text },
            Content::Audio { url, sha256 } => Ref::Audio { url, sha256 },
        }
        .serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Content, D::Error> {
        Ok(match Owned::deserialize(d)? {
            Owned::Tts { text } => Content::Tts { text },
            Owned::Audio { url, sha256 } => Content::Audio { url, sha256 },
        })
    }
}

/// Why a command was refused. Every variant becomes a refused ack with this text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// Not a signed command envelope, or a body that does not decode.
    Malformed(&'static str),
    /// Larger than [`MAX_COMMAND_BYTES`].
    TooLarge(usize),
    /// The signature does not verify with the issuer's key: forged or tampered.
    BadSignature,
    /// Addressed to another gateway.
    WrongGateway,
    /// Past its expiry.
    Expired,
    /// Issued further in the future than clock skew explains.
    IssuedInFuture,
    /// Its id was already used (or is too old for the replay window to tell).
    Replayed,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Malformed(what) => write!(f, "malformed command: {what}"),
            CommandError::TooLarge(n) => write!(f, "command of {n} bytes exceeds {MAX_COMMAND_BYTES}"),
            CommandError::BadSignature => f.write_str("signature does not verify (forged or tampered)"),
            CommandError::WrongGateway => f.write_str("command is addressed to another gateway"),
            CommandError::Expired => f.write_str("command has expired"),
            CommandError::IssuedInFuture => f.write_str("command is issued in the future"),
            CommandError::Replayed => f.write_str("command id was already used (replay)"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for CommandError {}

impl CommandError {
    /// A short stable name for metrics and delivery states.
    pub const fn code(&self) -> &'static str {
        match self {
            CommandError::Malformed(_) => "malformed",
            CommandError::TooLarge(_) => "too_large",
            CommandError::BadSignature => "bad_signature",
            CommandError::WrongGateway => "wrong_gateway",
            CommandError::Expired => "expired",
            CommandError::IssuedInFuture => "issued_in_future",
            CommandError::Replayed => "replayed",
        }
    }
}

impl Command {
    /// The canonical bytes that are signed.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(BODY_VERSION);
        put_u64(&mut out, self.id);
        put_str(&mut out, &self.tenant);
        put_str(&mut out, &self.gateway);
        put_str(&mut out, &self.device);
        put_i64(&mut out, self.issued_at.0);
        put_i64(&mut out, self.expires_at.0);
        match &self.action {
            Action::Write { point, value } => {
                out.push(1);
                put_str(&mut out, point);
                out.extend_from_slice(&value.to_le_bytes());
            }
            Action::Play(p) => {
                out.push(2);
                put_u64(&mut out, p.broadcast);
                out.push(p.level as u8);
                match &p.content {
                    Content::Tts { text } => {
                        out.push(1);
                        put_str(&mut out, text);
                    }
                    Content::Audio { url, sha256 } => {
                        out.push(2);
                        put_str(&mut out, url);
                        out.extend_from_slice(sha256);
                    }
                }
                out.push(p.repeat);
                out.push(p.volume.unwrap_or(u8::MAX));
                put_i64(&mut out, p.start_at.map_or(0, |t| t.0));
            }
            Action::Stop { broadcast } => {
                out.push(3);
                put_u64(&mut out, *broadcast);
            }
        }
        out
    }

    /// Decodes canonical bytes. Does not verify anything: use [`open`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Command, CommandError> {
        let mut r = Reader::new(bytes);
        let cmd = read_command(&mut r).map_err(|e| match e {
            ReadError::Truncated => CommandError::Malformed("truncated body"),
            ReadError::Overflow => CommandError::Malformed("varint overflow"),
            ReadError::Utf8 => CommandError::Malformed("string is not UTF-8"),
        })??;
        if r.remaining() != 0 {
            return Err(CommandError::Malformed("trailing bytes after the body"));
        }
        Ok(cmd)
    }

    /// Signs the command and returns it in its wire envelope.
    pub fn sign(&self, key: &SigningKey) -> Vec<u8> {
        let body = self.to_bytes();
        let signature = key.sign(&signed_message(&body));
        let mut out = Vec::with_capacity(body.len() + 70);
        out.push(MAGIC);
        put_u64(&mut out, body.len() as u64);
        out.extend_from_slice(&body);
        out.extend_from_slice(&signature.to_bytes());
        out
    }
}

fn read_command(r: &mut Reader<'_>) -> Result<Result<Command, CommandError>, ReadError> {
    if r.u8()? != BODY_VERSION {
        return Ok(Err(CommandError::Malformed("unknown body version")));
    }
    let id = r.u64()?;
    let tenant = r.string()?;
    let gateway = r.string()?;
    let device = r.string()?;
    let issued_at = Timestamp(r.i64()?);
    let expires_at = Timestamp(r.i64()?);
    let action = match r.u8()? {
        1 => Action::Write { point: r.string()?, value: r.f64()? },
        2 => {
            let broadcast = r.u64()?;
            let Some(level) = Level::from_number(r.u8()?) else {
                return Ok(Err(CommandError::Malformed("unknown warning level")));
            };
            let content = match r.u8()? {
                1 => Content::Tts { text: r.string()? },
                2 => {
                    let url = r.string()?;
                    let mut sha256 = [0u8; 32];
                    sha256.copy_from_slice(r.take(32)?);
                    Content::Audio { url, sha256 }
                }
                _ => return Ok(Err(CommandError::Malformed("unknown content type"))),
            };
            let repeat = r.u8()?;
            let volume = match r.u8()? {
                u8::MAX => None,
                v => Some(v),
            };
            let start_at = match r.i64()? {
                0 => None,
                t => Some(Timestamp(t)),
            };
            Action::Play(Playback { broadcast, level, content, repeat, volume, start_at })
        }
        3 => Action::Stop { broadcast: r.u64()? },
        _ => return Ok(Err(CommandError::Malformed("unknown action"))),
    };
    Ok(Ok(Command { id, tenant, gateway, device, issued_at, expires_at, action }))
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + body.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(body);
    m
}

/// Splits a wire envelope into body and signature without checking either.
fn split(wire: &[u8]) -> Result<(&[u8], Signature), CommandError> {
    if wire.len() > MAX_COMMAND_BYTES {
        return Err(CommandError::TooLarge(wire.len()));
    }
    let mut r = Reader::new(wire);
    if r.u8() != Ok(MAGIC) {
        return Err(CommandError::Malformed("not a signed command envelope"));
    }
    let len = r.u64().map_err(|_| CommandError::Malformed("bad body length"))?;
    // The signature covers the body, not this length: only its shortest encoding is
    // taken, so that a signed command has exactly one envelope.
    if r.position() != 1 + varint_len(len) {
        return Err(CommandError::Malformed("body length not in its shortest encoding"));
    }
    let len = usize::try_from(len).map_err(|_| CommandError::Malformed("bad body length"))?;
    let body = r.take(len).map_err(|_| CommandError::Malformed("truncated body"))?;
    let sig = r.take(64).map_err(|_| CommandError::Malformed("truncated signature"))?;
    if r.remaining() != 0 {
        return Err(CommandError::Malformed("trailing bytes after the signature"));
    }
    let mut bytes = [0u8; 64];
    bytes.copy_from_slice(sig);
    Ok((body, Signature::from_bytes(&bytes)))
}

/// Bytes of the shortest LEB128 encoding of `v` (what `put_u64` writes).
const fn varint_len(v: u64) -> usize {
    let bits = 64 - v.leading_zeros() as usize;
    if bits == 0 { 1 } else { bits.div_ceil(7) }
}

/// Reads the command id of an envelope without trusting it, so that even a refused
/// command can be acked under the id its sender used.
pub fn peek_id(wire: &[u8]) -> Option<u64> {
    let (body, _) = split(wire).ok()?;
    Command::from_bytes(body).ok().map(|c| c.id)
}

/// Verifies a signed command and, only if every check passes, marks its id as used.
///
/// `gateway` is the verifier's own id; `now` its clock.
pub fn open(
    wire: &[u8],
    key: &VerifyingKey,
    gateway: &str,
    now: Timestamp,
    window: &mut ReplayWindow,
) -> Result<Command, CommandError> {
    let cmd = check(wire, key, gateway, now)?;
    if !window.is_fresh(cmd.id) {
        return Err(CommandError::Replayed);
    }
    window.mark(cmd.id);
    Ok(cmd)
}

/// Every check of [`open`] except replay: envelope, signature, target gateway, expiry and
/// issue time. For a verifier that forwards a command to where the replay check happens
/// (a gateway delivering a prepared broadcast into a speaker's mailbox, where the speaker
/// keeps its own window).
pub fn check(wire: &[u8], key: &VerifyingKey, gateway: &str, now: Timestamp) -> Result<Command, CommandError> {
    let (body, signature) = split(wire)?;
    key.verify_strict(&signed_message(body), &signature).map_err(|_| CommandError::BadSignature)?;
    let cmd = Command::from_bytes(body)?;
    if cmd.gateway != gateway {
        return Err(CommandError::WrongGateway);
    }
    if now >= cmd.expires_at {
        return Err(CommandError::Expired);
    }
    if cmd.issued_at.0 > now.0.saturating_add(MAX_CLOCK_SKEW_MS) {
        return Err(CommandError::IssuedInFuture);
    }
    Ok(cmd)
}

/// Remembers which command ids were used, in constant space.
///
/// The classic anti-replay window (as in IPsec): the highest id seen and a bitmap of the
/// 64 ids below it. An id older than the window is refused, so ingest issues ids in
/// increasing order. Persist [`ReplayWindow::state`] across restarts, or a restart
/// reopens the window to commands that have not expired yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReplayWindow {
    highest: u64,
    seen: u64,
}

impl ReplayWindow {
    /// An empty window (id 0 is never valid).
    pub const fn new() -> ReplayWindow {
        ReplayWindow { highest: 0, seen: 0 }
    }

    /// Restores a window saved with [`ReplayWindow::state`].
    pub const fn from_state(highest: u64, seen: u64) -> ReplayWindow {
        ReplayWindow { highest, seen }
    }

    /// `(highest id, bitmap)` to persist.
    pub const fn state(&self) -> (u64, u64) {
        (self.highest, self.seen)
    }

    /// True if `id` has not been used and is not too old to tell.
    pub const fn is_fresh(&self, id: u64) -> bool {
        if id == 0 {
            return false;
        }
        if id > self.highest {
            return true;
        }
        let age = self.highest - id;
        age < 64 && self.seen & (1 << age) == 0
    }

    /// Records `id` as used.
    pub fn mark(&mut self, id: u64) {
        if id > self.highest {
            let shift = id - self.highest;
            self.seen = if shift >= 64 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.highest = id;
        } else if self.highest - id < 64 {
            self.seen |= 1 << (self.highest - id);
        }
    }
}

/// Where a command stands, as the gateway or the speaker reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckState {
    /// Verified and accepted; for a broadcast, the speaker has it.
    Delivered,
    /// A write was carried out and read back.
    Done,
    /// Playback started.
    Playing,
    /// Playback finished every repeat.
    Played,
    /// A higher level pre-empted it, or it was stopped.
    Interrupted,
    /// Refused before acting: forged, expired, replayed, or outside the profile.
    Refused,
    /// Accepted but could not be carried out (device did not answer, exception).
    Failed,
}

/// Ack for a command, published on `vt/{tenant}/{gateway}/up/ack`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandAck {
    /// The command's id (as its envelope claimed, for refused ones).
    pub id: u64,
    /// The device the command was for, when known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub device: String,
    /// When the state was reached.
    pub ts: Timestamp,
    /// Where the command stands.
    pub state: AckState,
    /// Why, for refused and failed commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The speaker's own signed word on this state (`protocol::receipt`), relayed
    /// unchanged by the gateway: what ingest records a speaker's state on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<alloc::boxed::Box<crate::receipt::SignedReceipt>>,
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;

    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn pump_start(id: u64) -> Command {
        Command {
            id,
            tenant: "county".into(),
            gateway: "gw-dongcun".into(),
            device: "dongcun-pump".into(),
            issued_at: Timestamp(1_000_000),
            expires_at: Timestamp(1_060_000),
            action: Action::Write { point: "pump_run".into(), value: 1.0 },
        }
    }

    fn flood_warning(id: u64) -> Command {
        Command {
            action: Action::Play(Playback {
                broadcast: 9,
                level: Level::Red,
                content: Content::Tts { text: "山洪预警：请立即撤离到高处。".into() },
                repeat: 3,
                volume: Some(90),
                start_at: None,
            }),
            device: "dongcun-speaker-1".into(),
            ..pump_start(id)
        }
    }

    const NOW: Timestamp = Timestamp(1_010_000);

    #[test]
    fn a_signed_command_opens_once() {
        let wire = flood_warning(5).sign(&key());
        let mut w = ReplayWindow::new();
        let vk = key().verifying_key();
        assert_eq!(open(&wire, &vk, "gw-dongcun", NOW, &mut w), Ok(flood_warning(5)));
        assert_eq!(open(&wire, &vk, "gw-dongcun", NOW, &mut w), Err(CommandError::Replayed));
    }

    #[test]
    fn forged_tampered_misaddressed_and_expired_commands_are_refused() {
        let vk = key().verifying_key();
        let mut w = ReplayWindow::new();
        let forged = pump_start(1).sign(&SigningKey::from_bytes(&[8u8; 32]));
        assert_eq!(open(&forged, &vk, "gw-dongcun", NOW, &mut w), Err(CommandError::BadSignature));

        let mut tampered = pump_start(2).sign(&key());
        let body_end = tampered.len() - 64;
        tampered[body_end - 1] ^= 0x01; // flips a bit of the written value
        assert_eq!(open(&tampered, &vk, "gw-dongcun", NOW, &mut w), Err(CommandError::BadSignature));

        let wire = pump_start(3).sign(&key());
        assert_eq!(open(&wire, &vk, "gw-xicun", NOW, &mut w), Err(CommandError::WrongGateway));
        assert_eq!(open(&wire, &vk, "gw-dongcun", Timestamp(1_060_000), &mut w), Err(CommandError::Expired));
        assert_eq!(
            open(&wire, &vk, "gw-dongcun", Timestamp(1_000_000 - MAX_CLOCK_SKEW_MS - 1), &mut w),
            Err(CommandError::IssuedInFuture)
        );
        // None of the refusals burnt id 3.
        assert!(open(&wire, &vk, "gw-dongcun", NOW, &mut w).is_ok());
        assert_eq!(peek_id(&forged), Some(1));
    }

    #[test]
    fn garbage_envelopes_are_malformed_not_panics() {
        let vk = key().verifying_key();
        let mut w = ReplayWindow::new();
        for bad in [&[][..], &[MAGIC], &[MAGIC, 200, 1], &[0x00, 1, 2, 3]] {
            assert!(matches!(open(bad, &vk, "g", NOW, &mut w), Err(CommandError::Malformed(_))));
        }
        let big = alloc::vec![MAGIC; MAX_COMMAND_BYTES + 1];
        assert_eq!(open(&big, &vk, "g", NOW, &mut w), Err(CommandError::TooLarge(MAX_COMMAND_BYTES + 1)));
    }

    #[test]
    fn an_envelope_with_its_body_length_padded_is_refused() {
        // Found by the `command` fuzz target (fuzz/regressions/command): the length before
        // the body is outside the signature, so `0x80|n, 0x00` for `n` still verified and
        // one signed command had many envelopes.
        let vk = key().verifying_key();
        let wire = pump_start(1).sign(&key());
        assert!(wire[1] < 0x80, "a one-byte length");
        assert!(check(&wire, &vk, "gw-dongcun", NOW).is_ok(), "positive control");
        let mut padded = alloc::vec![MAGIC, wire[1] | 0x80, 0x00];
        padded.extend_from_slice(&wire[2..]);
        assert_eq!(
            check(&padded, &vk, "gw-dongcun", NOW),
            Err(CommandError::Malformed("body length not in its shortest encoding"))
        );
        assert_eq!(peek_id(&padded), None);
        for (v, n) in [(0, 1), (127, 1), (128, 2), (16_383, 2), (16_384, 3), (u64::MAX, 10)] {
            let mut out = Vec::new();
            crate::varint::put_u64(&mut out, v);
            assert_eq!((out.len(), varint_len(v)), (n, n), "{v}");
        }
    }

    #[test]
    fn the_replay_window_accepts_late_ids_once_and_refuses_ancient_ones() {
        let mut w = ReplayWindow::new();
        assert!(!w.is_fresh(0));
        w.mark(100);
        assert!(w.is_fresh(99), "an older id within the window that was never used is fine");
        w.mark(99);
        assert!(!w.is_fresh(99));
        assert!(!w.is_fresh(100));
        assert!(!w.is_fresh(36), "64 below the highest is outside the window");
        w.mark(1000);
        assert!(!w.is_fresh(100));
        assert!(w.is_fresh(999));
        let (h, s) = w.state();
        assert_eq!(ReplayWindow::from_state(h, s), w);
    }

    #[test]
    fn every_action_round_trips_through_canonical_bytes() {
        for cmd in [
            pump_start(1),
            flood_warning(2),
            Command { action: Action::Stop { broadcast: 9 }, ..pump_start(3) },
            Command {
                action: Action::Play(Playback {
                    broadcast: 1,
                    level: Level::Blue,
                    content: Content::Audio { url: "http://x/a.mp3".into(), sha256: [3; 32] },
                    repeat: 1,
                    volume: None,
                    start_at: Some(Timestamp(5)),
                }),
                ..pump_start(4)
            },
        ] {
            assert_eq!(Command::from_bytes(&cmd.to_bytes()), Ok(cmd));
        }
        assert!(CommandError::Replayed.to_string().contains("replay"));
        assert!(Level::Red.preempts(Level::Yellow));
        assert!(!Level::Blue.preempts(Level::Blue));
    }

    #[test]
    fn content_json_spells_the_checksum_in_hex_and_commands_keep_their_array() {
        let audio = Content::Audio { url: "http://x/a.mp3".into(), sha256: [0xab; 32] };
        let json = serde_json::to_string(&audio).unwrap();
        let hex = "ab".repeat(32);
        assert_eq!(json, alloc::format!(r#"{{"type":"audio","url":"http://x/a.mp3","sha256":"{hex}"}}"#));
        assert_eq!(serde_json::from_str::<Content>(&json).unwrap(), audio);
        let upper = json.replace("ab", "AB");
        assert_eq!(serde_json::from_str::<Content>(&upper).unwrap(), audio, "either case is read");
        assert!(serde_json::from_str::<Content>(r#"{"type":"audio","url":"u","sha256":"abc"}"#).is_err());
        let tts = Content::Tts { text: "水".into() };
        assert_eq!(serde_json::to_string(&tts).unwrap(), r#"{"type":"tts","text":"水"}"#);

        let play =
            Playback { broadcast: 1, level: Level::Blue, content: audio, repeat: 1, volume: None, start_at: None };
        let json = serde_json::to_value(&play).unwrap();
        let array: Vec<u8> = serde_json::from_value(json["content"]["sha256"].clone()).unwrap();
        assert_eq!(array, [0xab; 32], "inside a command the checksum is 32 numbers");
        assert_eq!(json["content"]["type"], "audio");
        assert_eq!(serde_json::from_value::<Playback>(json).unwrap(), play);
    }

    #[test]
    fn checksums_parse_from_hex_and_print_back_lowercase() {
        let bytes = parse_sha256(&"AB".repeat(32)).unwrap();
        assert_eq!(bytes, [0xab; 32]);
        assert_eq!(parse_sha256(&alloc::format!(" {} ", "ab".repeat(32))), Some(bytes));
        assert_eq!(sha256_hex(&bytes), "ab".repeat(32));
        assert!(parse_sha256("abc").is_none());
        assert!(parse_sha256(&"zz".repeat(32)).is_none());
    }
}
