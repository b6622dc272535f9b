//! Household smart water meter: totaliser, flow, battery, shut-off valve, alarms.
//!
//! The world gives the meter the flow through its body (signed: negative is reverse
//! flow), its battery voltage and its tamper switch; the meter keeps the registers a
//! billing system and a leak rule need.
//!
//! Resolution and rollover: the totalisers count whole litres (0.001 m³) in a `u32`,
//! so they roll over to 0 after 4,294,967,295 L (4.29 million m³; a household using
//! 300 L/day never gets there, a bulk meter at 1,000 m³/day would after 11 years).
//! Sub-litre volume is carried between updates, so slow flows are not lost. Consumers
//! compute consumption as a difference of totals modulo 2³² (DOMAIN.md: "Consumption is
//! a difference of totals, across rollover and meter replacement").
//!
//! Below the starting flow ([`STARTING_FLOW_L_PER_H`]) the measuring element does not
//! turn: the meter shows no flow and counts nothing, as real meters under-register drips.
//!
//! Alarms (our choices, stated so rules can rely on them):
//! - leak: flow never stopped for [`LEAK_AFTER_S`] (4 h); clears after [`LEAK_CLEAR_S`]
//!   (10 min) without flow. Household use has long pauses, a leak does not.
//! - reverse flow: reverse flow for 60 s; clears after 60 s without it.
//! - low battery: below 3.40 V (Li-SOCl2 cells sit at ~3.6 V until near end of life);
//!   clears above 3.45 V.
//! - tamper: the case or magnet switch fired; latched until an alarm reset.
//!
//! # Register map (unit id per bus; addresses on the wire, 0-based)
//!
//! | table | address | type | order | scale | unit | meaning |
//! |---|---|---|---|---|---|---|
//! | input | 0-1 | u32 | DCBA | 0.001 | m3 | forward volume total (litres; rolls over at 2³²) |
//! | input | 2-3 | u32 | DCBA | 0.001 | m3 | reverse volume total (litres) |
//! | input | 4 | i16 | | 0.001 | m3/h | flow (L/h; negative = reverse) |
//! | input | 5 | u16 | | 0.001 | V | battery voltage (mV) |
//! | input | 6 | u16 | | | bits | alarm word: bit 0 leak, 1 reverse flow, 2 low battery, 3 tamper |
//! | input | 7 | u16 | | 1 | % | valve position (0 closed, 100 open) |
//! | input | 8 | u16 | | 1 | min | minutes of uninterrupted flow (saturates at 65535) |
//! | input | 9-10 | u32 | DCBA | 0.001 | m3 | daily frozen reading: the forward total at the last local midnight (litres) |
//! | input | 11-12 | u32 | DCBA | 1 | | the local date of that reading as YYYYMMDD (0 until the first freeze) |
//! | coil | 0 | bool | | | | valve command: 1 open, 0 close (read-write) |
//! | coil | 1 | bool | | | | alarm reset: write 1 to clear the latched tamper alarm (reads 0) |
//! | discrete | 0 | bool | | | | valve fully open |
//! | discrete | 1-4 | bool | | | | leak, reverse flow, low battery, tamper (as the alarm word) |
//!
//! Word order DCBA follows some Chinese water meters (DOMAIN.md, Modbus conventions).
//!
//! Daily frozen reading: metering protocols for household meters (CJ/T 188, and the
//! NB-IoT meters built on it) have the meter copy its total at 00:00 every day into a
//! frozen-data register with the date, so that a day's opening read does not depend on
//! when the meter happens to report. The meter's clock is the world's here:
//! [`WaterMeter::freeze`] is called at local midnight with the date.

use crate::modbus::{Exception, RegisterMap, Table};
use protocol::modbus::{self as words, WordOrder};

/// Word order of the meter's 32-bit registers.
pub const ORDER: WordOrder = WordOrder::Dcba;
/// Flow below which the measuring element does not move (L/h).
pub const STARTING_FLOW_L_PER_H: f32 = 2.0;
/// Uninterrupted flow for this long raises the leak alarm (s).
pub const LEAK_AFTER_S: f32 = 4.0 * 3600.0;
/// No flow for this long clears the leak alarm (s).
pub const LEAK_CLEAR_S: f32 = 600.0;
/// Reverse flow for this long raises the reverse-flow alarm, and its absence clears it (s).
pub const REVERSE_AFTER_S: f32 = 60.0;
/// Low-battery alarm threshold (V).
pub const LOW_BATTERY_V: f32 = 3.40;
/// Low-battery alarm clears above this (V).
pub const BATTERY_OK_V: f32 = 3.45;
/// Time the motorised ball valve takes from closed to open (s).
pub const VALVE_TRAVEL_S: f32 = 10.0;

/// Alarm word bit: uninterrupted flow for hours.
pub const ALARM_LEAK: u16 = 1 << 0;
/// Alarm word bit: sustained reverse flow.
pub const ALARM_REVERSE: u16 = 1 << 1;
/// Alarm word bit: battery low.
pub const ALARM_LOW_BATTERY: u16 = 1 << 2;
/// Alarm word bit: tamper switch fired (latched).
pub const ALARM_TAMPER: u16 = 1 << 3;

/// What the meter's sensors see during one update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeterInputs {
    /// Mean flow through the meter over the update (L/h; negative is reverse flow).
    pub flow_l_per_h: f32,
    /// Battery terminal voltage (V).
    pub battery_v: f32,
    /// Tamper switch (case opened or magnet held to the register).
    pub tamper: bool,
}

/// A household water meter.
#[derive(Debug, Clone)]
pub struct WaterMeter {
    forward_l: u32,
    reverse_l: u32,
    /// Sub-litre volume carried to the next update (forward, reverse). f64 so that a
    /// million small updates do not drift.
    carry_l: (f64, f64),
    flow_l_per_h: f32,
    battery_mv: u16,
    valve_command: bool,
    /// 0 closed .. 1 open.
    valve_position: f32,
    alarms: u16,
    flowing_s: f32,
    still_s: f32,
    reverse_s: f32,
    forward_s: f32,
    /// The forward total at the last freeze (litres) and that day as YYYYMMDD.
    frozen: (u32, u32),
}

impl WaterMeter {
    /// A meter whose forward totaliser already reads `total_l` litres, valve open.
    pub fn new(total_l: u32) -> WaterMeter {
        WaterMeter {
            forward_l: total_l,
            reverse_l: 0,
            carry_l: (0.0, 0.0),
            flow_l_per_h: 0.0,
            battery_mv: 3600,
            valve_command: true,
            valve_position: 1.0,
            alarms: 0,
            flowing_s: 0.0,
            still_s: 0.0,
            reverse_s: 0.0,
            forward_s: 0.0,
            frozen: (0, 0),
        }
    }

    /// Freezes the forward total as the reading of `date` (YYYYMMDD): what the meter does
    /// at local midnight. The registers keep it until the next freeze.
    pub fn freeze(&mut self, date: u32) {
        self.frozen = (self.forward_l, date);
    }

    /// The last frozen reading: litres and its date (YYYYMMDD; 0 before the first freeze).
    pub fn frozen(&self) -> (u32, u32) {
        self.frozen
    }

    /// Takes one update of the sensors over `dt_s` seconds.
    pub fn sense(&mut self, inputs: &MeterInputs, dt_s: f32) {
        let dt_s = if dt_s.is_finite() { dt_s.max(0.0) } else { 0.0 };
        self.move_valve(dt_s);
        let flow = if inputs.flow_l_per_h.is_finite() { inputs.flow_l_per_h } else { 0.0 };
        let flow = if libm::fabsf(flow) < STARTING_FLOW_L_PER_H { 0.0 } else { flow };
        self.flow_l_per_h = flow;
        self.totalise(flow, dt_s);
        self.watch_flow(flow, dt_s);
        self.watch_battery(inputs.battery_v);
        if inputs.tamper {
            self.alarms |= ALARM_TAMPER;
        }
    }

    fn move_valve(&mut self, dt_s: f32) {
        let step = dt_s / VALVE_TRAVEL_S;
        self.valve_position = if self.valve_command {
            (self.valve_position + step).min(1.0)
        } else {
            (self.valve_position - step).max(0.0)
        };
    }

    fn totalise(&mut self, flow_l_per_h: f32, dt_s: f32) {
        let litres = f64::from(libm::fabsf(flow_l_per_h)) * f64::from(dt_s) / 3600.0;
        let (total, carry) = if flow_l_per_h >= 0.0 {
            (&mut self.forward_l, &mut self.carry_l.0)
        } else {
            (&mut self.reverse_l, &mut self.carry_l.1)
        };
        *carry += litres;
        // The epsilon keeps 100 x 0.01 L from landing at 0.99999 L.
        let whole = libm::floor(*carry + 1e-9);
        // A single update never carries more than u32::MAX litres; saturate the cast anyway.
        let add = if whole >= 4_294_967_295.0 { u32::MAX } else { whole as u32 };
        *total = total.wrapping_add(add);
        *carry = (*carry - whole).max(0.0);
    }

    fn watch_flow(&mut self, flow: f32, dt_s: f32) {
        if flow != 0.0 {
            self.flowing_s += dt_s;
            self.still_s = 0.0;
        } else {
            self.still_s += dt_s;
            if self.still_s >= LEAK_CLEAR_S {
                self.flowing_s = 0.0;
                self.alarms &= !ALARM_LEAK;
            }
        }
        if self.flowing_s >= LEAK_AFTER_S {
            self.alarms |= ALARM_LEAK;
        }
        if flow < 0.0 {
            self.reverse_s += dt_s;
            self.forward_s = 0.0;
        } else {
            self.forward_s += dt_s;
            self.reverse_s = 0.0;
        }
        if self.reverse_s >= REVERSE_AFTER_S {
            self.alarms |= ALARM_REVERSE;
        } else if self.forward_s >= REVERSE_AFTER_S {
            self.alarms &= !ALARM_REVERSE;
        }
    }

    fn watch_battery(&mut self, volts: f32) {
        let volts = if volts.is_finite() { volts.clamp(0.0, 65.0) } else { 0.0 };
        self.battery_mv = libm::roundf(volts * 1000.0) as u16;
        if volts < LOW_BATTERY_V {
            self.alarms |= ALARM_LOW_BATTERY;
        } else if volts > BATTERY_OK_V {
            self.alarms &= !ALARM_LOW_BATTERY;
        }
    }

    /// Forward total in litres.
    pub fn forward_litres(&self) -> u32 {
        self.forward_l
    }

    /// Reverse total in litres.
    pub fn reverse_litres(&self) -> u32 {
        self.reverse_l
    }

    /// Flow shown by the meter (L/h).
    pub fn flow_l_per_h(&self) -> f32 {
        self.flow_l_per_h
    }

    /// The alarm word.
    pub fn alarms(&self) -> u16 {
        self.alarms
    }

    /// How open the valve is, 0 (closed) to 1 (open): the world scales flow by it.
    pub fn valve_opening(&self) -> f32 {
        self.valve_position
    }

    /// Commands the valve (what a coil write does).
    pub fn command_valve(&mut self, open: bool) {
        self.valve_command = open;
    }

    /// Clears latched alarms whose cause is gone (what the alarm-reset coil does).
    pub fn reset_alarms(&mut self) {
        self.alarms &= !ALARM_TAMPER;
    }
}

impl RegisterMap for WaterMeter {
    fn register(&self, table: Table, address: u16) -> Option<u16> {
        if table != Table::Input {
            return None;
        }
        match address {
            0..=1 => words::part(words::from_u32(self.forward_l, ORDER), address),
            2..=3 => words::part(words::from_u32(self.reverse_l, ORDER), address - 2),
            4 => Some(libm::roundf(self.flow_l_per_h.clamp(-32_768.0, 32_767.0)) as i16 as u16),
            5 => Some(self.battery_mv),
            6 => Some(self.alarms),
            7 => Some(libm::roundf(self.valve_position * 100.0) as u16),
            8 => Some(libm::floorf((self.flowing_s / 60.0).min(65_535.0)) as u16),
            9..=10 => words::part(words::from_u32(self.frozen.0, ORDER), address - 9),
            11..=12 => words::part(words::from_u32(self.frozen.1, ORDER), address - 11),
            _ => None,
        }
    }

    fn bit(&self, table: Table, address: u16) -> Option<bool> {
        match (table, address) {
            (Table::Coil, 0) => Some(self.valve_command),
            (Table::Coil, 1) => Some(false),
            (Table::Discrete, 0) => Some(self.valve_position >= 1.0),
            (Table::Discrete, 1..=4) => Some(self.alarms & (1 << (address - 1)) != 0),
            _ => None,
        }
    }

    fn write_coils(&mut self, address: u16, bits: &[bool]) -> Result<(), Exception> {
        if !crate::modbus::covers_only(address, bits.len(), &[0, 1]) {
            return Err(Exception::IllegalDataAddress);
        }
        for (a, &b) in (address..).zip(bits) {
            match a {
                0 => self.command_valve(b),
                _ if b => self.reset_alarms(),
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::{read_bits, read_registers, write_coils, write_registers};

    fn flowing(l_per_h: f32) -> MeterInputs {
        MeterInputs { flow_l_per_h: l_per_h, battery_v: 3.6, tamper: false }
    }

    #[test]
    fn totaliser_integrates_flow_into_litres_and_keeps_the_fraction() {
        let mut m = WaterMeter::new(1000);
        // 360 L/h for 10 s is exactly 1 L, delivered in 100 ms updates.
        for _ in 0..100 {
            m.sense(&flowing(360.0), 0.1);
        }
        assert_eq!(m.forward_litres(), 1001);
        // 0.5 L twice makes one more litre.
        m.sense(&flowing(180.0), 10.0);
        assert_eq!(m.forward_litres(), 1001);
        m.sense(&flowing(180.0), 10.0);
        assert_eq!(m.forward_litres(), 1002);
    }

    #[test]
    fn totaliser_rolls_over_to_zero_past_u32_max() {
        let mut m = WaterMeter::new(u32::MAX - 1);
        m.sense(&flowing(3600.0), 3.0); // 3 L
        assert_eq!(m.forward_litres(), 1);
        let mut regs = [0u16; 2];
        read_registers(&m, Table::Input, 0, &mut regs).unwrap();
        assert_eq!(words::to_u32(regs, ORDER), 1);
    }

    #[test]
    fn registers_carry_the_total_in_dcba_and_flow_signed() {
        let mut m = WaterMeter::new(0x0102_0304);
        m.sense(&flowing(-50.0), 1.0);
        let mut regs = [0u16; 9];
        read_registers(&m, Table::Input, 0, &mut regs).unwrap();
        assert_eq!(&regs[..2], &[0x0403, 0x0201]);
        assert_eq!(regs[4] as i16, -50);
        assert_eq!(regs[5], 3600);
    }

    #[test]
    fn the_frozen_reading_keeps_the_total_of_midnight_while_the_total_moves_on() {
        let mut m = WaterMeter::new(0x0001_0000);
        let mut regs = [0u16; 4];
        read_registers(&m, Table::Input, 9, &mut regs).unwrap();
        assert_eq!(regs, [0; 4], "nothing frozen yet");
        m.freeze(20261203);
        m.sense(&flowing(3600.0), 10.0); // 10 L after midnight
        read_registers(&m, Table::Input, 9, &mut regs).unwrap();
        assert_eq!(words::to_u32([regs[0], regs[1]], ORDER), 0x0001_0000);
        assert_eq!(words::to_u32([regs[2], regs[3]], ORDER), 20261203);
        assert_eq!(m.forward_litres(), 0x0001_0000 + 10);
        m.freeze(20261204);
        assert_eq!(m.frozen(), (0x0001_0000 + 10, 20261204));
    }

    #[test]
    fn drips_below_the_starting_flow_are_not_counted() {
        let mut m = WaterMeter::new(0);
        m.sense(&flowing(1.5), 3600.0 * 10.0);
        assert_eq!(m.forward_litres(), 0);
        assert_eq!(m.flow_l_per_h(), 0.0);
    }

    #[test]
    fn reverse_flow_counts_on_its_own_register_and_raises_its_alarm() {
        let mut m = WaterMeter::new(10);
        m.sense(&flowing(-36.0), 30.0);
        assert_eq!(m.alarms() & ALARM_REVERSE, 0);
        m.sense(&flowing(-36.0), 30.0);
        assert_ne!(m.alarms() & ALARM_REVERSE, 0);
        assert_eq!(m.forward_litres(), 10);
        assert_eq!(m.reverse_litres(), 0); // 0.6 L so far
        m.sense(&flowing(-3600.0), 1.0);
        assert_eq!(m.reverse_litres(), 1);
        m.sense(&flowing(0.0), 60.0);
        assert_eq!(m.alarms() & ALARM_REVERSE, 0);
    }

    #[test]
    fn continuous_flow_for_hours_raises_leak_and_a_pause_clears_it() {
        let mut m = WaterMeter::new(0);
        for _ in 0..(4 * 60 - 1) {
            m.sense(&flowing(15.0), 60.0);
        }
        assert_eq!(m.alarms() & ALARM_LEAK, 0, "not yet four hours");
        m.sense(&flowing(15.0), 60.0);
        assert_ne!(m.alarms() & ALARM_LEAK, 0);
        let mut leak = [false];
        read_bits(&m, Table::Discrete, 1, &mut leak).unwrap();
        assert!(leak[0]);
        m.sense(&flowing(0.0), 300.0);
        assert_ne!(m.alarms() & ALARM_LEAK, 0, "a short pause is not enough");
        m.sense(&flowing(0.0), 300.0);
        assert_eq!(m.alarms() & ALARM_LEAK, 0);
    }

    #[test]
    fn ordinary_household_use_with_pauses_never_looks_like_a_leak() {
        let mut m = WaterMeter::new(0);
        for _ in 0..48 {
            m.sense(&flowing(400.0), 120.0); // a two-minute draw
            m.sense(&flowing(0.0), 900.0); // then quiet
        }
        assert_eq!(m.alarms() & ALARM_LEAK, 0);
    }

    #[test]
    fn low_battery_has_hysteresis() {
        let mut m = WaterMeter::new(0);
        let at = |v| MeterInputs { flow_l_per_h: 0.0, battery_v: v, tamper: false };
        m.sense(&at(3.39), 1.0);
        assert_ne!(m.alarms() & ALARM_LOW_BATTERY, 0);
        m.sense(&at(3.42), 1.0);
        assert_ne!(m.alarms() & ALARM_LOW_BATTERY, 0);
        m.sense(&at(3.46), 1.0);
        assert_eq!(m.alarms() & ALARM_LOW_BATTERY, 0);
    }

    #[test]
    fn tamper_latches_until_the_reset_coil_is_written() {
        let mut m = WaterMeter::new(0);
        m.sense(&MeterInputs { flow_l_per_h: 0.0, battery_v: 3.6, tamper: true }, 1.0);
        m.sense(&flowing(0.0), 1.0);
        assert_ne!(m.alarms() & ALARM_TAMPER, 0);
        write_coils(&mut m, 1, &[true]).unwrap();
        assert_eq!(m.alarms() & ALARM_TAMPER, 0);
    }

    #[test]
    fn valve_closes_over_its_travel_time_when_the_coil_is_written() {
        let mut m = WaterMeter::new(0);
        write_coils(&mut m, 0, &[false]).unwrap();
        m.sense(&flowing(0.0), 5.0);
        assert!((m.valve_opening() - 0.5).abs() < 1e-6);
        let mut open = [true];
        read_bits(&m, Table::Discrete, 0, &mut open).unwrap();
        assert!(!open[0]);
        m.sense(&flowing(0.0), 5.0);
        assert_eq!(m.valve_opening(), 0.0);
        let mut cmd = [true];
        read_bits(&m, Table::Coil, 0, &mut cmd).unwrap();
        assert!(!cmd[0]);
    }

    #[test]
    fn bad_addresses_and_read_only_tables_are_refused() {
        let mut m = WaterMeter::new(0);
        let mut regs = [0u16; 2];
        assert_eq!(read_registers(&m, Table::Input, 12, &mut regs), Err(Exception::IllegalDataAddress));
        assert!(read_registers(&m, Table::Input, 11, &mut regs).is_ok(), "the last register is there");
        assert_eq!(read_registers(&m, Table::Holding, 0, &mut regs), Err(Exception::IllegalDataAddress));
        assert_eq!(write_registers(&mut m, 0, &[1]), Err(Exception::IllegalDataAddress));
        assert_eq!(write_coils(&mut m, 1, &[true, true]), Err(Exception::IllegalDataAddress));
    }

    #[test]
    fn nonsense_inputs_do_not_poison_the_state() {
        let mut m = WaterMeter::new(5);
        m.sense(&MeterInputs { flow_l_per_h: f32::NAN, battery_v: f32::INFINITY, tamper: false }, f32::NAN);
        m.sense(&flowing(100.0), -1.0);
        assert_eq!(m.forward_litres(), 5);
        assert_eq!(m.flow_l_per_h(), 100.0);
    }
}
