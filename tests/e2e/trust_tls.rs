//! The embedded broker's TLS listener, enrolment through the API and freshness across an
//! ingest restart (issue 11, the broker and key-management parts), over real sockets.
//!
//! - A real gateway agent reaches ingest over `mqtts://`, pinning the county CA ingest made;
//!   a client that does not trust that CA, a plain client on the TLS port, and a gateway
//!   pinning another fingerprint are refused; a silent connection does not hold the
//!   listener.
//! - A plain listener off loopback: refused without `insecure`, accepted with it.
//! - Keys added, rotated (both verify), removed (its session ended, its login and its
//!   messages refused at once), kept across a restart.
//! - A status captured before an ingest restart and replayed after it is refused; a fresh
//!   one is accepted.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gateway::config::TlsConfig;
use gateway::identity::Identity;
use ingest::config::{BrokerConfig, IngestConfig};
use ingest::inventory::{Device, GatewayInfo, Inventory, InventoryFile, Site};
use ingest::pipeline::validate::Reason;
use ingest::service::{self, Options, Running};
use protocol::codec::{self, Codec};
use protocol::status::GatewayStatus;
use protocol::topic::{self, Channel};
use protocol::{Batch, DeviceKind, Metric, Reading, Timestamp};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use testkit::eventually;

use crate::common::now_ms;

const ADMIN: &str = "trust-tls-admin-token-0123456789";
const OPERATOR: &str = "trust-tls-operator-token-0123456";

fn loopback0() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A rustls client config trusting only `ca_der` (ring, as the gateway).
fn client_tls(ca_der: &[u8]) -> rumqttc::TlsConfiguration {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(ca_der.to_vec())).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    rumqttc::TlsConfiguration::Rustls(Arc::new(config))
}

/// Whether the broker at `addr` answers a CONNECT as `id` with `login` (with `tls`, over TLS).
async fn admitted(addr: SocketAddr, id: &str, login: (String, String), tls: Option<rumqttc::TlsConfiguration>) -> bool {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(5)).set_credentials(login.0, login.1);
    if let Some(tls) = tls {
        o.set_transport(rumqttc::Transport::tls_with_config(tls));
    }
    let (c, mut ev) = AsyncClient::new(o, 16);
    let answer = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) => return a.code == rumqttc::ConnectReturnCode::Success,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await
    .unwrap_or(false);
    let _ = c.disconnect().await;
    answer
}

/// Connects over TLS as `id` with `login`, subscribes to `filter` or publishes on `topic`
/// (retained or not), and tells whether the session is still up 1.5 s later.
async fn survives(
    addr: SocketAddr,
    id: &str,
    login: (String, String),
    tls: rumqttc::TlsConfiguration,
    subscribe: Option<&str>,
    publish: Option<(&str, bool)>,
) -> bool {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(5)).set_credentials(login.0, login.1);
    o.set_transport(rumqttc::Transport::tls_with_config(tls));
    let (c, mut ev) = AsyncClient::new(o, 16);
    let connected = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) => return a.code == rumqttc::ConnectReturnCode::Success,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await
    .unwrap_or(false);
    assert!(connected, "{id} logs in over TLS");
    if let Some(f) = subscribe {
        c.subscribe(f, QoS::AtLeastOnce).await.unwrap();
    }
    if let Some((t, retain)) = publish {
        c.publish(t, QoS::AtLeastOnce, retain, b"x".to_vec()).await.unwrap();
    }
    let ended = tokio::time::timeout(Duration::from_millis(1500), async {
        loop {
            if ev.poll().await.is_err() {
                return;
            }
        }
    })
    .await
    .is_ok();
    let _ = c.disconnect().await;
    !ended
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_over_tls_pinning_the_county_ca_delivers_and_clients_without_that_ca_or_without_tls_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ingest");
    let county = simulator::County::new(simulator::CountySpec::demo());
    let endpoints = county.serve().await.unwrap();
    let plan = county.plan().clone();
    let gw = plan.gateways.iter().find(|g| !g.devices.is_empty()).unwrap().clone();
    let queue = dir.path().join("queue");
    let (identity, _) = Identity::load_or_create(Some(&queue)).unwrap();
    // A second gateway, enrolled with the tests' fixed key, to try the rules with.
    let other = plan.gateways.iter().find(|g| g.id != gw.id).unwrap().clone();
    let mut file = ingest::demo::inventory_of(&plan);
    for g in &mut file.gateways {
        if g.id == gw.id {
            g.public_key = Some(identity.public_hex());
        } else if g.id == other.id {
            g.public_key = crate::keys::public_key(&other.id);
        }
    }
    let mut config = IngestConfig::new(data.clone(), BrokerConfig::Embedded { listen: loopback0() });
    config.broker_exposure.tls_listen = Some(loopback0());
    let running = service::start(config, Inventory::from_file(file), Options::default()).await.unwrap();
    let broker = running.broker.clone().unwrap();
    let tls_addr = broker.tls.unwrap();
    let ca_file = broker.ca_file.clone().unwrap();
    let fingerprint = broker.ca_fingerprint.clone().unwrap();
    assert_eq!(ca_file, data.join("tls").join("ca.pem"), "the county CA is made in the data directory");
    let (pinned_file, pinned) = ingest::broker::ca::pin(&data, &Default::default()).unwrap();
    assert_eq!((pinned_file, pinned), (ca_file.clone(), fingerprint.clone()), "`ingest ca` prints the same pin");

    // The real gateway agent: mqtts://127.0.0.1, trusting only the pinned CA.
    let mut cfg =
        ingest::demo::gateway_configs(&plan, &endpoints, tls_addr).into_iter().find(|c| c.gateway == gw.id).unwrap();
    cfg.mqtt.tls = Some(TlsConfig { ca_file: Some(ca_file.clone()), client_auth: None });
    cfg.mqtt.ca_sha256 = Some(fingerprint.clone());
    cfg.queue.dir = Some(queue.clone());
    cfg.command_key = Some(running.state.commands.public_key());
    let mut wrong_pin = cfg.clone();
    wrong_pin.mqtt.ca_sha256 = gateway::config::normalise_sha256(&"ab".repeat(32));
    let e = gateway::uplink::check(&wrong_pin).unwrap_err().to_string();
    assert!(e.contains("no certificate with the pinned SHA-256"), "{e}");
    gateway::uplink::check(&cfg).unwrap();

    // A silent TCP connection to the TLS port (no ClientHello) must not hold the listener.
    let _silent = tokio::net::TcpStream::connect(tls_addr).await.unwrap();

    let (library, errors) = gateway::Library::builtin();
    assert!(errors.is_empty());
    let stop = tokio_util::sync::CancellationToken::new();
    let agent = gateway::Gateway::new(cfg, library, daemon::system_clock()).unwrap();
    let task = tokio::spawn(agent.run(stop.clone()));
    let device_ids: Vec<String> = gw.devices.iter().map(|d| d.id.clone()).collect();
    let store = running.state.store.clone();
    eventually("a reading of the TLS gateway in ingest's store", Duration::from_secs(60), || {
        let store = store.clone();
        let ids = device_ids.clone();
        async move { store.latest().into_iter().find(|p| ids.contains(&p.device)) }
    })
    .await;

    // Refused: a client trusting another CA; a plain client on the TLS port. Both with a
    // valid login (ingest's), so only TLS stands in the way. Positive control: the same
    // login over TLS with the county CA.
    let login = running.broker_login.clone().unwrap();
    let ca_der = std::fs::read(&ca_file).unwrap();
    let ca_der = rustls_pemfile::certs(&mut &ca_der[..]).next().unwrap().unwrap().as_ref().to_vec();
    let other_ca = ingest::broker::ca::Authority::create(now_ms() / 1000);
    assert!(!admitted(tls_addr, "watcher-1", login.clone(), Some(client_tls(&other_ca.cert_der))).await, "another CA");
    assert!(!admitted(tls_addr, "watcher-2", login.clone(), None).await, "plain MQTT on the TLS port");
    assert!(admitted(tls_addr, "watcher-3", login.clone(), Some(client_tls(&ca_der))).await, "positive control");

    // On the TLS listener a gateway stays in its own subtree: its downlink and its retained
    // status are fine (positive controls); another gateway's topics, a retained telemetry,
    // or `#` end its session before the broker has the packet.
    let ingest_vk = ed25519_dalek::VerifyingKey::from_bytes(&running.state.commands.public_key()).unwrap();
    let (tenant, o) = (other.tenant.clone(), other.id.clone());
    let other_login = (o.clone(), crate::keys::link(&tenant, &o, &ingest_vk).broker_password());
    let own_down = topic::downlink_filter(&tenant, &o);
    let own_status = topic::topic(&tenant, &o, Channel::Status);
    let tls = || client_tls(&ca_der);
    assert!(survives(tls_addr, &o, other_login.clone(), tls(), Some(&own_down), None).await, "its own downlink");
    assert!(survives(tls_addr, &o, other_login.clone(), tls(), None, Some((&own_status, true))).await, "its status");
    let gw_down = topic::downlink_filter(&gw.tenant, &gw.id);
    let gw_telemetry = topic::topic(&gw.tenant, &gw.id, Channel::Telemetry);
    let own_telemetry = topic::topic(&tenant, &o, Channel::Telemetry);
    assert!(!survives(tls_addr, &o, other_login.clone(), tls(), Some(&gw_down), None).await, "another's downlink");
    assert!(!survives(tls_addr, &o, other_login.clone(), tls(), Some("#"), None).await, "everything");
    assert!(!survives(tls_addr, &o, other_login.clone(), tls(), None, Some((&gw_telemetry, false))).await);
    assert!(!survives(tls_addr, &o, other_login.clone(), tls(), None, Some((&own_telemetry, true))).await, "retained");
    assert!(
        !survives(tls_addr, &o, other_login, tls(), None, Some(("junk/1", true))).await,
        "a topic of its own making"
    );

    stop.cancel();
    let _ = task.await;
    county.shutdown();
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_listener_off_loopback_is_refused_without_insecure_and_accepted_with_it() {
    // At load, with file and line.
    let text = "data_dir = \"d\"\ninventory = \"i.toml\"\n[broker]\ntype = \"embedded\"\nlisten = \"0.0.0.0:1883\"\n";
    let src = conf::Source::from_text("ingest.toml", text);
    let e = IngestConfig::from_source(&src, Path::new(".")).unwrap_err().to_string();
    assert!(e.contains("ingest.toml:3:1: broker.listen 0.0.0.0:1883 is plain MQTT on a network address"), "{e}");
    let src = conf::Source::from_text("ingest.toml", format!("{text}insecure = true\n"));
    assert!(IngestConfig::from_source(&src, Path::new(".")).unwrap().broker_exposure.insecure);

    // At start, for a config built in code.
    let dir = tempfile::tempdir().unwrap();
    let any = SocketAddr::from(([0, 0, 0, 0], 0));
    let config = IngestConfig::new(dir.path().join("a"), BrokerConfig::Embedded { listen: any });
    let e = service::start(config, Inventory::default(), Options::default()).await.err().unwrap();
    assert!(format!("{e:#}").contains("insecure = true"), "{e:#}");
    let mut config = IngestConfig::new(dir.path().join("b"), BrokerConfig::Embedded { listen: any });
    config.broker_exposure.insecure = true;
    let running = service::start(config, Inventory::default(), Options::default()).await.unwrap();
    let addr = running.mqtt.unwrap();
    assert!(addr.ip().is_unspecified(), "listening on every address as asked: {addr}");
    let local = SocketAddr::from(([127, 0, 0, 1], addr.port()));
    assert!(admitted(local, "watcher", running.broker_login.clone().unwrap(), None).await);
    running.stop().await;
}

fn inventory(keys: &[String]) -> Inventory {
    Inventory::from_file(InventoryFile {
        sites: vec![Site {
            id: "s".into(),
            name: "S".into(),
            kind: "village".into(),
            tenant: "county".into(),
            lat: 34.7,
            lon: 113.6,
            village: None,
            district: None,
            township: None,
        }],
        gateways: vec![GatewayInfo {
            id: "gw-e".into(),
            tenant: "county".into(),
            site: "s".into(),
            public_key: (!keys.is_empty()).then(|| keys.join(" ")),
        }],
        devices: vec![Device {
            id: "meter-e".into(),
            kind: DeviceKind::WaterMeter,
            site: "s".into(),
            gateway: "gw-e".into(),
            model: "m".into(),
            lat: None,
            lon: None,
            public_key: None,
        }],
    })
}

async fn start(data: &Path, inv: Inventory) -> Running {
    let mut config = IngestConfig::new(data.to_path_buf(), BrokerConfig::Embedded { listen: loopback0() });
    config.tokens = vec![
        ingest::auth::TokenConfig {
            token: ADMIN.into(),
            role: ingest::auth::Role::Admin,
            tenants: vec![],
            name: "admin".into(),
        },
        ingest::auth::TokenConfig {
            token: OPERATOR.into(),
            role: ingest::auth::Role::Operator,
            tenants: vec![],
            name: "operator".into(),
        },
    ];
    let running = service::start(config, inv, Options::default()).await.unwrap();
    let ready = running.state.ready.clone();
    eventually("ingest subscribed", Duration::from_secs(10), || {
        let ready = ready.clone();
        async move { ready.load(std::sync::atomic::Ordering::Relaxed).then_some(()) }
    })
    .await;
    running
}

/// A client logged in as gateway `gw-e` with `identity`'s derived password; its event loop
/// runs in a task whose end (the broker hung up) the returned handle shows.
fn gateway_client(running: &Running, id: &Identity) -> (AsyncClient, tokio::task::JoinHandle<()>) {
    let addr = running.mqtt.unwrap();
    let ingest_vk = ed25519_dalek::VerifyingKey::from_bytes(&running.state.commands.public_key()).unwrap();
    let mut o = MqttOptions::new("gw-e", addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(5))
        .set_credentials("gw-e", id.link_key(&ingest_vk, "county", "gw-e").unwrap().broker_password());
    let (c, mut ev) = AsyncClient::new(o, 64);
    let task = tokio::spawn(async move {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) if a.code != rumqttc::ConnectReturnCode::Success => return,
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    (c, task)
}

fn login_of(running: &Running, id: &Identity) -> (String, String) {
    let ingest_vk = ed25519_dalek::VerifyingKey::from_bytes(&running.state.commands.public_key()).unwrap();
    ("gw-e".into(), id.link_key(&ingest_vk, "county", "gw-e").unwrap().broker_password())
}

/// Batch `seq` of gw-e with one reading of `value`, sealed with `id`'s link key.
fn sealed_batch(running: &Running, id: &Identity, seq: u64, value: f64) -> Vec<u8> {
    let ingest_vk = ed25519_dalek::VerifyingKey::from_bytes(&running.state.commands.public_key()).unwrap();
    let batch = Batch {
        gateway: "gw-e".into(),
        seq,
        readings: vec![Reading::new("meter-e", Metric::new("flow"), Timestamp(now_ms() + seq as i64), value)],
    };
    let link = id.link_key(&ingest_vk, "county", "gw-e").unwrap();
    let t = protocol::topic::Topic::new("county", "gw-e", Channel::Telemetry);
    protocol::auth::seal_mac(&t, &link, seq, &codec::encode(&batch, Codec::Binary))
}

/// Publishes as ingest (a compromised broker can): what is refused is refused by ingest,
/// not by the broker.
async fn publish_as_broker(running: &Running, topic: &str, payload: Vec<u8>) {
    let addr = running.mqtt.unwrap();
    let (u, p) = running.broker_login.clone().unwrap();
    let mut o = MqttOptions::new(format!("replayer-{}", now_ms()), addr.ip().to_string(), addr.port());
    o.set_credentials(u, p);
    let (c, mut ev) = AsyncClient::new(o, 16);
    c.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(e) = ev.poll().await {
            if matches!(e, Event::Incoming(Packet::PubAck(_))) {
                break;
            }
        }
    })
    .await;
    let _ = c.disconnect().await;
}

async fn value_stored(running: &Running, value: f64) {
    let store = running.state.store.clone();
    eventually(&format!("reading {value} stored"), Duration::from_secs(15), || {
        let store = store.clone();
        async move { store.latest().into_iter().find(|p| p.device == "meter-e" && p.point.value == value).map(|_| ()) }
    })
    .await;
}

async fn call(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Token {t}"));
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_enrolled_through_the_api_rotate_without_downtime_and_a_removed_one_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let old = crate::keys::identity("gw-e");
    let new = Identity::from_seed([0x77; 32]);
    let third = Identity::from_seed([0x78; 32]);
    let running = start(dir.path(), inventory(&[old.public_hex()])).await;
    let keys_url = format!("http://{}/api/v1/gateways/gw-e/keys", running.http);
    let telemetry = topic::topic("county", "gw-e", Channel::Telemetry);

    // Before: the old key verifies; the new one does not.
    let (old_client, old_session) = gateway_client(&running, &old);
    old_client.publish(&telemetry, QoS::AtLeastOnce, false, sealed_batch(&running, &old, 1, 1.0)).await.unwrap();
    value_stored(&running, 1.0).await;
    let addr = running.mqtt.unwrap();
    assert!(!admitted(addr, "gw-e", login_of(&running, &new), None).await, "the new key is not enrolled yet");

    // Only an admin enrols.
    let body = serde_json::json!({ "public_key": new.public_hex() });
    assert_eq!(call(reqwest::Method::POST, &keys_url, None, Some(body.clone())).await.0, 401);
    assert_eq!(call(reqwest::Method::POST, &keys_url, Some(OPERATOR), Some(body.clone())).await.0, 403);
    let (status, v) = call(reqwest::Method::POST, &keys_url, Some(ADMIN), Some(body.clone())).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["keys"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["keys"][1]["fingerprint"], new.fingerprint(), "the fingerprint to read back over the phone");
    let (status, _) = call(reqwest::Method::POST, &keys_url, Some(ADMIN), Some(body)).await;
    assert_eq!(status, 200, "the same key again changes nothing");
    let (status, v) = call(
        reqwest::Method::POST,
        &keys_url,
        Some(ADMIN),
        Some(serde_json::json!({ "public_key": third.public_hex() })),
    )
    .await;
    assert_eq!(status, 409, "a third key: {v}");

    // During the overlap both verify, and both logins are taken.
    old_client.publish(&telemetry, QoS::AtLeastOnce, false, sealed_batch(&running, &old, 2, 2.0)).await.unwrap();
    value_stored(&running, 2.0).await;
    publish_as_broker(&running, &telemetry, sealed_batch(&running, &new, 3, 3.0)).await;
    value_stored(&running, 3.0).await;
    assert!(!old_session.is_finished(), "the old key's session is untouched while it is enrolled");

    // Removing the old key (by its fingerprint) ends its session, refuses its login and
    // its messages at once; the new key goes on.
    let refused_before = running.state.metrics.rejected_count(Reason::BadSignature);
    let (status, v) =
        call(reqwest::Method::DELETE, &format!("{keys_url}/{}", old.fingerprint()), Some(ADMIN), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["keys"].as_array().unwrap().len(), 1);
    eventually("the old key's session ended", Duration::from_secs(10), || async {
        old_session.is_finished().then_some(())
    })
    .await;
    assert!(!admitted(addr, "gw-e", login_of(&running, &old), None).await, "the old key's login");
    publish_as_broker(&running, &telemetry, sealed_batch(&running, &old, 4, 40.0)).await;
    eventually("the old key's batch refused", Duration::from_secs(10), || async {
        (running.state.metrics.rejected_count(Reason::BadSignature) > refused_before).then_some(())
    })
    .await;
    let newest = running.state.store.latest().into_iter().find(|p| p.device == "meter-e").map(|p| p.point.value);
    assert_eq!(newest, Some(3.0), "the removed key's batch was not stored");
    assert!(admitted(addr, "gw-e", login_of(&running, &new), None).await, "positive control: the new key's login");
    publish_as_broker(&running, &telemetry, sealed_batch(&running, &new, 4, 4.0)).await;
    value_stored(&running, 4.0).await;
    let (status, _) =
        call(reqwest::Method::DELETE, &format!("{keys_url}/{}", old.public_hex()), Some(ADMIN), None).await;
    assert_eq!(status, 404, "gone already");
    running.stop().await;

    // The change is kept across a restart (the inventory still lists the old key: the
    // API's change was made on top of it and stands).
    let running = start(dir.path(), inventory(&[old.public_hex()])).await;
    let url = format!("http://{}/api/v1/gateways/gw-e/keys", running.http);
    let (status, v) = call(reqwest::Method::GET, &url, Some(ADMIN), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["keys"][0]["public_key"], new.public_hex(), "{v}");
    assert_eq!(v["keys"].as_array().unwrap().len(), 1, "{v}");
    let addr = running.mqtt.unwrap();
    assert!(!admitted(addr, "gw-e", login_of(&running, &old), None).await, "still revoked after the restart");
    assert!(admitted(addr, "gw-e", login_of(&running, &new), None).await);

    // Revoking the gateway: every key removed, its login refused.
    let (status, v) = call(reqwest::Method::DELETE, &url, Some(ADMIN), None).await;
    assert_eq!((status, v["enrolled"].as_bool()), (200, Some(false)), "{v}");
    assert!(!admitted(addr, "gw-e", login_of(&running, &new), None).await, "revoked");
    running.stop().await;

    // An inventory edited since (it now lists the third key) wins over the API's change.
    let running = start(dir.path(), inventory(&[third.public_hex()])).await;
    let url = format!("http://{}/api/v1/gateways/gw-e/keys", running.http);
    let (_, v) = call(reqwest::Method::GET, &url, Some(ADMIN), None).await;
    assert_eq!(v["keys"][0]["public_key"], third.public_hex(), "{v}");
    running.stop().await;
}

fn status(online: bool) -> Vec<u8> {
    let mut s = GatewayStatus::offline("gw-e");
    s.online = online;
    serde_json::to_vec(&s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_captured_before_an_ingest_restart_and_replayed_after_it_is_refused_and_a_fresh_one_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let gw = crate::keys::identity("gw-e");
    let status_topic = topic::topic("county", "gw-e", Channel::Status);
    let boot = 7u64 << 32;

    let running = start(dir.path(), inventory(&[gw.public_hex()])).await;
    let ingest_vk = ed25519_dalek::VerifyingKey::from_bytes(&running.state.commands.public_key()).unwrap();
    let seal = |counter: u64, online: bool| {
        crate::keys::seal("county", "gw-e", Channel::Status, &ingest_vk, counter, &status(online))
    };
    // The attacker records an "offline" status (counter boot+1); the gateway then says online.
    let captured = seal(boot + 1, false);
    publish_as_broker(&running, &status_topic, captured.clone()).await;
    publish_as_broker(&running, &status_topic, seal(boot + 2, true)).await;
    let inv = running.state.inventory.clone();
    eventually("gw-e online", Duration::from_secs(10), || async {
        (inv.gateway_online("gw-e") == Some(true)).then_some(())
    })
    .await;
    // Before the restart a replay is refused already (positive control of the check).
    let replayed = running.state.metrics.rejected_count(Reason::Replayed);
    publish_as_broker(&running, &status_topic, captured.clone()).await;
    eventually("the replay refused", Duration::from_secs(10), || async {
        (running.state.metrics.rejected_count(Reason::Replayed) > replayed).then_some(())
    })
    .await;
    running.stop().await;

    // After the restart (a new process would read the same data directory).
    let running = start(dir.path(), inventory(&[gw.public_hex()])).await;
    publish_as_broker(&running, &status_topic, captured).await;
    eventually("the replay after the restart refused", Duration::from_secs(10), || async {
        (running.state.metrics.rejected_count(Reason::Replayed) >= 1).then_some(())
    })
    .await;
    assert_eq!(running.state.inventory.gateway_online("gw-e"), None, "the replayed offline status was not applied");
    // A fresh status is accepted.
    publish_as_broker(&running, &status_topic, seal(boot + 3, false)).await;
    let inv = running.state.inventory.clone();
    eventually("the fresh status applied", Duration::from_secs(10), || async {
        (inv.gateway_online("gw-e") == Some(false)).then_some(())
    })
    .await;
    running.stop().await;
}
