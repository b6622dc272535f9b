//! Polling: one task per Modbus endpoint (a TCP address or an RS-485 bus), devices on it
//! polled one at a time on their own intervals; endpoints run in parallel.
//!
//! The task owns its link, so writes ([`Job`]s from commands and local rules) are queued
//! to it and run between polls, before the next due poll: one request at a time per bus.
//!
//! A poll that is late (the endpoint was busy with a slow device) runs at once and the
//! device's schedule moves on from its due time, skipping missed cycles rather than
//! bunching them up. Every poll's outcome goes to [`Health`]; readings and health
//! readings go to the batcher.

use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::Reading;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Clock;
use crate::health::Health;
use crate::modbus::{DeviceReader, Job, Link};

/// One device on an endpoint, with its schedule.
#[derive(Debug)]
pub struct Scheduled {
    /// How to read it.
    pub reader: DeviceReader,
    /// Poll interval.
    pub interval: Duration,
}

/// What pollers tell the rest of the gateway.
#[derive(Debug)]
pub enum PollEvent {
    /// Readings to batch (device readings and health readings).
    Readings(Vec<Reading>),
    /// A device went online or offline: the retained status should be republished.
    HealthChanged,
}

/// Polls the devices of one endpoint and runs its jobs until `shutdown`.
#[allow(clippy::too_many_arguments)]
pub async fn run_endpoint(
    mut link: Link,
    devices: Vec<Scheduled>,
    mut jobs: mpsc::Receiver<Job>,
    health: Arc<Health>,
    health_interval: Duration,
    clock: Clock,
    out: mpsc::Sender<PollEvent>,
    shutdown: CancellationToken,
) {
    if devices.is_empty() {
        return;
    }
    let start = tokio::time::Instant::now();
    // Spread first polls over a second so that a restart does not hit every device at once.
    let mut due: Vec<tokio::time::Instant> =
        (0..devices.len()).map(|i| start + Duration::from_millis((i as u64 * 1000) / devices.len() as u64)).collect();
    let mut first_poll = vec![true; devices.len()];
    loop {
        let (i, when) = match due.iter().enumerate().min_by_key(|(_, t)| **t) {
            Some((i, t)) => (i, *t),
            None => return,
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            Some(job) = jobs.recv() => {
                let result = link.run_job(job.unit, &job.ops, job.attempts).await;
                let _ = job.reply.send(result);
                continue;
            }
            _ = tokio::time::sleep_until(when) => {}
        }
        let dev = &devices[i];
        let started = Instant::now();
        let result = dev.reader.read(&mut link, || clock()).await;
        let outcome = match &result {
            Ok(_) => Ok(started.elapsed()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = &result {
            tracing::debug!(message = "Poll failed.", device = %dev.reader.id, endpoint = %link.endpoint(), error = %e);
        }
        let (mut readings, changed) = health.record(&dev.reader.id, outcome, Instant::now(), clock(), health_interval);
        if changed {
            match (&result, first_poll[i]) {
                (Ok(_), true) => tracing::debug!(message = "Device answered its first poll.", device = %dev.reader.id),
                (Ok(_), false) => tracing::info!(message = "Device is back online.", device = %dev.reader.id),
                (Err(e), _) => tracing::warn!(message = "Device is offline.", device = %dev.reader.id, error = %e),
            }
        }
        first_poll[i] = false;
        if let Ok(r) = result {
            readings.extend(r);
        }
        if !readings.is_empty() && out.send(PollEvent::Readings(readings)).await.is_err() {
            return;
        }
        if changed && out.send(PollEvent::HealthChanged).await.is_err() {
            return;
        }
        let now = tokio::time::Instant::now();
        let mut next = when + dev.interval;
        if next <= now {
            next = now + dev.interval;
        }
        due[i] = next;
    }
}
