//! Sources: where readings come into ingest. Each hands them to the one [`Pipeline`] and
//! answers its sender only once they are durable.
//!
//! - [`mqtt`]: what gateways publish. Telemetry goes through the pipeline's group commit;
//!   gateway status goes to the inventory and command acks to the command ack stream, on
//!   the source's own path (they are never stored).
//! - [`line_protocol`]: `POST /api/v2/write`, InfluxDB line protocol from Telegraf and
//!   InfluxDB clients, decoded by [`crate::codec::line_protocol`].
//!
//! Invariant: a source never writes to the store or a sink itself; the pipeline's
//! [`Pipeline::commit`] and [`Pipeline::write_readings`] are the only ways in, so counting,
//! last-seen times and sinks are the same for every source.
//!
//! [`Pipeline`]: crate::pipeline::Pipeline
//! [`Pipeline::commit`]: crate::pipeline::Pipeline::commit
//! [`Pipeline::write_readings`]: crate::pipeline::Pipeline::write_readings

pub mod line_protocol;
pub mod mqtt;
