//! Attacks on the MQTT plane of a running demo (issue 11), each over a real socket to the
//! embedded broker, each with its positive control: the real gateway's readings keep
//! arriving, ingest stays healthy, and its memory stays bounded.
//!
//! Who attacks:
//! - a stranger with an anonymous MQTT client (no key at all);
//! - a stolen gateway: the test reads gateway A's key file from beside A's queue;
//! - A's key publishing as gateway B;
//! - a compromised broker: publishing directly on gateways' downlinks;
//! - a stolen village gateway relaying a `played` its speaker did not sign.
//!
//! Bounds asserted: ingest's resident memory grows by less than [`RSS_GROWTH_MIB`] over all
//! the floods; every refusal is counted under a fixed reason; nothing of an unknown gateway
//! reaches the inventory.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use ingest::demo::{Demo, DemoOptions};
use ingest::pipeline::validate::Reason;
use protocol::codec::{self, Codec};
use protocol::command::{AckState, CommandAck};
use protocol::delivery::DeliveryAck;
use protocol::receipt::SignedReceipt;
use protocol::topic::{self, Channel, Topic};
use protocol::{Batch, Metric, Reading, Timestamp};
use rumqttc::{AsyncClient, MqttOptions, QoS};

use testkit::eventually;

use crate::common::now_ms;

/// Most ingest's resident memory may grow (MiB) over every flood of this suite.
const RSS_GROWTH_MIB: u64 = 64;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()))
        .unwrap_or(0)
}

/// A client on the demo's broker that logs in with `login`.
fn attacker(demo: &Demo, id: &str, login: (String, String)) -> AsyncClient {
    let addr = demo.ingest.mqtt.unwrap();
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(5)).set_inflight(500).set_max_packet_size(2 << 20, 2 << 20);
    o.set_credentials(login.0, login.1);
    let (c, mut ev) = AsyncClient::new(o, 4096);
    tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    c
}

/// Whether the broker accepts a connection as `id` with `login` (`None`: anonymous).
async fn admitted(demo: &Demo, id: &str, login: Option<(String, String)>) -> bool {
    let addr = demo.ingest.mqtt.unwrap();
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(5));
    if let Some((u, p)) = login {
        o.set_credentials(u, p);
    }
    let (c, mut ev) = AsyncClient::new(o, 16);
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ev.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(a))) => {
                    return a.code == rumqttc::ConnectReturnCode::Success;
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await
    .unwrap_or(false);
    let _ = c.disconnect().await;
    answer
}

async fn healthy(demo: &Demo) -> bool {
    let url = format!("http://{}/api/v1/health", demo.ingest.http);
    reqwest::get(url).await.is_ok_and(|r| r.status().is_success())
}

fn rejected(demo: &Demo, reason: Reason) -> u64 {
    demo.ingest.state.metrics.rejected_count(reason)
}

/// Waits until `device` has a reading newer than `after` (the real gateway still delivers).
async fn still_delivering(demo: &Demo, device: &str, after: i64) {
    eventually(&format!("a reading of {device} after the attack"), Duration::from_secs(30), || async {
        let newest =
            demo.ingest.state.store.latest().into_iter().filter(|p| p.device == device).map(|p| p.point.ts).max()?;
        (newest.0 > after).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgeries_replays_and_floods_are_refused_by_reason_while_the_real_gateways_keep_delivering() {
    let _heavy = crate::common::MEMORY_HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let opts = DemoOptions {
        http: SocketAddr::from(([127, 0, 0, 1], 0)),
        mqtt: SocketAddr::from(([127, 0, 0, 1], 0)),
        data: Some(dir.path().to_path_buf()),
        ..DemoOptions::default()
    };
    let demo = Demo::start(opts).await.expect("demo starts");
    demo.county.set_random_outages(false);
    let plan = demo.county.plan().clone();
    let pump = plan.devices().find(|d| d.kind == protocol::DeviceKind::PumpStation).unwrap().id.clone();
    let gw_a = plan.gateways.iter().find(|g| g.devices.iter().any(|d| d.id == pump)).unwrap().clone();
    let gw_b = plan.gateways.iter().find(|g| g.id != gw_a.id).unwrap().clone();
    let (a, b) = (gw_a.id.clone(), gw_b.id.clone());
    let tenant = gw_a.tenant.clone();
    // Positive control before anything: the real gateway delivers.
    still_delivering(&demo, &pump, now_ms() - 60_000).await;
    let rss0 = rss_kib();
    let ingest_vk = ed25519_dalek::VerifyingKey::from_bytes(&demo.ingest.state.commands.public_key()).unwrap();
    let stolen = ingest::demo::gateway_identity(&demo.data_dir, &a).unwrap();
    let a_login = (a.clone(), stolen.link_key(&ingest_vk, &tenant, &a).unwrap().broker_password());
    let ingest_login = demo.ingest.broker_login.clone().unwrap();

    // 0. The broker is closed to strangers: anonymous, a guessed password, a gateway not
    //    enrolled, A's login under B's or ingest's client id, ingest's login under a
    //    gateway's client id: all refused. Positive controls: A's and ingest's own logins.
    assert!(!admitted(&demo, "stranger", None).await, "an anonymous client connected");
    assert!(!admitted(&demo, &a, Some((a.clone(), "guess".into()))).await);
    assert!(!admitted(&demo, "gw-nobody", Some(("gw-nobody".into(), a_login.1.clone()))).await);
    assert!(!admitted(&demo, &b, Some(a_login.clone())).await, "A's login took B's client id");
    assert!(!admitted(&demo, "ingest", Some(a_login.clone())).await, "A's login took ingest's client id");
    assert!(!admitted(&demo, &a, Some(ingest_login.clone())).await, "ingest's login took A's client id");
    assert!(admitted(&demo, "watcher", Some(ingest_login.clone())).await, "positive control: ingest's login");
    assert!(healthy(&demo).await, "ingest's own client was not pushed off");

    // From here on the attacker holds ingest's broker login: a compromised broker, which
    // can publish anything anywhere. Trust must not rest on it.
    let stranger = attacker(&demo, "stranger", ingest_login.clone());
    let telemetry_a = topic::topic(&tenant, &a, Channel::Telemetry);
    let forged = |gw: &str, seq: u64| {
        let readings = vec![Reading::new(pump.as_str(), Metric::new("tank_level"), Timestamp(now_ms()), 0.01)];
        codec::encode(&Batch { gateway: gw.into(), seq, readings }, Codec::Binary)
    };

    // 1. A stranger's spoofed batches as gateway A (no envelope; an envelope with a made-up
    //    key): unsigned / bad_signature, none stored.
    let (unsigned0, bad0) = (rejected(&demo, Reason::Unsigned), rejected(&demo, Reason::BadSignature));
    let fake = protocol::auth::LinkKey::for_gateway(
        &ed25519_dalek::SigningKey::from_bytes(&[66u8; 32]),
        &ed25519_dalek::VerifyingKey::from_bytes(&demo.ingest.state.commands.public_key()).unwrap(),
        &tenant,
        &a,
    )
    .unwrap();
    let t0 = now_ms();
    for seq in 1..=150u64 {
        stranger.publish(&telemetry_a, QoS::AtLeastOnce, false, forged(&a, 1 << 40 | seq)).await.unwrap();
        let sealed =
            protocol::auth::seal_mac(&Topic::new(&tenant, &a, Channel::Telemetry), &fake, seq, &forged(&a, seq));
        stranger.publish(&telemetry_a, QoS::AtLeastOnce, false, sealed).await.unwrap();
    }
    eventually("300 spoofed batches refused", Duration::from_secs(30), || async {
        (rejected(&demo, Reason::Unsigned) >= unsigned0 + 150 && rejected(&demo, Reason::BadSignature) >= bad0 + 150)
            .then_some(())
    })
    .await;
    still_delivering(&demo, &pump, t0).await;
    let low = demo.ingest.state.store.latest().into_iter().any(|p| p.device == pump && p.point.value == 0.01);
    assert!(!low, "a forged tank level was stored");

    // 2. A stolen gateway: A's key publishing as B is refused; A's key on A's own topic
    //    with seq 2^62 is refused as out of range and never becomes A's mark.
    let as_b = stolen.link_key(&ingest_vk, &tenant, &b).unwrap();
    let bad1 = rejected(&demo, Reason::BadSignature);
    let sealed =
        protocol::auth::seal_mac(&Topic::new(&tenant, &b, Channel::Telemetry), &as_b, 1 << 20, &forged(&b, 1 << 20));
    stranger.publish(topic::topic(&tenant, &b, Channel::Telemetry), QoS::AtLeastOnce, false, sealed).await.unwrap();
    eventually("A's key as B refused", Duration::from_secs(20), || async {
        (rejected(&demo, Reason::BadSignature) > bad1).then_some(())
    })
    .await;
    let own = stolen.link_key(&ingest_vk, &tenant, &a).unwrap();
    let mark_before = demo.ingest.state.store.gateway_seq(&a).unwrap_or(0);
    let huge = 1u64 << 62;
    let range0 = rejected(&demo, Reason::SeqOutOfRange);
    for _ in 0..2 {
        let sealed =
            protocol::auth::seal_mac(&Topic::new(&tenant, &a, Channel::Telemetry), &own, huge, &forged(&a, huge));
        stranger.publish(&telemetry_a, QoS::AtLeastOnce, false, sealed).await.unwrap();
    }
    eventually("seq 2^62 refused as out of range", Duration::from_secs(20), || async {
        (rejected(&demo, Reason::SeqOutOfRange) >= range0 + 2).then_some(())
    })
    .await;
    let t1 = now_ms();
    still_delivering(&demo, &pump, t1).await;
    let mark = demo.ingest.state.store.gateway_seq(&a).unwrap_or(0);
    assert!(mark >= mark_before && mark < huge, "the mark moved to {mark}");

    // 3. A compromised broker: a forged delivery ack (unsigned, then signed by a stranger)
    //    on A's downlink does not empty A's queue: every batch A seals still arrives.
    let delivery = topic::topic(&tenant, &a, Channel::Delivery);
    let ack = DeliveryAck { seq: u64::MAX / 2 }.to_json();
    stranger.publish(&delivery, QoS::AtLeastOnce, false, ack.clone()).await.unwrap();
    let signed_by_stranger = protocol::auth::seal_signed(
        &Topic::new(&tenant, &a, Channel::Delivery),
        &ed25519_dalek::SigningKey::from_bytes(&[67u8; 32]),
        1,
        &ack,
    );
    stranger.publish(&delivery, QoS::AtLeastOnce, false, signed_by_stranger).await.unwrap();
    let before = demo.ingest.state.store.gateway_seq(&a).unwrap_or(0);
    eventually("A's next batches stored after the forged acks", Duration::from_secs(30), || async {
        (demo.ingest.state.store.gateway_seq(&a).unwrap_or(0) >= before + 3).then_some(())
    })
    .await;

    // 4. A forged "played" (unsigned JSON on A's ack topic) and an ack flood with changing
    //    reasons: refused; no new label values; nothing reaches the audit log.
    let audit = dir.path().join("commands.audit.jsonl");
    let audit_len = std::fs::metadata(&audit).map(|m| m.len()).unwrap_or(0);
    let ack_topic = topic::topic(&tenant, &a, Channel::CommandAck);
    let unsigned1 = rejected(&demo, Reason::Unsigned);
    for i in 0..2000u64 {
        let a = CommandAck {
            id: 1_000_000 + i,
            device: "speaker".into(),
            ts: Timestamp(now_ms()),
            state: if i == 0 { AckState::Played } else { AckState::Refused },
            reason: Some(format!("word{i} {}", "x".repeat(200))),
            receipt: None,
        };
        stranger.publish(&ack_topic, QoS::AtLeastOnce, false, serde_json::to_vec(&a).unwrap()).await.unwrap();
    }
    // 5. Status floods of gateways nobody enrolled, and retained ones.
    for i in 0..2000u64 {
        let t = topic::topic(&tenant, &format!("gw-nobody-{i}"), Channel::Status);
        let body = format!("{{\"gateway\":\"gw-nobody-{i}\",\"online\":true}}");
        stranger.publish(t, QoS::AtLeastOnce, i % 10 == 0, body.into_bytes()).await.unwrap();
    }
    eventually("the floods refused", Duration::from_secs(60), || async {
        (rejected(&demo, Reason::Unsigned) >= unsigned1 + 4000).then_some(())
    })
    .await;
    assert_eq!(
        demo.ingest.state.inventory.gateway_online("gw-nobody-7"),
        None,
        "an unknown gateway reached the inventory"
    );
    assert_eq!(std::fs::metadata(&audit).map(|m| m.len()).unwrap_or(0), audit_len, "the audit log grew");
    let metrics = reqwest::get(format!("http://{}/metrics", demo.ingest.http)).await.unwrap().text().await.unwrap();
    assert!(!metrics.contains("word1"), "text from a message became a label");
    assert!(healthy(&demo).await, "health stays 200");
    let t2 = now_ms();
    still_delivering(&demo, &pump, t2).await;
    let grown = rss_kib().saturating_sub(rss0) / 1024;
    assert!(grown < RSS_GROWTH_MIB, "the process grew by {grown} MiB under the floods");

    forged_played_relayed_by_a_stolen_gateway_is_refused_and_the_real_one_recorded(&demo).await;
    demo.stop().await;
}

/// `ingest_broadcast_receipts_refused_total{reason}` as `/metrics` shows it.
async fn receipt_refusals(demo: &Demo, reason: &str) -> u64 {
    let text = reqwest::get(format!("http://{}/metrics", demo.ingest.http)).await.unwrap().text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with("ingest_broadcast_receipts_refused_total") && l.contains(&format!("\"{reason}\"")))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// The speaker's signed receipt of `state` for `speaker` in broadcast `id`, from the
/// broadcast audit log (where ingest keeps the receipt of every state it recorded).
fn recorded_receipt(demo: &Demo, id: u64, speaker: &str, state: &str) -> Option<SignedReceipt> {
    crate::broadcast::audit_lines(demo).into_iter().map(|l| l["event"].clone()).find_map(|e| {
        (e["type"] == "delivery" && e["broadcast"] == id && e["speaker"] == speaker && e["state"] == state)
            .then(|| serde_json::from_value(e["receipt"].clone()).ok())
            .flatten()
    })
}

/// 6. Proof of play. A stolen village gateway (its key read from beside its queue) relays
///    `played` acks for a broadcast its speaker never got (the speaker is offline): with no
///    receipt, with one signed by another key, with the speaker's real `played` of another
///    command, and the speaker's older real `playing` replayed. Each is refused under its
///    counted reason; the delivery never shows `played` and the audit log never gets it.
///    Positive control: the same speaker's real `played`, signed by it, is recorded (and
///    its receipt, kept in the audit log, verifies with the key enrolled for it).
async fn forged_played_relayed_by_a_stolen_gateway_is_refused_and_the_real_one_recorded(demo: &Demo) {
    use crate::broadcast::{create, get, in_secs, state_of, wait_for};
    let plan = demo.county.plan().clone();
    let faults = demo.county.faults();
    let (gw, speaker) = plan
        .gateways
        .iter()
        .find_map(|g| {
            let s = g.devices.iter().find(|d| {
                d.kind == protocol::DeviceKind::Speaker
                    && demo.county.speaker_condition(&d.id) == Ok(simulator::SpeakerCondition::Healthy)
                    && !faults.iter().any(|(id, _)| *id == d.id)
            })?;
            Some((g.clone(), s.id.clone()))
        })
        .expect("a healthy speaker");
    let enrolled = demo.county.speaker_public_keys().into_iter().find(|(id, _)| *id == speaker).unwrap().1;
    let enrolled = ed25519_dalek::VerifyingKey::from_bytes(&enrolled).unwrap();
    let blue = |text: &str| serde_json::json!({"level": "blue", "text": text, "targets": [speaker], "expires_at": in_secs(300)});

    // Positive control: the speaker plays a real broadcast; `played` is recorded on its
    // own receipt.
    let real = create(demo, &demo.admin_token, blue("今天下午停水。")).await;
    wait_for(demo, real, "the real broadcast played", 60, |v| state_of(v, &speaker) == "played").await;
    let real_played = recorded_receipt(demo, real, &speaker, "played").expect("the played receipt in the audit log");
    assert_eq!(real_played.verify(&enrolled), Ok(()), "signed by the speaker's enrolled key");
    let real_playing = recorded_receipt(demo, real, &speaker, "playing").expect("the playing receipt");
    assert!(real_playing.receipt.counter < real_played.receipt.counter);

    // The speaker goes offline; a second broadcast cannot reach it.
    demo.county.inject(&speaker, simulator::Fault::SpeakerOffline).unwrap();
    let target = create(demo, &demo.admin_token, blue("假消息：演习结束。")).await;
    let v = wait_for(demo, target, "a command sent to the offline speaker", 60, |v| {
        let sent = |d: &serde_json::Value| d["commands"].as_array().is_some_and(|c| !c.is_empty());
        v["deliveries"].as_array().is_some_and(|d| d.iter().any(sent))
    })
    .await;
    let delivery = v["deliveries"].as_array().unwrap().iter().find(|d| d["speaker"] == speaker).unwrap().clone();
    let command = delivery["commands"][0].as_u64().unwrap();
    let real_command = real_played.receipt.command;

    // The stolen gateway: its key, its link key with ingest, counters far ahead of its own.
    let tenant = gw.tenant.clone();
    let ingest_vk = ed25519_dalek::VerifyingKey::from_bytes(&demo.ingest.state.commands.public_key()).unwrap();
    let stolen = ingest::demo::gateway_identity(&demo.data_dir, &gw.id).unwrap();
    let link = stolen.link_key(&ingest_vk, &tenant, &gw.id).unwrap();
    // Published through the compromised broker (the real gateway keeps its session).
    let relay = attacker(demo, "relay", demo.ingest.broker_login.clone().unwrap());
    let ack_topic = Topic::new(&tenant, &gw.id, Channel::CommandAck);
    let mut counter = u64::MAX / 2;
    let mut send = |id: u64, state: AckState, receipt: Option<SignedReceipt>| {
        let receipt = receipt.map(Box::new);
        let ack = CommandAck { id, device: speaker.clone(), ts: Timestamp(now_ms()), state, reason: None, receipt };
        counter += 1;
        protocol::auth::seal_mac(&ack_topic, &link, counter, &serde_json::to_vec(&ack).unwrap())
    };
    let before: Vec<u64> = receipt_refusal_counts(demo).await;
    let someone = ed25519_dalek::SigningKey::from_bytes(&[68u8; 32]);
    let forged_receipt = protocol::receipt::Receipt {
        gateway: gw.id.clone(),
        device: speaker.clone(),
        command,
        broadcast: target,
        state: protocol::speaker::CommandState::Played as u16,
        reason: 0,
        counter: real_played.receipt.counter + 100,
    };
    let forgeries = [
        // The gateway's own word that it played.
        send(command, AckState::Played, None),
        // A receipt it made itself (or another speaker's key).
        send(command, AckState::Played, Some(forged_receipt.signed(&someone))),
        // The speaker's real `played`, of another command, moved onto this one.
        send(command, AckState::Played, Some(real_played.clone())),
        // The speaker's older real receipt replayed for its own command.
        send(real_command, AckState::Playing, Some(real_playing.clone())),
    ];
    let topic = topic::topic(&tenant, &gw.id, Channel::CommandAck);
    for f in forgeries {
        relay.publish(&topic, QoS::AtLeastOnce, false, f).await.unwrap();
    }
    eventually("each forged played refused under its reason", Duration::from_secs(30), || async {
        let now = receipt_refusal_counts(demo).await;
        (now.iter().zip(&before).all(|(n, b)| *n > *b)).then_some(())
    })
    .await;

    // Never in the delivery, never in the audit log.
    let v = get(demo, target).await;
    assert_ne!(state_of(&v, &speaker), "played", "{v}");
    let d = v["deliveries"].as_array().unwrap().iter().find(|d| d["speaker"] == speaker).unwrap();
    assert!(d["reached"]["played"].is_null() && d["reached"]["playing"].is_null(), "{d}");
    assert!(recorded_receipt(demo, target, &speaker, "played").is_none());
    let audited = crate::broadcast::audit_lines(demo)
        .into_iter()
        .any(|l| l["event"]["broadcast"] == target && l["event"]["state"] == "played");
    assert!(!audited, "a forged played reached the audit log");
    assert_eq!(state_of(&get(demo, real).await, &speaker), "played", "the real one stays");
    demo.county.clear(&speaker).unwrap();
}

/// Receipt refusals by reason: missing, bad signature, mismatch, replayed.
async fn receipt_refusal_counts(demo: &Demo) -> Vec<u64> {
    let mut out = Vec::new();
    for reason in ["receipt_missing", "receipt_bad_signature", "receipt_mismatch", "receipt_replayed"] {
        out.push(receipt_refusals(demo, reason).await);
    }
    out
}
