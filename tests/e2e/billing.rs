//! The billing export (`GET /api/v1/reports/billing`) opened by readers nobody here wrote:
//! Python's `csv` module reads the CSV and `openpyxl` (PyPI, in `.venv`, installed by
//! `.ci/setup`) the XLSX, and every value they find is checked against the known totals
//! written through `/api/v2/write`: an ordinary meter, one replaced mid-week, one whose
//! register wraps, one silent for three days, one that never reported. The export is
//! tenant-scoped: the dairy's meter is in no export of the county's token.
//!
//! The reads are the water balance's (`water::meter_use`, hour roll-ups): the total at a
//! boundary is the newest reading of the whole hours before it, shown at that hour's end.

use std::path::Path;
use std::process::Command;

use ingest::auth::{Role, TokenConfig};
use ingest::config::{BrokerConfig, IngestConfig};
use ingest::inventory::{Device, GatewayInfo, Inventory, InventoryFile, Site};
use ingest::reports::water::DEFAULT_MODULUS as MODULUS;
use ingest::service::{self, Options};
use serde_json::Value;

use crate::common::now_ms;

const COUNTY: &str = "county-billing-token-0123456789";
const DAIRY: &str = "dairy-billing-token-0123456789";
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// China Standard Time.
const CST: i64 = 8 * HOUR;

const READER: &str = r#"
import sys, csv, json, datetime, openpyxl
csv_path, xlsx_path = sys.argv[1], sys.argv[2]
with open(csv_path, encoding="utf-8-sig", newline="") as f:
    rows = list(csv.DictReader(f))
wb = openpyxl.load_workbook(xlsx_path)
ws = wb.worksheets[0]
header = [c.value for c in ws[1]]
cells = []
for r in ws.iter_rows(min_row=2, values_only=True):
    d = dict(zip(header, r))
    for k, v in d.items():
        if hasattr(v, "isoformat"):
            # Excel keeps date-times as day fractions: round to the minute the cell shows.
            d[k] = (v + datetime.timedelta(seconds=30)).strftime("%Y-%m-%d %H:%M")
    cells.append(d)
print(json.dumps({"csv": rows, "xlsx": cells, "sheets": wb.sheetnames}, ensure_ascii=False))
"#;

fn site(id: &str, name: &str, tenant: &str) -> Site {
    Site {
        id: id.into(),
        name: name.into(),
        kind: "village".into(),
        tenant: tenant.into(),
        lat: 34.7,
        lon: 113.6,
        village: None,
        district: None,
        township: None,
    }
}

fn meter(id: &str, site: &str, gateway: &str) -> Device {
    Device {
        id: id.into(),
        kind: protocol::DeviceKind::WaterMeter,
        site: site.into(),
        gateway: gateway.into(),
        model: String::new(),
        lat: None,
        lon: None,
        public_key: None,
    }
}

fn inventory() -> Inventory {
    let gw = |id: &str, tenant: &str, site: &str| GatewayInfo {
        id: id.into(),
        tenant: tenant.into(),
        site: site.into(),
        public_key: crate::keys::public_key(id),
    };
    Inventory::from_file(InventoryFile {
        sites: vec![site("dongcun", "东村", "county"), site("xicun", "西村", "county"), site("farm", "牧场", "dairy")],
        gateways: vec![gw("gw-d", "county", "dongcun"), gw("gw-x", "county", "xicun"), gw("gw-f", "dairy", "farm")],
        devices: vec![
            meter("dongcun-meter-001", "dongcun", "gw-d"),
            meter("dongcun-meter-002", "dongcun", "gw-d"),
            meter("dongcun-meter-003", "dongcun", "gw-d"),
            meter("dongcun-meter-004", "dongcun", "gw-d"),
            meter("dongcun-meter-005", "dongcun", "gw-d"),
            meter("xicun-meter-001", "xicun", "gw-x"),
            meter("farm-meter-001", "farm", "gw-f"),
        ],
    })
}

fn config(dir: &Path) -> IngestConfig {
    let mut config = IngestConfig::new(
        dir.to_path_buf(),
        BrokerConfig::Embedded { listen: "127.0.0.1:0".parse().expect("an address") },
    );
    config.tokens = vec![
        TokenConfig { token: COUNTY.into(), role: Role::Operator, tenants: vec!["county".into()], name: "b".into() },
        TokenConfig { token: DAIRY.into(), role: Role::Operator, tenants: vec!["dairy".into()], name: "d".into() },
    ];
    config
}

/// What each meter read, hourly from two days before the period to a day after it.
struct Inputs {
    /// Period start: local (UTC+8) midnight.
    from: i64,
    to: i64,
    lines: Vec<(String, i64, f64)>,
}

/// The totals: 001 ordinary; 002 replaced at +3 d 05:30 (the new meter from 0); 003 wraps
/// at +2 d; 004 silent on the period's days 2, 3 and 4; 005 never reports.
fn inputs() -> Inputs {
    let today = (now_ms() + CST).div_euclid(DAY) * DAY - CST;
    let from = today - 20 * DAY;
    let to = from + 7 * DAY;
    let mut lines = Vec::new();
    let swap = from + 3 * DAY + 5 * HOUR + HOUR / 2;
    for h in -48..(7 * 24 + 24) {
        let t = from + h * HOUR;
        let hf = (h + 48) as f64;
        lines.push(("dongcun-meter-001".into(), t, 100.0 + 0.02 * hf));
        let v2 = if t < swap { 500.0 + 0.03 * hf } else { 0.03 * ((t - swap) as f64 / HOUR as f64) };
        lines.push(("dongcun-meter-002".into(), t, v2));
        if t == from + 3 * DAY + 5 * HOUR {
            // The old meter's last read, just before the swap.
            lines.push(("dongcun-meter-002".into(), swap - 60_000, 500.0 + 0.03 * (hf + 0.5)));
        }
        let wrap_at = (from + 2 * DAY - (from - 2 * DAY)) as f64 / HOUR as f64;
        let v3 = MODULUS - 0.05 * wrap_at + 0.05 * hf;
        lines.push(("dongcun-meter-003".into(), t, if v3 >= MODULUS { v3 - MODULUS } else { v3 }));
        if !(from + DAY..from + 4 * DAY).contains(&t) {
            lines.push(("dongcun-meter-004".into(), t, 7.0 + 0.01 * hf));
        }
        lines.push(("xicun-meter-001".into(), t, 40.0 + 0.04 * hf));
        lines.push(("farm-meter-001".into(), t, 9.0 + 0.5 * hf));
    }
    Inputs { from, to, lines }
}

impl Inputs {
    /// The total of `meter` at the whole hour `t` as the hour roll-ups give it: its newest
    /// reading before `t`, shown at the end of that reading's hour.
    fn read(&self, meter: &str, t: i64) -> (i64, f64) {
        self.lines
            .iter()
            .filter(|(m, ts, _)| m == meter && *ts < t)
            .map(|(_, ts, v)| (ts.div_euclid(HOUR) * HOUR + HOUR, *v))
            .next_back()
            .expect("a reading before")
    }
}

async fn write(base: &str, token: &str, org: &str, lines: &[&(String, i64, f64)]) {
    let body: String =
        lines.iter().map(|(m, t, v)| format!("volume_total,device={m} value={v} {t}\n")).collect::<Vec<_>>().concat();
    let resp = reqwest::Client::new()
        .post(format!("{base}/api/v2/write?org={org}&precision=ms"))
        .header("Authorization", format!("Token {token}"))
        .body(body)
        .send()
        .await
        .expect("write answers");
    assert_eq!(resp.status(), 204, "{}", resp.text().await.unwrap_or_default());
}

async fn get(base: &str, token: &str, query: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{base}/api/v1/reports/billing?{query}"))
        .header("Authorization", format!("Token {token}"))
        .send()
        .await
        .expect("billing answers")
}

/// `YYYY-MM-DD HH:MM` in China Standard Time (civil date from days, H. Hinnant).
fn local(ts: i64) -> String {
    let local = ts + CST;
    let (days, ms) = (local.div_euclid(DAY), local.rem_euclid(DAY));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", ms / HOUR, ms % HOUR / 60_000)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_billing_csv_and_xlsx_read_by_python_and_openpyxl_match_the_meters_known_totals() {
    let python = testkit::python_with("openpyxl");
    let dir = tempfile::tempdir().unwrap();
    let ingest = service::start(config(dir.path()), inventory(), Options::default()).await.expect("ingest");
    let base = format!("http://{}", ingest.http);
    let inputs = inputs();
    let county: Vec<&(String, i64, f64)> = inputs.lines.iter().filter(|l| !l.0.starts_with("farm")).collect();
    let dairy: Vec<&(String, i64, f64)> = inputs.lines.iter().filter(|l| l.0.starts_with("farm")).collect();
    write(&base, COUNTY, "county", &county).await;
    write(&base, DAIRY, "dairy", &dairy).await;

    let period = format!("from={}&to={}", &local(inputs.from)[..10], &local(inputs.to)[..10]);
    let csv = get(&base, COUNTY, &format!("{period}&format=csv")).await;
    assert_eq!(csv.status(), 200);
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(csv.headers()["content-disposition"].to_str().unwrap().contains(".csv"));
    let csv = csv.bytes().await.unwrap();
    let xlsx = get(&base, COUNTY, &format!("{period}&format=xlsx")).await;
    assert_eq!(xlsx.status(), 200);
    assert_eq!(xlsx.headers()["content-type"], ingest::reports::billing::XLSX_TYPE);
    let xlsx = xlsx.bytes().await.unwrap();
    assert_eq!(&xlsx[..2], b"PK", "an XLSX is a zip");
    std::fs::write(dir.path().join("bill.csv"), &csv).unwrap();
    std::fs::write(dir.path().join("bill.xlsx"), &xlsx).unwrap();

    let out = Command::new(&python)
        .arg("-c")
        .arg(READER)
        .arg(dir.path().join("bill.csv"))
        .arg(dir.path().join("bill.xlsx"))
        .output()
        .expect("python runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read: Value = serde_json::from_slice(&out.stdout).expect("the reader's JSON");
    assert_eq!(read["sheets"], serde_json::json!(["抄表结算", "说明"]));

    // What each meter must show, from the inputs alone.
    let (from, to) = (inputs.from, inputs.to);
    let expect = |meter: &str| -> (i64, f64, i64, f64) {
        let (st, sv) = inputs.read(meter, from);
        let (et, ev) = inputs.read(meter, to);
        (st, sv, et, ev)
    };
    // Consumption: 001 and 003 turn a steady 0.02 and 0.05 m³/h (003 across the wrap); 002
    // turns 0.03 m³/h, the old meter until its last read, then the new one from zero.
    let hours = 7.0 * 24.0;
    let (_, s2, _, e2) = expect("dongcun-meter-002");
    let old_last = 500.0 + 0.03 * (3.0 * 24.0 + 5.0 + 48.0 + 0.5);
    let cases: [(&str, f64, &str, &str, &str, &str); 6] = [
        ("dongcun-meter-001", 0.02 * hours, "否", "否", "否", "0"),
        ("dongcun-meter-002", (old_last - s2) + e2, "否", "是", "否", "0"),
        ("dongcun-meter-003", 0.05 * hours, "否", "否", "是", "0"),
        ("dongcun-meter-004", 0.01 * hours, "否", "否", "否", "3"),
        ("dongcun-meter-005", f64::NAN, "否", "否", "否", "7"),
        ("xicun-meter-001", 0.04 * hours, "否", "否", "否", "0"),
    ];
    for source in ["csv", "xlsx"] {
        let rows = read[source].as_array().unwrap();
        assert_eq!(rows.len(), cases.len(), "{source}: one row per county meter, none of the dairy's: {rows:?}");
        for ((meter, used, estimated, replaced, rolled, missing), row) in cases.iter().zip(rows) {
            let field = |k: &str| -> String {
                match &row[k] {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => {
                        let f = n.as_f64().unwrap();
                        if f.fract() == 0.0 && source == "xlsx" && !k.contains("度(") && !k.contains("量(") {
                            format!("{f:.0}")
                        } else {
                            f.to_string()
                        }
                    }
                    Value::Null => String::new(),
                    other => other.to_string(),
                }
            };
            let number = |k: &str| field(k).parse::<f64>().ok();
            assert_eq!(field("户号"), *meter, "{source}");
            assert_eq!(field("表号"), *meter, "{source}");
            assert_eq!(field("村"), if meter.starts_with("xicun") { "西村" } else { "东村" });
            assert_eq!(field("天数"), "7", "{source} {meter}");
            assert_eq!(
                (field("估算"), field("换表"), field("翻转"), field("缺数天数")),
                (estimated.to_string(), replaced.to_string(), rolled.to_string(), missing.to_string()),
                "{source} {meter}"
            );
            if used.is_nan() {
                assert_eq!((field("起度(m³)"), field("用水量(m³)")), (String::new(), String::new()), "{meter}");
                assert!(field("备注").contains("无读数"), "{source}: {row}");
                continue;
            }
            let (st, sv, et, ev) = expect(meter);
            assert_eq!(field("起度时间"), local(st), "{source} {meter}");
            assert_eq!(field("止度时间"), local(et), "{source} {meter}");
            assert!(close(number("起度(m³)").unwrap(), sv), "{source} {meter}: start {row}");
            assert!(close(number("止度(m³)").unwrap(), ev), "{source} {meter}: end {row}");
            assert!(close(number("用水量(m³)").unwrap(), *used), "{source} {meter}: used {row}, expected {used}");
            assert!(close(number("其中估算(m³)").unwrap(), 0.0), "{source} {meter}: every boundary was read {row}");
        }
    }

    // English headers on request; JSON with totals; one site; the dairy sees its own only.
    let en = get(&base, COUNTY, &format!("{period}&format=csv&lang=en")).await.text().await.unwrap();
    assert!(en.starts_with("\u{feff}Account,Meter,Village,Start read time,Start read (m³)"), "{en}");
    let json: Value = get(&base, COUNTY, &format!("{period}&site=xicun")).await.json().await.unwrap();
    assert_eq!(json["meters"].as_array().unwrap().len(), 1);
    assert!(close(json["totals"]["consumption_m3"].as_f64().unwrap(), 0.04 * hours));
    let json: Value = get(&base, DAIRY, &period).await.json().await.unwrap();
    let meters: Vec<&str> = json["meters"].as_array().unwrap().iter().map(|m| m["meter"].as_str().unwrap()).collect();
    assert_eq!(meters, ["farm-meter-001"]);
    assert_eq!(get(&base, DAIRY, &format!("{period}&site=xicun")).await.status(), 404, "another tenant's site");
    assert_eq!(get(&base, COUNTY, &format!("{period}&format=pdf")).await.status(), 400);
    let (a, b) = (&local(inputs.from)[..10], &local(inputs.to)[..10]);
    assert_eq!(get(&base, COUNTY, &format!("from={b}&to={a}")).await.status(), 400);
    assert_eq!(get(&base, COUNTY, &format!("from={a}")).await.status(), 400, "from without to");
    // A calendar month, as the Reports page asks: the same lines, the month's days.
    let month: Value = get(&base, COUNTY, &format!("period=month&date={}", &a[..7])).await.json().await.unwrap();
    assert_eq!(month["meters"].as_array().unwrap().len(), 6, "{month}");
    assert_eq!(month["period"]["kind"], "month");
    ingest.stop().await;
}
