//! Scenario suite: every fault the simulator can inject raises the right alert, and the
//! alert resolves once the fault is cleared. Time is simulated and accelerated: each
//! scenario warms the rules up on three normal days (baselines, night flows, a day of
//! mass balance), injects its fault at 10:00 on Monday 7 April 2025, and clears it once
//! the alert fired. Each prints a row of the detection-time table in docs/ALERTS.md.
#![allow(clippy::print_stdout)] // the rows of the table are the output

use simulator::{CountySpec, Fault};

use super::sim::{APRIL_4_10AM, HOUR_MS, Sim, minutes};

/// When the fault goes in: 2025-04-07 10:00 CST.
const T: i64 = APRIL_4_10AM + 72 * HOUR_MS;

/// A small county: 3 villages, 15 meters, 20 cows, a speaker per village.
fn spec() -> CountySpec {
    CountySpec { meters: 15, cows: 20, ..CountySpec::demo() }
}

struct Case<'a> {
    fault: Fault,
    device: &'a str,
    /// The alert that must fire.
    rule: &'a str,
    /// It must fire within this long of the fault.
    within_ms: i64,
    /// These must fire too before the fault is cleared.
    also: &'a [&'a str],
    /// And resolve within this long of clearing the fault.
    resolve_within_ms: i64,
    /// Entities that must not alert on their own (suppressed behind a gateway).
    quiet: &'a [&'a str],
    /// At most this many alerts may fire in all (one dead gateway is one alert).
    max_alerts: Option<usize>,
}

async fn run(case: Case<'_>) {
    let mut sim = Sim::new(spec(), APRIL_4_10AM, 60_000).await;
    sim.run_until(T).await;
    let warm = sim.fired();
    assert!(warm.is_empty(), "alerts during the three normal days: {warm:?}");
    sim.set_step(30_000);
    let device = match case.device {
        "cow" => sim.county.plan().device("farm-collar-hub").expect("hub").1.children[3].clone(),
        d => d.to_string(),
    };
    sim.county.inject(&device, case.fault).expect("inject");
    let alert = sim.until_firing(case.rule, T + case.within_ms).await.unwrap_or_else(|| {
        panic!(
            "{} on {device}: no {} alert within {}; fired: {:?}",
            case.fault,
            case.rule,
            minutes(case.within_ms),
            sim.fired()
        )
    });
    let fired_at = alert.fired_at.expect("fired").0;
    for also in case.also {
        sim.until_firing(also, T + case.within_ms.max(30 * HOUR_MS))
            .await
            .unwrap_or_else(|| panic!("{}: no {also} alert; fired: {:?}", case.fault, sim.fired()));
    }
    let cleared = sim.now();
    sim.county.clear(&device).expect("clear");
    let resolved = sim.until_resolved(alert.id, cleared + case.resolve_within_ms).await.unwrap_or_else(|| {
        panic!("{} alert not resolved within {} of clearing", case.rule, minutes(case.resolve_within_ms))
    });
    let resolved_at = resolved.resolved_at.expect("resolved").0;
    for q in case.quiet {
        let own: Vec<_> = sim.fired().into_iter().filter(|(_, e, _)| e == q).collect();
        assert!(own.is_empty(), "{q} alerted on its own: {own:?}");
    }
    if let Some(max) = case.max_alerts {
        assert!(sim.fired().len() <= max, "more than {max} alerts: {:?}", sim.fired());
    }
    let others: Vec<String> = sim
        .fired()
        .into_iter()
        .filter(|(r, _, _)| r != case.rule)
        .map(|(r, e, at)| format!("{r} ({e}, +{})", minutes(at - T)))
        .collect();
    println!(
        "| {} | `{}` | `{}` | {} | +{} | {} | {} |",
        case.fault,
        device,
        case.rule,
        minutes(fired_at - T),
        minutes(alert.started_at.0 - T),
        minutes(resolved_at - cleared),
        if others.is_empty() { "-".to_string() } else { others.join("; ") }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pump_trip_is_caught_in_a_minute_and_resolves_after_the_reset() {
    run(Case {
        fault: Fault::PumpTrip,
        device: "waterworks-pump-1",
        rule: "pump-trip",
        within_ms: 5 * 60_000,
        also: &["tank-time-to-empty"],
        resolve_within_ms: 30 * 60_000,
        quiet: &[],
        max_alerts: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_main_shows_as_district_loss_and_night_flow() {
    run(Case {
        fault: Fault::Leak,
        device: "waterworks-pump-1",
        rule: "district-loss",
        within_ms: 12 * HOUR_MS,
        also: &["night-flow-rise"],
        resolve_within_ms: 36 * HOUR_MS,
        quiet: &[],
        max_alerts: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_household_leak_is_continuous_flow_through_its_meter() {
    run(Case {
        fault: Fault::Leak,
        device: "dongcun-meter-001",
        rule: "household-leak",
        within_ms: 5 * HOUR_MS,
        also: &[],
        resolve_within_ms: HOUR_MS,
        quiet: &[],
        max_alerts: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chlorine_dosing_failure_is_caught_at_the_plant_before_it_reaches_the_taps() {
    run(Case {
        fault: Fault::ChlorineDosingFailure,
        device: "waterworks-pump-1",
        rule: "chlorine-dosing-failure",
        within_ms: 10 * 60_000,
        also: &["chlorine-low-at-plant"],
        resolve_within_ms: HOUR_MS,
        quiet: &[],
        max_alerts: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_analyser_is_a_flatline() {
    run(Case {
        fault: Fault::StuckSensor,
        device: "waterworks-quality-1",
        rule: "analyser-stuck",
        within_ms: HOUR_MS,
        also: &[],
        resolve_within_ms: HOUR_MS,
        quiet: &[],
        max_alerts: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_collar_is_a_flatline() {
    run(Case {
        fault: Fault::StuckSensor,
        device: "cow",
        rule: "collar-stuck",
        within_ms: 2 * HOUR_MS,
        also: &[],
        resolve_within_ms: HOUR_MS,
        quiet: &[],
        max_alerts: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cow_with_fever_is_caught_against_her_own_normal() {
    run(Case {
        fault: Fault::Fever,
        device: "cow",
        rule: "cow-fever",
        within_ms: 6 * HOUR_MS,
        also: &[],
        resolve_within_ms: 3 * HOUR_MS,
        quiet: &[],
        max_alerts: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cow_in_heat_is_caught_by_her_activity() {
    run(Case {
        fault: Fault::Estrus,
        device: "cow",
        rule: "cow-estrus",
        within_ms: 4 * HOUR_MS,
        also: &[],
        resolve_within_ms: 3 * HOUR_MS,
        quiet: &[],
        max_alerts: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heat_wave_in_the_barn_is_severe_heat_stress() {
    run(Case {
        fault: Fault::HeatWave,
        device: "farm-barn-1",
        rule: "barn-heat-stress-severe",
        within_ms: 4 * HOUR_MS,
        also: &[],
        resolve_within_ms: 4 * HOUR_MS,
        quiet: &[],
        max_alerts: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_speaker_is_silent() {
    run(Case {
        fault: Fault::SpeakerOffline,
        device: "xicun-speaker-1",
        rule: "speaker-silent",
        within_ms: HOUR_MS,
        also: &[],
        resolve_within_ms: 30 * 60_000,
        quiet: &[],
        max_alerts: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_gateway_is_one_alert_not_one_per_device() {
    run(Case {
        fault: Fault::GatewayOffline,
        device: "gw-dongcun",
        rule: "gateway-offline",
        within_ms: 10 * 60_000,
        also: &[],
        resolve_within_ms: 30 * 60_000,
        quiet: &["dongcun-meter-001", "dongcun-meter-002", "dongcun-meter-003", "dongcun-speaker-1"],
        max_alerts: Some(1),
    })
    .await;
}
