//! `backfill`: history from an old system at full size (issue 14, item 8): two years of
//! 15-minute meter totals for 1,000 meters (70 M readings) written to the release ingest
//! through `/api/v2/write`, gzip, in batches, with ingest's default limits (no widened
//! `max_age_days`: line protocol takes history back to the water family's retention). Then
//! the billing of a month in the first year from `/api/v1/reports/billing?period=month`
//! (`water::meter_use` per meter, the water balance's own figure), checked against
//! the same figures computed here from the raw file (read back from disk, not from the
//! generator), and timed.
//!
//! `tests/e2e/backfill.rs` runs the same shape with a dozen meters in `cargo test`; the
//! data (`total`) and the independent bill are the same definitions as there.

use std::collections::HashMap;
use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MIN: i64 = 60_000;
const QUARTER: i64 = 15 * MIN;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;
const CST: i64 = 8 * HOUR;
const MODULUS: f64 = 4_294_967.296;
const TOKEN: &str = "bench-backfill-token-0123456789";

/// Arguments of `vt-bench backfill`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Household meters.
    #[arg(long, default_value_t = 1000)]
    meters: usize,
    /// Days of history (water keeps raw points 730 days).
    #[arg(long, default_value_t = 729)]
    days: i64,
    /// Lines per request (at most limits.write_max_readings, 100,000).
    #[arg(long, default_value_t = 50_000)]
    batch: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Work directory (kept); a temporary one by default.
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// A meter's total at quarter `q` (see tests/e2e/backfill.rs: the same definition).
fn total(meter: usize, q: i64, month_q: i64) -> Option<f64> {
    let rate = 0.002 + 0.0007 * (meter % 7) as f64;
    let day_part = [0.2, 0.1, 0.1, 0.3, 1.4, 1.6, 1.2, 0.9][((q / 12) % 8) as usize];
    let used = |q: i64| rate * q as f64 + rate * day_part * 0.5;
    let swap = month_q + 10 * 96 + 37;
    match meter {
        1 if q >= swap => Some(used(q) - used(swap) + 0.001),
        2 => {
            let v = MODULUS - used(month_q + 5 * 96) + used(q);
            Some(if v >= MODULUS { v - MODULUS } else { v })
        }
        3 if (month_q + 20 * 96..month_q + 22 * 96).contains(&q) => None,
        _ => Some(100.0 * meter as f64 + used(q)),
    }
}

/// Local (UTC+8) midnight of the first of the month holding `ts`, and of the next month.
fn month_of(ts: i64) -> (i64, i64) {
    let days = (ts + CST).div_euclid(DAY);
    let (y, m, d) = civil(days);
    let next = if m == 12 { days_from_civil(y + 1, 1) } else { days_from_civil(y, m + 1) };
    ((days - (d - 1)) * DAY - CST, next * DAY - CST)
}

fn civil(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + (153 * mp + 2) / 5;
    era * 146_097 + doe - 719_468
}

struct Ingest {
    child: Child,
    base: String,
}

impl Drop for Ingest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_ingest(dir: &std::path::Path, meters: usize) -> anyhow::Result<Ingest> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mqtt = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut inv = String::from(
        "[[sites]]\nid = \"laocun\"\nname = \"Laocun\"\nkind = \"village\"\ntenant = \"county\"\nlat = 34.7\nlon = 113.6\n\n\
         [[gateways]]\nid = \"gw-old\"\ntenant = \"county\"\nsite = \"laocun\"\n\n",
    );
    for m in 0..meters {
        inv.push_str(&format!(
            "[[devices]]\nid = \"laocun-meter-{m:04}\"\nkind = \"water_meter\"\nsite = \"laocun\"\ngateway = \"gw-old\"\n\n"
        ));
    }
    std::fs::write(dir.join("inventory.toml"), inv)?;
    // Default limits and retention: what a bureau's ingest has.
    std::fs::write(
        dir.join("ingest.toml"),
        format!(
            "data_dir = \"data\"\ninventory = \"inventory.toml\"\nhttp = \"127.0.0.1:{port}\"\n\
             [broker]\ntype = \"embedded\"\nlisten = \"127.0.0.1:{mqtt}\"\n\
             [limits]\nmax_write_body_bytes = 67108864\n\
             [[tokens]]\ntoken = \"{TOKEN}\"\nrole = \"operator\"\ntenants = [\"county\"]\n"
        ),
    )?;
    let log = std::fs::File::create(dir.join("ingest.log"))?;
    let child = Command::new(crate::ingest_binary()?)
        .args(["run", "--config"])
        .arg(dir.join("ingest.toml"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let ingest = Ingest { child, base: format!("http://127.0.0.1:{port}") };
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if client.get(format!("{}/api/v1/health", ingest.base)).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(ingest);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("ingest did not answer within 30 s (see {}/ingest.log)", dir.display())
}

/// What the raw file says about one meter's month.
#[derive(Default)]
struct Expected {
    start: Option<(i64, f64)>,
    points: Vec<(i64, f64)>,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let ingest = start_ingest(&dir, args.meters).await?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    // Up to half a day ago: the oldest reading stays within the 730-day retention.
    let end = (now - DAY / 2).div_euclid(QUARTER) * QUARTER;
    let start = end - args.days * DAY;
    let (from, to) = month_of(month_of(month_of(start).1).1 + DAY);
    let month_q = (from - start) / QUARTER;
    let quarters = (end - start) / QUARTER;
    let readings = args.meters as i64 * quarters;
    println!("backfill: {} meters x {quarters} quarter hours = {readings} readings", args.meters);

    // Generate (gzip batches, and the raw file) on a thread; send from here.
    let raw = dir.join("history.lp.gz");
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(usize, Vec<u8>)>(8);
    let (meters, batch, raw_path) = (args.meters, args.batch, raw.clone());
    let generator = std::thread::spawn(move || -> anyhow::Result<()> {
        let mut file = flate2::write::GzEncoder::new(std::fs::File::create(&raw_path)?, flate2::Compression::fast());
        let mut body = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut n = 0usize;
        let mut line = String::new();
        for w in (0..quarters).step_by(7 * 96) {
            for m in 0..meters {
                for q in w..(w + 7 * 96).min(quarters) {
                    let Some(v) = total(m, q, month_q) else { continue };
                    line.clear();
                    std::fmt::Write::write_fmt(
                        &mut line,
                        format_args!("volume_total,device=laocun-meter-{m:04} value={v} {}\n", start + q * QUARTER),
                    )?;
                    file.write_all(line.as_bytes())?;
                    body.write_all(line.as_bytes())?;
                    n += 1;
                    if n == batch {
                        let full = std::mem::replace(
                            &mut body,
                            flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()),
                        );
                        tx.blocking_send((n, full.finish()?))?;
                        n = 0;
                    }
                }
            }
        }
        if n > 0 {
            tx.blocking_send((n, body.finish()?))?;
        }
        file.finish()?;
        Ok(())
    });
    let client = reqwest::Client::new();
    let url = format!("{}/api/v2/write?org=county&precision=ms", ingest.base);
    let started = Instant::now();
    let mut in_flight = tokio::task::JoinSet::new();
    let (mut sent, mut last_report) = (0usize, 0usize);
    while let Some((n, body)) = rx.recv().await {
        while in_flight.len() >= args.connections {
            if let Some(done) = in_flight.join_next().await {
                done??;
            }
        }
        let (client, url) = (client.clone(), url.clone());
        in_flight.spawn(async move {
            let resp = client
                .post(url)
                .header("Authorization", format!("Token {TOKEN}"))
                .header("Content-Encoding", "gzip")
                .body(body)
                .send()
                .await?;
            anyhow::ensure!(resp.status() == 204, "write: {} {}", resp.status(), resp.text().await.unwrap_or_default());
            Ok(())
        });
        sent += n;
        if sent - last_report >= readings as usize / 20 {
            last_report = sent;
            let secs = started.elapsed().as_secs_f64();
            println!(
                "backfill: {:>3}% {sent} readings, {:.0} readings/s",
                sent * 100 / readings as usize,
                sent as f64 / secs
            );
        }
    }
    while let Some(r) = in_flight.join_next().await {
        r??;
    }
    generator.join().map_err(|_| anyhow::anyhow!("the generator panicked"))??;
    let secs = started.elapsed().as_secs_f64();
    println!("backfill: {sent} readings written in {secs:.1} s: {:.0} readings/s", sent as f64 / secs);

    let (y, m, _) = civil((from + CST).div_euclid(DAY));
    let month = format!("{y:04}-{m:02}");
    let started = Instant::now();
    let bill: serde_json::Value = client
        .get(format!("{}/api/v1/reports/billing?period=month&date={month}", ingest.base))
        .header("Authorization", format!("Token {TOKEN}"))
        .send()
        .await?
        .json()
        .await?;
    let bill_secs = started.elapsed().as_secs_f64();

    // The raw file on its own: the total at each boundary (a whole hour) is the newest
    // reading before it (docs/REPORTS.md), the use the counter's steps between them.
    let started = Instant::now();
    let mut by_meter: HashMap<String, Expected> = HashMap::new();
    let reader = std::io::BufReader::new(flate2::read::GzDecoder::new(std::fs::File::open(&raw)?));
    for line in reader.lines() {
        let line = line?;
        let mut parts = line.split(' ');
        let (Some(head), Some(field), Some(ts)) = (parts.next(), parts.next(), parts.next()) else {
            anyhow::bail!("bad line {line}")
        };
        let device = head.split("device=").nth(1).unwrap_or_default();
        let v: f64 = field.trim_start_matches("value=").parse()?;
        let t: i64 = ts.parse()?;
        let e = by_meter.entry(device.to_string()).or_default();
        if t < from && e.start.is_none_or(|s| s.0 < t) {
            e.start = Some((t, v));
        } else if t >= from && t < to {
            e.points.push((t, v));
        }
    }
    let mut checked = 0;
    let mut total_used = 0.0;
    for row in bill["meters"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let meter = row["meter"].as_str().unwrap_or_default();
        let e = by_meter.get_mut(meter).ok_or_else(|| anyhow::anyhow!("{meter} is not in the raw file"))?;
        e.points.sort_by_key(|p| p.0);
        let s = e.start.ok_or_else(|| anyhow::anyhow!("{meter}: no reading before the month"))?;
        let (mut used, mut resets, mut wraps, mut prev) = (0.0, 0, 0, s.1);
        for &(_, v) in &e.points {
            if v >= prev {
                used += v - prev;
            } else if prev > 0.9 * MODULUS && v < 0.1 * MODULUS {
                used += v + MODULUS - prev;
                wraps += 1;
            } else {
                used += v.max(0.0);
                resets += 1;
            }
            prev = v;
        }
        let got = row["consumption_m3"].as_f64().unwrap_or(f64::NAN);
        anyhow::ensure!((got - used).abs() < 1e-3, "{meter}: billed {got}, the raw file says {used}");
        anyhow::ensure!(
            row["replaced"] == (resets > 0) && row["rolled_over"] == (wraps > 0),
            "{meter}: events {row} vs {resets} replaced, {wraps} rolled over"
        );
        total_used += used;
        checked += 1;
    }
    anyhow::ensure!(checked == args.meters, "billed {checked} meters of {}", args.meters);
    println!(
        "backfill: billing of {month} for {checked} meters in {bill_secs:.2} s; \
         equal to the raw file's ({total_used:.1} m³, read back in {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    let du = std::fs::metadata(dir.join("data/store/store.redb")).map(|m| m.len()).unwrap_or(0);
    println!("backfill: store.redb {:.1} MB ({:.2} bytes/reading)", du as f64 / 1e6, du as f64 / sent as f64);
    Ok(())
}
