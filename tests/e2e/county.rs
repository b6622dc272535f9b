//! The whole path of a reading on the simulated county: firmware device behind a real
//! Modbus TCP server -> real gateway (profile decoding, batching, MQTT) -> embedded broker
//! -> ingest (validate, store) -> HTTP API.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use ingest::api::time::parse;
use ingest::demo::{Demo, DemoOptions};
use protocol::catalogue::{CATALOGUE, Family};
use serde_json::Value;
use simulator::Table;
use testkit::eventually;

use crate::common::{get_json, now_ms};

async fn start_demo(dir: &std::path::Path) -> Demo {
    let opts = DemoOptions {
        http: SocketAddr::from(([127, 0, 0, 1], 0)),
        mqtt: SocketAddr::from(([127, 0, 0, 1], 0)),
        data: Some(dir.to_path_buf()),
        ..DemoOptions::default()
    };
    let demo = Demo::start(opts).await.expect("demo starts");
    demo.county.set_random_outages(false);
    demo
}

/// Waits for `device`'s `metric` to show `value` through the API; returns the reading.
async fn wait_for_value(base: &str, device: &str, metric: &str, value: f64) -> Value {
    let path = format!("/api/v1/latest?device={device}&metric={metric}");
    eventually(&format!("{device} {metric} = {value}"), Duration::from_secs(30), || async {
        let latest = get_json(base, &path).await;
        let r = latest.as_array()?.first()?.clone();
        ((r["value"].as_f64()? - value).abs() < 1e-9).then_some(r)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_value_set_in_a_simulated_device_arrives_with_metric_unit_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let demo = start_demo(dir.path()).await;
    let base = format!("http://{}", demo.ingest.http);
    let plan = demo.county.plan().clone();
    let pump = plan.devices().find(|d| d.kind == protocol::DeviceKind::PumpStation).unwrap().id.clone();
    let analyser = plan.devices().find(|d| d.kind == protocol::DeviceKind::WaterQuality).unwrap().id.clone();
    let cow = plan.devices().flat_map(|d| d.children.iter()).next().unwrap().clone();

    let pinned_at = now_ms();
    // Tank level: input register 0, u16 millimetres -> 3.456 m.
    demo.county.pin_register(&pump, Table::Input, 0, &[3456]).unwrap();
    // pH: input 4-5, f32 in CDAB order (low word first), as Xylem analysers send it.
    let ph = 7.25f32.to_bits();
    demo.county.pin_register(&analyser, Table::Input, 4, &[(ph & 0xffff) as u16, (ph >> 16) as u16]).unwrap();
    // A cow's body temperature: offset 2 in her slot, i16 x 0.01 -> 40.12 °C.
    demo.county.pin_register(&cow, Table::Input, 2, &[4012]).unwrap();

    for (device, metric, value, unit) in [
        (pump.as_str(), "tank_level", 3.456, "m"),
        (analyser.as_str(), "ph", 7.25, "pH"),
        (cow.as_str(), "body_temperature", 40.12, "°C"),
    ] {
        let r = wait_for_value(&base, device, metric, value).await;
        assert_eq!(r["unit"], unit, "{r}");
        assert_eq!(r["metric"], metric);
        let ts = parse(r["ts"].as_str().unwrap()).unwrap().0;
        assert!(ts >= pinned_at - 1000 && ts <= now_ms() + 1000, "{metric} stamped {ts}, pinned at {pinned_at}: {r}");
        // The same point is in the series, at the same time.
        let s = get_json(&base, &format!("/api/v1/series?device={device}&metric={metric}&from={}", pinned_at - 60_000))
            .await;
        let points = s["points"].as_array().unwrap();
        assert!(points.iter().any(|p| p["value"].as_f64() == Some(value) && p["ts"] == r["ts"]), "{s}");
        assert_eq!(s["unit"], unit);
    }
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_county_lists_all_six_kinds_and_fresh_values_of_every_family() {
    let dir = tempfile::tempdir().unwrap();
    let started = now_ms();
    let demo = start_demo(dir.path()).await;
    let base = format!("http://{}", demo.ingest.http);

    let devices = get_json(&base, "/api/v1/devices").await;
    let kinds: BTreeSet<&str> = devices.as_array().unwrap().iter().filter_map(|d| d["kind"].as_str()).collect();
    for k in ["water_meter", "pump_station", "water_quality", "barn_climate", "cow_collar", "speaker"] {
        assert!(kinds.contains(k), "no {k} in {kinds:?}");
    }
    for d in devices.as_array().unwrap() {
        for field in ["id", "kind", "site", "gateway", "last_seen"] {
            assert!(d.get(field).is_some(), "device without {field}: {d}");
        }
    }

    let wanted: BTreeSet<&str> = CATALOGUE
        .iter()
        .filter(|m| {
            matches!(
                m.family,
                Family::Water | Family::WaterQuality | Family::Pump | Family::Animal | Family::Barn | Family::Speaker
            )
        })
        .map(|m| m.name)
        .collect();
    let missing = eventually("fresh values of every metric", Duration::from_secs(45), || async {
        let latest = get_json(&base, "/api/v1/latest").await;
        let fresh: BTreeSet<String> = latest
            .as_array()?
            .iter()
            .filter(|r| r["ts"].as_str().and_then(|t| parse(t).ok()).is_some_and(|t| t.0 >= started))
            .filter_map(|r| r["metric"].as_str().map(str::to_string))
            .collect();
        let missing: Vec<&str> = wanted.iter().copied().filter(|m| !fresh.contains(*m)).collect();
        missing.is_empty().then_some(missing)
    })
    .await;
    assert!(missing.is_empty());
    let devices = get_json(&base, "/api/v1/devices?kind=gateway").await;
    assert!(devices.as_array().unwrap().iter().all(|g| g["online"] == true), "{devices}");
    demo.stop().await;
}
