//! Benchmarks of rules and alerts (ignored by default; run in release):
//!
//! ```sh
//! cargo test --release -p village-tests --test e2e alerts::bench -- --ignored --nocapture --test-threads 1
//! ```
//!
//! - Evaluation cost per reading: the default packs on the simulated county scaled to
//!   15,000 meters (50 villages, 2,000 cows, 400 speakers), readings decoded from the
//!   county's registers through the gateway profiles, straight into the evaluator.
//! - Added latency from a reading's publish to its alert's notification, at half of the
//!   pipeline's maximum load: real ingest (embedded broker, store with fsync, pipeline,
//!   rules queue, evaluator, alert manager, alert log fsync, webhook notifier), MQTT
//!   publishers playing the county's 62 meter gateways. The clock stops when the webhook
//!   receiver has the alert (ingest sends an alert event only once the alert log holding it
//!   is synced), and each probe rides at a random place among its slot's batches.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ingest::alerts::config::NotifierConfig;
use ingest::alerts::{AlertEvent, AlertsOptions};
use ingest::config::{BrokerConfig, IngestConfig};
use ingest::inventory::{Device, Inventory};
use ingest::rules::config::RuleSet;
use ingest::rules::eval::Evaluator;
use ingest::rules::signal::Severity;
use ingest::service::{self, Options};
use protocol::codec::{self, Codec};
use protocol::{Batch, DeviceKind, Metric, Reading, Timestamp};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use simulator::{CountySpec, Plan};

use super::sim::{APRIL_7, Poller};
use crate::common::now_ms;

fn county_15k() -> CountySpec {
    CountySpec { villages: 50, meters: 15_000, cows: 2_000, speakers_per_village: 8, ..CountySpec::demo() }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run in release with --ignored"]
async fn rule_evaluation_cost_per_reading_with_the_default_packs_at_15000_meters() {
    let mut poller = Poller::new(county_15k(), APRIL_7 + 10 * 3_600_000, 60_000);
    let rules = RuleSet::defaults().expect("default packs").rules;
    let n_rules = rules.len();
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = store::Store::open(store::StoreConfig::new(dir.path())).unwrap();
    let mut eval = Evaluator::new(rules, poller.inventory.clone(), Some(Arc::new(store)));
    // Ten minutes to create every series' state, then an hour measured.
    for _ in 0..10 {
        for b in poller.step() {
            eval.readings(&b.readings);
        }
        eval.tick(poller.county.now().0);
    }
    let (mut readings, mut busy, mut ticks) = (0u64, Duration::ZERO, Vec::new());
    let mut batch_times = Vec::new();
    for _ in 0..60 {
        let batches = poller.step();
        for b in &batches {
            let t = Instant::now();
            eval.readings(&b.readings);
            let dt = t.elapsed();
            busy += dt;
            batch_times.push(dt.as_secs_f64() * 1e6 / b.readings.len().max(1) as f64);
            readings += b.readings.len() as u64;
        }
        let t = Instant::now();
        eval.tick(poller.county.now().0);
        ticks.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ticks.sort_by(f64::total_cmp);
    let series: usize = eval.series().iter().sum();
    println!(
        "evaluation: {n_rules} rules, {series} series states, {readings} readings in {:.3} s: {:.0} ns per reading \
         ({:.2} M readings/s on one core); tick over all series: p50 {:.2} ms, max {:.2} ms",
        busy.as_secs_f64(),
        busy.as_secs_f64() * 1e9 / readings as f64,
        readings as f64 / busy.as_secs_f64() / 1e6,
        quantile(&ticks, 0.5),
        ticks.last().copied().unwrap_or(0.0),
    );
}

/// The county's meter gateways, and probe pump stations on them whose fault word trips
/// the default pack's `pump-trip` rule (no hold time) the moment it is stored.
/// Meter gateways with their meters, and probes with their gateway.
type Gateways = Vec<(String, Vec<String>)>;
type Probes = Vec<(String, String)>;

fn latency_inventory(plan: &Plan) -> (Inventory, Gateways, Probes) {
    let mut file = ingest::demo::inventory_of(plan);
    for g in &mut file.gateways {
        g.public_key = crate::keys::public_key(&g.id);
    }
    let mut gateways = Vec::new();
    let mut probes = Vec::new();
    for g in plan.gateways.iter().filter(|g| g.devices.iter().any(|d| d.kind == DeviceKind::WaterMeter)) {
        let meters: Vec<String> =
            g.devices.iter().filter(|d| d.kind == DeviceKind::WaterMeter).map(|d| d.id.clone()).collect();
        for k in 0..20 {
            let id = format!("probe-{}-{k}", g.id);
            file.devices.push(Device {
                id: id.clone(),
                kind: DeviceKind::PumpStation,
                site: g.site.clone(),
                gateway: g.id.clone(),
                model: String::new(),
                lat: None,
                lon: None,
                public_key: None,
            });
            probes.push((g.id.clone(), id));
        }
        gateways.push((g.id.clone(), meters));
    }
    (Inventory::from_file(file), gateways, probes)
}

/// Readings of one meter poll: what the water-meter profile yields.
fn meter_readings(id: &str, ts: i64, i: u64) -> [Reading; 4] {
    let t = Timestamp(ts);
    [
        Reading::new(id, Metric::new("volume_total"), t, 100.0 + i as f64 * 0.001),
        Reading::new(id, Metric::new("flow"), t, 0.0),
        Reading::new(id, Metric::new("battery_voltage"), t, 3.6),
        Reading::new(id, Metric::new("fault_word"), t, 0.0),
    ]
}

/// Notes when probe readings reach the sinks (durable).
#[derive(Default)]
struct DurableAt(std::sync::Mutex<HashMap<String, Instant>>);

impl ingest::pipeline::Sink for DurableAt {
    fn name(&self) -> &'static str {
        "probe-timer"
    }

    fn accept(&self, _tenant: &str, readings: &[Reading]) {
        let now = Instant::now();
        let mut m = self.0.lock().expect("not poisoned");
        for r in readings.iter().filter(|r| r.device.starts_with("probe-")) {
            m.insert(r.device.to_string(), now);
        }
    }
}

/// A webhook receiver on loopback: notes when each probe's `firing` event arrives.
async fn webhook_receiver() -> (SocketAddr, Arc<std::sync::Mutex<HashMap<String, Instant>>>) {
    let seen: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
    let keep = seen.clone();
    let app = axum::Router::new().route(
        "/alerts",
        axum::routing::post(move |axum::Json(event): axum::Json<serde_json::Value>| {
            let keep = keep.clone();
            async move {
                let at = Instant::now();
                let probe = event["alert"]["device"].as_str().filter(|d| d.starts_with("probe-"));
                if let (true, Some(d)) = (event["event"] == "firing", probe) {
                    keep.lock().expect("not poisoned").entry(d.to_string()).or_insert(at);
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port on loopback");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

/// xorshift64: the probe placement, repeatable from its printed seed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

struct Publisher {
    client: AsyncClient,
    /// Ingest's public key: batches are sealed as their gateway seals them.
    ingest: ed25519_dalek::VerifyingKey,
}

impl Publisher {
    fn new(broker: SocketAddr, login: (String, String), name: &str, ingest: ed25519_dalek::VerifyingKey) -> Publisher {
        let mut opts = MqttOptions::new(name, broker.ip().to_string(), broker.port());
        opts.set_credentials(login.0, login.1);
        opts.set_max_packet_size(1 << 20, 1 << 20).set_inflight(200).set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = AsyncClient::new(opts, 1000);
        tokio::spawn(async move { while events.poll().await.is_ok() {} });
        Publisher { client, ingest }
    }

    async fn send(&self, b: &Batch) {
        let body = codec::encode(b, Codec::Binary);
        let channel = protocol::topic::Channel::Telemetry;
        let payload = crate::keys::seal("county", &b.gateway, channel, &self.ingest, b.seq, &body);
        self.client
            .publish(format!("vt/county/{}/up/telemetry", b.gateway), QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run in release with --ignored"]
async fn latency_from_publish_to_alert_at_half_of_the_maximum_load() {
    let plan = Plan::build(&county_15k());
    let (inventory, gateways, probes) = latency_inventory(&plan);
    let dir = tempfile::tempdir().unwrap();
    let config = IngestConfig::new(
        dir.path().to_path_buf(),
        BrokerConfig::Embedded { listen: SocketAddr::from(([127, 0, 0, 1], 0)) },
    );
    // A sink ahead of the rules notes when each probe became durable (sinks are fed in
    // order, the rules last), so the latency splits into the pipeline's part and the part
    // the rules add.
    let durable = Arc::new(DurableAt::default());
    let (webhook, notified) = webhook_receiver().await;
    let alerts_options = AlertsOptions {
        config: ingest::alerts::AlertsConfig {
            notifiers: vec![NotifierConfig::Webhook {
                url: format!("http://{webhook}/alerts"),
                secret: "bench-webhook-secret-0123456789".into(),
                min_severity: Severity::Warning,
                tenants: Vec::new(),
                max_retries: 0,
                timeout_ms: 5_000,
                name: None,
                ca_file: None,
                broadcast_levels: Vec::new(),
            }],
            ..Default::default()
        },
        ..AlertsOptions::default()
    };
    let options = Options {
        alerts: Some(alerts_options),
        sinks: vec![durable.clone() as Arc<dyn ingest::pipeline::Sink>],
        ..Options::default()
    };
    let ingest = service::start(config, inventory, options).await.expect("ingest");
    let key = ed25519_dalek::VerifyingKey::from_bytes(&ingest.state.commands.public_key()).expect("ingest's key");
    let broker = ingest.mqtt.unwrap();
    let alerts = ingest.state.alerts.clone().unwrap();
    let stored = || ingest.state.metrics.readings_stored.get();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pubs: Vec<Publisher> = (0..2)
        .map(|i| Publisher::new(broker, ingest.broker_login.clone().expect("login"), &format!("bench-{i}"), key))
        .collect();
    let mut seq: HashMap<String, u64> = HashMap::new();
    let mut next_seq = |gw: &str| {
        let s = seq.entry(gw.to_string()).or_default();
        *s += 1;
        *s
    };

    // Maximum load: every meter gateway publishes a poll of all its meters (~1,000
    // readings a batch), as fast as the broker takes them, for 150 rounds (9 million
    // readings: long enough that buffers in the broker and clients do not flatter it).
    let rounds = 150;
    let before = stored();
    let t0 = Instant::now();
    let mut sent = 0u64;
    for r in 0..rounds {
        let ts = now_ms();
        for (k, (gw, meters)) in gateways.iter().enumerate() {
            let readings: Vec<Reading> = meters.iter().flat_map(|m| meter_readings(m, ts, r)).collect();
            sent += readings.len() as u64;
            let b = Batch { gateway: gw.clone(), seq: next_seq(gw), readings };
            pubs[k % pubs.len()].send(&b).await;
        }
    }
    while stored() - before < sent {
        assert!(t0.elapsed() < Duration::from_secs(600), "stored {} of {sent}", stored() - before);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let max_rate = sent as f64 / t0.elapsed().as_secs_f64();
    let stored_after = t0.elapsed();
    alerts.flush().await;
    println!(
        "maximum load: {sent} readings stored in {:.2} s = {:.0} readings/s ({} batches); rules done {:.2} s after",
        stored_after.as_secs_f64(),
        max_rate,
        rounds as usize * gateways.len(),
        (t0.elapsed() - stored_after).as_secs_f64()
    );

    // Half of it, paced in 100 ms slots; each slot carries one probe whose alert we time.
    let rate = max_rate / 2.0;
    let mut events = alerts.subscribe();
    let fired: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
    let keep = fired.clone();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(AlertEvent::Firing { alert }) => {
                    if let Some(d) = alert.device.filter(|d| d.starts_with("probe-")) {
                        keep.lock().unwrap().insert(d, Instant::now());
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    });
    let per_slot = (rate / 10.0) as usize;
    let all_meters: Vec<(&String, &String)> =
        gateways.iter().flat_map(|(g, ms)| ms.iter().map(move |m| (g, m))).collect();
    let mut sent_at: HashMap<String, Instant> = HashMap::new();
    let mut cursor = 0usize;
    let slots = 300; // 30 s
    let seed = 0x5eed_2026_1203_u64;
    let mut rng = XorShift(seed);
    println!("probe placement seed {seed:#x}");
    let start = tokio::time::Instant::now();
    let mut probe_iter = probes.iter();
    for slot in 0..slots {
        tokio::time::sleep_until(start + Duration::from_millis(100 * slot)).await;
        let ts = now_ms();
        let mut by_gw: HashMap<&String, Vec<Reading>> = HashMap::new();
        while by_gw.values().map(Vec::len).sum::<usize>() < per_slot {
            let (g, m) = all_meters[cursor % all_meters.len()];
            cursor += 1;
            by_gw.entry(g).or_default().extend(meter_readings(m, ts, 1000 + cursor as u64));
        }
        let Some((pg, probe)) = probe_iter.next() else { break };
        let mut order: Vec<(&String, Vec<Reading>)> = by_gw.into_iter().collect();
        order.sort_by_key(|(g, _)| g.as_str());
        let probe_reading = Reading::new(probe.as_str(), Metric::new("fault_word"), Timestamp(ts), 1.0);
        match order.iter_mut().find(|(g, _)| *g == pg) {
            Some((_, r)) => r.push(probe_reading),
            None => order.push((pg, vec![probe_reading])),
        }
        // The probe's batch goes at a random place in its slot (Fisher-Yates), so that it
        // waits behind a random share of the slot's load, as a real trip would.
        for i in (1..order.len()).rev() {
            order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
        }
        for (k, (gw, readings)) in order.into_iter().enumerate() {
            let b = Batch { gateway: gw.clone(), seq: next_seq(gw), readings };
            if gw == pg {
                sent_at.insert(probe.clone(), Instant::now());
            }
            pubs[k % pubs.len()].send(&b).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fired = fired.lock().unwrap().clone();
    let mut lat: Vec<f64> =
        sent_at.iter().filter_map(|(p, t)| fired.get(p).map(|f| f.duration_since(*t).as_secs_f64() * 1e3)).collect();
    lat.sort_by(f64::total_cmp);
    let durable = durable.0.lock().unwrap().clone();
    let mut pipe: Vec<f64> =
        sent_at.iter().filter_map(|(p, t)| durable.get(p).map(|d| d.duration_since(*t).as_secs_f64() * 1e3)).collect();
    let mut added: Vec<f64> =
        durable.iter().filter_map(|(p, d)| fired.get(p).map(|f| f.duration_since(*d).as_secs_f64() * 1e3)).collect();
    pipe.sort_by(f64::total_cmp);
    added.sort_by(f64::total_cmp);
    println!(
        "of which publish -> durable (broker, pipeline, store fsync): p50 {:.1} ms, p99 {:.1} ms; durable -> firing (rules queue, evaluation, alert manager): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        quantile(&pipe, 0.5),
        quantile(&pipe, 0.99),
        quantile(&added, 0.5),
        quantile(&added, 0.99),
        added.last().copied().unwrap_or(f64::NAN),
    );
    let dropped = ingest.state.metrics.encode();
    let dropped = dropped.lines().find(|l| l.starts_with("ingest_rules_queue_dropped_total")).unwrap_or("").to_string();
    println!(
        "half load: {:.0} readings/s for {} s, {} probes, {} alerts timed: publish -> firing p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {dropped}",
        rate,
        slots / 10,
        sent_at.len(),
        lat.len(),
        quantile(&lat, 0.5),
        quantile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN),
    );
    let notified = notified.lock().expect("not poisoned").clone();
    let mut told: Vec<f64> =
        sent_at.iter().filter_map(|(p, t)| notified.get(p).map(|n| n.duration_since(*t).as_secs_f64() * 1e3)).collect();
    told.sort_by(f64::total_cmp);
    println!(
        "half load: publish -> alert durable and its webhook received: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} of {} probes)",
        quantile(&told, 0.5),
        quantile(&told, 0.99),
        told.last().copied().unwrap_or(f64::NAN),
        told.len(),
        sent_at.len(),
    );
    let mut by_time: Vec<(Instant, f64)> = sent_at
        .iter()
        .filter_map(|(p, t)| fired.get(p).map(|f| (*t, f.duration_since(*t).as_secs_f64() * 1e3)))
        .collect();
    by_time.sort_by_key(|x| x.0);
    let secs: Vec<String> =
        by_time.chunks(10).map(|c| format!("{:.0}", c.iter().map(|x| x.1).fold(0.0, f64::max))).collect();
    println!("worst latency (ms) of each second, in order: {}", secs.join(" "));
    assert_eq!(lat.len(), sent_at.len(), "every probe fired");
    assert_eq!(told.len(), sent_at.len(), "every probe's alert reached the webhook");
    ingest.stop().await;
}
