//! A forged broadcast must be impossible even for someone who controls the broker: forged,
//! tampered, expired and replayed commands are refused by the demo's real gateway and by
//! the speaker, and each refusal shows in the delivery state and in the audit log.

use std::time::Duration;

use ed25519_dalek::SigningKey;
use firmware::speaker::{LOG_BASE, LOG_REGISTERS, MAILBOX, Reason, decode_log};
use protocol::Timestamp;
use protocol::command::{Action, Command, Content, Level, Playback};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use simulator::Table;
use testkit::eventually;
use tokio_modbus::prelude::*;

use super::{audit_lines, base, call, create, get, in_secs, small, start, state_of, wait_for};

/// An MQTT client on the demo's broker: the attacker, who sees and sends anything.
async fn attacker(demo: &ingest::demo::Demo) -> (AsyncClient, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
    let broker = demo.ingest.mqtt.expect("broker");
    let mut opts = MqttOptions::new("attacker", broker.ip().to_string(), broker.port());
    opts.set_max_packet_size(1 << 20, 1 << 20);
    // With ingest's own broker login: someone who controls the broker.
    let (user, pass) = demo.ingest.broker_login.clone().expect("ingest's login");
    opts.set_credentials(user, pass);
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    client.subscribe("vt/county/gw-dongcun/down/cmd", QoS::AtLeastOnce).await.expect("subscribe");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send(p.payload.to_vec());
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    (client, rx)
}

fn forged_play(id: u64, device: &str, now: Timestamp) -> Vec<u8> {
    Command {
        id,
        tenant: "county".into(),
        gateway: "gw-dongcun".into(),
        device: device.into(),
        issued_at: now,
        expires_at: Timestamp(now.0 + 600_000),
        action: Action::Play(Playback {
            broadcast: 666,
            level: Level::Red,
            content: Content::Tts { text: "假警报：导弹来袭！".into() },
            repeat: 1,
            volume: Some(100),
            start_at: None,
        }),
    }
    .sign(&SigningKey::from_bytes(&[66u8; 32]))
}

/// Refusal events in the audit log: (reason, command, speaker or device).
fn refusals(demo: &ingest::demo::Demo) -> Vec<(String, u64, String)> {
    audit_lines(demo)
        .into_iter()
        .filter(|l| l["event"]["type"] == "refused")
        .map(|l| {
            let e = &l["event"];
            let who = e["speaker"].as_str().or(e["device"].as_str()).unwrap_or("").to_string();
            (e["reason"].as_str().unwrap_or("").to_string(), e["command"].as_u64().unwrap_or(0), who)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tampered_expired_and_replayed_commands_are_refused_by_gateway_and_speaker_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = start(small(2), dir.path()).await;
    let (mallory, mut overheard) = attacker(&demo).await;
    let topic = "vt/county/gw-dongcun/down/cmd";
    let s1 = "dongcun-speaker-1";

    // A legitimate broadcast plays; the attacker records its command on the way.
    let ok = create(
        &demo,
        &demo.admin_token,
        json!({"level": "blue", "text": "今天下午停水。", "targets": [s1], "expires_at": in_secs(8)}),
    )
    .await;
    wait_for(&demo, ok, "played", 30, |v| state_of(v, s1) == "played").await;
    let captured = tokio::time::timeout(Duration::from_secs(5), overheard.recv())
        .await
        .expect("overheard in time")
        .expect("a command");

    // Gateway: a replay of the captured command, and a tampered copy of it.
    mallory.publish(topic, QoS::AtLeastOnce, false, captured.clone()).await.unwrap();
    let mut tampered = captured.clone();
    let at = tampered.len() - 67;
    tampered[at] ^= 0x02;
    mallory.publish(topic, QoS::AtLeastOnce, false, tampered.clone()).await.unwrap();
    // Gateway: a command forged with another key.
    let now = daemon::now();
    let forged_id = u64::try_from(now.0).unwrap() + 10_000_000;
    mallory.publish(topic, QoS::AtLeastOnce, false, forged_play(forged_id, s1, now)).await.unwrap();
    let cid = protocol::command::peek_id(&captured).unwrap();
    let by_gateway = eventually("gateway refusals in the audit log", Duration::from_secs(15), || async {
        let r = refusals(&demo);
        let has = |code: &str, id: u64| {
            r.iter().any(|(reason, c, _)| reason.starts_with(code) && reason.contains("(gateway)") && *c == id)
        };
        (has("replayed", cid) && has("bad_signature", cid) && has("bad_signature", forged_id)).then_some(r)
    })
    .await;
    assert!(by_gateway.iter().any(|(_, c, who)| *c == cid && who == s1), "linked to the speaker: {by_gateway:?}");
    let v = get(&demo, ok).await;
    assert_eq!(state_of(&v, s1), "played", "a replay does not change what the speaker proved");
    let reasons: Vec<&str> = v["refusals"].as_array().unwrap().iter().filter_map(|r| r["reason"].as_str()).collect();
    assert!(
        reasons.iter().any(|r| r.starts_with("replayed")) && reasons.iter().any(|r| r.starts_with("bad_signature")),
        "{v}"
    );
    let (status, foreign) =
        call("GET", &format!("{}/api/v1/broadcasts/refusals", base(&demo)), Some(&demo.admin_token), None).await;
    assert_eq!(status, 200);
    assert!(foreign.as_array().unwrap().iter().any(|r| r["command"] == forged_id), "{foreign}");

    // Gateway: once the broadcast expired, its captured command is refused as expired.
    tokio::time::sleep(Duration::from_secs(8)).await;
    mallory.publish(topic, QoS::AtLeastOnce, false, captured.clone()).await.unwrap();
    eventually("expired refusal", Duration::from_secs(10), || async {
        refusals(&demo).iter().any(|(r, c, _)| r.starts_with("expired") && *c == cid).then_some(())
    })
    .await;

    // Someone with a cable on the speaker's bus skips the gateway: the speaker itself
    // refuses forged, tampered, expired and replayed envelopes.
    let servers = demo.county.serve().await.unwrap();
    let (addr, unit) = {
        let (gw, d) = demo.county.plan().device(s1).unwrap();
        (servers.iter().find(|(id, _)| *id == gw.id).unwrap().1, d.unit)
    };
    let mut bus = tcp::connect_slave(addr, Slave(unit)).await.unwrap();
    let write = |wire: Vec<u8>| {
        let words: Vec<u16> =
            wire.chunks(2).map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])).collect();
        (words, wire.len() as u16)
    };
    let speaker_forged_id = forged_id + 1;
    for envelope in [forged_play(speaker_forged_id, s1, daemon::now()), tampered.clone(), captured.clone()] {
        let (words, len) = write(envelope);
        for (i, chunk) in words.chunks(123).enumerate() {
            bus.write_multiple_registers(MAILBOX.0 + 1 + (i * 123) as u16, chunk).await.unwrap().unwrap();
        }
        bus.write_single_register(MAILBOX.0, len).await.unwrap().unwrap();
        let regs = bus.read_input_registers(LOG_BASE, LOG_REGISTERS).await.unwrap().unwrap();
        let block = decode_log(&regs).unwrap();
        let Some(Err((_, reason))) = block.verdict else { panic!("the speaker accepted it: {block:?}") };
        assert!(matches!(reason, Reason::BadSignature | Reason::Expired | Reason::Replayed), "{reason:?}");
    }
    assert_ne!(demo.county.read(s1, Table::Input, 0, 1).unwrap()[0], 1, "nothing plays");
    // A replay of a fresh, unexpired command straight into the mailbox: the speaker's own
    // replay window refuses it.
    let fresh = create(
        &demo,
        &demo.admin_token,
        json!({"level": "blue", "text": "请节约用水。", "targets": [s1], "expires_at": in_secs(600)}),
    )
    .await;
    wait_for(&demo, fresh, "played", 30, |v| state_of(v, s1) == "played").await;
    let mut fresh_wire = None;
    while let Ok(w) = overheard.try_recv() {
        fresh_wire = Some(w);
    }
    let fresh_wire = fresh_wire.expect("the fresh command was overheard");
    let fresh_id = protocol::command::peek_id(&fresh_wire).unwrap();
    let (words, len) = write(fresh_wire);
    for (i, chunk) in words.chunks(123).enumerate() {
        bus.write_multiple_registers(MAILBOX.0 + 1 + (i * 123) as u16, chunk).await.unwrap().unwrap();
    }
    bus.write_single_register(MAILBOX.0, len).await.unwrap().unwrap();
    let block = decode_log(&bus.read_input_registers(LOG_BASE, LOG_REGISTERS).await.unwrap().unwrap()).unwrap();
    assert_eq!(block.verdict, Some(Err((fresh_id, Reason::Replayed))));

    let by_speaker = eventually("speaker refusals reported to ingest", Duration::from_secs(15), || async {
        let r = refusals(&demo);
        let has = |code: &str, id: u64| {
            r.iter().any(|(reason, c, _)| reason.starts_with(code) && reason.contains("(speaker)") && *c == id)
        };
        (has("bad_signature", speaker_forged_id) && has("replayed", fresh_id)).then_some(r)
    })
    .await;
    assert!(by_speaker.iter().any(|(r, c, _)| r.contains("(speaker)") && *c == cid), "{by_speaker:?}");

    // A signature that does not verify, refused by the speaker, shows in the delivery:
    // the terminal trusts another key (a mis-provisioned one), so ingest's command is to it
    // what a tampered one is. The gateway verified it and wrote it; the speaker refused it.
    let s2 = "dongcun-speaker-2";
    let mallory_key = SigningKey::from_bytes(&[66u8; 32]).verifying_key().to_bytes();
    demo.county.provision_speakers(mallory_key).unwrap();
    let altered = create(
        &demo,
        &demo.admin_token,
        json!({"level": "blue", "text": "检修通知。", "targets": [s2], "expires_at": in_secs(600)}),
    )
    .await;
    let v =
        wait_for(&demo, altered, "the delivery the speaker refused failed", 20, |v| state_of(v, s2) == "failed").await;
    let d: &Value = &v["deliveries"][0];
    let reason = d["reason"].as_str().unwrap_or("");
    assert!(reason.starts_with("bad_signature") && reason.contains("(speaker)"), "{d}");
    assert!(v["feedback"]["4"] == 1, "feedback 4 (failed): {v}");
    assert_ne!(demo.county.read(s2, Table::Input, 0, 1).unwrap()[0], 1);
    demo.county.provision_speakers(demo.ingest.state.broadcasts.public_key()).unwrap();

    // The same at the gateway: one configured with a key that is not ingest's refuses the
    // command before it touches the speaker. Since its broker login and every uplink
    // message are derived from ingest's key, such a gateway is also cut off: the broker
    // does not admit it (and anything it sent would not verify), so the delivery is never
    // confirmed, and the speaker stays silent.
    demo.restart_gateway("gw-dongcun", |c| c.command_key = Some(mallory_key)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let refused = create(
        &demo,
        &demo.admin_token,
        json!({"level": "blue", "text": "检修通知。", "targets": [s2], "expires_at": in_secs(600)}),
    )
    .await;
    testkit::eventually("the misconfigured gateway offline", Duration::from_secs(30), || async {
        (demo.ingest.state.inventory.gateway_online("gw-dongcun") == Some(false)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let v = super::get(&demo, refused).await;
    assert_ne!(state_of(&v, s2), "played", "{v}");
    assert_ne!(demo.county.read(s2, Table::Input, 0, 1).unwrap()[0], 1);
    let audited = refusals(&demo);
    assert!(
        audited.iter().any(|(r, _, who)| who == s2 && r.starts_with("bad_signature") && r.contains("(speaker)")),
        "the speaker's refusal in the audit log: {audited:?}"
    );

    // Re-provisioned with ingest's key, the same gateway and speaker play again.
    let key = demo.ingest.state.commands.public_key();
    demo.restart_gateway("gw-dongcun", |c| c.command_key = Some(key)).await.unwrap();
    super::gateways_online(&demo, 30).await;
    let again = create(
        &demo,
        &demo.admin_token,
        json!({"level": "blue", "text": "恢复供水。", "targets": [s2], "expires_at": in_secs(600)}),
    )
    .await;
    wait_for(&demo, again, "played after re-provisioning", 60, |v| state_of(v, s2) == "played").await;

    let (_, audit) =
        call("GET", &format!("{}/api/v1/broadcasts/audit", base(&demo)), Some(&demo.admin_token), None).await;
    assert_eq!(audit["verified"], true, "{audit}");
    demo.stop().await;
}
