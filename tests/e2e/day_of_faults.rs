//! A day of faults: 24 simulated hours of a small county, at high speed, through real
//! gateway processes, a real mosquitto and a real ingest process, with random faults
//! (seeded; the seed is printed and `VT_SEED` replays it):
//!
//! - ingest killed with SIGKILL and restarted;
//! - the broker restarted on its own (mosquitto, not ingest's embedded broker: with the
//!   embedded broker a broker restart is an ingest restart, and the test's witness of the
//!   wire, below, would die with it);
//! - a gateway killed with SIGKILL and restarted;
//! - a full disk under ingest: its data directory is a small tmpfs the test mounts, filled
//!   by a ballast file; ingest must refuse and say so, gateways keep buffering, and once the
//!   ballast is gone ingest takes writes again by itself, without a restart (skipped,
//!   saying so, if mount is not permitted);
//! - a slow disk under ingest: every write and fsync of its log waits 300 ms for a while
//!   (the test hook `VT_TEST_DISK_DELAY_FILE` of `frames::fs`); ingest slows down, keeps
//!   acknowledging, and loses nothing;
//! - a gateway's clock stepped back and forward while it runs;
//! - a pump trip injected through the simulator;
//! - one broadcast sent during the day.
//!
//! Time: ingest and every gateway run on one accelerated timeline through the test hook of
//! `daemon::clock` (`VT_TEST_CLOCK_FILE`, one file per process so one gateway's clock can be
//! stepped alone); the simulator runs at the same speed from the same start. Readings are
//! stamped, and rules judge, in simulated time.
//!
//! Accounting: a witness client subscribed to every gateway's telemetry and delivery acks
//! on the broker (a persistent session on a broker with persistence, restarted gracefully,
//! so it misses nothing the broker took) opens every batch as ingest would. At the end
//! every gateway is restarted without devices until ingest has acknowledged everything it
//! published; then every reading of every distinct `(gateway, seq)` must be in the store,
//! once, with its value, and nothing else. The table printed per device is the result.
//!
//! Not simulated: a slow disk. Neither dm-delay (no device-mapper in this kernel) nor
//! cgroup io throttling (cgroup v1 `blkio` does not throttle buffered writeback, v2 `io.max`
//! does not apply to tmpfs) works here without kernel modules; the test says so.

#![allow(clippy::print_stdout)] // the accounting table and the day's story are the output

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use daemon::clock::Timeline;
use gateway::identity::Identity;
use protocol::delivery::DeliveryAck;
use protocol::topic::{Channel, Topic};
use protocol::{Reading, Timestamp, codec};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use simulator::{County, CountySpec, Fault, SpeakerMix};
use testkit::{Peer, eventually, free_port, tool, wait_listening};

use crate::common::now_ms;

const ADMIN: &str = "day-of-faults-admin-token-0123456789";
/// Ingest's key in this test (given to the gateways before ingest first starts).
const INGEST_SEED: [u8; 32] = [0x5a; 32];
const DAY_MS: i64 = 86_400_000;

/// How fast a day goes by.
#[derive(Debug, Clone, Copy)]
struct Pace {
    /// Simulated milliseconds per wall millisecond.
    speed: f64,
    /// Gateways poll every device this often (wall).
    poll: Duration,
}

/// The CI version: 24 simulated hours in 200 s of wall time (speed 432: a poll every half
/// second is one every 3.6 simulated minutes, inside the 5 min of the silence rules).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_of_faults_loses_no_queued_reading_stores_none_twice_and_raises_the_alerts_of_its_faults() {
    day_of_faults(Pace { speed: 432.0, poll: Duration::from_millis(500) }).await;
}

/// The long version: the same day in 20 minutes (speed 72, a poll every 2.4 simulated
/// minutes). `cargo test -p village-tests --test e2e day_of_faults -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "20 minutes of wall time; the CI version runs the same day at speed 432"]
async fn a_slower_day_of_faults_loses_no_queued_reading_stores_none_twice_and_raises_the_alerts_of_its_faults() {
    day_of_faults(Pace { speed: 72.0, poll: Duration::from_millis(2000) }).await;
}

/// A small deterministic random source (the seed is printed, so a failure can be replayed).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

/// A workspace binary next to this test binary (target/<profile>/<name>). `cargo test
/// --workspace` builds it; building it from inside the test would rebuild ingest with
/// another feature set (minutes on two cores) and eat the test's time.
fn binary(package: &str) -> PathBuf {
    // `cargo test --workspace` builds ingest's program (ingest has integration tests), not
    // the gateway's: that one is built here, so a stale one is never run.
    let bin = if package == "gateway" { testkit::built_binary(package) } else { testkit::target_binary(package) };
    assert!(
        bin.exists(),
        "{} is missing: run `cargo test --workspace` or `cargo build -p ingest -p gateway`",
        bin.display()
    );
    bin
}

/// One process's clock file: the shared timeline plus its own step.
struct ClockFile {
    path: PathBuf,
    timeline: Timeline,
}

impl ClockFile {
    fn new(path: PathBuf, timeline: Timeline) -> ClockFile {
        std::fs::write(&path, timeline.to_text()).expect("clock file");
        ClockFile { path, timeline }
    }

    fn step(&mut self, step_ms: i64) {
        self.timeline.step_ms = step_ms;
        // Written whole and renamed, so a reader never sees half a file.
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, self.timeline.to_text()).expect("clock file");
        std::fs::rename(&tmp, &self.path).expect("clock file");
    }
}

/// mosquitto with persistence, restartable on the same port; a restart is graceful
/// (SIGTERM: it saves its sessions and queued messages, as a service manager's restart).
struct Broker {
    peer: Option<Peer>,
    conf: PathBuf,
    port: u16,
}

impl Broker {
    async fn start(dir: &Path) -> Broker {
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n\
                 max_queued_messages 100000\nautosave_interval 1\n",
                dir.display()
            ),
        )
        .expect("mosquitto.conf");
        let mut b = Broker { peer: None, conf, port };
        b.up().await;
        b
    }

    fn down(&mut self) {
        if let Some(mut p) = self.peer.take() {
            p.terminate();
        }
    }

    async fn up(&mut self) {
        let mut peer = Peer::spawn(
            "mosquitto",
            Command::new(tool("mosquitto", "mosquitto")).arg("-c").arg(&self.conf).stderr(testkit::quiet()),
        );
        wait_listening(std::net::SocketAddr::from(([127, 0, 0, 1], self.port)), &mut peer).await;
        self.peer = Some(peer);
    }
}

/// A tmpfs mounted for ingest's data; unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size_mib: u64) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(Tmpfs(at.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` with a ballast file until it is full; returns its path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write as _;
    let path = dir.join("ballast");
    let mut f = std::fs::File::create(&path).expect("ballast");
    let chunk = vec![0xa5u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    // The last partial page too.
    while f.write_all(&chunk[..512]).is_ok() {}
    while f.write_all(&chunk[..1]).is_ok() {}
    let _ = f.flush();
    path
}

/// What the witness saw on the broker.
#[derive(Default)]
struct Wire {
    /// Every distinct batch, by `(gateway, seq)`.
    batches: BTreeMap<(String, u64), Vec<Reading>>,
    /// Seqs published again with other readings (a seq reused: an exactly-once violation).
    reused: Vec<(String, u64)>,
    /// Highest seq ingest acknowledged, per gateway.
    acked: BTreeMap<String, u64>,
    /// Telemetry messages in all, resends included.
    messages: u64,
    /// Messages that did not open (bad MAC or codec).
    unreadable: u64,
    /// When telemetry of each gateway arrived (simulated time), to tell a real silence on
    /// the wire from an alert without cause.
    arrivals: BTreeMap<String, Vec<i64>>,
}

impl Wire {
    fn published(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (g, s) in self.batches.keys() {
            let e = out.entry(g.clone()).or_insert(0);
            *e = (*e).max(*s);
        }
        out
    }
}

fn lock(w: &Mutex<Wire>) -> std::sync::MutexGuard<'_, Wire> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

/// The witness: a persistent session subscribed to telemetry and delivery acks.
fn witness(
    port: u16,
    links: BTreeMap<String, (String, protocol::auth::LinkKey)>,
    wire: Arc<Mutex<Wire>>,
    timeline: Timeline,
) {
    let ingest = ed25519_dalek::SigningKey::from_bytes(&INGEST_SEED).verifying_key();
    let mut opts = MqttOptions::new("day-of-faults-witness", "127.0.0.1", port);
    opts.set_clean_session(false).set_keep_alive(Duration::from_secs(5)).set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    for t in ["vt/+/+/up/telemetry", "vt/+/+/down/delivery"] {
                        let _ = client.try_subscribe(t, QoS::AtLeastOnce);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let parts: Vec<&str> = p.topic.split('/').collect();
                    let (Some(gw), Some(kind)) = (parts.get(2), parts.get(4)) else { continue };
                    let Some((tenant, link)) = links.get(*gw) else { continue };
                    let mut w = lock(&wire);
                    if *kind == "telemetry" {
                        w.messages += 1;
                        w.arrivals.entry(gw.to_string()).or_default().push(timeline.at(now_ms()));
                        let topic = Topic::new(tenant, gw, Channel::Telemetry);
                        let batch = protocol::auth::open_mac(&p.payload, &topic, link)
                            .ok()
                            .and_then(|o| codec::decode(o.body).ok());
                        match batch {
                            Some(b) => {
                                let key = (b.gateway.clone(), b.seq);
                                match w.batches.get(&key) {
                                    Some(prev) if *prev != b.readings => w.reused.push(key),
                                    Some(_) => {}
                                    None => {
                                        w.batches.insert(key, b.readings);
                                    }
                                }
                            }
                            None => w.unreadable += 1,
                        }
                    } else {
                        let topic = Topic::new(tenant, gw, Channel::Delivery);
                        if let Some(ack) = protocol::auth::open_signed(&p.payload, &topic, &ingest)
                            .ok()
                            .and_then(|o| DeliveryAck::from_json(o.body).ok())
                        {
                            let e = w.acked.entry(gw.to_string()).or_insert(0);
                            *e = (*e).max(ack.seq);
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
}

fn inventory(plan: &simulator::Plan, keys: &BTreeMap<String, String>) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let inv = ingest::demo::inventory_of(plan);
    let mut out = String::new();
    for s in &inv.sites {
        out.push_str(&format!(
            "[[sites]]\nid = {}\nname = {}\nkind = {}\ntenant = {}\nlat = {}\nlon = {}\n",
            q(&s.id),
            q(&s.name),
            q(&s.kind),
            q(&s.tenant),
            s.lat,
            s.lon
        ));
        if let Some(v) = &s.village {
            out.push_str(&format!("village = {}\n", q(v)));
        }
        if let Some(d) = &s.district {
            out.push_str(&format!("district = {}\n", q(d)));
        }
        out.push('\n');
    }
    for g in &inv.gateways {
        out.push_str(&format!(
            "[[gateways]]\nid = {}\ntenant = {}\nsite = {}\npublic_key = {}\n\n",
            q(&g.id),
            q(&g.tenant),
            q(&g.site),
            q(&keys[&g.id])
        ));
    }
    for d in &inv.devices {
        out.push_str(&format!(
            "[[devices]]\nid = {}\nkind = {}\nsite = {}\ngateway = {}\nmodel = {}\n",
            q(&d.id),
            q(d.kind.as_str()),
            q(&d.site),
            q(&d.gateway),
            q(&d.model)
        ));
        if let (Some(lat), Some(lon)) = (d.lat, d.lon) {
            out.push_str(&format!("lat = {lat}\nlon = {lon}\n"));
        }
        out.push('\n');
    }
    out
}

/// A gateway's config; `devices` false for the drain at the end (nothing new is polled).
fn gateway_config(
    g: &simulator::GatewayPlan,
    endpoint: std::net::SocketAddr,
    broker: u16,
    queue: &Path,
    command_key: &str,
    pace: Pace,
    devices: bool,
) -> String {
    let mut c = format!(
        "gateway = \"{id}\"\ntenant = \"{tenant}\"\ncommand_key = \"{command_key}\"\n\
         health_interval_secs = {health}\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{broker}\"\ncodec = \"binary\"\nkeep_alive_secs = 5\nreconnect_max_secs = 1\n\
         [publish]\ninterval_ms = 200\nresend_after_ms = 3000\n\
         [queue]\ndir = \"{queue}\"\n",
        id = g.id,
        tenant = g.tenant,
        health = if devices { 10 } else { 3600 },
        queue = queue.display(),
    );
    if devices {
        for d in &g.devices {
            c.push_str(&format!(
                "\n[[devices]]\nid = \"{}\"\nprofile = \"{}\"\nsite = \"{}\"\ntcp = \"{endpoint}\"\nunit = {}\n\
                 interval_ms = {}\ntimeout_ms = 500\nretries = 0\n",
                d.id,
                d.model,
                d.site,
                d.unit,
                pace.poll.as_millis()
            ));
        }
    }
    c
}

fn spawn_ingest(config: &Path, clock: &Path, log: &Path) -> Peer {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
    Peer::spawn(
        "ingest",
        Command::new(binary("ingest"))
            .args(["run", "--config"])
            .arg(config)
            .env(daemon::clock::TEST_CLOCK_FILE, clock)
            // The slow disk: the delay (ms) ingest's log waits before each write and fsync.
            .env(store::fs::TEST_DISK_DELAY_FILE, config.with_file_name(DISK_DELAY))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log),
    )
}

/// The file (beside ingest's config) that holds the slow disk's delay in milliseconds.
const DISK_DELAY: &str = "disk.delay";

fn spawn_gateway(name: &'static str, config: &Path, clock: &Path, log: &Path) -> Peer {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
    Peer::spawn(
        name,
        Command::new(binary("gateway"))
            .args(["run", "--config"])
            .arg(config)
            .env(daemon::clock::TEST_CLOCK_FILE, clock)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log),
    )
}

async fn healthy(base: &str) -> bool {
    reqwest::get(format!("{base}/api/v1/health")).await.is_ok_and(|r| r.status().is_success())
}

async fn call(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method.parse().expect("method"), url)
        .header("Authorization", format!("Token {ADMIN}"))
        .timeout(Duration::from_secs(20));
    if let Some(b) = body {
        req = req.json(&b);
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
        }
        Err(e) => (0, Value::String(e.to_string())),
    }
}

/// One gateway process and what it needs to come back.
struct Gw {
    id: String,
    name: &'static str,
    config: PathBuf,
    drain: PathBuf,
    clock: ClockFile,
    log: PathBuf,
    peer: Option<Peer>,
}

impl Gw {
    fn start(&mut self) {
        self.peer = Some(spawn_gateway(self.name, &self.config, &self.clock.path, &self.log));
    }
}

/// The faults of the day, in the order the seed shuffles them.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    KillIngest,
    RestartBroker,
    KillGateway,
    DiskFull,
    SlowDisk,
    ShiftClock,
    PumpTrip,
    Broadcast,
}

async fn day_of_faults(pace: Pace) {
    testkit::logs();
    let seed = std::env::var("VT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(now_ms() as u64);
    let mut rng = Lcg(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    println!(
        "day of faults: seed {seed} (VT_SEED={seed} replays it), speed {}, files in {}",
        pace.speed,
        dir.path().display()
    );
    let started = Instant::now();
    let _ = (binary("ingest"), binary("gateway"));

    // The timeline: the day ends about ten minutes before now, so nothing is ever in the
    // future for anyone who reads the real clock.
    let day_wall = Duration::from_millis((DAY_MS as f64 / pace.speed) as u64);
    let wall0 = now_ms() + 2_000;
    let sim0 = wall0 - DAY_MS - 10 * 60_000 - (60_000.0 * pace.speed) as i64;
    let timeline = Timeline { wall_anchor_ms: wall0, sim_anchor_ms: sim0, speed: pace.speed, step_ms: 0 };
    let sim_now = move || timeline.at(now_ms());

    // Ingest's data on a small tmpfs (for the full disk), or a plain directory.
    let data = dir.path().join("ingest-data");
    let tmpfs = match Tmpfs::mount(&data, 48) {
        Ok(t) => Some(t),
        Err(e) => {
            println!("day of faults: SKIPPING the full disk: cannot mount a tmpfs ({e}); run as root to include it");
            std::fs::create_dir_all(&data).expect("data dir");
            None
        }
    };
    let key_file = data.join(ingest::command::KEY_FILE);
    std::fs::write(&key_file, INGEST_SEED).expect("ingest key");
    std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("0600");
    let ingest_vk = ed25519_dalek::SigningKey::from_bytes(&INGEST_SEED).verifying_key();
    let command_key: String = ingest_vk.to_bytes().iter().map(|b| format!("{b:02x}")).collect();

    // The county, on the same timeline.
    let spec = CountySpec {
        villages: 3,
        meters: 9,
        cows: 10,
        speakers_per_village: 1,
        // The county's physics is the demo's (fixed), the faults are the seed's.
        seed: 2024,
        speed: pace.speed,
        speaker_mix: SpeakerMix::NONE,
        layout: Default::default(),
    };
    let county = County::with_start(spec, Timestamp(timeline.at(wall0)));
    county.set_random_outages(false);
    county.provision_speakers(ingest_vk.to_bytes()).expect("speakers provisioned");
    let plan = county.plan().clone();

    // Gateway keys, made where each gateway keeps its queue, and enrolled in the inventory.
    let mut keys = BTreeMap::new();
    let mut links = BTreeMap::new();
    for g in &plan.gateways {
        let queue = dir.path().join(format!("{}-queue", g.id));
        let (id, _) = Identity::load_or_create(Some(&queue)).expect("gateway key");
        keys.insert(g.id.clone(), id.public_hex());
        links.insert(g.id.clone(), (g.tenant.clone(), id.link_key(&ingest_vk, &g.tenant, &g.id).expect("link key")));
    }
    std::fs::write(dir.path().join("inventory.toml"), inventory(&plan, &keys)).expect("inventory");

    let mut broker = Broker::start(dir.path()).await;
    let wire = Arc::new(Mutex::new(Wire::default()));
    witness(broker.port, links, wire.clone(), timeline);

    let http = free_port();
    let base = format!("http://127.0.0.1:{http}");
    let ingest_config = dir.path().join("ingest.toml");
    std::fs::write(
        &ingest_config,
        format!(
            "data_dir = \"{}\"\ninventory = \"inventory.toml\"\nhttp = \"127.0.0.1:{http}\"\n\
             [broker]\ntype = \"external\"\nurl = \"mqtt://127.0.0.1:{}\"\n\
             [[tokens]]\ntoken = \"{ADMIN}\"\nrole = \"admin\"\n",
            data.display(),
            broker.port
        ),
    )
    .expect("ingest config");
    let ingest_clock = ClockFile::new(dir.path().join("ingest.clock"), timeline);
    let ingest_log = dir.path().join("ingest.log");
    let mut ingest = spawn_ingest(&ingest_config, &ingest_clock.path, &ingest_log);

    let endpoints = county.serve().await.expect("the county serves Modbus");
    let names: &'static [&'static str] =
        &["gateway-0", "gateway-1", "gateway-2", "gateway-3", "gateway-4", "gateway-5"];
    let mut gws: Vec<Gw> = Vec::new();
    for (i, g) in plan.gateways.iter().enumerate() {
        let endpoint = endpoints.iter().find(|(id, _)| *id == g.id).map(|(_, a)| *a).expect("endpoint");
        let queue = dir.path().join(format!("{}-queue", g.id));
        let config = dir.path().join(format!("{}.toml", g.id));
        let drain = dir.path().join(format!("{}-drain.toml", g.id));
        std::fs::write(&config, gateway_config(g, endpoint, broker.port, &queue, &command_key, pace, true))
            .expect("gateway config");
        std::fs::write(&drain, gateway_config(g, endpoint, broker.port, &queue, &command_key, pace, false))
            .expect("drain config");
        let mut gw = Gw {
            id: g.id.clone(),
            name: names.get(i).copied().unwrap_or("gateway"),
            config,
            drain,
            clock: ClockFile::new(dir.path().join(format!("{}.clock", g.id)), timeline),
            log: dir.path().join(format!("{}.log", g.id)),
            peer: None,
        };
        gw.start();
        gws.push(gw);
    }
    eventually("ingest to be healthy", Duration::from_secs(60), || async { healthy(&base).await.then_some(()) }).await;

    // The faults, shuffled, spread over the day.
    let mut steps = vec![
        Step::KillIngest,
        Step::KillIngest,
        Step::RestartBroker,
        Step::RestartBroker,
        Step::KillGateway,
        Step::DiskFull,
        Step::SlowDisk,
        Step::ShiftClock,
        Step::PumpTrip,
        Step::Broadcast,
    ];
    for i in (1..steps.len()).rev() {
        steps.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let pump = plan
        .devices()
        .find(|d| d.kind == protocol::DeviceKind::PumpStation)
        .map(|d| d.id.clone())
        .expect("a pump station");
    let slot = day_wall / (steps.len() as u32 + 1);
    let mut log: Vec<String> = Vec::new();
    let mut expected_alerts: BTreeSet<String> = BTreeSet::new();
    let mut killed_gateways: BTreeSet<String> = BTreeSet::new();
    let mut stepped_gateway = None;
    let mut disk_full = None;
    let mut broadcast_id = None;
    // When the faults were in force (sim ms) and whom they silenced (None: every gateway).
    let mut windows: Vec<Window> = vec![Window { from: i64::MIN, to: sim_now(), gateway: None, what: "start-up" }];
    let at = |sim: i64| {
        let h = (sim - sim0).rem_euclid(DAY_MS) as f64 / 3_600_000.0;
        format!("{:02}:{:02}", h as i64, ((h.fract()) * 60.0) as i64)
    };
    for (n, step) in steps.iter().enumerate() {
        // Due this long after the day began (wall time).
        let due = slot * (n as u32 + 1) + Duration::from_millis(rng.below(slot.as_millis() as u64 / 3));
        let into_day = Duration::from_millis((now_ms() - wall0).max(0) as u64);
        tokio::time::sleep(due.saturating_sub(into_day)).await;
        let when = at(sim_now());
        let from = sim_now();
        let mut silenced: Option<String> = None;
        match step {
            Step::KillIngest => {
                ingest.kill();
                let down = Duration::from_millis(500 + rng.below(2500));
                tokio::time::sleep(down).await;
                ingest = spawn_ingest(&ingest_config, &ingest_clock.path, &ingest_log);
                log.push(format!("{when} ingest killed (SIGKILL), restarted after {} ms", down.as_millis()));
            }
            Step::RestartBroker => {
                broker.down();
                let down = Duration::from_millis(500 + rng.below(2500));
                tokio::time::sleep(down).await;
                broker.up().await;
                log.push(format!("{when} broker restarted, down {} ms", down.as_millis()));
            }
            Step::KillGateway => {
                let g = rng.below(gws.len() as u64) as usize;
                if let Some(p) = gws[g].peer.as_mut() {
                    p.kill();
                }
                // Long enough for the offline status to hold past the rule's grace.
                let down = Duration::from_millis(3000 + rng.below(2000));
                tokio::time::sleep(down).await;
                gws[g].start();
                silenced = Some(gws[g].id.clone());
                killed_gateways.insert(gws[g].id.clone());
                expected_alerts.insert(format!("gateway-offline/gateway/{}", gws[g].id));
                log.push(format!("{when} {} killed (SIGKILL), restarted after {} ms", gws[g].id, down.as_millis()));
            }
            Step::DiskFull => {
                let Some(_) = &tmpfs else {
                    log.push(format!("{when} full disk SKIPPED (no tmpfs)"));
                    continue;
                };
                disk_full = Some(full_disk(&data, &wire, &ingest_log, &base).await);
                let report = disk_full.as_ref().map(|d: &DiskFull| d.summary()).unwrap_or_default();
                // Once space returns, ingest must take writes again by itself: the store cuts
                // its log back to what was durable (store/src/wal.rs `Wal::recover`).
                assert!(
                    disk_full.as_ref().is_some_and(|d| d.resumed_alone),
                    "ingest did not take writes again after the disk had space: {report}"
                );
                log.push(format!("{when} disk full under ingest: {report}"));
            }
            Step::SlowDisk => {
                // Every write and fsync of ingest's log waits 300 ms for 15 s of wall time
                // (an hour and a half of the day): a worn disk or a saturated shared volume.
                let delay = ingest_config.with_file_name(DISK_DELAY);
                let acked = || lock(&wire).acked.values().sum::<u64>();
                let before = acked();
                std::fs::write(&delay, "300").expect("slow disk on");
                tokio::time::sleep(Duration::from_secs(15)).await;
                let during = acked() - before;
                std::fs::write(&delay, "0").expect("slow disk off");
                log.push(format!(
                    "{when} slow disk under ingest (300 ms per log write and fsync) for 15 s: {during} batches acknowledged meanwhile"
                ));
                assert!(during > 0, "a slow disk slows ingest down; it must not stop it");
            }
            Step::ShiftClock => {
                let g = rng.below(gws.len() as u64) as usize;
                let back = 10 * 60_000;
                gws[g].clock.step(-back);
                tokio::time::sleep(Duration::from_secs(5)).await;
                gws[g].clock.step(0);
                silenced = Some(gws[g].id.clone());
                stepped_gateway = Some(gws[g].id.clone());
                log.push(format!(
                    "{when} {}'s clock stepped back 10 min for 5 s of wall time, then forward again",
                    gws[g].id
                ));
            }
            Step::PumpTrip => {
                county.inject(&pump, Fault::PumpTrip).expect("pump trip");
                tokio::time::sleep(Duration::from_secs(10)).await;
                county.clear(&pump).expect("cleared");
                expected_alerts.insert(format!("pump-trip/device/{pump}"));
                log.push(format!("{when} pump_trip on {pump}, cleared after 10 s of wall time"));
            }
            Step::Broadcast => {
                let expires = ingest::api::time::rfc3339(Timestamp(sim_now() + 2 * 3_600_000));
                let body = json!({
                    "level": "blue", "text": "明天上午停水检修，请提前储水。", "targets": ["all"],
                    "expires_at": expires, "headline": "Water off for repairs tomorrow",
                });
                let created = eventually("the broadcast to be accepted", Duration::from_secs(60), || {
                    let (url, body) = (format!("{base}/api/v1/broadcasts"), body.clone());
                    async move {
                        let (status, v) = call("POST", &url, Some(body)).await;
                        (status == 201).then_some(v)
                    }
                })
                .await;
                broadcast_id = created["id"].as_u64();
                log.push(format!("{when} broadcast {} sent to every speaker", broadcast_id.unwrap_or(0)));
            }
        }
        if matches!(step, Step::KillIngest | Step::DiskFull) {
            // Its outage lasts until it answers again.
            eventually("ingest to be healthy", Duration::from_secs(60), || async {
                healthy(&base).await.then_some(())
            })
            .await;
        }
        let what = match step {
            Step::KillIngest => "ingest killed",
            Step::RestartBroker => "broker restart",
            Step::KillGateway => "gateway killed",
            Step::DiskFull => "disk full",
            Step::SlowDisk => "slow disk",
            Step::ShiftClock => "clock step",
            Step::PumpTrip => "pump trip",
            Step::Broadcast => "broadcast",
        };
        windows.push(Window { from, to: sim_now(), gateway: silenced, what });
        println!("day of faults: {}", log.last().map(String::as_str).unwrap_or(""));
    }
    let day_left = day_wall.saturating_sub(Duration::from_millis((now_ms() - wall0).max(0) as u64));
    tokio::time::sleep(day_left).await;
    let day_end = sim_now();
    println!(
        "day of faults: the day is over at sim {} ({:.0} s of wall time)",
        at(sim_now()),
        started.elapsed().as_secs_f64()
    );

    // Drain: every gateway restarted without devices until ingest acknowledged all it
    // published. SIGTERM first, so what was polled is sealed into the queue.
    for g in &mut gws {
        if let Some(mut p) = g.peer.take() {
            p.terminate();
        }
        g.peer = Some(spawn_gateway(g.name, &g.drain, &g.clock.path, &g.log));
    }
    let mut last_change = (0u64, Instant::now());
    let drained = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let w = lock(&wire);
            if w.messages != last_change.0 {
                last_change = (w.messages, Instant::now());
            }
            let published = w.published();
            let all_acked = plan.gateways.iter().all(|g| {
                published.get(&g.id).copied().unwrap_or(0) > 0
                    && w.acked.get(&g.id).copied().unwrap_or(0) >= published.get(&g.id).copied().unwrap_or(0)
            });
            if all_acked && last_change.1.elapsed() > Duration::from_secs(4) {
                return;
            }
        }
    })
    .await;
    {
        let w = lock(&wire);
        println!("day of faults: published {:?}, acknowledged {:?}", w.published(), w.acked);
    }
    assert!(drained.is_ok(), "the gateways' queues did not drain into ingest within 120 s");
    for g in &mut gws {
        if let Some(mut p) = g.peer.take() {
            p.terminate();
        }
    }

    // Alerts and the broadcast, from ingest's API.
    let (status, alerts) = call("GET", &format!("{base}/api/v1/alerts"), None).await;
    assert_eq!(status, 200, "alerts: {alerts}");
    let fired: Vec<(String, String, i64)> = alerts
        .as_array()
        .or_else(|| alerts["alerts"].as_array())
        .map(|a| {
            a.iter()
                .filter(|x| x["state"] != "pending")
                .map(|x| {
                    (
                        x["fingerprint"].as_str().unwrap_or("").to_string(),
                        x["state"].as_str().unwrap_or("").to_string(),
                        x["fired_at"].as_str().and_then(|t| ingest::api::time::parse(t).ok()).map_or(i64::MAX, |t| t.0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let (status, audit) = call("GET", &format!("{base}/api/v1/broadcasts/audit"), None).await;
    println!("day of faults: audit {status} {}", audit.to_string().chars().take(300).collect::<String>());
    ingest.terminate();
    broker.down();
    county.shutdown();

    // The faults, then the alerts.
    println!("\nday of faults: what happened (seed {seed})");
    for l in &log {
        println!("  {l}");
    }
    println!("\nalerts fired ({}):", fired.len());
    // An alert is explained by a fault when it fired while the fault was in force or within
    // an hour of simulated time after it (ingest judges silence once it is back), and is of
    // the kind that fault causes.
    const SILENCE: [&str; 6] =
        ["station-silent", "meter-silent", "speaker-silent", "gateway-offline", "barn-silent", "collar-silent"];
    const AFTER: i64 = 3_600_000;
    let gateway_of = |fingerprint: &str| -> Option<String> {
        let mut parts = fingerprint.splitn(3, '/');
        let (_, kind, id) = (parts.next()?, parts.next()?, parts.next()?);
        match kind {
            "gateway" => Some(id.to_string()),
            _ => plan.device(id).map(|(g, _)| g.id.clone()).or_else(|| {
                plan.gateways
                    .iter()
                    .find(|g| g.devices.iter().any(|d| d.children.iter().any(|c| c == id)))
                    .map(|g| g.id.clone())
            }),
        }
    };
    let arrivals = lock(&wire).arrivals.clone();
    // Reading times of each gateway's devices (not its own queue readings), sorted.
    let mut readings_of: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for ((g, _), readings) in &lock(&wire).batches {
        readings_of
            .entry(g.clone())
            .or_default()
            .extend(readings.iter().filter(|r| r.device.to_string() != *g).map(|r| r.ts.0));
    }
    for ts in readings_of.values_mut() {
        ts.sort_unstable();
    }
    // A silence alert is also right when the gateway really was silent on the wire (a stall
    // of a process on the loaded test machine: at this speed a wall second is minutes).
    let silent_on_wire = |fingerprint: &str, when: i64| -> bool {
        let Some(g) = gateway_of(fingerprint) else { return false };
        let last = arrivals.get(&g).and_then(|a| a.iter().rev().find(|&&t| t <= when).copied());
        let last_reading = readings_of.get(&g).and_then(|ts| {
            let i = ts.partition_point(|&t| t <= when);
            i.checked_sub(1).map(|i| ts[i])
        });
        last.is_none_or(|t| when - t >= 2 * 60_000) || last_reading.is_none_or(|t| when - t >= 2 * 60_000)
    };
    let explain = |fingerprint: &str, when: i64| -> Option<&'static str> {
        let rule = fingerprint.split('/').next().unwrap_or("");
        if when > day_end {
            return Some("the drain after the day (gateways without devices)");
        }
        windows
            .iter()
            .filter(|w| (w.from..=w.to.saturating_add(AFTER)).contains(&when))
            .find_map(|w| {
                let ours = w.gateway.is_none() || w.gateway == gateway_of(fingerprint);
                let kind = match w.what {
                    "pump trip" => rule.starts_with("pump-") || rule == "tank-time-to-empty",
                    "broadcast" => false,
                    _ => SILENCE.contains(&rule),
                };
                (ours && kind).then_some(w.what)
            })
            .or_else(|| {
                (SILENCE.contains(&rule) && silent_on_wire(fingerprint, when))
                    .then_some("its gateway sent nothing, or no reading of its devices, for 2+ min before (a stall)")
            })
    };
    // A silence alert no fault explains is a false alarm and fails the test; another
    // rule's alert no fault explains is printed (the county's own physics on a small
    // district, or a rule's reaction to the late backlog) and counted in the report.
    let (mut unexplained, mut other) = (Vec::new(), Vec::new());
    for (f, state, fired_at) in &fired {
        let why = explain(f, *fired_at);
        let silence = SILENCE.iter().any(|r| f.starts_with(&format!("{r}/")));
        let note = match (why, silence) {
            (Some(w), _) => w,
            (None, true) => "UNEXPLAINED silence alert",
            (None, false) => "not caused by an injected fault (printed, not failed)",
        };
        println!("  {f:<52} {state:<13} {:<6} {note}", at(*fired_at));
        match (why, silence) {
            (None, true) => unexplained.push(f.clone()),
            (None, false) => other.push(f.clone()),
            _ => {}
        }
    }
    println!("alerts not caused by an injected fault: {other:?}");

    // The store, opened by the test once ingest is gone.
    let (store, _) = store::Store::open(store::StoreConfig::new(data.join("store"))).expect("the store opens");
    let wire = lock(&wire);
    // (device, metric, ts) -> every (gateway, seq, value) that carried it.
    type Sources = Vec<(String, u64, f64)>;
    let mut produced: BTreeMap<(String, String, i64), Sources> = BTreeMap::new();
    for ((g, seq), readings) in &wire.batches {
        for r in readings {
            produced.entry((r.device.to_string(), r.metric.name().to_string(), r.ts.0)).or_default().push((
                g.clone(),
                *seq,
                r.value,
            ));
        }
    }
    #[derive(Default)]
    struct Row {
        produced: u64,
        stored: u64,
        duplicates: u64,
        missing: u64,
        extra: u64,
    }
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    let mut series: BTreeSet<(String, String)> = BTreeSet::new();
    for (device, metric, _) in produced.keys() {
        series.insert((device.clone(), metric.clone()));
    }
    let mut stored_points: BTreeMap<(String, String), BTreeMap<i64, f64>> = BTreeMap::new();
    for (device, metric) in &series {
        let points = store.range(device, metric, Timestamp(0), Timestamp(i64::MAX), 10_000_000).expect("range");
        stored_points.insert((device.clone(), metric.clone()), points.iter().map(|p| (p.ts.0, p.value)).collect());
    }
    let same = |a: f64, b: f64| a == b || (a.is_nan() && b.is_nan());
    for ((device, metric, ts), sources) in &produced {
        let row = rows.entry(device.clone()).or_default();
        row.produced += 1;
        let distinct: BTreeSet<(&str, u64)> = sources.iter().map(|(g, s, _)| (g.as_str(), *s)).collect();
        if distinct.len() > 1 {
            row.duplicates += distinct.len() as u64 - 1;
        }
        match stored_points.get(&(device.clone(), metric.clone())).and_then(|p| p.get(ts)) {
            Some(v) if sources.iter().any(|(_, _, want)| same(*v, *want)) => row.stored += 1,
            _ => row.missing += 1,
        }
    }
    for ((device, metric), points) in &stored_points {
        for ts in points.keys() {
            if !produced.contains_key(&(device.clone(), metric.clone(), *ts)) {
                rows.entry(device.clone()).or_default().extra += 1;
            }
        }
    }
    println!(
        "\n{:<28} {:>9} {:>9} {:>11} {:>8} {:>6}",
        "device", "produced", "stored", "duplicates", "missing", "extra"
    );
    let mut total = Row::default();
    for (device, r) in &rows {
        println!("{device:<28} {:>9} {:>9} {:>11} {:>8} {:>6}", r.produced, r.stored, r.duplicates, r.missing, r.extra);
        total.produced += r.produced;
        total.stored += r.stored;
        total.duplicates += r.duplicates;
        total.missing += r.missing;
        total.extra += r.extra;
    }
    println!(
        "{:<28} {:>9} {:>9} {:>11} {:>8} {:>6}",
        "TOTAL", total.produced, total.stored, total.duplicates, total.missing, total.extra
    );
    println!(
        "batches: {} distinct (gateway, seq), {} messages on the wire (resends included), {} unreadable, {} seqs reused",
        wire.batches.len(),
        wire.messages,
        wire.unreadable,
        wire.reused.len()
    );
    for g in &plan.gateways {
        let published = wire.published().get(&g.id).copied().unwrap_or(0);
        println!("  {:<16} published up to seq {published:>5}, stored up to {:?}", g.id, store.gateway_seq(&g.id));
    }
    println!("wall time {:.0} s", started.elapsed().as_secs_f64());

    // The audit chain, read from the file itself.
    let audit_path = data.join(ingest::broadcast::audit::FILE);
    let verified = ingest::broadcast::audit::verify(&audit_path);
    println!("broadcast audit log: {verified:?}");

    // What must hold.
    assert!(wire.reused.is_empty(), "seqs published twice with different readings: {:?}", wire.reused);
    assert_eq!(wire.unreadable, 0, "batches on the wire that do not open");
    assert!(total.produced > 1000, "the day produced readings: {}", total.produced);
    assert_eq!(total.missing, 0, "readings queued by a gateway and not stored (table above)");
    assert_eq!(total.duplicates, 0, "readings in more than one batch (table above)");
    assert_eq!(total.extra, 0, "points in the store that no gateway sent (table above)");
    for g in &plan.gateways {
        assert_eq!(store.gateway_seq(&g.id), wire.published().get(&g.id).copied(), "{}: stored seq", g.id);
    }
    let v = verified.expect("the broadcast audit chain verifies");
    assert!(broadcast_id.is_some() && v.lines >= 1, "the broadcast is in the audit log: {v:?}");
    assert_eq!(status, 200, "GET /api/v1/broadcasts/audit: {audit}");
    assert_eq!(audit["verified"].as_bool(), Some(true), "{audit}");
    let fingerprints: BTreeSet<&str> = fired.iter().map(|(f, _, _)| f.as_str()).collect();
    for want in &expected_alerts {
        assert!(fingerprints.contains(want.as_str()), "the fault's alert {want} did not fire; fired: {fingerprints:?}");
    }
    assert!(unexplained.is_empty(), "alerts no fault of the day explains: {unexplained:?}");
    if let Some(d) = &disk_full {
        assert!(d.refused_and_said_so, "ingest did not say the disk was full: {}", d.summary());
        assert!(d.gateways_buffered, "the gateways did not keep publishing while ingest refused: {}", d.summary());
    }
    println!("gateways killed: {killed_gateways:?}; clock stepped: {stepped_gateway:?}");
    drop(tmpfs);
}

/// A fault in force from `from` to `to` (sim ms), and whom it silenced.
struct Window {
    from: i64,
    to: i64,
    /// The gateway it silenced; `None`: every gateway (ingest or broker down).
    gateway: Option<String>,
    what: &'static str,
}

/// What the full disk showed.
struct DiskFull {
    /// The first line of ingest's log about it.
    said: String,
    /// Ingest's log names the failed append (ENOSPC).
    refused_and_said_so: bool,
    /// Gateways kept publishing (the witness saw new seqs) while nothing was acknowledged.
    gateways_buffered: bool,
    /// Ingest took writes again after the ballast was deleted, without a restart.
    resumed_alone: bool,
    /// New batches published and acknowledgements while the disk was full.
    published_meanwhile: u64,
    acked_meanwhile: u64,
}

impl DiskFull {
    fn summary(&self) -> String {
        format!(
            "ingest refused and logged it: {} ({}); gateways kept publishing ({} new batches, {} acknowledged meanwhile): {}; \
             resumed after the ballast was deleted without a restart: {}",
            self.refused_and_said_so,
            self.said,
            self.published_meanwhile,
            self.acked_meanwhile,
            self.gateways_buffered,
            self.resumed_alone
        )
    }
}

async fn full_disk(data: &Path, wire: &Arc<Mutex<Wire>>, log: &Path, base: &str) -> DiskFull {
    let log_before = std::fs::metadata(log).map(|m| m.len()).unwrap_or(0);
    let ballast = tokio::task::spawn_blocking({
        let data = data.to_path_buf();
        move || fill(&data)
    })
    .await
    .expect("ballast");
    // Let ingest's in-flight group fail and the gateways publish into the full disk.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (pub0, ack0) = {
        let w = lock(wire);
        (w.batches.len() as u64, w.acked.values().sum::<u64>())
    };
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (pub1, ack1) = {
        let w = lock(wire);
        (w.batches.len() as u64, w.acked.values().sum::<u64>())
    };
    let text = std::fs::read(log).unwrap_or_default();
    let new = String::from_utf8_lossy(&text[(log_before as usize).min(text.len())..]).to_string();
    let said = new.lines().find(|l| l.contains("os error 28")).unwrap_or("").chars().take(400).collect::<String>();
    let refused = !said.is_empty();
    let _ = healthy(base).await;
    std::fs::remove_file(&ballast).expect("ballast removed");
    // Does ingest take writes again by itself?
    let resumed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if lock(wire).acked.values().sum::<u64>() > ack1 {
                return;
            }
        }
    })
    .await
    .is_ok();
    DiskFull {
        said,
        refused_and_said_so: refused,
        gateways_buffered: pub1 > pub0 && ack1 == ack0,
        resumed_alone: resumed,
        published_meanwhile: pub1 - pub0,
        acked_meanwhile: ack1 - ack0,
    }
}
