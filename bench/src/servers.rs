//! The servers under test, each a process of its own in a fresh directory on loopback:
//! ingest (the release binary), VictoriaMetrics and InfluxDB 1.6 (Debian packages).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// Ingest's `/api/v2/write` (fdatasync before 204).
    Ingest,
    /// VictoriaMetrics' `/api/v2/write` (answers before its data is on disk).
    VictoriaMetrics,
    /// InfluxDB 1.6's `/write` (fsyncs its WAL before answering, `wal-fsync-delay = 0`).
    Influxdb,
}

impl Target {
    pub(crate) fn parse(name: &str) -> anyhow::Result<Target> {
        match name {
            "ingest" => Ok(Target::Ingest),
            "victoria-metrics" | "vm" => Ok(Target::VictoriaMetrics),
            "influxdb" => Ok(Target::Influxdb),
            _ => anyhow::bail!("unknown target {name}: ingest, victoria-metrics, influxdb"),
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Target::Ingest => "ingest (store, fsync)",
            Target::VictoriaMetrics => "VictoriaMetrics 1.79",
            Target::Influxdb => "InfluxDB 1.6",
        }
    }
}

/// The bench's token for ingest: an operator of tenant `bench`.
pub(crate) const TOKEN: &str = "bench-operator-token-0123456789";

/// A running server.
pub(crate) struct Server {
    pub(crate) target: Target,
    pub(crate) dir: PathBuf,
    pub(crate) port: u16,
    /// Ingest only: its embedded broker's port, and its inventory.
    pub(crate) mqtt: u16,
    inventory: String,
    /// Ingest only: extra config lines (a `[store]` table).
    extra: String,
    child: Option<Child>,
}

/// Ingest's `[store.retention]` keeping every reading of every family for ever, as the
/// other servers are run (VictoriaMetrics `-retentionPeriod=100y`, InfluxDB's infinite
/// default). The data sets are dated months back, and ingest's default raw retention of
/// health and speaker metrics would otherwise drop some of them at the first checkpoint:
/// fewer bytes, fewer readings read back, and a comparison of unequal work.
fn keep_everything() -> String {
    ["water", "water_quality", "pump", "animal", "barn", "speaker", "health", "external"]
        .iter()
        .map(|f| format!("[store.retention.{f}]\nraw_days = 100000\nminute_days = 100000\nhour_days = 100000\n"))
        .collect()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Server {
    /// Starts `target` in `dir` (created) and waits until it answers.
    pub(crate) async fn start(target: Target, dir: &Path) -> anyhow::Result<Server> {
        std::fs::create_dir_all(dir)?;
        Server::start_with(target, dir, String::new(), String::new()).await
    }

    /// Starts ingest with an inventory and extra config lines.
    pub(crate) async fn start_ingest(dir: &Path, inventory: String, extra: String) -> anyhow::Result<Server> {
        Server::start_with(Target::Ingest, dir, inventory, extra).await
    }

    async fn start_with(target: Target, dir: &Path, inventory: String, extra: String) -> anyhow::Result<Server> {
        std::fs::create_dir_all(dir)?;
        let (port, mqtt) = (free_port()?, free_port()?);
        let mut s = Server { target, dir: dir.to_path_buf(), port, mqtt, inventory, extra, child: None };
        s.spawn()?;
        s.wait_ready().await?;
        if target == Target::Influxdb {
            let q = reqwest::Client::new()
                .post(format!("{}/query", s.base()))
                .form(&[("q", "CREATE DATABASE bench")])
                .send()
                .await?;
            anyhow::ensure!(q.status().is_success(), "CREATE DATABASE: {}", q.status());
        }
        Ok(s)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.join("server.log"))?;
        let mut cmd = match self.target {
            Target::Ingest => {
                std::fs::write(self.dir.join("inventory.toml"), &self.inventory)?;
                let mqtt = self.mqtt;
                std::fs::write(
                    self.dir.join("ingest.toml"),
                    format!(
                        "data_dir = \"data\"\ninventory = \"inventory.toml\"\nhttp = \"127.0.0.1:{}\"\n\
                         [broker]\ntype = \"embedded\"\nlisten = \"127.0.0.1:{mqtt}\"\n\
                         [limits]\nmax_age_days = 100000\nmax_future_secs = 3153600000\nmax_write_body_bytes = 67108864\n\
                         [[tokens]]\ntoken = \"{TOKEN}\"\nrole = \"operator\"\ntenants = [\"bench\"]\n{}{}",
                        self.port,
                        self.extra,
                        keep_everything()
                    ),
                )?;
                let mut c = Command::new(crate::ingest_binary()?);
                c.args(["run", "--config"])
                    .arg(self.dir.join("ingest.toml"))
                    .env("RUST_LOG", std::env::var("VT_BENCH_INGEST_LOG").unwrap_or_else(|_| "warn".into()));
                c
            }
            Target::VictoriaMetrics => {
                let mut c = Command::new("victoria-metrics");
                c.arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
                    .arg(format!("-storageDataPath={}", self.dir.join("data").display()))
                    .arg("-retentionPeriod=100y")
                    .arg("-search.latencyOffset=1s")
                    .arg("-search.disableCache")
                    .arg("-loggerLevel=ERROR");
                c
            }
            Target::Influxdb => {
                let d = self.dir.join("data");
                let config = format!(
                    "reporting-disabled = true\nbind-address = \"127.0.0.1:{}\"\n\
                     [meta]\ndir = \"{d}/meta\"\n\
                     [data]\ndir = \"{d}/data\"\nwal-dir = \"{d}/wal\"\nquery-log-enabled = false\n\
                     cache-snapshot-write-cold-duration = \"2s\"\ncompact-full-write-cold-duration = \"2s\"\n\
                     [http]\nbind-address = \"127.0.0.1:{}\"\nlog-enabled = false\nmax-body-size = 0\n",
                    free_port()?,
                    self.port,
                    d = d.display()
                );
                std::fs::write(self.dir.join("influxdb.conf"), config)?;
                let mut c = Command::new("influxd");
                c.arg("-config").arg(self.dir.join("influxdb.conf"));
                c
            }
        };
        let child = cmd.stdout(Stdio::null()).stderr(log).spawn()?;
        self.child = Some(child);
        Ok(())
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let url = match self.target {
            Target::Ingest => format!("{}/api/v1/health", self.base()),
            Target::VictoriaMetrics => format!("{}/health", self.base()),
            Target::Influxdb => format!("{}/ping", self.base()),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if reqwest::get(&url).await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("{} did not start; see {}", self.target.name(), self.dir.join("server.log").display())
    }

    pub(crate) fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The write URL for line protocol with millisecond timestamps.
    pub(crate) fn write_url(&self) -> String {
        match self.target {
            Target::Ingest => format!("{}/api/v2/write?org=bench&bucket=bench&precision=ms", self.base()),
            Target::VictoriaMetrics => format!("{}/api/v2/write?org=bench&bucket=bench&precision=ms", self.base()),
            Target::Influxdb => format!("{}/write?db=bench&precision=ms", self.base()),
        }
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops it as a service manager does (SIGTERM) and waits for it to exit.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// Stops and starts it again on the same port and data.
    pub(crate) async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()?;
        self.wait_ready().await
    }

    /// Brings the server to the compacted state it reaches after a quiet while, so that
    /// bytes per reading compare like with like: VictoriaMetrics flushes and merges its
    /// parts (`/internal/force_flush`, `/internal/force_merge`, then waits for
    /// `vm_active_merges` to be 0); InfluxDB snapshots its cache and compacts the cold shard
    /// (configured cold after 2 s) until its WAL is empty and its size steady. Ingest
    /// compacts when it stops (it seals its log and compacts its database), so nothing here.
    pub(crate) async fn compact(&self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(600);
        match self.target {
            Target::Ingest => Ok(()),
            Target::VictoriaMetrics => {
                client.get(format!("{}/internal/force_flush", self.base())).send().await?.error_for_status()?;
                client.get(format!("{}/internal/force_merge", self.base())).send().await?.error_for_status()?;
                tokio::time::sleep(Duration::from_secs(2)).await;
                while Instant::now() < deadline {
                    let metrics = client.get(format!("{}/metrics", self.base())).send().await?.text().await?;
                    let active: f64 = metrics
                        .lines()
                        .filter(|l| l.starts_with("vm_active_merges"))
                        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                        .sum();
                    if active == 0.0 {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                anyhow::bail!("VictoriaMetrics still merging after 10 minutes")
            }
            Target::Influxdb => {
                let (wal, mut last, mut steady) = (self.dir.join("data").join("wal"), 0u64, 0);
                while Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let now = self.disk_bytes();
                    steady = if now == last { steady + 1 } else { 0 };
                    last = now;
                    if steady >= 3 && allocated(&wal) < 1 << 20 {
                        return Ok(());
                    }
                }
                anyhow::bail!("InfluxDB still compacting after 10 minutes")
            }
        }
    }

    /// Bytes allocated on disk under the data directory (what `du` shows), without
    /// VictoriaMetrics' `cache/` (query and index caches it writes at stop and rebuilds
    /// when it is missing: a few MB whatever the data, which would swamp a small set).
    pub(crate) fn disk_bytes(&self) -> u64 {
        let data = self.dir.join("data");
        let caches = if self.target == Target::VictoriaMetrics { allocated(&data.join("cache")) } else { 0 };
        allocated(&data).saturating_sub(caches)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn allocated(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
    if meta.is_dir() {
        std::fs::read_dir(path)
            .map(|entries| entries.filter_map(Result::ok).map(|e| allocated(&e.path())).sum())
            .unwrap_or(0)
    } else {
        meta.blocks() * 512
    }
}

/// CPU seconds (user + system) a process has used so far, from /proc.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name; 100 ticks/s.
    (ticks(11) + ticks(12)) / 100.0
}
