//! The findings of issue 12, each tried against a running ingest over real sockets, each
//! with its positive control (what is allowed still works):
//!
//! - HTTP: a partial header and an idle connection are closed after the header timeout, a
//!   request whose body never comes is answered 408 after the request timeout,
//!   connections over the cap are answered 503 and closed at once (and counted), the
//!   open-files limit is raised at start, and a listener out of file descriptors backs off
//!   with one log line and recovers;
//! - commands: a 1.1 MB point is refused (422) and ingest stays on the broker;
//! - line protocol: per-request and global caps on new devices, series and values, and a
//!   metric-name character set;
//! - tokens: the example's placeholder is refused at load with file and line;
//! - fault injection needs an operator token; refusals are shown by tenant; reads are
//!   closed by default; an `i64::MIN` timestamp is refused cleanly.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use ingest::auth::{Role, TokenConfig};
use ingest::config::{BrokerConfig, IngestConfig, Limits};
use ingest::demo::{Demo, DemoOptions};
use ingest::inventory::{Device, GatewayInfo, Inventory, InventoryFile, Site};
use ingest::pipeline::validate::{Reason, Rejection};
use ingest::service::{self, Options, Running};
use protocol::DeviceKind;
use serde_json::{Value, json};
use testkit::eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An admin of every tenant.
const ADMIN: &str = "hardening-admin-token-0123456789";
/// A viewer of the county only.
const COUNTY_VIEWER: &str = "hardening-county-viewer-0123456789";
/// An operator of the county only (line-protocol writes).
const COUNTY_OPERATOR: &str = "hardening-county-operator-0123456789";

fn inventory() -> Inventory {
    let site = |id: &str, tenant: &str| Site {
        id: id.into(),
        name: id.into(),
        kind: "village".into(),
        tenant: tenant.into(),
        lat: 34.7,
        lon: 113.6,
        village: None,
        district: None,
        township: None,
    };
    let gateway = |id: &str, tenant: &str, site: &str| GatewayInfo {
        id: id.into(),
        tenant: tenant.into(),
        site: site.into(),
        public_key: crate::keys::public_key(id),
    };
    let device = |id: &str, gw: &str, site: &str| Device {
        id: id.into(),
        kind: DeviceKind::WaterMeter,
        site: site.into(),
        gateway: gw.into(),
        model: "vt-sim-water-meter".into(),
        lat: None,
        lon: None,
        public_key: None,
    };
    Inventory::from_file(InventoryFile {
        sites: vec![site("dongcun", "county"), site("farm", "dairy")],
        gateways: vec![gateway("gw-c", "county", "dongcun"), gateway("gw-d", "dairy", "farm")],
        devices: vec![device("meter-c", "gw-c", "dongcun"), device("meter-d", "gw-d", "farm")],
    })
}

fn token(token: &str, role: Role, tenants: &[&str]) -> TokenConfig {
    TokenConfig {
        token: token.into(),
        role,
        tenants: tenants.iter().map(|t| t.to_string()).collect(),
        name: format!("{role:?}"),
    }
}

/// Ingest with the embedded broker, this file's tokens and inventory, the default options
/// (reads closed), and `limits` changed as the test needs; ready when it returns.
async fn service(limits: impl FnOnce(&mut Limits)) -> (Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = IngestConfig::new(
        dir.path().to_path_buf(),
        BrokerConfig::Embedded { listen: SocketAddr::from(([127, 0, 0, 1], 0)) },
    );
    limits(&mut config.limits);
    config.tokens = vec![
        token(ADMIN, Role::Admin, &[]),
        token(COUNTY_VIEWER, Role::Viewer, &["county"]),
        token(COUNTY_OPERATOR, Role::Operator, &["county"]),
    ];
    let ingest = service::start(config, inventory(), Options::default()).await.unwrap();
    let base = format!("http://{}", ingest.http);
    eventually("ingest to be ready", Duration::from_secs(20), || async {
        reqwest::get(format!("{base}/api/v1/health")).await.ok().filter(|r| r.status().is_success())
    })
    .await;
    (ingest, dir)
}

/// GET with an optional token: (status, body).
async fn get(base: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(format!("{base}{path}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Token {t}"));
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (resp.status().as_u16(), resp.text().await.unwrap_or_default())
}

/// POSTs line protocol as the county's operator: (status, body).
async fn write(base: &str, query: &str, body: impl Into<reqwest::Body>, gzip: bool) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}/api/v2/write?{query}"))
        .header("authorization", format!("Token {COUNTY_OPERATOR}"))
        .body(body);
    if gzip {
        req = req.header("content-encoding", "gzip");
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap_or_default())
}

/// Reads `stream` until the server closes it (EOF or reset), at most `within`: what it
/// sent and when it closed, or `None` if it was still open.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> Option<(String, Duration)> {
    let t0 = Instant::now();
    let mut got = Vec::new();
    let closed = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    closed.ok().map(|()| (String::from_utf8_lossy(&got).into_owned(), t0.elapsed()))
}

/// Reads one whole response (header, then `content-length` bytes of body).
async fn read_response(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed mid-response: {text}");
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_closes_partial_headers_idle_connections_and_stalled_requests_after_stated_times() {
    let (ingest, _dir) = service(|l| {
        l.http_header_timeout = Duration::from_secs(1);
        l.http_request_timeout = Duration::from_secs(2);
    })
    .await;
    let addr = ingest.http;

    // Positive control: whole requests are answered, two on one kept-alive connection.
    let mut ok = TcpStream::connect(addr).await.unwrap();
    for _ in 0..2 {
        ok.write_all(b"GET /api/v1/health HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let answer = read_response(&mut ok).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    // A partial header (slowloris): closed after the 1 s header timeout, also while it
    // trickles a byte now and then.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /api/v1/health HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let (_, after) = until_closed(&mut slow, Duration::from_secs(6)).await.expect("a partial header is closed");
    assert!(after >= Duration::from_millis(800) && after < Duration::from_secs(4), "closed after {after:?}");
    let mut trickle = TcpStream::connect(addr).await.unwrap();
    let t0 = Instant::now();
    let mut closed = false;
    for b in b"GET /api/v1/health HTTP/1.1\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
        if trickle.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(closed || until_closed(&mut trickle, Duration::from_secs(1)).await.is_some(), "trickling is cut");
    assert!(t0.elapsed() < Duration::from_secs(6), "trickled for {:?}", t0.elapsed());

    // An idle connection (nothing sent): closed after the same timeout.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let (_, after) = until_closed(&mut idle, Duration::from_secs(6)).await.expect("an idle connection is closed");
    assert!(after < Duration::from_secs(4), "closed after {after:?}");

    // A whole header whose body never comes: 408 after the 2 s request timeout.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/v2/write?org=county HTTP/1.1\r\nhost: x\r\nauthorization: Token {COUNTY_OPERATOR}\r\ncontent-length: 1000\r\n\r\nm,device=d1 "
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    let (answer, after) = until_closed(&mut stalled, Duration::from_secs(8)).await.expect("a stalled request is ended");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(after >= Duration::from_millis(1800) && after < Duration::from_secs(5), "answered after {after:?}");
    assert!(ingest.state.metrics.http_timeouts.get() >= 3, "timeouts are counted");
    ingest.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_answered_503_closed_at_once_and_counted() {
    let (ingest, _dir) = service(|l| l.http_max_connections = 50).await;
    let (addr, base) = (ingest.http, format!("http://{}", ingest.http));
    let mut held = Vec::new();
    for _ in 0..50 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..10 {
        // Nothing written: a request the server never reads would turn its close into a
        // reset, which may discard the answer before the client reads it.
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let (answer, after) = until_closed(&mut extra, Duration::from_secs(3))
            .await
            .unwrap_or_else(|| panic!("connection {i} over the cap stays open"));
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(after < Duration::from_secs(1), "closed after {after:?}");
    }
    assert_eq!(ingest.state.metrics.http_refused.get(), 10);
    // Positive control: once connections close, new ones are served again.
    held.truncate(40);
    let (_, metrics) = eventually("a request after connections closed", Duration::from_secs(10), || async {
        let r = reqwest::get(format!("{base}/metrics")).await.ok()?;
        r.status().is_success().then_some(((), r.text().await.ok()?))
    })
    .await;
    let refused = metrics.lines().find_map(|l| l.strip_prefix("ingest_http_connections_refused_total "));
    assert!(refused.and_then(|n| n.trim().parse::<f64>().ok()).is_some_and(|n| n >= 10.0), "{metrics}");
    drop(held);
    ingest.stop().await;
}

/// Starts the `ingest` binary under `sh` with `ulimit` (`-Sn N`: soft only, `-n N`: both),
/// logging to `dir/ingest.log`; returns it and its HTTP base once healthy.
async fn ingest_with_ulimit(dir: &Path, ulimit: &str, limits: &str) -> (testkit::Peer, String) {
    let bin = testkit::target_binary("ingest");
    assert!(bin.exists(), "{} is missing: run `cargo build -p ingest`", bin.display());
    let (http, mqtt) = (testkit::free_port(), testkit::free_port());
    std::fs::write(dir.join("inventory.toml"), "").unwrap();
    let config = dir.join("ingest.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"data\"\ninventory = \"inventory.toml\"\nhttp = \"127.0.0.1:{http}\"\n\
             [broker]\ntype = \"embedded\"\nlisten = \"127.0.0.1:{mqtt}\"\n\
             [limits]\n{limits}\n[[tokens]]\ntoken = \"{ADMIN}\"\nrole = \"admin\"\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("ingest.log")).unwrap();
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit {ulimit} && exec \"$0\" run --config \"$1\""))
        .arg(&bin)
        .arg(&config)
        .stdout(testkit::quiet())
        .stderr(log);
    let mut peer = testkit::Peer::spawn("ingest", &mut cmd);
    let base = format!("http://127.0.0.1:{http}");
    for _ in 0..400 {
        peer.assert_running();
        if reqwest::get(format!("{base}/api/v1/health")).await.is_ok_and(|r| r.status().is_success()) {
            return (peer, base);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("ingest did not become healthy: {}", std::fs::read_to_string(dir.join("ingest.log")).unwrap_or_default());
}

/// `text` without the terminal colour codes (`ESC [ ... m`) the log writer adds.
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The soft and hard "Max open files" of a process.
fn open_files_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap().to_string();
    let mut fields = line["Max open files".len()..].split_whitespace();
    (fields.next().unwrap().to_string(), fields.next().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_raises_its_open_files_limit_to_the_hard_limit_at_start_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (mut peer, _) = ingest_with_ulimit(dir.path(), "-Sn 512", "").await;
    let (soft, hard) = open_files_limits(peer.child.id());
    assert_eq!(soft, hard, "the soft limit is raised to the hard one");
    assert_ne!(soft, "512");
    let log = without_colours(&std::fs::read_to_string(dir.path().join("ingest.log")).unwrap());
    let line =
        log.lines().find(|l| l.contains("Open-files limit")).unwrap_or_else(|| panic!("no figure logged: {log}"));
    assert!(line.contains("before=512") && line.contains(&format!("now={hard}")), "{line}");
    peer.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_listener_pauses_logs_once_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    // A hard limit of 256 that cannot be raised, and a cap that does not protect it.
    let (mut peer, base) =
        ingest_with_ulimit(dir.path(), "-n 256", "http_max_connections = 5000\nhttp_header_timeout_secs = 60").await;
    let addr: SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..400 {
        // The kernel completes the handshake of connections ingest cannot accept (the
        // backlog): they connect, and wait.
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => held.push(s),
            _ => break,
        }
    }
    assert!(held.len() > 256, "only {} connections", held.len());
    tokio::time::sleep(Duration::from_secs(6)).await;
    peer.assert_running();
    let log = std::fs::read_to_string(dir.path().join("ingest.log")).unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("Too many open files")).collect();
    assert!(!lines.is_empty(), "the listener ran out of descriptors: {log}");
    assert!(lines.len() <= 2, "one line per failed accept: {lines:#?}");
    // Positive control: once the connections close, ingest serves again.
    drop(held);
    let metrics = eventually("ingest serving again", Duration::from_secs(20), || async {
        let r = reqwest::get(format!("{base}/metrics")).await.ok()?;
        r.status().is_success().then_some(r.text().await.ok()?)
    })
    .await;
    let errors = metrics.lines().find(|l| l.starts_with("ingest_http_accept_errors_total")).unwrap_or_default();
    assert!(errors.split_whitespace().nth(1).and_then(|n| n.parse::<f64>().ok()).is_some_and(|n| n > 0.0), "{errors}");
    let (status, _) = get(&base, "/api/v1/health", None).await;
    assert_eq!(status, 200);
    peer.terminate();
}

#[test]
fn the_example_token_is_refused_at_load_with_its_file_and_line() {
    let bin = testkit::target_binary("ingest");
    assert!(bin.exists(), "{} is missing: run `cargo build -p ingest`", bin.display());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("inventory.toml"), "").unwrap();
    let config = dir.path().join("ingest.toml");
    let text = |secret: &str| {
        format!(
            "data_dir = \"d\"\ninventory = \"inventory.toml\"\n\n[[tokens]]\ntoken = \"{secret}\"\nrole = \"admin\"\n"
        )
    };
    std::fs::write(&config, text("change-me-to-a-long-random-string")).unwrap();
    let out = std::process::Command::new(&bin).args(["check", "--config"]).arg(&config).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("ingest.toml:4:1: token 'change-me-to-a-long-random-string' is the example's placeholder"),
        "{err}"
    );
    // Positive control: a random token passes.
    std::fs::write(&config, text(&ingest::auth::generate_token())).unwrap();
    let out = std::process::Command::new(&bin).args(["check", "--config"]).arg(&config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_protocol_caps_new_devices_series_and_values_and_checks_metric_names() {
    let (ingest, _dir) = service(|l| {
        l.write_max_readings = 10_000;
        l.write_max_new_devices = 100;
        l.write_max_devices = 150;
        l.write_max_new_series = 1_000;
    })
    .await;
    let base = format!("http://{}", ingest.http);
    let q = "org=county&precision=ms";
    let now = crate::common::now_ms();

    // Positive control: a normal write.
    let (status, body) = write(&base, q, format!("tank,device=t-1 level=2.5 {now}"), false).await;
    assert_eq!(status, 204, "{body}");

    // A gzip bomb of values (issue 12: 81 KB made 1.7 M readings): 413 after gunzip.
    let lines: String = (0..200_000).map(|i| format!("tank,device=t-1 level={} {}\n", i % 7, now - i)).collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, lines.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    let (status, body) = write(&base, q, gz, true).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("limits.write_max_readings"), "{body}");

    // 101 new device tags in one request: 413, nothing registered.
    let many: String = (0..101).map(|i| format!("tank,device=x-{i} level=1 {now}\n")).collect();
    let (status, body) = write(&base, q, many, false).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("limits.write_max_new_devices"), "{body}");
    assert!(ingest.state.inventory.device("x-0").is_none());

    // Up to the global cap of 150 devices, then the values of new ones are refused.
    for batch in 0..2 {
        let devices: String = (0..100).map(|i| format!("tank,device=y-{batch}-{i} level=1 {now}\n")).collect();
        let (status, body) = write(&base, q, devices, false).await;
        if batch == 0 {
            assert_eq!(status, 204, "{body}");
        } else {
            assert_eq!(status, 422, "{body}");
            assert!(body.contains("limits.write_max_devices"), "{body}");
        }
    }
    let external = ingest.state.inventory.devices().iter().filter(|d| d.kind == DeviceKind::External).count();
    assert_eq!(external, 150, "t-1, 100 of the first batch and 49 of the second");

    // One device with 1,001 fields: over the per-request cap on new series.
    let fields: Vec<String> = (0..1_001).map(|i| format!("f{i}=1")).collect();
    let (status, body) = write(&base, q, format!("wide,device=t-1 {} {now}", fields.join(",")), false).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("limits.write_max_new_series"), "{body}");

    // Metric names: [A-Za-z_][A-Za-z0-9_]*.
    let (status, body) = write(&base, q, format!("tank,device=t-1 level-x=1 {now}"), false).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("[A-Za-z_][A-Za-z0-9_]*"), "{body}");

    let (_, metrics) = get(&base, "/metrics", None).await;
    for limit in ["readings", "new_devices", "devices", "new_series", "metric_name"] {
        assert!(
            metrics.contains(&format!("ingest_line_protocol_limited_total{{limit=\"{limit}\"}}")),
            "{limit}: {metrics}"
        );
    }
    ingest.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_closed_by_default_refusals_are_shown_by_tenant_and_extreme_times_are_refused() {
    let (ingest, _dir) = service(|_| {}).await;
    let base = format!("http://{}", ingest.http);

    // Reads need a token by default; with one they work.
    assert_eq!(get(&base, "/api/v1/devices", None).await.0, 401);
    let (status, devices) = get(&base, "/api/v1/devices", Some(COUNTY_VIEWER)).await;
    assert_eq!(status, 200);
    assert!(devices.contains("meter-c") && !devices.contains("meter-d"), "{devices}");

    // Refusals: each tenant's reader sees its own only; an admin sees both.
    for (gw, tenant) in [("gw-c", "county"), ("gw-d", "dairy")] {
        ingest.state.rejections.push(Rejection {
            reason: Reason::Malformed,
            topic: format!("vt/{tenant}/{gw}/up/telemetry"),
            device: None,
            detail: format!("garbage from {gw}"),
            at: protocol::Timestamp(crate::common::now_ms()),
        });
    }
    let (_, county) = get(&base, "/api/v1/rejections", Some(COUNTY_VIEWER)).await;
    assert!(county.contains("garbage from gw-c") && !county.contains("gw-d"), "{county}");
    let (_, all) = get(&base, "/api/v1/rejections", Some(ADMIN)).await;
    assert!(all.contains("garbage from gw-c") && all.contains("garbage from gw-d"), "{all}");

    // Timestamps at the ends of i64: refused by name, no panic (a debug build would have
    // panicked on `now - ts`), and ingest keeps serving.
    let q = "org=county&precision=ms";
    for (ts, what) in [(i64::MIN, "in the past"), (i64::MAX, "in the future")] {
        let (status, body) = write(&base, q, format!("tank,device=t-1 level=1 {ts}"), false).await;
        assert_eq!(status, 422, "{body}");
        assert!(body.contains(what), "{body}");
    }
    let (status, body) = write(&base, q, format!("tank,device=t-1 level=1 {}", crate::common::now_ms()), false).await;
    assert_eq!(status, 204, "{body}");
    ingest.stop().await;
}

async fn demo() -> (Demo, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let opts = DemoOptions {
        http: SocketAddr::from(([127, 0, 0, 1], 0)),
        mqtt: SocketAddr::from(([127, 0, 0, 1], 0)),
        data: Some(dir.path().to_path_buf()),
        ..DemoOptions::default()
    };
    let demo = Demo::start(opts).await.expect("demo starts");
    demo.county.set_random_outages(false);
    (demo, dir)
}

/// A JSON call to the demo: (status, body).
async fn call(
    demo: &Demo,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, format!("http://{}{path}", demo.ingest.http));
    if let Some(t) = token {
        req = req.header("authorization", format!("Token {t}"));
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_command_point_is_refused_and_ingest_stays_on_the_broker() {
    let (demo, _dir) = demo().await;
    let plan = demo.county.plan().clone();
    let pump = plan.devices().find(|d| d.kind == DeviceKind::PumpStation).unwrap().id.clone();
    let gw = plan.gateways.iter().find(|g| g.devices.iter().any(|d| d.id == pump)).unwrap().id.clone();
    eventually("the pump's gateway online", Duration::from_secs(30), || async {
        (demo.ingest.state.inventory.gateway_online(&gw) == Some(true)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let path = format!("/api/v1/devices/{pump}/commands");
    let token = demo.admin_token.clone();

    // The attack of issue 12: a 1.1 MB point. Refused before it is signed.
    let huge = json!({ "point": "p".repeat(1_100_000), "value": 1.0 });
    let (status, body) = call(&demo, reqwest::Method::POST, &path, Some(&token), Some(huge)).await;
    assert!(status == 422 || status == 400, "{status}: {body}");
    assert!(body["error"].as_str().unwrap().contains("level_start_setpoint"), "names the writable points: {body}");
    // Signed some other way, it is still refused before it is published, naming the limit.
    let issue = ingest::command::Issue {
        tenant: "county".into(),
        gateway: gw.clone(),
        device: pump.clone(),
        action: protocol::command::Action::Write { point: "p".repeat(1_100_000), value: 1.0 },
        ttl: Duration::from_secs(60),
        expires_at: None,
        issued_by: "test".into(),
    };
    let err = demo.ingest.state.commands.issue(issue).await.unwrap_err();
    assert!(err.to_string().contains("over the limit of 16384 bytes"), "{err}");
    // Ingest stays on the broker: healthy throughout, not once 503.
    let base = format!("http://{}", demo.ingest.http);
    for _ in 0..10 {
        assert_eq!(get(&base, "/api/v1/health", None).await.0, 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Positive control: a normal command goes through and is carried out.
    let ok = json!({ "point": "level_start_setpoint", "value": 1.5 });
    let (status, body) = call(&demo, reqwest::Method::POST, &path, Some(&token), Some(ok)).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_u64().unwrap();
    let done = eventually("the command's ack", Duration::from_secs(30), || async {
        let v = crate::common::get_json(&base, &format!("/api/v1/commands/{id}")).await;
        (v["state"] != "sent").then_some(v)
    })
    .await;
    assert_eq!(done["state"], "done", "{done}");
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_injection_needs_an_operator_token() {
    let (demo, _dir) = demo().await;
    let pump = demo.county.plan().devices().find(|d| d.kind == DeviceKind::PumpStation).unwrap().id.clone();
    let fault = json!({ "device": pump, "fault": "pump_trip" });
    let post = reqwest::Method::POST;
    assert_eq!(call(&demo, post.clone(), "/api/v1/sim/faults", None, Some(fault.clone())).await.0, 401);
    assert_eq!(call(&demo, reqwest::Method::GET, "/api/v1/sim/faults", None, None).await.0, 401);
    let clear = format!("/api/v1/sim/faults/{pump}");
    assert_eq!(call(&demo, reqwest::Method::DELETE, &clear, Some("not-a-token-of-this-demo"), None).await.0, 401);
    assert!(demo.county.faults().is_empty(), "nothing was injected without a token");
    // Positive control: the operator injects, lists and clears.
    let op = demo.operator_token.clone();
    let (status, body) = call(&demo, post, "/api/v1/sim/faults", Some(&op), Some(fault)).await;
    assert_eq!(status, 201, "{body}");
    let (status, list) = call(&demo, reqwest::Method::GET, "/api/v1/sim/faults", Some(&op), None).await;
    assert_eq!((status, list[0]["fault"].as_str()), (200, Some("pump_trip")), "{list}");
    assert_eq!(call(&demo, reqwest::Method::DELETE, &clear, Some(&op), None).await.0, 200);
    demo.stop().await;
}
