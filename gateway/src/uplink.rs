//! The MQTT uplink: publishes queued batches, keeps the retained status, and takes
//! ingest's delivery acks off the downlink.
//!
//! Design constraints:
//! - The queue decides what is sent; this module only moves bytes. A batch is forgotten
//!   when a delivery ack covers its seq, never on PUBACK.
//! - After every (re)connect: publish the retained online status, subscribe to the
//!   downlink, and resend every unconfirmed batch oldest first. The last will marks the
//!   gateway offline if the link dies without a goodbye.
//! - At most `max_inflight` batches are out without a delivery ack.
//! - Reconnects back off exponentially (1 s to 60 s) with jitter, so that a county's
//!   gateways do not all hit the broker in the same second after it restarts.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::delivery::DeliveryAck;
use protocol::status::GatewayStatus;
use protocol::topic::{self, Channel, Topic};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;
use crate::health::Health;
use crate::queue::Queue;
use crate::{Clock, VERSION};

/// Largest MQTT packet the gateway sends or accepts.
pub const MAX_PACKET_BYTES: usize = 1024 * 1024;

/// Shared between the batcher and the uplink.
pub struct Shared {
    /// The queue of sealed batches.
    pub queue: Mutex<Queue>,
    /// Woken when a batch is sealed or health changed.
    pub wake: Notify,
    /// Set by pollers when the retained status should be republished.
    pub status_dirty: std::sync::atomic::AtomicBool,
}

/// Runs the uplink until `shutdown`, then publishes an offline status and disconnects.
pub async fn run(
    config: GatewayConfig,
    shared: Arc<Shared>,
    health: Arc<Health>,
    clock: Clock,
    shutdown: CancellationToken,
) {
    let status_topic = topic::topic(&config.tenant, &config.gateway, Channel::Status);
    let telemetry_topic = topic::topic(&config.tenant, &config.gateway, Channel::Telemetry);
    let offline = serde_json::to_vec(&GatewayStatus::offline(&config.gateway)).unwrap_or_default();

    let m = &config.mqtt;
    let mut opts = MqttOptions::new(m.client_id.clone(), m.host.clone(), m.port);
    opts.set_keep_alive(m.keep_alive)
        .set_clean_session(false)
        .set_inflight(m.max_inflight.saturating_mul(2).max(2))
        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES)
        .set_request_channel_capacity(usize::from(m.max_inflight) * 2 + 16)
        .set_last_will(LastWill::new(&status_topic, offline.clone(), QoS::AtLeastOnce, true));
    if let Some((u, p)) = &m.credentials {
        opts.set_credentials(u.clone(), p.clone());
    }
    let (client, mut eventloop) = AsyncClient::new(opts, usize::from(m.max_inflight) * 2 + 16);

    let mut connected = false;
    let mut failures: u32 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut status_every = tokio::time::interval(config.health_interval);

    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected = true;
                    failures = 0;
                    tracing::info!(message = "Connected to the broker.", gateway = %config.gateway, broker = %format!("{}:{}", m.host, m.port));
                    let status = status_json(&config, &health, &clock);
                    let _ = client.try_publish(&status_topic, QoS::AtLeastOnce, true, status);
                    let _ = client.try_subscribe(topic::downlink_filter(&config.tenant, &config.gateway), QoS::AtLeastOnce);
                    lock(&shared.queue).resend_all();
                    publish_due(&config, &client, &shared, &telemetry_topic);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => downlink(&config, &shared, &p.topic, &p.payload),
                Ok(_) => {}
                Err(e) => {
                    if connected {
                        tracing::warn!(message = "Lost the broker.", gateway = %config.gateway, error = %e);
                    } else if failures == 0 {
                        tracing::warn!(message = "Cannot reach the broker.", gateway = %config.gateway, error = %e);
                    }
                    connected = false;
                    failures = failures.saturating_add(1);
                    let delay = backoff(failures, &config.gateway);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            },
            _ = shared.wake.notified(), if connected => {
                publish_due(&config, &client, &shared, &telemetry_topic);
                if shared.status_dirty.swap(false, std::sync::atomic::Ordering::Relaxed) {
                    let _ = client.try_publish(&status_topic, QoS::AtLeastOnce, true, status_json(&config, &health, &clock));
                }
            }
            _ = tick.tick(), if connected => publish_due(&config, &client, &shared, &telemetry_topic),
            _ = status_every.tick(), if connected => {
                let _ = client.try_publish(&status_topic, QoS::AtLeastOnce, true, status_json(&config, &health, &clock));
            }
        }
    }
    if connected {
        let _ = client.try_publish(&status_topic, QoS::AtLeastOnce, true, offline);
        let _ = client.try_disconnect();
        // Let the event loop flush the goodbye.
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while let Ok(ev) = eventloop.poll().await {
                if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn publish_due(config: &GatewayConfig, client: &AsyncClient, shared: &Shared, topic: &str) {
    let now = Instant::now();
    let mut q = lock(&shared.queue);
    let room = usize::from(config.mqtt.max_inflight).saturating_sub(q.in_flight(now, config.publish.resend_after));
    if room == 0 {
        return;
    }
    for (seq, payload) in q.due(now, config.publish.resend_after, room) {
        if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, false, payload.to_vec()) {
            tracing::debug!(message = "Publish deferred.", seq, error = %e);
            q.resend_all();
            break;
        }
    }
}

fn downlink(config: &GatewayConfig, shared: &Shared, topic: &str, payload: &[u8]) {
    let Ok(t) = Topic::parse(topic) else { return };
    if t.gateway != config.gateway || t.tenant != config.tenant {
        return;
    }
    match t.channel {
        Channel::Delivery => match DeliveryAck::from_json(payload) {
            Ok(ack) => {
                let n = lock(&shared.queue).ack(ack.seq);
                tracing::debug!(message = "Delivery ack.", seq = ack.seq, released = n);
                shared.wake.notify_one();
            }
            Err(e) => tracing::warn!(message = "Bad delivery ack.", error = %e),
        },
        other => tracing::debug!(message = "Downlink message not handled yet.", channel = ?other),
    }
}

fn status_json(config: &GatewayConfig, health: &Health, clock: &Clock) -> Vec<u8> {
    let status = GatewayStatus {
        gateway: config.gateway.clone(),
        online: true,
        ts: Some(clock()),
        version: VERSION.to_string(),
        devices: health.snapshot(),
    };
    serde_json::to_vec(&status).unwrap_or_default()
}

/// Exponential backoff from 1 s to 60 s, with up to 50% jitter derived from the gateway
/// id and the attempt (no random source needed, and gateways still spread out).
pub fn backoff(attempt: u32, gateway: &str) -> Duration {
    let base = 1000u64.saturating_mul(1 << attempt.saturating_sub(1).min(6)).min(60_000);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in gateway.bytes().chain(attempt.to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    h ^= since_epoch.subsec_nanos() as u64;
    Duration::from_millis(base / 2 + h % (base / 2 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_minute_and_stays_jittered() {
        for attempt in 1..20 {
            let d = backoff(attempt, "gw-1");
            let base = 1000u64 * (1 << (attempt - 1).min(6));
            let base = base.min(60_000);
            assert!(d >= Duration::from_millis(base / 2) && d <= Duration::from_millis(base), "{attempt}: {d:?}");
        }
    }
}
