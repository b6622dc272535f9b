//! `compare`: one line-protocol file fed over HTTP to each server in turn, with the same
//! batch size and connections; then each server compacted the same way (see
//! [`Server::compact`]), what it holds read back and checked against the file
//! ([`readback`]), and its disk measured running and after a clean stop.
//!
//! Runs are repeated and interleaved (`--runs`), and rates are readings *read back* per
//! second of feeding, beside readings per CPU-second of the server, so that a server that
//! drops data or a run at a busier moment shows.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::readback;
use crate::servers::{Server, TOKEN, Target, cpu_seconds};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Line-protocol files (from `vt-bench dataset`), each compared on every target.
    #[arg(long, required = true)]
    data: Vec<PathBuf>,
    /// Servers: ingest, victoria-metrics, influxdb.
    #[arg(long, value_delimiter = ',', default_value = "ingest,victoria-metrics,influxdb")]
    targets: Vec<String>,
    /// Lines per request.
    #[arg(long, default_value_t = 5000)]
    batch: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Runs of each server on each data set, interleaved (medians and spread reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Working directory for the servers' data (emptied per run).
    #[arg(long, default_value = "/tmp/vt-bench")]
    work: PathBuf,
}

/// What feeding a file took.
pub(crate) struct Fed {
    pub(crate) lines: u64,
    pub(crate) seconds: f64,
    /// CPU seconds the server used meanwhile.
    pub(crate) server_cpu: f64,
}

/// POSTs `file` to `url` in bodies of `batch` lines over `connections` connections.
pub(crate) async fn feed(server: &Server, file: &Path, batch: usize, connections: usize) -> anyhow::Result<Fed> {
    let (tx, rx) = tokio::sync::mpsc::channel::<(Vec<u8>, u64)>(connections * 4);
    let path = file.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut r = std::io::BufReader::with_capacity(1 << 22, std::fs::File::open(&path)?);
        loop {
            let mut body = Vec::with_capacity(batch * 64);
            let mut n = 0u64;
            while (n as usize) < batch {
                if r.read_until(b'\n', &mut body)? == 0 {
                    break;
                }
                n += 1;
            }
            if n == 0 {
                return Ok(());
            }
            if tx.blocking_send((body, n)).is_err() {
                return Ok(());
            }
        }
    });
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let client = reqwest::Client::builder().pool_max_idle_per_host(connections).build()?;
    let sent = Arc::new(AtomicU64::new(0));
    let url = server.write_url();
    let pid = server.pid().unwrap_or(0);
    let cpu0 = cpu_seconds(pid);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..connections {
        let (rx, client, sent, url) = (rx.clone(), client.clone(), sent.clone(), url.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let Some((body, n)) = rx.lock().await.recv().await else { return Ok::<(), anyhow::Error>(()) };
                let resp =
                    client.post(&url).header("Authorization", format!("Token {TOKEN}")).body(body).send().await?;
                let status = resp.status();
                if !status.is_success() {
                    anyhow::bail!("{url}: {status}: {}", resp.text().await.unwrap_or_default());
                }
                sent.fetch_add(n, Ordering::Relaxed);
            }
        }));
    }
    let progress = {
        let sent = sent.clone();
        let name = server.target.name();
        tokio::spawn(async move {
            let mut last = 0u64;
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                let now = sent.load(Ordering::Relaxed);
                println!("  {name}: {now} lines ({:.0}/s)", (now - last) as f64 / 5.0);
                last = now;
            }
        })
    };
    for w in workers {
        w.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    progress.abort();
    reader.await??;
    Ok(Fed { lines: sent.load(Ordering::Relaxed), seconds, server_cpu: cpu_seconds(pid) - cpu0 })
}

fn machine() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{cores} cores, {cpu}; load average {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

/// One run of one server on one data set.
struct Run {
    fed: Fed,
    check: readback::Check,
    running: u64,
    compacted: u64,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let targets: Vec<Target> = args.targets.iter().map(|t| Target::parse(t)).collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    println!("machine: {}", machine());
    let mut table = Vec::new();
    for data in &args.data {
        let name = data.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let exp = readback::expected(data)?;
        println!(
            "{name}: {} readings in {} series ({} lines unreadable by the read-back check)",
            exp.readings,
            exp.series.len(),
            exp.unreadable
        );
        let mut runs: Vec<Vec<Run>> = targets.iter().map(|_| Vec::new()).collect();
        // Interleaved: run r starts with target r (mod n), so no server always goes first
        // or always follows the same one.
        for r in 0..args.runs {
            for i in 0..targets.len() {
                let ti = (r + i) % targets.len();
                let t = targets[ti];
                let dir = args.work.join(&name).join(format!("{t:?}").to_lowercase());
                let _ = std::fs::remove_dir_all(&dir);
                println!("{name} run {}: {} (load {})", r + 1, t.name(), load());
                let mut server = Server::start(t, &dir).await?;
                let fed = feed(&server, data, args.batch, args.connections).await?;
                let running = server.disk_bytes();
                server.compact().await?;
                let check = readback::check(&exp, &readback::read_back(&server, &exp).await?);
                server.stop();
                let compacted = server.disk_bytes();
                println!(
                    "  {:.0} readings/s, {:.2} cores, read back {} of {} ({} series wrong), {:.3} / {:.3} bytes a reading",
                    fed.lines as f64 / fed.seconds,
                    fed.server_cpu / fed.seconds,
                    check.readings,
                    exp.readings,
                    check.wrong_counts,
                    running as f64 / exp.readings as f64,
                    compacted as f64 / exp.readings as f64
                );
                runs[ti].push(Run { fed, check, running, compacted });
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        for (t, runs) in targets.iter().zip(&runs) {
            table.push(row(&name, *t, &exp, runs));
        }
    }
    println!(
        "\n{} interleaved runs each; batch {} lines, {} connections; {}\n\
         median (min-max) of the runs; readings read back from each server after the run\n\n\
         | data set | server | readings read back (of the file's) | series wrong | worst sum error | readings/s | server CPU (cores) | readings per CPU-second | bytes/reading, running | bytes/reading, compacted and stopped |\n\
         |---|---|---|---|---|---|---|---|---|---|",
        args.runs,
        args.batch,
        args.connections,
        machine()
    );
    for r in table {
        println!("{r}");
    }
    Ok(())
}

fn load() -> String {
    machine().rsplit("average ").next().unwrap_or("").to_string()
}

/// Median and spread of `f` over the runs.
fn spread(runs: &[Run], f: impl Fn(&Run) -> f64, digits: usize) -> String {
    let mut v: Vec<f64> = runs.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    let (lo, hi) = (v[0], v[v.len() - 1]);
    let mid = if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 };
    if v.len() == 1 { format!("{mid:.digits$}") } else { format!("{mid:.digits$} ({lo:.digits$}-{hi:.digits$})") }
}

fn row(name: &str, t: Target, exp: &readback::Expected, runs: &[Run]) -> String {
    let n = exp.readings as f64;
    let read: Vec<u64> = runs.iter().map(|r| r.check.readings).collect();
    let wrong = runs.iter().map(|r| r.check.wrong_counts).max().unwrap_or(0);
    let worst = runs.iter().map(|r| r.check.worst_sum).fold(0.0, f64::max);
    format!(
        "| {name} | {} | {} of {} | {wrong} | {worst:.1e} | {} | {} | {} | {} | {} |",
        t.name(),
        if read.iter().all(|&x| x == read[0]) { read[0].to_string() } else { format!("{read:?}") },
        exp.readings,
        spread(runs, |r| r.check.readings as f64 / r.fed.seconds, 0),
        spread(runs, |r| r.fed.server_cpu / r.fed.seconds, 2),
        spread(runs, |r| r.check.readings as f64 / r.fed.server_cpu.max(1e-9), 0),
        spread(runs, |r| r.running as f64 / n, 3),
        spread(runs, |r| r.compacted as f64 / n, 3),
    )
}
