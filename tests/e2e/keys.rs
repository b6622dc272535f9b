//! Keys for tests that act as a gateway themselves: a fixed key per gateway id (so the
//! inventory and the publisher agree without passing keys around), ingest's public key
//! from its API, and sealing a payload as the gateway's uplink does.

use ed25519_dalek::VerifyingKey;
use gateway::identity::Identity;
use protocol::auth::{self, LinkKey};
use protocol::topic::{Channel, Topic};

/// The fixed key of test gateway `gateway`.
pub(crate) fn identity(gateway: &str) -> Identity {
    let mut seed = [0x42u8; 32];
    for (i, b) in gateway.bytes().enumerate() {
        seed[i % 32] ^= b.rotate_left(i as u32 % 8);
    }
    seed[31] ^= gateway.len() as u8;
    Identity::from_seed(seed)
}

/// What the inventory lists for `gateway`.
pub(crate) fn public_key(gateway: &str) -> Option<String> {
    Some(identity(gateway).public_hex())
}

/// Ingest's public key from `GET /api/v1/keys/commands` at `base` (`http://host:port`).
pub(crate) async fn ingest_key(base: &str) -> VerifyingKey {
    let v = crate::common::get_json(base, "/api/v1/keys/commands").await;
    let hex = v["public_key"].as_str().expect("a public key");
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex");
    }
    VerifyingKey::from_bytes(&key).expect("a valid key")
}

/// The link key test gateway `gateway` shares with ingest.
pub(crate) fn link(tenant: &str, gateway: &str, ingest: &VerifyingKey) -> LinkKey {
    identity(gateway).link_key(ingest, tenant, gateway).expect("a link key")
}

/// `body` sealed as `gateway`'s uplink seals it on `channel` (for telemetry, `counter` is
/// the batch's seq).
pub(crate) fn seal(
    tenant: &str,
    gateway: &str,
    channel: Channel,
    ingest: &VerifyingKey,
    counter: u64,
    body: &[u8],
) -> Vec<u8> {
    auth::seal_mac(&Topic::new(tenant, gateway, channel), &link(tenant, gateway, ingest), counter, body)
}

/// Ingest's signing key from a data directory (`command.key`): what a test that plays
/// ingest (or a compromised ingest) signs downlink messages with.
pub(crate) fn ingest_signing_key(data_dir: &std::path::Path) -> ed25519_dalek::SigningKey {
    let bytes = std::fs::read(data_dir.join(ingest::command::KEY_FILE)).expect("ingest's key file");
    let seed: [u8; 32] = bytes.as_slice().try_into().expect("32 bytes");
    ed25519_dalek::SigningKey::from_bytes(&seed)
}

/// Opens what a demo gateway sealed on `channel`: its key from beside its queue, ingest's
/// from the data directory. `None` if it does not verify.
pub(crate) fn open_demo_uplink(
    data_dir: &std::path::Path,
    tenant: &str,
    gateway: &str,
    channel: Channel,
    payload: &[u8],
) -> Option<Vec<u8>> {
    let identity = ingest::demo::gateway_identity(data_dir, gateway).ok()?;
    let ingest = ingest_signing_key(data_dir);
    let link = LinkKey::for_ingest(&ingest, &identity.public(), tenant, gateway).ok()?;
    auth::open_mac(payload, &Topic::new(tenant, gateway, channel), &link).ok().map(|o| o.body.to_vec())
}
