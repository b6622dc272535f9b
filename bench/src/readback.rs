//! What a server holds after a run, read back through its own query API, against what the
//! data file holds: a benchmark counts what was stored, not what was sent.
//!
//! Every series of the file (measurement, `device` tag, field) is counted and summed once
//! from the file and once from each server (ingest: one bucket per series over the whole
//! span; VictoriaMetrics: `count_over_time` and `sum_over_time`; InfluxDB: `count` and
//! `sum` grouped by device). The counts must equal the file's; the sums tell whether the
//! servers give the same answer to the same query.
//!
//! Invariant: the file's lines are `measurement,device=D field=V[,field=V] ts` (what
//! `vt-bench dataset` writes); a line without a `device` tag or with a non-numeric field is
//! counted as unreadable, never guessed at.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

use serde_json::Value;

use crate::servers::{Server, TOKEN, Target};

/// One series: measurement, device, field.
pub(crate) type Key = (String, String, String);

/// Count and sum of one series.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Tally {
    pub(crate) count: u64,
    pub(crate) sum: f64,
}

/// What a data file holds.
pub(crate) struct Expected {
    pub(crate) series: BTreeMap<Key, Tally>,
    /// Earliest and latest timestamp (ms).
    pub(crate) span: (i64, i64),
    /// Readings in all (fields, not lines).
    pub(crate) readings: u64,
    /// Lines this module cannot read (see the module's invariant).
    pub(crate) unreadable: u64,
}

/// Reads `file` once and tallies every series.
pub(crate) fn expected(file: &Path) -> anyhow::Result<Expected> {
    let mut r = std::io::BufReader::with_capacity(1 << 22, std::fs::File::open(file)?);
    let mut out = Expected { series: BTreeMap::new(), span: (i64::MAX, i64::MIN), readings: 0, unreadable: 0 };
    let mut line = String::new();
    while r.read_line(&mut line)? > 0 {
        if parse_line(line.trim_end(), &mut out).is_none() && !line.trim().is_empty() {
            out.unreadable += 1;
        }
        line.clear();
    }
    anyhow::ensure!(out.readings > 0, "{}: no readable line", file.display());
    Ok(out)
}

fn parse_line(line: &str, out: &mut Expected) -> Option<()> {
    let mut parts = line.split(' ');
    let (key, fields, ts) = (parts.next()?, parts.next()?, parts.next()?.parse::<i64>().ok()?);
    let mut tags = key.split(',');
    let measurement = tags.next()?;
    let device = tags.find_map(|t| t.strip_prefix("device="))?;
    let mut parsed = Vec::new();
    for f in fields.split(',') {
        let (name, v) = f.split_once('=')?;
        parsed.push((name, v.trim_end_matches('i').parse::<f64>().ok()?));
    }
    for (name, v) in parsed {
        let t = out.series.entry((measurement.to_string(), device.to_string(), name.to_string())).or_default();
        t.count += 1;
        t.sum += v;
        out.readings += 1;
    }
    out.span = (out.span.0.min(ts), out.span.1.max(ts));
    Some(())
}

/// What `server` returns for every series of `exp`, by its own query API.
pub(crate) async fn read_back(server: &Server, exp: &Expected) -> anyhow::Result<BTreeMap<Key, Tally>> {
    match server.target {
        Target::Ingest => ingest(server, exp).await,
        Target::VictoriaMetrics => victoria_metrics(server, exp).await,
        Target::Influxdb => influxdb(server).await,
    }
}

/// One `step` bucket over the whole span per series, from ingest's `/api/v1/series`
/// (count and mean of the coarsest roll-up that answers exactly), four requests at a time.
async fn ingest(server: &Server, exp: &Expected) -> anyhow::Result<BTreeMap<Key, Tally>> {
    let (from, to) = (exp.span.0, exp.span.1 + 1);
    let step = to - from;
    let client = reqwest::Client::new();
    let base = server.base();
    let keys: Vec<Key> = exp.series.keys().cloned().collect();
    let mut out = BTreeMap::new();
    for chunk in keys.chunks(4) {
        let mut asks = Vec::new();
        for key in chunk {
            let (m, d) = (key.0.clone(), key.1.clone());
            let req = client
                .get(format!("{base}/api/v1/series"))
                .header("Authorization", format!("Token {TOKEN}"))
                .query(&[("device", d), ("metric", m), ("from", from.to_string()), ("to", to.to_string())])
                .query(&[("step", format!("{step}ms"))]);
            asks.push(tokio::spawn(async move { answer(req.send().await?).await }));
        }
        for (key, ask) in chunk.iter().zip(asks) {
            let body = ask.await??;
            let mut t = Tally::default();
            for p in body["points"].as_array().into_iter().flatten() {
                let n = p["count"].as_u64().unwrap_or(0);
                t.count += n;
                t.sum += p["mean"].as_f64().unwrap_or(0.0) * n as f64;
            }
            out.insert(key.clone(), t);
        }
    }
    Ok(out)
}

/// `count_over_time` and `sum_over_time` of every series over the span, at its end.
async fn victoria_metrics(server: &Server, exp: &Expected) -> anyhow::Result<BTreeMap<Key, Tally>> {
    let end = exp.span.1 / 1000 + 1;
    let window = (exp.span.1 - exp.span.0) / 1000 + 2;
    let client = reqwest::Client::new();
    // VictoriaMetrics names a series `{measurement}_{field}`.
    let names: std::collections::HashMap<(String, &str), &Key> =
        exp.series.keys().map(|k| ((format!("{}_{}", k.0, k.2), k.1.as_str()), k)).collect();
    let mut out: BTreeMap<Key, Tally> = BTreeMap::new();
    for (func, is_count) in [("count_over_time", true), ("sum_over_time", false)] {
        let body: Value = client
            .get(format!("{}/api/v1/query", server.base()))
            .query(&[
                ("query", format!("{func}({{__name__=~\".+\"}}[{window}s]) keep_metric_names")),
                ("time", end.to_string()),
            ])
            .send()
            .await
            .map(answer)?
            .await?;
        for r in body["data"]["result"].as_array().into_iter().flatten() {
            let (Some(name), Some(device)) = (r["metric"]["__name__"].as_str(), r["metric"]["device"].as_str()) else {
                continue;
            };
            let Some(&key) = names.get(&(name.to_string(), device)) else { continue };
            let v: f64 = r["value"][1].as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
            let t = out.entry(key.clone()).or_default();
            if is_count {
                t.count = v as u64;
            } else {
                t.sum = v;
            }
        }
    }
    Ok(out)
}

/// `count` and `sum` of every field of every measurement, grouped by device.
async fn influxdb(server: &Server) -> anyhow::Result<BTreeMap<Key, Tally>> {
    let body: Value = reqwest::Client::new()
        .get(format!("{}/query", server.base()))
        .query(&[("db", "bench"), ("q", "SELECT count(*), sum(*) FROM /.*/ GROUP BY device")])
        .send()
        .await
        .map(answer)?
        .await?;
    let mut out: BTreeMap<Key, Tally> = BTreeMap::new();
    for result in body["results"].as_array().into_iter().flatten() {
        for s in result["series"].as_array().into_iter().flatten() {
            let (Some(m), Some(d)) = (s["name"].as_str(), s["tags"]["device"].as_str()) else { continue };
            let (Some(cols), Some(row)) = (s["columns"].as_array(), s["values"][0].as_array()) else { continue };
            for (col, v) in cols.iter().zip(row) {
                let Some(col) = col.as_str() else { continue };
                if let Some(field) = col.strip_prefix("count_") {
                    out.entry((m.into(), d.into(), field.into())).or_default().count = v.as_u64().unwrap_or(0);
                } else if let Some(field) = col.strip_prefix("sum_") {
                    out.entry((m.into(), d.into(), field.into())).or_default().sum = v.as_f64().unwrap_or(f64::NAN);
                }
            }
        }
    }
    Ok(out)
}

/// The JSON body of a query's answer, or an error that carries what the server said.
async fn answer(resp: reqwest::Response) -> anyhow::Result<Value> {
    let (status, url) = (resp.status(), resp.url().clone());
    let text = resp.text().await?;
    anyhow::ensure!(status.is_success(), "{url}: {status}: {text}");
    Ok(serde_json::from_str(&text)?)
}

/// How what a server returned compares with the file.
#[derive(Debug, Default)]
pub(crate) struct Check {
    /// Readings the server returned in all.
    pub(crate) readings: u64,
    /// Series whose count differs from the file's (missing series included).
    pub(crate) wrong_counts: usize,
    /// Largest relative difference of a series' sum from the file's.
    pub(crate) worst_sum: f64,
}

/// Compares `got` with the file.
pub(crate) fn check(exp: &Expected, got: &BTreeMap<Key, Tally>) -> Check {
    let mut c = Check { readings: got.values().map(|t| t.count).sum(), ..Check::default() };
    for (key, want) in &exp.series {
        let have = got.get(key).copied().unwrap_or_default();
        if have.count != want.count {
            c.wrong_counts += 1;
        }
        let scale = want.sum.abs().max(1e-9);
        let rel = if have.sum.is_finite() { (have.sum - want.sum).abs() / scale } else { f64::INFINITY };
        c.worst_sum = c.worst_sum.max(rel);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_tallied_per_series_and_what_cannot_be_read_is_counted_not_guessed() {
        let dir = std::env::temp_dir().join(format!("vt-readback-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.lp");
        std::fs::write(
            &file,
            "pressure,device=a value=0.25 1000\npressure,device=a value=0.5 2000\n\
             flow,device=b value=3,total=7i 1500\nno_device value=1 1000\npressure,device=a value=x 3000\n",
        )
        .unwrap();
        let exp = expected(&file).unwrap();
        let key = |m: &str, d: &str, f: &str| (m.to_string(), d.to_string(), f.to_string());
        assert_eq!(exp.series[&key("pressure", "a", "value")], Tally { count: 2, sum: 0.75 });
        assert_eq!(exp.series[&key("flow", "b", "total")], Tally { count: 1, sum: 7.0 });
        assert_eq!((exp.readings, exp.unreadable, exp.span), (4, 2, (1000, 2000)));

        // A server that returns exactly the file passes; one reading short is a wrong count.
        let same = check(&exp, &exp.series);
        assert_eq!((same.readings, same.wrong_counts), (4, 0));
        assert!(same.worst_sum < 1e-12);
        let mut short = exp.series.clone();
        short.get_mut(&key("pressure", "a", "value")).unwrap().count = 1;
        assert_eq!(check(&exp, &short).wrong_counts, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
