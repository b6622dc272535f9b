//! The pipeline: decode -> validate -> de-duplicate -> store -> sinks.
//!
//! Design constraints:
//! - Exactly-once effect: a group of MQTT messages is processed together and every
//!   telemetry batch in it is made durable by one store append (one fsync). Only after
//!   that does the caller acknowledge the messages to the broker and send each gateway
//!   its delivery ack. A crash before the append loses nothing: the broker redelivers
//!   the unacknowledged messages and the gateway still holds the batches.
//! - De-duplication is the store's: a `(gateway, seq)` at or below the gateway's stored
//!   seq is a resend, and its delivery ack is sent again (the gateway missed the first).
//! - Refusals never block good data: a bad batch or reading is counted, described, and
//!   acknowledged (redelivering it would not make it better).
//! - Sinks (rules, InfluxDB) see readings only after they are durable.

pub mod gaps;
pub mod validate;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use protocol::codec;
use protocol::command::CommandAck;
use protocol::delivery::DeliveryAck;
use protocol::status::GatewayStatus;
use protocol::topic::{self, Channel, Topic};
use protocol::{Batch, Reading, Timestamp};
use store::{AppendOutcome, Store};

use crate::config::Limits;
use crate::inventory::Inventory;
use crate::metrics::{ChannelLabel, Metrics};
use validate::{Reason, Rejection, Rejections};

/// Where ingest's clock comes from (tests and accelerated simulations pass their own).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Something that wants every reading once it is durable: the rule engine, the InfluxDB
/// sink. Called on the pipeline's thread, so it must not block: queue and return.
pub trait Sink: Send + Sync {
    /// Name for logs.
    fn name(&self) -> &'static str;
    /// Readings of one tenant that are now durable.
    fn accept(&self, tenant: &str, readings: &[Reading]);
}

/// One message as it came off MQTT.
#[derive(Debug, Clone)]
pub struct Message {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: bytes::Bytes,
}

/// What the caller must send after a group was processed.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// Delivery acks: `(topic, payload)` per gateway that sent telemetry in the group.
    pub delivery_acks: Vec<(String, Vec<u8>)>,
    /// Command acks that arrived, with their gateway.
    pub command_acks: Vec<(String, CommandAck)>,
}

/// The pipeline's parts.
pub struct Pipeline {
    /// The store.
    pub store: Arc<Store>,
    /// The inventory.
    pub inventory: Arc<Inventory>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Recent refusals.
    pub rejections: Arc<Rejections>,
    /// Input limits.
    pub limits: Limits,
    /// Readings go here once durable.
    pub sinks: Vec<Arc<dyn Sink>>,
    /// Ingest's clock.
    pub clock: Clock,
    /// Batches that skip unstored seqs, held back (see [`gaps`]).
    pub gaps: gaps::SeqGaps,
}

/// A telemetry batch that passed its envelope checks.
struct Accepted {
    tenant: String,
    batch: Batch,
}

impl Pipeline {
    /// Processes a group of messages. Returns `Err` only if the store failed, in which case
    /// nothing of the group may be acknowledged.
    pub fn process(&self, group: &[Message]) -> Result<Outcome, store::StoreError> {
        let now = (self.clock)();
        let mut outcome = Outcome::default();
        let mut accepted: Vec<Accepted> = Vec::with_capacity(group.len());
        let mut gateways: BTreeMap<(String, String), ()> = BTreeMap::new();

        for msg in group {
            let Ok(topic) = Topic::parse(&msg.topic) else {
                self.count_message("other");
                continue;
            };
            match topic.channel {
                Channel::Telemetry => {
                    self.count_message("telemetry");
                    gateways.insert((topic.tenant.to_string(), topic.gateway.to_string()), ());
                    if let Some(a) = self.decode_and_validate(&topic, msg, now) {
                        accepted.push(a);
                    }
                }
                Channel::Status => {
                    self.count_message("status");
                    self.status(&topic, &msg.payload);
                }
                Channel::CommandAck => {
                    self.count_message("ack");
                    match serde_json::from_slice::<CommandAck>(&msg.payload) {
                        Ok(ack) => outcome.command_acks.push((topic.gateway.to_string(), ack)),
                        Err(e) => tracing::warn!(message = "Bad command ack.", topic = %msg.topic, error = %e),
                    }
                }
                _ => self.count_message("other"),
            }
        }

        let accepted = self.hold_gaps(accepted, now);
        self.store(accepted)?;
        for (tenant, gateway) in gateways.into_keys() {
            if let Some(seq) = self.store.gateway_seq(&gateway) {
                let topic = topic::topic(&tenant, &gateway, Channel::Delivery);
                outcome.delivery_acks.push((topic, DeliveryAck { seq }.to_json()));
            }
        }
        Ok(outcome)
    }

    /// Refuses batches that skip over seqs not stored yet (see [`gaps`]).
    fn hold_gaps(&self, accepted: Vec<Accepted>, now: Timestamp) -> Vec<Accepted> {
        let started = std::time::Instant::now();
        let mut last: BTreeMap<&str, u64> = BTreeMap::new();
        let mut keep = Vec::with_capacity(accepted.len());
        let mut held = Vec::new();
        for a in &accepted {
            let gw = a.batch.gateway.as_str();
            let mark = last.get(gw).copied().or_else(|| self.store.gateway_seq(gw));
            match self.gaps.judge(gw, a.batch.seq, mark, started) {
                gaps::Verdict::Store => {
                    let m = last.entry(gw).or_insert(a.batch.seq);
                    *m = (*m).max(a.batch.seq);
                    keep.push(true);
                }
                gaps::Verdict::Hold { after } => {
                    held.push((a.tenant.clone(), gw.to_string(), a.batch.seq, after));
                    keep.push(false);
                }
            }
        }
        for (tenant, gateway, seq, after) in held {
            let detail = format!(
                "batch {seq} of '{gateway}' skips batches after {after} that are not stored: not stored, awaiting the resend of the missing ones"
            );
            let topic = topic::topic(&tenant, &gateway, Channel::Telemetry);
            self.reject(Reason::SeqGap, &topic, None, detail, now);
        }
        accepted.into_iter().zip(keep).filter_map(|(a, k)| k.then_some(a)).collect()
    }

    fn count_message(&self, channel: &'static str) {
        self.metrics.messages.get_or_create(&ChannelLabel { channel }).inc();
    }

    fn reject(&self, reason: Reason, topic: &str, device: Option<&str>, detail: String, now: Timestamp) {
        self.metrics.reject(reason, 1);
        tracing::debug!(message = "Refused.", reason = reason.as_str(), topic, detail = %detail);
        self.rejections.push(Rejection {
            reason,
            topic: topic.to_string(),
            device: device.map(str::to_string),
            detail,
            at: now,
        });
    }

    /// Decode, then check the envelope, then every reading.
    fn decode_and_validate(&self, topic: &Topic<'_>, msg: &Message, now: Timestamp) -> Option<Accepted> {
        if msg.payload.len() > self.limits.max_payload_bytes {
            let detail = format!(
                "payload of {} bytes exceeds the limit of {}",
                msg.payload.len(),
                self.limits.max_payload_bytes
            );
            self.reject(Reason::Oversized, &msg.topic, None, detail, now);
            return None;
        }
        let mut batch = match codec::decode(&msg.payload) {
            Ok(b) => b,
            Err(e) => {
                self.reject(Reason::Malformed, &msg.topic, None, e.to_string(), now);
                return None;
            }
        };
        if let Err((reason, detail)) = validate::check_envelope(topic, &batch, &self.inventory) {
            self.reject(reason, &msg.topic, None, detail, now);
            return None;
        }
        let gateway = batch.gateway.clone();
        // A poll's readings come grouped by device: look the owner up once per device.
        let mut owner: Option<(protocol::DeviceId, Result<(), (Reason, String)>)> = None;
        batch.readings.retain(|r| {
            let owned = match &owner {
                Some((d, result)) if *d == r.device => result.clone(),
                _ => {
                    let result = validate::check_owner(&gateway, &r.device, &self.inventory);
                    owner = Some((r.device.clone(), result.clone()));
                    result
                }
            };
            match owned.and_then(|()| validate::check_value(r, &self.limits, now)) {
                Ok(()) => true,
                Err((reason, detail)) => {
                    self.reject(reason, &msg.topic, Some(&r.device), detail, now);
                    false
                }
            }
        });
        Some(Accepted { tenant: topic.tenant.to_string(), batch })
    }

    /// One durable append for the whole group, then bookkeeping and sinks.
    fn store(&self, accepted: Vec<Accepted>) -> Result<(), store::StoreError> {
        if accepted.is_empty() {
            return Ok(());
        }
        let messages = accepted.len();
        let (tenants, batches): (Vec<String>, Vec<Batch>) = accepted.into_iter().map(|a| (a.tenant, a.batch)).unzip();
        let started = Instant::now();
        let outcomes = self.store.append_batches(&batches)?;
        self.metrics.append_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.group_size.observe(messages as f64);
        // Newest time per device, one entry per run of a device's readings: one inventory
        // lock per group instead of a map update per reading.
        let mut seen: Vec<(&str, Timestamp)> = Vec::new();
        for ((tenant, batch), o) in tenants.iter().zip(&batches).zip(outcomes) {
            match o {
                AppendOutcome::Stored { readings } => {
                    self.metrics.batches_stored.inc();
                    self.metrics.readings_stored.inc_by(readings as u64);
                    for r in &batch.readings {
                        match seen.last_mut() {
                            Some((d, ts)) if *d == r.device.as_str() => *ts = (*ts).max(r.ts),
                            _ => seen.push((r.device.as_str(), r.ts)),
                        }
                    }
                    for sink in &self.sinks {
                        sink.accept(tenant, &batch.readings);
                    }
                }
                AppendOutcome::Duplicate => {
                    self.metrics.batches_duplicate.inc();
                }
            }
        }
        self.inventory.seen_many(seen);
        Ok(())
    }

    fn status(&self, topic: &Topic<'_>, payload: &[u8]) {
        if payload.is_empty() {
            return; // a cleared retained message
        }
        match serde_json::from_slice::<GatewayStatus>(payload) {
            Ok(s) if s.gateway == topic.gateway => self.inventory.set_gateway_online(topic.gateway, s.online),
            Ok(s) => {
                tracing::warn!(message = "Status names another gateway.", topic_gateway = topic.gateway, status_gateway = %s.gateway)
            }
            Err(e) => tracing::warn!(message = "Bad gateway status.", gateway = topic.gateway, error = %e),
        }
    }
}
