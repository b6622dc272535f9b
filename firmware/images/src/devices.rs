//! The two devices as the loop runs them, with what their sensors see on this board.
//!
//! Board-specific: the sensor readings. A real speaker terminal measures its amplifier
//! and horn line; this board has neither, so both read healthy. A real meter counts
//! pulses or ultrasonic transit time; this board's household draws a steady
//! [`DEMAND_L_PER_H`] through the valve, so the totaliser moves (the world, as the
//! simulator models it, not the meter's logic).

use firmware::speaker::{Speaker, SpeakerInputs};
use firmware::water_meter::{MeterInputs, WaterMeter};
use protocol::Timestamp;

use crate::run::Device;

/// Flow the emulated household draws with the valve open (L/h): a running tap.
pub const DEMAND_L_PER_H: f32 = 600.0;
/// Battery voltage the emulated meter reads (V): a fresh Li-SOCl2 cell.
pub const BATTERY_V: f32 = 3.6;

impl Device for Speaker {
    fn step(&mut self, now_ms: i64, dt_ms: u32) {
        self.set_clock(Timestamp(now_ms - i64::from(dt_ms)));
        self.update(&SpeakerInputs { amplifier_ok: true, line_ok: true }, dt_ms as f32 / 1000.0);
    }

    fn save(&self, out: &mut [u8]) -> Option<usize> {
        self.save_state(out)
    }
}

impl Device for WaterMeter {
    fn step(&mut self, _now_ms: i64, dt_ms: u32) {
        let flow = DEMAND_L_PER_H * self.valve_opening();
        self.sense(&MeterInputs { flow_l_per_h: flow, battery_v: BATTERY_V, tamper: false }, dt_ms as f32 / 1000.0);
    }

    /// The forward total in litres: what billing must never lose.
    fn save(&self, out: &mut [u8]) -> Option<usize> {
        out.get_mut(..4)?.copy_from_slice(&self.forward_litres().to_le_bytes());
        Some(4)
    }
}

/// The forward total a meter kept with [`Device::save`].
pub fn kept_total(state: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(state.get(..4)?.try_into().ok()?))
}
