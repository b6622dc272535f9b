//! Polling: one task per Modbus endpoint (a TCP address or an RS-485 bus), devices on it
//! polled one at a time on their own intervals; endpoints run in parallel.
//!
//! The task owns its link, so writes ([`Job`]s from commands and local rules) are queued
//! to it and run between polls, before the next due poll: one request at a time per bus.
//! Background jobs (looks at a command already delivered) run after every other job.
//!
//! A poll that is late (the endpoint was busy with a slow device) runs at once and the
//! device's schedule moves on from its due time, skipping missed cycles rather than
//! bunching them up. Every poll's outcome goes to [`Health`]; readings and health
//! readings go to the batcher.
//!
//! A device whose mailbox has a command log (a speaker) also has the log's sequence
//! register read after each poll; when it moved, the whole log is read and handed on
//! ([`PollEvent::CommandLog`]), so that a refusal of an envelope someone else wrote into
//! the mailbox reaches ingest within one poll interval.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::Reading;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::modbus::plan::Read;
use crate::modbus::{DeviceReader, Job, Link};
use daemon::Clock;

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
    /// A device's command log changed since the last poll: its words, for
    /// [`crate::command::Executor::on_log`].
    CommandLog {
        /// The device.
        device: String,
        /// The whole log block.
        words: Vec<u16>,
    },
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
    let mut log_seq: Vec<Option<u16>> = vec![None; devices.len()];
    let mut waiting: VecDeque<Job> = VecDeque::new();
    loop {
        let (i, when) = match due.iter().enumerate().min_by_key(|(_, t)| **t) {
            Some((i, t)) => (i, *t),
            None => return,
        };
        while let Ok(job) = jobs.try_recv() {
            waiting.push_back(job);
        }
        // Jobs before polls; background jobs after every other job.
        let next = waiting.iter().position(|j| !j.background).or((!waiting.is_empty()).then_some(0));
        if let Some(job) = next.and_then(|at| waiting.remove(at)) {
            if shutdown.is_cancelled() {
                return;
            }
            let result = link.run_job(job.unit, &job.ops, job.attempts).await;
            let _ = job.reply.send(result);
            continue;
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            Some(job) = jobs.recv() => {
                waiting.push_back(job);
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
        let answered = result.is_ok();
        if let Ok(r) = result {
            readings.extend(r);
        }
        if answered && let Some(words) = changed_log(&mut link, &dev.reader, &mut log_seq[i]).await {
            let event = PollEvent::CommandLog { device: dev.reader.id.to_string(), words };
            if out.send(event).await.is_err() {
                return;
            }
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

/// Reads a device's command log sequence register and, if it moved since `seen` (or was
/// never seen), the whole log. `None` for a device without a log, or on any error (the
/// next poll tries again).
async fn changed_log(link: &mut Link, reader: &DeviceReader, seen: &mut Option<u16>) -> Option<Vec<u16>> {
    let log = reader.profile.mailbox.and_then(|m| m.log)?;
    let seq = link.read(reader.unit, Read { table: log.table, start: log.address, count: 1 }, reader.attempts).await;
    let seq = *seq.ok()?.first()?;
    if *seen == Some(seq) {
        return None;
    }
    let words = link
        .read(reader.unit, Read { table: log.table, start: log.address, count: log.count() }, reader.attempts)
        .await;
    let words = words.ok()?;
    *seen = words.first().copied();
    Some(words)
}
