//! Sim time: manual stepping, the wall-clock ticker, determinism, scale.

use std::time::Duration;

use protocol::Timestamp;
use simulator::{County, CountySpec, Table};

use crate::common::{HOUR, JUNE_10AM, county, small};

#[test]
fn advance_moves_sim_time_by_exactly_dt() {
    let county = small();
    assert_eq!(county.now(), JUNE_10AM);
    county.advance(Duration::from_millis(1_234));
    county.advance(3 * HOUR);
    assert_eq!(county.now(), Timestamp(JUNE_10AM.0 + 1_234 + 3 * 3_600_000));
}

#[test]
fn the_same_spec_and_start_give_the_same_county() {
    let a = small();
    let b = small();
    a.advance(5 * HOUR);
    b.advance(5 * HOUR);
    for d in ["waterworks-pump-1", "waterworks-quality-1", "farm-collar-hub", "xicun-meter-002"] {
        let n = if d == "farm-collar-hub" { 64 } else { 10 };
        assert_eq!(a.read(d, Table::Input, 0, n).ok(), b.read(d, Table::Input, 0, n).ok(), "{d}");
    }
    let c = county(CountySpec { seed: 7, meters: 9, cows: 6, ..CountySpec::demo() });
    c.advance(5 * HOUR);
    assert_ne!(a.read("xicun-meter-002", Table::Input, 0, 2).ok(), c.read("xicun-meter-002", Table::Input, 0, 2).ok());
}

#[tokio::test(start_paused = true)]
async fn while_serving_sim_time_follows_wall_time_at_the_speed_factor() {
    let county = county(CountySpec { meters: 9, cows: 6, speed: 60.0, ..CountySpec::demo() });
    county.serve().await.expect("serve");
    let t0 = county.now();
    // Paused tokio time: advancing it runs the ticker without sleeping.
    tokio::time::advance(Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    let moved = county.now().0 - t0.0;
    assert!((590_000..=660_000).contains(&moved), "10 s of wall time at 60x moved {moved} ms");
    // A manual advance adds to it instead of being undone or waited for.
    county.advance(HOUR);
    tokio::time::advance(Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    let moved = county.now().0 - t0.0;
    assert!((3_600_000 + 600_000..=3_600_000 + 720_000).contains(&moved), "{moved}");
    county.shutdown();
}

#[tokio::test]
async fn a_county_of_fifteen_thousand_meters_builds_and_serves_on_many_buses() {
    let spec = CountySpec { villages: 50, meters: 15_000, cows: 600, speakers_per_village: 8, ..CountySpec::demo() };
    let county = County::with_start(spec, JUNE_10AM);
    let servers = county.serve().await.expect("serve");
    assert_eq!(servers.len(), county.plan().gateways.len());
    assert_eq!(servers.len(), 5 + 2 * 50 + 1, "5 waterworks, two buses per village, the farm");
    let (gw, meter) = county.plan().device("dongcun-meter-300").expect("last meter of dongcun");
    assert_eq!(gw.id, "gw-dongcun-2");
    let (addr, unit) = crate::common::addr_of(&servers, &county, &meter.id);
    let mut ctx = tokio_modbus::client::tcp::connect_slave(addr, tokio_modbus::Slave(unit)).await.expect("connect");
    let total = crate::common::input(&mut ctx, 0, 2).await.expect("meter answers");
    assert_eq!(total.len(), 2);
    assert!(county.read("waterworks-5-pump-1", Table::Input, 0, 14).is_ok());
    county.shutdown();
}
