//! `store-bench`: ingest rate, bytes per reading, query and open time of the store.
//!
//! ```text
//! cargo run --release -p store --bin store-bench -- [--days N] [--series N] [--interval-s S]
//!     [--variant smooth|noisy] [--batch N] [--batches-per-call N] [--fsync always|never]
//!     [--writers N] [--checkpoint-points N] [--dir DIR] [--keep] [--emit-line-protocol FILE]
//!     [--wide FIELDS]
//! ```
//!
//! The data: `--series` sensors (five kinds: pressure, water temperature, pH, tank level,
//! free chlorine; five per device), one reading every `--interval-s` seconds for `--days`
//! days, with the timestamp jittered like a real poll loop (0-3 ms late, 1 % of polls up
//! to 250 ms late). `smooth` values are a diurnal sine plus noise of one or two sensor
//! steps, quantised to the sensor's resolution (0.01 or 0.001), as the registers deliver
//! them; `noisy` values are full-precision random floats around the same sine, the worst
//! case for any float codec. Readings go in time order, 50 to a batch (as gateways send
//! them), batches round-robin over 10 gateways, `--batches-per-call` batches per
//! `append_batches` call (one fsync each). The data is generated on the main thread and
//! appended by `--writers` threads sharing the store (gateway `g` on writer `g % writers`),
//! whose concurrent calls share fsyncs.
//!
//! `--emit-line-protocol FILE` writes the same data set as InfluxDB line protocol
//! (`<metric>,device=<id> value=<v> <ns>`) instead of running the store, so that other
//! databases can be loaded with exactly what the store was measured on.
//!
//! `--wide FIELDS` measures one hostile line instead: one device with `FIELDS` distinct
//! custom metrics in one `append_readings` call (what one line-protocol line of that many
//! fields becomes), three times over (new series, then existing ones twice), and prints the
//! time of each call. Each call holds the head's write lock while it inserts.

// The report is the program's output.
#![allow(clippy::print_stdout)]

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use protocol::{Batch, Metric, Reading, Timestamp};
use store::{FsyncPolicy, HOUR_MS, MINUTE_MS, Store, StoreConfig};

/// 2025-01-01T00:00:00Z: the first reading.
const START: i64 = 1_735_689_600_000;
const GATEWAYS: usize = 10;

/// One kind of sensor: metric, mean, diurnal amplitude, noise (std dev), resolution.
const KINDS: [(&str, f64, f64, f64, f64); 5] = [
    ("pressure", 0.35, 0.05, 0.002, 0.001),
    ("water_temperature", 12.0, 1.5, 0.02, 0.01),
    ("ph", 7.2, 0.1, 0.01, 0.01),
    ("tank_level", 3.0, 1.0, 0.005, 0.01),
    ("free_chlorine", 0.5, 0.1, 0.01, 0.01),
];

struct Args {
    days: i64,
    series: usize,
    interval_ms: i64,
    noisy: bool,
    batch: usize,
    batches_per_call: usize,
    writers: usize,
    checkpoint_points: usize,
    fsync: FsyncPolicy,
    dir: Option<PathBuf>,
    keep: bool,
    emit: Option<PathBuf>,
    wide: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        days: 365,
        series: 100,
        interval_ms: 60_000,
        noisy: false,
        batch: 50,
        batches_per_call: 20,
        writers: 1,
        checkpoint_points: StoreConfig::new("").checkpoint_points,
        fsync: FsyncPolicy::Always,
        dir: None,
        keep: false,
        emit: None,
        wide: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<i64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--days" => a.days = num(value()?)?,
            "--series" => a.series = num(value()?)? as usize,
            "--interval-s" => a.interval_ms = num(value()?)? * 1000,
            "--batch" => a.batch = num(value()?)? as usize,
            "--batches-per-call" => a.batches_per_call = num(value()?)? as usize,
            "--writers" => a.writers = num(value()?)? as usize,
            "--checkpoint-points" => a.checkpoint_points = num(value()?)? as usize,
            "--variant" => {
                a.noisy = match value()?.as_str() {
                    "smooth" => false,
                    "noisy" => true,
                    v => return Err(format!("--variant: smooth or noisy, not {v}")),
                }
            }
            "--fsync" => {
                a.fsync = match value()?.as_str() {
                    "always" => FsyncPolicy::Always,
                    "never" => FsyncPolicy::Never,
                    v => return Err(format!("--fsync: always or never, not {v}")),
                }
            }
            "--dir" => a.dir = Some(value()?.into()),
            "--keep" => a.keep = true,
            "--emit-line-protocol" => a.emit = Some(value()?.into()),
            "--wide" => a.wide = Some(num(value()?)? as usize),
            "-h" | "--help" => return Err("see the module docs at the top of store/src/bin/store-bench.rs".into()),
            f => return Err(format!("unknown flag {f}")),
        }
    }
    if a.days <= 0 || a.series == 0 || a.interval_ms <= 0 || a.batch == 0 || a.batches_per_call == 0 {
        return Err("--days, --series, --interval-s, --batch and --batches-per-call must be positive".into());
    }
    if !(1..=GATEWAYS).contains(&a.writers) {
        return Err(format!("--writers must be 1 to {GATEWAYS}"));
    }
    Ok(a)
}

/// xorshift64*: a fast deterministic generator, so every run produces the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Approximately normal (Irwin-Hall of 4), mean 0, std dev 1.
    fn normal(&mut self) -> f64 {
        ((self.unit() + self.unit() + self.unit() + self.unit()) - 2.0) * 3f64.sqrt()
    }
}

/// The data set: a deterministic stream of readings in time order.
struct Generator {
    args_series: usize,
    interval_ms: i64,
    noisy: bool,
    rng: Rng,
    devices: Vec<String>,
    metrics: Vec<Metric>,
    phases: Vec<f64>,
    start: i64,
    step: i64,
    steps: i64,
}

impl Generator {
    fn new(a: &Args) -> Generator {
        Generator::starting(a, START, a.days * 86_400_000 / a.interval_ms)
    }

    /// The same sensors from `start` on, for `steps` intervals.
    fn starting(a: &Args, start: i64, steps: i64) -> Generator {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let devices =
            (0..a.series).map(|k| format!("site-{:04}-sensor-{}", k / KINDS.len(), k % KINDS.len())).collect();
        let metrics = (0..a.series).map(|k| Metric::new(KINDS[k % KINDS.len()].0)).collect();
        let phases = (0..a.series).map(|_| rng.unit() * std::f64::consts::TAU).collect();
        Generator {
            args_series: a.series,
            interval_ms: a.interval_ms,
            noisy: a.noisy,
            rng,
            devices,
            metrics,
            phases,
            start,
            step: 0,
            steps,
        }
    }

    fn total(&self) -> u64 {
        self.steps as u64 * self.args_series as u64
    }

    /// The readings of the next time step (one per series); `false` at the end.
    fn next_step(&mut self, out: &mut Vec<Reading>) -> bool {
        if self.step >= self.steps {
            return false;
        }
        let nominal = self.start + self.step * self.interval_ms;
        let day_frac = (nominal % 86_400_000) as f64 / 86_400_000.0;
        for k in 0..self.args_series {
            let (_, mean, amp, noise, res) = KINDS[k % KINDS.len()];
            let jitter = if self.rng.next().is_multiple_of(100) {
                (self.rng.next() % 250) as i64
            } else {
                (self.rng.next() % 4) as i64
            };
            let wave = mean + amp * (std::f64::consts::TAU * day_frac + self.phases[k]).sin();
            let value = if self.noisy {
                wave + (self.rng.unit() - 0.5) * amp
            } else {
                ((wave + noise * self.rng.normal()) / res).round() * res
            };
            out.push(Reading::new(
                self.devices[k].as_str(),
                self.metrics[k].clone(),
                Timestamp(nominal + jitter),
                value,
            ));
        }
        self.step += 1;
        true
    }
}

/// `--wide`: one device, `fields` metrics, one call; see the module doc.
fn wide_line(a: &Args, fields: usize) -> Result<(), Box<dyn std::error::Error>> {
    let dir = a.dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("store-bench-{}", std::process::id())));
    if dir.exists() {
        return Err(format!("{} exists; give an empty --dir", dir.display()).into());
    }
    let mut config = StoreConfig::new(&dir);
    config.fsync = a.fsync;
    config.background_checkpoints = false;
    let (store, _) = Store::open(config)?;
    let metrics: Vec<Metric> = (0..fields).map(|i| Metric::new(&format!("field_{i}"))).collect();
    println!("store-bench --wide: one device, {fields} fields in one append_readings call, fsync {:?}", a.fsync);
    for (round, what) in ["new series", "existing series", "existing series"].iter().enumerate() {
        let ts = Timestamp(START + round as i64 * 1000);
        let readings: Vec<Reading> =
            metrics.iter().enumerate().map(|(i, m)| Reading::new("wide-device", m.clone(), ts, i as f64)).collect();
        let t = Instant::now();
        store.append_readings(&readings)?;
        let took = t.elapsed();
        println!(
            "  call {} ({what:<15}): {:>10.2} ms  ({:.0} readings/s)",
            round + 1,
            ms(took),
            fields as f64 / took.as_secs_f64()
        );
    }
    drop(store);
    if !a.keep {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}

fn emit_line_protocol(a: &Args, path: &PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    let mut g = Generator::new(a);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut step = Vec::new();
    let mut n = 0u64;
    while g.next_step(&mut step) {
        for r in step.drain(..) {
            writeln!(out, "{},device={} value={} {}", r.metric, r.device, r.value, r.ts.0 * 1_000_000)?;
            n += 1;
        }
    }
    out.flush()?;
    eprintln!("wrote {n} readings as line protocol (ns timestamps) to {}", path.display());
    Ok(())
}

/// Bytes the files under `dir` take on disk (allocated blocks, as `du` counts them: redb
/// grows its file by doubling, and the part not yet written is a hole that takes no
/// space) and their apparent length.
fn dir_bytes(dir: &std::path::Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else { return (0, 0) };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => (m.blocks() * 512, m.len()),
            Err(_) => (0, 0),
        })
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = parse_args().map_err(|e| format!("store-bench: {e}"))?;
    if let Some(path) = &a.emit {
        return emit_line_protocol(&a, path);
    }
    if let Some(fields) = a.wide {
        return wide_line(&a, fields);
    }
    let dir = a.dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("store-bench-{}", std::process::id())));
    if dir.exists() {
        return Err(format!("{} exists; give an empty --dir", dir.display()).into());
    }
    let mut config = StoreConfig::new(&dir);
    config.fsync = a.fsync;
    config.checkpoint_points = a.checkpoint_points;
    let mut g = Generator::new(&a);
    let total = g.total();
    println!(
        "store-bench: {} series x {} days at {} s ({} readings), variant {}, {} readings/batch, {} batches/call, {} writer(s), fsync {:?}",
        a.series,
        a.days,
        a.interval_ms / 1000,
        total,
        if a.noisy { "noisy" } else { "smooth" },
        a.batch,
        a.batches_per_call,
        a.writers,
        a.fsync
    );

    let (store, _) = Store::open(config.clone())?;
    let mut seqs = [0u64; GATEWAYS];
    let mut pending: Vec<Reading> = Vec::new();
    // One call buffer and one channel per writer thread; gateway `gw` always goes to
    // writer `gw % writers`, so each gateway's batches stay in seq order.
    let mut calls: Vec<Vec<Batch>> = vec![Vec::new(); a.writers];
    let mut written = 0u64;
    let mut next_report = total / 20;
    let wall = Instant::now();
    let in_append = std::thread::scope(|scope| -> Result<Duration, Box<dyn std::error::Error>> {
        let mut senders = Vec::new();
        let mut handles = Vec::new();
        for _ in 0..a.writers {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Batch>>(4);
            senders.push(tx);
            let store = &store;
            handles.push(scope.spawn(move || -> Result<Duration, store::StoreError> {
                let mut busy = Duration::ZERO;
                for call in rx {
                    let t = Instant::now();
                    store.append_batches(&call)?;
                    busy += t.elapsed();
                }
                Ok(busy)
            }));
        }
        let mut gw = 0usize;
        loop {
            let more = g.next_step(&mut pending);
            while pending.len() >= a.batch || (!more && !pending.is_empty()) {
                let take = pending.len().min(a.batch);
                let readings: Vec<Reading> = pending.drain(..take).collect();
                seqs[gw] += 1;
                let w = gw % a.writers;
                calls[w].push(Batch { gateway: format!("gw-{gw}"), seq: seqs[gw], readings });
                gw = (gw + 1) % GATEWAYS;
                written += take as u64;
                if calls[w].len() >= a.batches_per_call {
                    senders[w].send(std::mem::take(&mut calls[w]))?;
                }
            }
            if written >= next_report {
                eprintln!(
                    "  {:>5.1} %  {} readings, {:.0} readings/s",
                    written as f64 * 100.0 / total as f64,
                    written,
                    written as f64 / wall.elapsed().as_secs_f64()
                );
                next_report += total / 20;
            }
            if !more {
                break;
            }
        }
        for (w, call) in calls.iter_mut().enumerate() {
            if !call.is_empty() {
                senders[w].send(std::mem::take(call))?;
            }
        }
        drop(senders);
        let mut busy = Duration::ZERO;
        for h in handles {
            busy += h.join().map_err(|_| "a writer thread panicked")??;
        }
        Ok(busy)
    })?;
    let ingest_wall = wall.elapsed();
    let t = Instant::now();
    store.checkpoint()?;
    let final_seal = t.elapsed();
    let all_wall = wall.elapsed();
    let blocks = store.block_bytes()?;
    let running_bytes = dir_bytes(&dir);
    let t = Instant::now();
    store.close()?;
    let close_time = t.elapsed();
    let closed_bytes = dir_bytes(&dir);

    let t = Instant::now();
    let (store, report) = Store::open(config.clone())?;
    let open_time = t.elapsed();

    // One series over the whole range, bucketed to about 1,000 points, from each tier.
    let from = START;
    let to = START + a.days * 86_400_000;
    let span = to - from;
    let hour_step = (span / 1000 + HOUR_MS - 1) / HOUR_MS * HOUR_MS;
    let minute_step = {
        let m = (span / 1000 + MINUTE_MS - 1) / MINUTE_MS * MINUTE_MS;
        if m % HOUR_MS == 0 { m + MINUTE_MS } else { m }
    };
    let raw_step = minute_step + 1;
    let device = "site-0000-sensor-1";
    let metric = KINDS[1].0;
    let query = |step: i64, from: i64| -> Result<(Duration, Duration, usize), store::StoreError> {
        let mut times = Vec::new();
        let mut buckets = 0;
        for _ in 0..7 {
            let t = Instant::now();
            buckets = store.range_bucketed(device, metric, Timestamp(from), Timestamp(to), step)?.len();
            times.push(t.elapsed());
        }
        Ok((times[0], median(times), buckets))
    };
    let (h_first, h_med, h_n) = query(hour_step, from)?;
    let (m_first, m_med, m_n) = query(minute_step, from)?;
    let (r_first, r_med, r_n) = query(raw_step, from + 1)?;

    // Open with a full log: append just under a checkpoint's worth of readings after the
    // data set, drop the store without closing it (as a crash would), and reopen.
    let mut g = Generator::starting(&a, START + a.days * 86_400_000, i64::MAX);
    let mut tail = Vec::new();
    let mut replayed = 0u64;
    while replayed + a.series as u64 + a.batch as u64 * a.batches_per_call as u64 + 1 < config.checkpoint_points as u64
    {
        while tail.len() < a.batch * a.batches_per_call {
            g.next_step(&mut tail);
        }
        let n = a.batch * a.batches_per_call;
        // Line-protocol style appends: one record per call, no gateway seqs.
        let readings: Vec<Reading> = tail.drain(..n).collect();
        store.append_readings(&readings)?;
        replayed += n as u64;
    }
    drop(store);
    let t = Instant::now();
    let (store, replay_report) = Store::open(config.clone())?;
    let replay_open = t.elapsed();
    drop(store);

    let per = |b: u64| b as f64 / total as f64;
    println!("ingest ({total} readings):");
    println!(
        "  ingest rate          {:>12.0} readings/s  (wall {:.2} s until the last append returned; durable, sealing in the background)",
        total as f64 / ingest_wall.as_secs_f64(),
        ingest_wall.as_secs_f64()
    );
    println!(
        "  incl. final seal     {:>12.0} readings/s  (wall {:.2} s incl. the final checkpoint of {:.2} s)",
        total as f64 / all_wall.as_secs_f64(),
        all_wall.as_secs_f64(),
        final_seal.as_secs_f64()
    );
    println!(
        "  time in append_batches per writer {:.2} s ({} writer(s), {} calls of {} readings)",
        in_append.as_secs_f64() / a.writers as f64,
        a.writers,
        total.div_ceil((a.batch * a.batches_per_call) as u64),
        a.batch * a.batches_per_call
    );
    println!("disk after sealing (bytes per reading):");
    println!("  raw blocks           {:>12.3}  ({} bytes)", per(blocks.raw), blocks.raw);
    println!("  1-minute roll-ups    {:>12.3}  ({} bytes)", per(blocks.minute), blocks.minute);
    println!("  1-hour roll-ups      {:>12.3}  ({} bytes)", per(blocks.hour), blocks.hour);
    println!(
        "  store dir, running   {:>12.3}  ({} bytes allocated; files {} bytes long: database incl. pages free for reuse, and the log)",
        per(running_bytes.0),
        running_bytes.0,
        running_bytes.1
    );
    println!(
        "  store dir, closed    {:>12.3}  ({} bytes allocated, {} long, after Store::close compacted it in {:.2} s)",
        per(closed_bytes.0),
        closed_bytes.0,
        closed_bytes.1,
        close_time.as_secs_f64()
    );
    println!("query: one series, {} days, bucketed (first run / median of 7):", a.days);
    println!(
        "  hour roll-ups   step {:>7} min: {:>4} buckets  {:>8.2} ms / {:>8.2} ms",
        hour_step / MINUTE_MS,
        h_n,
        ms(h_first),
        ms(h_med)
    );
    println!(
        "  minute roll-ups step {:>7} min: {:>4} buckets  {:>8.2} ms / {:>8.2} ms",
        minute_step / MINUTE_MS,
        m_n,
        ms(m_first),
        ms(m_med)
    );
    println!(
        "  raw points      step {:>7} ms : {:>4} buckets  {:>8.2} ms / {:>8.2} ms",
        raw_step,
        r_n,
        ms(r_first),
        ms(r_med)
    );
    println!(
        "open: {:.2} ms after close ({} series, {} log records replayed)",
        ms(open_time),
        report.series,
        report.records
    );
    println!(
        "open: {:.2} ms with a full log ({} readings in {} records replayed, not closed)",
        ms(replay_open),
        replayed,
        replay_report.records
    );
    if !a.keep {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
