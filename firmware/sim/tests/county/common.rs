//! Helpers shared by the county tests: a county at a known time, clients of its servers,
//! and register decoders. The generic ones (waiting with a deadline) are the shared
//! `testkit`, the same the workspace tests use.

use std::net::SocketAddr;
use std::time::Duration;

use protocol::Timestamp;
use simulator::{County, CountySpec};
use testkit::within;
use tokio_modbus::client::Context;
use tokio_modbus::prelude::*;

/// 2024-06-01 10:00 in Beijing (02:00 UTC): a June morning, pump cycling, cows fed.
pub(crate) const JUNE_10AM: Timestamp = Timestamp(1_717_207_200_000);
/// How long a test waits for a silent unit before calling it a timeout.
pub(crate) const SILENCE: Duration = Duration::from_millis(300);

pub(crate) const HOUR: Duration = Duration::from_secs(3600);
/// How long a served device may take to answer a request before the test fails.
pub(crate) const ANSWER: Duration = Duration::from_secs(2);

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
    within("an input register read", ANSWER, ctx.read_input_registers(address, count)).await.expect("transport")
}

/// Writes a signed command envelope into the speaker mailbox at `mailbox` over Modbus, as
/// the gateway does: the data registers first (in chunks one write can carry), then the
/// length register, which commits it.
pub(crate) async fn deliver(ctx: &mut Context, mailbox: u16, wire: &[u8]) {
    let words: Vec<u16> = wire.chunks(2).map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])).collect();
    for (i, chunk) in words.chunks(123).enumerate() {
        let at = mailbox + 1 + (i * 123) as u16;
        within("a mailbox data write", ANSWER, ctx.write_multiple_registers(at, chunk))
            .await
            .expect("transport")
            .expect("the mailbox takes data");
    }
    within("a mailbox length write", ANSWER, ctx.write_single_register(mailbox, wire.len() as u16))
        .await
        .expect("transport")
        .expect("the mailbox takes the length");
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
