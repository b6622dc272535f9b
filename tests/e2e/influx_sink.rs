//! The InfluxDB sink against a real VictoriaMetrics: what ingest stored is what the server
//! holds, also when the server was stopped and restarted in the middle of the stream.

use std::collections::BTreeMap;
use std::time::Duration;

use ingest::service::{self, Options};
use ingest::sinks::SinkConfig;
use ingest::sinks::influxdb::InfluxDbConfig;
use protocol::codec::{self, Codec};
use protocol::{Batch, Metric, Reading, Timestamp};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use testkit::eventually;

use crate::common::now_ms;
use crate::influx_peers::{VictoriaMetrics, ingest_config, inventory, prometheus_value};

const DEVICES: usize = 5;

/// Batch `seq` of gateway `gw-1`: every device, pressure and flow, one second apart.
fn batch(seq: u64, base: i64) -> Batch {
    let mut readings = Vec::new();
    for d in 0..DEVICES {
        let ts = Timestamp(base + seq as i64 * 1000 + d as i64);
        let device = format!("meter-{d}");
        // Register-like values (a decimal scale): VictoriaMetrics keeps about 15 significant
        // digits, so a full-precision float such as 0.28200000000000003 reads back as 0.282.
        readings.push(Reading::new(device.as_str(), Metric::new("pressure"), ts, (250 + seq) as f64 / 1000.0));
        readings.push(Reading::new(device.as_str(), Metric::new("flow"), ts, (seq * 7 + d as u64) as f64 * 0.125));
    }
    Batch { gateway: "gw-1".into(), seq, readings }
}

async fn metrics(base: &str) -> String {
    reqwest::get(format!("{base}/metrics")).await.expect("metrics").text().await.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_influxdb_sink_delivers_every_stored_reading_to_victoriametrics_across_a_server_restart() {
    let vm_dir = tempfile::tempdir().expect("tempdir");
    let mut vm = VictoriaMetrics::start(vm_dir.path()).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let mut sink = InfluxDbConfig::new(&vm.url(), "county", "telemetry", "", dir.path());
    sink.batch_max_readings = 200;
    sink.flush_interval = Duration::from_millis(100);
    sink.retry_initial = Duration::from_millis(100);
    sink.retry_max = Duration::from_millis(400);
    sink.request_timeout = Duration::from_secs(2);
    let mut config = ingest_config(dir.path());
    config.sinks = vec![SinkConfig::Influxdb(sink)];
    let devices: Vec<String> = (0..DEVICES).map(|d| format!("meter-{d}")).collect();
    let ingest = service::start(config, inventory(&devices), Options::default()).await.expect("ingest starts");
    let base = format!("http://{}", ingest.http);
    let broker = ingest.mqtt.expect("embedded broker");

    let mut opts = MqttOptions::new("gw-1", broker.ip().to_string(), broker.port());
    let key = ed25519_dalek::VerifyingKey::from_bytes(&ingest.state.commands.public_key()).expect("ingest's key");
    opts.set_credentials("gw-1", crate::keys::link("county", "gw-1", &key).broker_password());
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    eventually("ingest to be ready", Duration::from_secs(10), || async {
        reqwest::get(format!("{}/api/v1/health", base)).await.ok().filter(|r| r.status().is_success())
    })
    .await;

    let t0 = now_ms() - 600_000;
    let mut sent = 0u64;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&ingest.state.commands.public_key()).expect("ingest's key");
    let publish = |from: u64, to: u64| {
        let client = client.clone();
        async move {
            for seq in from..to {
                let body = codec::encode(&batch(seq, t0), Codec::Binary);
                let channel = protocol::topic::Channel::Telemetry;
                let payload = crate::keys::seal("county", "gw-1", channel, &key, seq, &body);
                client.publish("vt/county/gw-1/up/telemetry", QoS::AtLeastOnce, false, payload).await.expect("publish");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let per_batch = (DEVICES * 2) as u64;
    let written = "ingest_influxdb_written_readings_total{sink=\"influxdb\"}";
    let spilled = "ingest_influxdb_spilled_readings{sink=\"influxdb\"}";
    let queued = "ingest_influxdb_queued_readings{sink=\"influxdb\"}";

    // Up: straight through.
    publish(1, 31).await;
    sent += 30 * per_batch;
    eventually("the first readings to be written", Duration::from_secs(20), || async {
        (prometheus_value(&metrics(&base).await, written)? >= sent as f64).then_some(())
    })
    .await;

    // Down: the sink spills.
    vm.stop();
    publish(31, 81).await;
    sent += 50 * per_batch;
    eventually("readings to be spilled while VictoriaMetrics is down", Duration::from_secs(20), || async {
        (prometheus_value(&metrics(&base).await, spilled)? > 0.0).then_some(())
    })
    .await;

    // Back: the spill drains, in order, before new data.
    vm.restart().await;
    publish(81, 101).await;
    sent += 20 * per_batch;
    eventually("the spill to drain and every reading to be written", Duration::from_secs(30), || async {
        let m = metrics(&base).await;
        let done = prometheus_value(&m, written)? >= sent as f64
            && prometheus_value(&m, spilled)? == 0.0
            && prometheus_value(&m, queued)? == 0.0;
        done.then_some(())
    })
    .await;
    assert_eq!(
        prometheus_value(&metrics(&base).await, "ingest_influxdb_failed_readings_total{sink=\"influxdb\"}"),
        Some(0.0)
    );
    assert!(prometheus_value(&metrics(&base).await, "ingest_influxdb_retries_total{sink=\"influxdb\"}") > Some(0.0));

    // What VictoriaMetrics holds is what was sent: `<metric>_value`, labels device and tenant.
    let mut expected: BTreeMap<(String, String, String), Vec<(i64, f64)>> = BTreeMap::new();
    for seq in 1..101 {
        for r in batch(seq, t0).readings {
            let key = (format!("{}_value", r.metric.name()), r.device.to_string(), "county".to_string());
            expected.entry(key).or_default().push((r.ts.0, r.value));
        }
    }
    let got = eventually("VictoriaMetrics to return every sample", Duration::from_secs(20), || async {
        let got = vm.export("pressure_value|flow_value").await;
        let n: usize = got.values().map(Vec::len).sum();
        (n as u64 == sent).then_some(got)
    })
    .await;
    assert_eq!(got.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    for (key, want) in &expected {
        let first_difference = want.iter().zip(&got[key]).find(|(a, b)| a != b);
        assert_eq!((got[key].len(), first_difference), (want.len(), None), "{key:?}");
    }
    ingest.stop().await;
}
