//! `vt-bench`: the benchmarks of docs/BENCHMARKS.md ("Store" and "Ingest pipeline").
//!
//! - `dataset county|noisy`: writes a line-protocol data set: the simulated county (the
//!   simulator's physics read through the gateway's device profiles, as a gateway would)
//!   or noisy full-precision floats.
//! - `compare`: feeds one line-protocol file over HTTP, with the same batch size and
//!   connections, to ingest's `/api/v2/write`, VictoriaMetrics and InfluxDB 1.6's `/write`,
//!   one after the other in one run; reports readings/s and bytes per reading on disk.
//! - `query`: a year of one series at 1-minute resolution in each server, then the time of
//!   a query bucketed to about 1,000 points.
//! - `large-demo`: the full-size county (`ingest demo --county large`) as a process:
//!   start-up, memory, CPU, the dashboard API's bytes and times, a red broadcast to 400
//!   speakers (docs/BENCHMARKS.md, "A county the size of the real one").
//! - `pipeline`: batches of 50 readings through ingest's embedded broker (decode, validate,
//!   de-duplicate, store): readings/s and CPU.
//! - `backfill`: two years of 15-minute totals of 1,000 meters through `/api/v2/write`
//!   (gzip, batched, default limits), then a month of the first year billed and checked
//!   against the raw file.
//! - `reports`: the monthly water-balance report of 15,000 household meters from the store.
//!
//! Each server runs as its own process in a fresh directory; ingest is the release binary
//! (`cargo build --release -p ingest`). Long steps print progress. Nothing here asserts a
//! timing: these are measurements, not tests.
#![allow(clippy::print_stdout)]

mod backfill;
mod compare;
mod dataset;
mod large_demo;
mod pipeline;
mod query;
mod readback;
mod reports;
mod servers;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Village telemetry benchmarks.
#[derive(Parser)]
#[command(about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a line-protocol data set.
    Dataset {
        #[command(subcommand)]
        kind: dataset::Kind,
    },
    /// Feed line-protocol files to ingest, VictoriaMetrics and InfluxDB 1.6 and compare.
    Compare(compare::Args),
    /// Time a year-long bucketed query of one series in each server.
    Query(query::Args),
    /// Push batches of 50 readings through ingest's embedded broker and measure.
    Pipeline(pipeline::Args),
    /// Backfill two years of meter history through line protocol and bill an old month.
    Backfill(backfill::Args),
    /// Start the full-size county demo and measure start-up, memory, CPU and the API.
    LargeDemo(large_demo::Args),
    /// Time the monthly county water-balance report from the store.
    Reports(reports::Args),
}

/// Where the release ingest binary is (next to this one).
pub(crate) fn ingest_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("ingest");
    anyhow::ensure!(bin.exists(), "{} is missing: cargo build --release -p ingest", bin.display());
    Ok(bin)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Dataset { kind } => dataset::run(kind),
        Command::Compare(args) => rt.block_on(compare::run(args)),
        Command::Query(args) => rt.block_on(query::run(args)),
        Command::Pipeline(args) => rt.block_on(pipeline::run(args)),
        Command::Backfill(args) => rt.block_on(backfill::run(args)),
        Command::LargeDemo(args) => rt.block_on(large_demo::run(args)),
        Command::Reports(args) => reports::run(args),
    }
}
