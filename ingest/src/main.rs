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
    /// Manage people who sign in on the dashboard (the first admin, before ingest runs;
    /// later ones are usually made by an admin on the dashboard).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Print the broker's CA certificate file and its SHA-256 fingerprint, for gateways to
    /// pin (`mqtt.ca_file`, `mqtt.ca_sha256`); makes the county's CA if it is not there yet.
    Ca {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// What `ingest user` does.
#[derive(Subcommand)]
enum UserCommand {
    /// Add a person with a role in a tenant (default: every tenant). Prints a new password
    /// once, unless one is read from standard input.
    Add {
        /// Their sign-in name.
        name: String,
        /// viewer, operator or admin.
        #[arg(long, value_parser = parse_role)]
        role: ingest::auth::Role,
        /// The tenant of the role; `*` (the default) is every tenant.
        #[arg(long, default_value = "*")]
        tenant: String,
        #[command(flatten)]
        place: DataPlace,
        /// Read the password from the first line of standard input instead of making one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password for a person. Prints it once, unless one is read from standard
    /// input. Sessions already open stay until they expire (a reset on the dashboard ends
    /// them at once).
    Password {
        /// Their sign-in name.
        name: String,
        #[command(flatten)]
        place: DataPlace,
        /// Read the password from the first line of standard input instead of making one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List people and their roles.
    List {
        #[command(flatten)]
        place: DataPlace,
    },
}

/// Where ingest's data directory is: named by its config file, or given.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct DataPlace {
    /// The config file (its `data_dir` is used).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The data directory itself.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl DataPlace {
    fn dir(&self) -> anyhow::Result<PathBuf> {
        match (&self.config, &self.data_dir) {
            (_, Some(d)) => Ok(d.clone()),
            (Some(c), None) => Ok(IngestConfig::load(c).map_err(|e| anyhow::anyhow!("{e}"))?.data_dir),
            (None, None) => anyhow::bail!("give --config or --data-dir"),
        }
    }
}

fn parse_role(text: &str) -> Result<ingest::auth::Role, String> {
    serde_json::from_value(serde_json::Value::String(text.to_string()))
        .map_err(|_| format!("'{text}' is not a role: viewer, operator or admin"))
}

/// The password from standard input, or a new one (and whether it is new).
fn password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if !from_stdin {
        return Ok((ingest::people::users::generate_password(), true));
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("reading the password from standard input")?;
    let p = line.trim_end_matches(['\r', '\n']).to_string();
    ingest::people::users::check_password(&p).map_err(|e| anyhow::anyhow!(e))?;
    Ok((p, false))
}

fn user_command(command: UserCommand) -> anyhow::Result<()> {
    use ingest::people::users::{Grant, Users};
    match command {
        UserCommand::Add { name, role, tenant, place, password_stdin } => {
            let dir = place.dir()?;
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let (password, new) = password(password_stdin)?;
            ingest::people::add_offline(&dir, &name, &password, vec![Grant { tenant: tenant.clone(), role }], false)?;
            println!(
                "Added {name}: {} of {}.",
                format!("{role:?}").to_lowercase(),
                if tenant == "*" { "every tenant".to_string() } else { format!("tenant {tenant}") }
            );
            if new {
                println!("Password (shown only now): {password}");
            }
            println!("A running ingest picks the change up at the next sign-in.");
            Ok(())
        }
        UserCommand::Password { name, place, password_stdin } => {
            let dir = place.dir()?;
            let users = Users::open(&dir)?;
            let grants = users.get(&name).map(|u| u.grants.clone()).with_context(|| format!("no user '{name}'"))?;
            let (password, new) = password(password_stdin)?;
            ingest::people::add_offline(&dir, &name, &password, grants, true)?;
            println!("New password set for {name}.");
            if new {
                println!("Password (shown only now): {password}");
            }
            Ok(())
        }
        UserCommand::List { place } => {
            let users = Users::open(&place.dir()?)?;
            for u in users.all() {
                let grants: Vec<String> = u
                    .grants
                    .iter()
                    .map(|g| format!("{}:{}", g.tenant, format!("{:?}", g.role).to_lowercase()))
                    .collect();
                println!("{}\t{}\t(password set {})", u.name, grants.join(","), u.password_set);
            }
            Ok(())
        }
    }
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
        Command::User { command } => user_command(command),
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
