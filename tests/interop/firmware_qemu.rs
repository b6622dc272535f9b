//! The device firmware as bootable Cortex-M4 images (`firmware/images`) under Debian's
//! `qemu-system-arm` (mps2-an386): the real gateway binary polls them over Modbus RTU on
//! QEMU's UARTs (pseudo-terminals), the meter's volume reaches ingest, and a red broadcast
//! approved by a second operator is verified, played and reported `played` by the
//! emulated speaker itself. The image refuses a forged and a replayed command written at
//! its maintenance port (UART1) by someone who skipped the gateway, before and after a
//! reset in the middle of a broadcast, which it resumes.
//!
//! Skipped, saying so, only where `qemu-system-arm` is missing (`.ci/setup` installs it);
//! a missing Rust target or gateway fails as any other missing peer does.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use firmware::nvm::Provision;
use gateway::command::mailbox_ops;
use gateway::config::{BusConfig, Parity};
use gateway::modbus::plan::Read;
use gateway::modbus::value::Table;
use gateway::modbus::{Attempts, Endpoint, Link};
use ingest::auth::{Role, TokenConfig};
use ingest::config::{BrokerConfig, IngestConfig};
use ingest::inventory::{Device, GatewayInfo, Inventory, InventoryFile, Site};
use ingest::service::{self, Options, Running};
use protocol::command::{Action, Content, Level, Playback};
use protocol::speaker::Reason;
use protocol::{DeviceKind, Timestamp};
use serde_json::{Value, json};
use testkit::{Peer, eventually, quiet, root, run, tool};

use crate::common::{Mosquitto, gateway_binary, library};

const TARGET: &str = "thumbv7em-none-eabihf";
const GATEWAY: &str = "gw-qemu";
const SPEAKER: &str = "qemu-speaker-1";
const METER: &str = "qemu-meter-1";
/// Unit ids from the provisioning pages (not the images' default 1, to show the page is read).
const SPEAKER_UNIT: u8 = 3;
const METER_UNIT: u8 = 5;
/// Where memory.x puts the provisioning page.
const PROVISION_ADDR: &str = "0x3F000";
const ADMIN: &str = "admin-token-qemu-0123456789";
const OPERATOR: &str = "operator-token-qemu-0123456789";

/// `qemu-system-arm`, or `None` after saying why the test is skipped.
fn qemu_system_arm() -> Option<PathBuf> {
    let found = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| Path::new(d).join("qemu-system-arm"))
        .find(|p| p.is_file());
    if found.is_none() {
        eprintln!(
            "SKIPPED: qemu-system-arm is missing, so the firmware images cannot boot; \
             run .ci/setup (it installs the Debian package qemu-system-arm)"
        );
    }
    found
}

/// Builds the images once per test run (release, their own workspace and target
/// directory); returns the directory with the ELF files.
fn images() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = root().join("firmware/images");
            let target_dir = dir.join("target");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            run(Command::new(cargo)
                .current_dir(&dir)
                .args(["build", "-q", "--release", "--bins", "--target", TARGET, "--target-dir"])
                .arg(&target_dir));
            target_dir.join(TARGET).join("release")
        })
        .clone()
}

/// One image running under QEMU: its UARTs on pseudo-terminals, its monitor on a socket.
struct Qemu {
    _peer: Peer,
    /// UART0: the RS-485 bus to the gateway.
    bus: PathBuf,
    /// UART1: the maintenance port.
    maintenance: PathBuf,
    monitor: PathBuf,
}

impl Qemu {
    /// Boots `elf` with `provision` as its provisioning page; `extra` are further QEMU args.
    async fn boot(qemu: &Path, dir: &Path, name: &str, elf: &Path, provision: &[u8], extra: &[&str]) -> Qemu {
        let page = dir.join(format!("{name}.provision"));
        std::fs::write(&page, provision).unwrap();
        let monitor = dir.join(format!("{name}.monitor"));
        let mut cmd = Command::new(qemu);
        cmd.args(["-M", "mps2-an386", "-nodefaults", "-display", "none"])
            .args(["-semihosting-config", "enable=on,target=native"])
            .arg("-monitor")
            .arg(format!("unix:{},server=on,wait=off", monitor.display()))
            .arg("-kernel")
            .arg(elf)
            .arg("-device")
            .arg(format!("loader,file={},addr={PROVISION_ADDR},force-raw=on", page.display()))
            .args(["-chardev", "pty,id=bus", "-serial", "chardev:bus"])
            .args(["-chardev", "pty,id=maint", "-serial", "chardev:maint"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(quiet());
        let mut peer = Peer::spawn("qemu-system-arm", &mut cmd);
        // QEMU names each pty on stdout: "char device redirected to /dev/pts/N (label bus)".
        let stdout = peer.child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("char device redirected to ")
                    && let Some((pty, label)) = rest.split_once(" (label ")
                {
                    let _ = tx.send((label.trim_end_matches(')').to_string(), PathBuf::from(pty)));
                }
            }
        });
        let (mut bus, mut maintenance) = (None, None);
        while bus.is_none() || maintenance.is_none() {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok((label, pty)) if label == "bus" => bus = Some(pty),
                Ok((label, pty)) if label == "maint" => maintenance = Some(pty),
                Ok(_) => {}
                Err(_) => {
                    peer.assert_running();
                    panic!("qemu-system-arm named no pseudo-terminals for {name}");
                }
            }
        }
        for _ in 0..100 {
            if monitor.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Qemu { _peer: peer, bus: bus.unwrap(), maintenance: maintenance.unwrap(), monitor }
    }

    /// Resets the board as its reset pin (or a brown-out detector) would: QEMU's
    /// `system_reset`; RAM outside the image, the battery-backed part, keeps its contents.
    fn reset(&self) {
        let mut s = std::os::unix::net::UnixStream::connect(&self.monitor).expect("the QEMU monitor");
        s.write_all(b"system_reset\n").unwrap();
        s.flush().unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }

    /// A Modbus RTU link on the maintenance port, as a technician's laptop (or someone
    /// with a screwdriver) has.
    fn maintenance_link(&self) -> Link {
        Link::new(Endpoint::Rtu(BusConfig {
            name: "maintenance".into(),
            port: self.maintenance.clone(),
            baud: 9600,
            parity: Parity::None,
            data_bits: 8,
            stop_bits: 1,
            turnaround: Duration::ZERO,
        }))
    }
}

fn attempts() -> Attempts {
    Attempts { timeout: Duration::from_millis(1500), retries: 2, backoff: Duration::from_millis(100) }
}

/// The board's diagnostic registers (firmware/images/src/diag.rs), input 900..=911.
#[derive(Debug, Clone, Copy)]
struct Diag {
    boots: u16,
    cause: u16,
    stack_used: u16,
    stack_size: u16,
    heap_peak: u16,
    heap_size: u16,
    commit_cycles: u32,
    envelope_bytes: u16,
    restored: bool,
}

async fn diag(link: &mut Link, unit: u8) -> Diag {
    let r =
        link.read(unit, Read { table: Table::Input, start: 900, count: 12 }, attempts()).await.expect("diagnostics");
    Diag {
        boots: r[0],
        cause: r[1],
        stack_used: r[2],
        stack_size: r[3],
        heap_peak: r[4],
        heap_size: r[5],
        commit_cycles: (u32::from(r[6]) << 16) | u32::from(r[7]),
        envelope_bytes: r[8],
        restored: r[9] == 1,
    }
}

/// The speaker's verdict on the last envelope in its mailbox: (result, reason, command id).
async fn verdict(link: &mut Link, unit: u8) -> (u16, u16, u64) {
    let r = link.read(unit, Read { table: Table::Input, start: 100, count: 7 }, attempts()).await.expect("the verdict");
    (r[1], r[2], protocol::modbus::to_u64([r[3], r[4], r[5], r[6]], protocol::speaker::ORDER))
}

/// The last envelope written into the speaker's mailbox, read back from its data
/// registers (they keep what was written; only the length register reads 0).
async fn envelope_in_mailbox(link: &mut Link, unit: u8) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut at = 1001u16;
    let mut total = usize::MAX;
    while bytes.len() < total {
        let words = link.read(unit, Read { table: Table::Holding, start: at, count: 100 }, attempts()).await.unwrap();
        bytes.extend(words.iter().flat_map(|w| w.to_be_bytes()));
        at += 100;
        if total == usize::MAX {
            assert_eq!(bytes[0], protocol::command::MAGIC, "a signed envelope in the mailbox");
            // 0xC5, the body length as a LEB128 varint, the body, 64 bytes of signature.
            let (mut len, mut shift, mut i) = (0usize, 0, 1);
            while bytes[i] & 0x80 != 0 {
                len |= usize::from(bytes[i] & 0x7F) << shift;
                shift += 7;
                i += 1;
            }
            len |= usize::from(bytes[i]) << shift;
            total = i + 1 + len + 64;
        }
    }
    bytes.truncate(total);
    bytes
}

/// Writes `envelope` into the speaker's mailbox at the maintenance port, as the gateway
/// would on the bus: data, then the length (the commit).
async fn write_mailbox(link: &mut Link, unit: u8, envelope: &[u8]) {
    let profile = library().get("vt-sim-speaker").expect("the speaker profile");
    let mailbox = profile.mailbox.expect("the speaker has a mailbox");
    link.run_job(unit, &mailbox_ops(&mailbox, envelope).unwrap(), attempts()).await.expect("the mailbox write");
}

/// The speaker's own signing key seed, written into its provisioning page (a real terminal
/// makes it from its hardware random generator at first boot).
const SPEAKER_SEED: [u8; 32] = [0x5E; 32];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn inventory(key: Option<String>) -> Inventory {
    let speaker_key = hex(&SigningKey::from_bytes(&SPEAKER_SEED).verifying_key().to_bytes());
    let device = |id: &str, kind: DeviceKind, model: &str, public_key: Option<String>| Device {
        id: id.into(),
        kind,
        site: "qemu-village".into(),
        gateway: GATEWAY.into(),
        model: model.into(),
        lat: None,
        lon: None,
        public_key,
    };
    Inventory::from_file(InventoryFile {
        sites: vec![Site {
            id: "qemu-village".into(),
            name: "Qemu village".into(),
            kind: "village".into(),
            tenant: "county".into(),
            lat: 34.7,
            lon: 113.6,
            village: Some("qemu-village".into()),
            district: None,
            township: None,
        }],
        gateways: vec![GatewayInfo {
            id: GATEWAY.into(),
            tenant: "county".into(),
            site: "qemu-village".into(),
            public_key: key,
        }],
        devices: vec![
            device(SPEAKER, DeviceKind::Speaker, "vt-sim-speaker", Some(speaker_key)),
            device(METER, DeviceKind::WaterMeter, "vt-sim-water-meter", None),
        ],
    })
}

/// Ingest on `mqtt_port` with an admin and a second operator, broadcasts retried fast.
async fn ingest(dir: &Path, mqtt_port: u16, inventory: Inventory) -> Running {
    let mut config = IngestConfig::new(
        dir.to_path_buf(),
        BrokerConfig::External { host: "127.0.0.1".into(), port: mqtt_port, credentials: None },
    );
    config.tokens = vec![
        TokenConfig { token: ADMIN.into(), role: Role::Admin, tenants: vec![], name: "admin".into() },
        TokenConfig { token: OPERATOR.into(), role: Role::Operator, tenants: vec![], name: "operator-2".into() },
    ];
    let mut broadcast = ingest::broadcast::config::BroadcastConfig::default();
    broadcast.dispatch.ack_timeout = Duration::from_secs(5);
    broadcast.dispatch.backoff_initial = Duration::from_millis(500);
    broadcast.dispatch.backoff_max = Duration::from_secs(3);
    service::start(config, inventory, Options { broadcast: Some(broadcast), ..Options::default() })
        .await
        .expect("ingest starts")
}

async fn call(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method.parse().unwrap(), url);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Token {t}"));
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// A red broadcast to the speaker, created by the admin and approved by the second
/// operator; returns its id.
async fn red_broadcast(base: &str, text: &str) -> u64 {
    let expires = ingest::time::rfc3339(Timestamp(daemon::now().0 + 600_000));
    let body = json!({"level": "red", "text": text, "targets": [SPEAKER], "expires_at": expires, "repeat": 1});
    let (status, v) = call("POST", &format!("{base}/api/v1/broadcasts"), Some(ADMIN), Some(body)).await;
    assert_eq!(status, 201, "create: {v}");
    assert_eq!(v["state"], "pending_approval", "red waits for a second operator: {v}");
    let id = v["id"].as_u64().expect("id");
    let approve = format!("{base}/api/v1/broadcasts/{id}/approve");
    let (status, v) = call("POST", &approve, Some(ADMIN), None).await;
    assert_eq!(status, 403, "the creator cannot approve: {v}");
    let (status, v) = call("POST", &approve, Some(OPERATOR), None).await;
    assert_eq!((status, v["approved_by"].as_str()), (200, Some("operator-2")), "{v}");
    id
}

/// The speaker's delivery state in broadcast `id`.
async fn delivery(base: &str, id: u64) -> String {
    let (_, v) = call("GET", &format!("{base}/api/v1/broadcasts/{id}"), Some(ADMIN), None).await;
    v["deliveries"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["speaker"] == SPEAKER))
        .and_then(|d| d["state"].as_str())
        .unwrap_or("none")
        .to_string()
}

async fn wait_delivery(base: &str, id: u64, state: &str, secs: u64) {
    eventually(&format!("broadcast {id} {state} on the emulated speaker"), Duration::from_secs(secs), || async {
        (delivery(base, id).await == state).then_some(())
    })
    .await;
}

fn forged_play(now: Timestamp) -> Vec<u8> {
    protocol::command::Command {
        id: u64::try_from(now.0).unwrap() * 1000,
        tenant: "county".into(),
        gateway: GATEWAY.into(),
        device: SPEAKER.into(),
        issued_at: now,
        expires_at: Timestamp(now.0 + 600_000),
        action: Action::Play(Playback {
            broadcast: 666,
            level: Level::Red,
            content: Content::Tts { text: "假警报：导弹来袭！".into() },
            repeat: 1,
            volume: Some(100),
            start_at: None,
        }),
    }
    .sign(&SigningKey::from_bytes(&[66u8; 32]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulated_speaker_and_meter_serve_the_real_gateway_and_the_speaker_refuses_forgeries_across_a_reset() {
    let Some(qemu) = qemu_system_arm() else { return };
    let elves = tokio::task::spawn_blocking(images).await.unwrap();
    let gateway = tokio::task::spawn_blocking(gateway_binary).await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    let mosquitto = Mosquitto::plain(dir.path()).await;
    let queue = dir.path().join("queue");
    let key = crate::keys::enrol_in(&queue);
    let running = ingest(&dir.path().join("ingest"), mosquitto.port, inventory(key)).await;
    let base = format!("http://{}", running.http);
    let command_key = running.state.commands.public_key();

    // The installer's provisioning pages: ingest's command key, the ids and its own
    // signing key for the speaker (its public half is enrolled in the inventory above),
    // a unit id for each.
    let speaker_page = Provision {
        unit: SPEAKER_UNIT,
        issuer_key: Some(command_key),
        device_key: Some(SPEAKER_SEED),
        gateway: GATEWAY,
        device: SPEAKER,
    }
    .encode()
    .unwrap();
    let meter_page =
        Provision { unit: METER_UNIT, issuer_key: None, device_key: None, gateway: GATEWAY, device: METER }
            .encode()
            .unwrap();
    let speaker = Qemu::boot(&qemu, dir.path(), "speaker", &elves.join("speaker"), &speaker_page, &[]).await;
    let meter = Qemu::boot(&qemu, dir.path(), "meter", &elves.join("water-meter"), &meter_page, &[]).await;
    let mut tech = speaker.maintenance_link();
    let booted = diag(&mut tech, SPEAKER_UNIT).await;
    assert_eq!((booted.boots, booted.cause, booted.restored), (1, 0, false), "a first power-up: {booted:?}");

    let hex = hex(&command_key);
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "gateway = \"{GATEWAY}\"\ntenant = \"county\"\ncommand_key = \"{hex}\"\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n[publish]\ninterval_ms = 500\n[queue]\ndir = \"{}\"\n\
             [[buses]]\nname = \"rs485-speaker\"\nport = \"{}\"\nbaud = 9600\nparity = \"none\"\n\
             [[buses]]\nname = \"rs485-meter\"\nport = \"{}\"\nbaud = 9600\nparity = \"none\"\n\
             [[devices]]\nid = \"{SPEAKER}\"\nprofile = \"vt-sim-speaker\"\nbus = \"rs485-speaker\"\nunit = {SPEAKER_UNIT}\ninterval_ms = 500\n\
             [[devices]]\nid = \"{METER}\"\nprofile = \"vt-sim-water-meter\"\nbus = \"rs485-meter\"\nunit = {METER_UNIT}\ninterval_ms = 500\n",
            mosquitto.port,
            queue.display(),
            speaker.bus.display(),
            meter.bus.display(),
        ),
    )
    .unwrap();
    let mut gw = Peer::spawn("gateway", Command::new(&gateway).arg("run").arg("--config").arg(&config).stderr(quiet()));
    eventually("the gateway online", Duration::from_secs(30), || async {
        (running.state.inventory.gateway_online(GATEWAY) == Some(true)).then_some(())
    })
    .await;

    // The meter's totaliser reaches ingest through the gateway, and keeps moving.
    let latest = |metric: &'static str, device: &'static str| {
        let running = &running;
        async move {
            running
                .state
                .store
                .latest()
                .into_iter()
                .find(|p| p.device == device && p.metric.name() == metric)
                .map(|p| p.point.value)
        }
    };
    let first =
        eventually("the meter's volume in ingest", Duration::from_secs(60), || latest("volume_total", METER)).await;
    let later = eventually("the meter's volume moving", Duration::from_secs(60), || async {
        latest("volume_total", METER).await.filter(|v| *v > first)
    })
    .await;
    assert!(later > first && later < 1.0, "{first} -> {later} m3");
    let online = eventually("the speaker polled", Duration::from_secs(30), || latest("speaker_online", SPEAKER)).await;
    assert_eq!(online, 1.0);

    // A red broadcast approved by a second operator: the image verifies it, plays it and
    // reports played, which the gateway acks from its command log.
    let red = red_broadcast(&base, "山洪预警：请立即撤离到高处。").await;
    wait_delivery(&base, red, "played", 90).await;
    let played = diag(&mut tech, SPEAKER_UNIT).await;
    assert!(played.envelope_bytes > 100 && played.commit_cycles > 0, "{played:?}");

    // Someone at the maintenance port skips the gateway: a command forged with another
    // key, and the real command replayed from the mailbox. The image refuses both itself.
    let captured = envelope_in_mailbox(&mut tech, SPEAKER_UNIT).await;
    let captured_id = protocol::command::peek_id(&captured).expect("a command id");
    let forged = forged_play(daemon::now());
    write_mailbox(&mut tech, SPEAKER_UNIT, &forged).await;
    let forged_id = protocol::command::peek_id(&forged).unwrap();
    assert_eq!(verdict(&mut tech, SPEAKER_UNIT).await, (2, Reason::BadSignature as u16, forged_id));
    write_mailbox(&mut tech, SPEAKER_UNIT, &captured).await;
    assert_eq!(verdict(&mut tech, SPEAKER_UNIT).await, (2, Reason::Replayed as u16, captured_id));
    let idle = tech.read(SPEAKER_UNIT, Read { table: Table::Input, start: 0, count: 1 }, attempts()).await.unwrap();
    assert_eq!(idle, vec![0], "neither plays: the terminal is idle");

    // A long red broadcast; the board resets (reset pin, brown-out) while it plays.
    let long: String = "请注意收听紧急广播。".chars().cycle().take(60).collect();
    let second = red_broadcast(&base, &long).await;
    wait_delivery(&base, second, "playing", 60).await;
    let in_flight = envelope_in_mailbox(&mut tech, SPEAKER_UNIT).await;
    let in_flight_id = protocol::command::peek_id(&in_flight).unwrap();
    assert_ne!(in_flight_id, captured_id);
    speaker.reset();
    let rebooted = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let d = diag(&mut tech, SPEAKER_UNIT).await;
            if d.boots == 2 {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the speaker back after its reset");
    assert_eq!(rebooted.cause, 1, "an external reset, noted as such: {rebooted:?}");
    assert!(rebooted.restored, "the state came back from battery-backed RAM: {rebooted:?}");
    let state = tech.read(SPEAKER_UNIT, Read { table: Table::Input, start: 0, count: 5 }, attempts()).await.unwrap();
    assert_eq!(state[0], 1, "the interrupted broadcast resumes: {state:?}");

    // The resumed broadcast plays to its end and is reported played (the positive
    // control: the restored terminal still accepts and plays what ingest signed).
    wait_delivery(&base, second, "played", 90).await;
    // The command it was playing at the reset, replayed: still refused, the replay window
    // came back with the rest of the state.
    write_mailbox(&mut tech, SPEAKER_UNIT, &in_flight).await;
    assert_eq!(verdict(&mut tech, SPEAKER_UNIT).await, (2, Reason::Replayed as u16, in_flight_id));
    write_mailbox(&mut tech, SPEAKER_UNIT, &captured).await;
    assert_eq!(verdict(&mut tech, SPEAKER_UNIT).await.1, Reason::Replayed as u16, "and so is the older one");

    let end = diag(&mut tech, SPEAKER_UNIT).await;
    eprintln!(
        "firmware images under QEMU: speaker stack {} of {} B, heap peak {} of {} B, last commit {} cycles \
         (host-paced SysTick) for {} B",
        end.stack_used, end.stack_size, end.heap_peak, end.heap_size, end.commit_cycles, end.envelope_bytes
    );
    assert!(end.stack_used < end.stack_size && end.heap_peak < end.heap_size, "{end:?}");
    gw.assert_running();
    drop(gw);
    running.stop().await;
}

/// Runs `arm-none-eabi-size -A` on `elf`: (flash, static RAM) in bytes. Flash is what the
/// chip stores (code, constants, the initial values of statics); static RAM is `.data`,
/// `.bss` and `.uninit` (the heap is a static array, so it is in there).
fn sizes(elf: &Path) -> (u64, u64) {
    let out = Command::new(tool("arm-none-eabi-size", "binutils-arm-none-eabi")).arg("-A").arg(elf).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut flash, mut ram) = (0, 0);
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(name), Some(size)) = (f.next(), f.next().and_then(|s| s.parse::<u64>().ok())) else { continue };
        match name {
            ".vector_table" | ".text" | ".rodata" => flash += size,
            ".data" => {
                flash += size;
                ram += size;
            }
            ".bss" | ".uninit" => ram += size,
            _ => {}
        }
    }
    (flash, ram)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_speaker_image_verifies_a_command_within_its_budgets_and_its_watchdog_resets_a_hang() {
    let Some(qemu) = qemu_system_arm() else { return };
    let elves = tokio::task::spawn_blocking(images).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let issuer = SigningKey::from_bytes(&[7u8; 32]);
    let page = Provision {
        unit: 1,
        issuer_key: Some(issuer.verifying_key().to_bytes()),
        device_key: None,
        gateway: GATEWAY,
        device: SPEAKER,
    }
    .encode()
    .unwrap();
    // `-icount shift=0`: QEMU's virtual clock advances 1 ns per guest instruction, so the
    // 25 MHz SysTick counts one tick per 40 instructions: cycles read back * 40 is the
    // instruction count of the commit (QEMU does not model the DWT cycle counter).
    let speaker =
        Qemu::boot(&qemu, dir.path(), "speaker", &elves.join("speaker"), &page, &["-icount", "shift=0"]).await;
    let mut tech = speaker.maintenance_link();
    let now = daemon::now();
    let command = |id: u64, key: &SigningKey| {
        protocol::command::Command {
            id,
            tenant: "county".into(),
            gateway: GATEWAY.into(),
            device: SPEAKER.into(),
            issued_at: now,
            expires_at: Timestamp(now.0 + 600_000),
            action: Action::Play(Playback {
                broadcast: id,
                level: Level::Red,
                content: Content::Tts { text: "山洪预警：请立即撤离到高处。".into() },
                repeat: 1,
                volume: Some(90),
                start_at: None,
            }),
        }
        .sign(key)
    };
    // Refused (another key) and accepted (the issuer's): each is one signature check.
    write_mailbox(&mut tech, 1, &command(41, &SigningKey::from_bytes(&[8u8; 32]))).await;
    assert_eq!(verdict(&mut tech, 1).await, (2, Reason::BadSignature as u16, 41));
    let refused = diag(&mut tech, 1).await;
    let signed = command(42, &issuer);
    write_mailbox(&mut tech, 1, &signed).await;
    assert_eq!(verdict(&mut tech, 1).await, (1, 0, 42), "the issuer's command is received");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let accepted = diag(&mut tech, 1).await;
    let (flash, ram) = sizes(&elves.join("speaker"));
    let (meter_flash, meter_ram) = sizes(&elves.join("water-meter"));
    eprintln!(
        "speaker image: flash {flash} B, static RAM {ram} B (heap {} B of it), stack {} of {} B, heap peak {} B; \
         verify and carry out a {} B command: {} instructions (refused with a bad signature: {}); \
         water meter image: flash {meter_flash} B, static RAM {meter_ram} B",
        accepted.heap_size,
        accepted.stack_used,
        accepted.stack_size,
        accepted.heap_peak,
        accepted.envelope_bytes,
        u64::from(accepted.commit_cycles) * 40,
        u64::from(refused.commit_cycles) * 40,
    );
    assert_eq!(usize::from(accepted.envelope_bytes), signed.len());
    assert!(accepted.commit_cycles > 1000, "a signature check is not free: {accepted:?}");
    assert!(accepted.stack_used < accepted.stack_size && accepted.heap_peak < accepted.heap_size, "{accepted:?}");

    // The largest envelope the mailbox holds (1,998 B) is verified and carried out within
    // the heap and the stack: the budgets hold for the worst case, not only a short text.
    let largest = {
        let with = |n: usize| {
            let text = "a".repeat(n);
            protocol::command::Command {
                id: 43,
                tenant: "county".into(),
                gateway: GATEWAY.into(),
                device: SPEAKER.into(),
                issued_at: now,
                expires_at: Timestamp(now.0 + 600_000),
                action: Action::Play(Playback {
                    broadcast: 43,
                    level: Level::Red,
                    content: Content::Tts { text },
                    repeat: 1,
                    volume: Some(90),
                    start_at: None,
                }),
            }
            .sign(&issuer)
        };
        let mut n = 1998 - with(0).len();
        while with(n).len() > 1998 {
            n -= 1;
        }
        with(n)
    };
    assert!(largest.len() > 1990, "{}", largest.len());
    write_mailbox(&mut tech, 1, &largest).await;
    assert_eq!(verdict(&mut tech, 1).await, (1, 0, 43), "the largest envelope is received");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let worst = diag(&mut tech, 1).await;
    assert_eq!((worst.boots, usize::from(worst.envelope_bytes)), (1, largest.len()), "{worst:?}");
    assert!(worst.stack_used < worst.stack_size && worst.heap_peak < worst.heap_size, "{worst:?}");

    // One receipt signature: the same refused command at a terminal that signs its
    // delivery states (a device key in its page) costs one signing more.
    let signer_page = Provision {
        unit: 1,
        issuer_key: Some(issuer.verifying_key().to_bytes()),
        device_key: Some(SPEAKER_SEED),
        gateway: GATEWAY,
        device: SPEAKER,
    }
    .encode()
    .unwrap();
    let signer =
        Qemu::boot(&qemu, dir.path(), "speaker-signs", &elves.join("speaker"), &signer_page, &["-icount", "shift=0"])
            .await;
    let mut signer_tech = signer.maintenance_link();
    write_mailbox(&mut signer_tech, 1, &command(41, &SigningKey::from_bytes(&[8u8; 32]))).await;
    assert_eq!(verdict(&mut signer_tech, 1).await, (2, Reason::BadSignature as u16, 41));
    let signed_refusal = diag(&mut signer_tech, 1).await;
    drop(signer);
    eprintln!(
        "speaker image: largest envelope ({} B) verified and carried out: {} instructions, stack {} B, heap peak {} B \
         of {} B; a refusal that is also signed (receipt key provisioned): {} instructions, so one receipt \
         signature is about {} instructions",
        worst.envelope_bytes,
        u64::from(worst.commit_cycles) * 40,
        worst.stack_used,
        worst.heap_peak,
        worst.heap_size,
        u64::from(signed_refusal.commit_cycles) * 40,
        (i64::from(signed_refusal.commit_cycles) - i64::from(refused.commit_cycles)) * 40,
    );

    // The watchdog: a main loop that stops feeding it (the maintenance port's stall
    // register stands in for a hang) is reset, noted as a watchdog reset, with its state
    // kept. Nobody on the bus can do that.
    let mut bus = Link::new(Endpoint::Rtu(BusConfig {
        name: "bus".into(),
        port: speaker.bus.clone(),
        baud: 9600,
        parity: Parity::None,
        data_bits: 8,
        stop_bits: 1,
        turnaround: Duration::ZERO,
    }));
    let err = bus.write(1, Table::Holding, 990, &[0xDEAD], attempts()).await.unwrap_err();
    assert!(err.to_string().contains("IllegalDataAddress"), "{err}");
    tech.write(1, Table::Holding, 990, &[0xDEAD], attempts()).await.expect("the stall register");
    let reset = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if let Ok(r) = tech.read(1, Read { table: Table::Input, start: 900, count: 10 }, attempts()).await
                && r[0] == 2
            {
                return r;
            }
        }
    })
    .await
    .expect("the watchdog resets the stalled terminal");
    assert_eq!((reset[1], reset[9]), (2, 1), "a watchdog reset, state restored: {reset:?}");
    write_mailbox(&mut tech, 1, &signed).await;
    assert_eq!(verdict(&mut tech, 1).await, (2, Reason::Replayed as u16, 42), "the replay window survived it");
}
