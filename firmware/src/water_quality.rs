//! Online water-quality analyser: free chlorine, turbidity, pH, conductivity and water
//! temperature, with a status register modelled on the Xylem CL500 chlorine analyser.
//!
//! The world gives the analyser what its probes measure; the analyser validates each
//! reading against its sensor's range, sets the chlorine status the way the CL500 does
//! (DOMAIN.md, Modbus conventions: float at 30001, status at 30010 with 1 normal,
//! 2 over-range, 3 under-range, 6 reading error; error bits at 30012), and watches for a
//! stuck sensor.
//!
//! - Over-range (chlorine > 5 mg/L, the top of a CL500's range; check the data sheet):
//!   the value is clamped to 5 and the status is 2.
//! - Under-range (the raw chlorine signal below 0, which noise around an empty residual
//!   produces): the value is clamped to 0 and the status is 3.
//! - Reading error (the probe reports a fault): the last good value is held, status 6.
//! - Stuck: the raw chlorine signal has not changed by a single bit for
//!   [`STUCK_AFTER_S`]. Real water always moves the last digit, so a frozen signal is a
//!   dead probe or a frozen converter. The analyser cannot be sure, so stuck is an error
//!   bit and does not change the status (DOMAIN.md: "A stuck sensor (zero variance where
//!   the process varies) is its own fault, not drift").
//!
//! # Register map (floats CDAB, as the CL500)
//!
//! | table | address | type | order | scale | unit | meaning |
//! |---|---|---|---|---|---|---|
//! | input | 0-1 | f32 | CDAB | 1 | mg/L | free chlorine (30001) |
//! | input | 2-3 | f32 | CDAB | 1 | °C | water temperature |
//! | input | 4-5 | f32 | CDAB | 1 | pH | pH |
//! | input | 6-7 | f32 | CDAB | 1 | NTU | turbidity |
//! | input | 8 | u16 | | | | reserved (0) |
//! | input | 9 | u16 | | | state | chlorine status (30010): 1 normal, 2 over-range, 3 under-range, 6 reading error |
//! | input | 10 | u16 | | | | reserved (0) |
//! | input | 11 | u16 | | | bits | error bits (30012): bit 0 reading error, 1 stuck, 2 chlorine over-range, 3 chlorine under-range, 4 turbidity over-range, 5 pH out of range |
//! | input | 12-13 | f32 | CDAB | 1 | uS/cm | conductivity |
//!
//! The block 0..=13 is contiguous so a gateway reads it in one request.

use crate::modbus::{RegisterMap, Table};
use protocol::modbus::{self as words, WordOrder};

/// Word order of the analyser's floats.
pub const ORDER: WordOrder = WordOrder::Cdab;
/// Top of the chlorine range (mg/L).
pub const CHLORINE_MAX_MG_L: f32 = 5.0;
/// Top of the turbidity range (NTU).
pub const TURBIDITY_MAX_NTU: f32 = 100.0;
/// A chlorine signal unchanged for this long is flagged stuck (s).
pub const STUCK_AFTER_S: f32 = 30.0 * 60.0;

/// Status: normal.
pub const STATUS_NORMAL: u16 = 1;
/// Status: over-range.
pub const STATUS_OVER_RANGE: u16 = 2;
/// Status: under-range.
pub const STATUS_UNDER_RANGE: u16 = 3;
/// Status: reading error.
pub const STATUS_READING_ERROR: u16 = 6;

/// Error bit: the probe reports a fault.
pub const ERROR_READING: u16 = 1 << 0;
/// Error bit: the chlorine signal is frozen.
pub const ERROR_STUCK: u16 = 1 << 1;
/// Error bit: chlorine over-range.
pub const ERROR_CL_OVER: u16 = 1 << 2;
/// Error bit: chlorine under-range.
pub const ERROR_CL_UNDER: u16 = 1 << 3;
/// Error bit: turbidity over-range.
pub const ERROR_TURBIDITY_OVER: u16 = 1 << 4;
/// Error bit: pH outside 0-14.
pub const ERROR_PH_RANGE: u16 = 1 << 5;

/// What the probes measure during one update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualityInputs {
    /// Free chlorine signal (mg/L; may dip below 0 from noise).
    pub chlorine_mg_l: f32,
    /// Turbidity (NTU).
    pub turbidity_ntu: f32,
    /// pH.
    pub ph: f32,
    /// Conductivity (µS/cm).
    pub conductivity_us_cm: f32,
    /// Water temperature (°C).
    pub temperature_c: f32,
    /// False when the probe electronics report a fault.
    pub sensor_ok: bool,
}

/// The analyser.
#[derive(Debug, Clone)]
pub struct WaterQuality {
    chlorine: f32,
    turbidity: f32,
    ph: f32,
    conductivity: f32,
    temperature: f32,
    status: u16,
    errors: u16,
    last_raw_chlorine: u32,
    unchanged_s: f32,
}

impl Default for WaterQuality {
    fn default() -> Self {
        WaterQuality::new()
    }
}

impl WaterQuality {
    /// An analyser that has not measured yet (all zero, status normal).
    pub fn new() -> WaterQuality {
        WaterQuality {
            chlorine: 0.0,
            turbidity: 0.0,
            ph: 7.0,
            conductivity: 0.0,
            temperature: 0.0,
            status: STATUS_NORMAL,
            errors: 0,
            last_raw_chlorine: u32::MAX,
            unchanged_s: 0.0,
        }
    }

    /// Takes one set of probe readings over `dt_s` seconds.
    pub fn sense(&mut self, i: &QualityInputs, dt_s: f32) {
        let dt_s = if dt_s.is_finite() { dt_s.max(0.0) } else { 0.0 };
        let finite = [i.chlorine_mg_l, i.turbidity_ntu, i.ph, i.conductivity_us_cm, i.temperature_c]
            .iter()
            .all(|v| v.is_finite());
        if !i.sensor_ok || !finite {
            self.errors = (self.errors & ERROR_STUCK) | ERROR_READING;
            self.status = STATUS_READING_ERROR;
            return;
        }
        self.watch_stuck(i.chlorine_mg_l, dt_s);
        let mut errors = self.errors & ERROR_STUCK;
        self.status = if i.chlorine_mg_l > CHLORINE_MAX_MG_L {
            errors |= ERROR_CL_OVER;
            STATUS_OVER_RANGE
        } else if i.chlorine_mg_l < 0.0 {
            errors |= ERROR_CL_UNDER;
            STATUS_UNDER_RANGE
        } else {
            STATUS_NORMAL
        };
        self.chlorine = i.chlorine_mg_l.clamp(0.0, CHLORINE_MAX_MG_L);
        if i.turbidity_ntu > TURBIDITY_MAX_NTU {
            errors |= ERROR_TURBIDITY_OVER;
        }
        self.turbidity = i.turbidity_ntu.clamp(0.0, TURBIDITY_MAX_NTU);
        if !(0.0..=14.0).contains(&i.ph) {
            errors |= ERROR_PH_RANGE;
        }
        self.ph = i.ph.clamp(0.0, 14.0);
        self.conductivity = i.conductivity_us_cm.clamp(0.0, 200_000.0);
        self.temperature = i.temperature_c.clamp(-5.0, 100.0);
        self.errors = errors;
    }

    fn watch_stuck(&mut self, raw: f32, dt_s: f32) {
        if raw.to_bits() == self.last_raw_chlorine {
            self.unchanged_s += dt_s;
        } else {
            self.unchanged_s = 0.0;
            self.last_raw_chlorine = raw.to_bits();
            self.errors &= !ERROR_STUCK;
        }
        if self.unchanged_s >= STUCK_AFTER_S {
            self.errors |= ERROR_STUCK;
        }
    }

    /// Reported free chlorine (mg/L).
    pub fn chlorine_mg_l(&self) -> f32 {
        self.chlorine
    }

    /// The chlorine status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The error bits.
    pub fn errors(&self) -> u16 {
        self.errors
    }
}

impl RegisterMap for WaterQuality {
    fn register(&self, table: Table, address: u16) -> Option<u16> {
        if table != Table::Input {
            return None;
        }
        match address {
            0..=1 => words::part(words::from_f32(self.chlorine, ORDER), address),
            2..=3 => words::part(words::from_f32(self.temperature, ORDER), address - 2),
            4..=5 => words::part(words::from_f32(self.ph, ORDER), address - 4),
            6..=7 => words::part(words::from_f32(self.turbidity, ORDER), address - 6),
            8 | 10 => Some(0),
            9 => Some(self.status),
            11 => Some(self.errors),
            12..=13 => words::part(words::from_f32(self.conductivity, ORDER), address - 12),
            _ => None,
        }
    }

    fn bit(&self, _table: Table, _address: u16) -> Option<bool> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::{Exception, read_registers, write_registers};

    fn water(cl: f32) -> QualityInputs {
        QualityInputs {
            chlorine_mg_l: cl,
            turbidity_ntu: 0.3,
            ph: 7.5,
            conductivity_us_cm: 620.0,
            temperature_c: 15.0,
            sensor_ok: true,
        }
    }

    #[test]
    fn values_are_cdab_floats_in_one_contiguous_block() {
        let mut a = WaterQuality::new();
        a.sense(&water(0.45), 1.0);
        let mut regs = [0u16; 14];
        read_registers(&a, Table::Input, 0, &mut regs).unwrap();
        assert_eq!(words::to_f32([regs[0], regs[1]], ORDER), 0.45);
        assert_eq!(words::to_f32([regs[2], regs[3]], ORDER), 15.0);
        assert_eq!(words::to_f32([regs[4], regs[5]], ORDER), 7.5);
        assert_eq!(words::to_f32([regs[6], regs[7]], ORDER), 0.3);
        assert_eq!(regs[9], STATUS_NORMAL);
        assert_eq!(words::to_f32([regs[12], regs[13]], ORDER), 620.0);
        // Plain big-endian decoding gives nonsense: that is the point of CDAB.
        assert_ne!(words::to_f32([regs[0], regs[1]], WordOrder::Abcd), 0.45);
    }

    #[test]
    fn chlorine_status_follows_the_cl500_codes() {
        let mut a = WaterQuality::new();
        a.sense(&water(6.0), 1.0);
        assert_eq!((a.status(), a.chlorine_mg_l()), (STATUS_OVER_RANGE, 5.0));
        a.sense(&water(-0.01), 1.0);
        assert_eq!((a.status(), a.chlorine_mg_l()), (STATUS_UNDER_RANGE, 0.0));
        assert_ne!(a.errors() & ERROR_CL_UNDER, 0);
        a.sense(&QualityInputs { sensor_ok: false, ..water(0.5) }, 1.0);
        assert_eq!(a.status(), STATUS_READING_ERROR);
        assert_eq!(a.chlorine_mg_l(), 0.0, "the last good value is held");
        a.sense(&water(0.5), 1.0);
        assert_eq!(a.status(), STATUS_NORMAL);
        assert_eq!(a.errors(), 0);
    }

    #[test]
    fn a_frozen_chlorine_signal_is_flagged_stuck_after_thirty_minutes() {
        let mut a = WaterQuality::new();
        for _ in 0..29 {
            a.sense(&water(0.42), 60.0);
        }
        a.sense(&water(0.42), 59.0);
        assert_eq!(a.errors() & ERROR_STUCK, 0);
        a.sense(&water(0.42), 61.0);
        assert_ne!(a.errors() & ERROR_STUCK, 0);
        assert_eq!(a.status(), STATUS_NORMAL, "stuck is a flag, not a status");
        a.sense(&water(0.43), 1.0);
        assert_eq!(a.errors() & ERROR_STUCK, 0);
    }

    #[test]
    fn the_analyser_is_read_only_and_ends_at_register_13() {
        let mut a = WaterQuality::new();
        let mut regs = [0u16; 1];
        assert_eq!(read_registers(&a, Table::Input, 14, &mut regs), Err(Exception::IllegalDataAddress));
        assert_eq!(write_registers(&mut a, 0, &[1]), Err(Exception::IllegalDataAddress));
    }
}
