//! A week of normal operation raises no alert at all: demand peaks, pump cycles, the
//! cows' daily rhythm, the speakers' short link drops, and a rainy day.

use std::time::Instant;

use simulator::CountySpec;

use super::sim::{APRIL_7, HOUR_MS, Sim};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_week_with_a_rainy_day_raises_no_alert() {
    let started = Instant::now();
    // The demo county: 3 villages, 50 household meters, a waterworks, 100 cows, speakers
    // with their random link outages on.
    let mut sim = Sim::new(CountySpec::demo(), APRIL_7, 60_000).await;
    sim.run_until(APRIL_7 + 72 * HOUR_MS).await;
    sim.county.set_rain(true); // Thursday 10 April rains all day
    sim.run_until(APRIL_7 + 96 * HOUR_MS).await;
    sim.county.set_rain(false);
    sim.run_until(APRIL_7 + 7 * 24 * HOUR_MS).await;
    let fired = sim.fired();
    let records = sim.all_alerts();
    println!(
        "quiet week: {} readings over 7 simulated days in {:.1} s; alerts fired: {}; alert records: {}",
        sim.readings,
        started.elapsed().as_secs_f64(),
        fired.len(),
        records.len()
    );
    assert!(fired.is_empty(), "alerts fired in a normal week: {fired:?}");
    assert!(records.is_empty(), "alert records (pending) at the end of a normal week: {records:?}");
}
