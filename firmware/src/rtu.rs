//! Modbus RTU slave: one request frame in, one response frame (or silence) out.
//!
//! This is the serial side of every device: the board's UART driver collects a frame
//! (3.5 character times of silence end it), hands it here with the device's register map,
//! and sends back what this returns. No allocation: the response is built in a caller's
//! 256-byte buffer, the longest RTU frame.
//!
//! Invariants (Modbus over serial line, V1.02):
//! - A frame with a bad CRC, too short, or for another unit gets no answer: on a shared
//!   RS-485 bus only the addressed slave may talk, and a corrupted frame may have been
//!   for anyone.
//! - Unit 0 is broadcast: writes are carried out, nothing is answered.
//! - Every answer ends with the CRC, low byte first; exceptions echo the function code
//!   with the top bit set.

use crate::crc::crc16;
use crate::modbus::{self, Exception, MAX_READ_BITS, MAX_READ_REGISTERS, RegisterMap, Table};

/// Longest RTU frame (address + PDU of 253 + CRC).
pub const MAX_FRAME: usize = 256;
/// Unit id of a broadcast.
pub const BROADCAST: u8 = 0;

fn be16(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]))
}

/// Answers `request` for the device at `unit`; returns the length of the response in
/// `out`, or `None` when the slave must stay silent.
pub fn respond<M: RegisterMap + ?Sized>(
    unit: u8,
    map: &mut M,
    request: &[u8],
    out: &mut [u8; MAX_FRAME],
) -> Option<usize> {
    if request.len() < 4 || !crate::crc::frame_ok(request) {
        return None;
    }
    let addr = request[0];
    if addr != unit && addr != BROADCAST {
        return None;
    }
    let pdu = &request[1..request.len() - 2];
    let fc = pdu[0];
    out[0] = unit;
    out[1] = fc;
    let len = match execute(map, pdu, &mut out[2..MAX_FRAME - 2]) {
        Ok(n) => 2 + n,
        Err(e) => {
            out[1] = fc | 0x80;
            out[2] = e.code();
            3
        }
    };
    if addr == BROADCAST {
        return None;
    }
    let crc = crc16(&out[..len]).to_le_bytes();
    out[len] = crc[0];
    out[len + 1] = crc[1];
    Some(len + 2)
}

/// Carries out one PDU; writes the response data after the function code into `out`.
fn execute<M: RegisterMap + ?Sized>(map: &mut M, pdu: &[u8], out: &mut [u8]) -> Result<usize, Exception> {
    let fc = pdu[0];
    let a = be16(pdu, 1).ok_or(Exception::IllegalDataValue);
    let b = be16(pdu, 3).ok_or(Exception::IllegalDataValue);
    match fc {
        1 | 2 => read_bits(map, if fc == 1 { Table::Coil } else { Table::Discrete }, a?, usize::from(b?), out),
        3 | 4 => read_registers(map, if fc == 3 { Table::Holding } else { Table::Input }, a?, usize::from(b?), out),
        5 => {
            let value = match b? {
                0xFF00 => true,
                0x0000 => false,
                _ => return Err(Exception::IllegalDataValue),
            };
            modbus::write_coils(map, a?, &[value])?;
            out[..4].copy_from_slice(&pdu[1..5]);
            Ok(4)
        }
        6 => {
            modbus::write_registers(map, a?, &[b?])?;
            out[..4].copy_from_slice(&pdu[1..5]);
            Ok(4)
        }
        15 => write_coils(map, a?, usize::from(b?), pdu, out),
        16 => {
            let (address, qty) = (a?, usize::from(b?));
            let data = pdu.get(6..).ok_or(Exception::IllegalDataValue)?;
            if qty == 0 || usize::from(pdu[5]) != 2 * qty || data.len() != 2 * qty {
                return Err(Exception::IllegalDataValue);
            }
            let mut regs = [0u16; modbus::MAX_WRITE_REGISTERS];
            let regs = regs.get_mut(..qty).ok_or(Exception::IllegalDataValue)?;
            for (i, r) in regs.iter_mut().enumerate() {
                *r = u16::from_be_bytes([data[2 * i], data[2 * i + 1]]);
            }
            modbus::write_registers(map, address, regs)?;
            out[..4].copy_from_slice(&pdu[1..5]);
            Ok(4)
        }
        _ => Err(Exception::IllegalFunction),
    }
}

// The function codes whose buffers are large (a read of 2,000 bits or coils written, 125
// registers read) have them in frames of their own, not inlined into `execute`: inlined,
// the 4 KiB of bit buffers would sit on the stack under every request, the mailbox
// commit's signature check included (docs/FIRMWARE.md, stack budget).

/// Function codes 1 and 2: reads `qty` bits of `table` from `address` into `out`.
#[inline(never)]
fn read_bits<M: RegisterMap + ?Sized>(
    map: &mut M,
    table: Table,
    address: u16,
    qty: usize,
    out: &mut [u8],
) -> Result<usize, Exception> {
    let mut bits = [false; MAX_READ_BITS];
    let bits = bits.get_mut(..qty).ok_or(Exception::IllegalDataValue)?;
    modbus::read_bits(map, table, address, bits)?;
    let n = qty.div_ceil(8);
    out[0] = n as u8;
    out[1..=n].fill(0);
    for (i, &bit) in bits.iter().enumerate() {
        out[1 + i / 8] |= u8::from(bit) << (i % 8);
    }
    Ok(1 + n)
}

/// Function codes 3 and 4: reads `qty` registers of `table` from `address` into `out`.
#[inline(never)]
fn read_registers<M: RegisterMap + ?Sized>(
    map: &mut M,
    table: Table,
    address: u16,
    qty: usize,
    out: &mut [u8],
) -> Result<usize, Exception> {
    let mut regs = [0u16; MAX_READ_REGISTERS];
    let regs = regs.get_mut(..qty).ok_or(Exception::IllegalDataValue)?;
    modbus::read_registers(map, table, address, regs)?;
    out[0] = (2 * qty) as u8;
    for (i, r) in regs.iter().enumerate() {
        out[1 + 2 * i..3 + 2 * i].copy_from_slice(&r.to_be_bytes());
    }
    Ok(1 + 2 * qty)
}

/// Function code 15: writes the `qty` coils packed in `pdu` from `address`.
#[inline(never)]
fn write_coils<M: RegisterMap + ?Sized>(
    map: &mut M,
    address: u16,
    qty: usize,
    pdu: &[u8],
    out: &mut [u8],
) -> Result<usize, Exception> {
    let data = pdu.get(6..).ok_or(Exception::IllegalDataValue)?;
    if qty == 0 || usize::from(pdu[5]) != qty.div_ceil(8) || data.len() != qty.div_ceil(8) {
        return Err(Exception::IllegalDataValue);
    }
    let mut bits = [false; modbus::MAX_WRITE_COILS];
    let bits = bits.get_mut(..qty).ok_or(Exception::IllegalDataValue)?;
    for (i, bit) in bits.iter_mut().enumerate() {
        *bit = data[i / 8] & (1 << (i % 8)) != 0;
    }
    modbus::write_coils(map, address, bits)?;
    out[..4].copy_from_slice(&pdu[1..5]);
    Ok(4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::speaker::Speaker;

    fn frame(bytes: &[u8]) -> ([u8; MAX_FRAME], usize) {
        let mut f = [0u8; MAX_FRAME];
        f[..bytes.len()].copy_from_slice(bytes);
        let crc = crc16(bytes).to_le_bytes();
        f[bytes.len()..bytes.len() + 2].copy_from_slice(&crc);
        (f, bytes.len() + 2)
    }

    fn ask(unit: u8, map: &mut Speaker, pdu: &[u8]) -> Option<([u8; MAX_FRAME], usize)> {
        let (req, n) = frame(pdu);
        let mut out = [0u8; MAX_FRAME];
        respond(unit, map, &req[..n], &mut out).map(|len| (out, len))
    }

    #[test]
    fn reads_holding_registers_with_a_valid_crc() {
        let mut s = Speaker::new(70);
        let (out, len) = ask(5, &mut s, &[5, 3, 0, 0, 0, 1]).unwrap();
        assert_eq!(&out[..5], &[5, 3, 2, 0, 70]);
        assert!(crate::crc::frame_ok(&out[..len]));
    }

    #[test]
    fn writes_a_register_and_echoes_the_request() {
        let mut s = Speaker::new(70);
        let (out, len) = ask(5, &mut s, &[5, 6, 0, 0, 0, 90]).unwrap();
        assert_eq!(&out[..6], &[5, 6, 0, 0, 0, 90]);
        assert_eq!(len, 8);
        assert_eq!(s.volume(), 90);
        let (out, _) = ask(5, &mut s, &[5, 16, 0, 0, 0, 1, 2, 0, 55]).unwrap();
        assert_eq!(&out[..6], &[5, 16, 0, 0, 0, 1]);
        assert_eq!(s.volume(), 55);
    }

    #[test]
    fn bad_values_and_addresses_come_back_as_exceptions() {
        let mut s = Speaker::new(70);
        let (out, _) = ask(5, &mut s, &[5, 6, 0, 0, 0, 101]).unwrap();
        assert_eq!(&out[..3], &[5, 0x86, 3]);
        let (out, _) = ask(5, &mut s, &[5, 3, 0x07, 0xD0, 0, 1]).unwrap();
        assert_eq!(&out[..3], &[5, 0x83, 2]);
        let (out, _) = ask(5, &mut s, &[5, 0x2B, 0x0E, 1, 0]).unwrap();
        assert_eq!(&out[..3], &[5, 0xAB, 1]);
        let (out, _) = ask(5, &mut s, &[5, 3, 0, 0, 0, 126]).unwrap();
        assert_eq!(&out[..3], &[5, 0x83, 3]);
    }

    #[test]
    fn other_units_bad_crcs_and_broadcasts_get_silence() {
        let mut s = Speaker::new(70);
        assert!(ask(6, &mut s, &[5, 3, 0, 0, 0, 1]).is_none());
        let (mut req, n) = frame(&[5, 3, 0, 0, 0, 1]);
        req[n - 1] ^= 0xFF;
        let mut out = [0u8; MAX_FRAME];
        assert!(respond(5, &mut s, &req[..n], &mut out).is_none());
        assert!(ask(5, &mut s, &[0, 6, 0, 0, 0, 40]).is_none());
        assert_eq!(s.volume(), 40, "a broadcast write is carried out");
    }

    #[test]
    fn discrete_inputs_pack_into_bytes_lsb_first() {
        let mut s = Speaker::new(70);
        let (out, _) = ask(5, &mut s, &[5, 2, 0, 0, 0, 1]).unwrap();
        assert_eq!(&out[..4], &[5, 2, 1, 0x01]);
    }
}
