//! What the `gateway` and `ingest` binaries do the same way at their edges, so that an
//! operator configures logs and stops both alike, and both reach a broker and keep time
//! alike:
//! - [`log`]: `RUST_LOG` filters and `--log-format json` for a log shipper ([`LogArgs`]).
//! - [`signal`]: SIGTERM (systemd, docker) or Ctrl-C for a clean stop.
//! - [`clock`]: the wall clock as a [`protocol::Timestamp`], replaceable in tests.
//! - [`backoff`]: jittered exponential reconnect delays, so clients spread out.
//! - [`broker`]: `mqtt://` and `mqtts://` broker URLs.
//!
//! Invariant: nothing here pulls a dependency the gateway does not already have; the
//! gateway ships to ARM boards with a size budget (docs/BENCHMARKS.md).

#![forbid(unsafe_code)]

pub mod backoff;
pub mod broker;
pub mod clock;
pub mod log;
pub mod signal;

pub use backoff::{backoff, capped_backoff};
pub use broker::{BrokerUrlError, parse_broker_url, parse_mqtt_url};
pub use clock::{Clock, now, system_clock};
pub use log::{LogArgs, init_logging};
pub use signal::stop_signal;
