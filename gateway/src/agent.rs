//! The agent: wires pollers, the batcher, the queue, commands, local rules and the uplink
//! together and runs them until shutdown.
//!
//! ```text
//! pollers (one per endpoint) --PollEvent--> batcher --seal+fsync--> queue <--> uplink <--> broker
//!      ^  \--> health ------------------------------------------------------/ (status)
//!      |   \--> local rules --+
//!      +-- Jobs <-- executor <-+-- downlink commands (verified) --> acks --> uplink
//!                  (writes, mailbox deliveries, speakers' command logs followed until final)
//!                                   downlink config --> validated --> pollers restarted
//! ```
//! The batcher seals what the pollers produced every `publish.interval` (or at
//! `publish.max_readings`), syncs it to disk, adds the gateway's own queue readings every
//! health interval, and wakes the uplink.
//!
//! A configuration received on the retained config topic is validated like a file; if it
//! is valid and changes only what can change at run time (devices, buses, rules, publish
//! and health settings) the pollers are restarted on it, otherwise it is refused and the
//! old one keeps running. Either way the outcome is in the retained status.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use conf::{ConfigErrors, Source};
use protocol::status::ConfigReport;
use protocol::topic::{self, Channel};
use protocol::{Metric, Reading};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::command::{Executor, Route};
use crate::config::{GatewayConfig, Transport};
use crate::health::Health;
use crate::identity::Identity;
use crate::modbus::{Attempts, DeviceReader, Endpoint, Link};
use crate::poll::{self, PollEvent, Scheduled};
use crate::profile::Library;
use crate::queue::{Queue, QueueError};
use crate::rules::{Firing, RuleAction, Rules};
use crate::trust::Trust;
use crate::uplink::{self, Downlink, Outgoing, Shared, UplinkError};
use daemon::Clock;

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The queue could not be opened.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The uplink could not be set up.
    #[error(transparent)]
    Uplink(#[from] UplinkError),
    /// The gateway's key could not be loaded or made.
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    /// Message authentication could not be set up.
    #[error(transparent)]
    Trust(#[from] crate::trust::TrustError),
}

/// A configured gateway, ready to run.
pub struct Gateway {
    config: GatewayConfig,
    library: Library,
    clock: Clock,
}

/// The running pollers of one configuration.
struct Pollers {
    tasks: JoinSet<()>,
    stop: CancellationToken,
}

impl Gateway {
    /// Checks the config against the library.
    pub fn new(config: GatewayConfig, library: Library, clock: Clock) -> Result<Gateway, ConfigErrors> {
        config.validate(&library)?;
        Ok(Gateway { config, library, clock })
    }

    /// Runs until `shutdown` is cancelled, logging a fatal error (a queue directory that
    /// cannot be opened) instead of returning it. See [`Gateway::try_run`].
    pub async fn run(self, shutdown: CancellationToken) {
        let gateway = self.config.gateway.clone();
        if let Err(error) = self.try_run(shutdown).await {
            tracing::error!(message = "Gateway stopped on an error.", %gateway, %error);
        }
    }

    /// Runs until `shutdown` is cancelled; then seals what is pending, says goodbye to the
    /// broker and returns.
    pub async fn try_run(self, shutdown: CancellationToken) -> Result<(), GatewayError> {
        let Gateway { mut config, library, clock } = self;
        uplink::check(&config)?;
        let (queue, report) = {
            let (gw, codec, qc) = (config.gateway.clone(), config.mqtt.codec, config.queue.clone());
            tokio::task::spawn_blocking(move || Queue::open(&gw, codec, &qc))
                .await
                .unwrap_or_else(|e| Err(QueueError::Io { path: "queue".into(), source: std::io::Error::other(e) }))?
        };
        tracing::info!(
            message = "Queue open.",
            gateway = %config.gateway,
            dir = ?config.queue.dir,
            unconfirmed = report.batches,
            next_seq = report.next_seq,
            torn_bytes = report.torn_bytes
        );
        let shared = Arc::new(Shared::new(queue));
        let dir = config.queue.dir.clone();
        let (identity, origin) = Identity::load_or_create(dir.as_deref())?;
        tracing::info!(
            message = "Gateway key ready.",
            gateway = %config.gateway,
            fingerprint = %identity.fingerprint(),
            public_key = %identity.public_hex(),
            origin = ?origin
        );
        if origin == crate::identity::Origin::Created {
            tracing::warn!(
                message = "Made a new gateway key: ingest refuses everything from this gateway until the key is enrolled in its inventory.",
                gateway = %config.gateway,
                fingerprint = %identity.fingerprint()
            );
        }
        match config.command_key.map(|k| ed25519_dalek::VerifyingKey::from_bytes(&k)) {
            Some(Ok(ingest)) => {
                let trust = Trust::new(&identity, ingest, &config.tenant, &config.gateway, dir.as_deref())?;
                *shared.trust.lock().unwrap_or_else(|e| e.into_inner()) = Some(trust);
            }
            _ => tracing::warn!(
                message = "No command_key: nothing this gateway sends is authenticated, and ingest will refuse it.",
                gateway = %config.gateway
            ),
        }
        let health = Arc::new(Health::default());
        let executor =
            Arc::new(Executor::new(&config.gateway, config.command_key, config.queue.dir.as_deref(), clock.clone()));
        let (tx, mut rx) = mpsc::channel::<PollEvent>(1024);
        let (down_tx, mut down_rx) = mpsc::channel::<Downlink>(64);
        let (out_tx, out_rx) = mpsc::channel::<Outgoing>(256);
        let mut pollers = start_pollers(&config, &library, &health, &executor, &clock, &tx);
        let mut rules = Rules::new(config.rules.clone());

        let uplink_stop = CancellationToken::new();
        // In a JoinSet so that dropping this future (an aborted task) ends the uplink too.
        let mut uplink = JoinSet::new();
        uplink.spawn(uplink::run(
            config.clone(),
            shared.clone(),
            health.clone(),
            clock.clone(),
            down_tx,
            out_rx,
            uplink_stop.clone(),
        ));
        tracing::info!(message = "Gateway started.", gateway = %config.gateway, devices = config.devices.len());

        let ack_topic = topic::topic(&config.tenant, &config.gateway, Channel::CommandAck);
        let mut actions = JoinSet::new();
        // Every ack (a write's, a speaker's progress, a refusal seen in a speaker's log)
        // goes to the uplink through one forwarder.
        let (ack_tx, mut ack_rx) = mpsc::channel::<protocol::command::CommandAck>(1024);
        {
            let (out, topic) = (out_tx.clone(), ack_topic.clone());
            actions.spawn(async move {
                while let Some(ack) = ack_rx.recv().await {
                    let payload = serde_json::to_vec(&ack).unwrap_or_default();
                    if out.send(Outgoing { topic: topic.clone(), payload }).await.is_err() {
                        return;
                    }
                }
            });
        }
        let mut pending: Vec<Reading> = Vec::new();
        let mut seal_every = tokio::time::interval(config.publish.interval);
        let mut stats_every = tokio::time::interval(config.health_interval);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                ev = rx.recv() => match ev {
                    Some(PollEvent::Readings(r)) => {
                        let offline = !shared.connected.load(Ordering::Relaxed);
                        for firing in rules.evaluate(&r, offline) {
                            actions.spawn(act(executor.clone(), firing));
                        }
                        pending.extend(r);
                        if pending.len() >= config.publish.max_readings {
                            seal(&config, &shared, &clock, &mut pending).await;
                        }
                    }
                    Some(PollEvent::HealthChanged) => {
                        shared.status_dirty.store(true, Ordering::Relaxed);
                        shared.wake.notify_one();
                    }
                    Some(PollEvent::CommandLog { device, words }) => {
                        for ack in executor.on_log(&device, &words) {
                            let _ = ack_tx.try_send(ack);
                        }
                    }
                    None => break,
                },
                Some(message) = down_rx.recv() => {
                    // Commands that arrived together are verified together, in order, with
                    // one fsync of the replay window; each is then carried out on its own
                    // task, where a broadcast is followed on its speaker until final.
                    tokio::task::yield_now().await;
                    let mut wires = Vec::new();
                    let mut configs = Vec::new();
                    let mut next = Some(message);
                    while let Some(m) = next.take().or_else(|| down_rx.try_recv().ok()) {
                        match m {
                            Downlink::Command(wire) => wires.push(wire),
                            Downlink::Config { version, text } => configs.push((version, text)),
                        }
                    }
                    let refs: Vec<&[u8]> = wires.iter().map(Vec::as_slice).collect();
                    let admitted = executor.admit_all(&refs);
                    for (wire, result) in wires.into_iter().zip(admitted) {
                        match result {
                            Ok(cmd) => {
                                let (executor, acks) = (executor.clone(), ack_tx.clone());
                                actions.spawn(async move { executor.carry_out(cmd, &wire, &acks).await });
                            }
                            Err(refusal) => {
                                let _ = ack_tx.try_send(refusal);
                            }
                        }
                    }
                    for (version, text) in configs {
                        if let Some(new) = reconfigure(&config, &library, &shared, &clock, &text) {
                            if let Some(t) = shared.trust.lock().unwrap_or_else(|e| e.into_inner()).as_mut()
                                && let Err(error) = t.config_applied(version)
                            {
                                tracing::error!(message = "Cannot persist the configuration version.", %error);
                            }
                            pollers.stop.cancel();
                            pollers.tasks.shutdown().await;
                            config = new;
                            pollers = start_pollers(&config, &library, &health, &executor, &clock, &tx);
                            rules = Rules::new(config.rules.clone());
                            seal_every = tokio::time::interval(config.publish.interval);
                            stats_every = tokio::time::interval(config.health_interval);
                        }
                        shared.status_dirty.store(true, Ordering::Relaxed);
                        shared.wake.notify_one();
                    }
                }
                Some(_) = actions.join_next(), if !actions.is_empty() => {}
                _ = seal_every.tick() => seal(&config, &shared, &clock, &mut pending).await,
                _ = stats_every.tick() => pending.extend(queue_readings(&config, &shared, &clock)),
            }
        }
        seal(&config, &shared, &clock, &mut pending).await;
        pollers.stop.cancel();
        pollers.tasks.shutdown().await;
        actions.shutdown().await;
        // Give the uplink a moment to send what was just sealed, then let it say goodbye.
        shared.wake.notify_one();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        uplink_stop.cancel();
        let result = uplink.join_next().await.and_then(Result::ok).unwrap_or(Ok(()));
        if let Err(error) = &result {
            tracing::error!(message = "The uplink stopped on an error.", gateway = %config.gateway, %error);
        }
        tracing::info!(message = "Gateway stopped.", gateway = %config.gateway);
        result.map_err(GatewayError::from)
    }
}

/// Starts one polling task per endpoint and points the executor at them.
fn start_pollers(
    config: &GatewayConfig,
    library: &Library,
    health: &Arc<Health>,
    executor: &Executor,
    clock: &Clock,
    tx: &mpsc::Sender<PollEvent>,
) -> Pollers {
    let mut endpoints: BTreeMap<String, (Endpoint, Vec<Scheduled>)> = BTreeMap::new();
    let mut routes = HashMap::new();
    let mut senders: HashMap<String, mpsc::Sender<crate::modbus::Job>> = HashMap::new();
    let mut receivers = HashMap::new();
    health.retain(config.devices.iter().map(|d| d.id.as_str()));
    for d in &config.devices {
        let Some(profile) = library.get(&d.profile) else { continue };
        let (key, endpoint) = match &d.transport {
            Transport::Tcp(addr) => (format!("tcp:{addr}"), Endpoint::Tcp(*addr)),
            Transport::Rtu(bus) => match config.bus(bus) {
                Some(b) => (format!("rtu:{bus}"), Endpoint::Rtu(b.clone())),
                None => continue,
            },
        };
        health.register(&d.id, profile.kind, &profile.model);
        let attempts = Attempts { timeout: d.timeout, retries: d.retries, backoff: d.retry_backoff };
        let jobs = senders
            .entry(key.clone())
            .or_insert_with(|| {
                let (jtx, jrx) = mpsc::channel(16);
                receivers.insert(key.clone(), jrx);
                jtx
            })
            .clone();
        routes.insert(d.id.clone(), Route { profile: profile.clone(), unit: d.unit, attempts, jobs });
        endpoints
            .entry(key)
            .or_insert_with(|| (endpoint, Vec::new()))
            .1
            .push(Scheduled { reader: DeviceReader::new(&d.id, d.unit, profile, attempts), interval: d.interval });
    }
    executor.set_routes(routes);
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    for (key, (endpoint, devices)) in endpoints {
        let Some(jobs) = receivers.remove(&key) else { continue };
        tasks.spawn(poll::run_endpoint(
            Link::new(endpoint),
            devices,
            jobs,
            health.clone(),
            config.health_interval,
            clock.clone(),
            tx.clone(),
            stop.clone(),
        ));
    }
    Pollers { tasks, stop }
}

/// Validates a configuration from the config topic. Returns it if it may be applied now;
/// records the outcome for the status either way.
fn reconfigure(
    running: &GatewayConfig,
    library: &Library,
    shared: &Shared,
    clock: &Clock,
    text: &[u8],
) -> Option<GatewayConfig> {
    let name = topic::topic(&running.tenant, &running.gateway, Channel::Config);
    let digest = format!("{:08x}", crc32fast::hash(text));
    let parsed = match std::str::from_utf8(text) {
        Ok(t) => GatewayConfig::from_source(&Source::from_text(&name, t), library).map_err(|e| e.0),
        Err(_) => Err(vec![conf::ConfigError {
            file: name.clone().into(),
            line: None,
            column: None,
            reason: "configuration is not UTF-8 text".into(),
        }]),
    };
    let checked = parsed.map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>()).and_then(|new| {
        let mut frozen = Vec::new();
        if new.gateway != running.gateway || new.tenant != running.tenant {
            frozen.push("gateway and tenant");
        }
        if new.mqtt != running.mqtt {
            frozen.push("[mqtt]");
        }
        if new.queue != running.queue {
            frozen.push("[queue]");
        }
        if new.command_key != running.command_key {
            frozen.push("command_key");
        }
        if new.profile_dirs != running.profile_dirs {
            frozen.push("profile_dirs");
        }
        if frozen.is_empty() {
            Ok(new)
        } else {
            Err(vec![format!("{name}: {} can only change with a restart; nothing was applied", frozen.join(", "))])
        }
    });
    let (applied, errors, new) = match checked {
        Ok(new) => (true, Vec::new(), Some(new)),
        Err(errors) => (false, errors, None),
    };
    if applied {
        tracing::info!(message = "Applied a new configuration.", %digest);
    } else {
        tracing::warn!(message = "Refused a configuration; the old one keeps running.", %digest, errors = ?errors);
    }
    *shared.config_report.lock().unwrap_or_else(|e| e.into_inner()) =
        Some(ConfigReport { digest, applied, errors, ts: clock() });
    new
}

/// Carries out what a local rule asks for.
async fn act(executor: Arc<Executor>, firing: Firing) {
    let (rule, clearing) = match &firing {
        Firing::Fire(r) => (r, false),
        Firing::Clear(r) => (r, true),
    };
    let result = match (&rule.action, clearing) {
        (RuleAction::Write { device, point, value, .. }, false) => {
            executor.write_point(device, point, *value).await.map(|_| ())
        }
        (RuleAction::Write { device, point, clear_value: Some(v), .. }, true) => {
            executor.write_point(device, point, *v).await.map(|_| ())
        }
        (RuleAction::Deliver { device, envelope }, false) => executor.deliver_prepared(device, envelope).await,
        _ => return,
    };
    match result {
        Ok(()) => tracing::warn!(message = "Local rule acted.", rule = %rule.name, cleared = clearing),
        Err(error) => tracing::error!(message = "Local rule could not act.", rule = %rule.name, ?error),
    }
}

/// Seals pending readings into batches, syncs them to disk, and lets the uplink send them.
async fn seal(config: &GatewayConfig, shared: &Shared, clock: &Clock, pending: &mut Vec<Reading>) {
    if pending.is_empty() {
        return;
    }
    let handle = {
        let mut q = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        for chunk in std::mem::take(pending).chunks(config.publish.max_readings) {
            if let Err(error) = q.push(chunk.to_vec(), clock()) {
                tracing::error!(message = "Cannot write a batch to the queue; its readings are lost.", %error, readings = chunk.len());
            }
        }
        q.sync_handle()
    };
    if let Some((file, upto)) = handle {
        match tokio::task::spawn_blocking(move || file.sync_data()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(message = "Cannot sync the queue; batches wait until a sync succeeds.", %error);
                return;
            }
            Err(error) => {
                tracing::error!(message = "Queue sync task failed.", %error);
                return;
            }
        }
        shared.queue.lock().unwrap_or_else(|e| e.into_inner()).mark_durable(upto);
    }
    shared.wake.notify_one();
}

/// The gateway's own readings: how full its queue is and how old its oldest batch.
fn queue_readings(config: &GatewayConfig, shared: &Shared, clock: &Clock) -> Vec<Reading> {
    let now = clock();
    let s = shared.queue.lock().unwrap_or_else(|e| e.into_inner()).stats(now);
    let gw = config.gateway.as_str();
    vec![
        Reading::new(gw, Metric::new("queue_depth"), now, s.depth as f64),
        Reading::new(gw, Metric::new("queue_fill"), now, (s.fill * 1e4).round() / 1e4),
        Reading::new(gw, Metric::new("queue_oldest_age"), now, s.oldest_age_s.round()),
        Reading::new(gw, Metric::new("queue_dropped"), now, s.dropped as f64),
    ]
}
