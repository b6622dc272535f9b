//! History from an old system: two years of 15-minute meter totals written through
//! `/api/v2/write` (gzip, batched, as a migration tool sends them), then the water balance
//! and the billing report of a month in the first year, checked against the same figures
//! computed from the raw file by an independent reader (Python, reading the line-protocol
//! file itself). Meter 0 is the village's inlet (its district's system input), the others
//! its households.
//!
//! Before issue 14 item 8, `/api/v2/write` refused anything older than `max_age_days`
//! (30): the positive control below shows it still does for MQTT, while line protocol now
//! takes history back to the family's retention. The whole 2 years x 1,000 meters (70 M
//! readings) is `vt-bench backfill` (release ingest, docs/BENCHMARKS.md); this test runs
//! the same shape with [`METERS`] meters. `VT_BACKFILL_METERS` changes that number.

use std::io::Write as _;
use std::process::Command;
use std::time::Instant;

use ingest::auth::{Role, TokenConfig};
use ingest::config::{BrokerConfig, IngestConfig};
use ingest::inventory::{Device, GatewayInfo, Inventory, InventoryFile, MeteredDistrict, Site};
use ingest::service::{self, Options};
use serde_json::Value;

use crate::common::now_ms;

/// Meters in the test (`vt-bench backfill` writes 1,000).
const METERS: usize = 12;
const TOKEN: &str = "county-backfill-token-0123456789";
const MIN: i64 = 60_000;
const QUARTER: i64 = 15 * MIN;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;
const CST: i64 = 8 * HOUR;
/// Lines per request: within `write_max_readings` (100,000).
const BATCH: usize = 50_000;
/// Where counters wrap (the rules' default).
const MODULUS: f64 = 4_294_967.296;

/// Reads the raw file on its own and bills `[from, to)` the way docs/REPORTS.md defines it:
/// the total at a boundary (a whole hour) is the newest reading before it, the use is the
/// counter's steps between the two (a wrap from the top to the bottom tenth of the register
/// is use; any other fall is a new meter whose total is the use since).
const INDEPENDENT: &str = r#"
import sys, json, gzip, collections
path, start, end, modulus = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
# One pass, keeping only what the month needs: each meter's newest reading before it and
# its readings in it (a thousand meters' two years do not fit in memory as tuples).
before, inside = {}, collections.defaultdict(list)
with gzip.open(path, "rt") as f:
    for line in f:
        head, fields, ts = line.split(" ")
        device, t = head.split("device=")[1], int(ts)
        if t < start:
            if device not in before or before[device][0] < t:
                before[device] = (t, float(fields.split("=")[1]))
        elif t < end:
            inside[device].append((t, float(fields.split("=")[1])))
out = {}
for device, s in before.items():
    points = sorted(inside[device])
    e = points[-1] if points else s
    used, resets, wraps, prev = 0.0, 0, 0, s[1]
    for t, v in points:
        if v >= prev:
            used += v - prev
        elif prev > 0.9 * modulus and v < 0.1 * modulus:
            used += v + modulus - prev; wraps += 1
        else:
            used += max(v, 0.0); resets += 1
        prev = v
    days = set((t + 8 * 3600000) // 86400000 for t, _ in points)
    out[device] = {"start": s, "end": e, "used": used, "resets": resets, "wraps": wraps, "days": len(days)}
print(json.dumps(out))
"#;

/// A meter's total at quarter `q` of the history: each meter uses its own steady amount
/// plus a daily pattern; meter 0, the inlet, counts more than all the households together
/// (the village's losses); meter 1 is replaced and meter 2's register wraps in the billed
/// month; meter 3 is silent for two days of it.
fn total(meter: usize, meters: usize, q: i64, month_q: i64) -> Option<f64> {
    let rate = 0.002 + 0.0007 * (meter % 7) as f64;
    let day_part = [0.2, 0.1, 0.1, 0.3, 1.4, 1.6, 1.2, 0.9][((q / 12) % 8) as usize];
    let used = |q: i64| rate * q as f64 + rate * day_part * 0.5;
    let swap = month_q + 10 * 96 + 37; // day 11, 09:15
    match meter {
        0 => Some(5.0 * meters as f64 * used(q)),
        1 if q >= swap => Some(used(q) - used(swap) + 0.001),
        2 => {
            let v = MODULUS - used(month_q + 5 * 96) + used(q);
            Some(if v >= MODULUS { v - MODULUS } else { v })
        }
        3 if (month_q + 20 * 96..month_q + 22 * 96).contains(&q) => None,
        _ => Some(100.0 * meter as f64 + used(q)),
    }
}

fn inventory(meters: usize) -> Inventory {
    let site = Site {
        id: "laocun".into(),
        name: "老村".into(),
        kind: "village".into(),
        tenant: "county".into(),
        lat: 34.7,
        lon: 113.6,
        village: None,
        district: None,
        township: None,
    };
    let gateway = GatewayInfo {
        id: "gw-old".into(),
        tenant: "county".into(),
        site: "laocun".into(),
        public_key: crate::keys::public_key("gw-old"),
    };
    let devices = (0..meters)
        .map(|m| Device {
            id: format!("laocun-meter-{m:04}"),
            kind: protocol::DeviceKind::WaterMeter,
            site: "laocun".into(),
            gateway: "gw-old".into(),
            model: String::new(),
            lat: None,
            lon: None,
            public_key: None,
        })
        .collect();
    let inventory = Inventory::from_file(InventoryFile { sites: vec![site], gateways: vec![gateway], devices });
    inventory.set_districts(vec![MeteredDistrict {
        id: "laocun".into(),
        name: "老村".into(),
        supply_district: None,
        inlets: vec![INLET.into()],
        sites: vec!["laocun".into()],
    }]);
    inventory
}

/// The village's inlet meter: system input, not billed.
const INLET: &str = "laocun-meter-0000";

/// Local (UTC+8) midnight of the first day of the month holding `ts`, and of the next.
fn month_of(ts: i64) -> (i64, i64, String) {
    let local_days = (ts + CST).div_euclid(DAY);
    let (y, m, d) = civil(local_days);
    let first = local_days - (d - 1);
    let next = if m == 12 { days_from_civil(y + 1, 1) } else { days_from_civil(y, m + 1) };
    (first * DAY - CST, next * DAY - CST, format!("{y:04}-{m:02}"))
}

fn civil(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_years_of_history_come_in_through_line_protocol_and_an_old_months_bill_matches_the_raw_file() {
    let meters: usize = std::env::var("VT_BACKFILL_METERS").ok().and_then(|v| v.parse().ok()).unwrap_or(METERS);
    let python = testkit::python_with("json");
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        IngestConfig::new(dir.path().join("data"), BrokerConfig::Embedded { listen: "127.0.0.1:0".parse().unwrap() });
    config.tokens = vec![TokenConfig {
        token: TOKEN.into(),
        role: Role::Operator,
        tenants: vec!["county".into()],
        name: "m".into(),
    }];
    config.store.fsync = store::FsyncPolicy::Never;
    let ingest = service::start(config, inventory(meters), Options::default()).await.expect("ingest");
    let base = format!("http://{}", ingest.http);

    // 729 days up to half a day ago (within water's 730-day retention); the
    // billed month is the third whole month of the history.
    let end = (now_ms() - DAY / 2).div_euclid(QUARTER) * QUARTER;
    let start = end - 729 * DAY;
    let (from, to, month) = month_of(month_of(month_of(start).1).1 + DAY);
    let month_q = (from - start) / QUARTER;
    let quarters = (end - start) / QUARTER;
    println!("backfill: {meters} meters x {quarters} quarters ({month} billed), {} readings", meters as i64 * quarters);

    // The raw file, written as an export of the old system would be: week by week, every
    // meter, one line per reading.
    let raw = dir.path().join("history.lp.gz");
    let started = Instant::now();
    let mut lines = 0usize;
    let mut batches: Vec<Vec<u8>> = Vec::new();
    {
        let mut file = flate2::write::GzEncoder::new(std::fs::File::create(&raw).unwrap(), flate2::Compression::fast());
        let mut batch = String::new();
        let mut in_batch = 0;
        let week = 7 * 96;
        for w in (0..quarters).step_by(week as usize) {
            for m in 0..meters {
                for q in w..(w + week).min(quarters) {
                    let Some(v) = total(m, meters, q, month_q) else { continue };
                    let line = format!("volume_total,device=laocun-meter-{m:04} value={v} {}\n", start + q * QUARTER);
                    file.write_all(line.as_bytes()).unwrap();
                    batch.push_str(&line);
                    in_batch += 1;
                    lines += 1;
                    if in_batch == BATCH {
                        batches.push(gzip(&batch));
                        batch.clear();
                        in_batch = 0;
                    }
                }
            }
        }
        if in_batch > 0 {
            batches.push(gzip(&batch));
        }
        file.finish().unwrap();
    }
    println!(
        "backfill: {lines} lines in {} gzip batches, made in {:.1} s",
        batches.len(),
        started.elapsed().as_secs_f64()
    );

    let client = reqwest::Client::new();
    let started = Instant::now();
    for (i, body) in batches.into_iter().enumerate() {
        let resp = client
            .post(format!("{base}/api/v2/write?org=county&precision=ms"))
            .header("Authorization", format!("Token {TOKEN}"))
            .header("Content-Encoding", "gzip")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204, "batch {i}: {}", resp.text().await.unwrap_or_default());
        if i % 10 == 9 {
            let done = ((i + 1) * BATCH).min(lines);
            let secs = started.elapsed().as_secs_f64();
            println!("backfill: {done} of {lines} readings written, {:.0}/s", done as f64 / secs);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!("backfill: {lines} readings in {secs:.1} s, {:.0} readings/s", lines as f64 / secs);

    // Roll-ups exist for the backfilled month: daily buckets (UTC days, answered from the
    // hour tier) count every quarter hour.
    let q = format!("device=laocun-meter-0000&metric=volume_total&from={from}&to={to}&step=1d");
    let days = client
        .get(format!("{base}/api/v1/series?{q}"))
        .header("Authorization", format!("Token {TOKEN}"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let counts: Vec<u64> =
        days["points"].as_array().unwrap().iter().map(|b| b["count"].as_u64().unwrap_or(0)).collect();
    let month_days = ((to - from) / DAY) as u64;
    assert_eq!(counts.iter().sum::<u64>(), 96 * month_days, "{counts:?}");
    assert!(counts[1..counts.len() - 1].iter().all(|&c| c == 96), "{counts:?}");

    // The month's bill and water balance from ingest, and the same from the raw file.
    let get = |path: String| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let resp = client.get(format!("{base}{path}")).header("Authorization", format!("Token {TOKEN}")).send();
            resp.await.unwrap().json::<Value>().await.unwrap()
        }
    };
    let started = Instant::now();
    let bill = get(format!("/api/v1/reports/billing?period=month&date={month}")).await;
    println!("backfill: billing of {month} for {meters} meters in {:.2} s", started.elapsed().as_secs_f64());
    let started = Instant::now();
    let balance = get(format!("/api/v1/reports/water-balance?period=month&date={month}")).await;
    println!("backfill: water balance of {month} in {:.2} s", started.elapsed().as_secs_f64());
    let out = Command::new(&python)
        .arg("-c")
        .arg(INDEPENDENT)
        .args([raw.display().to_string(), from.to_string(), to.to_string(), MODULUS.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let expected: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = bill["meters"].as_array().unwrap();
    assert_eq!(rows.len(), meters - 1, "every household, not the inlet");
    let days = bill["period"]["days"].as_u64().unwrap();
    assert_eq!(days, month_days);
    let mut total_used = 0.0;
    for row in rows {
        let meter = row["meter"].as_str().unwrap();
        let e = &expected[meter];
        let near = |a: &Value, b: &Value| (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-3;
        assert!(near(&row["consumption_m3"], &e["used"]), "{meter}: {row} vs {e}");
        assert!(near(&row["start_read_m3"], &e["start"][1]), "{meter}: {row} vs {e}");
        assert!(near(&row["end_read_m3"], &e["end"][1]), "{meter}: {row} vs {e}");
        assert_eq!(row["replaced"].as_bool(), Some(e["resets"].as_u64().unwrap() > 0), "{meter}");
        assert_eq!(row["rolled_over"].as_bool(), Some(e["wraps"].as_u64().unwrap() > 0), "{meter}");
        assert_eq!(row["missing_days"].as_u64().unwrap(), days - e["days"].as_u64().unwrap(), "{meter}");
        assert!(row["estimated_m3"].as_f64().unwrap() < 1e-9, "{meter}: every boundary was read: {row}");
        total_used += row["consumption_m3"].as_f64().unwrap();
    }
    // The month's events are where they were put.
    let by = |m: usize| rows.iter().find(|r| r["meter"] == format!("laocun-meter-{m:04}")).unwrap();
    assert_eq!(
        (by(1)["replaced"].as_bool(), by(2)["rolled_over"].as_bool(), by(3)["missing_days"].as_u64()),
        (Some(true), Some(true), Some(2))
    );
    // The water balance of the month: the inlet's use is the system input, the households'
    // the billed consumption, the silent meter makes it incomplete, not low.
    let district = &balance["districts"][0];
    assert_eq!(district["district"], "laocun", "{balance}");
    let total = &district["total"];
    let input = expected[INLET]["used"].as_f64().unwrap();
    let near = |v: &Value, want: f64| (v.as_f64().unwrap() - want).abs() < 1e-3 * meters as f64;
    assert!(near(&total["system_input_m3"], input), "{total} vs input {input}");
    assert!(near(&total["billed_metered_m3"], total_used), "{total} vs billed {total_used}");
    assert!(near(&total["nrw_m3"], input - total_used), "{total}");
    assert_eq!(total["completeness"]["complete"], false, "meter 3 was silent for two days: {total}");
    assert_eq!(district["days"].as_array().unwrap().len() as u64, month_days);
    println!("backfill: {month} billed {total_used:.3} m³ over {} households, as the raw file says", meters - 1);
    ingest.stop().await;
}

fn gzip(text: &str) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(text.as_bytes()).expect("gzip in memory");
    enc.finish().expect("gzip in memory")
}

/// The positive control of the age limits on a fresh ingest: MQTT's `max_age_days` (30)
/// is not line protocol's limit any more, water's retention (730 days) is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_protocol_takes_a_meters_history_back_to_its_retention_and_no_further() {
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        IngestConfig::new(dir.path().to_path_buf(), BrokerConfig::Embedded { listen: "127.0.0.1:0".parse().unwrap() });
    config.tokens = vec![TokenConfig {
        token: TOKEN.into(),
        role: Role::Operator,
        tenants: vec!["county".into()],
        name: "m".into(),
    }];
    let ingest = service::start(config, inventory(1), Options::default()).await.expect("ingest");
    let base = format!("http://{}", ingest.http);
    let now = now_ms();
    let post = |body: String| {
        let base = base.clone();
        async move {
            let resp = reqwest::Client::new()
                .post(format!("{base}/api/v2/write?org=county&precision=ms"))
                .header("Authorization", format!("Token {TOKEN}"))
                .body(body)
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    // A reading from 2 years less a day ago, and one a week ago: both stored.
    let line = |days: i64, v: f64| format!("volume_total,device=laocun-meter-0000 value={v} {}\n", now - days * DAY);
    assert_eq!(post(format!("{}{}", line(729, 1.0), line(7, 2.0))).await, (204, String::new()));
    // 731 days: older than water keeps raw points; refused and named.
    let (status, body) = post(line(731, 0.5)).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("water readings up to 730 days"), "{body}");
    ingest.stop().await;
}
