//! What the uplink does to every message it sends and receives so that ingest and the
//! gateway trust each other, whatever broker is in between (docs/SECURITY.md).
//!
//! - Out: batches, status (and the last will) and command acks are sealed with the link
//!   key ([`protocol::auth::seal_mac`]) on the topic they go to, at publish time (a batch
//!   queued under an old key goes out under the current one).
//! - In: delivery acks and configurations must carry ingest's Ed25519 signature
//!   ([`protocol::auth::open_signed`]); commands keep their own signed envelope and
//!   replay window ([`crate::command`]).
//!
//! Invariants:
//! - Counters of status and acks increase strictly across restarts without trusting the
//!   clock (a gateway without a battery-backed clock boots in 1970): the counter is
//!   `boot << 32 | n`, where `boot` is a number persisted beside the queue and raised by
//!   one (written, synced) at every start, and `n` counts messages of this boot. One
//!   write per start, none per message.
//! - A batch's counter is its seq, so ingest can hold the envelope to the body.
//! - A delivery ack is a monotone fact ("every seq up to N is durable"), so a replayed
//!   genuine one is still true; what it may release is bounded by the caller to the
//!   highest seq published ([`Trust::releasable`]). A forged or moved one never verifies.
//! - A configuration's counter is its version: one older than the running version is
//!   refused, the same version again (the retained copy after a reconnect) is ignored, and
//!   the version applied is persisted before it is reported, so a restart does not reopen
//!   the gateway to an older, replayed configuration.

use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use protocol::auth::{self, AuthError, LinkKey};
use protocol::delivery::DeliveryAck;
use protocol::topic::{Channel, Topic};

use crate::identity::Identity;

/// File of the boot counter, in the queue directory.
pub const BOOT_FILE: &str = "boot.counter";
/// File of the configuration version applied last, in the queue directory.
pub const CONFIG_VERSION_FILE: &str = "config.version";

/// Why the gateway's trust state could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The link key could not be derived (a weak ingest key in the config).
    #[error("cannot derive the link key with ingest's key: {0}")]
    Key(AuthError),
    /// A state file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// Why a downlink message was not acted on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not signed by ingest (unsigned, forged, tampered, moved from another topic).
    #[error("{0}")]
    Auth(AuthError),
    /// Signed, but the body does not parse.
    #[error("signed delivery ack does not parse")]
    BadBody,
    /// A configuration older than the one running.
    #[error("configuration version {got} is older than the running version {running} (replayed or stale)")]
    Stale {
        /// Its version.
        got: u64,
        /// The running version.
        running: u64,
    },
}

/// A configuration that verified and is newer than the running one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedConfig {
    /// Its version (the envelope's counter).
    pub version: u64,
    /// The TOML text.
    pub text: Vec<u8>,
}

/// The gateway's side of message authentication.
#[derive(Debug)]
pub struct Trust {
    tenant: String,
    gateway: String,
    link: LinkKey,
    ingest: VerifyingKey,
    boot: u64,
    sent: u32,
    config_version: u64,
    dir: Option<PathBuf>,
}

impl Trust {
    /// Derives the link key with ingest's public key and raises the boot counter in `dir`
    /// (the queue directory; `None` keeps state in memory, for tests).
    pub fn new(
        identity: &Identity,
        ingest: VerifyingKey,
        tenant: &str,
        gateway: &str,
        dir: Option<&Path>,
    ) -> Result<Trust, TrustError> {
        let link = identity.link_key(&ingest, tenant, gateway).map_err(TrustError::Key)?;
        let (boot, config_version) = match dir {
            Some(dir) => {
                let boot = read_number(&dir.join(BOOT_FILE))?.unwrap_or(0).saturating_add(1);
                write_number(dir, BOOT_FILE, boot)?;
                (boot, read_number(&dir.join(CONFIG_VERSION_FILE))?.unwrap_or(0))
            }
            // Without a directory, the clock in seconds keeps restarts apart well enough.
            None => (daemon::now().0.max(0) as u64 / 1000, 0),
        };
        Ok(Trust {
            tenant: tenant.into(),
            gateway: gateway.into(),
            link,
            ingest,
            boot,
            sent: 0,
            config_version,
            dir: dir.map(Path::to_path_buf),
        })
    }

    fn topic(&self, channel: Channel) -> Topic<'_> {
        Topic::new(&self.tenant, &self.gateway, channel)
    }

    /// The next status or ack counter: strictly increasing across restarts.
    fn next_counter(&mut self) -> u64 {
        self.sent = self.sent.saturating_add(1);
        (self.boot << 32) | u64::from(self.sent)
    }

    /// Seals an encoded batch for the telemetry topic; the counter is its seq.
    pub fn seal_batch(&self, seq: u64, payload: &[u8]) -> Vec<u8> {
        auth::seal_mac(&self.topic(Channel::Telemetry), &self.link, seq, payload)
    }

    /// Seals a status for the status topic.
    pub fn seal_status(&mut self, body: &[u8]) -> Vec<u8> {
        self.seal(Channel::Status, body)
    }

    /// Seals the last will (an offline status) with counter 0: the broker may publish it
    /// any time later, so ingest takes it only as "offline", never as newer than a status.
    pub fn seal_last_will(&self, body: &[u8]) -> Vec<u8> {
        auth::seal_mac(&self.topic(Channel::Status), &self.link, 0, body)
    }

    /// Seals a command ack for the ack topic.
    pub fn seal_ack(&mut self, body: &[u8]) -> Vec<u8> {
        self.seal(Channel::CommandAck, body)
    }

    /// Seals a body for an uplink channel other than telemetry, with the next counter.
    pub fn seal(&mut self, channel: Channel, body: &[u8]) -> Vec<u8> {
        let counter = self.next_counter();
        auth::seal_mac(&self.topic(channel), &self.link, counter, body)
    }

    /// Verifies a delivery ack: signed by ingest on this gateway's delivery topic.
    pub fn open_delivery(&self, payload: &[u8]) -> Result<DeliveryAck, Refusal> {
        let opened = auth::open_signed(payload, &self.topic(Channel::Delivery), &self.ingest).map_err(Refusal::Auth)?;
        DeliveryAck::from_json(opened.body).map_err(|_| Refusal::BadBody)
    }

    /// What a verified delivery ack for `acked` may release: never past the highest seq
    /// this gateway has published (`published`; 0 if none yet).
    pub fn releasable(acked: u64, published: u64) -> u64 {
        acked.min(published)
    }

    /// Verifies a configuration: signed by ingest on this gateway's config topic and newer
    /// than the running version. `Ok(None)`: the running version again, nothing to do.
    pub fn open_config(&self, payload: &[u8]) -> Result<Option<SignedConfig>, Refusal> {
        let opened = auth::open_signed(payload, &self.topic(Channel::Config), &self.ingest).map_err(Refusal::Auth)?;
        match opened.counter {
            v if v == self.config_version => Ok(None),
            v if v < self.config_version => Err(Refusal::Stale { got: v, running: self.config_version }),
            v => Ok(Some(SignedConfig { version: v, text: opened.body.to_vec() })),
        }
    }

    /// Records that configuration `version` now runs (persisted before it returns).
    pub fn config_applied(&mut self, version: u64) -> Result<(), TrustError> {
        if let Some(dir) = &self.dir {
            write_number(dir, CONFIG_VERSION_FILE, version)?;
        }
        self.config_version = version;
        Ok(())
    }

    /// The configuration version running (0: the local file, no remote one yet).
    pub fn config_version(&self) -> u64 {
        self.config_version
    }

    /// The password this gateway presents to the broker (derived from the link key).
    pub fn broker_password(&self) -> String {
        self.link.broker_password()
    }

    /// The link key's id, for logs.
    pub fn key_id(&self) -> auth::KeyId {
        self.link.id()
    }
}

fn read_number(path: &Path) -> Result<Option<u64>, TrustError> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse().map(Some).map_err(|_| TrustError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not a number"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TrustError::Io { path: path.to_path_buf(), source }),
    }
}

/// Writes `value` to `dir/name`: temporary file, sync, rename, sync of the directory.
fn write_number(dir: &Path, name: &str, value: u64) -> Result<(), TrustError> {
    use std::io::Write as _;
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| TrustError::Io { path: p, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(format!("{value}\n").as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use protocol::auth::Freshness;

    use super::*;

    fn ingest() -> SigningKey {
        SigningKey::from_bytes(&[2u8; 32])
    }

    fn trust(dir: Option<&Path>) -> (Trust, LinkKey) {
        let id = Identity::from_seed([1u8; 32]);
        let t = Trust::new(&id, ingest().verifying_key(), "county", "gw-a", dir).unwrap();
        let theirs = LinkKey::for_ingest(&ingest(), &id.public(), "county", "gw-a").unwrap();
        (t, theirs)
    }

    #[test]
    fn what_the_gateway_seals_ingest_opens_with_counters_that_grow_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let (mut t, link) = trust(Some(dir.path()));
        let status = Topic::new("county", "gw-a", Channel::Status);
        let telemetry = Topic::new("county", "gw-a", Channel::Telemetry);
        let b = t.seal_batch(41, b"batch");
        assert_eq!(auth::open_mac(&b, &telemetry, &link).map(|o| (o.counter, o.body)), Ok((41, &b"batch"[..])));
        let mut fresh = Freshness::newest();
        let first = auth::open_mac(&t.seal_status(b"{}"), &status, &link).unwrap().counter;
        let second = auth::open_mac(&t.seal(Channel::Status, b"{}"), &status, &link).unwrap().counter;
        assert!(fresh.accept(first) && fresh.accept(second));
        // A restart (a new boot number) keeps counters growing whatever the clock says.
        let (mut again, _) = trust(Some(dir.path()));
        let after = auth::open_mac(&again.seal_status(b"{}"), &status, &link).unwrap().counter;
        assert!(fresh.accept(after), "{after} after {second}");
        let will = auth::open_mac(&again.seal_last_will(b"{}"), &status, &link).unwrap().counter;
        assert_eq!(will, 0);
        let ack_topic = Topic::new("county", "gw-a", Channel::CommandAck);
        assert!(auth::open_mac(&again.seal_ack(b"{}"), &ack_topic, &link).is_ok());
    }

    #[test]
    fn only_ingests_signed_delivery_ack_for_this_gateway_is_taken_and_it_never_releases_unsent_batches() {
        let (t, _) = trust(None);
        let topic = Topic::new("county", "gw-a", Channel::Delivery);
        let ack = DeliveryAck { seq: 40 }.to_json();
        let good = auth::seal_signed(&topic, &ingest(), 1, &ack);
        assert_eq!(t.open_delivery(&good), Ok(DeliveryAck { seq: 40 }), "positive control");
        assert_eq!(t.open_delivery(&ack), Err(Refusal::Auth(AuthError::Unsigned)));
        let forged = auth::seal_signed(&topic, &SigningKey::from_bytes(&[6u8; 32]), 1, &ack);
        assert_eq!(t.open_delivery(&forged), Err(Refusal::Auth(AuthError::UnknownKey)));
        let other = Topic::new("county", "gw-b", Channel::Delivery);
        let moved = auth::seal_signed(&other, &ingest(), 1, &ack);
        assert_eq!(t.open_delivery(&moved), Err(Refusal::Auth(AuthError::BadSignature)));
        let garbage = auth::seal_signed(&topic, &ingest(), 1, b"nope");
        assert_eq!(t.open_delivery(&garbage), Err(Refusal::BadBody));
        assert_eq!(Trust::releasable(40, 12), 12, "never past what was published");
        assert_eq!(Trust::releasable(1 << 62, 12), 12);
        assert_eq!(Trust::releasable(10, 12), 10);
    }

    #[test]
    fn a_config_must_be_signed_and_newer_and_the_applied_version_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (mut t, _) = trust(Some(dir.path()));
        let topic = Topic::new("county", "gw-a", Channel::Config);
        let v5 = auth::seal_signed(&topic, &ingest(), 5, b"text");
        assert_eq!(t.open_config(&v5), Ok(Some(SignedConfig { version: 5, text: b"text".to_vec() })));
        t.config_applied(5).unwrap();
        assert_eq!(t.open_config(&v5), Ok(None), "the retained copy again is nothing to do");
        let v4 = auth::seal_signed(&topic, &ingest(), 4, b"old");
        assert_eq!(t.open_config(&v4), Err(Refusal::Stale { got: 4, running: 5 }));
        assert_eq!(t.open_config(b"[mqtt]\n"), Err(Refusal::Auth(AuthError::Unsigned)));
        let forged = auth::seal_signed(&topic, &SigningKey::from_bytes(&[6u8; 32]), 9, b"write");
        assert!(matches!(t.open_config(&forged), Err(Refusal::Auth(_))));
        let (again, _) = trust(Some(dir.path()));
        assert_eq!(again.config_version(), 5);
        assert_eq!(again.open_config(&v4), Err(Refusal::Stale { got: 4, running: 5 }), "a restart does not reopen it");
        let v6 = auth::seal_signed(&topic, &ingest(), 6, b"new");
        assert!(matches!(again.open_config(&v6), Ok(Some(SignedConfig { version: 6, .. }))));
    }
}
