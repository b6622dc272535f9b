//! The central service of village telemetry.
//!
//! MQTT in, decode, validate, de-duplicate, store, HTTP API and dashboard. Read top-down:
//! - [`config`]: ingest's TOML config.
//! - [`inventory`]: sites, gateways and devices, and who owns what.
//! - [`broker`]: the embedded MQTT broker, its TLS listener and the county's CA.
//! - [`keyring`]: the keys every message is checked with; [`enrol`]: adding, rotating and
//!   revoking gateway keys through the API.
//! - [`sources`] -> [`pipeline`] -> [`sinks`]: the spine. Two sources, MQTT (groups of
//!   messages in, acks out only when durable) and line protocol (`/api/v2/write`), hand
//!   readings to the pipeline (decode -> validate -> de-duplicate -> store), which feeds the
//!   sinks once they are durable. [`codec`] holds the line protocol both ends speak.
//! - [`rules`] and [`alerts`]: rule packs evaluated on durable readings; alert lifecycle,
//!   silences, notifiers and their API.
//! - [`api`]: the HTTP API (`/api/v1`), `/metrics` and the dashboard; it composes the
//!   routers of the domains below.
//! - [`auth`]: API tokens, sessions as callers, roles and tenant scopes; [`error`]: the error
//!   every handler answers.
//! - [`people`]: users (Argon2id), sign-in, sessions, lockout, and the people's audit log.
//! - [`reports`]: the water balance, supply, quality and herd reports a bureau and a dairy
//!   file (`/api/v1/reports/...`), read from the store's roll-ups.
//! - [`broadcast`]: emergency broadcasts: CAP 1.2, approvals, the dispatcher of signed
//!   playback commands, the hash-chained audit log, live progress.
//! - [`command`]: signed commands to gateways, their acks, and the audit log.
//! - [`service`]: starting and stopping all of it.
//! - At the bottom, used by all: [`time`] (the clock, RFC 3339), [`reason`] (why input is
//!   refused), [`metrics`].
//!
//! No module imports another in a loop: `ingest/tests/module_graph.rs` checks it and keeps
//! the picture in docs/ARCHITECTURE.md.
//! - `demo` (cargo feature `demo`, on by default): a simulated county, its gateways and
//!   ingest in one process.

pub mod alerts;
pub mod api;
pub mod auth;
pub mod broadcast;
pub mod broker;
pub mod codec;
pub mod command;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod enrol;
pub mod error;
pub mod inventory;
pub mod keyring;
pub mod metrics;
pub mod people;
pub mod pipeline;
pub mod reason;
pub mod reports;
pub mod rules;
pub mod service;
pub mod sinks;
pub mod sources;
pub mod tasks;
pub mod time;
