//! `vt-bench large-demo`: the full-size county (`ingest demo --county large`: ingest, the
//! embedded broker, the simulator and 155 gateways in one process) started as a release
//! process, measured from outside as an operator's browser and `top` would see it:
//!
//! - start-up: until `/api/v1/health` answers, and until every site reports (no site of
//!   `/api/v1/summary` without data);
//! - memory (RSS and its peak, from /proc) and steady-state CPU over `--steady-secs`;
//! - the dashboard's API first load (summary, sites, active alerts, broadcasts) in bytes on
//!   the wire (gzip) and time, against the old first load (sites, devices, every latest
//!   value); a refresh with nothing changed (`If-None-Match`; `latest?since=`), the live
//!   stream's bytes per minute, and a refresh after one alert changed (a pump trip);
//! - a red broadcast to all 400 speakers: approval to 50/90/99 % of the speakers that
//!   end up playing.
//!
//! Prints the figures as Markdown rows for docs/BENCHMARKS.md.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};

/// Options.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Seconds of steady state to measure CPU and the live stream over.
    #[arg(long, default_value_t = 60)]
    steady_secs: u64,
    /// Longest wait for every site to report (s).
    #[arg(long, default_value_t = 300)]
    start_timeout_secs: u64,
}

const ADMIN: &str = "large-demo-bench-admin-token-0123456789";

/// The demo process; killed (SIGTERM, then SIGKILL) when dropped.
struct Demo {
    child: Child,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_status(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// CPU ticks (user + system) of a process so far.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): utime is field 14, stime 15.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = proc_meminfo("MemTotal:") / 1024 / 1024;
    format!("{cores} cores ({cpu}), {mem} GB RAM")
}

fn proc_meminfo(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// One GET as the dashboard makes it (gzip accepted): status, bytes on the wire, ETag, body.
struct Fetched {
    status: u16,
    bytes: usize,
    etag: Option<String>,
    body: Vec<u8>,
}

async fn fetch(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    gzip: bool,
    if_none_match: Option<&str>,
) -> anyhow::Result<Fetched> {
    let mut req = client.get(format!("{base}{path}")).header("authorization", format!("Token {ADMIN}"));
    if gzip {
        req = req.header("accept-encoding", "gzip");
    }
    if let Some(tag) = if_none_match {
        req = req.header("if-none-match", tag);
    }
    let resp = req.send().await.with_context(|| format!("GET {path}"))?;
    let status = resp.status().as_u16();
    let etag = resp.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_string);
    let zipped = resp.headers().get("content-encoding").is_some_and(|v| v == "gzip");
    let raw = resp.bytes().await?.to_vec();
    let body = if zipped {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&raw[..]), &mut out)?;
        out
    } else {
        raw.clone()
    };
    Ok(Fetched { status, bytes: raw.len(), etag, body })
}

fn json_of(f: &Fetched) -> Value {
    serde_json::from_slice(&f.body).unwrap_or(Value::Null)
}

/// Bytes and time of a set of GETs made one after the other (as a page's first load).
async fn load(
    client: &reqwest::Client,
    base: &str,
    paths: &[&str],
    gzip: bool,
) -> anyhow::Result<(usize, usize, f64, Vec<Fetched>)> {
    let mut wire = 0;
    let mut raw = 0;
    let t = Instant::now();
    let mut out = Vec::new();
    for p in paths {
        let f = fetch(client, base, p, gzip, None).await?;
        anyhow::ensure!(f.status == 200, "GET {p}: {}", f.status);
        wire += f.bytes;
        raw += f.body.len();
        out.push(f);
    }
    Ok((wire, raw, t.elapsed().as_secs_f64() * 1000.0, out))
}

/// Reads the live stream for `secs`: bytes and events by name.
async fn stream_for(client: &reqwest::Client, base: &str, secs: u64) -> anyhow::Result<(usize, usize, usize)> {
    let mut resp =
        client.get(format!("{base}/api/v1/stream")).header("authorization", format!("Token {ADMIN}")).send().await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let (mut bytes, mut latest, mut alerts) = (0, 0, 0);
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, resp.chunk()).await {
        bytes += chunk.len();
        let text = String::from_utf8_lossy(&chunk);
        latest += text.matches("event: latest").count() + text.matches("event:latest").count();
        alerts += text.matches("event: alert").count() + text.matches("event:alert").count();
    }
    Ok((bytes, latest, alerts))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// RFC 3339 in UTC (`2026-12-03T17:00:00Z`) of ms since the epoch.
fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn kb(n: usize) -> String {
    if n >= 10 * 1024 { format!("{:.0} KB", n as f64 / 1024.0) } else { format!("{:.1} KB", n as f64 / 1024.0) }
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let bin = crate::ingest_binary()?;
    let dir = tempfile::Builder::new().prefix("vt-large-demo-").tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let base = format!("http://127.0.0.1:{port}");
    println!("Starting {} demo --county large on {base} ...", bin.display());
    let t0 = Instant::now();
    let mut child = Command::new(&bin)
        .args(["demo", "--county", "large", "--http", &format!("127.0.0.1:{port}"), "--mqtt", "127.0.0.1:0"])
        .args(["--admin-token", ADMIN, "--data"])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting ingest demo")?;
    let pid = child.id();
    let stdout = child.stdout.take().context("stdout")?;
    let demo = Demo { child };
    // The operator-2 token is printed with the summary.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(t) = line.split("operator-2 token:").nth(1) {
                let _ = tx.send(t.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    });
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(args.start_timeout_secs);
    loop {
        if let Ok(r) = client.get(format!("{base}/api/v1/health")).send().await
            && r.status().is_success()
        {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "ingest never became ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ready = t0.elapsed();
    let operator = rx.recv_timeout(Duration::from_secs(30)).context("the operator-2 token")?;
    let sites_n = loop {
        let f = fetch(&client, &base, "/api/v1/summary", true, None).await?;
        let s = json_of(&f);
        let sites = s["sites"].as_array().cloned().unwrap_or_default();
        // Reporting: the site has a reading (`newest`), not only a gateway status.
        if !sites.is_empty() && sites.iter().all(|x| !x["newest"].is_null()) {
            break sites.len();
        }
        anyhow::ensure!(Instant::now() < deadline, "not every site reported within the timeout");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let all_report = t0.elapsed();
    let rss_start = proc_status(pid, "VmRSS:");
    println!(
        "Ready after {:.1} s; all {sites_n} sites reporting after {:.1} s; RSS {} MB",
        ready.as_secs_f64(),
        all_report.as_secs_f64(),
        rss_start / 1024
    );

    // Steady state: a minute after start-up's first round, CPU and the live stream's bytes.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let ticks0 = cpu_ticks(pid);
    let c0 = Instant::now();
    let (stream_bytes, stream_latest, _) = stream_for(&client, &base, args.steady_secs).await?;
    let cpu = (cpu_ticks(pid) - ticks0) as f64 / 100.0 / c0.elapsed().as_secs_f64() * 100.0;
    let rss = proc_status(pid, "VmRSS:");
    let hwm = proc_status(pid, "VmHWM:");

    // First loads.
    let new_paths = ["/api/v1/summary", "/api/v1/sites", "/api/v1/alerts?state=active", "/api/v1/broadcasts"];
    let old_paths = ["/api/v1/sites", "/api/v1/devices", "/api/v1/latest"];
    let (new_wire, new_raw, new_ms, first) = load(&client, &base, &new_paths, true).await?;
    let (old_wire, old_raw, old_ms, _) = load(&client, &base, &old_paths, true).await?;
    let (_, old_plain, old_plain_ms, _) = load(&client, &base, &old_paths, false).await?;

    // Refresh after 5 s: the same requests with their tags, and latest?since=.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut refresh_wire = 0;
    let mut not_modified = Vec::new();
    let t = Instant::now();
    for (p, f) in new_paths.iter().zip(&first) {
        let r = fetch(&client, &base, p, true, f.etag.as_deref()).await?;
        refresh_wire += r.bytes;
        if r.status == 304 {
            not_modified.push(*p);
        }
    }
    let refresh_ms = t.elapsed().as_secs_f64() * 1000.0;
    let since = now_ms() - 5_000;
    let delta = fetch(&client, &base, &format!("/api/v1/latest?since={since}"), true, None).await?;
    let delta_rows = json_of(&delta).as_array().map_or(0, Vec::len);

    // One alert changes: a pump trips.
    let alerts_before = fetch(&client, &base, "/api/v1/alerts?state=active", true, None).await?;
    let n_before = json_of(&alerts_before).as_array().map_or(0, Vec::len);
    let resp = client
        .post(format!("{base}/api/v1/sim/faults"))
        .header("authorization", format!("Token {ADMIN}"))
        .json(&json!({"device": "waterworks-2-pump-1", "fault": "pump_trip"}))
        .send()
        .await?;
    anyhow::ensure!(resp.status().as_u16() == 201, "fault injection: {}", resp.status());
    let tripped = Instant::now();
    let alerted = loop {
        let a = fetch(&client, &base, "/api/v1/alerts?state=active", true, alerts_before.etag.as_deref()).await?;
        if a.status == 200 && json_of(&a).as_array().map_or(0, Vec::len) > n_before {
            break a;
        }
        anyhow::ensure!(tripped.elapsed() < Duration::from_secs(120), "no alert within 120 s of the pump trip");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let to_alert = tripped.elapsed();
    let summary_after = fetch(&client, &base, "/api/v1/summary", true, first[0].etag.as_deref()).await?;

    // A red broadcast to all 400 speakers.
    let expires = rfc3339(now_ms() + 900_000);
    let created = client
        .post(format!("{base}/api/v1/broadcasts"))
        .header("authorization", format!("Token {ADMIN}"))
        .json(
            &json!({"level": "red", "text": "山洪预警：请立即撤离到高处。", "targets": ["all"], "expires_at": expires}),
        )
        .send()
        .await?;
    anyhow::ensure!(created.status().as_u16() == 201, "create broadcast: {}", created.text().await.unwrap_or_default());
    let id = created.json::<Value>().await?["id"].as_u64().context("broadcast id")?;
    let approved = Instant::now();
    let r = client
        .post(format!("{base}/api/v1/broadcasts/{id}/approve"))
        .header("authorization", format!("Token {operator}"))
        .send()
        .await?;
    anyhow::ensure!(r.status().as_u16() == 200, "approve: {}", r.text().await.unwrap_or_default());
    let mut timeline: Vec<(f64, u64)> = Vec::new();
    let mut last_change = Instant::now();
    let mut last = 0;
    let mut counts = Value::Null;
    while approved.elapsed() < Duration::from_secs(180) && last_change.elapsed() < Duration::from_secs(20) {
        let v = client
            .get(format!("{base}/api/v1/broadcasts/{id}"))
            .header("authorization", format!("Token {ADMIN}"))
            .send()
            .await?
            .json::<Value>()
            .await?;
        let n = v["counts"]["playing"].as_u64().unwrap_or(0) + v["counts"]["played"].as_u64().unwrap_or(0);
        if n != last {
            last = n;
            last_change = Instant::now();
        }
        timeline.push((approved.elapsed().as_secs_f64(), n));
        counts = v["counts"].clone();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let reached = |share: f64| {
        let want = (last as f64 * share).ceil() as u64;
        timeline.iter().find(|(_, n)| *n >= want).map_or(f64::NAN, |(t, _)| *t)
    };
    drop(demo);

    println!("\n## Figures (paste into docs/BENCHMARKS.md)\n");
    println!("Machine: {}; `vt-bench large-demo` (release).\n", machine());
    println!("| figure | value |\n|---|---|");
    println!("| start-up: API ready | {:.1} s |", ready.as_secs_f64());
    println!("| start-up: every one of {sites_n} sites reporting | {:.1} s |", all_report.as_secs_f64());
    println!(
        "| memory (RSS) when every site reports / after {} s steady / peak | {} / {} / {} MB |",
        args.steady_secs,
        rss_start / 1024,
        rss / 1024,
        hwm / 1024
    );
    println!("| CPU at steady state (ingest, broker, simulator, 155 gateways) | {cpu:.0} % of one core |");
    println!(
        "| dashboard first load: summary, sites, active alerts, broadcasts | {} on the wire ({} JSON), {new_ms:.0} ms |",
        kb(new_wire),
        kb(new_raw)
    );
    println!(
        "| old first load: sites, devices, every latest value | {} gzip ({} JSON), {old_ms:.0} ms; {old_plain_ms:.0} ms without gzip |",
        kb(old_wire),
        kb(old_plain.max(old_raw))
    );
    println!(
        "| refresh 5 s later with ETags | {} , {refresh_ms:.0} ms; 304 for {:?} |",
        kb(refresh_wire),
        not_modified
    );
    println!("| `latest?since=` 5 s | {} on the wire, {delta_rows} rows |", kb(delta.bytes));
    println!(
        "| live stream (`/api/v1/stream`) | {} per minute, {stream_latest} `latest` events in {} s |",
        kb(stream_bytes * 60 / args.steady_secs.max(1) as usize),
        args.steady_secs
    );
    println!("| one alert changed (pump trip): alert active after | {:.1} s |", to_alert.as_secs_f64());
    println!(
        "| refresh after it: active alerts, summary | {} ({}), {} ({}) |",
        kb(alerted.bytes),
        alerted.status,
        kb(summary_after.bytes),
        summary_after.status
    );
    println!(
        "| red broadcast to 400 speakers, approval to 50 / 90 / 99 % of the {last} that played | {:.1} / {:.1} / {:.1} s |",
        reached(0.5),
        reached(0.9),
        reached(0.99)
    );
    println!("| broadcast counts at the end | {counts} |");
    Ok(())
}
