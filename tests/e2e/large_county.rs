//! The pilot county at full size (`CountySpec::large`: 150 villages in 9 townships, 15,000
//! meters, 400 speakers, 3 waterworks, 2,000 cows) through the real demo: gateways, broker,
//! ingest in one process.
//!
//! Ignored in `cargo test` (about 30 s of both cores and 600 MB, measured 2026-12-03):
//! CI runs it as a step of its own (`.ci/run`: `cargo test -p village-tests --test e2e
//! large_county -- --ignored`). It proves that the county starts and every site reports,
//! that the summary counts what the plan has, that paging through 17,000 devices returns
//! each once, that a fault on a pump station reaches the summary and the live stream, and
//! it times a red broadcast to all 400 speakers from approval to 99 % of those that can
//! play (the figures print with `--nocapture`; docs/BENCHMARKS.md has the release ones).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ingest::demo::{Demo, DemoOptions};
use serde_json::{Value, json};
use simulator::{CountySpec, Fault, SpeakerCondition};
use testkit::eventually;

use crate::broadcast::{base, call, count, create, in_secs, wait_for};

/// Resident memory of this process (kB), from /proc.
fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn summary(base: &str) -> Value {
    crate::common::get_json(base, "/api/v1/summary").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the full-size county: 30 s of both cores and 600 MB; CI runs it on its own (--ignored)"]
async fn the_full_size_county_starts_reports_pages_and_broadcasts_to_400_speakers() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let opts = DemoOptions {
        http: SocketAddr::from(([127, 0, 0, 1], 0)),
        mqtt: SocketAddr::from(([127, 0, 0, 1], 0)),
        data: Some(dir.path().to_path_buf()),
        spec: CountySpec::large(),
        ..DemoOptions::default()
    };
    let demo = Demo::start(opts).await.expect("the large demo starts");
    let started_in = started.elapsed();
    let base = base(&demo);
    let plan = demo.county.plan().clone();

    // Every site reports: no site without data, every township counted.
    let s = eventually("every site to report", Duration::from_secs(300), || async {
        let s = summary(&base).await;
        s["sites"].as_array().unwrap().iter().all(|x| !x["newest"].is_null()).then_some(s)
    })
    .await;
    let all_report = started.elapsed();
    assert_eq!(s["sites"].as_array().unwrap().len(), 155, "150 villages, 3 waterworks, 2 farms");
    assert_eq!(s["townships"].as_array().unwrap().len(), 9);
    assert_eq!(s["totals"]["meters"]["total"], 15_000);
    assert_eq!(s["totals"]["speakers"]["total"], 400);
    assert_eq!(s["totals"]["cows"]["cows"], 2_000);
    assert_eq!(s["totals"]["pumps"]["total"], 3);
    let per_township: u64 =
        s["townships"].as_array().unwrap().iter().map(|t| t["devices"]["total"].as_u64().unwrap()).sum();
    assert_eq!(per_township, s["totals"]["devices"]["total"].as_u64().unwrap(), "every device is in a township");
    let (_, h, bytes) = {
        let resp = reqwest::Client::new()
            .get(format!("{base}/api/v1/summary"))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        let h = resp.headers().clone();
        (resp.status(), h, resp.bytes().await.unwrap().len())
    };
    assert_eq!(h["content-encoding"], "gzip");

    // Paging through every device with cursors: each once.
    let mut seen = BTreeSet::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let page = crate::common::get_json(&base, &format!("/api/v1/devices?limit=5000&cursor={cursor}")).await;
        pages += 1;
        for d in page["items"].as_array().unwrap() {
            assert!(seen.insert(d["id"].as_str().unwrap().to_string()), "{} twice", d["id"]);
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    let plan_devices = plan.devices().map(|d| 1 + d.children.len()).sum::<usize>() + plan.gateways.len();
    assert_eq!(seen.len(), plan_devices);

    // A pump trip shows on the live stream (the pump's fault word) and in the summary.
    let mut stream =
        reqwest::Client::new().get(format!("{base}/api/v1/stream?site=waterworks-2")).send().await.unwrap();
    demo.county.inject("waterworks-2-pump-1", Fault::PumpTrip).unwrap();
    let tripped = Instant::now();
    let mut buf = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !buf.contains("\"fault_word\"") || !buf.contains("waterworks-2-pump-1") {
        let chunk =
            tokio::time::timeout_at(deadline, stream.chunk()).await.expect("the trip on the stream").unwrap().unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
    let on_stream = tripped.elapsed();
    eventually("the trip in the summary", Duration::from_secs(60), || async {
        let s = crate::common::get_json(&base, "/api/v1/summary?site=waterworks-2").await;
        s["sites"][0]["issues"].as_array()?.iter().any(|i| i["key"] == "pump_fault").then_some(())
    })
    .await;
    drop(stream);

    // A red broadcast to every speaker: from approval to 99 % of the speakers that can play.
    let offline: BTreeSet<String> =
        demo.county.faults().into_iter().filter(|(_, f)| *f == Fault::SpeakerOffline).map(|(d, _)| d).collect();
    let failing = demo
        .county
        .speaker_conditions()
        .into_iter()
        .filter(|(d, c)| *c == SpeakerCondition::AmplifierFault && !offline.contains(d))
        .count();
    let able = 400 - offline.len() - failing;
    let id = create(
        &demo,
        &demo.admin_token,
        json!({"level": "red", "text": "山洪预警：请立即撤离到高处。", "targets": ["all"], "expires_at": in_secs(900)}),
    )
    .await;
    let approved = Instant::now();
    let (status, v) =
        call("POST", &format!("{base}/api/v1/broadcasts/{id}/approve"), Some(&demo.operator_token), None).await;
    assert_eq!(status, 200, "{v}");
    let target = (able * 99).div_ceil(100) as u64;
    wait_for(&demo, id, "99 % of the able speakers playing or played", 180, |v| {
        count(v, "playing") + count(v, "played") >= target
    })
    .await;
    let to_99 = approved.elapsed();

    println!(
        "large county: started in {:.1} s, every site reporting after {:.1} s, RSS {} MB; summary {} bytes gzipped; \
         {pages} pages of devices; pump trip on the stream after {:.1} s; red broadcast to 400 speakers ({} offline, \
         {failing} failing): approval to 99 % of the {able} able playing in {:.1} s",
        started_in.as_secs_f64(),
        all_report.as_secs_f64(),
        rss_kb() / 1024,
        bytes,
        on_stream.as_secs_f64(),
        offline.len(),
        to_99.as_secs_f64(),
    );
    demo.stop().await;
}
