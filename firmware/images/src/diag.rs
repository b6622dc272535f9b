//! The board's diagnostic registers, around the device's own register map: what a
//! technician (or a test) reads to see resets, memory and timing of the terminal. The
//! device's map is untouched; addresses it uses are passed through.
//!
//! | table | address | type | meaning |
//! |---|---|---|---|
//! | input | 900 | u16 | boots since power-up (wraps) |
//! | input | 901 | u16 | cause of the last reset: 0 power-on, 1 external (reset pin, brown-out, debugger), 2 watchdog, 3 panic, 4 fault |
//! | input | 902 | u16 | stack: deepest use since boot (bytes, by painting) |
//! | input | 903 | u16 | stack: bytes reserved |
//! | input | 904 | u16 | heap: peak use since boot (bytes) |
//! | input | 905 | u16 | heap: bytes reserved |
//! | input | 906-907 | u32 ABCD | system clock cycles (SysTick, 25 MHz) the last mailbox commit took: envelope taken, signature verified, command carried out |
//! | input | 908 | u16 | bytes of that envelope |
//! | input | 909 | u16 | 1 if this boot restored its state from the journal |
//! | input | 910-911 | u32 ABCD | sequence of the journal's newest record |
//! | holding | 990 | u16 | maintenance port only: writing 0xDEAD stops feeding the watchdog (to prove it resets a hung terminal); reads 0 |

use firmware::modbus::{Exception, RegisterMap, Table};

use crate::backup::ResetCause;

/// First diagnostic input register.
pub const BASE: u16 = 900;
/// The holding register that stalls the main loop's watchdog feeding.
pub const STALL: u16 = 990;
/// What [`STALL`] takes.
pub const STALL_KEY: u16 = 0xDEAD;

/// What the diagnostic registers show.
#[derive(Debug, Clone, Copy)]
pub struct Diag {
    /// Boots since power-up.
    pub boots: u32,
    /// Why the last reset happened.
    pub cause: ResetCause,
    /// Deepest stack use (bytes).
    pub stack_used: usize,
    /// Stack reserved (bytes).
    pub stack_size: usize,
    /// Peak heap use (bytes).
    pub heap_peak: usize,
    /// Heap reserved (bytes).
    pub heap_size: usize,
    /// Cycles of the last mailbox commit.
    pub commit_cycles: u32,
    /// Bytes of that envelope.
    pub envelope_bytes: u16,
    /// State restored from the journal at this boot.
    pub restored: bool,
    /// Sequence of the journal's newest record.
    pub journal_seq: u32,
    /// The watchdog is no longer fed.
    pub stalled: bool,
}

fn sat(v: usize) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

impl Diag {
    fn register(&self, address: u16) -> Option<u16> {
        let hi = |v: u32| (v >> 16) as u16;
        let lo = |v: u32| v as u16;
        Some(match address {
            900 => self.boots as u16,
            901 => self.cause as u16,
            902 => sat(self.stack_used),
            903 => sat(self.stack_size),
            904 => sat(self.heap_peak),
            905 => sat(self.heap_size),
            906 => hi(self.commit_cycles),
            907 => lo(self.commit_cycles),
            908 => self.envelope_bytes,
            909 => u16::from(self.restored),
            910 => hi(self.journal_seq),
            911 => lo(self.journal_seq),
            _ => return None,
        })
    }
}

/// A device's register map with the diagnostic registers beside it, as one port sees it.
pub struct Board<'a, M: ?Sized> {
    /// The device.
    pub device: &'a mut M,
    /// The board's diagnostics.
    pub diag: &'a mut Diag,
    /// True on the maintenance port (UART1), false on the bus.
    pub maintenance: bool,
}

impl<M: RegisterMap + ?Sized> RegisterMap for Board<'_, M> {
    fn register(&self, table: Table, address: u16) -> Option<u16> {
        match (table, address) {
            (Table::Input, BASE..=911) => self.diag.register(address),
            (Table::Holding, STALL) => Some(0),
            _ => self.device.register(table, address),
        }
    }

    fn bit(&self, table: Table, address: u16) -> Option<bool> {
        self.device.bit(table, address)
    }

    fn write_registers(&mut self, address: u16, words: &[u16]) -> Result<(), Exception> {
        match (address, words) {
            (STALL, &[STALL_KEY]) if self.maintenance => {
                self.diag.stalled = true;
                Ok(())
            }
            (STALL, &[_]) if self.maintenance => Err(Exception::IllegalDataValue),
            (STALL, _) => Err(Exception::IllegalDataAddress),
            _ => self.device.write_registers(address, words),
        }
    }

    fn write_coils(&mut self, address: u16, bits: &[bool]) -> Result<(), Exception> {
        self.device.write_coils(address, bits)
    }
}
