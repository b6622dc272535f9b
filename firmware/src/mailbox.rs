//! A signed-command mailbox in holding registers: how a gateway hands a device a signed
//! command envelope over plain Modbus writes.
//!
//! Layout (addresses relative to the mailbox's first register, `base`):
//!
//! | register | meaning |
//! |---|---|
//! | `base` | length of the envelope in bytes, 1..=[`Mailbox::CAPACITY_BYTES`]; the commit |
//! | `base + 1` .. `base + 999` | the envelope's bytes packed big-endian, two to a register (byte `2i` in the high byte of register `base + 1 + i`); an odd last byte is padded with 0 |
//!
//! Protocol (what a gateway does):
//! 1. write the data registers from `base + 1`, in as many writes of at most 123 registers
//!    (function code 16) as needed, in any order;
//! 2. write the length into `base`, last: that write is the commit. The device takes the
//!    first `length` bytes of the data registers as one envelope and processes it at the
//!    end of the write that carried the length, before it answers the write. A write that
//!    covers `base` and data registers together (a short envelope in one write) stores all
//!    its words first, then commits.
//! 3. read the device's result (for the speaker: input registers 100.., see
//!    [`crate::speaker`]); the length register reads 0 again once the envelope was taken.
//!
//! Invariants:
//! - A length of 0 commits nothing (it only clears); a length over the capacity is
//!   refused with `IllegalDataValue` and nothing is processed.
//! - The mailbox never interprets the bytes: the device verifies the envelope (signature,
//!   target, expiry, replay) itself, so a gateway or anyone on the bus cannot make it act
//!   on anything ingest did not sign.
//! - Data registers read back what was written last; no state survives a commit except
//!   those words, and a new envelope overwrites them.

use crate::modbus::Exception;

/// Registers of the mailbox, including the length register.
pub const REGISTERS: u16 = 1000;

/// A mailbox of [`REGISTERS`] holding registers starting at `base`.
#[derive(Clone)]
pub struct Mailbox {
    base: u16,
    /// The data registers as the envelope's bytes, two a register, big-endian: kept as
    /// bytes so the envelope can be checked where it lies ([`Mailbox::envelope_bytes`]).
    bytes: [u8; Mailbox::CAPACITY_BYTES],
}

impl core::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Mailbox").field("base", &self.base).finish_non_exhaustive()
    }
}

/// What a write into the mailbox did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Data stored; nothing to process yet.
    Stored,
    /// The length register was written: process these many bytes (see [`Mailbox::envelope`]).
    Commit(usize),
}

impl Mailbox {
    /// Largest envelope the mailbox holds, in bytes.
    pub const CAPACITY_BYTES: usize = 2 * (REGISTERS as usize - 1);

    /// An empty mailbox at `base..base + 1000`.
    pub const fn new(base: u16) -> Mailbox {
        Mailbox { base, bytes: [0; Self::CAPACITY_BYTES] }
    }

    /// True if `address` belongs to the mailbox.
    pub fn contains(&self, address: u16) -> bool {
        address >= self.base && u32::from(address) < u32::from(self.base) + u32::from(REGISTERS)
    }

    /// A register as a Modbus read sees it; the length register reads 0 (nothing pending).
    pub fn register(&self, address: u16) -> Option<u16> {
        if !self.contains(address) {
            return None;
        }
        match address - self.base {
            0 => Some(0),
            i => {
                let at = 2 * usize::from(i - 1);
                Some(u16::from_be_bytes([*self.bytes.get(at)?, *self.bytes.get(at + 1)?]))
            }
        }
    }

    /// Applies a write that lies wholly inside the mailbox (the caller checked with
    /// [`Mailbox::contains`] on both ends). All or nothing: a bad length stores nothing.
    pub fn write(&mut self, address: u16, words: &[u16]) -> Result<Written, Exception> {
        let last = usize::from(address) + words.len();
        if !self.contains(address) || last > usize::from(self.base) + usize::from(REGISTERS) {
            return Err(Exception::IllegalDataAddress);
        }
        let mut commit = None;
        if address == self.base {
            let length = usize::from(words[0]);
            if length > Self::CAPACITY_BYTES {
                return Err(Exception::IllegalDataValue);
            }
            commit = Some(length);
        }
        let (skip, first) = if address == self.base { (1, 0) } else { (0, usize::from(address - self.base) - 1) };
        for (i, w) in words.iter().skip(skip).enumerate() {
            let at = 2 * (first + i);
            self.bytes[at..at + 2].copy_from_slice(&w.to_be_bytes());
        }
        Ok(match commit {
            Some(n) if n > 0 => Written::Commit(n),
            _ => Written::Stored,
        })
    }

    /// The first `length` bytes of the data registers, into `out` (at least `length` long).
    /// Returns the bytes written.
    pub fn envelope<'a>(&self, length: usize, out: &'a mut [u8]) -> &'a [u8] {
        let length = length.min(Self::CAPACITY_BYTES).min(out.len());
        out[..length].copy_from_slice(&self.bytes[..length]);
        &out[..length]
    }

    /// The first `length` bytes of the data registers (at most [`Mailbox::CAPACITY_BYTES`]),
    /// borrowed: the envelope as it lies, for a device that checks it without a copy.
    pub fn envelope_bytes(&self, length: usize) -> &[u8] {
        &self.bytes[..length.min(Self::CAPACITY_BYTES)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(bytes: &[u8]) -> alloc::vec::Vec<u16> {
        bytes.chunks(2).map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])).collect()
    }

    #[test]
    fn data_then_length_last_commits_the_envelope_big_endian() {
        let mut m = Mailbox::new(1000);
        let env: alloc::vec::Vec<u8> = (0..=255u8).cycle().take(301).collect();
        let words = pack(&env);
        assert_eq!(m.write(1001, &words[..123]), Ok(Written::Stored));
        assert_eq!(m.write(1124, &words[123..]), Ok(Written::Stored));
        assert_eq!(m.write(1000, &[301]), Ok(Written::Commit(301)));
        let mut buf = [0u8; Mailbox::CAPACITY_BYTES];
        assert_eq!(m.envelope(301, &mut buf), &env[..]);
        assert_eq!(m.envelope_bytes(301), &env[..], "borrowed as it lies, the same bytes");
        assert_eq!(m.register(1000), Some(0), "the length reads 0 once taken");
        assert_eq!(m.register(1001), Some(0x0001));
    }

    #[test]
    fn one_write_with_length_first_stores_the_data_before_it_commits() {
        let mut m = Mailbox::new(1000);
        let mut words = alloc::vec![3u16];
        words.extend(pack(&[0xC5, 0x01, 0x02]));
        assert_eq!(m.write(1000, &words), Ok(Written::Commit(3)));
        let mut buf = [0u8; 8];
        assert_eq!(m.envelope(3, &mut buf), &[0xC5, 0x01, 0x02]);
    }

    #[test]
    fn a_length_over_the_capacity_or_a_write_past_the_end_is_refused() {
        let mut m = Mailbox::new(1000);
        assert_eq!(m.write(1000, &[1999]), Err(Exception::IllegalDataValue));
        assert_eq!(m.write(1999, &[1, 2]), Err(Exception::IllegalDataAddress));
        assert_eq!(m.write(1000, &[0]), Ok(Written::Stored), "length 0 commits nothing");
        assert!(m.contains(1999) && !m.contains(2000) && !m.contains(999));
        assert_eq!(Mailbox::CAPACITY_BYTES, 1998);
    }
}
