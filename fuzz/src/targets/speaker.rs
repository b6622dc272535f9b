//! The speaker terminal's firmware (`firmware::speaker`), as anyone on its RS-485 bus can
//! drive it: Modbus RTU frames, the signed-command mailbox, and the command check it runs
//! itself ([`protocol::command::open`] with its own gateway, device and replay window).
//!
//! The input is a program of up to 64 steps, each a byte (modulo 6) and its operands:
//! 0 a raw RTU frame; 1 a PDU sent with a valid CRC to the terminal's unit; 2 a command
//! body signed by ingest, delivered into the mailbox as the gateway packs it
//! ([`gateway::command::mailbox_ops`]); 3 raw envelope bytes handed to the terminal; 4 a
//! self-test result and time passing; 5 a clock step.
//!
//! Checks after every step: an answer to a frame is addressed to the terminal, carries a
//! valid CRC and echoes the function (or its exception); the mailbox delivers exactly the
//! envelope (the terminal ends in the same registers as one handed the bytes directly);
//! the command log block reads whole and decodes; at most `QUEUE` playbacks wait; the
//! volume stays within 0-100; it plays exactly when its state says playing; a command it
//! received is in its log; an envelope it was not given a signature for is refused.

use firmware::crc::{crc16, frame_ok};
use firmware::modbus::{read_registers, write_registers};
use firmware::rtu::{MAX_FRAME, respond};
use firmware::speaker::{self, PlaybackState, QUEUE, Speaker, SpeakerInputs};
use firmware::{RegisterMap, Table};
use gateway::command::mailbox_ops;
use gateway::modbus::Op;
use gateway::profile::Mailbox;
use protocol::Timestamp;
use protocol::command;
use protocol::varint::put_u64;

use super::keys;
use crate::input::Input;

/// The terminal's unit id on its bus.
const UNIT: u8 = 5;
/// Steps of one program.
const STEPS: usize = 64;
/// The mailbox as the built-in speaker profile has it.
const MAILBOX: Mailbox =
    Mailbox { table: Table::Holding, address: speaker::MAILBOX.0, size: firmware::mailbox::REGISTERS, log: None };

/// Runs one program.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mut s = Speaker::new(70);
    s.provision(keys::ingest().verifying_key().to_bytes(), keys::GATEWAY, keys::SPEAKER).expect("a valid issuer key");
    let mut now = keys::NOW_MS;
    s.set_clock(Timestamp(now));
    for _ in 0..STEPS {
        if input.is_empty() {
            break;
        }
        match input.u8() % 6 {
            0 => frame(&mut s, input.chunk(), None),
            1 => {
                let pdu = input.chunk();
                let mut f = Vec::with_capacity(pdu.len() + 3);
                f.push(UNIT);
                f.extend_from_slice(pdu);
                f.extend_from_slice(&crc16(&f).to_le_bytes());
                frame(&mut s, &f, pdu.first().copied());
            }
            2 => mailbox(&mut s, input.long_chunk(4096)),
            3 => {
                let bytes = input.long_chunk(4096);
                let before = s.replay_state();
                if let Ok(id) = s.accept_envelope(bytes, Timestamp(now)) {
                    panic!("the terminal accepted an envelope nobody signed (command {id})");
                }
                assert_eq!(s.replay_state(), before, "a refused envelope moved the replay window");
            }
            4 => {
                let bits = input.u8();
                let inputs = SpeakerInputs { amplifier_ok: bits & 1 == 0, line_ok: bits & 2 == 0 };
                s.update(&inputs, f32::from(input.u8()) / 4.0);
                now = s.clock().0;
            }
            _ => {
                now = now.saturating_add(i64::from(input.u16() as i16) * 1000);
                s.set_clock(Timestamp(now));
            }
        }
        check(&s);
    }
}

/// An RTU exchange; `fc` is the function of a frame sent with a valid CRC.
fn frame(s: &mut Speaker, request: &[u8], fc: Option<u8>) {
    let mut out = [0u8; MAX_FRAME];
    match respond(UNIT, s, request, &mut out) {
        Some(n) => {
            assert!((5..=MAX_FRAME).contains(&n), "an answer of {n} bytes");
            assert!(frame_ok(&out[..n]), "an answer with a bad CRC");
            assert_eq!(out[0], UNIT);
            let fc = request[1];
            assert!(out[1] == fc || out[1] == fc | 0x80, "the answer's function {} is not the request's {fc}", out[1]);
            if out[1] & 0x80 != 0 {
                assert_eq!(n, 5, "an exception answer is 5 bytes");
            }
        }
        None => assert!(fc.is_none() || request.len() < 4, "a well-formed request to the terminal got no answer"),
    }
}

/// Signs `body` as ingest would (whatever it holds) and delivers it through the mailbox;
/// the terminal must end as one handed the envelope directly.
fn mailbox(s: &mut Speaker, body: &[u8]) {
    let wire = envelope(body);
    let Ok(ops) = mailbox_ops(&MAILBOX, &wire) else { return };
    let mut direct = s.clone();
    let result = direct.accept_envelope(&wire, s.clock());
    for op in ops {
        let Op::Write { address, words, .. } = op else { panic!("mailbox_ops reads") };
        write_registers(s, address, &words).expect("the terminal takes a mailbox write");
    }
    assert_eq!(log(s), log(&direct), "the mailbox delivered something else than the envelope");
    if let Ok(id) = result {
        assert!(s.command_state(id).is_some(), "received command {id} is not in the log");
        assert_eq!(command::peek_id(&wire), Some(id));
    }
}

/// The signed envelope of `body`, as `Command::sign` lays it out, for any body.
fn envelope(body: &[u8]) -> Vec<u8> {
    use ed25519_dalek::Signer;
    let mut message = command::DOMAIN.to_vec();
    message.extend_from_slice(body);
    let signature = keys::ingest().sign(&message);
    let mut out = vec![command::MAGIC];
    put_u64(&mut out, body.len() as u64);
    out.extend_from_slice(body);
    out.extend_from_slice(&signature.to_bytes());
    out
}

/// The command log block as the gateway reads it.
fn log(s: &Speaker) -> Vec<u16> {
    let mut block = vec![0u16; usize::from(speaker::LOG_REGISTERS)];
    read_registers(s, Table::Input, speaker::LOG_BASE, &mut block).expect("the command log reads in one request");
    block
}

fn check(s: &Speaker) {
    let block = log(s);
    let decoded = speaker::decode_log(&block).expect("the command log decodes");
    assert!(decoded.slots.len() <= speaker::SLOTS);
    assert!(s.waiting().count() <= QUEUE, "{} playbacks wait", s.waiting().count());
    assert!(s.volume() <= 100);
    assert_eq!(s.register(Table::Holding, 0), Some(u16::from(s.volume())));
    assert_eq!(
        s.playing().is_some(),
        s.state() == PlaybackState::Playing,
        "playing {:?} in state {:?}",
        s.playing(),
        s.state()
    );
}
