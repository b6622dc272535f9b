//! A broadcast from ingest to a speaker's mailbox through the whole path: ingest's
//! Commander signs a `play` command, mosquitto carries it, the gateway verifies it and
//! writes it whole into the mailbox of a pymodbus device, and acks `delivered`. What sits
//! in the device's registers then verifies with ingest's public key, as the speaker
//! firmware will check it.

use std::time::Duration;

use gateway::config::{DeviceConfig, GatewayConfig, MqttConfig};
use ingest::command::Issue;
use ingest::inventory::{Device, GatewayInfo, Inventory, InventoryFile, Site};
use protocol::DeviceKind;
use protocol::command::{self, AckState, Action, Content, Level, Playback, ReplayWindow};
use testkit::eventually;
use tokio_modbus::client::Reader;
use tokio_util::sync::CancellationToken;

use crate::common::{Mosquitto, library, modbus_tcp};
use crate::mqtt::ingest_on;

fn inventory(key: Option<String>) -> Inventory {
    Inventory::from_file(InventoryFile {
        sites: vec![Site {
            id: "dongcun".into(),
            name: "Dongcun".into(),
            kind: "village".into(),
            tenant: "county".into(),
            lat: 34.7,
            lon: 113.6,
            village: Some("dongcun".into()),
            district: None,
            township: None,
        }],
        gateways: vec![GatewayInfo {
            id: "gw-spk".into(),
            tenant: "county".into(),
            site: "dongcun".into(),
            public_key: key,
        }],
        devices: vec![Device {
            id: "dongcun-speaker-1".into(),
            kind: DeviceKind::Speaker,
            site: "dongcun".into(),
            gateway: "gw-spk".into(),
            model: "interop-speaker".into(),
            lat: None,
            lon: None,
            public_key: None,
        }],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_broadcast_lands_whole_in_the_speakers_mailbox_and_verifies_there() {
    let dir = tempfile::tempdir().unwrap();
    let mosquitto = Mosquitto::plain(dir.path()).await;
    let (_device, addr) = modbus_tcp().await;
    let (queue, key) = crate::keys::enrol(dir.path(), "gw-spk");
    let running = ingest_on(&dir.path().join("ingest"), mosquitto.port, None, inventory(key)).await;
    let commands = running.state.commands.clone();

    let mut cfg = GatewayConfig::new("gw-spk", "county", MqttConfig { port: mosquitto.port, ..MqttConfig::default() });
    cfg.command_key = Some(commands.public_key());
    cfg.queue.dir = Some(queue);
    cfg.devices = vec![DeviceConfig::tcp("dongcun-speaker-1", "interop-speaker", addr, 1)];
    let stop = CancellationToken::new();
    tokio::spawn(gateway::Gateway::new(cfg, library(), daemon::system_clock()).unwrap().run(stop.clone()));
    eventually("the gateway online", Duration::from_secs(20), || async {
        (running.state.inventory.gateway_online("gw-spk") == Some(true)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut acks = commands.subscribe();
    let text = "山洪预警：请立即撤离到高处。Flash flood warning: move to high ground now.";
    let id = commands
        .issue(Issue {
            tenant: "county".into(),
            gateway: "gw-spk".into(),
            device: "dongcun-speaker-1".into(),
            action: Action::Play(Playback {
                broadcast: 42,
                level: Level::Red,
                content: Content::Tts { text: text.into() },
                repeat: 3,
                volume: Some(90),
                start_at: None,
            }),
            ttl: Duration::from_secs(300),
            expires_at: None,
            issued_by: "duty-officer".into(),
        })
        .await
        .unwrap();
    let ack = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok((_, a)) = acks.recv().await
                && a.id == id
            {
                return a;
            }
        }
    })
    .await
    .expect("an ack");
    assert_eq!(ack.state, AckState::Delivered, "{ack:?}");

    // Read the mailbox back as the firmware will, and verify it as the firmware will.
    let mut ctx = tokio_modbus::client::tcp::connect_slave(addr, tokio_modbus::Slave(1)).await.unwrap();
    let len = ctx.read_holding_registers(1000, 1).await.unwrap().unwrap()[0] as usize;
    let mut words = Vec::new();
    let mut at = 1001u16;
    while words.len() * 2 < len {
        let n = ((len.div_ceil(2) - words.len()) as u16).min(125);
        words.extend(ctx.read_holding_registers(at, n).await.unwrap().unwrap());
        at += n;
    }
    let envelope: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).take(len).collect();
    let key = ed25519_dalek::VerifyingKey::from_bytes(&commands.public_key()).unwrap();
    let cmd = command::open(&envelope, &key, "gw-spk", daemon::now(), &mut ReplayWindow::new())
        .expect("the mailbox holds a command that verifies with ingest's key");
    assert_eq!(cmd.id, id);
    let Action::Play(p) = cmd.action else { panic!("a play command") };
    assert_eq!((p.broadcast, p.level), (42, Level::Red));
    assert_eq!(p.content, Content::Tts { text: text.into() });
    stop.cancel();
    running.stop().await;
}
