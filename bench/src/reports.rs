//! `reports`: the monthly water-balance report of a county of 15,000 household meters,
//! computed from the store (issue 14: goal under 2 s on the 2-core machine).
//!
//! The data: the plan of a 50-village county (15,000 household meters, one inlet meter
//! per village), a month and the day either side of it at one reading every 15 minutes
//! (the DESIGN's rate for a county's meters): each meter's `volume_total` (litres read as
//! m³, from a demand profile with random use), each inlet's `volume_total` (its village's
//! use plus about 10 % leakage) and `flow`. Written with the store's own `append_readings`
//! in time order, then sealed (a past month is sealed in a running server), then the
//! report is computed the way `GET /api/v1/reports/water-balance?period=month` computes it
//! (`ingest::reports::water::report`), cold and again warm.
//!
//! A measurement, not a test: it prints the figures for docs/BENCHMARKS.md.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use ingest::auth::Reader;
use ingest::inventory::Inventory;
use ingest::reports::period::{self, DAY_MS};
use ingest::reports::{ReportsState, water};
use protocol::{Metric, Reading, Timestamp};
use simulator::{CountySpec, Plan};
use store::{Store, StoreConfig};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Household meters in the county (50 villages).
    #[arg(long, default_value_t = 15_000)]
    meters: usize,
    /// The month reported, local time (`YYYY-MM`).
    #[arg(long, default_value = "2026-10")]
    month: String,
    /// Minutes between two readings of a meter.
    #[arg(long, default_value_t = 15)]
    every_min: i64,
    /// Working directory (the store is made in a fresh directory under it).
    #[arg(long, default_value = "/tmp/vt-bench")]
    work: PathBuf,
    /// Times the report is computed (the first is cold).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// A small deterministic generator (xorshift64*): the data set is the same every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Demand relative to the daily mean by local hour (the simulator's profile).
const DEMAND: [f64; 24] = [
    0.3, 0.12, 0.05, 0.05, 0.12, 0.5, 1.3, 2.0, 1.7, 1.2, 1.0, 1.2, 1.4, 1.0, 0.8, 0.8, 0.9, 1.3, 1.8, 2.0, 1.6, 1.1,
    1.0, 0.76,
];

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let span = period::parse(Some("month"), Some(&args.month), 0).map_err(|e| anyhow::anyhow!("{e}"))?;
    let plan = Plan::build(&CountySpec { villages: 50, meters: args.meters, cows: 0, ..CountySpec::demo() });
    let inventory = Arc::new(Inventory::from_file(ingest::demo::inventory_of(&plan)));
    inventory.set_districts(ingest::demo::districts_of(&plan));
    // (inlet, its households) per village.
    let villages: Vec<(String, Vec<String>)> = plan
        .districts
        .iter()
        .map(|d| {
            let households = plan
                .devices()
                .filter(|x| plan.meter_role(&x.id).is_some_and(|(p, inlet)| p.id == d.id && !inlet))
                .map(|x| x.id.clone())
                .collect();
            (d.inlets[0].clone(), households)
        })
        .collect();
    let households: usize = villages.iter().map(|v| v.1.len()).sum();

    std::fs::create_dir_all(&args.work)?;
    let dir = tempfile::Builder::new().prefix("reports-").tempdir_in(&args.work)?;
    let (store, _) = Store::open(StoreConfig::new(dir.path().join("store")))?;
    let store = Arc::new(store);

    // Write the month and a day either side, in time order.
    let step = args.every_min * 60_000;
    let (from, to) = (span.from - DAY_MS, span.to + DAY_MS);
    let mut rng = Rng(0x5EED_2026);
    let mut totals: Vec<Vec<f64>> =
        villages.iter().map(|(_, h)| h.iter().map(|_| 20.0 + rng.next() * 700.0).collect()).collect();
    let mut inlet_totals: Vec<f64> = vec![0.0; villages.len()];
    let daily_m3: Vec<Vec<f64>> =
        villages.iter().map(|(_, h)| h.iter().map(|_| 0.2 + rng.next() * 0.25).collect()).collect();
    let started = Instant::now();
    let mut written = 0usize;
    let mut t = from;
    let volume = Metric::new("volume_total");
    let flow = Metric::new("flow");
    while t < to {
        let hour = ((t + 8 * 3_600_000).rem_euclid(DAY_MS) / 3_600_000) as usize;
        let mut batch = Vec::with_capacity(households + 2 * villages.len());
        for (v, (inlet, ids)) in villages.iter().enumerate() {
            let mut used = 0.0;
            for (m, id) in ids.iter().enumerate() {
                let mean = daily_m3[v][m] * DEMAND[hour] * step as f64 / DAY_MS as f64;
                let u = mean * 2.0 * rng.next();
                used += u;
                totals[v][m] = (totals[v][m] + u) % water::DEFAULT_MODULUS;
                batch.push(Reading::new(
                    id.as_str(),
                    volume.clone(),
                    Timestamp(t),
                    (totals[v][m] * 1000.0).floor() / 1000.0,
                ));
            }
            // Background leakage of about a tenth of the inflow.
            let leak = daily_m3[v].iter().sum::<f64>() / 9.0 * step as f64 / DAY_MS as f64;
            inlet_totals[v] += used + leak;
            let q = (used + leak) * 3_600_000.0 / step as f64;
            batch.push(Reading::new(
                inlet.as_str(),
                volume.clone(),
                Timestamp(t),
                (inlet_totals[v] * 1000.0).floor() / 1000.0,
            ));
            batch.push(Reading::new(inlet.as_str(), flow.clone(), Timestamp(t), q));
        }
        written += batch.len();
        store.append_readings(&batch)?;
        t += step;
        if (t - from) % (5 * DAY_MS) == 0 {
            println!("  written {written} readings up to {}", period::local_date(t));
        }
    }
    store.checkpoint()?;
    let write_s = started.elapsed().as_secs_f64();
    println!(
        "Wrote {written} readings ({households} household meters, {} inlets, every {} min, {} days) in {write_s:.1} s ({:.0}/s), sealed.",
        villages.len(),
        args.every_min,
        (to - from) / DAY_MS,
        written as f64 / write_s
    );

    let state = ReportsState { store: store.clone(), inventory, alerts: None, clock: Arc::new(move || Timestamp(to)) };
    for run in 0..args.runs.max(1) {
        let t0 = Instant::now();
        let report = water::report(&state, &Reader(None), &span, None).map_err(|e| anyhow::anyhow!("{e}"))?;
        let secs = t0.elapsed().as_secs_f64();
        let c = &report.county;
        println!(
            "Run {}: monthly county report {} for {} districts, {} connections in {secs:.3} s: input {:.0} m3, billed {:.0} m3, NRW {:.1} % ({:.0} L/connection/day), coverage {:.1} %, complete {}",
            run + 1,
            span.label,
            report.districts.len(),
            c.connections,
            c.system_input_m3,
            c.billed_metered_m3,
            c.nrw_pct.unwrap_or(f64::NAN),
            c.nrw_l_per_connection_day.unwrap_or(f64::NAN),
            c.completeness.coverage_pct,
            c.completeness.complete,
        );
    }
    let usage = store.usage();
    println!("Store: {} bytes of database, {} series.", usage.database_bytes, usage.series);
    Ok(())
}
