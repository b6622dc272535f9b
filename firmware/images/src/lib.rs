//! Board support for village telemetry's device images on the mps2-an386 (a Cortex-M4
//! FPGA image that QEMU models), around the `firmware` library, which holds all device
//! logic: register maps, the speaker's signature check, replay window and command log,
//! the meter's totaliser, and the Modbus RTU slave. Nothing here decides anything a
//! device does; it moves bytes, keeps time and keeps state across resets.
//!
//! What a board needs, one module each:
//! - [`mps2`]: the peripherals (CMSDK UARTs, CMSDK watchdog, SysTick) and their addresses.
//! - [`clock`]: a 1 kHz tick, the wall clock and a cycle counter for measurements.
//! - [`backup`]: battery-backed RAM (here: RAM the reset code does not clear): reset cause,
//!   boot count and the two-page state journal of [`firmware::nvm`].
//! - [`port`]: one Modbus RTU port, framing bytes from a UART into requests.
//! - [`diag`]: the board's diagnostic registers (input 900..), wrapped around the device's map.
//! - [`heap`]: the allocator the library's envelope decoding needs, with its peak use.
//! - [`stack`]: stack painting and the high-water mark.
//! - [`run`]: the main loop every image shares; [`devices`]: the speaker and the meter in it.
//!
//! Invariants:
//! - One main loop, no interrupt does work besides counting milliseconds: a request is
//!   answered only after the state it changed is in the journal, so a reset after an
//!   answer never undoes what the answer reported.
//! - A panic or a fault records its cause in backup RAM and resets the chip; a hang is
//!   caught by the watchdog. Nothing halts for good.
#![no_std]

pub mod backup;
pub mod clock;
pub mod devices;
pub mod diag;
pub mod heap;
pub mod mps2;
pub mod port;
pub mod run;
pub mod stack;

use core::panic::PanicInfo;

use cortex_m_rt::{exception, ExceptionFrame};

/// A panic resets the terminal (after noting why), as a watchdog would a little later.
#[panic_handler]
fn panic(_info: &PanicInfo<'_>) -> ! {
    backup::note_cause(backup::ResetCause::Panic);
    cortex_m::peripheral::SCB::sys_reset()
}

/// A hard fault resets the terminal, noting why.
#[exception]
unsafe fn HardFault(_frame: &ExceptionFrame) -> ! {
    backup::note_cause(backup::ResetCause::Fault);
    cortex_m::peripheral::SCB::sys_reset()
}

/// Any other interrupt: on this board only the UARTs' receive interrupts are enabled,
/// and they only wake the core.
#[exception]
unsafe fn DefaultHandler(_irqn: i16) {
    mps2::on_interrupt();
}

/// The watchdog's first expiry (its interrupt is the NMI on this board): note the cause;
/// its second expiry resets the chip.
///
/// # Safety
/// cortex-m-rt asks NMI handlers to be `unsafe fn`: the NMI pre-empts critical sections.
/// This one only does a volatile store to backup RAM, which nothing else holds a
/// reference to.
#[exception]
unsafe fn NonMaskableInt() {
    backup::note_cause(backup::ResetCause::Watchdog);
}

/// The allocator (see [`heap`]); each image gives it memory in [`run::Board::start`].
#[global_allocator]
pub static HEAP: heap::PeakHeap = heap::PeakHeap::empty();
