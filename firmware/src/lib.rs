//! Device logic of village telemetry's own field devices, as it runs on a microcontroller.
//!
//! Each device is a plain struct that holds its state. The world (real sensors on a
//! board, or the simulator's physics on a host) calls the device's `sense`/`update` entry
//! with what its sensors measure and the time that passed; the device does its own logic
//! (totalising, level control, fault latching, playback) and exposes a Modbus register
//! map through [`modbus::RegisterMap`]. The firmware never models the world: a pump
//! station decides to run its pump, the world decides whether water then flows.
//!
//! Modules:
//! - [`modbus`]: exception codes, the [`modbus::RegisterMap`] trait and range reads and
//!   writes with the protocol's quantity limits. The tables, word orders and 32-/64-bit
//!   register conversions are the contract with the gateway and live in
//!   [`protocol::modbus`].
//! - [`rtu`]: a Modbus RTU slave (frame in, frame out) over any register map.
//! - [`crc`]: Modbus CRC-16.
//! - [`mailbox`]: a signed-command mailbox in holding registers (length word, then the
//!   envelope's bytes), the thin transport a gateway writes signed commands through.
//! - [`prng`]: a small deterministic PRNG, seeded per device, for noise and jitter.
//! - [`nvm`]: what a board keeps in non-volatile memory: the provisioning page and a
//!   two-page journal that survives a reset in the middle of a write.
//! - devices: [`water_meter`], [`pump_station`], [`water_quality`], [`barn_climate`],
//!   [`collar_hub`], [`speaker`]. Each module opens with its register map as a table;
//!   the gateway profiles `gateway/profiles/vt-sim-*.toml` are written from those tables.
//!   The speaker's command log layout is in [`protocol::speaker`].
//!
//! Invariants every device keeps:
//! - No panics on any input: out-of-range sensor values are clamped or flagged, bad
//!   register addresses and values become [`modbus::Exception`]s.
//! - `dt_s` may be anything from milliseconds to a minute; timers accumulate it, so the
//!   same logic runs under a 1 ms RTOS tick and under the simulator's coarse steps.
//! - No `std`, no floating-point intrinsics: math goes through `libm`.
#![no_std]

extern crate alloc;

pub mod barn_climate;
pub mod collar_hub;
pub mod crc;
pub mod mailbox;
pub mod modbus;
pub mod nvm;
pub mod prng;
pub mod pump_station;
pub mod rtu;
pub mod speaker;
pub mod water_meter;
pub mod water_quality;

pub use modbus::{Exception, RegisterMap, Table};
