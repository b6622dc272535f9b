//! Rules: what counts as a problem, as TOML rule packs, and their evaluation.
//!
//! - [`config`]: the pack format, validated with file, line and reason; the compiled rules.
//! - [`kinds`]: every rule kind in its own file: its keys, compile step, state, step, tick.
//! - [`eval`]: the evaluator, streaming durable readings and ticks of time to the rules.
//! - [`signal`]: what rules produce (signals about entities, at a severity).
//! - [`counter`]: consumption from totalised volume (rollover, meter replacement, gaps).
//! - [`stats`]: hold timers, running statistics, drift charts, trends.
//!
//! Rules are below alerts: they import nothing of the `alerts` module, which turns their
//! signals into alert lifecycles (log, notifiers, API). The packs shipped with ingest are
//! in `ingest/rules/`, documented in `docs/ALERTS.md`.

pub mod config;
pub mod counter;
pub mod eval;
pub mod kinds;
pub use kinds::signal;
pub mod spec;
pub mod stats;
