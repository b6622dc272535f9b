//! The Reports page (`/dashboard/reports.html`) in a real browser (`testkit::browser`,
//! Debian's Chromium): last month of two district metered areas and an analyser, written
//! through `/api/v2/write`, drawn as charts with data (daily input against billed
//! consumption, NRW, minimum night flow, compliance); the billing downloads fetched from
//! the page's own links (content type, rows); a district chosen and the language switched
//! by clicking; the page printed to PDF by Chromium and read back by `pdftotext`
//! (poppler-utils, `.ci/setup`), which must find the report's Chinese title and the
//! districts. No JavaScript error on the way.
//!
//! `VT_REPORTS_SCREENSHOT=docs/reports.png` (relative to the workspace root) refreshes the
//! screenshot in the docs.

use std::process::Command;
use std::time::Duration;

use ingest::auth::{Role, TokenConfig};
use ingest::config::{BrokerConfig, IngestConfig};
use ingest::inventory::Inventory;
use ingest::service::{self, Options};
use serde_json::Value;
use testkit::browser::{Browser, PageOptions};

use crate::common::now_ms;

const TOKEN: &str = "county-reports-token-0123456789";
const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
const CST: i64 = 8 * HOUR;
const WAIT: Duration = Duration::from_secs(30);
/// Household meters per district.
const CUSTOMERS: usize = 4;

/// Two villages, each a district metered area with an inlet and household meters, and a
/// waterworks with an analyser (the inventory file as a bureau writes it).
fn inventory() -> Inventory {
    let mut text = String::new();
    for (id, name, kind) in
        [("nancun", "南村", "village"), ("beicun", "北村", "village"), ("works", "水厂", "waterworks")]
    {
        text.push_str(&format!(
            "[[sites]]\nid = \"{id}\"\nname = \"{name}\"\nkind = \"{kind}\"\ntenant = \"county\"\nlat = 34.7\nlon = 113.6\n\
             district = \"sd-1\"\n\n"
        ));
    }
    text.push_str("[[gateways]]\nid = \"gw-1\"\ntenant = \"county\"\nsite = \"works\"\n\n");
    let mut device = |id: &str, kind: &str, site: &str| {
        text.push_str(&format!(
            "[[devices]]\nid = \"{id}\"\nkind = \"{kind}\"\nsite = \"{site}\"\ngateway = \"gw-1\"\n\n"
        ));
    };
    device("works-quality", "water_quality", "works");
    for v in ["nancun", "beicun"] {
        device(&format!("{v}-inlet"), "water_meter", v);
        for m in 1..=CUSTOMERS {
            device(&format!("{v}-meter-{m:03}"), "water_meter", v);
        }
    }
    for v in ["nancun", "beicun"] {
        text.push_str(&format!(
            "[[districts]]\nid = \"{v}\"\nsupply_district = \"sd-1\"\ninlets = [\"{v}-inlet\"]\nsites = [\"{v}\"]\n\n"
        ));
    }
    Inventory::from_source(&conf::Source::from_text("inventory.toml", text)).unwrap_or_else(|e| panic!("{e}"))
}

/// Last month (UTC+8), the week before it and the day after: customers use 10-25 L/h
/// (less at night), read hourly; each inlet counts its customers' use plus a leak
/// (nancun's grows from the 15th), hourly, and its flow (that per hour) and pressure
/// (0.3 MPa) every minute; the analyser reads chlorine, turbidity and pH hourly, within
/// limits but for a few hours of turbidity.
fn last_month_lines() -> (Vec<String>, String) {
    let now = now_ms();
    let local_day = (now + CST).div_euclid(DAY);
    // The first of this month, local, then back to the first of last month.
    let day_of_month = |d: i64| {
        let secs = d * 86_400;
        // Civil day of month, as the page counts it.
        let z = secs.div_euclid(86_400) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let dd = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        (yoe + era * 400 + i64::from(m <= 2), m, dd)
    };
    let this_first = local_day - (day_of_month(local_day).2 - 1);
    let last_first = (this_first - 1) - (day_of_month(this_first - 1).2 - 1);
    let (y, m, _) = day_of_month(last_first);
    let month = format!("{y:04}-{m:02}");
    // A week before the month for the night-flow baseline, a day after it.
    let (from, to) = (last_first * DAY - CST - 7 * DAY, this_first * DAY - CST + DAY);
    // Nancun's leak grows in the middle of the month (its NRW and night flow step up).
    let grows = (last_first + 14) * DAY - CST;
    let mut lines = Vec::new();
    let mut totals = std::collections::HashMap::<String, f64>::new();
    let mut t = from;
    while t <= to {
        let hour = ((t + CST).rem_euclid(DAY)) / HOUR;
        let night = (1..5).contains(&hour);
        let on_the_hour = t.rem_euclid(HOUR) == 0;
        for (v, leak) in [("nancun", if t < grows { 0.06 } else { 0.10 }), ("beicun", 0.04)] {
            let mut used = 0.0;
            for c in 1..=CUSTOMERS {
                let rate = if night { 0.002 } else { 0.01 + 0.005 * c as f64 / CUSTOMERS as f64 };
                used += rate;
                if on_the_hour {
                    let id = format!("{v}-meter-{c:03}");
                    let total = totals.entry(id.clone()).or_insert(50.0 * c as f64);
                    *total += rate;
                    lines.push(format!("volume_total,device={id} value={total} {t}"));
                }
            }
            let inlet = format!("{v}-inlet");
            if on_the_hour {
                let total = totals.entry(inlet.clone()).or_insert(1000.0);
                *total += used + leak;
                lines.push(format!("volume_total,device={inlet} value={total} {t}"));
            }
            // Flow and pressure every minute, as the inlet's gateway polls them.
            lines.push(format!("flow,device={inlet} value={} {t}", used + leak));
            lines.push(format!("pressure,device={inlet} value=0.3 {t}"));
        }
        if on_the_hour {
            let turbid = (t - from) / HOUR % 97 < 3;
            lines.push(format!("free_chlorine,device=works-quality value=0.45 {t}"));
            lines.push(format!("turbidity,device=works-quality value={} {t}", if turbid { 1.4 } else { 0.3 }));
            lines.push(format!("ph,device=works-quality value=7.3 {t}"));
        }
        t += MINUTE;
    }
    (lines, month)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reports_page_draws_last_months_charts_serves_its_downloads_and_prints_a_monthly_report() {
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        IngestConfig::new(dir.path().join("data"), BrokerConfig::Embedded { listen: "127.0.0.1:0".parse().unwrap() });
    config.tokens = vec![TokenConfig {
        token: TOKEN.into(),
        role: Role::Operator,
        tenants: vec!["county".into()],
        name: "b".into(),
    }];
    let options = Options { public_read: true, ..Options::default() };
    let ingest = service::start(config, inventory(), options).await.expect("ingest");
    let base = format!("http://{}", ingest.http);
    let (lines, month) = last_month_lines();
    for chunk in lines.chunks(50_000) {
        let resp = reqwest::Client::new()
            .post(format!("{base}/api/v2/write?org=county&precision=ms"))
            .header("Authorization", format!("Token {TOKEN}"))
            .body(chunk.join("\n"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204, "{}", resp.text().await.unwrap_or_default());
    }

    let browser = Browser::launch().await.expect("chromium (run .ci/setup)");
    let page = browser.page(PageOptions::DESKTOP).await.unwrap();
    page.goto(&format!("{base}/dashboard/reports.html?lang=zh")).await.unwrap();
    page.wait_for(&format!("document.documentElement.dataset.reportReady === '{month}'"), WAIT).await.unwrap();

    // Four charts, each drawn from data: points on every line, a bar per analyser parameter.
    let drawn = "[...document.querySelectorAll('#report-body svg.report-chart')].map(s => \
        [...s.querySelectorAll('path.series-line')].reduce((n, p) => n + Number(p.dataset.points), 0) \
        + s.querySelectorAll('rect.bar').length)";
    let counts = page
        .wait_for(
            &format!("(() => {{ const c = {drawn}; return c.length >= 4 && c.every(n => n > 0) && c; }})()"),
            WAIT,
        )
        .await
        .unwrap();
    let counts: Vec<u64> = counts.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    let days = page.eval("document.querySelectorAll('#report-body svg.report-chart')[0].closest('figure').querySelectorAll('path.series-line').length").await.unwrap();
    assert_eq!(days, 2, "input and billed consumption");
    assert!(counts[0] >= 2 * 28, "every day of the month has both figures: {counts:?}");
    assert_eq!(counts[3], 3, "chlorine, turbidity and pH of the one analyser: {counts:?}");
    let heading = page.text(".report-head h2").await.unwrap();
    assert!(heading.contains("供水月报") && heading.contains(&month), "{heading}");
    let table = page.text(".report-table.districts").await.unwrap();
    assert!(table.contains("南村") && table.contains("北村"), "{table}");

    // The downloads, fetched from the links the page shows (as a click would, same origin).
    for (link, kind) in [("#dl-csv", "text/csv"), ("#dl-xlsx", "application/vnd.openxmlformats")] {
        let got = page
            .eval(&format!(
                "fetch(document.querySelector('{link}').href).then(async r => ({{ status: r.status, \
                 type: r.headers.get('content-type'), href: document.querySelector('{link}').href, \
                 text: '{link}' === '#dl-csv' ? await r.text() : String((await r.arrayBuffer()).byteLength) }}))"
            ))
            .await
            .unwrap();
        assert_eq!(got["status"], 200, "{got}");
        assert!(got["type"].as_str().unwrap().starts_with(kind), "{got}");
        assert!(got["href"].as_str().unwrap().contains(&format!("period=month&date={month}")), "{got}");
        if link == "#dl-csv" {
            // fetch's text() drops the byte-order mark the file starts with.
            let text = got["text"].as_str().unwrap().trim_start_matches('\u{feff}');
            assert!(text.starts_with("户号,表号,村,"), "{text}");
            // A header and one row per household meter (inlets are not billed).
            assert_eq!(text.trim_end().lines().count(), 1 + 2 * CUSTOMERS, "{text}");
        } else {
            assert!(got["text"].as_str().unwrap().parse::<u64>().unwrap() > 1000, "{got}");
        }
    }

    // One district, by choosing it: its own figures, its night flow against its baseline,
    // and downloads of its customers only.
    page.select("#district", "nancun").await.unwrap();
    page.wait_for("document.querySelector('.report-head h2').textContent.includes('南村')", WAIT).await.unwrap();
    let mnf =
        page.wait_for("document.querySelectorAll('figure[data-key=mnf] path.series-line').length === 2", WAIT).await;
    assert!(mnf.is_ok(), "{mnf:?}");
    let one = page
        .eval(
            "fetch(document.querySelector('#dl-csv').href).then(async r => ({ href: r.url, status: r.status, \
             rows: (await r.text()).trim().split('\\n').length }))",
        )
        .await
        .unwrap();
    assert!(one["href"].as_str().unwrap().contains("district=nancun"), "{one}");
    assert_eq!((one["status"].as_u64(), one["rows"].as_u64()), (Some(200), Some(1 + CUSTOMERS as u64)), "{one}");

    if let Ok(path) = std::env::var("VT_REPORTS_SCREENSHOT") {
        let path = testkit::root().join(path);
        page.select("#district", "").await.unwrap();
        page.wait_for("document.querySelector('.report-head h2').textContent.includes('全县')", WAIT).await.unwrap();
        page.screenshot(&path, true).await.unwrap();
        println!("screenshot: {}", path.display());
    }

    // The monthly report as a bureau files it: printed to PDF, read by pdftotext.
    let pdf = dir.path().join("report.pdf");
    page.pdf(&pdf).await.unwrap();
    let bytes = std::fs::read(&pdf).unwrap();
    assert!(bytes.starts_with(b"%PDF-"), "not a PDF");
    let out = Command::new(testkit::tool("pdftotext", "poppler-utils"))
        .args(["-layout", &pdf.display().to_string(), "-"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for want in ["供水月报", "南村", "产销差", "编制", "审核"] {
        assert!(text.contains(want), "{want} not in the printed report:\n{text}");
    }
    assert!(!text.contains("打印月报"), "the controls are not printed:\n{text}");

    // The language switch, clicked.
    page.click("#lang").await.unwrap();
    page.wait_for("document.querySelector('.report-head h2').textContent.startsWith('Water supply report')", WAIT)
        .await
        .unwrap();
    let href: Value = page.eval("document.querySelector('#dl-xlsx').href").await.unwrap();
    assert!(href.as_str().unwrap().contains("lang=en"), "{href}");

    assert_eq!(page.errors(), Vec::<String>::new(), "JavaScript errors");
    page.close().await.unwrap();
    ingest.stop().await;
}
