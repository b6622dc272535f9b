//! Ingest's delivery ack: what lets a gateway forget a batch.
//!
//! The broker's PUBACK only says the broker has the message, and the embedded broker dies
//! with ingest. Ingest therefore publishes, on `vt/{tenant}/{gateway}/down/delivery`, the
//! highest batch `seq` of that gateway that is durable in its store. The gateway drops
//! every queued batch up to and including that seq, and resends the rest after a timeout.
//!
//! Ingest stores a gateway's batches in seq order and refuses a seq it already has, so
//! "highest seq durable" also means "every seq the gateway still holds below it is
//! stored": a gap can only come from the gateway itself dropping batches when its queue
//! was full, and those it no longer holds.

use serde::{Deserialize, Serialize};

/// Body of a delivery ack (JSON: `{"seq": 41}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAck {
    /// Highest seq of the gateway now durable in ingest's store.
    pub seq: u64,
}

impl DeliveryAck {
    /// Encodes the ack as JSON.
    pub fn to_json(&self) -> alloc::vec::Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes an ack.
    pub fn from_json(bytes: &[u8]) -> Result<DeliveryAck, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}
