//! CAP 1.2 both ways against the OASIS schema: a real NWS alert
//! (`tests/fixtures/cap/`) imports, and the CAP that ingest exports for it and for
//! broadcasts made through the API passes WMO's `capvalidator` (a real peer: Python, in
//! `.venv`, installed by `.ci/setup`).

use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use super::{base, call, create, in_secs, small, start};

/// Runs the OASIS CAP 1.2 schema check; returns (passed, message).
fn schema_check(xml: &str) -> (bool, String) {
    let script = testkit::root().join("tests/fixtures/cap/validate.py");
    let mut child = Command::new(testkit::python_with("capvalidator"))
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    child.stdin.take().expect("stdin").write_all(xml.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("python ends");
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("validator output: {}", String::from_utf8_lossy(&out.stderr)));
    (v["passed"] == true, v["message"].as_str().unwrap_or("").to_string())
}

async fn export(base: &str, id: u64) -> String {
    let resp = reqwest::get(format!("{base}/api/v1/broadcasts/{id}/cap")).await.expect("export");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap_or("").starts_with("application/cap+xml"));
    resp.text().await.expect("xml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_nws_cap_alert_imports_and_every_export_passes_the_cap_1_2_schema() {
    let fixture =
        std::fs::read_to_string(testkit::root().join("tests/fixtures/cap/nws-ksto-severe-thunderstorm.xml")).unwrap();
    let (passed, message) = schema_check(&fixture);
    assert!(passed, "the fixture itself: {message}");

    let dir = tempfile::tempdir().unwrap();
    let demo = start(small(1), dir.path()).await;
    let base = base(&demo);
    let client = reqwest::Client::new();
    let import = |query: String| {
        client
            .post(format!("{base}/api/v1/broadcasts/cap?{query}"))
            .header("Authorization", format!("Token {}", demo.admin_token))
            .header("content-type", "application/cap+xml")
            .body(fixture.clone())
            .send()
    };

    // Its areas are in California: no village here matches, and the error says so.
    let resp = import(String::new()).await.unwrap();
    assert_eq!(resp.status(), 422);
    assert!(resp.text().await.unwrap().contains("TUOLUMNE"));
    // It expired in 2003: a drill replays it with a new expiry, to every speaker.
    let expires = in_secs(3600).replace('+', "%2B");
    let resp = import(format!("targets=all&expires_at={expires}")).await.unwrap();
    assert_eq!(resp.status(), 201);
    let v: Value = resp.json().await.unwrap();
    let b = &v["broadcast"];
    assert_eq!(b["level"], "orange", "Severe maps to orange: {v}");
    assert_eq!(b["state"], "pending_approval", "orange needs a second operator");
    assert_eq!(b["cap"]["identifier"], "KSTO1055887203");
    assert_eq!(b["cap"]["sender"], "KSTO@NWS.NOAA.GOV");
    assert_eq!(b["event"], "SEVERE THUNDERSTORM");
    let text = b["content"]["text"].as_str().unwrap();
    assert!(text.starts_with("SEVERE THUNDERSTORM WARNING TAKE COVER IN A SUBSTANTIAL SHELTER"), "{text}");
    let imported = v["id"].as_u64().unwrap();

    let xml = export(&base, imported).await;
    let (passed, message) = schema_check(&xml);
    assert!(passed, "export of the imported alert: {message}\n{xml}");
    assert!(
        xml.contains("<references>KSTO@NWS.NOAA.GOV,KSTO1055887203,2003-06-17T14:57:00-07:00</references>"),
        "{xml}"
    );
    assert!(xml.contains("<polygon>38.47,-120.14 38.34,-119.95"), "areas kept: {xml}");
    assert!(!xml.contains("Z<"), "no time in Z: {xml}");

    // Broadcasts made through the API export too: red TTS with a start time, and audio.
    let red = create(
        &demo,
        &demo.admin_token,
        json!({"level": "red", "text": "山洪预警：请立即撤离到高处。", "targets": ["dongcun", "xicun-speaker-1"],
               "expires_at": in_secs(600), "start_at": in_secs(60), "event": "山洪 Flash flood", "category": "Geo",
               "headline": "山洪预警", "instruction": "立即撤离到高处。", "repeat": 3}),
    )
    .await;
    let audio = create(
        &demo,
        &demo.admin_token,
        json!({"level": "blue", "audio": {"url": "https://example.org/notices/water-cut.mp3", "sha256": "ab".repeat(32)},
               "targets": ["all"], "expires_at": in_secs(600), "description": "Water supply cut 14:00-18:00 <maintenance> & repair"}),
    )
    .await;
    for id in [red, audio] {
        let xml = export(&base, id).await;
        let (passed, message) = schema_check(&xml);
        assert!(passed, "export of broadcast {id}: {message}\n{xml}");
    }
    let red_xml = export(&base, red).await;
    assert!(red_xml.contains("<severity>Extreme</severity>") && red_xml.contains("+08:00</sent>"), "{red_xml}");

    // An export imports back to the same broadcast: level, targets, repeat.
    let resp = client
        .post(format!("{base}/api/v1/broadcasts/cap"))
        .header("Authorization", format!("Token {}", demo.admin_token))
        .body(red_xml)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let back: Value = resp.json().await.unwrap();
    let b = &back["broadcast"];
    assert_eq!((b["level"].as_str(), b["repeat"].as_u64()), (Some("red"), Some(3)), "{back}");
    assert_eq!(b["targets"], json!(["village:dongcun", "speaker:xicun-speaker-1"]));

    // A cancelled broadcast exports as a CAP Cancel, which validates too; and a CAP
    // Cancel that references it cancels it.
    let (status, _) =
        call("POST", &format!("{base}/api/v1/broadcasts/{audio}/cancel"), Some(&demo.admin_token), None).await;
    assert_eq!(status, 200);
    let cancel_xml = export(&base, audio).await;
    assert!(cancel_xml.contains("<msgType>Cancel</msgType>"));
    let (passed, message) = schema_check(&cancel_xml);
    assert!(passed, "export of a cancel: {message}\n{cancel_xml}");
    let red_cancel = export(&base, red).await.replace("<msgType>Alert</msgType>", "<msgType>Cancel</msgType>");
    let red_cancel = red_cancel.replacen(
        "<scope>Public</scope>",
        &format!(
            "<scope>Public</scope>\n  <references>village-telemetry@county,vt-county-{red},2026-01-01T00:00:00+08:00</references>"
        ),
        1,
    );
    let resp = client
        .post(format!("{base}/api/v1/broadcasts/cap"))
        .header("Authorization", format!("Token {}", demo.admin_token))
        .body(red_cancel)
        .send()
        .await
        .unwrap();
    let outcome: Value = resp.json().await.unwrap();
    assert_eq!(outcome["result"], "cancelled", "{outcome}");
    assert_eq!(super::get(&demo, red).await["state"], "cancelled");

    // Outside input: size, garbage, a missing element named.
    let missing = fixture.replace("<urgency>Immediate</urgency>", "");
    let resp = client
        .post(format!("{base}/api/v1/broadcasts/cap?targets=all"))
        .header("Authorization", format!("Token {}", demo.admin_token))
        .body(missing)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("alert/info/urgency"));
    demo.stop().await;
}
