//! Starting and stopping the whole service: store, broker, sources -> pipeline -> sinks,
//! alerts, commands, broadcasts, HTTP.
//!
//! One [`start`] serves both `ingest run` and `ingest demo` and the end-to-end tests, so
//! what the tests exercise is what runs in production. Ports may be 0: the bound
//! addresses come back in [`Running`].
//!
//! Order of construction: the MQTT source connects first (nothing runs yet) so that its
//! downlink exists when alerts and commands are built; then the pipeline with its sinks
//! (alerts among them); then the sources run. Every task is spawned through one
//! [`Tasks`] and [`Running::stop`] waits for all of them, naming any that does not end
//! within [`crate::tasks::STOP_WITHIN`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context as _;
use store::Store;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::auth::Tokens;
use crate::config::{BrokerConfig, IngestConfig};
use crate::inventory::Inventory;
use crate::metrics::Metrics;
use crate::pipeline::validate::Rejections;
use crate::pipeline::{Clock, Pipeline, Sink};
use crate::sources::line_protocol::LineProtocol;
use crate::sources::mqtt::{self, Connection, Source};
use crate::tasks::Tasks;

/// What the caller may add to a plain configuration.
pub struct Options {
    /// Routes merged into the app as they are (full paths, their own state): how the demo
    /// adds its `/api/v1/sim/*` endpoints without the service knowing of a simulator.
    pub extra_routes: Option<axum::Router>,
    /// Ingest's clock.
    pub clock: Clock,
    /// Whether reads need no token. Off by default (reads closed, as `ingest run` has
    /// them); the demo opens them explicitly, as docs/API.md promises.
    pub public_read: bool,
    /// Further sinks to feed with durable readings.
    pub sinks: Vec<Arc<dyn Sink>>,
    /// Rules and alerts (`None`: off).
    pub alerts: Option<crate::alerts::AlertsOptions>,
    /// The broadcast configuration; `None` reads `data_dir/broadcast.toml` or uses the defaults.
    pub broadcast: Option<crate::broadcast::config::BroadcastConfig>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            extra_routes: None,
            clock: daemon::system_clock(),
            public_read: false,
            sinks: Vec::new(),
            alerts: None,
            broadcast: None,
        }
    }
}

/// A running ingest.
pub struct Running {
    /// Where the HTTP API listens.
    pub http: SocketAddr,
    /// Where the embedded broker listens (`None` with an external broker).
    pub mqtt: Option<SocketAddr>,
    /// Ingest's own login on the embedded broker (made at start, never stored): what a
    /// test that plays a compromised broker, or a local tool, connects with.
    pub broker_login: Option<(String, String)>,
    /// The embedded broker: its TLS listener and CA fingerprint (`None` with an external broker).
    pub broker: Option<crate::broker::Handle>,
    /// Gateway keys set through the API.
    pub enrolment: Arc<crate::enrol::Enrolment>,
    /// The API's state (store, inventory, metrics...).
    pub state: AppState,
    /// The MQTT source (downlink publishing, command acks).
    pub source: Source,
    shutdown: CancellationToken,
    /// Every task ingest spawned (HTTP server, MQTT source, sinks, alerts, commands,
    /// broadcasts, retention).
    tasks: Tasks,
}

impl Running {
    /// Stops accepting, finishes in-flight requests, waits for every task (sinks spill what
    /// they hold), checkpoints the store, and returns. A task that does not end within
    /// [`crate::tasks::STOP_WITHIN`] is named in the log and left behind.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tasks.stop(crate::tasks::STOP_WITHIN).await;
        // Seal the log so that the next start replays nothing (a crash instead loses
        // nothing either: the log has it).
        let store = self.state.store.clone();
        match tokio::task::spawn_blocking(move || store.checkpoint()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(message = "Checkpoint at shutdown failed; the log keeps the data.", %error)
            }
            Err(error) => tracing::warn!(message = "Checkpoint at shutdown failed.", %error),
        }
    }

    /// A token that is cancelled when the service stops.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// Starts ingest.
pub async fn start(config: IngestConfig, inventory: Inventory, options: Options) -> anyhow::Result<Running> {
    let shutdown = CancellationToken::new();
    let tasks = Tasks::new();
    let store_config = config.store.store_config(config.data_dir.join("store"));
    let (store, report) =
        tokio::task::spawn_blocking(move || Store::open(store_config)).await.context("opening the store")??;
    tracing::info!(
        message = "Store open.",
        records = report.records,
        torn_bytes = report.torn_bytes,
        duplicates = report.duplicates,
        series = report.series
    );
    let store = Arc::new(store);
    spawn_retention(&tasks, store.clone(), options.clock.clone(), config.store.retention_interval, shutdown.clone());
    let metrics = Arc::new(Metrics::default());
    let built = crate::sinks::build(&config.sinks, &metrics, &shutdown)?;
    let mut sinks = options.sinks;
    sinks.extend(built.sinks);
    for task in built.tasks {
        tasks.spawn("sink-worker", async move {
            let _ = task.await;
        });
    }

    // Ingest's key and the enrolled gateways: what every message and every broker login
    // is checked against.
    let key = crate::command::load_or_create_key(&config.data_dir.join(crate::command::KEY_FILE))?;
    let keyring = Arc::new(crate::keyring::Keyring::new(key));
    enrol_all(&keyring, &inventory);
    // Freshness of status and acks as it was at the last stop (or within a second of a crash).
    let marks = config.data_dir.join(crate::keyring::MARKS_FILE);
    let restored = keyring.load_marks(&marks).with_context(|| format!("reading {}", marks.display()))?;
    spawn_marks_writer(&tasks, keyring.clone(), marks, shutdown.clone());

    let mut broker_login = None;
    let mut broker = None;
    let (conn, mqtt_addr) = match &config.broker {
        BrokerConfig::Embedded { listen } => {
            let listen = if listen.port() == 0 {
                SocketAddr::new(listen.ip(), crate::broker::free_local_addr()?.port())
            } else {
                *listen
            };
            let login = crate::broker::ingest_login();
            let handle = crate::broker::start(
                listen,
                &config.broker_exposure,
                &config.data_dir,
                keyring.clone(),
                login.clone(),
                shutdown.clone(),
            )
            .await?;
            broker = Some(handle);
            broker_login = Some(login.clone());
            let host = if listen.ip().is_unspecified() { "127.0.0.1".to_string() } else { listen.ip().to_string() };
            (
                Connection { host, port: listen.port(), client_id: "ingest".into(), credentials: Some(login) },
                Some(listen),
            )
        }
        BrokerConfig::External { host, port, credentials } => (
            Connection {
                host: host.clone(),
                port: *port,
                client_id: "ingest".into(),
                credentials: credentials.clone(),
            },
            None,
        ),
    };

    // Connect first (nothing runs yet): alerts and commands publish through its downlink.
    let (source, mqtt_source) = mqtt::connect(conn);
    let inventory = Arc::new(inventory);
    let enrolment =
        Arc::new(crate::enrol::Enrolment::open(&config.data_dir, keyring.clone(), inventory.clone(), broker.clone())?);
    tracing::debug!(message = "Freshness marks restored.", gateways = restored);
    // Alerts see durable readings from every source: MQTT and line protocol alike.
    let alerts = match options.alerts {
        Some(mut opts) => {
            opts.downlink = Some(source.downlink.clone());
            opts.tasks = tasks.clone();
            let deps = crate::alerts::Deps {
                store: store.clone(),
                inventory: inventory.clone(),
                metrics: metrics.clone(),
                clock: options.clock.clone(),
                data_dir: config.data_dir.clone(),
            };
            let alerts = crate::alerts::Alerts::start(opts, deps, shutdown.clone())?;
            sinks.push(Arc::new(alerts.clone()));
            Some(alerts)
        }
        None => None,
    };
    let rejections = Arc::new(Rejections::default());
    let pipeline = Arc::new(Pipeline {
        store: store.clone(),
        inventory: inventory.clone(),
        metrics: metrics.clone(),
        rejections: rejections.clone(),
        limits: config.limits,
        sinks,
        clock: options.clock.clone(),
        gaps: Default::default(),
        keyring: keyring.clone(),
    });
    let line_protocol = Arc::new(LineProtocol::new(Some(config.data_dir.clone()), pipeline.clone(), &metrics));
    let restored = line_protocol.restore(&inventory).context("reading the external devices' registrations")?;
    if restored > 0 {
        tracing::info!(message = "Restored devices first seen through line protocol.", devices = restored);
    }
    let commands = crate::command::Commander::open(
        &config.data_dir,
        source.downlink.clone(),
        &source.command_acks,
        options.clock.clone(),
        &tasks,
        shutdown.clone(),
    )
    .context("opening the command signing key and audit log")?;
    // Broadcasts go through the same Commander: one key, one id sequence, one ack stream.
    let broadcasts = crate::broadcast::Broadcasts::open(crate::broadcast::BroadcastOptions {
        data_dir: config.data_dir.clone(),
        config: options.broadcast,
        inventory: inventory.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
        clock: options.clock.clone(),
        path: Arc::new(commands.clone()),
        shutdown: shutdown.clone(),
        tasks: tasks.clone(),
    })
    .context("starting emergency broadcasts")?;
    if let Some(alerts) = &alerts {
        alerts.watch_broadcasts(&broadcasts, &tasks, shutdown.clone());
    }
    let people = crate::people::People::open(&config.data_dir, config.sessions, options.clock.clone(), &metrics)
        .context("opening the users and the people's audit log")?;
    // Everything that consumes the source's output exists: run it.
    mqtt_source.run(pipeline, &tasks, shutdown.clone());

    let ready: Arc<AtomicBool> = source.subscribed.clone();
    let state = AppState {
        store,
        inventory,
        metrics,
        rejections,
        tokens: Tokens::new(&config.tokens),
        public_read: options.public_read,
        ready,
        clock: options.clock,
        alerts,
        broadcasts,
        commands,
        line_protocol,
        people,
    };
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .with_context(|| format!("binding the HTTP API to {}", config.http))?;
    let http = listener.local_addr()?;
    let mut app = api::app(state.clone());
    app = app.merge(crate::enrol::routes(enrolment.clone(), state.tokens.clone()));
    if let Some(extra) = options.extra_routes {
        app = app.merge(extra);
    }
    // Sessions and the audit log reach every route, the merged ones too (crate::auth).
    app = app.layer(axum::Extension(state.people.gate()));
    let stop = shutdown.clone();
    let (limits, metrics) = (config.limits, state.metrics.clone());
    if let Some(files) = open_files_limit()
        && (limits.http_max_connections as u64).saturating_add(FILES_BESIDES_HTTP) > files
    {
        tracing::warn!(
            message = "The HTTP connection cap and what else ingest keeps open may not fit the open-files limit: raise the limit (ulimit -n, LimitNOFILE=) or lower limits.http_max_connections.",
            open_files_limit = files,
            http_max_connections = limits.http_max_connections
        );
    }
    tasks.spawn("http-server", async move {
        api::serve::serve(listener, app, limits, metrics, stop).await;
    });
    tracing::info!(
        message = "Ingest started.",
        %http,
        http_max_connections = limits.http_max_connections,
        http_header_timeout_secs = limits.http_header_timeout.as_secs_f64(),
        http_request_timeout_secs = limits.http_request_timeout.as_secs_f64()
    );
    Ok(Running { http, mqtt: mqtt_addr, broker_login, broker, enrolment, state, source, shutdown, tasks })
}

/// File descriptors ingest may need besides HTTP connections: the broker's gateways, the
/// store's files, logs, sinks. Only used to warn when the HTTP cap leaves too few.
const FILES_BESIDES_HTTP: u64 = 1_024;

/// The soft limit on open files (`RLIMIT_NOFILE`), if there is one.
pub fn open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rustix::process::getrlimit(rustix::process::Resource::Nofile).current
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Raises the soft limit on open files (`RLIMIT_NOFILE`) to the hard limit, so that the
/// embedded broker and HTTP do not run out of descriptors at the 1,024 most systems start
/// a process with; logs both figures. Returns `(before, after)` (`None`: unlimited, or not
/// a Unix). Called once at start by the `ingest` binary.
pub fn raise_open_files_limit() -> (Option<u64>, Option<u64>) {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let before = getrlimit(Resource::Nofile);
        if before.current != before.maximum {
            let raised = rustix::process::Rlimit { current: before.maximum, maximum: before.maximum };
            if let Err(error) = setrlimit(Resource::Nofile, raised) {
                tracing::warn!(message = "Cannot raise the open-files limit.", %error, soft = ?before.current, hard = ?before.maximum);
            }
        }
        let after = getrlimit(Resource::Nofile).current;
        tracing::info!(
            message = "Open-files limit (RLIMIT_NOFILE) set to the hard limit.",
            before = %before.current.map_or("unlimited".to_string(), |n| n.to_string()),
            now = %after.map_or("unlimited".to_string(), |n| n.to_string())
        );
        (before.current, after)
    }
    #[cfg(not(unix))]
    {
        (None, None)
    }
}

/// Drops expired partitions now and then every `interval`, with ingest's clock.
fn spawn_retention(
    tasks: &Tasks,
    store: Arc<Store>,
    clock: Clock,
    interval: std::time::Duration,
    stop: CancellationToken,
) {
    tasks.spawn("retention", async move {
        loop {
            let (s, now) = (store.clone(), clock());
            match tokio::task::spawn_blocking(move || s.enforce_retention(now)).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::error!(message = "Retention run failed.", %error),
                Err(error) => tracing::error!(message = "Retention task failed.", %error),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    });
}

/// Writes the keyring's freshness marks every [`crate::keyring::MARKS_EVERY`] when they
/// moved, and once more at stop.
fn spawn_marks_writer(
    tasks: &Tasks,
    keyring: Arc<crate::keyring::Keyring>,
    path: std::path::PathBuf,
    stop: CancellationToken,
) {
    tasks.spawn("freshness-marks", async move {
        loop {
            let stopping = tokio::select! {
                _ = stop.cancelled() => true,
                _ = tokio::time::sleep(crate::keyring::MARKS_EVERY) => false,
            };
            let (k, p) = (keyring.clone(), path.clone());
            match tokio::task::spawn_blocking(move || k.save_marks(&p)).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::warn!(message = "Freshness marks not written; retrying.", %error),
                Err(error) => tracing::warn!(message = "Freshness marks task failed.", %error),
            }
            if stopping {
                return;
            }
        }
    });
}

/// Enrols every gateway of the inventory that lists a public key (two during a
/// rotation); one without a key, or with a bad one, stays out (everything it sends is
/// refused) and is named in the log.
pub fn enrol_all(keyring: &crate::keyring::Keyring, inventory: &Inventory) {
    let mut enrolled = 0usize;
    for g in inventory.gateways() {
        let keys = g.public_keys();
        let key = (!keys.is_empty())
            .then(|| keys.iter().map(|k| crate::keyring::parse_public_key(k)).collect::<Result<Vec<_>, _>>());
        match key {
            Some(Ok(key)) => match keyring.set(&g.tenant, &g.id, &key) {
                Ok(prints) => {
                    enrolled += 1;
                    tracing::debug!(message = "Gateway enrolled.", gateway = %g.id, fingerprint = ?prints);
                }
                Err(error) => tracing::warn!(message = "Gateway key refused.", gateway = %g.id, %error),
            },
            Some(Err(error)) => tracing::warn!(message = "Gateway key refused.", gateway = %g.id, %error),
            None => tracing::warn!(
                message = "Gateway has no public key in the inventory: everything it sends is refused until it is enrolled.",
                gateway = %g.id
            ),
        }
    }
    tracing::info!(message = "Gateways enrolled.", enrolled, fingerprint_of_ingest = %protocol::auth::fingerprint(&keyring.public_key()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_closed_unless_opened_explicitly() {
        assert!(!Options::default().public_read);
        // Positive control: a caller (the demo) opens them by saying so.
        assert!(Options { public_read: true, ..Options::default() }.public_read);
    }

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        let (_, after) = raise_open_files_limit();
        #[cfg(unix)]
        assert_eq!(after, rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum);
        assert_eq!(open_files_limit(), after);
    }
}
