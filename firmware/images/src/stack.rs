//! Stack use by painting: at boot every free word of the stack gets a known pattern; the
//! lowest word that no longer holds it is as deep as the stack has ever been. Works on
//! stable Rust and counts what really ran (interrupts included), unlike a static estimate.
//!
//! The stack is everything between the end of the statics (cortex-m-rt's `__sheap`; the
//! heap is a static array, not there) and the top of RAM (`_stack_start`).

use core::ptr::{addr_of, read_volatile, write_volatile};

const PAINT: u32 = 0xCCCC_CCCC;

extern "C" {
    static __sheap: u32;
    static _stack_start: u32;
}

fn bottom() -> usize {
    addr_of!(__sheap) as usize
}

fn top() -> usize {
    addr_of!(_stack_start) as usize
}

/// Bytes of RAM the stack may grow into.
pub fn size() -> usize {
    top() - bottom()
}

/// Paints the free part of the stack (below the caller's frame); call once at boot.
#[inline(never)]
pub fn paint() {
    let sp = cortex_m::register::msp::read() as usize;
    let mut p = (bottom() + 3) & !3;
    // Leave the words just below the stack pointer alone: this function's callees.
    while p + 64 < sp {
        // SAFETY: between the end of the statics and below the live stack: free RAM.
        unsafe { write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
}

/// The deepest the stack has been since [`paint`], in bytes from the top.
pub fn high_water() -> usize {
    let mut p = (bottom() + 3) & !3;
    // SAFETY: reads of RAM between the statics and the top of the stack.
    while p < top() && unsafe { read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    top() - p
}
