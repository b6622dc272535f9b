//! The API at county size (issue 17), against a running ingest over real sockets with a
//! small inventory of two townships whose values are written through line protocol, so
//! that nothing changes unless the test changes it:
//!
//! - paging with cursors and with offsets returns every device and every latest value
//!   exactly once, with the total; no paging parameter gives the old bare array;
//! - `township`, `kind` and `site` filters keep exactly what they name (and something);
//! - ETag: the same answer again is `304` with no body, and `200` with a new tag once one
//!   value changed; gzip only when asked for, and it inflates to the same bytes;
//! - `/summary` counts by township and site, and a token scoped to the dairy sees none of
//!   the county's (the county's token, its own: positive control);
//! - `/stream` pushes a changed value within seconds, and only to readers of its tenant.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::net::SocketAddr;
use std::time::Duration;

use ingest::auth::{Role, TokenConfig};
use ingest::config::{BrokerConfig, IngestConfig};
use ingest::inventory::{Device, GatewayInfo, Inventory, InventoryFile, Site};
use ingest::service::{self, Options, Running};
use protocol::DeviceKind;
use serde_json::Value;
use testkit::eventually;

const ADMIN: &str = "large-api-admin-token-0123456789";
const COUNTY_OPERATOR: &str = "large-api-county-operator-0123456789";
const DAIRY_VIEWER: &str = "large-api-dairy-viewer-0123456789";
const DAIRY_OPERATOR: &str = "large-api-dairy-operator-0123456789";

fn site(id: &str, kind: &str, tenant: &str, township: Option<&str>) -> Site {
    Site {
        id: id.into(),
        name: format!("{id} name"),
        kind: kind.into(),
        tenant: tenant.into(),
        lat: 34.1,
        lon: 112.1,
        village: (kind == "village").then(|| id.to_string()),
        district: None,
        township: township.map(str::to_string),
    }
}

/// Two townships: `t-a` with villages `va1` (4 meters, 2 speakers) and `va2` (3 meters),
/// `t-b` with `vb1` (5 meters, 1 speaker); a dairy farm `farm` (tenant dairy) with a barn.
fn inventory() -> Inventory {
    let sites = vec![
        site("t-a", "township", "county", Some("t-a")),
        site("t-b", "township", "county", Some("t-b")),
        site("va1", "village", "county", Some("t-a")),
        site("va2", "village", "county", Some("t-a")),
        site("vb1", "village", "county", Some("t-b")),
        site("farm", "farm", "dairy", Some("t-b")),
    ];
    let villages = [("va1", 4, 2), ("va2", 3, 0), ("vb1", 5, 1)];
    let mut gateways = Vec::new();
    let mut devices = Vec::new();
    let dev = |id: String, kind: DeviceKind, site: &str, gw: &str| Device {
        id,
        kind,
        site: site.into(),
        gateway: gw.into(),
        model: String::new(),
        lat: None,
        lon: None,
        public_key: None,
    };
    for (v, meters, speakers) in villages {
        let gw = format!("gw-{v}");
        gateways.push(GatewayInfo { id: gw.clone(), tenant: "county".into(), site: v.into(), public_key: None });
        for m in 1..=meters {
            devices.push(dev(format!("{v}-meter-{m:03}"), DeviceKind::WaterMeter, v, &gw));
        }
        for s in 1..=speakers {
            devices.push(dev(format!("{v}-speaker-{s}"), DeviceKind::Speaker, v, &gw));
        }
    }
    gateways.push(GatewayInfo { id: "gw-farm".into(), tenant: "dairy".into(), site: "farm".into(), public_key: None });
    devices.push(dev("farm-barn-1".into(), DeviceKind::BarnClimate, "farm", "gw-farm"));
    Inventory::from_file(InventoryFile { sites, gateways, devices })
}

fn token(token: &str, role: Role, tenants: &[&str]) -> TokenConfig {
    TokenConfig {
        token: token.into(),
        role,
        tenants: tenants.iter().map(|t| t.to_string()).collect(),
        name: format!("{role:?}"),
    }
}

async fn service() -> (Running, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = IngestConfig::new(
        dir.path().to_path_buf(),
        BrokerConfig::Embedded { listen: SocketAddr::from(([127, 0, 0, 1], 0)) },
    );
    config.http = SocketAddr::from(([127, 0, 0, 1], 0));
    config.tokens = vec![
        token(ADMIN, Role::Admin, &[]),
        token(COUNTY_OPERATOR, Role::Operator, &["county"]),
        token(DAIRY_VIEWER, Role::Viewer, &["dairy"]),
        token(DAIRY_OPERATOR, Role::Operator, &["dairy"]),
    ];
    let ingest = service::start(config, inventory(), Options::default()).await.unwrap();
    let base = format!("http://{}", ingest.http);
    eventually("ingest to be ready", Duration::from_secs(20), || async {
        reqwest::get(format!("{base}/api/v1/health")).await.ok().filter(|r| r.status().is_success())
    })
    .await;
    (ingest, base, dir)
}

/// Writes line protocol as `token` (its tenant); panics unless it is stored (204).
async fn write(base: &str, token: &str, lines: &str) {
    let resp = reqwest::Client::new()
        .post(format!("{base}/api/v2/write?precision=ms"))
        .header("authorization", format!("Token {token}"))
        .body(lines.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert_eq!(status, 204, "write: {}", resp.text().await.unwrap_or_default());
}

/// GET as the admin with extra headers: (status, headers, body bytes).
async fn get(
    base: &str,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = reqwest::Client::new().get(format!("{base}{path}")).header("authorization", format!("Token {token}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.bytes().await.unwrap().to_vec())
}

async fn json(base: &str, path: &str, token: &str) -> Value {
    let (status, _, body) = get(base, path, token, &[]).await;
    assert_eq!(status, 200, "GET {path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// Every item of a paged list, following `next_cursor` from `path` (which has a `?`).
async fn all_pages(base: &str, path: &str, limit: usize) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let mut total = None;
    for _ in 0..1_000 {
        let page = match &cursor {
            Some(c) => json(base, &format!("{path}&limit={limit}&cursor={}", urlencode(c)), ADMIN).await,
            None => json(base, &format!("{path}&limit={limit}"), ADMIN).await,
        };
        let t = page["total"].as_u64().unwrap() as usize;
        assert_eq!(*total.get_or_insert(t), t, "the total is the same on every page");
        let got = page["items"].as_array().unwrap();
        assert!(got.len() <= limit);
        items.extend(got.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return (items, t),
        }
    }
    panic!("paging never ended");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }
        })
        .collect()
}

fn ids(items: &[Value], key: &str) -> Vec<String> {
    items.iter().map(|v| v[key].as_str().unwrap().to_string()).collect()
}

/// Every county device gets a flow or speaker reading at `ts`, the barn a temperature.
async fn write_all(base: &str, ts: i64) {
    let inv = inventory();
    let mut county = String::new();
    for d in inv.devices() {
        match d.kind {
            DeviceKind::WaterMeter => {
                county.push_str(&format!("flow,device={} value=0.0{} {ts}\n", d.id, d.id.len()));
                county.push_str(&format!("volume_total,device={} value=12.5 {ts}\n", d.id));
            }
            DeviceKind::Speaker => county.push_str(&format!("speaker_volume,device={} value=70 {ts}\n", d.id)),
            _ => {}
        }
    }
    write(base, COUNTY_OPERATOR, &county).await;
    write(base, DAIRY_OPERATOR, &format!("barn_temperature,device=farm-barn-1 value=18.5 {ts}\n")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_covers_every_device_and_value_once_and_filters_keep_what_they_name() {
    let (ingest, base, _dir) = service().await;
    let now = daemon::now().0;
    write_all(&base, now - 1_000).await;

    // Without paging parameters: the old bare array, every device.
    let whole = json(&base, "/api/v1/devices", ADMIN).await;
    let whole: BTreeSet<String> = ids(whole.as_array().unwrap(), "id").into_iter().collect();
    assert!(whole.len() >= 17, "12 meters, 3 speakers, a barn and 4 gateways: {whole:?}");
    // Cursor pages of 3: every device exactly once, and the total.
    let (items, total) = all_pages(&base, "/api/v1/devices?", 3).await;
    let paged = ids(&items, "id");
    assert_eq!(total, whole.len());
    assert_eq!(paged.len(), whole.len(), "no device twice");
    assert_eq!(paged.iter().cloned().collect::<BTreeSet<_>>(), whole);
    assert!(paged.windows(2).all(|w| w[0] < w[1]), "in id order");
    // Offset pages cover the same.
    let mut by_offset = Vec::new();
    for offset in (0..total).step_by(4) {
        let page = json(&base, &format!("/api/v1/devices?limit=4&offset={offset}"), ADMIN).await;
        by_offset.extend(ids(page["items"].as_array().unwrap(), "id"));
    }
    assert_eq!(by_offset, paged);
    // limit=0: only the total.
    let empty = json(&base, "/api/v1/devices?limit=0&kind=water_meter", ADMIN).await;
    assert_eq!((empty["total"].as_u64(), empty["items"].as_array().map(Vec::len)), (Some(12), Some(0)));

    // Latest values, paged by device/metric: each series once.
    let whole_latest = json(&base, "/api/v1/latest", ADMIN).await;
    let n = whole_latest.as_array().unwrap().len();
    assert!(n > 12 * 2 + 3, "{n}");
    let (items, total) = all_pages(&base, "/api/v1/latest?", 5).await;
    let keys: Vec<String> =
        items.iter().map(|v| format!("{}/{}", v["device"].as_str().unwrap(), v["metric"].as_str().unwrap())).collect();
    assert_eq!((total, keys.len(), keys.iter().collect::<BTreeSet<_>>().len()), (n, n, n));

    // Filters: a township's devices are its villages' (and there are some).
    let t_a = json(&base, "/api/v1/devices?township=t-a", ADMIN).await;
    let sites: BTreeSet<String> = ids(t_a.as_array().unwrap(), "site").into_iter().collect();
    assert_eq!(sites, BTreeSet::from(["va1".to_string(), "va2".to_string()]));
    assert_eq!(t_a.as_array().unwrap().iter().filter(|d| d["kind"] == "water_meter").count(), 7);
    assert!(t_a.as_array().unwrap().iter().all(|d| d["township"] == "t-a"));
    let speakers_b = json(&base, "/api/v1/devices?township=t-b&kind=speaker", ADMIN).await;
    assert_eq!(ids(speakers_b.as_array().unwrap(), "id"), ["vb1-speaker-1"]);
    let latest_a = json(&base, "/api/v1/latest?township=t-a&kind=water_meter&metric=flow", ADMIN).await;
    let devices_a: BTreeSet<String> = ids(latest_a.as_array().unwrap(), "device").into_iter().collect();
    assert_eq!(devices_a.len(), 7);
    assert!(devices_a.iter().all(|d| d.starts_with("va")));
    let site_page = json(&base, "/api/v1/latest?site=vb1&limit=100", ADMIN).await;
    assert!(site_page["items"].as_array().unwrap().iter().all(|v| v["site"] == "vb1"));
    assert_eq!(site_page["total"].as_u64(), Some(5 * 2 + 1));
    // since: only what is newer.
    let since = json(&base, &format!("/api/v1/latest?since={}", now - 500), ADMIN).await;
    assert_eq!(since.as_array().map(Vec::len), Some(0));
    let since = json(&base, &format!("/api/v1/latest?since={}", now - 1_500), ADMIN).await;
    assert_eq!(since.as_array().map(Vec::len), Some(n));
    // A bad cursor or kind is the client's error, not a crash.
    assert_eq!(get(&base, "/api/v1/devices?kind=teapot", ADMIN, &[]).await.0, 400);
    assert_eq!(get(&base, "/api/v1/latest?since=yesterday", ADMIN, &[]).await.0, 400);
    ingest.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_refresh_is_304_one_changed_value_is_200_and_gzip_is_only_for_who_asks() {
    let (ingest, base, _dir) = service().await;
    let now = daemon::now().0;
    write_all(&base, now - 5_000).await;

    for path in ["/api/v1/summary", "/api/v1/latest?township=t-a", "/api/v1/devices?site=va1&limit=2"] {
        let (status, headers, body) = get(&base, path, ADMIN, &[]).await;
        assert_eq!(status, 200);
        let tag = headers["etag"].to_str().unwrap().to_string();
        assert!(tag.starts_with("W/\""), "{tag}");
        // The same request with its tag: 304 and no body.
        let (status, headers, body304) = get(&base, path, ADMIN, &[("if-none-match", &tag)]).await;
        assert_eq!((status, body304.len()), (304, 0), "{path}");
        assert_eq!(headers["etag"].to_str().unwrap(), tag);
        // Positive control: another tag gets the body.
        let (status, _, again) = get(&base, path, ADMIN, &[("if-none-match", "W/\"other\"")]).await;
        assert_eq!((status, &again), (200, &body));
    }

    // One value changes: the summary and the township's latest change, the other township's not.
    let (_, h, _) = get(&base, "/api/v1/summary", ADMIN, &[]).await;
    let summary_tag = h["etag"].to_str().unwrap().to_string();
    let (_, h, _) = get(&base, "/api/v1/latest?township=t-a", ADMIN, &[]).await;
    let a_tag = h["etag"].to_str().unwrap().to_string();
    let (_, h, _) = get(&base, "/api/v1/latest?township=t-b", ADMIN, &[]).await;
    let b_tag = h["etag"].to_str().unwrap().to_string();
    write(&base, COUNTY_OPERATOR, &format!("valve_open,device=va1-meter-002 value=0 {}\n", now - 1_000)).await;
    let (status, _, body) = get(&base, "/api/v1/summary", ADMIN, &[("if-none-match", &summary_tag)]).await;
    assert_eq!(status, 200, "a closed valve changes the summary");
    let summary: Value = serde_json::from_slice(&body).unwrap();
    let va1 = summary["sites"].as_array().unwrap().iter().find(|s| s["id"] == "va1").unwrap();
    assert_eq!(va1["meters"]["valves_closed"], 1);
    assert_eq!(get(&base, "/api/v1/latest?township=t-a", ADMIN, &[("if-none-match", &a_tag)]).await.0, 200);
    assert_eq!(get(&base, "/api/v1/latest?township=t-b", ADMIN, &[("if-none-match", &b_tag)]).await.0, 304);

    // gzip: only with Accept-Encoding, and it inflates to the same JSON.
    let (_, plain_headers, plain) = get(&base, "/api/v1/latest", ADMIN, &[]).await;
    assert!(plain.len() >= 1024, "big enough to compress: {}", plain.len());
    assert!(plain_headers.get("content-encoding").is_none());
    let (status, headers, zipped) = get(&base, "/api/v1/latest", ADMIN, &[("accept-encoding", "gzip")]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-encoding"], "gzip");
    let mut inflated = Vec::new();
    flate2::read::GzDecoder::new(&zipped[..]).read_to_end(&mut inflated).unwrap();
    assert_eq!(inflated, plain);
    assert!(zipped.len() * 3 < plain.len(), "{} of {} bytes", zipped.len(), plain.len());
    ingest.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_counts_by_township_and_site_within_the_readers_tenants() {
    let (ingest, base, _dir) = service().await;
    let now = daemon::now().0;
    write_all(&base, now - 1_000).await;
    // A meter in va2 with a fault word; vb1's only speaker says it is not ready.
    write(&base, COUNTY_OPERATOR, &format!("fault_word,device=va2-meter-001 value=1 {}\n", now - 500)).await;
    write(&base, COUNTY_OPERATOR, &format!("speaker_online,device=vb1-speaker-1 value=0 {}\n", now - 500)).await;

    let s = json(&base, "/api/v1/summary", ADMIN).await;
    let townships: BTreeMap<String, Value> =
        s["townships"].as_array().unwrap().iter().map(|t| (t["id"].as_str().unwrap().to_string(), t.clone())).collect();
    assert_eq!(townships.keys().collect::<Vec<_>>(), ["t-a", "t-b"]);
    assert_eq!(townships["t-a"]["name"], "t-a name");
    // t-a: 7 meters and 2 speakers; t-b: 5 meters, a speaker and the farm's barn.
    assert_eq!(townships["t-a"]["devices"]["total"], 9);
    assert_eq!(townships["t-a"]["devices"]["ok"], 9);
    assert_eq!(townships["t-b"]["devices"]["total"], 7);
    let sites: Vec<&str> = s["sites"].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap()).collect();
    assert_eq!(sites, ["farm", "va1", "va2", "vb1"], "townships are not sites; farms before villages");
    let va2 = &s["sites"][2];
    assert_eq!((va2["township"].as_str(), va2["counts"]["water_meter"]["total"].as_u64()), (Some("t-a"), Some(3)));
    assert_eq!(va2["meters"]["faults"], 1);
    // States: vb1 needs attention for its speaker, va1 is fine (gateways that never
    // reported are not offline), and a township is its worst site.
    let state = |id: &str| s["sites"].as_array().unwrap().iter().find(|x| x["id"] == id).unwrap()["state"].clone();
    assert_eq!((state("va1"), state("vb1")), (Value::from("ok"), Value::from("attention")));
    let vb1 = s["sites"].as_array().unwrap().iter().find(|x| x["id"] == "vb1").unwrap();
    assert_eq!(vb1["issues"][0]["key"], "speakers_offline");
    assert_eq!((vb1["issues"][0]["count"].as_u64(), vb1["issues"][0]["of"].as_u64()), (Some(1), Some(1)));
    assert_eq!(
        (townships["t-a"]["state"].as_str(), townships["t-b"]["state"].as_str()),
        (Some("ok"), Some("attention"))
    );
    assert_eq!(s["totals"]["meters"]["total"], 12);
    assert_eq!(s["totals"]["speakers"]["total"], 3);
    assert_eq!(s["totals"]["by_kind"]["barn_climate"]["total"], 1);
    assert!(s.get("now").is_none(), "no clock reading: an unchanged summary stays byte for byte the same");
    // Narrowed to a township: its sites and totals only.
    let b = json(&base, "/api/v1/summary?township=t-b", ADMIN).await;
    let sites: Vec<&str> = b["sites"].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap()).collect();
    assert_eq!(sites, ["farm", "vb1"]);
    assert_eq!(b["totals"]["meters"]["total"], 5);

    // The dairy's viewer: its farm, nothing of the county.
    let d = json(&base, "/api/v1/summary", DAIRY_VIEWER).await;
    let sites: Vec<&str> = d["sites"].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap()).collect();
    assert_eq!(sites, ["farm"]);
    assert_eq!(d["totals"]["meters"]["total"], 0);
    assert!(d["townships"].as_array().unwrap().is_empty(), "township seats are the county's sites");
    let devices = json(&base, "/api/v1/devices?township=t-b&limit=100", DAIRY_VIEWER).await;
    assert_eq!(ids(devices["items"].as_array().unwrap(), "id"), ["farm-barn-1", "gw-farm"]);
    assert_eq!(devices["total"], 2);
    // Reads are closed by default: no token, no summary.
    assert_eq!(reqwest::get(format!("{base}/api/v1/summary")).await.unwrap().status().as_u16(), 401);
    ingest.stop().await;
}

/// Reads server-sent events from `resp` until `want` returns a value, at most `within`.
async fn read_events<T>(
    resp: &mut reqwest::Response,
    within: Duration,
    mut want: impl FnMut(&str, &Value) -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = String::new();
    loop {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk()).await.ok()?.ok()??;
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut name = "message";
            let mut data = String::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event:") {
                    name = n.trim();
                    name = if name.is_empty() { "message" } else { name };
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            let name = name.to_string();
            if let Ok(v) = serde_json::from_str::<Value>(&data)
                && let Some(t) = want(&name, &v)
            {
                return Some(t);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_pushes_a_changed_value_to_readers_of_its_tenant_only() {
    let (ingest, base, _dir) = service().await;
    let now = daemon::now().0;
    write_all(&base, now - 2_000).await;
    let open = |token: &'static str, query: &'static str| {
        let base = base.clone();
        async move {
            let resp = reqwest::Client::new()
                .get(format!("{base}/api/v1/stream{query}"))
                .header("authorization", format!("Token {token}"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 200);
            assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
            resp
        }
    };
    let mut county = open(ADMIN, "?township=t-a").await;
    let mut dairy = open(DAIRY_VIEWER, "").await;
    assert!(read_events(&mut county, Duration::from_secs(5), |n, _| (n == "hello").then_some(())).await.is_some());
    assert!(read_events(&mut dairy, Duration::from_secs(5), |n, _| (n == "hello").then_some(())).await.is_some());
    // Let the watcher take its first look, then change one county value.
    tokio::time::sleep(Duration::from_secs(3)).await;
    write(&base, COUNTY_OPERATOR, &format!("flow,device=va1-meter-003 value=0.42 {}\n", now - 100)).await;
    let got = read_events(&mut county, Duration::from_secs(10), |n, v| {
        (n == "latest").then(|| v["changed"].as_array().cloned().unwrap_or_default())
    })
    .await
    .expect("a latest event within 10 s");
    assert_eq!(got.len(), 1, "only what changed: {got:?}");
    assert_eq!(
        (got[0]["device"].as_str(), got[0]["metric"].as_str(), got[0]["value"].as_f64()),
        (Some("va1-meter-003"), Some("flow"), Some(0.42))
    );
    // A change in another township does not reach the t-a stream; the dairy never sees the county's.
    write(&base, COUNTY_OPERATOR, &format!("flow,device=vb1-meter-001 value=0.9 {}\n", now - 50)).await;
    write(&base, DAIRY_OPERATOR, &format!("barn_temperature,device=farm-barn-1 value=19.5 {}\n", now - 50)).await;
    let dairy_saw = read_events(&mut dairy, Duration::from_secs(10), |n, v| {
        (n == "latest").then(|| ids(v["changed"].as_array().unwrap(), "device"))
    })
    .await
    .expect("the dairy sees its barn");
    assert_eq!(dairy_saw, ["farm-barn-1"]);
    let county_saw = read_events(&mut county, Duration::from_secs(5), |n, v| (n == "latest").then(|| v.clone())).await;
    assert!(county_saw.is_none(), "the t-a stream got {county_saw:?}");
    ingest.stop().await;
}
