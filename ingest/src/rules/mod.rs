//! Rules: what counts as a problem, as TOML rule packs, and their evaluation.
//!
//! - [`config`]: the pack format, validated with file, line and reason; the compiled rules.
//! - [`eval`]: every rule kind, streaming over durable readings and ticking with time.
//! - [`counter`]: consumption from totalised volume (rollover, meter replacement, gaps).
//! - [`stats`]: hold timers, running statistics, drift charts, trends.
//!
//! Alerts (lifecycle, log, notifiers, API) are in [`crate::alerts`]; the packs shipped
//! with ingest are in `ingest/rules/`, documented in `docs/ALERTS.md`.

pub mod config;
pub mod counter;
pub mod eval;
pub mod stats;
