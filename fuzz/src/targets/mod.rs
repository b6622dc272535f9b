//! The targets, one module per decoder family. Each exposes `run(&[u8])`.
//!
//! Keys are fixed seeds shared by all targets ([`keys`]), so that seeds made with them
//! (signed commands, sealed envelopes) verify, and every run is reproducible.

pub mod auth;
pub mod batch;
pub mod cap;
pub mod command;
pub mod config;
pub mod downlink;
pub mod line_protocol;
pub mod modbus;
pub mod speaker;

/// The fixed identities of the fuzzed world: ingest's command key, a gateway's key, a
/// speaker's key, and the ids they were enrolled under.
pub mod keys {
    use ed25519_dalek::SigningKey;

    /// Tenant of the fuzzed gateway.
    pub const TENANT: &str = "county";
    /// The fuzzed gateway's id.
    pub const GATEWAY: &str = "gw-dongcun";
    /// The speaker behind it.
    pub const SPEAKER: &str = "dongcun-speaker-1";
    /// The verifier's clock when a target does not take it from the input
    /// (2025-11-23T12:13:20Z, inside the seed commands' validity).
    pub const NOW_MS: i64 = 1_763_900_000_000;

    /// Ingest's key: signs commands, configurations and delivery acks.
    pub fn ingest() -> SigningKey {
        SigningKey::from_bytes(&[2u8; 32])
    }

    /// The gateway's key (its link key with ingest MACs the uplink).
    pub fn gateway() -> SigningKey {
        SigningKey::from_bytes(&[1u8; 32])
    }

    /// The speaker's key: signs its receipts.
    pub fn speaker() -> SigningKey {
        SigningKey::from_bytes(&[4u8; 32])
    }
}
