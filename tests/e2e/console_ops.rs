//! The operator console's alerts and control (issue 13, items 3, 4 and 6), against the
//! in-process demo county: real gateways polling real Modbus devices, ingest's rules,
//! alert log and command signing.
//!
//! `the_console_api_*`: the server side. A maintenance window at a site mutes the alerts
//! there and marks them as maintenance (an alert that fired before the window is not muted:
//! the positive control), is listed with its site, start, end and reason, filtered by site
//! and time; the alert history filters by site, rule and time; a command carries the
//! operator's reason into its record and the audit log, and its outcome follows the
//! gateway's ack (`written`; `refused` with the gateway's reason for a value out of range);
//! an acknowledgement's note and the windows survive a restart of ingest.
//!
//! `the_console_in_a_browser_*`: the same through the page, with real clicks and typing in
//! Debian's Chromium (`testkit::browser`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ingest::demo::{Demo, DemoOptions};
use protocol::DeviceKind;
use serde_json::{Value, json};
use testkit::browser::{Browser, Page, PageOptions};
use testkit::eventually;

use crate::broadcast::{call, in_secs};

const ADMIN: &str = "console-ops-admin-token-0123456789";
const OPERATOR: &str = "console-ops-operator-token-0123456789";
/// The demo's people and their passwords in these tests: two operators of the county and a viewer.
const PEOPLE: [(&str, &str); 3] =
    [("wang", "wang-password-0123"), ("li", "li-password-0123"), ("viewer", "viewer-password-0123")];

/// Starts the demo on `data` (again after a restart: the store's lock is let go a moment
/// after the last ingest stopped, so it retries for a while).
async fn start(data: &Path) -> Demo {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let opts = DemoOptions {
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            mqtt: SocketAddr::from(([127, 0, 0, 1], 0)),
            data: Some(data.to_path_buf()),
            admin_token: Some(ADMIN.into()),
            operator_token: Some(OPERATOR.into()),
            passwords: PEOPLE.iter().map(|(n, p)| (n.to_string(), p.to_string())).collect(),
            ..DemoOptions::default()
        };
        match Demo::start(opts).await {
            Ok(demo) => {
                demo.county.set_random_outages(false);
                return demo;
            }
            Err(e) if format!("{e:#}").contains("already open") && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the demo starts: {e:#}"),
        }
    }
}

fn base(demo: &Demo) -> String {
    format!("http://{}", demo.ingest.http)
}

/// The pump station of the demo county and its site.
fn pump(demo: &Demo) -> (String, String) {
    let plan = demo.county.plan();
    let d = plan.devices().find(|d| d.kind == DeviceKind::PumpStation).expect("a pump station");
    (d.id.clone(), d.site.clone())
}

/// The open `rule` alert of `device`, once it fires.
async fn firing(base: &str, rule: &str, device: &str, secs: u64) -> Value {
    eventually(&format!("the {rule} alert of {device} firing"), Duration::from_secs(secs), || async move {
        let (_, v) = call("GET", &format!("{base}/api/v1/alerts?state=active&rule={rule}"), None, None).await;
        v.as_array()?.iter().find(|a| a["device"] == device && a["state"] != "pending").cloned()
    })
    .await
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array().map(|a| a.iter().filter_map(|x| x["id"].as_u64()).collect()).unwrap_or_default()
}

/// Follows command `id` until its outcome is final.
async fn outcome(base: &str, id: u64) -> Value {
    eventually(&format!("command {id} to end"), Duration::from_secs(30), || async move {
        let (s, v) = call("GET", &format!("{base}/api/v1/commands/{id}"), None, None).await;
        (s == 200 && v["outcome"]["final"] == true).then_some(v)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_api_mutes_a_sites_alerts_under_maintenance_lists_windows_filters_history_and_audits_command_reasons()
 {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let demo = start(&data).await;
    let base = base(&demo);
    let (pump, site) = pump(&demo);
    let other_site = demo.county.plan().sites.iter().find(|s| s.id != site).expect("another site").id.clone();

    // Planning maintenance needs an operator, a known site and a reason.
    let window = |site: &str, reason: &str| json!({ "site": site, "ends_at": in_secs(3600), "reason": reason });
    let url = format!("{base}/api/v1/maintenance");
    assert_eq!(call("POST", &url, None, Some(window(&site, "pump overhaul"))).await.0, 401);
    assert_eq!(call("POST", &url, Some(OPERATOR), Some(window("no-such-site", "pump overhaul"))).await.0, 404);
    assert_eq!(call("POST", &url, Some(OPERATOR), Some(window(&site, " "))).await.0, 422, "a window needs a reason");

    // The pump trips before any window: its alert fires and is not muted.
    let (s, v) = call(
        "POST",
        &format!("{base}/api/v1/sim/faults"),
        Some(ADMIN),
        Some(json!({ "device": pump, "fault": "pump_trip" })),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let alert = firing(&base, "pump-trip", &pump, 60).await;
    let id = alert["id"].as_u64().unwrap();
    assert_eq!((alert["maintenance"].as_bool(), alert["muted"].is_null()), (Some(false), true), "{alert}");

    // Maintenance at the pump's site from now: the alert is muted and marked maintenance.
    let (s, w) = call("POST", &url, Some(OPERATOR), Some(window(&site, "pump overhaul"))).await;
    assert_eq!(s, 201, "{w}");
    assert_eq!(
        (w["site"].as_str(), w["state"].as_str(), w["created_by"].as_str()),
        (Some(&*site), Some("active"), Some("operator-2"))
    );
    let muted = eventually("the pump-trip alert muted by the window", Duration::from_secs(10), || {
        let url = format!("{base}/api/v1/alerts/{id}");
        async move {
            let (_, a) = call("GET", &url, None, None).await;
            (a["maintenance"] == true).then_some(a)
        }
    })
    .await;
    assert_eq!(muted["muted"]["kind"], "maintenance", "{muted}");
    assert_eq!(muted["muted"]["reason"], "pump overhaul");
    assert_eq!(muted["silenced_by"], w["id"]);
    // A window planned for tomorrow is listed as planned and mutes nothing yet.
    let tomorrow = json!({ "site": other_site, "starts_at": in_secs(86_400), "ends_at": in_secs(90_000), "reason": "mains flush" });
    let (s, later) = call("POST", &url, Some(OPERATOR), Some(tomorrow)).await;
    assert_eq!((s, later["state"].as_str()), (201, Some("planned")), "{later}");

    // The windows are listed with site, start, end and reason, and filtered by site and time.
    let (_, all) = call("GET", &url, None, None).await;
    assert_eq!(ids(&all), [later["id"].as_u64().unwrap(), w["id"].as_u64().unwrap()], "newest first: {all}");
    let listed = &all[1];
    for field in ["site", "start", "end", "starts_at", "ends_at", "reason"] {
        assert!(listed[field].is_string(), "no {field} in {listed}");
    }
    let (_, v) = call("GET", &format!("{url}?site={site}"), None, None).await;
    assert_eq!(ids(&v), [w["id"].as_u64().unwrap()], "only the pump site's window: {v}");
    let (_, v) = call("GET", &format!("{url}?from={}", in_secs(80_000)), None, None).await;
    assert_eq!(ids(&v), [later["id"].as_u64().unwrap()], "only tomorrow's overlaps tomorrow: {v}");
    let (_, v) = call("GET", &format!("{url}?to={}", in_secs(1800)), None, None).await;
    assert_eq!(ids(&v), [w["id"].as_u64().unwrap()], "only today's begins before half an hour from now: {v}");

    // Acknowledged with a note.
    let note = "Technician Zhang on the way to reset the relay";
    let (s, v) =
        call("POST", &format!("{base}/api/v1/alerts/{id}/ack"), Some(OPERATOR), Some(json!({ "note": note }))).await;
    assert_eq!((s, v["ack"]["note"].as_str()), (200, Some(note)), "{v}");
    assert_eq!(v["maintenance"], true, "the answer still says what mutes it: {v}");

    // History by site, rule and time; each filter also shown to exclude.
    let history = |q: String| {
        let base = base.clone();
        async move { ids(&call("GET", &format!("{base}/api/v1/alerts?{q}"), None, None).await.1) }
    };
    let started = ingest::api::time::parse(alert["started_at"].as_str().unwrap()).unwrap().0;
    let at = |ms: i64| ingest::api::time::rfc3339(protocol::Timestamp(ms));
    assert!(history(format!("site={site}&rule=pump-trip")).await.contains(&id));
    assert!(!history(format!("site={other_site}&rule=pump-trip")).await.contains(&id));
    assert!(!history(format!("site={site}&rule=turbidity-high")).await.contains(&id));
    assert!(
        history(format!("rule=pump-trip&from={}&to={}", at(started - 60_000), at(started + 1))).await.contains(&id)
    );
    assert!(!history(format!("rule=pump-trip&to={}", at(started - 60_000))).await.contains(&id), "began after `to`");
    assert!(history("rule=pump-trip&state=acknowledged".to_string()).await.contains(&id));
    assert!(!history("rule=pump-trip&state=resolved".to_string()).await.contains(&id));

    // Controls: the pump's writable points; commanding it needs an operator.
    let (_, models) = call("GET", &format!("{base}/api/v1/controls"), None, None).await;
    let pump_points = models
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "vt-sim-pump-station")
        .unwrap_or_else(|| panic!("no pump model in {models}"))["points"]
        .clone();
    assert!(pump_points.as_array().unwrap().iter().any(|p| p["name"] == "pump_run" && p["control"] == "switch"));
    let controls = format!("{base}/api/v1/devices/{pump}/controls");
    assert_eq!(call("GET", &controls, None, None).await.1["may_command"], false, "an anonymous reader");
    assert_eq!(call("GET", &controls, Some(OPERATOR), None).await.1["may_command"], true, "an operator");

    // A command with a reason: written by the gateway, the reason in the record and the audit
    // log; a value out of the profile's range is refused by the gateway with its reason.
    let commands = format!("{base}/api/v1/devices/{pump}/commands");
    let why = "Manual run while the level transmitter is checked";
    let (s, v) =
        call("POST", &commands, Some(OPERATOR), Some(json!({ "point": "auto_mode", "value": 1, "reason": why }))).await;
    assert_eq!(s, 202, "{v}");
    let written = outcome(&base, v["id"].as_u64().unwrap()).await;
    assert_eq!(written["outcome"]["state"], "written", "{written}");
    assert_eq!((written["reason"].as_str(), written["issued_by"].as_str()), (Some(why), Some("operator-2")));
    let (s, v) =
        call("POST", &commands, Some(OPERATOR), Some(json!({ "point": "pump_run", "value": 7, "reason": "typo" })))
            .await;
    assert_eq!(s, 202, "ingest does not check ranges, the gateway does: {v}");
    let refused = outcome(&base, v["id"].as_u64().unwrap()).await;
    assert_eq!(refused["outcome"]["state"], "refused", "{refused}");
    assert!(refused["outcome"]["reason"].as_str().unwrap_or("").starts_with("out_of_range"), "{refused}");
    let (s, v) = call(
        "POST",
        &commands,
        Some(OPERATOR),
        Some(json!({ "point": "pump_run", "value": 1, "reason": "x".repeat(501) })),
    )
    .await;
    assert_eq!(s, 400, "a reason over 500 characters: {v}");
    let audit = std::fs::read_to_string(data.join(ingest::command::AUDIT_FILE)).unwrap();
    assert!(audit.lines().any(|l| l.contains("\"event\":\"issued\"") && l.contains(why)), "{audit}");
    let (_, c) = call("GET", &controls, Some(OPERATOR), None).await;
    assert_eq!(c["recent"].as_array().map(Vec::len), Some(2), "the pump's recent commands: {c}");

    // Restart: the note and both windows are still there.
    demo.stop().await;
    let demo = start(&data).await;
    let base = self::base(&demo);
    let (_, a) = call("GET", &format!("{base}/api/v1/alerts/{id}"), None, None).await;
    assert_eq!((a["ack"]["note"].as_str(), a["ack"]["by"].as_str()), (Some(note), Some("operator-2")), "{a}");
    let (_, all) = call("GET", &format!("{base}/api/v1/maintenance"), None, None).await;
    assert_eq!(all.as_array().map(Vec::len), Some(2), "{all}");
    assert_eq!(all[1]["reason"], "pump overhaul");
    demo.stop().await;
}

/// How long the page may take to show what the API already says (one 5 s refresh, twice).
const PAGE: Duration = Duration::from_secs(15);

/// Where the screenshots go: the workspace's docs/.
fn docs(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs").join(name)
}

/// Opens the dashboard in `lang` and waits until it has rendered the county.
async fn open(browser: &Browser, base: &str, opts: PageOptions, lang: &str) -> Page {
    let page = browser.page(opts).await.expect("a page");
    page.goto(&format!("{base}/?lang={lang}")).await.expect("the dashboard loads");
    page.wait_for("document.documentElement.dataset.ready === 'true'", PAGE).await.expect("the page renders");
    page
}

/// Fails with the page's JavaScript errors, if it had any. One browser log line is not an
/// error of the page: session.js asks `GET /api/v1/session` before anyone signed in, and
/// the server's answer, 401, is logged by Chromium as a failed load.
fn no_errors(page: &Page, who: &str) {
    let signed_out = |e: &String| e.contains("status of 401") && e.contains("/api/v1/session)");
    let errors: Vec<String> = page.errors().into_iter().filter(|e| !signed_out(e)).collect();
    assert!(errors.is_empty(), "JavaScript errors on {who}'s page: {errors:#?}");
}

/// A JS expression: the element matching `css` exists.
fn exists(css: &str) -> String {
    format!("document.querySelector({}) !== null", json!(css))
}

/// A JS expression: the text of the element matching `css` (empty if none).
fn text_of(css: &str) -> String {
    format!("document.querySelector({})?.textContent ?? ''", json!(css))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_browser_silences_and_acknowledges_alerts_starts_the_tripped_pump_and_speaks_chinese() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let demo = start(&data).await;
    let base = base(&demo);
    let (pump, _site) = pump(&demo);
    let browser = Browser::launch().await.expect("Chromium starts");

    // The operator signs in.
    let op = open(&browser, &base, PageOptions::DESKTOP, "en").await;
    sign_in(&op, Role::Operator).await;

    // The pump trips, and its chlorine dosing fails (a second alert, about a minute later).
    for fault in ["pump_trip", "chlorine_dosing_failure"] {
        let (s, v) = call(
            "POST",
            &format!("{base}/api/v1/sim/faults"),
            Some(ADMIN),
            Some(json!({ "device": pump, "fault": fault })),
        )
        .await;
        assert_eq!(s, 201, "{fault}: {v}");
    }
    let trip = firing(&base, "pump-trip", &pump, 60).await;
    let trip_id = trip["id"].as_u64().unwrap();
    let row = format!("#alerts tr[data-alert=\"{trip_id}\"]");
    op.wait_for(&exists(&format!("{row}[data-state=\"firing\"]")), PAGE).await.expect("the pump trip is listed");

    // Silence it from the alert: the matchers come from its labels; a duration and a reason.
    op.click(&format!("{row} button.alert-open")).await.expect("the alert's details open");
    op.wait_for(&exists("#alert-detail[open] #detail-silence"), PAGE).await.expect("the details offer a silence");
    op.wait_for(&exists("#alert-detail-chart svg.chart .mark.fired"), PAGE).await.expect("the chart around the firing");
    op.click("#detail-silence").await.expect("the silence form opens");
    let checked: Value = op
        .eval("[...document.querySelectorAll('#silence-form input[name=matcher]:checked')].map(b => `${b.value}=${b.dataset.value}`)")
        .await
        .unwrap();
    assert_eq!(checked, json!(["rule=pump-trip", format!("device={pump}")]), "matchers from the alert's labels");
    op.select("#silence-duration", "2").await.expect("a duration");
    op.type_into("#silence-reason", "Relay being replaced by the county electrician").await.expect("a reason");
    op.click("#silence-submit").await.expect("silence");
    op.wait_for(&exists("#alert-detail-message:not([hidden])"), PAGE).await.expect("the silence is confirmed");
    op.wait_for(&exists(&format!("{row}[data-muted=\"silence\"]")), PAGE).await.expect("the alert is shown muted");
    let (_, a) = call("GET", &format!("{base}/api/v1/alerts/{trip_id}"), None, None).await;
    assert_eq!(a["muted"]["kind"], "silence", "{a}");
    assert_eq!(a["muted"]["reason"], "Relay being replaced by the county electrician");
    op.screenshot(docs("console-alerts.png"), false).await.expect("a screenshot");
    op.click("#alert-detail button.close").await.expect("the details close");

    // Acknowledge the other alert with a note.
    let dosing = firing(&base, "chlorine-dosing-failure", &pump, 150).await;
    let dosing_row = format!("#alerts tr[data-alert=\"{}\"]", dosing["id"]);
    op.wait_for(&exists(&format!("{dosing_row} button.ack")), PAGE).await.expect("the dosing alert is listed");
    op.click(&format!("{dosing_row} button.ack")).await.expect("the acknowledge dialog opens");
    op.type_into("#ack-note", "Dosing pump hose checked by Wang").await.expect("a note");
    op.click("#ack-submit").await.expect("acknowledge");
    op.wait_for(&exists(&format!("{dosing_row}[data-state=\"acknowledged\"]")), PAGE).await.expect("acknowledged");
    assert!(op.text(&format!("{dosing_row} .ack-note")).await.unwrap().contains("Dosing pump hose checked by Wang"));

    // The fault is cleared on site; the operator starts the pump from the control panel.
    let (s, _) = call("DELETE", &format!("{base}/api/v1/sim/faults/{pump}"), Some(ADMIN), None).await;
    assert_eq!(s, 200);
    eventually("the trip bit to clear", Duration::from_secs(30), || {
        let url = format!("{base}/api/v1/latest?device={pump}&metric=fault_word");
        async move { (call("GET", &url, None, None).await.1[0]["value"].as_f64()? as u32 & 1 == 0).then_some(()) }
    })
    .await;
    op.wait_for(&exists("#control-panel:not([hidden]) #control-device"), PAGE).await.expect("the control panel");
    op.select("#control-device", &pump).await.expect("the pump chosen");
    let mut sent = Vec::new();
    for (point, value, reason) in [
        ("auto_mode", "0", "Manual control while the relay is watched"),
        ("pump_run", "1", "Restart after the trip was cleared by the electrician"),
    ] {
        op.click(&format!("#control button[data-point=\"{point}\"][data-value=\"{value}\"]")).await.expect("a control");
        op.wait_for(&exists("#control-confirm[open]"), PAGE).await.expect("a confirmation is asked");
        op.type_into("#control-reason", reason).await.expect("a reason");
        op.click("#control-submit").await.expect("confirm");
        // The answer to this command, not the one before.
        let before = sent.last().map_or(String::new(), |(id, _): &(u64, &str)| id.to_string());
        let outcome = op
            .wait_for(
                &format!(
                    "(() => {{ const r = document.querySelector('#control-result'); \
                     return r && r.dataset.command !== {} && !['sent', 'sending'].includes(r.dataset.outcome) \
                     ? {{ outcome: r.dataset.outcome, id: r.dataset.command }} : null; }})()",
                    json!(before)
                ),
                Duration::from_secs(30),
            )
            .await
            .expect("the gateway's answer");
        assert_eq!(outcome["outcome"], "written", "{point}: {outcome}");
        sent.push((outcome["id"].as_str().unwrap().parse::<u64>().unwrap(), reason));
    }
    op.screenshot(docs("console-control.png"), false).await.expect("a screenshot");
    for (id, reason) in &sent {
        let (_, c) = call("GET", &format!("{base}/api/v1/commands/{id}"), None, None).await;
        assert_eq!((c["reason"].as_str(), c["outcome"]["state"].as_str()), (Some(*reason), Some("written")), "{c}");
        assert_eq!(c["issued_by"], "wang", "the signed-in person issued it: {c}");
    }
    no_errors(&op, "the operator");

    // A viewer sees no control panel and cannot silence (the positive control: the operator could).
    let viewer = open(&browser, &base, PageOptions::DESKTOP, "en").await;
    sign_in(&viewer, Role::Viewer).await;
    viewer.wait_for(&exists(&row), PAGE).await.expect("the viewer sees the alert");
    assert_eq!(
        viewer.eval(&exists("#control-panel:not([hidden])")).await.unwrap(),
        json!(false),
        "a viewer's control panel"
    );
    assert_eq!(viewer.eval(&exists("#control button[data-action=\"control-ask\"]")).await.unwrap(), json!(false));
    viewer.click(&format!("{row} button.alert-open")).await.expect("the details open for a viewer too");
    viewer.wait_for(&exists("#alert-detail[open] #alert-detail-info dl"), PAGE).await.expect("details");
    assert_eq!(viewer.eval(&exists("#detail-silence")).await.unwrap(), json!(false), "no silence button for a viewer");
    no_errors(&viewer, "the viewer");

    // In Chinese: the same alert with its Chinese summary, times in Beijing time, and the
    // control outcome in Chinese.
    let zh = open(&browser, &base, PageOptions::DESKTOP, "zh").await;
    sign_in(&zh, Role::Operator).await;
    let (_, a) = call("GET", &format!("{base}/api/v1/alerts/{trip_id}"), None, None).await;
    // The server's Chinese summary (engineer notify's `summary_zh`); until an ingest gives
    // one, the page falls back to the English summary, which is what it must then show.
    let summary_zh = match a["summary_zh"].as_str() {
        Some(zh) => {
            assert_ne!(zh, a["summary"].as_str().unwrap(), "the Chinese summary is not the English one");
            zh.to_string()
        }
        None => {
            eprintln!("NOTE: this ingest gives no summary_zh yet; checking the English fallback instead: {a}");
            a["summary"].as_str().unwrap().to_string()
        }
    };
    zh.wait_for(&format!("{}.includes({})", text_of(&format!("{row} .alert-summary")), json!(summary_zh)), PAGE)
        .await
        .expect("the Chinese summary in the alerts table");
    zh.click(&format!("{row} button.alert-open")).await.expect("details in Chinese");
    zh.wait_for(&format!("{}.includes('月')", text_of("#alert-detail-info dl")), PAGE)
        .await
        .expect("a date as written in China");
    assert!(zh.text("#alert-detail-info .detail-summary").await.unwrap().contains(&summary_zh));
    zh.click("#alert-detail button.close").await.expect("close");
    zh.wait_for(&exists("#control-panel:not([hidden]) #control-device"), PAGE)
        .await
        .expect("the control panel in Chinese");
    assert!(zh.text("#control-title").await.unwrap().contains("控制"));
    no_errors(&zh, "the Chinese page");

    // On a phone: the alerts and the control panel.
    let phone = open(&browser, &base, PageOptions::PHONE, "zh").await;
    sign_in(&phone, Role::Operator).await;
    phone.wait_for(&exists("#control-panel:not([hidden])"), PAGE).await.expect("the control panel on a phone");
    phone.screenshot(docs("console-phone.png"), false).await.expect("a phone screenshot");
    no_errors(&phone, "the phone");

    drop(browser);
    demo.stop().await;
}

/// Who signs in.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    Operator,
    Viewer,
}

/// Signs in on the page's form as the demo's operator `wang` or its viewer, typing the name
/// and password and clicking "Sign in", and waits until the page knows who it is.
async fn sign_in(page: &Page, role: Role) {
    let (name, password) = PEOPLE[if role == Role::Operator { 0 } else { 2 }];
    page.wait_for(&exists("#signin-form:not([hidden])"), PAGE).await.expect("the sign-in form");
    page.type_into("#signin-user", name).await.expect("the name");
    page.type_into("#signin-password", password).await.expect("the password");
    page.click("#signin-submit").await.expect("sign in");
    page.wait_for(&format!("document.documentElement.dataset.user === {}", json!(name)), PAGE)
        .await
        .expect("signed in");
}
