//! Value types and the conversion between register words and engineering values, over
//! the tables and word orders of [`protocol::modbus`].
//!
//! Vendors disagree on how a 32- or 64-bit value spans registers (DOMAIN.md: ABB uses
//! ABCD, Vaisala and Xylem CDAB, some Chinese meters DCBA). We name orders the way their
//! manuals do, by where the bytes of a big-endian `ABCD` end up:
//!
//! | order | words           | bytes within a word | example devices |
//! |-------|-----------------|---------------------|-----------------|
//! | ABCD  | high word first | high byte first     | ABB AquaMaster, Bronkhorst |
//! | CDAB  | low word first  | high byte first     | Vaisala, Xylem CL500 |
//! | BADC  | high word first | low byte first      | some PLCs |
//! | DCBA  | low word first  | low byte first      | some Chinese water meters |
//!
//! The same two rules apply to 64-bit values (four words), and the byte rule to a single
//! 16-bit register.

use std::fmt;

use serde::Deserialize;

/// Tables and word orders are the device <-> gateway contract, defined once in
/// [`protocol::modbus`]; profiles name them and [`decode`]/[`encode`] take them.
pub use protocol::modbus::{Table, WordOrder};

/// How raw registers are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    /// One register, unsigned.
    U16,
    /// One register, two's complement.
    I16,
    /// Two registers, unsigned.
    U32,
    /// Two registers, two's complement.
    I32,
    /// Four registers, unsigned.
    U64,
    /// Four registers, two's complement.
    I64,
    /// Two registers, IEEE 754 single.
    F32,
    /// Four registers, IEEE 754 double.
    F64,
    /// One coil or discrete input.
    Bool,
}

impl ValueType {
    /// Registers (or bits, for `Bool`) the type spans.
    pub const fn registers(self) -> u16 {
        match self {
            ValueType::U16 | ValueType::I16 | ValueType::Bool => 1,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 2,
            ValueType::U64 | ValueType::I64 | ValueType::F64 => 4,
        }
    }

    /// Width in bits of the raw value.
    pub const fn bits(self) -> u32 {
        match self {
            ValueType::Bool => 1,
            t => t.registers() as u32 * 16,
        }
    }

    /// True for integer types (the ones a `bit` can be taken from).
    pub const fn is_integer(self) -> bool {
        !matches!(self, ValueType::F32 | ValueType::F64 | ValueType::Bool)
    }

    /// True if the type can live in the table: bits in bit tables, words in word tables.
    pub const fn fits(self, table: Table) -> bool {
        matches!(self, ValueType::Bool) == table.is_bits()
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValueType::U16 => "u16",
            ValueType::I16 => "i16",
            ValueType::U32 => "u32",
            ValueType::I32 => "i32",
            ValueType::U64 => "u64",
            ValueType::I64 => "i64",
            ValueType::F32 => "f32",
            ValueType::F64 => "f64",
            ValueType::Bool => "bool",
        })
    }
}

/// The raw value of `words` (exactly `ty.registers()` of them) as big-endian bytes.
fn to_be_bytes(words: &[u16], order: WordOrder) -> [u8; 8] {
    let mut out = [0u8; 8];
    let n = words.len().min(4);
    for i in 0..n {
        let w = if order.swaps_words() { words[n - 1 - i] } else { words[i] };
        let w = if order.swaps_bytes() { w.swap_bytes() } else { w };
        out[2 * i..2 * i + 2].copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// A raw value read from registers, before scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Raw {
    /// An integer type (u64 holds every unsigned type, i64 every signed one).
    Int(i128),
    /// A float type.
    Float(f64),
}

impl Raw {
    /// The raw value as f64.
    pub fn as_f64(self) -> f64 {
        match self {
            Raw::Int(i) => i as f64,
            Raw::Float(f) => f,
        }
    }
}

/// Decodes `words` as `ty` in `order`. `words` must hold `ty.registers()` words.
pub fn decode(words: &[u16], ty: ValueType, order: WordOrder) -> Raw {
    let b = to_be_bytes(words, order);
    match ty {
        ValueType::U16 => Raw::Int(i128::from(u16::from_be_bytes([b[0], b[1]]))),
        ValueType::I16 => Raw::Int(i128::from(i16::from_be_bytes([b[0], b[1]]))),
        ValueType::U32 => Raw::Int(i128::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))),
        ValueType::I32 => Raw::Int(i128::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))),
        ValueType::U64 => Raw::Int(i128::from(u64::from_be_bytes(b))),
        ValueType::I64 => Raw::Int(i128::from(i64::from_be_bytes(b))),
        ValueType::F32 => Raw::Float(f32_as_f64(f32::from_be_bytes([b[0], b[1], b[2], b[3]]))),
        ValueType::F64 => Raw::Float(f64::from_be_bytes(b)),
        ValueType::Bool => Raw::Int(i128::from(words.first().is_some_and(|w| *w != 0))),
    }
}

/// An f32 as the f64 with the same shortest decimal form: a device's 629.194 f32 becomes
/// 629.194, not 629.1940307617188. The f32 was all the device knew; the extra digits are
/// noise that would show on every dashboard and cost bytes in every codec.
fn f32_as_f64(v: f32) -> f64 {
    if !v.is_finite() {
        return f64::from(v);
    }
    let mut buf = String::with_capacity(24);
    let _ = std::fmt::Write::write_fmt(&mut buf, format_args!("{v}"));
    buf.parse().unwrap_or(f64::from(v))
}

/// Engineering value of a raw value: one bit of it, or `raw * scale + offset`.
pub fn engineering(raw: Raw, scale: f64, offset: f64, bit: Option<u8>) -> f64 {
    match (raw, bit) {
        (Raw::Int(i), Some(bit)) => ((i >> bit) & 1) as f64,
        (raw, _) => raw.as_f64() * scale + offset,
    }
}

/// Why a value cannot be written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    /// The raw value after inverting scale and offset does not fit the type.
    #[error("raw value {raw} does not fit a {ty}")]
    OutOfType {
        /// The raw value.
        raw: f64,
        /// The register type.
        ty: ValueType,
    },
}

/// Register words for an engineering value: `(value - offset) / scale`, rounded for
/// integer types, in `order`.
pub fn encode(value: f64, ty: ValueType, order: WordOrder, scale: f64, offset: f64) -> Result<Vec<u16>, EncodeError> {
    let raw = (value - offset) / scale;
    let out_of_type = || EncodeError::OutOfType { raw, ty };
    let be: Vec<u8> = match ty {
        ValueType::F32 => (raw as f32).to_be_bytes().to_vec(),
        ValueType::F64 => raw.to_be_bytes().to_vec(),
        ValueType::Bool => return Ok(vec![u16::from(raw != 0.0)]),
        _ => {
            let r = raw.round();
            if !r.is_finite() {
                return Err(out_of_type());
            }
            let i = r as i128;
            let fits = match ty {
                ValueType::U16 => (0..=i128::from(u16::MAX)).contains(&i),
                ValueType::I16 => (i128::from(i16::MIN)..=i128::from(i16::MAX)).contains(&i),
                ValueType::U32 => (0..=i128::from(u32::MAX)).contains(&i),
                ValueType::I32 => (i128::from(i32::MIN)..=i128::from(i32::MAX)).contains(&i),
                ValueType::U64 => (0..=i128::from(u64::MAX)).contains(&i),
                _ => (i128::from(i64::MIN)..=i128::from(i64::MAX)).contains(&i),
            };
            if !fits {
                return Err(out_of_type());
            }
            let bytes = i.to_be_bytes();
            bytes[16 - 2 * usize::from(ty.registers())..].to_vec()
        }
    };
    let mut words: Vec<u16> = be
        .chunks(2)
        .map(|c| {
            let w = u16::from_be_bytes([c[0], c[1]]);
            if order.swaps_bytes() { w.swap_bytes() } else { w }
        })
        .collect();
    if order.swaps_words() {
        words.reverse();
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 123456.0 as f32 is 0x47F12000: A=47 B=F1 C=20 D=00.
    #[test]
    fn a_float_reads_the_same_in_every_order_its_device_uses() {
        let cases = [
            (WordOrder::Abcd, [0x47F1, 0x2000]),
            (WordOrder::Cdab, [0x2000, 0x47F1]),
            (WordOrder::Badc, [0xF147, 0x0020]),
            (WordOrder::Dcba, [0x0020, 0xF147]),
        ];
        for (order, words) in cases {
            assert_eq!(decode(&words, ValueType::F32, order), Raw::Float(123_456.0), "{order:?}");
            assert_eq!(encode(123_456.0, ValueType::F32, order, 1.0, 0.0).unwrap(), words.to_vec(), "{order:?}");
        }
    }

    #[test]
    fn a_float_register_reads_as_the_decimal_the_device_meant() {
        let words = encode(629.194, ValueType::F32, WordOrder::Abcd, 1.0, 0.0).unwrap();
        assert_eq!(decode(&words, ValueType::F32, WordOrder::Abcd), Raw::Float(629.194));
        let nan = (f32::NAN).to_be_bytes();
        let words = [u16::from_be_bytes([nan[0], nan[1]]), u16::from_be_bytes([nan[2], nan[3]])];
        assert!(decode(&words, ValueType::F32, WordOrder::Abcd).as_f64().is_nan());
    }

    #[test]
    fn signed_and_wide_integers_decode_exactly() {
        assert_eq!(decode(&[0xFFFF], ValueType::I16, WordOrder::Abcd), Raw::Int(-1));
        assert_eq!(decode(&[0xFFFF], ValueType::U16, WordOrder::Abcd), Raw::Int(65_535));
        assert_eq!(decode(&[0x0001, 0x0000], ValueType::U32, WordOrder::Cdab), Raw::Int(1));
        assert_eq!(decode(&[0xFFFF, 0xFFFE], ValueType::I32, WordOrder::Abcd), Raw::Int(-2));
        assert_eq!(decode(&[0, 0, 0x0001, 0x0000], ValueType::U64, WordOrder::Abcd), Raw::Int(65_536));
        assert_eq!(decode(&[0x0000, 0x0001, 0, 0], ValueType::U64, WordOrder::Cdab), Raw::Int(65_536));
        let pi = std::f64::consts::PI;
        let words = encode(pi, ValueType::F64, WordOrder::Dcba, 1.0, 0.0).unwrap();
        assert_eq!(decode(&words, ValueType::F64, WordOrder::Dcba), Raw::Float(pi));
    }

    #[test]
    fn scale_offset_and_bits_give_engineering_values() {
        assert_eq!(engineering(Raw::Int(3862), 0.01, 0.0, None), 38.62);
        assert_eq!(engineering(Raw::Int(400), 0.1, -40.0, None), 0.0);
        assert_eq!(engineering(Raw::Int(0b1010), 1.0, 0.0, Some(1)), 1.0);
        assert_eq!(engineering(Raw::Int(0b1010), 1.0, 0.0, Some(2)), 0.0);
    }

    #[test]
    fn writes_invert_scale_and_refuse_what_does_not_fit() {
        assert_eq!(encode(2.5, ValueType::U16, WordOrder::Abcd, 0.01, 0.0).unwrap(), vec![250]);
        assert_eq!(encode(-1.0, ValueType::I16, WordOrder::Abcd, 1.0, 0.0).unwrap(), vec![0xFFFF]);
        assert!(encode(-1.0, ValueType::U16, WordOrder::Abcd, 1.0, 0.0).is_err());
        assert!(encode(700.0, ValueType::U16, WordOrder::Abcd, 0.01, 0.0).is_err());
        assert_eq!(encode(1.0, ValueType::Bool, WordOrder::Abcd, 1.0, 0.0).unwrap(), vec![1]);
    }

    #[test]
    fn types_fit_only_their_tables() {
        assert!(ValueType::Bool.fits(Table::Coil));
        assert!(!ValueType::Bool.fits(Table::Holding));
        assert!(!ValueType::U16.fits(Table::Discrete));
        assert_eq!(Table::Input.max_read(), 125);
        assert_eq!(Table::Coil.max_read(), 2000);
    }
}
