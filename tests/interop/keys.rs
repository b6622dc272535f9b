//! Gateway keys for the interop tests: each gateway gets a queue directory with its key
//! made in it before ingest starts, so the inventory can list the public half; and the
//! test can read what a gateway sealed, as ingest would.

use std::path::{Path, PathBuf};

use gateway::identity::Identity;
use protocol::auth::{self, LinkKey};
use protocol::topic::{Channel, Topic};

/// Makes `gateway`'s queue directory under `dir` with its key in it; returns the directory
/// (for the gateway's `[queue] dir`) and the public key (for the inventory).
pub(crate) fn enrol(dir: &Path, gateway: &str) -> (PathBuf, Option<String>) {
    let queue = dir.join(format!("{gateway}-queue"));
    let (id, _) = Identity::load_or_create(Some(&queue)).expect("the gateway's key");
    (queue, Some(id.public_hex()))
}

/// Ingest's public key, for a gateway's `command_key`.
pub(crate) fn command_key(running: &ingest::service::Running) -> Option<[u8; 32]> {
    Some(running.state.commands.public_key())
}

/// Opens what `gateway` (key in `queue`) sealed on `channel`, with ingest's key from its
/// data directory `ingest_dir`.
pub(crate) fn open(
    ingest_dir: &Path,
    queue: &Path,
    gateway: &str,
    channel: Channel,
    payload: &[u8],
) -> Option<Vec<u8>> {
    let id = Identity::load(&queue.join(gateway::identity::FILE)).ok()?;
    let bytes = std::fs::read(ingest_dir.join(ingest::command::KEY_FILE)).ok()?;
    let seed: [u8; 32] = bytes.as_slice().try_into().ok()?;
    let ingest = ed25519_dalek::SigningKey::from_bytes(&seed);
    let link = LinkKey::for_ingest(&ingest, &id.public(), "county", gateway).ok()?;
    auth::open_mac(payload, &Topic::new("county", gateway, channel), &link).ok().map(|o| o.body.to_vec())
}

/// Makes a gateway key in the queue directory `queue`; returns the public key for the
/// inventory.
pub(crate) fn enrol_in(queue: &Path) -> Option<String> {
    let (id, _) = Identity::load_or_create(Some(queue)).expect("the gateway's key");
    Some(id.public_hex())
}
