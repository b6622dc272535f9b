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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use protocol::command::CommandAck;
use protocol::topic;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::pipeline::{Message, Pipeline};

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
                        _ = tokio::time::sleep(gateway::uplink::backoff(failures.min(3), "ingest")) => {}
                    }
                }
            }
        }
    });

    tokio::spawn(writer(rx, client.clone(), pipeline, acks_tx.clone(), shutdown));
    Source { downlink: Downlink { client }, command_acks: acks_tx, subscribed }
}

async fn writer(
    mut rx: mpsc::Receiver<Publish>,
    client: AsyncClient,
    pipeline: Arc<Pipeline>,
    acks: broadcast::Sender<(String, CommandAck)>,
    shutdown: CancellationToken,
) {
    loop {
        let t_wait = std::time::Instant::now();
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = rx.recv() => match p { Some(p) => p, None => return },
        };
        let t_got = std::time::Instant::now();
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        let messages: Arc<Vec<Message>> =
            Arc::new(group.iter().map(|p| Message { topic: p.topic.clone(), payload: p.payload.clone() }).collect());
        let outcome = loop {
            let (pl, msgs) = (pipeline.clone(), messages.clone());
            match tokio::task::spawn_blocking(move || pl.process(&msgs)).await {
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
        let t_done = std::time::Instant::now();
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
            message = "Group.",
            size = group.len(),
            wait_us = (t_got - t_wait).as_micros() as u64,
            process_us = (t_done - t_got).as_micros() as u64,
            ack_us = t_done.elapsed().as_micros() as u64
        );
    }
}
