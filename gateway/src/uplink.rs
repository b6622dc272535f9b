//! The MQTT uplink: publishes queued batches, keeps the retained status, takes ingest's
//! delivery acks, commands and configurations off the downlink, and sends command acks.
//!
//! Design constraints:
//! - The queue decides what is sent; this module only moves bytes. A batch is forgotten
//!   when a delivery ack covers its seq, never on PUBACK.
//! - After every (re)connect: publish the retained online status, subscribe to the
//!   downlink, and resend every unconfirmed batch oldest first. The last will (retained)
//!   marks the gateway offline if the link dies without a goodbye.
//! - After every (re)connect only the oldest batch goes out until a delivery ack comes
//!   back; then up to `max_inflight`. A broker that restarted without persistence accepts
//!   publishes before ingest has subscribed again and drops them; if a later batch reached
//!   ingest before an earlier one, ingest would refuse the earlier as a duplicate (it keeps
//!   the highest seq per gateway). One batch at a time until ingest answers rules that out.
//! - At most `max_inflight` batches are out without a delivery ack, and at most
//!   `max_batches_per_sec` are published a second (a token bucket), so the drain of a
//!   backlog after an outage leaves the cellular link room for status, acks and commands.
//! - Command acks are never dropped for want of room: one that the MQTT client's request
//!   queue cannot take now waits in order in `pending` and goes out as the event loop
//!   drains (a speaker broadcast brings a burst of acks from every speaker of a village).
//! - Reconnects back off exponentially (1 s up to `reconnect_max`) with jitter, so that a
//!   county's gateways do not all hit the broker in the same second after it restarts.
//! - Every message out is sealed with the link key at publish time, and a delivery ack or
//!   configuration acts only if ingest signed it ([`crate::trust`]). A delivery ack never
//!   releases a batch past the highest seq published since the queue was opened.
//! - TLS is rustls with the ring provider, chosen explicitly (never a process-wide
//!   default), trusting the configured CA file (only its certificate with the pinned
//!   SHA-256, `mqtt.ca_sha256`, when one is pinned) or the system's roots, with an optional
//!   client certificate.

use std::collections::VecDeque;
use std::io::BufReader;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::delivery::DeliveryAck;
use protocol::status::{ConfigReport, GatewayStatus};
use protocol::topic::{self, Channel, Topic};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::config::{GatewayConfig, TlsConfig};
use crate::health::Health;
use crate::queue::Queue;
use daemon::Clock;

use crate::VERSION;
use crate::trust::{Refusal, Trust};

/// Largest MQTT packet the gateway sends or accepts.
pub const MAX_PACKET_BYTES: usize = 1024 * 1024;

/// Shared between the agent, the batcher and the uplink.
pub struct Shared {
    /// The queue of sealed batches.
    pub queue: Mutex<Queue>,
    /// Woken when a batch is sealed or health changed.
    pub wake: Notify,
    /// Set when the retained status should be republished.
    pub status_dirty: AtomicBool,
    /// True while connected to the broker (local rules that run only offline read it).
    pub connected: AtomicBool,
    /// What became of the last remote configuration, for the status.
    pub config_report: Mutex<Option<ConfigReport>>,
    /// Message authentication with ingest; `None` without `command_key` (nothing is
    /// sealed, and ingest refuses what this gateway sends).
    pub trust: Mutex<Option<Trust>>,
    /// Highest seq published since the queue was opened: what a delivery ack may release.
    pub published: AtomicU64,
}

impl Shared {
    /// State around a queue.
    pub fn new(queue: Queue) -> Shared {
        Shared {
            queue: Mutex::new(queue),
            wake: Notify::new(),
            status_dirty: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            config_report: Mutex::new(None),
            trust: Mutex::new(None),
            published: AtomicU64::new(0),
        }
    }
}

/// What arrived on the downlink for the agent: signed commands and configurations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Downlink {
    /// A signed command envelope.
    Command(Vec<u8>),
    /// A configuration (TOML text) from the retained config topic, signed by ingest, with
    /// its version; the agent calls [`Trust::config_applied`] once it runs.
    Config {
        /// Its version.
        version: u64,
        /// The TOML text.
        text: Vec<u8>,
    },
}

/// A message for the uplink to publish (command acks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
}

/// Why the uplink could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// A TLS file could not be read or parsed.
    #[error("TLS: {0}")]
    Tls(String),
}

/// Runs the uplink until `shutdown`, then publishes an offline status and disconnects.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    config: GatewayConfig,
    shared: Arc<Shared>,
    health: Arc<Health>,
    clock: Clock,
    downlink: mpsc::Sender<Downlink>,
    mut outbox: mpsc::Receiver<Outgoing>,
    shutdown: CancellationToken,
) -> Result<(), UplinkError> {
    let status_topic = topic::topic(&config.tenant, &config.gateway, Channel::Status);
    let telemetry_topic = topic::topic(&config.tenant, &config.gateway, Channel::Telemetry);
    let offline = serde_json::to_vec(&GatewayStatus::offline(&config.gateway)).unwrap_or_default();
    // The last will is sealed now (counter 0: ingest takes it only as "offline"); the
    // goodbye at shutdown is sealed then, so that its counter is newer than every status.
    let will = match lock(&shared.trust).as_ref() {
        Some(t) => t.seal_last_will(&offline),
        None => offline.clone(),
    };

    let m = &config.mqtt;
    let mut opts = MqttOptions::new(m.client_id.clone(), m.host.clone(), m.port);
    opts.set_keep_alive(m.keep_alive)
        .set_clean_session(false)
        .set_inflight(m.max_inflight.saturating_mul(2).max(2))
        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES)
        .set_request_channel_capacity(usize::from(m.max_inflight) * 2 + 16)
        .set_last_will(LastWill::new(&status_topic, will, QoS::AtLeastOnce, true));
    match (&m.credentials, lock(&shared.trust).as_ref()) {
        (Some((u, p)), _) => {
            opts.set_credentials(u.clone(), p.clone());
        }
        // Without configured credentials: the gateway id and the password derived from the
        // link key, which ingest's embedded broker derives too (docs/SECURITY.md).
        (None, Some(t)) if m.tls.as_ref().is_none_or(|tls| tls.client_auth.is_none()) => {
            opts.set_credentials(config.gateway.clone(), t.broker_password());
        }
        // A client certificate is the login; nothing to add.
        (None, _) => {}
    }
    if let Some(tls) = &m.tls {
        opts.set_transport(Transport::tls_with_config(tls_config(tls, m.ca_sha256.as_deref())?));
    }
    let (client, mut eventloop) = AsyncClient::new(opts, usize::from(m.max_inflight) * 2 + 16);

    let mut connected = false;
    // True from a connect until the first delivery ack of the connection (see the module doc).
    let mut probing = true;
    let mut failures: u32 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut status_every = tokio::time::interval(config.health_interval);
    let mut bucket = Bucket::new(config.publish.max_batches_per_sec);
    let mut pending: VecDeque<Outgoing> = VecDeque::new();

    loop {
        if connected {
            flush(&client, &mut pending);
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected = true;
                    probing = true;
                    shared.connected.store(true, Ordering::Relaxed);
                    failures = 0;
                    tracing::info!(message = "Connected to the broker.", gateway = %config.gateway, broker = %format!("{}:{}", m.host, m.port), tls = m.tls.is_some());
                    let status = status_json(&config, &shared, &health, &clock);
                    let _ = client.try_publish(&status_topic, QoS::AtLeastOnce, true, status);
                    let _ = client.try_subscribe(topic::downlink_filter(&config.tenant, &config.gateway), QoS::AtLeastOnce);
                    lock(&shared.queue).resend_all();
                    publish_due(&config, &client, &shared, &telemetry_topic, &mut bucket, probing);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if downlink_message(&config, &shared, &downlink, &p.topic, &p.payload).await {
                        probing = false;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if connected {
                        tracing::warn!(message = "Lost the broker.", gateway = %config.gateway, error = %e);
                    } else if failures == 0 {
                        tracing::warn!(message = "Cannot reach the broker.", gateway = %config.gateway, error = %e);
                    }
                    connected = false;
                    shared.connected.store(false, Ordering::Relaxed);
                    failures = failures.saturating_add(1);
                    let delay = daemon::backoff(failures, &config.gateway)
                        .min(daemon::capped_backoff(m.reconnect_max, failures, &config.gateway));
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            },
            _ = shared.wake.notified(), if connected => {
                publish_due(&config, &client, &shared, &telemetry_topic, &mut bucket, probing);
                if shared.status_dirty.swap(false, Ordering::Relaxed) {
                    let _ = client.try_publish(&status_topic, QoS::AtLeastOnce, true, status_json(&config, &shared, &health, &clock));
                }
            }
            Some(mut out) = outbox.recv(), if connected && pending.len() < MAX_PENDING => {
                if let Some(t) = lock(&shared.trust).as_mut() {
                    out.payload = t.seal(Channel::CommandAck, &out.payload);
                }
                pending.push_back(out);
            }
            _ = tick.tick(), if connected => publish_due(&config, &client, &shared, &telemetry_topic, &mut bucket, probing),
            _ = status_every.tick(), if connected => {
                let _ = client.try_publish(&status_topic, QoS::AtLeastOnce, true, status_json(&config, &shared, &health, &clock));
            }
        }
    }
    shared.connected.store(false, Ordering::Relaxed);
    if connected {
        let goodbye = match lock(&shared.trust).as_mut() {
            Some(t) => t.seal_status(&offline),
            None => offline,
        };
        let _ = client.try_publish(&status_topic, QoS::AtLeastOnce, true, goodbye);
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
    Ok(())
}

/// Checks that the uplink can be set up (TLS files readable and valid), so that a gateway
/// with a broken certificate stops at start with the reason instead of never connecting.
pub fn check(config: &GatewayConfig) -> Result<(), UplinkError> {
    let m = &config.mqtt;
    m.tls.as_ref().map(|tls| tls_config(tls, m.ca_sha256.as_deref())).transpose().map(|_| ())
}

/// SHA-256 of a certificate's DER, as `AB:CD:...` (what ingest prints for the county CA).
pub fn cert_sha256(der: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(der).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// A rustls client config with the ring provider, the configured roots and client cert.
/// With `pin` (a normalised SHA-256), only the certificate of the CA file with that
/// fingerprint is trusted, and a file without it is an error.
fn tls_config(tls: &TlsConfig, pin: Option<&str>) -> Result<TlsConfiguration, UplinkError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| UplinkError::Tls(format!("cannot read {}: {e}", path.display())))
    };
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_file {
        Some(ca) => {
            let pem = read(ca)?;
            for cert in rustls_pemfile::certs(&mut BufReader::new(&pem[..])) {
                let cert = cert.map_err(|e| UplinkError::Tls(format!("{}: {e}", ca.display())))?;
                let fingerprint = cert_sha256(cert.as_ref());
                if pin.is_some_and(|p| p != fingerprint) {
                    continue;
                }
                tracing::debug!(message = "Broker CA trusted.", file = %ca.display(), sha256 = %fingerprint);
                roots.add(cert).map_err(|e| UplinkError::Tls(format!("{}: {e}", ca.display())))?;
            }
            if roots.is_empty() {
                return Err(UplinkError::Tls(match pin {
                    Some(p) => format!("{}: no certificate with the pinned SHA-256 {p}", ca.display()),
                    None => format!("{}: no certificate in the file", ca.display()),
                }));
            }
        }
        None => {
            for dir in ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"] {
                if let Ok(pem) = std::fs::read(dir) {
                    for cert in rustls_pemfile::certs(&mut BufReader::new(&pem[..])).flatten() {
                        let _ = roots.add(cert);
                    }
                }
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| UplinkError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let config = match &tls.client_auth {
        Some((cert, key)) => {
            let certs: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(&read(cert)?[..]))
                .collect::<Result<_, _>>()
                .map_err(|e| UplinkError::Tls(format!("{}: {e}", cert.display())))?;
            let key = rustls_pemfile::private_key(&mut BufReader::new(&read(key)?[..]))
                .map_err(|e| UplinkError::Tls(format!("{}: {e}", key.display())))?
                .ok_or_else(|| UplinkError::Tls(format!("{}: no private key in the file", key.display())))?;
            builder.with_client_auth_cert(certs, key).map_err(|e| UplinkError::Tls(e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(TlsConfiguration::Rustls(Arc::new(config)))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Command acks waiting for room in the MQTT client before the outbox is read again.
const MAX_PENDING: usize = 1024;

/// Publishes waiting command acks in order until the client's request queue is full.
fn flush(client: &AsyncClient, pending: &mut VecDeque<Outgoing>) {
    while let Some(out) = pending.front() {
        match client.try_publish(&out.topic, QoS::AtLeastOnce, false, out.payload.clone()) {
            Ok(()) => {
                pending.pop_front();
            }
            Err(rumqttc::ClientError::TryRequest(_)) => return,
            Err(error) => {
                tracing::warn!(message = "Could not publish a command ack.", %error);
                pending.pop_front();
            }
        }
    }
}

/// A token bucket: `rate` tokens a second, at most one second's worth saved up.
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Bucket {
        let rate = f64::from(rate.max(1));
        Bucket { rate, tokens: rate, last: Instant::now() }
    }

    fn available(&mut self) -> usize {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.rate);
        self.last = now;
        self.tokens.floor() as usize
    }

    fn take(&mut self, n: usize) {
        self.tokens -= n as f64;
    }
}

fn publish_due(
    config: &GatewayConfig,
    client: &AsyncClient,
    shared: &Shared,
    topic: &str,
    bucket: &mut Bucket,
    probing: bool,
) {
    let now = Instant::now();
    let mut q = lock(&shared.queue);
    let window = if probing { 1 } else { usize::from(config.mqtt.max_inflight) };
    let room = window.saturating_sub(q.in_flight(now, config.publish.resend_after));
    let room = room.min(bucket.available());
    if room == 0 {
        return;
    }
    let due = q.due(now, config.publish.resend_after, room);
    bucket.take(due.len());
    let trust = lock(&shared.trust);
    for (seq, payload) in due {
        let wire = match trust.as_ref() {
            Some(t) => t.seal_batch(seq, &payload),
            None => payload.to_vec(),
        };
        if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, false, wire) {
            tracing::debug!(message = "Publish deferred.", seq, error = %e);
            q.resend_all();
            break;
        }
        shared.published.fetch_max(seq, Ordering::Relaxed);
    }
}

/// Handles one downlink message; true if it was a delivery ack.
async fn downlink_message(
    config: &GatewayConfig,
    shared: &Shared,
    downlink: &mpsc::Sender<Downlink>,
    topic: &str,
    payload: &[u8],
) -> bool {
    let Ok(t) = Topic::parse(topic) else { return false };
    if t.gateway != config.gateway || t.tenant != config.tenant {
        return false;
    }
    match t.channel {
        Channel::Delivery => {
            let ack = match lock(&shared.trust).as_ref() {
                Some(t) => t.open_delivery(payload),
                // Without ingest's key nothing can be verified; the release is still
                // bounded by what was published.
                None => DeliveryAck::from_json(payload).map_err(|_| Refusal::BadBody),
            };
            match ack {
                Ok(ack) => {
                    let upto = Trust::releasable(ack.seq, shared.published.load(Ordering::Relaxed));
                    let n = lock(&shared.queue).ack(upto);
                    tracing::debug!(message = "Delivery ack.", seq = ack.seq, released_upto = upto, released = n);
                    shared.wake.notify_one();
                    return true;
                }
                Err(error) => warn_refused("delivery ack", &error),
            }
        }
        Channel::Command => {
            if downlink.try_send(Downlink::Command(payload.to_vec())).is_err() {
                tracing::warn!(message = "Command dropped: too many commands waiting.");
            }
        }
        Channel::Config if !payload.is_empty() => {
            let opened = match lock(&shared.trust).as_ref() {
                Some(t) => t.open_config(payload),
                None => Err(Refusal::Auth(protocol::auth::AuthError::UnknownKey)),
            };
            match opened {
                Ok(Some(cfg)) => {
                    if downlink.try_send(Downlink::Config { version: cfg.version, text: cfg.text }).is_err() {
                        tracing::warn!(message = "Configuration dropped: the agent is busy.");
                    }
                }
                Ok(None) => tracing::debug!(message = "The running configuration again; nothing to do."),
                Err(error) => {
                    warn_refused("configuration", &error);
                    let digest = format!("{:08x}", crc32fast::hash(payload));
                    *lock(&shared.config_report) = Some(ConfigReport {
                        digest,
                        applied: false,
                        errors: vec![format!("{}: refused: {error}", topic)],
                        ts: daemon::now(),
                    });
                    shared.status_dirty.store(true, Ordering::Relaxed);
                    shared.wake.notify_one();
                }
            }
        }
        other => tracing::debug!(message = "Downlink message ignored.", channel = ?other),
    }
    false
}

/// Logs a refused downlink message, at most one warning every ten seconds (anyone on the
/// broker can send them; the log must not be theirs to fill).
fn warn_refused(what: &str, error: &Refusal) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = daemon::now().0.max(0) as u64;
    let last = LAST.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 10_000
        && LAST.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    {
        tracing::warn!(message = "Refused a downlink message that ingest did not sign.", what, %error);
    }
}

fn status_json(config: &GatewayConfig, shared: &Shared, health: &Health, clock: &Clock) -> Vec<u8> {
    let status = GatewayStatus {
        gateway: config.gateway.clone(),
        online: true,
        ts: Some(clock()),
        version: VERSION.to_string(),
        devices: health.snapshot(),
        config: lock(&shared.config_report).clone(),
    };
    let body = serde_json::to_vec(&status).unwrap_or_default();
    match lock(&shared.trust).as_mut() {
        Some(t) => t.seal_status(&body),
        None => body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_limits_publishes_a_second() {
        let mut b = Bucket::new(5);
        assert_eq!(b.available(), 5);
        b.take(5);
        assert_eq!(b.available(), 0);
    }

    #[test]
    fn a_ca_file_without_the_pinned_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        // rustls_pemfile only unwraps the PEM; the fingerprint is over these bytes.
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n").unwrap();
        assert_eq!(cert_sha256(&[0, 1, 2]).len(), 95);
        let tls = TlsConfig { ca_file: Some(ca), client_auth: None };
        let pin = "AB:".repeat(31) + "AB";
        let e = tls_config(&tls, Some(&pin)).unwrap_err().to_string();
        assert!(e.contains("no certificate with the pinned SHA-256"), "{e}");
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let e = tls_config(&TlsConfig { ca_file: Some("/nonexistent/ca.pem".into()), client_auth: None }, None)
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }
}
