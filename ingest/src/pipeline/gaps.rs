//! Seq gaps: why ingest does not store a batch that skips over unstored batches at once.
//!
//! De-duplication is by high-water mark: a batch at or below its gateway's highest stored
//! seq is a resend. That is only safe if a gateway's batches are stored in seq order. A
//! broker can break the order: after ingest restarts, the embedded broker is up and
//! gateways reconnect and resend before ingest's own subscription exists, and a broker
//! drops (after PUBACK) what it has no subscriber for. If ingest then stored the next
//! batches, the high-water mark would pass the lost ones, the delivery ack would tell the
//! gateway to forget them, and their resends would be taken for duplicates: acknowledged
//! data lost. (The crash test, `tests/e2e/crash_ingest.rs`, found exactly that.)
//!
//! So a batch whose seq is more than one above the stored mark (counting batches accepted
//! earlier in the same group) is refused with reason `seq_gap` and not stored, and the
//! delivery ack stays at the mark: the gateway keeps the missing batches and resends them,
//! oldest first, after its timeout. A gap can also be real (a gateway whose queue was full
//! dropped its oldest batches, which it no longer holds): once a gateway's gap has lasted
//! `hold`, its batches are accepted again and the mark jumps over the gap.
//!
//! The hold is measured in real (monotonic) time, not ingest's clock, which may be a
//! simulation's. It is kept in memory only: after a restart a gap is held afresh.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What to do with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Its seq follows the mark, is a resend, or the gap has been held long enough.
    Store,
    /// It skips unstored seqs: refuse it for now.
    Hold {
        /// The gateway's highest stored (or accepted) seq.
        after: u64,
    },
}

/// Per-gateway time since a gap was first seen.
#[derive(Debug)]
pub struct SeqGaps {
    hold: Duration,
    since: Mutex<HashMap<String, Instant>>,
}

impl Default for SeqGaps {
    fn default() -> SeqGaps {
        SeqGaps::new(Duration::from_secs(60))
    }
}

impl SeqGaps {
    /// Gaps are held for `hold` before they are accepted as real.
    pub fn new(hold: Duration) -> SeqGaps {
        SeqGaps { hold, since: Mutex::new(HashMap::new()) }
    }

    /// Judges `seq` of `gateway`, whose highest stored or accepted seq is `last`.
    ///
    /// A gateway never stored before counts as having stored seq 0: gateways number their
    /// batches from 1, and the batches a broker drops first are exactly the first ones a
    /// new gateway sends (before ingest's subscription exists). A gateway that arrives with
    /// a later seq (its queue outlived ingest's store) waits one hold, then is accepted.
    pub fn judge(&self, gateway: &str, seq: u64, last: Option<u64>, now: Instant) -> Verdict {
        let mut since = self.since.lock().unwrap_or_else(|e| e.into_inner());
        let last = last.unwrap_or(0);
        if seq > last.saturating_add(1) {
            let first = *since.entry(gateway.to_string()).or_insert(now);
            if now.duration_since(first) < self.hold {
                return Verdict::Hold { after: last };
            }
            since.remove(gateway);
            tracing::warn!(
                message = "Accepting a seq gap: the gateway dropped batches it no longer holds.",
                gateway,
                after = last,
                seq
            );
        } else if seq == last.saturating_add(1) {
            since.remove(gateway);
        }
        // The next seq, a resend (the store calls it a duplicate), or a gap held long enough.
        Verdict::Store
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_after_a_gap_is_held_until_the_missing_one_comes_or_the_hold_expires() {
        let g = SeqGaps::new(Duration::from_secs(60));
        let t = Instant::now();
        assert_eq!(g.judge("gw", 1, None, t), Verdict::Store, "the first batch ever");
        assert_eq!(
            g.judge("new", 3, None, t),
            Verdict::Hold { after: 0 },
            "a new gateway's seq 3 waits for its 1 and 2, which a broker may have dropped"
        );
        assert_eq!(g.judge("new", 3, None, t + Duration::from_secs(60)), Verdict::Store, "or for the hold");
        assert_eq!(g.judge("gw", 11, Some(10), t), Verdict::Store);
        assert_eq!(g.judge("gw", 5, Some(10), t), Verdict::Store, "a resend: the store calls it a duplicate");
        assert_eq!(g.judge("gw", 13, Some(10), t), Verdict::Hold { after: 10 });
        assert_eq!(g.judge("gw", 13, Some(10), t + Duration::from_secs(30)), Verdict::Hold { after: 10 });
        assert_eq!(g.judge("gw", 11, Some(10), t + Duration::from_secs(31)), Verdict::Store, "the missing one");
        // A new gap starts a new hold.
        let t2 = t + Duration::from_secs(100);
        assert_eq!(g.judge("gw", 20, Some(11), t2), Verdict::Hold { after: 11 });
        assert_eq!(g.judge("gw", 20, Some(11), t2 + Duration::from_secs(60)), Verdict::Store, "a real gap");
        assert_eq!(g.judge("other", 7, Some(1), t2), Verdict::Hold { after: 1 }, "per gateway");
    }
}
