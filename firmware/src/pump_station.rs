//! Pump station PLC: a borehole pump filling a clear-water tank, level control with
//! hysteresis, motor protection, flow-paced chlorine dosing and a fault word.
//!
//! Layout the logic assumes: the pump lifts water into the tank; the tank feeds its supply
//! district by gravity through the station's outlet main, which carries the outlet flow
//! meter, the outlet pressure transmitter, the chlorine dosing point and an outlet
//! chlorine analyser. The world gives the PLC its inputs; the PLC gives the world two
//! outputs: the pump contactor ([`PumpStation::run_output`]) and the dosing pump
//! ([`PumpStation::dosing_output`]).
//!
//! Control:
//! - `auto_mode` (coil 1, default on): the pump starts when the tank level falls to the
//!   start set-point and stops when it reaches the stop set-point (hysteresis; both are
//!   writable holding registers, start < stop - 0.2 m).
//! - `pump_run` (coil 0, default on) is the operator's remote run/stop: in auto it is a
//!   permissive (0 holds the pump off); in manual (auto off) 1 runs the pump now, 0 stops it.
//! - The high-level float switch stops the pump in every mode (overflow protection,
//!   independent of the level transmitter).
//! - A latched fault (trip, dry run, overcurrent, fail to start) stops the pump until a
//!   reset (coil 2, or [`PumpStation::reset_faults`] for the panel's reset button). A reset
//!   does not clear a fault whose cause is still present (a tripped relay stays tripped).
//! - Dosing is flow-paced: the dosing pump runs while outlet flow exceeds 1% of the
//!   station's design outflow.
//!
//! Fault word (input 10), DOMAIN.md "Supply failure" defaults:
//!
//! | bit | name | set when | clears |
//! |---|---|---|---|
//! | 0 | trip | motor protection relay input active | reset, once the relay is reset |
//! | 1 | dry run | running with pump flow < 10% of rated for 30 s | reset |
//! | 2 | overcurrent | current > 120% of rated for 5 s | reset |
//! | 3 | fail to start | run output on, no run feedback for 60 s | reset |
//! | 4 | fail to stop | run output off, run feedback on for 60 s | reset |
//! | 5 | long run | pump running continuously > 2 h | pump stops |
//! | 6 | dosing fail | dosing output on, no dosing feedback for 60 s | reset |
//! | 7 | high level | high-level float switch | switch releases |
//! | 8 | low level | tank level < low-level alarm (0.5 m) | level > 0.6 m |
//!
//! Bits 0-3 stop the pump. Bits 4 and 6 are alarms that need a reset; 5, 7, 8 follow
//! their condition.
//!
//! # Register map (PLC convention: 32-bit values ABCD, big-endian)
//!
//! | table | address | type | order | scale | unit | meaning |
//! |---|---|---|---|---|---|---|
//! | input | 0 | u16 | | 0.001 | m | tank level above the outlet (mm) |
//! | input | 1 | u16 | | 0.001 | MPa | outlet (district inlet) pressure (kPa) |
//! | input | 2-3 | u32 | ABCD | 0.001 | m3/h | outlet flow to the district (L/h) |
//! | input | 4-5 | u32 | ABCD | 0.001 | m3 | outlet volume total (litres; rolls over at 2³²) |
//! | input | 6-7 | u32 | ABCD | 0.001 | m3/h | pump flow into the tank (L/h) |
//! | input | 8 | u16 | | 0.01 | A | motor current |
//! | input | 9 | u16 | | 0.001 | mg/L | outlet free chlorine |
//! | input | 10 | u16 | | | bits | fault word (table above) |
//! | input | 11 | u16 | | 1 | min | minutes of the current run (0 when stopped) |
//! | input | 12 | u16 | | 1 | | pump starts since power-up (wraps) |
//! | input | 13 | u16 | | 1 | s | heartbeat: seconds since power-up (wraps) |
//! | holding | 0 | u16 | | 0.01 | m | level start set-point (read-write) |
//! | holding | 1 | u16 | | 0.01 | m | level stop set-point (read-write) |
//! | coil | 0 | bool | | | | pump_run: remote run/stop command (read-write) |
//! | coil | 1 | bool | | | | auto_mode: 1 level control, 0 manual (read-write) |
//! | coil | 2 | bool | | | | fault reset: write 1 (reads 0) |
//! | discrete | 0 | bool | | | | run feedback (pump running) |
//! | discrete | 1 | bool | | | | run output (contactor commanded) |
//! | discrete | 2 | bool | | | | dosing pump running (feedback) |
//! | discrete | 3 | bool | | | | dosing output |
//! | discrete | 4 | bool | | | | motor protection trip input |
//! | discrete | 5 | bool | | | | high-level float switch |
//!
//! Set-point writes outside 0.30-3.60 m, or leaving less than 0.20 m between start and
//! stop, are refused with `IllegalDataValue`.

use crate::modbus::{self, Exception, RegisterMap, Table};
use protocol::modbus::{self as words, WordOrder};

/// Word order of the station's 32-bit registers.
pub const ORDER: WordOrder = WordOrder::Abcd;

/// Fault bit: motor protection trip.
pub const FAULT_TRIP: u16 = 1 << 0;
/// Fault bit: dry run.
pub const FAULT_DRY_RUN: u16 = 1 << 1;
/// Fault bit: overcurrent.
pub const FAULT_OVERCURRENT: u16 = 1 << 2;
/// Fault bit: commanded to run, no feedback.
pub const FAULT_FAIL_TO_START: u16 = 1 << 3;
/// Fault bit: not commanded, but running.
pub const FAULT_FAIL_TO_STOP: u16 = 1 << 4;
/// Fault bit: running continuously for more than two hours.
pub const FAULT_LONG_RUN: u16 = 1 << 5;
/// Fault bit: dosing pump commanded but not running.
pub const FAULT_DOSING: u16 = 1 << 6;
/// Fault bit: high-level float switch.
pub const FAULT_HIGH_LEVEL: u16 = 1 << 7;
/// Fault bit: tank level low.
pub const FAULT_LOW_LEVEL: u16 = 1 << 8;

/// Faults that stop the pump until reset.
pub const STOPPING_FAULTS: u16 = FAULT_TRIP | FAULT_DRY_RUN | FAULT_OVERCURRENT | FAULT_FAIL_TO_START;
const LATCHED_FAULTS: u16 = STOPPING_FAULTS | FAULT_FAIL_TO_STOP | FAULT_DOSING;

/// Command and feedback may disagree this long before the PLC calls it a failure (s).
pub const DISAGREE_S: f32 = 60.0;
/// Continuous run time that raises the long-run alarm (s).
pub const LONG_RUN_S: f32 = 2.0 * 3600.0;
/// Dry-run detection delay (s).
pub const DRY_RUN_S: f32 = 30.0;
/// Overcurrent detection delay (s).
pub const OVERCURRENT_S: f32 = 5.0;
/// Low-level alarm (m), with 0.1 m hysteresis.
pub const LOW_LEVEL_M: f32 = 0.5;
/// Lowest and highest set-point a write may set (m).
pub const SETPOINT_RANGE_M: (f32, f32) = (0.30, 3.60);
/// Least distance between start and stop set-points (m).
pub const MIN_DIFFERENTIAL_M: f32 = 0.20;

/// What the station's sensors and contacts read during one update.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StationInputs {
    /// Tank level transmitter (m above the outlet).
    pub tank_level_m: f32,
    /// High-level float switch (independent of the transmitter).
    pub high_level_switch: bool,
    /// Run feedback from the contactor's auxiliary contact.
    pub run_feedback: bool,
    /// Motor current (A).
    pub motor_current_a: f32,
    /// Pump delivery flow into the tank (m³/h).
    pub pump_flow_m3h: f32,
    /// Outlet flow to the district (m³/h).
    pub outlet_flow_m3h: f32,
    /// Outlet pressure (MPa).
    pub outlet_pressure_mpa: f32,
    /// Outlet free chlorine (mg/L).
    pub outlet_chlorine_mg_l: f32,
    /// Motor protection relay tripped.
    pub trip: bool,
    /// Dosing pump running feedback.
    pub dosing_feedback: bool,
}

/// Fixed characteristics of one station, set at commissioning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StationConfig {
    /// Motor rated current (A).
    pub rated_current_a: f32,
    /// Pump rated flow (m³/h).
    pub rated_flow_m3h: f32,
    /// Design mean outflow of the district (m³/h), for flow-paced dosing.
    pub design_outflow_m3h: f32,
    /// Initial start set-point (m).
    pub start_setpoint_m: f32,
    /// Initial stop set-point (m).
    pub stop_setpoint_m: f32,
}

/// The station PLC.
#[derive(Debug, Clone)]
pub struct PumpStation {
    config: StationConfig,
    start_cm: u16,
    stop_cm: u16,
    pump_run: bool,
    auto_mode: bool,
    /// Level controller's memory between the set-points.
    level_demand: bool,
    run_output: bool,
    dosing_output: bool,
    faults: u16,
    last: StationInputs,
    outlet_total_l: u32,
    outlet_carry_l: f64,
    /// Timers (s).
    disagree_s: f32,
    dosing_disagree_s: f32,
    dry_s: f32,
    over_s: f32,
    run_s: f32,
    uptime_s: f64,
    starts: u16,
}

fn to_cm(m: f32) -> u16 {
    libm::roundf(m.clamp(0.0, 655.0) * 100.0) as u16
}

fn finite(x: f32) -> f32 {
    if x.is_finite() { x } else { 0.0 }
}

impl PumpStation {
    /// A station in auto mode with run permission, pump stopped.
    pub fn new(config: StationConfig) -> PumpStation {
        PumpStation {
            config,
            start_cm: to_cm(config.start_setpoint_m),
            stop_cm: to_cm(config.stop_setpoint_m),
            pump_run: true,
            auto_mode: true,
            level_demand: false,
            run_output: false,
            dosing_output: false,
            faults: 0,
            last: StationInputs::default(),
            outlet_total_l: 0,
            outlet_carry_l: 0.0,
            disagree_s: 0.0,
            dosing_disagree_s: 0.0,
            dry_s: 0.0,
            over_s: 0.0,
            run_s: 0.0,
            uptime_s: 0.0,
            starts: 0,
        }
    }

    /// Runs one PLC scan over `dt_s` seconds of inputs.
    pub fn update(&mut self, inputs: &StationInputs, dt_s: f32) {
        let dt_s = if dt_s.is_finite() { dt_s.max(0.0) } else { 0.0 };
        let i = StationInputs {
            tank_level_m: finite(inputs.tank_level_m),
            motor_current_a: finite(inputs.motor_current_a).max(0.0),
            pump_flow_m3h: finite(inputs.pump_flow_m3h).max(0.0),
            outlet_flow_m3h: finite(inputs.outlet_flow_m3h).max(0.0),
            outlet_pressure_mpa: finite(inputs.outlet_pressure_mpa).max(0.0),
            outlet_chlorine_mg_l: finite(inputs.outlet_chlorine_mg_l).max(0.0),
            ..*inputs
        };
        self.uptime_s += f64::from(dt_s);
        self.totalise(i.outlet_flow_m3h, dt_s);
        self.watch_protection(&i, dt_s);
        self.watch_levels(&i);
        self.control(&i);
        self.watch_dosing(&i, dt_s);
        self.last = i;
    }

    fn totalise(&mut self, flow_m3h: f32, dt_s: f32) {
        self.outlet_carry_l += f64::from(flow_m3h) * f64::from(dt_s) / 3.6;
        let whole = libm::floor(self.outlet_carry_l + 1e-9);
        let add = if whole >= 4_294_967_295.0 { u32::MAX } else { whole as u32 };
        self.outlet_total_l = self.outlet_total_l.wrapping_add(add);
        self.outlet_carry_l = (self.outlet_carry_l - whole).max(0.0);
    }

    fn watch_protection(&mut self, i: &StationInputs, dt_s: f32) {
        if i.trip {
            self.faults |= FAULT_TRIP;
        }
        // Command against feedback: fail to start / fail to stop.
        if self.run_output != i.run_feedback {
            self.disagree_s += dt_s;
        } else {
            self.disagree_s = 0.0;
        }
        if self.disagree_s >= DISAGREE_S {
            self.faults |= if self.run_output { FAULT_FAIL_TO_START } else { FAULT_FAIL_TO_STOP };
        }
        if i.run_feedback {
            self.run_s += dt_s;
            self.dry_s = if i.pump_flow_m3h < 0.1 * self.config.rated_flow_m3h { self.dry_s + dt_s } else { 0.0 };
            self.over_s = if i.motor_current_a > 1.2 * self.config.rated_current_a { self.over_s + dt_s } else { 0.0 };
        } else {
            self.run_s = 0.0;
            self.dry_s = 0.0;
            self.over_s = 0.0;
        }
        if self.dry_s >= DRY_RUN_S {
            self.faults |= FAULT_DRY_RUN;
        }
        if self.over_s >= OVERCURRENT_S {
            self.faults |= FAULT_OVERCURRENT;
        }
        if self.run_s > LONG_RUN_S {
            self.faults |= FAULT_LONG_RUN;
        } else {
            self.faults &= !FAULT_LONG_RUN;
        }
    }

    fn watch_levels(&mut self, i: &StationInputs) {
        if i.high_level_switch {
            self.faults |= FAULT_HIGH_LEVEL;
        } else {
            self.faults &= !FAULT_HIGH_LEVEL;
        }
        if i.tank_level_m < LOW_LEVEL_M {
            self.faults |= FAULT_LOW_LEVEL;
        } else if i.tank_level_m > LOW_LEVEL_M + 0.1 {
            self.faults &= !FAULT_LOW_LEVEL;
        }
    }

    fn control(&mut self, i: &StationInputs) {
        let start_m = f32::from(self.start_cm) / 100.0;
        let stop_m = f32::from(self.stop_cm) / 100.0;
        if i.tank_level_m <= start_m {
            self.level_demand = true;
        } else if i.tank_level_m >= stop_m {
            self.level_demand = false;
        }
        let demand = if self.auto_mode { self.pump_run && self.level_demand } else { self.pump_run };
        let run = demand && !i.high_level_switch && self.faults & STOPPING_FAULTS == 0;
        if run && !self.run_output {
            self.starts = self.starts.wrapping_add(1);
        }
        if run != self.run_output {
            self.disagree_s = 0.0;
        }
        self.run_output = run;
    }

    fn watch_dosing(&mut self, i: &StationInputs, dt_s: f32) {
        self.dosing_output = i.outlet_flow_m3h > 0.01 * self.config.design_outflow_m3h;
        if self.dosing_output && !i.dosing_feedback {
            self.dosing_disagree_s += dt_s;
        } else {
            self.dosing_disagree_s = 0.0;
        }
        if self.dosing_disagree_s >= DISAGREE_S {
            self.faults |= FAULT_DOSING;
        }
    }

    /// The pump contactor output.
    pub fn run_output(&self) -> bool {
        self.run_output
    }

    /// The dosing pump output.
    pub fn dosing_output(&self) -> bool {
        self.dosing_output
    }

    /// The fault word.
    pub fn faults(&self) -> u16 {
        self.faults
    }

    /// The configuration the station was built with.
    pub fn config(&self) -> &StationConfig {
        &self.config
    }

    /// The (start, stop) set-points (m).
    pub fn setpoints_m(&self) -> (f32, f32) {
        (f32::from(self.start_cm) / 100.0, f32::from(self.stop_cm) / 100.0)
    }

    /// Outlet total (litres).
    pub fn outlet_total_litres(&self) -> u32 {
        self.outlet_total_l
    }

    /// The panel's reset button (and the reset coil): clears latched faults whose cause is
    /// gone. A tripped relay keeps its bit until the relay itself is reset.
    pub fn reset_faults(&mut self) {
        let keep = if self.last.trip { FAULT_TRIP } else { 0 };
        self.faults &= !LATCHED_FAULTS | keep;
        self.disagree_s = 0.0;
        self.dosing_disagree_s = 0.0;
        self.dry_s = 0.0;
        self.over_s = 0.0;
    }

    /// Sets the operator's remote run/stop (coil 0).
    pub fn set_pump_run(&mut self, run: bool) {
        self.pump_run = run;
    }

    /// Sets automatic level control (coil 1).
    pub fn set_auto_mode(&mut self, auto: bool) {
        self.auto_mode = auto;
    }

    fn check_setpoints(start_cm: u16, stop_cm: u16) -> Result<(), Exception> {
        let lo = to_cm(SETPOINT_RANGE_M.0);
        let hi = to_cm(SETPOINT_RANGE_M.1);
        let ok = (lo..=hi).contains(&start_cm)
            && (lo..=hi).contains(&stop_cm)
            && stop_cm >= start_cm.saturating_add(to_cm(MIN_DIFFERENTIAL_M));
        if ok { Ok(()) } else { Err(Exception::IllegalDataValue) }
    }
}

impl RegisterMap for PumpStation {
    fn register(&self, table: Table, address: u16) -> Option<u16> {
        let l = &self.last;
        let milli = |x: f32| libm::roundf((x * 1000.0).clamp(0.0, 65_535.0)) as u16;
        let milli32 = |x: f32| libm::round(f64::from(x) * 1000.0).clamp(0.0, 4_294_967_295.0) as u32;
        match (table, address) {
            (Table::Input, 0) => Some(milli(l.tank_level_m)),
            (Table::Input, 1) => Some(milli(l.outlet_pressure_mpa)),
            (Table::Input, 2..=3) => words::part(words::from_u32(milli32(l.outlet_flow_m3h), ORDER), address - 2),
            (Table::Input, 4..=5) => words::part(words::from_u32(self.outlet_total_l, ORDER), address - 4),
            (Table::Input, 6..=7) => words::part(words::from_u32(milli32(l.pump_flow_m3h), ORDER), address - 6),
            (Table::Input, 8) => Some(libm::roundf((l.motor_current_a * 100.0).clamp(0.0, 65_535.0)) as u16),
            (Table::Input, 9) => Some(milli(l.outlet_chlorine_mg_l)),
            (Table::Input, 10) => Some(self.faults),
            (Table::Input, 11) => Some(libm::floorf((self.run_s / 60.0).min(65_535.0)) as u16),
            (Table::Input, 12) => Some(self.starts),
            (Table::Input, 13) => Some((libm::floor(self.uptime_s) as u64 & 0xFFFF) as u16),
            (Table::Holding, 0) => Some(self.start_cm),
            (Table::Holding, 1) => Some(self.stop_cm),
            _ => None,
        }
    }

    fn bit(&self, table: Table, address: u16) -> Option<bool> {
        match (table, address) {
            (Table::Coil, 0) => Some(self.pump_run),
            (Table::Coil, 1) => Some(self.auto_mode),
            (Table::Coil, 2) => Some(false),
            (Table::Discrete, 0) => Some(self.last.run_feedback),
            (Table::Discrete, 1) => Some(self.run_output),
            (Table::Discrete, 2) => Some(self.last.dosing_feedback),
            (Table::Discrete, 3) => Some(self.dosing_output),
            (Table::Discrete, 4) => Some(self.last.trip),
            (Table::Discrete, 5) => Some(self.last.high_level_switch),
            _ => None,
        }
    }

    fn write_registers(&mut self, address: u16, words: &[u16]) -> Result<(), Exception> {
        if !modbus::covers_only(address, words.len(), &[0, 1]) {
            return Err(Exception::IllegalDataAddress);
        }
        let start = modbus::word_at(address, words, 0).unwrap_or(self.start_cm);
        let stop = modbus::word_at(address, words, 1).unwrap_or(self.stop_cm);
        Self::check_setpoints(start, stop)?;
        self.start_cm = start;
        self.stop_cm = stop;
        Ok(())
    }

    fn write_coils(&mut self, address: u16, bits: &[bool]) -> Result<(), Exception> {
        if !modbus::covers_only(address, bits.len(), &[0, 1, 2]) {
            return Err(Exception::IllegalDataAddress);
        }
        for (a, &b) in (address..).zip(bits) {
            match a {
                0 => self.set_pump_run(b),
                1 => self.set_auto_mode(b),
                _ if b => self.reset_faults(),
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

    fn station() -> PumpStation {
        PumpStation::new(StationConfig {
            rated_current_a: 10.0,
            rated_flow_m3h: 20.0,
            design_outflow_m3h: 8.0,
            start_setpoint_m: 1.5,
            stop_setpoint_m: 3.0,
        })
    }

    /// Inputs of a healthy world where the pump runs iff commanded.
    fn world(s: &PumpStation, level: f32) -> StationInputs {
        let running = s.run_output();
        StationInputs {
            tank_level_m: level,
            run_feedback: running,
            motor_current_a: if running { 8.5 } else { 0.0 },
            pump_flow_m3h: if running { 20.0 } else { 0.0 },
            outlet_flow_m3h: 8.0,
            outlet_pressure_mpa: 0.3,
            outlet_chlorine_mg_l: 0.6,
            dosing_feedback: s.dosing_output(),
            ..StationInputs::default()
        }
    }

    fn scan(s: &mut PumpStation, level: f32, dt: f32) {
        let i = world(s, level);
        s.update(&i, dt);
        // Feedback follows the output on the next scan, like a contactor.
        let i = world(s, level);
        s.update(&i, 0.0);
    }

    #[test]
    fn pump_starts_below_start_setpoint_and_stops_above_stop_setpoint() {
        let mut s = station();
        scan(&mut s, 2.0, 1.0);
        assert!(!s.run_output(), "between set-points a stopped pump stays stopped");
        scan(&mut s, 1.5, 1.0);
        assert!(s.run_output());
        scan(&mut s, 2.5, 1.0);
        assert!(s.run_output(), "between set-points a running pump keeps running");
        scan(&mut s, 3.0, 1.0);
        assert!(!s.run_output());
        scan(&mut s, 2.9, 1.0);
        assert!(!s.run_output());
    }

    #[test]
    fn written_setpoints_move_the_switching_levels() {
        let mut s = station();
        write_registers(&mut s, 0, &[200, 280]).unwrap();
        scan(&mut s, 1.9, 1.0);
        assert!(s.run_output());
        scan(&mut s, 2.8, 1.0);
        assert!(!s.run_output());
        let mut regs = [0u16; 2];
        read_registers(&s, Table::Holding, 0, &mut regs).unwrap();
        assert_eq!(regs, [200, 280]);
    }

    #[test]
    fn setpoints_that_cross_or_leave_the_range_are_illegal_values() {
        let mut s = station();
        assert_eq!(write_registers(&mut s, 0, &[290]), Err(Exception::IllegalDataValue), "start too close to stop");
        assert_eq!(write_registers(&mut s, 1, &[400]), Err(Exception::IllegalDataValue), "above 3.60 m");
        assert_eq!(write_registers(&mut s, 0, &[10, 300]), Err(Exception::IllegalDataValue), "below 0.30 m");
        assert_eq!(write_registers(&mut s, 1, &[300, 0]), Err(Exception::IllegalDataAddress));
        assert_eq!(s.setpoints_m(), (1.5, 3.0), "a refused write changes nothing");
    }

    #[test]
    fn trip_latches_and_stops_the_pump_until_reset() {
        let mut s = station();
        scan(&mut s, 1.0, 1.0);
        assert!(s.run_output());
        let mut i = world(&s, 1.0);
        i.trip = true;
        s.update(&i, 1.0);
        assert!(!s.run_output());
        assert_ne!(s.faults() & FAULT_TRIP, 0);
        // The relay is reset, but the PLC holds the fault until someone resets it.
        for _ in 0..10 {
            scan(&mut s, 1.0, 1.0);
        }
        assert!(!s.run_output());
        assert_ne!(s.faults() & FAULT_TRIP, 0);
        write_coils(&mut s, 2, &[true]).unwrap();
        scan(&mut s, 1.0, 1.0);
        assert!(s.run_output());
        assert_eq!(s.faults() & FAULT_TRIP, 0);
    }

    #[test]
    fn reset_does_not_clear_a_trip_whose_relay_is_still_tripped() {
        let mut s = station();
        let mut i = world(&s, 1.0);
        i.trip = true;
        s.update(&i, 1.0);
        s.reset_faults();
        s.update(&i, 1.0);
        assert_ne!(s.faults() & FAULT_TRIP, 0);
        assert!(!s.run_output());
    }

    #[test]
    fn commanded_pump_without_feedback_for_60_s_is_a_fail_to_start() {
        let mut s = station();
        let mut i = world(&s, 1.0);
        s.update(&i, 1.0);
        assert!(s.run_output());
        i.run_feedback = false;
        for _ in 0..59 {
            s.update(&i, 1.0);
        }
        assert_eq!(s.faults() & FAULT_FAIL_TO_START, 0);
        s.update(&i, 1.0);
        assert_ne!(s.faults() & FAULT_FAIL_TO_START, 0);
        assert!(!s.run_output());
    }

    #[test]
    fn running_without_flow_is_a_dry_run_and_overcurrent_trips_too() {
        let mut s = station();
        scan(&mut s, 1.0, 1.0);
        let mut i = world(&s, 1.0);
        i.pump_flow_m3h = 0.5;
        for _ in 0..30 {
            s.update(&i, 1.0);
        }
        assert_ne!(s.faults() & FAULT_DRY_RUN, 0);
        assert!(!s.run_output());

        let mut s = station();
        scan(&mut s, 1.0, 1.0);
        let mut i = world(&s, 1.0);
        i.motor_current_a = 13.0;
        for _ in 0..5 {
            s.update(&i, 1.0);
        }
        assert_ne!(s.faults() & FAULT_OVERCURRENT, 0);
    }

    #[test]
    fn a_run_longer_than_two_hours_raises_long_run_until_the_pump_stops() {
        let mut s = station();
        scan(&mut s, 1.0, 1.0); // starts; the run clock starts with the feedback
        for _ in 0..(2 * 60) {
            scan(&mut s, 1.0, 60.0);
        }
        assert_eq!(s.faults() & FAULT_LONG_RUN, 0);
        scan(&mut s, 1.0, 60.0);
        assert_ne!(s.faults() & FAULT_LONG_RUN, 0);
        assert!(s.run_output(), "long run is an alarm, not a stop");
        scan(&mut s, 3.1, 1.0);
        scan(&mut s, 3.1, 1.0);
        assert_eq!(s.faults() & FAULT_LONG_RUN, 0);
    }

    #[test]
    fn remote_stop_holds_the_pump_off_and_manual_mode_runs_it_on_command() {
        let mut s = station();
        write_coils(&mut s, 0, &[false]).unwrap();
        scan(&mut s, 1.0, 1.0);
        assert!(!s.run_output(), "remote stop overrides the level controller");
        write_coils(&mut s, 0, &[true, false]).unwrap(); // run, manual
        scan(&mut s, 2.5, 1.0);
        assert!(s.run_output(), "manual run ignores the set-points");
        let mut i = world(&s, 3.8);
        i.high_level_switch = true;
        s.update(&i, 1.0);
        assert!(!s.run_output(), "the float switch stops the pump in every mode");
        assert_ne!(s.faults() & FAULT_HIGH_LEVEL, 0);
    }

    #[test]
    fn dosing_follows_outlet_flow_and_a_silent_dosing_pump_is_flagged() {
        let mut s = station();
        let mut i = world(&s, 2.0);
        s.update(&i, 1.0);
        assert!(s.dosing_output());
        i.dosing_feedback = false;
        for _ in 0..60 {
            s.update(&i, 1.0);
        }
        assert_ne!(s.faults() & FAULT_DOSING, 0);
        assert!(!s.run_output() || s.faults() & STOPPING_FAULTS == 0, "dosing failure does not stop the pump");
        i.outlet_flow_m3h = 0.0;
        s.update(&i, 1.0);
        assert!(!s.dosing_output());
    }

    #[test]
    fn outlet_volume_is_totalised_and_exposed_in_abcd() {
        let mut s = station();
        let mut i = world(&s, 2.0);
        i.outlet_flow_m3h = 36.0; // 10 L/s, exact in binary
        for _ in 0..10 {
            s.update(&i, 1.0);
        }
        assert_eq!(s.outlet_total_litres(), 100);
        let mut regs = [0u16; 14];
        read_registers(&s, Table::Input, 0, &mut regs).unwrap();
        assert_eq!(regs[0], 2000);
        assert_eq!(words::to_u32([regs[2], regs[3]], ORDER), 36_000);
        assert_eq!(words::to_u32([regs[4], regs[5]], ORDER), 100);
        assert_eq!(regs[9], 600);
        let mut bits = [false; 6];
        read_bits(&s, Table::Discrete, 0, &mut bits).unwrap();
        assert!(bits[3], "dosing output");
        let mut too_far = [0u16; 1];
        assert_eq!(read_registers(&s, Table::Input, 14, &mut too_far), Err(Exception::IllegalDataAddress));
    }
}
