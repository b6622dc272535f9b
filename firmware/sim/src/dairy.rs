//! Physics of the dairy farm: barn climate and each cow's body, behaviour and milk.
//!
//! Every cow has her own baseline, so rules that compare a cow with herself have
//! something to learn (DOMAIN.md, Dairy). Sources (DOMAIN.md unless marked; "brief" for
//! figures the brief gave, to check):
//! - Body temperature ~38.6 °C per cow ±0.15 (brief), a diurnal rhythm of ±0.25 °C peaking
//!   in the evening, and drinking dips of 0.4-1.2 °C that recover within 1-2 h (DOMAIN.md:
//!   "Boluses dip for 1-2 h after drinking"), 4-6 times a day, mostly after milking.
//! - Fever (fault): +1.0-1.5 °C over two hours, sustained (>= 0.8 °C above the cow's own
//!   mean is what caught mastitis and pneumonia); rumination x0.6, activity x0.7, milk
//!   conductivity +15% (mastitis: >= 10-15% above her mean), yield x0.85.
//! - Activity: 60-160 steps/h per cow on average (brief-level assumption, check), peaks
//!   at milking and feeding; estrus (fault) multiplies it by 2.8-3.6 for 8-15 h
//!   (DOMAIN.md: ~2.8-fold for 8-9 h; commercial collars ~360% for 14-15 h).
//! - Rumination 430-530 min/day per cow (healthy 400-550), mostly at night and at rest.
//! - Milking at 06:00 and 17:00 (brief); a parlour takes the herd in order, ~25 s per
//!   cow; 24-36 kg/day per cow (Holstein, check), split by the 13 h and 11 h intervals;
//!   milk conductivity 4.6-6.5 mS/cm per cow (herd means vary 4.6-6.5).
//! - Barn: outdoor climate of the North China Plain (Zhengzhou: January ~0.5 °C, July
//!   ~27.5 °C mean; check) plus 3 °C of animal heat, ±4 °C diurnal peaking at 15:00,
//!   relative humidity anti-correlated (lowest at 15:00). Heat wave (fault): the barn
//!   moves within an hour or so to 29-36 °C at 62-78% RH, THI 80-88 (severe, NRC).
//!   THI above 72 warms the cows and cuts rumination and yield a little.

use firmware::barn_climate::{BarnClimate, ClimateInputs, thi};
use firmware::collar_hub::{CollarHub, CollarReading};
use firmware::prng::Rng;
use protocol::Timestamp;

use crate::clock::{DAY_MS, day_of_year, local_day, local_hours, local_midnight};
use crate::water::{Wander, profile};

/// Activity profile by local hour (relative; normalised at use).
const ACTIVITY: [f32; 24] = [
    0.4, 0.35, 0.3, 0.3, 0.5, 1.4, 2.2, 2.0, 1.5, 1.2, 1.0, 0.9, 1.0, 0.9, 0.9, 1.1, 1.6, 2.1, 1.9, 1.3, 0.9, 0.7, 0.5,
    0.45,
];
/// Share of the day's rumination in each local hour (relative; normalised at use).
const RUMINATION: [f32; 24] = [
    1.5, 1.6, 1.6, 1.5, 1.2, 0.6, 0.3, 0.4, 0.7, 1.0, 1.1, 1.0, 1.0, 1.1, 1.1, 0.9, 0.5, 0.3, 0.4, 0.7, 1.0, 1.2, 1.4,
    1.5,
];
/// Local milking times (hours).
const MILKINGS: [f64; 2] = [6.0, 17.0];
/// Share of the day's yield at each milking (13 h and 11 h intervals).
const MILK_SHARE: [f32; 2] = [0.54, 0.46];

fn mean(table: &[f32; 24]) -> f32 {
    table.iter().sum::<f32>() / 24.0
}

/// A fever episode.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fever {
    pub(crate) onset_ms: i64,
    pub(crate) delta_c: f32,
}

/// An estrus episode.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Estrus {
    pub(crate) end_ms: i64,
    pub(crate) factor: f32,
}

/// One cow.
#[derive(Debug, Clone)]
pub(crate) struct Cow {
    pub(crate) eartag: u32,
    pub(crate) hub: usize,
    pub(crate) slot: usize,
    rng: Rng,
    base_temp_c: f32,
    steps_per_h: f32,
    rumination_min_day: f32,
    yield_kg_day: f32,
    conductivity: f32,
    /// Parlour order offset from the start of a milking (ms).
    parlour_ms: i64,
    dip_c: f32,
    step_carry: f32,
    pub(crate) fever: Option<Fever>,
    pub(crate) estrus: Option<Estrus>,
}

impl Cow {
    fn new(seed: u64, eartag: u32, hub: usize, slot: usize, order: usize) -> Cow {
        let mut rng = Rng::new(seed, 0xC0_0000_0000 + u64::from(eartag));
        Cow {
            eartag,
            hub,
            slot,
            base_temp_c: rng.gauss(38.6, 0.15),
            steps_per_h: rng.range(60.0, 160.0),
            rumination_min_day: rng.range(430.0, 530.0),
            yield_kg_day: rng.range(24.0, 36.0),
            conductivity: rng.range(4.6, 6.5),
            parlour_ms: order as i64 * 25_000,
            dip_c: 0.0,
            step_carry: 0.0,
            fever: None,
            estrus: None,
            rng,
        }
    }

    fn fever_c(&self, now_ms: i64) -> f32 {
        self.fever.map_or(0.0, |f| f.delta_c * ((now_ms - f.onset_ms) as f32 / 7_200_000.0).clamp(0.0, 1.0))
    }

    fn estrus_factor(&self, now_ms: i64) -> f32 {
        self.estrus.filter(|e| now_ms < e.end_ms).map_or(1.0, |e| e.factor)
    }

    /// The collar's report over a step of `dt_s` ending at `now`, in a barn at `thi`.
    fn collar(&mut self, now: Timestamp, dt_s: f32, thi: f32) -> CollarReading {
        let h = local_hours(now);
        let heat = ((thi - 72.0) / 10.0).clamp(0.0, 1.0); // 0 below THI 72, 1 at 82
        let fever = self.fever.is_some();
        // Drinking: ~5 bouts a day, three times as likely in the two hours after milking.
        let after_milking = MILKINGS.iter().any(|&m| (0.0..2.0).contains(&(h - m)));
        let rate_per_s = 5.0 / 86_400.0 * if after_milking { 3.0 } else { 0.6 };
        if self.rng.chance(rate_per_s * dt_s) {
            self.dip_c = self.dip_c.min(-self.rng.range(0.4, 1.2));
        }
        self.dip_c *= (-dt_s / 1500.0).exp();
        let diurnal = 0.25 * (std::f32::consts::TAU * (h as f32 - 18.0) / 24.0).cos();
        let temp =
            self.base_temp_c + diurnal + self.dip_c + self.fever_c(now.0) + 0.4 * heat + 0.05 * self.rng.normal();

        let activity_factor = self.estrus_factor(now.0) * if fever { 0.7 } else { 1.0 } * (1.0 - 0.1 * heat);
        let rate = self.steps_per_h * profile(&ACTIVITY, h) / mean(&ACTIVITY) * activity_factor;
        self.step_carry += (rate * dt_s / 3600.0 * (1.0 + 0.25 * self.rng.normal())).max(0.0);
        let steps = self.step_carry.floor();
        self.step_carry -= steps;

        let in_estrus = self.estrus_factor(now.0) > 1.0;
        let rum_factor = if fever { 0.6 } else { 1.0 } * if in_estrus { 0.8 } else { 1.0 } * (1.0 - 0.15 * heat);
        let share = profile(&RUMINATION, h) / (24.0 * mean(&RUMINATION));
        let fraction = (self.rumination_min_day * share / 60.0 * rum_factor).clamp(0.0, 1.0);
        let ruminating_s = (dt_s * fraction * (1.0 + 0.1 * self.rng.normal())).clamp(0.0, dt_s);
        CollarReading { body_temperature_c: temp, steps: steps as u32, ruminating_s, battery_low: false }
    }

    /// Milkings due in `(from, to]`: (yield kg, conductivity mS/cm) of the last one.
    fn milking(&mut self, from_ms: i64, to_ms: i64, thi: f32) -> Option<(f32, f32)> {
        let mut last = None;
        for day in local_day(Timestamp(from_ms))..=local_day(Timestamp(to_ms)) {
            for (k, &hour) in MILKINGS.iter().enumerate() {
                let at = local_midnight(day) + (hour * 3_600_000.0) as i64 + self.parlour_ms;
                if from_ms < at && at <= to_ms {
                    let fever = self.fever.is_some();
                    let heat = if thi > 78.0 { 0.9 } else { 1.0 };
                    let y = self.yield_kg_day * MILK_SHARE[k] * if fever { 0.85 } else { 1.0 } * heat;
                    let c = self.conductivity * if fever { 1.15 } else { 1.0 };
                    last = Some((y * (1.0 + 0.05 * self.rng.normal()), c * (1.0 + 0.02 * self.rng.normal())));
                }
            }
        }
        last
    }

    /// The last milking before `now`, for a hub that starts with history.
    fn previous_milking(&mut self, now_ms: i64) -> (f32, f32) {
        self.milking(now_ms - DAY_MS, now_ms, 60.0).unwrap_or((self.yield_kg_day / 2.0, self.conductivity))
    }
}

/// Barn faults and frozen sensors.
#[derive(Debug, Clone, Default)]
pub(crate) struct FarmFaults {
    pub(crate) heat_wave: bool,
    pub(crate) barn_stuck: Option<ClimateInputs>,
}

/// The farm: barn, hubs, cows.
#[derive(Debug, Clone)]
pub(crate) struct Farm {
    pub(crate) barn: BarnClimate,
    pub(crate) hubs: Vec<CollarHub>,
    pub(crate) cows: Vec<Cow>,
    pub(crate) faults: FarmFaults,
    rng: Rng,
    weather_t: Wander,
    weather_rh: Wander,
    /// 0 normal .. 1 full heat wave.
    heat_blend: f32,
    pub(crate) last_climate: ClimateInputs,
    /// It rains (set by the world every step).
    pub(crate) raining: bool,
    rain_blend: f32,
}

impl Farm {
    pub(crate) fn new(seed: u64, eartags: &[u32], per_hub: usize, now_ms: i64) -> Farm {
        let mut hubs: Vec<CollarHub> = Vec::new();
        let mut cows = Vec::with_capacity(eartags.len());
        for (i, &tag) in eartags.iter().enumerate() {
            let h = i / per_hub.max(1);
            while hubs.len() <= h {
                hubs.push(CollarHub::new());
            }
            // A fresh hub has room for every cow of the plan; a refusal would be a plan bug.
            let Ok(slot) = hubs[h].attach(tag) else { continue };
            let mut cow = Cow::new(seed, tag, h, slot, i % per_hub.max(1));
            let (y, c) = cow.previous_milking(now_ms);
            let _ = hubs[h].record_milking(slot, y, c);
            cows.push(cow);
        }
        Farm {
            barn: BarnClimate::new(),
            hubs,
            cows,
            faults: FarmFaults::default(),
            rng: Rng::new(seed, 0xBA_0000),
            weather_t: Wander::default(),
            weather_rh: Wander::default(),
            heat_blend: 0.0,
            last_climate: ClimateInputs { temperature_c: 20.0, humidity_pct: 60.0, sensor_ok: true },
            raining: false,
            rain_blend: 0.0,
        }
    }

    /// Advances the farm by `dt_ms` ending at `now`.
    pub(crate) fn step(&mut self, now: Timestamp, dt_ms: i64) {
        let dt_s = dt_ms as f32 / 1000.0;
        if dt_s <= 0.0 {
            return;
        }
        let (t, rh) = self.climate(now, dt_s);
        let thi_now = thi(t, rh);
        for hub in &mut self.hubs {
            hub.tick(dt_s);
        }
        for cow in &mut self.cows {
            let reading = cow.collar(now, dt_s, thi_now);
            let milked = cow.milking(now.0 - dt_ms, now.0, thi_now);
            if let Some(hub) = self.hubs.get_mut(cow.hub) {
                let _ = hub.receive(cow.slot, &reading);
                if let Some((y, c)) = milked {
                    let _ = hub.record_milking(cow.slot, y, c);
                }
            }
        }
    }

    fn climate(&mut self, now: Timestamp, dt_s: f32) -> (f32, f32) {
        let tau = std::f32::consts::TAU;
        let h = local_hours(now) as f32;
        let doy = day_of_year(now) as f32;
        let outdoor_mean = 14.0 - 13.5 * (tau * (doy - 15.0) / 365.25).cos();
        let d = (tau * (h - 15.0) / 24.0).cos(); // 1 at 15:00
        let weather_t = self.weather_t.step(&mut self.rng, 2.0, 2.0 * 86_400.0, dt_s);
        let weather_rh = self.weather_rh.step(&mut self.rng, 6.0, 86_400.0, dt_s);
        let rain = if self.raining { 1.0 } else { 0.0 };
        self.rain_blend += (rain - self.rain_blend) * (1.0 - (-dt_s / 3600.0).exp());
        // Rain: cloud and evaporation cool the barn and damp its air (brief-level, check).
        let normal_t = outdoor_mean + 3.0 + 4.0 * d + weather_t - 3.0 * self.rain_blend;
        let normal_rh = (68.0 - 14.0 * d + weather_rh + 20.0 * self.rain_blend).min(98.0);
        let goal = if self.faults.heat_wave { 1.0 } else { 0.0 };
        self.heat_blend += (goal - self.heat_blend) * (1.0 - (-dt_s / 1800.0).exp());
        let b = self.heat_blend;
        let wave_t = 32.5 + 3.5 * d;
        let wave_rh = 70.0 - 8.0 * d;
        let t = normal_t + (wave_t.max(normal_t) - normal_t) * b;
        let rh = (normal_rh + (wave_rh - normal_rh) * b).clamp(15.0, 98.0);
        let inputs = ClimateInputs {
            temperature_c: t + 0.1 * self.rng.normal(),
            humidity_pct: (rh + 0.5 * self.rng.normal()).clamp(0.0, 100.0),
            sensor_ok: true,
        };
        self.last_climate = inputs;
        self.barn.sense(&self.faults.barn_stuck.unwrap_or(inputs));
        (t, rh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_717_171_200_000; // 2024-06-01T00:00+08:00

    fn farm(cows: usize) -> Farm {
        let tags: Vec<u32> = (0..cows as u32).map(|i| 30_000 + i).collect();
        Farm::new(11, &tags, 250, T0)
    }

    fn run(f: &mut Farm, from: i64, hours: f32) -> i64 {
        let mut t = from;
        for _ in 0..(hours * 120.0) as usize {
            t += 30_000;
            f.step(Timestamp(t), 30_000);
        }
        t
    }

    #[test]
    fn healthy_cows_ruminate_400_to_550_minutes_a_day_and_sit_near_38_6() {
        let mut f = farm(20);
        let mut t = T0;
        let mut rum = [0.0_f32; 20];
        // Sample the rolling hour every hour: the day's sum is the day's rumination.
        for _ in 0..24 {
            for _ in 0..120 {
                t += 30_000;
                f.step(Timestamp(t), 30_000);
            }
            for (i, c) in f.cows.iter().enumerate() {
                rum[i] += f.hubs[0].rumination_min(c.slot).unwrap_or(0.0);
            }
        }
        for (i, r) in rum.iter().enumerate() {
            assert!((380.0..570.0).contains(r), "cow {i}: {r} min/day");
        }
        let mean_base: f32 = f.cows.iter().map(|c| c.base_temp_c).sum::<f32>() / 20.0;
        assert!((38.4..38.8).contains(&mean_base));
    }

    #[test]
    fn fever_raises_temperature_by_a_degree_and_cuts_rumination() {
        let mut f = farm(2);
        let t = run(&mut f, T0, 10.0);
        f.cows[0].fever = Some(Fever { onset_ms: t, delta_c: 1.2 });
        let t = run(&mut f, t, 6.0);
        let _ = run(&mut f, t, 0.0);
        let hub = &f.hubs[0];
        let sick = hub.rumination_min(0).unwrap_or(0.0);
        let well = hub.rumination_min(1).unwrap_or(0.0);
        let c0 = &f.cows[0];
        assert!(c0.fever_c(t) > 1.1);
        assert!(sick < well * 1.2, "sick {sick} well {well}");
    }

    #[test]
    fn estrus_multiplies_activity_and_ends_by_itself() {
        let mut f = farm(1);
        let t = run(&mut f, T0, 10.0);
        let before = f.hubs[0].activity(0).unwrap_or(0.0);
        f.cows[0].estrus = Some(Estrus { end_ms: t + 10 * 3_600_000, factor: 3.2 });
        let t2 = run(&mut f, t, 1.0);
        let during = f.hubs[0].activity(0).unwrap_or(0.0);
        assert!(during > 2.0 * before, "before {before} during {during}");
        assert_eq!(f.cows[0].estrus_factor(t2 + 10 * 3_600_000), 1.0);
    }

    #[test]
    fn a_heat_wave_drives_the_barn_above_thi_80() {
        let mut f = farm(0);
        let t = run(&mut f, T0 - 120 * DAY_MS, 12.0); // a February day
        assert!(f.barn.thi() < 60.0, "winter THI {}", f.barn.thi());
        f.faults.heat_wave = true;
        run(&mut f, t, 6.0);
        assert!(f.barn.thi() > 80.0, "heat-wave THI {}", f.barn.thi());
    }

    #[test]
    fn two_milkings_a_day_yield_within_the_cows_range() {
        let mut f = farm(5);
        let mut t = T0;
        let mut milkings = 0;
        for _ in 0..24 * 120 {
            let y_before: Vec<u16> = (0..5).map(|s| reg(&f.hubs[0], s, 5)).collect();
            t += 30_000;
            f.step(Timestamp(t), 30_000);
            for (s, before) in y_before.iter().enumerate() {
                if reg(&f.hubs[0], s, 5) != *before {
                    milkings += 1;
                }
            }
        }
        assert_eq!(milkings, 10);
        for s in 0..5 {
            let y = f32::from(reg(&f.hubs[0], s, 5)) / 100.0;
            let c = f32::from(reg(&f.hubs[0], s, 6)) / 100.0;
            assert!((8.0..22.0).contains(&y), "yield {y}");
            assert!((4.3..7.0).contains(&c), "conductivity {c}");
        }
    }

    fn reg(hub: &CollarHub, slot: usize, offset: u16) -> u16 {
        use firmware::modbus::RegisterMap;
        let a = firmware::collar_hub::BASE + firmware::collar_hub::STRIDE * slot as u16 + offset;
        hub.register(firmware::modbus::Table::Input, a).unwrap_or(0)
    }
}
