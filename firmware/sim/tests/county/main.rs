//! End-to-end tests of the simulated county: real tokio-modbus clients against its real
//! servers on port 0, and accelerated runs with `advance()`.
//!
//! One test binary with one module per area (faster to build than one binary each).

mod common;
mod faults;
mod profiles;
mod serving;
mod speakers;
mod time;
