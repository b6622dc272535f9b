//! The household water meter: `firmware::water_meter::WaterMeter` served as Modbus RTU
//! on UART0 (the RS-485 bus) and UART1 (the maintenance port), its forward total kept in
//! battery-backed RAM across resets.
#![no_std]
#![no_main]

use core::mem::MaybeUninit;

use firmware::water_meter::WaterMeter;
use vt_images::devices::kept_total;
use vt_images::run::Board;

/// The meter allocates nothing; a token heap satisfies the library's `alloc`.
const HEAP_BYTES: usize = 256;
/// Unit id of a meter whose provisioning page is blank.
const DEFAULT_UNIT: u8 = 1;
/// What the totaliser reads when it leaves the factory (litres).
const FACTORY_TOTAL_L: u32 = 0;

#[cortex_m_rt::entry]
fn main() -> ! {
    static mut HEAP: [MaybeUninit<u8>; HEAP_BYTES] = [MaybeUninit::uninit(); HEAP_BYTES];
    static mut METER: MaybeUninit<WaterMeter> = MaybeUninit::uninit();
    let mut board = Board::start(HEAP);
    let unit = board.provision().map_or(DEFAULT_UNIT, |p| p.unit);
    let kept = board.kept_state().and_then(kept_total);
    let meter = METER.write(WaterMeter::new(kept.unwrap_or(FACTORY_TOTAL_L)));
    board.run(unit, meter, kept.is_some())
}
