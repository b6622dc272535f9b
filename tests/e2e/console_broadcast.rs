//! The broadcast console in a real browser, against the in-process demo (issue 13, "Must
//! show"): two people, each in their own browser context, with real clicks and typing.
//!
//! The first operator signs in, opens "New broadcast", chooses red, fills the text from the
//! flood template, ticks one village and picks a second on the county map, and sends it:
//! the page shows it waiting for approval, and offers its creator no approve button (a
//! forged approve sent with the creator's own session is refused by the server, 403). The
//! second operator signs in on a phone-sized page, sees exactly what will play in the
//! approval queue, approves it in the dialog, and both pages watch every targeted speaker
//! reach `played`, from the live event stream. The same again with both pages switched to
//! Chinese, checked for Chinese text. Screenshots go to docs/ (desktop 1280x800, phone
//! 390x844). No JavaScript error on any page.
//!
//! Also here, without a browser: a second operator rejects a waiting broadcast with a
//! reason (nothing is sent; the creator may not; the reason is on the broadcast's trail).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ingest::demo::{Demo, DemoOptions};
use serde_json::{Value, json};
use testkit::browser::{Browser, Page, PageOptions};

use crate::broadcast::{base, call, create, get, in_secs, small, start};

/// Longest a page may take to show what the test waits for.
const UI: Duration = Duration::from_secs(20);
/// Longest the speakers may take to play a broadcast (a template reads for about 20 s).
const PLAY: Duration = Duration::from_secs(90);

/// Where a screenshot of the docs goes.
fn doc(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs").join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_operator_rejects_a_waiting_broadcast_with_a_reason_and_nothing_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let demo = start(small(1), dir.path()).await;
    let body = json!({"level": "orange", "text": "干旱橙色预警：请节约用水。", "targets": ["dongcun", "xicun"],
        "expires_at": in_secs(600)});
    let id = create(&demo, &demo.admin_token, body.clone()).await;
    let reject = format!("{}/api/v1/broadcasts/{id}/reject", base(&demo));

    let (status, v) = call("POST", &reject, Some(&demo.admin_token), Some(json!({"reason": "wrong village"}))).await;
    assert_eq!(status, 403, "the creator cannot reject their own (they cancel it): {v}");
    let (status, v) = call("POST", &reject, Some(&demo.operator_token), Some(json!({"reason": "  "}))).await;
    assert_eq!(status, 400, "a rejection needs a reason: {v}");
    assert!(v["error"].as_str().unwrap_or("").contains("reason"), "{v}");
    let (status, v) = call("POST", &reject, Some(&demo.operator_token), Some(json!({"reason": "西村不在旱区"}))).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("rejected")), "{v}");
    assert_eq!((v["rejected_by"].as_str(), v["rejection_reason"].as_str()), (Some("operator-2"), Some("西村不在旱区")));

    let v = get(&demo, id).await;
    let deliveries = v["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2, "{v}");
    for d in deliveries {
        assert_eq!(d["state"], "cancelled", "{d}");
        assert!(d["commands"].as_array().unwrap().is_empty(), "nothing was sent to {}: {d}", d["speaker"]);
    }
    let trail: Vec<&str> = v["trail"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(trail, ["created", "rejected"], "{v}");
    assert_eq!(v["trail"][1]["reason"], "西村不在旱区");
    let (status, v) =
        call("POST", &format!("{}/api/v1/broadcasts/{id}/approve", base(&demo)), Some(&demo.operator_token), None)
            .await;
    assert_eq!(status, 422, "a rejected broadcast cannot be approved after all: {v}");
    let cap = reqwest::get(format!("{}/api/v1/broadcasts/{id}/cap", base(&demo))).await.unwrap().text().await.unwrap();
    assert!(
        cap.contains("<msgType>Cancel</msgType>"),
        "a rejected broadcast exports as the Cancel of its alert: {cap}"
    );

    // Positive control: the same request approved by the second operator goes out.
    let id = create(&demo, &demo.admin_token, body).await;
    let (status, v) =
        call("POST", &format!("{}/api/v1/broadcasts/{id}/approve", base(&demo)), Some(&demo.operator_token), None)
            .await;
    assert_eq!((status, v["state"].as_str()), (200, Some("active")), "{v}");
    let (_, rules) = call("GET", &format!("{}/api/v1/broadcasts/rules", base(&demo)), None, None).await;
    assert_eq!(rules["approval_levels"], json!(["red", "orange"]), "{rules}");
    assert_eq!(rules["max_text_bytes"], 1500, "{rules}");
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operators_compose_approve_and_watch_a_red_flood_warning_play_in_english_and_chinese() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DemoOptions {
        http: SocketAddr::from(([127, 0, 0, 1], 0)),
        mqtt: SocketAddr::from(([127, 0, 0, 1], 0)),
        data: Some(dir.path().join("data")),
        spec: small(1),
        broadcast: Some(crate::broadcast::fast()),
        ..DemoOptions::default()
    };
    let demo = Demo::start(opts).await.expect("demo starts");
    demo.county.set_random_outages(false);
    crate::broadcast::gateways_online(&demo, 30).await;
    let url = format!("{}/", base(&demo));
    let [(first, first_pw), (second, second_pw)] = operators(&demo);

    let browser = Browser::launch().await.expect("Chromium starts (run .ci/setup)");
    let creator = browser.page(PageOptions::DESKTOP).await.unwrap();
    let approver = browser.page(PageOptions::PHONE).await.unwrap();
    sign_in(&creator, &url, &first, &first_pw).await;
    sign_in(&approver, &url, &second, &second_pw).await;

    // English.
    let id = compose_red_flood(&creator, &demo, ["dongcun", "xicun"], Some("console-compose.png")).await;
    let b = get(&demo, id).await;
    assert_eq!(b["state"], "pending_approval", "it waits for the second operator: {b}");
    assert_eq!(b["targets"], json!(["village:dongcun", "village:xicun"]), "{b}");
    assert_eq!(b["created_by"], first.as_str(), "{b}");
    assert!(b["content"]["text"].as_str().unwrap().contains("暴雨红色预警"), "filled from the flood template: {b}");
    creator_cannot_approve(&creator, id).await;
    let text = text_of(&creator, &format!("#approvals li[data-id=\"{id}\"]")).await;
    assert!(text.contains("You created it"), "the creator is told it waits for someone else: {text}");
    approve(&approver, id, &b, "2 speakers", Some("console-approve-phone.png")).await;
    watch_played(&approver, id, 2, "played").await;
    approver.screenshot(&doc("console-progress-phone.png"), false).await.unwrap();
    watch_played(&creator, id, 2, "played").await;
    creator.screenshot(&doc("console-progress.png"), false).await.unwrap();
    let b = get(&demo, id).await;
    assert_eq!(b["approved_by"], second.as_str(), "{b}");
    assert_eq!(b["counts"]["played"], 2, "{b}");
    let trail = text_of(&creator, "#bc-detail .bc-trail").await;
    assert!(
        trail.contains(&format!("created by {first}")) && trail.contains(&format!("approved by {second}")),
        "{trail}"
    );
    let cap = creator.eval("document.querySelector('#bc-detail a.bc-cap-link').getAttribute('href')").await.unwrap();
    assert_eq!(cap, json!(format!("/api/v1/broadcasts/{id}/cap")), "the CAP export is linked");

    // 中文.
    for page in [&creator, &approver] {
        page.click("#lang").await.unwrap();
        page.wait_for("document.documentElement.lang === 'zh-CN'", UI).await.unwrap();
    }
    let id = compose_red_flood(&creator, &demo, ["nancun", "dongcun"], None).await;
    let help = text_of(&creator, "#bc-detail").await;
    assert!(
        help.contains("等待审批") && help.contains("等待另一名操作员审批"),
        "the page says in Chinese that it waits: {help}"
    );
    let b = get(&demo, id).await;
    approve(&approver, id, &b, "2 个喇叭", Some("console-approve-phone-zh.png")).await;
    watch_played(&approver, id, 2, "已播放").await;
    watch_played(&creator, id, 2, "已播放").await;
    creator.screenshot(&doc("console-progress-zh.png"), false).await.unwrap();

    // Expected in the browser's log, and nothing else: the session check of a page not yet
    // signed in (401) and the creator's forged approval (403).
    let expected = |e: &String| {
        e.contains("status of 401") && e.contains("/api/v1/session")
            || e.contains("status of 403") && e.contains("/approve") && e.contains("log: Failed to load resource")
    };
    for (who, page) in [("creator", &creator), ("approver", &approver)] {
        let errors: Vec<String> = page.errors().into_iter().filter(|e| !expected(e)).collect();
        assert!(errors.is_empty(), "JavaScript errors on the {who}'s page: {errors:#?}");
    }
    drop(browser);
    demo.stop().await;
}

/// The demo's two operators of the county (`wang` and `li`): (name, password) each.
fn operators(demo: &Demo) -> [(String, String); 2] {
    ["wang", "li"].map(|name| {
        let p = demo.people.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("the demo has {name}"));
        (p.name.clone(), p.password.clone())
    })
}

/// Signs in through the page's form, as a person would.
async fn sign_in(page: &Page, url: &str, user: &str, password: &str) {
    page.goto(url).await.expect("the browser step succeeds");
    page.wait_for("document.documentElement.dataset.ready === 'true'", UI).await.expect("the browser step succeeds");
    page.type_into("#signin-user", user).await.expect("the browser step succeeds");
    page.type_into("#signin-password", password).await.expect("the browser step succeeds");
    page.click("#signin-submit").await.expect("the browser step succeeds");
    page.wait_for("document.documentElement.dataset.ready === 'true' && document.querySelector('#bc-new')", UI)
        .await
        .unwrap_or_else(|e| panic!("{user} signed in, the console offers New broadcast: {e}"));
}

/// Composes a red flood warning from the template to two villages (the first ticked, the
/// second picked on the map) and sends it; returns its id once the page shows it waiting.
async fn compose_red_flood(page: &Page, demo: &Demo, villages: [&str; 2], shot: Option<&str>) -> u64 {
    page.click("#bc-new").await.expect("the browser step succeeds");
    page.wait_for("!document.getElementById('compose-panel').hidden && document.querySelectorAll('#bc-villages input').length === 3", UI)
        .await
        .expect("the browser step succeeds");
    page.click("input[name=\"bc-level\"][value=\"red\"]").await.expect("the browser step succeeds");
    let help = text_of(page, "#bc-level-help").await;
    assert!(
        help.contains("second, different operator") || help.contains("另一名操作员审批"),
        "red says it needs a second operator: {help}"
    );
    page.select("#bc-template", "flood").await.expect("the browser step succeeds");
    page.click(&format!("input[name=\"bc-village\"][value=\"{}\"]", villages[0]))
        .await
        .expect("the browser step succeeds");
    // The second village on the county map: a click on its marker picks it.
    page.click(&format!("#map [data-site=\"{}\"] .shape", villages[1])).await.expect("the browser step succeeds");
    page.wait_for(
        &format!("document.querySelector('input[name=\"bc-village\"][value=\"{}\"]').checked", villages[1]),
        UI,
    )
    .await
    .expect("the village clicked on the map is picked");
    let names: Vec<String> = villages
        .iter()
        .map(|v| {
            let site = demo.county.plan().sites.iter().find(|s| s.id == *v).expect("the village is a site of the demo");
            site.name.split(' ').next().expect("a name").to_string()
        })
        .collect();
    let text = page.eval("document.getElementById('bc-text').value").await.expect("the browser step succeeds");
    let text = text.as_str().unwrap_or_default().to_string();
    assert!(text.contains("暴雨红色预警"), "the flood template, red: {text}");
    for n in &names {
        assert!(text.contains(n.as_str()), "the template names {n}: {text}");
    }
    let count = text_of(page, "#bc-text-count").await;
    assert!(count.contains("1500"), "the length against the server's limit: {count}");
    if let Some(name) = shot {
        // The form from its top (the map click scrolled the page down to the map).
        page.eval("document.getElementById('compose-panel').scrollIntoView()")
            .await
            .expect("the browser step succeeds");
        page.screenshot(&doc(name), false).await.expect("the browser step succeeds");
    }
    page.click("#bc-send").await.expect("the browser step succeeds");
    let id = page
        .wait_for("document.querySelector('#bc-detail [data-state=\"pending_approval\"]')?.dataset.broadcast", UI)
        .await
        .expect("the page shows the new broadcast waiting for approval");
    let id: u64 = id.as_str().and_then(|s| s.parse().ok()).or(id.as_u64()).expect("a broadcast id");
    let queued = format!("document.querySelector('#approvals li[data-id=\"{id}\"]')");
    page.wait_for(&queued, UI).await.expect("the broadcast is in the approval queue");
    id
}

/// The creator is not offered approve, and a forged approve with their session is refused.
async fn creator_cannot_approve(page: &Page, id: u64) {
    let offered = page
        .eval(&format!(
            "Boolean(document.querySelector('#approvals li[data-id=\"{id}\"] [data-action=\"bc-approve\"]'))"
        ))
        .await
        .expect("the browser step succeeds");
    assert_eq!(offered, Value::Bool(false), "the creator is offered to approve their own broadcast");
    let forged = page
        .eval(&format!(
            "import('/dashboard/js/api.js').then((api) => api.postJson('/api/v1/broadcasts/{id}/approve', {{}}))\
             .then(() => 200, (e) => e.status)"
        ))
        .await
        .expect("the browser step succeeds");
    assert_eq!(forged, json!(403), "the server refuses the creator's own approval");
}

/// The second operator approves `id` from the queue, after checking the dialog shows what plays.
async fn approve(page: &Page, id: u64, b: &Value, speakers: &str, shot: Option<&str>) {
    let button = format!("#approvals li[data-id=\"{id}\"] [data-action=\"bc-approve\"]");
    page.wait_for(&format!("document.querySelector('{}')", button.replace('\'', "\\'")), UI)
        .await
        .expect("the second operator is offered to approve it");
    page.click(&button).await.expect("the browser step succeeds");
    page.wait_for("document.getElementById('bc-decide').open", UI).await.expect("the browser step succeeds");
    let what = text_of(page, "#bc-decide").await;
    let text = b["content"]["text"].as_str().expect("a text broadcast");
    assert!(what.contains(text), "the dialog shows exactly the text that will play: {what}");
    assert!(what.contains(speakers), "the dialog says how many speakers: {what}");
    for target in b["targets"].as_array().expect("targets") {
        let village = target.as_str().expect("a target id").trim_start_matches("village:");
        let zh = match village {
            "dongcun" => "东村",
            "xicun" => "西村",
            _ => "南村",
        };
        assert!(what.contains(zh), "the dialog names {village}: {what}");
    }
    if let Some(name) = shot {
        page.screenshot(&doc(name), false).await.expect("the browser step succeeds");
    }
    page.click("#bc-decide-submit").await.expect("the browser step succeeds");
    page.wait_for(&format!("document.querySelector('#bc-detail [data-broadcast=\"{id}\"]')"), UI)
        .await
        .expect("the browser step succeeds");
}

/// Waits until the page shows every one of the `n` targeted speakers played (`word` in its row).
async fn watch_played(page: &Page, id: u64, n: usize, word: &str) {
    let check = format!(
        "(() => {{ const d = document.querySelector('#bc-detail [data-broadcast=\"{id}\"]'); if (!d) return false;\
         const rows = [...d.querySelectorAll('tr[data-speaker]')];\
         return rows.length === {n} && rows.every((r) => r.dataset.state === 'played' && r.textContent.includes('{word}')); }})()"
    );
    page.wait_for(&check, PLAY).await.unwrap_or_else(|e| panic!("every speaker of {id} played on the page: {e}"));
}

async fn text_of(page: &Page, css: &str) -> String {
    page.text(css).await.unwrap_or_else(|e| panic!("text of {css}: {e}"))
}
