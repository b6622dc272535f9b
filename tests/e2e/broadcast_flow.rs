//! A broadcast's life on a small simulated county, through the demo's real gateways:
//! approval, delivery to `played` from the speakers' own acks, pre-emption and resume, cancel, an offline speaker catching up,
//! validation, restart, and live progress.

use std::time::Duration;

use serde_json::{Value, json};
use simulator::{Fault, Table};

use super::{audit_lines, base, call, count, create, get, in_secs, small, start, state_of, wait_for};

/// Text that a speaker reads for about `secs` seconds (4 CJK characters a second).
fn text_of(secs: usize) -> String {
    "请注意收听紧急广播。".chars().cycle().take(secs * 4).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_red_broadcast_waits_for_a_second_operator_then_plays_on_every_speaker_with_proof_in_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let demo = start(small(2), dir.path()).await;
    let url = format!("{}/api/v1/broadcasts", base(&demo));
    let body = json!({
        "level": "red", "text": "山洪预警：请立即撤离到高处。", "targets": ["all"],
        "expires_at": in_secs(600), "headline": "山洪预警 Flash flood warning",
    });

    let (status, v) = call("POST", &url, None, Some(body.clone())).await;
    assert_eq!(status, 401, "{v}");
    let id = create(&demo, &demo.admin_token, body).await;
    let v = get(&demo, id).await;
    assert_eq!(v["state"], "pending_approval");
    assert_eq!((count(&v, "pending"), v["feedback"]["0"].as_u64()), (6, Some(6)), "nothing sent before approval: {v}");

    let approve = format!("{url}/{id}/approve");
    let (status, v) = call("POST", &approve, Some(&demo.admin_token), None).await;
    assert_eq!(status, 403, "the creator cannot approve: {v}");
    assert!(v["error"].as_str().unwrap_or("").contains("different operator"), "{v}");
    let (status, v) = call("POST", &approve, Some(&demo.operator_token), None).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("active")), "{v}");
    assert_eq!(v["approved_by"], "operator-2");

    let v = wait_for(&demo, id, "played on all six speakers", 60, |v| count(v, "played") == 6).await;
    assert_eq!(v["state"], "completed");
    assert_eq!(v["feedback"]["3"], 6, "feedback code 3 (succeeded) for every speaker: {v}");
    for d in v["deliveries"].as_array().unwrap() {
        for s in ["queued", "sent", "delivered", "playing", "played"] {
            assert!(d["reached"][s].is_string(), "{} never reached {s}: {d}", d["speaker"]);
        }
    }
    let (status, v) = call("POST", &approve, Some(&demo.operator_token), None).await;
    assert_eq!(status, 422, "approving twice is refused: {v}");

    // The audit log has the whole story, chained.
    let lines = audit_lines(&demo);
    let kinds: Vec<&str> = lines.iter().filter_map(|l| l["event"]["type"].as_str()).collect();
    for k in ["created", "approved", "delivery", "finished"] {
        assert!(kinds.contains(&k), "no {k} in the audit log");
    }
    let played = lines.iter().filter(|l| l["event"]["type"] == "delivery" && l["event"]["state"] == "played").count();
    assert_eq!(played, 6);
    let (status, audit) = call("GET", &format!("{url}/audit"), Some(&demo.admin_token), None).await;
    assert_eq!((status, audit["verified"].as_bool()), (200, Some(true)), "{audit}");

    let (_, speakers) = call("GET", &format!("{}/api/v1/speakers", base(&demo)), None, None).await;
    assert_eq!(speakers.as_array().map(Vec::len), Some(6), "{speakers}");
    let (_, metrics) = call("GET", &format!("{}/metrics", base(&demo)), None, None).await;
    let metrics = metrics.as_str().unwrap_or("").to_string();
    assert!(metrics.contains("ingest_broadcast_delivery_transitions_total{state=\"played\"} 6"), "{metrics}");
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_bad_fields_are_refused_naming_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let demo = start(small(1), dir.path()).await;
    let url = format!("{}/api/v1/broadcasts", base(&demo));
    let bad = json!({
        "level": "purple", "text": "x".repeat(1600), "targets": ["atlantis"],
        "expires_at": "2001-01-01T00:00:00Z", "repeat": 0,
    });
    let (status, v) = call("POST", &url, Some(&demo.admin_token), Some(bad)).await;
    assert_eq!(status, 400);
    let e = v["error"].as_str().unwrap_or("");
    for needle in ["level 'purple'", "text of 1600 bytes", "atlantis", "expires_at", "repeat 0"] {
        assert!(e.contains(needle), "error does not name {needle}: {e}");
    }
    let (status, v) = call("POST", &url, Some(&demo.admin_token), Some(json!({"level": "red"}))).await;
    assert_eq!(status, 400, "{v}");
    let (status, _) = call("GET", &format!("{url}/999"), None, None).await;
    assert_eq!(status, 404);
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_level_preempts_a_playing_broadcast_which_then_resumes_and_ends_played() {
    let dir = tempfile::tempdir().unwrap();
    let demo = start(small(1), dir.path()).await;
    let speaker = "dongcun-speaker-1";
    let blue = create(
        &demo,
        &demo.admin_token,
        json!({"level": "blue", "text": text_of(12), "targets": [speaker], "expires_at": in_secs(600)}),
    )
    .await;
    wait_for(&demo, blue, "blue playing", 30, |v| state_of(v, speaker) == "playing").await;
    let red = create(
        &demo,
        &demo.admin_token,
        json!({"level": "red", "text": text_of(3), "targets": [speaker], "expires_at": in_secs(600)}),
    )
    .await;
    let (status, _) =
        call("POST", &format!("{}/api/v1/broadcasts/{red}/approve", base(&demo)), Some(&demo.operator_token), None)
            .await;
    assert_eq!(status, 200);
    wait_for(&demo, blue, "blue pre-empted by red", 30, |v| state_of(v, speaker) == "preempted").await;
    wait_for(&demo, red, "red played", 30, |v| state_of(v, speaker) == "played").await;
    let v = wait_for(&demo, blue, "blue resumed and played", 60, |v| state_of(v, speaker) == "played").await;
    let d = &v["deliveries"][0];
    assert!(d["reached"]["preempted"].is_string() && d["reached"]["played"].is_string(), "{d}");
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_broadcast_on_every_speaker_and_each_confirms() {
    let dir = tempfile::tempdir().unwrap();
    let demo = start(small(1), dir.path()).await;
    let id = create(
        &demo,
        &demo.admin_token,
        json!({"level": "yellow", "text": text_of(30), "targets": ["all"], "expires_at": in_secs(600)}),
    )
    .await;
    wait_for(&demo, id, "playing on all three", 30, |v| super::count(v, "playing") == 3).await;
    let (status, v) =
        call("POST", &format!("{}/api/v1/broadcasts/{id}/cancel", base(&demo)), Some(&demo.operator_token), None).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("cancelled")), "{v}");
    let v = wait_for(&demo, id, "every stop confirmed", 30, |v| {
        v["deliveries"].as_array().is_some_and(|d| d.iter().all(|d| d["stop"]["confirmed"] == true))
    })
    .await;
    assert_eq!(count(&v, "cancelled"), 3);
    assert_eq!(v["feedback"]["5"], 3, "feedback code 5 (cancelled): {v}");
    for s in ["dongcun-speaker-1", "xicun-speaker-1", "nancun-speaker-1"] {
        let state = demo.county.read(s, Table::Input, 0, 1).unwrap()[0];
        assert_ne!(state, 1, "{s} still plays");
    }
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_speaker_shows_queued_and_catches_up_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let demo = start(small(1), dir.path()).await;
    demo.county.inject("xicun-speaker-1", Fault::SpeakerOffline).unwrap();
    let id = create(
        &demo,
        &demo.admin_token,
        json!({"level": "blue", "text": text_of(2), "targets": ["all"], "expires_at": in_secs(600)}),
    )
    .await;
    let v = wait_for(&demo, id, "two played, the offline one queued after a failed attempt", 60, |v| {
        count(v, "played") == 2
            && state_of(v, "xicun-speaker-1") == "queued"
            && v["deliveries"][2]["attempts"].as_u64() >= Some(1)
    })
    .await;
    let d = v["deliveries"].as_array().unwrap().iter().find(|d| d["speaker"] == "xicun-speaker-1").cloned().unwrap();
    assert!(d["reason"].as_str().unwrap_or("").contains("did not answer"), "{d}");
    demo.county.clear("xicun-speaker-1").unwrap();
    wait_for(&demo, id, "the returning speaker played", 60, |v| state_of(v, "xicun-speaker-1") == "played").await;
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_survive_an_ingest_restart_and_a_tampered_audit_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let demo = start(small(1), dir.path()).await;
    let id = create(
        &demo,
        &demo.admin_token,
        json!({"level": "blue", "text": text_of(2), "targets": ["all"], "expires_at": in_secs(600)}),
    )
    .await;
    let before = wait_for(&demo, id, "played everywhere", 60, |v| count(v, "played") == 3).await;
    let pending = create(
        &demo,
        &demo.admin_token,
        json!({"level": "orange", "text": text_of(2), "targets": ["dongcun"], "expires_at": in_secs(600)}),
    )
    .await;
    demo.stop().await;

    let demo = start(small(1), dir.path()).await;
    let after = get(&demo, id).await;
    for field in ["state", "counts", "deliveries", "released_at"] {
        assert_eq!(after[field], before[field], "{field} changed across the restart");
    }
    assert_eq!(get(&demo, pending).await["state"], "pending_approval");
    let (status, _) =
        call("POST", &format!("{}/api/v1/broadcasts/{pending}/approve", base(&demo)), Some(&demo.operator_token), None)
            .await;
    assert_eq!(status, 200, "a broadcast created before the restart can be approved after it");
    let audit = demo.ingest.state.broadcasts.audit_path().to_path_buf();
    demo.stop().await;

    let text = std::fs::read_to_string(&audit).unwrap();
    std::fs::write(&audit, text.replacen("\"level\":\"orange\"", "\"level\":\"blue\"", 1)).unwrap();
    let opts = ingest::demo::DemoOptions {
        http: "127.0.0.1:0".parse().unwrap(),
        mqtt: "127.0.0.1:0".parse().unwrap(),
        data: Some(dir.path().to_path_buf()),
        spec: small(1),
        ..Default::default()
    };
    let err = ingest::demo::Demo::start(opts).await.err().expect("a tampered audit log stops ingest");
    assert!(format!("{err:#}").contains("does not verify"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_progress_streams_as_server_sent_events() {
    let dir = tempfile::tempdir().unwrap();
    let demo = start(small(1), dir.path()).await;
    let id = create(
        &demo,
        &demo.admin_token,
        json!({"level": "red", "text": text_of(2), "targets": ["all"], "expires_at": in_secs(600)}),
    )
    .await;
    let mut resp = reqwest::get(format!("{}/api/v1/broadcasts/{id}/events", base(&demo))).await.expect("event stream");
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let (status, _) =
        call("POST", &format!("{}/api/v1/broadcasts/{id}/approve", base(&demo)), Some(&demo.operator_token), None)
            .await;
    assert_eq!(status, 200);
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !(seen.contains("event: approved") && seen.matches("\"state\":\"played\"").count() >= 3) {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk()).await.expect("events in time").expect("stream");
        let Some(chunk) = chunk else { break };
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.starts_with("event: progress"), "the stream opens with the current counts: {seen}");
    assert!(seen.contains("event: delivery") && seen.contains("\"feedback\":2"), "{seen}");
    let first: Value = serde_json::from_str(seen.lines().nth(1).unwrap_or("").trim_start_matches("data: ")).unwrap();
    assert_eq!(first["counts"]["pending"], 3, "{first}");
    // Stopping ingest ends the stream instead of waiting for it.
    let stopping = tokio::spawn(demo.stop());
    tokio::time::timeout(Duration::from_secs(10), stopping).await.expect("ingest stops with a stream open").unwrap();
    let ended =
        tokio::time::timeout(Duration::from_secs(5), async { while let Ok(Some(_)) = resp.chunk().await {} }).await;
    assert!(ended.is_ok(), "the event stream ends when ingest stops");
}
