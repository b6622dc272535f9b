//! Modbus data model of a device: exception codes, and range reads and writes over the
//! tables of [`protocol::modbus`].
//!
//! A device implements [`RegisterMap`] one address at a time; [`read_registers`],
//! [`read_bits`], [`write_registers`] and [`write_coils`] turn that into the protocol's
//! range operations with its limits, so every device answers a malformed request the same
//! way.
//!
//! Invariants:
//! - A read succeeds only if every address in the range is mapped; otherwise the whole
//!   request fails with [`Exception::IllegalDataAddress`] (what PLCs and meters do), so a
//!   gateway never gets half a value.
//! - Quantities outside the protocol's limits (0, or more than 125 registers / 2000 bits
//!   per read, 123 registers / 1968 coils per write) fail with
//!   [`Exception::IllegalDataValue`] before any address is looked at.
//! - Writes are all or nothing: a device validates the whole range before it changes any
//!   state.

use core::fmt;

/// Most registers one read may return (function codes 3 and 4).
pub const MAX_READ_REGISTERS: usize = 125;
/// Most bits one read may return (function codes 1 and 2).
pub const MAX_READ_BITS: usize = 2000;
/// Most registers one write may carry (function code 16).
pub const MAX_WRITE_REGISTERS: usize = 123;
/// Most coils one write may carry (function code 15).
pub const MAX_WRITE_COILS: usize = 1968;

/// The tables are part of the device <-> gateway contract and live in
/// [`protocol::modbus`]; re-exported because every register map here names them.
pub use protocol::modbus::{Table, UnknownTable};

/// A Modbus exception a device answers with; the discriminant is the wire code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Exception {
    /// The function code is not supported (or not for this table).
    IllegalFunction = 0x01,
    /// An address in the range is not mapped, or not writable.
    IllegalDataAddress = 0x02,
    /// The quantity is out of limits, or a written value is out of the device's range.
    IllegalDataValue = 0x03,
    /// The device could not carry out the request.
    ServerDeviceFailure = 0x04,
    /// The device is busy with a long operation; try later.
    ServerDeviceBusy = 0x06,
}

impl Exception {
    /// The wire code.
    pub const fn code(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for Exception {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Exception::IllegalFunction => "illegal function",
            Exception::IllegalDataAddress => "illegal data address",
            Exception::IllegalDataValue => "illegal data value",
            Exception::ServerDeviceFailure => "server device failure",
            Exception::ServerDeviceBusy => "server device busy",
        };
        write!(f, "Modbus exception {:#04x} ({name})", self.code())
    }
}

/// A device's register map, one address at a time.
///
/// Implementations answer `None` for an address they do not map; the range functions of
/// this module turn that into [`Exception::IllegalDataAddress`].
pub trait RegisterMap {
    /// One input or holding register (`table` is [`Table::Input`] or [`Table::Holding`]).
    fn register(&self, table: Table, address: u16) -> Option<u16>;

    /// One coil or discrete input (`table` is [`Table::Coil`] or [`Table::Discrete`]).
    fn bit(&self, table: Table, address: u16) -> Option<bool>;

    /// Writes holding registers from `address`, all or nothing. Devices without writable
    /// registers keep the default, which refuses every address.
    fn write_registers(&mut self, address: u16, words: &[u16]) -> Result<(), Exception> {
        let _ = (address, words);
        Err(Exception::IllegalDataAddress)
    }

    /// Writes coils from `address`, all or nothing.
    fn write_coils(&mut self, address: u16, bits: &[bool]) -> Result<(), Exception> {
        let _ = (address, bits);
        Err(Exception::IllegalDataAddress)
    }
}

/// Checks that `count` items from `address` fit the 16-bit address space.
fn span(address: u16, count: usize) -> Result<(), Exception> {
    match u16::try_from(count) {
        Ok(n) if n > 0 && address.checked_add(n - 1).is_some() => Ok(()),
        _ => Err(Exception::IllegalDataAddress),
    }
}

/// Reads `out.len()` registers of `table` from `address` (function codes 3 and 4).
pub fn read_registers<M: RegisterMap + ?Sized>(
    map: &M,
    table: Table,
    address: u16,
    out: &mut [u16],
) -> Result<(), Exception> {
    if table.is_bits() {
        return Err(Exception::IllegalFunction);
    }
    if out.is_empty() || out.len() > MAX_READ_REGISTERS {
        return Err(Exception::IllegalDataValue);
    }
    span(address, out.len())?;
    for (slot, a) in out.iter_mut().zip(address..) {
        *slot = map.register(table, a).ok_or(Exception::IllegalDataAddress)?;
    }
    Ok(())
}

/// Reads `out.len()` bits of `table` from `address` (function codes 1 and 2).
pub fn read_bits<M: RegisterMap + ?Sized>(
    map: &M,
    table: Table,
    address: u16,
    out: &mut [bool],
) -> Result<(), Exception> {
    if !table.is_bits() {
        return Err(Exception::IllegalFunction);
    }
    if out.is_empty() || out.len() > MAX_READ_BITS {
        return Err(Exception::IllegalDataValue);
    }
    span(address, out.len())?;
    for (slot, a) in out.iter_mut().zip(address..) {
        *slot = map.bit(table, a).ok_or(Exception::IllegalDataAddress)?;
    }
    Ok(())
}

/// Writes holding registers (function codes 6 and 16) after checking the quantity.
pub fn write_registers<M: RegisterMap + ?Sized>(map: &mut M, address: u16, words: &[u16]) -> Result<(), Exception> {
    if words.is_empty() || words.len() > MAX_WRITE_REGISTERS {
        return Err(Exception::IllegalDataValue);
    }
    span(address, words.len())?;
    map.write_registers(address, words)
}

/// Writes coils (function codes 5 and 15) after checking the quantity.
pub fn write_coils<M: RegisterMap + ?Sized>(map: &mut M, address: u16, bits: &[bool]) -> Result<(), Exception> {
    if bits.is_empty() || bits.len() > MAX_WRITE_COILS {
        return Err(Exception::IllegalDataValue);
    }
    span(address, bits.len())?;
    map.write_coils(address, bits)
}

/// Helper for devices: the words of a write that land on `target`, if any.
///
/// A write of `words` from `address` covers `address..address + len`; this returns the
/// word destined for `target` so a device can pick out the registers it owns.
pub fn word_at(address: u16, words: &[u16], target: u16) -> Option<u16> {
    let i = usize::from(target.checked_sub(address)?);
    words.get(i).copied()
}

/// Helper for devices: true if every address of the write is in `allowed`.
pub fn covers_only(address: u16, len: usize, allowed: &[u16]) -> bool {
    (0..len).all(|i| u16::try_from(i).ok().and_then(|i| address.checked_add(i)).is_some_and(|a| allowed.contains(&a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Input registers 0..=3 hold 10, 11, 12, 13; coil 0 is writable.
    struct Tiny {
        coil: bool,
    }

    impl RegisterMap for Tiny {
        fn register(&self, table: Table, address: u16) -> Option<u16> {
            (table == Table::Input && address < 4).then_some(10 + address)
        }
        fn bit(&self, table: Table, address: u16) -> Option<bool> {
            (table == Table::Coil && address == 0).then_some(self.coil)
        }
        fn write_coils(&mut self, address: u16, bits: &[bool]) -> Result<(), Exception> {
            if address != 0 || bits.len() != 1 {
                return Err(Exception::IllegalDataAddress);
            }
            self.coil = bits[0];
            Ok(())
        }
    }

    #[test]
    fn a_read_inside_the_map_returns_every_register() {
        let mut out = [0u16; 4];
        assert_eq!(read_registers(&Tiny { coil: false }, Table::Input, 0, &mut out), Ok(()));
        assert_eq!(out, [10, 11, 12, 13]);
    }

    #[test]
    fn a_read_that_runs_past_the_map_fails_whole() {
        let mut out = [0u16; 2];
        assert_eq!(
            read_registers(&Tiny { coil: false }, Table::Input, 3, &mut out),
            Err(Exception::IllegalDataAddress)
        );
        assert_eq!(
            read_registers(&Tiny { coil: false }, Table::Holding, 0, &mut out),
            Err(Exception::IllegalDataAddress)
        );
        assert_eq!(
            read_registers(&Tiny { coil: false }, Table::Input, u16::MAX, &mut out),
            Err(Exception::IllegalDataAddress)
        );
    }

    #[test]
    fn quantities_outside_the_protocol_limits_are_illegal_values() {
        let mut none: [u16; 0] = [];
        let mut too_many = [0u16; 126];
        assert_eq!(read_registers(&Tiny { coil: false }, Table::Input, 0, &mut none), Err(Exception::IllegalDataValue));
        assert_eq!(
            read_registers(&Tiny { coil: false }, Table::Input, 0, &mut too_many),
            Err(Exception::IllegalDataValue)
        );
        let mut bits = [false; 2001];
        assert_eq!(read_bits(&Tiny { coil: false }, Table::Coil, 0, &mut bits), Err(Exception::IllegalDataValue));
    }

    #[test]
    fn bit_functions_on_register_tables_are_illegal_functions() {
        let mut bits = [false; 1];
        assert_eq!(read_bits(&Tiny { coil: false }, Table::Input, 0, &mut bits), Err(Exception::IllegalFunction));
        let mut regs = [0u16; 1];
        assert_eq!(read_registers(&Tiny { coil: false }, Table::Coil, 0, &mut regs), Err(Exception::IllegalFunction));
    }

    #[test]
    fn writes_reach_the_device_and_default_maps_refuse_them() {
        let mut t = Tiny { coil: false };
        assert_eq!(write_coils(&mut t, 0, &[true]), Ok(()));
        assert!(t.coil);
        assert_eq!(write_registers(&mut t, 0, &[1]), Err(Exception::IllegalDataAddress));
        assert_eq!(write_coils(&mut t, 0, &[]), Err(Exception::IllegalDataValue));
    }

    #[test]
    fn write_helpers_pick_the_words_a_device_owns() {
        assert_eq!(word_at(10, &[1, 2, 3], 11), Some(2));
        assert_eq!(word_at(10, &[1, 2, 3], 9), None);
        assert_eq!(word_at(10, &[1, 2, 3], 13), None);
        assert!(covers_only(0, 2, &[0, 1]));
        assert!(!covers_only(0, 3, &[0, 1]));
    }
}
