//! The central service of village telemetry.
//!
//! MQTT in, decode, validate, de-duplicate, store, HTTP API and dashboard. Read top-down:
//! - [`config`]: ingest's TOML config.
//! - [`inventory`]: sites, gateways and devices, and who owns what.
//! - [`broker`]: the embedded MQTT broker.
//! - [`mqtt`]: the MQTT source: groups of messages in, acks out only when durable.
//! - [`pipeline`]: decode -> validate -> de-duplicate -> store -> sinks.
//! - [`rules`] and [`alerts`]: rule packs evaluated on durable readings; alert lifecycle,
//!   silences, notifiers and their API.
//! - [`sinks`]: destinations besides the store (InfluxDB), fed with durable readings.
//! - [`api`]: the HTTP API (`/api/v1`), line protocol in (`/api/v2/write`), `/metrics`, and the dashboard.
//! - [`auth`]: API tokens, roles and tenant scopes.
//! - [`broadcast`]: emergency broadcasts: CAP 1.2, approvals, the dispatcher of signed
//!   playback commands, the hash-chained audit log, live progress.
//! - [`command`]: signed commands to gateways, their acks, and the audit log.
//! - [`service`]: starting and stopping all of it.
//! - `demo` (cargo feature `demo`, on by default): a simulated county, its gateways and
//!   ingest in one process.

pub mod alerts;
pub mod api;
pub mod auth;
pub mod broadcast;
pub mod broker;
pub mod command;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod inventory;
pub mod metrics;
pub mod mqtt;
pub mod pipeline;
pub mod rules;
pub mod service;
pub mod sinks;
