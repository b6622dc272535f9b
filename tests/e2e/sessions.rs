//! People signing in (issue 13): the session cookie's flags, CSRF, the lockout, idle
//! expiry, roles enforced by the server whatever the page sends, admins managing people,
//! and the audit log of it all. Against the real demo over HTTP; the browser test of the
//! same (sign in, a viewer's page, a forged request, sign out, the audit view) is
//! `the_dashboard_signs_people_in_...` below.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ingest::config::SessionSettings;
use ingest::demo::{Demo, DemoOptions};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::broadcast::{base, fast, gateways_online, small};

/// The demo people's fixed passwords in these tests.
const PASSWORDS: [(&str, &str); 4] = [
    ("admin", "admin-pass-0123"),
    ("wang", "wang-pass-01234"),
    ("li", "li-pass-0123456"),
    ("viewer", "viewer-pass-0123"),
];

fn password(name: &str) -> &'static str {
    PASSWORDS.iter().find(|(n, _)| *n == name).map(|(_, p)| *p).unwrap_or_default()
}

/// A small demo whose people have the passwords above.
async fn start(dir: &std::path::Path, sessions: SessionSettings) -> Demo {
    let opts = DemoOptions {
        http: SocketAddr::from(([127, 0, 0, 1], 0)),
        mqtt: SocketAddr::from(([127, 0, 0, 1], 0)),
        data: Some(dir.to_path_buf()),
        spec: small(1),
        broadcast: Some(fast()),
        passwords: PASSWORDS.iter().map(|(n, p)| (n.to_string(), p.to_string())).collect(),
        sessions,
        ..DemoOptions::default()
    };
    let demo = Demo::start(opts).await.expect("demo starts");
    demo.county.set_random_outages(false);
    demo
}

/// A person's browser, reduced to what matters here: the session cookie and its CSRF token.
struct Person {
    base: String,
    http: reqwest::Client,
    cookie: String,
    csrf: String,
}

/// What a sign-in answered.
struct SignIn {
    status: StatusCode,
    set_cookie: Option<String>,
    retry_after: Option<String>,
    body: Value,
}

async fn sign_in_raw(base: &str, user: &str, pw: &str) -> SignIn {
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/session"))
        .json(&json!({ "user": user, "password": pw }))
        .send()
        .await
        .expect("sign-in answers");
    let header = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (set_cookie, retry_after) = (header("set-cookie"), header("retry-after"));
    let status = r.status();
    let body = r.json().await.unwrap_or(Value::Null);
    SignIn { status, set_cookie, retry_after, body }
}

async fn sign_in(base: &str, user: &str, pw: &str) -> Person {
    let s = sign_in_raw(base, user, pw).await;
    assert_eq!(s.status, StatusCode::OK, "{user} signs in: {}", s.body);
    let set = s.set_cookie.expect("a session cookie is set");
    let cookie = set.split(';').next().unwrap_or_default().to_string();
    let csrf = s.body["csrf"].as_str().expect("the csrf token is answered").to_string();
    Person { base: base.to_string(), http: reqwest::Client::new(), cookie, csrf }
}

impl Person {
    /// A request with the cookie; with the CSRF header if `csrf`; `extra` headers too.
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        csrf: bool,
        extra: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut r = self.http.request(method, format!("{}{path}", self.base)).header("cookie", &self.cookie);
        if csrf {
            r = r.header("x-csrf-token", &self.csrf);
        }
        for (k, v) in extra {
            r = r.header(*k, *v);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("the API answers");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call("GET", path, None, false, &[]).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, Some(body), true, &[]).await
    }
}

/// A blue broadcast (no second operator needed) to every speaker of tenant county.
fn blue_broadcast() -> Value {
    let expires = ingest::time::rfc3339(protocol::Timestamp(crate::common::now_ms() + 600_000));
    json!({ "level": "blue", "text": "明天上午停水检修。", "targets": ["all"], "expires_at": expires, "tenant": "county" })
}

#[tokio::test]
async fn a_session_cookie_is_httponly_strict_and_a_change_needs_its_csrf_header_and_this_sites_origin() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let demo = start(dir.path(), SessionSettings::default()).await;
    let base = base(&demo);
    gateways_online(&demo, 30).await;

    let s = sign_in_raw(&base, "wang", password("wang")).await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.body);
    let set = s.set_cookie.expect("Set-Cookie");
    for flag in ["vt_session=", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(flag), "{flag} in {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP on loopback: no Secure flag unless configured: {set}");
    let id = set.trim_start_matches("vt_session=").split(';').next().unwrap_or_default();
    assert_eq!(id.len(), 64, "a 256-bit random id: {set}");
    assert_eq!(s.body["user"], "wang");
    assert_eq!(s.body["grants"], json!([{ "tenant": "county", "role": "operator" }]));
    assert!(s.body["csrf"].as_str().is_some_and(|c| c.len() == 64 && c != id), "{}", s.body);
    // The id is not kept: not in any file of the data directory.
    for entry in std::fs::read_dir(dir.path()).expect("the data dir").flatten() {
        if entry.path().is_file() {
            let bytes = std::fs::read(entry.path()).unwrap_or_default();
            assert!(
                !bytes.windows(id.len()).any(|w| w == id.as_bytes()),
                "{} holds the session id",
                entry.path().display()
            );
        }
    }

    let wang = sign_in(&base, "wang", password("wang")).await;
    let (st, me) = wang.get("/api/v1/session").await;
    assert_eq!((st, me["user"].as_str()), (StatusCode::OK, Some("wang")));
    assert_eq!(me["csrf"].as_str(), Some(wang.csrf.as_str()), "GET session answers the CSRF token");

    // A change by cookie without the header: refused, and nothing was created.
    let (st, body) = wang.call("POST", "/api/v1/broadcasts", Some(blue_broadcast()), false, &[]).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("x-csrf-token")), "{body}");
    // With a wrong header, or from another site's page: refused.
    let (st, _) = wang
        .call("POST", "/api/v1/broadcasts", Some(blue_broadcast()), false, &[("x-csrf-token", "0".repeat(64).as_str())])
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, body) = wang
        .call("POST", "/api/v1/broadcasts", Some(blue_broadcast()), true, &[("origin", "http://evil.example")])
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    let list = crate::common::get_json(&base, "/api/v1/broadcasts").await;
    assert_eq!(list.as_array().map(Vec::len), Some(0), "no refused request created anything: {list}");
    // Positive control: with the header (and this site's origin), created.
    let origin = base.clone();
    let (st, created) =
        wang.call("POST", "/api/v1/broadcasts", Some(blue_broadcast()), true, &[("origin", origin.as_str())]).await;
    assert_eq!(st, StatusCode::CREATED, "{created}");
    assert_eq!(created["created_by"].as_str().or(created["by"].as_str()).unwrap_or("wang"), "wang");

    // A machine's token is unchanged: no CSRF header needed.
    let (st, _) = {
        let r = reqwest::Client::new()
            .post(format!("{base}/api/v1/broadcasts"))
            .header("authorization", format!("Token {}", demo.admin_token))
            .json(&blue_broadcast())
            .send()
            .await
            .expect("answer");
        (r.status(), ())
    };
    assert_eq!(st, StatusCode::CREATED);

    // Sign-out ends the session (it needs the CSRF header too) and clears the cookie.
    let (st, _) = wang.call("DELETE", "/api/v1/session", None, false, &[]).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "sign-out without the header is a forged change");
    let r = wang
        .http
        .delete(format!("{base}/api/v1/session"))
        .header("cookie", &wang.cookie)
        .header("x-csrf-token", &wang.csrf)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let cleared = r.headers().get("set-cookie").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert!(cleared.contains("vt_session=;") && cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(wang.get("/api/v1/session").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(wang.post("/api/v1/broadcasts", blue_broadcast()).await.0, StatusCode::UNAUTHORIZED);
    demo.stop().await;
}

#[tokio::test]
async fn a_viewer_is_refused_every_operator_action_whatever_it_sends_and_the_audit_log_lists_what_people_did() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let demo = start(dir.path(), SessionSettings::default()).await;
    let base = base(&demo);
    gateways_online(&demo, 30).await;
    let viewer = sign_in(&base, "viewer", password("viewer")).await;
    let wang = sign_in(&base, "wang", password("wang")).await;
    let pump = demo
        .ingest
        .state
        .inventory
        .devices()
        .iter()
        .find(|d| d.kind == protocol::DeviceKind::PumpStation)
        .map(|d| d.id.clone())
        .expect("the demo has a pump station");

    // Everything an operator does, sent by the viewer's session with a valid CSRF header.
    let until = ingest::time::rfc3339(protocol::Timestamp(crate::common::now_ms() + 3_600_000));
    let silence =
        json!({ "matchers": { "site": "dongcun" }, "ends_at": until, "reason": "repair", "tenant": "county" });
    let write = json!({ "point": "run", "value": 1.0 });
    let attempts: [(&str, String, Value); 5] = [
        ("POST", "/api/v1/broadcasts".into(), blue_broadcast()),
        ("POST", "/api/v1/silences".into(), silence.clone()),
        ("POST", format!("/api/v1/devices/{pump}/commands"), write.clone()),
        ("POST", "/api/v1/users".into(), json!({ "name": "x1", "grants": [{ "tenant": "county", "role": "admin" }] })),
        ("POST", "/api/v1/sim/faults".into(), json!({ "device": pump, "fault": "pump_trip" })),
    ];
    for (method, path, body) in &attempts {
        let (st, answer) = viewer.call(method, path, Some(body.clone()), true, &[]).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "viewer {method} {path}: {answer}");
    }
    // The viewer reads its tenant.
    assert_eq!(viewer.get("/api/v1/broadcasts").await.0, StatusCode::OK);
    // Positive control: the operator's same requests are allowed.
    let (st, b) = wang.post("/api/v1/broadcasts", blue_broadcast()).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let id = b["id"].as_u64().expect("a broadcast id");
    let (st, s) = wang.post("/api/v1/silences", silence).await;
    assert_eq!(st, StatusCode::CREATED, "{s}");
    let (st, c) = wang.post(&format!("/api/v1/devices/{pump}/commands"), write).await;
    assert!(st == StatusCode::ACCEPTED || st == StatusCode::UNPROCESSABLE_ENTITY, "{st} {c}");
    let (st, _) = wang.post(&format!("/api/v1/broadcasts/{id}/cancel"), json!({})).await;
    assert_eq!(st, StatusCode::OK);
    // But an operator does not manage people.
    assert_eq!(wang.get("/api/v1/users").await.0, StatusCode::FORBIDDEN);
    let _ = sign_in_raw(&base, "li", "not-her-password").await;

    // The audit log: every sign-in (and the failed one) with its address, and what was done.
    let admin = sign_in(&base, "admin", password("admin")).await;
    let (st, entries) = admin.get("/api/v1/audit?limit=500").await;
    assert_eq!(st, StatusCode::OK, "{entries}");
    let entries = entries.as_array().cloned().unwrap_or_default();
    let has = |actor: &str, action: &str| {
        entries.iter().any(|e| e["actor"] == actor && e["action"] == action && e["ip"] == "127.0.0.1")
    };
    for (actor, action) in [
        ("viewer", "signin"),
        ("wang", "signin"),
        ("li", "signin.failed"),
        ("admin", "signin"),
        ("wang", "broadcast.create"),
        ("wang", "broadcast.cancel"),
        ("wang", "silence.create"),
    ] {
        assert!(has(actor, action), "{actor} {action} in the audit log: {entries:#?}");
    }
    let created = entries.iter().find(|e| e["action"] == "broadcast.create").expect("broadcast.create");
    assert_eq!(
        (created["tenant"].as_str(), created["target"].as_str(), created["via"].as_str()),
        (Some("county"), Some(id.to_string().as_str()), Some("session"))
    );
    // Nothing the viewer was refused is in it.
    assert!(!entries.iter().any(|e| e["actor"] == "viewer" && e["action"] != "signin"), "{entries:#?}");
    // Filters: by action kind, by actor, by text.
    // A kind matches itself and its sub-kinds (`signin` and `signin.failed`).
    let (_, only) = admin.get("/api/v1/audit?action=signin").await;
    let kinds: Vec<&str> =
        only.as_array().map(|a| a.iter().filter_map(|e| e["action"].as_str()).collect()).unwrap_or_default();
    assert!(kinds.len() == 4 && kinds.iter().all(|k| *k == "signin" || *k == "signin.failed"), "{only}");
    let (_, only) = admin.get("/api/v1/audit?actor=li").await;
    assert!(only.as_array().is_some_and(|a| a.len() == 1 && a[0]["action"] == "signin.failed"), "{only}");
    let (_, only) = admin.get("/api/v1/audit?q=repair").await;
    assert!(only.as_array().is_some_and(|a| a.len() == 1 && a[0]["action"] == "silence.create"), "{only}");
    // An operator of the county reads it too; a viewer does not.
    assert_eq!(wang.get("/api/v1/audit").await.0, StatusCode::OK);
    assert_eq!(viewer.get("/api/v1/audit").await.0, StatusCode::FORBIDDEN);
    // It is durable and chained.
    let v = ingest::broadcast::audit::verify(&dir.path().join(ingest::people::log::FILE)).expect("the chain verifies");
    assert!(v.lines as usize >= entries.len());
    demo.stop().await;
}

#[tokio::test]
async fn five_failed_sign_ins_lock_a_name_with_retry_after_and_unknown_names_take_as_long() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let demo = start(dir.path(), SessionSettings::default()).await;
    let base = base(&demo);
    // Failures take the same time whether the name exists or not (both check an Argon2id hash).
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..3 {
        let t = Instant::now();
        assert_eq!(sign_in_raw(&base, "viewer", &format!("wrong-{i}")).await.status, StatusCode::UNAUTHORIZED);
        known.push(t.elapsed());
        let t = Instant::now();
        let s = sign_in_raw(&base, &format!("nobody-{i}"), "wrong").await;
        assert_eq!(s.status, StatusCode::UNAUTHORIZED);
        assert_eq!(s.body["error"], "wrong user name or password", "the answer does not say which");
        unknown.push(t.elapsed());
    }
    known.sort();
    unknown.sort();
    let (k, u) = (known[1].as_secs_f64(), unknown[1].as_secs_f64());
    assert!(u > k / 3.0 && u < k * 3.0, "median failure: known name {k:.3} s, unknown name {u:.3} s");

    // Five failures of li: the sixth try is refused, even with her right password.
    for i in 0..5 {
        assert_eq!(sign_in_raw(&base, "li", &format!("guess-{i}")).await.status, StatusCode::UNAUTHORIZED, "try {i}");
    }
    let s = sign_in_raw(&base, "li", password("li")).await;
    assert_eq!(s.status, StatusCode::TOO_MANY_REQUESTS, "{}", s.body);
    let retry: u64 = s.retry_after.as_deref().and_then(|r| r.parse().ok()).expect("Retry-After in seconds");
    assert!(retry > 800 && retry <= 900, "the lock lifts when the first failure is 15 min old: {retry}");
    // Counted in Prometheus.
    let metrics = reqwest::get(format!("{base}/metrics")).await.expect("metrics").text().await.unwrap_or_default();
    let value = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    assert!(value("ingest_signin_lockouts_total").is_some_and(|v| v >= 1.0), "{metrics}");
    assert!(value("ingest_signin_failures_total").is_some_and(|v| v >= 11.0), "{metrics}");
    // Positive control: another person signs in from the same address.
    assert_eq!(sign_in_raw(&base, "wang", password("wang")).await.status, StatusCode::OK);
    demo.stop().await;
}

#[tokio::test]
async fn an_idle_session_ends_while_one_in_use_lives_on() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let sessions = SessionSettings { idle_timeout: Duration::from_secs(3), ..SessionSettings::default() };
    let demo = start(dir.path(), sessions).await;
    let base = base(&demo);
    let idle = sign_in(&base, "wang", password("wang")).await;
    let busy = sign_in(&base, "li", password("li")).await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // The page's background refresh does not count as use; li's clicks do.
        let (st, _) = idle.call("GET", "/api/v1/broadcasts", None, false, &[("x-vt-background", "1")]).await;
        assert_eq!(st, StatusCode::OK, "reads are public in the demo");
        assert_eq!(busy.get("/api/v1/session").await.0, StatusCode::OK, "a session in use lives on");
    }
    assert_eq!(idle.get("/api/v1/session").await.0, StatusCode::UNAUTHORIZED, "idle for 5 s > 3 s: ended");
    assert_eq!(idle.post("/api/v1/broadcasts", blue_broadcast()).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(busy.post("/api/v1/broadcasts", blue_broadcast()).await.0, StatusCode::CREATED);
    demo.stop().await;
}

#[tokio::test]
async fn an_admin_adds_people_resets_passwords_and_changes_roles_within_their_tenants() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let demo = start(dir.path(), SessionSettings::default()).await;
    let base = base(&demo);
    let admin = sign_in(&base, "admin", password("admin")).await;

    // A new operator with a generated password, shown once.
    let (st, zhao) = admin
        .post("/api/v1/users", json!({ "name": "zhao", "grants": [{ "tenant": "county", "role": "operator" }] }))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{zhao}");
    let first = zhao["password"].as_str().expect("a generated password").to_string();
    let (st, _) =
        admin.post("/api/v1/users", json!({ "name": "zhao", "password": "another-pass-0", "grants": [] })).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "names are unique");
    let (st, _) = admin.post("/api/v1/users", json!({ "name": "qian", "password": "short", "grants": [] })).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "short passwords are refused");
    let z = sign_in(&base, "zhao", &first).await;
    assert_eq!(z.post("/api/v1/broadcasts", blue_broadcast()).await.0, StatusCode::CREATED);

    // Made a viewer: the next request of the same session is refused.
    let (st, changed) = admin
        .call(
            "PATCH",
            "/api/v1/users/zhao",
            Some(json!({ "grants": [{ "tenant": "county", "role": "viewer" }] })),
            true,
            &[],
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{changed}");
    assert_eq!(z.post("/api/v1/broadcasts", blue_broadcast()).await.0, StatusCode::FORBIDDEN);

    // A password reset ends zhao's sessions; the new password works, the old does not.
    let (st, reset) = admin.post("/api/v1/users/zhao/password", json!({})).await;
    assert_eq!(st, StatusCode::OK, "{reset}");
    assert_eq!(reset["sessions_ended"], 1);
    assert_eq!(z.get("/api/v1/session").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(sign_in_raw(&base, "zhao", &first).await.status, StatusCode::UNAUTHORIZED);
    let second = reset["password"].as_str().expect("a new password");
    sign_in(&base, "zhao", second).await;

    // An admin of the county manages the county's people only.
    let (st, _) = admin
        .post("/api/v1/users", json!({ "name": "sun", "password": "sun-pass-012345", "grants": [{ "tenant": "county", "role": "admin" }] }))
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let sun = sign_in(&base, "sun", "sun-pass-012345").await;
    let (st, _) = sun
        .post("/api/v1/users", json!({ "name": "farmer", "grants": [{ "tenant": "dairy", "role": "operator" }] }))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "not the county's grant to give");
    let (st, _) =
        sun.post("/api/v1/users", json!({ "name": "root2", "grants": [{ "tenant": "*", "role": "admin" }] })).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "not every tenant's");
    assert_eq!(sun.post("/api/v1/users/admin/password", json!({})).await.0, StatusCode::FORBIDDEN);
    // Positive control: the county's own.
    let (st, made) = sun
        .post("/api/v1/users", json!({ "name": "zhou", "grants": [{ "tenant": "county", "role": "viewer" }] }))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{made}");
    let (st, list) = sun.get("/api/v1/users").await;
    assert_eq!(st, StatusCode::OK);
    let names: Vec<&str> =
        list.as_array().map(|a| a.iter().filter_map(|u| u["name"].as_str()).collect()).unwrap_or_default();
    assert!(names.contains(&"zhou") && names.contains(&"wang") && !names.contains(&"admin"), "{names:?}");
    assert_eq!(sun.call("DELETE", "/api/v1/users/zhou", None, true, &[]).await.0, StatusCode::NO_CONTENT);

    // Nobody may leave the county without an admin of every tenant.
    let (st, body) = admin.call("DELETE", "/api/v1/users/admin", None, true, &[]).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    // Every change is in the audit log, by the admin who made it.
    let (_, log) = admin.get("/api/v1/audit?action=user").await;
    let actions: Vec<(String, String)> = log
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| (e["actor"].as_str().unwrap_or("").into(), e["action"].as_str().unwrap_or("").into()))
                .collect()
        })
        .unwrap_or_default();
    for want in [
        ("admin", "user.create"),
        ("admin", "user.update"),
        ("admin", "user.password"),
        ("sun", "user.create"),
        ("sun", "user.delete"),
    ] {
        assert!(actions.contains(&(want.0.to_string(), want.1.to_string())), "{want:?} in {actions:?}");
    }
    // The users file keeps only Argon2id hashes.
    let file = std::fs::read_to_string(dir.path().join(ingest::people::users::FILE)).expect("users.json");
    assert!(!file.contains(second) && !file.contains(password("wang")), "no password in the file");
    assert!(file.contains("$argon2id$v=19$m=19456,t=2,p=1$"));
    demo.stop().await;
}

/// Waits until `check` sees `Some`, polling the API every 500 ms.
async fn until<T, F, Fut>(what: &str, secs: u64, check: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    testkit::eventually(what, Duration::from_secs(secs), check).await
}

#[tokio::test]
async fn the_dashboard_signs_people_in_shows_a_viewer_no_buttons_refuses_its_forged_request_and_lists_the_sign_ins() {
    use testkit::browser::{Browser, PageOptions};
    let dir = tempfile::tempdir().expect("a temp dir");
    let demo = start(dir.path(), SessionSettings::default()).await;
    let base = base(&demo);
    let pump = demo
        .county
        .plan()
        .devices()
        .find(|d| d.kind == protocol::DeviceKind::PumpStation)
        .map(|d| d.id.clone())
        .expect("a pump");
    // A firing alert, so that there is a button a viewer must not see (and an operator sees).
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/sim/faults"))
        .header("authorization", format!("Token {}", demo.admin_token))
        .json(&json!({ "device": pump, "fault": "pump_trip" }))
        .send()
        .await
        .expect("fault injected");
    assert_eq!(r.status(), StatusCode::CREATED);
    until("the pump-trip alert firing", 90, || {
        let (base, pump) = (&base, &pump);
        async move {
            let firing = crate::common::get_json(base, "/api/v1/alerts?state=firing&rule=pump-trip").await;
            firing.as_array()?.iter().any(|a| a["device"] == pump.as_str()).then_some(())
        }
    })
    .await;

    let browser = Browser::launch().await.expect("Chromium starts");
    let page = browser.page(PageOptions::DESKTOP).await.expect("a page");
    page.goto(&format!("{base}/")).await.expect("the dashboard loads");
    page.wait_for(
        "document.documentElement.dataset.ready === 'true' && !document.getElementById('signin-form').hidden",
        Duration::from_secs(30),
    )
    .await
    .expect("the page and its sign-in form show");
    // Signed out, the page offers acknowledging with a token, as before sessions.
    page.wait_for("document.querySelectorAll('#alerts [data-action=ack]').length > 0", Duration::from_secs(15))
        .await
        .expect("an ack button");

    // The viewer signs in by typing, as a person does.
    page.type_into("#signin-user", "viewer").await.expect("name typed");
    page.type_into("#signin-password", password("viewer")).await.expect("password typed");
    page.click("#signin-submit").await.expect("sign in clicked");
    page.wait_for(
        "document.documentElement.dataset.user === 'viewer' && !document.getElementById('signed-in').hidden",
        Duration::from_secs(20),
    )
    .await
    .expect("signed in as viewer");
    assert_eq!(page.text("#signed-in-name").await.expect("the name"), "viewer");
    assert!(page.eval("document.getElementById('signin-form').hidden").await.expect("eval") == json!(true));
    // Not one button the viewer may not use: no acknowledge, compose, approve, control,
    // silence; no people panel; no audit view. The page has redrawn since (wait for a refresh).
    let refreshes = page.eval("Number(document.documentElement.dataset.refreshes)").await.expect("eval");
    page.wait_for(
        &format!("Number(document.documentElement.dataset.refreshes) > {refreshes}"),
        Duration::from_secs(15),
    )
    .await
    .expect("a refresh");
    let forbidden = "[data-action=ack], [data-action=compose], [data-action=approve], [data-action=refuse], \
                     [data-action=control], [data-action=silence], [data-action=cancel]";
    let shown = page
        .eval(&format!("[...document.querySelectorAll('{forbidden}')].filter((e) => e.offsetParent !== null).length"))
        .await
        .expect("eval");
    assert_eq!(shown, json!(0), "a viewer's page offers an action it may not take");
    for hidden in ["users-details", "audit-details"] {
        assert_eq!(
            page.eval(&format!("document.getElementById('{hidden}').hidden")).await.expect("eval"),
            json!(true),
            "{hidden}"
        );
    }
    // A forged request with the viewer's own session and CSRF token: the server refuses it.
    let forged = page
        .eval(
            "(async () => { const s = await (await fetch('/api/v1/session')).json(); \
             const r = await fetch('/api/v1/broadcasts', { method: 'POST', headers: { 'content-type': 'application/json', \
             'x-csrf-token': s.csrf }, body: JSON.stringify({ level: 'red', text: '假警报', targets: ['all'], \
             expires_at: new Date(Date.now() + 600000).toISOString(), tenant: 'county' }) }); return r.status; })()",
        )
        .await
        .expect("the forged request is sent");
    assert_eq!(forged, json!(403), "a viewer's forged broadcast");
    let list = crate::common::get_json(&base, "/api/v1/broadcasts").await;
    assert_eq!(list.as_array().map(Vec::len), Some(0), "nothing was created: {list}");
    // Sign out: the form is back, the session is gone on the server.
    page.click("#signout").await.expect("sign out clicked");
    page.wait_for(
        "!document.getElementById('signin-form').hidden && document.documentElement.dataset.user === ''",
        Duration::from_secs(15),
    )
    .await
    .expect("signed out");
    assert_eq!(page.eval("fetch('/api/v1/session').then((r) => r.status)").await.expect("eval"), json!(401));

    // An operator in another browser context sees the acknowledge button (positive control)
    // and the audit view, which lists the sign-ins of both, with their address.
    let op = browser.page(PageOptions::DESKTOP).await.expect("a second page");
    op.goto(&format!("{base}/")).await.expect("the dashboard loads");
    op.wait_for("!document.getElementById('signin-form').hidden", Duration::from_secs(30)).await.expect("sign-in form");
    op.type_into("#signin-user", "wang").await.expect("name typed");
    op.type_into("#signin-password", password("wang")).await.expect("password typed");
    op.press("Enter").await.expect("Enter signs in");
    op.wait_for("document.documentElement.dataset.user === 'wang'", Duration::from_secs(20))
        .await
        .expect("signed in as wang");
    op.wait_for("document.querySelectorAll('#alerts [data-action=ack]').length > 0", Duration::from_secs(15))
        .await
        .expect("wang may acknowledge");
    op.click("#audit-open").await.expect("the audit view opens");
    op.wait_for(
        "[...document.querySelectorAll('#audit tr[data-audit=signin]')].some((r) => r.textContent.includes('viewer')) && \
         [...document.querySelectorAll('#audit tr[data-audit=signout]')].some((r) => r.textContent.includes('viewer'))",
        Duration::from_secs(15),
    )
    .await
    .expect("the audit view lists the viewer's sign-in and sign-out");
    let rows = op.text("#audit tbody").await.expect("the audit rows");
    assert!(rows.contains("wang") && rows.contains("127.0.0.1") && rows.contains("signed in"), "{rows}");
    // Search: only the sign-outs.
    op.select("#audit-kind", "signout").await.expect("kind chosen");
    op.click("#audit-submit").await.expect("search");
    op.wait_for("document.querySelectorAll('#audit tbody tr').length > 0 && [...document.querySelectorAll('#audit tbody tr')].every((r) => r.dataset.audit === 'signout')", Duration::from_secs(10))
        .await
        .expect("only sign-outs listed");
    // No JavaScript error on either page (refused requests are logged by the browser as
    // failed loads: those are the point of this test, not errors of the page).
    for (who, p) in [("viewer", &page), ("wang", &op)] {
        let errors: Vec<String> = p.errors().into_iter().filter(|e| !e.contains("Failed to load resource")).collect();
        assert!(errors.is_empty(), "{who}'s page: {errors:?}");
        assert_eq!(p.eval("document.documentElement.dataset.errors").await.expect("eval"), json!(""), "{who}'s page");
    }
    demo.stop().await;
}
