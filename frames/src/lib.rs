//! Checksummed frames for append-only logs: the gateway's store-and-forward queue and the
//! store's write-ahead log both write records this way, and both must find the same
//! answer to one question after a crash or a power cut: where does the intact log end?
//!
//! A frame is `len: u32 LE | crc32(payload): u32 LE | payload`. A reader walks frames
//! from the start of a file and stops at the first one that is short, longer than the
//! caller's limit, or fails its checksum: everything from there on is a torn tail.
//!
//! Invariant: reading never panics and never allocates on a length it has not checked.
//!
//! Both logs also do their file I/O through [`fs`], so that tests can cut the power under
//! them ([`fs::SimFs`]) and check what survives.

#![forbid(unsafe_code)]

pub mod fs;

/// Bytes in a frame's header (length and checksum).
pub const HEADER: usize = 8;

/// Appends `payload` as one frame.
pub fn append(out: &mut Vec<u8>, payload: &[u8]) {
    let start = begin(out);
    out.extend_from_slice(payload);
    finish(out, start);
}

/// Reserves a header at the end of `out` and returns where the frame starts, so that a
/// caller can encode the payload straight into `out` and then [`finish`] it, without a
/// second buffer.
pub fn begin(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    start
}

/// Fills in the header of the frame begun at `start`: everything after the header is its
/// payload.
///
/// # Panics
/// If `start` was not returned by [`begin`] on this buffer (a bug, not bad input).
pub fn finish(out: &mut [u8], start: usize) {
    let payload = &out[start + HEADER..];
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

/// The payload of the intact frame at `pos` and where the next frame starts, or `None`
/// where the intact log ends: a short header or payload, a length above `max_len` (a
/// corrupt length field, refused instead of believed), or a checksum that does not match.
pub fn frame_at(bytes: &[u8], pos: usize, max_len: u32) -> Option<(&[u8], usize)> {
    let header = bytes.get(pos..pos.checked_add(HEADER)?)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > max_len {
        return None;
    }
    let end = pos.checked_add(HEADER)?.checked_add(usize::try_from(len).ok()?)?;
    let payload = bytes.get(pos + HEADER..end)?;
    (crc32fast::hash(payload) == crc).then_some((payload, end))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn walk(bytes: &[u8]) -> (Vec<Vec<u8>>, usize) {
        let (mut out, mut pos) = (Vec::new(), 0);
        while let Some((p, next)) = frame_at(bytes, pos, 1 << 20) {
            out.push(p.to_vec());
            pos = next;
        }
        (out, pos)
    }

    proptest! {
        #[test]
        fn frames_read_back_and_any_cut_ends_the_log_at_the_last_whole_frame(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut log = Vec::new();
            let mut ends = vec![0];
            for p in &payloads {
                append(&mut log, p);
                ends.push(log.len());
            }
            prop_assert_eq!(walk(&log), (payloads.clone(), log.len()));
            let at = cut.index(log.len() + 1);
            let (read, end) = walk(&log[..at]);
            let whole = ends.iter().filter(|&&e| e <= at).count() - 1;
            prop_assert_eq!(read, payloads[..whole].to_vec());
            prop_assert_eq!(end, ends[whole]);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), pos in 0usize..80) {
            let _ = frame_at(&bytes, pos, u32::MAX);
        }
    }

    #[test]
    fn a_flipped_bit_or_an_absurd_length_ends_the_log() {
        let mut log = Vec::new();
        append(&mut log, b"first");
        append(&mut log, b"second");
        let second = HEADER + 5;
        let mut flipped = log.clone();
        flipped[second + HEADER] ^= 1;
        assert_eq!(walk(&flipped).0, vec![b"first".to_vec()]);
        assert_eq!(frame_at(&log, second, 5), None, "a length over the limit is refused");
        assert_eq!(frame_at(&log, usize::MAX - 2, 100), None);
    }
}
