//! `compare`: one line-protocol file fed over HTTP to each server in turn, with the same
//! batch size and connections, then each server stopped cleanly and its disk measured.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

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

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let targets: Vec<Target> = args.targets.iter().map(|t| Target::parse(t)).collect::<anyhow::Result<_>>()?;
    println!("machine: {}", machine());
    let mut rows = Vec::new();
    for data in &args.data {
        let name = data.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        for &t in &targets {
            let dir = args.work.join(&name).join(format!("{t:?}").to_lowercase());
            let _ = std::fs::remove_dir_all(&dir);
            println!("{name}: {} (load {})", t.name(), machine().rsplit("average ").next().unwrap_or(""));
            let mut server = Server::start(t, &dir).await?;
            let fed = feed(&server, data, args.batch, args.connections).await?;
            let running = server.disk_bytes();
            server.stop();
            let stopped = server.disk_bytes();
            let row = format!(
                "| {name} | {} | {} | {:.0} | {:.2} | {:.3} | {:.3} |",
                t.name(),
                fed.lines,
                fed.lines as f64 / fed.seconds,
                fed.server_cpu / fed.seconds,
                running as f64 / fed.lines as f64,
                stopped as f64 / fed.lines as f64,
            );
            println!("{row}");
            rows.push(row);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    println!(
        "\nbatch {} lines, {} connections; {}\n\n| data set | server | readings | readings/s | server CPU (cores) | bytes/reading, running | bytes/reading, after a clean stop |\n|---|---|---|---|---|---|---|",
        args.batch,
        args.connections,
        machine()
    );
    for r in rows {
        println!("{r}");
    }
    Ok(())
}
