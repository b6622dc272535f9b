//! The mps2-an386 peripherals the images use, as QEMU 7.2 models them (`info mtree`):
//! CMSDK APB UARTs, the CMSDK APB watchdog (its interrupt wired to the NMI), and the
//! core's SysTick clocked at the FPGA's 25 MHz.
//!
//! The UARTs are polled; their receive interrupts exist only to wake the core from `WFI`
//! when a byte arrives, so an idle terminal sleeps (and QEMU uses no host CPU) instead of
//! spinning. Their handler ([`on_interrupt`]) only acknowledges them.
//!
//! Board-specific: this whole module. A terminal maker's port replaces it with their
//! part's UART (with an RS-485 driver-enable pin), independent watchdog and clock setup.

use core::ptr::{read_volatile, write_volatile};

/// The FPGA image's system clock (Hz): SysTick and the watchdog count it.
pub const SYSCLK_HZ: u32 = 25_000_000;
/// UART0: the RS-485 bus to the gateway.
pub const UART0: usize = 0x4000_4000;
/// UART1: the local maintenance port (the same register map).
pub const UART1: usize = 0x4000_5000;
const WATCHDOG: usize = 0x4000_8000;

const DATA: usize = 0x00;
const STATE: usize = 0x04;
const CTRL: usize = 0x08;
const INTSTATUS: usize = 0x0C;
const BAUDDIV: usize = 0x10;
const STATE_TX_FULL: u32 = 1 << 0;
const STATE_RX_FULL: u32 = 1 << 1;
/// CTRL: transmit enable, receive enable, receive interrupt enable.
const CTRL_TX_RX_RXINT: u32 = 0b1011;

/// The NVIC lines of the UARTs' receive interrupts (QEMU's mps2.c: UART0 RX is 0, UART1 RX is 2).
#[derive(Debug, Clone, Copy)]
#[repr(u16)]
pub enum Irq {
    /// UART0 receive.
    Uart0Rx = 0,
    /// UART1 receive.
    Uart1Rx = 2,
}

// SAFETY: the numbers are the board's interrupt lines, all below the 240 cortex-m-rt provides.
unsafe impl cortex_m::interrupt::InterruptNumber for Irq {
    fn number(self) -> u16 {
        self as u16
    }
}

/// Enables the UARTs' receive interrupts in the NVIC (to wake from `WFI`).
pub fn enable_wakeups() {
    for irq in [Irq::Uart0Rx, Irq::Uart1Rx] {
        // SAFETY: the handler (`on_interrupt`) only acknowledges the UARTs; no critical
        // section relies on these interrupts being masked.
        unsafe { cortex_m::peripheral::NVIC::unmask(irq) };
    }
}

/// Acknowledges the UARTs' interrupts; the main loop reads the bytes.
pub fn on_interrupt() {
    for base in [UART0, UART1] {
        // SAFETY: a write-one-to-clear of the UART's INTSTATUS register.
        unsafe { write_volatile(reg(base, INTSTATUS), 0b11) };
    }
}

/// True if either UART holds a received byte.
pub fn rx_waiting() -> bool {
    // SAFETY: reads of the UARTs' STATE registers, which have no side effect.
    [UART0, UART1].iter().any(|&base| unsafe { read_volatile(reg(base, STATE)) } & STATE_RX_FULL != 0)
}

fn reg(base: usize, offset: usize) -> *mut u32 {
    (base + offset) as *mut u32
}

/// A CMSDK APB UART, polled.
pub struct Uart {
    base: usize,
}

impl Uart {
    /// The UART at `base`, enabled for transmit and receive at `baud`.
    ///
    /// # Safety
    /// `base` must be one of this board's UARTs ([`UART0`], [`UART1`]), and no other
    /// `Uart` may own it.
    pub unsafe fn new(base: usize, baud: u32) -> Uart {
        // SAFETY: the caller gives a UART's base; these are its BAUDDIV and CTRL registers.
        unsafe {
            write_volatile(reg(base, BAUDDIV), (SYSCLK_HZ / baud.max(1)).max(16));
            write_volatile(reg(base, CTRL), CTRL_TX_RX_RXINT);
        }
        Uart { base }
    }

    /// The next received byte, if one is waiting.
    pub fn read(&mut self) -> Option<u8> {
        // SAFETY: STATE and DATA of the UART this value owns.
        unsafe {
            if read_volatile(reg(self.base, STATE)) & STATE_RX_FULL != 0 {
                Some(read_volatile(reg(self.base, DATA)) as u8)
            } else {
                None
            }
        }
    }

    /// Sends `bytes`, waiting while the transmit buffer is full.
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            // SAFETY: STATE and DATA of the UART this value owns.
            unsafe {
                while read_volatile(reg(self.base, STATE)) & STATE_TX_FULL != 0 {}
                write_volatile(reg(self.base, DATA), u32::from(b));
            }
        }
    }
}

const WDOG_LOAD: usize = 0x000;
const WDOG_CONTROL: usize = 0x008;
const WDOG_INTCLR: usize = 0x00C;
const WDOG_LOCK: usize = 0xC00;
const WDOG_UNLOCK_KEY: u32 = 0x1ACC_E551;

/// The CMSDK watchdog: counts down from its load value; the first time it reaches zero it
/// raises the NMI and reloads, the second time (not fed meanwhile) it resets the chip.
pub struct Watchdog {
    _private: (),
}

impl Watchdog {
    /// Starts the watchdog: an NMI after `timeout_ms` without [`Watchdog::feed`], a reset
    /// after twice that.
    ///
    /// # Safety
    /// Only one `Watchdog` may exist.
    pub unsafe fn start(timeout_ms: u32) -> Watchdog {
        // SAFETY: the watchdog's own registers, unlocked for the writes and locked again.
        unsafe {
            write_volatile(reg(WATCHDOG, WDOG_LOCK), WDOG_UNLOCK_KEY);
            write_volatile(reg(WATCHDOG, WDOG_LOAD), SYSCLK_HZ / 1000 * timeout_ms);
            write_volatile(reg(WATCHDOG, WDOG_CONTROL), 0b11); // interrupt and reset enabled
            write_volatile(reg(WATCHDOG, WDOG_LOCK), 0);
        }
        Watchdog { _private: () }
    }

    /// Clears the interrupt and reloads the counter.
    pub fn feed(&mut self) {
        // SAFETY: the watchdog's own registers, unlocked for the write and locked again.
        unsafe {
            write_volatile(reg(WATCHDOG, WDOG_LOCK), WDOG_UNLOCK_KEY);
            write_volatile(reg(WATCHDOG, WDOG_INTCLR), 1);
            write_volatile(reg(WATCHDOG, WDOG_LOCK), 0);
        }
    }
}
