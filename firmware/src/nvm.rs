//! Non-volatile memory layouts a board keeps for a device: the provisioning page an
//! installer writes once, and a two-page journal for the state that must outlive a reset
//! (the speaker's replay window and command log, a meter's totaliser).
//!
//! Both are byte layouts only. The board decides where they live (a flash sector,
//! battery-backed SRAM, an EEPROM) and how the bytes get there; keeping the layouts here
//! lets a provisioning tool, the tests and every board share one format.
//!
//! # Provisioning page ([`PROVISION_BYTES`] bytes)
//!
//! | offset | size | meaning |
//! |---|---|---|
//! | 0 | 4 | magic `VTP1` |
//! | 4 | 1 | Modbus unit id (1-247) |
//! | 5 | 3 | reserved, 0 |
//! | 8 | 32 | issuer public key (ingest's command key, Ed25519); all zero: none, every command is refused |
//! | 40 | 32 | the device's own signing key seed (for signed delivery states); all zero: none |
//! | 72 | 1 | gateway id length (at most [`ID_MAX`]) |
//! | 73 | 40 | gateway id, UTF-8 |
//! | 113 | 1 | device id length (at most [`ID_MAX`]) |
//! | 114 | 40 | device id, UTF-8 |
//! | 154 | 100 | reserved, 0 |
//! | 254 | 2 | CRC-16 (Modbus) of bytes 0..254, low byte first |
//!
//! # Journal
//!
//! Two pages of the same size; each holds at most one record:
//!
//! | offset | size | meaning |
//! |---|---|---|
//! | 0 | 4 | magic `VTJ1`: written last, so its presence means the rest is complete |
//! | 4 | 2 | CRC-16 (Modbus) of bytes 6..12 + length, little-endian |
//! | 6 | 2 | payload length, little-endian |
//! | 8 | 4 | sequence, little-endian (wrapping; the newer of two records is the one ahead) |
//! | 12 | length | payload |
//!
//! Invariants:
//! - A write goes to the page that does not hold the newest record, in this order: clear
//!   the magic (on flash: erase the page), payload, length and sequence, CRC, magic. A
//!   reset at any point leaves the old record or the new one readable, never a mix: a
//!   half-written page has no magic or fails its CRC, and the other page wins.
//! - [`read`] never trusts a length or a sequence it has not checked against the CRC.

use crate::crc::crc16;

/// Size of the provisioning page.
pub const PROVISION_BYTES: usize = 256;
/// Longest gateway or device id the provisioning page holds.
pub const ID_MAX: usize = 40;
/// Bytes of a journal record before its payload.
pub const JOURNAL_HEADER: usize = 12;

const PROVISION_MAGIC: [u8; 4] = *b"VTP1";
const JOURNAL_MAGIC: [u8; 4] = *b"VTJ1";

/// What an installer gives a device once: its unit id, whom it trusts, who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provision<'a> {
    /// Modbus unit id on its bus.
    pub unit: u8,
    /// Ingest's command key, which signed commands must verify with.
    pub issuer_key: Option<[u8; 32]>,
    /// The device's own signing key seed, for what it signs itself.
    pub device_key: Option<[u8; 32]>,
    /// The gateway the device sits behind (commands name it).
    pub gateway: &'a str,
    /// The device's own id (commands name it).
    pub device: &'a str,
}

/// Why a provisioning page was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvisionError {
    /// No magic: the page was never written (or erased).
    Blank,
    /// The CRC does not match: a torn or corrupted write.
    Corrupt,
    /// A field is out of range (unit id, id length, UTF-8), or too long to write.
    Invalid,
}

fn key_or_none(bytes: &[u8]) -> Option<[u8; 32]> {
    let mut key = [0u8; 32];
    key.copy_from_slice(bytes.get(..32)?);
    (key != [0u8; 32]).then_some(key)
}

fn id_at(page: &[u8], at: usize) -> Result<&str, ProvisionError> {
    let len = usize::from(page[at]);
    if len > ID_MAX {
        return Err(ProvisionError::Invalid);
    }
    core::str::from_utf8(&page[at + 1..at + 1 + len]).map_err(|_| ProvisionError::Invalid)
}

impl<'a> Provision<'a> {
    /// Reads a provisioning page (at least [`PROVISION_BYTES`] long).
    pub fn decode(page: &'a [u8]) -> Result<Provision<'a>, ProvisionError> {
        let page = page.get(..PROVISION_BYTES).ok_or(ProvisionError::Invalid)?;
        if page[..4] != PROVISION_MAGIC {
            return Err(ProvisionError::Blank);
        }
        if crc16(&page[..254]).to_le_bytes() != [page[254], page[255]] {
            return Err(ProvisionError::Corrupt);
        }
        let unit = page[4];
        if !(1..=247).contains(&unit) {
            return Err(ProvisionError::Invalid);
        }
        Ok(Provision {
            unit,
            issuer_key: key_or_none(&page[8..40]),
            device_key: key_or_none(&page[40..72]),
            gateway: id_at(page, 72)?,
            device: id_at(page, 113)?,
        })
    }

    /// The page an installer writes.
    pub fn encode(&self) -> Result<[u8; PROVISION_BYTES], ProvisionError> {
        if !(1..=247).contains(&self.unit) || self.gateway.len() > ID_MAX || self.device.len() > ID_MAX {
            return Err(ProvisionError::Invalid);
        }
        let mut page = [0u8; PROVISION_BYTES];
        page[..4].copy_from_slice(&PROVISION_MAGIC);
        page[4] = self.unit;
        page[8..40].copy_from_slice(&self.issuer_key.unwrap_or([0; 32]));
        page[40..72].copy_from_slice(&self.device_key.unwrap_or([0; 32]));
        for (at, id) in [(72, self.gateway), (113, self.device)] {
            page[at] = id.len() as u8;
            page[at + 1..at + 1 + id.len()].copy_from_slice(id.as_bytes());
        }
        let crc = crc16(&page[..254]).to_le_bytes();
        page[254..].copy_from_slice(&crc);
        Ok(page)
    }
}

/// The newest intact record of a journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The page it is in (0 or 1).
    pub page: usize,
    /// Its sequence.
    pub seq: u32,
    /// Its payload.
    pub payload: &'a [u8],
}

/// The payload does not fit a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge;

fn record(page: usize, bytes: &[u8]) -> Option<Record<'_>> {
    if bytes.get(..4)? != JOURNAL_MAGIC {
        return None;
    }
    let len = usize::from(u16::from_le_bytes([bytes[6], bytes[7]]));
    let checked = bytes.get(6..JOURNAL_HEADER + len)?;
    if crc16(checked).to_le_bytes() != [bytes[4], bytes[5]] {
        return None;
    }
    let seq = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    Some(Record { page, seq, payload: &bytes[JOURNAL_HEADER..JOURNAL_HEADER + len] })
}

/// The newest intact record of the two pages, if any.
pub fn read<'a>(pages: [&'a [u8]; 2]) -> Option<Record<'a>> {
    match (record(0, pages[0]), record(1, pages[1])) {
        (Some(a), Some(b)) => Some(if (b.seq.wrapping_sub(a.seq) as i32) > 0 { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// Writes `payload` as the next record after `newest` (from [`read`]) into pages of
/// `page_size` bytes, through `put(page, offset, bytes)` in the order that survives a
/// reset at any point (module doc). Returns the page written.
pub fn write(
    newest: Option<Record<'_>>,
    page_size: usize,
    payload: &[u8],
    mut put: impl FnMut(usize, usize, &[u8]),
) -> Result<usize, TooLarge> {
    let len = u16::try_from(payload.len()).map_err(|_| TooLarge)?;
    if JOURNAL_HEADER + payload.len() > page_size {
        return Err(TooLarge);
    }
    let (page, seq) = match newest {
        Some(r) => (1 - r.page, r.seq.wrapping_add(1)),
        None => (0, 1),
    };
    let mut head = [0u8; JOURNAL_HEADER];
    head[6..8].copy_from_slice(&len.to_le_bytes());
    head[8..12].copy_from_slice(&seq.to_le_bytes());
    // The CRC covers length, sequence and payload: one pass over a copy of each.
    let mut covered = [0u8; 6];
    covered.copy_from_slice(&head[6..12]);
    let crc = crc16_continue(crc16(&covered), payload).to_le_bytes();
    put(page, 0, &[0; 4]);
    put(page, JOURNAL_HEADER, payload);
    put(page, 6, &head[6..12]);
    put(page, 4, &crc);
    put(page, 0, &JOURNAL_MAGIC);
    Ok(page)
}

/// Continues a CRC-16 over more bytes (what [`crc16`] of the concatenation gives).
fn crc16_continue(mut crc: u16, bytes: &[u8]) -> u16 {
    for &b in bytes {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xA001 } else { crc >> 1 };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    #[test]
    fn a_provisioning_page_round_trips_and_a_flipped_bit_is_caught() {
        let p = Provision {
            unit: 7,
            issuer_key: Some([9; 32]),
            device_key: None,
            gateway: "gw-dongcun",
            device: "dongcun-speaker-1",
        };
        let page = p.encode().unwrap();
        assert_eq!(Provision::decode(&page), Ok(p));
        let mut bad = page;
        bad[80] ^= 1;
        assert_eq!(Provision::decode(&bad), Err(ProvisionError::Corrupt));
        assert_eq!(Provision::decode(&[0xFF; PROVISION_BYTES]), Err(ProvisionError::Blank));
        let long = "x".repeat(ID_MAX + 1);
        assert_eq!(Provision { device: &long, ..p }.encode(), Err(ProvisionError::Invalid));
        assert_eq!(Provision { unit: 0, ..p }.encode(), Err(ProvisionError::Invalid));
    }

    #[test]
    fn the_continued_crc_is_the_crc_of_the_concatenation() {
        let (a, b) = (b"village", b" telemetry");
        let whole: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
        assert_eq!(crc16_continue(crc16(a), b), crc16(&whole));
    }

    /// Applies `writes` to `pages`, but only the first `cut` bytes of them (a reset there).
    fn apply(pages: &mut [Vec<u8>; 2], writes: &[(usize, usize, Vec<u8>)], cut: usize) {
        let mut left = cut;
        for (page, at, bytes) in writes {
            let n = bytes.len().min(left);
            pages[*page][*at..*at + n].copy_from_slice(&bytes[..n]);
            left -= n;
        }
    }

    fn journal_write(pages: &[Vec<u8>; 2], payload: &[u8]) -> Vec<(usize, usize, Vec<u8>)> {
        let mut writes = Vec::new();
        let newest = read([&pages[0], &pages[1]]).map(|r| (r.page, r.seq));
        let newest = newest.map(|(page, seq)| Record { page, seq, payload: &[] });
        write(newest, 64, payload, |p, at, b| writes.push((p, at, b.to_vec()))).unwrap();
        writes
    }

    #[test]
    fn a_reset_at_any_byte_of_a_write_leaves_the_old_record_or_the_new_one() {
        let mut pages = [vec![0u8; 64], vec![0u8; 64]];
        assert_eq!(read([&pages[0], &pages[1]]), None, "a blank journal has no record");
        let writes = journal_write(&pages, b"first");
        apply(&mut pages, &writes, usize::MAX);
        assert_eq!(read([&pages[0], &pages[1]]).map(|r| (r.seq, r.payload)), Some((1, &b"first"[..])));
        let writes = journal_write(&pages, b"second");
        apply(&mut pages, &writes, usize::MAX);
        let total: usize = journal_write(&pages, b"third, longer").iter().map(|w| w.2.len()).sum();
        for cut in 0..=total {
            let mut torn = pages.clone();
            apply(&mut torn, &journal_write(&pages, b"third, longer"), cut);
            let r = read([&torn[0], &torn[1]]).expect("a record survives");
            let seen = (r.seq, r.payload);
            if cut == total {
                assert_eq!(seen, (3, &b"third, longer"[..]), "the complete write wins");
            } else {
                assert_eq!(seen, (2, &b"second"[..]), "a reset after {cut} of {total} bytes keeps the old record");
            }
        }
    }

    #[test]
    fn garbage_pages_and_oversized_payloads_are_refused() {
        let pages = [vec![0xA5u8; 64], vec![0xFFu8; 64]];
        assert_eq!(read([&pages[0], &pages[1]]), None);
        let mut lying = vec![0u8; 64];
        lying[..4].copy_from_slice(&JOURNAL_MAGIC);
        lying[6..8].copy_from_slice(&60000u16.to_le_bytes());
        assert_eq!(read([&lying, &pages[1]]), None, "a length past the page is not trusted");
        assert_eq!(write(None, 16, &[0; 5], |_, _, _| {}), Err(TooLarge));
    }

    #[test]
    fn the_newer_sequence_wins_across_wrap() {
        let mut pages = [vec![0u8; 32], vec![0u8; 32]];
        let old = Record { page: 1, seq: u32::MAX - 1, payload: &[] };
        write(Some(old), 32, b"a", |p, at, b| pages[p][at..at + b.len()].copy_from_slice(b)).unwrap();
        let a = read([&pages[0], &pages[1]]).unwrap();
        assert_eq!((a.page, a.seq), (0, u32::MAX));
        let a = Record { page: a.page, seq: a.seq, payload: &[] };
        write(Some(a), 32, b"b", |p, at, b| pages[p][at..at + b.len()].copy_from_slice(b)).unwrap();
        let b = read([&pages[0], &pages[1]]).unwrap();
        assert_eq!((b.page, b.seq, b.payload), (1, 0, &b"b"[..]), "0 follows u32::MAX");
    }
}
