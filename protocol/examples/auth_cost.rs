//! What authenticating every uplink message costs on this machine, to choose the scheme
//! (docs/BENCHMARKS.md, "Authentication"; protocol::auth).
//!
//! `cargo run --release -p protocol --example auth_cost` prints, per message, for the
//! pipeline benchmark's batch (50 readings, 10 devices x 5 metrics) in the binary and the
//! JSON codec, and for 1 KiB and 5 KiB bodies:
//! - Ed25519: sign, verify (`verify_strict`), and batch verification of 64 signatures
//!   (the random-linear-combination check ed25519-dalek's `verify_batch` makes, written
//!   out over curve25519-dalek's multiscalar multiplication so the workspace needs no
//!   `batch` feature and its `merlin` dependency);
//! - the link key: X25519 of the two static keys + HKDF-SHA256 (once per gateway), then
//!   HMAC-SHA256 over tenant, gateway, channel and envelope (`auth::seal_mac`/`open_mac`);
//! - decoding the batch, for scale;
//!
//! and what each would take of one core at 10,000 messages/s (500,000 readings/s in
//! batches of 50). Each figure is the median of 7 rounds of this thread's CPU time (from
//! `/proc/thread-self/schedstat`), so other work on the machine inflates it less than
//! wall time; shared caches and SMT siblings still do. A measurement, not a test.
#![allow(clippy::print_stdout, clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::time::Instant;

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use protocol::auth::{self, LinkKey};
use protocol::codec::{self, Codec};
use protocol::topic::{Channel, Topic};
use protocol::{Batch, Metric, Reading, Timestamp};
use sha2::{Digest, Sha512};

const METRICS: [(&str, f64); 5] =
    [("flow", 1.25), ("volume_total", 1234.5), ("pressure", 0.31), ("valve_open", 1.0), ("battery_voltage", 3.6)];
const RATE: f64 = 10_000.0;
const BATCH_SIGS: usize = 64;

fn pipeline_batch(seq: u64) -> Batch {
    let base = 1_763_900_000_000i64;
    let mut readings = Vec::with_capacity(50);
    for d in 0..10 {
        let device = format!("m-7-{d}");
        let ts = Timestamp(base + seq as i64 * 1000 + d);
        for (m, v) in METRICS {
            readings.push(Reading::new(device.as_str(), Metric::new(m), ts, v + (seq % 100) as f64 * 0.01));
        }
    }
    Batch { gateway: "gw-7".into(), seq, readings }
}

/// CPU time this thread has run, in nanoseconds (`/proc/thread-self/schedstat`), so that
/// other processes on the same cores do not inflate the figures; wall time if unreadable.
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

/// Ed25519 batch verification as ed25519-dalek 2's `verify_batch` does it: with random
/// 128-bit z_i, check 8 * ( -(sum z_i s_i) B + sum z_i R_i + sum (z_i k_i) A_i ) == 0.
fn verify_batch(messages: &[&[u8]], sigs: &[Signature], keys: &[VerifyingKey], rng: &mut u64) -> bool {
    let n = sigs.len();
    let mut scalars = Vec::with_capacity(2 * n + 1);
    let mut points = Vec::with_capacity(2 * n + 1);
    let mut b = Scalar::ZERO;
    let mut zs = Vec::with_capacity(n);
    for i in 0..n {
        // xorshift for the z_i: a real verifier draws them from a CSPRNG (dalek: merlin
        // transcript + thread rng), which costs well under a microsecond per signature.
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        let z = Scalar::from(u128::from(*rng) << 64 | u128::from(rng.rotate_left(32)));
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(*sigs[i].s_bytes())) else { return false };
        let Some(r) = CompressedEdwardsY(*sigs[i].r_bytes()).decompress() else { return false };
        let mut h = Sha512::new();
        h.update(sigs[i].r_bytes());
        h.update(keys[i].as_bytes());
        h.update(messages[i]);
        let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
        b -= z * s;
        scalars.push(z);
        points.push(r);
        zs.push(z * k);
    }
    scalars.insert(0, b);
    points.insert(0, ED25519_BASEPOINT_POINT);
    scalars.extend(zs);
    points.extend(keys.iter().map(VerifyingKey::to_edwards));
    EdwardsPoint::vartime_multiscalar_mul(&scalars, &points).mul_by_cofactor().is_identity()
}

fn row(what: &str, us: f64) {
    println!("| {what} | {us:.2} | {:.0}% |", us * RATE / 1e6 * 100.0);
}

fn main() {
    let gateway = SigningKey::from_bytes(&[7u8; 32]);
    let ingest = SigningKey::from_bytes(&[9u8; 32]);
    let topic = Topic::new("bench", "gw-7", Channel::Telemetry);

    let binary = codec::encode(&pipeline_batch(41), Codec::Binary);
    let json = codec::encode(&pipeline_batch(41), Codec::Json);
    let kib1: Vec<u8> = (0..1024u32).map(|i| i as u8).collect();
    let kib5: Vec<u8> = (0..5 * 1024u32).map(|i| i as u8).collect();
    println!("pipeline batch (50 readings): binary {} bytes, JSON {} bytes", binary.len(), json.len());
    println!();
    println!("| per message | µs | one core at 10k messages/s |");
    println!("|---|---|---|");

    let link = LinkKey::for_ingest(&ingest, &gateway.verifying_key(), "bench", "gw-7").unwrap();
    let link_us = per_call(200, |_| {
        black_box(LinkKey::for_ingest(&ingest, black_box(&gateway.verifying_key()), "bench", "gw-7").unwrap());
    });
    println!("| link key: X25519 + HKDF, once per gateway (not per message) | {link_us:.1} | - |");

    for (name, body) in [("binary batch", &binary), ("JSON batch", &json), ("1 KiB", &kib1), ("5 KiB", &kib5)] {
        let n = 20_000;
        let decode = matches!(name, "binary batch" | "JSON batch");
        if decode {
            row(
                &format!("{name} ({} B): decode (for scale)", body.len()),
                per_call(n / 4, |_| {
                    black_box(codec::decode(black_box(body)).unwrap());
                }),
            );
        }
        let sealed = auth::seal_mac(&topic, &link, 41, body);
        row(
            &format!("{name}: HMAC-SHA256 seal (gateway)"),
            per_call(n, |i| {
                black_box(auth::seal_mac(&topic, &link, i as u64, black_box(body)));
            }),
        );
        row(
            &format!("{name}: HMAC-SHA256 open (ingest)"),
            per_call(n, |_| {
                black_box(auth::open_mac(black_box(&sealed), &topic, &link).unwrap());
            }),
        );
        let signed = auth::seal_signed(&topic, &gateway, 41, body);
        let vk = gateway.verifying_key();
        row(
            &format!("{name}: Ed25519 sign (gateway)"),
            per_call(n / 10, |i| {
                black_box(auth::seal_signed(&topic, &gateway, i as u64, black_box(body)));
            }),
        );
        row(
            &format!("{name}: Ed25519 verify (ingest)"),
            per_call(n / 10, |_| {
                black_box(auth::open_signed(black_box(&signed), &topic, &vk).unwrap());
            }),
        );
        // Batch verification: 64 messages of 64 different gateways (the pipeline's case:
        // consecutive messages rarely share a key).
        let keys: Vec<SigningKey> = (0..BATCH_SIGS).map(|i| SigningKey::from_bytes(&[i as u8 + 1; 32])).collect();
        let vks: Vec<VerifyingKey> = keys.iter().map(SigningKey::verifying_key).collect();
        let sigs: Vec<Signature> = keys.iter().map(|k| k.sign(body)).collect();
        let msgs: Vec<&[u8]> = vec![body.as_slice(); BATCH_SIGS];
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        assert!(verify_batch(&msgs, &sigs, &vks, &mut rng), "a good batch verifies");
        let mut bad = sigs.clone();
        bad[5] = keys[6].sign(body);
        assert!(!verify_batch(&msgs, &bad, &vks, &mut rng), "one bad signature fails the batch");
        let batch_us = per_call(n / 10 / BATCH_SIGS + 5, |_| {
            black_box(verify_batch(&msgs, &sigs, &vks, &mut rng));
        });
        row(&format!("{name}: Ed25519 batch verify, {BATCH_SIGS} at once (ingest)"), batch_us / BATCH_SIGS as f64);
    }
}
