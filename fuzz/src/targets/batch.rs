//! Telemetry batches (`protocol::codec`): what ingest decodes from every gateway's uplink.
//!
//! Checks, for every input that decodes:
//! - the batch respects the binary codec's stated bound (every reading costs at least 3
//!   bytes, so a batch cannot claim more readings than its payload can hold) and the JSON
//!   one (a reading is at least `{"device":"","metric":"","ts":0,"value":0}`);
//! - it round-trips bit for bit through the binary codec (NaN payloads and -0.0 included)
//!   and through JSON up to the payload of a NaN, whichever codec it came in;
//! - the binary encoding is canonical: re-encoding what it decodes gives the same bytes.

use protocol::codec::{self, Codec, binary};

/// Shortest JSON reading: `{"device":"","metric":"","ts":0,"value":0}`.
const MIN_JSON_READING: usize = r#"{"device":"","metric":"","ts":0,"value":0}"#.len();

/// Decodes `data` as a batch and checks it.
pub fn run(data: &[u8]) {
    let Ok(batch) = codec::decode(data) else { return };
    let binary_input = data.first() == Some(&binary::MAGIC);
    if binary_input {
        assert!(
            batch.readings.len() <= data.len() / 3 + 1,
            "{} readings decoded from {} bytes",
            batch.readings.len(),
            data.len()
        );
    } else {
        assert!(batch.readings.len() * MIN_JSON_READING <= data.len(), "more readings than the JSON can hold");
    }
    for c in [Codec::Binary, Codec::Json] {
        let bytes = codec::encode(&batch, c);
        match codec::decode(&bytes) {
            // JSON spells every NaN "NaN": the NaN comes back, its payload bits do not
            // (found by AFL++: a binary f32 NaN 0x7fffffff; ingest refuses NaN anyway).
            Ok(back) if c == Codec::Json => assert_eq!(nan_canonical(back), nan_canonical(batch.clone())),
            Ok(back) => assert_eq!(back, batch, "{c:?} round trip changed the batch"),
            Err(e) => panic!("{c:?} encoding of a decoded batch does not decode: {e}"),
        }
    }
    let bin = binary::encode(&batch);
    if let Ok(again) = binary::decode(&bin) {
        assert_eq!(binary::encode(&again), bin, "binary encoding is not canonical");
    }
}

/// The batch with every NaN replaced by the one JSON gives back.
fn nan_canonical(mut b: protocol::Batch) -> protocol::Batch {
    for r in &mut b.readings {
        if r.value.is_nan() {
            r.value = f64::NAN;
        }
    }
    b
}
