//! The pipeline: decode -> validate -> de-duplicate -> store -> sinks, for every source.
//!
//! Sources (`crate::sources`) hand it readings: the MQTT source telemetry messages in groups
//! ([`Pipeline::prepare`] then [`Pipeline::commit`]), the line-protocol source readings it
//! has checked ([`Pipeline::write_readings`]). Both end in the same step after the durable
//! append (count, last seen, sinks). Only telemetry passes here: gateway status and command
//! acks take the MQTT source's own path.
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
//! - Nothing is read from a message before it verified with the link key of its topic's
//!   gateway ([`crate::keyring`]): a forgery is counted (`bad_signature`, `unsigned`) and
//!   touches no map, no audit log, no per-gateway state; delivery acks go out signed.
//! - A batch whose seq is more than [`MAX_SEQ_JUMP`] past its gateway's stored mark is
//!   refused (`seq_out_of_range`) and never becomes the mark.

pub mod gaps;
pub mod validate;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use protocol::codec;
use protocol::delivery::DeliveryAck;
use protocol::topic::{self, Channel, Topic};
use protocol::{Batch, Reading, Timestamp};
use store::{AppendOutcome, Store};

use crate::config::Limits;
use crate::inventory::Inventory;
use crate::metrics::Metrics;
use validate::{Reason, Rejection, Rejections};

/// Most batches a gateway's queue can hold past what ingest stored: its largest queue
/// (64 MiB) over the smallest batch (64 bytes). A seq further ahead than this cannot come
/// from the gateway's own queue.
pub const MAX_SEQ_JUMP: u64 = 1 << 20;

pub use crate::sinks::Sink;
pub use crate::time::Clock;

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
    /// Enrolled gateways' keys: every message must verify with its gateway's.
    pub keyring: Arc<crate::keyring::Keyring>,
}

/// A group of messages decoded and validated, waiting to be committed.
#[derive(Debug)]
pub struct Prepared {
    now: Timestamp,
    /// The tenant of each accepted batch.
    tenants: Vec<String>,
    /// Telemetry batches that passed their envelope checks (refused readings removed).
    batches: Vec<Batch>,
    /// `(tenant, gateway)` of every telemetry message, accepted or not: each gets a
    /// delivery ack.
    gateways: std::collections::BTreeSet<(String, String)>,
}

/// A telemetry batch that passed its envelope checks.
struct Accepted {
    tenant: String,
    batch: Batch,
}

impl Pipeline {
    /// Processes a group of telemetry messages: [`Pipeline::prepare`], then
    /// [`Pipeline::commit`]. Returns `Err` only if the store failed, in which case nothing
    /// of the group may be acknowledged.
    pub fn process(&self, group: &[Message]) -> Result<Outcome, store::StoreError> {
        let prepared = self.prepare(group);
        self.commit(&prepared)
    }

    /// Decodes and validates a group of telemetry messages (a message on another channel
    /// is not the pipeline's and is skipped). Touches no stored state, so the MQTT source
    /// prepares the next group while the previous one is being committed.
    pub fn prepare(&self, group: &[Message]) -> Prepared {
        let now = (self.clock)();
        let mut p = Prepared { now, tenants: Vec::new(), batches: Vec::new(), gateways: Default::default() };
        for msg in group {
            let Ok(topic) = Topic::parse(&msg.topic) else { continue };
            if topic.channel != Channel::Telemetry {
                continue;
            }
            let Some(opened) = self.authenticate(&topic, &msg.topic, &msg.payload, now) else { continue };
            p.gateways.insert((topic.tenant.to_string(), topic.gateway.to_string()));
            if let Some(a) = self.decode_and_validate(&topic, &msg.topic, opened.body, opened.counter, now) {
                p.tenants.push(a.tenant);
                p.batches.push(a.batch);
            }
        }
        p
    }

    /// Stores a prepared group with one durable append (after holding back seq gaps), feeds
    /// the sinks, and says which delivery acks to send. Groups must be committed in the
    /// order they arrived; a failed commit may be retried with the same `Prepared`.
    pub fn commit(&self, p: &Prepared) -> Result<Outcome, store::StoreError> {
        let keep = self.hold_gaps(&p.tenants, &p.batches, p.now);
        if keep.iter().all(|&k| k) {
            self.store(&p.tenants, &p.batches)?;
        } else {
            let (tenants, batches): (Vec<String>, Vec<Batch>) = p
                .tenants
                .iter()
                .zip(&p.batches)
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|((t, b), _)| (t.clone(), b.clone()))
                .unzip();
            self.store(&tenants, &batches)?;
        }
        let mut outcome = Outcome::default();
        for (tenant, gateway) in &p.gateways {
            if let Some(seq) = self.store.gateway_seq(gateway) {
                let topic = topic::topic(tenant, gateway, Channel::Delivery);
                let wire = self.keyring.seal_delivery(tenant, gateway, DeliveryAck { seq }, p.now.0);
                outcome.delivery_acks.push((topic, wire));
            }
        }
        Ok(outcome)
    }

    /// Which batches to store now: not those that skip over seqs not stored yet (see
    /// [`gaps`]), which are refused with reason `seq_gap`.
    fn hold_gaps(&self, tenants: &[String], batches: &[Batch], now: Timestamp) -> Vec<bool> {
        let started = std::time::Instant::now();
        let mut last: BTreeMap<&str, u64> = BTreeMap::new();
        let mut keep = Vec::with_capacity(batches.len());
        for (tenant, b) in tenants.iter().zip(batches) {
            let gw = b.gateway.as_str();
            let mark = last.get(gw).copied().or_else(|| self.store.gateway_seq(gw));
            if b.seq > mark.unwrap_or(0).saturating_add(MAX_SEQ_JUMP) {
                let detail = format!(
                    "batch {} of '{gw}' is more than {MAX_SEQ_JUMP} past the stored seq {}: more than its queue could hold; not stored",
                    b.seq,
                    mark.unwrap_or(0)
                );
                let topic = topic::topic(tenant, gw, Channel::Telemetry);
                self.reject(Reason::SeqOutOfRange, &topic, None, detail, now);
                keep.push(false);
                continue;
            }
            match self.gaps.judge(gw, b.seq, mark, started) {
                gaps::Verdict::Store => {
                    let m = last.entry(gw).or_insert(b.seq);
                    *m = (*m).max(b.seq);
                    keep.push(true);
                }
                gaps::Verdict::Hold { after } => {
                    let detail = format!(
                        "batch {} of '{gw}' skips batches after {after} that are not stored: not stored, awaiting the resend of the missing ones",
                        b.seq
                    );
                    let topic = topic::topic(tenant, gw, Channel::Telemetry);
                    self.reject(Reason::SeqGap, &topic, None, detail, now);
                    keep.push(false);
                }
            }
        }
        keep
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

    /// Verifies an uplink message against the link key of its topic's gateway and checks
    /// its counter is fresh; the body only if both hold. A refusal is counted under a fixed
    /// reason (`oversized`, `unsigned`, `bad_signature`, `replayed`) with a fixed text:
    /// nothing of the message is read, and no state is kept for its sender.
    pub fn authenticate<'a>(
        &self,
        topic: &Topic<'_>,
        topic_name: &str,
        payload: &'a [u8],
        now: Timestamp,
    ) -> Option<protocol::auth::Opened<'a>> {
        if payload.len() > self.limits.max_payload_bytes.saturating_add(protocol::auth::MAX_OVERHEAD) {
            let detail =
                format!("payload of {} bytes exceeds the limit of {}", payload.len(), self.limits.max_payload_bytes);
            self.reject(Reason::Oversized, topic_name, None, detail, now);
            return None;
        }
        let opened = match self.keyring.open(topic, payload) {
            Ok(o) => o,
            Err(e) => {
                let reason =
                    if e == protocol::auth::AuthError::Unsigned { Reason::Unsigned } else { Reason::BadSignature };
                self.reject(reason, topic_name, None, e.to_string(), now);
                return None;
            }
        };
        if !self.keyring.fresh(topic, opened.counter) {
            let detail = format!("counter {} was seen already or is older than the last", opened.counter);
            self.reject(Reason::Replayed, topic_name, None, detail, now);
            return None;
        }
        Some(opened)
    }

    /// Decode a verified body, then check the envelope, then every reading.
    fn decode_and_validate(
        &self,
        topic: &Topic<'_>,
        topic_name: &str,
        body: &[u8],
        counter: u64,
        now: Timestamp,
    ) -> Option<Accepted> {
        if body.len() > self.limits.max_payload_bytes {
            let detail =
                format!("payload of {} bytes exceeds the limit of {}", body.len(), self.limits.max_payload_bytes);
            self.reject(Reason::Oversized, topic_name, None, detail, now);
            return None;
        }
        let mut batch = match codec::decode(body) {
            Ok(b) => b,
            Err(e) => {
                self.reject(Reason::Malformed, topic_name, None, e.to_string(), now);
                return None;
            }
        };
        if batch.seq != counter {
            let detail = format!("batch seq {} is not the seq {counter} its authenticator covers", batch.seq);
            self.reject(Reason::BadSignature, topic_name, None, detail, now);
            return None;
        }
        if let Err((reason, detail)) = validate::check_envelope(topic, &batch, &self.inventory) {
            self.reject(reason, topic_name, None, detail, now);
            return None;
        }
        let gateway = batch.gateway.clone();
        // A poll's readings come grouped by device: look the owner up once per device.
        let mut owner: Option<(protocol::DeviceId, validate::Checked)> = None;
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
                    self.reject(reason, topic_name, Some(&r.device), detail, now);
                    false
                }
            }
        });
        Some(Accepted { tenant: topic.tenant.to_string(), batch })
    }

    /// One durable append for the whole group, then [`Pipeline::durable`].
    fn store(&self, tenants: &[String], batches: &[Batch]) -> Result<(), store::StoreError> {
        if batches.is_empty() {
            return Ok(());
        }
        let messages = batches.len();
        let started = Instant::now();
        let outcomes = self.store.append_batches(batches)?;
        self.metrics.append_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.group_size.observe(messages as f64);
        let mut stored: Vec<(&str, &[Reading])> = Vec::with_capacity(batches.len());
        for ((tenant, batch), o) in tenants.iter().zip(batches).zip(outcomes) {
            match o {
                AppendOutcome::Stored { .. } => {
                    self.metrics.batches_stored.inc();
                    stored.push((tenant, &batch.readings));
                }
                AppendOutcome::Duplicate => {
                    self.metrics.batches_duplicate.inc();
                }
            }
        }
        self.durable(&stored);
        Ok(())
    }

    /// Stores readings a source has already checked (the line-protocol source) with one
    /// durable append, then [`Pipeline::durable`]. Returns once they are durable; `Err`
    /// means nothing may be acknowledged.
    pub fn write_readings(&self, tenant: &str, readings: &[Reading]) -> Result<(), store::StoreError> {
        if readings.is_empty() {
            return Ok(());
        }
        self.store.append_readings(readings)?;
        self.durable(&[(tenant, readings)]);
        Ok(())
    }

    /// What follows every durable append, whichever source it came from: count the
    /// readings, move the devices' last-seen times, feed the sinks.
    fn durable(&self, stored: &[(&str, &[Reading])]) {
        // Newest time per device, one entry per run of a device's readings: one inventory
        // lock per group instead of a map update per reading.
        let mut seen: Vec<(&str, Timestamp)> = Vec::new();
        for (tenant, readings) in stored {
            self.metrics.readings_stored.inc_by(readings.len() as u64);
            for r in *readings {
                match seen.last_mut() {
                    Some((d, ts)) if *d == r.device.as_str() => *ts = (*ts).max(r.ts),
                    _ => seen.push((r.device.as_str(), r.ts)),
                }
            }
            for sink in &self.sinks {
                sink.accept(tenant, readings);
            }
        }
        self.inventory.seen_many(seen);
    }
}

/// Longest command-ack reason kept (characters): what a gateway writes there reaches the
/// audit log and the API.
pub const MAX_REASON_CHARS: usize = 200;

/// Cuts `text` to at most `max` characters.
pub(crate) fn cap(text: &mut String, max: usize) {
    if let Some((i, _)) = text.char_indices().nth(max) {
        text.truncate(i);
        text.push('…');
    }
}
