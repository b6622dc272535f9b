//! The dashboard in a real browser: the demo county runs in-process, Debian's Chromium
//! (headless) loads the page from ingest, and the DOM it renders must show what the
//! operators look for: every site by name, one map marker per site, water-quality values
//! with their units, one herd cell per cow with the sick ones first, a tripped pump and an
//! offline speaker. A JavaScript error anywhere fails the test.
//!
//! Alerts: before any fault the alerts panel says plainly that nothing is firing and no
//! marker carries an alert ring; after the pump trip (injected through the demo's
//! `POST /api/v1/sim/faults`, and firing in the API before the page is loaded) the panel
//! lists the `pump-trip` alert as critical and firing at the pump's site, and that site's
//! marker is ringed in the critical colour.
//!
//! Broadcasts: before any, the broadcasts panel says "No broadcasts."; then a red flood
//! warning to every speaker, created with the admin token and approved by the second
//! operator, plays on every speaker but the offline one, and the panel shows it red,
//! sending and "played N of M" as the API counts; on the map every site with a speaker
//! has a broadcast badge, green where all played it and amber at the offline speaker's.
//!
//! Driven through `testkit::browser` (the page keeps a live event stream open, which a
//! `--dump-dom` run with a virtual time budget would wait on for ever): the DOM is read once
//! the page has refreshed twice and shows what the test waits for.
//!
//! Needs `/usr/bin/chromium` (`.ci/setup` installs it); without it the test fails and says
//! so. To refresh the screenshot in the docs, run it with `VT_DASHBOARD_SCREENSHOT` set:
//!
//! ```sh
//! VT_DASHBOARD_SCREENSHOT=docs/dashboard.png cargo test -p village-tests dashboard
//! ```
//!
//! (a relative path is taken from the workspace root).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ingest::demo::{Demo, DemoOptions};
use protocol::DeviceKind;
use simulator::{Fault, Table};

use serde_json::json;

use testkit::browser::{Browser, PageOptions};
use testkit::eventually;

use crate::broadcast::{call, in_secs};
use crate::common::get_json;

/// Longest a browser run may take (in real time) before the test gives up on it.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(40);

/// Body temperatures pinned on three cows (°C x 100, the collar's register), warmest first.
const SICK: [u16; 3] = [4060, 4030, 3990];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_every_site_marker_quality_value_and_cow_the_faults_and_their_alerts_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DemoOptions {
        http: SocketAddr::from(([127, 0, 0, 1], 0)),
        mqtt: SocketAddr::from(([127, 0, 0, 1], 0)),
        data: Some(dir.path().join("data")),
        ..DemoOptions::default()
    };
    let demo = Demo::start(opts).await.expect("demo starts");
    demo.county.set_random_outages(false);
    let base = format!("http://{}", demo.ingest.http);
    let plan = demo.county.plan().clone();
    let url = format!("{base}/");
    let pump = plan.devices().find(|d| d.kind == DeviceKind::PumpStation).unwrap().id.clone();
    let pump_site = plan.devices().find(|d| d.id == pump).unwrap().site.clone();
    let speaker = plan.devices().find(|d| d.kind == DeviceKind::Speaker).unwrap().id.clone();

    // Before any fault: the pump reports, the rules have seen it, and no alert is open.
    eventually("the pump's first reading and no open alert in the API", Duration::from_secs(30), || {
        let (base, pump) = (&base, &pump);
        async move {
            let fault = get_json(base, &format!("/api/v1/latest?device={pump}&metric=fault_word")).await;
            let open = get_json(base, "/api/v1/alerts?state=active").await;
            (fault[0]["value"].as_f64()? == 0.0 && open.as_array()?.is_empty()).then_some(())
        }
    })
    .await;
    let quiet = load(&url, "true", None).await;
    let panel = element(&quiet, "<section id=\"alerts-panel\"", "</section>");
    assert!(
        panel.contains("class=\"alerts-empty") && panel.contains("No alerts: nothing is firing."),
        "the alerts panel does not say that nothing is firing: {panel}"
    );
    assert!(!panel.contains("<table"), "an alert table with no alert open: {panel}");
    let map = element(&quiet, "<svg class=\"county\"", "</svg>");
    assert!(!map.contains("alert-ring"), "a marker has an alert ring with no alert open: {map}");
    let broadcasts = element(&quiet, "<section id=\"broadcasts-panel\"", "</section>");
    assert!(
        broadcasts.contains("class=\"broadcasts-none\"") && broadcasts.contains("No broadcasts."),
        "the broadcasts panel does not say that there are none: {broadcasts}"
    );
    assert!(!broadcasts.contains("<li"), "a broadcast listed before any was made: {broadcasts}");

    // Faults the page must show: three sick cows, a tripped pump, a speaker gone. The
    // pump's through the demo's API, as an operator trying the demo would.
    let cows: Vec<String> = plan.devices().flat_map(|d| d.children.iter().cloned()).collect();
    let sick: Vec<&String> = cows.iter().skip(10).step_by(30).take(SICK.len()).collect();
    for (cow, centi) in sick.iter().zip(SICK) {
        demo.county.pin_register(cow, Table::Input, 2, &[centi]).unwrap();
    }
    inject(&base, &demo.admin_token, &pump, "pump_trip").await;
    demo.county.inject(&speaker, Fault::SpeakerOffline).unwrap();

    let herd_size = cows.len();
    eventually(
        "every cow, the analyser, the pump fault and the speaker outage in the API",
        Duration::from_secs(40),
        || {
            let (base, sick_top, pump, speaker) = (&base, sick[0], &pump, &speaker);
            async move {
                let temps = get_json(base, "/api/v1/latest?metric=body_temperature").await;
                let temps = temps.as_array()?;
                let top = temps.iter().find(|r| r["device"] == sick_top.as_str())?;
                let fault = get_json(base, &format!("/api/v1/latest?device={pump}&metric=fault_word")).await;
                let quality = get_json(base, "/api/v1/latest?kind=water_quality&metric=turbidity").await;
                let speakers = get_json(base, "/api/v1/devices?kind=speaker").await;
                let gone = speakers.as_array()?.iter().any(|d| d["id"] == speaker.as_str() && d["online"] == false);
                (temps.len() >= herd_size
                    && top["value"].as_f64()? > 40.5
                    && fault[0]["value"].as_f64()? > 0.0
                    && !quality.as_array()?.is_empty()
                    && gone)
                    .then_some(())
            }
        },
    )
    .await;
    // Load the page only once the alert fires, so what it shows does not depend on timing.
    let alert = eventually("the pump-trip alert firing in the API", Duration::from_secs(30), || {
        let (base, pump) = (&base, &pump);
        async move {
            let firing = get_json(base, "/api/v1/alerts?state=firing&rule=pump-trip").await;
            firing.as_array()?.iter().find(|a| a["device"] == pump.as_str()).cloned()
        }
    })
    .await;

    // A red flood warning to every speaker: created with the admin token, approved by the
    // second operator, and played by every speaker but the one that is offline.
    let flood = json!({
        "level": "red", "text": "山洪预警：请立即撤离到高处。", "targets": ["all"], "repeat": 1,
        "expires_at": in_secs(600),
    });
    let (status, created) =
        call("POST", &format!("{base}/api/v1/broadcasts"), Some(&demo.admin_token), Some(flood)).await;
    assert_eq!(status, 201, "creating the broadcast: {created}");
    let id = created["id"].as_u64().expect("a broadcast id");
    let (status, approved) =
        call("POST", &format!("{base}/api/v1/broadcasts/{id}/approve"), Some(&demo.operator_token), None).await;
    assert_eq!(status, 200, "approving the broadcast: {approved}");
    eventually("the broadcast played by every online speaker", Duration::from_secs(40), || {
        let (base, speaker) = (&base, &speaker);
        async move {
            let (_, v) = call("GET", &format!("{base}/api/v1/broadcasts/{id}"), None, None).await;
            let deliveries = v["deliveries"].as_array()?;
            let mut online = deliveries.iter().filter(|d| d["speaker"] != speaker.as_str());
            (deliveries.len() > 1 && online.all(|d| d["state"] == "played")).then_some(())
        }
    })
    .await;

    let sites = get_json(&base, "/api/v1/sites").await;
    let sites = sites.as_array().unwrap().clone();
    // The map's broadcast badges come from one read of the broadcast and its live events.
    let dom = load(&url, "document.querySelector('#map .bc-badge')", None).await;
    // The offline speaker never plays it, so these are what the page read.
    let (_, broadcast) = call("GET", &format!("{base}/api/v1/broadcasts/{id}"), None, None).await;
    // Alerts only end after minutes clear: every alert open during the page load is in here.
    let open = get_json(&base, "/api/v1/alerts?state=firing,acknowledged").await;

    // Every site by name, and one marker per site on the map.
    let map = element(&dom, "<svg class=\"county\"", "</svg>");
    for site in &sites {
        let (id, name) = (site["id"].as_str().unwrap(), site["name"].as_str().unwrap());
        // "东村 Dongcun": the Chinese name and the pinyin are shown side by side.
        let parts = name.split_once(' ').map_or(vec![name], |(zh, pinyin)| vec![zh, pinyin]);
        for part in parts {
            assert!(dom.contains(&format!(">{part}<")), "site name {name:?} ({part}) not on the page");
        }
        assert_eq!(map.matches(&format!("data-site=\"{id}\"")).count(), 1, "one marker for {id}");
    }
    assert_eq!(map.matches("class=\"marker ").count(), sites.len(), "one marker per site");

    // A water-quality value with its unit, in the quality table.
    let quality = element(&dom, "<table class=\"quality\"", "</table>");
    let texts = texts(quality);
    for unit in ["NTU", "mg/L"] {
        assert!(
            texts.iter().any(|t| t.strip_suffix(&format!(" {unit}")).is_some_and(|n| n.trim().parse::<f64>().is_ok())),
            "no value in {unit} in the quality table: {texts:?}"
        );
    }

    // The herd: a cell per cow, the sick ones first, marked as fever.
    let herd = element(&dom, "<svg class=\"herd\"", "</svg>");
    let cells: Vec<&str> = herd.split("<rect ").skip(1).collect();
    assert_eq!(cells.len(), cows.len(), "one herd cell per cow");
    for (cell, cow) in cells.iter().zip(&sick) {
        assert!(cell.contains(&format!("data-device=\"{cow}\"")), "{cow} should be among the warmest first: {cell}");
        assert!(cell.contains("class=\"cow fever\""), "{cow} should be marked with fever: {cell}");
    }
    assert_eq!(herd.matches("class=\"cow fever\"").count(), SICK.len(), "only the sick cows have fever");

    // The tripped pump makes its site need attention, and says why; the speaker is a red dot.
    let marker = map.split("<g ").find(|g| g.contains(&format!("data-site=\"{pump_site}\""))).unwrap();
    assert!(marker.contains("state-attention"), "the tripped pump's site is not marked: {marker}");
    assert!(dom.contains("fault: trip"), "the trip is not named on the page");
    assert!(dom.contains(&format!("{speaker}: offline")), "the offline speaker is not shown");

    // The alerts panel: the pump trip, critical and firing, at the pump's site by name.
    let panel = element(&dom, "<section id=\"alerts-panel\"", "</section>");
    let rows: Vec<&str> = panel.split("<tr class=\"alert ").skip(1).collect();
    let row = rows
        .iter()
        .find(|r| r.contains("data-rule=\"pump-trip\"") && r.contains(&format!("data-device=\"{pump}\"")))
        .unwrap_or_else(|| panic!("no pump-trip alert for {pump} in the alerts panel: {panel}"));
    assert!(row.contains("data-severity=\"critical\""), "the pump trip is not critical: {row}");
    assert!(row.contains("<span class=\"sev\">Critical</span>"), "the severity is not written out: {row}");
    assert!(row.contains("data-state=\"firing\"") && row.contains(">firing<"), "not shown as firing: {row}");
    assert!(row.contains(&format!("data-alert=\"{}\"", alert["id"])), "not the API's alert {}: {row}", alert["id"]);
    let summary = alert["summary"].as_str().unwrap().replace('&', "&amp;");
    assert!(row.contains(&summary), "the summary {summary:?} is not shown: {row}");
    let site_name = sites.iter().find(|x| x["id"] == pump_site.as_str()).unwrap()["name"].as_str().unwrap();
    for part in site_name.split(' ') {
        assert!(row.contains(&format!(">{part}<")), "the site is not named ({site_name}): {row}");
    }
    assert!(row.contains("data-action=\"ack\""), "no acknowledge button for a firing alert: {row}");
    // Most severe first.
    let rank =
        |r: &&str| ["critical", "warning", "info"].iter().position(|s| r.contains(&format!("data-severity=\"{s}\"")));
    let ranks: Vec<_> = rows.iter().map(rank).collect();
    assert!(ranks.is_sorted(), "alerts are not most severe first: {ranks:?}");

    // The map: the pump's site is ringed in the critical colour, and only sites with an
    // open (firing or acknowledged) alert are ringed at all.
    assert!(
        marker.contains("alerting sev-critical") && marker.contains("class=\"alert-ring\""),
        "the pump's site has no critical alert ring: {marker}"
    );
    let alerted: BTreeSet<&str> = open.as_array().unwrap().iter().filter_map(|a| a["site"].as_str()).collect();
    for ringed in map.split("<g class=\"marker ").skip(1).filter(|g| g.contains("alert-ring")) {
        let site = ringed.split("data-site=\"").nth(1).and_then(|x| x.split('"').next()).unwrap();
        assert!(alerted.contains(site), "{site} is ringed but has no open alert: {open}");
    }

    // The broadcasts panel: the flood warning, red, sending, and played by all but one.
    let panel = element(&dom, "<section id=\"broadcasts-panel\"", "</section>");
    let row = element(panel, "<li class=\"broadcast level-red", "</li>");
    assert!(row.contains(&format!("data-broadcast=\"{id}\"")), "not the API's broadcast {id}: {row}");
    assert!(row.contains("data-level=\"red\"") && row.contains("<span class=\"level\">Red</span>"), "not red: {row}");
    let state = broadcast["state"].as_str().unwrap();
    assert_eq!(state, "active", "one speaker is offline, so the broadcast is still on: {broadcast}");
    assert!(row.contains("data-state=\"active\"") && row.contains(">sending<"), "not shown as sending: {row}");
    assert!(row.contains("山洪预警"), "the text is not shown: {row}");
    let played = broadcast["counts"]["played"].as_u64().unwrap();
    let total = broadcast["speakers"].as_u64().unwrap();
    assert!(played >= 1 && played + 1 == total, "all but the offline speaker played: {broadcast}");
    assert!(row.contains(&format!(">played {played} of {total}<")), "not \"played {played} of {total}\": {row}");
    assert!(row.contains("class=\"part-played\""), "no played part in the progress bar: {row}");
    assert_eq!(panel.matches("<li class=\"broadcast ").count(), 1, "one broadcast listed: {panel}");

    // The map: while it is on, each site with a targeted speaker has a broadcast badge, green
    // where every speaker played it, amber at the offline speaker's site; no other site has one.
    let speakers_at = |site: &str| {
        plan.devices()
            .filter(|d| d.kind == DeviceKind::Speaker && d.site == site)
            .map(|d| d.id.clone())
            .collect::<Vec<_>>()
    };
    let speaker_site = plan.devices().find(|d| d.id == speaker).unwrap().site.clone();
    for g in map.split("<g class=\"marker ").skip(1) {
        let site = g.split("data-site=\"").nth(1).and_then(|x| x.split('"').next()).unwrap();
        let targeted = speakers_at(site);
        if targeted.is_empty() {
            assert!(!g.contains("bc-badge"), "{site} has no speaker but a broadcast badge: {g}");
        } else if site == speaker_site {
            assert!(g.contains("class=\"bc-badge bcm-progress\""), "{site} (offline speaker) is not amber: {g}");
        } else {
            assert!(g.contains("class=\"bc-badge bcm-played\""), "{site}'s speakers all played, not green: {g}");
        }
    }
    assert!(map.contains("bcm-played"), "no site shows the broadcast played: {map}");

    if let Some(path) = std::env::var_os("VT_DASHBOARD_SCREENSHOT") {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
        load(&url, "document.querySelector('#map .bc-badge')", Some(&path)).await;
    }
    demo.stop().await;
}

/// Loads `url` in Debian's Chromium (1366x900) and returns the page's HTML once it has
/// rendered from the API, refreshed twice and `ready` (a JavaScript expression) holds;
/// fails on any JavaScript error. Saves a screenshot to `shot` if given.
async fn load(url: &str, ready: &str, shot: Option<&Path>) -> String {
    let browser = Browser::launch().await.expect("Chromium starts: run .ci/setup (it installs the `chromium` package)");
    let page = browser.page(PageOptions { width: 1366, height: 900, mobile: false }).await.expect("a page");
    page.goto(url).await.expect("the dashboard loads");
    let when = format!(
        "document.documentElement.dataset.ready === 'true' && Number(document.documentElement.dataset.refreshes) >= 2 \
         && Boolean({ready})"
    );
    page.wait_for(&when, BROWSER_TIMEOUT).await.expect("the page rendered from the API");
    let dom = page.eval("document.documentElement.outerHTML").await.expect("the page's HTML");
    let dom = dom.as_str().unwrap_or_default().to_string();
    let html_tag = &dom[dom.find("<html").expect("an <html> element")..];
    let html_tag = &html_tag[..html_tag.find('>').expect("the <html> tag ends")];
    assert!(html_tag.contains("data-errors=\"\""), "JavaScript errors on the page: {html_tag}");
    // The page asks who is signed in; nobody is, and the browser logs that 401.
    let errors: Vec<String> =
        page.errors().into_iter().filter(|e| !(e.contains("status of 401") && e.contains("/api/v1/session"))).collect();
    assert!(errors.is_empty(), "JavaScript errors in the console: {errors:#?}");
    if let Some(path) = shot {
        page.screenshot(path, false).await.expect("a screenshot");
    }
    dom
}

/// Injects `fault` into `device` through the demo's API.
async fn inject(base: &str, token: &str, device: &str, fault: &str) {
    let body = serde_json::json!({ "device": device, "fault": fault }).to_string();
    let resp = reqwest::Client::new()
        .post(format!("{base}/api/v1/sim/faults"))
        .header("Authorization", format!("Token {token}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /api/v1/sim/faults: {e}"));
    let status = resp.status();
    assert_eq!(status.as_u16(), 201, "injecting {fault} into {device}: {}", resp.text().await.unwrap_or_default());
}

/// The first element that starts with `start`, up to the first `end` after it.
fn element<'a>(dom: &'a str, start: &str, end: &str) -> &'a str {
    let from = dom.find(start).unwrap_or_else(|| panic!("no {start} in the page"));
    let to = dom[from..].find(end).map_or(dom.len(), |i| from + i + end.len());
    &dom[from..to]
}

/// The text between tags, trimmed, without the empty ones.
fn texts(html: &str) -> BTreeSet<String> {
    html.split('>')
        .filter_map(|s| s.split('<').next())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}
