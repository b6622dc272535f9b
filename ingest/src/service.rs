//! Starting and stopping the whole service: store, broker, pipeline, HTTP.
//!
//! One [`start`] serves both `ingest run` and `ingest demo` and the end-to-end tests, so
//! what the tests exercise is what runs in production. Ports may be 0: the bound
//! addresses come back in [`Running`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context as _;
use store::{Store, StoreConfig};
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::auth::Tokens;
use crate::config::{BrokerConfig, IngestConfig};
use crate::inventory::Inventory;
use crate::metrics::Metrics;
use crate::mqtt::{self, Connection, Source};
use crate::pipeline::validate::Rejections;
use crate::pipeline::{Clock, Pipeline, Sink};

/// What the caller may add to a plain configuration.
pub struct Options {
    /// The simulated county (demo mode): enables the fault endpoints.
    pub sim: Option<simulator::County>,
    /// Ingest's clock.
    pub clock: Clock,
    /// Whether reads need no token.
    pub public_read: bool,
    /// Further sinks to feed with durable readings.
    pub sinks: Vec<Arc<dyn Sink>>,
    /// The broadcast configuration; `None` reads `data_dir/broadcast.toml` or uses the defaults.
    pub broadcast: Option<crate::broadcast::config::BroadcastConfig>,
}

impl Default for Options {
    fn default() -> Options {
        Options { sim: None, clock: Arc::new(gateway::now), public_read: true, sinks: Vec::new(), broadcast: None }
    }
}

/// A running ingest.
pub struct Running {
    /// Where the HTTP API listens.
    pub http: SocketAddr,
    /// Where the embedded broker listens (`None` with an external broker).
    pub mqtt: Option<SocketAddr>,
    /// The API's state (store, inventory, metrics...).
    pub state: AppState,
    /// The MQTT source (downlink publishing, command acks).
    pub source: Source,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, finishes in-flight requests, and returns.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.server.await;
    }

    /// A token that is cancelled when the service stops.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// Starts ingest.
pub async fn start(config: IngestConfig, inventory: Inventory, options: Options) -> anyhow::Result<Running> {
    let shutdown = CancellationToken::new();
    let store_dir = config.data_dir.join("store");
    let (store, report) = tokio::task::spawn_blocking(move || Store::open(StoreConfig::new(store_dir)))
        .await
        .context("opening the store")??;
    tracing::info!(message = "Store open.", records = report.records, torn_bytes = report.torn_bytes);
    let store = Arc::new(store);

    let (conn, mqtt_addr) = match &config.broker {
        BrokerConfig::Embedded { listen } => {
            let listen = if listen.port() == 0 { crate::broker::free_local_addr()? } else { *listen };
            crate::broker::start(listen).await?;
            let host = if listen.ip().is_unspecified() { "127.0.0.1".to_string() } else { listen.ip().to_string() };
            (Connection { host, port: listen.port(), client_id: "ingest".into(), credentials: None }, Some(listen))
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

    let inventory = Arc::new(inventory);
    let metrics = Arc::new(Metrics::default());
    let rejections = Arc::new(Rejections::default());
    let pipeline = Arc::new(Pipeline {
        store: store.clone(),
        inventory: inventory.clone(),
        metrics: metrics.clone(),
        rejections: rejections.clone(),
        limits: config.limits,
        sinks: options.sinks,
        clock: options.clock.clone(),
    });
    let source = mqtt::start(conn, pipeline, shutdown.clone());
    let broadcasts = crate::broadcast::Broadcasts::open(crate::broadcast::BroadcastOptions {
        data_dir: config.data_dir.clone(),
        config: options.broadcast,
        inventory: inventory.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
        clock: options.clock.clone(),
        path: None,
        downlink: source.downlink.clone(),
        acks: source.command_acks.clone(),
        shutdown: shutdown.clone(),
    })
    .context("starting emergency broadcasts")?;

    let ready: Arc<AtomicBool> = source.subscribed.clone();
    let state = AppState {
        store,
        inventory,
        metrics,
        rejections,
        tokens: Tokens::new(&config.tokens),
        public_read: options.public_read,
        ready,
        sim: options.sim,
        clock: options.clock,
        broadcasts,
    };
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .with_context(|| format!("binding the HTTP API to {}", config.http))?;
    let http = listener.local_addr()?;
    let app = api::app(state.clone());
    let stop = shutdown.clone();
    let server = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await });
        if let Err(e) = serve.await {
            tracing::error!(message = "HTTP server failed.", error = %e);
        }
    });
    tracing::info!(message = "Ingest started.", %http);
    Ok(Running { http, mqtt: mqtt_addr, state, source, shutdown, server })
}
