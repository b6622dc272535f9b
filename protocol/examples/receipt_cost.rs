//! What a speaker receipt costs on this machine (docs/BENCHMARKS.md, "Authentication";
//! protocol::receipt): what the terminal spends per state change, what ingest spends per
//! relayed ack.
//!
//! `cargo run --release -p protocol --example receipt_cost` prints, per receipt:
//! - the terminal's key from its 32-byte seed (once per boot: a fixed-base scalar
//!   multiplication for the public half);
//! - signing one receipt (`Receipt::sign`: canonical bytes, SHA-512 twice, one fixed-base
//!   scalar multiplication), what the firmware does at every command log change;
//! - verifying a relayed one (`SignedReceipt::verify`: hex decode, `verify_strict`), what
//!   ingest does per speaker ack before the dispatcher's lock.
//!
//! Each figure is the median of 7 rounds of this thread's CPU time (from
//! `/proc/thread-self/schedstat`), as `auth_cost` measures. The Cortex-M figure of the
//! same signing comes from the firmware images (firmware/images), not from here. A
//! measurement, not a test.
#![allow(clippy::print_stdout, clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::time::Instant;

use ed25519_dalek::SigningKey;
use protocol::receipt::Receipt;

fn cpu_ns(start: Instant) -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or_else(|| start.elapsed().as_nanos() as f64)
}

/// Median over 7 rounds of the CPU time per call of `f`, in microseconds.
fn per_call(iters: usize, mut f: impl FnMut(usize)) -> f64 {
    for i in 0..iters / 10 + 1 {
        f(i);
    }
    let epoch = Instant::now();
    let mut rounds: Vec<f64> = (0..7)
        .map(|_| {
            let t = cpu_ns(epoch);
            for i in 0..iters {
                f(i);
            }
            (cpu_ns(epoch) - t) / 1e3 / iters as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[3]
}

fn main() {
    let seed = [3u8; 32];
    let key = SigningKey::from_bytes(&seed);
    let public = key.verifying_key();
    let receipt = |i: usize| Receipt {
        gateway: "gw-dongcun".into(),
        device: "dongcun-speaker-17".into(),
        command: 1_764_000_000_000 + i as u64,
        broadcast: 1_764_000_000_000,
        state: 4,
        reason: 0,
        counter: 1_000 + i as u64,
    };
    let bytes = receipt(0).to_bytes().len();
    let key_us = per_call(2_000, |i| {
        let mut s = seed;
        s[0] = i as u8;
        black_box(SigningKey::from_bytes(black_box(&s)));
    });
    let r = receipt(1);
    let sign_us = per_call(2_000, |_| {
        black_box(black_box(&r).sign(&key));
    });
    let signed: Vec<_> = (0..64).map(|i| receipt(i).signed(&key)).collect();
    let verify_us = per_call(2_000, |i| {
        black_box(signed[i % 64].verify(&public)).unwrap();
    });
    println!("speaker receipt ({bytes} signed bytes), per receipt, CPU time, median of 7 rounds:");
    println!("  key from seed (terminal, once per boot)   {key_us:8.1} us");
    println!("  sign (terminal, per command log change)   {sign_us:8.1} us");
    println!("  verify relayed (ingest, per speaker ack)  {verify_us:8.1} us");
    println!(
        "  a 1,000-speaker broadcast: ~3 acks a speaker (delivered, playing, played): {:.0} ms of ingest CPU",
        verify_us * 3_000.0 / 1_000.0
    );
}
