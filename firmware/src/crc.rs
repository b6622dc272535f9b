//! Modbus CRC-16 (polynomial 0xA001 reflected, initial value 0xFFFF).
//!
//! The CRC ends every RTU frame, low byte first. A table of 256 entries is built at
//! compile time, so the per-byte cost is one lookup and no flash is spent on code that
//! builds it at run time.

/// The lookup table for the reflected polynomial 0xA001.
const TABLE: [u16; 256] = build_table();

const fn build_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u16;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xA001 } else { crc >> 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

/// The CRC of `bytes`. On the wire it follows the frame as `[crc as u8, (crc >> 8) as u8]`.
pub fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0xFFFF_u16, |crc, &b| (crc >> 8) ^ TABLE[usize::from((crc ^ u16::from(b)) & 0xFF)])
}

/// True if `frame` ends with the correct CRC of the bytes before it.
pub fn frame_ok(frame: &[u8]) -> bool {
    match frame.len().checked_sub(2) {
        Some(n) if n > 0 => crc16(&frame[..n]).to_le_bytes() == [frame[n], frame[n + 1]],
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_holding_request_has_the_published_crc() {
        // 01 03 00 00 00 0A is the classic example: its CRC goes on the wire as C5 CD.
        let crc = crc16(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x0A]);
        assert_eq!(crc.to_le_bytes(), [0xC5, 0xCD]);
        assert!(frame_ok(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x0A, 0xC5, 0xCD]));
    }

    #[test]
    fn table_and_bitwise_crc_agree() {
        fn bitwise(bytes: &[u8]) -> u16 {
            let mut crc = 0xFFFF_u16;
            for &b in bytes {
                crc ^= u16::from(b);
                for _ in 0..8 {
                    crc = if crc & 1 != 0 { (crc >> 1) ^ 0xA001 } else { crc >> 1 };
                }
            }
            crc
        }
        let data: [u8; 9] = *b"123456789";
        // CRC-16/MODBUS check value for "123456789".
        assert_eq!(crc16(&data), 0x4B37);
        assert_eq!(crc16(&data), bitwise(&data));
    }

    #[test]
    fn corrupted_or_short_frames_fail_the_check() {
        assert!(!frame_ok(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x0B, 0xC5, 0xCD]));
        assert!(!frame_ok(&[0xC5, 0xCD]));
        assert!(!frame_ok(&[]));
    }
}
