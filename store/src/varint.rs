//! The store's view of `protocol::varint` (the one LEB128 and zig-zag implementation):
//! the same encoding, read through `Option` because every caller here turns a short or
//! overlong input into one corruption error naming the file.
//!
//! Invariant: decoding never panics on arbitrary bytes.

pub(crate) use protocol::varint::{put_i64, put_u64};

/// A cursor over bytes read from disk.
pub(crate) struct Reader<'a>(protocol::varint::Reader<'a>);

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader(protocol::varint::Reader::new(bytes))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.remaining() == 0
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.0.u8().ok()
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.0.u64().ok()
    }

    pub(crate) fn i64(&mut self) -> Option<i64> {
        self.0.i64().ok()
    }

    pub(crate) fn f64(&mut self) -> Option<f64> {
        self.0.f64().ok()
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        self.0.take(n).ok()
    }

    /// A length-prefixed byte string.
    pub(crate) fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.u64()?).ok()?;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn varints_round_trip(u in any::<u64>(), i in any::<i64>()) {
            let mut out = Vec::new();
            put_u64(&mut out, u);
            put_i64(&mut out, i);
            let mut r = Reader::new(&out);
            prop_assert_eq!(r.u64(), Some(u));
            prop_assert_eq!(r.i64(), Some(i));
            prop_assert!(r.is_empty());
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            let mut r = Reader::new(&bytes);
            while r.u64().is_some() {}
        }
    }
}
