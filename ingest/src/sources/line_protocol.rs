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

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use protocol::{DeviceId, Metric, Reading, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::{Authorized, Principal, Role};
use crate::codec::line_protocol::{self as line, LineBuf, Precision};
use crate::error::ApiError;
use crate::inventory::Inventory;
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, validate};

/// Longest metric name a line may make (`<measurement>_<field>`).
const MAX_METRIC_NAME: usize = 200;
/// Longest line quoted back in an error.
const MAX_QUOTED: usize = 200;

/// The line-protocol source: the pipeline it feeds, the external devices' registrations
/// and its counters (the handler's state).
pub struct LineProtocol {
    /// Where readings go: its limits (time limits shared with MQTT input, the body limit),
    /// inventory, clock and durable append.
    pipeline: Arc<Pipeline>,
    externals: ExternalDevices,
    lines: Counter,
    readings: Counter,
    refused: Counter,
    requests_failed: Counter,
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
            lines: Counter::default(),
            readings: Counter::default(),
            refused: Counter::default(),
            requests_failed: Counter::default(),
        };
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

    /// Registers the external devices of earlier runs in `inventory`; returns how many.
    pub fn restore(&self, inventory: &Inventory) -> std::io::Result<usize> {
        self.externals.restore(inventory)
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

    /// Registers `devices` and makes the registrations durable.
    fn register(&self, inventory: &Inventory, tenant: &str, devices: &[String]) -> std::io::Result<()> {
        let _one = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut text = String::new();
        for d in devices {
            if inventory.register_external(d, tenant) {
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
        Ok(())
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

/// Parses, checks, stores and forwards one body's lines.
fn ingest_text(
    lp: &LineProtocol,
    tenant: &str,
    text: &str,
    precision: Precision,
    now: Timestamp,
) -> Result<Summary, WriteError> {
    let inventory = &lp.pipeline.inventory;
    let mut buf = LineBuf::default();
    let mut readings: Vec<Reading> = Vec::new();
    let mut devices: HashMap<String, DeviceCheck> = HashMap::new();
    let mut new_devices: Vec<String> = Vec::new();
    let mut metrics: HashMap<String, Metric> = HashMap::new();
    let mut name = String::new();
    let mut summary = Summary::default();
    let mut lines = 0u64;

    for (i, text_line) in text.split('\n').enumerate() {
        let n = i + 1;
        let bad = |reason: String| WriteError {
            status: StatusCode::BAD_REQUEST,
            message: format!("unable to parse '{}': {reason}", quote(text_line.trim_end_matches('\r'))),
            line: Some(n),
        };
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
            name.clear();
            name.push_str(&buf.measurement);
            if key != "value" {
                name.push('_');
                name.push_str(key);
            }
            if name.len() > MAX_METRIC_NAME {
                return Err(bad(format!("metric name '{}' is longer than {MAX_METRIC_NAME} bytes", quote(&name))));
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
                    let r = Reading::new(id.clone(), metric, ts, v);
                    let checked = if r.metric.def().is_some() {
                        validate::check_value(&r, &lp.pipeline.limits, now)
                    } else if !v.is_finite() {
                        Err((validate::Reason::NotANumber, format!("{} of '{device}' is {v}", r.metric)))
                    } else {
                        validate::check_time(&r, &lp.pipeline.limits, now)
                    };
                    match checked {
                        Ok(()) => {
                            readings.push(r);
                            None
                        }
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
        let with_data: std::collections::HashSet<&str> = readings.iter().map(|r| r.device.as_str()).collect();
        new_devices.retain(|d| with_data.contains(d.as_str()));
    }
    lp.externals.register(inventory, tenant, &new_devices).map_err(|e| {
        WriteError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("registering external devices: {e}"))
    })?;
    lp.pipeline.write_readings(tenant, &readings).map_err(|e| match e {
        store::StoreError::Poisoned { .. } => WriteError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        other => WriteError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    })?;
    summary.stored = readings.len();
    lp.readings.inc_by(readings.len() as u64);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(tenants: &[&str], role: Role) -> Principal {
        Principal { name: "t".into(), role, tenants: tenants.iter().map(|t| t.to_string()).collect() }
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
