//! `pipeline`: the whole path on this machine. Gateways (one MQTT client each) publish
//! batches of 50 readings to ingest's embedded broker as fast as QoS 1 lets them; ingest
//! decodes, validates, de-duplicates and stores them (fsync per group). Measured over a
//! window after a warm-up: readings stored per second (ingest's own counter) and the CPU
//! that ingest and the publishers used.
//!
//! Authentication is on, as in the field: each publisher has its own gateway key, enrolled
//! in the inventory, and seals every batch with its link key (`protocol::auth`), which
//! ingest verifies before it decodes. The publishers seal before the warm-up, so the
//! window measures ingest, not the bench.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gateway::identity::Identity;
use protocol::auth;
use protocol::codec::{self, Codec};
use protocol::topic::{Channel, Topic};
use protocol::{Batch, Metric, Reading, Timestamp};
use rumqttc::{AsyncClient, MqttOptions, QoS};

use crate::servers::{Server, TOKEN, cpu_seconds};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Gateways, each its own MQTT connection.
    #[arg(long, default_value_t = 20)]
    gateways: usize,
    /// Devices per gateway, each with 5 metrics in every batch (10: 50 readings a batch).
    #[arg(long, default_value_t = 10)]
    devices: usize,
    /// Readings prepared in all (the run ends when they are stored or the window is over).
    #[arg(long, default_value_t = 20_000_000)]
    readings: u64,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Seconds of warm-up.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// The store's fsync policy: always or never.
    #[arg(long, default_value = "always")]
    fsync: String,
    /// MQTT codec of the batches: binary or json.
    #[arg(long, default_value = "binary")]
    codec: String,
    /// Working directory.
    #[arg(long, default_value = "/tmp/vt-bench")]
    work: std::path::PathBuf,
}

const METRICS: [(&str, f64); 5] =
    [("flow", 1.25), ("volume_total", 1234.5), ("pressure", 0.31), ("valve_open", 1.0), ("battery_voltage", 3.6)];

fn inventory(gateways: usize, devices: usize) -> String {
    let mut s = String::from(
        "[[sites]]\nid = \"s\"\nname = \"S\"\nkind = \"village\"\ntenant = \"bench\"\nlat = 0.0\nlon = 0.0\n",
    );
    for g in 0..gateways {
        s.push_str(&format!(
            "[[gateways]]\nid = \"gw-{g}\"\ntenant = \"bench\"\nsite = \"s\"\npublic_key = \"{}\"\n",
            identity(g).public_hex()
        ));
        for d in 0..devices {
            s.push_str(&format!(
                "[[devices]]\nid = \"m-{g}-{d}\"\nkind = \"water_meter\"\nsite = \"s\"\ngateway = \"gw-{g}\"\n"
            ));
        }
    }
    s
}

/// Publisher `g`'s gateway key (fixed, so a run is repeatable).
fn identity(g: usize) -> Identity {
    let mut seed = [0x5au8; 32];
    seed[..8].copy_from_slice(&(g as u64).to_le_bytes());
    Identity::from_seed(seed)
}

/// Ingest's public key, as gateways get it.
async fn ingest_key(base: &str) -> anyhow::Result<ed25519_dalek::VerifyingKey> {
    let v: serde_json::Value = reqwest::get(format!("{base}/api/v1/keys/commands")).await?.json().await?;
    let hex = v["public_key"].as_str().unwrap_or_default();
    let mut key = [0u8; 32];
    anyhow::ensure!(hex.len() == 64 && hex.is_ascii(), "ingest's public key: {v}");
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?;
    }
    ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|_| anyhow::anyhow!("ingest's public key is not a valid key"))
}

fn batch(g: usize, devices: usize, seq: u64, base: i64) -> Batch {
    let ts = Timestamp(base + seq as i64 * 10);
    let mut readings = Vec::with_capacity(devices * METRICS.len());
    for d in 0..devices {
        let device = protocol::DeviceId::from(format!("m-{g}-{d}"));
        for (m, v) in METRICS {
            readings.push(Reading::new(device.clone(), Metric::new(m), ts, v + (seq % 100) as f64 * 0.01));
        }
    }
    Batch { gateway: format!("gw-{g}"), seq, readings }
}

async fn stored(base: &str) -> u64 {
    let Ok(resp) = reqwest::get(format!("{base}/metrics")).await else { return 0 };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("ingest_readings_stored_total ").and_then(|v| v.trim().parse::<f64>().ok()))
        .unwrap_or(0.0) as u64
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let codec = match args.codec.as_str() {
        "binary" => Codec::Binary,
        "json" => Codec::Json,
        other => anyhow::bail!("codec {other}: binary or json"),
    };
    let dir = args.work.join("pipeline");
    let _ = std::fs::remove_dir_all(&dir);
    let extra = format!("[store]\nfsync = \"{}\"\n", args.fsync);
    let server = Server::start_ingest(&dir, inventory(args.gateways, args.devices), extra).await?;
    let base = server.base();
    let per_batch = (args.devices * METRICS.len()) as u64;
    let per_gateway = args.readings / per_batch / args.gateways as u64;
    println!("preparing {} batches of {per_batch} readings ({:?})...", per_gateway * args.gateways as u64, codec);
    let start_ts = crate::dataset::START_MS.max(gateway_now() - 86_400_000);
    let ingest = ingest_key(&base).await?;
    let mut links = Vec::with_capacity(args.gateways);
    for g in 0..args.gateways {
        let link = identity(g).link_key(&ingest, "bench", &format!("gw-{g}")).map_err(|e| anyhow::anyhow!("{e}"))?;
        links.push(link);
    }
    let payloads: Vec<Vec<bytes::Bytes>> = (0..args.gateways)
        .map(|g| {
            let gw = format!("gw-{g}");
            let topic = Topic::new("bench", &gw, Channel::Telemetry);
            (1..=per_gateway)
                .map(|seq| {
                    let body = codec::encode(&batch(g, args.devices, seq, start_ts), codec);
                    bytes::Bytes::from(auth::seal_mac(&topic, &links[g], seq, &body))
                })
                .collect()
        })
        .collect();
    println!("payload: {} bytes a batch (sealed: body + {} bytes)", payloads[0][0].len(), auth::MAX_OVERHEAD);

    let published = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (g, batches) in payloads.into_iter().enumerate() {
        let mut opts = MqttOptions::new(format!("gw-{g}"), "127.0.0.1", server.mqtt);
        opts.set_keep_alive(Duration::from_secs(30)).set_inflight(200).set_request_channel_capacity(400);
        opts.set_credentials(format!("gw-{g}"), links[g].broker_password());
        let (client, mut eventloop) = AsyncClient::new(opts, 400);
        tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
        let published = published.clone();
        let topic = format!("vt/bench/gw-{g}/up/telemetry");
        tasks.push(tokio::spawn(async move {
            for p in batches {
                if client.publish_bytes(topic.clone(), QoS::AtLeastOnce, false, p).await.is_err() {
                    return;
                }
                published.fetch_add(per_batch, Ordering::Relaxed);
            }
        }));
    }
    let pid = server.pid().unwrap_or(0);
    let me = std::process::id();
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let (c0, t0, cpu0, me0) = (stored(&base).await, Instant::now(), cpu_seconds(pid), cpu_seconds(me));
    let total = per_gateway * per_batch * args.gateways as u64;
    let mut last = c0;
    for _ in 0..args.seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = stored(&base).await;
        println!("  stored {now} ({} /s), published {}", now - last, published.load(Ordering::Relaxed));
        last = now;
        if now >= total {
            break;
        }
    }
    let (c1, secs, cpu1, me1) = (stored(&base).await, t0.elapsed().as_secs_f64(), cpu_seconds(pid), cpu_seconds(me));
    for t in tasks {
        t.abort();
    }
    let rate = (c1 - c0) as f64 / secs;
    println!(
        "\n| gateways | readings a batch | codec | fsync | readings/s stored | ingest CPU (cores) | readings per ingest CPU-second | publishers' CPU (cores) |\n|---|---|---|---|---|---|---|---|\n| {} | {per_batch} | {:?} | {} | {:.0} | {:.2} | {:.0} | {:.2} |",
        args.gateways,
        codec,
        args.fsync,
        rate,
        (cpu1 - cpu0) / secs,
        (c1 - c0) as f64 / (cpu1 - cpu0).max(1e-9),
        (me1 - me0) / secs
    );
    let _ = TOKEN;
    Ok(())
}

fn gateway_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
