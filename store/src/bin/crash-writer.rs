//! A writer for the crash test: appends known streams of batches until it is killed.
//!
//! Usage: `crash-writer DIR [THREADS]`. It opens the store in `DIR` and starts `THREADS`
//! writer threads (default 1), one gateway each (`crash-gw-<t>`), sharing the store as
//! ingest does, so their appends share fsyncs (group commit). Each thread first resends the
//! last few batches the store already holds for its gateway (as a gateway without its
//! delivery acks would) and checks they come back `Duplicate`, then appends batch `seq`,
//! `seq + 1`, ... forever, a few per call, and prints `<t> <seq>` for each once
//! `append_batches` returned Ok. `store/tests/crash.rs` kills the process with SIGKILL at
//! random moments and checks that every printed batch is in the store exactly once.
//!
//! The streams are a pure function of `(t, seq)` (see [`batch`]), so the test can
//! recompute them.

use std::io::Write;
use std::sync::Arc;

use protocol::{Batch, Metric, Reading, Timestamp};
use store::{AppendOutcome, FsyncPolicy, Store, StoreConfig};

/// 2026-01-01T00:00:00Z: the streams' first timestamp.
const T0: i64 = 1_767_225_600_000;

/// Batch `seq` of thread `t`: `1 + seq % 5` readings one minute apart per seq, over three
/// devices of that thread, so checkpoints cut across series, partitions and roll-ups.
fn batch(t: usize, seq: u64) -> Batch {
    let n = 1 + seq % 5;
    let readings = (0..n)
        .map(|i| {
            let ts = T0 + seq as i64 * 60_000 + i as i64;
            let device = format!("dev-{t}-{}", seq % 3);
            Reading::new(device.as_str(), Metric::new("flow"), Timestamp(ts), (seq * 10 + i) as f64)
        })
        .collect();
    Batch { gateway: format!("crash-gw-{t}"), seq, readings }
}

fn write_stream(store: &Store, t: usize) -> Result<(), String> {
    let gateway = format!("crash-gw-{t}");
    let stored = store.gateway_seq(&gateway).unwrap_or(0);
    let resend: Vec<Batch> = (stored.saturating_sub(2).max(1)..=stored).map(|s| batch(t, s)).collect();
    let outcomes = store.append_batches(&resend).map_err(|e| e.to_string())?;
    if outcomes.iter().any(|o| *o != AppendOutcome::Duplicate) {
        return Err(format!("{gateway}: a resent batch was stored again"));
    }
    let mut seq = stored + 1;
    loop {
        let group: Vec<Batch> = (seq..seq + 1 + seq % 4).map(|s| batch(t, s)).collect();
        let outcomes = store.append_batches(&group).map_err(|e| e.to_string())?;
        let mut out = std::io::stdout().lock();
        for (b, o) in group.iter().zip(&outcomes) {
            if *o != (AppendOutcome::Stored { readings: b.readings.len() }) {
                return Err(format!("{gateway}: batch {} came back {o:?}", b.seq));
            }
            writeln!(out, "{t} {}", b.seq).map_err(|e| e.to_string())?;
        }
        out.flush().map_err(|e| e.to_string())?;
        seq += group.len() as u64;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: crash-writer DIR [THREADS]")?;
    let threads: usize = args.next().map_or(Ok(1), |t| t.parse())?;
    let mut config = StoreConfig::new(dir);
    config.fsync = FsyncPolicy::Always;
    // Checkpoint often, so kills also land during sealing and log deletion.
    config.checkpoint_points = 300;
    let (store, _) = Store::open(config)?;
    let store = Arc::new(store);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || write_stream(&store, t))
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| "a writer thread panicked")??;
    }
    Ok(())
}
