//! Barn climate sensor: air temperature and relative humidity, and the THI the farm's
//! heat-stress rules use.
//!
//! THI is the NRC formula (DOMAIN.md, Dairy):
//! `THI = (1.8 T + 32) - (0.55 - 0.0055 RH)(1.8 T - 26)`, T in °C, RH in %. Bands: 68-71
//! mild, 72-79 moderate, 80-89 severe, >= 90 extreme. The sensor computes it so that a
//! display on the barn wall and the dashboard agree, but rules should compute their own
//! from temperature and humidity ("thresholds hold only for the formula they were set
//! with").
//!
//! # Register map
//!
//! | table | address | type | order | scale | unit | meaning |
//! |---|---|---|---|---|---|---|
//! | input | 0 | i16 | | 0.1 | °C | air temperature |
//! | input | 1 | u16 | | 0.1 | % | relative humidity (0-100) |
//! | input | 2 | u16 | | 0.1 | | THI (NRC) |
//! | input | 3 | u16 | | | bits | status: bit 0 sensor fault (values held), bit 1 condensation (RH >= 99%) |

use crate::modbus::{RegisterMap, Table};

/// Status bit: the sensing element reports a fault; the last good values are held.
pub const STATUS_SENSOR_FAULT: u16 = 1 << 0;
/// Status bit: RH at saturation; the element may be wet.
pub const STATUS_CONDENSATION: u16 = 1 << 1;

/// What the sensing element measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClimateInputs {
    /// Air temperature (°C).
    pub temperature_c: f32,
    /// Relative humidity (%).
    pub humidity_pct: f32,
    /// False when the element reports a fault.
    pub sensor_ok: bool,
}

/// The NRC temperature-humidity index.
pub fn thi(temperature_c: f32, humidity_pct: f32) -> f32 {
    (1.8 * temperature_c + 32.0) - (0.55 - 0.0055 * humidity_pct) * (1.8 * temperature_c - 26.0)
}

/// The barn sensor.
#[derive(Debug, Clone, Default)]
pub struct BarnClimate {
    temperature_c: f32,
    humidity_pct: f32,
    status: u16,
}

impl BarnClimate {
    /// A sensor that has not measured yet.
    pub fn new() -> BarnClimate {
        BarnClimate::default()
    }

    /// Takes one reading of the element.
    pub fn sense(&mut self, i: &ClimateInputs) {
        if !i.sensor_ok || !i.temperature_c.is_finite() || !i.humidity_pct.is_finite() {
            self.status |= STATUS_SENSOR_FAULT;
            return;
        }
        self.temperature_c = i.temperature_c.clamp(-50.0, 70.0);
        self.humidity_pct = i.humidity_pct.clamp(0.0, 100.0);
        self.status = if self.humidity_pct >= 99.0 { STATUS_CONDENSATION } else { 0 };
    }

    /// Temperature (°C).
    pub fn temperature_c(&self) -> f32 {
        self.temperature_c
    }

    /// Relative humidity (%).
    pub fn humidity_pct(&self) -> f32 {
        self.humidity_pct
    }

    /// THI of the current reading.
    pub fn thi(&self) -> f32 {
        thi(self.temperature_c, self.humidity_pct)
    }
}

impl RegisterMap for BarnClimate {
    fn register(&self, table: Table, address: u16) -> Option<u16> {
        match (table, address) {
            (Table::Input, 0) => Some(libm::roundf(self.temperature_c * 10.0) as i16 as u16),
            (Table::Input, 1) => Some(libm::roundf(self.humidity_pct * 10.0) as u16),
            (Table::Input, 2) => Some(libm::roundf((self.thi() * 10.0).clamp(0.0, 65_535.0)) as u16),
            (Table::Input, 3) => Some(self.status),
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
    use crate::modbus::read_registers;

    #[test]
    fn thi_matches_the_nrc_formula_at_known_points() {
        // 25 °C at 50 % RH: 77 - 0.275 * 19 = 71.775
        assert!((thi(25.0, 50.0) - 71.775).abs() < 1e-3);
        // A humid heat wave is severe heat stress.
        assert!(thi(33.0, 65.0) > 80.0);
    }

    #[test]
    fn negative_temperatures_are_twos_complement_tenths() {
        let mut b = BarnClimate::new();
        b.sense(&ClimateInputs { temperature_c: -3.4, humidity_pct: 81.25, sensor_ok: true });
        let mut regs = [0u16; 4];
        read_registers(&b, Table::Input, 0, &mut regs).unwrap();
        assert_eq!(regs[0] as i16, -34);
        assert_eq!(regs[1], 813);
        assert_eq!(regs[3], 0);
    }

    #[test]
    fn a_faulty_element_holds_the_last_values_and_says_so() {
        let mut b = BarnClimate::new();
        b.sense(&ClimateInputs { temperature_c: 20.0, humidity_pct: 60.0, sensor_ok: true });
        b.sense(&ClimateInputs { temperature_c: 80.0, humidity_pct: f32::NAN, sensor_ok: false });
        assert_eq!(b.temperature_c(), 20.0);
        let mut regs = [0u16; 4];
        read_registers(&b, Table::Input, 0, &mut regs).unwrap();
        assert_eq!(regs[3] & STATUS_SENSOR_FAULT, STATUS_SENSOR_FAULT);
    }
}
