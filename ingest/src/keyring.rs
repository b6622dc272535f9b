//! The keyring: which key each gateway's messages must verify with, checking them, and
//! signing what ingest sends down (docs/SECURITY.md).
//!
//! Every uplink message is an envelope (`protocol::auth`) sealed with the link key of the
//! gateway named in its topic; the keyring derives that key from ingest's own key and the
//! gateway's enrolled public key (the inventory's `public_key`), once at enrolment, not
//! per message. Delivery acks and configurations go down signed with ingest's key.
//!
//! Invariants:
//! - [`Keyring::open`] keeps no state and allocates nothing for a message that does not
//!   verify: an unknown gateway, an unknown key id, a bad tag all end in an
//!   [`AuthError`] whose [`AuthError::code`] is one of a handful of fixed labels. A flood
//!   from nobody costs CPU (about a microsecond a message), never memory.
//! - Freshness state ([`Keyring::fresh`]) is made only for enrolled gateways and only after
//!   a message verified, so it is bounded by the gateways ever enrolled. It outlives a
//!   revocation, so a gateway enrolled again with the same key cannot be replayed its old
//!   messages.
//! - Freshness survives a restart: the high-water marks are written to a small file
//!   ([`Keyring::save_marks`], on a timer of [`MARKS_EVERY`] and at stop, atomically) and read
//!   back at start ([`Keyring::load_marks`]). A status must then be at least the last one
//!   accepted (the broker's retained copy of that very status is taken once more: it is
//!   the state ingest had), an ack outside the persisted replay window is refused. After a
//!   crash the marks are at most [`MARKS_EVERY`] old: only what was accepted in that last
//!   interval could be taken once more.
//! - A gateway holds at most [`MAX_KEYS`] keys (the old and the new during a rotation);
//!   removing its keys revokes it at once: the next message is refused.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use ed25519_dalek::{SigningKey, VerifyingKey};
use protocol::auth::{self, AuthError, Freshness, KeyId, LinkKey, Opened};
use protocol::delivery::DeliveryAck;
use protocol::topic::{Channel, Topic};

/// Keys a gateway may hold at once: the current one and, during a rotation, the next.
pub const MAX_KEYS: usize = 2;
/// The file of freshness marks, in ingest's data directory.
pub const MARKS_FILE: &str = "freshness.marks";
/// How often changed freshness marks are written (and so how old they can be after a crash).
pub const MARKS_EVERY: Duration = Duration::from_secs(1);
/// First line of the marks file.
const MARKS_HEADER: &str = "# village-telemetry freshness marks v1: gateway status_last ack_highest ack_seen";

struct Enrolled {
    tenant: String,
    links: Vec<LinkKey>,
    public: Vec<VerifyingKey>,
}

/// Freshness of one gateway's status and command acks.
struct Counters {
    status: Freshness,
    acks: Freshness,
}

/// Ingest's key and every enrolled gateway's link keys.
pub struct Keyring {
    key: SigningKey,
    gateways: RwLock<HashMap<String, Enrolled>>,
    counters: Mutex<HashMap<String, Counters>>,
    /// Set when a counter moved since the marks were last written.
    marks_dirty: AtomicBool,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("gateways", &read(&self.gateways).len()).finish_non_exhaustive()
    }
}

/// Parses a public key as the inventory writes it: 64 hex digits.
pub fn parse_public_key(hex: &str) -> Result<VerifyingKey, String> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(format!("expected 64 hex digits (an Ed25519 public key), got {} characters", hex.chars().count()));
    }
    let mut key = [0u8; 32];
    for (i, out) in key.iter_mut().enumerate() {
        *out = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| "not hexadecimal".to_string())?;
    }
    let key = VerifyingKey::from_bytes(&key).map_err(|_| "not a valid Ed25519 public key".to_string())?;
    if key.is_weak() {
        return Err("a key of small order is refused".into());
    }
    Ok(key)
}

impl Keyring {
    /// A keyring with ingest's own key (the command key) and no gateway enrolled.
    pub fn new(key: SigningKey) -> Keyring {
        Keyring {
            key,
            gateways: RwLock::new(HashMap::new()),
            counters: Mutex::new(HashMap::new()),
            marks_dirty: AtomicBool::new(false),
        }
    }

    /// Ingest's public key (what gateways have as `command_key`).
    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Sets the keys of `gateway` (of `tenant`), replacing what it had: enrolment,
    /// rotation (two keys) and, with no keys, revocation. Returns the keys' fingerprints.
    pub fn set(&self, tenant: &str, gateway: &str, keys: &[VerifyingKey]) -> Result<Vec<String>, AuthError> {
        if keys.is_empty() {
            self.revoke(gateway);
            return Ok(Vec::new());
        }
        let keys = &keys[keys.len().saturating_sub(MAX_KEYS)..];
        let links =
            keys.iter().map(|k| LinkKey::for_ingest(&self.key, k, tenant, gateway)).collect::<Result<Vec<_>, _>>()?;
        let prints = keys.iter().map(auth::fingerprint).collect();
        write(&self.gateways)
            .insert(gateway.to_string(), Enrolled { tenant: tenant.into(), links, public: keys.to_vec() });
        Ok(prints)
    }

    /// Forgets `gateway`'s keys: from now on everything it sends is refused. Its freshness
    /// marks stay (see the module doc).
    pub fn revoke(&self, gateway: &str) {
        write(&self.gateways).remove(gateway);
    }

    /// The tenant of an enrolled gateway.
    pub fn tenant_of(&self, gateway: &str) -> Option<String> {
        read(&self.gateways).get(gateway).map(|e| e.tenant.clone())
    }

    /// The public keys enrolled for `gateway`.
    pub fn keys_of(&self, gateway: &str) -> Vec<VerifyingKey> {
        read(&self.gateways).get(gateway).map(|e| e.public.clone()).unwrap_or_default()
    }

    /// The broker passwords of an enrolled gateway, one per key it holds (derived from
    /// the link keys); empty for a gateway not enrolled.
    pub fn broker_passwords(&self, gateway: &str) -> Vec<String> {
        read(&self.gateways)
            .get(gateway)
            .map(|e| e.links.iter().map(LinkKey::broker_password).collect())
            .unwrap_or_default()
    }

    /// Number of gateways enrolled.
    pub fn len(&self) -> usize {
        read(&self.gateways).len()
    }

    /// True if no gateway is enrolled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Verifies an uplink message against the link key of the topic's gateway; the body
    /// only if it verifies.
    pub fn open<'a>(&self, topic: &Topic<'_>, payload: &'a [u8]) -> Result<Opened<'a>, AuthError> {
        let header = auth::peek(payload)?;
        let gateways = read(&self.gateways);
        let enrolled = gateways.get(topic.gateway).ok_or(AuthError::UnknownKey)?;
        if enrolled.tenant != topic.tenant {
            return Err(AuthError::BadSignature);
        }
        let link = enrolled.links.iter().find(|l| l.id() == header.key_id).ok_or(AuthError::UnknownKey)?;
        auth::open_mac(payload, topic, link)
    }

    /// True (and remembered) if a verified message's counter is fresh for its channel:
    /// status strictly newer than the last (the last will, counter 0, is always taken and
    /// changes nothing), command acks within the replay window, telemetry always (its
    /// seq is de-duplicated by the store).
    pub fn fresh(&self, topic: &Topic<'_>, counter: u64) -> bool {
        if !read(&self.gateways).contains_key(topic.gateway) {
            return false;
        }
        let mut counters = lock(&self.counters);
        let c = counters
            .entry(topic.gateway.to_string())
            .or_insert_with(|| Counters { status: Freshness::newest(), acks: Freshness::window() });
        let fresh = match topic.channel {
            Channel::Status if counter == 0 => return true,
            Channel::Status => c.status.accept(counter),
            Channel::CommandAck => c.acks.accept(counter),
            _ => return true,
        };
        if fresh {
            self.marks_dirty.store(true, Ordering::Relaxed);
        }
        fresh
    }

    /// Reads the freshness marks written by [`Keyring::save_marks`]; a missing file is no
    /// marks. Returns how many gateways it named. A status counter is restored one below
    /// its mark, so the very status last accepted (the broker's retained copy) is taken
    /// once more and nothing older.
    pub fn load_marks(&self, path: &Path) -> std::io::Result<usize> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let bad = |line: usize| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}:{line}: not a freshness mark", path.display()),
            )
        };
        let mut counters = lock(&self.counters);
        let mut n = 0;
        for (i, line) in text.lines().enumerate() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            let [gateway, status, highest, seen] = fields[..] else { return Err(bad(i + 1)) };
            let number = |s: &str| s.parse::<u64>().map_err(|_| bad(i + 1));
            let (status, highest, seen) = (number(status)?, number(highest)?, number(seen)?);
            counters.insert(
                gateway.to_string(),
                Counters {
                    status: Freshness::Newest(status.saturating_sub(1)),
                    acks: Freshness::Window(protocol::command::ReplayWindow::from_state(highest, seen)),
                },
            );
            n += 1;
        }
        Ok(n)
    }

    /// Writes the freshness marks to `path` if any moved since the last write: a temporary
    /// file beside it, synced, renamed over it. Returns whether it wrote.
    pub fn save_marks(&self, path: &Path) -> std::io::Result<bool> {
        if !self.marks_dirty.swap(false, Ordering::Relaxed) {
            return Ok(false);
        }
        let mut text = String::from(MARKS_HEADER);
        text.push('\n');
        {
            let counters = lock(&self.counters);
            let mut names: Vec<&String> = counters.keys().collect();
            names.sort();
            for name in names {
                let c = &counters[name];
                let status = match c.status {
                    Freshness::Newest(last) => last,
                    Freshness::Window(w) => w.state().0,
                };
                let (highest, seen) = match c.acks {
                    Freshness::Window(w) => w.state(),
                    Freshness::Newest(last) => (last, u64::MAX),
                };
                text.push_str(&format!("{name} {status} {highest} {seen}\n"));
            }
        }
        if let Err(e) = write_atomically(path, text.as_bytes()) {
            self.marks_dirty.store(true, Ordering::Relaxed);
            return Err(e);
        }
        Ok(true)
    }

    /// A delivery ack for `gateway`, signed; the counter is ingest's clock in ms.
    pub fn seal_delivery(&self, tenant: &str, gateway: &str, ack: DeliveryAck, now_ms: i64) -> Vec<u8> {
        let topic = Topic::new(tenant, gateway, Channel::Delivery);
        auth::seal_signed(&topic, &self.key, now_ms.max(0) as u64, &ack.to_json())
    }

    /// A configuration for `gateway`, signed with its version.
    pub fn seal_config(&self, tenant: &str, gateway: &str, version: u64, text: &[u8]) -> Vec<u8> {
        auth::seal_signed(&Topic::new(tenant, gateway, Channel::Config), &self.key, version, text)
    }

    /// The id of ingest's own key, as its signed envelopes carry it.
    pub fn key_id(&self) -> KeyId {
        KeyId::of(&self.public_key())
    }
}

/// Writes `bytes` to `path` so that a reader sees the old file or the new one, never a
/// part: a temporary file beside it, synced, renamed over it, the directory synced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingest() -> SigningKey {
        SigningKey::from_bytes(&[2u8; 32])
    }

    fn gateway(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn sealed(gw_key: &SigningKey, tenant: &str, gw: &str, channel: Channel, counter: u64, body: &[u8]) -> Vec<u8> {
        let link = LinkKey::for_gateway(gw_key, &ingest().verifying_key(), tenant, gw).unwrap();
        auth::seal_mac(&Topic::new(tenant, gw, channel), &link, counter, body)
    }

    #[test]
    fn an_enrolled_gateways_message_verifies_and_everything_else_is_refused_by_code() {
        let ring = Keyring::new(ingest());
        ring.set("county", "gw-a", &[gateway(10).verifying_key()]).unwrap();
        ring.set("county", "gw-b", &[gateway(11).verifying_key()]).unwrap();
        let t = Topic::new("county", "gw-a", Channel::Telemetry);
        let good = sealed(&gateway(10), "county", "gw-a", Channel::Telemetry, 1, b"batch");
        assert_eq!(ring.open(&t, &good).map(|o| o.body), Ok(&b"batch"[..]), "positive control");

        // gw-b's key publishing as gw-a: its link key is not gw-a's.
        let as_a = sealed(&gateway(11), "county", "gw-a", Channel::Telemetry, 1, b"batch");
        assert_eq!(ring.open(&t, &as_a).unwrap_err().code(), "bad_signature");
        // gw-b's own message moved to gw-a's topic.
        let moved = sealed(&gateway(11), "county", "gw-b", Channel::Telemetry, 1, b"batch");
        assert_eq!(ring.open(&t, &moved).unwrap_err().code(), "bad_signature");
        // An unknown gateway, a wrong tenant, an unsigned payload.
        let zz = Topic::new("county", "gw-zz", Channel::Telemetry);
        assert_eq!(ring.open(&zz, &good).unwrap_err().code(), "bad_signature");
        let farm = Topic::new("farm", "gw-a", Channel::Telemetry);
        assert_eq!(ring.open(&farm, &good).unwrap_err().code(), "bad_signature");
        assert_eq!(ring.open(&t, b"{\"gateway\":\"gw-a\"}").unwrap_err().code(), "unsigned");
        assert!(!ring.fresh(&zz, 5), "no state for an unknown gateway");
    }

    #[test]
    fn rotation_takes_both_keys_and_revocation_refuses_at_once() {
        let ring = Keyring::new(ingest());
        let t = Topic::new("county", "gw-a", Channel::Status);
        ring.set("county", "gw-a", &[gateway(10).verifying_key()]).unwrap();
        let old = sealed(&gateway(10), "county", "gw-a", Channel::Status, 1, b"{}");
        let new = sealed(&gateway(12), "county", "gw-a", Channel::Status, 1, b"{}");
        assert!(ring.open(&t, &old).is_ok());
        assert!(ring.open(&t, &new).is_err());
        ring.set("county", "gw-a", &[gateway(10).verifying_key(), gateway(12).verifying_key()]).unwrap();
        assert!(ring.open(&t, &old).is_ok() && ring.open(&t, &new).is_ok(), "both during the changeover");
        ring.set("county", "gw-a", &[gateway(12).verifying_key()]).unwrap();
        assert!(ring.open(&t, &old).is_err() && ring.open(&t, &new).is_ok());
        ring.revoke("gw-a");
        assert_eq!(ring.open(&t, &new).unwrap_err().code(), "bad_signature");
        assert!(ring.is_empty());
    }

    #[test]
    fn status_must_be_newer_acks_fresh_once_and_the_last_will_always_passes() {
        let ring = Keyring::new(ingest());
        ring.set("county", "gw-a", &[gateway(10).verifying_key()]).unwrap();
        let status = Topic::new("county", "gw-a", Channel::Status);
        let acks = Topic::new("county", "gw-a", Channel::CommandAck);
        assert!(ring.fresh(&status, 5));
        assert!(!ring.fresh(&status, 5), "a replayed status");
        assert!(!ring.fresh(&status, 4), "an older status");
        assert!(ring.fresh(&status, 0), "the last will");
        assert!(ring.fresh(&status, 6));
        assert!(ring.fresh(&acks, 10) && ring.fresh(&acks, 9));
        assert!(!ring.fresh(&acks, 10), "a replayed ack");
    }

    #[test]
    fn delivery_acks_and_configs_are_signed_for_their_gateway() {
        let ring = Keyring::new(ingest());
        let wire = ring.seal_delivery("county", "gw-a", DeliveryAck { seq: 7 }, 1000);
        let t = Topic::new("county", "gw-a", Channel::Delivery);
        let opened = auth::open_signed(&wire, &t, &ring.public_key()).unwrap();
        assert_eq!(DeliveryAck::from_json(opened.body).unwrap(), DeliveryAck { seq: 7 });
        let other = Topic::new("county", "gw-b", Channel::Delivery);
        assert!(auth::open_signed(&wire, &other, &ring.public_key()).is_err());
        let cfg = ring.seal_config("county", "gw-a", 3, b"text");
        let t = Topic::new("county", "gw-a", Channel::Config);
        assert_eq!(auth::open_signed(&cfg, &t, &ring.public_key()).unwrap().counter, 3);
        assert_eq!(ring.key_id(), KeyId::of(&ingest().verifying_key()));
    }

    #[test]
    fn public_keys_parse_from_hex_and_bad_ones_are_named() {
        let hex: String = gateway(10).verifying_key().as_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parse_public_key(&hex), Ok(gateway(10).verifying_key()));
        assert!(parse_public_key("abc").unwrap_err().contains("64 hex digits"));
        assert!(parse_public_key(&"zz".repeat(32)).unwrap_err().contains("hexadecimal"));
        assert!(parse_public_key(&"é".repeat(32)).is_err(), "non-ASCII is refused, not a panic");
        let mut identity = "01".to_string();
        identity.push_str(&"00".repeat(31));
        assert!(parse_public_key(&identity).unwrap_err().contains("small order"));
    }

    #[test]
    fn freshness_marks_survive_a_restart_so_an_old_status_or_ack_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MARKS_FILE);
        let ring = Keyring::new(ingest());
        ring.set("county", "gw-a", &[gateway(10).verifying_key()]).unwrap();
        let status = Topic::new("county", "gw-a", Channel::Status);
        let acks = Topic::new("county", "gw-a", Channel::CommandAck);
        assert!(!ring.save_marks(&path).unwrap(), "nothing moved, nothing written");
        assert!(ring.fresh(&status, 5) && ring.fresh(&status, 7));
        assert!(ring.fresh(&acks, 20) && ring.fresh(&acks, 18));
        assert!(ring.save_marks(&path).unwrap());

        // A new ingest on the same data directory.
        let again = Keyring::new(ingest());
        again.set("county", "gw-a", &[gateway(10).verifying_key()]).unwrap();
        assert_eq!(again.load_marks(&path).unwrap(), 1);
        assert!(!again.fresh(&status, 5), "an older status replayed after the restart");
        assert!(again.fresh(&status, 7), "the last status once more: the broker's retained copy");
        assert!(!again.fresh(&status, 7), "but only once");
        assert!(again.fresh(&status, 8), "positive control: a fresh status");
        assert!(!again.fresh(&acks, 20) && !again.fresh(&acks, 18), "acks seen before the restart");
        assert!(again.fresh(&acks, 19) && again.fresh(&acks, 21), "acks not seen yet");

        // No file: no marks; a damaged file is an error, not a silent reset.
        assert_eq!(Keyring::new(ingest()).load_marks(&dir.path().join("none")).unwrap(), 0);
        std::fs::write(&path, "gw-a five 1 2\n").unwrap();
        assert!(Keyring::new(ingest()).load_marks(&path).is_err());
    }

    #[test]
    fn a_revoked_and_re_enrolled_gateway_keeps_its_freshness() {
        let ring = Keyring::new(ingest());
        let status = Topic::new("county", "gw-a", Channel::Status);
        ring.set("county", "gw-a", &[gateway(10).verifying_key()]).unwrap();
        assert!(ring.fresh(&status, 9));
        ring.revoke("gw-a");
        assert!(!ring.fresh(&status, 10), "nothing is fresh for a revoked gateway");
        ring.set("county", "gw-a", &[gateway(10).verifying_key()]).unwrap();
        assert!(!ring.fresh(&status, 9), "its old status is still a replay");
        assert!(ring.fresh(&status, 10));
    }
}
