//! Modbus responses in the gateway: the words a device answers, turned into readings.
//!
//! The first byte picks the mode (modulo 3):
//! - 0: a poll of a device of a built-in profile (next byte: which), the responses to its
//!   planned reads from the input ([`gateway::modbus::DeviceReader::decode`]) and a slot
//!   table's words ([`gateway::modbus::decode_slots`]). One reading per point, of that
//!   point's metric, at the poll's time; a bit is 0 or 1, a bool its scaled 0 or 1, an
//!   integer register finite; a response shorter than its read is refused.
//! - 1: one value of any type and word order: the gateway's decoding agrees with
//!   `protocol::modbus`, which the firmware lays its registers out with, and encoding
//!   the decoded value gives the words back (integers up to 2^53, every non-NaN float).
//! - 2: a speaker's command log block (`protocol::speaker::decode_log`) and the gateway's
//!   reading of two of them in a row ([`gateway::command::Executor::on_log`]): only
//!   refusals newer than the first block are acked, each naming a slot of the second.

use std::sync::{Arc, OnceLock};

use gateway::command::Executor;
use gateway::modbus::value::{self, Raw, ValueType, WordOrder};
use gateway::modbus::{Attempts, DeviceReader, decode_slots};
use gateway::profile::{Library, Point, Profile};
use protocol::command::AckState;
use protocol::modbus as words;
use protocol::speaker::{self, CommandState, LOG_REGISTERS};
use protocol::{Quality, Timestamp};

use super::keys;
use crate::input::Input;

const TYPES: [ValueType; 9] = [
    ValueType::U16,
    ValueType::I16,
    ValueType::U32,
    ValueType::I32,
    ValueType::U64,
    ValueType::I64,
    ValueType::F32,
    ValueType::F64,
    ValueType::Bool,
];
const ORDERS: [WordOrder; 4] = [WordOrder::Abcd, WordOrder::Cdab, WordOrder::Badc, WordOrder::Dcba];
/// Integers up to this magnitude are exact in an f64 engineering value.
const EXACT: i128 = 1 << 53;

/// The built-in profiles, by model.
fn profiles() -> &'static [Arc<Profile>] {
    static PROFILES: OnceLock<Vec<Arc<Profile>>> = OnceLock::new();
    PROFILES.get_or_init(|| {
        let (library, errors) = Library::builtin();
        assert!(errors.is_empty(), "a built-in profile does not load: {errors:?}");
        library.models().iter().filter_map(|m| library.get(m)).collect()
    })
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    match input.u8() % 3 {
        0 => poll(&mut input),
        1 => register(&mut input),
        _ => command_log(&mut input),
    }
}

fn poll(input: &mut Input<'_>) {
    let profiles = profiles();
    let profile = &profiles[usize::from(input.u8()) % profiles.len()];
    let now = Timestamp(keys::NOW_MS);
    let reader = DeviceReader::new("dev-1", 1, profile.clone(), Attempts::default());
    let responses: Vec<Vec<u16>> = reader
        .reads()
        .iter()
        .map(|r| (0..r.count).map(|_| if r.table.is_bits() { u16::from(input.bool()) } else { input.u16() }).collect())
        .collect();
    let readings = reader.decode(&responses, now).expect("responses of the planned sizes decode");
    assert_eq!(readings.len(), profile.points.len());
    for (r, point) in readings.iter().zip(&profile.points) {
        assert_eq!((r.device.as_str(), &r.metric, r.ts), ("dev-1", &point.metric, now));
        if point.quality.is_none() {
            assert_eq!(r.quality, Quality::Good);
        }
        check_value(point, r.value);
    }
    // A response one word short of its read is refused, not a panic.
    if let Some(i) = responses.iter().position(|w| !w.is_empty()) {
        let mut short = responses.clone();
        short[i].pop();
        assert!(reader.decode(&short, now).is_err());
    }
    if let Some(slots) = &profile.slots {
        let n = usize::from(input.u8() % 8) * usize::from(slots.stride);
        let table: Vec<u16> = (0..n).map(|_| input.u16()).collect();
        let used = table
            .chunks_exact(usize::from(slots.stride.max(1)))
            .filter(|s| matches!(value::decode(s, slots.id_type, WordOrder::Abcd), Raw::Int(i) if i > 0))
            .count();
        let readings = decode_slots(slots, &table, now);
        assert_eq!(readings.len(), used * slots.points.len());
        for (r, point) in readings.iter().zip(slots.points.iter().cycle()) {
            assert_eq!(&r.metric, &point.metric);
            check_value(point, r.value);
        }
    }
}

/// What a point's value can be.
fn check_value(point: &Point, v: f64) {
    if point.bit.is_some() {
        assert!(v == 0.0 || v == 1.0, "bit {:?} of a register read as {v}", point.bit);
    } else if point.ty == ValueType::Bool {
        assert!(v == point.offset || v == point.scale + point.offset, "a bool read as {v}");
    } else if point.ty.is_integer() {
        assert!(v.is_finite(), "an integer register read as {v}");
    }
}

fn register(input: &mut Input<'_>) {
    let ty = TYPES[usize::from(input.u8()) % TYPES.len()];
    let order = ORDERS[usize::from(input.u8()) % ORDERS.len()];
    let w = [input.u16(), input.u16(), input.u16(), input.u16()];
    let n = usize::from(ty.registers());
    let raw = value::decode(&w[..n], ty, order);
    // The firmware's side of the contract reads the same value.
    match ty {
        ValueType::U32 => assert_eq!(raw, Raw::Int(i128::from(words::to_u32([w[0], w[1]], order)))),
        ValueType::I32 => assert_eq!(raw, Raw::Int(i128::from(words::to_i32([w[0], w[1]], order)))),
        ValueType::U64 => assert_eq!(raw, Raw::Int(i128::from(words::to_u64(w, order)))),
        ValueType::F32 => {
            let f = words::to_f32([w[0], w[1]], order);
            match raw {
                Raw::Float(g) if f.is_nan() => assert!(g.is_nan()),
                Raw::Float(g) => assert_eq!(g as f32, f, "f32 {f} read as {g}"),
                Raw::Int(_) => panic!("an f32 read as an integer"),
            }
        }
        _ => {}
    }
    let v = raw.as_f64();
    let exact = match raw {
        Raw::Int(i) => i.abs() <= EXACT,
        Raw::Float(f) => !f.is_nan(),
    };
    if ty == ValueType::Bool || !exact {
        return;
    }
    let back = value::encode(v, ty, order, 1.0, 0.0).expect("a value read from registers writes back");
    assert_eq!(back, &w[..n], "{ty} {order:?}: {:?} read as {v} writes back as {back:?}", &w[..n]);
    let bit = input.u8() % 64;
    if let Raw::Int(_) = raw
        && u32::from(bit) < ty.bits()
    {
        let b = value::engineering(raw, 1.0, 0.0, Some(bit));
        assert!(b == 0.0 || b == 1.0);
    }
}

fn command_log(input: &mut Input<'_>) {
    let n = usize::from(LOG_REGISTERS);
    let first: Vec<u16> = (0..n).map(|_| input.u16()).collect();
    let second: Vec<u16> = (0..n).map(|_| input.u16()).collect();
    for block in [&first, &second] {
        let log = speaker::decode_log(block).expect("a whole block decodes");
        assert!(log.slots.len() <= speaker::SLOTS);
        assert!(log.slots.iter().all(|s| s.command != 0));
        assert!(speaker::decode_log(&block[1..]).is_none());
    }
    let clock: daemon::Clock = Arc::new(|| Timestamp(keys::NOW_MS));
    let executor = Executor::new(keys::GATEWAY, Some(keys::ingest().verifying_key().to_bytes()), None, clock);
    assert!(executor.on_log(keys::SPEAKER, &first).is_empty(), "the first log seen only sets where to start");
    let log = speaker::decode_log(&second).expect("a whole block decodes");
    for ack in executor.on_log(keys::SPEAKER, &second) {
        assert_eq!(ack.state, AckState::Refused);
        assert!(ack.reason.as_deref().is_some_and(|r| r.ends_with("(speaker)")));
        assert!(
            log.slots.iter().any(|s| s.command == ack.id && s.state == CommandState::Refused),
            "ack {ack:?} names no refused slot"
        );
    }
}
