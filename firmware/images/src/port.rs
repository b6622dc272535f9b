//! One Modbus RTU port: bytes from a UART gathered into request frames for
//! [`firmware::rtu::respond`], and its answers sent back.
//!
//! Where a frame ends: on a real line, 3.5 character times of silence. Under an emulator
//! bytes come in bursts at the host's pace, and a pause inside a frame is not rare on a
//! loaded machine, so a frame also ends as soon as its length is known from its header:
//! 8 bytes for function codes 1-6, 9 + byte count for 15 and 16 (requests only; this
//! port never sees other slaves' answers, as it has its own line). Anything else ends on
//! [`SILENCE_MS`] of silence and then fails its CRC or gets an exception.
//!
//! Invariants: at most [`firmware::rtu::MAX_FRAME`] bytes are kept; a longer run of bytes
//! is cut there and fails its CRC, so the port resynchronises on the next silence.

use firmware::rtu::MAX_FRAME;

use crate::mps2::Uart;

/// Silence that ends a frame whose length the header does not give (ms).
pub const SILENCE_MS: u32 = 20;

/// A UART with a request being gathered.
pub struct Port {
    uart: Uart,
    buf: [u8; MAX_FRAME],
    len: usize,
    last_byte_ms: u32,
}

/// The length of a request frame from its first bytes, when the function code tells it.
fn expected_len(frame: &[u8]) -> Option<usize> {
    match *frame.get(1)? {
        1..=6 => Some(8),
        15 | 16 => frame.get(6).map(|&n| 9 + usize::from(n)),
        _ => None,
    }
}

impl Port {
    /// A port on `uart`.
    pub fn new(uart: Uart) -> Port {
        Port { uart, buf: [0; MAX_FRAME], len: 0, last_byte_ms: 0 }
    }

    /// Takes what the UART received; returns the length of a complete request frame, to
    /// be read with [`Port::frame`] and released with [`Port::done`].
    pub fn poll(&mut self, now_ms: u32) -> Option<usize> {
        while let Some(b) = self.uart.read() {
            if self.len < MAX_FRAME {
                self.buf[self.len] = b;
                self.len += 1;
            }
            self.last_byte_ms = now_ms;
            if expected_len(&self.buf[..self.len]).is_some_and(|n| self.len >= n) {
                break;
            }
        }
        if self.len == 0 {
            return None;
        }
        match expected_len(&self.buf[..self.len]) {
            Some(n) if self.len >= n => Some(n),
            _ if now_ms.wrapping_sub(self.last_byte_ms) >= SILENCE_MS => Some(self.len),
            _ => None,
        }
    }

    /// The first `len` bytes gathered (a frame [`Port::poll`] announced).
    pub fn frame(&self, len: usize) -> &[u8] {
        &self.buf[..len.min(self.len)]
    }

    /// Drops the first `len` bytes (the frame answered); keeps any that followed it.
    pub fn done(&mut self, len: usize) {
        let len = len.min(self.len);
        self.buf.copy_within(len..self.len, 0);
        self.len -= len;
    }

    /// Sends an answer.
    pub fn send(&mut self, bytes: &[u8]) {
        self.uart.write(bytes);
    }
}
