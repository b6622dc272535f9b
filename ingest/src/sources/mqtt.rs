//! The MQTT source: subscribes to everything gateways send, dispatches by channel, feeds
//! telemetry to the pipeline in groups, and acknowledges only what is durable.
//!
//! Connecting and running are two steps, as rumqttc splits `AsyncClient` from `EventLoop`:
//! [`connect`] returns the [`Source`] handles (the [`Downlink`] to publish with, the
//! command ack stream) before anything runs, so the modules that publish (alerts,
//! commands) get the downlink when they are built; [`Connecting::run`] then starts the event
//! loop and the writer with the pipeline.
//!
//! Dispatch by channel (the topic's last part):
//! - telemetry: the pipeline's group commit ([`Pipeline::prepare`], [`Pipeline::commit`]);
//! - gateway status: the inventory (online or not), at once;
//! - command acks: the command ack stream ([`Source::command_acks`]), once the group they
//!   arrived in is acknowledged;
//! - anything else: counted and acknowledged.
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
//!   (the store needs a gateway's batches in seq order, MQTT needs acks in order), status
//!   and command-ack messages included.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use protocol::command::CommandAck;
use protocol::status::GatewayStatus;
use protocol::topic::{self, Channel, Topic};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::inventory::Inventory;
use crate::metrics::{ChannelLabel, Metrics};
use crate::pipeline::{Message, Pipeline, Prepared};
use crate::tasks::Tasks;

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

impl std::fmt::Debug for Downlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Downlink").finish_non_exhaustive()
    }
}

impl Downlink {
    /// Publishes with QoS 1.
    pub async fn publish(&self, topic: String, payload: Vec<u8>, retain: bool) -> Result<(), rumqttc::ClientError> {
        self.client.publish(topic, QoS::AtLeastOnce, retain, payload).await
    }
}

/// Handles to the source, valid from [`connect`] on.
#[derive(Clone)]
pub struct Source {
    /// For publishing downlink messages.
    pub downlink: Downlink,
    /// Command acks as they arrive: `(gateway, ack)`.
    pub command_acks: broadcast::Sender<(String, CommandAck)>,
    /// True once subscribed.
    pub subscribed: Arc<AtomicBool>,
}

/// A source connected but not running yet: [`Connecting::run`] starts it.
pub struct Connecting {
    conn: Connection,
    client: AsyncClient,
    eventloop: EventLoop,
    source: Source,
}

/// Builds the client and its event loop; nothing is sent until [`Connecting::run`].
pub fn connect(conn: Connection) -> (Source, Connecting) {
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
    let (client, eventloop) = AsyncClient::new(opts, 4 * MAX_GROUP);
    let (acks_tx, _) = broadcast::channel(4096);
    let source = Source {
        downlink: Downlink { client: client.clone() },
        command_acks: acks_tx,
        subscribed: Arc::new(AtomicBool::new(false)),
    };
    (source.clone(), Connecting { conn, client, eventloop, source })
}

impl Connecting {
    /// Connects, subscribes and feeds `pipeline` until `shutdown`; every task it starts is
    /// tracked in `tasks`.
    pub fn run(self, pipeline: Arc<Pipeline>, tasks: &Tasks, shutdown: CancellationToken) {
        let Connecting { conn, client, mut eventloop, source } = self;
        let (tx, rx) = mpsc::channel::<Publish>(4 * MAX_GROUP);
        let sub = source.subscribed.clone();
        let sub_client = client.clone();
        let stop = shutdown.clone();
        tasks.spawn("mqtt-event-loop", async move {
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
        let (prepared_tx, prepared_rx) = mpsc::channel::<Group>(1);
        tasks.spawn("mqtt-prepare", prepare_stage(rx, pipeline.clone(), prepared_tx, shutdown.clone()));
        tasks.spawn("mqtt-writer", writer(prepared_rx, client, pipeline, source.command_acks, shutdown));
    }
}

/// A group of messages as stage 1 leaves it for stage 2.
struct Group {
    /// Every message of the group, in arrival order (all are acked, in this order).
    messages: Vec<Publish>,
    /// Its telemetry, decoded and validated.
    telemetry: Arc<Prepared>,
    /// Its command acks, sent on once the group is acknowledged.
    command_acks: Vec<(String, CommandAck)>,
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
    mut prepared_rx: mpsc::Receiver<Group>,
    client: AsyncClient,
    pipeline: Arc<Pipeline>,
    acks: broadcast::Sender<(String, CommandAck)>,
    shutdown: CancellationToken,
) {
    loop {
        let group = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = prepared_rx.recv() => match p { Some(p) => p, None => return },
        };
        let started = std::time::Instant::now();
        let outcome = loop {
            let (pl, p) = (pipeline.clone(), group.telemetry.clone());
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
        for p in &group.messages {
            if let Err(e) = client.ack(p).await {
                tracing::warn!(message = "Could not ack a message.", error = %e);
            }
        }
        for (topic, payload) in outcome.delivery_acks {
            if let Err(e) = client.publish(topic, QoS::AtLeastOnce, false, payload).await {
                tracing::warn!(message = "Could not send a delivery ack.", error = %e);
            }
        }
        for ack in group.command_acks {
            let _ = acks.send(ack);
        }
        tracing::trace!(
            message = "Group committed.",
            size = group.messages.len(),
            commit_us = committed.as_micros() as u64,
            ack_us = (started.elapsed() - committed).as_micros() as u64
        );
    }
}

/// Stage 1 of the writer: groups waiting messages and prepares them.
async fn prepare_stage(
    mut rx: mpsc::Receiver<Publish>,
    pipeline: Arc<Pipeline>,
    out: mpsc::Sender<Group>,
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
        let prepared = match tokio::task::spawn_blocking(move || {
            let (telemetry, command_acks) = dispatch(messages, &pl.inventory, &pl.metrics);
            (pl.prepare(&telemetry), command_acks)
        })
        .await
        {
            Ok((telemetry, command_acks)) => Group { messages: group, telemetry: Arc::new(telemetry), command_acks },
            Err(e) => {
                // A panic in decoding: nothing of the group is acked, so the broker keeps it.
                tracing::error!(message = "Preparing a group failed; not acknowledged.", error = %e);
                continue;
            }
        };
        tracing::trace!(
            message = "Group prepared.",
            size = prepared.messages.len(),
            prepare_us = started.elapsed().as_micros() as u64
        );
        if out.send(prepared).await.is_err() {
            return;
        }
    }
}

/// Sorts a group by channel: returns its telemetry (for the pipeline) and its command acks
/// (for the ack stream); applies gateway status to the inventory at once; counts every
/// message by channel.
fn dispatch(
    group: Vec<Message>,
    inventory: &Inventory,
    metrics: &Metrics,
) -> (Vec<Message>, Vec<(String, CommandAck)>) {
    let count = |channel: &'static str| {
        metrics.messages.get_or_create(&ChannelLabel { channel }).inc();
    };
    let mut telemetry = Vec::with_capacity(group.len());
    let mut command_acks = Vec::new();
    for msg in group {
        let Ok(topic) = Topic::parse(&msg.topic) else {
            count("other");
            continue;
        };
        match topic.channel {
            Channel::Telemetry => {
                count("telemetry");
                telemetry.push(msg);
            }
            Channel::Status => {
                count("status");
                status(inventory, &topic, &msg.payload);
            }
            Channel::CommandAck => {
                count("ack");
                match serde_json::from_slice::<CommandAck>(&msg.payload) {
                    Ok(ack) => command_acks.push((topic.gateway.to_string(), ack)),
                    Err(e) => tracing::warn!(message = "Bad command ack.", topic = %msg.topic, error = %e),
                }
            }
            _ => count("other"),
        }
    }
    (telemetry, command_acks)
}

/// A gateway's status: online or not, in the inventory.
fn status(inventory: &Inventory, topic: &Topic<'_>, payload: &[u8]) {
    if payload.is_empty() {
        return; // a cleared retained message
    }
    match serde_json::from_slice::<GatewayStatus>(payload) {
        Ok(s) if s.gateway == topic.gateway => inventory.set_gateway_online(topic.gateway, s.online),
        Ok(s) => {
            tracing::warn!(message = "Status names another gateway.", topic_gateway = topic.gateway, status_gateway = %s.gateway)
        }
        Err(e) => tracing::warn!(message = "Bad gateway status.", gateway = topic.gateway, error = %e),
    }
}
