//! `ingest`: the central service's command line.
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ingest::config::{EXAMPLE, IngestConfig};
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
    },
    /// Run ingest with a config file.
    Run {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Alerts config (rule packs, notifiers); default: the packs built into ingest.
        #[arg(long)]
        alerts: Option<PathBuf>,
    },
    /// Check rule packs (a file or a directory) and report every problem with its line.
    CheckRules {
        /// A pack file or a directory of packs; default: the packs built into ingest.
        path: Option<PathBuf>,
    },
    /// Print the commented example alerts config.
    GenerateAlertsConfig,
    /// Check a config file and its inventory, and report every problem.
    Check {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print a commented example config.
    GenerateConfig,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.log.init("info,rumqttd=warn,rumqttd::router::routing=off");
    match cli.command {
        Command::GenerateConfig => {
            print!("{EXAMPLE}");
            Ok(())
        }
        Command::Check { config } => {
            let (cfg, inv) = load(&config)?;
            println!("{}: ok ({} devices, {} tokens)", config.display(), inv.devices().len(), cfg.tokens.len());
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
            let (cfg, inv) = load(&config)?;
            let alerts = Some(alerts_options(alerts.as_deref())?);
            let running =
                service::start(cfg, inv, Options { public_read: false, alerts, ..Options::default() }).await?;
            println!("ingest: HTTP on http://{}", running.http);
            daemon::stop_signal().await;
            running.stop().await;
            Ok(())
        }),
        Command::Demo { http, mqtt, data, admin_token, speed, alerts } => runtime()?.block_on(async move {
            anyhow::ensure!(speed > 0.0 && speed.is_finite(), "--speed must be a positive number");
            let mut spec = simulator::CountySpec::demo();
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

fn load(path: &std::path::Path) -> anyhow::Result<(IngestConfig, Inventory)> {
    let cfg = IngestConfig::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let inv_path = cfg.inventory.clone().context("the config names no inventory")?;
    let inv = Inventory::load(&inv_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((cfg, inv))
}
