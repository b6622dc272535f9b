//! `ingest`: the central service's command line.
#![allow(clippy::print_stdout)]

#[cfg(feature = "demo")]
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use conf::{ConfigError, ConfigErrors, Source};
use ingest::alerts::AlertsConfig;
use ingest::broadcast::config::BroadcastConfig;
use ingest::config::{EXAMPLE, IngestConfig};
#[cfg(feature = "demo")]
use ingest::demo::{Demo, DemoOptions};
use ingest::inventory::Inventory;
use ingest::service::{self, Options};

/// Village telemetry ingest: MQTT in, validated and stored exactly once, served over HTTP.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: daemon::LogArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run a simulated county, its gateways, the embedded broker and ingest in one process.
    #[cfg(feature = "demo")]
    Demo {
        /// Address of the HTTP API and dashboard.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: SocketAddr,
        /// Address of the embedded MQTT broker (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:1883")]
        mqtt: SocketAddr,
        /// Where data goes (default: a temporary directory, removed at exit).
        #[arg(long)]
        data: Option<PathBuf>,
        /// The admin token the API accepts (default: a new one, printed).
        #[arg(long)]
        admin_token: Option<String>,
        /// Simulated seconds per real second (1 = real time).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Alerts config (rule packs, notifiers); default: the packs built into ingest.
        #[arg(long)]
        alerts: Option<PathBuf>,
        /// Which county: `small` (3 villages, quick to start) or `large` (the pilot county
        /// at full size: 150 villages, 15,000 meters, 400 speakers, 2,000 cows).
        #[arg(long, value_enum, default_value_t = ingest::demo::CountyChoice::Small)]
        county: ingest::demo::CountyChoice,
    },
    /// Run ingest with a config file.
    Run {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Alerts config in its old place, a file of its own (deprecated: move it into the
        /// config file's [alerts] table); default: the [alerts] table, else the packs built
        /// into ingest.
        #[arg(long)]
        alerts: Option<PathBuf>,
    },
    /// Check rule packs (a file or a directory) and report every problem with its line.
    CheckRules {
        /// A pack file or a directory of packs; default: the packs built into ingest.
        path: Option<PathBuf>,
    },
    /// Print the commented example alerts config in its old place, a file of its own
    /// (deprecated: `generate-config` prints it as the [alerts] table).
    GenerateAlertsConfig,
    /// Check a config file with everything it names (inventory, [alerts] and its rule
    /// packs, [broadcast]) and report every problem with its file and line.
    Check {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Alerts config in its old place, as `run --alerts` takes it (deprecated).
        #[arg(long)]
        alerts: Option<PathBuf>,
    },
    /// Print a commented example config.
    GenerateConfig,
    /// Print the broker's CA certificate file and its SHA-256 fingerprint, for gateways to
    /// pin (`mqtt.ca_file`, `mqtt.ca_sha256`); makes the county's CA if it is not there yet.
    Ca {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.log.init("info,rumqttd=warn,rumqttd::router::routing=off");
    match cli.command {
        Command::GenerateConfig => {
            print!("{EXAMPLE}");
            Ok(())
        }
        Command::Check { config, alerts } => {
            let loaded = load(&config, alerts.as_deref())?;
            println!(
                "{}: ok ({} devices, {} tokens, {} rules)",
                config.display(),
                loaded.inventory.devices().len(),
                loaded.config.tokens.len(),
                loaded.rules
            );
            Ok(())
        }
        Command::Ca { config } => {
            let cfg = IngestConfig::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            let (file, fingerprint) = ingest::broker::ca::pin(&cfg.data_dir, &cfg.broker_exposure)?;
            println!("CA certificate: {}", file.display());
            println!("SHA-256 fingerprint: {fingerprint}");
            println!("Gateways: mqtt.url = \"mqtts://HOST:PORT\", mqtt.ca_file = a copy of that file,");
            println!("          mqtt.ca_sha256 = \"{fingerprint}\"");
            Ok(())
        }
        Command::GenerateAlertsConfig => {
            print!("{}", ingest::alerts::config::EXAMPLE);
            Ok(())
        }
        Command::CheckRules { path } => {
            let set = match &path {
                Some(p) => ingest::rules::config::RuleSet::load(p),
                None => ingest::rules::config::RuleSet::defaults(),
            }
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let census = ingest::rules::config::census(&set.rules);
            println!("ok: {} rules ({census:?})", set.rules.len());
            Ok(())
        }
        Command::Run { config, alerts } => runtime()?.block_on(async move {
            service::raise_open_files_limit();
            let Loaded { config: cfg, inventory: inv, alerts, broadcast, .. } = load(&config, alerts.as_deref())?;
            let alerts =
                Some(ingest::alerts::AlertsOptions { config: alerts, ..ingest::alerts::AlertsOptions::default() });
            let options = Options { public_read: false, alerts, broadcast: Some(broadcast), ..Options::default() };
            let running = service::start(cfg, inv, options).await?;
            println!("ingest: HTTP on http://{}", running.http);
            daemon::stop_signal().await;
            running.stop().await;
            Ok(())
        }),
        #[cfg(feature = "demo")]
        Command::Demo { http, mqtt, data, admin_token, speed, alerts, county } => runtime()?.block_on(async move {
            anyhow::ensure!(speed > 0.0 && speed.is_finite(), "--speed must be a positive number");
            service::raise_open_files_limit();
            let mut spec = county.spec();
            spec.speed = speed;
            let alerts = Some(alerts_options(alerts.as_deref())?);
            let opts = DemoOptions { http, mqtt, data, admin_token, spec, alerts, ..DemoOptions::default() };
            let demo = Demo::start(opts).await?;
            println!("{}", demo.summary());
            daemon::stop_signal().await;
            println!("Stopping...");
            demo.stop().await;
            println!("Stopped.");
            Ok(())
        }),
    }
}

#[cfg(feature = "demo")]
fn alerts_options(path: Option<&std::path::Path>) -> anyhow::Result<ingest::alerts::AlertsOptions> {
    let config = match path {
        Some(p) => ingest::alerts::AlertsConfig::load(p).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => ingest::alerts::AlertsConfig::default(),
    };
    Ok(ingest::alerts::AlertsOptions { config, ..ingest::alerts::AlertsOptions::default() })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")
}

/// Everything the config file names, read and checked together.
struct Loaded {
    config: IngestConfig,
    inventory: Inventory,
    /// `[alerts]`, else the old `--alerts` file, else the defaults.
    alerts: AlertsConfig,
    /// `[broadcast]`, else the old `data_dir/broadcast.toml`, else the defaults.
    broadcast: BroadcastConfig,
    /// How many rules the packs hold.
    rules: usize,
}

/// Reads the config file and everything it names (inventory, `[alerts]` and its rule
/// packs, `[broadcast]`), and the old places for one release (with a warning naming the
/// new one). Every problem of every file is reported at once, each with file and line.
fn load(path: &Path, old_alerts: Option<&Path>) -> anyhow::Result<Loaded> {
    let mut problems = Vec::new();
    let mut keep = |result: Result<(), ConfigErrors>| {
        if let Err(ConfigErrors(errors)) = result {
            for e in errors {
                // A syntax error is found by each reader of the file: say it once.
                if !problems.contains(&e) {
                    problems.push(e);
                }
            }
        }
    };
    let whole_file = |reason: String| ConfigError { file: path.to_path_buf(), line: None, column: None, reason };
    let src = Source::read(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut config = None;
    keep(IngestConfig::from_source(&src, base).map(|c| config = Some(c)));
    let mut inventory = None;
    if let Some(c) = &config {
        let inv_path = c.inventory.clone().context("the config names no inventory")?;
        keep(Inventory::load(&inv_path).map(|i| inventory = Some(i)));
    }

    let mut alerts_table = None;
    keep(AlertsConfig::from_table(&src, base).map(|a| alerts_table = a));
    let mut alerts = None;
    match (alerts_table, old_alerts) {
        (Some(_), Some(old)) => keep(Err(ConfigErrors(vec![whole_file(format!(
            "alerts are configured twice: in the [alerts] table and in --alerts {}; keep the table and drop --alerts",
            old.display()
        ))]))),
        (None, Some(old)) => {
            tracing::warn!(
                message = "Alerts config read from its old place; move it into ingest.toml as its [alerts] table (--alerts is read for this release only).",
                path = %old.display(),
                config = %path.display()
            );
            keep(AlertsConfig::load(old).map(|a| alerts = Some(a)));
        }
        (table, None) => alerts = Some(table.unwrap_or_default()),
    }
    let mut rules = 0;
    if let Some(a) = &alerts {
        let set = match &a.rules {
            Some(p) => ingest::rules::config::RuleSet::load(p),
            None => ingest::rules::config::RuleSet::defaults(),
        };
        keep(set.map(|s| rules = s.rules.len()));
    }

    let mut broadcast_table = None;
    keep(BroadcastConfig::from_table(&src).map(|b| broadcast_table = b));
    let mut broadcast = None;
    if let Some(c) = &config {
        let old = c.data_dir.join(ingest::broadcast::config::FILE);
        match broadcast_table {
            Some(_) if old.exists() => keep(Err(ConfigErrors(vec![whole_file(format!(
                "broadcast settings are configured twice: in the [broadcast] table and in {}; keep the table and delete that file",
                old.display()
            ))]))),
            Some(table) => broadcast = Some(table),
            None => keep(BroadcastConfig::load_or_default(&c.data_dir).map(|b| broadcast = Some(b))),
        }
    }

    match (config, inventory, alerts, broadcast) {
        (Some(config), Some(inventory), Some(alerts), Some(broadcast)) if problems.is_empty() => {
            Ok(Loaded { config, inventory, alerts, broadcast, rules })
        }
        _ => Err(anyhow::anyhow!("{}", ConfigErrors(problems))),
    }
}
