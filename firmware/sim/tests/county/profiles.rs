//! The gateway profiles `gateway/profiles/vt-sim-*.toml` against the served county: every
//! point of every device decodes, through a real Modbus client, to a value the catalogue
//! calls plausible and that fits the demo's physics; a profile's command mailbox and its
//! command log are where the firmware's register map puts them, and a signed envelope
//! written as the profile says gets the terminal's verdict in the log the profile names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use protocol::DeviceKind;
use protocol::modbus::{self as words, WordOrder};
use serde::Deserialize;
use simulator::CountySpec;
use testkit::within;
use tokio_modbus::client::Context;
use tokio_modbus::prelude::*;

use crate::common::{ANSWER, client, county, deliver};

/// The profile format as the gateway's loader reads it (unknown fields refused).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    model: String,
    kind: String,
    #[allow(dead_code)]
    description: String,
    #[serde(default)]
    #[allow(dead_code)]
    max_gap: u16,
    #[serde(default)]
    points: Vec<Point>,
    slots: Option<Slots>,
    #[serde(default)]
    writable: Vec<Writable>,
    mailbox: Option<Mailbox>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Mailbox {
    #[serde(default = "holding")]
    table: String,
    address: u16,
    size: u16,
    log: Option<Log>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Log {
    #[serde(default = "input")]
    table: String,
    address: u16,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Point {
    metric: String,
    #[serde(default = "holding")]
    table: String,
    address: u16,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default = "abcd")]
    order: String,
    #[serde(default = "one")]
    scale: f64,
    #[serde(default)]
    offset: f64,
    unit: String,
    bit: Option<u8>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Slots {
    table: String,
    count_address: u16,
    base: u16,
    stride: u16,
    max: u16,
    id_type: String,
    device: String,
    kind: String,
    points: Vec<SlotPoint>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotPoint {
    metric: String,
    offset: u16,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default = "abcd")]
    order: String,
    #[serde(default = "one")]
    scale: f64,
    unit: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Writable {
    name: String,
    table: String,
    address: u16,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default = "one")]
    scale: f64,
    unit: String,
    min: f64,
    max: f64,
}

fn holding() -> String {
    "holding".into()
}
fn input() -> String {
    "input".into()
}
fn abcd() -> String {
    "ABCD".into()
}
fn one() -> f64 {
    1.0
}

fn profiles() -> BTreeMap<String, Profile> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../gateway/profiles");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("profiles folder") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if !(name.starts_with("vt-sim-") && name.ends_with(".toml")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable");
        let p: Profile = toml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(format!("{}.toml", p.model), name, "file name follows the model");
        out.insert(p.model.clone(), p);
    }
    out
}

fn order(s: &str) -> WordOrder {
    match s {
        "ABCD" => WordOrder::Abcd,
        "CDAB" => WordOrder::Cdab,
        "BADC" => WordOrder::Badc,
        "DCBA" => WordOrder::Dcba,
        other => panic!("unknown order {other}"),
    }
}

fn width(ty: &str) -> u16 {
    match ty {
        "u16" | "i16" | "bool" => 1,
        "u32" | "i32" | "f32" => 2,
        "u64" | "i64" | "f64" => 4,
        other => panic!("unknown type {other}"),
    }
}

fn decode(w: &[u16], ty: &str, o: &str) -> f64 {
    match ty {
        "u16" | "bool" => f64::from(w[0]),
        "i16" => f64::from(w[0] as i16),
        "u32" => f64::from(words::to_u32([w[0], w[1]], order(o))),
        "i32" => f64::from(words::to_i32([w[0], w[1]], order(o))),
        "f32" => f64::from(words::to_f32([w[0], w[1]], order(o))),
        "u64" => words::to_u64([w[0], w[1], w[2], w[3]], order(o)) as f64,
        other => panic!("type {other} not decoded here"),
    }
}

async fn read(ctx: &mut Context, table: &str, address: u16, count: u16) -> Vec<u16> {
    let answer = async {
        match table {
            "input" => ctx.read_input_registers(address, count).await,
            "holding" => ctx.read_holding_registers(address, count).await,
            "coil" => ctx.read_coils(address, count).await.map(|r| r.map(|b| b.into_iter().map(u16::from).collect())),
            "discrete" => ctx
                .read_discrete_inputs(address, count)
                .await
                .map(|r| r.map(|b| b.into_iter().map(u16::from).collect())),
            other => panic!("unknown table {other}"),
        }
    };
    within("a register read", ANSWER, answer)
        .await
        .expect("transport")
        .unwrap_or_else(|e| panic!("{table} {address}+{count}: {e:?}"))
}

/// What the demo's physics should show at 10:00 on a June morning, per model and metric.
fn expected(model: &str, metric: &str) -> (f64, f64) {
    match (model, metric) {
        (_, "fault_word") => (0.0, 65_535.0),
        (_, "volume_total") => (0.0, 10_000.0),
        ("vt-sim-water-meter", "flow") => (0.0, 2.0),
        // A village's inlet: its households' draw and its network's leakage.
        ("vt-sim-bulk-meter", "flow") => (0.0, 20.0),
        ("vt-sim-pump-station", "flow") => (0.05, 20.0),
        // Zero while the pump is stopped; its rated flow while it runs.
        ("vt-sim-pump-station", "pump_flow") => (0.0, 20.0),
        (_, "battery_voltage") => (3.2, 3.7),
        (_, "valve_open") => (1.0, 1.0),
        (_, "tank_level") => (0.5, 3.8),
        (_, "pressure") => (0.14, 0.35),
        (_, "pump_current") => (0.0, 10.0),
        (_, "pump_running") => (0.0, 1.0),
        ("vt-sim-pump-station", "free_chlorine") => (0.5, 0.8),
        ("vt-sim-water-quality", "free_chlorine") => (0.2, 0.7),
        (_, "water_temperature") => (8.0, 22.0),
        (_, "ph") => (6.5, 8.5),
        (_, "turbidity") => (0.05, 1.0),
        (_, "conductivity") => (450.0, 800.0),
        (_, "barn_temperature") => (15.0, 40.0),
        (_, "relative_humidity") => (20.0, 100.0),
        (_, "thi") => (60.0, 90.0),
        (_, "body_temperature") => (36.5, 40.0),
        (_, "activity") => (1.0, 2_000.0),
        (_, "rumination") => (0.0, 60.0),
        (_, "milk_yield") => (5.0, 25.0),
        (_, "milk_conductivity") => (4.0, 8.0),
        (_, "speaker_online") => (1.0, 1.0),
        (_, "playback_state") => (0.0, 1.0),
        (_, "speaker_volume") => (50.0, 100.0),
        (m, x) => panic!("no expectation for {m} {x}"),
    }
}

fn check(model: &str, device: &str, metric: &str, value: f64, seen: &mut BTreeSet<(String, String)>) {
    let def = protocol::catalogue::by_name(metric).unwrap_or_else(|| panic!("{metric} not in the catalogue"));
    assert!(
        value >= def.range.0 && value <= def.range.1,
        "{device} {metric} = {value} outside the catalogue range {:?}",
        def.range
    );
    let (lo, hi) = expected(model, metric);
    assert!(value >= lo && value <= hi, "{device} {metric} = {value}, expected {lo}..={hi}");
    seen.insert((model.to_owned(), metric.to_owned()));
}

#[test]
fn profiles_parse_with_catalogue_units_and_cover_every_simulated_model() {
    let profiles = profiles();
    let plan = simulator::Plan::build(&CountySpec::demo());
    let models: BTreeSet<&str> = plan.devices().map(|d| d.model.as_str()).collect();
    let files: BTreeSet<&str> = profiles.keys().map(String::as_str).collect();
    assert_eq!(models, files);
    for p in profiles.values() {
        let kind: DeviceKind = p.kind.parse().expect("known kind");
        assert!(plan.devices().filter(|d| d.model == p.model).all(|d| d.kind == kind), "{}", p.model);
        let units = p
            .points
            .iter()
            .map(|x| (&x.metric, &x.unit))
            .chain(p.slots.iter().flat_map(|s| s.points.iter().map(|x| (&x.metric, &x.unit))));
        for (metric, unit) in units {
            let def = protocol::catalogue::by_name(metric).unwrap_or_else(|| panic!("{metric} unknown"));
            assert_eq!(unit, def.unit, "{} {metric}", p.model);
        }
        for x in &p.points {
            assert!(["holding", "input", "coil", "discrete"].contains(&x.table.as_str()));
            assert_eq!(x.ty == "bool", matches!(x.table.as_str(), "coil" | "discrete"), "{} {}", p.model, x.metric);
            assert!(x.bit.is_none() && x.offset == 0.0);
        }
        for w in &p.writable {
            assert!(w.min <= w.max && w.scale > 0.0 && w.address < 1000, "{} {}", p.model, w.name);
            assert_eq!(w.ty == "bool", w.table == "coil");
            assert!(!w.unit.is_empty());
        }
        if let Some(m) = &p.mailbox {
            // Only the speaker terminal has one, exactly where its register map puts it.
            use firmware::speaker::{LOG_BASE, MAILBOX};
            assert_eq!(kind, DeviceKind::Speaker, "{}: a mailbox on a {kind:?}", p.model);
            assert_eq!((m.table.as_str(), m.address, m.size), ("holding", MAILBOX.0, MAILBOX.1 - MAILBOX.0 + 1));
            let log = m.log.as_ref().expect("the speaker reports its verdicts in its command log");
            assert_eq!((log.table.as_str(), log.address), ("input", LOG_BASE));
            assert!(p.points.iter().all(|x| x.address < MAILBOX.0), "no point inside the mailbox");
        }
        if let Some(s) = &p.slots {
            assert_eq!((s.id_type.as_str(), s.device.as_str(), s.kind.as_str()), ("u32", "cow-{id}", "cow_collar"));
            assert!(s.points.iter().all(|x| x.offset >= width(&s.id_type) && x.offset < s.stride));
        }
    }
}

#[tokio::test]
async fn every_profile_point_reads_plausible_values_from_a_served_county() {
    let profiles = profiles();
    let county = county(CountySpec::demo());
    let servers = county.serve().await.expect("serve");
    let mut seen = BTreeSet::new();
    let mut cows = 0;
    for d in county.plan().devices() {
        let p = &profiles[&d.model];
        let mut ctx = client(&servers, &county, &d.id).await;
        for x in &p.points {
            let w = read(&mut ctx, &x.table, x.address, width(&x.ty)).await;
            let value = decode(&w, &x.ty, &x.order) * x.scale + x.offset;
            check(&p.model, &d.id, &x.metric, value, &mut seen);
        }
        if let Some(m) = &p.mailbox {
            mailbox_answers_in_its_log(&mut ctx, m, &d.id).await;
        }
        if let Some(s) = &p.slots {
            let count = read(&mut ctx, &s.table, s.count_address, 1).await[0];
            assert!(count <= s.max);
            assert_eq!(usize::from(count), d.children.len());
            // Read the table as a gateway would: coalesced blocks of up to 125 registers.
            let total = count * s.stride;
            let mut table = Vec::with_capacity(usize::from(total));
            while (table.len() as u16) < total {
                let n = (total - table.len() as u16).min(125);
                table.extend(read(&mut ctx, &s.table, s.base + table.len() as u16, n).await);
            }
            for slot in table.chunks(usize::from(s.stride)) {
                let id = decode(&slot[..2], &s.id_type, "ABCD") as u32;
                let device = s.device.replace("{id}", &id.to_string());
                assert!(d.children.contains(&device), "{device} is not a child of {}", d.id);
                for x in &s.points {
                    let o = usize::from(x.offset);
                    let value = decode(&slot[o..o + usize::from(width(&x.ty))], &x.ty, &x.order) * x.scale;
                    check(&p.model, &device, &x.metric, value, &mut seen);
                }
                cows += 1;
            }
        }
    }
    assert_eq!(cows, 100);
    let all: BTreeSet<(String, String)> = profiles
        .values()
        .flat_map(|p| {
            p.points
                .iter()
                .map(|x| (p.model.clone(), x.metric.clone()))
                .chain(p.slots.iter().flat_map(|s| s.points.iter().map(|x| (p.model.clone(), x.metric.clone()))))
        })
        .collect();
    assert_eq!(seen, all, "every point of every profile was read");
    county.shutdown();
}

/// Writes a signed play into the mailbox as the profile lays it out (data from the second
/// register, the length into the first, last) and reads the terminal's verdict from the
/// log block the profile names, in one read. The county's terminals are not provisioned
/// here, so the verdict is `not_provisioned`, naming the envelope's command id.
async fn mailbox_answers_in_its_log(ctx: &mut Context, m: &Mailbox, device: &str) {
    use firmware::speaker::{LOG_REGISTERS, Reason, SLOTS, decode_log};
    use protocol::command::{Action, Command, Content, Level, Playback};
    let id = 1_717_207_200_123;
    let wire = Command {
        id,
        tenant: "county".into(),
        gateway: "gw-dongcun".into(),
        device: device.into(),
        issued_at: crate::common::JUNE_10AM,
        expires_at: protocol::Timestamp(crate::common::JUNE_10AM.0 + 600_000),
        action: Action::Play(Playback {
            broadcast: 1,
            level: Level::Blue,
            content: Content::Tts { text: "profile check".into() },
            repeat: 1,
            volume: None,
            start_at: None,
        }),
    }
    .sign(&ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]));
    assert!(wire.len() <= usize::from(m.size - 1) * 2, "a short play fits the mailbox");
    deliver(ctx, m.address, &wire).await;
    let log = m.log.as_ref().expect("log");
    let regs = read(ctx, &log.table, log.address, LOG_REGISTERS).await;
    let block = decode_log(&regs).expect("the profile's log block is the firmware's");
    assert_eq!(regs[7], SLOTS as u16);
    assert_eq!(block.verdict, Some(Err((id, Reason::NotProvisioned))), "{device}: {block:?}");
}
