//! Emergency broadcast end to end: the real ingest (API, dispatcher, audit log), the real
//! embedded broker, the demo's real gateway agents (which verify each command, write it
//! into the speaker's mailbox over Modbus TCP and ack from the speaker's command log), and
//! the simulated county whose speakers run the firmware terminal. Nothing on the path of a
//! broadcast is a stand-in.
//!
//! - `broadcast_flow`: approvals, delivery to `played`, pre-emption, cancel, offline
//!   speakers catching up, validation, restart, live progress.
//! - `broadcast_trust`: forged, tampered, expired and replayed commands refused by the
//!   gateway and by the speaker, in the delivery state and the audit log.
//! - `broadcast_cap`: a real CAP 1.2 alert imports; exports pass the OASIS schema.
//! - `broadcast_county`: 1,000 speakers behind 50 gateways, approval to 99 % playing.

#[path = "broadcast_cap.rs"]
mod cap;
#[path = "broadcast_county.rs"]
mod county;
#[path = "broadcast_flow.rs"]
mod flow;
#[path = "broadcast_trust.rs"]
mod trust;

use std::net::SocketAddr;
use std::time::Duration;

use ingest::broadcast::config::{BroadcastConfig, DispatchConfig};
use ingest::demo::{Demo, DemoOptions};
use serde_json::Value;
use simulator::CountySpec;
use testkit::eventually;

/// A small county for broadcast tests: 3 villages with `speakers` speakers each, no
/// meters or cows (nothing but speakers and the waterworks to poll).
pub(crate) fn small(speakers: usize) -> CountySpec {
    CountySpec { villages: 3, speakers_per_village: speakers, meters: 0, cows: 0, ..CountySpec::demo() }
}

/// Retry timing for tests: a command without ack is sent again after 3 s.
pub(crate) fn fast() -> BroadcastConfig {
    BroadcastConfig {
        dispatch: DispatchConfig {
            ack_timeout: Duration::from_secs(3),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(3),
            expiry_grace: Duration::from_secs(10),
        },
        ..BroadcastConfig::default()
    }
}

/// A demo of `spec` on port 0 in `dir`, random outages off.
pub(crate) async fn start(spec: CountySpec, dir: &std::path::Path) -> Demo {
    let opts = DemoOptions {
        http: SocketAddr::from(([127, 0, 0, 1], 0)),
        mqtt: SocketAddr::from(([127, 0, 0, 1], 0)),
        data: Some(dir.to_path_buf()),
        spec,
        broadcast: Some(fast()),
        ..DemoOptions::default()
    };
    let demo = Demo::start(opts).await.expect("demo starts");
    demo.county.set_random_outages(false);
    gateways_online(&demo, 30).await;
    demo
}

/// Waits until every gateway of the demo has told ingest it is online (it is connected
/// and subscribed to its command topic), so that the first command is not lost.
pub(crate) async fn gateways_online(demo: &Demo, secs: u64) {
    eventually("every gateway online", Duration::from_secs(secs), || async {
        demo.gateways.iter().all(|g| demo.ingest.state.inventory.gateway_online(&g.gateway) == Some(true)).then_some(())
    })
    .await;
}

/// Base URL of the demo's API.
pub(crate) fn base(demo: &Demo) -> String {
    format!("http://{}", demo.ingest.http)
}

/// A request to the API; returns the status and the JSON body (Null if none).
pub(crate) async fn call(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = client.request(method.parse().expect("method"), url);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Token {t}"));
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// RFC 3339 time `secs` from now.
pub(crate) fn in_secs(secs: i64) -> String {
    ingest::api::time::rfc3339(protocol::Timestamp(crate::common::now_ms() + secs * 1000))
}

/// Creates a broadcast as `token`; returns its id.
pub(crate) async fn create(demo: &Demo, token: &str, body: Value) -> u64 {
    let (status, v) = call("POST", &format!("{}/api/v1/broadcasts", base(demo)), Some(token), Some(body)).await;
    assert_eq!(status, 201, "create: {v}");
    v["id"].as_u64().expect("id")
}

/// The broadcast with its deliveries.
pub(crate) async fn get(demo: &Demo, id: u64) -> Value {
    let (status, v) = call("GET", &format!("{}/api/v1/broadcasts/{id}", base(demo)), None, None).await;
    assert_eq!(status, 200, "get: {v}");
    v
}

/// The delivery state of `speaker` in broadcast `v`.
pub(crate) fn state_of<'a>(v: &'a Value, speaker: &str) -> &'a str {
    v["deliveries"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["speaker"] == speaker))
        .and_then(|d| d["state"].as_str())
        .unwrap_or("none")
}

/// Waits until `check` holds on the broadcast; returns it.
pub(crate) async fn wait_for(demo: &Demo, id: u64, what: &str, secs: u64, check: impl Fn(&Value) -> bool) -> Value {
    eventually(what, Duration::from_secs(secs), || async {
        let v = get(demo, id).await;
        check(&v).then_some(v)
    })
    .await
}

/// `counts[state]` of a broadcast.
pub(crate) fn count(v: &Value, state: &str) -> u64 {
    v["counts"][state].as_u64().unwrap_or(0)
}

/// The audit log's lines as JSON.
pub(crate) fn audit_lines(demo: &Demo) -> Vec<Value> {
    let text = std::fs::read_to_string(demo.ingest.state.broadcasts.audit_path()).expect("audit log");
    text.lines().map(|l| serde_json::from_str(l).expect("audit line is JSON")).collect()
}
