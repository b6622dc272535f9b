//! The Modbus TCP servers: addressing, silence, exceptions, writes, pins, shutdown.

use std::time::Duration;

use simulator::{Fault, Table};
use tokio_modbus::prelude::*;

use crate::common::{SILENCE, addr_of, client, input, small};

#[tokio::test]
async fn each_gateway_gets_its_own_server_on_localhost() {
    let county = small();
    let servers = county.serve().await.expect("serve");
    let ids: Vec<&str> = servers.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["gw-waterworks", "gw-dongcun", "gw-xicun", "gw-nancun", "gw-farm"]);
    assert!(servers.iter().all(|(_, a)| a.ip().is_loopback() && a.port() != 0));
    assert_eq!(county.serve().await.expect("again"), servers, "serving twice gives the same servers");
    county.shutdown();
}

#[tokio::test]
async fn a_unit_without_a_device_gets_no_answer_like_a_silent_rs485_bus() {
    let county = small();
    let servers = county.serve().await.expect("serve");
    let (addr, _) = addr_of(&servers, &county, "waterworks-pump-1");
    let mut ctx = tcp::connect_slave(addr, Slave(99)).await.expect("connect");
    let silent = tokio::time::timeout(SILENCE, ctx.read_input_registers(0, 1)).await;
    assert!(silent.is_err(), "expected a timeout, got {silent:?}");
    // The connection still serves the units that exist.
    ctx.set_slave(Slave(1));
    assert!(input(&mut ctx, 0, 1).await.is_ok());
    county.shutdown();
}

#[tokio::test]
async fn an_offline_speaker_stops_answering_until_the_fault_clears() {
    let county = small();
    let servers = county.serve().await.expect("serve");
    let mut ctx = client(&servers, &county, "dongcun-speaker-1").await;
    assert!(input(&mut ctx, 0, 1).await.is_ok());
    county.inject("dongcun-speaker-1", Fault::SpeakerOffline).expect("inject");
    let silent = tokio::time::timeout(SILENCE, ctx.read_input_registers(0, 1)).await;
    assert!(silent.is_err(), "an offline speaker must not answer");
    assert!(matches!(county.read("dongcun-speaker-1", Table::Input, 0, 1), Err(simulator::SimError::Offline(_))));
    county.clear("dongcun-speaker-1").expect("clear");
    assert!(input(&mut ctx, 0, 1).await.is_ok());
    county.shutdown();
}

#[tokio::test]
async fn bad_addresses_and_values_come_back_as_modbus_exceptions() {
    let county = small();
    let servers = county.serve().await.expect("serve");
    let mut ctx = client(&servers, &county, "dongcun-meter-001").await;
    assert_eq!(input(&mut ctx, 12, 2).await, Err(ExceptionCode::IllegalDataAddress));
    assert!(input(&mut ctx, 0, 13).await.is_ok(), "the whole map answers");
    assert_eq!(ctx.read_holding_registers(0, 1).await.expect("transport"), Err(ExceptionCode::IllegalDataAddress));
    assert_eq!(input(&mut ctx, 0, 126).await, Err(ExceptionCode::IllegalDataValue));

    let mut spk = client(&servers, &county, "dongcun-speaker-1").await;
    assert_eq!(spk.write_single_register(0, 101).await.expect("transport"), Err(ExceptionCode::IllegalDataValue));
    // The mailbox takes at most 1998 bytes; past it nothing is mapped.
    assert_eq!(spk.write_single_register(1000, 1999).await.expect("transport"), Err(ExceptionCode::IllegalDataValue));
    assert_eq!(spk.write_single_register(2000, 1).await.expect("transport"), Err(ExceptionCode::IllegalDataAddress));
    county.shutdown();
}

#[tokio::test]
async fn writes_reach_the_firmware_and_change_the_world() {
    let county = small();
    let servers = county.serve().await.expect("serve");

    let mut spk = client(&servers, &county, "xicun-speaker-1").await;
    spk.write_single_register(0, 35).await.expect("transport").expect("volume accepted");
    assert_eq!(spk.read_holding_registers(0, 1).await.expect("transport"), Ok(vec![35]));

    let mut pump = client(&servers, &county, "waterworks-pump-1").await;
    pump.write_multiple_registers(0, &[120, 300]).await.expect("transport").expect("set-points accepted");
    assert_eq!(pump.read_holding_registers(0, 2).await.expect("transport"), Ok(vec![120, 300]));
    assert_eq!(
        pump.write_single_register(0, 290).await.expect("transport"),
        Err(ExceptionCode::IllegalDataValue),
        "start too close to stop"
    );

    // Closing a meter's valve stops the household's water: its total stops moving.
    let mut meter = client(&servers, &county, "nancun-meter-001").await;
    meter.write_single_coil(0, false).await.expect("transport").expect("valve command accepted");
    county.advance(Duration::from_secs(60));
    assert_eq!(meter.read_discrete_inputs(0, 1).await.expect("transport"), Ok(vec![false]));
    let before = meter.read_input_registers(0, 2).await.expect("transport").expect("total");
    county.advance(Duration::from_secs(6 * 3600));
    let after = meter.read_input_registers(0, 2).await.expect("transport").expect("total");
    assert_eq!(before, after, "no water through a closed valve");
    county.shutdown();
}

#[tokio::test]
async fn a_pinned_register_arrives_through_modbus_until_unpinned() {
    let county = small();
    let servers = county.serve().await.expect("serve");
    let mut ctx = client(&servers, &county, "waterworks-pump-1").await;
    county.pin_register("waterworks-pump-1", Table::Input, 0, &[1234]).expect("pin level");
    county.pin_register("waterworks-pump-1", Table::Discrete, 0, &[1]).expect("pin run feedback");
    county.advance(Duration::from_secs(600));
    assert_eq!(input(&mut ctx, 0, 1).await, Ok(vec![1234]));
    assert_eq!(ctx.read_discrete_inputs(0, 1).await.expect("transport"), Ok(vec![true]));

    // A cow's registers are pinned by her id, at offsets within her slot.
    let cow = county.plan().device("farm-collar-hub").expect("hub").1.children[2].clone();
    county.pin_register(&cow, Table::Input, 2, &[4150]).expect("pin fever");
    let mut hub = client(&servers, &county, "farm-collar-hub").await;
    let slot = input(&mut hub, 16 + 2 * 8, 8).await.expect("slot 2");
    assert_eq!(format!("cow-{}", (u32::from(slot[0]) << 16) | u32::from(slot[1])), cow);
    assert_eq!(slot[2], 4150);

    county.unpin("waterworks-pump-1").expect("unpin");
    county.unpin(&cow).expect("unpin cow");
    assert_ne!(input(&mut ctx, 0, 1).await, Ok(vec![1234]));
    assert_ne!(input(&mut hub, 16 + 2 * 8 + 2, 1).await, Ok(vec![4150]));

    assert!(matches!(
        county.pin_register("waterworks-pump-1", Table::Input, 13, &[1, 2]),
        Err(simulator::SimError::Unmapped { address: 14, .. })
    ));
    assert!(county.pin_register(&cow, Table::Input, 8, &[1]).is_err(), "beyond her slot");
    assert!(county.pin_register("nobody", Table::Input, 0, &[1]).is_err());
    county.shutdown();
}

#[tokio::test]
async fn servers_stop_on_shutdown_and_when_the_last_handle_is_dropped() {
    let county = small();
    let servers = county.serve().await.expect("serve");
    let (addr, _) = addr_of(&servers, &county, "farm-barn-1");
    county.shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(tcp::connect(addr).await.is_err(), "listener closed after shutdown");
    assert!(county.serve().await.is_err(), "a shut-down county does not serve again");

    let county = small();
    let servers = county.serve().await.expect("serve");
    let (addr, _) = addr_of(&servers, &county, "farm-barn-1");
    let mut ctx = tcp::connect_slave(addr, Slave(1)).await.expect("connect");
    assert!(input(&mut ctx, 0, 2).await.is_ok());
    drop(county);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(tcp::connect(addr).await.is_err(), "listener closed once the county is gone");
    let after = tokio::time::timeout(SILENCE, ctx.read_input_registers(0, 2)).await;
    assert!(!matches!(after, Ok(Ok(Ok(_)))), "an open connection no longer gets answers: {after:?}");
}
