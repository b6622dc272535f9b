//! The line-protocol source: `POST /api/v2/write`, InfluxDB line protocol in, so Telegraf
//! and every InfluxDB client library can write into ingest.
//!
//! The handler is a list of steps: authorize (an operator token) -> resolve the tenant ->
//! read the body (size-limited, gzip too) -> parse every line
//! ([`crate::codec::line_protocol`]) -> map lines to readings and check them -> register
//! devices not seen before -> the pipeline's [`Pipeline::write_readings`] (one durable
//! store append, then counting, last seen and sinks, as for MQTT).
//!
//! Mapping (docs/INFLUXDB.md): the `device` tag names the device (Telegraf's `host` tag if
//! there is no `device` tag); field `value` becomes metric `<measurement>`, any other field
//! `f` becomes `<measurement>_<f>`; integers, unsigned integers and booleans (1/0) are
//! stored as floats, string fields are skipped; other tags, `org` and `bucket` are not
//! stored. Timestamps are truncated to milliseconds; a line without one gets ingest's clock.
//!
//! Age: this is also how history from an old system comes in (a backfill), so a reading
//! may be as old as the store keeps its metric family's raw points
//! (`limits.backfill_max_age_days` if set), not only `limits.max_age_days`, which stays the
//! clock-sanity limit of gateways over MQTT. Roll-ups of the old partitions are built when
//! they are sealed, as for any late point (store/src/rollup.rs).
//!
//! Design constraints:
//! - The body is outside input: its size is limited before and after gzip, and every line
//!   is parsed before anything is written. A line that does not parse refuses the whole
//!   request (400, nothing written), as InfluxDB does; a line that parses but whose value
//!   or time is refused is left out and the rest is written (422 names the first refused
//!   line), as InfluxDB's partial writes.
//! - Answered 204 only once the readings are durable (the store's fsync), so a client that
//!   saw 204 can forget them.
//! - Errors answer like InfluxDB: the status and `{"code": ..., "message": ..., "line": N}`.
//! - A device first seen here is registered with kind `external` under the token's tenant,
//!   and that registration is written to `external-devices.jsonl` in the data directory
//!   (fsynced before the readings), so it survives restarts.
//! - Growth is bounded ([`crate::config::Limits`], `[limits]` of ingest.toml), because
//!   every new device and series costs memory for good (issue 12: 100k device tags made
//!   100k devices; an 81 KB gzip body made 1.7 M readings):
//!   - at most `write_max_readings` values in one request, counted after gzip (more: 413,
//!     nothing written);
//!   - at most `write_max_new_devices` devices and `write_max_new_series` series
//!     (device, metric) created by one request (more: 413, nothing written);
//!   - at most `write_max_devices` devices registered and `write_max_series` series known
//!     in all (more: the values that would create one are refused, 422, the rest is
//!     written).
//!
//!   Every refusal is counted in `ingest_line_protocol_limited_total{limit}`.
//! - Names: a metric name (`<measurement>` or `<measurement>_<field>`) matches
//!   `[A-Za-z_][A-Za-z0-9_]*` and has at most [`MAX_METRIC_NAME`] bytes; a device name
//!   (tag `device` or `host`) is an id, `[A-Za-z0-9_.-]`, 1 to 64 characters
//!   (`protocol::id`). Other tags are not stored. A line with a bad name refuses the
//!   request (400), as a line that does not parse.

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use protocol::{DeviceId, Family as MetricFamily, Metric, Reading, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::{Authorized, Principal, Role};
use crate::codec::line_protocol::{self as line, LineBuf, Precision};
use crate::error::ApiError;
use crate::inventory::Inventory;
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, validate};

/// Longest metric name a line may make (`<measurement>_<field>`).
pub const MAX_METRIC_NAME: usize = 200;
/// Longest line quoted back in an error.
const MAX_QUOTED: usize = 200;

/// The line-protocol source: the pipeline it feeds, the external devices' registrations
/// and its counters (the handler's state).
pub struct LineProtocol {
    /// Where readings go: its limits (time limits shared with MQTT input, the body limit),
    /// inventory, clock and durable append.
    pipeline: Arc<Pipeline>,
    externals: ExternalDevices,
    /// Every series known to exist, and how many devices were registered here.
    known: Mutex<Known>,
    lines: Counter,
    readings: Counter,
    refused: Counter,
    requests_failed: Counter,
    limited: Family<LimitLabel, Counter>,
}

/// What the growth limits count against.
#[derive(Debug, Default)]
struct Known {
    /// Metric names by device: every series the store held at start, and every one
    /// written here since.
    series: HashMap<String, HashSet<String>>,
    /// How many entries `series` holds.
    series_count: usize,
    /// Devices registered through line protocol (kind `external`).
    devices: usize,
}

impl Known {
    fn has(&self, device: &str, metric: &str) -> bool {
        self.series.get(device).is_some_and(|m| m.contains(metric))
    }

    fn add(&mut self, device: &str, metric: &str) {
        if !self.has(device, metric) {
            self.series.entry(device.to_string()).or_default().insert(metric.to_string());
            self.series_count += 1;
        }
    }
}

/// Which growth limit refused something (a Prometheus label).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    limit: Limit,
}

/// The limits of line-protocol input, by their label.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
enum Limit {
    Readings,
    NewDevices,
    Devices,
    NewSeries,
    Series,
    MetricName,
}

impl prometheus_client::encoding::EncodeLabelValue for Limit {
    fn encode(&self, encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        let name = match self {
            Limit::Readings => "readings",
            Limit::NewDevices => "new_devices",
            Limit::Devices => "devices",
            Limit::NewSeries => "new_series",
            Limit::Series => "series",
            Limit::MetricName => "metric_name",
        };
        std::fmt::Write::write_str(encoder, name)
    }
}

impl LineProtocol {
    /// The source, feeding `pipeline`. `data_dir` keeps the external devices'
    /// registrations; `None` keeps them in memory only (unit tests).
    pub fn new(data_dir: Option<PathBuf>, pipeline: Arc<Pipeline>, metrics: &Metrics) -> LineProtocol {
        let this = LineProtocol {
            pipeline,
            externals: ExternalDevices {
                path: data_dir.map(|d| d.join("external-devices.jsonl")),
                lock: Mutex::new(()),
            },
            known: Mutex::new(Known::default()),
            lines: Counter::default(),
            readings: Counter::default(),
            refused: Counter::default(),
            requests_failed: Counter::default(),
            limited: Family::default(),
        };
        metrics.register(
            "line_protocol_limited",
            "Line-protocol requests or values refused by a growth or name limit, by limit",
            this.limited.clone(),
        );
        metrics.register("line_protocol_lines", "Line-protocol lines received on /api/v2/write", this.lines.clone());
        metrics.register("line_protocol_readings", "Readings stored durably from /api/v2/write", this.readings.clone());
        metrics.register(
            "line_protocol_refused_values",
            "Line-protocol values refused (time, range, tenant)",
            this.refused.clone(),
        );
        metrics.register(
            "line_protocol_failed_requests",
            "/api/v2/write requests answered with an error",
            this.requests_failed.clone(),
        );
        this
    }

    /// Registers the external devices of earlier runs in `inventory`, and learns every
    /// series the store holds (what the growth limits count against); returns how many
    /// devices were restored.
    pub fn restore(&self, inventory: &Inventory) -> std::io::Result<usize> {
        let restored = self.externals.restore(inventory)?;
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.devices = inventory.devices().iter().filter(|d| d.kind == protocol::DeviceKind::External).count();
        for p in self.pipeline.store.latest() {
            known.add(&p.device, p.metric.name());
        }
        Ok(restored)
    }

    fn count_limited(&self, limit: Limit) {
        self.limited.get_or_create(&LimitLabel { limit }).inc();
    }
}

/// The registrations of devices first seen through line protocol, one JSON line each.
struct ExternalDevices {
    path: Option<PathBuf>,
    /// One writer at a time, so lines do not interleave.
    lock: Mutex<()>,
}

#[derive(Serialize, Deserialize)]
struct ExternalDevice {
    device: String,
    tenant: String,
}

impl ExternalDevices {
    fn restore(&self, inventory: &Inventory) -> std::io::Result<usize> {
        let Some(path) = &self.path else { return Ok(0) };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut n = 0;
        for line in text.lines() {
            // A torn last line (crash mid-append) is skipped: its readings were never acked.
            if let Ok(d) = serde_json::from_str::<ExternalDevice>(line)
                && inventory.register_external(&d.device, &d.tenant)
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Registers `devices` and makes the registrations durable; returns how many were new.
    fn register(&self, inventory: &Inventory, tenant: &str, devices: &[String]) -> std::io::Result<usize> {
        let _one = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut text = String::new();
        let mut n = 0;
        for d in devices {
            if inventory.register_external(d, tenant) {
                n += 1;
                let rec = ExternalDevice { device: d.clone(), tenant: tenant.to_string() };
                text.push_str(&serde_json::to_string(&rec).unwrap_or_default());
                text.push('\n');
            }
        }
        if let (Some(path), false) = (&self.path, text.is_empty()) {
            let mut f = OpenOptions::new().create(true).append(true).open(path)?;
            f.write_all(text.as_bytes())?;
            f.sync_data()?;
        }
        Ok(n)
    }
}

/// An error answered the way InfluxDB answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteError {
    status: StatusCode,
    message: String,
    /// 1-based number of the line concerned.
    line: Option<usize>,
}

impl WriteError {
    fn new(status: StatusCode, message: impl Into<String>) -> WriteError {
        WriteError { status, message: message.into(), line: None }
    }

    fn code(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST => "invalid",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::PAYLOAD_TOO_LARGE => "request too large",
            StatusCode::UNPROCESSABLE_ENTITY => "unprocessable entity",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            _ => "internal error",
        }
    }
}

impl IntoResponse for WriteError {
    fn into_response(self) -> Response {
        let mut body = json!({ "code": self.code(), "message": self.message });
        if let Some(line) = self.line {
            body["line"] = json!(line);
        }
        (self.status, axum::Json(body)).into_response()
    }
}

/// The query of a write. `bucket` is accepted and ignored (there is one store).
#[derive(Debug, Deserialize)]
pub struct WriteParams {
    org: Option<String>,
    #[allow(dead_code)]
    bucket: Option<String>,
    precision: Option<String>,
}

/// What a request stored.
#[derive(Debug, Default, PartialEq)]
struct Summary {
    stored: usize,
    /// The first refused value: (line number, why), and how many were refused.
    refused: Option<(usize, String)>,
    refused_count: usize,
}

/// `POST /api/v2/write`; answers 204 only once the readings are durable.
pub async fn write(
    State(lp): State<Arc<LineProtocol>>,
    auth: Result<Authorized, ApiError>,
    params: Result<Query<WriteParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let principal = authorize(auth)?;
        let Query(params) = params.map_err(|e| WriteError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
        let tenant = tenant_of(&principal, params.org.as_deref())?;
        let precision = match params.precision.as_deref() {
            None | Some("") => Precision::Nanoseconds,
            Some(p) => Precision::parse(p).ok_or_else(|| {
                WriteError::new(StatusCode::BAD_REQUEST, format!("precision '{p}' is not one of ns, us, ms, s"))
            })?,
        };
        let gzip = match headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?")) {
            None | Some("identity") => false,
            Some("gzip") => true,
            Some(other) => {
                return Err(WriteError::new(
                    StatusCode::BAD_REQUEST,
                    format!("Content-Encoding '{other}' is not supported (gzip or none)"),
                ));
            }
        };
        let limit = lp.pipeline.limits.max_write_body_bytes;
        let raw = axum::body::to_bytes(body, limit).await.map_err(|_| too_large(limit))?;
        let source = lp.clone();
        tokio::task::spawn_blocking(move || {
            let text = read_body(&raw, gzip, limit)?;
            let now = (source.pipeline.clock)();
            ingest_text(&source, &tenant, &text, precision, now)
        })
        .await
        .map_err(|e| WriteError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("write task failed: {e}")))?
    }
    .await;
    match result {
        Ok(summary) => {
            if let Some((line, reason)) = summary.refused {
                lp.requests_failed.inc();
                WriteError {
                    status: StatusCode::UNPROCESSABLE_ENTITY,
                    message: format!(
                        "partial write: {} values refused, {} stored; first refused: {reason}",
                        summary.refused_count, summary.stored
                    ),
                    line: Some(line),
                }
                .into_response()
            } else {
                StatusCode::NO_CONTENT.into_response()
            }
        }
        Err(e) => {
            lp.requests_failed.inc();
            if e.status.is_server_error() {
                tracing::error!(message = "Line-protocol write failed.", error = %e.message);
            } else {
                tracing::debug!(message = "Line-protocol write refused.", status = %e.status, error = %e.message);
            }
            e.into_response()
        }
    }
}

fn too_large(limit: usize) -> WriteError {
    WriteError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("body is larger than {limit} bytes"))
}

/// Needs an operator token.
fn authorize(auth: Result<Authorized, ApiError>) -> Result<Principal, WriteError> {
    let Authorized(p) = auth.map_err(|e| WriteError::new(StatusCode::UNAUTHORIZED, e.to_string()))?;
    if p.role < Role::Operator {
        return Err(WriteError::new(
            StatusCode::FORBIDDEN,
            format!("writing needs the operator role, the token has {:?}", p.role).to_lowercase(),
        ));
    }
    Ok(p)
}

/// The tenant the data is written for: `org` if the token may write there, else the
/// token's only tenant. A token for all or several tenants must name one with `org`.
fn tenant_of(p: &Principal, org: Option<&str>) -> Result<String, WriteError> {
    match (org.filter(|o| !o.is_empty()), p.tenants.as_slice()) {
        (Some(org), _) => {
            if !p.may_access(org) {
                return Err(WriteError::new(
                    StatusCode::FORBIDDEN,
                    format!("the token may not write for org '{org}' (tenants: {})", p.tenants.join(", ")),
                ));
            }
            protocol::id::validate(org)
                .map_err(|e| WriteError::new(StatusCode::BAD_REQUEST, format!("org '{org}': {e}")))?;
            Ok(org.to_string())
        }
        (None, [one]) => Ok(one.clone()),
        (None, []) => Err(WriteError::new(
            StatusCode::BAD_REQUEST,
            "the token is valid for every tenant: name the tenant with org=<tenant>",
        )),
        (None, many) => Err(WriteError::new(
            StatusCode::BAD_REQUEST,
            format!("the token is valid for tenants {}: name one with org=<tenant>", many.join(", ")),
        )),
    }
}

/// The body as text: gunzipped if it says so, at most `limit` bytes either way.
fn read_body(raw: &[u8], gzip: bool, limit: usize) -> Result<String, WriteError> {
    let bytes = if gzip {
        let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
        let mut decoder = flate2::read::GzDecoder::new(raw).take(limit as u64 + 1);
        decoder
            .read_to_end(&mut out)
            .map_err(|e| WriteError::new(StatusCode::BAD_REQUEST, format!("body is not valid gzip: {e}")))?;
        if out.len() > limit {
            return Err(too_large(limit));
        }
        out
    } else {
        raw.to_vec()
    };
    String::from_utf8(bytes).map_err(|e| {
        WriteError::new(StatusCode::BAD_REQUEST, format!("body is not UTF-8 (byte {})", e.utf8_error().valid_up_to()))
    })
}

fn quote(line: &str) -> &str {
    match line.char_indices().nth(MAX_QUOTED) {
        Some((i, _)) => &line[..i],
        None => line,
    }
}

/// What is known about a device named in this request.
enum DeviceCheck {
    /// Known, of this tenant, or new (to be registered).
    Ok(DeviceId),
    /// Refused, with the reason.
    Refused(String),
}

/// `Ok` if `name` may be a metric name: `[A-Za-z_][A-Za-z0-9_]*`, at most
/// [`MAX_METRIC_NAME`] bytes; otherwise why not.
pub fn check_metric_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_METRIC_NAME {
        return Err(format!("metric name '{}' is longer than {MAX_METRIC_NAME} bytes", quote(name)));
    }
    let mut chars = name.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') {
        return Err(format!(
            "metric name '{}' must start with a letter or '_' (names are [A-Za-z_][A-Za-z0-9_]*)",
            quote(name)
        ));
    }
    match chars.find(|c| !(c.is_ascii_alphanumeric() || *c == '_')) {
        Some(c) => Err(format!(
            "metric name '{}' has the character {c:?}; names are [A-Za-z_][A-Za-z0-9_]* (<measurement>_<field>)",
            quote(name)
        )),
        None => Ok(()),
    }
}

/// The limits a line-protocol reading is checked against, per metric family: the
/// pipeline's, with `max_age` widened to the family's backfill age
/// ([`crate::config::Limits::backfill_age`]), so history from an old system comes in as
/// far back as the store keeps it while MQTT input keeps its clock-sanity limit.
struct AgeLimits<'a> {
    base: &'a crate::config::Limits,
    store: &'a store::Store,
    /// Worked out once per family and request.
    by_family: Vec<(MetricFamily, crate::config::Limits)>,
}

impl<'a> AgeLimits<'a> {
    fn new(base: &'a crate::config::Limits, store: &'a store::Store) -> AgeLimits<'a> {
        AgeLimits { base, store, by_family: Vec::new() }
    }

    fn limits(&mut self, family: MetricFamily) -> &crate::config::Limits {
        let i = match self.by_family.iter().position(|(f, _)| *f == family) {
            Some(i) => i,
            None => {
                let raw_ms = u64::try_from(self.store.retention(family).raw_ms).unwrap_or(0);
                let mut l = *self.base;
                l.max_age = l.backfill_age(Duration::from_millis(raw_ms));
                self.by_family.push((family, l));
                self.by_family.len() - 1
            }
        };
        &self.by_family[i].1
    }
}

/// A family as the config names it (`store.retention.<name>`).
fn family_name(family: MetricFamily) -> String {
    serde_json::to_value(family)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{family:?}"))
}

/// Parses, checks, stores and forwards one body's lines.
fn ingest_text(
    lp: &LineProtocol,
    tenant: &str,
    text: &str,
    precision: Precision,
    now: Timestamp,
) -> Result<Summary, WriteError> {
    let inventory = &lp.pipeline.inventory;
    let limits = &lp.pipeline.limits;
    let mut buf = LineBuf::default();
    let mut readings: Vec<Reading> = Vec::new();
    let mut devices: HashMap<String, DeviceCheck> = HashMap::new();
    let mut new_devices: Vec<String> = Vec::new();
    let mut new_series = Known::default();
    let mut metrics: HashMap<String, Metric> = HashMap::new();
    let mut name = String::new();
    let mut summary = Summary::default();
    let mut lines = 0u64;
    let mut values = 0usize;
    let mut ages = AgeLimits::new(limits, &lp.pipeline.store);
    let (known_devices, known_series) = {
        let k = lp.known.lock().unwrap_or_else(|e| e.into_inner());
        (k.devices, k.series_count)
    };

    for (i, text_line) in text.split('\n').enumerate() {
        let n = i + 1;
        let bad = |reason: String| WriteError {
            status: StatusCode::BAD_REQUEST,
            message: format!("unable to parse '{}': {reason}", quote(text_line.trim_end_matches('\r'))),
            line: Some(n),
        };
        let too_many =
            |what: String| WriteError { status: StatusCode::PAYLOAD_TOO_LARGE, message: what, line: Some(n) };
        if !line::parse_line(text_line, &mut buf).map_err(|e| bad(e.to_string()))? {
            continue;
        }
        lines += 1;
        let device = buf
            .tag("device")
            .or_else(|| buf.tag("host"))
            .ok_or_else(|| bad("no 'device' tag (nor 'host') names the device".into()))?;
        protocol::id::validate(device).map_err(|e| bad(format!("device '{device}': {e}")))?;
        let ts = match buf.timestamp {
            Some(t) => Timestamp(precision.to_millis(t).ok_or_else(|| bad("timestamp out of range".into()))?),
            None => now,
        };
        if !devices.contains_key(device) {
            let check = match inventory.tenant_of(device) {
                Some(t) if t == tenant => DeviceCheck::Ok(DeviceId::new(device)),
                Some(_) => DeviceCheck::Refused(format!("device '{device}' belongs to another tenant")),
                None if new_devices.len() >= limits.write_max_new_devices => {
                    lp.count_limited(Limit::NewDevices);
                    return Err(too_many(format!(
                        "more than {} new devices in one request (limits.write_max_new_devices): send fewer at a time",
                        limits.write_max_new_devices
                    )));
                }
                None if known_devices.saturating_add(new_devices.len()) >= limits.write_max_devices => {
                    lp.count_limited(Limit::Devices);
                    DeviceCheck::Refused(format!(
                        "device '{device}' is new, but {} devices are registered through line protocol already, the limit (limits.write_max_devices)",
                        limits.write_max_devices
                    ))
                }
                None => {
                    new_devices.push(device.to_string());
                    DeviceCheck::Ok(DeviceId::new(device))
                }
            };
            devices.insert(device.to_string(), check);
        }
        let Some(device_id) = devices.get(device) else { continue };
        for (key, value) in &buf.fields {
            let Some(v) = value.as_f64() else { continue };
            values += 1;
            if values > limits.write_max_readings {
                lp.count_limited(Limit::Readings);
                return Err(too_many(format!(
                    "more than {} values in one request (limits.write_max_readings, counted after gzip): send fewer at a time",
                    limits.write_max_readings
                )));
            }
            name.clear();
            name.push_str(&buf.measurement);
            if key != "value" {
                name.push('_');
                name.push_str(key);
            }
            if let Err(why) = check_metric_name(&name) {
                lp.count_limited(Limit::MetricName);
                return Err(bad(why));
            }
            let metric = match metrics.get(name.as_str()) {
                Some(m) => m.clone(),
                None => {
                    let m = Metric::new(&name);
                    metrics.insert(name.clone(), m.clone());
                    m
                }
            };
            let refusal = match device_id {
                DeviceCheck::Refused(why) => Some(why.clone()),
                DeviceCheck::Ok(id) => {
                    let known = new_series.has(device, &name)
                        || lp.known.lock().unwrap_or_else(|e| e.into_inner()).has(device, &name);
                    let over_cap = if known {
                        None
                    } else if new_series.series_count >= limits.write_max_new_series {
                        lp.count_limited(Limit::NewSeries);
                        return Err(too_many(format!(
                            "more than {} new series (device, metric) in one request (limits.write_max_new_series): send fewer at a time",
                            limits.write_max_new_series
                        )));
                    } else if known_series.saturating_add(new_series.series_count) >= limits.write_max_series {
                        lp.count_limited(Limit::Series);
                        Some(format!(
                            "{name} of '{device}' would be a new series, but {} series exist already, the limit (limits.write_max_series)",
                            limits.write_max_series
                        ))
                    } else {
                        new_series.add(device, &name);
                        None
                    };
                    let r = Reading::new(id.clone(), metric, ts, v);
                    let family = r.metric.def().map_or(MetricFamily::External, |d| d.family);
                    let limits = ages.limits(family);
                    let checked = if let Some(why) = over_cap {
                        Err((validate::Reason::Oversized, why))
                    } else if r.metric.def().is_some() {
                        validate::check_value(&r, limits, now)
                    } else if !v.is_finite() {
                        Err((validate::Reason::NotANumber, format!("{} of '{device}' is {v}", r.metric)))
                    } else {
                        validate::check_time(&r, limits, now)
                    };
                    match checked {
                        Ok(()) => {
                            readings.push(r);
                            None
                        }
                        Err((validate::Reason::TimestampPast, why)) => Some(format!(
                            "{why}; line protocol takes {} readings up to {} days old (limits.backfill_max_age_days, else the family's raw retention)",
                            family_name(family),
                            limits.max_age.as_secs() / 86_400
                        )),
                        Err((_, why)) => Some(why),
                    }
                }
            };
            if let Some(why) = refusal {
                summary.refused_count += 1;
                if summary.refused.is_none() {
                    summary.refused = Some((n, format!("line {n}: {why}")));
                }
            }
        }
    }
    lp.lines.inc_by(lines);
    lp.refused.inc_by(summary.refused_count as u64);
    if readings.is_empty() {
        return Ok(summary);
    }
    // Only devices that brought a stored reading are registered.
    if !new_devices.is_empty() {
        let with_data: HashSet<&str> = readings.iter().map(|r| r.device.as_str()).collect();
        new_devices.retain(|d| with_data.contains(d.as_str()));
    }
    let registered = lp.externals.register(inventory, tenant, &new_devices).map_err(|e| {
        WriteError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("registering external devices: {e}"))
    })?;
    lp.pipeline.write_readings(tenant, &readings).map_err(|e| match e {
        store::StoreError::Poisoned { .. } => WriteError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        other => WriteError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    })?;
    {
        let mut known = lp.known.lock().unwrap_or_else(|e| e.into_inner());
        known.devices += registered;
        if new_series.series_count > 0 {
            for r in &readings {
                known.add(r.device.as_str(), r.metric.name());
            }
        }
    }
    summary.stored = readings.len();
    lp.readings.inc_by(readings.len() as u64);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp(1_800_000_000_000);

    /// A line-protocol source on a fresh store in `dir`, with `limits`.
    fn source(dir: &std::path::Path, limits: crate::config::Limits) -> LineProtocol {
        let (store, _) = store::Store::open(store::StoreConfig::new(dir.join("store"))).unwrap();
        let metrics = Arc::new(Metrics::default());
        let pipeline = Arc::new(Pipeline {
            store: Arc::new(store),
            inventory: Arc::new(Inventory::from_file(Default::default())),
            metrics: metrics.clone(),
            rejections: Default::default(),
            limits,
            sinks: Vec::new(),
            clock: Arc::new(|| NOW),
            gaps: Default::default(),
            keyring: Arc::new(crate::keyring::Keyring::new(ed25519_dalek::SigningKey::from_bytes(&[7; 32]))),
        });
        let lp = LineProtocol::new(Some(dir.to_path_buf()), pipeline, &metrics);
        lp.restore(&lp.pipeline.inventory.clone()).unwrap();
        lp
    }

    fn write(lp: &LineProtocol, text: &str) -> Result<Summary, WriteError> {
        ingest_text(lp, "county", text, Precision::Milliseconds, NOW)
    }

    fn limited(lp: &LineProtocol, limit: Limit) -> u64 {
        lp.limited.get_or_create(&LimitLabel { limit }).get()
    }

    /// `n` lines, one per device `d{first}..`, each with `fields` fields.
    fn lines(first: usize, n: usize, fields: usize) -> String {
        (first..first + n)
            .map(|d| {
                let f: Vec<String> = (0..fields).map(|i| format!("f{i}={i}")).collect();
                format!("m,device=d{d} {}\n", f.join(","))
            })
            .collect()
    }

    #[test]
    fn one_request_may_create_only_so_many_devices_series_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let limits = crate::config::Limits {
            write_max_new_devices: 3,
            write_max_new_series: 6,
            write_max_readings: 8,
            ..Default::default()
        };
        let lp = source(dir.path(), limits);
        // Over each cap: 413, the limit named, nothing written, counted.
        let e = write(&lp, &lines(0, 4, 1)).unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(e.message.contains("limits.write_max_new_devices"), "{}", e.message);
        let e = write(&lp, &lines(0, 1, 7)).unwrap_err();
        assert!(e.message.contains("limits.write_max_new_series"), "{}", e.message);
        let e = write(&lp, &"m,device=d0 f0=1\n".repeat(9)).unwrap_err();
        assert!(e.message.contains("limits.write_max_readings"), "{}", e.message);
        assert_eq!(lp.pipeline.inventory.devices().len(), 0, "nothing of a refused request was registered");
        assert_eq!(
            [Limit::NewDevices, Limit::NewSeries, Limit::Readings].map(|l| limited(&lp, l)),
            [1, 1, 1],
            "each refusal counted under its limit"
        );
        // Positive control: up to each cap, everything is written.
        assert_eq!(write(&lp, &lines(0, 3, 2)).map(|s| s.stored), Ok(6));
        assert_eq!(lp.pipeline.inventory.devices().len(), 3);
        // Known series do not count as new: the same six again, plus two values, pass.
        assert_eq!(write(&lp, &format!("{}m,device=d0 f0=9,f1=9\n", lines(0, 3, 2))).map(|s| s.stored), Ok(8));
    }

    #[test]
    fn devices_and_series_in_all_stop_at_their_caps_and_the_rest_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let limits = crate::config::Limits { write_max_devices: 4, write_max_series: 6, ..Default::default() };
        let lp = source(dir.path(), limits);
        assert_eq!(write(&lp, &lines(0, 3, 1)).map(|s| s.stored), Ok(3));
        // Two more devices: one fits the cap of 4, the other's value is refused (422).
        let s = write(&lp, &lines(3, 2, 1)).unwrap();
        assert_eq!((s.stored, s.refused_count), (1, 1));
        assert!(s.refused.unwrap().1.contains("limits.write_max_devices"));
        assert_eq!(lp.pipeline.inventory.devices().len(), 4);
        assert_eq!(limited(&lp, Limit::Devices), 1);
        // Four series exist; new fields on known devices make series up to 6 in all.
        let s = write(&lp, "m,device=d0 f0=1,f1=1,f2=1,f3=1\n").unwrap();
        assert_eq!((s.stored, s.refused_count), (3, 1), "f0 is known, f1 and f2 fit, f3 is over");
        assert!(s.refused.unwrap().1.contains("limits.write_max_series"));
        assert_eq!(limited(&lp, Limit::Series), 1);
        // The caps hold across a restart: the store's series and the registrations count.
        drop(lp);
        let lp = source(dir.path(), limits);
        let s = write(&lp, "m,device=d9 f0=1\nm,device=d1 f0=2\n").unwrap();
        assert_eq!((s.stored, s.refused_count), (1, 1), "d9 would be a fifth device");
    }

    #[test]
    fn history_is_taken_back_to_the_familys_retention_while_mqtt_keeps_its_clock_limit() {
        const DAY: i64 = 86_400_000;
        let dir = tempfile::tempdir().unwrap();
        let lp = source(dir.path(), Default::default());
        let at = |days: i64| NOW.0 - days * DAY;
        // Water keeps raw points 730 days, custom (external) metrics 90: a year-old meter
        // total and a 60-day-old custom value are history, older than max_age (30 days).
        let s = write(
            &lp,
            &format!("volume_total,device=m1 value=12.5 {}\nboiler,device=b1 value=1 {}\n", at(400), at(60)),
        )
        .unwrap();
        assert_eq!((s.stored, s.refused_count), (2, 0));
        let kept = lp.pipeline.store.range("m1", "volume_total", Timestamp(at(401)), Timestamp(at(399)), 10).unwrap();
        assert_eq!(kept.iter().map(|p| p.value).collect::<Vec<_>>(), vec![12.5]);
        // Older than the family's retention: refused, with the limit named.
        let s =
            write(&lp, &format!("volume_total,device=m1 value=1 {}\nboiler,device=b1 value=1 {}\n", at(731), at(91)))
                .unwrap();
        assert_eq!((s.stored, s.refused_count), (0, 2));
        let (_, why) = s.refused.unwrap();
        assert!(why.contains("731 days in the past") && why.contains("water readings up to 730 days"), "{why}");
        // The MQTT path still refuses the year-old reading: max_age is its limit.
        let r = Reading::new("m1", Metric::new("volume_total"), Timestamp(at(400)), 12.5);
        assert_eq!(validate::check_value(&r, &lp.pipeline.limits, NOW).unwrap_err().0, validate::Reason::TimestampPast);

        // backfill_max_age_days narrows it, but never below max_age_days.
        let dir = tempfile::tempdir().unwrap();
        let day = std::time::Duration::from_secs(86_400);
        let limits = crate::config::Limits { backfill_max_age: Some(100 * day), ..Default::default() };
        let lp = source(dir.path(), limits);
        let s = write(
            &lp,
            &format!("volume_total,device=m1 value=1 {}\nvolume_total,device=m1 value=2 {}\n", at(99), at(101)),
        )
        .unwrap();
        assert_eq!((s.stored, s.refused_count), (1, 1));
        let limits = crate::config::Limits { backfill_max_age: Some(day), ..Default::default() };
        assert_eq!(limits.backfill_age(730 * day), 30 * day, "max_age_days still holds");
    }

    #[test]
    fn metric_names_have_a_character_set_and_a_length() {
        for good in ["flow", "cpu_usage_idle", "_x", "A9_b"] {
            assert_eq!(check_metric_name(good), Ok(()), "{good}");
        }
        for bad in ["cpu-load", "9lives", "a.b", "x y", "温度", ""] {
            assert!(check_metric_name(bad).is_err(), "{bad}");
        }
        assert!(check_metric_name(&"m".repeat(MAX_METRIC_NAME)).is_ok());
        assert!(check_metric_name(&"m".repeat(MAX_METRIC_NAME + 1)).unwrap_err().contains("longer than 200"));
        let dir = tempfile::tempdir().unwrap();
        let lp = source(dir.path(), Default::default());
        let e = write(&lp, "cpu,device=d1 load-1=0.5\n").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("[A-Za-z_][A-Za-z0-9_]*"), "{}", e.message);
        assert_eq!(limited(&lp, Limit::MetricName), 1);
        assert_eq!(write(&lp, "cpu,device=d1 load_1=0.5\n").map(|s| s.stored), Ok(1));
    }

    fn principal(tenants: &[&str], role: Role) -> Principal {
        Principal { name: "t".into(), role, tenants: tenants.iter().map(|t| t.to_string()).collect(), sees: vec![] }
    }

    #[test]
    fn the_tenant_comes_from_org_or_the_tokens_only_tenant() {
        let one = principal(&["county"], Role::Operator);
        assert_eq!(tenant_of(&one, None), Ok("county".into()));
        assert_eq!(tenant_of(&one, Some("county")), Ok("county".into()));
        assert_eq!(tenant_of(&one, Some("dairy")).unwrap_err().status, StatusCode::FORBIDDEN);
        let all = principal(&[], Role::Admin);
        assert_eq!(tenant_of(&all, Some("dairy")), Ok("dairy".into()));
        let e = tenant_of(&all, None).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("org=<tenant>"), "{}", e.message);
        let two = principal(&["a", "b"], Role::Operator);
        assert!(tenant_of(&two, None).unwrap_err().message.contains("tenants a, b"));
        assert_eq!(tenant_of(&all, Some("a/b")).unwrap_err().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_viewer_token_may_not_write() {
        let e = authorize(Ok(Authorized(principal(&[], Role::Viewer)))).unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
    }

    #[test]
    fn gzip_bodies_are_limited_after_decompression() {
        use flate2::write::GzEncoder;
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&vec![b'a'; 10_000]).unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(read_body(&gz, true, 10_000).map(|s| s.len()), Ok(10_000));
        assert_eq!(read_body(&gz, true, 9_999).unwrap_err().status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(read_body(b"not gzip", true, 100).unwrap_err().status, StatusCode::BAD_REQUEST);
        assert_eq!(read_body(&[0xff, 0xfe], false, 100).unwrap_err().status, StatusCode::BAD_REQUEST);
    }
}
