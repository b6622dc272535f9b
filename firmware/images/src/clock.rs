//! Time: a 1 kHz SysTick count, the wall clock, and a cycle counter for measurements.
//!
//! - Milliseconds since boot: SysTick interrupts at 1 kHz and does nothing but count.
//! - Wall clock: the speaker checks a command's expiry and issue time against it, so it
//!   must be real time. A real terminal takes it from GNSS, NTP over its cellular link or
//!   a battery-backed RTC; this board (QEMU) reads the host's clock once at boot through
//!   Arm semihosting (`SYS_TIME`, seconds), QEMU run with
//!   `-semihosting-config enable=on,target=native`, and counts milliseconds from there.
//!   Board-specific: [`host_time_s`].
//! - Cycles: SysTick's current value plus 25,000 per millisecond counted, at the 25 MHz
//!   system clock. Under QEMU SysTick follows QEMU's virtual clock: host time normally,
//!   or the instruction count with `-icount shift=0` (1 ns per instruction, so one tick is
//!   40 instructions). The DWT cycle counter is not modelled by QEMU (it reads 0).

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
use cortex_m_rt::exception;

use crate::mps2::SYSCLK_HZ;

/// SysTick reload for 1 kHz.
const RELOAD: u32 = SYSCLK_HZ / 1000 - 1;

static MS: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    MS.fetch_add(1, Ordering::Relaxed);
}

/// Starts the 1 kHz tick.
pub fn start(mut syst: SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(RELOAD);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

/// Milliseconds since boot (wraps after 49 days; take differences with `wrapping_sub`).
pub fn ms() -> u32 {
    MS.load(Ordering::Relaxed)
}

/// System clock cycles since boot, modulo 2^32 (wraps every 171 s): differences over
/// shorter spans are exact to one cycle.
pub fn cycles() -> u32 {
    loop {
        let before = ms();
        let value = SYST::get_current();
        if ms() == before {
            return before.wrapping_mul(RELOAD + 1).wrapping_add(RELOAD - value);
        }
    }
}

/// The host's clock through semihosting `SYS_TIME`: seconds since the Unix epoch.
pub fn host_time_s() -> u32 {
    let mut r0: u32 = 0x11; // SYS_TIME
                            // SAFETY: a semihosting call (BKPT 0xAB with the operation in r0 and no parameter
                            // block); QEMU answers it in r0. It touches no memory of ours.
    unsafe {
        core::arch::asm!("bkpt #0xab", inout("r0") r0, in("r1") 0u32, options(nostack));
    }
    r0
}

/// The wall clock: a base taken at boot plus the milliseconds counted since.
pub struct WallClock {
    base_ms: i64,
    last: u32,
    elapsed_ms: i64,
}

impl WallClock {
    /// A wall clock set from the board's time source now.
    pub fn from_time_source() -> WallClock {
        WallClock { base_ms: i64::from(host_time_s()) * 1000, last: ms(), elapsed_ms: 0 }
    }

    /// Takes the milliseconds counted since the last call; returns them.
    pub fn advance(&mut self) -> u32 {
        let now = ms();
        let dt = now.wrapping_sub(self.last);
        self.last = now;
        self.elapsed_ms += i64::from(dt);
        dt
    }

    /// Milliseconds since the Unix epoch, as of the last [`WallClock::advance`].
    pub fn now_ms(&self) -> i64 {
        self.base_ms + self.elapsed_ms
    }
}
