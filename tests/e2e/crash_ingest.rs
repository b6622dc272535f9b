//! `kill -9` of a real ingest process, again and again, while gateways stream known batches.
//!
//! The publishing side behaves like the gateway agent (its queue is not what is tested
//! here): each gateway numbers its batches, keeps every batch until ingest's delivery ack
//! covers it, and resends what is unacknowledged after a reconnect or a timeout. The
//! embedded broker dies with ingest, so every kill also drops the connections.
//!
//! After the last restart every batch a gateway saw acknowledged must be in the store
//! exactly once: every reading present with its value, no other point, roll-up counts
//! equal to the readings sent, and a resend of an old seq with other values refused.
//! Then a torn tail is appended to the write-ahead log: ingest must report it and start.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::codec::{self, Codec};
use protocol::delivery::DeliveryAck;
use protocol::{Batch, Metric, Reading, Timestamp};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use testkit::{Peer, eventually, free_port};

use crate::common::now_ms;

const GATEWAYS: usize = 4;
const DEVICES: usize = 5;
/// Batches each gateway sends.
const BATCHES: u64 = 500;
/// Unacknowledged batches a gateway keeps in flight.
const WINDOW: usize = 20;
const KILLS: usize = 8;
const TOKEN: &str = "crash-test-admin-token-0123456789";

/// The ingest binary next to this test binary (target/<profile>/ingest). `cargo test
/// --workspace` builds it (ingest has integration tests).
fn ingest_binary() -> PathBuf {
    let bin = testkit::target_binary("ingest");
    assert!(bin.exists(), "{} is missing: run `cargo test --workspace` or `cargo build -p ingest`", bin.display());
    bin
}

fn gateway_id(g: usize) -> String {
    format!("gw-{g}")
}

/// Batch `seq` of gateway `g`: each device's pressure and flow, stamped so that every
/// reading of the stream has its own (device, metric, ts).
fn batch(g: usize, seq: u64, t0: i64) -> Batch {
    let mut readings = Vec::new();
    for d in 0..DEVICES {
        let device = format!("m-{g}-{d}");
        let ts = Timestamp(t0 + seq as i64 * 1000 + d as i64);
        readings.push(Reading::new(device.as_str(), Metric::new("pressure"), ts, (seq % 1000) as f64 / 1000.0 + 0.1));
        readings.push(Reading::new(device.as_str(), Metric::new("flow"), ts, seq as f64 * 0.5 + d as f64));
    }
    Batch { gateway: gateway_id(g), seq, readings }
}

fn write_files(dir: &Path, http: u16, mqtt: u16) -> PathBuf {
    let mut inv = String::from(
        "[[sites]]\nid = \"s\"\nname = \"S\"\nkind = \"village\"\ntenant = \"county\"\nlat = 34.7\nlon = 113.6\n",
    );
    for g in 0..GATEWAYS {
        inv.push_str(&format!(
            "\n[[gateways]]\nid = \"{}\"\ntenant = \"county\"\nsite = \"s\"\npublic_key = \"{}\"\n",
            gateway_id(g),
            crate::keys::identity(&gateway_id(g)).public_hex()
        ));
        for d in 0..DEVICES {
            inv.push_str(&format!(
                "\n[[devices]]\nid = \"m-{g}-{d}\"\nkind = \"water_meter\"\nsite = \"s\"\ngateway = \"{}\"\n",
                gateway_id(g)
            ));
        }
    }
    std::fs::write(dir.join("inventory.toml"), inv).expect("inventory");
    // Ingest's key, known to the test's gateways before ingest first starts (as a county
    // gives gateways its key when it installs them).
    std::fs::create_dir_all(dir.join("data")).expect("data dir");
    let key_file = dir.join("data").join(ingest::command::KEY_FILE);
    std::fs::write(&key_file, INGEST_SEED).expect("ingest key");
    std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("0600");
    let config = format!(
        "data_dir = \"data\"\ninventory = \"inventory.toml\"\nhttp = \"127.0.0.1:{http}\"\n\
         [broker]\ntype = \"embedded\"\nlisten = \"127.0.0.1:{mqtt}\"\n\
         [[tokens]]\ntoken = \"{TOKEN}\"\nrole = \"admin\"\n"
    );
    let path = dir.join("ingest.toml");
    std::fs::write(&path, config).expect("config");
    path
}

/// Ingest's key in this test.
const INGEST_SEED: [u8; 32] = [0x17; 32];

fn ingest_key() -> ed25519_dalek::VerifyingKey {
    ed25519_dalek::SigningKey::from_bytes(&INGEST_SEED).verifying_key()
}

/// A batch sealed as its gateway seals it.
fn sealed(b: &Batch) -> Vec<u8> {
    let body = codec::encode(b, Codec::Binary);
    crate::keys::seal("county", &b.gateway, protocol::topic::Channel::Telemetry, &ingest_key(), b.seq, &body)
}

/// A gateway's view: the highest seq ingest acknowledged.
type Acked = Arc<Mutex<Vec<u64>>>;

/// One gateway: publishes its batches in order, keeps them until the delivery ack covers
/// them, resends the unacknowledged ones after a reconnect or 2 s without progress.
async fn gateway(g: usize, mqtt: u16, t0: i64, acked: Acked) {
    let id = gateway_id(g);
    let mut opts = MqttOptions::new(id.clone(), "127.0.0.1", mqtt);
    opts.set_credentials(id.clone(), crate::keys::link("county", &id, &ingest_key()).broker_password());
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(opts, 10 * WINDOW);
    let topic = format!("vt/county/{id}/up/telemetry");
    let delivery = format!("vt/county/{id}/down/delivery");
    let mut queue: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
    let mut next = 1u64;
    let mut connected = false;
    let mut last_progress = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected = true;
                    let _ = client.try_subscribe(delivery.clone(), QoS::AtLeastOnce);
                    // Resend everything unconfirmed, in order.
                    for (_, payload) in &queue {
                        let _ = client.try_publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone());
                    }
                    last_progress = tokio::time::Instant::now();
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == delivery => {
                    let down = protocol::topic::Topic::new("county", &id, protocol::topic::Channel::Delivery);
                    let opened = protocol::auth::open_signed(&p.payload, &down, &ingest_key());
                    if let Ok(ack) = opened.map_err(|_| ()).and_then(|o| DeliveryAck::from_json(o.body).map_err(|_| ())) {
                        while queue.front().is_some_and(|(s, _)| *s <= ack.seq) {
                            queue.pop_front();
                        }
                        let mut a = acked.lock().unwrap_or_else(|e| e.into_inner());
                        if ack.seq > a[g] {
                            a[g] = ack.seq;
                            last_progress = tokio::time::Instant::now();
                        }
                        if a[g] >= BATCHES {
                            return;
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    connected = false;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = tick.tick() => {
                if !connected {
                    continue;
                }
                if queue.len() < WINDOW && next <= BATCHES {
                    let payload = sealed(&batch(g, next, t0));
                    if client.try_publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone()).is_ok() {
                        queue.push_back((next, payload));
                        next += 1;
                    }
                }
                if !queue.is_empty() && last_progress.elapsed() > Duration::from_secs(2) {
                    for (_, payload) in &queue {
                        let _ = client.try_publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone());
                    }
                    last_progress = tokio::time::Instant::now();
                }
            }
        }
    }
}

/// A small deterministic random source (the seed is printed, so a failure can be replayed).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

/// An ingest process, killed with SIGKILL when dropped (also when an assertion fails).
fn spawn_ingest(bin: &Path, config: &Path, log: &Path) -> Peer {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
    Peer::spawn(
        "ingest",
        Command::new(bin)
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info,rumqttd=warn,rumqttd::router::routing=off")
            .stdout(Stdio::null())
            .stderr(log),
    )
}

async fn healthy(base: &str) -> bool {
    reqwest::get(format!("{base}/api/v1/health")).await.is_ok_and(|r| r.status().is_success())
}

async fn get(base: &str, path: &str) -> Value {
    let resp = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .header("Authorization", format!("Token {TOKEN}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
    resp.json().await.expect("JSON")
}

/// Every acknowledged batch once: each reading with its value, nothing else, and roll-up
/// counts equal to the readings sent.
async fn verify(base: &str, acked: &[u64], t0: i64) {
    let mut expected: BTreeMap<(String, String), Vec<(i64, f64)>> = BTreeMap::new();
    for (g, &upto) in acked.iter().enumerate() {
        for seq in 1..=upto {
            for r in batch(g, seq, t0).readings {
                expected
                    .entry((r.device.to_string(), r.metric.name().to_string()))
                    .or_default()
                    .push((r.ts.0, r.value));
            }
        }
    }
    let (from, to) = (t0, t0 + (BATCHES as i64 + 2) * 1000);
    for ((device, metric), want) in &expected {
        let s = get(base, &format!("/api/v1/series?device={device}&metric={metric}&from={from}&to={to}&limit=100000"))
            .await;
        let got: Vec<(i64, f64)> = s["points"]
            .as_array()
            .expect("points")
            .iter()
            .map(|p| {
                let ts =
                    ingest::api::time::parse(p["ts"].as_str().unwrap_or_default()).map(|t| t.0).unwrap_or_default();
                (ts, p["value"].as_f64().unwrap_or(f64::NAN))
            })
            .collect();
        assert_eq!(&got, want, "{device} {metric}: stored points differ from the acknowledged batches");
        let b = get(base, &format!("/api/v1/series?device={device}&metric={metric}&from={from}&to={to}&step=1d")).await;
        let count: u64 = b["points"].as_array().expect("buckets").iter().filter_map(|x| x["count"].as_u64()).sum();
        assert_eq!(count, want.len() as u64, "{device} {metric}: roll-up count");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_no_acknowledged_batch_and_stores_none_twice() {
    let bin = ingest_binary();
    let dir = tempfile::tempdir().expect("tempdir");
    let (http, mqtt) = (free_port(), free_port());
    let config = write_files(dir.path(), http, mqtt);
    let log = dir.path().join("ingest.log");
    let base = format!("http://127.0.0.1:{http}");
    let seed = now_ms() as u64;
    println!("crash test: seed {seed}, log {}", log.display());
    let mut rng = Lcg(seed);

    let t0 = now_ms() - 3_600_000;
    let acked: Acked = Arc::new(Mutex::new(vec![0; GATEWAYS]));
    let gateways: Vec<_> = (0..GATEWAYS).map(|g| tokio::spawn(gateway(g, mqtt, t0, acked.clone()))).collect();

    let mut kills = 0;
    for cycle in 0..KILLS {
        let mut child = spawn_ingest(&bin, &config, &log);
        if rng.below(4) == 0 {
            // Sometimes during start-up: log replay, broker start, subscription.
            tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
        } else {
            eventually("ingest to be healthy", Duration::from_secs(30), || async {
                healthy(&base).await.then_some(())
            })
            .await;
            tokio::time::sleep(Duration::from_millis(200 + rng.below(1300))).await;
        }
        let before: Vec<u64> = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
        child.kill();
        kills += 1;
        println!("cycle {cycle}: killed; acknowledged so far {before:?}");
    }

    // The last start: everything must get through, and be there once.
    let mut child = spawn_ingest(&bin, &config, &log);
    eventually("every batch to be acknowledged", Duration::from_secs(90), || async {
        let a = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
        a.iter().all(|&s| s >= BATCHES).then_some(())
    })
    .await;
    for g in gateways {
        let _ = g.await;
    }
    let all = vec![BATCHES; GATEWAYS];
    verify(&base, &all, t0).await;

    // The seq memory survived every kill: an old seq with other values is a duplicate.
    let mut forged = batch(0, 1, t0);
    for r in &mut forged.readings {
        r.value += 1.0;
    }
    let duplicates = || async {
        let m = reqwest::get(format!("{base}/metrics")).await.ok()?.text().await.ok()?;
        m.lines()
            .find_map(|l| l.strip_prefix("ingest_batches_duplicate_total ").and_then(|v| v.trim().parse::<u64>().ok()))
    };
    let before = duplicates().await.unwrap_or(0);
    // gw-0 itself resends an old seq (its batches are all acknowledged by now).
    let mut opts = MqttOptions::new("gw-0", "127.0.0.1", mqtt);
    opts.set_credentials("gw-0", crate::keys::link("county", "gw-0", &ingest_key()).broker_password());
    let (client, mut eventloop) = AsyncClient::new(opts, 10);
    client.publish("vt/county/gw-0/up/telemetry", QoS::AtLeastOnce, false, sealed(&forged)).await.expect("publish");
    let poll = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    eventually("the resend to be counted as a duplicate", Duration::from_secs(10), || async {
        (duplicates().await? > before).then_some(())
    })
    .await;
    poll.abort();
    verify(&base, &all, t0).await;

    // A torn write at the end of the log: reported, cut off, and ingest starts.
    child.kill();
    let wal = dir.path().join("data/store/wal");
    let newest = std::fs::read_dir(&wal)
        .expect("wal dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .max()
        .expect("a log segment");
    let mut torn = std::fs::read(&newest).expect("segment");
    torn.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 1, 7, b'g', b'w']);
    std::fs::write(&newest, torn).expect("tear the segment");
    let mut child = spawn_ingest(&bin, &config, &log);
    eventually("ingest to start after a torn write", Duration::from_secs(30), || async {
        healthy(&base).await.then_some(())
    })
    .await;
    verify(&base, &all, t0).await;
    child.kill();

    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let torn_reports = text.matches("Cut a torn tail").count();
    println!("crash test: {kills} kills, {torn_reports} torn-tail reports in the log");
    assert!(torn_reports >= 1, "the torn write was not reported:\n{text}");
}
