//! The agent: wires pollers, the batcher, the queue and the uplink together and runs
//! them until shutdown.
//!
//! ```text
//! pollers (one per endpoint) --PollEvent--> batcher --seal--> queue <--> uplink <--> broker
//!                 \--> health ------------------------------------------/ (status)
//! ```
//! The batcher seals what the pollers produced every `publish.interval` (or at
//! `publish.max_readings`), adds the gateway's own queue readings every health interval,
//! and wakes the uplink.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use conf::ConfigErrors;
use protocol::{Metric, Reading};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::Clock;
use crate::config::{GatewayConfig, Transport};
use crate::health::Health;
use crate::modbus::{DeviceReader, Link};
use crate::poll::{self, PollEvent, Scheduled};
use crate::profile::Library;
use crate::queue::Queue;
use crate::uplink::{self, Shared};

/// A configured gateway, ready to run.
pub struct Gateway {
    config: GatewayConfig,
    library: Library,
    clock: Clock,
}

impl Gateway {
    /// Checks the config against the library.
    pub fn new(config: GatewayConfig, library: Library, clock: Clock) -> Result<Gateway, ConfigErrors> {
        config.validate(&library)?;
        Ok(Gateway { config, library, clock })
    }

    /// Runs until `shutdown` is cancelled; then seals what is pending, says goodbye to the
    /// broker and returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let Gateway { config, library, clock } = self;
        let health = Arc::new(Health::default());
        let (tx, mut rx) = mpsc::channel::<PollEvent>(1024);

        let mut endpoints: BTreeMap<SocketAddr, Vec<Scheduled>> = BTreeMap::new();
        for d in &config.devices {
            let Some(profile) = library.get(&d.profile) else { continue };
            health.register(&d.id, profile.kind, &profile.model);
            let Transport::Tcp(addr) = d.transport;
            endpoints
                .entry(addr)
                .or_default()
                .push(Scheduled { reader: DeviceReader::new(&d.id, d.unit, profile), interval: d.interval });
        }
        let timeouts: BTreeMap<SocketAddr, _> = config
            .devices
            .iter()
            .map(|d| {
                let Transport::Tcp(addr) = d.transport;
                (addr, d.timeout)
            })
            .collect();
        let mut tasks = tokio::task::JoinSet::new();
        for (addr, devices) in endpoints {
            let link = Link::new(addr, timeouts.get(&addr).copied().unwrap_or_default());
            tasks.spawn(poll::run_endpoint(
                link,
                devices,
                health.clone(),
                config.health_interval,
                clock.clone(),
                tx.clone(),
                shutdown.child_token(),
            ));
        }
        drop(tx);

        let shared = Arc::new(Shared {
            queue: std::sync::Mutex::new(Queue::new(&config.gateway, config.mqtt.codec, &config.queue)),
            wake: Notify::new(),
            status_dirty: false.into(),
        });
        let uplink_stop = CancellationToken::new();
        let uplink = tokio::spawn(uplink::run(
            config.clone(),
            shared.clone(),
            health.clone(),
            clock.clone(),
            uplink_stop.clone(),
        ));
        tracing::info!(message = "Gateway started.", gateway = %config.gateway, devices = config.devices.len());

        let mut pending: Vec<Reading> = Vec::new();
        let mut seal_every = tokio::time::interval(config.publish.interval);
        let mut stats_every = tokio::time::interval(config.health_interval);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                ev = rx.recv() => match ev {
                    Some(PollEvent::Readings(r)) => {
                        pending.extend(r);
                        if pending.len() >= config.publish.max_readings {
                            seal(&config, &shared, &clock, &mut pending);
                        }
                    }
                    Some(PollEvent::HealthChanged) => {
                        shared.status_dirty.store(true, Ordering::Relaxed);
                        shared.wake.notify_one();
                    }
                    None => break,
                },
                _ = seal_every.tick() => seal(&config, &shared, &clock, &mut pending),
                _ = stats_every.tick() => pending.extend(queue_readings(&config, &shared, &clock)),
            }
        }
        seal(&config, &shared, &clock, &mut pending);
        tasks.shutdown().await;
        // Give the uplink a moment to send what was just sealed, then let it say goodbye.
        shared.wake.notify_one();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        uplink_stop.cancel();
        let _ = uplink.await;
        tracing::info!(message = "Gateway stopped.", gateway = %config.gateway);
    }
}

fn seal(config: &GatewayConfig, shared: &Shared, clock: &Clock, pending: &mut Vec<Reading>) {
    if pending.is_empty() {
        return;
    }
    let mut q = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
    for chunk in std::mem::take(pending).chunks(config.publish.max_readings) {
        q.push(chunk.to_vec(), clock());
    }
    drop(q);
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
