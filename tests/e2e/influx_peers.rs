//! Real peers of the InfluxDB tests: a VictoriaMetrics server (Debian `victoria-metrics`,
//! which speaks the InfluxDB write API) and the Python `influxdb-client` in `.venv`
//! (both installed by `.ci/setup`), and an ingest with an operator token.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ingest::auth::{Role, TokenConfig};
use ingest::config::{BrokerConfig, IngestConfig};
use ingest::inventory::{Device, GatewayInfo, Inventory, InventoryFile, Site};
use testkit::{Peer, eventually, free_port, tool};

/// A VictoriaMetrics process on loopback; killed when dropped (it is a [`Peer`]).
pub(crate) struct VictoriaMetrics {
    peer: Option<Peer>,
    pub(crate) port: u16,
    dir: PathBuf,
}

impl VictoriaMetrics {
    /// Starts one on a free port, storing in `dir`.
    pub(crate) async fn start(dir: &Path) -> VictoriaMetrics {
        let mut vm = VictoriaMetrics { peer: None, port: free_port(), dir: dir.to_path_buf() };
        vm.restart().await;
        vm
    }

    /// Starts it (again) on the same port and directory, and waits until it answers.
    pub(crate) async fn restart(&mut self) {
        let peer = Peer::spawn(
            "victoria-metrics",
            Command::new(tool("victoria-metrics", "victoria-metrics"))
                .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
                .arg(format!("-storageDataPath={}", self.dir.display()))
                .arg("-retentionPeriod=100y")
                .arg("-search.latencyOffset=1s")
                .arg("-search.disableCache")
                // Samples resent after a failed request carry the same timestamp: keep one.
                .arg("-dedup.minScrapeInterval=1ms")
                .arg("-loggerLevel=ERROR")
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        self.peer = Some(peer);
        let url = format!("{}/health", self.url());
        eventually("VictoriaMetrics to answer", Duration::from_secs(20), || {
            let url = url.clone();
            async move { reqwest::get(&url).await.ok().filter(|r| r.status().is_success()) }
        })
        .await;
    }

    /// Stops it the way a service manager does (SIGTERM: it flushes and exits).
    pub(crate) fn stop(&mut self) {
        if let Some(mut peer) = self.peer.take() {
            peer.terminate();
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every sample of the metrics whose names match `regex`: `(name, device, tenant) -> [(ts, value)]`.
    pub(crate) async fn export(
        &self,
        regex: &str,
    ) -> std::collections::BTreeMap<(String, String, String), Vec<(i64, f64)>> {
        let url = format!("{}/api/v1/export", self.url());
        let body = reqwest::Client::new()
            .get(&url)
            .query(&[("match[]", format!("{{__name__=~\"{regex}\"}}"))])
            .send()
            .await
            .expect("export answers")
            .text()
            .await
            .expect("export body");
        let mut out = std::collections::BTreeMap::new();
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).expect("export lines are JSON");
            let label = |k: &str| v["metric"][k].as_str().unwrap_or_default().to_string();
            let key = (label("__name__"), label("device"), label("tenant"));
            let ts = v["timestamps"].as_array().cloned().unwrap_or_default();
            let vals = v["values"].as_array().cloned().unwrap_or_default();
            let samples: &mut Vec<(i64, f64)> = out.entry(key).or_default();
            for (t, x) in ts.iter().zip(&vals) {
                samples.push((t.as_i64().unwrap_or_default(), x.as_f64().unwrap_or(f64::NAN)));
            }
            samples.sort_by_key(|s| s.0);
        }
        out
    }
}

/// The token the InfluxDB tests write with: an operator of tenant `county`.
pub(crate) const TOKEN: &str = "county-operator-token-0123456789";

/// An ingest config on port 0 with an operator token for `county`.
pub(crate) fn ingest_config(dir: &Path) -> IngestConfig {
    let mut config =
        IngestConfig::new(dir.to_path_buf(), BrokerConfig::Embedded { listen: SocketAddr::from(([127, 0, 0, 1], 0)) });
    config.tokens = vec![TokenConfig {
        token: TOKEN.into(),
        role: Role::Operator,
        tenants: vec!["county".into()],
        name: "bureau".into(),
    }];
    config
}

/// One site, gateway `gw-1` of tenant `county`, and `devices` meters on it.
pub(crate) fn inventory(devices: &[String]) -> Inventory {
    Inventory::from_file(InventoryFile {
        sites: vec![Site {
            id: "dongcun".into(),
            name: "Dongcun".into(),
            kind: "village".into(),
            tenant: "county".into(),
            lat: 34.7,
            lon: 113.6,
            village: None,
            district: None,
            township: None,
        }],
        gateways: vec![GatewayInfo {
            id: "gw-1".into(),
            tenant: "county".into(),
            site: "dongcun".into(),
            public_key: crate::keys::public_key("gw-1"),
        }],
        devices: devices
            .iter()
            .map(|id| Device {
                id: id.clone(),
                kind: protocol::DeviceKind::WaterMeter,
                site: "dongcun".into(),
                gateway: "gw-1".into(),
                model: String::new(),
                lat: None,
                lon: None,
                public_key: None,
            })
            .collect(),
    })
}

/// The value of one sample in a Prometheus text exposition (`name{labels}` as written).
pub(crate) fn prometheus_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
}
