//! Interop tests against peers nobody on this project wrote: pymodbus (PyPI) as Modbus TCP
//! and RTU devices, mosquitto (Debian) as the broker with TLS and per-gateway ACLs, and
//! the gateway built for aarch64 running under qemu. `.ci/setup` installs them all.

mod arm;
mod common;
mod modbus;
mod mqtt;
mod outage;
