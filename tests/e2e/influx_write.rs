//! Line protocol into ingest (`POST /api/v2/write`) from the real Python `influxdb-client`
//! (PyPI), read back through `/api/v1/series`; and InfluxDB-style answers to bad input.

use std::process::Command;
use std::time::Duration;

use ingest::service::{self, Options};
use serde_json::Value;
use testkit::eventually;

use crate::common::now_ms;
use crate::influx_peers::{TOKEN, ingest_config, inventory};

const SCRIPT: &str = r#"
import sys
import influxdb_client
from influxdb_client import Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

url, token, base = sys.argv[1], sys.argv[2], int(sys.argv[3])
with influxdb_client.InfluxDBClient(url=url, token=token, org="county", enable_gzip=True) as client:
    write = client.write_api(write_options=SYNCHRONOUS)
    points = [
        Point("water_temp").tag("device", "py-sensor-1").tag("room", "a b").field("value", 10.0 + i / 4).time(base + i * 1000, WritePrecision.MS)
        for i in range(100)
    ]
    write.write(bucket="telemetry", record=points, write_precision=WritePrecision.MS)
    write.write(bucket="telemetry", record="tank,device=py-tank-1 level=2.5,pumps=3i,ok=true,note=\"fine\" %d" % (base * 1000000))
    try:
        write.write(bucket="telemetry", record="tank,device=py-tank-1 level=1 %d\nbroken line" % (base * 1000000))
        print("no error")
    except ApiException as e:
        print("status", e.status)
        print(e.body)
"#;

async fn series(base: &str, device: &str, metric: &str, from: i64, to: i64) -> Value {
    let resp = reqwest::Client::new()
        .get(format!("{base}/api/v1/series"))
        .query(&[("device", device), ("metric", metric), ("from", &from.to_string()), ("to", &to.to_string())])
        .header("Authorization", format!("Token {TOKEN}"))
        .send()
        .await
        .expect("series answers");
    assert!(resp.status().is_success(), "series {device} {metric}: {}", resp.status());
    resp.json().await.expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_influxdb_client_writes_line_protocol_that_reads_back_through_the_series_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ingest = service::start(ingest_config(dir.path()), inventory(&[]), Options::default()).await.expect("ingest");
    let base = format!("http://{}", ingest.http);
    let t0 = now_ms() - 3_600_000;

    let url = base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(testkit::python_with("influxdb_client"))
            .arg("-c")
            .arg(SCRIPT)
            .arg(url)
            .arg(TOKEN)
            .arg(t0.to_string())
            .output()
    })
    .await
    .expect("join")
    .expect(".venv/bin/python3 with influxdb-client (run .ci/setup)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "python failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));

    // Field `value` is metric `<measurement>`; 100 points, as sent, in order.
    let s = series(&base, "py-sensor-1", "water_temp", t0, t0 + 200_000).await;
    let points = s["points"].as_array().expect("points");
    assert_eq!(points.len(), 100);
    for (i, p) in points.iter().enumerate() {
        assert_eq!(p["value"].as_f64(), Some(10.0 + i as f64 / 4.0));
    }
    // Other fields are `<measurement>_<field>`; integers and booleans become numbers,
    // strings are skipped. Nanoseconds were truncated to milliseconds.
    for (metric, value) in [("tank_level", 2.5), ("tank_pumps", 3.0), ("tank_ok", 1.0)] {
        let s = series(&base, "py-tank-1", metric, t0, t0 + 1).await;
        assert_eq!(s["points"][0]["value"].as_f64(), Some(value), "{metric}: {s}");
    }
    let s = series(&base, "py-tank-1", "tank_note", t0, t0 + 1).await;
    assert_eq!(s["points"].as_array().map(Vec::len), Some(0));

    // A request with a broken line is refused whole, the way InfluxDB answers.
    assert!(stdout.contains("status 400"), "{stdout}");
    let body: Value = serde_json::from_str(stdout.lines().nth(1).unwrap_or("{}")).expect("JSON error body");
    assert_eq!(body["code"], "invalid");
    assert_eq!(body["line"], 2);
    assert!(body["message"].as_str().unwrap_or_default().contains("unable to parse 'broken line'"), "{body}");
    let s = series(&base, "py-tank-1", "tank_level", t0, t0 + 1).await;
    assert_eq!(s["points"][0]["value"].as_f64(), Some(2.5), "nothing of the refused request was written");

    // New devices are registered as `external` under the token's tenant.
    let devices: Value = reqwest::Client::new()
        .get(format!("{base}/api/v1/devices?kind=external"))
        .header("Authorization", format!("Token {TOKEN}"))
        .send()
        .await
        .expect("devices")
        .json()
        .await
        .expect("JSON");
    let ids: Vec<&str> = devices.as_array().expect("list").iter().filter_map(|d| d["id"].as_str()).collect();
    assert_eq!(ids, vec!["py-sensor-1", "py-tank-1"]);
    assert_eq!(devices[0]["tenant"], "county");
    ingest.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_protocol_writes_answer_like_influxdb_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ingest = service::start(ingest_config(dir.path()), inventory(&[]), Options::default()).await.expect("ingest");
    let base = format!("http://{}", ingest.http);
    let http = reqwest::Client::new();
    let post = |query: &'static str, body: String, token: Option<&'static str>| {
        let mut req = http.post(format!("{base}/api/v2/write?{query}")).body(body);
        if let Some(t) = token {
            req = req.header("Authorization", format!("Token {t}"));
        }
        async move {
            let resp = req.send().await.expect("write answers");
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap_or_default())
        }
    };
    let t = now_ms();

    let (status, body) = post("bucket=b", format!("m,device=x value=1 {t}"), None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = post("org=dairy&bucket=b", format!("m,device=x value=1 {t}"), Some(TOKEN)).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = post("bucket=b&precision=h", format!("m,device=x value=1 {t}"), Some(TOKEN)).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post("bucket=b&precision=ms", format!("m value=1 {t}"), Some(TOKEN)).await;
    assert_eq!((status, body.contains("no 'device' tag")), (400, true), "{body}");
    // Telegraf's host tag names the device when there is no device tag.
    let (status, body) =
        post("bucket=b&precision=ms", format!("cpu,host=server-1 usage_idle=97.5 {t}"), Some(TOKEN)).await;
    assert_eq!(status, 204, "{body}");
    // A value too old is left out, the rest is written: 422 names the line.
    let old = t - 90 * 86_400_000;
    let (status, body) =
        post("bucket=b&precision=ms", format!("m,device=x value=1 {t}\nm,device=x value=2 {old}"), Some(TOKEN)).await;
    assert_eq!(status, 422, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!((v["code"].as_str(), v["line"].as_u64()), (Some("unprocessable entity"), Some(2)), "{v}");
    // A gzip body is limited after decompression too (this one is 50 KB, 38 MB inflated).
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, format!("m,device=x value=1 {t}\n").repeat(1_500_000).as_bytes()).expect("gzip");
    let resp = http
        .post(format!("{base}/api/v2/write?bucket=b&precision=ms"))
        .header("Authorization", format!("Token {TOKEN}"))
        .header("Content-Encoding", "gzip")
        .body(gz.finish().expect("gzip"))
        .send()
        .await
        .expect("write answers");
    assert_eq!(resp.status().as_u16(), 413);

    // After a restart the external devices and their data are still there.
    ingest.stop().await;
    let ingest = service::start(ingest_config(dir.path()), inventory(&[]), Options::default()).await.expect("ingest");
    let base = format!("http://{}", ingest.http);
    let s = eventually("the series after a restart", Duration::from_secs(5), || {
        let base = base.clone();
        async move {
            let resp = reqwest::Client::new()
                .get(format!("{base}/api/v1/series?device=server-1&metric=cpu_usage_idle&from={}&to={}", t - 1, t + 1))
                .header("Authorization", format!("Token {TOKEN}"))
                .send()
                .await
                .ok()?;
            resp.status().is_success().then_some(resp.json::<Value>().await.ok()?)
        }
    })
    .await;
    assert_eq!(s["points"][0]["value"].as_f64(), Some(97.5));
    ingest.stop().await;
}
