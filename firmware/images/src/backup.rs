//! Battery-backed RAM: what survives a reset that is not a power loss. On this board it is
//! the last 4 KiB of RAM (`BACKUP` in memory.x), where no section of the image lies, so
//! neither QEMU's reset (it reloads the image's sections) nor the startup code touches it;
//! on an STM32F4 it would be the 4 KiB backup SRAM, on a part without one a flash sector
//! with the same journal (erase before write). Board-specific: the address.
//!
//! It holds the boot count, the cause of the last reset as the firmware saw it coming
//! (watchdog, panic, fault), and the two pages of the state journal
//! ([`firmware::nvm`]). A magic word tells a first power-up (random or zero contents)
//! from a reset.
//!
//! Invariants:
//! - Journal pages are written only through [`firmware::nvm::write`], byte by byte with
//!   volatile stores in the order it gives, so a reset mid-write leaves the old record.
//! - Nothing else in the image touches this memory.

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};
use core::sync::atomic::{compiler_fence, Ordering};

use firmware::nvm::{self, Record, TooLarge};

/// Bytes of one journal page.
pub const PAGE: usize = 1024;
const MAGIC: u32 = 0x7E1E_B007;

/// Why the chip last reset, as far as the firmware can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ResetCause {
    /// Backup RAM was blank: first power-up, or power was lost.
    PowerOn = 0,
    /// Nothing noted: the reset pin, a brown-out detector, a debugger (QEMU's
    /// `system_reset`).
    External = 1,
    /// The watchdog was not fed.
    Watchdog = 2,
    /// A panic.
    Panic = 3,
    /// A hard fault.
    Fault = 4,
}

#[repr(C)]
struct Backup {
    magic: u32,
    boots: u32,
    cause: u32,
    pages: [[u8; PAGE]; 2],
}

extern "C" {
    /// The start of the BACKUP region (memory.x).
    static mut _backup: u32;
}

const _: () = assert!(core::mem::size_of::<Backup>() <= 4096, "BACKUP is 4 KiB");

fn backup() -> *mut Backup {
    addr_of_mut!(_backup).cast()
}

/// Notes why the chip is about to reset (from the panic, fault and watchdog handlers).
pub fn note_cause(cause: ResetCause) {
    // SAFETY: a volatile store of a u32 field of the backup RAM, which has a fixed place
    // and is valid for any bit pattern.
    unsafe { write_volatile(addr_of_mut!((*backup()).cause), cause as u32) }
}

/// Counts this boot and tells why the last reset happened; a blank backup RAM is set up.
/// Returns `(boots since power-up, cause)`.
pub fn boot() -> (u32, ResetCause) {
    let b = backup();
    // SAFETY: volatile accesses to fields of the backup RAM (any bit pattern is a valid
    // u32 or byte); only the main loop calls this, once, before anything else uses it.
    unsafe {
        if read_volatile(addr_of!((*b).magic)) != MAGIC {
            write_volatile(addr_of_mut!((*b).boots), 1);
            write_volatile(addr_of_mut!((*b).cause), 0);
            for page in 0..2 {
                // A blank journal: no magic in either page.
                for i in 0..4 {
                    write_volatile(addr_of_mut!((*b).pages[page][i]), 0);
                }
            }
            write_volatile(addr_of_mut!((*b).magic), MAGIC);
            return (1, ResetCause::PowerOn);
        }
        let boots = read_volatile(addr_of!((*b).boots)).wrapping_add(1);
        write_volatile(addr_of_mut!((*b).boots), boots);
        let cause = match read_volatile(addr_of!((*b).cause)) {
            2 => ResetCause::Watchdog,
            3 => ResetCause::Panic,
            4 => ResetCause::Fault,
            _ => ResetCause::External,
        };
        write_volatile(addr_of_mut!((*b).cause), 0);
        (boots, cause)
    }
}

fn pages() -> [&'static [u8]; 2] {
    let b = backup();
    // SAFETY: the pages are plain bytes at a fixed place; they are written only by
    // `journal_write`, from the same single-threaded main loop, never while a slice
    // returned here is in use (callers copy what they need first).
    unsafe { [&*addr_of!((*b).pages[0]), &*addr_of!((*b).pages[1])] }
}

/// The newest intact record of the state journal.
pub fn journal() -> Option<Record<'static>> {
    nvm::read(pages())
}

/// Writes `payload` as the journal's next record.
pub fn journal_write(payload: &[u8]) -> Result<(), TooLarge> {
    let newest = journal().map(|r| Record { page: r.page, seq: r.seq, payload: &[] });
    let b = backup();
    nvm::write(newest, PAGE, payload, |page, at, bytes| {
        for (i, &byte) in bytes.iter().enumerate() {
            // SAFETY: `nvm::write` keeps `at + i` inside a page of PAGE bytes; a volatile
            // byte store into backup RAM.
            unsafe { write_volatile(addr_of_mut!((*b).pages[page & 1][at + i]), byte) }
        }
        // Each step lands before the next one starts (the order is the point).
        compiler_fence(Ordering::SeqCst);
    })
    .map(|_| ())
}
