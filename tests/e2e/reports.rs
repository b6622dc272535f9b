//! The water-balance report against the simulator's truth: a week of the demo county in
//! accelerated simulated time.
//!
//! What is real: the county's physics and firmware register maps (households, the village
//! inlet meters, the waterworks), the gateway profiles and their decoding, the store (every
//! poll round's batches appended as the pipeline's sink appends them, roll-ups and all),
//! the reports, and their HTTP routes with a tenant-scoped token. What is played: the
//! gateways' polling loop and MQTT (`alerts::sim::Poller` reads the registers through
//! `County::read` every simulated minute and makes the batches a gateway would), because a
//! week of polling in real time is out of reach of a test.
//!
//! The week (local time, UTC+8), from Monday 7 April 2025, after a day of history:
//! - from the start: a household meter in Nancun reads 900 L below its register's wrap,
//!   so it rolls over during the week;
//! - day 3, 00:30: a burst in Dongcun's network (the `leak` fault on its inlet meter);
//! - day 4, 10:00: another Nancun household's meter is replaced by a new one reading 0;
//! - day 5, 09:00-15:00: Xicun's gateway has no power (nothing of Xicun is read).
//!
//! The report must show Dongcun's NRW rise by the burst's volume within 10 % and its
//! minimum night flow step on day 3, Xicun's and Nancun's balances not move, the
//! replacement and the rollover not distort Nancun's consumption, and Xicun's day 5
//! marked incomplete (by the 6 hours its gateway was silent) instead of under-reported.
#![allow(clippy::print_stdout)] // the table of the week is part of the output

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use ingest::auth::{Access, Role, TokenConfig, Tokens};
use ingest::reports::model::WaterBalanceReport;
use ingest::reports::period::{DAY_MS, HOUR_MS, Span};
use ingest::reports::{ReportsState, water};
use simulator::{CountySpec, DmaVolumes, Fault};
use store::{Store, StoreConfig};

use super::alerts::sim::{APRIL_7, Poller};

const VILLAGES: [&str; 3] = ["dongcun", "xicun", "nancun"];
const DAYS: usize = 7;
const ROLLING: &str = "nancun-meter-002";
const REPLACED: &str = "nancun-meter-005";

#[derive(Clone)]
struct TestState {
    reports: ReportsState,
    access: Access,
}

impl FromRef<TestState> for ReportsState {
    fn from_ref(s: &TestState) -> ReportsState {
        s.reports.clone()
    }
}

impl FromRef<TestState> for Access {
    fn from_ref(s: &TestState) -> Access {
        s.access.clone()
    }
}

/// Serves the report routes on port 0 with one token per tenant scope.
async fn serve(reports: ReportsState) -> String {
    let token = |secret: &str, tenants: &[&str]| TokenConfig {
        token: secret.into(),
        role: Role::Viewer,
        tenants: tenants.iter().map(|t| (*t).to_string()).collect(),
        name: secret.into(),
    };
    let access = Access {
        tokens: Tokens::new(&[token("county-viewer", &["county"]), token("dairy-viewer", &["dairy"])]),
        public_read: false,
    };
    let app: Router = ingest::reports::api::router().with_state(TestState { reports, access });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/reports")
}

async fn get(url: &str, token: &str) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .get(url)
        .header("Authorization", format!("Token {token}"))
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

fn m3(l: f64) -> f64 {
    l / 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_week_of_water_balance_matches_the_simulators_truth() {
    let _heavy = crate::common::MEMORY_HEAVY.lock().await;
    let spec = CountySpec { cows: 0, ..CountySpec::demo() };
    // A day of history first: a report's first day needs its meters' totals at midnight.
    let mut poller = Poller::new(spec, APRIL_7 - DAY_MS, 60_000);
    let county = poller.county.clone();
    county.set_random_outages(false);
    poller.inventory.set_districts(ingest::demo::districts_of(county.plan()));
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, _) = Store::open(StoreConfig::new(dir.path().join("store"))).expect("store");
    let store = Arc::new(store);

    // Truth at the start and at the last poll round of every day (23:59): the hour
    // roll-ups read a day's total at its last reading before midnight.
    let truth_now = || VILLAGES.map(|v| county.dma_volumes(v).expect("a DMA per village"));
    let mut midnights: Vec<[DmaVolumes; 3]> = Vec::new();
    county.replace_meter(ROLLING, u32::MAX - 900).expect("a household meter");
    let end = APRIL_7 + DAYS as i64 * DAY_MS + HOUR_MS;
    let mut readings = 0usize;
    while county.now().0 < end {
        let now = county.now().0;
        let at = |day: i64, hour: f64| APRIL_7 + (day - 1) * DAY_MS + (hour * HOUR_MS as f64) as i64;
        if now == at(3, 0.5) {
            county.inject("dongcun-inlet", Fault::Leak).expect("a burst in Dongcun");
        }
        if now == at(4, 10.0) {
            county.replace_meter(REPLACED, 0).expect("a household meter");
        }
        // The next poll round is at 09:00: the first one without Xicun.
        if now == at(5, 9.0) - 60_000 {
            county.inject("gw-xicun", Fault::GatewayOffline).expect("Xicun's gateway goes dark");
        }
        if now == at(5, 15.0) - 60_000 {
            county.clear("gw-xicun").expect("power back");
        }
        let batches = poller.step();
        readings += batches.iter().map(|b| b.readings.len()).sum::<usize>();
        store.append_batches(&batches).expect("append");
        let last_round = county.now().0 + 60_000;
        if last_round >= APRIL_7 && (last_round - APRIL_7) % DAY_MS == 0 && midnights.len() <= DAYS {
            midnights.push(truth_now());
        }
    }
    assert_eq!(midnights.len(), DAYS + 1);
    println!("Polled {readings} readings over {DAYS} simulated days.");

    let clock_county = county.clone();
    let state = ReportsState {
        store: store.clone(),
        inventory: poller.inventory.clone(),
        alerts: None,
        clock: Arc::new(move || clock_county.now()),
    };
    let base = serve(state.clone()).await;

    // The week's days, from the API as a reader of the county sees them.
    let mut reports: Vec<WaterBalanceReport> = Vec::new();
    for day in 0..DAYS as i64 {
        let date = ingest::reports::period::local_date(APRIL_7 + day * DAY_MS);
        let (status, json) = get(&format!("{base}/water-balance?period=day&date={date}"), "county-viewer").await;
        assert_eq!(status, 200, "{json}");
        reports.push(serde_json::from_value(json).expect("the published shape"));
    }
    let district = |r: &WaterBalanceReport, v: &str| {
        r.districts.iter().find(|d| d.district == v).unwrap_or_else(|| panic!("{v} in the report")).clone()
    };
    let truth = |day: usize, v: usize| {
        let (a, b) = (midnights[day][v], midnights[day + 1][v]);
        (m3(b.input_l - a.input_l), m3(b.metered_l - a.metered_l), m3(b.burst_l - a.burst_l))
    };

    println!(
        "| day | village | input m3 (true) | billed m3 (true) | NRW m3 (true) | NRW % | MNF m3/h | complete | coverage % |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (day, r) in reports.iter().enumerate() {
        for (v, name) in VILLAGES.iter().enumerate() {
            let d = district(r, name);
            let b = &d.total;
            let (input, metered, _) = truth(day, v);
            println!(
                "| {} | {name} | {:.3} ({input:.3}) | {:.3} ({metered:.3}) | {:.3} ({:.3}) | {:.1} | {:.3} | {} | {:.1} |",
                day + 1,
                b.system_input_m3,
                b.billed_metered_m3,
                b.nrw_m3,
                input - metered,
                b.nrw_pct.unwrap_or(f64::NAN),
                d.night_flow.nights[0].mnf_m3h.unwrap_or(f64::NAN),
                b.completeness.complete,
                b.completeness.coverage_pct,
            );
            // Every day of every village: the report's volumes are the true ones (the
            // inlet's litre resolution and a minute's use at midnight apart).
            assert!((b.system_input_m3 - input).abs() <= 0.01 * input + 0.02, "{name} day {}: input", day + 1);
            assert!((b.billed_metered_m3 - metered).abs() <= 0.01 * metered + 0.02, "{name} day {}: billed", day + 1);
        }
    }

    // Dongcun: NRW rises by the burst's volume within 10 %, from day 3 on.
    let nrw = |day: usize, v: &str| district(&reports[day], v).total.nrw_m3;
    let before = |v: &str| (nrw(0, v) + nrw(1, v)) / 2.0;
    for day in 2..DAYS {
        let (_, _, burst) = truth(day, 0);
        let rise = nrw(day, "dongcun") - before("dongcun");
        assert!(burst > 0.0);
        assert!(
            (rise - burst).abs() <= 0.1 * burst,
            "day {}: NRW rose {rise:.3} m3, the burst lost {burst:.3}",
            day + 1
        );
    }
    // ... and its minimum night flow steps on day 3 by about the burst's flow.
    let mnf = |day: usize, v: &str| district(&reports[day], v).night_flow.nights[0].mnf_m3h.expect("a night");
    let step = mnf(2, "dongcun") - mnf(0, "dongcun").max(mnf(1, "dongcun"));
    let (_, _, burst3) = truth(3, 0); // a whole day of the burst
    let burst_m3h = burst3 / 24.0;
    assert!(step > 0.6 * burst_m3h, "Dongcun's MNF stepped {step:.3} m3/h; the burst runs at {burst_m3h:.3} m3/h");

    // No other district moves: NRW and MNF stay within a tenth of Dongcun's rise.
    for v in ["xicun", "nancun"] {
        for day in 2..DAYS {
            let moved = (nrw(day, v) - before(v)).abs();
            let (_, _, burst) = truth(day, 0);
            assert!(moved < 0.1 * burst, "{v} day {}: NRW moved {moved:.3} m3", day + 1);
            let night = (mnf(day, v) - (mnf(0, v) + mnf(1, v)) / 2.0).abs();
            assert!(night < 0.1 * step, "{v} day {}: MNF moved {night:.3} m3/h", day + 1);
        }
    }

    // The replaced and the rolled-over meters: Nancun's consumption is the true one on
    // their days (above), and their billing reads say what happened.
    let modulus = water::DEFAULT_MODULUS;
    let replaced = water::meter_use(&store, REPLACED, &Span::day(APRIL_7 + 3 * DAY_MS), modulus).expect("use");
    assert!(replaced.replaced && !replaced.rolled_over, "{replaced:?}");
    assert!(replaced.consumption_m3.is_some_and(|c| c > 0.05 && c < 2.0), "{replaced:?}");
    let week = Span { from: APRIL_7, to: APRIL_7 + DAYS as i64 * DAY_MS, ..Span::day(APRIL_7) };
    let rolled = water::meter_use(&store, ROLLING, &week, modulus).expect("use");
    assert!(rolled.rolled_over && !rolled.replaced, "{rolled:?}");
    assert!(rolled.start_read_m3.is_some_and(|s| s > 4_294_966.0) && rolled.end_read_m3.is_some_and(|e| e < 10.0));
    assert!(rolled.consumption_m3.is_some_and(|c| c > 0.9 && c < 10.0), "{rolled:?}");

    // Xicun's gateway was silent for 6 hours on day 5: the day is incomplete by that much,
    // not low (checked against the truth above).
    let x5 = district(&reports[4], "xicun").total;
    let c = &x5.completeness;
    assert!(!c.complete, "{c:?}");
    assert!((c.coverage_pct - 75.0).abs() < 1.0, "{c:?}");
    let silent: Vec<_> = c.silences.iter().filter(|s| s.source == "gateway" && s.id == "gw-xicun").collect();
    assert_eq!(silent.len(), 1, "{c:?}");
    assert_eq!(silent[0].hours, 6.0);
    // Positive control: the same village's other days are complete.
    assert!(district(&reports[3], "xicun").total.completeness.complete);
    assert!(district(&reports[5], "xicun").total.completeness.complete);
    // The county marks the day incomplete too.
    assert!(!reports[4].county.completeness.complete && reports[3].county.completeness.complete);

    // Supply over the same day: nothing cut the water, and Xicun's silent hours are
    // unknown, not counted as supplied or interrupted.
    let (status, json) = get(&format!("{base}/supply?period=day&date=2025-04-11"), "county-viewer").await;
    assert_eq!(status, 200, "{json}");
    let supply: ingest::reports::model::SupplyReport = serde_json::from_value(json).expect("shape");
    for v in &supply.villages {
        assert_eq!(v.interruption_hours, 0.0, "{v:?}");
        assert_eq!(v.judged_by.as_deref(), Some(format!("{}-inlet", v.village).as_str()));
        let unknown = if v.village == "xicun" { 6.0 } else { 0.0 };
        assert!((v.unknown_hours - unknown).abs() < 0.05, "{v:?}");
    }
    for p in &supply.pressure {
        let (lo, hi) = (p.min_mpa.expect("min"), p.max_mpa.expect("max"));
        // Never without supply (the burst draws the district down at peaks, below the
        // 0.14 MPa network minimum at times: low pressure, not an interruption).
        assert!(lo > supply.no_supply_mpa && hi < 0.4, "{p:?}");
        assert!(p.mean_mpa.is_some_and(|m| m > 0.14 && m > lo && m < hi), "{p:?}");
    }
    // Quality over the week: the simulated supply meets GB 5749-2022 at the analyser and
    // leaving the plant.
    let (status, json) = get(&format!("{base}/quality?period=month&date=2025-04"), "county-viewer").await;
    assert_eq!(status, 200, "{json}");
    let quality: ingest::reports::model::QualityReport = serde_json::from_value(json).expect("shape");
    assert_eq!(quality.analysers.len(), 2, "the network analyser and the plant outlet");
    for a in &quality.analysers {
        for p in &a.parameters {
            assert!(p.samples > 0 && p.within_pct == Some(100.0), "{} {}: {p:?}", a.device, p.metric);
        }
    }

    // The month view of Dongcun holds the same days; a dairy reader does not see it.
    let (status, json) =
        get(&format!("{base}/water-balance?period=month&date=2025-04&district=dongcun"), "county-viewer").await;
    assert_eq!(status, 200, "{json}");
    let month: WaterBalanceReport = serde_json::from_value(json).expect("shape");
    let days = &month.districts[0].days;
    assert_eq!(days.len(), 30);
    assert!((days[8].balance.nrw_m3 - nrw(2, "dongcun")).abs() < 1e-6, "9 April is day 3");
    let (status, _) =
        get(&format!("{base}/water-balance?period=day&date=2025-04-09&district=dongcun"), "dairy-viewer").await;
    assert_eq!(status, 404, "another tenant's district is not found");
    let (status, _) = get(&format!("{base}/water-balance?period=day&date=2025-04-31"), "county-viewer").await;
    assert_eq!(status, 400);
}
