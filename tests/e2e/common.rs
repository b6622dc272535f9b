//! Helpers shared by the end-to-end tests that know this project (its API, its clock);
//! the generic ones (waiting, ports, processes, peers) are the shared `testkit`.

use serde_json::Value;

/// Held for their whole run by the tests that build a large world in this process (a
/// 1,000-speaker county, the full-size county's API, a week of a county's readings) and by
/// the attacks test, whose memory bound (`attacks.rs`, `RSS_GROWTH_MIB`) measures the whole
/// test process: so the bound is never charged with another test's county. The test
/// harness runs two tests at a time; the rest still overlap freely.
pub(crate) static MEMORY_HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// GETs a JSON document from the API; panics with the body on a non-2xx status.
pub(crate) async fn get_json(base: &str, path: &str) -> Value {
    let resp = reqwest::get(format!("{base}{path}")).await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    assert!(status.is_success(), "GET {path}: {status}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
}

/// Milliseconds since the Unix epoch now.
pub(crate) fn now_ms() -> i64 {
    daemon::now().0
}
