//! The must-show at county scale: 1,000 speakers behind 50 village gateways (the demo's
//! real gateway agents, each one Modbus TCP link to its village's speakers), a realistic
//! share of them offline, slow or with a failed amplifier. A red broadcast, approved by a
//! second operator, reaches `played` on every online speaker that can play; the offline
//! ones show `queued` and catch up when they return. Every `played` is the speaker's own
//! word: recorded on a receipt the terminal signed with its key, which the audit log keeps
//! and which verifies with the key enrolled for it. The time from approval to 99 % of the
//! online speakers `playing` is measured (docs/BENCHMARKS.md, "Broadcast").

use std::net::SocketAddr;
use std::time::Instant;

use ingest::demo::{Demo, DemoOptions};
use serde_json::{Value, json};
use simulator::{CountySpec, Fault, SpeakerCondition, SpeakerMix};

use super::{base, call, count, create, gateways_online, in_secs, wait_for};

fn ms(t: &Value) -> i64 {
    t.as_str().and_then(|s| ingest::api::time::parse(s).ok()).map_or(i64::MAX, |t| t.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_red_broadcast_reaches_every_online_speaker_of_a_1000_speaker_county_and_the_offline_ones_catch_up() {
    let _heavy = crate::common::MEMORY_HEAVY.lock().await;
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let spec = CountySpec {
        villages: 50,
        speakers_per_village: 20,
        meters: 0,
        cows: 0,
        speaker_mix: SpeakerMix::realistic(),
        ..CountySpec::demo()
    };
    let opts = DemoOptions {
        http: SocketAddr::from(([127, 0, 0, 1], 0)),
        mqtt: SocketAddr::from(([127, 0, 0, 1], 0)),
        data: Some(dir.path().to_path_buf()),
        spec,
        // The production retry timing: ack timeout 10 s, backoff 1 s doubling to 15 s.
        broadcast: None,
        ..DemoOptions::default()
    };
    let demo = Demo::start(opts).await.expect("demo starts");
    demo.county.set_random_outages(false);
    gateways_online(&demo, 120).await;
    let booted = started.elapsed();

    let conditions = demo.county.speaker_conditions();
    assert_eq!(conditions.len(), 1000);
    let gateways =
        demo.county.plan().gateways.iter().filter(|g| g.devices.iter().any(|d| d.model == "vt-sim-speaker")).count();
    assert_eq!(gateways, 50);
    let offline: Vec<String> =
        demo.county.faults().into_iter().filter(|(_, f)| *f == Fault::SpeakerOffline).map(|(d, _)| d).collect();
    let failing: Vec<String> =
        conditions.iter().filter(|(_, c)| *c == SpeakerCondition::AmplifierFault).map(|(d, _)| d.clone()).collect();
    let slow = conditions.iter().filter(|(_, c)| matches!(c, SpeakerCondition::Slow { .. })).count();
    let failing_online: Vec<&String> = failing.iter().filter(|d| !offline.contains(d)).collect();
    let able = 1000 - offline.len() - failing_online.len();
    assert!(!offline.is_empty() && slow > 0, "the mix has offline and slow speakers");

    let id = create(
        &demo,
        &demo.admin_token,
        json!({"level": "red", "text": "山洪预警：请立即撤离到高处。", "targets": ["all"], "expires_at": in_secs(900),
               "event": "山洪 Flash flood", "category": "Geo"}),
    )
    .await;
    let approve_sent = Instant::now();
    let (status, v) =
        call("POST", &format!("{}/api/v1/broadcasts/{id}/approve", base(&demo)), Some(&demo.operator_token), None)
            .await;
    assert_eq!(status, 200, "{v}");
    let approve_answered = approve_sent.elapsed();

    let v = wait_for(&demo, id, "played on every online speaker that can play", 120, |v| {
        if std::env::var_os("VT_TRACE").is_some() {
            eprintln!("{:.1}s counts {} able {able}", approve_sent.elapsed().as_secs_f64(), v["counts"]);
        }
        count(v, "played") as usize >= able
    })
    .await;
    let to_played = approve_sent.elapsed();
    let released = ms(&v["released_at"]);
    let deliveries = v["deliveries"].as_array().unwrap().clone();
    let mut latencies: Vec<i64> = deliveries
        .iter()
        .filter(|d| !offline.iter().any(|o| d["speaker"] == *o) && !failing_online.iter().any(|f| d["speaker"] == **f))
        .map(|d| ms(&d["reached"]["playing"]) - released)
        .collect();
    if std::env::var_os("VT_TRACE").is_some() {
        for d in deliveries.iter().filter(|d| d["reached"]["playing"].is_null()) {
            eprintln!("no playing: {d}");
        }
    }
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((p / 100.0 * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1];
    let (p50, p99, max) = (pct(50.0), pct(99.0), latencies[latencies.len() - 1]);
    for o in &offline {
        let d = deliveries.iter().find(|d| d["speaker"] == *o).unwrap();
        // Queued between attempts; sent while an attempt is out and the gateway waits
        // for the Modbus timeout. Never further.
        assert!(d["state"] == "queued" || d["state"] == "sent", "an offline speaker waits queued: {d}");
        assert!(d["attempts"].as_u64() >= Some(1) && d["reached"]["delivered"].is_null(), "{d}");
    }
    for f in &failing_online {
        let d = deliveries.iter().find(|d| d["speaker"] == **f).unwrap();
        assert_eq!(d["state"], "failed", "a failed amplifier is reported: {d}");
        assert!(d["reason"].as_str().unwrap_or("").starts_with("not_ready"), "{d}");
    }

    // The offline speakers come back and catch up.
    let back = Instant::now();
    for o in &offline {
        demo.county.clear(o).unwrap();
    }
    let v = wait_for(&demo, id, "the returning speakers played too", 120, |v| {
        if std::env::var_os("VT_TRACE").is_some() {
            let waiting: Vec<String> = v["deliveries"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| d["state"] != "played" && d["state"] != "failed")
                .map(|d| format!("{} {} {} {}", d["speaker"], d["state"], d["attempts"], d["reason"]))
                .collect();
            eprintln!("{:.1}s back: counts {} waiting {waiting:?}", back.elapsed().as_secs_f64(), v["counts"]);
        }
        count(v, "played") as usize + failing_online.len()
            == 1000 - failing.iter().filter(|f| offline.contains(f)).count()
    })
    .await;
    let caught_up = back.elapsed();
    let attempts: u64 = v["deliveries"].as_array().unwrap().iter().filter_map(|d| d["attempts"].as_u64()).sum();

    // Every `played` rests on the speaker's own signed receipt of that command.
    let keys: std::collections::HashMap<String, [u8; 32]> = demo.county.speaker_public_keys().into_iter().collect();
    let audit = super::audit_lines(&demo);
    let played_events: Vec<&Value> = audit
        .iter()
        .map(|l| &l["event"])
        .filter(|e| e["type"] == "delivery" && e["broadcast"] == id && e["state"] == "played")
        .collect();
    assert_eq!(played_events.len() as u64, count(&v, "played"), "one played event per played delivery");
    for e in &played_events {
        let speaker = e["speaker"].as_str().unwrap();
        let receipt: protocol::receipt::SignedReceipt = serde_json::from_value(e["receipt"].clone())
            .unwrap_or_else(|err| panic!("no receipt for {speaker}: {err}"));
        let key = ed25519_dalek::VerifyingKey::from_bytes(&keys[speaker]).unwrap();
        assert_eq!(receipt.verify(&key), Ok(()), "{speaker}");
        assert_eq!((receipt.receipt.device.as_str(), receipt.receipt.broadcast), (speaker, id));
        assert_eq!(Some(receipt.receipt.command), e["command"].as_u64());
    }
    let metrics = reqwest::get(format!("{}/metrics", base(&demo))).await.unwrap().text().await.unwrap();
    let refused: Vec<&str> =
        metrics.lines().filter(|l| l.starts_with("ingest_broadcast_receipts_refused_total{")).collect();
    println!(
        "BENCH broadcast county: speakers=1000 gateways=50 offline={} slow={} failing={} boot={:.1}s \
         approve_http={:.0}ms release_to_playing_ms p50={p50} p99={p99} max={max} (n={}) approve_to_all_played={:.1}s \
         offline_catch_up={:.1}s commands={attempts} audit_lines={} signed_played={} receipts_refused={refused:?}",
        offline.len(),
        slow,
        failing.len(),
        booted.as_secs_f64(),
        approve_answered.as_secs_f64() * 1000.0,
        latencies.len(),
        to_played.as_secs_f64(),
        caught_up.as_secs_f64(),
        audit.len(),
        played_events.len(),
    );
    // The goal (99 % playing within 5 s of approval) is a benchmark figure, recorded in
    // docs/BENCHMARKS.md with its machine and load, not a pass/fail line: how fast a shared
    // CI machine runs says nothing about whether the broadcast reached every speaker.
    demo.stop().await;
}
