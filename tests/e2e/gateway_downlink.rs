//! The downlink through the whole system on the simulated county: an operator's write
//! command issued through ingest's API, signed, carried out by the real gateway on the
//! simulated pump station and acked; forged, expired, replayed and out-of-range commands
//! refused and acked as refused; and a configuration pushed on the retained config topic,
//! refused when invalid and applied (with a local rule) when valid. (A broadcast into a
//! mailbox is in tests/interop/broadcast.rs, against pymodbus.)
// Helpers outside `#[test]` functions fail the test loudly on purpose.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use ingest::command::Issue;
use ingest::demo::{Demo, DemoOptions};
use protocol::command::{AckState, Action, CommandAck};
use protocol::status::GatewayStatus;
use protocol::topic::{self, Channel};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use simulator::Table;
use testkit::eventually;

async fn start() -> (Demo, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let opts = DemoOptions {
        http: SocketAddr::from(([127, 0, 0, 1], 0)),
        mqtt: SocketAddr::from(([127, 0, 0, 1], 0)),
        data: Some(dir.path().to_path_buf()),
        ..DemoOptions::default()
    };
    let demo = Demo::start(opts).await.expect("demo starts");
    demo.county.set_random_outages(false);
    (demo, dir)
}

/// Waits until `gateway` is online and subscribed (a command to a gateway that never
/// subscribed is not queued by the broker).
async fn online(demo: &Demo, gateway: &str) {
    eventually("the gateway online", Duration::from_secs(30), || async {
        (demo.ingest.state.inventory.gateway_online(gateway) == Some(true)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
}

async fn post(demo: &Demo, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(format!("http://{}{path}", demo.ingest.http)).json(&body);
    if let Some(t) = token {
        req = req.header("authorization", format!("Token {t}"));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn command_state(demo: &Demo, id: u64) -> Option<Value> {
    let v = crate::common::get_json(&format!("http://{}", demo.ingest.http), &format!("/api/v1/commands/{id}")).await;
    (v["state"] != "sent").then_some(v)
}

/// A raw MQTT client on the demo's embedded broker: someone who controls the broker.
fn broker_client(demo: &Demo, id: &str) -> (AsyncClient, rumqttc::EventLoop) {
    let addr = demo.ingest.mqtt.unwrap();
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    let (user, pass) = demo.ingest.broker_login.clone().expect("ingest's login");
    o.set_credentials(user, pass);
    o.set_keep_alive(Duration::from_secs(5));
    AsyncClient::new(o, 64)
}

/// Publishes `wire` on the gateway's command topic and returns the ack that comes back.
async fn publish_and_ack(demo: &Demo, gateway: &str, wire: Vec<u8>, id: u64) -> CommandAck {
    let mut acks = demo.ingest.state.commands.subscribe();
    let (c, mut ev) = broker_client(demo, &format!("attacker-{id}"));
    let poller = tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    c.publish(topic::topic("county", gateway, Channel::Command), QoS::AtLeastOnce, false, wire).await.unwrap();
    let ack = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok((gw, ack)) = acks.recv().await
                && gw == gateway
                && ack.id == id
            {
                return ack;
            }
        }
    })
    .await
    .expect("an ack for every command");
    poller.abort();
    ack
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_act_only_when_signed_fresh_unused_and_within_the_profile_and_every_one_is_acked() {
    let (demo, _dir) = start().await;
    let plan = demo.county.plan().clone();
    let pump = plan.devices().find(|d| d.kind == protocol::DeviceKind::PumpStation).unwrap().id.clone();
    let gw = plan.gateways.iter().find(|g| g.devices.iter().any(|d| d.id == pump)).unwrap().id.clone();
    let token = demo.admin_token.clone();
    online(&demo, &gw).await;

    // The public key is served for gateways' configs.
    let key = crate::common::get_json(&format!("http://{}", demo.ingest.http), "/api/v1/keys/commands").await;
    assert_eq!(key["public_key"].as_str().unwrap().len(), 64);

    // Writes need a token; an operator's write goes through, is read back, and is audited.
    let path = format!("/api/v1/devices/{pump}/commands");
    let (status, _) = post(&demo, &path, None, json!({"point": "level_start_setpoint", "value": 1.5})).await;
    assert_eq!(status, 401);
    let (status, body) =
        post(&demo, &path, Some(&token), json!({"point": "level_start_setpoint", "value": 1.5, "ttl_secs": 60})).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_u64().unwrap();
    let done = eventually("the write's ack", Duration::from_secs(30), || command_state(&demo, id)).await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["issued_by"], "admin");
    assert_eq!(demo.county.read(&pump, Table::Holding, 0, 1).unwrap(), vec![150], "the PLC has 1.50 m");
    let audit = std::fs::read_to_string(demo.data_dir.join("commands.audit.jsonl")).unwrap();
    assert!(audit.contains(&format!("\"id\":{id}")) && audit.contains("\"event\":\"ack\""), "{audit}");

    // Outside the profile's range: refused by the gateway, and the register is untouched.
    let (_, body) = post(&demo, &path, Some(&token), json!({"point": "level_start_setpoint", "value": 9.0})).await;
    let refused =
        eventually("the refusal", Duration::from_secs(30), || command_state(&demo, body["id"].as_u64().unwrap())).await;
    assert_eq!(refused["state"], "refused");
    assert!(refused["acks"][0]["reason"].as_str().unwrap().starts_with("out_of_range"), "{refused}");
    // A point outside the profile: ingest refuses it before signing (422, naming the
    // writable points); signed anyway (bypassing the API), the gateway refuses it too.
    let (status, body) = post(&demo, &path, Some(&token), json!({"point": "some_raw_register", "value": 1})).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("level_start_setpoint"), "{body}");
    let raw = Issue {
        tenant: "county".into(),
        gateway: gw.clone(),
        device: pump.clone(),
        action: Action::Write { point: "some_raw_register".into(), value: 1.0 },
        ttl: Duration::from_secs(60),
        expires_at: None,
        issued_by: "test".into(),
    };
    let id = demo.ingest.state.commands.issue(raw).await.unwrap();
    let refused = eventually("the refusal", Duration::from_secs(30), || command_state(&demo, id)).await;
    assert!(refused["acks"][0]["reason"].as_str().unwrap().starts_with("not_writable"), "{refused}");
    assert_eq!(demo.county.read(&pump, Table::Holding, 0, 1).unwrap(), vec![150]);

    let commands = &demo.ingest.state.commands;
    let write = |value: f64, ttl_ms: u64| Issue {
        tenant: "county".into(),
        gateway: gw.clone(),
        device: pump.clone(),
        action: Action::Write { point: "level_start_setpoint".into(), value },
        ttl: Duration::from_millis(ttl_ms),
        expires_at: None,
        issued_by: "test".into(),
    };

    // Forged: someone who controls the broker signs with a key of their own.
    let (id, _) = commands.prepare(write(2.0, 60_000)).unwrap();
    let forged = protocol::command::Command {
        id: id + 1,
        tenant: "county".into(),
        gateway: gw.clone(),
        device: pump.clone(),
        issued_at: daemon::now(),
        expires_at: protocol::Timestamp(daemon::now().0 + 60_000),
        action: Action::Write { point: "level_start_setpoint".into(), value: 2.0 },
    }
    .sign(&SigningKey::generate(&mut rand_core::OsRng));
    let ack = publish_and_ack(&demo, &gw, forged, id + 1).await;
    assert_eq!(
        (ack.state, ack.reason.as_deref().map(|r| r.split(':').next().unwrap())),
        (AckState::Refused, Some("bad_signature"))
    );

    // Expired: signed by ingest, but it waited too long.
    let (id, wire) = commands.prepare(write(2.0, 1)).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let ack = publish_and_ack(&demo, &gw, wire, id).await;
    assert_eq!(ack.state, AckState::Refused);
    assert!(ack.reason.unwrap().starts_with("expired"));

    // Replayed: a genuine command acts once; the same bytes again are refused.
    let (id, wire) = commands.prepare(write(1.2, 60_000)).unwrap();
    assert_eq!(publish_and_ack(&demo, &gw, wire.clone(), id).await.state, AckState::Done);
    assert_eq!(demo.county.read(&pump, Table::Holding, 0, 1).unwrap(), vec![120]);
    let ack = publish_and_ack(&demo, &gw, wire, id).await;
    assert_eq!(ack.state, AckState::Refused);
    assert!(ack.reason.unwrap().starts_with("replayed"));
    assert_eq!(demo.county.read(&pump, Table::Holding, 0, 1).unwrap(), vec![120], "nothing acted twice");
    demo.stop().await;
}

async fn retained_status(demo: &Demo, gateway: &str, id: &str) -> Option<GatewayStatus> {
    let (c, mut ev) = broker_client(demo, id);
    c.subscribe(topic::topic("county", gateway, Channel::Status), QoS::AtLeastOnce).await.ok()?;
    let got = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(p))) = ev.poll().await {
                let body =
                    crate::keys::open_demo_uplink(&demo.data_dir, "county", gateway, Channel::Status, &p.payload)?;
                return serde_json::from_slice::<GatewayStatus>(&body).ok();
            }
        }
    })
    .await
    .ok()
    .flatten();
    let _ = c.disconnect().await;
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_on_the_retained_topic_is_refused_with_its_line_or_applied_without_a_restart() {
    let (demo, _dir) = start().await;
    let cfg =
        demo.gateways.iter().find(|g| g.devices.iter().any(|d| d.profile == "vt-sim-pump-station")).unwrap().clone();
    let gw = cfg.gateway.clone();
    let pump = cfg.devices.iter().find(|d| d.profile == "vt-sim-pump-station").unwrap().clone();
    let gateway::config::Transport::Tcp(addr) = pump.transport else { panic!("tcp") };
    let key = demo.ingest.state.commands.public_key_hex();
    let queue = demo.data_dir.join("gateways").join(&gw).join("queue");
    let (c, mut ev) = broker_client(&demo, "operator-config");
    tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    let topic = topic::topic("county", &gw, Channel::Config);
    // Configurations are signed by ingest and versioned.
    let ingest_key = crate::keys::ingest_signing_key(&demo.data_dir);
    let signed = |version: u64, text: &[u8]| {
        protocol::auth::seal_signed(&topic::Topic::new("county", &gw, Channel::Config), &ingest_key, version, text)
    };

    // A typo: refused, reported with its line, and the gateway keeps polling both devices.
    let bad = "gateway = \"x\"\ntenant = \"county\"\n[mqtt]\nurl = \"mqtt://h\"\nintervall = 3\n";
    c.publish(&topic, QoS::AtLeastOnce, true, signed(1, bad.as_bytes())).await.unwrap();
    let status = eventually("the refusal in the status", Duration::from_secs(20), || async {
        let s = retained_status(&demo, &gw, "watch-1").await?;
        s.config.as_ref().is_some_and(|c| !c.applied).then_some(s)
    })
    .await;
    let report = status.config.unwrap();
    assert!(report.errors[0].contains("down/config:5:1: unknown field `intervall`"), "{report:?}");
    assert_eq!(status.devices.len(), cfg.devices.len());

    // A valid one: only the pump, polled every second, with a local rule that runs whatever
    // the link (the level is always below 100 m): it writes the stop set-point.
    let good = format!(
        r#"gateway = "{gw}"
tenant = "county"
command_key = "{key}"
health_interval_secs = 30
[mqtt]
url = "mqtt://{broker}"
codec = "binary"
[publish]
resend_after_ms = 10000
[queue]
dir = "{queue}"
max_bytes = 16777216
[[devices]]
id = "{pump}"
profile = "vt-sim-pump-station"
tcp = "{addr}"
unit = {unit}
interval_ms = 1000
timeout_ms = 500
retries = 0
[[rules]]
name = "raise-stop-setpoint"
device = "{pump}"
metric = "tank_level"
below = 100.0
while_offline = false
write = {{ device = "{pump}", point = "level_stop_setpoint", value = 3.3 }}
"#,
        broker = demo.ingest.mqtt.unwrap(),
        queue = queue.display(),
        pump = pump.id,
        unit = pump.unit,
    );
    // Unsigned, it is refused (and named so in the status); signed, it is applied.
    c.publish(&topic, QoS::AtLeastOnce, true, good.clone().into_bytes()).await.unwrap();
    let status = eventually("the unsigned config refused", Duration::from_secs(20), || async {
        let s = retained_status(&demo, &gw, "watch-u").await?;
        s.config.as_ref().is_some_and(|c| !c.applied && c.errors[0].contains("not authenticated")).then_some(s)
    })
    .await;
    assert_eq!(status.devices.len(), cfg.devices.len(), "the old configuration keeps running");
    c.publish(&topic, QoS::AtLeastOnce, true, signed(2, good.as_bytes())).await.unwrap();
    let status = eventually("the new config in the status", Duration::from_secs(20), || async {
        let s = retained_status(&demo, &gw, "watch-2").await?;
        s.config.as_ref().is_some_and(|c| c.applied).then_some(s)
    })
    .await;
    assert_eq!(status.devices.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), vec![pump.id.as_str()]);
    eventually("the local rule's write", Duration::from_secs(20), || async {
        (demo.county.read(&pump.id, Table::Holding, 1, 1).ok()? == vec![330]).then_some(())
    })
    .await;
    demo.stop().await;
}
