//! The alert API against a real ingest: readings published over MQTT raise alerts that
//! tokens see only for their tenants; acknowledgements, silences and approvals need an
//! operator; alert state and silences survive a restart of ingest; rule packs reload
//! without a restart and an invalid pack is refused; webhooks arrive signed.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use ingest::alerts::{AlertEvent, AlertsConfig, AlertsOptions};
use ingest::auth::{Role, TokenConfig};
use ingest::config::{BrokerConfig, IngestConfig};
use ingest::inventory::{Device, GatewayInfo, Inventory, InventoryFile, Site};
use ingest::service::{self, Options, Running};
use protocol::codec::{self, Codec};
use protocol::{Batch, DeviceKind, Metric, Reading, Timestamp};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::{Value, json};
use testkit::eventually;

use crate::common::now_ms;

const ADMIN: &str = "admin-token-0123456789";
const WATER_OP: &str = "water-operator-0123456789";
const WATER_VIEWER: &str = "water-viewer-0123456789";
const DAIRY_OP: &str = "dairy-operator-0123456789";
const SECRET: &str = "webhook-secret-0123456789";

const PACK: &str = r#"
[[rules]]
id = "chlorine-low"
kind = "threshold"
severity = "critical"
summary = "Free chlorine at {device} is {value} mg/L"
select = { kind = "water_quality" }
metric = "free_chlorine"
below = 0.05
clear = 0.08
broadcast = { level = "yellow", text = "Boil water: {summary}" }

[[rules]]
id = "barn-hot"
kind = "thi"
severity = "warning"
summary = "Barn {device}: THI {value}"
select = { kind = "barn_climate" }
above = 80.0
"#;

fn inventory() -> Inventory {
    let site = |id: &str, kind: &str, tenant: &str, district: Option<&str>| Site {
        id: id.into(),
        name: id.into(),
        kind: kind.into(),
        tenant: tenant.into(),
        lat: 34.7,
        lon: 113.6,
        village: (kind == "village").then(|| id.to_string()),
        district: district.map(str::to_string),
        township: None,
    };
    let device = |id: &str, kind: DeviceKind, site: &str, gw: &str| Device {
        id: id.into(),
        kind,
        site: site.into(),
        gateway: gw.into(),
        model: String::new(),
        lat: None,
        lon: None,
        public_key: None,
    };
    Inventory::from_file(InventoryFile {
        sites: vec![
            site("works", "waterworks", "county", Some("d1")),
            site("dongcun", "village", "county", Some("d1")),
            site("xicun", "village", "county", Some("d1")),
            site("farm", "farm", "dairy", None),
        ],
        gateways: vec![
            GatewayInfo {
                id: "gw-works".into(),
                tenant: "county".into(),
                site: "works".into(),
                public_key: crate::keys::public_key("gw-works"),
            },
            GatewayInfo {
                id: "gw-farm".into(),
                tenant: "dairy".into(),
                site: "farm".into(),
                public_key: crate::keys::public_key("gw-farm"),
            },
            GatewayInfo {
                id: "gw-dongcun".into(),
                tenant: "county".into(),
                site: "dongcun".into(),
                public_key: crate::keys::public_key("gw-dongcun"),
            },
            GatewayInfo {
                id: "gw-xicun".into(),
                tenant: "county".into(),
                site: "xicun".into(),
                public_key: crate::keys::public_key("gw-xicun"),
            },
        ],
        devices: vec![
            device("wq-1", DeviceKind::WaterQuality, "works", "gw-works"),
            device("barn-1", DeviceKind::BarnClimate, "farm", "gw-farm"),
            device("dongcun-speaker-1", DeviceKind::Speaker, "dongcun", "gw-dongcun"),
            device("xicun-speaker-1", DeviceKind::Speaker, "xicun", "gw-xicun"),
        ],
    })
}

fn token(t: &str, role: Role, tenants: &[&str], name: &str) -> TokenConfig {
    TokenConfig { token: t.into(), role, tenants: tenants.iter().map(|s| s.to_string()).collect(), name: name.into() }
}

async fn start(data: &Path, rules: &Path, webhook: SocketAddr) -> Running {
    let mut config =
        IngestConfig::new(data.to_path_buf(), BrokerConfig::Embedded { listen: SocketAddr::from(([127, 0, 0, 1], 0)) });
    config.tokens = vec![
        token(ADMIN, Role::Admin, &[], "admin"),
        token(WATER_OP, Role::Operator, &["county"], "li.wei"),
        token(WATER_VIEWER, Role::Viewer, &["county"], "viewer"),
        token(DAIRY_OP, Role::Operator, &["dairy"], "wang.fang"),
    ];
    let alerts_text = format!(
        "rules = \"{}\"\nresolve_after_secs = 60\n[[notifiers]]\ntype = \"webhook\"\nurl = \"http://{webhook}/hook\"\nsecret = \"{SECRET}\"\nmin_severity = \"info\"\nmax_retries = 1\n",
        rules.display()
    );
    let alerts = AlertsConfig::from_source(&conf::Source::from_text("alerts.toml", alerts_text), Path::new("/"))
        .unwrap_or_else(|e| panic!("{e}"));
    // A stopped ingest's tasks let go of the store a moment after `stop` returns (the store
    // locks its file): try again for a while.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let running = loop {
        let options = Options {
            public_read: false,
            alerts: Some(AlertsOptions { config: alerts.clone(), ..AlertsOptions::default() }),
            ..Options::default()
        };
        match service::start(config.clone(), inventory(), options).await {
            Ok(r) => break r,
            Err(e) if e.to_string().contains("already open") && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("ingest starts: {e:#}"),
        }
    };
    let base = format!("http://{}", running.http);
    eventually("ingest to be ready", Duration::from_secs(10), || async {
        reqwest::get(format!("{base}/api/v1/health")).await.ok().filter(|r| r.status().is_success())
    })
    .await;
    running
}

async fn publish(ingest: &Running, tenant: &str, gw: &str, seq: u64, readings: Vec<Reading>) {
    let broker = ingest.mqtt.expect("the embedded broker");
    let mut opts = MqttOptions::new(format!("{gw}-{seq}"), broker.ip().to_string(), broker.port());
    let (user, pass) = ingest.broker_login.clone().expect("ingest's login");
    opts.set_credentials(user, pass);
    let (client, mut events) = AsyncClient::new(opts, 16);
    let body = codec::encode(&Batch { gateway: gw.into(), seq, readings }, Codec::Binary);
    let key = ed25519_dalek::VerifyingKey::from_bytes(&ingest.state.commands.public_key()).expect("ingest's key");
    let payload = crate::keys::seal(tenant, gw, protocol::topic::Channel::Telemetry, &key, seq, &body);
    client.publish(format!("vt/{tenant}/{gw}/up/telemetry"), QoS::AtLeastOnce, false, payload).await.expect("publish");
    // Drive the connection until the PUBACK.
    for _ in 0..20 {
        match tokio::time::timeout(Duration::from_millis(200), events.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) => break,
            Ok(Ok(_)) => {}
            _ => {}
        }
    }
    let _ = client.disconnect().await;
}

struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "POST" => self.client.post(url),
            "DELETE" => self.client.delete(url),
            _ => self.client.get(url),
        };
        if let Some(t) = token {
            req = req.header("authorization", format!("Token {t}"));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

/// What a webhook receiver got: event, timestamp and signature headers, and the body.
type Hooks = Arc<Mutex<Vec<(String, String, String, Vec<u8>)>>>;

/// A webhook receiver that keeps what it got.
async fn receiver() -> (SocketAddr, Hooks) {
    let got: Hooks = Arc::default();
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let keep = keep.clone();
            async move {
                let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                keep.lock().expect("not poisoned").push((
                    h("x-vt-event"),
                    h("x-vt-timestamp"),
                    h("x-vt-signature"),
                    body.to_vec(),
                ));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_tenant_scoped_acknowledged_silenced_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, PACK).unwrap();
    let (hook, got) = receiver().await;
    let ingest = start(&dir.path().join("data"), &rules, hook).await;
    let api = Api { base: format!("http://{}", ingest.http), client: reqwest::Client::new() };
    let alerts = ingest.state.alerts.clone().expect("alerts on");
    let mut events = alerts.subscribe();

    let now = now_ms();
    let published = std::time::Instant::now();
    publish(
        &ingest,
        "county",
        "gw-works",
        1,
        vec![Reading::new("wq-1", Metric::new("free_chlorine"), Timestamp(now), 0.02)],
    )
    .await;
    publish(
        &ingest,
        "dairy",
        "gw-farm",
        1,
        vec![
            Reading::new("barn-1", Metric::new("barn_temperature"), Timestamp(now), 33.0),
            Reading::new("barn-1", Metric::new("relative_humidity"), Timestamp(now), 70.0),
        ],
    )
    .await;
    let firing = eventually("the chlorine alert to fire", Duration::from_secs(10), || async {
        let (s, v) = api.call("GET", "/api/v1/alerts?state=firing", Some(ADMIN), None).await;
        assert_eq!(s, 200, "{v}");
        (v.as_array()?.len() == 2).then_some(v)
    })
    .await;
    println!("publish -> both alerts visible in the API: {:?}", published.elapsed());
    let water = firing.as_array().unwrap().iter().find(|a| a["rule"] == "chlorine-low").unwrap().clone();
    for field in ["id", "rule", "severity", "state", "device", "site", "started_at", "summary"] {
        assert!(!water[field].is_null(), "no {field} in {water}");
    }
    assert_eq!(water["severity"], "critical");
    assert_eq!(water["device"], "wq-1");
    assert_eq!(water["summary"], "Free chlorine at wq-1 is 0.02 mg/L");
    let id = water["id"].as_u64().unwrap();

    // Tenants: the dairy token sees only the barn, the water token only the water.
    let (_, v) = api.call("GET", "/api/v1/alerts", Some(DAIRY_OP), None).await;
    assert_eq!(v.as_array().unwrap().iter().map(|a| a["rule"].as_str().unwrap()).collect::<Vec<_>>(), ["barn-hot"]);
    let (_, v) = api.call("GET", "/api/v1/alerts?state=active", Some(WATER_VIEWER), None).await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    let (s, _) = api.call("GET", &format!("/api/v1/alerts/{id}"), Some(DAIRY_OP), None).await;
    assert_eq!(s, 404, "another tenant's alert does not exist for a dairy token");
    let (_, v) = api.call("GET", "/api/v1/rules", Some(DAIRY_OP), None).await;
    assert_eq!(v.as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect::<Vec<_>>(), ["barn-hot"]);
    let (s, _) = api.call("GET", "/api/v1/alerts", None, None).await;
    assert_eq!(s, 401, "reads need a token outside the demo");

    // Acknowledging needs an operator of the alert's tenant.
    let note = json!({ "note": "crew sent to the dosing pump" });
    let (s, _) = api.call("POST", &format!("/api/v1/alerts/{id}/ack"), None, Some(note.clone())).await;
    assert_eq!(s, 401);
    let (s, _) = api.call("POST", &format!("/api/v1/alerts/{id}/ack"), Some(WATER_VIEWER), Some(note.clone())).await;
    assert_eq!(s, 403);
    let (s, _) = api.call("POST", &format!("/api/v1/alerts/{id}/ack"), Some(DAIRY_OP), Some(note.clone())).await;
    assert_eq!(s, 404);
    let (s, v) = api.call("POST", &format!("/api/v1/alerts/{id}/ack"), Some(WATER_OP), Some(note)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "acknowledged");
    assert_eq!(v["ack"]["by"], "li.wei");
    assert_eq!(v["ack"]["note"], "crew sent to the dosing pump");

    // A silence for the barn, by the dairy operator; a water token cannot make one for dairy.
    let ends = ingest::api::time::rfc3339(Timestamp(now + 3_600_000));
    let silence = json!({ "matchers": { "device": "barn-1" }, "ends_at": ends, "reason": "fans being replaced", "tenant": "dairy" });
    let (s, _) = api.call("POST", "/api/v1/silences", Some(WATER_OP), Some(silence.clone())).await;
    assert_eq!(s, 403);
    let (s, v) = api.call("POST", "/api/v1/silences", Some(DAIRY_OP), Some(silence)).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["created_by"], "wang.fang");
    let (s, v) = api
        .call(
            "POST",
            "/api/v1/silences",
            Some(DAIRY_OP),
            Some(json!({ "matchers": {}, "ends_at": ends, "reason": "x" })),
        )
        .await;
    assert_eq!(s, 422, "a silence of everything is refused: {v}");

    // The chlorine rule proposed a broadcast to the district's villages; approving it hands
    // it to the broadcast dispatcher and emits the approval event.
    let (_, v) = api.call("GET", "/api/v1/proposed-broadcasts", Some(WATER_OP), None).await;
    let p = v.as_array().unwrap()[0].clone();
    assert_eq!(p["villages"], json!(["dongcun", "xicun"]));
    assert_eq!(p["level"], "yellow");
    assert_eq!(p["text"], "Boil water: Free chlorine at wq-1 is 0.02 mg/L");
    let (s, v) =
        api.call("POST", &format!("/api/v1/proposed-broadcasts/{}/approve", p["id"]), Some(WATER_OP), None).await;
    assert_eq!((s, v["state"].as_str()), (200, Some("approved")), "{v}");
    let broadcast = v["broadcast"].as_u64().unwrap_or_else(|| panic!("the approval names its broadcast: {v}"));
    let (s, b) = api.call("GET", &format!("/api/v1/broadcasts/{broadcast}"), Some(WATER_OP), None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["level"], "yellow", "{b}");
    let mut speakers: Vec<&str> = b["deliveries"]
        .as_array()
        .unwrap_or_else(|| panic!("deliveries: {b}"))
        .iter()
        .filter_map(|d| d["speaker"].as_str())
        .collect();
    speakers.sort();
    assert_eq!(speakers, ["dongcun-speaker-1", "xicun-speaker-1"], "every speaker of both villages: {b}");
    let (s, v) =
        api.call("POST", &format!("/api/v1/proposed-broadcasts/{}/approve", p["id"]), Some(WATER_OP), None).await;
    assert_eq!(s, 422, "approved once only: {v}");
    let approved = eventually("the approval event", Duration::from_secs(5), || {
        let mut found = None;
        while let Ok(e) = events.try_recv() {
            if let AlertEvent::BroadcastApproved { proposal } = e {
                found = Some(proposal);
            }
        }
        async move { found }
    })
    .await;
    assert_eq!(approved.approved_by.as_deref(), Some("li.wei"));

    // Webhooks arrived signed.
    let hooks = eventually("webhook deliveries", Duration::from_secs(10), || {
        let g = got.lock().unwrap().clone();
        async move { g.iter().any(|h| h.0 == "acknowledged").then_some(g) }
    })
    .await;
    for (_, ts, sig, body) in &hooks {
        assert_eq!(*sig, ingest::alerts::notify::signature(SECRET, ts.parse().unwrap(), body));
    }
    assert!(hooks.iter().any(|h| h.0 == "firing"));

    // Metrics.
    let m = reqwest::get(format!("{}/metrics", api.base)).await.unwrap().text().await.unwrap();
    assert!(m.contains("ingest_alerts_firing{severity=\"critical\"} 1"), "{m}");
    assert!(m.contains("ingest_rules_evaluation_seconds_count"), "{m}");

    // An invalid pack is refused and the running rules stay.
    std::fs::write(&rules, PACK.replace("below = 0.05", "below = \"low\"")).unwrap();
    let (s, v) = api.call("POST", "/api/v1/rules/reload", Some(ADMIN), None).await;
    assert_eq!(s, 422, "{v}");
    assert!(v["error"].as_str().unwrap().contains("rules.toml:9:9"), "{v}");
    let (s, _) = api.call("POST", "/api/v1/rules/reload", Some(WATER_OP), None).await;
    assert_eq!(s, 403, "reloading rules is for admins");
    let (_, v) = api.call("GET", "/api/v1/rules", Some(ADMIN), None).await;
    assert_eq!(v.as_array().unwrap().len(), 2, "the old rules still run");
    std::fs::write(&rules, PACK).unwrap();

    // Restart: the acknowledged alert, its note and the silence are still there.
    ingest.stop().await;
    let ingest = start(&dir.path().join("data"), &rules, hook).await;
    let api = Api { base: format!("http://{}", ingest.http), client: reqwest::Client::new() };
    let (_, v) = api.call("GET", &format!("/api/v1/alerts/{id}"), Some(WATER_OP), None).await;
    assert_eq!(v["state"], "acknowledged", "{v}");
    assert_eq!(v["ack"]["note"], "crew sent to the dosing pump");
    let (_, v) = api.call("GET", "/api/v1/silences", Some(ADMIN), None).await;
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v[0]["reason"], "fans being replaced");
    assert_eq!(v[0]["active"], true);
    let (_, v) = api.call("GET", "/api/v1/alerts?state=firing", Some(DAIRY_OP), None).await;
    assert!(v[0]["silenced_by"].is_u64(), "the barn alert is muted, not lost: {v}");

    // The chlorine comes back: the alert resolves after the damping time, and its history
    // is queryable.
    let later = now_ms();
    publish(
        &ingest,
        "county",
        "gw-works",
        2,
        vec![Reading::new("wq-1", Metric::new("free_chlorine"), Timestamp(later), 0.5)],
    )
    .await;
    let (_, v) = eventually("the alert to be clearing", Duration::from_secs(10), || async {
        let r = api.call("GET", &format!("/api/v1/alerts/{id}"), Some(WATER_OP), None).await;
        (r.1["state"] == "acknowledged").then_some(r)
    })
    .await;
    assert!(v["resolved_at"].is_null());
    ingest.stop().await;
}
