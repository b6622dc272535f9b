//! A writer for the crash test: appends a known stream of batches until it is killed.
//!
//! Usage: `crash-writer DIR`. It opens the store in `DIR`, resends the last few batches the
//! store already holds (as a gateway without its delivery acks would) and checks they come
//! back `Duplicate`, then appends batch `seq`, `seq + 1`, ... forever, a few per call (group
//! commit), and prints each seq on its own line once `append_batches` returned Ok for it.
//! `store/tests/crash.rs` kills it with SIGKILL at random moments and checks that every
//! printed seq is in the store exactly once.
//!
//! The stream is a pure function of seq (see [`batch`]), so the test can recompute it.

use std::io::Write;

use protocol::{Batch, Metric, Reading, Timestamp};
use store::{AppendOutcome, FsyncPolicy, Store, StoreConfig};

/// The gateway the stream belongs to.
const GATEWAY: &str = "crash-gw";
/// 2026-01-01T00:00:00Z: the stream's first timestamp.
const T0: i64 = 1_767_225_600_000;

/// Readings of batch `seq`: `1 + seq % 5` readings one minute apart per seq, over three
/// devices, so checkpoints cut across series, partitions and roll-up buckets.
fn batch(seq: u64) -> Batch {
    let n = 1 + seq % 5;
    let readings = (0..n)
        .map(|i| {
            let ts = T0 + seq as i64 * 60_000 + i as i64;
            Reading::new(format!("dev-{}", seq % 3).as_str(), Metric::new("flow"), Timestamp(ts), (seq * 10 + i) as f64)
        })
        .collect();
    Batch { gateway: GATEWAY.into(), seq, readings }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).ok_or("usage: crash-writer DIR")?;
    let mut config = StoreConfig::new(dir);
    config.fsync = FsyncPolicy::Always;
    // Checkpoint often, so kills also land during sealing and log deletion.
    config.checkpoint_points = 300;
    let (store, _) = Store::open(config)?;
    let stored = store.gateway_seq(GATEWAY).unwrap_or(0);
    let resend: Vec<Batch> = (stored.saturating_sub(2).max(1)..=stored).map(batch).collect();
    if store.append_batches(&resend)?.iter().any(|o| *o != AppendOutcome::Duplicate) {
        return Err("a resent batch was stored again".into());
    }
    let mut out = std::io::stdout().lock();
    let mut seq = stored + 1;
    loop {
        let group: Vec<Batch> = (seq..seq + 1 + seq % 4).map(batch).collect();
        let outcomes = store.append_batches(&group)?;
        for (b, o) in group.iter().zip(&outcomes) {
            if *o != (AppendOutcome::Stored { readings: b.readings.len() }) {
                return Err(format!("batch {} came back {o:?}", b.seq).into());
            }
            writeln!(out, "{}", b.seq)?;
        }
        out.flush()?;
        seq += group.len() as u64;
    }
}
