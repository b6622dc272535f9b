//! The main loop every image shares: feed the watchdog, run the device's logic every
//! [`STEP_MS`], answer each complete request on either port, and keep the device's state
//! in the journal whenever it changed, before the answer goes out.
//!
//! Order of one request, and why:
//! 1. the frame goes to [`firmware::rtu::respond`] (for a mailbox commit that is where the
//!    envelope is verified and carried out);
//! 2. the device's state is saved if it changed (replay window, command log);
//! 3. only then the answer is sent. A reset between 1 and 2 loses a command nobody was told
//!    about (the gateway's write times out and the command is sent again under a new id);
//!    a reset after 3 keeps everything the answer reported.

use core::mem::MaybeUninit;

use firmware::modbus::RegisterMap;
use firmware::nvm::{Provision, JOURNAL_HEADER, PROVISION_BYTES};
use firmware::rtu::{self, MAX_FRAME};

use crate::backup::{self, ResetCause, PAGE};
use crate::clock::{self, WallClock};
use crate::diag::{Board as WithDiag, Diag};
use crate::mps2::{Uart, Watchdog, UART0, UART1};
use crate::port::Port;
use crate::{stack, HEAP};

/// How often the device's logic runs (ms).
pub const STEP_MS: u32 = 50;
/// Watchdog: NMI after this long without a feed, reset after twice this (ms).
pub const WATCHDOG_MS: u32 = 1000;
/// Line speed of both ports.
pub const BAUD: u32 = 9600;
/// Largest state a device may keep in the journal.
pub const MAX_STATE: usize = PAGE - JOURNAL_HEADER;

/// What a device image plugs into the loop.
pub trait Device: RegisterMap {
    /// Runs the device's logic for `dt_ms` milliseconds, the wall clock now at `now_ms`.
    fn step(&mut self, now_ms: i64, dt_ms: u32);
    /// Writes what must outlive a reset into `out`; returns the bytes written.
    fn save(&self, out: &mut [u8]) -> Option<usize>;
}

/// The board, up and running, before the device is made.
pub struct Board {
    ports: [Port; 2],
    watchdog: Watchdog,
    /// The wall clock.
    pub clock: WallClock,
    /// Diagnostics.
    pub diag: Diag,
    /// The provisioning page, read where it lies in flash (not copied into RAM).
    provision: &'static [u8; PROVISION_BYTES],
}

extern "C" {
    /// The provisioning page (memory.x).
    static _provision: [u8; PROVISION_BYTES];
}

impl Board {
    /// Brings the board up: heap, stack paint, reset cause, tick, wall clock, ports,
    /// watchdog. Call once, first thing in `main`.
    pub fn start(heap: &'static mut [MaybeUninit<u8>]) -> Board {
        HEAP.init(heap);
        stack::paint();
        let (boots, cause) = backup::boot();
        let Some(core) = cortex_m::Peripherals::take() else {
            // Only reachable if start() ran twice: reset rather than run on shared state.
            backup::note_cause(ResetCause::Panic);
            cortex_m::peripheral::SCB::sys_reset()
        };
        clock::start(core.SYST);
        let clock = WallClock::from_time_source();
        // SAFETY: the provisioning page, which memory.x places in flash: the installer
        // (or QEMU's loader) writes it before boot and nothing writes it while the image
        // runs, so a shared reference for the rest of time is sound.
        let provision = unsafe { &*core::ptr::addr_of!(_provision) };
        // SAFETY: each UART is made once, here, and owned by its port.
        let ports = unsafe { [Port::new(Uart::new(UART0, BAUD)), Port::new(Uart::new(UART1, BAUD))] };
        // SAFETY: the only watchdog.
        let watchdog = unsafe { Watchdog::start(WATCHDOG_MS) };
        let diag = Diag {
            boots,
            cause,
            stack_used: 0,
            stack_size: stack::size(),
            heap_peak: 0,
            heap_size: HEAP.size(),
            commit_cycles: 0,
            envelope_bytes: 0,
            restored: false,
            journal_seq: backup::journal().map_or(0, |r| r.seq),
            stalled: false,
        };
        Board { ports, watchdog, clock, diag, provision }
    }

    /// What the installer provisioned, if the page holds a valid record.
    pub fn provision(&self) -> Option<Provision<'_>> {
        Provision::decode(self.provision).ok()
    }

    /// The state the device kept before the reset, if the journal has one.
    pub fn kept_state(&self) -> Option<&'static [u8]> {
        backup::journal().map(|r| r.payload)
    }

    /// Serves `device` as Modbus unit `unit` on both ports, forever. The device is a
    /// static (the speaker is 3.5 KiB, mostly its mailbox): by reference it is counted once,
    /// as static RAM, instead of in the stack frames it would be moved through. The board
    /// is borrowed, not moved, for the same reason: moved, its ports (half a KiB of
    /// buffers) were in `main`'s frame and again in this one.
    pub fn run<D: Device>(&mut self, unit: u8, device: &'static mut D, restored: bool) -> ! {
        let Board { ports, watchdog, clock, diag, .. } = self;
        diag.restored = restored;
        let mut since_step = 0u32;
        crate::mps2::enable_wakeups();
        loop {
            if !diag.stalled {
                watchdog.feed();
            }
            since_step = since_step.wrapping_add(clock.advance());
            if since_step >= STEP_MS {
                step(device, clock.now_ms(), since_step, diag);
                since_step = 0;
            }
            let mut answered = false;
            for (i, port) in ports.iter_mut().enumerate() {
                let Some(len) = port.poll(clock::ms()) else { continue };
                answered = true;
                serve(unit, device, diag, i == 1, port, len);
                port.done(len);
            }
            if !answered && !crate::mps2::rx_waiting() {
                // Sleep until the next byte or tick. A byte that lands between the check
                // and the WFI waits at most for the next tick (1 ms).
                cortex_m::asm::wfi();
            }
        }
    }
}

// Stack: `run`'s frame is live under everything the loop calls, so it holds only the
// loop's own state; the answer buffer is in `serve`'s frame and the journal's scratch in
// `keep`'s, and neither is inlined, so the journal's scratch is never on the stack at the
// same time as a signature check (the deepest path: `serve` -> `rtu::respond` -> the
// mailbox commit).

/// Runs the device's logic for `dt_ms` and keeps its state if that changed it.
#[inline(never)]
fn step<D: Device>(device: &mut D, now_ms: i64, dt_ms: u32, diag: &mut Diag) {
    device.step(now_ms, dt_ms);
    keep(device, diag);
    diag.stack_used = stack::high_water();
    diag.heap_peak = HEAP.peak();
}

/// Answers the request frame of `len` bytes waiting on `port`: the library acts on it,
/// the device's state is kept if it changed, then the answer goes out (the order in this
/// module's documentation).
#[inline(never)]
fn serve<D: Device>(unit: u8, device: &mut D, diag: &mut Diag, maintenance: bool, port: &mut Port, len: usize) {
    let mut out = [0u8; MAX_FRAME];
    let commit = mailbox_commit(port.frame(len));
    let started = clock::cycles();
    let answer = rtu::respond(
        unit,
        &mut WithDiag { device: &mut *device, diag: &mut *diag, maintenance },
        port.frame(len),
        &mut out,
    );
    if let Some(bytes) = commit {
        diag.commit_cycles = clock::cycles().wrapping_sub(started);
        diag.envelope_bytes = bytes;
    }
    keep(device, diag);
    if let Some(n) = answer {
        port.send(&out[..n]);
    }
}

/// Saves the device's state to the journal if it differs from the newest record.
#[inline(never)]
fn keep<D: Device>(device: &D, diag: &mut Diag) {
    let mut scratch = [0u8; MAX_STATE];
    let Some(n) = device.save(&mut scratch) else { return };
    if backup::journal().is_some_and(|r| r.payload == &scratch[..n]) {
        return;
    }
    if backup::journal_write(&scratch[..n]).is_ok() {
        diag.journal_seq = backup::journal().map_or(0, |r| r.seq);
    }
}

/// The envelope length, if `frame` writes the mailbox's length register (holding 1000):
/// the write that commits an envelope.
fn mailbox_commit(frame: &[u8]) -> Option<u16> {
    let word = |i: usize| Some(u16::from_be_bytes([*frame.get(i)?, *frame.get(i + 1)?]));
    match (*frame.get(1)?, word(2)?) {
        (6, 1000) => word(4),
        (16, 1000) => word(7),
        _ => None,
    }
}
