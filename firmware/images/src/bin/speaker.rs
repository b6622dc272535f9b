//! The village speaker terminal: `firmware::speaker::Speaker` served as Modbus RTU on
//! UART0 (the RS-485 bus to the gateway) and UART1 (the maintenance port), provisioned
//! from the provisioning page (ingest's key, its ids, its own signing key), its replay
//! window, command log and receipt counter kept in battery-backed RAM across resets. Every decision (signature, replay, levels, the log) is the
//! library's.
#![no_std]
#![no_main]

use core::mem::MaybeUninit;

use firmware::speaker::Speaker;
use protocol::Timestamp;
use vt_images::run::Board;

/// Heap: the terminal's own allocations (its queue of held playbacks, its ids: about
/// 0.5 KiB, made at boot), plus, for one command at a time, the signed message the
/// signature check hashes (the envelope's body with a domain prefix) and then the
/// command's decoded strings, each at most the largest envelope (1,998 bytes; the
/// envelope itself is checked in the mailbox, not copied). The interop test writes the
/// largest envelope and reads the peak (docs/BENCHMARKS.md).
const HEAP_BYTES: usize = 3 * 1024;
/// Unit id of a terminal whose provisioning page is blank.
const DEFAULT_UNIT: u8 = 1;
/// Volume out of the box (%).
const DEFAULT_VOLUME: u8 = 70;

#[cortex_m_rt::entry]
fn main() -> ! {
    static mut HEAP: [MaybeUninit<u8>; HEAP_BYTES] = [MaybeUninit::uninit(); HEAP_BYTES];
    static mut SPEAKER: MaybeUninit<Speaker> = MaybeUninit::uninit();
    let mut board = Board::start(HEAP);
    let (speaker, unit, restored) = terminal(SPEAKER, &board);
    board.run(unit, speaker, restored)
}

/// Makes the terminal in its static: provisioned from the page, its clock set, its state
/// restored from the journal. Returns it with its unit id and whether state was restored.
/// Not inlined, so the terminal built here does not stay in `main`'s stack frame.
#[inline(never)]
fn terminal(slot: &'static mut MaybeUninit<Speaker>, board: &Board) -> (&'static mut Speaker, u8, bool) {
    let speaker = slot.write(Speaker::new(DEFAULT_VOLUME));
    // Without a provisioning page (or without a key in it) the terminal refuses every
    // command (`not_provisioned`) but still answers its register map.
    let unit = match board.provision() {
        Some(p) => {
            if let Some(key) = p.issuer_key {
                // A key that is not a curve point leaves it unprovisioned, as above.
                let _ = speaker.provision(key, p.gateway, p.device);
            }
            // Its own key: it signs every delivery state (docs/SECURITY.md, proof of play).
            // Without one its states are unsigned and ingest records no `played` from it.
            if let Some(seed) = p.device_key {
                speaker.set_receipt_key(seed);
            }
            p.unit
        }
        None => DEFAULT_UNIT,
    };
    speaker.set_clock(Timestamp(board.clock.now_ms()));
    let restored = board.kept_state().is_some_and(|state| speaker.restore_state(state).is_ok());
    (speaker, unit, restored)
}
