//! The store-and-forward queue: every batch waits here until ingest confirms it is stored.
//!
//! Design constraints:
//! - A batch leaves the queue only on ingest's delivery ack (the highest seq durable in
//!   ingest's store), never on the broker's PUBACK: a broker can acknowledge and then die.
//! - Unconfirmed batches are sent again after `resend_after`, and all of them, oldest
//!   first, after every reconnect.
//! - Bounded: beyond `max_bytes` the oldest batches are dropped and counted, so a gateway
//!   cut off for weeks keeps the newest data rather than stopping.
//! - Each batch is encoded once, when it is sealed; resending sends the same bytes.
//!
//! This queue lives in memory: it survives link outages but not a gateway restart.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::codec::{self, Codec};
use protocol::{Batch, Reading, Timestamp};

use crate::config::QueueConfig;

/// A sealed batch waiting for its delivery ack.
#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    payload: Arc<[u8]>,
    sealed_at: Timestamp,
    sent_at: Option<Instant>,
}

/// Fill level and age, published as the gateway's own readings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueStats {
    /// Batches waiting.
    pub depth: usize,
    /// Bytes waiting.
    pub bytes: u64,
    /// `bytes / max_bytes`.
    pub fill: f64,
    /// Seconds since the oldest waiting batch was sealed.
    pub oldest_age_s: f64,
    /// Batches dropped because the queue was full, since start.
    pub dropped: u64,
}

/// The queue.
#[derive(Debug)]
pub struct Queue {
    gateway: String,
    codec: Codec,
    max_bytes: u64,
    entries: VecDeque<Entry>,
    bytes: u64,
    next_seq: u64,
    dropped: u64,
}

impl Queue {
    /// An empty queue whose first batch gets seq 1.
    pub fn new(gateway: &str, codec: Codec, config: &QueueConfig) -> Queue {
        Queue {
            gateway: gateway.to_string(),
            codec,
            max_bytes: config.max_bytes.max(1),
            entries: VecDeque::new(),
            bytes: 0,
            next_seq: 1,
            dropped: 0,
        }
    }

    /// Seals readings into the next batch; returns its seq.
    pub fn push(&mut self, readings: Vec<Reading>, now: Timestamp) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let batch = Batch { gateway: self.gateway.clone(), seq, readings };
        let payload: Arc<[u8]> = codec::encode(&batch, self.codec).into();
        self.bytes += payload.len() as u64;
        self.entries.push_back(Entry { seq, payload, sealed_at: now, sent_at: None });
        while self.bytes > self.max_bytes && self.entries.len() > 1 {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= old.payload.len() as u64;
                self.dropped += 1;
                tracing::warn!(message = "Queue full: dropped the oldest batch.", seq = old.seq, gateway = %self.gateway);
            }
        }
        seq
    }

    /// Forgets every batch up to and including `seq`: ingest has stored them.
    pub fn ack(&mut self, seq: u64) -> usize {
        let mut n = 0;
        while self.entries.front().is_some_and(|e| e.seq <= seq) {
            if let Some(e) = self.entries.pop_front() {
                self.bytes -= e.payload.len() as u64;
                n += 1;
            }
        }
        n
    }

    /// Batches to publish now, oldest first: never sent, or sent longer ago than
    /// `resend_after` without an ack. At most `limit`, and they are marked sent.
    pub fn due(&mut self, now: Instant, resend_after: Duration, limit: usize) -> Vec<(u64, Arc<[u8]>)> {
        let mut out = Vec::new();
        for e in self.entries.iter_mut() {
            if out.len() >= limit {
                break;
            }
            let due = e.sent_at.is_none_or(|t| now.duration_since(t) >= resend_after);
            if due {
                e.sent_at = Some(now);
                out.push((e.seq, e.payload.clone()));
            }
        }
        out
    }

    /// Batches sent and not yet acked or due again: what is in flight.
    pub fn in_flight(&self, now: Instant, resend_after: Duration) -> usize {
        self.entries.iter().filter(|e| e.sent_at.is_some_and(|t| now.duration_since(t) < resend_after)).count()
    }

    /// Marks every batch unsent, so that after a reconnect they go again, in order.
    pub fn resend_all(&mut self) {
        self.entries.iter_mut().for_each(|e| e.sent_at = None);
    }

    /// Fill level and age.
    pub fn stats(&self, now: Timestamp) -> QueueStats {
        QueueStats {
            depth: self.entries.len(),
            bytes: self.bytes,
            fill: self.bytes as f64 / self.max_bytes as f64,
            oldest_age_s: self.entries.front().map_or(0.0, |e| (now.0 - e.sealed_at.0).max(0) as f64 / 1000.0),
            dropped: self.dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use protocol::Metric;

    use super::*;

    fn queue(max_bytes: u64) -> Queue {
        Queue::new("gw", Codec::Json, &QueueConfig { dir: None, max_bytes })
    }

    fn readings(n: usize) -> Vec<Reading> {
        (0..n).map(|i| Reading::new("d", Metric::new("flow"), Timestamp(i as i64), 1.0)).collect()
    }

    #[test]
    fn batches_leave_only_on_the_delivery_ack() {
        let mut q = queue(1 << 20);
        let t = Instant::now();
        assert_eq!(q.push(readings(2), Timestamp(0)), 1);
        assert_eq!(q.push(readings(2), Timestamp(0)), 2);
        assert_eq!(q.due(t, Duration::from_secs(10), 10).len(), 2);
        assert_eq!(q.due(t, Duration::from_secs(10), 10).len(), 0, "sent, not yet due again");
        assert_eq!(q.ack(1), 1);
        assert_eq!(q.stats(Timestamp(0)).depth, 1);
        let again = q.due(t + Duration::from_secs(11), Duration::from_secs(10), 10);
        assert_eq!(again.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![2], "unconfirmed batches are resent");
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_them() {
        let mut q = queue(1);
        for _ in 0..3 {
            q.push(readings(1), Timestamp(0));
        }
        let s = q.stats(Timestamp(5000));
        assert_eq!((s.depth, s.dropped), (1, 2));
        assert_eq!(s.oldest_age_s, 5.0);
        assert_eq!(q.due(Instant::now(), Duration::ZERO, 10)[0].0, 3, "the newest is kept");
    }

    #[test]
    fn after_a_reconnect_everything_goes_again_in_order() {
        let mut q = queue(1 << 20);
        let t = Instant::now();
        for _ in 0..3 {
            q.push(readings(1), Timestamp(0));
        }
        q.due(t, Duration::from_secs(60), 10);
        q.resend_all();
        let seqs: Vec<u64> = q.due(t, Duration::from_secs(60), 10).into_iter().map(|(s, _)| s).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
    }
}
