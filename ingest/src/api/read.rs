//! Read endpoints: catalogue, sites, devices, latest values, series, refusals.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use protocol::{Timestamp, catalogue};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ApiError, AppState, Reader};
use crate::inventory::Device;
use crate::time::{parse, rfc3339};

/// Most points one series request returns.
const MAX_POINTS: usize = 100_000;
/// Points returned when the request does not say.
const DEFAULT_POINTS: usize = 10_000;

pub(super) async fn catalogue() -> Json<Value> {
    let metrics: Vec<Value> = catalogue::CATALOGUE
        .iter()
        .map(|m| {
            json!({
                "id": m.id, "name": m.name, "unit": m.unit, "family": m.family,
                "description": m.description, "min": m.range.0, "max": m.range.1,
            })
        })
        .collect();
    Json(json!({ "metrics": metrics }))
}

pub(super) async fn sites(State(s): State<AppState>, reader: Reader) -> Json<Vec<crate::inventory::Site>> {
    Json(s.inventory.sites().into_iter().filter(|site| reader.may_see(&site.tenant)).collect())
}

/// Paging of a list (`limit`, `cursor` or `offset`). Without any of them a list is
/// answered whole, as a bare JSON array (what clients before paging read); with one, as a
/// [`Page`].
#[derive(Debug, Default)]
pub(super) struct Paging {
    /// Items per page (default [`DEFAULT_PAGE`], at most [`MAX_PAGE`]; 0 answers only the total).
    limit: Option<usize>,
    /// The `next_cursor` of the page before: items after it. Stable while items come and go.
    cursor: Option<String>,
    /// Items to skip (when no cursor is given).
    offset: Option<usize>,
}

/// Items per page when `cursor` or `offset` is given without `limit`.
pub(super) const DEFAULT_PAGE: usize = 500;
/// Most items one page holds.
pub(super) const MAX_PAGE: usize = 5_000;

impl Paging {
    fn wanted(&self) -> bool {
        self.limit.is_some() || self.cursor.is_some() || self.offset.is_some()
    }
}

/// One page of a list, in key order.
#[derive(Debug, Serialize)]
pub(super) struct Page<T> {
    /// The items.
    pub(super) items: Vec<T>,
    /// How many items match the filters, on every page.
    pub(super) total: usize,
    /// How many items came before this page.
    pub(super) offset: usize,
    /// The page size used.
    pub(super) limit: usize,
    /// Pass as `cursor` for the next page; null on the last.
    pub(super) next_cursor: Option<String>,
}

/// A list answered whole (no paging asked for) or one page of it.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(super) enum Listing<T> {
    /// Every item: what clients before paging read.
    All(Vec<T>),
    /// One page.
    Page(Page<T>),
}

/// Cuts the page `paging` asks for out of `items`, sorted by `key`: after the cursor if
/// one is given (so a device added or removed meanwhile neither repeats nor skips
/// another), else after `offset`.
pub(super) fn paginate<T>(mut items: Vec<T>, paging: &Paging, key: impl Fn(&T) -> String) -> Listing<T> {
    if !paging.wanted() {
        return Listing::All(items);
    }
    let limit = paging.limit.unwrap_or(DEFAULT_PAGE).min(MAX_PAGE);
    let total = items.len();
    let mut keyed: Vec<(String, T)> = items.drain(..).map(|t| (key(&t), t)).collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let offset = match &paging.cursor {
        Some(c) => keyed.partition_point(|(k, _)| k.as_str() <= c.as_str()),
        None => paging.offset.unwrap_or(0).min(total),
    };
    let end = offset.saturating_add(limit).min(total);
    let next_cursor = (end < total && end > offset).then(|| keyed[end - 1].0.clone());
    let items = keyed.into_iter().skip(offset).take(end - offset).map(|(_, t)| t).collect();
    Listing::Page(Page { items, total, offset, limit, next_cursor })
}

/// The township of each site (see [`crate::inventory::Site::township`]).
pub(super) fn townships(sites: &HashMap<String, crate::inventory::Site>) -> HashMap<&str, &str> {
    sites.iter().filter_map(|(id, s)| Some((id.as_str(), s.township.as_deref()?))).collect()
}

#[derive(Debug, Deserialize)]
pub(super) struct DeviceFilter {
    kind: Option<String>,
    site: Option<String>,
    gateway: Option<String>,
    township: Option<String>,
    // Paging's fields, not a flattened `Paging`: serde's flatten would hand the query's
    // numbers over as strings, which `usize` refuses.
    limit: Option<usize>,
    cursor: Option<String>,
    offset: Option<usize>,
}

#[derive(Debug, Serialize)]
pub(super) struct DeviceView {
    id: String,
    kind: protocol::DeviceKind,
    site: String,
    gateway: String,
    tenant: String,
    model: String,
    lat: Option<f64>,
    lon: Option<f64>,
    last_seen: Option<String>,
    online: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    township: Option<String>,
}

pub(super) async fn devices(
    State(s): State<AppState>,
    reader: Reader,
    Query(f): Query<DeviceFilter>,
) -> Result<Json<Listing<DeviceView>>, ApiError> {
    if let Some(kind) = &f.kind {
        kind.parse::<protocol::DeviceKind>().map_err(|e| ApiError::BadRequest(format!("kind '{kind}': {e}")))?;
    }
    let sites: HashMap<String, crate::inventory::Site> =
        s.inventory.sites().into_iter().map(|x| (x.id.clone(), x)).collect();
    let townships = townships(&sites);
    let online: HashMap<String, bool> = s
        .store
        .latest()
        .into_iter()
        .filter(|l| l.metric.name() == "device_online")
        .map(|l| (l.device, l.point.value >= 0.5))
        .collect();
    let out = s
        .inventory
        .devices()
        .into_iter()
        .filter(|d| f.kind.as_deref().is_none_or(|k| d.kind.as_str() == k))
        .filter(|d| f.site.as_deref().is_none_or(|x| d.site == x))
        .filter(|d| f.gateway.as_deref().is_none_or(|x| d.gateway == x))
        .filter(|d| f.township.as_deref().is_none_or(|t| townships.get(d.site.as_str()) == Some(&t)))
        .filter_map(|d| {
            let site = sites.get(&d.site);
            let tenant = site.map(|x| x.tenant.clone()).unwrap_or_default();
            if !reader.may_see(&tenant) {
                return None;
            }
            let online = if d.kind == protocol::DeviceKind::Gateway {
                s.inventory.gateway_online(&d.id)
            } else {
                online.get(&d.id).copied()
            };
            Some(view(&s, d, site, tenant, online))
        })
        .collect();
    let paging = Paging { limit: f.limit, cursor: f.cursor, offset: f.offset };
    Ok(Json(paginate(out, &paging, |d| d.id.clone())))
}

fn view(
    s: &AppState,
    d: Device,
    site: Option<&crate::inventory::Site>,
    tenant: String,
    online: Option<bool>,
) -> DeviceView {
    DeviceView {
        last_seen: s.inventory.last_seen(&d.id).map(rfc3339),
        lat: d.lat.or(site.map(|x| x.lat)),
        lon: d.lon.or(site.map(|x| x.lon)),
        township: site.and_then(|x| x.township.clone()),
        id: d.id,
        kind: d.kind,
        site: d.site,
        gateway: d.gateway,
        tenant,
        model: d.model,
        online,
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct LatestFilter {
    device: Option<String>,
    kind: Option<String>,
    site: Option<String>,
    metric: Option<String>,
    township: Option<String>,
    /// Only values newer than this (RFC 3339 or ms): what changed since the last refresh.
    since: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
    offset: Option<usize>,
}

/// One latest value as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub(super) struct LatestView {
    pub(super) device: String,
    pub(super) metric: String,
    pub(super) unit: &'static str,
    pub(super) ts: String,
    pub(super) value: f64,
    pub(super) quality: protocol::Quality,
    pub(super) kind: String,
    pub(super) site: String,
}

/// The cursor key of a latest value: `device/metric` (device ids never hold a `/`).
fn latest_key(v: &LatestView) -> String {
    format!("{}/{}", v.device, v.metric)
}

pub(super) async fn latest(
    State(s): State<AppState>,
    reader: Reader,
    Query(f): Query<LatestFilter>,
) -> Result<Json<Listing<LatestView>>, ApiError> {
    let since = f.since.as_deref().map(parse).transpose().map_err(ApiError::BadRequest)?;
    let devices: HashMap<String, Device> = s.inventory.devices().into_iter().map(|d| (d.id.clone(), d)).collect();
    let sites: HashMap<String, crate::inventory::Site> =
        s.inventory.sites().into_iter().map(|x| (x.id.clone(), x)).collect();
    let townships = townships(&sites);
    let out = s
        .store
        .latest()
        .into_iter()
        .filter(|l| f.device.as_deref().is_none_or(|d| l.device == d))
        .filter(|l| f.metric.as_deref().is_none_or(|m| l.metric.name() == m))
        .filter(|l| since.is_none_or(|t| l.point.ts > t))
        .filter_map(|l| {
            let d = devices.get(&l.device);
            let kind = d.map(|d| d.kind.as_str()).unwrap_or("external");
            let site = d.map(|d| d.site.as_str()).unwrap_or("");
            if f.kind.as_deref().is_some_and(|k| k != kind) || f.site.as_deref().is_some_and(|x| x != site) {
                return None;
            }
            if f.township.as_deref().is_some_and(|t| townships.get(site) != Some(&t)) {
                return None;
            }
            let tenant = sites.get(site).map(|x| x.tenant.as_str()).unwrap_or("");
            if !reader.may_see(tenant) {
                return None;
            }
            Some(LatestView {
                metric: l.metric.name().to_string(),
                unit: l.metric.unit(),
                ts: rfc3339(l.point.ts),
                value: l.point.value,
                quality: l.point.quality,
                kind: kind.to_string(),
                site: site.to_string(),
                device: l.device,
            })
        })
        .collect();
    let paging = Paging { limit: f.limit, cursor: f.cursor, offset: f.offset };
    Ok(Json(paginate(out, &paging, latest_key)))
}

#[derive(Debug, Deserialize)]
pub(super) struct SeriesQuery {
    device: String,
    metric: String,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
    /// Bucket width: milliseconds, or a number with `ms`, `s`, `m`, `h` or `d`.
    step: Option<String>,
}

/// Parses a step: `60000`, `500ms`, `30s`, `5m`, `1h`, `1d`.
fn parse_step(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: i64 = digits.parse().map_err(|_| format!("step '{text}' is not a number with ms, s, m, h or d"))?;
    let unit_ms = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("step '{text}': unit '{unit}' is not ms, s, m, h or d")),
    };
    match n.checked_mul(unit_ms) {
        Some(ms) if ms > 0 => Ok(ms),
        _ => Err(format!("step '{text}' must be positive and at most a few thousand years")),
    }
}

pub(super) async fn series(
    State(s): State<AppState>,
    reader: Reader,
    Query(q): Query<SeriesQuery>,
) -> Result<Json<Value>, ApiError> {
    let Some(tenant) = s.inventory.tenant_of(&q.device) else {
        return Err(ApiError::NotFound(format!("no device '{}'", q.device)));
    };
    if !reader.may_see(&tenant) {
        return Err(ApiError::NotFound(format!("no device '{}'", q.device)));
    }
    let to = match &q.to {
        Some(t) => parse(t).map_err(ApiError::BadRequest)?,
        None => Timestamp((s.clock)().0 + 1),
    };
    let from = match &q.from {
        Some(t) => parse(t).map_err(ApiError::BadRequest)?,
        None => Timestamp(to.0 - 24 * 3_600_000),
    };
    let unit = protocol::Metric::new(&q.metric).unit();
    if let Some(step) = &q.step {
        return bucketed(&s, &q, from, to, parse_step(step).map_err(ApiError::BadRequest)?, unit).await;
    }
    let limit = q.limit.unwrap_or(DEFAULT_POINTS).min(MAX_POINTS);
    let points = s.store.range(&q.device, &q.metric, from, to, limit + 1)?;
    let truncated = points.len() > limit;
    let points: Vec<Value> = points
        .iter()
        .take(limit)
        .map(|p| json!({ "ts": rfc3339(p.ts), "value": p.value, "quality": p.quality }))
        .collect();
    Ok(Json(json!({
        "device": q.device,
        "metric": q.metric,
        "unit": unit,
        "from": rfc3339(from),
        "to": rfc3339(to),
        "points": points,
        "truncated": truncated,
    })))
}

/// `step=`: buckets with min, max, mean, count and last, from the coarsest roll-up that
/// answers exactly (see `store::Store::range_bucketed`), so a year costs what its hour or
/// minute roll-ups cost to read, not a year of raw points.
async fn bucketed(
    s: &AppState,
    q: &SeriesQuery,
    from: Timestamp,
    to: Timestamp,
    step_ms: i64,
    unit: &str,
) -> Result<Json<Value>, ApiError> {
    let buckets = (i128::from(to.0) - i128::from(from.0)) / i128::from(step_ms);
    if buckets > MAX_POINTS as i128 {
        return Err(ApiError::BadRequest(format!(
            "{buckets} buckets of {step_ms} ms between from and to; at most {MAX_POINTS}: use a wider step"
        )));
    }
    let store = s.store.clone();
    let (device, metric) = (q.device.clone(), q.metric.clone());
    let buckets = tokio::task::spawn_blocking(move || store.range_bucketed(&device, &metric, from, to, step_ms))
        .await
        .map_err(|e| ApiError::Internal(format!("query task: {e}")))??;
    let points: Vec<Value> = buckets
        .iter()
        .map(|b| {
            json!({
                "ts": rfc3339(b.start), "min": b.min, "max": b.max, "mean": b.mean,
                "count": b.count, "last": b.last,
            })
        })
        .collect();
    Ok(Json(json!({
        "device": q.device,
        "metric": q.metric,
        "unit": unit,
        "from": rfc3339(from),
        "to": rfc3339(to),
        "step_ms": step_ms,
        "points": points,
        "truncated": false,
    })))
}

pub(super) async fn rejections(State(s): State<AppState>, reader: Reader) -> Json<Value> {
    let counts: serde_json::Map<String, Value> = crate::pipeline::validate::Reason::ALL
        .iter()
        .map(|r| (r.as_str().to_string(), json!(s.metrics.rejected_count(*r))))
        .collect();
    let recent: Vec<Value> = s
        .rejections
        .recent()
        .into_iter()
        .filter(|r| visible(&reader, rejection_tenant(r, &s.inventory).as_deref()))
        .map(|r| {
            json!({ "reason": r.reason, "reason_zh": r.reason.zh(), "topic": r.topic, "device": r.device, "detail": r.detail, "at": rfc3339(r.at) })
        })
        .collect();
    Json(json!({ "counts": counts, "recent": recent }))
}

/// The tenant a refusal concerns: the inventory's tenant of the topic's gateway (not the
/// tenant the topic claims, which a gateway publishing as another's writes itself), else
/// the device's, else the tenant the topic names; `None` when nothing names one.
fn rejection_tenant(
    r: &crate::pipeline::validate::Rejection,
    inventory: &crate::inventory::Inventory,
) -> Option<String> {
    let topic = protocol::topic::Topic::parse(&r.topic).ok();
    if let Some(gw) = topic.as_ref().and_then(|t| inventory.gateway(t.gateway)) {
        return Some(gw.tenant);
    }
    if let Some(tenant) = r.device.as_deref().and_then(|d| inventory.tenant_of(d)) {
        return Some(tenant);
    }
    topic.map(|t| t.tenant.to_string())
}

/// Whether `reader` may see something of `tenant`; something of no known tenant only a
/// reader of every tenant (public reads, or an unscoped token) sees.
fn visible(reader: &Reader, tenant: Option<&str>) -> bool {
    match tenant {
        Some(t) => reader.may_see(t),
        None => reader.0.as_ref().is_none_or(|p| p.tenants.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::{Reader, parse_step, rejection_tenant, visible};
    use crate::auth::{Principal, Role};
    use crate::inventory::{GatewayInfo, Inventory, InventoryFile, Site};
    use crate::pipeline::validate::{Reason, Rejection};

    #[test]
    fn a_refusal_is_shown_only_to_readers_of_its_tenant() {
        let site = |id: &str, tenant: &str| Site {
            id: id.into(),
            name: id.into(),
            kind: "village".into(),
            tenant: tenant.into(),
            lat: 0.0,
            lon: 0.0,
            village: None,
            district: None,
            township: None,
        };
        let inv = Inventory::from_file(InventoryFile {
            sites: vec![site("s1", "county"), site("s2", "dairy")],
            gateways: vec![
                GatewayInfo { id: "gw-c".into(), tenant: "county".into(), site: "s1".into(), public_key: None },
                GatewayInfo { id: "gw-d".into(), tenant: "dairy".into(), site: "s2".into(), public_key: None },
            ],
            devices: vec![],
        });
        let rejection = |topic: &str| Rejection {
            reason: Reason::Malformed,
            topic: topic.into(),
            device: None,
            detail: String::new(),
            at: protocol::Timestamp(0),
        };
        let county = Reader(Some(Principal {
            name: "c".into(),
            role: Role::Viewer,
            tenants: vec!["county".into()],
            sees: vec![],
        }));
        let admin = Reader(Some(Principal { name: "a".into(), role: Role::Admin, tenants: vec![], sees: vec![] }));
        let seen = |reader: &Reader, topic: &str| visible(reader, rejection_tenant(&rejection(topic), &inv).as_deref());
        // Its own tenant's refusals: shown (positive control); another tenant's: not.
        assert!(seen(&county, "vt/county/gw-c/up/telemetry"));
        assert!(!seen(&county, "vt/dairy/gw-d/up/telemetry"));
        // A dairy gateway publishing under the county's topic is the dairy's refusal.
        assert!(!seen(&county, "vt/county/gw-d/up/telemetry"));
        // No tenant at all: only readers of every tenant see it.
        assert!(!seen(&county, "not/a/topic"));
        assert!(seen(&admin, "not/a/topic") && seen(&admin, "vt/dairy/gw-d/up/telemetry"));
        assert!(seen(&Reader(None), "vt/dairy/gw-d/up/telemetry"));
    }

    #[test]
    fn steps_take_milliseconds_or_a_unit() {
        assert_eq!(parse_step("60000"), Ok(60_000));
        assert_eq!(parse_step("500ms"), Ok(500));
        assert_eq!(parse_step("30s"), Ok(30_000));
        assert_eq!(parse_step("5m"), Ok(300_000));
        assert_eq!(parse_step("9h"), Ok(32_400_000));
        assert_eq!(parse_step("1d"), Ok(86_400_000));
        assert!(parse_step("0").is_err());
        assert!(parse_step("5w").unwrap_err().contains("unit 'w'"));
        assert!(parse_step("fast").is_err());
        assert!(parse_step("99999999999999999d").is_err());
    }
}
