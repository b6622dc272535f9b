//! The contract every part of village telemetry shares.
//!
//! Gateways, ingest, the simulator and the firmware all speak through the types in this
//! crate, so a change here is a change of the wire contract. The crate does no I/O and is
//! `no_std` + `alloc`: the firmware links the same command check that the gateway runs.
//!
//! - [`reading`]: a reading `(device, metric, ts, value, quality)` and a batch
//!   `(gateway, seq, readings)`, the unit of delivery.
//! - [`catalogue`]: the metrics we know, with canonical units. Units live here, never in a
//!   reading.
//! - [`device`]: the kinds of device the system models.
//! - [`topic`]: the MQTT topic layout; tenant and gateway are in every topic.
//! - [`codec`]: JSON for people and a compact binary codec for paid cellular links. Both
//!   carry the same types and round-trip exactly.
//! - [`delivery`] and [`status`]: ingest's delivery acks and the gateway's retained status.
//! - [`command`]: signed downlink commands, their acks, and the replay window that both the
//!   gateway and the firmware use to refuse forged, expired or replayed commands.
//! - [`modbus`] and [`speaker`]: the device <-> gateway contract: Modbus tables, word
//!   orders and register conversions, and the speaker terminal's command log layout.
#![no_std]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod auth;
pub mod catalogue;
pub mod codec;
pub mod command;
pub mod delivery;
pub mod device;
pub mod id;
pub mod modbus;
pub mod reading;
pub mod receipt;
pub mod speaker;
pub mod status;
pub mod topic;
pub mod varint;

pub use catalogue::{Family, Metric, MetricDef};
pub use device::DeviceKind;
pub use reading::{Batch, DeviceId, Quality, Reading, Timestamp};
