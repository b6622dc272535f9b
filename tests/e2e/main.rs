//! Workspace end-to-end tests: real broker, real ingest, real gateways, real Modbus.
//!
//! One binary with a module per area (faster to build than one binary per file).

mod alerts;
mod attacks;
mod backfill;
mod bad_input;
mod billing;
mod broadcast;
mod common;
mod console_broadcast;
mod console_ops;
mod county;
mod crash_ingest;
mod dashboard;
mod day_of_faults;
mod gateway_downlink;
mod hardening;
mod influx_peers;
mod influx_sink;
mod influx_write;
mod keys;
mod large_api;
mod large_county;
mod large_dashboard;
mod notify;
mod reports;
mod reports_page;
mod sessions;
mod trust_tls;
