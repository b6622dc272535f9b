//! Line-protocol data sets: the simulated county, and a noisy one.
//!
//! Both write one line per reading, `<metric>,device=<id> value=<v> <ms>`, the mapping of
//! docs/INFLUXDB.md, in time order (what a county's gateways deliver, interleaved).

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Subcommand;
use gateway::modbus::value::{self, Table};
use gateway::profile::{Point, Profile};
use simulator::{County, CountySpec};

/// 2026-09-01T00:00:00Z: a fixed start, so that a data set is the same every time.
pub(crate) const START_MS: i64 = 1_788_220_800_000;

#[derive(Subcommand)]
pub(crate) enum Kind {
    /// The simulated county: every device polled every `--interval-secs`, values decoded
    /// from the simulator's registers through the gateway's built-in device profiles.
    County {
        /// Days of data.
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Poll interval of every device (seconds).
        #[arg(long, default_value_t = 60)]
        interval_secs: u32,
        /// Villages of the county.
        #[arg(long, default_value_t = 3)]
        villages: usize,
        /// Household meters.
        #[arg(long, default_value_t = 50)]
        meters: usize,
        /// Cows.
        #[arg(long, default_value_t = 100)]
        cows: usize,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Noisy: full-precision random floats around a daily sine (the worst case for a float
    /// codec), one a minute per series, timestamps with a little jitter.
    Noisy {
        /// Days of data.
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Series.
        #[arg(long, default_value_t = 500)]
        series: usize,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
}

pub(crate) fn run(kind: Kind) -> anyhow::Result<()> {
    match kind {
        Kind::County { days, interval_secs, villages, meters, cows, out } => {
            let spec = CountySpec { villages, meters, cows, ..CountySpec::demo() };
            county(spec, days, interval_secs, out)
        }
        Kind::Noisy { days, series, out } => noisy(days, series, out),
    }
}

fn fw_table(t: Table) -> simulator::Table {
    match t {
        Table::Coil => simulator::Table::Coil,
        Table::Discrete => simulator::Table::Discrete,
        Table::Input => simulator::Table::Input,
        Table::Holding => simulator::Table::Holding,
    }
}

/// What one device contributes to a poll: its id and the points to read.
struct Polled {
    id: String,
    points: Vec<Point>,
    /// The device's place in the poll cycle, spreading timestamps over the interval.
    offset_ms: i64,
}

fn county(spec: CountySpec, days: u32, interval_secs: u32, out: PathBuf) -> anyhow::Result<()> {
    let county = County::with_start(spec, simulator_start());
    let (library, errors) = gateway::Library::builtin();
    anyhow::ensure!(errors.is_empty(), "built-in profiles refused: {errors:?}");
    let mut polled = Vec::new();
    for (i, d) in county.plan().devices().enumerate() {
        let profile: Arc<Profile> =
            library.get(&d.model).ok_or_else(|| anyhow::anyhow!("no profile for model {}", d.model))?;
        let offset_ms = (i as i64 * 137) % 5_000;
        polled.push(Polled { id: d.id.clone(), points: profile.points.clone(), offset_ms });
        if let Some(slots) = &profile.slots {
            for (k, child) in d.children.iter().enumerate() {
                polled.push(Polled {
                    id: child.clone(),
                    points: slots.points.clone(),
                    offset_ms: offset_ms + k as i64,
                });
            }
        }
    }
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&out)?);
    let polls = u64::from(days) * 86_400 / u64::from(interval_secs);
    let started = Instant::now();
    let mut lines = 0u64;
    let mut failed = 0u64;
    let mut line = String::with_capacity(128);
    for poll in 0..polls {
        county.advance(Duration::from_secs(u64::from(interval_secs)));
        let tick = county.now().0;
        for d in &polled {
            for p in &d.points {
                let words = match county.read(&d.id, fw_table(p.table), p.address, p.width()) {
                    Ok(w) => w,
                    Err(_) => {
                        failed += 1; // offline (a speaker's link): a failed poll, as on a real bus
                        continue;
                    }
                };
                let v = value::engineering(value::decode(&words, p.ty, p.order), p.scale, p.offset, p.bit);
                // The poll schedule plus the 0-3 ms a Modbus round trip adds.
                let ts = tick + d.offset_ms + ((tick / 1000 + d.offset_ms) % 4);
                line.clear();
                use std::fmt::Write as _;
                let _ = writeln!(line, "{},device={} value={v} {ts}", p.metric.name(), d.id);
                w.write_all(line.as_bytes())?;
                lines += 1;
            }
        }
        if poll % (polls / 20).max(1) == 0 {
            println!(
                "county: {:>3}% ({} lines, {} failed reads, {:.0} s)",
                poll * 100 / polls,
                lines,
                failed,
                started.elapsed().as_secs_f64()
            );
        }
    }
    w.flush()?;
    println!(
        "county: {lines} readings of {} devices over {days} days every {interval_secs} s in {} ({:.0} s)",
        polled.len(),
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn simulator_start() -> protocol::Timestamp {
    protocol::Timestamp(START_MS)
}

/// xorshift64*: a fast deterministic source for the noisy data set.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn noisy(days: u32, series: usize, out: PathBuf) -> anyhow::Result<()> {
    // (metric, typical level, daily swing): inside each metric's plausible range.
    let metrics = [
        ("pressure", 0.3, 0.05),
        ("water_temperature", 12.0, 2.0),
        ("ph", 7.2, 0.2),
        ("tank_level", 3.0, 1.0),
        ("free_chlorine", 0.5, 0.1),
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&out)?);
    let minutes = i64::from(days) * 1440;
    let started = Instant::now();
    let mut line = String::with_capacity(128);
    for m in 0..minutes {
        let tick = START_MS + m * 60_000;
        let phase = (m % 1440) as f64 / 1440.0 * std::f64::consts::TAU;
        for s in 0..series {
            let (metric, level, swing) = metrics[s % metrics.len()];
            let v = level * (1.0 + (s % 7) as f64 * 0.05) + swing * phase.sin() + (rng.next_f64() - 0.5) * swing * 0.4;
            let ts = tick + (s as i64 * 13) % 1000 + (rng.next_f64() * 4.0) as i64;
            line.clear();
            use std::fmt::Write as _;
            let _ = writeln!(line, "{metric},device=noisy-{:04} value={v} {ts}", s / metrics.len());
            w.write_all(line.as_bytes())?;
        }
        if m % (minutes / 20).max(1) == 0 {
            println!("noisy: {:>3}% ({:.0} s)", m * 100 / minutes, started.elapsed().as_secs_f64());
        }
    }
    w.flush()?;
    println!(
        "noisy: {} readings in {} ({:.0} s)",
        minutes * series as i64,
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
