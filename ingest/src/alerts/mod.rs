//! Alerts: rule evaluation as a pipeline sink, the alert lifecycle, its log, notifiers
//! and the HTTP API.
//!
//! ```text
//! pipeline (durable readings) --Sink::accept--> queue --> evaluation task
//!                                                          rules::Evaluator -> Signal
//!                                                          Manager (lifecycle, log) -> AlertEvent
//! ingest clock --tick every second-----------------------^        |--> notifiers (webhook, MQTT,
//!                                                                  |    WeCom, DingTalk, Feishu;
//!                                                                  |    escalation routes)
//! API (ack, silences, approvals) --> Manager                      \--> subscribers (broadcasts)
//! ```
//!
//! Design constraints:
//! - The pipeline thread never waits for rules: [`Alerts::accept`] copies the readings
//!   into a bounded queue and returns; if evaluation falls that far behind, readings are
//!   dropped from evaluation (they are stored) and counted in
//!   `ingest_rules_queue_dropped`.
//! - One task owns the evaluator, on a thread of its own; the manager sits behind a mutex
//!   shared with the API.
//! - Time comes from readings and from ingest's injectable clock; ticks are driven by a
//!   tokio interval but evaluate at the clock's time, so accelerated simulations work.
//! - Rules reload without a restart when their files change (or on request); an invalid
//!   pack is refused with every error and the old rules keep running.

pub mod api;
pub mod config;
pub mod escalation;
pub mod log;
pub mod manager;
pub mod model;
pub mod notice;
pub mod notify;
pub mod text;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime};

use conf::ConfigErrors;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use protocol::{Reading, Timestamp};
use store::Store;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::inventory::Inventory;
use crate::metrics::Metrics;
use crate::rules::config::{Rule, RuleSet};
use crate::rules::eval::Evaluator;
use crate::sinks::Sink;
use crate::sources::mqtt::Downlink;
use crate::tasks::Tasks;
use crate::time::Clock;
pub use config::AlertsConfig;
pub use manager::{AlertEvent, Lifecycle, Manager};

/// Readings waiting for evaluation before the newest are dropped.
const QUEUE: usize = 4096;

/// Why alerts did not start.
#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    /// A rule pack is invalid.
    #[error("rule packs refused:\n{0}")]
    Rules(#[from] ConfigErrors),
    /// The alert log could not be opened.
    #[error(transparent)]
    Log(#[from] log::LogError),
    /// The evaluation thread could not be started.
    #[error("starting the rules thread: {0}")]
    Thread(std::io::Error),
}

/// Label of a severity.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SeverityLabel {
    /// `info`, `warning`, `critical`.
    pub severity: &'static str,
}

/// The alert metrics, registered under ingest's prefix.
#[derive(Clone)]
struct AlertMetrics {
    firing: Family<SeverityLabel, Gauge>,
    evaluation: Histogram,
    readings: Counter,
    dropped: Counter,
    reloads: Family<SeverityLabel, Counter>,
    latency: Histogram,
}

impl AlertMetrics {
    fn register(m: &Metrics) -> AlertMetrics {
        let a = AlertMetrics {
            firing: Family::default(),
            evaluation: Histogram::new(exponential_buckets(1e-6, 4.0, 12)),
            readings: Counter::default(),
            dropped: Counter::default(),
            reloads: Family::default(),
            latency: Histogram::new(exponential_buckets(1e-4, 2.0, 16)),
        };
        m.register("alerts_firing", "Open alerts (firing or acknowledged) by severity", a.firing.clone());
        m.register("rules_evaluation_seconds", "Time to evaluate one group of durable readings", a.evaluation.clone());
        m.register("rules_readings", "Readings evaluated by the rules", a.readings.clone());
        m.register("rules_queue_dropped", "Readings not evaluated because the rule queue was full", a.dropped.clone());
        m.register("rules_reloads", "Rule reloads by outcome (the label says ok or refused)", a.reloads.clone());
        m.register(
            "rules_queue_seconds",
            "Time readings waited between the pipeline and the evaluation task",
            a.latency.clone(),
        );
        a
    }
}

enum Msg {
    Readings(Vec<Reading>, Instant),
    Tick(Timestamp),
    Flush(oneshot::Sender<()>),
    Reload(oneshot::Sender<Result<usize, ConfigErrors>>),
}

/// How to start alerts.
#[derive(Debug, Clone, Default)]
pub struct AlertsOptions {
    /// The config (rule packs, damping, notifiers).
    pub config: AlertsConfig,
    /// Tick period (wall time) of the time-driven rules; default one second.
    pub tick_every: Option<Duration>,
    /// Do not tick by wall time at all: the caller calls [`Alerts::tick`] (tests that step
    /// simulated time by hand).
    pub manual_ticks: bool,
    /// Where MQTT notifiers publish (the MQTT source's, from its connect step); `None`
    /// (alerts without MQTT, as in tests) drops their events, counted as `dropped`.
    pub downlink: Option<Downlink>,
    /// Where alerts' tasks are tracked, so that a stop waits for them (the service's).
    pub tasks: Tasks,
}

struct Shared {
    tx: mpsc::Sender<Msg>,
    manager: Mutex<Manager>,
    rules: RwLock<Vec<Arc<Rule>>>,
    inventory: Arc<Inventory>,
    metrics: AlertMetrics,
    events: broadcast::Sender<AlertEvent>,
    clock: Clock,
    /// Finished broadcasts, for the notifiers that take their outcomes.
    outcomes: mpsc::Sender<notify::BroadcastOutcome>,
}

/// The alerts service: a pipeline sink, and the handle the API and tests use.
#[derive(Clone)]
pub struct Alerts {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts").finish_non_exhaustive()
    }
}

/// What alerts need from the rest of ingest.
pub struct Deps {
    /// History for baselines.
    pub store: Arc<Store>,
    /// Devices and their places.
    pub inventory: Arc<Inventory>,
    /// Where metrics are registered.
    pub metrics: Arc<Metrics>,
    /// Ingest's clock.
    pub clock: Clock,
    /// Ingest's data dir (the log goes to `alerts/`).
    pub data_dir: PathBuf,
}

fn load_rules(config: &AlertsConfig) -> Result<RuleSet, ConfigErrors> {
    match &config.rules {
        Some(path) => RuleSet::load(path),
        None => RuleSet::defaults(),
    }
}

/// Newest modification time among the rule files (and the directory itself).
fn rules_mtime(config: &AlertsConfig) -> Option<SystemTime> {
    let path = config.rules.as_ref()?;
    let mut newest = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    if let Ok(files) = crate::rules::config::pack_files(path) {
        for f in files {
            let t = std::fs::metadata(&f).and_then(|m| m.modified()).ok();
            newest = newest.max(t);
        }
    }
    newest
}

impl Alerts {
    /// Loads the rules, restores the alert log and starts the evaluation task.
    pub fn start(opts: AlertsOptions, deps: Deps, shutdown: CancellationToken) -> Result<Alerts, AlertsError> {
        let set = load_rules(&opts.config)?;
        tracing::info!(message = "Rules loaded.", rules = set.rules.len(), kinds = ?crate::rules::config::census(&set.rules));
        let (events, _) = broadcast::channel(4096);
        let manager = Manager::open(
            &deps.data_dir.join("alerts"),
            opts.config.lifecycle,
            deps.inventory.clone(),
            events.clone(),
        )?;
        let metrics = AlertMetrics::register(&deps.metrics);
        let notify_counter: Family<notify::NotifyLabel, Counter> = Family::default();
        deps.metrics.register(
            "alert_notifications",
            "Alert notifications by notifier and outcome",
            notify_counter.clone(),
        );
        let open = manager.alerts(|a| a.state.is_open(), usize::MAX);
        let (outcomes_tx, outcomes_rx) = mpsc::channel(256);
        let evaluator = Evaluator::new(set.rules, deps.inventory.clone(), Some(deps.store.clone()));
        let (tx, rx) = mpsc::channel(QUEUE);
        let shared = Arc::new(Shared {
            tx,
            manager: Mutex::new(manager),
            rules: RwLock::new(evaluator.rules().to_vec()),
            inventory: deps.inventory,
            metrics,
            events: events.clone(),
            clock: deps.clock.clone(),
            outcomes: outcomes_tx,
        });
        let alerts = Alerts { shared };
        // Fan events out to the notifiers, through the escalation routes.
        let (lookup, texts) = (alerts.clone(), alerts.clone());
        notify::start(
            notify::HubDeps {
                notifiers: opts.config.notifiers.clone(),
                routes: opts.config.routes.clone(),
                downlink: opts.downlink.clone(),
                counter: notify_counter,
                clock: deps.clock,
                events: events.subscribe(),
                outcomes: outcomes_rx,
                escalations: deps.data_dir.join("alerts").join("escalations.json"),
                open,
                lookup: Arc::new(move |id| lookup.with_manager(|m| m.alert(id).cloned())),
                texts: Arc::new(move || texts.texts()),
                check_every: opts.tick_every.unwrap_or(Duration::from_secs(1)),
            },
            &opts.tasks,
            shutdown.clone(),
        );
        let task = EvalTask {
            alerts: alerts.clone(),
            evaluator,
            config: opts.config.clone(),
            mtime: rules_mtime(&opts.config),
        };
        let tick_every = (!opts.manual_ticks).then(|| opts.tick_every.unwrap_or(Duration::from_secs(1)));
        // Evaluation gets a thread of its own (with a single-threaded runtime for its timer
        // and queue), so that it is scheduled by the OS beside the pipeline instead of
        // waiting in the shared runtime's queue behind HTTP, MQTT and notifier tasks.
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_time().build().map_err(AlertsError::Thread)?;
        opts.tasks
            .spawn_thread("rules", move || runtime.block_on(task.run(rx, tick_every, shutdown)))
            .map_err(AlertsError::Thread)?;
        Ok(alerts)
    }

    fn manager(&self) -> MutexGuard<'_, Manager> {
        self.shared.manager.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the manager (API handlers).
    pub fn with_manager<T>(&self, f: impl FnOnce(&mut Manager) -> T) -> T {
        f(&mut self.manager())
    }

    /// Ingest's clock now.
    pub fn now(&self) -> Timestamp {
        (self.shared.clock)()
    }

    /// The rules running now.
    pub fn rules(&self) -> Vec<Arc<Rule>> {
        self.shared.rules.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The inventory rules select from.
    pub fn inventory(&self) -> &Arc<Inventory> {
        &self.shared.inventory
    }

    /// The words of alerts for people (site names, rule names, units), as they are now.
    pub fn texts(&self) -> text::Texts {
        text::Texts::new(&self.shared.inventory, &self.rules())
    }

    /// Tells the notifiers that take broadcast outcomes how each broadcast of `broadcasts`
    /// went when it finishes (played N of M, and why the others did not).
    pub fn watch_broadcasts(
        &self,
        broadcasts: &crate::broadcast::Broadcasts,
        tasks: &Tasks,
        shutdown: CancellationToken,
    ) {
        let mut live = broadcasts.subscribe();
        let (b, tx, clock) = (broadcasts.clone(), self.shared.outcomes.clone(), self.shared.clock.clone());
        tasks.spawn("broadcast-outcomes", async move {
            loop {
                let l = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    l = live.recv() => match l {
                        Ok(l) => l,
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(message = "Broadcast outcomes fell behind; some may not be notified.", skipped = n);
                            continue;
                        }
                        Err(_) => return,
                    },
                };
                let (true, Some(id)) = (l.name == "finished", l.broadcast) else { continue };
                let Some((_, view)) = b.view(id) else { continue };
                if let Some(o) = notify::BroadcastOutcome::from_view(&view, clock())
                    && tx.try_send(o).is_err()
                {
                    tracing::warn!(message = "Broadcast outcome not notified: the queue is full.", broadcast = id);
                }
            }
        });
    }

    /// Events as they happen (firing, resolved, acknowledged, proposals and approvals).
    pub fn subscribe(&self) -> broadcast::Receiver<AlertEvent> {
        self.shared.events.subscribe()
    }

    /// Evaluates the time-driven rules at `now` (for callers that step time by hand).
    pub async fn tick(&self, now: Timestamp) {
        let _ = self.shared.tx.send(Msg::Tick(now)).await;
    }

    /// Returns once everything queued before the call has been evaluated.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.shared.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Queues readings for evaluation, waiting for room instead of dropping (for callers
    /// off the pipeline thread: replays, simulations).
    pub async fn feed(&self, readings: Vec<Reading>) {
        let _ = self.shared.tx.send(Msg::Readings(readings, Instant::now())).await;
    }

    /// Reloads the rule packs now; on error the running rules stay.
    pub async fn reload(&self) -> Result<usize, ConfigErrors> {
        let (tx, rx) = oneshot::channel();
        if self.shared.tx.send(Msg::Reload(tx)).await.is_err() {
            return Ok(0);
        }
        rx.await.unwrap_or(Ok(0))
    }

    fn update_gauges(&self, m: &Manager) {
        let n = m.firing_by_severity();
        for s in model::Severity::ALL {
            self.shared.metrics.firing.get_or_create(&SeverityLabel { severity: s.as_str() }).set(n[s as usize]);
        }
    }
}

impl Sink for Alerts {
    fn name(&self) -> &'static str {
        "rules"
    }

    fn accept(&self, _tenant: &str, readings: &[Reading]) {
        if self.shared.tx.try_send(Msg::Readings(readings.to_vec(), Instant::now())).is_err() {
            self.shared.metrics.dropped.inc_by(readings.len() as u64);
        }
    }
}

struct EvalTask {
    alerts: Alerts,
    evaluator: Evaluator,
    config: AlertsConfig,
    mtime: Option<SystemTime>,
}

impl EvalTask {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>, tick_every: Option<Duration>, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(tick_every.unwrap_or(Duration::from_secs(3600)));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        loop {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = interval.tick(), if tick_every.is_some() => {
                    ticks += 1;
                    if ticks.is_multiple_of(5) {
                        self.check_reload();
                    }
                    Msg::Tick(self.alerts.now())
                }
                m = rx.recv() => match m { Some(m) => m, None => break },
            };
            self.handle(msg);
            // Take whatever else is waiting before syncing the log once.
            while let Ok(m) = rx.try_recv() {
                self.handle(m);
            }
            let mut m = self.alerts.manager();
            if let Err(error) = m.sync() {
                tracing::error!(message = "Alert log sync failed.", %error);
            }
        }
        let mut m = self.alerts.manager();
        let _ = m.sync();
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Readings(readings, queued) => {
                let metrics = &self.alerts.shared.metrics;
                metrics.latency.observe(queued.elapsed().as_secs_f64());
                let started = Instant::now();
                let signals = self.evaluator.readings(&readings);
                metrics.evaluation.observe(started.elapsed().as_secs_f64());
                metrics.readings.inc_by(readings.len() as u64);
                if !signals.is_empty() {
                    self.apply(signals, None);
                }
            }
            Msg::Tick(now) => {
                let signals = self.evaluator.tick(now.0);
                self.apply(signals, Some(now));
            }
            Msg::Flush(done) => {
                let _ = done.send(());
            }
            Msg::Reload(reply) => {
                let r = self.reload();
                let _ = reply.send(r);
            }
        }
    }

    fn apply(&mut self, signals: Vec<crate::rules::eval::Signal>, tick: Option<Timestamp>) {
        let now = tick.unwrap_or_else(|| self.alerts.now());
        let mut m = self.alerts.manager();
        let result = m.apply(signals, now).and_then(|()| if tick.is_some() { m.tick(now) } else { Ok(()) });
        if let Err(error) = result {
            tracing::error!(message = "Alert log write failed.", %error);
        }
        self.alerts.update_gauges(&m);
    }

    fn check_reload(&mut self) {
        let mtime = rules_mtime(&self.config);
        if mtime != self.mtime {
            self.mtime = mtime;
            let _ = self.reload();
        }
    }

    fn reload(&mut self) -> Result<usize, ConfigErrors> {
        let label = |ok: bool| SeverityLabel { severity: if ok { "ok" } else { "refused" } };
        match load_rules(&self.config) {
            Ok(set) => {
                let n = set.rules.len();
                let cleared = self.evaluator.replace_rules(set.rules);
                *self.alerts.shared.rules.write().unwrap_or_else(|e| e.into_inner()) = self.evaluator.rules().to_vec();
                let now = self.alerts.now();
                self.apply(cleared, Some(now));
                self.alerts.shared.metrics.reloads.get_or_create(&label(true)).inc();
                tracing::info!(message = "Rules reloaded.", rules = n);
                Ok(n)
            }
            Err(errors) => {
                self.alerts.shared.metrics.reloads.get_or_create(&label(false)).inc();
                tracing::error!(message = "Rule reload refused; the running rules stay.", errors = %errors);
                Err(errors)
            }
        }
    }
}
