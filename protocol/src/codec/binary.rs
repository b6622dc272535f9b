//! The compact binary codec, for gateways on paid cellular links.
//!
//! Design constraints:
//! - A batch decodes on its own: no dictionary is shared between batches, because the
//!   store-and-forward queue replays batches long after the session that sent them.
//! - Exact: every `f64` comes back with the same bits, NaN and -0.0 included.
//! - Small for what gateways actually send: a poll gives several metrics of one device at
//!   one instant, values are register contents times a decimal scale, and device ids in a
//!   batch share long prefixes (`dongcun-meter-001`, `dongcun-meter-002`).
//!
//! Layout (varint = LEB128, zigzag for signed; str = varint length + UTF-8):
//! ```text
//! batch   := MAGIC seq:varint gateway:str count:varint group*     (count = readings in all groups)
//! group   := device ts_delta:zigzag n:varint reading{n}             (readings sharing device and ts)
//! device  := index:varint                                           (index < dictionary size: a device seen before)
//!          | index:varint(=dictionary size) shared:varint suffix:str (new: shares `shared` leading bytes with the previous new device)
//! reading := metric:varint [name:str if metric == 0] tag:u8 value
//! tag     := quality (bits 0-1) | encoding << 2
//! value   := encoding 0..=9: zigzag mantissa m, value = m / 10^encoding
//!          | encoding 10: f32 little endian | encoding 11: f64 little endian
//! ```
//! `ts_delta` of the first group is relative to 0, so it is the absolute time.

use alloc::string::String;
use alloc::vec::Vec;

use super::DecodeError;
use crate::catalogue::Metric;
use crate::reading::{Batch, DeviceId, Quality, Reading, Timestamp};
use crate::varint::{ReadError, Reader, put_i64, put_str, put_u64};

/// First byte of a binary batch (distinct from `{` and whitespace).
pub const MAGIC: u8 = 0xB7;

const ENC_F32: u8 = 10;
const ENC_F64: u8 = 11;
const MAX_DECIMALS: u8 = 9;
/// Mantissas up to 2^53 convert to f64 exactly, which the exactness check relies on.
const MAX_EXACT_MANTISSA: f64 = 9_007_199_254_740_992.0;
/// A cap on what a batch's own header may make us allocate before we have read the data.
const MAX_PREALLOC: u64 = 4096;

const POW10: [f64; 10] = [1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// Encodes a batch.
pub fn encode(batch: &Batch) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + batch.gateway.len() + batch.readings.len() * 6);
    out.push(MAGIC);
    put_u64(&mut out, batch.seq);
    put_str(&mut out, &batch.gateway);
    put_u64(&mut out, batch.readings.len() as u64);

    let mut dictionary: Vec<&str> = Vec::new();
    let mut prev_ts = 0i64;
    let mut rest = &batch.readings[..];
    while let Some(first) = rest.first() {
        let n = rest.iter().take_while(|r| r.device == first.device && r.ts == first.ts).count();
        let (group, tail) = rest.split_at(n);
        rest = tail;

        put_device(&mut out, &mut dictionary, first.device.as_str());
        put_i64(&mut out, first.ts.0.wrapping_sub(prev_ts));
        prev_ts = first.ts.0;
        put_u64(&mut out, n as u64);
        for r in group {
            put_reading(&mut out, r);
        }
    }
    out
}

fn put_device<'a>(out: &mut Vec<u8>, dictionary: &mut Vec<&'a str>, device: &'a str) {
    if let Some(i) = dictionary.iter().position(|d| *d == device) {
        put_u64(out, i as u64);
        return;
    }
    let prev = dictionary.last().copied().unwrap_or("");
    let shared = common_prefix(prev, device);
    put_u64(out, dictionary.len() as u64);
    put_u64(out, shared as u64);
    put_str(out, &device[shared..]);
    dictionary.push(device);
}

/// Length in bytes of the common prefix, cut back to a char boundary.
fn common_prefix(a: &str, b: &str) -> usize {
    let mut n = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    while !b.is_char_boundary(n) {
        n -= 1;
    }
    n
}

fn put_reading(out: &mut Vec<u8>, r: &Reading) {
    match r.metric.def() {
        Some(def) => put_u64(out, u64::from(def.id)),
        None => {
            put_u64(out, 0);
            put_str(out, r.metric.name());
        }
    }
    let q = r.quality.code();
    if let Some((decimals, mantissa)) = as_decimal(r.value) {
        out.push(q | decimals << 2);
        put_i64(out, mantissa);
    } else if f64::from(r.value as f32).to_bits() == r.value.to_bits() {
        out.push(q | ENC_F32 << 2);
        out.extend_from_slice(&(r.value as f32).to_le_bytes());
    } else {
        out.push(q | ENC_F64 << 2);
        out.extend_from_slice(&r.value.to_le_bytes());
    }
}

/// The fewest decimals `d` and mantissa `m` with `m / 10^d` giving back exactly `v`.
fn as_decimal(v: f64) -> Option<(u8, i64)> {
    if !v.is_finite() || (v == 0.0 && v.is_sign_negative()) {
        return None;
    }
    for d in 0..=MAX_DECIMALS {
        let scaled = libm::round(v * POW10[usize::from(d)]);
        if scaled.abs() > MAX_EXACT_MANTISSA {
            return None;
        }
        if (scaled / POW10[usize::from(d)]).to_bits() == v.to_bits() {
            return Some((d, scaled as i64));
        }
    }
    None
}

/// Decodes a binary batch; errors give the byte offset of what was wrong.
pub fn decode(payload: &[u8]) -> Result<Batch, DecodeError> {
    let mut r = Reader::new(payload);
    let at = |r: &Reader<'_>| r.position();
    let fail = |r: &Reader<'_>, e: ReadError| match e {
        ReadError::Truncated => DecodeError::Truncated(r.position()),
        ReadError::Overflow => DecodeError::Invalid { offset: r.position(), what: "varint longer than 64 bits" },
        ReadError::Utf8 => DecodeError::Invalid { offset: r.position(), what: "string is not UTF-8" },
    };

    let magic = r.u8().map_err(|e| fail(&r, e))?;
    if magic != MAGIC {
        return Err(DecodeError::UnknownFormat(magic));
    }
    let seq = r.u64().map_err(|e| fail(&r, e))?;
    let gateway = r.string().map_err(|e| fail(&r, e))?;
    let count = r.u64().map_err(|e| fail(&r, e))?;
    // Every reading takes at least 3 bytes, so a count the payload cannot hold is a lie.
    if count > r.remaining() as u64 / 3 + 1 {
        return Err(DecodeError::Invalid { offset: at(&r), what: "reading count exceeds the payload" });
    }
    let mut readings = Vec::with_capacity(count.min(MAX_PREALLOC) as usize);
    let mut dictionary: Vec<DeviceId> = Vec::new();
    let mut ts = 0i64;

    while (readings.len() as u64) < count {
        let index = r.u64().map_err(|e| fail(&r, e))?;
        let device = if index < dictionary.len() as u64 {
            dictionary[index as usize].clone()
        } else if index == dictionary.len() as u64 {
            let shared = r.u64().map_err(|e| fail(&r, e))?;
            let prev = dictionary.last().map_or("", |d| d.as_str());
            if shared > prev.len() as u64 || !prev.is_char_boundary(shared as usize) {
                return Err(DecodeError::Invalid {
                    offset: at(&r),
                    what: "device prefix longer than the previous device",
                });
            }
            let suffix = r.str().map_err(|e| fail(&r, e))?;
            let mut id = String::with_capacity(shared as usize + suffix.len());
            id.push_str(&prev[..shared as usize]);
            id.push_str(suffix);
            let id = DeviceId::from(id);
            dictionary.push(id.clone());
            id
        } else {
            return Err(DecodeError::Invalid { offset: at(&r), what: "device index beyond the dictionary" });
        };
        let delta = r.i64().map_err(|e| fail(&r, e))?;
        ts = ts.wrapping_add(delta);
        let n = r.u64().map_err(|e| fail(&r, e))?;
        if n == 0 || n > count - readings.len() as u64 {
            return Err(DecodeError::Invalid { offset: at(&r), what: "group size does not fit the reading count" });
        }
        for _ in 0..n {
            let reading = read_reading(&mut r, &device, Timestamp(ts)).map_err(|e| match e {
                Bad::Read(e) => fail(&r, e),
                Bad::What(what) => DecodeError::Invalid { offset: at(&r), what },
            })?;
            readings.push(reading);
        }
    }
    if r.remaining() != 0 {
        return Err(DecodeError::TrailingBytes(r.remaining()));
    }
    Ok(Batch { gateway, seq, readings })
}

enum Bad {
    Read(ReadError),
    What(&'static str),
}

impl From<ReadError> for Bad {
    fn from(e: ReadError) -> Bad {
        Bad::Read(e)
    }
}

fn read_reading(r: &mut Reader<'_>, device: &DeviceId, ts: Timestamp) -> Result<Reading, Bad> {
    let id = r.u64()?;
    let metric = if id == 0 {
        Metric::new(r.str()?)
    } else {
        let id = u16::try_from(id).map_err(|_| Bad::What("metric id out of range"))?;
        Metric::from_id(id).ok_or(Bad::What("unknown metric id"))?
    };
    let tag = r.u8()?;
    let quality = Quality::from_code(tag & 0b11).ok_or(Bad::What("unknown quality code"))?;
    let value = match tag >> 2 {
        d @ 0..=MAX_DECIMALS => r.i64()? as f64 / POW10[usize::from(d)],
        ENC_F32 => f64::from(r.f32()?),
        ENC_F64 => r.f64()?,
        _ => return Err(Bad::What("unknown value encoding")),
    };
    Ok(Reading { device: device.clone(), metric, ts, value, quality })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_values_take_their_digits_not_eight_bytes() {
        assert_eq!(as_decimal(7.42), Some((2, 742)));
        assert_eq!(as_decimal(0.0), Some((0, 0)));
        assert_eq!(as_decimal(-3.5), Some((1, -35)));
        assert_eq!(as_decimal(-0.0), None);
        assert_eq!(as_decimal(f64::NAN), None);
        assert_eq!(as_decimal(core::f64::consts::PI), None);
    }

    #[test]
    fn shared_device_prefixes_are_sent_once() {
        let a = "dongcun-meter-001";
        let b = "dongcun-meter-002";
        assert_eq!(common_prefix(a, b), 16);
        // Never split a multi-byte character.
        assert_eq!(common_prefix("aé", "aè"), 1);
    }

    #[test]
    fn a_metric_id_the_catalogue_does_not_have_is_refused_with_its_offset() {
        // seq 1, gateway "g", 1 reading; new device "d" (index 0, shares 0), ts 0, group of 1;
        // metric id 200 (varint c8 01), tag 0, mantissa 0.
        let bytes = [MAGIC, 1, 1, b'g', 1, 0, 0, 1, b'd', 0, 1, 0xc8, 0x01, 0, 0];
        match decode(&bytes) {
            Err(DecodeError::Invalid { what, .. }) => assert_eq!(what, "unknown metric id"),
            other => panic!("expected an invalid metric id, got {other:?}"),
        }
    }
}
