//! The MQTT source: subscribes to everything gateways send, feeds the pipeline in groups,
//! and acknowledges only what is durable.
//!
//! Design constraints:
//! - Manual acks and a persistent session: the broker keeps redelivering a message until
//!   ingest has stored its batch and acked it, across ingest restarts where the broker
//!   keeps sessions (an external broker; the embedded one restarts with ingest, and the
//!   gateways' queues cover that case).
//! - Group commit: the writer takes every message waiting (up to [`MAX_GROUP`]) and makes
//!   them durable with one store append, so throughput grows with load instead of being
//!   capped by fsyncs per second.
//! - If the store fails, nothing of the group is acked; the writer retries the same group
//!   until it succeeds or ingest stops.
//! - Pipelined in two stages: the next group is decoded and validated while this one is
//!   being made durable; groups are still committed and acknowledged in arrival order
//!   (the store needs a gateway's batches in seq order, MQTT needs acks in order).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use protocol::command::CommandAck;
use protocol::topic;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::pipeline::{Message, Pipeline, Prepared};

/// Most messages made durable by one append.
pub const MAX_GROUP: usize = 1024;
/// Largest MQTT packet ingest accepts from the broker (above its own payload limit, so
/// that oversized payloads reach validation and are counted, not dropped by the client).
const MAX_PACKET_BYTES: usize = 2 * 1024 * 1024;

/// Where to connect.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client id (persistent session).
    pub client_id: String,
    /// Username and password.
    pub credentials: Option<(String, String)>,
}

/// Publishes on gateways' downlinks (commands, config), for the modules that need it.
#[derive(Clone)]
pub struct Downlink {
    client: AsyncClient,
}

impl Downlink {
    /// Publishes with QoS 1.
    pub async fn publish(&self, topic: String, payload: Vec<u8>, retain: bool) -> Result<(), rumqttc::ClientError> {
        self.client.publish(topic, QoS::AtLeastOnce, retain, payload).await
    }
}

/// Handles to the running source.
pub struct Source {
    /// For publishing downlink messages.
    pub downlink: Downlink,
    /// Command acks as they arrive: `(gateway, ack)`.
    pub command_acks: broadcast::Sender<(String, CommandAck)>,
    /// True once subscribed.
    pub subscribed: Arc<AtomicBool>,
}

/// Connects, subscribes and runs the pipeline until `shutdown`.
pub fn start(conn: Connection, pipeline: Arc<Pipeline>, shutdown: CancellationToken) -> Source {
    let mut opts = MqttOptions::new(conn.client_id.clone(), conn.host.clone(), conn.port);
    opts.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES)
        .set_inflight(1000)
        .set_request_channel_capacity(4 * MAX_GROUP);
    if let Some((u, p)) = &conn.credentials {
        opts.set_credentials(u.clone(), p.clone());
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 4 * MAX_GROUP);
    let (acks_tx, _) = broadcast::channel(4096);
    let subscribed = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<Publish>(4 * MAX_GROUP);

    let sub = subscribed.clone();
    let sub_client = client.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut failures = 0u32;
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => break,
                e = eventloop.poll() => e,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    failures = 0;
                    tracing::info!(message = "Ingest connected to the broker.", host = %conn.host, port = conn.port);
                    if let Err(e) = sub_client.try_subscribe(topic::UPLINK_FILTER, QoS::AtLeastOnce) {
                        tracing::error!(message = "Cannot subscribe.", error = %e);
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => sub.store(true, Ordering::Relaxed),
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send(p).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    sub.store(false, Ordering::Relaxed);
                    failures = failures.saturating_add(1);
                    if failures == 1 || failures.is_multiple_of(30) {
                        tracing::warn!(message = "Ingest lost the broker; reconnecting.", error = %e);
                    }
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(daemon::backoff(failures.min(3), "ingest")) => {}
                    }
                }
            }
        }
    });

    tokio::spawn(writer(rx, client.clone(), pipeline, acks_tx.clone(), shutdown));
    Source { downlink: Downlink { client }, command_acks: acks_tx, subscribed }
}

/// The writer: two stages, so that decoding the next group overlaps the fsync of this one.
///
/// Stage 1 ([`prepare_stage`]) takes every message waiting (up to [`MAX_GROUP`]) and
/// decodes and validates them; stage 2 (here) commits prepared groups strictly in arrival
/// order (one store append each), then acks their messages and sends the delivery acks. At
/// most one prepared group waits between the stages. The broker keeps only so many
/// unacknowledged messages outstanding per subscriber (rumqttd: 100), so the time from a
/// message's arrival to its ack is what bounds throughput, not CPU.
async fn writer(
    rx: mpsc::Receiver<Publish>,
    client: AsyncClient,
    pipeline: Arc<Pipeline>,
    acks: broadcast::Sender<(String, CommandAck)>,
    shutdown: CancellationToken,
) {
    let (prepared_tx, mut prepared_rx) = mpsc::channel::<(Vec<Publish>, Arc<Prepared>)>(1);
    tokio::spawn(prepare_stage(rx, pipeline.clone(), prepared_tx, shutdown.clone()));
    loop {
        let (group, prepared) = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = prepared_rx.recv() => match p { Some(p) => p, None => return },
        };
        let started = std::time::Instant::now();
        let outcome = loop {
            let (pl, p) = (pipeline.clone(), prepared.clone());
            match tokio::task::spawn_blocking(move || pl.commit(&p)).await {
                Ok(Ok(outcome)) => break outcome,
                Ok(Err(e)) => {
                    tracing::error!(message = "Store append failed; nothing acknowledged, retrying.", error = %e);
                }
                Err(e) => tracing::error!(message = "Pipeline task failed; retrying.", error = %e),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        };
        let committed = started.elapsed();
        for p in &group {
            if let Err(e) = client.ack(p).await {
                tracing::warn!(message = "Could not ack a message.", error = %e);
            }
        }
        for (topic, payload) in outcome.delivery_acks {
            if let Err(e) = client.publish(topic, QoS::AtLeastOnce, false, payload).await {
                tracing::warn!(message = "Could not send a delivery ack.", error = %e);
            }
        }
        for ack in outcome.command_acks {
            let _ = acks.send(ack);
        }
        tracing::trace!(
            message = "Group committed.",
            size = group.len(),
            commit_us = committed.as_micros() as u64,
            ack_us = (started.elapsed() - committed).as_micros() as u64
        );
    }
}

/// Stage 1 of the writer: groups waiting messages and prepares them.
async fn prepare_stage(
    mut rx: mpsc::Receiver<Publish>,
    pipeline: Arc<Pipeline>,
    out: mpsc::Sender<(Vec<Publish>, Arc<Prepared>)>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = rx.recv() => match p { Some(p) => p, None => return },
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let messages: Vec<Message> =
            group.iter().map(|p| Message { topic: p.topic.clone(), payload: p.payload.clone() }).collect();
        let pl = pipeline.clone();
        let prepared = match tokio::task::spawn_blocking(move || pl.prepare(&messages)).await {
            Ok(p) => Arc::new(p),
            Err(e) => {
                // A panic in decoding: nothing of the group is acked, so the broker keeps it.
                tracing::error!(message = "Preparing a group failed; not acknowledged.", error = %e);
                continue;
            }
        };
        tracing::trace!(
            message = "Group prepared.",
            size = group.len(),
            prepare_us = started.elapsed().as_micros() as u64
        );
        if out.send((group, prepared)).await.is_err() {
            return;
        }
    }
}
