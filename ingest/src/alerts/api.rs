//! HTTP API of alerts, rules, silences and proposed broadcasts (docs/API.md, docs/ALERTS.md).
//!
//! Reads follow the API's read rule (public in the demo, else a token) and show only the
//! tenants the caller may see. Every write needs an operator token (rule reload: admin)
//! valid for the tenant of what it touches; a tenant the caller may not see is "not
//! found", so ids do not leak across tenants.
//!
//! An alert muted by a silence or a maintenance window says which (`muted`), so the page
//! shows planned work apart from alerts someone silenced. Maintenance windows are also
//! their own resource (`/maintenance`): planned work at a site, which reports read to show
//! planned interruptions apart from failures.

use axum::extract::{FromRef, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Alerts;
use super::manager::{ManagerError, NewSilence};
use super::model::{Alert, AlertState, Matchers, ProposalState, ProposedBroadcast, Severity, Silence, SilenceKind};
use crate::auth::{Access, Authorized, Principal, Reader, Role, Trail};
use crate::broadcast::Broadcasts;
use crate::error::ApiError;
use crate::time::{parse, rfc3339};

/// The routes, mounted under `/api/v1`. The handlers take alerts (`None`: not enabled,
/// every call answers 404), broadcasts (an approved proposal becomes one) and the tokens
/// out of the API's state.
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Access: FromRef<S>,
    Option<Alerts>: FromRef<S>,
    Broadcasts: FromRef<S>,
{
    Router::new()
        .route("/alerts", get(list))
        .route("/alerts/{id}", get(one))
        .route("/alerts/{id}/ack", post(ack))
        .route("/silences", get(silences).post(create_silence))
        .route("/silences/{id}", delete(expire_silence))
        .route("/maintenance", get(maintenance).post(create_maintenance))
        .route("/rules", get(rules))
        .route("/rules/reload", post(reload))
        .route("/proposed-broadcasts", get(proposals))
        .route("/proposed-broadcasts/{id}/approve", post(approve))
}

fn alerts(s: &Option<Alerts>) -> Result<&Alerts, ApiError> {
    s.as_ref().ok_or_else(|| ApiError::NotFound("alerts are not enabled on this ingest".into()))
}

fn manager_error(e: ManagerError) -> ApiError {
    match e {
        ManagerError::NotFound(m) => ApiError::NotFound(m),
        ManagerError::Invalid(m) => ApiError::Unprocessable(m),
        ManagerError::Log(e) => ApiError::Internal(e.to_string()),
    }
}

fn ts(t: Option<protocol::Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(rfc3339(t)))
}

/// The JSON of an alert with what mutes it: `muted` names the silence or maintenance
/// window (`id`, `kind`, `reason`, `ends_at`, `created_by`), `maintenance` is true under a
/// maintenance window.
fn view_muted(a: &Alert, silences: &[Silence], texts: &super::text::Texts) -> Value {
    let mut v = view_with(a, texts);
    let by = a.silenced_by.and_then(|id| silences.iter().find(|s| s.id == id));
    v["muted"] = by.map_or(Value::Null, |s| {
        json!({ "id": s.id, "kind": s.kind, "reason": s.reason, "ends_at": rfc3339(s.ends_at), "created_by": s.created_by })
    });
    v["maintenance"] = json!(by.is_some_and(|s| s.kind == SilenceKind::Maintenance));
    v
}

/// The JSON of an alert: the fields first, then the rest.
pub(crate) fn view(a: &Alert) -> Value {
    json!({
        "id": a.id,
        "rule": a.rule,
        "severity": a.severity,
        "state": a.state,
        "device": a.device,
        "site": a.site,
        "gateway": a.gateway,
        "district": a.district,
        "entity": a.entity,
        "tenant": a.tenant,
        "started_at": rfc3339(a.started_at),
        "fired_at": ts(a.fired_at),
        "resolved_at": ts(a.resolved_at),
        "summary": a.summary,
        "value": a.value,
        "fingerprint": a.fingerprint,
        "silenced_by": a.silenced_by,
        "ack": a.ack.as_ref().map(|k| json!({ "by": k.by, "at": rfc3339(k.at), "note": k.note })),
        "flaps": a.flaps,
        "updated_at": rfc3339(a.updated_at),
    })
}

/// The JSON of an alert with its words for people, from the same facts in both languages
/// ([`super::text`]): `rule_name`, `rule_name_zh` and `summary_zh` (the page shows it when
/// it is in Chinese; `summary` stays the rule's own English template).
fn view_with(a: &Alert, texts: &super::text::Texts) -> Value {
    use super::config::Language;
    let mut v = view(a);
    let f = texts.facts(a);
    if let Value::Object(m) = &mut v {
        m.insert("rule_name".into(), Value::String(f.rule_name(Language::En)));
        m.insert("rule_name_zh".into(), Value::String(f.rule_name(Language::Zh)));
        m.insert("summary_zh".into(), Value::String(f.summary(Language::Zh)));
    }
    v
}

fn silence_view(s: &Silence, now: protocol::Timestamp) -> Value {
    json!({
        "id": s.id,
        "kind": s.kind,
        "matchers": s.matchers,
        "starts_at": rfc3339(s.starts_at),
        "ends_at": rfc3339(s.ends_at),
        "reason": s.reason,
        "created_by": s.created_by,
        "tenant": s.tenant,
        "created_at": rfc3339(s.created_at),
        "active": s.active(now),
    })
}

fn proposal_view(p: &ProposedBroadcast) -> Value {
    json!({
        "id": p.id,
        "alert": p.alert,
        "tenant": p.tenant,
        "villages": p.villages,
        "text": p.text,
        "level": p.level,
        "state": p.state,
        "created_at": rfc3339(p.created_at),
        "approved_by": p.approved_by,
        "approved_at": ts(p.approved_at),
    })
}

#[derive(Debug, Deserialize)]
pub(crate) struct AlertQuery {
    state: Option<String>,
    rule: Option<String>,
    device: Option<String>,
    site: Option<String>,
    severity: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
}

async fn list(
    State(s): State<Option<Alerts>>,
    reader: Reader,
    Query(q): Query<AlertQuery>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let alerts = alerts(&s)?;
    // `active` is every open state; a comma list picks several.
    let states: Option<Vec<AlertState>> = match q.state.as_deref() {
        None | Some("") => None,
        Some(text) => {
            let mut v = Vec::new();
            for part in text.split(',') {
                if part == "active" {
                    v.extend([AlertState::Pending, AlertState::Firing, AlertState::Acknowledged]);
                } else {
                    v.push(part.parse::<AlertState>().map_err(ApiError::BadRequest)?);
                }
            }
            Some(v)
        }
    };
    let severity = q.severity.as_deref().map(str::parse::<Severity>).transpose().map_err(ApiError::BadRequest)?;
    let from = q.from.as_deref().map(parse).transpose().map_err(ApiError::BadRequest)?;
    let to = q.to.as_deref().map(parse).transpose().map_err(ApiError::BadRequest)?;
    let limit = q.limit.unwrap_or(1000).min(10_000);
    let keep = |a: &Alert| {
        reader.may_see(&a.tenant)
            && states.as_ref().is_none_or(|v| v.contains(&a.state))
            && q.rule.as_ref().is_none_or(|r| *r == a.rule)
            && q.device.as_ref().is_none_or(|d| a.device.as_ref() == Some(d))
            && q.site.as_ref().is_none_or(|x| a.site.as_ref() == Some(x))
            && severity.is_none_or(|x| x == a.severity)
            && from.is_none_or(|f| a.resolved_at.is_none_or(|r| r >= f))
            && to.is_none_or(|t| a.started_at < t)
    };
    let (list, silences) = alerts.with_manager(|m| (m.alerts(keep, limit), m.silences(|_| true)));
    let texts = alerts.texts();
    Ok(Json(list.iter().map(|a| view_muted(a, &silences, &texts)).collect()))
}

async fn one(State(s): State<Option<Alerts>>, reader: Reader, Path(id): Path<u64>) -> Result<Json<Value>, ApiError> {
    let alerts = alerts(&s)?;
    let (a, silences) = alerts.with_manager(|m| (m.alert(id).cloned(), m.silences(|_| true)));
    let a = a.filter(|a| reader.may_see(&a.tenant)).ok_or_else(|| ApiError::NotFound(format!("no alert {id}")))?;
    Ok(Json(view_muted(&a, &silences, &alerts.texts())))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AckBody {
    #[serde(default)]
    note: String,
}

fn operator(p: &Principal) -> Result<(), ApiError> {
    p.require(Role::Operator)
}

async fn ack(
    State(s): State<Option<Alerts>>,
    Authorized(p): Authorized,
    trail: Trail,
    Path(id): Path<u64>,
    body: Option<Json<AckBody>>,
) -> Result<Json<Value>, ApiError> {
    operator(&p)?;
    let alerts = alerts(&s)?;
    let note = body.map(|Json(b)| b.note).unwrap_or_default();
    if note.len() > 2000 {
        return Err(ApiError::BadRequest("note is longer than 2000 characters".into()));
    }
    let now = alerts.now();
    let (a, silences) = alerts.with_manager(|m| {
        let tenant = m.alert(id).map(|a| a.tenant.clone());
        match tenant {
            Some(t) if p.may_access(&t) => {
                m.ack(id, &p.name, note, now).map_err(manager_error).map(|a| (a, m.silences(|_| true)))
            }
            _ => Err(ApiError::NotFound(format!("no alert {id}"))),
        }
    })?;
    trail.record(&p, "alert.ack", Some(&a.tenant), id, json!({ "note": a.ack.as_ref().map(|k| k.note.clone()) })).await;
    Ok(Json(view_muted(&a, &silences, &alerts.texts())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SilenceBody {
    matchers: Matchers,
    #[serde(default)]
    kind: SilenceKind,
    starts_at: Option<String>,
    ends_at: String,
    reason: String,
    tenant: Option<String>,
}

async fn silences(State(s): State<Option<Alerts>>, reader: Reader) -> Result<Json<Vec<Value>>, ApiError> {
    let alerts = alerts(&s)?;
    let now = alerts.now();
    let list = alerts.with_manager(|m| m.silences(|x| reader.may_see(&x.tenant)));
    Ok(Json(list.iter().map(|x| silence_view(x, now)).collect()))
}

/// The tenant a write acts for: the one named, or the caller's only one.
fn tenant_for(p: &Principal, named: Option<String>) -> Result<String, ApiError> {
    match named {
        Some(t) => {
            p.require_tenant(&t)?;
            Ok(t)
        }
        None if p.tenants.len() == 1 => Ok(p.tenants[0].clone()),
        None => Err(ApiError::BadRequest("name the tenant the silence is for (\"tenant\": ...)".into())),
    }
}

async fn create_silence(
    State(s): State<Option<Alerts>>,
    Authorized(p): Authorized,
    trail: Trail,
    body: Result<Json<SilenceBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    operator(&p)?;
    let alerts = alerts(&s)?;
    let Json(b) = body.map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"matchers\": {{\"site\": ..}}, \"ends_at\": TIME, \"reason\": TEXT, \"tenant\": ID}}: {e}"
        ))
    })?;
    let tenant = tenant_for(&p, b.tenant)?;
    let starts_at = b.starts_at.as_deref().map(parse).transpose().map_err(ApiError::BadRequest)?;
    let ends_at = parse(&b.ends_at).map_err(ApiError::BadRequest)?;
    let now = alerts.now();
    let new = NewSilence {
        kind: b.kind,
        matchers: b.matchers,
        starts_at,
        ends_at,
        reason: b.reason,
        created_by: p.name.clone(),
        tenant,
    };
    let silence = alerts.with_manager(|m| m.silence(new, now)).map_err(manager_error)?;
    let shown = silence_view(&silence, now);
    trail
        .record(
            &p,
            "silence.create",
            Some(&silence.tenant),
            silence.id,
            json!({ "matchers": shown["matchers"], "ends_at": shown["ends_at"], "reason": shown["reason"] }),
        )
        .await;
    Ok((StatusCode::CREATED, Json(shown)))
}

async fn expire_silence(
    State(s): State<Option<Alerts>>,
    Authorized(p): Authorized,
    trail: Trail,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    operator(&p)?;
    let alerts = alerts(&s)?;
    let now = alerts.now();
    let silence = alerts.with_manager(|m| m.expire_silence(id, |t| p.may_access(t), now)).map_err(manager_error)?;
    trail.record(&p, "silence.expire", Some(&silence.tenant), id, Value::Null).await;
    Ok(Json(silence_view(&silence, now)))
}

/// The site a maintenance window is for: its `site` matcher, or the site of the device or
/// gateway it names.
fn window_site(s: &Silence, inventory: &crate::inventory::Inventory) -> Option<String> {
    s.matchers
        .site
        .clone()
        .or_else(|| s.matchers.device.as_deref().and_then(|d| inventory.device(d)).map(|d| d.site))
        .or_else(|| s.matchers.gateway.as_deref().and_then(|g| inventory.gateway(g)).map(|g| g.site))
}

fn maintenance_view(s: &Silence, site: Option<String>, now: protocol::Timestamp) -> Value {
    let mut v = silence_view(s, now);
    v["site"] = json!(site);
    // The short names, for readers that think of a window as a start and an end.
    v["start"] = json!(rfc3339(s.starts_at));
    v["end"] = json!(rfc3339(s.ends_at));
    v["state"] = json!(if now < s.starts_at {
        "planned"
    } else if s.active(now) {
        "active"
    } else {
        "over"
    });
    v
}

#[derive(Debug, Deserialize)]
pub(crate) struct MaintenanceQuery {
    site: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// Maintenance windows (silences of kind `maintenance`) the caller may see, newest first:
/// `site`, `starts_at`/`start`, `ends_at`/`end`, `reason`, `state` (`planned`, `active`,
/// `over`) and the silence's fields. `from`/`to` keep the windows that overlap
/// `[from, to)`; `site` those of one site.
async fn maintenance(
    State(s): State<Option<Alerts>>,
    reader: Reader,
    Query(q): Query<MaintenanceQuery>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let alerts = alerts(&s)?;
    let from = q.from.as_deref().map(parse).transpose().map_err(ApiError::BadRequest)?;
    let to = q.to.as_deref().map(parse).transpose().map_err(ApiError::BadRequest)?;
    let now = alerts.now();
    let list = alerts.with_manager(|m| {
        m.silences(|x| {
            x.kind == SilenceKind::Maintenance
                && reader.may_see(&x.tenant)
                && from.is_none_or(|f| x.ends_at > f)
                && to.is_none_or(|t| x.starts_at < t)
        })
    });
    let inventory = alerts.inventory();
    Ok(Json(
        list.iter()
            .map(|x| (x, window_site(x, inventory)))
            .filter(|(_, site)| q.site.as_ref().is_none_or(|want| site.as_ref() == Some(want)))
            .map(|(x, site)| maintenance_view(x, site, now))
            .collect(),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MaintenanceBody {
    site: String,
    starts_at: Option<String>,
    ends_at: String,
    reason: String,
}

/// Plans maintenance at a site: a maintenance window on the site, for the site's tenant.
/// An unknown site, or one of a tenant the caller may not act on, is 404.
async fn create_maintenance(
    State(s): State<Option<Alerts>>,
    Authorized(p): Authorized,
    trail: Trail,
    body: Result<Json<MaintenanceBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    operator(&p)?;
    let alerts = alerts(&s)?;
    let Json(b) = body.map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"site\": ID, \"starts_at\": TIME, \"ends_at\": TIME, \"reason\": TEXT}}: {e}"
        ))
    })?;
    let site = alerts
        .inventory()
        .sites()
        .into_iter()
        .find(|x| x.id == b.site && p.may_access(&x.tenant))
        .ok_or_else(|| ApiError::NotFound(format!("no site '{}'", b.site)))?;
    let starts_at = b.starts_at.as_deref().map(parse).transpose().map_err(ApiError::BadRequest)?;
    let ends_at = parse(&b.ends_at).map_err(ApiError::BadRequest)?;
    let now = alerts.now();
    let new = NewSilence {
        kind: SilenceKind::Maintenance,
        matchers: Matchers { site: Some(site.id.clone()), ..Matchers::default() },
        starts_at,
        ends_at,
        reason: b.reason,
        created_by: p.name.clone(),
        tenant: site.tenant.clone(),
    };
    let window = alerts.with_manager(|m| m.silence(new, now)).map_err(manager_error)?;
    tracing::info!(message = "Maintenance planned.", site = %site.id, by = %p.name, id = window.id);
    let what = json!({ "site": site.id, "starts_at": rfc3339(window.starts_at), "ends_at": rfc3339(window.ends_at), "reason": window.reason });
    trail.record(&p, "maintenance.create", Some(&site.tenant), window.id, what).await;
    Ok((StatusCode::CREATED, Json(maintenance_view(&window, Some(site.id), now))))
}

async fn rules(State(s): State<Option<Alerts>>, reader: Reader) -> Result<Json<Vec<Value>>, ApiError> {
    let alerts = alerts(&s)?;
    let devices = crate::rules::eval::device_metas(alerts.inventory());
    let out = alerts
        .rules()
        .iter()
        // A district rule is visible where its inflow meters are (its kind says so).
        .filter(|r| crate::rules::eval::rule_visible(r, &devices, |t| reader.may_see(t)))
        .map(|r| serde_json::to_value(&**r).unwrap_or(Value::Null))
        .collect();
    Ok(Json(out))
}

async fn reload(State(s): State<Option<Alerts>>, Authorized(p): Authorized) -> Result<Json<Value>, ApiError> {
    p.require(Role::Admin)?;
    match alerts(&s)?.reload().await {
        Ok(n) => Ok(Json(json!({ "rules": n }))),
        Err(errors) => Err(ApiError::Unprocessable(format!("rule packs refused; the running rules stay:\n{errors}"))),
    }
}

async fn proposals(State(s): State<Option<Alerts>>, reader: Reader) -> Result<Json<Vec<Value>>, ApiError> {
    let list = alerts(&s)?.with_manager(|m| m.proposals(|p| reader.may_see(&p.tenant)));
    Ok(Json(list.iter().map(proposal_view).collect()))
}

async fn approve(
    State(s): State<Option<Alerts>>,
    State(broadcasts): State<Broadcasts>,
    Authorized(p): Authorized,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    operator(&p)?;
    let alerts = alerts(&s)?;
    let now = alerts.now();
    // The broadcast is created first, so that a proposal is only ever marked approved with
    // a broadcast behind it; the dispatcher then applies its own rules (targets, a second
    // operator's approval for red and orange).
    let proposal = alerts
        .with_manager(|m| m.proposals(|q| q.id == id && p.may_access(&q.tenant)))
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::NotFound(format!("no proposed broadcast {id}")))?;
    if proposal.state != ProposalState::Proposed {
        return Err(ApiError::Unprocessable(format!("proposed broadcast {id} is {:?}, not proposed", proposal.state)));
    }
    let broadcast =
        broadcasts.create(&p, broadcast_request(&proposal, now)).await.map_err(|e| match ApiError::from(e) {
            ApiError::BadRequest(m) | ApiError::Unprocessable(m) => {
                ApiError::Unprocessable(format!("proposed broadcast {id}: the dispatcher refused it: {m}"))
            }
            other => other,
        })?;
    let approved = alerts.with_manager(|m| m.approve(id, &p.name, |t| p.may_access(t), now)).map_err(manager_error);
    let proposal = match approved {
        Ok(proposal) => proposal,
        Err(e) => {
            // Someone else approved it meanwhile: theirs stands, ours is withdrawn.
            if let Err(c) = broadcasts.cancel(&p, broadcast).await {
                tracing::warn!(message = "Could not cancel a duplicate broadcast.", broadcast, error = %c);
            }
            return Err(e);
        }
    };
    let mut view = proposal_view(&proposal);
    view["broadcast"] = json!(broadcast);
    Ok(Json(view))
}

/// How long a broadcast an alert proposed stays deliverable: a warning about a supply
/// failure is stale after an hour; the operator can send a new one.
const PROPOSED_BROADCAST_TTL_MS: i64 = 3_600_000;

/// The broadcast request an approved proposal becomes.
fn broadcast_request(proposal: &ProposedBroadcast, now: protocol::Timestamp) -> crate::broadcast::CreateRequest {
    crate::broadcast::CreateRequest {
        level: proposal.level.clone(),
        text: Some(proposal.text.clone()),
        targets: proposal.villages.clone(),
        expires_at: crate::broadcast::TimeInput::Ms(now.0 + PROPOSED_BROADCAST_TTL_MS),
        tenant: Some(proposal.tenant.clone()),
        description: Some(format!("Proposed by alert {} (proposal {}).", proposal.alert, proposal.id)),
        ..Default::default()
    }
}
