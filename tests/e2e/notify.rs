//! Notifications end to end, over HTTPS to a local server that plays WeCom, DingTalk,
//! Feishu and a signed-webhook receiver, and checks what each vendor checks: the format
//! of the message and its signature (the server refuses what does not verify, as the
//! vendors do: DingTalk 310000, Feishu 19021). The server's certificate comes from a CA
//! made in the test (the county CA code, `ingest::broker::ca`), trusted through the
//! notifiers' `ca_file`; a notifier without it does not trust the server (positive
//! control of the TLS check).
//!
//! A real alert fires from a rule pack on a reading published over MQTT; its route tells
//! the duty group (WeCom) at once and the station chief (DingTalk) when nobody
//! acknowledged it within 15 minutes of ingest's clock, also across a restart of ingest
//! (told once, not twice); an acknowledged alert does not escalate. A broadcast that
//! finished unplayed is reported to the group configured for its level.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use ingest::alerts::{AlertsConfig, AlertsOptions};
use ingest::auth::{Role, TokenConfig};
use ingest::config::{BrokerConfig, IngestConfig};
use ingest::inventory::{Device, GatewayInfo, Inventory, InventoryFile, Site};
use ingest::service::{self, Options, Running};
use protocol::codec::{self, Codec};
use protocol::{Batch, DeviceKind, Metric, Reading, Timestamp};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::{Value, json};
use sha2::Sha256;
use testkit::eventually;

use crate::common::now_ms;

const OPERATOR: &str = "water-operator-0123456789";
const HOOK_SECRET: &str = "webhook-secret-0123456789";
const WECOM_KEY: &str = "wecom-key-693a91f6";
const DING_SECRET: &str = "SEC0123456789abcdef";
const FEISHU_SECRET: &str = "feishu-secret-0123";

const PACK: &str = r#"
[[rules]]
id = "chlorine-low-at-tap"
kind = "threshold"
severity = "critical"
summary = "Free chlorine in the network at {device} is {value} mg/L, below 0.05 mg/L"
select = { kind = "water_quality" }
metric = "free_chlorine"
below = 0.05
clear = 0.08
"#;

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

/// One request the robots' server got, and whether it took it.
#[derive(Debug, Clone)]
struct Got {
    /// `wecom`, `dingtalk`, `feishu`, `hook`.
    robot: &'static str,
    /// The robot's key, token or hook id (which robot of its vendor).
    id: String,
    /// Whether the server accepted it (format and signature).
    accepted: bool,
    body: Value,
}

#[derive(Clone, Default)]
struct Robots {
    got: Arc<Mutex<Vec<Got>>>,
    /// WeCom answers the first message with "api freq out of limit", as it does past 20 a
    /// minute: the notifier must retry.
    wecom_limited_once: Arc<AtomicBool>,
}

impl Robots {
    fn keep(&self, robot: &'static str, id: &str, accepted: bool, body: Value) {
        self.got.lock().expect("not poisoned").push(Got { robot, id: id.into(), accepted, body });
    }

    fn list(&self) -> Vec<Got> {
        self.got.lock().expect("not poisoned").clone()
    }

    /// Accepted messages of one robot.
    fn accepted(&self, robot: &str, id: &str) -> Vec<Value> {
        self.list().into_iter().filter(|g| g.robot == robot && g.id == id && g.accepted).map(|g| g.body).collect()
    }
}

/// Within the hour both vendors allow (seconds).
fn recent(ts_s: i64) -> bool {
    (now_ms() / 1000 - ts_s).abs() < 3600
}

async fn wecom(State(r): State<Robots>, Query(q): Query<HashMap<String, String>>, body: String) -> axum::Json<Value> {
    let key = q.get("key").cloned().unwrap_or_default();
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let well_formed = match v["msgtype"].as_str() {
        Some("text") => v["text"]["content"].as_str().is_some_and(|c| c.len() <= 2048),
        Some("markdown") => v["markdown"]["content"].as_str().is_some_and(|c| c.len() <= 4096),
        _ => false,
    };
    if key != WECOM_KEY || !well_formed {
        r.keep("wecom", &key, false, v);
        return axum::Json(json!({"errcode": 93000, "errmsg": "invalid webhook url or body"}));
    }
    if !r.wecom_limited_once.swap(true, Ordering::SeqCst) {
        r.keep("wecom", &key, false, v);
        return axum::Json(json!({"errcode": 45009, "errmsg": "api freq out of limit"}));
    }
    r.keep("wecom", &key, true, v);
    axum::Json(json!({"errcode": 0, "errmsg": "ok"}))
}

async fn dingtalk(
    State(r): State<Robots>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> axum::Json<Value> {
    let token = q.get("access_token").cloned().unwrap_or_default();
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    // The query is already URL-decoded here: a `+` the sender did not encode would be a
    // space now, and fail.
    let (ts, sign) = (q.get("timestamp").cloned().unwrap_or_default(), q.get("sign").cloned().unwrap_or_default());
    let expected = BASE64.encode(hmac_sha256(DING_SECRET.as_bytes(), format!("{ts}\n{DING_SECRET}").as_bytes()));
    let fresh = ts.parse::<i64>().is_ok_and(|t| recent(t / 1000));
    if sign != expected || !fresh {
        r.keep("dingtalk", &token, false, v);
        return axum::Json(json!({"errcode": 310000, "errmsg": "sign not match"}));
    }
    let well_formed = match v["msgtype"].as_str() {
        Some("text") => v["text"]["content"].is_string(),
        Some("markdown") => v["markdown"]["title"].is_string() && v["markdown"]["text"].is_string(),
        _ => false,
    };
    r.keep("dingtalk", &token, well_formed, v);
    axum::Json(if well_formed {
        json!({"errcode": 0, "errmsg": "ok"})
    } else {
        json!({"errcode": 40035, "errmsg": "bad body"})
    })
}

async fn feishu(
    State(r): State<Robots>,
    axum::extract::Path(id): axum::extract::Path<String>,
    body: String,
) -> axum::Json<Value> {
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let ts = v["timestamp"].as_str().unwrap_or_default().to_string();
    let expected = BASE64.encode(hmac_sha256(format!("{ts}\n{FEISHU_SECRET}").as_bytes(), b""));
    let fresh = ts.parse::<i64>().is_ok_and(recent);
    if v["sign"].as_str() != Some(expected.as_str()) || !fresh {
        r.keep("feishu", &id, false, v);
        return axum::Json(
            json!({"code": 19021, "msg": "sign match fail or timestamp is not within one hour from current time", "data": {}}),
        );
    }
    let well_formed = v["msg_type"] == "text" && v["content"]["text"].is_string();
    r.keep("feishu", &id, well_formed, v);
    axum::Json(if well_formed {
        json!({"code": 0, "msg": "success", "data": {}})
    } else {
        json!({"code": 9499, "msg": "Bad Request", "data": {}})
    })
}

async fn hook(
    State(r): State<Robots>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let ts = h("x-vt-timestamp");
    let mut signed = ts.clone().into_bytes();
    signed.push(b'.');
    signed.extend_from_slice(&body);
    let hex: String = hmac_sha256(HOOK_SECRET.as_bytes(), &signed).iter().map(|b| format!("{b:02x}")).collect();
    let ok = h("x-vt-signature") == format!("sha256={hex}");
    r.keep("hook", &h("x-vt-event"), ok, serde_json::from_slice(&body).unwrap_or(Value::Null));
    if ok { axum::http::StatusCode::OK } else { axum::http::StatusCode::UNAUTHORIZED }
}

/// TLS in front of axum: each connection's handshake, then HTTP.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else { continue };
            // A client that does not trust the certificate ends here.
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// The robots' HTTPS server, its certificate issued for 127.0.0.1 by a CA written to
/// `dir/ca.pem`.
async fn robots_server(dir: &Path) -> (SocketAddr, Robots) {
    let now = now_ms() / 1000;
    let ca = ingest::broker::ca::Authority::create(now);
    std::fs::write(dir.join("ca.pem"), ca.cert_pem()).expect("write the CA");
    let id = ca.issue_server(&["127.0.0.1".into(), "localhost".into()], now);
    let config = ingest::broker::tls::server_config(id.chain, id.key_pkcs8).expect("TLS server config");
    let robots = Robots::default();
    let app = axum::Router::new()
        .route("/cgi-bin/webhook/send", post(wecom))
        .route("/robot/send", post(dingtalk))
        .route("/open-apis/bot/v2/hook/{id}", post(feishu))
        .route("/hook", post(hook))
        .with_state(robots.clone());
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tcp.local_addr().expect("address");
    let listener = TlsListener { tcp, acceptor: tokio_rustls::TlsAcceptor::from(config) };
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, robots)
}

fn inventory() -> Inventory {
    let site = |id: &str, name: &str, kind: &str| Site {
        id: id.into(),
        name: name.into(),
        kind: kind.into(),
        tenant: "county".into(),
        lat: 34.7,
        lon: 113.6,
        village: (kind == "village").then(|| id.to_string()),
        district: Some("d1".into()),
        township: None,
    };
    let gw = |id: &str, site: &str| GatewayInfo {
        id: id.into(),
        tenant: "county".into(),
        site: site.into(),
        public_key: crate::keys::public_key(id),
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
        sites: vec![site("works", "水厂 Waterworks", "waterworks"), site("dongcun", "东村 Dongcun", "village")],
        gateways: vec![gw("gw-works", "works"), gw("gw-dongcun", "dongcun")],
        devices: vec![
            device("wq-1", DeviceKind::WaterQuality, "works", "gw-works"),
            device("wq-2", DeviceKind::WaterQuality, "works", "gw-works"),
            device("dongcun-speaker-1", DeviceKind::Speaker, "dongcun", "gw-dongcun"),
        ],
    })
}

/// The alerts table: every kind of notifier over HTTPS, two with the wrong secret, one
/// that does not trust the test CA, and a route with two contact lists.
fn alerts_config(dir: &Path, rules: &Path, server: SocketAddr) -> AlertsConfig {
    let base = format!("https://{server}");
    let text = format!(
        r#"
rules = "{rules}"
resolve_after_secs = 60

[[notifiers]]
type = "webhook"
name = "hook"
url = "{base}/hook"
secret = "{HOOK_SECRET}"
ca_file = "ca.pem"
min_severity = "info"
max_retries = 1

[[notifiers]]
type = "wecom"
name = "duty-wecom"
url = "{base}/cgi-bin/webhook/send?key={WECOM_KEY}"
ca_file = "ca.pem"

[[notifiers]]
type = "dingtalk"
name = "chief-dingtalk"
url = "{base}/robot/send?access_token=chief"
secret = "{DING_SECRET}"
format = "markdown"
ca_file = "ca.pem"

[[notifiers]]
type = "feishu"
name = "bureau-feishu"
url = "{base}/open-apis/bot/v2/hook/bureau"
secret = "{FEISHU_SECRET}"
ca_file = "ca.pem"
broadcast_levels = ["red", "orange", "yellow"]

[[notifiers]]
type = "dingtalk"
name = "forged-dingtalk"
url = "{base}/robot/send?access_token=forged"
secret = "SECnot-the-robots-secret"
ca_file = "ca.pem"
max_retries = 1

[[notifiers]]
type = "feishu"
name = "forged-feishu"
url = "{base}/open-apis/bot/v2/hook/forged"
secret = "not-the-bots-secret"
ca_file = "ca.pem"
max_retries = 1

[[notifiers]]
type = "wecom"
name = "untrusting-wecom"
url = "{base}/cgi-bin/webhook/send?key={WECOM_KEY}"
max_retries = 0

[[routes]]
name = "water-quality"
rules = ["chlorine-low-at-tap"]
escalate_after_mins = 15
contacts = [
  {{ name = "值班员", notifiers = ["duty-wecom"], mobiles = ["13800000001"] }},
  {{ name = "站长", notifiers = ["chief-dingtalk"], mobiles = ["13800000002"] }},
]
"#,
        rules = rules.display()
    );
    AlertsConfig::from_source(&conf::Source::from_text("alerts.toml", text), dir).unwrap_or_else(|e| panic!("{e}"))
}

/// Ingest's clock: the real time plus an offset the test moves.
fn clock(offset: Arc<AtomicI64>) -> ingest::time::Clock {
    Arc::new(move || Timestamp(now_ms() + offset.load(Ordering::SeqCst)))
}

async fn start(dir: &Path, alerts: &AlertsConfig, offset: Arc<AtomicI64>) -> Running {
    let mut config =
        IngestConfig::new(dir.join("data"), BrokerConfig::Embedded { listen: SocketAddr::from(([127, 0, 0, 1], 0)) });
    config.tokens = vec![TokenConfig {
        token: OPERATOR.into(),
        role: Role::Operator,
        tenants: vec!["county".into()],
        name: "li.wei".into(),
    }];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let running = loop {
        let options = Options {
            clock: clock(offset.clone()),
            alerts: Some(AlertsOptions { config: alerts.clone(), ..AlertsOptions::default() }),
            ..Options::default()
        };
        match service::start(config.clone(), inventory(), options).await {
            Ok(r) => break r,
            // A stopped ingest lets go of its store a moment after `stop` returns.
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

async fn publish(ingest: &Running, seq: u64, readings: Vec<Reading>) {
    let broker = ingest.mqtt.expect("the embedded broker");
    let mut opts = MqttOptions::new(format!("gw-works-{seq}"), broker.ip().to_string(), broker.port());
    let (user, pass) = ingest.broker_login.clone().expect("ingest's login");
    opts.set_credentials(user, pass);
    let (client, mut events) = AsyncClient::new(opts, 16);
    let body = codec::encode(&Batch { gateway: "gw-works".into(), seq, readings }, Codec::Binary);
    let key = ed25519_dalek::VerifyingKey::from_bytes(&ingest.state.commands.public_key()).expect("ingest's key");
    let payload = crate::keys::seal("county", "gw-works", protocol::topic::Channel::Telemetry, &key, seq, &body);
    client.publish("vt/county/gw-works/up/telemetry", QoS::AtLeastOnce, false, payload).await.expect("publish");
    for _ in 0..20 {
        if let Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) =
            tokio::time::timeout(Duration::from_millis(200), events.poll()).await
        {
            break;
        }
    }
    let _ = client.disconnect().await;
}

async fn call(ingest: &Running, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!("http://{}{path}", ingest.http);
    let client = reqwest::Client::new();
    let mut req = if method == "POST" { client.post(url) } else { client.get(url) };
    req = req.header("authorization", format!("Token {OPERATOR}"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn metric(ingest: &Running, notifier: &str, outcome: &str) -> u64 {
    let text = reqwest::get(format!("http://{}/metrics", ingest.http))
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    let needle = format!("ingest_alert_notifications_total{{notifier=\"{notifier}\",outcome=\"{outcome}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&needle)).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
}

/// Texts of the accepted messages of a robot (WeCom text, DingTalk markdown, Feishu text).
fn texts(bodies: &[Value]) -> Vec<String> {
    bodies
        .iter()
        .map(|b| {
            [&b["text"]["content"], &b["markdown"]["text"], &b["content"]["text"]]
                .iter()
                .find_map(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

const MIN: i64 = 60_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robots_get_signed_chinese_alerts_over_https_and_unacknowledged_alerts_escalate() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, PACK).unwrap();
    let (server, robots) = robots_server(dir.path()).await;
    let alerts = alerts_config(dir.path(), &rules, server);
    let offset = Arc::new(AtomicI64::new(0));
    let ingest = start(dir.path(), &alerts, offset.clone()).await;

    // A broadcast that nobody's speaker will play (its gateway is not there): it expires.
    let now = now_ms();
    let (s, b) = call(
        &ingest,
        "POST",
        "/api/v1/broadcasts",
        Some(json!({"level": "yellow", "text": "明天上午停水，请提前储水。", "targets": ["dongcun"], "expires_at": now + 2 * MIN})),
    )
    .await;
    assert!(s == 200 || s == 201, "broadcast created: {s} {b}");

    // A real alert: free chlorine in the network below 0.05 mg/L.
    let t = now_ms() + offset.load(Ordering::SeqCst);
    publish(&ingest, 1, vec![Reading::new("wq-1", Metric::new("free_chlorine"), Timestamp(t), 0.02)]).await;
    let first = eventually("the duty group's WeCom message", Duration::from_secs(20), || {
        let got = robots.accepted("wecom", WECOM_KEY);
        async move { got.into_iter().next() }
    })
    .await;
    // WeCom: text, the mobile of the first contact list mentioned, Chinese facts.
    assert_eq!(first["msgtype"], "text", "{first}");
    assert_eq!(first["text"]["mentioned_mobile_list"], json!(["13800000001"]));
    let text = first["text"]["content"].as_str().unwrap_or_default();
    for part in ["【严重告警】管网末梢余氯偏低", "地点：水厂 wq-1", "余氯 0.02 mg/L", "级别：严重", "年", "月", "日 "]
    {
        assert!(text.contains(part), "'{part}' in\n{text}");
    }
    // Feishu (unrouted, signed in the body) and the signed webhook got it too.
    let feishu = eventually("the bureau's Feishu message", Duration::from_secs(10), || {
        let got = robots.accepted("feishu", "bureau");
        async move { got.into_iter().next() }
    })
    .await;
    assert!(texts(&[feishu])[0].contains("【严重告警】管网末梢余氯偏低"));
    eventually("the signed webhook", Duration::from_secs(10), || {
        let got = robots.accepted("hook", "firing");
        async move { got.into_iter().next() }
    })
    .await;
    // Positive controls: the server refuses a wrong signature (and ingest counts it),
    // and a notifier that does not trust the test CA gets nowhere.
    eventually("the forged robots to be refused and given up", Duration::from_secs(15), || async {
        let refused = metric(&ingest, "forged-dingtalk", "refused").await >= 1
            && metric(&ingest, "forged-feishu", "refused").await >= 1
            && metric(&ingest, "forged-dingtalk", "failed").await == 1
            && metric(&ingest, "forged-feishu", "failed").await == 1
            && metric(&ingest, "untrusting-wecom", "failed").await == 1;
        refused.then_some(())
    })
    .await;
    let list = robots.list();
    assert!(list.iter().any(|g| g.robot == "dingtalk" && g.id == "forged" && !g.accepted));
    assert!(list.iter().any(|g| g.robot == "feishu" && g.id == "forged" && !g.accepted));
    assert!(!list.iter().any(|g| g.id == "forged" && g.accepted), "nothing forged was accepted");
    // WeCom's rate limit was a refusal, retried.
    assert_eq!(metric(&ingest, "duty-wecom", "refused").await, 1);
    assert_eq!(metric(&ingest, "duty-wecom", "delivered").await, 1);
    // The station chief is not told yet.
    assert!(robots.accepted("dingtalk", "chief").is_empty());
    // The API carries the Chinese words of the alert.
    let (_, v) = call(&ingest, "GET", "/api/v1/alerts?state=active", None).await;
    assert_eq!(v[0]["summary_zh"], "水厂 wq-1：管网末梢余氯偏低，余氯 0.02 mg/L", "{v}");
    assert_eq!(v[0]["rule_name_zh"], "管网末梢余氯偏低");
    let first_id = v[0]["id"].as_u64().expect("an id");

    // Ingest restarts within the 15 minutes: nobody is told the alert again...
    ingest.stop().await;
    let ingest = start(dir.path(), &alerts, offset.clone()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(robots.accepted("wecom", WECOM_KEY).len(), 1, "not told twice");
    // ...and 16 minutes later (ingest's clock), the station chief is, once.
    offset.fetch_add(16 * MIN, Ordering::SeqCst);
    let chief = eventually("the escalation to the station chief", Duration::from_secs(20), || {
        let got = robots.accepted("dingtalk", "chief");
        async move { got.into_iter().next() }
    })
    .await;
    assert_eq!(chief["msgtype"], "markdown", "{chief}");
    assert_eq!(chief["at"]["atMobiles"], json!(["13800000002"]));
    let md = chief["markdown"]["text"].as_str().unwrap_or_default();
    for part in ["【告警升级·第2级】管网末梢余氯偏低", "16分钟未确认", "通知对象：站长", "@13800000002"]
    {
        assert!(md.contains(part), "'{part}' in\n{md}");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(robots.accepted("dingtalk", "chief").len(), 1, "escalated once");

    // A second alert, acknowledged in time, does not escalate.
    let t = now_ms() + offset.load(Ordering::SeqCst);
    publish(&ingest, 2, vec![Reading::new("wq-2", Metric::new("free_chlorine"), Timestamp(t), 0.03)]).await;
    eventually("the duty group told of the second alert", Duration::from_secs(20), || {
        let n = robots.accepted("wecom", WECOM_KEY).len();
        async move { (n == 2).then_some(()) }
    })
    .await;
    let (_, v) = call(&ingest, "GET", "/api/v1/alerts?state=firing", None).await;
    let second =
        v.as_array().and_then(|a| a.iter().find(|x| x["device"] == "wq-2")).cloned().expect("the second alert");
    let (s, _) =
        call(&ingest, "POST", &format!("/api/v1/alerts/{}/ack", second["id"]), Some(json!({"note": "班组已出发"})))
            .await;
    assert_eq!(s, 200);
    let acked = eventually("the acknowledgement told to the duty group", Duration::from_secs(10), || {
        let got = texts(&robots.accepted("wecom", WECOM_KEY));
        async move { got.into_iter().find(|t| t.contains("【已确认】")) }
    })
    .await;
    assert!(acked.contains("确认人：li.wei") && acked.contains("备注：班组已出发"), "{acked}");
    offset.fetch_add(16 * MIN, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let chief = texts(&robots.accepted("dingtalk", "chief"));
    assert_eq!(chief.len(), 1, "the acknowledged alert did not escalate: {chief:?}");
    assert!(!chief.iter().any(|t| t.contains("wq-2")));
    // Positive control: the first alert (never acknowledged) is still firing, at its last list.
    let (_, v) = call(&ingest, "GET", &format!("/api/v1/alerts/{first_id}"), None).await;
    assert_eq!(v["state"], "firing", "{v}");

    // The broadcast expired unplayed (its expiry and grace are past on ingest's clock):
    // the group configured for yellow broadcasts is told how it went.
    let outcome = eventually("the broadcast outcome", Duration::from_secs(30), || {
        let got = texts(&robots.accepted("feishu", "bureau"));
        async move { got.into_iter().find(|t| t.contains("【广播结果】")) }
    })
    .await;
    assert!(outcome.contains("黄色预警广播") && outcome.contains("0/1 播放完成"), "{outcome}");
    assert!(outcome.contains("dongcun-speaker-1"), "{outcome}");
    ingest.stop().await;
}
