//! LEB128 varints, zig-zag signed integers and length-prefixed strings, shared by the
//! binary batch codec, the canonical command encoding, and the store's log and blocks
//! (one implementation of a format that must never disagree with itself).
//!
//! The reader never trusts a length it reads: every read is bounds-checked and a string
//! longer than what is left is an error, not an allocation.

use alloc::string::String;
use alloc::vec::Vec;

/// Why bytes could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// The input ended inside a value.
    Truncated,
    /// A varint ran over 64 bits.
    Overflow,
    /// A string was not UTF-8.
    Utf8,
}

/// Appends `v` as an unsigned LEB128 varint: small numbers take one byte.
pub fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends `v` zig-zag encoded, so small negative numbers stay short too.
pub fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_u64(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// Appends `s` with its length in front, so a reader knows where it ends.
pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// A cursor over untrusted bytes: every read is bounds-checked.
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts at the first byte.
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }

    /// Bytes read so far, for errors that point at an offset.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, ReadError> {
        let b = *self.bytes.get(self.pos).ok_or(ReadError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    /// The next `n` bytes, or `Truncated` if fewer are left.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], ReadError> {
        if n > self.remaining() {
            return Err(ReadError::Truncated);
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// An unsigned LEB128 varint; more than 64 bits is `Overflow`.
    pub fn u64(&mut self) -> Result<u64, ReadError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(ReadError::Overflow);
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ReadError::Overflow)
    }

    /// A zig-zag varint.
    pub fn i64(&mut self) -> Result<i64, ReadError> {
        let u = self.u64()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    /// Four bytes, little-endian.
    pub fn f32(&mut self) -> Result<f32, ReadError> {
        let b = self.take(4)?;
        Ok(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Eight bytes, little-endian.
    pub fn f64(&mut self) -> Result<f64, ReadError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_le_bytes(a))
    }

    /// A length-prefixed UTF-8 string, borrowed.
    pub fn str(&mut self) -> Result<&'a str, ReadError> {
        let len = self.u64()?;
        let len = usize::try_from(len).map_err(|_| ReadError::Truncated)?;
        let bytes = self.take(len)?;
        core::str::from_utf8(bytes).map_err(|_| ReadError::Utf8)
    }

    /// A length-prefixed UTF-8 string, owned.
    pub fn string(&mut self) -> Result<String, ReadError> {
        self.str().map(String::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn integers_round_trip(u in any::<u64>(), i in any::<i64>()) {
            let mut out = Vec::new();
            put_u64(&mut out, u);
            put_i64(&mut out, i);
            let mut r = Reader::new(&out);
            prop_assert_eq!(r.u64(), Ok(u));
            prop_assert_eq!(r.i64(), Ok(i));
            prop_assert_eq!(r.remaining(), 0);
        }
    }

    #[test]
    fn small_numbers_take_one_byte() {
        let mut out = Vec::new();
        put_u64(&mut out, 127);
        put_i64(&mut out, -64);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn overlong_varints_and_lying_lengths_are_errors() {
        assert_eq!(Reader::new(&[0xff; 11]).u64(), Err(ReadError::Overflow));
        assert_eq!(Reader::new(&[0x80]).u64(), Err(ReadError::Truncated));
        // A string that claims 100 bytes with 2 left.
        assert_eq!(Reader::new(&[100, b'a', b'b']).str(), Err(ReadError::Truncated));
    }
}
