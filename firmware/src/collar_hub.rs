//! Collar hub: the farm's radio receiver for many cows' collars, with a slot table.
//!
//! Each collar reports body temperature, steps and rumination time; the parlour's milk
//! meters report each milking. The hub keeps one slot per animal and turns the raw reports
//! into the figures herd rules use: steps per hour and minutes of rumination over the last
//! hour (six 10-minute bins), the latest body temperature, and the last milking.
//!
//! Identity: a slot is a place in a table, not an animal. The animal is its ear-tag
//! number, at offset 0 of its slot; the gateway names the device `cow-<eartag>`. Slots
//! `0..count` are in use and contiguous; when an animal leaves, the last slot moves into
//! its place, so an animal may change slot and nothing may rely on slot numbers.
//!
//! # Register map
//!
//! | table | address | type | order | scale | unit | meaning |
//! |---|---|---|---|---|---|---|
//! | input | 0 | u16 | | | | `count`: slots in use (0..=250) |
//! | input | 1 | u16 | | | | slot capacity (250) |
//! | input | 2 | u16 | | 1 | s | heartbeat: seconds since power-up (wraps) |
//! | input | 3-15 | u16 | | | | reserved (0) |
//! | input | 16 + 8 n .. | | | | | slot n, n in 0..250 (a free slot reads all 0): |
//! | input | +0..+1 | u32 | ABCD | | | ear-tag number |
//! | input | +2 | i16 | | 0.01 | °C | body temperature |
//! | input | +3 | u16 | | 1 | steps/h | activity, steps in the last hour |
//! | input | +4 | u16 | | 1 | min/h | rumination minutes in the last hour |
//! | input | +5 | u16 | | 0.01 | kg | yield of the last milking |
//! | input | +6 | u16 | | 0.01 | mS/cm | milk conductivity of the last milking |
//! | input | +7 | u16 | | | bits | slot faults: bit 0 collar not heard for an hour, bit 1 no milking recorded, bit 2 collar battery low (0 = all well) |
//!
//! The whole table (16 + 8 x 250 = 2016 registers) is contiguous, so a gateway reads it in
//! 17 requests of up to 125 registers. Activity and rumination cover the completed 10-minute
//! bins of the last hour; in the first hour after power-up they are scaled up from the
//! bins completed so far.

use alloc::vec::Vec;

use crate::modbus::{RegisterMap, Table};
use protocol::modbus::{self as words, WordOrder};

/// Word order of the ear-tag number.
pub const ORDER: WordOrder = WordOrder::Abcd;
/// Most animals one hub serves.
pub const CAPACITY: usize = 250;
/// Address of the `count` register.
pub const COUNT_ADDRESS: u16 = 0;
/// Address of slot 0.
pub const BASE: u16 = 16;
/// Registers per slot.
pub const STRIDE: u16 = 8;
/// Length of one activity / rumination bin (s).
pub const BIN_S: f32 = 600.0;
/// Bins per hour.
const BINS: usize = 6;
/// A collar not heard for this long is offline (s).
pub const OFFLINE_AFTER_S: f32 = 3600.0;

/// Slot fault bit: the collar has not been heard for an hour.
pub const SLOT_SILENT: u16 = 1 << 0;
/// Slot fault bit: no milking recorded yet.
pub const SLOT_NOT_MILKED: u16 = 1 << 1;
/// Slot fault bit: the collar reports a low battery.
pub const SLOT_LOW_BATTERY: u16 = 1 << 2;

/// One collar report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CollarReading {
    /// Body temperature (°C).
    pub body_temperature_c: f32,
    /// Steps counted since the collar's previous report.
    pub steps: u32,
    /// Seconds spent ruminating since the previous report.
    pub ruminating_s: f32,
    /// The collar's battery is low.
    pub battery_low: bool,
}

/// Why the hub refused a slot operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubError {
    /// All slots are in use.
    Full,
    /// The animal already has a slot.
    Duplicate,
    /// No slot holds that animal.
    UnknownAnimal,
}

impl core::fmt::Display for HubError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            HubError::Full => "all collar slots are in use",
            HubError::Duplicate => "the animal already has a slot",
            HubError::UnknownAnimal => "no slot holds that animal",
        })
    }
}

#[derive(Debug, Clone)]
struct Slot {
    eartag: u32,
    body_temperature_c: f32,
    steps: [u32; BINS + 1],
    rumination_s: [f32; BINS + 1],
    milk_yield_kg: f32,
    milk_conductivity: f32,
    milked: bool,
    battery_low: bool,
    /// Hub time of the last report (s).
    heard_at_s: f64,
}

/// The hub.
#[derive(Debug, Clone, Default)]
pub struct CollarHub {
    slots: Vec<Slot>,
    /// Seconds since power-up.
    clock_s: f64,
    /// Index of the bin being filled.
    current: usize,
    /// Bins completed since power-up, up to [`BINS`].
    completed: usize,
    /// Seconds into the current bin.
    bin_elapsed_s: f32,
}

impl CollarHub {
    /// An empty hub.
    pub fn new() -> CollarHub {
        CollarHub { slots: Vec::with_capacity(CAPACITY), ..CollarHub::default() }
    }

    /// Gives an animal a slot and returns it.
    pub fn attach(&mut self, eartag: u32) -> Result<usize, HubError> {
        if self.slot_of(eartag).is_some() {
            return Err(HubError::Duplicate);
        }
        if self.slots.len() >= CAPACITY {
            return Err(HubError::Full);
        }
        self.slots.push(Slot {
            eartag,
            body_temperature_c: 0.0,
            steps: [0; BINS + 1],
            rumination_s: [0.0; BINS + 1],
            milk_yield_kg: 0.0,
            milk_conductivity: 0.0,
            milked: false,
            battery_low: false,
            heard_at_s: f64::NEG_INFINITY,
        });
        Ok(self.slots.len() - 1)
    }

    /// Frees an animal's slot; the last slot moves into its place.
    pub fn detach(&mut self, eartag: u32) -> Result<(), HubError> {
        let i = self.slot_of(eartag).ok_or(HubError::UnknownAnimal)?;
        self.slots.swap_remove(i);
        Ok(())
    }

    /// The slot that holds `eartag`.
    pub fn slot_of(&self, eartag: u32) -> Option<usize> {
        self.slots.iter().position(|s| s.eartag == eartag)
    }

    /// Slots in use.
    pub fn count(&self) -> usize {
        self.slots.len()
    }

    /// Takes a collar report for the animal in `slot`.
    pub fn receive(&mut self, slot: usize, r: &CollarReading) -> Result<(), HubError> {
        let now = self.clock_s;
        let cur = self.current;
        let s = self.slots.get_mut(slot).ok_or(HubError::UnknownAnimal)?;
        if r.body_temperature_c.is_finite() {
            s.body_temperature_c = r.body_temperature_c.clamp(-300.0, 300.0);
        }
        s.steps[cur] = s.steps[cur].saturating_add(r.steps);
        if r.ruminating_s.is_finite() {
            s.rumination_s[cur] += r.ruminating_s.clamp(0.0, BIN_S);
        }
        s.battery_low = r.battery_low;
        s.heard_at_s = now;
        Ok(())
    }

    /// Records a milking of the animal in `slot`.
    pub fn record_milking(&mut self, slot: usize, yield_kg: f32, conductivity_ms_cm: f32) -> Result<(), HubError> {
        let s = self.slots.get_mut(slot).ok_or(HubError::UnknownAnimal)?;
        if yield_kg.is_finite() && conductivity_ms_cm.is_finite() {
            s.milk_yield_kg = yield_kg.clamp(0.0, 655.0);
            s.milk_conductivity = conductivity_ms_cm.clamp(0.0, 655.0);
            s.milked = true;
        }
        Ok(())
    }

    /// Advances the hub's clock, closing 10-minute bins as they complete.
    pub fn tick(&mut self, dt_s: f32) {
        let dt_s = if dt_s.is_finite() { dt_s.max(0.0) } else { 0.0 };
        self.clock_s += f64::from(dt_s);
        self.bin_elapsed_s += dt_s;
        while self.bin_elapsed_s >= BIN_S {
            self.bin_elapsed_s -= BIN_S;
            self.current = (self.current + 1) % (BINS + 1);
            self.completed = (self.completed + 1).min(BINS);
            let cur = self.current;
            for s in &mut self.slots {
                s.steps[cur] = 0;
                s.rumination_s[cur] = 0.0;
            }
        }
    }

    /// Sum over the completed bins of the last hour, scaled to an hour while fewer than
    /// six bins are complete.
    fn last_hour(&self, bins: impl Fn(usize) -> f32) -> f32 {
        if self.completed == 0 {
            return 0.0;
        }
        let sum: f32 = (1..=self.completed).map(|k| bins((self.current + BINS + 1 - k) % (BINS + 1))).sum();
        sum * BINS as f32 / self.completed as f32
    }

    /// Steps in the last hour of the animal in `slot`.
    pub fn activity(&self, slot: usize) -> Option<f32> {
        let s = self.slots.get(slot)?;
        Some(self.last_hour(|i| s.steps[i] as f32))
    }

    /// Rumination minutes in the last hour of the animal in `slot`.
    pub fn rumination_min(&self, slot: usize) -> Option<f32> {
        let s = self.slots.get(slot)?;
        Some(self.last_hour(|i| s.rumination_s[i]) / 60.0)
    }

    fn slot_register(&self, slot: usize, offset: u16) -> u16 {
        let Some(s) = self.slots.get(slot) else { return 0 };
        let hundredths = |x: f32| libm::roundf((x * 100.0).clamp(0.0, 65_535.0)) as u16;
        match offset {
            0..=1 => words::part(words::from_u32(s.eartag, ORDER), offset).unwrap_or(0),
            2 => libm::roundf((s.body_temperature_c * 100.0).clamp(-32_768.0, 32_767.0)) as i16 as u16,
            3 => libm::roundf(self.activity(slot).unwrap_or(0.0).min(65_535.0)) as u16,
            4 => libm::roundf(self.rumination_min(slot).unwrap_or(0.0).min(60.0)) as u16,
            5 => hundredths(s.milk_yield_kg),
            6 => hundredths(s.milk_conductivity),
            _ => {
                let silent = self.clock_s - s.heard_at_s > f64::from(OFFLINE_AFTER_S);
                let bit = |on: bool, mask: u16| if on { mask } else { 0 };
                bit(silent, SLOT_SILENT) | bit(!s.milked, SLOT_NOT_MILKED) | bit(s.battery_low, SLOT_LOW_BATTERY)
            }
        }
    }
}

impl RegisterMap for CollarHub {
    fn register(&self, table: Table, address: u16) -> Option<u16> {
        if table != Table::Input {
            return None;
        }
        match address {
            COUNT_ADDRESS => Some(self.slots.len() as u16),
            1 => Some(CAPACITY as u16),
            2 => Some((libm::floor(self.clock_s) as u64 & 0xFFFF) as u16),
            3..BASE => Some(0),
            _ => {
                let rel = address - BASE;
                let slot = usize::from(rel / STRIDE);
                (slot < CAPACITY).then(|| self.slot_register(slot, rel % STRIDE))
            }
        }
    }

    fn bit(&self, _table: Table, _address: u16) -> Option<bool> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::{Exception, read_registers};

    fn report(steps: u32, rum_s: f32) -> CollarReading {
        CollarReading { body_temperature_c: 38.62, steps, ruminating_s: rum_s, battery_low: false }
    }

    #[test]
    fn slots_carry_the_animal_by_ear_tag_and_count_says_how_many() {
        let mut hub = CollarHub::new();
        assert_eq!(hub.attach(20_417), Ok(0));
        assert_eq!(hub.attach(20_420), Ok(1));
        assert_eq!(hub.attach(20_417), Err(HubError::Duplicate));
        hub.receive(1, &report(10, 0.0)).unwrap();
        let mut regs = [0u16; 16 + 16];
        read_registers(&hub, Table::Input, 0, &mut regs).unwrap();
        assert_eq!(regs[0], 2);
        assert_eq!(words::to_u32([regs[16], regs[17]], ORDER), 20_417);
        assert_eq!(words::to_u32([regs[24], regs[25]], ORDER), 20_420);
        assert_eq!(regs[24 + 2] as i16, 3862);
        assert_eq!(regs[24 + 7] & SLOT_SILENT, 0);
        assert_eq!(regs[16 + 7] & SLOT_SILENT, SLOT_SILENT, "never heard");
    }

    #[test]
    fn activity_and_rumination_are_rolling_hour_sums() {
        let mut hub = CollarHub::new();
        let s = hub.attach(1).unwrap();
        // Two hours of 100 steps and 30 s of rumination per minute.
        for _ in 0..120 {
            hub.receive(s, &report(100, 30.0)).unwrap();
            hub.tick(60.0);
        }
        assert_eq!(hub.activity(s), Some(6000.0));
        assert_eq!(hub.rumination_min(s), Some(30.0));
        // Then an hour of rest: the hour's figures fall to zero bin by bin.
        for _ in 0..30 {
            hub.receive(s, &report(0, 0.0)).unwrap();
            hub.tick(60.0);
        }
        assert_eq!(hub.activity(s), Some(3000.0));
        for _ in 0..30 {
            hub.tick(60.0);
        }
        assert_eq!(hub.activity(s), Some(0.0));
    }

    #[test]
    fn the_first_hour_is_scaled_from_the_bins_completed() {
        let mut hub = CollarHub::new();
        let s = hub.attach(1).unwrap();
        assert_eq!(hub.activity(s), Some(0.0));
        for _ in 0..10 {
            hub.receive(s, &report(20, 0.0)).unwrap();
            hub.tick(60.0);
        }
        assert_eq!(hub.activity(s), Some(1200.0));
    }

    #[test]
    fn full_table_is_contiguous_and_free_slots_read_zero() {
        let mut hub = CollarHub::new();
        for tag in 0..CAPACITY as u32 {
            hub.attach(1000 + tag).unwrap();
        }
        assert_eq!(hub.attach(5), Err(HubError::Full));
        let last = BASE + STRIDE * (CAPACITY as u16) - 1;
        let mut regs = [0u16; 125];
        let mut a = 0;
        while a <= last {
            let n = usize::from((last - a + 1).min(125));
            read_registers(&hub, Table::Input, a, &mut regs[..n]).unwrap();
            a += n as u16;
        }
        let mut one = [0u16; 1];
        assert_eq!(read_registers(&hub, Table::Input, last + 1, &mut one), Err(Exception::IllegalDataAddress));
        hub.detach(1000).unwrap();
        // The last animal moved into slot 0.
        read_registers(&hub, Table::Input, BASE, &mut regs[..2]).unwrap();
        assert_eq!(words::to_u32([regs[0], regs[1]], ORDER), 1000 + CAPACITY as u32 - 1);
        read_registers(&hub, Table::Input, last - 7, &mut regs[..8]).unwrap();
        assert_eq!(&regs[..8], &[0; 8]);
    }

    #[test]
    fn a_milking_is_kept_until_the_next_and_a_silent_collar_goes_offline() {
        let mut hub = CollarHub::new();
        let s = hub.attach(7).unwrap();
        hub.receive(s, &report(0, 0.0)).unwrap();
        hub.record_milking(s, 14.37, 5.21).unwrap();
        hub.tick(3601.0);
        let mut regs = [0u16; 8];
        read_registers(&hub, Table::Input, BASE, &mut regs).unwrap();
        assert_eq!(regs[5], 1437);
        assert_eq!(regs[6], 521);
        assert_eq!(regs[7], SLOT_SILENT, "milked, but the collar has been silent for an hour");
        assert_eq!(hub.record_milking(3, 1.0, 1.0), Err(HubError::UnknownAnimal));
    }
}
