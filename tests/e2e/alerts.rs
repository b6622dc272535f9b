//! Alerts end to end: the default rule packs on the simulated county (every fault caught
//! and resolved, a normal week quiet), the alert API with tokens and tenants, state that
//! survives a restart of ingest, and the benchmarks behind docs/BENCHMARKS.md.

#[path = "alerts_api.rs"]
mod api;
#[path = "alerts_bench.rs"]
mod bench;
#[path = "alerts_quiet.rs"]
mod quiet;
#[path = "alerts_scenarios.rs"]
mod scenarios;
#[path = "alerts_sim.rs"]
pub(crate) mod sim;
