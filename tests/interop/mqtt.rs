//! The gateway's MQTT side against mosquitto (Debian), a broker nobody here wrote: TLS with
//! a client certificate or with username and password, a per-gateway ACL, the retained
//! status, and the last will.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use gateway::config::{DeviceConfig, GatewayConfig, MqttConfig, TlsConfig};
use ingest::config::{BrokerConfig, IngestConfig};
use ingest::inventory::{Device, GatewayInfo, Inventory, InventoryFile, Site};
use ingest::service::{self, Options, Running};
use protocol::DeviceKind;
use protocol::status::GatewayStatus;
use protocol::topic::Channel;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use testkit::{eventually, free_port, run, tool};
use tokio_util::sync::CancellationToken;

use crate::common::{Mosquitto, library, make_certs, modbus_tcp};

/// Three listeners: TLS with client certificates (gateways authenticated by their
/// certificate's CN), TLS with passwords, and plain loopback with passwords (ingest).
/// One ACL: a gateway may publish only under its own `up/` and read only its `down/`.
async fn broker(dir: &Path) -> (Mosquitto, u16, u16) {
    make_certs(dir, &["gw-a", "gw-b"]);
    let passwd = dir.join("passwd");
    run(Command::new(tool("mosquitto_passwd", "mosquitto"))
        .arg("-b")
        .arg("-c")
        .arg(&passwd)
        .args(["ingest", "ingest-secret"]));
    run(Command::new(tool("mosquitto_passwd", "mosquitto")).arg("-b").arg(&passwd).args(["gw-c", "gw-c-secret"]));
    let acl = dir.join("acl");
    std::fs::write(
        &acl,
        "user ingest\ntopic readwrite vt/#\n\npattern write vt/county/%u/up/#\npattern read vt/county/%u/down/#\n",
    )
    .unwrap();
    let (plain, cert, pw) = (free_port(), free_port(), free_port());
    let d = |f: &str| dir.join(f).display().to_string();
    let tls = format!("cafile {}\ncertfile {}\nkeyfile {}\n", d("ca.pem"), d("server.pem"), d("server.key"));
    let config = format!(
        "per_listener_settings true\npersistence false\nuser root\nlog_type all\nlog_dest file /tmp/vt-mosquitto-test.log\n\
         listener {plain} 127.0.0.1\nallow_anonymous false\npassword_file {p}\nacl_file {a}\n\
         listener {cert} 127.0.0.1\n{tls}require_certificate true\nuse_identity_as_username true\nacl_file {a}\n\
         listener {pw} 127.0.0.1\n{tls}allow_anonymous false\npassword_file {p}\nacl_file {a}\n",
        p = passwd.display(),
        a = acl.display(),
    );
    (Mosquitto::start(dir, plain, &config).await, cert, pw)
}

fn inventory(keys: &[(&str, Option<String>)]) -> Inventory {
    let site = Site {
        id: "s1".into(),
        name: "S1".into(),
        kind: "village".into(),
        tenant: "county".into(),
        lat: 34.7,
        lon: 113.6,
        village: None,
        district: None,
        township: None,
    };
    let gw = |id: &str| GatewayInfo {
        id: id.into(),
        tenant: "county".into(),
        site: "s1".into(),
        public_key: keys.iter().find(|(g, _)| *g == id).and_then(|(_, k)| k.clone()),
    };
    let dev = |id: &str, g: &str| Device {
        id: id.into(),
        kind: DeviceKind::WaterQuality,
        site: "s1".into(),
        gateway: g.into(),
        model: String::new(),
        lat: None,
        lon: None,
        public_key: None,
    };
    Inventory::from_file(InventoryFile {
        sites: vec![site],
        gateways: vec![gw("gw-a"), gw("gw-b"), gw("gw-c")],
        devices: vec![dev("gw-a-probe", "gw-a"), dev("gw-c-probe", "gw-c")],
    })
}

pub(crate) async fn ingest_on(dir: &Path, port: u16, credentials: Option<(String, String)>, inv: Inventory) -> Running {
    let config =
        IngestConfig::new(dir.to_path_buf(), BrokerConfig::External { host: "127.0.0.1".into(), port, credentials });
    service::start(config, inv, Options::default()).await.expect("ingest starts")
}

fn client(id: &str, port: u16, user: &str, pass: &str) -> (AsyncClient, EventLoop) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_credentials(user, pass).set_keep_alive(Duration::from_secs(5));
    AsyncClient::new(o, 64)
}

fn gateway_config(id: &str, port: u16, tls: TlsConfig, probe: std::net::SocketAddr) -> GatewayConfig {
    let mut cfg = GatewayConfig::new(
        id,
        "county",
        MqttConfig {
            host: "127.0.0.1".into(),
            port,
            tls: Some(tls),
            keep_alive: Duration::from_secs(5),
            ..MqttConfig::default()
        },
    );
    cfg.devices = vec![DeviceConfig {
        interval: Duration::from_millis(300),
        ..DeviceConfig::tcp(&format!("{id}-probe"), "in-situ-aqua-troll-400", probe, 1)
    }];
    cfg.publish.interval = Duration::from_millis(200);
    cfg
}

async fn latest_ph(running: &Running, device: &str) -> Option<f64> {
    running
        .state
        .store
        .latest()
        .into_iter()
        .find(|p| p.device == device && p.metric.name() == "ph")
        .map(|p| p.point.value)
}

/// Collects what arrives on `filter` for a while.
async fn collect(
    mut ev: EventLoop,
    client: AsyncClient,
    filter: &str,
    wait: Duration,
) -> (Vec<(String, Vec<u8>)>, bool) {
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    let mut got = Vec::new();
    let mut refused = false;
    let _ = tokio::time::timeout(wait, async {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => got.push((p.topic.clone(), p.payload.to_vec())),
                Ok(Event::Incoming(Packet::SubAck(a))) => {
                    refused = a.return_codes.iter().any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await;
    (got, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_reach_ingest_through_mosquitto_over_tls_and_the_acl_confines_each_to_its_own_topics() {
    testkit::logs();
    let dir = tempfile::tempdir().unwrap();
    let (mosquitto, cert_port, pw_port) = broker(dir.path()).await;
    let (_device, probe) = modbus_tcp().await;
    // Each gateway's key is made beside its queue and enrolled before ingest starts.
    let (queue_a, key_a) = crate::keys::enrol(dir.path(), "gw-a");
    let (queue_c, key_c) = crate::keys::enrol(dir.path(), "gw-c");
    let running = ingest_on(
        &dir.path().join("ingest"),
        mosquitto.port,
        Some(("ingest".into(), "ingest-secret".into())),
        inventory(&[("gw-a", key_a), ("gw-c", key_c)]),
    )
    .await;
    let status_of = |payload: &[u8]| {
        let body = crate::keys::open(&dir.path().join("ingest"), &queue_a, "gw-a", Channel::Status, payload)?;
        serde_json::from_slice::<GatewayStatus>(&body).ok()
    };
    let ca = dir.path().join("ca.pem");

    // gw-a: client certificate; gw-c: username and password over TLS.
    let stop = CancellationToken::new();
    let tls_a = TlsConfig {
        ca_file: Some(ca.clone()),
        client_auth: Some((dir.path().join("gw-a.pem"), dir.path().join("gw-a.key"))),
    };
    let mut cfg_a = gateway_config("gw-a", cert_port, tls_a, probe);
    cfg_a.queue.dir = Some(queue_a.clone());
    cfg_a.command_key = crate::keys::command_key(&running);
    let gw_a = gateway::Gateway::new(cfg_a, library(), daemon::system_clock()).unwrap();
    let task_a = tokio::spawn(gw_a.try_run(stop.clone()));
    let mut cfg_c = gateway_config("gw-c", pw_port, TlsConfig { ca_file: Some(ca.clone()), client_auth: None }, probe);
    cfg_c.mqtt.credentials = Some(("gw-c".into(), "gw-c-secret".into()));
    cfg_c.queue.dir = Some(queue_c);
    cfg_c.command_key = crate::keys::command_key(&running);
    let gw_c = gateway::Gateway::new(cfg_c, library(), daemon::system_clock()).unwrap();
    tokio::spawn(gw_c.run(stop.clone()));

    for device in ["gw-a-probe", "gw-c-probe"] {
        let v = eventually(&format!("{device} pH in ingest's store"), Duration::from_secs(30), || {
            latest_ph(&running, device)
        })
        .await;
        assert_eq!(v, 7.25);
    }

    // The retained status says online, with the device's health.
    let (c, ev) = client("watcher-1", mosquitto.port, "ingest", "ingest-secret");
    let (got, _) = collect(ev, c, "vt/county/gw-a/up/status", Duration::from_secs(2)).await;
    let status = status_of(&got.first().expect("a retained status").1).expect("gw-a's sealed status");
    assert!(status.online && status.devices.iter().any(|d| d.id == "gw-a-probe" && d.online), "{status:?}");

    // gw-b holds a valid certificate but may not publish as gw-a nor read gw-a's downlink:
    // the broker drops its publish and delivers it nothing of gw-a's.
    let (watch, watch_ev) = client("watcher-2", mosquitto.port, "ingest", "ingest-secret");
    // The watcher sees both gateways' telemetry: gw-b's publish on its own topic is the
    // positive control that gw-b is connected and could publish at all.
    let watching = tokio::spawn(collect(watch_ev, watch, "vt/county/+/up/telemetry", Duration::from_secs(4)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut o = MqttOptions::new("gw-b", "127.0.0.1", cert_port);
    let tls_b = TlsConfig {
        ca_file: Some(ca.clone()),
        client_auth: Some((dir.path().join("gw-b.pem"), dir.path().join("gw-b.key"))),
    };
    o.set_transport(rumqttc::Transport::tls_with_config(gateway_tls(&tls_b)));
    let (b, b_ev) = AsyncClient::new(o, 16);
    let forged = br#"{"gateway":"gw-b-forged","seq":1,"readings":[]}"#.to_vec();
    b.publish("vt/county/gw-a/up/telemetry", QoS::AtLeastOnce, false, forged.clone()).await.unwrap();
    let own = br#"{"gateway":"gw-b","seq":1,"readings":[]}"#.to_vec();
    b.publish("vt/county/gw-b/up/telemetry", QoS::AtLeastOnce, false, own.clone()).await.unwrap();
    let eavesdrop = tokio::spawn(collect(b_ev, b, "vt/county/gw-a/down/#", Duration::from_secs(3)));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (ingest_client, mut ingest_ev) = client("ingest-2", mosquitto.port, "ingest", "ingest-secret");
    ingest_client.publish("vt/county/gw-a/down/cmd", QoS::AtLeastOnce, false, b"for gw-a only".to_vec()).await.unwrap();
    let _ = tokio::time::timeout(Duration::from_millis(500), async { while ingest_ev.poll().await.is_ok() {} }).await;
    let (overheard, _) = eavesdrop.await.unwrap();
    assert!(overheard.is_empty(), "gw-b read gw-a's downlink: {overheard:?}");
    let (seen, _) = watching.await.unwrap();
    assert!(!seen.iter().any(|(_, p)| *p == forged), "the broker let gw-b publish as gw-a");
    assert!(
        seen.iter().any(|(t, p)| t == "vt/county/gw-b/up/telemetry" && *p == own),
        "positive control: gw-b's publish on its own topic is seen (gw-b was connected)"
    );
    assert!(seen.iter().any(|(t, _)| t == "vt/county/gw-a/up/telemetry"), "gw-a's own telemetry still flows");

    // The last will: gw-a vanishes without a goodbye; the broker marks it offline.
    task_a.abort();
    let _ = task_a.await;
    let status = eventually("gw-a's last will", Duration::from_secs(20), || async {
        let (c, ev) = client("watcher-3", mosquitto.port, "ingest", "ingest-secret");
        let (got, _) = collect(ev, c, "vt/county/gw-a/up/status", Duration::from_millis(800)).await;
        let s = status_of(&got.first()?.1)?;
        (!s.online).then_some(s)
    })
    .await;
    assert_eq!(status.gateway, "gw-a");
    stop.cancel();
    running.stop().await;
}

/// The same rustls client config the gateway builds, for the test's own rogue client.
fn gateway_tls(tls: &TlsConfig) -> rumqttc::TlsConfiguration {
    let read = |p: &Path| std::fs::read(p).unwrap();
    let (cert, key) = tls.client_auth.clone().unwrap();
    rumqttc::TlsConfiguration::Rustls(Arc::new(client_config(
        &read(tls.ca_file.as_ref().unwrap()),
        &read(&cert),
        &read(&key),
    )))
}

fn client_config(ca: &[u8], cert: &[u8], key: &[u8]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &ca[..]) {
        roots.add(c.unwrap()).unwrap();
    }
    let certs = rustls_pemfile::certs(&mut &cert[..]).collect::<Result<Vec<_>, _>>().unwrap();
    let key = rustls_pemfile::private_key(&mut &key[..]).unwrap().unwrap();
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap()
}
