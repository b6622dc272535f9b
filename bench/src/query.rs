//! `query`: a year of one series at one reading a minute in each server, then a query of
//! the whole year bucketed to about 1,000 points (min, max, mean per bucket).

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::compare::feed;
use crate::dataset::START_MS;
use crate::servers::{Server, TOKEN, Target};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Servers: ingest, victoria-metrics, influxdb.
    #[arg(long, value_delimiter = ',', default_value = "ingest,victoria-metrics,influxdb")]
    targets: Vec<String>,
    /// Days of data.
    #[arg(long, default_value_t = 365)]
    days: i64,
    /// Times each query runs (the median is reported, and the first).
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Working directory.
    #[arg(long, default_value = "/tmp/vt-bench")]
    work: PathBuf,
}

/// One query: its label and how to run it against a server.
struct Query {
    label: String,
    url: String,
    params: Vec<(&'static str, String)>,
}

fn queries(server: &Server, from: i64, to: i64) -> Vec<Query> {
    let b = server.base();
    match server.target {
        Target::Ingest => vec![
            Query {
                label: "step 9 h (hour roll-ups)".into(),
                url: format!("{b}/api/v1/series?device=year-1&metric=pressure&from={from}&to={to}&step=9h"),
                params: vec![],
            },
            Query {
                label: "step 526 min (minute tier)".into(),
                url: format!("{b}/api/v1/series?device=year-1&metric=pressure&from={from}&to={to}&step=526m"),
                params: vec![],
            },
        ],
        Target::VictoriaMetrics => vec![Query {
            label: "rollup() step 9 h".into(),
            url: format!("{b}/api/v1/query_range"),
            params: vec![
                ("query", "rollup(pressure_value{device=\"year-1\"}[9h])".into()),
                ("start", (from / 1000).to_string()),
                ("end", (to / 1000).to_string()),
                ("step", "9h".into()),
            ],
        }],
        Target::Influxdb => vec![Query {
            label: "InfluxQL GROUP BY time(9h)".into(),
            url: format!("{b}/query"),
            params: vec![
                ("db", "bench".into()),
                ("epoch", "ms".into()),
                (
                    "q",
                    format!(
                        "SELECT min(value),max(value),mean(value) FROM pressure WHERE device='year-1' AND time >= {from}ms AND time < {to}ms GROUP BY time(9h)"
                    ),
                ),
            ],
        }],
    }
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let targets: Vec<Target> = args.targets.iter().map(|t| Target::parse(t)).collect::<anyhow::Result<_>>()?;
    std::fs::create_dir_all(&args.work)?;
    let file = args.work.join("year.lp");
    // The year before the data sets' start: in the past, as VictoriaMetrics refuses
    // samples more than two days ahead of its clock.
    let start = START_MS - args.days * 86_400_000;
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&file)?);
        for m in 0..args.days * 1440 {
            let phase = (m % 1440) as f64 / 1440.0 * std::f64::consts::TAU;
            let v = ((0.30 + 0.05 * phase.sin()) * 1000.0).round() / 1000.0;
            writeln!(w, "pressure,device=year-1 value={v} {}", start + m * 60_000 + (m % 3))?;
        }
    }
    let (from, to) = (start, start + args.days * 86_400_000);
    let client = reqwest::Client::new();
    println!("| server | query | points | first (ms) | median of {} (ms) |\n|---|---|---|---|---|", args.runs);
    for t in targets {
        let dir = args.work.join("query").join(format!("{t:?}").to_lowercase());
        let _ = std::fs::remove_dir_all(&dir);
        let mut server = Server::start(t, &dir).await?;
        let fed = feed(&server, &file, 10_000, 2).await?;
        // Restart: ingest seals its log (a clean stop checkpoints), the others flush; then
        // the query reads what a long-running server would.
        server.restart().await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        for q in queries(&server, from, to) {
            let mut times = Vec::new();
            let mut points = 0;
            for _ in 0..args.runs {
                let started = Instant::now();
                let resp = client
                    .get(&q.url)
                    .query(&q.params)
                    .header("Authorization", format!("Token {TOKEN}"))
                    .send()
                    .await?;
                let status = resp.status();
                let body = resp.text().await?;
                times.push(started.elapsed().as_secs_f64() * 1000.0);
                anyhow::ensure!(status.is_success(), "{}: {status}: {body}", q.url);
                points = count_points(t, &body);
            }
            let first = times[0];
            times.sort_by(f64::total_cmp);
            println!("| {} | {} | {points} | {first:.1} | {:.1} |", t.name(), q.label, times[times.len() / 2]);
        }
        println!("  ({} readings written)", fed.lines);
        server.stop();
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

fn count_points(t: Target, body: &str) -> usize {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    match t {
        Target::Ingest => v["points"].as_array().map_or(0, Vec::len),
        Target::VictoriaMetrics => v["data"]["result"][0]["values"].as_array().map_or(0, Vec::len),
        Target::Influxdb => v["results"][0]["series"][0]["values"].as_array().map_or(0, Vec::len),
    }
}
