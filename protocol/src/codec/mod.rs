//! Payload codecs for batches: JSON for people and debugging, binary for cellular links.
//!
//! Both codecs carry exactly the same [`Batch`] and round-trip it bit for bit (NaN and
//! infinities included, so that ingest can refuse them by name). A receiver does not need
//! to be told which codec a sender chose: [`decode`] recognises it from the first byte
//! (`{` for JSON, [`binary::MAGIC`] for binary), which is why the topic layout has one
//! telemetry topic, not one per codec.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

use crate::reading::Batch;

pub mod binary;
pub mod json;

/// Which codec a gateway uses on its uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    /// Human-readable; about 100 bytes a reading.
    Json,
    /// Compact binary; a few bytes a reading.
    #[default]
    Binary,
}

/// Why a payload is not a batch. The text names what was wrong and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The payload is empty.
    Empty,
    /// The first byte is neither `{` nor the binary magic.
    UnknownFormat(u8),
    /// JSON that does not parse as a batch (serde_json's message, with line and column).
    Json(String),
    /// Binary that ended early, at this byte offset.
    Truncated(usize),
    /// A binary field that is out of range, with its byte offset.
    Invalid {
        /// Byte offset in the payload.
        offset: usize,
        /// What was wrong.
        what: &'static str,
    },
    /// Bytes left over after the batch ended.
    TrailingBytes(usize),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Empty => f.write_str("empty payload"),
            DecodeError::UnknownFormat(b) => {
                write!(
                    f,
                    "unknown payload format: first byte 0x{b:02x} is neither '{{' (JSON) nor 0x{:02x} (binary)",
                    binary::MAGIC
                )
            }
            DecodeError::Json(e) => write!(f, "invalid JSON batch: {e}"),
            DecodeError::Truncated(at) => write!(f, "binary batch truncated at byte {at}"),
            DecodeError::Invalid { offset, what } => write!(f, "invalid binary batch at byte {offset}: {what}"),
            DecodeError::TrailingBytes(n) => write!(f, "{n} unexpected bytes after the end of the batch"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DecodeError {}

/// Encodes a batch with the chosen codec.
pub fn encode(batch: &Batch, codec: Codec) -> Vec<u8> {
    match codec {
        Codec::Json => json::encode(batch),
        Codec::Binary => binary::encode(batch),
    }
}

/// Decodes a batch in either codec, recognised by its first byte.
pub fn decode(payload: &[u8]) -> Result<Batch, DecodeError> {
    let first = payload.iter().copied().find(|b| !b.is_ascii_whitespace());
    match first {
        None => Err(DecodeError::Empty),
        Some(b'{') => json::decode(payload),
        Some(b) if b == binary::MAGIC => binary::decode(payload),
        Some(b) => Err(DecodeError::UnknownFormat(b)),
    }
}

#[cfg(test)]
mod tests {
    use alloc::format;
    use alloc::vec;

    use proptest::prelude::*;

    use super::*;
    use crate::catalogue::{CATALOGUE, Metric};
    use crate::reading::{Quality, Reading, Timestamp};

    fn metric() -> impl Strategy<Value = Metric> {
        prop_oneof![
            4 => (0..CATALOGUE.len()).prop_map(|i| Metric::from(&CATALOGUE[i])),
            1 => "[a-z][a-z0-9_]{0,20}".prop_map(|s| Metric::new(&s)),
        ]
    }

    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            // Register values after a decimal scale: the common case on the wire.
            4 => (-10_000_000i64..10_000_000, 0u32..4).prop_map(|(m, e)| m as f64 / 10f64.powi(e as i32)),
            2 => any::<f32>().prop_map(f64::from),
            2 => any::<f64>(),
            1 => Just(f64::NAN),
            1 => Just(-0.0),
        ]
    }

    fn reading() -> impl Strategy<Value = Reading> {
        (
            "[a-z]{1,3}-[0-9]{1,4}",
            metric(),
            -100_000_000_000_000i64..100_000_000_000_000,
            value(),
            prop_oneof![Just(Quality::Good), Just(Quality::Uncertain), Just(Quality::Bad)],
        )
            .prop_map(|(device, metric, ts, value, quality)| Reading {
                device: device.as_str().into(),
                metric,
                ts: Timestamp(ts),
                value,
                quality,
            })
    }

    fn batch() -> impl Strategy<Value = Batch> {
        ("[a-z0-9-]{1,20}", any::<u64>(), proptest::collection::vec(reading(), 0..60))
            .prop_map(|(gateway, seq, readings)| Batch { gateway, seq, readings })
    }

    proptest! {
        #[test]
        fn json_round_trips_every_batch(b in batch()) {
            prop_assert_eq!(decode(&encode(&b, Codec::Json)), Ok(b));
        }

        #[test]
        fn binary_round_trips_every_batch(b in batch()) {
            prop_assert_eq!(decode(&encode(&b, Codec::Binary)), Ok(b));
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
            let mut with_magic = vec![binary::MAGIC];
            with_magic.extend_from_slice(&bytes);
            let _ = decode(&with_magic);
        }

        #[test]
        fn every_truncation_of_a_binary_batch_is_an_error(b in batch(), cut in any::<prop::sample::Index>()) {
            let bytes = encode(&b, Codec::Binary);
            let at = cut.index(bytes.len());
            prop_assert!(decode(&bytes[..at]).is_err());
        }
    }

    /// A poll cycle as a village gateway sends it: 20 household meters (volume, flow,
    /// battery, valve), a pump station and a quality analyser, taken within one second.
    fn village_poll() -> Batch {
        let t0 = 1_763_900_000_000i64;
        let mut readings = vec![];
        for m in 0..20 {
            let dev = format!("dongcun-meter-{m:03}");
            let ts = Timestamp(t0 + m * 40);
            readings.push(Reading::new(dev.as_str(), Metric::new("volume_total"), ts, 1234.567 + m as f64));
            readings.push(Reading::new(dev.as_str(), Metric::new("flow"), ts, 0.012 * m as f64));
            readings.push(Reading::new(dev.as_str(), Metric::new("battery_voltage"), ts, 3.61));
            readings.push(Reading::new(dev.as_str(), Metric::new("valve_open"), ts, 1.0));
        }
        let ts = Timestamp(t0 + 900);
        for (metric, v) in [
            ("flow", 31.25),
            ("volume_total", 88_123.4),
            ("pressure", 0.32),
            ("tank_level", 3.41),
            ("pump_running", 1.0),
            ("pump_current", 17.8),
            ("fault_word", 0.0),
        ] {
            readings.push(Reading::new("dongcun-pump", Metric::new(metric), ts, v));
        }
        for (metric, v) in [
            ("free_chlorine", 0.52),
            ("turbidity", 0.31),
            ("ph", 7.42),
            ("conductivity", 412.0),
            ("water_temperature", 14.7),
        ] {
            readings.push(Reading::new("dongcun-wq", Metric::new(metric), ts, v));
        }
        Batch { gateway: "gw-dongcun".into(), seq: 40_213, readings }
    }

    #[test]
    fn bytes_per_reading_of_each_codec_on_a_village_poll() {
        let b = village_poll();
        let n = b.readings.len() as f64;
        let json = encode(&b, Codec::Json).len() as f64 / n;
        let bin = encode(&b, Codec::Binary).len() as f64 / n;
        // Printed so `cargo test -- --nocapture` shows the figures docs/BENCHMARKS.md quotes.
        std::println!("bytes per reading: json {json:.1}, binary {bin:.2} ({} readings)", b.readings.len());
        assert!(bin < 8.0, "binary codec takes {bin:.2} bytes per reading, the goal is under 8");
        assert!(json > 4.0 * bin, "binary should be several times smaller than JSON ({json:.1} vs {bin:.2})");
    }

    #[test]
    fn the_codec_is_recognised_from_the_first_byte() {
        let b = village_poll();
        assert_eq!(decode(&encode(&b, Codec::Json)).unwrap().seq, 40_213);
        assert_eq!(decode(b"  \n{\"gateway\":\"g\",\"seq\":1,\"readings\":[]}").unwrap().seq, 1);
        assert_eq!(decode(b""), Err(DecodeError::Empty));
        assert_eq!(decode(b"hello"), Err(DecodeError::UnknownFormat(b'h')));
    }

    #[test]
    fn json_errors_say_where_and_what() {
        let err = decode(b"{\"gateway\":\"g\",\"seq\":\"one\",\"readings\":[]}").unwrap_err();
        let text = format!("{err}");
        assert!(text.contains("seq") || text.contains("invalid type"), "{text}");
        assert!(text.contains("column"), "{text}");
    }

    #[test]
    fn json_carries_nan_so_that_ingest_can_refuse_it_by_name() {
        let b = decode(br#"{"gateway":"g","seq":1,"readings":[{"device":"d","metric":"ph","ts":5,"value":"NaN"}]}"#)
            .unwrap();
        assert!(b.readings[0].value.is_nan());
        assert_eq!(b.readings[0].quality, Quality::Good);
    }
}
