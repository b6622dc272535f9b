//! The gateway's Modbus side against pymodbus, a device nobody here wrote: over TCP, and
//! over RTU on a pseudo-terminal pair (socat) as on an RS-485 bus.

use std::time::{Duration, Instant};

use gateway::command::mailbox_ops;
use gateway::config::{BusConfig, Parity};
use gateway::modbus::plan::Read;
use gateway::modbus::value::Table;
use gateway::modbus::{Attempts, DeviceReader, Endpoint, Link, Op, PollError};
use protocol::Quality;

use crate::common::{library, modbus_rtu, modbus_tcp, pty_pair};

fn reader(id: &str, unit: u8, model: &str) -> DeviceReader {
    let profile = library().get(model).unwrap_or_else(|| panic!("no profile {model}"));
    let attempts = Attempts { timeout: Duration::from_millis(800), retries: 1, backoff: Duration::from_millis(50) };
    DeviceReader::new(id, unit, profile, attempts)
}

fn value(readings: &[protocol::Reading], metric: &str) -> (f64, Quality) {
    let r = readings.iter().find(|r| r.metric.name() == metric).unwrap_or_else(|| panic!("no {metric}: {readings:?}"));
    (r.value, r.quality)
}

/// Reads the two datasheet profiles and checks what any transport must deliver.
async fn reads_datasheet_devices(link: &mut Link) {
    let troll = reader("probe-1", 1, "in-situ-aqua-troll-400");
    let r = troll.read(link, daemon::now).await.expect("the probe answers");
    assert_eq!(value(&r, "ph"), (7.25, Quality::Good));
    assert_eq!(value(&r, "conductivity"), (412.0, Quality::Good));
    assert_eq!(value(&r, "water_temperature"), (14.5, Quality::Good));
    let keller = reader("tank-1", 2, "keller-series30-level");
    let r = keller.read(link, daemon::now).await.expect("the level probe answers");
    let (level, q) = value(&r, "tank_level");
    assert!((level - 0.3 * 10.197).abs() < 1e-4 && q == Quality::Good, "{level}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymodbus_over_tcp_reads_writes_and_names_its_exceptions() {
    let (_device, addr) = modbus_tcp().await;
    let mut link = Link::new(Endpoint::Tcp(addr));
    reads_datasheet_devices(&mut link).await;

    // The data quality id of the pH block (register 1542) says "error": the reading is bad.
    let a = Attempts::default();
    link.write(1, Table::Holding, 1541, &[3], a).await.unwrap();
    let r = reader("probe-1", 1, "in-situ-aqua-troll-400").read(&mut link, daemon::now).await.unwrap();
    assert_eq!(value(&r, "ph").1, Quality::Bad);
    link.write(1, Table::Holding, 1541, &[4], a).await.unwrap();
    let r = reader("probe-1", 1, "in-situ-aqua-troll-400").read(&mut link, daemon::now).await.unwrap();
    assert_eq!(value(&r, "ph").1, Quality::Uncertain, "an unlisted status is uncertain");

    // Reading past the device's registers: the exception comes back by name.
    let err = link.read(1, Read { table: Table::Holding, start: 20_000, count: 2 }, a).await.unwrap_err();
    assert_eq!(err, PollError::Exception { name: "IllegalDataAddress", code: 2 }, "{err}");
    assert!(err.to_string().contains("IllegalDataAddress"));

    // pymodbus answers a unit id it does not serve with an exception, named too.
    let err = link.read(9, Read { table: Table::Holding, start: 0, count: 1 }, a).await.unwrap_err();
    assert!(err.to_string().starts_with("Modbus exception ServerDeviceFailure"), "{err}");

    // A device that never answers times out, retried once with backoff, named as such.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let mut mute = Link::new(Endpoint::Tcp(silent_addr));
    let quick = Attempts { timeout: Duration::from_millis(300), retries: 1, backoff: Duration::from_millis(10) };
    let started = Instant::now();
    let err = mute.read(1, Read { table: Table::Holding, start: 0, count: 1 }, quick).await.unwrap_err();
    assert!(matches!(err, PollError::Timeout(300)), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(600), "one retry after the first timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymodbus_over_rtu_on_a_pty_pair_shares_one_bus_by_unit_id_and_takes_a_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let (_socat, gw_end, device_end) = pty_pair(dir.path()).await;
    let _device = modbus_rtu(&device_end, 9600).await;
    let bus = BusConfig {
        name: "rs485-1".into(),
        port: gw_end,
        baud: 9600,
        parity: Parity::None,
        data_bits: 8,
        stop_bits: 1,
        turnaround: Duration::ZERO,
    };
    let mut link = Link::new(Endpoint::Rtu(bus));
    // Two devices behind one serial port, one request at a time.
    reads_datasheet_devices(&mut link).await;

    // A set-point write through the same path commands take, read back.
    let a = Attempts { timeout: Duration::from_millis(800), retries: 1, backoff: Duration::from_millis(50) };
    let back = link
        .run_job(
            1,
            &[
                Op::Write { table: Table::Holding, address: 10, words: vec![250] },
                Op::Read { table: Table::Holding, address: 10, count: 1 },
            ],
            a,
        )
        .await
        .unwrap();
    assert_eq!(back, vec![vec![250]]);

    // A signed envelope of 301 bytes goes into the mailbox in writes of at most 123
    // registers, length last; reading the block back gives the same bytes.
    let profile = library().get("interop-controller").unwrap();
    let mailbox = profile.mailbox.unwrap();
    let envelope: Vec<u8> = (0..301u32).map(|i| (i * 7 % 251) as u8).collect();
    link.run_job(1, &mailbox_ops(&mailbox, &envelope).unwrap(), a).await.unwrap();
    let mut words = Vec::new();
    for (start, count) in [(1000u16, 100u16), (1100, 52)] {
        words.extend(link.read(1, Read { table: Table::Holding, start, count }, a).await.unwrap());
    }
    assert_eq!(words[0], 301, "the length word");
    let bytes: Vec<u8> = words[1..].iter().flat_map(|w| w.to_be_bytes()).take(301).collect();
    assert_eq!(bytes, envelope);
}
