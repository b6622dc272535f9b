//! A simulated county for village telemetry: world physics feeding the firmware's
//! devices, served over real Modbus TCP, with faults that can be injected at run time.
//!
//! It is what `ingest demo` runs, what end-to-end tests drive and what benchmarks load
//! the system with. The device logic is the `firmware` crate's, the same code that runs on
//! the microcontrollers; this crate adds only the world around it.
//!
//! - [`CountySpec`] says how big ([`CountySpec::large`]: the pilot county at full size,
//!   villages along valleys in townships); [`Plan`] lays the county out (sites, gateways, devices,
//!   unit ids, polling intervals, coordinates); [`County`] runs it.
//! - Physics: `water` (households, tank, pump, leakage, pressure, chlorine transport),
//!   `dairy` (barn climate, cows), `speakers` (link outages, routine programme); each
//!   module cites where its numbers come from.
//! - Faults: [`Fault`], injected and cleared by device id; speakers also have a
//!   [`SpeakerCondition`] (slow, amplifier fault) drawn from [`SpeakerMix`].
//! - Speakers run the firmware terminal with its signed-command mailbox; provision them
//!   with ingest's command key ([`County::provision_speakers`]) to let broadcasts in.
//! - Time: sim time follows wall time at `speed` while serving, and
//!   [`County::advance`] steps it by hand for accelerated tests.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use simulator::{County, CountySpec, Fault};
//! let county = County::new(CountySpec::demo());
//! let servers = county.serve().await?; // [("gw-waterworks", 127.0.0.1:x), ...]
//! county.inject("waterworks-pump-1", Fault::PumpTrip).ok();
//! # Ok(()) }
//! ```

pub mod clock;
mod county;
mod dairy;
mod fault;
mod large;
mod plan;
mod server;
mod speakers;
mod spec;
mod water;
mod world;

pub use county::{County, TICK};
pub use fault::{Fault, SimError, UnknownFault};
pub use firmware::modbus::{Exception, Table};
pub use plan::{
    COWS_PER_HUB, DevicePlan, DmaPlan, GatewayPlan, MAX_UNITS_PER_BUS, Plan, SiteKind, SitePlan, VILLAGES_PER_DISTRICT,
    models,
};
pub use speakers::{SLOW_DELAY_MS, SpeakerCondition, speaker_seed};
pub use spec::{CountyLayout, CountySpec, SpeakerMix};
pub use water::DmaVolumes;
