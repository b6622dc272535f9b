//! One test per fault: each shows the fault's effect against an identical twin county
//! without it, in accelerated sim time.

use std::time::Duration;

use simulator::{County, Fault, SimError, Table};

use crate::common::{HOUR, f32_cdab, reg, small, u32_abcd, u32_dcba};

const PUMP: &str = "waterworks-pump-1";
const ANALYSER: &str = "waterworks-quality-1";
const TEN_MIN: Duration = Duration::from_secs(600);

fn twins() -> (County, County) {
    (small(), small())
}

fn cow(county: &County, i: usize) -> String {
    county.plan().device("farm-collar-hub").expect("hub").1.children[i].clone()
}

fn thi(t: f64, rh: f64) -> f64 {
    (1.8 * t + 32.0) - (0.55 - 0.0055 * rh) * (1.8 * t - 26.0)
}

fn barn_thi(county: &County) -> f64 {
    let t = f64::from(reg(county, "farm-barn-1", Table::Input, 0) as i16) / 10.0;
    let rh = f64::from(reg(county, "farm-barn-1", Table::Input, 1)) / 10.0;
    thi(t, rh)
}

#[test]
fn pump_trip_latches_and_stops_the_pump_until_cleared() {
    let county = small();
    county.inject(PUMP, Fault::PumpTrip).expect("inject");
    county.advance(Duration::from_secs(60));
    assert_ne!(reg(&county, PUMP, Table::Input, 10) & 1, 0, "trip bit in the fault word");
    assert_eq!(reg(&county, PUMP, Table::Discrete, 4), 1, "trip input");
    for _ in 0..36 {
        county.advance(TEN_MIN);
        assert_eq!(reg(&county, PUMP, Table::Discrete, 0), 0, "a tripped pump never runs");
    }
    // Six hours of daytime demand with no pump empty the tank: low level, no pressure.
    assert!(reg(&county, PUMP, Table::Input, 0) < 500, "tank level {} mm", reg(&county, PUMP, Table::Input, 0));
    assert_ne!(reg(&county, PUMP, Table::Input, 10) & (1 << 8), 0, "low-level alarm");
    assert!(reg(&county, PUMP, Table::Input, 1) < 140, "pressure {} kPa", reg(&county, PUMP, Table::Input, 1));

    county.clear(PUMP).expect("clear");
    county.advance(TEN_MIN);
    assert_eq!(reg(&county, PUMP, Table::Input, 10) & 1, 0, "the technician reset the station");
    assert_eq!(reg(&county, PUMP, Table::Discrete, 0), 1, "the pump runs again on the empty tank");
    assert!(county.faults().is_empty());
}

#[test]
fn a_burst_main_raises_inflow_and_night_flow_that_no_household_meter_sees() {
    let (burst, twin) = twins();
    burst.inject(PUMP, Fault::Leak).expect("inject");
    let out0 = u32_abcd(&twin, PUMP, 4);
    let (mut p_burst, mut p_twin) = (0u32, 0u32);
    // From 10:00 to 03:00 the next morning, sampling pressure every 10 minutes.
    for _ in 0..(17 * 6) {
        burst.advance(TEN_MIN);
        twin.advance(TEN_MIN);
        p_burst += u32::from(reg(&burst, PUMP, Table::Input, 1));
        p_twin += u32::from(reg(&twin, PUMP, Table::Input, 1));
    }
    let night_burst = u32_abcd(&burst, PUMP, 2);
    let night_twin = u32_abcd(&twin, PUMP, 2);
    assert!(night_burst > 2 * night_twin, "night flow {night_burst} L/h against {night_twin} L/h");
    // The burst is sized at 0.8 x the mean inflow at design pressure.
    let twin_out = f64::from(u32_abcd(&twin, PUMP, 4) - out0);
    let burst_out = f64::from(u32_abcd(&burst, PUMP, 4) - out0);
    assert!(burst_out > 1.4 * twin_out, "{burst_out} L left the station against {twin_out} L");
    assert!(p_burst < p_twin, "pressure is lower on average");
    for d in burst.plan().devices().filter(|d| d.model == simulator::models::WATER_METER) {
        assert_eq!(u32_dcba(&burst, &d.id, 0), u32_dcba(&twin, &d.id, 0), "{} saw the burst", d.id);
    }
}

#[test]
fn a_household_leak_flows_through_its_meter_and_raises_its_leak_alarm() {
    let (leak, twin) = twins();
    let meter = "xicun-meter-002";
    leak.inject(meter, Fault::Leak).expect("inject");
    leak.advance(5 * HOUR);
    twin.advance(5 * HOUR);
    assert_ne!(reg(&leak, meter, Table::Input, 6) & 1, 0, "leak alarm after hours of continuous flow");
    assert_eq!(reg(&twin, meter, Table::Input, 6) & 1, 0);
    assert!(reg(&leak, meter, Table::Input, 4) > 0, "flow never stops");
    assert!(u32_dcba(&leak, meter, 0) >= u32_dcba(&twin, meter, 0) + 50, "at least 10 L/h for 5 h more");
    leak.clear(meter).expect("clear");
    leak.advance(3 * HOUR);
    assert_eq!(reg(&leak, meter, Table::Input, 6) & 1, 0, "a pause in flow clears the alarm");
}

#[test]
fn chlorine_dosing_failure_reaches_the_analyser_only_after_the_transport_delay() {
    let county = small();
    let before = f32_cdab(&county, ANALYSER, 0);
    county.inject(ANALYSER, Fault::ChlorineDosingFailure).expect("inject on the analyser");
    county.advance(Duration::from_secs(45 * 60));
    let outlet = f32::from(reg(&county, PUMP, Table::Input, 9)) / 1000.0;
    assert!(outlet < 0.1, "outlet residual collapses at once: {outlet}");
    let still = f32_cdab(&county, ANALYSER, 0);
    assert!(still > 0.25 && (still - before).abs() < 0.15, "analyser still sees dosed water: {before} -> {still}");
    let mut delay_min = 45;
    while f32_cdab(&county, ANALYSER, 0) > 0.05 {
        county.advance(TEN_MIN);
        delay_min += 10;
        assert!(delay_min < 20 * 60, "the analyser never saw the failure");
    }
    assert!(delay_min >= 90, "arrived after only {delay_min} min");
    assert_ne!(reg(&county, PUMP, Table::Input, 10) & (1 << 6), 0, "the PLC flags the silent dosing pump");
    county.clear(ANALYSER).expect("clear");
    county.advance(HOUR);
    assert!(f32::from(reg(&county, PUMP, Table::Input, 9)) / 1000.0 > 0.5, "dosing resumes");
}

#[test]
fn a_stuck_analyser_repeats_its_readings_and_flags_itself_after_thirty_minutes() {
    let (stuck, twin) = twins();
    stuck.inject(ANALYSER, Fault::StuckSensor).expect("inject");
    stuck.advance(Duration::from_secs(30));
    let frozen = stuck.read(ANALYSER, Table::Input, 0, 8).expect("read");
    let mut twin_seen = std::collections::BTreeSet::new();
    for _ in 0..12 {
        stuck.advance(TEN_MIN);
        twin.advance(TEN_MIN);
        assert_eq!(stuck.read(ANALYSER, Table::Input, 0, 8).expect("read"), frozen, "zero variance");
        twin_seen.insert(twin.read(ANALYSER, Table::Input, 0, 8).expect("read"));
    }
    assert!(twin_seen.len() > 10, "the twin's readings move");
    assert_ne!(reg(&stuck, ANALYSER, Table::Input, 11) & 2, 0, "stuck bit");
    stuck.clear(ANALYSER).expect("clear");
    stuck.advance(TEN_MIN);
    assert_ne!(stuck.read(ANALYSER, Table::Input, 0, 8).expect("read"), frozen);
}

#[test]
fn a_stuck_meter_counts_nothing_while_the_household_keeps_drawing() {
    let (stuck, twin) = twins();
    let meter = "nancun-meter-003";
    stuck.inject(meter, Fault::StuckSensor).expect("inject");
    let total = u32_dcba(&stuck, meter, 0);
    stuck.advance(8 * HOUR);
    twin.advance(8 * HOUR);
    assert_eq!(u32_dcba(&stuck, meter, 0), total, "the register is frozen");
    assert_eq!(reg(&stuck, meter, Table::Input, 4), 0);
    assert!(u32_dcba(&twin, meter, 0) > total + 20, "the household used water meanwhile");
}

#[test]
fn a_stuck_level_transmitter_freezes_the_tank_level_reading() {
    let (stuck, twin) = twins();
    stuck.inject(PUMP, Fault::StuckSensor).expect("inject");
    stuck.advance(Duration::from_secs(30));
    let level = reg(&stuck, PUMP, Table::Input, 0);
    let mut twin_levels = std::collections::BTreeSet::new();
    for _ in 0..18 {
        stuck.advance(TEN_MIN);
        twin.advance(TEN_MIN);
        assert_eq!(reg(&stuck, PUMP, Table::Input, 0), level);
        twin_levels.insert(reg(&twin, PUMP, Table::Input, 0));
    }
    assert!(twin_levels.len() > 10);
}

#[test]
fn a_stuck_collar_repeats_the_cows_figures() {
    let (stuck, twin) = twins();
    let c = cow(&stuck, 1);
    stuck.inject(&c, Fault::StuckSensor).expect("inject");
    let frozen = stuck.read(&c, Table::Input, 2, 3).expect("read");
    let mut moved = std::collections::BTreeSet::new();
    for _ in 0..12 {
        stuck.advance(TEN_MIN);
        twin.advance(TEN_MIN);
        assert_eq!(stuck.read(&c, Table::Input, 2, 3).expect("read"), frozen);
        moved.insert(twin.read(&c, Table::Input, 2, 3).expect("read"));
    }
    assert!(moved.len() > 6);
}

#[test]
fn fever_raises_a_cows_temperature_cuts_rumination_and_raises_milk_conductivity() {
    let (sick, twin) = twins();
    let c = cow(&sick, 0);
    sick.inject(&c, Fault::Fever).expect("inject");
    sick.advance(4 * HOUR);
    twin.advance(4 * HOUR);
    let (mut t_sick, mut t_twin, mut r_sick, mut r_twin) = (0.0, 0.0, 0.0, 0.0);
    // 14:00 to 17:30: across the evening milking.
    for _ in 0..21 {
        sick.advance(TEN_MIN);
        twin.advance(TEN_MIN);
        t_sick += f64::from(reg(&sick, &c, Table::Input, 2) as i16) / 100.0 / 21.0;
        t_twin += f64::from(reg(&twin, &c, Table::Input, 2) as i16) / 100.0 / 21.0;
        r_sick += f64::from(reg(&sick, &c, Table::Input, 4));
        r_twin += f64::from(reg(&twin, &c, Table::Input, 4));
    }
    assert!(t_sick - t_twin > 0.8, "fever {t_sick:.2} against {t_twin:.2} °C");
    assert!(r_sick < 0.8 * r_twin, "rumination {r_sick} against {r_twin}");
    let cond_sick = reg(&sick, &c, Table::Input, 6);
    let cond_twin = reg(&twin, &c, Table::Input, 6);
    assert!(f64::from(cond_sick) > 1.08 * f64::from(cond_twin), "milk conductivity {cond_sick} against {cond_twin}");
}

#[test]
fn estrus_multiplies_activity_for_hours_and_ends_by_itself() {
    let (hot, twin) = twins();
    let c = cow(&hot, 3);
    hot.inject(&c, Fault::Estrus).expect("inject");
    hot.advance(2 * HOUR);
    twin.advance(2 * HOUR);
    let a_hot = reg(&hot, &c, Table::Input, 3);
    let a_twin = reg(&twin, &c, Table::Input, 3);
    assert!(f64::from(a_hot) > 2.2 * f64::from(a_twin), "activity {a_hot} against {a_twin}");
    assert_eq!(hot.faults(), vec![(c.clone(), Fault::Estrus)]);
    hot.advance(16 * HOUR);
    twin.advance(16 * HOUR);
    assert!(hot.faults().is_empty(), "the episode ended by itself");
    let a_hot = reg(&hot, &c, Table::Input, 3);
    let a_twin = reg(&twin, &c, Table::Input, 3);
    assert!(f64::from(a_hot) < 1.6 * f64::from(a_twin) + 20.0, "activity back to baseline: {a_hot} against {a_twin}");
}

#[test]
fn a_heat_wave_keeps_the_barn_above_thi_80_even_at_night() {
    let (hot, twin) = twins();
    hot.inject("farm-barn-1", Fault::HeatWave).expect("inject");
    hot.advance(16 * HOUR); // 02:00 the next night
    twin.advance(16 * HOUR);
    let (h, t) = (barn_thi(&hot), barn_thi(&twin));
    assert!(h > 80.0, "heat-wave THI {h:.1}");
    assert!(h > t + 4.0, "heat wave {h:.1} against {t:.1}");
}

#[test]
fn faults_that_do_not_apply_are_refused_with_a_reason() {
    let county = small();
    let err = county.inject(PUMP, Fault::Fever).expect_err("fever on a pump");
    assert!(matches!(err, SimError::NotApplicable { .. }));
    let text = err.to_string();
    assert!(text.contains("a pump station") && text.contains("cow-<eartag>"), "{text}");
    assert!(county.inject("farm-collar-hub", Fault::Fever).is_err(), "a hub is not a cow");
    assert!(county.inject("farm-collar-hub", Fault::StuckSensor).is_ok());
    assert!(county.inject("dongcun-speaker-1", Fault::StuckSensor).is_err());
    assert!(county.inject("dongcun-meter-001", Fault::HeatWave).is_err());
    assert_eq!(county.inject("no-such-device", Fault::Leak), Err(SimError::UnknownDevice("no-such-device".into())));
    assert!(county.clear("no-such-device").is_err());
    assert!("meltdown".parse::<Fault>().is_err());

    county.inject("dongcun-meter-001", Fault::Leak).expect("inject");
    county.inject("dongcun-meter-001", Fault::Leak).expect("injecting twice is harmless");
    county.inject(PUMP, Fault::ChlorineDosingFailure).expect("inject");
    assert_eq!(
        county.faults(),
        vec![
            ("dongcun-meter-001".to_owned(), Fault::Leak),
            ("farm-collar-hub".to_owned(), Fault::StuckSensor),
            (PUMP.to_owned(), Fault::ChlorineDosingFailure),
        ]
    );
    county.clear("dongcun-meter-001").expect("clear");
    assert_eq!(county.faults().len(), 2);
}

#[test]
fn a_gateway_without_power_silences_its_bus_until_cleared() {
    let county = small();
    let meter = "dongcun-meter-001";
    assert!(county.gateway_powered("gw-dongcun"));
    county.inject("gw-dongcun", Fault::GatewayOffline).expect("inject");
    assert!(!county.gateway_powered("gw-dongcun"));
    assert!(matches!(county.read(meter, Table::Input, 0, 2), Err(SimError::Offline(_))));
    assert!(county.read("waterworks-pump-1", Table::Input, 0, 1).is_ok(), "other gateways keep power");
    assert!(matches!(county.inject(meter, Fault::GatewayOffline), Err(SimError::NotApplicable { .. })));
    county.clear("gw-dongcun").expect("clear");
    assert!(county.gateway_powered("gw-dongcun"));
    assert!(county.read(meter, Table::Input, 0, 2).is_ok());
}

#[test]
fn a_rainy_day_damps_the_barn_and_keeps_turbidity_within_limits() {
    let (rain, twin) = twins();
    rain.set_rain(true);
    assert!(rain.raining());
    rain.advance(3 * HOUR);
    twin.advance(3 * HOUR);
    let rh = |c: &County| f64::from(reg(c, "farm-barn-1", Table::Input, 1)) / 10.0;
    assert!(rh(&rain) > rh(&twin) + 10.0, "rain RH {} dry RH {}", rh(&rain), rh(&twin));
    let turbidity = f32_cdab(&rain, ANALYSER, 6);
    assert!(turbidity < 1.0, "{turbidity} NTU");
}
