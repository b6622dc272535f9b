//! Interop tests against peers nobody on this project wrote: pymodbus (PyPI) as Modbus TCP
//! and RTU devices, mosquitto (Debian) as the broker with TLS and per-gateway ACLs, and
//! the gateway built for aarch64 running under qemu. `.ci/setup` installs them all.
// Helpers outside `#[test]` functions set up peers; a failure there must stop the test
// loudly, which is what unwrap does.
#![allow(clippy::unwrap_used)]

mod arm;
mod broadcast;
mod common;
mod firmware_qemu;
mod keys;
mod modbus;
mod mqtt;
mod outage;
