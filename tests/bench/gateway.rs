//! Gateway benchmark: resident memory and CPU of the gateway process polling 200 devices
//! at 1 s, and bytes on the wire per reading for each codec.
//!
//! `cargo run --release -p village-tests --example gateway_bench [-- SECONDS]`
//!
//! It serves a simulated county with 4 villages of 49 household meters and one speaker
//! each (200 devices on 4 Modbus TCP endpoints), starts ingest with its embedded broker,
//! builds the gateway binary with the `edge` profile it ships with, and runs it as its own
//! process polling all 200 devices every second with an on-disk queue. It samples the
//! process's VmRSS, VmHWM and CPU time from /proc, and counts the MQTT telemetry payloads
//! (and their readings) on the broker. Then it runs the JSON codec for comparison.
#![allow(clippy::print_stdout, clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ingest::config::{BrokerConfig, IngestConfig};
use ingest::demo::inventory_of;
use ingest::inventory::{GatewayInfo, Inventory};
use ingest::service::{self, Options};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use simulator::{County, CountySpec};

const GATEWAY: &str = "gw-bench";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn build_gateway() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let ok = Command::new(cargo)
        .current_dir(root())
        .args(["build", "-q", "-p", "gateway", "--bin", "gateway", "--profile", "edge"])
        .status()
        .unwrap();
    assert!(ok.success());
    root().join("target/edge/gateway")
}

/// (VmRSS KiB, VmHWM KiB, CPU seconds) of a process.
fn sample(pid: u32) -> (u64, u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    (kib("VmRSS:"), kib("VmHWM:"), ticks as f64 / 100.0)
}

struct Wire {
    bytes: AtomicU64,
    mqtt_bytes: AtomicU64,
    readings: AtomicU64,
    batches: AtomicU64,
}

/// The gateway's key, made once and put in each run's queue directory (one gateway, one
/// enrolled key), and ingest's public key for its config.
#[allow(clippy::too_many_arguments)]
async fn run(
    binary: &Path,
    dir: &Path,
    broker: std::net::SocketAddr,
    devices: &str,
    codec: &str,
    secs: u64,
    command_key: &str,
    login: (String, String),
) {
    let queue = dir.join(format!("queue-{codec}"));
    std::fs::create_dir_all(&queue).unwrap();
    std::fs::copy(dir.join("gateway.key"), queue.join(gateway::identity::FILE)).unwrap();
    let config = format!(
        "gateway = \"{GATEWAY}\"\ntenant = \"county\"\ncommand_key = \"{command_key}\"\nhealth_interval_secs = 60\n[mqtt]\nurl = \"mqtt://{broker}\"\ncodec = \"{codec}\"\n\
         [publish]\ninterval_ms = 1000\n[queue]\ndir = \"{}\"\n{devices}",
        queue.display()
    );
    let path = dir.join(format!("gateway-{codec}.toml"));
    std::fs::write(&path, config).unwrap();

    let wire = Arc::new(Wire {
        bytes: AtomicU64::new(0),
        mqtt_bytes: AtomicU64::new(0),
        readings: AtomicU64::new(0),
        batches: AtomicU64::new(0),
    });
    let mut o = MqttOptions::new(format!("bench-watch-{codec}"), broker.ip().to_string(), broker.port());
    o.set_credentials(login.0, login.1);
    o.set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut ev) = AsyncClient::new(o, 64);
    let topic = format!("vt/county/{GATEWAY}/up/telemetry");
    client.subscribe(&topic, QoS::AtMostOnce).await.unwrap();
    let w = wire.clone();
    // The watcher reads the sealed batches as ingest does, with the link key.
    let identity = gateway::identity::Identity::load(&dir.join("gateway.key")).unwrap();
    let seed: [u8; 32] = std::fs::read(dir.join("ingest").join(ingest::command::KEY_FILE)).unwrap().try_into().unwrap();
    let ingest_key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let link = protocol::auth::LinkKey::for_ingest(&ingest_key, &identity.public(), "county", GATEWAY).unwrap();
    let watcher = tokio::spawn(async move {
        let telemetry = protocol::topic::Topic::new("county", GATEWAY, protocol::topic::Channel::Telemetry);
        while let Ok(e) = ev.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = e
                && let Ok(opened) = protocol::auth::open_mac(&p.payload, &telemetry, &link)
                && let Ok(b) = protocol::codec::decode(opened.body)
            {
                w.bytes.fetch_add(p.payload.len() as u64, Ordering::Relaxed);
                // Fixed header (2-4), topic length and topic, packet id: what QoS 1 adds.
                w.mqtt_bytes.fetch_add((p.payload.len() + 4 + 2 + p.topic.len() + 2) as u64, Ordering::Relaxed);
                w.readings.fetch_add(b.readings.len() as u64, Ordering::Relaxed);
                w.batches.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let mut child = Command::new(binary)
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id();
    tokio::time::sleep(Duration::from_secs(10)).await; // connect, first polls, steady state
    let (_, _, cpu0) = sample(pid);
    let (b0, m0, r0, n0) = (
        wire.bytes.load(Ordering::Relaxed),
        wire.mqtt_bytes.load(Ordering::Relaxed),
        wire.readings.load(Ordering::Relaxed),
        wire.batches.load(Ordering::Relaxed),
    );
    let t0 = Instant::now();
    let mut rss_max = 0;
    while t0.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss_max = rss_max.max(sample(pid).0);
    }
    let (rss, hwm, cpu1) = sample(pid);
    let elapsed = t0.elapsed().as_secs_f64();
    let readings = (wire.readings.load(Ordering::Relaxed) - r0) as f64;
    let bytes = (wire.bytes.load(Ordering::Relaxed) - b0) as f64;
    let mqtt = (wire.mqtt_bytes.load(Ordering::Relaxed) - m0) as f64;
    let batches = wire.batches.load(Ordering::Relaxed) - n0;
    let queue_files: u64 = std::fs::read_dir(&queue).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    println!(
        "| {codec} | {secs} s | {:.0} readings/s in {batches} batches | {:.2} B/reading payload, {:.2} with MQTT header | RSS {:.1} MiB (max sampled {:.1}, peak VmHWM {:.1}) | CPU {:.1} % of one core | queue on disk {} KiB |",
        readings / elapsed,
        bytes / readings.max(1.0),
        mqtt / readings.max(1.0),
        rss as f64 / 1024.0,
        rss_max as f64 / 1024.0,
        hwm as f64 / 1024.0,
        (cpu1 - cpu0) / elapsed * 100.0,
        queue_files / 1024,
    );
    let _ = child.kill();
    let _ = child.wait();
    watcher.abort();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let secs: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(60);
    let binary = tokio::task::spawn_blocking(build_gateway).await.unwrap();
    let size = std::fs::metadata(&binary).unwrap().len();
    println!("gateway binary (host, edge profile, stripped): {} bytes", size);
    let dir = tempfile::tempdir().unwrap();

    let spec = CountySpec { villages: 4, meters: 196, cows: 0, speakers_per_village: 1, ..CountySpec::demo() };
    let county = County::new(spec);
    county.set_random_outages(false);
    let endpoints = county.serve().await.unwrap();
    let plan = county.plan().clone();
    let mut inventory = inventory_of(&plan);
    let villages: Vec<_> = plan
        .gateways
        .iter()
        .filter(|g| g.id.starts_with("gw-") && g.devices.iter().any(|d| d.model == "vt-sim-water-meter"))
        .collect();
    let mut devices = String::new();
    let mut n = 0;
    for g in &villages {
        let addr = endpoints.iter().find(|(id, _)| *id == g.id).unwrap().1;
        for d in &g.devices {
            devices.push_str(&format!(
                "[[devices]]\nid = \"{}\"\nprofile = \"{}\"\ntcp = \"{addr}\"\nunit = {}\ninterval_ms = 1000\ntimeout_ms = 500\n",
                d.id, d.model, d.unit
            ));
            n += 1;
        }
    }
    for d in inventory.devices.iter_mut() {
        if villages.iter().any(|g| g.id == d.gateway) {
            d.gateway = GATEWAY.into();
        }
    }
    inventory.gateways.push(GatewayInfo {
        id: GATEWAY.into(),
        tenant: "county".into(),
        site: villages[0].site.clone(),
        public_key: {
            let (id, _) = gateway::identity::Identity::load_or_create(Some(dir.path())).unwrap();
            Some(id.public_hex())
        },
    });
    println!("devices polled every second: {n} on {} Modbus TCP endpoints", villages.len());

    let mqtt = ingest::broker::free_local_addr().unwrap();
    let config = IngestConfig::new(dir.path().join("ingest"), BrokerConfig::Embedded { listen: mqtt });
    let running = service::start(config, Inventory::from_file(inventory), Options::default()).await.unwrap();
    println!(
        "| codec | measured | throughput | bytes on the wire | memory | CPU | disk |\n|---|---|---|---|---|---|---|"
    );
    let key: String = running.state.commands.public_key().iter().map(|b| format!("{b:02x}")).collect();
    let login = running.broker_login.clone().unwrap();
    run(&binary, dir.path(), mqtt, &devices, "binary", secs, &key, login.clone()).await;
    run(&binary, dir.path(), mqtt, &devices, "json", secs.min(20), &key, login).await;
    let stored = running.state.store.latest().len();
    println!("series in ingest's store: {stored}");
    running.stop().await;
    county.shutdown();
}
