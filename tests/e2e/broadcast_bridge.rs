//! The speaker command path of a village gateway, for the broadcast tests until the
//! gateway agent carries it (issue 3): it takes signed commands from
//! `vt/{tenant}/{gateway}/down/cmd`, verifies them as a gateway must
//! (`protocol::command::open`: signature, its own id, expiry, replay), writes them into
//! the speaker's mailbox over real Modbus TCP (data, then the length word), reads the
//! speaker's own verdict and progress from its command log registers every 250 ms, and
//! publishes them as acks on `vt/{tenant}/{gateway}/up/ack`.
//!
//! It is what the gateway is specified to do (docs/BROADCAST.md, "Gateway duties"); the
//! speakers, the broker and ingest are the real ones. One task per gateway, one Modbus
//! connection per gateway (one RS-485 bus), so a slow speaker delays its village's bus as
//! it would in the field.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use firmware::speaker::{CommandState, LOG_BASE, LOG_REGISTERS, MAILBOX, decode_log};
use ingest::demo::Demo;
use protocol::Timestamp;
use protocol::command::{self, AckState, CommandAck, ReplayWindow};
use protocol::topic::{self, Channel, Topic};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio_modbus::client::Context;
use tokio_modbus::prelude::*;

/// How often commands in progress are polled on their speakers.
pub(crate) const POLL: Duration = Duration::from_millis(250);
const TIMEOUT: Duration = Duration::from_millis(500);

/// What a test may do to the path, as someone who controls the broker would.
#[derive(Debug, Default)]
pub(crate) struct Tampering {
    /// Flip a byte of the next command for this speaker before the gateway sees it.
    pub(crate) tamper_next_for: Option<String>,
}

/// The running bridge; aborts its tasks when dropped.
pub(crate) struct Bridge {
    tasks: tokio::task::JoinSet<()>,
    /// Shared with the tasks.
    pub(crate) tampering: Arc<Mutex<Tampering>>,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

struct Route {
    addr: SocketAddr,
    unit: u8,
}

/// Starts the bridge for every gateway of the demo. With `scan_all`, every speaker's
/// command log is read each second too, so refusals of envelopes written straight into a
/// mailbox (not through this gateway) are reported.
pub(crate) async fn start(demo: &Demo, scan_all: bool) -> Bridge {
    let key = VerifyingKey::from_bytes(&demo.ingest.state.broadcasts.public_key()).expect("ingest's key");
    let broker = demo.ingest.mqtt.expect("embedded broker");
    let mut opts = MqttOptions::new("test-speaker-bridge", broker.ip().to_string(), broker.port());
    opts.set_keep_alive(Duration::from_secs(30)).set_max_packet_size(1 << 20, 1 << 20).set_inflight(1000);
    let (client, mut eventloop) = AsyncClient::new(opts, 8192);
    client.subscribe("vt/+/+/down/cmd", QoS::AtLeastOnce).await.expect("subscribe");
    let tampering = Arc::new(Mutex::new(Tampering::default()));
    let mut tasks = tokio::task::JoinSet::new();
    let mut lanes: HashMap<String, mpsc::UnboundedSender<Vec<u8>>> = HashMap::new();
    for g in &demo.gateways {
        let routes: HashMap<String, Route> = g
            .devices
            .iter()
            .filter(|d| d.profile == "vt-sim-speaker")
            .filter_map(|d| match d.transport {
                gateway::config::Transport::Tcp(addr) => Some((d.id.clone(), Route { addr, unit: d.unit })),
                gateway::config::Transport::Rtu(_) => None,
            })
            .collect();
        if routes.is_empty() {
            continue;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        lanes.insert(g.gateway.clone(), tx);
        let lane = Lane {
            tenant: g.tenant.clone(),
            gateway: g.gateway.clone(),
            key,
            window: ReplayWindow::new(),
            routes,
            client: client.clone(),
            ctx: None,
            watching: HashMap::new(),
            reported: HashMap::new(),
            scan_all,
        };
        tasks.spawn(lane.run(rx));
    }
    let t = tampering.clone();
    tasks.spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let Ok(topic) = Topic::parse(&p.topic) else { continue };
                    let mut wire = p.payload.to_vec();
                    if let Ok(cmd) = protocol::command::Command::from_bytes(body(&wire)) {
                        let mut tm = t.lock().expect("tampering");
                        if tm.tamper_next_for.as_deref() == Some(cmd.device.as_str()) {
                            tm.tamper_next_for = None;
                            // The repeat count of a play (before volume and start time):
                            // the body still decodes, so the refusal names its command id.
                            let at = wire.len() - 67;
                            wire[at] ^= 0x02;
                        }
                    }
                    if let Some(lane) = lanes.get(topic.gateway) {
                        let _ = lane.send(wire);
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    // Wait until the subscription is in place.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Bridge { tasks, tampering }
}

/// The body of an envelope (for peeking at its device), or nothing.
fn body(wire: &[u8]) -> &[u8] {
    // 0xC5, varint length, body, signature.
    let mut len = 0usize;
    let mut shift = 0;
    let mut i = 1;
    while i < wire.len() && i < 6 {
        let b = wire[i];
        len |= usize::from(b & 0x7F) << shift;
        shift += 7;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    wire.get(i..i + len).unwrap_or(&[])
}

struct Lane {
    tenant: String,
    gateway: String,
    key: VerifyingKey,
    window: ReplayWindow,
    routes: HashMap<String, Route>,
    client: AsyncClient,
    ctx: Option<(SocketAddr, Context)>,
    /// device -> command ids still in progress on it.
    watching: HashMap<String, Vec<u64>>,
    /// (device, command) -> last state reported.
    reported: HashMap<(String, u64), CommandState>,
    scan_all: bool,
}

impl Lane {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
        let mut tick = tokio::time::interval(POLL);
        let mut scans = 0u32;
        loop {
            // Commands first: a new broadcast never waits behind the polling of old ones.
            tokio::select! {
                biased;
                w = rx.recv() => match w {
                    Some(w) => self.handle(&w).await,
                    None => return,
                },
                _ = tick.tick() => {
                    scans += 1;
                    let devices: Vec<String> = if self.scan_all && scans.is_multiple_of(4) {
                        self.routes.keys().cloned().collect()
                    } else {
                        self.watching.iter().filter(|(_, v)| !v.is_empty()).map(|(d, _)| d.clone()).collect()
                    };
                    for d in devices {
                        while let Ok(w) = rx.try_recv() {
                            self.handle(&w).await;
                        }
                        self.poll(&d).await;
                    }
                }
            }
        }
    }

    async fn ack(&mut self, id: u64, device: &str, state: AckState, reason: Option<String>) {
        let ack = CommandAck { id, device: device.into(), ts: gateway::now(), state, reason };
        let topic = topic::topic(&self.tenant, &self.gateway, Channel::CommandAck);
        let payload = serde_json::to_vec(&ack).expect("ack json");
        let _ = self.client.publish(topic, QoS::AtLeastOnce, false, payload).await;
    }

    async fn ctx(&mut self, device: &str) -> Option<&mut Context> {
        let route = self.routes.get(device)?;
        let (addr, unit) = (route.addr, route.unit);
        if self.ctx.as_ref().is_none_or(|(a, _)| *a != addr) {
            let c = tokio::time::timeout(TIMEOUT, tcp::connect(addr)).await.ok()?.ok()?;
            self.ctx = Some((addr, c));
        }
        let (_, c) = self.ctx.as_mut()?;
        c.set_slave(Slave(unit));
        Some(c)
    }

    async fn handle(&mut self, wire: &[u8]) {
        let now: Timestamp = gateway::now();
        let cmd = match command::open(wire, &self.key, &self.gateway, now, &mut self.window) {
            Ok(c) => c,
            Err(e) => {
                let id = command::peek_id(wire).unwrap_or(0);
                let device = protocol::command::Command::from_bytes(body(wire)).map(|c| c.device).unwrap_or_default();
                self.ack(id, &device, AckState::Refused, Some(format!("{}: {e} (gateway)", e.code()))).await;
                return;
            }
        };
        let device = cmd.device.clone();
        if !self.routes.contains_key(&device) {
            self.ack(cmd.id, &device, AckState::Refused, Some("unknown_device (gateway)".into())).await;
            return;
        }
        match self.deliver(&device, wire).await {
            Ok(()) => {
                self.watching.entry(device.clone()).or_default().push(cmd.id);
                self.poll(&device).await;
            }
            Err(e) => {
                self.ctx = None;
                self.ack(cmd.id, &device, AckState::Failed, Some(format!("the speaker did not answer: {e}"))).await;
            }
        }
    }

    /// Writes the envelope into the mailbox. One write of the length word and the data
    /// when they fit the 123 registers of a write (a short TTS command does); otherwise
    /// data from 1001 in writes of at most 123 registers, then the length into 1000, last.
    async fn deliver(&mut self, device: &str, wire: &[u8]) -> Result<(), String> {
        let words: Vec<u16> =
            wire.chunks(2).map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])).collect();
        let len = wire.len() as u16;
        let writes: Vec<(u16, Vec<u16>)> = if words.len() < 123 {
            vec![(MAILBOX.0, std::iter::once(len).chain(words).collect())]
        } else {
            let mut w: Vec<(u16, Vec<u16>)> =
                words.chunks(123).enumerate().map(|(i, c)| (MAILBOX.0 + 1 + (i * 123) as u16, c.to_vec())).collect();
            w.push((MAILBOX.0, vec![len]));
            w
        };
        let ctx = self.ctx(device).await.ok_or("no connection")?;
        for (at, chunk) in writes {
            match tokio::time::timeout(TIMEOUT, ctx.write_multiple_registers(at, &chunk)).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => return Err(format!("exception {e}")),
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err("timeout".into()),
            }
        }
        Ok(())
    }

    /// Reads a speaker's command log and acks what changed.
    async fn poll(&mut self, device: &str) {
        let Some(ctx) = self.ctx(device).await else { return };
        let regs = match tokio::time::timeout(TIMEOUT, ctx.read_input_registers(LOG_BASE, LOG_REGISTERS)).await {
            Ok(Ok(Ok(r))) => r,
            _ => {
                self.ctx = None;
                return;
            }
        };
        let Some(block) = decode_log(&regs) else { return };
        let watched = self.watching.get(device).cloned().unwrap_or_default();
        for slot in block.slots {
            let key = (device.to_string(), slot.command);
            let known = watched.contains(&slot.command);
            let refused_elsewhere = self.scan_all && slot.state == CommandState::Refused;
            if !(known || refused_elsewhere) || self.reported.get(&key) == Some(&slot.state) {
                continue;
            }
            // A speaker that started at once: say delivered first, as it happened.
            if known
                && !self.reported.contains_key(&key)
                && slot.state != CommandState::Received
                && slot.state != CommandState::Refused
            {
                self.ack(slot.command, device, AckState::Delivered, None).await;
            }
            let (state, reason) = slot.ack();
            self.ack(slot.command, device, state, reason.map(|r| format!("{r} (speaker)"))).await;
            self.reported.insert(key, slot.state);
            if slot.state.is_final()
                && let Some(v) = self.watching.get_mut(device)
            {
                v.retain(|c| *c != slot.command);
            }
        }
    }
}
