//! Helpers shared by the end-to-end tests.

use std::net::SocketAddr;
use std::time::Duration;

use protocol::Timestamp;
use simulator::{County, CountySpec};
use tokio_modbus::client::Context;
use tokio_modbus::prelude::*;

/// 2024-06-01 10:00 in Beijing (02:00 UTC): a June morning, pump cycling, cows fed.
pub(crate) const JUNE_10AM: Timestamp = Timestamp(1_717_207_200_000);
/// How long a test waits for a silent unit before calling it a timeout.
pub(crate) const SILENCE: Duration = Duration::from_millis(300);

pub(crate) const HOUR: Duration = Duration::from_secs(3600);

/// A small county (3 villages, 9 meters, 6 cows) at a known time, without random outages.
pub(crate) fn small() -> County {
    county(CountySpec { meters: 9, cows: 6, ..CountySpec::demo() })
}

/// A county of `spec` at [`JUNE_10AM`], without random speaker outages.
pub(crate) fn county(spec: CountySpec) -> County {
    let c = County::with_start(spec, JUNE_10AM);
    c.set_random_outages(false);
    c
}

/// The server address of the gateway that carries `device`.
pub(crate) fn addr_of(servers: &[(String, SocketAddr)], county: &County, device: &str) -> (SocketAddr, u8) {
    let (gw, d) = county.plan().device(device).expect("device in plan");
    let addr = servers.iter().find(|(id, _)| *id == gw.id).map(|(_, a)| *a).expect("gateway served");
    (addr, d.unit)
}

/// A client talking to `device` on its gateway's server.
pub(crate) async fn client(servers: &[(String, SocketAddr)], county: &County, device: &str) -> Context {
    let (addr, unit) = addr_of(servers, county, device);
    tcp::connect_slave(addr, Slave(unit)).await.expect("connect")
}

/// Reads input registers, failing the test on a transport error or timeout.
pub(crate) async fn input(ctx: &mut Context, address: u16, count: u16) -> Result<Vec<u16>, ExceptionCode> {
    tokio::time::timeout(Duration::from_secs(2), ctx.read_input_registers(address, count))
        .await
        .expect("answer in time")
        .expect("transport")
}

/// A register read straight from the world (no socket).
pub(crate) fn reg(county: &County, device: &str, table: simulator::Table, address: u16) -> u16 {
    county.read(device, table, address, 1).expect("readable")[0]
}

/// Two registers as a big-endian u32.
pub(crate) fn u32_abcd(county: &County, device: &str, address: u16) -> u32 {
    let w = county.read(device, simulator::Table::Input, address, 2).expect("readable");
    (u32::from(w[0]) << 16) | u32::from(w[1])
}

/// A CDAB float of the analyser.
pub(crate) fn f32_cdab(county: &County, device: &str, address: u16) -> f32 {
    let w = county.read(device, simulator::Table::Input, address, 2).expect("readable");
    f32::from_bits((u32::from(w[1]) << 16) | u32::from(w[0]))
}

/// A DCBA u32 of a water meter.
pub(crate) fn u32_dcba(county: &County, device: &str, address: u16) -> u32 {
    let w = county.read(device, simulator::Table::Input, address, 2).expect("readable");
    u32::from_le_bytes([(w[0] >> 8) as u8, w[0] as u8, (w[1] >> 8) as u8, w[1] as u8])
}
