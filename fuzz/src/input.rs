//! A cursor that turns the fuzzer's bytes into the values a structure-aware target needs.
//!
//! Invariant: every read succeeds. Past the end of the input a read gives zeros (or an
//! empty slice), so a target never has to handle "not enough input" and AFL's mutations of
//! the length keep their meaning.

/// Reads values off the front of the fuzzer's input.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    /// True when every byte was taken.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// One byte, 0 past the end.
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    /// True for an odd byte.
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// Two bytes, little endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// Eight bytes, little endian.
    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.u8();
        }
        u64::from_le_bytes(b)
    }

    /// Eight bytes as a signed number.
    pub fn i64(&mut self) -> i64 {
        self.u64() as i64
    }

    /// Up to `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    /// A chunk whose length is the next byte (0..=255).
    pub fn chunk(&mut self) -> &'a [u8] {
        let n = usize::from(self.u8());
        self.bytes(n)
    }

    /// A chunk whose length is the next two bytes, at most `max`.
    pub fn long_chunk(&mut self, max: usize) -> &'a [u8] {
        let n = usize::from(self.u16()).min(max);
        self.bytes(n)
    }

    /// Text from a chunk, lossily: the fuzzer's bytes as a string a decoder could get.
    pub fn text(&mut self) -> String {
        String::from_utf8_lossy(self.chunk()).into_owned()
    }

    /// Everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}
