//! Physics of one water supply district: households drawing water through their meters,
//! the pump filling the tank, the tank draining into the district, leakage, pressure, and
//! chlorine travelling down the network to the analyser.
//!
//! Sources of the numbers (DOMAIN.md unless marked; "brief" marks figures the project
//! brief gave without a source, to check before a rule pack cites them):
//! - Demand: 3 people per household at 80-120 L/person/day (brief; rural domestic use in
//!   China's village supply quotas is of that order, check SL 310), with a diurnal profile
//!   that peaks around 07:00 and 19:00 and bottoms out 02:00-04:00 (the minimum-night-flow
//!   window of DOMAIN.md), where legitimate use is ~30% of the night flow. Use comes in events (a tap, a flush, a shower, laundry) drawn
//!   as a Poisson process whose rate follows the profile.
//! - Leakage: background leakage ~10% of inflow (CJJ 92-2016 benchmark 10-12%), scaled
//!   with pressure to the power 1.5; a burst main (the `leak` fault) adds 0.8 x the
//!   district's mean inflow, scaled with pressure to the power 0.5 (DOMAIN.md exponents).
//! - Tank and pump: the pump is rated at 4 x the mean inflow and the band between the
//!   set-points holds 3.6 h of mean inflow, so the pump cycles a few times a day and a
//!   normal run stays under the 2 h long-run alarm (DOMAIN.md), even at the peak.
//! - Pressure at the district inlet: the tank is a water tower 28 m above the district,
//!   so the static head is ~0.30 MPa; friction takes 0.06 MPa at three times the mean
//!   flow (a small district's instantaneous peaks reach that), on the flow smoothed over
//!   ~2 min (transmitter damping). It stays above the 0.14 MPa network-end minimum in
//!   normal use and falls to zero when the tank runs dry.
//! - Chlorine: dosed at the outlet to 0.65 mg/L (GB 5749-2022: >= 0.3 mg/L leaving the
//!   plant; brief: 0.5-0.8), mixing time constant 10 min. The network to the analyser is
//!   plug flow holding 4 h of mean inflow, so the residence time is ~2 h at the peak and
//!   ~10 h at night; free chlorine decays first order with k = 0.08 /h (bulk plus wall
//!   decay; an assumption in the range reported for small networks, check), so the
//!   residual at the analyser dips at night (~0.3 mg/L) and a dosing failure reaches it
//!   only after the transport delay.
//! - Quality: turbidity ~0.3 NTU (GB 5749 <= 1), rising a little with flow; pH ~7.55
//!   (6.5-8.5); conductivity ~620 uS/cm (TDS ~ 0.5-0.7 x, well under 1000 mg/L);
//!   water temperature of a groundwater supply, 8-20 °C over the year with a small
//!   diurnal swing.
//! - Meter batteries: Li-SOCl2 at ~3.6 V draining ~0.03 V/year; 2% of meters are old
//!   and below the 3.40 V low-battery alarm.
//!
//! - District metered areas: each village is one, fed through its own inlet (bulk) meter
//!   ([`BulkMeter`]). Background leakage is shared among the villages by their households'
//!   demand (the mains are as long as the village is big); a burst in a village's network
//!   (the `leak` fault on its inlet) adds 0.8 x the village's mean inflow, scaled with
//!   pressure to the power 0.5 like a burst main. A burst main at the station (the `leak`
//!   fault on the pump station) is on the trunk main, upstream of every inlet.
//! - Ground truth: per village the simulator keeps the true volumes ([`DmaVolumes`]):
//!   input through the inlet, water delivered to households, water their meters counted,
//!   leakage and the part of it from a burst, so a report can be checked against them.
//!
//! Invariants: water is conserved (pump inflow = outflow + storage change + overflow;
//! outflow = the villages' inputs + trunk bursts); the households' meters see exactly what
//! the households drew; a village's inlet sees its households' draw and its network's
//! leakage; leakage and bursts are seen by no household meter.

use std::collections::VecDeque;

use firmware::prng::Rng;
use firmware::pump_station::{PumpStation, StationConfig, StationInputs};
use firmware::water_meter::{MeterInputs, WaterMeter};
use firmware::water_quality::{QualityInputs, WaterQuality};
use protocol::Timestamp;

use crate::clock::{day_of_year, local_hours};

/// Household demand profile: mean of each local hour, relative to the daily mean (sums
/// to 24).
/// 02:00-04:00 is so quiet that legitimate use is ~30% of the minimum night flow and
/// leakage the rest (DOMAIN.md: night use is 10-30% of it).
const DEMAND: [f32; 24] = [
    0.3, 0.12, 0.05, 0.05, 0.12, 0.5, 1.3, 2.0, 1.7, 1.2, 1.0, 1.2, 1.4, 1.0, 0.8, 0.8, 0.9, 1.3, 1.8, 2.0, 1.6, 1.1,
    1.0, 0.76,
];

/// Value of an hourly profile at local hour `h`, each entry centred on its half hour.
pub(crate) fn profile(table: &[f32; 24], h: f64) -> f32 {
    let x = (h - 0.5).rem_euclid(24.0);
    let i = x.floor() as usize % 24;
    let f = (x - x.floor()) as f32;
    table[i] * (1.0 - f) + table[(i + 1) % 24] * f
}

/// Ornstein-Uhlenbeck wander: mean 0, standard deviation `sd`, correlation time `tau_s`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Wander {
    x: f32,
}

impl Wander {
    pub(crate) fn step(&mut self, rng: &mut Rng, sd: f32, tau_s: f32, dt_s: f32) -> f32 {
        let a = (-dt_s / tau_s).exp();
        self.x = self.x * a + sd * (1.0 - a * a).sqrt() * rng.normal();
        self.x
    }
}

const G_MPA_PER_M: f32 = 0.00981;
const TANK_HEIGHT_M: f32 = 4.0;
const OVERFLOW_M: f32 = 3.8;
const HIGH_SWITCH_M: f32 = 3.7;
const START_M: f32 = 1.5;
const STOP_M: f32 = 3.2;
const TOWER_M: f32 = 28.0;
const CL_TARGET: f32 = 0.65;
const CL_MIX_S: f32 = 600.0;
const CL_DECAY_PER_H: f32 = 0.08;
const PIPE_HOURS: f32 = 4.0;
const PARCELS: usize = 240;
const MOTOR_START_S: f32 = 2.0;

/// One household and its meter.
#[derive(Debug, Clone)]
pub(crate) struct Household {
    pub(crate) meter: WaterMeter,
    rng: Rng,
    /// Mean use (L/day).
    daily_l: f32,
    /// Litres of the current use events still to draw.
    pending_l: f32,
    /// Draw rate of the current event (L/s).
    draw_l_per_s: f32,
    /// Household-side leak after the meter (L/h), from the `leak` fault.
    pub(crate) leak_l_per_h: f32,
    /// The meter's impeller is stuck (`stuck_sensor`): water passes uncounted.
    pub(crate) stuck: bool,
    battery_v: f32,
    /// Litres wanted during the current step.
    want_l: f32,
}

impl Household {
    fn new(seed: u64, stream: u64) -> Household {
        let mut rng = Rng::new(seed, stream);
        let people = match rng.below(10) {
            0 => 2.0,
            1..=7 => 3.0,
            _ => 4.0,
        };
        let daily_l = people * rng.range(80.0, 120.0);
        let total_l = rng.range(20_000.0, 800_000.0) as u32;
        let battery_v = if rng.chance(0.02) { rng.range(3.30, 3.38) } else { rng.range(3.58, 3.66) };
        Household {
            meter: WaterMeter::new(total_l),
            rng,
            daily_l,
            pending_l: 0.0,
            draw_l_per_s: 0.0,
            leak_l_per_h: 0.0,
            stuck: false,
            battery_v,
            want_l: 0.0,
        }
    }

    /// Decides how much water the household wants over `dt_s` at demand multiplier `m`.
    fn want(&mut self, m: f32, dt_s: f32) -> f32 {
        // Events: 70% small (tap, flush: 3-10 L), 20% medium (10-30 L), 10% large (shower,
        // laundry: 30-80 L); mean ~14 L, so ~21 events a day for 300 L.
        const MEAN_EVENT_L: f32 = 14.0;
        let rate_per_s = self.daily_l * m / 86_400.0 / MEAN_EVENT_L;
        if self.rng.chance(rate_per_s * dt_s) {
            let (lo, hi) = match self.rng.below(10) {
                0..=6 => (3.0, 10.0),
                7 | 8 => (10.0, 30.0),
                _ => (30.0, 80.0),
            };
            self.pending_l += self.rng.range(lo, hi);
            self.draw_l_per_s = self.draw_l_per_s.max(self.rng.range(4.0, 12.0) / 60.0);
        }
        let draw = self.pending_l.min(self.draw_l_per_s * dt_s);
        self.pending_l -= draw;
        if self.pending_l <= 0.0 {
            self.draw_l_per_s = 0.0;
        }
        let opening = self.meter.valve_opening();
        self.want_l = (draw + self.leak_l_per_h * dt_s / 3600.0) * opening;
        self.want_l
    }

    /// Delivers `supply` (0..=1) of what was wanted and lets the meter see it.
    fn draw(&mut self, supply: f32, dt_s: f32) {
        let litres = self.want_l * supply;
        let flow = if self.stuck || dt_s <= 0.0 { 0.0 } else { litres * 3600.0 / dt_s };
        // ~0.03 V/year.
        self.battery_v -= 1.0e-9 * dt_s;
        // Converter noise of a few mV (uniform: cheaper than a normal draw per meter per step).
        let battery_v = self.battery_v + self.rng.range(-0.003, 0.003);
        self.meter.sense(&MeterInputs { flow_l_per_h: flow, battery_v, tamper: false }, dt_s);
    }
}

/// The true volumes of one district metered area since the start (litres, f64 so that
/// nothing rounds away over a week).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DmaVolumes {
    /// Through the inlet: everything the village's network took in.
    pub input_l: f64,
    /// Delivered to the households (household-side leaks included: they pass the meters).
    pub consumed_l: f64,
    /// Counted by the household meters (less than delivered by drips under their starting
    /// flow and stuck impellers).
    pub metered_l: f64,
    /// Lost from the village's network (background leakage and bursts).
    pub leaked_l: f64,
    /// Of `leaked_l`, what a burst (the `leak` fault on the inlet) lost.
    pub burst_l: f64,
}

/// The inlet (bulk) meter of a district metered area: a litre totaliser that rolls over
/// at 2³², the flow and the pressure at the inlet.
///
/// # Register map (input table, 0-based; profile `vt-sim-bulk-meter`)
///
/// | address | type | order | unit | meaning |
/// |---|---|---|---|---|
/// | 0-1 | u32 | ABCD | L | forward volume total (rolls over at 2³²) |
/// | 2-3 | f32 | ABCD | m³/h | flow |
/// | 4-5 | f32 | ABCD | MPa | pressure at the inlet |
#[derive(Debug, Clone, Default)]
pub(crate) struct BulkMeter {
    total_l: u32,
    carry_l: f64,
    flow_m3h: f32,
    pressure_mpa: f32,
    /// The measuring tube is blocked (`stuck_sensor`): it counts nothing.
    pub(crate) stuck: bool,
}

impl BulkMeter {
    fn sense(&mut self, litres: f64, dt_s: f32, pressure_mpa: f32) {
        let litres = if self.stuck { 0.0 } else { litres.max(0.0) };
        self.carry_l += litres;
        let whole = (self.carry_l + 1e-9).floor();
        self.total_l = self.total_l.wrapping_add(whole.min(f64::from(u32::MAX)) as u32);
        self.carry_l = (self.carry_l - whole).max(0.0);
        self.flow_m3h = if dt_s > 0.0 { (litres / 1000.0 * 3600.0 / f64::from(dt_s)) as f32 } else { 0.0 };
        self.pressure_mpa = pressure_mpa;
    }
}

impl firmware::modbus::RegisterMap for BulkMeter {
    fn register(&self, table: firmware::modbus::Table, address: u16) -> Option<u16> {
        use protocol::modbus::{self as words, WordOrder};
        if table != firmware::modbus::Table::Input {
            return None;
        }
        match address {
            0..=1 => words::part(words::from_u32(self.total_l, WordOrder::Abcd), address),
            2..=3 => words::part(words::from_f32(self.flow_m3h, WordOrder::Abcd), address - 2),
            4..=5 => words::part(words::from_f32(self.pressure_mpa, WordOrder::Abcd), address - 4),
            _ => None,
        }
    }

    fn bit(&self, _table: firmware::modbus::Table, _address: u16) -> Option<bool> {
        None
    }
}

/// One village's network as a district metered area.
#[derive(Debug, Clone)]
pub(crate) struct Dma {
    /// Its share of the district's background leakage.
    share: f32,
    /// Mean inflow (m³/h), for the size of a burst.
    mean_inflow_m3h: f32,
    /// A burst in its network (the `leak` fault on its inlet).
    pub(crate) burst: bool,
    /// Inflow smoothed like the district's pressure transmitter sees it (m³/h).
    damped_m3h: f32,
    pub(crate) inlet: BulkMeter,
    pub(crate) truth: DmaVolumes,
}

/// Plug flow from the station outlet to the analyser, in parcels of equal volume.
#[derive(Debug, Clone)]
struct Pipe {
    /// (entry time ms, concentration mg/L), oldest first.
    parcels: VecDeque<(i64, f32)>,
    parcel_m3: f64,
    filling_m3: f64,
    filling_mass: f64,
}

impl Pipe {
    fn new(volume_m3: f64, mean_flow_m3h: f64, conc: f32, now_ms: i64) -> Pipe {
        let parcel_m3 = (volume_m3 / PARCELS as f64).max(1e-6);
        let parcel_ms = parcel_m3 / mean_flow_m3h.max(1e-9) * 3_600_000.0;
        let parcels = (0..PARCELS).map(|i| (now_ms - ((PARCELS - i) as f64 * parcel_ms) as i64, conc)).collect();
        Pipe { parcels, parcel_m3, filling_m3: 0.0, filling_mass: 0.0 }
    }

    fn push(&mut self, mut volume_m3: f64, conc: f32, now_ms: i64) {
        while self.filling_m3 + volume_m3 >= self.parcel_m3 {
            let take = self.parcel_m3 - self.filling_m3;
            let mass = self.filling_mass + take * f64::from(conc);
            self.parcels.push_back((now_ms, (mass / self.parcel_m3) as f32));
            if self.parcels.len() > PARCELS {
                self.parcels.pop_front();
            }
            volume_m3 -= take;
            self.filling_m3 = 0.0;
            self.filling_mass = 0.0;
        }
        self.filling_m3 += volume_m3;
        self.filling_mass += volume_m3 * f64::from(conc);
    }

    /// Free chlorine of the water now arriving at the far end.
    fn arriving(&self, now_ms: i64) -> f32 {
        let Some(&(entered, conc)) = self.parcels.front() else { return 0.0 };
        let age_h = (now_ms - entered).max(0) as f32 / 3_600_000.0;
        conc * (-CL_DECAY_PER_H * age_h).exp()
    }
}

/// Physical faults and frozen sensors of a district.
#[derive(Debug, Clone, Default)]
pub(crate) struct DistrictFaults {
    /// Motor protection relay tripped.
    pub(crate) trip: bool,
    /// A technician resets the station after the next scan.
    pub(crate) reset_pending: bool,
    /// Burst main.
    pub(crate) burst: bool,
    /// Dosing failed, injected on the station (bit 0) and/or the analyser (bit 1).
    pub(crate) dosing_failed: u8,
    /// Level transmitter frozen at this reading.
    pub(crate) level_stuck: Option<f32>,
    /// Analyser probes frozen at these readings.
    pub(crate) analyser_stuck: Option<QualityInputs>,
}

/// A supply district: waterworks, network, households.
#[derive(Debug, Clone)]
pub(crate) struct District {
    pub(crate) households: Vec<Household>,
    pub(crate) station: PumpStation,
    pub(crate) analyser: WaterQuality,
    pub(crate) faults: DistrictFaults,
    rng: Rng,
    quality_rng: Rng,
    tank_area_m2: f32,
    level_m: f32,
    mean_inflow_m3h: f32,
    pump_rated_m3h: f32,
    rated_current_a: f32,
    background_m3h: f32,
    burst_m3h: f32,
    friction: f32,
    design_mpa: f32,
    pressure_mpa: f32,
    /// Outflow smoothed for the pressure transmitter (m³/h).
    damped_m3h: f32,
    motor_running: bool,
    motor_starting_s: f32,
    chlorine_out: f32,
    pipe: Pipe,
    ph: Wander,
    conductivity: Wander,
    cl_target: Wander,
    pub(crate) last_quality: QualityInputs,
    /// Last outflow to the district (m³/h), for tests and diagnostics.
    pub(crate) outflow_m3h: f32,
    /// It rains (set by the world every step).
    pub(crate) raining: bool,
    /// 0 dry .. 1 rain has fully set in (an hour's time constant).
    rain_blend: f32,
    /// Its villages as district metered areas (none until [`District::set_dmas`]).
    pub(crate) dmas: Vec<Dma>,
    /// Household -> its DMA.
    dma_of: Vec<usize>,
}

impl District {
    pub(crate) fn new(seed: u64, index: usize, households: usize, now_ms: i64) -> District {
        let base = 0x1000_0000_u64 * (index as u64 + 1);
        let households: Vec<Household> = (0..households).map(|h| Household::new(seed, base + h as u64)).collect();
        let mut rng = Rng::new(seed, base + 0x0F00_0000);
        let consumption_m3h = households.iter().map(|h| h.daily_l).sum::<f32>().max(100.0) / 1000.0 / 24.0;
        // Leakage is 10% of inflow: L = 0.1 (C + L).
        let background_m3h = consumption_m3h / 9.0;
        let mean_inflow_m3h = consumption_m3h + background_m3h;
        let pump_rated_m3h = 4.0 * mean_inflow_m3h;
        let tank_area_m2 = 3.6 * mean_inflow_m3h / (STOP_M - START_M);
        // Input power for 60 m of lift at 55% efficiency; 380 V three-phase, pf 0.82.
        let kw = 9.81 * pump_rated_m3h / 3600.0 * 60.0 / 0.55;
        let rated_current_a = (kw * 1000.0 / (3f32.sqrt() * 380.0 * 0.82)).max(1.0);
        let friction = 0.06 / (3.0 * mean_inflow_m3h).powi(2);
        let design_mpa = G_MPA_PER_M * (TOWER_M + (START_M + STOP_M) / 2.0) - friction * mean_inflow_m3h.powi(2);
        let station = PumpStation::new(StationConfig {
            rated_current_a,
            rated_flow_m3h: pump_rated_m3h,
            design_outflow_m3h: mean_inflow_m3h,
            start_setpoint_m: START_M,
            stop_setpoint_m: STOP_M,
        });
        let level_m = rng.range(START_M + 0.2, STOP_M - 0.2);
        let pipe = Pipe::new(f64::from(PIPE_HOURS * mean_inflow_m3h), f64::from(mean_inflow_m3h), CL_TARGET, now_ms);
        District {
            households,
            station,
            analyser: WaterQuality::new(),
            faults: DistrictFaults::default(),
            quality_rng: Rng::new(seed, base + 0x0F00_0001),
            rng,
            tank_area_m2,
            level_m,
            mean_inflow_m3h,
            pump_rated_m3h,
            rated_current_a,
            background_m3h,
            burst_m3h: 0.8 * mean_inflow_m3h,
            friction,
            design_mpa,
            pressure_mpa: design_mpa,
            damped_m3h: mean_inflow_m3h,
            motor_running: false,
            motor_starting_s: 0.0,
            chlorine_out: CL_TARGET,
            pipe,
            ph: Wander::default(),
            conductivity: Wander::default(),
            cl_target: Wander::default(),
            last_quality: QualityInputs {
                chlorine_mg_l: 0.0,
                turbidity_ntu: 0.3,
                ph: 7.55,
                conductivity_us_cm: 620.0,
                temperature_c: 14.0,
                sensor_ok: true,
            },
            outflow_m3h: mean_inflow_m3h,
            raining: false,
            rain_blend: 0.0,
            dmas: Vec::new(),
            dma_of: Vec::new(),
        }
    }

    /// Splits the district into district metered areas: `dma_of[h]` is household `h`'s.
    /// Background leakage is shared by demand; the physics of the whole stays as it was.
    pub(crate) fn set_dmas(&mut self, dma_of: Vec<usize>) {
        // usize::MAX: a household in no DMA.
        let n = dma_of.iter().copied().filter(|&d| d != usize::MAX).max().map_or(0, |m| m + 1);
        let total: f32 = self.households.iter().map(|h| h.daily_l).sum::<f32>().max(1e-6);
        self.dmas = (0..n)
            .map(|d| {
                let share = (0..dma_of.len())
                    .filter(|&h| dma_of[h] == d)
                    .filter_map(|h| self.households.get(h))
                    .map(|h| h.daily_l)
                    .sum::<f32>()
                    / total;
                Dma {
                    share,
                    mean_inflow_m3h: self.mean_inflow_m3h * share,
                    burst: false,
                    damped_m3h: self.mean_inflow_m3h * share,
                    inlet: BulkMeter::default(),
                    truth: DmaVolumes::default(),
                }
            })
            .collect();
        self.dma_of = dma_of;
    }

    /// True tank level (m).
    pub(crate) fn level_m(&self) -> f32 {
        self.level_m
    }

    /// Advances the district by `dt_ms` ending at `now` (the step's end).
    pub(crate) fn step(&mut self, now: Timestamp, dt_ms: i64) {
        let dt_s = dt_ms as f32 / 1000.0;
        if dt_s <= 0.0 {
            return;
        }
        let hour = local_hours(now);
        let goal = if self.raining { 1.0 } else { 0.0 };
        self.rain_blend += (goal - self.rain_blend) * (1.0 - (-dt_s / 3600.0).exp());
        // Rain: no garden watering or outdoor washing (brief-level assumption, check).
        let m = profile(&DEMAND, hour) * (1.0 - 0.15 * self.rain_blend);

        // What everyone wants, and what the network loses.
        let mut dma_want_l = vec![0.0f32; self.dmas.len()];
        let mut want_l = 0.0f32;
        for (i, h) in self.households.iter_mut().enumerate() {
            let w = h.want(m, dt_s);
            want_l += w;
            if let Some(d) = self.dma_of.get(i).and_then(|&d| dma_want_l.get_mut(d)) {
                *d += w;
            }
        }
        let p_ratio = (self.pressure_mpa / self.design_mpa).max(0.0);
        let background = self.background_m3h * p_ratio.powf(1.5);
        let burst = if self.faults.burst { self.burst_m3h * p_ratio.sqrt() } else { 0.0 };
        let dma_burst: Vec<f32> =
            self.dmas.iter().map(|d| if d.burst { 0.8 * d.mean_inflow_m3h * p_ratio.sqrt() } else { 0.0 }).collect();
        let dma_bursts: f32 = dma_burst.iter().sum();
        let want_m3 = want_l / 1000.0 + (background + burst + dma_bursts) * dt_s / 3600.0;

        // The pump: contactor closed by the PLC, opened by the protection relay.
        let pump_m3h = self.run_pump(dt_s);
        let pump_m3 = pump_m3h * dt_s / 3600.0;

        // The tank supplies what it holds; an empty tank rations everyone.
        let available_m3 = self.level_m * self.tank_area_m2 + pump_m3;
        let supply = if want_m3 > available_m3 { available_m3 / want_m3 } else { 1.0 };
        let out_m3 = want_m3 * supply;
        self.level_m = (self.level_m + (pump_m3 - out_m3) / self.tank_area_m2).clamp(0.0, OVERFLOW_M);
        let out_m3h = out_m3 * 3600.0 / dt_s;
        self.outflow_m3h = out_m3h;
        let mut metered = vec![0u64; self.dmas.len()];
        for (i, h) in self.households.iter_mut().enumerate() {
            let before = h.meter.forward_litres();
            h.draw(supply, dt_s);
            if let Some(d) = self.dma_of.get(i).and_then(|&d| metered.get_mut(d)) {
                *d += u64::from(h.meter.forward_litres().wrapping_sub(before));
            }
        }
        // Pressure at the district inlet: static head less friction; a dry tank drains the main.
        let static_mpa = G_MPA_PER_M * (TOWER_M + self.level_m);
        self.damped_m3h += (out_m3h - self.damped_m3h) * (1.0 - (-dt_s / 120.0).exp());
        let mut p = (static_mpa - self.friction * self.damped_m3h * self.damped_m3h).max(0.0);
        if self.level_m < 0.05 {
            p *= self.level_m / 0.05;
        }
        self.pressure_mpa = p;

        // Each village's inlet sees its households' draw and its network's losses.
        let inlet_mpa = self.pressure_mpa;
        for (d, dma) in self.dmas.iter_mut().enumerate() {
            let consumed_l = f64::from(dma_want_l[d]) * f64::from(supply);
            let lost_m3h = background * dma.share + dma_burst[d];
            let leaked_l = f64::from(lost_m3h) * f64::from(dt_s) / 3.6 * f64::from(supply);
            let burst_l = f64::from(dma_burst[d]) * f64::from(dt_s) / 3.6 * f64::from(supply);
            let t = &mut dma.truth;
            t.consumed_l += consumed_l;
            t.metered_l += metered[d] as f64;
            t.leaked_l += leaked_l;
            t.burst_l += burst_l;
            t.input_l += consumed_l + leaked_l;
            let q = ((consumed_l + leaked_l) / 1000.0 * 3600.0 / f64::from(dt_s)) as f32;
            dma.damped_m3h += (q - dma.damped_m3h) * (1.0 - (-dt_s / 120.0).exp());
            let rel = dma.damped_m3h / dma.mean_inflow_m3h.max(1e-6);
            // A little friction in the village's own main (0.036 MPa at three times its
            // mean flow), on the flow smoothed as for the district's pressure.
            dma.inlet.sense(consumed_l + leaked_l, dt_s, (inlet_mpa - 0.004 * rel * rel).max(0.0));
        }

        // Chlorine at the outlet, then down the network.
        let dosing_runs = self.station.dosing_output() && self.faults.dosing_failed == 0;
        let target = CL_TARGET + self.cl_target.step(&mut self.rng, 0.03, 3.0 * 3600.0, dt_s);
        let goal = if dosing_runs { target } else { 0.0 };
        self.chlorine_out += (goal - self.chlorine_out) * (1.0 - (-dt_s / CL_MIX_S).exp());
        self.pipe.push(f64::from(out_m3), self.chlorine_out, now.0);

        self.scan_station(pump_m3h, out_m3h, dosing_runs, dt_s);
        self.sense_quality(now, out_m3h, dt_s);
    }

    fn run_pump(&mut self, dt_s: f32) -> f32 {
        if self.station.run_output() && !self.faults.trip {
            if !self.motor_running {
                self.motor_starting_s += dt_s;
                self.motor_running = self.motor_starting_s >= MOTOR_START_S;
            }
        } else {
            self.motor_running = false;
            self.motor_starting_s = 0.0;
        }
        if self.motor_running {
            // A little less flow as the lift grows with the tank level.
            self.pump_rated_m3h * (1.02 - 0.02 * self.level_m / TANK_HEIGHT_M) * (1.0 + 0.01 * self.rng.normal())
        } else {
            0.0
        }
    }

    fn scan_station(&mut self, pump_m3h: f32, out_m3h: f32, dosing_runs: bool, dt_s: f32) {
        let level = self.faults.level_stuck.unwrap_or(self.level_m + 0.003 * self.rng.normal());
        let current = if self.motor_running {
            self.rated_current_a * (0.86 + 0.01 * self.rng.normal())
        } else if self.motor_starting_s > 0.0 {
            2.5 * self.rated_current_a
        } else {
            0.0
        };
        let chlorine = (self.chlorine_out + 0.01 * self.rng.normal()).max(0.0);
        let inputs = StationInputs {
            tank_level_m: level,
            high_level_switch: self.level_m >= HIGH_SWITCH_M,
            run_feedback: self.motor_running,
            motor_current_a: current,
            pump_flow_m3h: pump_m3h,
            outlet_flow_m3h: out_m3h * (1.0 + 0.005 * self.rng.normal()),
            outlet_pressure_mpa: self.pressure_mpa + 0.002 * self.rng.normal(),
            outlet_chlorine_mg_l: chlorine,
            trip: self.faults.trip,
            dosing_feedback: dosing_runs,
        };
        self.station.update(&inputs, dt_s);
        if self.faults.reset_pending && !self.faults.trip {
            self.station.reset_faults();
            self.faults.reset_pending = false;
        }
    }

    fn sense_quality(&mut self, now: Timestamp, out_m3h: f32, dt_s: f32) {
        let r = &mut self.quality_rng;
        let doy = day_of_year(now) as f32;
        let hour = local_hours(now) as f32;
        let season = (std::f32::consts::TAU * (doy - 125.0) / 365.25).sin();
        let diurnal = (std::f32::consts::TAU * (hour - 9.0) / 24.0).sin();
        let inputs = QualityInputs {
            chlorine_mg_l: self.pipe.arriving(now.0) + 0.008 * r.normal(),
            turbidity_ntu: (0.22 + 0.08 * out_m3h / self.mean_inflow_m3h + 0.1 * self.rain_blend + 0.02 * r.normal())
                .max(0.05),
            ph: 7.55 + self.ph.step(r, 0.05, 6.0 * 3600.0, dt_s) + 0.01 * r.normal(),
            conductivity_us_cm: 620.0 + self.conductivity.step(r, 10.0, 12.0 * 3600.0, dt_s) + 2.0 * r.normal(),
            temperature_c: 14.0 + 6.0 * season + 0.4 * diurnal + 0.03 * r.normal(),
            sensor_ok: true,
        };
        self.last_quality = inputs;
        let inputs = self.faults.analyser_stuck.unwrap_or(inputs);
        self.analyser.sense(&inputs, dt_s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_717_171_200_000; // 2024-06-01T00:00+08:00

    fn run(d: &mut District, from: i64, hours: f32, step_ms: i64) -> i64 {
        let steps = (hours * 3_600_000.0) as i64 / step_ms;
        let mut t = from;
        for _ in 0..steps {
            t += step_ms;
            d.step(Timestamp(t), step_ms);
        }
        t
    }

    #[test]
    fn the_demand_profile_peaks_morning_and_evening_and_averages_one() {
        let mean: f32 = DEMAND.iter().sum::<f32>() / 24.0;
        assert!((mean - 1.0).abs() < 1e-6);
        assert!(profile(&DEMAND, 7.5) > 1.8 && profile(&DEMAND, 19.5) > 1.8);
        assert!(profile(&DEMAND, 3.0) < 0.2);
    }

    #[test]
    fn households_use_80_to_120_litres_per_person_a_day() {
        let mut d = District::new(7, 0, 40, T0);
        let before: u64 = d.households.iter().map(|h| u64::from(h.meter.forward_litres())).sum();
        run(&mut d, T0, 48.0, 30_000);
        let after: u64 = d.households.iter().map(|h| u64::from(h.meter.forward_litres())).sum();
        let per_household_day = (after - before) as f32 / 40.0 / 2.0;
        assert!((200.0..400.0).contains(&per_household_day), "{per_household_day} L/household/day");
    }

    #[test]
    fn the_pump_cycles_a_few_times_a_day_without_long_runs() {
        let mut d = District::new(7, 0, 50, T0);
        let mut t = T0;
        let (mut starts, mut was_running, mut longest_min) = (0, false, 0.0_f32);
        let mut run_min = 0.0;
        for _ in 0..(2 * 24 * 120) {
            t += 30_000;
            d.step(Timestamp(t), 30_000);
            let running = d.station.run_output();
            if running && !was_running {
                starts += 1;
                run_min = 0.0;
            }
            if running {
                run_min += 0.5;
                longest_min = longest_min.max(run_min);
            }
            was_running = running;
            assert!(d.level_m() > 0.5 && d.level_m() < 3.7, "level {}", d.level_m());
        }
        assert!((4..=16).contains(&starts), "{starts} starts in two days");
        assert!(longest_min < 120.0, "longest run {longest_min} min");
    }

    #[test]
    fn leakage_is_about_a_tenth_of_inflow() {
        let mut d = District::new(7, 0, 50, T0);
        let metered0: u64 = d.households.iter().map(|h| u64::from(h.meter.forward_litres())).sum();
        let out0 = d.station.outlet_total_litres();
        run(&mut d, T0, 72.0, 30_000);
        let metered: u64 = d.households.iter().map(|h| u64::from(h.meter.forward_litres())).sum::<u64>() - metered0;
        let inflow = u64::from(d.station.outlet_total_litres().wrapping_sub(out0));
        let loss = 1.0 - metered as f64 / inflow as f64;
        assert!((0.06..0.16).contains(&loss), "loss {loss:.3}");
    }

    #[test]
    fn residual_chlorine_dips_at_night_at_the_analyser() {
        let mut d = District::new(7, 0, 50, T0);
        let t = run(&mut d, T0, 24.0 + 4.0, 30_000); // 04:00 next day
        let night = d.analyser.chlorine_mg_l();
        run(&mut d, t, 12.0, 30_000); // 16:00
        let day = d.analyser.chlorine_mg_l();
        assert!(night < day - 0.05, "night {night} day {day}");
        assert!((0.15..0.45).contains(&night) && (0.3..0.65).contains(&day), "night {night} day {day}");
    }
}
