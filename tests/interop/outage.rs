//! Store-and-forward through real outages: mosquitto stopped for ten minutes of the
//! gateway's time, and the gateway killed with SIGKILL in the middle of an outage. The
//! device is pymodbus's counter (unit 3): every poll reads the next integer, so the stored
//! series must be consecutive integers, in time order, none twice, for "every reading
//! taken reached the store exactly once" to hold.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::config::{DeviceConfig, GatewayConfig, MqttConfig, QueueConfig};
use ingest::inventory::{Device, GatewayInfo, Inventory, InventoryFile, Site};
use ingest::service::Running;
use protocol::{DeviceKind, Timestamp};
use testkit::{Peer, eventually, quiet};
use tokio_util::sync::CancellationToken;

use crate::common::{Mosquitto, gateway_binary, library, modbus_tcp};
use crate::mqtt::ingest_on;

fn inventory(gateway: &str, device: &str, key: Option<String>) -> Inventory {
    Inventory::from_file(InventoryFile {
        sites: vec![Site {
            id: "s1".into(),
            name: "S1".into(),
            kind: "waterworks".into(),
            tenant: "county".into(),
            lat: 34.7,
            lon: 113.6,
            village: None,
            district: None,
            township: None,
        }],
        gateways: vec![GatewayInfo { id: gateway.into(), tenant: "county".into(), site: "s1".into(), public_key: key }],
        devices: vec![Device {
            id: device.into(),
            kind: DeviceKind::WaterMeter,
            site: "s1".into(),
            gateway: gateway.into(),
            model: "interop-counter".into(),
            lat: None,
            lon: None,
            public_key: None,
        }],
    })
}

/// The counter's stored series: `(ts, value)` oldest first.
fn series(running: &Running, device: &str) -> Vec<(i64, u64)> {
    running
        .state
        .store
        .range(device, "volume_total", Timestamp(0), Timestamp(i64::MAX), 1_000_000)
        .unwrap()
        .into_iter()
        .map(|p| (p.ts.0, p.value as u64))
        .collect()
}

/// Times strictly increase (nothing stored twice, kept in order) and so do the values.
fn assert_ordered_once(s: &[(i64, u64)]) {
    for w in s.windows(2) {
        assert!(w[1].0 > w[0].0, "time goes back or repeats at {w:?}");
        assert!(w[1].1 > w[0].1, "a reading stored twice or out of order at {w:?}");
    }
}

/// Stops the device (so no new readings are taken), then waits until the stored series
/// has stopped growing for 3 s: the backlog has drained.
async fn settled(running: &Running, device: &str, probe: &mut Peer) -> Vec<(i64, u64)> {
    probe.kill();
    let mut last = (0usize, Instant::now());
    eventually("the backlog to drain into the store", Duration::from_secs(90), || {
        let n = series(running, device).len();
        if n != last.0 {
            last = (n, Instant::now());
        }
        // The drain is rate-limited and resends wait 2 s: on a loaded machine a pause of a
        // few seconds is not the end of it.
        let quiet = last.1.elapsed() >= Duration::from_secs(8);
        async move { quiet.then_some(()) }
    })
    .await;
    series(running, device)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_minutes_of_broker_outage_in_gateway_time_lose_no_reading_and_store_none_twice() {
    testkit::logs();
    let dir = tempfile::tempdir().unwrap();
    let mut mosquitto = Mosquitto::plain(dir.path()).await;
    let (mut device, probe) = modbus_tcp().await;
    let key = crate::keys::enrol_in(&dir.path().join("queue"));
    let running =
        ingest_on(&dir.path().join("ingest"), mosquitto.port, None, inventory("gw-o", "counter-1", key)).await;

    // The gateway's clock runs 60 times faster than the wall: 10 s of outage are 10 min of
    // its time, and the readings taken meanwhile are stamped 12 s apart. It starts 45 min
    // back so that no reading is in ingest's future.
    const SPEED: i64 = 60;
    let (t0, start) = (Instant::now(), daemon::now().0 - 45 * 60_000);
    let clock: daemon::Clock = Arc::new(move || Timestamp(start + t0.elapsed().as_millis() as i64 * SPEED));
    let mut cfg = GatewayConfig::new(
        "gw-o",
        "county",
        MqttConfig {
            port: mosquitto.port,
            keep_alive: Duration::from_secs(5),
            reconnect_max: Duration::from_secs(2),
            ..MqttConfig::default()
        },
    );
    cfg.devices = vec![DeviceConfig {
        interval: Duration::from_millis(200),
        ..DeviceConfig::tcp("counter-1", "interop-counter", probe, 3)
    }];
    cfg.publish.interval = Duration::from_millis(200);
    cfg.publish.resend_after = Duration::from_secs(2);
    cfg.queue = QueueConfig { dir: Some(dir.path().join("queue")), max_bytes: 8 << 20 };
    cfg.command_key = Some(running.state.commands.public_key());
    let stop = CancellationToken::new();
    let gw = gateway::Gateway::new(cfg, library(), clock.clone()).unwrap();
    let task = tokio::spawn(gw.try_run(stop.clone()));

    eventually("first readings", Duration::from_secs(20), || async {
        (series(&running, "counter-1").len() > 5).then_some(())
    })
    .await;
    mosquitto.stop();
    let outage_from = clock().0;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let outage_to = clock().0;
    assert!(outage_to - outage_from >= 10 * 60_000, "ten minutes of the gateway's time");
    let before = series(&running, "counter-1");
    mosquitto.restart().await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let last_before_outage = before.last().map_or(0, |l| l.1);
    let s = settled(&running, "counter-1", &mut device).await;
    assert!(s.last().map_or(0, |l| l.1) >= last_before_outage + 45, "the outage's readings are there");
    assert_ordered_once(&s);
    assert_eq!(s[0].1, 1, "the first reading is there");
    let missing: Vec<u64> = s.windows(2).filter(|w| w[1].1 != w[0].1 + 1).map(|w| w[0].1 + 1).collect();
    assert!(missing.is_empty(), "readings taken but never stored, from these values on: {missing:?}");
    let during = s.iter().filter(|(ts, _)| (outage_from..outage_to).contains(ts)).count();
    assert!(during >= 40, "{during} readings stamped inside the outage, expected about 50");
    let widest = s.windows(2).map(|w| w[1].0 - w[0].0).max().unwrap_or(0);
    assert!(widest < 60_000, "readings keep the time they were taken: widest gap {widest} ms of gateway time");
    stop.cancel();
    task.await.unwrap().unwrap();
    running.stop().await;
}

fn write_config(dir: &Path, broker_port: u16, probe: std::net::SocketAddr, command_key: &str) -> std::path::PathBuf {
    let profiles = dir.join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(
        profiles.join("interop-counter.toml"),
        "model = \"interop-counter\"\nkind = \"water_meter\"\n[[points]]\nmetric = \"volume_total\"\ntable = \"holding\"\naddress = 0\ntype = \"u16\"\nunit = \"m3\"\n",
    )
    .unwrap();
    let config = format!(
        r#"gateway = "gw-k"
tenant = "county"
command_key = "{command_key}"
profile_dirs = ["{profiles}"]
[mqtt]
url = "mqtt://127.0.0.1:{broker_port}"
codec = "binary"
keep_alive_secs = 5
reconnect_max_secs = 1
[publish]
interval_ms = 300
resend_after_ms = 2000
[queue]
dir = "{queue}"
[[devices]]
id = "counter-2"
profile = "interop-counter"
tcp = "{probe}"
unit = 3
interval_ms = 100
"#,
        profiles = profiles.display(),
        queue = dir.join("queue").display(),
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn start_gateway(config: &Path) -> Peer {
    Peer::spawn("gateway", Command::new(gateway_binary()).arg("run").arg("--config").arg(config).stderr(quiet()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_with_sigkill_during_an_outage_delivers_every_sealed_batch_once_after_it() {
    let binary = tokio::task::spawn_blocking(gateway_binary).await.unwrap();
    assert!(binary.is_file());
    let dir = tempfile::tempdir().unwrap();
    let mut mosquitto = Mosquitto::plain(dir.path()).await;
    let (mut device, probe) = modbus_tcp().await;
    let key = crate::keys::enrol_in(&dir.path().join("queue"));
    let running =
        ingest_on(&dir.path().join("ingest"), mosquitto.port, None, inventory("gw-k", "counter-2", key)).await;
    let command_key: String = running.state.commands.public_key().iter().map(|b| format!("{b:02x}")).collect();
    let config = write_config(dir.path(), mosquitto.port, probe, &command_key);

    let mut gw = start_gateway(&config);
    eventually("first readings", Duration::from_secs(30), || async {
        (series(&running, "counter-2").len() > 5).then_some(())
    })
    .await;
    // The broker goes away; the gateway queues on disk; then it is killed without warning.
    mosquitto.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    gw.assert_running();
    gw.kill();
    let queued: u64 = std::fs::read_dir(dir.path().join("queue"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(queued > 0, "the queue is on disk");
    // It comes back while the broker is still down, then the broker comes back.
    let mut gw = start_gateway(&config);
    tokio::time::sleep(Duration::from_secs(2)).await;
    mosquitto.restart().await;
    let before_kill = series(&running, "counter-2").last().map_or(0, |l| l.1);
    // 3 s of outage before the kill at 10 polls a second, then 2 s after the restart.
    let s = settled(&running, "counter-2", &mut device).await;
    // At least 20 of them (2 s at 10 polls a second), even on a loaded machine that polls slower.
    assert!(s.last().map_or(0, |l| l.1) >= before_kill + 20, "readings of the outage and after the restart are there");
    gw.assert_running();
    assert_ordered_once(&s);
    assert_eq!(s[0].1, 1);
    // Readings polled but not yet sealed when the process died are the only ones lost: at
    // most one publish interval's worth (300 ms of 100 ms polls), in one place.
    let gaps: Vec<(u64, u64)> = s.windows(2).filter(|w| w[1].1 != w[0].1 + 1).map(|w| (w[0].1, w[1].1)).collect();
    assert!(gaps.len() <= 1, "more than one hole: {gaps:?}");
    if let Some((a, b)) = gaps.first() {
        assert!(b - a - 1 <= 5, "lost {} readings at the kill, at most one publish interval's worth", b - a - 1);
    }
    gw.kill();
    running.stop().await;
}
