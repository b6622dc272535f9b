//! Speakers at county scale: 1,000 terminals behind 50 village gateways running the
//! firmware's signed-command mailbox, with offline, slow and failing ones.

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use firmware::speaker::{CommandState, LOG_BASE, LOG_REGISTERS, MAILBOX, SLOT_BASE, SLOT_STRIDE};
use protocol::Timestamp;
use protocol::command::{Action, Command, Content, Level, Playback};
use simulator::{CountySpec, Fault, SpeakerCondition, SpeakerMix, Table};
use tokio_modbus::prelude::*;

use crate::common::{client, county, deliver};

fn issuer() -> SigningKey {
    SigningKey::from_bytes(&[42u8; 32])
}

fn play(id: u64, gateway: &str, device: &str, now: Timestamp) -> Vec<u8> {
    Command {
        id,
        tenant: "county".into(),
        gateway: gateway.into(),
        device: device.into(),
        issued_at: now,
        expires_at: Timestamp(now.0 + 600_000),
        action: Action::Play(Playback {
            broadcast: 77,
            level: Level::Red,
            content: Content::Tts { text: "山洪预警：请立即撤离到高处。".into() },
            repeat: 1,
            volume: None,
            start_at: None,
        }),
    }
    .sign(&issuer())
}

/// The state of the command in slot-holding `id`, read over Modbus.
async fn state_of(ctx: &mut tokio_modbus::client::Context, id: u64) -> Option<(u16, u16)> {
    let regs = ctx.read_input_registers(LOG_BASE, LOG_REGISTERS).await.expect("io").expect("read");
    (0..8).find_map(|s| {
        let at = usize::from(SLOT_BASE - LOG_BASE + s * SLOT_STRIDE);
        let cmd = regs[at..at + 4].iter().fold(0u64, |a, w| (a << 16) | u64::from(*w));
        (cmd == id).then(|| (regs[at + 8], regs[at + 9]))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_county_of_1000_speakers_behind_50_village_gateways_is_built_and_served() {
    let started = Instant::now();
    let spec = CountySpec {
        villages: 50,
        speakers_per_village: 20,
        meters: 0,
        cows: 0,
        speaker_mix: SpeakerMix::realistic(),
        ..CountySpec::demo()
    };
    let county = county(spec);
    let built = started.elapsed();
    let plan = county.plan().clone();
    let village_gateways: Vec<_> =
        plan.gateways.iter().filter(|g| g.devices.iter().any(|d| d.kind == protocol::DeviceKind::Speaker)).collect();
    assert_eq!(village_gateways.len(), 50);
    assert!(village_gateways.iter().all(|g| g.devices.len() == 20));
    let conditions = county.speaker_conditions();
    assert_eq!(conditions.len(), 1000);
    let slow = conditions.iter().filter(|(_, c)| matches!(c, SpeakerCondition::Slow { .. })).count();
    let failing = conditions.iter().filter(|(_, c)| *c == SpeakerCondition::AmplifierFault).count();
    let offline = county.faults().iter().filter(|(_, f)| *f == Fault::SpeakerOffline).count();
    // Shares of 3 %, 10 % and 1 %, drawn per speaker: within a few standard deviations.
    assert!((10..=55).contains(&offline), "offline {offline}");
    assert!((60..=140).contains(&slow), "slow {slow}");
    assert!((2..=25).contains(&failing), "failing {failing}");
    assert_eq!(county.provision_speakers(issuer().verifying_key().to_bytes()), Ok(1000));
    let servers = county.serve().await.expect("serve");
    assert!(servers.len() >= 50);
    assert!(built < Duration::from_secs(20), "building took {built:?}");

    // A healthy speaker takes a signed play through its mailbox and plays it.
    let healthy = conditions
        .iter()
        .map(|(id, _)| id.as_str())
        .find(|id| {
            county.speaker_condition(id) == Ok(SpeakerCondition::Healthy) && county.read(id, Table::Input, 0, 1).is_ok()
        })
        .expect("a healthy reachable speaker");
    let (gw, _) = plan.device(healthy).expect("in plan");
    let mut ctx = client(&servers, &county, healthy).await;
    deliver(&mut ctx, MAILBOX.0, &play(1_000_001, &gw.id, healthy, county.now())).await;
    assert_eq!(state_of(&mut ctx, 1_000_001).await, Some((CommandState::Playing as u16, 0)));

    // Every terminal has its own receipt key, deterministic from the county's seed; the
    // one it shows in input 600-615 verifies what it signed about the play.
    let keys = county.speaker_public_keys();
    assert_eq!(keys.len(), 1000);
    assert_eq!(keys.iter().map(|(_, k)| *k).collect::<std::collections::BTreeSet<_>>().len(), 1000, "all distinct");
    let index = keys.iter().position(|(id, _)| id == healthy).expect("a key");
    let seed = simulator::speaker_seed(CountySpec::demo().seed, index);
    assert_eq!(keys[index].1, SigningKey::from_bytes(&seed).verifying_key().to_bytes());
    let shown = ctx
        .read_input_registers(protocol::receipt::PUBLIC_KEY_BASE, protocol::receipt::PUBLIC_KEY_REGISTERS)
        .await
        .expect("io")
        .expect("read");
    let shown: Vec<u8> = shown.iter().flat_map(|w| w.to_be_bytes()).collect();
    assert_eq!(shown, keys[index].1);
    let log = ctx.read_input_registers(LOG_BASE, LOG_REGISTERS).await.expect("io").expect("read");
    let slot = protocol::receipt::slot_of(&log, 1_000_001).expect("in the log");
    let report = *firmware::speaker::decode_log(&log).unwrap().slots.iter().find(|r| r.command == 1_000_001).unwrap();
    let block = ctx
        .read_input_registers(protocol::receipt::block_address(slot), protocol::receipt::BLOCK_REGISTERS)
        .await
        .expect("io")
        .expect("read");
    let block = protocol::receipt::ReceiptBlock::decode(&block).expect("a block");
    assert_eq!(block.seq, report.seq);
    let receipt = protocol::receipt::Receipt::of_slot(&gw.id, healthy, &report, block.counter);
    let key = ed25519_dalek::VerifyingKey::from_bytes(&keys[index].1).unwrap();
    assert_eq!(receipt.verify(&key, &block.sig), Ok(()), "the speaker signed its playing");

    // A failing one verifies it but cannot play; it says so.
    let broken = conditions.iter().find(|(_, c)| *c == SpeakerCondition::AmplifierFault).map(|(id, _)| id.as_str());
    if let Some(broken) = broken.filter(|id| county.read(id, Table::Input, 0, 1).is_ok()) {
        let (gw, _) = plan.device(broken).expect("in plan");
        let mut ctx = client(&servers, &county, broken).await;
        deliver(&mut ctx, MAILBOX.0, &play(1_000_002, &gw.id, broken, county.now())).await;
        let (state, reason) = state_of(&mut ctx, 1_000_002).await.expect("reported");
        assert_eq!((state, reason), (CommandState::Failed as u16, firmware::speaker::Reason::NotReady as u16));
    }
    county.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_speaker_answers_late_and_an_unprovisioned_one_refuses_commands() {
    let county = county(CountySpec { meters: 0, cows: 0, ..CountySpec::demo() });
    let servers = county.serve().await.expect("serve");
    county.set_speaker_condition("dongcun-speaker-1", SpeakerCondition::Slow { delay_ms: 300 }).expect("slow");
    let mut ctx = client(&servers, &county, "dongcun-speaker-1").await;
    let t = Instant::now();
    ctx.read_input_registers(0, 1).await.expect("io").expect("read");
    assert!(t.elapsed() >= Duration::from_millis(300), "answered after {:?}", t.elapsed());

    deliver(&mut ctx, MAILBOX.0, &play(5, "gw-dongcun", "dongcun-speaker-1", county.now())).await;
    let (state, reason) = state_of(&mut ctx, 5).await.expect("reported");
    assert_eq!((state, reason), (CommandState::Refused as u16, firmware::speaker::Reason::NotProvisioned as u16));
    assert!(county.set_speaker_condition("waterworks-pump-1", SpeakerCondition::Healthy).is_err());
    county.shutdown();
}
