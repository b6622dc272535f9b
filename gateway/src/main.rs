//! `gateway`: the edge agent's command line.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use gateway::config::{EXAMPLE, GatewayConfig};
use gateway::{Gateway, Library};
use tokio_util::sync::CancellationToken;

/// Village telemetry gateway: polls Modbus devices as their profiles say and forwards
/// their readings to ingest over MQTT, keeping every batch until ingest has stored it.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: daemon::LogArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// The gateway's config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a config file and the profiles it uses, and report every problem.
    Check {
        /// The gateway's config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the gateway's public key and its fingerprint (read the fingerprint over the
    /// phone when the gateway is enrolled); makes the key if there is none yet.
    Identity {
        /// The gateway's config file (the key lives in its queue directory).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Read a speaker terminal's own public key over Modbus (input 600-615) and print it
    /// with its fingerprint, to enrol as the speaker's `public_key` in ingest's inventory.
    /// Run it while the gateway is stopped on an RS-485 bus (one master at a time).
    SpeakerKey {
        /// The gateway's config file (where the speaker's link and unit are).
        #[arg(long, short)]
        config: PathBuf,
        /// The speaker's device id in that config.
        #[arg(long)]
        device: String,
    },
    /// Print a commented example config.
    GenerateConfig,
    /// List the device profiles: the built-in library and those in DIR.
    Profiles {
        /// Extra profile directory to load and check.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.log.init("info");
    match cli.command {
        Command::GenerateConfig => {
            print!("{EXAMPLE}");
            Ok(())
        }
        Command::Profiles { dir } => {
            let (mut lib, mut errors) = Library::builtin();
            if let Some(dir) = dir {
                errors.extend(lib.load_dir(&dir));
            }
            for m in lib.models() {
                println!("{m}");
            }
            for e in &errors {
                eprintln!("{e}");
            }
            anyhow::ensure!(errors.is_empty(), "{} profile(s) refused", errors.len());
            Ok(())
        }
        Command::Identity { config } => {
            let (cfg, _) = load(&config)?;
            let dir = cfg.queue.dir.as_deref().context("the config has no [queue] dir: the key would not be kept")?;
            let (id, origin) =
                gateway::identity::Identity::load_or_create(Some(dir)).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("gateway:     {}", cfg.gateway);
            println!("tenant:      {}", cfg.tenant);
            println!("public_key:  {}", id.public_hex());
            println!("fingerprint: {}", id.fingerprint());
            if origin == gateway::identity::Origin::Created {
                println!("(made now in {}; enrol it in ingest's inventory)", dir.display());
            }
            Ok(())
        }
        Command::SpeakerKey { config, device } => {
            let (cfg, _) = load(&config)?;
            let d = cfg.devices.iter().find(|d| d.id == device).context("no such device in the config")?;
            let endpoint = match &d.transport {
                gateway::config::Transport::Tcp(addr) => gateway::modbus::Endpoint::Tcp(*addr),
                gateway::config::Transport::Rtu(bus) => {
                    gateway::modbus::Endpoint::Rtu(cfg.bus(bus).context("the device's bus is not configured")?.clone())
                }
            };
            let attempts =
                gateway::modbus::Attempts { timeout: d.timeout, retries: d.retries, backoff: d.retry_backoff };
            let rt =
                tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
            let key = rt.block_on(async {
                let mut link = gateway::modbus::Link::new(endpoint);
                gateway::report::read_speaker_key(&mut link, d.unit, attempts).await
            });
            let key = key.map_err(|e| anyhow::anyhow!("reading input 600-615 of {device}: {e}"))?;
            let key = key.context("the terminal shows no key (input 600-615 all zero or not a valid key)")?;
            let hex: String = key.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
            println!("device:      {device}");
            println!("public_key:  {hex}");
            println!("fingerprint: {}", protocol::auth::fingerprint(&key));
            println!("(compare the fingerprint with the terminal's label, then enrol the key on its device entry)");
            Ok(())
        }
        Command::Check { config } => {
            let (_, lib) = load(&config)?;
            println!("{}: ok ({} profiles)", config.display(), lib.models().len());
            Ok(())
        }
        Command::Run { config } => {
            let (cfg, lib) = load(&config)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the runtime")?;
            rt.block_on(async move {
                let shutdown = CancellationToken::new();
                let gw = Gateway::new(cfg, lib, daemon::system_clock()).map_err(|e| anyhow::anyhow!("{e}"))?;
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    daemon::stop_signal().await;
                    stop.cancel();
                });
                gw.try_run(shutdown).await.context("the gateway stopped")
            })
        }
    }
}

/// Loads the config and every profile it may use; bad extra profiles are reported and
/// skipped, a bad config is an error listing every problem.
fn load(path: &std::path::Path) -> anyhow::Result<(GatewayConfig, Library)> {
    let (mut lib, mut errors) = Library::builtin();
    // The config names its profile directories; read it once to find them.
    let dirs = conf::Source::read(path)
        .ok()
        .and_then(|src| src.parse::<toml::Table>().ok())
        .and_then(|t| t.get("profile_dirs").and_then(|d| d.as_array()).cloned())
        .unwrap_or_default();
    for d in dirs.iter().filter_map(|d| d.as_str()) {
        errors.extend(lib.load_dir(std::path::Path::new(d)));
    }
    for e in &errors {
        tracing::error!(message = "Profile refused.", error = %e);
    }
    let cfg = GatewayConfig::load(path, &lib).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((cfg, lib))
}
