//! Notifiers: where alert events go besides the API. Sinks are nouns: `webhook`, `mqtt`.
//! (The proposed broadcast is a record the manager keeps; its approval is an event on
//! the same stream, which the broadcast dispatcher subscribes to.)
//!
//! Design constraints:
//! - A slow or dead receiver never holds up rule evaluation: each notifier has its own
//!   task and queue; when the queue is full the newest event is dropped and counted.
//! - Webhooks are signed: `X-VT-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`
//!   with the notifier's secret, and `X-VT-Timestamp`, so a receiver can check origin and
//!   refuse replays. Failed deliveries are retried with exponential backoff.
//! - MQTT events are published (QoS 1) through ingest's own broker connection.

use std::time::Duration;

use hmac::{Hmac, Mac};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::config::NotifierConfig;
use super::manager::AlertEvent;
use crate::sources::mqtt::Downlink;
use crate::tasks::Tasks;

/// Labels of the notification counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotifyLabel {
    /// `webhook` or `mqtt`.
    pub notifier: &'static str,
    /// `delivered`, `retried`, `failed` or `dropped`.
    pub outcome: &'static str,
}

/// The signature a webhook receiver checks.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(), // HMAC takes keys of any length; unreachable
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Starts one task per notifier; returns their queues.
pub fn start(
    configs: &[NotifierConfig],
    downlink: Option<Downlink>,
    counter: Family<NotifyLabel, Counter>,
    clock: crate::time::Clock,
    tasks: &Tasks,
    shutdown: CancellationToken,
) -> Vec<(NotifierConfig, mpsc::Sender<AlertEvent>)> {
    let mut out = Vec::new();
    for cfg in configs {
        let (tx, rx) = mpsc::channel::<AlertEvent>(1024);
        let task =
            Task { cfg: cfg.clone(), downlink: downlink.clone(), counter: counter.clone(), clock: clock.clone() };
        let stop = shutdown.clone();
        tasks.spawn("alert-notifier", async move { task.run(rx, stop).await });
        out.push((cfg.clone(), tx));
    }
    out
}

/// True if the notifier wants the event.
pub fn wants(cfg: &NotifierConfig, e: &AlertEvent) -> bool {
    let (min, tenants) = match cfg {
        NotifierConfig::Webhook { min_severity, tenants, .. } | NotifierConfig::Mqtt { min_severity, tenants, .. } => {
            (min_severity, tenants)
        }
    };
    (tenants.is_empty() || tenants.iter().any(|t| t == e.tenant())) && e.severity().is_none_or(|s| s >= *min)
}

struct Task {
    cfg: NotifierConfig,
    downlink: Option<Downlink>,
    counter: Family<NotifyLabel, Counter>,
    clock: crate::time::Clock,
}

impl Task {
    fn count(&self, outcome: &'static str) {
        let notifier = match self.cfg {
            NotifierConfig::Webhook { .. } => "webhook",
            NotifierConfig::Mqtt { .. } => "mqtt",
        };
        self.counter.get_or_create(&NotifyLabel { notifier, outcome }).inc();
    }

    async fn run(self, mut rx: mpsc::Receiver<AlertEvent>, shutdown: CancellationToken) {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().ok();
        loop {
            let e = tokio::select! {
                _ = shutdown.cancelled() => return,
                e = rx.recv() => match e { Some(e) => e, None => return },
            };
            match &self.cfg {
                NotifierConfig::Webhook { url, secret, max_retries, timeout_ms, .. } => {
                    let Some(client) = &client else { return };
                    self.webhook(client, url, secret, *max_retries, *timeout_ms, &e, &shutdown).await;
                }
                NotifierConfig::Mqtt { topic, .. } => self.mqtt(topic, &e).await,
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn webhook(
        &self,
        client: &reqwest::Client,
        url: &str,
        secret: &str,
        max_retries: u32,
        timeout_ms: u64,
        e: &AlertEvent,
        shutdown: &CancellationToken,
    ) {
        let body = match serde_json::to_vec(e) {
            Ok(b) => b,
            Err(error) => {
                tracing::error!(message = "Alert event did not serialise.", %error);
                return;
            }
        };
        let mut backoff = Duration::from_millis(500);
        for attempt in 0..=max_retries {
            let ts = (self.clock)().0;
            let req = client
                .post(url)
                .timeout(Duration::from_millis(timeout_ms))
                .header("content-type", "application/json")
                .header("x-vt-event", e.name())
                .header("x-vt-timestamp", ts.to_string())
                .header("x-vt-signature", signature(secret, ts, &body))
                .body(body.clone());
            match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    self.count("delivered");
                    return;
                }
                Ok(resp) if resp.status().is_client_error() && resp.status().as_u16() != 429 => {
                    // The receiver refuses this event; retrying will not change its mind.
                    tracing::warn!(message = "Webhook refused an alert event.", %url, status = %resp.status(), event = e.name());
                    self.count("failed");
                    return;
                }
                Ok(resp) => {
                    tracing::warn!(message = "Webhook failed; retrying.", %url, status = %resp.status(), attempt)
                }
                Err(error) => tracing::warn!(message = "Webhook failed; retrying.", %url, %error, attempt),
            }
            if attempt == max_retries {
                break;
            }
            self.count("retried");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(60));
        }
        tracing::error!(message = "Webhook gave up on an alert event.", %url, event = e.name());
        self.count("failed");
    }

    async fn mqtt(&self, template: &str, e: &AlertEvent) {
        let Some(downlink) = &self.downlink else {
            self.count("dropped");
            return;
        };
        let severity = e.severity().map_or("broadcast", |s| s.as_str());
        let topic =
            template.replace("{tenant}", e.tenant()).replace("{severity}", severity).replace("{event}", e.name());
        let Ok(body) = serde_json::to_vec(e) else { return };
        match downlink.publish(topic, body, false).await {
            Ok(()) => self.count("delivered"),
            Err(error) => {
                tracing::warn!(message = "MQTT alert publish failed.", %error);
                self.count("failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2 covers HMAC-SHA256 itself; here: our framing is stable.
        let s = signature("key", 1, b"{}");
        assert!(s.starts_with("sha256=") && s.len() == 7 + 64, "{s}");
        assert_eq!(s, signature("key", 1, b"{}"));
        assert_ne!(s, signature("key", 2, b"{}"), "the timestamp is signed");
        assert_ne!(s, signature("other", 1, b"{}"));
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}
