//! The Modbus side of the device <-> gateway contract: the four data tables, the word
//! orders of multi-register values, and the conversions between values and registers.
//!
//! The firmware lays its register maps out with these types and the gateway reads them
//! with the same ones (its profiles name tables and orders in the spellings below), so a
//! device and its gateway cannot disagree on what `CDAB` means.
//!
//! Vendors disagree on the order of the bytes of a 32-bit value across two registers
//! (DOMAIN.md, Modbus conventions). With the value's bytes named A (most significant) to
//! D (least), the four orders put on the wire, register by register:
//!
//! | order | register 0 | register 1 | who |
//! |---|---|---|---|
//! | ABCD | A B | C D | ABB AquaMaster, Bronkhorst, PLCs (big-endian) |
//! | CDAB | C D | A B | Xylem CL500, Vaisala (word swap) |
//! | BADC | B A | D C | byte swap, some PLCs |
//! | DCBA | D C | B A | some Chinese water meters (little-endian) |
//!
//! 64-bit values extend the same rule: ABCD is plain big-endian over four registers, CDAB
//! reverses the register order, BADC swaps bytes within registers, DCBA does both; the
//! byte rule also applies to a single 16-bit register. Encoding and decoding are exact
//! inverses for every order (tested).

use core::fmt;
use core::str::FromStr;

use serde::Deserialize;

/// The four Modbus data tables. The names (`coil`, `discrete`, `input`, `holding`) are
/// the ones gateway profiles use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// Read/write bits (function codes 1, 5, 15).
    Coil,
    /// Read-only bits (function code 2).
    Discrete,
    /// Read-only registers (function code 4).
    Input,
    /// Read/write registers (function codes 3, 6, 16).
    #[default]
    Holding,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 4] = [Table::Coil, Table::Discrete, Table::Input, Table::Holding];

    /// The profile name of the table.
    pub const fn as_str(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::Discrete => "discrete",
            Table::Input => "input",
            Table::Holding => "holding",
        }
    }

    /// True for the two bit tables.
    pub const fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }

    /// Most registers (or bits) one read may ask for (Modbus application protocol v1.1b3).
    pub const fn max_read(self) -> u16 {
        if self.is_bits() { 2000 } else { 125 }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text is not one of `coil`, `discrete`, `input`, `holding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownTable;

impl fmt::Display for UnknownTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown Modbus table; expected one of coil, discrete, input, holding")
    }
}

impl FromStr for Table {
    type Err = UnknownTable;

    fn from_str(s: &str) -> Result<Table, UnknownTable> {
        Table::ALL.into_iter().find(|t| t.as_str() == s).ok_or(UnknownTable)
    }
}

/// Byte order of a multi-register value, named as in gateway profiles (see the module
/// table). Profiles that name none mean ABCD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
pub enum WordOrder {
    /// Big-endian: most significant register first, bytes big-endian.
    #[default]
    #[serde(rename = "ABCD")]
    Abcd,
    /// Registers swapped, bytes big-endian within each.
    #[serde(rename = "CDAB")]
    Cdab,
    /// Registers in order, bytes swapped within each.
    #[serde(rename = "BADC")]
    Badc,
    /// Little-endian throughout.
    #[serde(rename = "DCBA")]
    Dcba,
}

impl WordOrder {
    /// The profile spelling (`"ABCD"` ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            WordOrder::Abcd => "ABCD",
            WordOrder::Cdab => "CDAB",
            WordOrder::Badc => "BADC",
            WordOrder::Dcba => "DCBA",
        }
    }

    /// True if the least significant register comes first (CDAB, DCBA).
    pub const fn swaps_words(self) -> bool {
        matches!(self, WordOrder::Cdab | WordOrder::Dcba)
    }

    /// True if the bytes within each register are swapped (BADC, DCBA).
    pub const fn swaps_bytes(self) -> bool {
        matches!(self, WordOrder::Badc | WordOrder::Dcba)
    }
}

/// Splits big-endian `bytes` into registers in `order`.
fn encode<const B: usize, const W: usize>(bytes: [u8; B], order: WordOrder) -> [u16; W] {
    let mut out = [0u16; W];
    for (i, w) in out.iter_mut().enumerate() {
        let (hi, lo) = (bytes[2 * i], bytes[2 * i + 1]);
        *w = if order.swaps_bytes() { u16::from_be_bytes([lo, hi]) } else { u16::from_be_bytes([hi, lo]) };
    }
    if order.swaps_words() {
        out.reverse();
    }
    out
}

/// Joins registers in `order` back into big-endian bytes.
fn decode<const B: usize, const W: usize>(words: [u16; W], order: WordOrder) -> [u8; B] {
    let mut words = words;
    if order.swaps_words() {
        words.reverse();
    }
    let mut out = [0u8; B];
    for (i, w) in words.iter().enumerate() {
        let [hi, lo] = w.to_be_bytes();
        let (hi, lo) = if order.swaps_bytes() { (lo, hi) } else { (hi, lo) };
        out[2 * i] = hi;
        out[2 * i + 1] = lo;
    }
    out
}

/// A `u32` as two registers.
pub fn from_u32(v: u32, order: WordOrder) -> [u16; 2] {
    encode(v.to_be_bytes(), order)
}

/// Two registers as a `u32`.
pub fn to_u32(w: [u16; 2], order: WordOrder) -> u32 {
    u32::from_be_bytes(decode(w, order))
}

/// An `i32` as two registers.
pub fn from_i32(v: i32, order: WordOrder) -> [u16; 2] {
    encode(v.to_be_bytes(), order)
}

/// Two registers as an `i32`.
pub fn to_i32(w: [u16; 2], order: WordOrder) -> i32 {
    i32::from_be_bytes(decode(w, order))
}

/// An `f32` as two registers.
pub fn from_f32(v: f32, order: WordOrder) -> [u16; 2] {
    encode(v.to_be_bytes(), order)
}

/// Two registers as an `f32`.
pub fn to_f32(w: [u16; 2], order: WordOrder) -> f32 {
    f32::from_be_bytes(decode(w, order))
}

/// A `u64` as four registers.
pub fn from_u64(v: u64, order: WordOrder) -> [u16; 4] {
    encode(v.to_be_bytes(), order)
}

/// Four registers as a `u64`.
pub fn to_u64(w: [u16; 4], order: WordOrder) -> u64 {
    u64::from_be_bytes(decode(w, order))
}

/// Register `i` (0-based) of a multi-register value, for register maps that answer one
/// address at a time.
pub fn part<const W: usize>(words: [u16; W], i: u16) -> Option<u16> {
    words.get(usize::from(i)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_parse_from_profile_names() {
        for t in Table::ALL {
            assert_eq!(t.as_str().parse::<Table>(), Ok(t));
        }
        assert_eq!("holdings".parse::<Table>(), Err(UnknownTable));
    }

    #[test]
    fn reads_are_limited_per_table_kind() {
        assert_eq!(Table::Input.max_read(), 125);
        assert_eq!(Table::Coil.max_read(), 2000);
    }

    #[test]
    fn orders_parse_from_profile_spellings_and_default_to_abcd() {
        #[derive(Deserialize)]
        struct Point {
            #[serde(default)]
            order: WordOrder,
        }
        let p: Point = serde_json::from_str(r#"{"order":"CDAB"}"#).unwrap();
        assert_eq!(p.order, WordOrder::Cdab);
        let p: Point = serde_json::from_str("{}").unwrap();
        assert_eq!(p.order, WordOrder::Abcd);
        assert!(serde_json::from_str::<Point>(r#"{"order":"cdab"}"#).is_err());
    }

    const ORDERS: [WordOrder; 4] = [WordOrder::Abcd, WordOrder::Cdab, WordOrder::Badc, WordOrder::Dcba];

    #[test]
    fn the_four_orders_lay_out_bytes_as_the_vendors_do() {
        let v = 0x1122_3344_u32;
        assert_eq!(from_u32(v, WordOrder::Abcd), [0x1122, 0x3344]);
        assert_eq!(from_u32(v, WordOrder::Cdab), [0x3344, 0x1122]);
        assert_eq!(from_u32(v, WordOrder::Badc), [0x2211, 0x4433]);
        assert_eq!(from_u32(v, WordOrder::Dcba), [0x4433, 0x2211]);
    }

    #[test]
    fn every_order_round_trips() {
        for o in ORDERS {
            for v in [0_u32, 1, 0xDEAD_BEEF, u32::MAX] {
                assert_eq!(to_u32(from_u32(v, o), o), v);
            }
            for v in [0_i32, -1, i32::MIN, 123_456] {
                assert_eq!(to_i32(from_i32(v, o), o), v);
            }
            for v in [0.0_f32, -1.5, 38.6, f32::MAX] {
                assert_eq!(to_f32(from_f32(v, o), o).to_bits(), v.to_bits());
            }
            for v in [0_u64, 0x0102_0304_0506_0708, u64::MAX] {
                assert_eq!(to_u64(from_u64(v, o), o), v);
            }
        }
    }

    #[test]
    fn a_float_in_cdab_is_word_swapped_ieee754() {
        // 1.0f32 is 0x3F800000.
        assert_eq!(from_f32(1.0, WordOrder::Cdab), [0x0000, 0x3F80]);
        assert_eq!(from_u64(0x0102_0304_0506_0708, WordOrder::Cdab), [0x0708, 0x0506, 0x0304, 0x0102]);
    }
}
