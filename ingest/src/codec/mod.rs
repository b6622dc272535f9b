//! Codecs: text formats that more than one side of ingest speaks, apart from the sources
//! that read them and the sinks that write them (as Vector keeps its codecs).
//!
//! - [`line_protocol`]: InfluxDB line protocol, parsed by the line-protocol source and
//!   written by the InfluxDB sink.
//!
//! Invariant: a codec knows nothing of the store, the pipeline or HTTP; it turns bytes into
//! values and back.

pub mod line_protocol;
