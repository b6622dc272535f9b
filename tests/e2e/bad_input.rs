//! Bad input of every kind is refused with its reason and does not disturb the good
//! readings around it: a raw MQTT client plays a misbehaving gateway against the real
//! embedded broker and the real ingest. It holds gw-a's key (and gw-b's, for a gateway
//! that names another in its batch), so its messages verify and reach validation; what a
//! stranger without a key sends ends at the authenticator (`bad_signature`, `unsigned`).

use std::net::SocketAddr;
use std::time::Duration;

use ingest::config::{BrokerConfig, IngestConfig};
use ingest::inventory::{Device, GatewayInfo, Inventory, InventoryFile, Site};
use ingest::service::{self, Options};
use protocol::codec::{self, Codec};
use protocol::delivery::DeliveryAck;
use protocol::topic::{Channel, Topic};
use protocol::{Batch, DeviceKind, Metric, Reading, Timestamp};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use testkit::eventually;

use crate::common::{get_json, now_ms};

fn inventory() -> Inventory {
    let site = Site {
        id: "dongcun".into(),
        name: "Dongcun".into(),
        kind: "village".into(),
        tenant: "county".into(),
        lat: 34.7,
        lon: 113.6,
        village: Some("dongcun".into()),
        district: None,
        township: None,
    };
    let device = |id: &str, gw: &str| Device {
        id: id.into(),
        kind: DeviceKind::WaterMeter,
        site: "dongcun".into(),
        gateway: gw.into(),
        model: "m".into(),
        lat: None,
        lon: None,
        public_key: None,
    };
    Inventory::from_file(InventoryFile {
        sites: vec![site],
        gateways: vec![
            GatewayInfo {
                id: "gw-a".into(),
                tenant: "county".into(),
                site: "dongcun".into(),
                public_key: crate::keys::public_key("gw-a"),
            },
            GatewayInfo {
                id: "gw-b".into(),
                tenant: "county".into(),
                site: "dongcun".into(),
                public_key: crate::keys::public_key("gw-b"),
            },
        ],
        devices: vec![device("meter-1", "gw-a"), device("meter-2", "gw-b")],
    })
}

fn reading(device: &str, metric: &str, ts: i64, value: f64) -> Reading {
    Reading::new(device, Metric::new(metric), Timestamp(ts), value)
}

fn batch(gw: &str, seq: u64, readings: Vec<Reading>) -> Vec<u8> {
    codec::encode(&Batch { gateway: gw.into(), seq, readings }, Codec::Binary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_input_is_refused_by_name_and_good_data_around_it_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let config = IngestConfig::new(
        dir.path().to_path_buf(),
        BrokerConfig::Embedded { listen: SocketAddr::from(([127, 0, 0, 1], 0)) },
    );
    let ingest =
        service::start(config, inventory(), Options { public_read: true, ..Options::default() }).await.unwrap();
    let base = format!("http://{}", ingest.http);
    let broker = ingest.mqtt.unwrap();
    eventually("ingest to be ready", Duration::from_secs(10), || async {
        reqwest::get(format!("{base}/api/v1/health")).await.ok().filter(|r| r.status().is_success())
    })
    .await;

    let ingest_key = crate::keys::ingest_key(&base).await;
    // A client that publishes as gateway gw-a and listens to its downlink.
    let mut opts = MqttOptions::new("gw-a", broker.ip().to_string(), broker.port());
    opts.set_credentials("gw-a", crate::keys::link("county", "gw-a", &ingest_key).broker_password());
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(opts, 64);
    let (acks_tx, mut acks) = tokio::sync::mpsc::unbounded_channel::<u64>();
    tokio::spawn(async move {
        while let Ok(ev) = events.poll().await {
            let delivery = Topic::new("county", "gw-a", Channel::Delivery);
            if let Event::Incoming(Packet::Publish(p)) = ev
                && let Ok(opened) = protocol::auth::open_signed(&p.payload, &delivery, &ingest_key)
                && let Ok(ack) = DeliveryAck::from_json(opened.body)
            {
                let _ = acks_tx.send(ack.seq);
            }
        }
    });
    client.subscribe("vt/county/gw-a/down/delivery", QoS::AtLeastOnce).await.unwrap();
    let a = "vt/county/gw-a/up/telemetry";
    let now = now_ms();
    let publish = |topic: &'static str, payload: Vec<u8>| {
        let c = client.clone();
        async move { c.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap() }
    };
    // Sealed as gateway `gw` seals its uplink (the counter of a batch is its seq).
    let sealed = |gw: &str, seq: u64, body: Vec<u8>| {
        crate::keys::seal("county", gw, Channel::Telemetry, &ingest_key, seq, &body)
    };
    let batch = |gw: &str, seq: u64, readings: Vec<Reading>| sealed(gw, seq, batch(gw, seq, readings));

    publish(a, batch("gw-a", 1, vec![reading("meter-1", "flow", now, 1.0)])).await;
    publish(a, sealed("gw-a", 9, b"{\"gateway\": \"gw-a\", \"seq\": ".to_vec())).await; // malformed
    publish(a, vec![b' '; 300 * 1024]).await; // oversized
    publish(
        a,
        batch(
            "gw-a",
            2,
            vec![
                reading("meter-404", "flow", now, 1.0),                 // unknown device
                reading("meter-1", "flux_capacitance", now, 1.0),       // unknown metric
                reading("meter-1", "flow", now, f64::NAN),              // NaN
                reading("meter-1", "ph", now, 99.0),                    // out of range
                reading("meter-1", "flow", now + 3_600_000, 1.0),       // far future
                reading("meter-1", "flow", now - 60 * 86_400_000, 1.0), // far past
                reading("meter-2", "flow", now, 1.0),                   // another gateway's device
                reading("meter-1", "flow", now + 1, 2.0),               // good, beside them
            ],
        ),
    )
    .await;
    // A gateway publishing as another: gw-b (with its own key) sends a batch that names gw-a;
    // gw-a's sealed batch moved to gw-b's topic; a gateway nobody enrolled; no envelope.
    let names_a = super::bad_input::batch("gw-a", 3, vec![reading("meter-1", "flow", now, 9.0)]);
    publish("vt/county/gw-b/up/telemetry", sealed("gw-b", 3, names_a)).await;
    publish("vt/county/gw-b/up/telemetry", batch("gw-a", 3, vec![reading("meter-1", "flow", now, 9.0)])).await;
    publish("vt/county/gw-zz/up/telemetry", batch("gw-zz", 1, vec![reading("meter-1", "flow", now, 9.0)])).await;
    publish(a, super::bad_input::batch("gw-a", 4, vec![reading("meter-1", "flow", now, 9.0)])).await;
    publish(a, batch("gw-a", 3, vec![reading("meter-1", "flow", now + 2, 3.0)])).await;
    publish(a, batch("gw-a", 1, vec![reading("meter-1", "flow", now, 1.0)])).await; // a resend

    let path = format!("/api/v1/series?device=meter-1&metric=flow&from={}&to={}", now - 1000, now + 1000);
    let values: Vec<f64> = eventually("three good readings in the store", Duration::from_secs(10), || async {
        let s = get_json(&base, &path).await;
        let v: Vec<f64> = s["points"].as_array()?.iter().filter_map(|p| p["value"].as_f64()).collect();
        (v.len() >= 3).then_some(v)
    })
    .await;
    assert_eq!(values, vec![1.0, 2.0, 3.0], "exactly the good readings, once each, in order");
    let s = get_json(&base, &path).await;
    assert_eq!(s["unit"], "m3/h");
    assert_eq!(s["metric"], "flow");

    let rej = eventually("all refusals counted", Duration::from_secs(10), || async {
        let r = get_json(&base, "/api/v1/rejections").await;
        (r["counts"]["bad_signature"].as_u64() == Some(2) && r["counts"]["unsigned"].as_u64() == Some(1)).then_some(r)
    })
    .await;
    let counts = &rej["counts"];
    for (reason, n) in [
        ("malformed", 1),
        ("oversized", 1),
        ("unknown_device", 1),
        ("unknown_metric", 1),
        ("not_a_number", 1),
        ("out_of_range", 1),
        ("timestamp_future", 1),
        ("timestamp_past", 1),
        ("foreign_device", 1),
        ("topic_mismatch", 1),
        // Before authentication, gw-zz's batch was `unknown_gateway`: now nothing from a
        // gateway without an enrolled key gets that far.
        ("bad_signature", 2),
        ("unsigned", 1),
    ] {
        assert_eq!(counts[reason].as_u64(), Some(n), "{reason}: {counts}");
    }
    let details: Vec<String> =
        rej["recent"].as_array().unwrap().iter().map(|r| r["detail"].as_str().unwrap_or("").to_string()).collect();
    let has = |needle: &str| details.iter().any(|d| d.contains(needle));
    assert!(has("gateway 'gw-a' sent a reading of 'meter-2', which belongs to gateway 'gw-b'"), "{details:#?}");
    assert!(has("batch says gateway 'gw-a' but was published on the topic of gateway 'gw-b'"), "{details:#?}");
    assert!(has("exceeds the limit of 262144"), "{details:#?}");
    assert!(has("device 'meter-404' is not in the inventory"), "{details:#?}");

    // The resend of seq 1 was a duplicate, and gw-a hears that everything up to 3 is stored.
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("ingest_batches_duplicate_total 1"), "{metrics}");
    assert!(metrics.contains("ingest_rejected_total{reason=\"not_a_number\"} 1"), "{metrics}");
    let acked = eventually("a delivery ack for seq 3", Duration::from_secs(10), || {
        let mut best = None;
        while let Ok(seq) = acks.try_recv() {
            best = best.max(Some(seq));
        }
        async move { best.filter(|s| *s >= 3) }
    })
    .await;
    assert_eq!(acked, 3);

    let latest: Value = get_json(&base, "/api/v1/latest?device=meter-1").await;
    assert_eq!(latest[0]["value"].as_f64(), Some(3.0));
    ingest.stop().await;
}
