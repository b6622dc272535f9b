//! `/api/v1/broadcasts...` and `/api/v1/speakers` (docs/API.md, docs/BROADCAST.md).
//!
//! Handlers are a list of steps: who is asking, what they ask, ask the [`Broadcasts`]
//! handle, answer. Writes need a token of at least the operator role for the broadcast's
//! tenant; reads follow the API's read rule and see only their tenants. Live progress is
//! server-sent events: `GET /api/v1/broadcasts/{id}/events` (one broadcast, starting with
//! its current counts) and `GET /api/v1/broadcasts/events` (all that the reader may see).
//! A second operator approves (`.../approve`) or rejects with a reason (`.../reject`) a
//! broadcast that waits; `GET /api/v1/broadcasts/rules` tells a console the limits and
//! which levels wait, before it sends.

use std::convert::Infallible;

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRef, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use futures_util::stream::{self, StreamExt as _};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::{BroadcastError, Broadcasts, CapImport, CreateRequest, Live};
use crate::auth::{Access, Authorized, Reader, Trail};
use crate::error::ApiError;

/// The broadcast routes, merged under `/api/v1`.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Access: FromRef<S>,
    Broadcasts: FromRef<S>,
{
    Router::new()
        .route("/broadcasts", get(list).post(create))
        .route("/broadcasts/cap", post(import_cap))
        .route("/broadcasts/events", get(events_all))
        .route("/broadcasts/audit", get(audit))
        .route("/broadcasts/refusals", get(refusals))
        .route("/broadcasts/rules", get(rules))
        .route("/broadcasts/{id}", get(one))
        .route("/broadcasts/{id}/approve", post(approve))
        .route("/broadcasts/{id}/reject", post(reject))
        .route("/broadcasts/{id}/cancel", post(cancel))
        .route("/broadcasts/{id}/cap", get(export_cap))
        .route("/broadcasts/{id}/events", get(events_one))
        .route("/speakers", get(speakers))
}

impl From<BroadcastError> for ApiError {
    fn from(e: BroadcastError) -> ApiError {
        match e {
            BroadcastError::Invalid(m) => ApiError::BadRequest(m),
            BroadcastError::Cap(e) => ApiError::BadRequest(e.to_string()),
            BroadcastError::NotFound(id) => ApiError::NotFound(format!("no broadcast {id}")),
            BroadcastError::Forbidden(m) => ApiError::Forbidden(m),
            BroadcastError::Conflict(m) => ApiError::Unprocessable(m),
            BroadcastError::Audit(e) => ApiError::Internal(format!("broadcast audit log: {e}")),
            BroadcastError::Stopped => ApiError::Unavailable("the broadcast dispatcher is stopping".into()),
        }
    }
}

fn parse_id(id: &str) -> Result<u64, ApiError> {
    id.parse().map_err(|_| ApiError::BadRequest(format!("'{id}' is not a broadcast id")))
}

/// The broadcast as the reader may see it, or 404 (also for another tenant's, so ids of
/// other tenants are not confirmed).
fn visible(b: &Broadcasts, reader: &Reader, id: u64) -> Result<Value, ApiError> {
    match b.view(id) {
        Some((tenant, v)) if reader.may_see(&tenant) => Ok(v),
        _ => Err(ApiError::NotFound(format!("no broadcast {id}"))),
    }
}

async fn create(
    State(b): State<Broadcasts>,
    Authorized(by): Authorized,
    trail: Trail,
    body: Result<Json<CreateRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(req) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let id = b.create(&by, req).await?;
    record(&b, &trail, &by, "broadcast.create", id).await;
    let v = visible(&b, &Reader(Some(by)), id)?;
    Ok((StatusCode::CREATED, Json(summary(v))))
}

/// Records a person's action on broadcast `id` in the people's audit log: who, from
/// where, which broadcast at what level (what it plays is in the broadcast log).
async fn record(b: &Broadcasts, trail: &Trail, by: &crate::auth::Principal, action: &str, id: u64) {
    let (tenant, level) = match b.view(id) {
        Some((tenant, v)) => (Some(tenant), v["level"].clone()),
        None => (None, Value::Null),
    };
    trail.record(by, action, tenant.as_deref(), id, json!({ "level": level })).await;
}

/// A reply to a write: the broadcast without its per-speaker list.
fn summary(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.remove("deliveries");
    }
    v
}

async fn approve(
    State(b): State<Broadcasts>,
    Authorized(by): Authorized,
    trail: Trail,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    b.approve(&by, id).await?;
    record(&b, &trail, &by, "broadcast.approve", id).await;
    Ok(Json(summary(visible(&b, &Reader(Some(by)), id)?)))
}

/// The body of a rejection: why.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectBody {
    reason: String,
}

async fn reject(
    State(b): State<Broadcasts>,
    Authorized(by): Authorized,
    Path(id): Path<String>,
    body: Result<Json<RejectBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let Json(body) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    b.reject(&by, id, &body.reason).await?;
    Ok(Json(summary(visible(&b, &Reader(Some(by)), id)?)))
}

async fn cancel(
    State(b): State<Broadcasts>,
    Authorized(by): Authorized,
    trail: Trail,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    b.cancel(&by, id).await?;
    record(&b, &trail, &by, "broadcast.cancel", id).await;
    Ok(Json(summary(visible(&b, &Reader(Some(by)), id)?)))
}

async fn import_cap(
    State(b): State<Broadcasts>,
    Authorized(by): Authorized,
    trail: Trail,
    query: Result<Query<CapImport>, axum::extract::rejection::QueryRejection>,
    body: String,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Query(options) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let outcome = b.import_cap(&by, &body, options).await?;
    let mut v = serde_json::to_value(&outcome).unwrap_or(Value::Null);
    match &outcome {
        super::CapOutcome::Created { id, .. } => record(&b, &trail, &by, "broadcast.create", *id).await,
        super::CapOutcome::Cancelled { ids } => {
            for id in ids {
                record(&b, &trail, &by, "broadcast.cancel", *id).await;
            }
        }
    }
    if let super::CapOutcome::Created { id, .. } = outcome
        && let Value::Object(m) = &mut v
    {
        m.insert("broadcast".into(), summary(visible(&b, &Reader(Some(by)), id)?));
    }
    Ok((StatusCode::CREATED, Json(v)))
}

async fn rules(State(b): State<Broadcasts>, reader: Reader) -> Json<Value> {
    Json(b.rules(|t| reader.may_see(t)))
}

async fn one(State(b): State<Broadcasts>, reader: Reader, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(visible(&b, &reader, parse_id(&id)?)?))
}

async fn list(State(b): State<Broadcasts>, reader: Reader) -> Json<Vec<Value>> {
    Json(b.list().into_iter().filter(|(t, _)| reader.may_see(t)).map(|(_, v)| v).collect())
}

async fn export_cap(State(b): State<Broadcasts>, reader: Reader, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    match b.export_cap(id) {
        Some((tenant, xml)) if reader.may_see(&tenant) => {
            Ok(([(header::CONTENT_TYPE, "application/cap+xml; charset=utf-8")], xml).into_response())
        }
        _ => Err(ApiError::NotFound(format!("no broadcast {id}"))),
    }
}

async fn speakers(State(b): State<Broadcasts>, reader: Reader) -> Json<Vec<Value>> {
    Json(b.speakers().into_iter().filter(|(t, _)| reader.may_see(t)).map(|(_, v)| v).collect())
}

async fn audit(State(b): State<Broadcasts>, Authorized(by): Authorized) -> Result<Json<Value>, ApiError> {
    by.require(crate::auth::Role::Admin)?;
    let file = b.audit_path().display().to_string();
    Ok(Json(match b.verify_audit() {
        Ok(v) => json!({ "file": file, "verified": true, "lines": v.lines, "head": v.head }),
        Err(e) => json!({ "file": file, "verified": false, "error": e.to_string() }),
    }))
}

async fn refusals(State(b): State<Broadcasts>, Authorized(by): Authorized) -> Result<Json<Value>, ApiError> {
    by.require(crate::auth::Role::Operator)?;
    if !by.tenants.is_empty() {
        return Err(ApiError::Forbidden(
            "refusals of unknown commands are shown to tokens of every tenant only".into(),
        ));
    }
    Ok(Json(b.foreign_refusals()))
}

fn sse_event(live: &Live) -> Result<Event, Infallible> {
    Ok(Event::default().event(live.name).data(live.data.to_string()))
}

/// Live events that pass `keep`, after `first`.
fn live_stream<F: Fn(&Live) -> bool + Send + Sync + 'static>(
    b: &Broadcasts,
    first: Vec<Live>,
    keep: F,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<F>> {
    let rx = b.subscribe();
    let head = stream::iter(first.iter().map(sse_event).collect::<Vec<_>>());
    let keep = std::sync::Arc::new(keep);
    let tail = stream::unfold((rx, keep), |(mut rx, keep)| async move {
        loop {
            match rx.recv().await {
                Ok(live) if keep(&live) => return Some((sse_event(&live), (rx, keep))),
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => {
                    let e = Event::default().event("lagged").data(json!({ "missed": n }).to_string());
                    return Some((Ok(e), (rx, keep)));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    let stop = b.stopping();
    Sse::new(head.chain(tail).take_until(stop.cancelled_owned())).keep_alive(KeepAlive::default())
}

async fn events_one(
    State(b): State<Broadcasts>,
    reader: Reader,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = parse_id(&id)?;
    let v = visible(&b, &reader, id)?;
    let snapshot = Live {
        name: "progress",
        broadcast: Some(id),
        data: json!({ "broadcast": id, "state": v["state"], "counts": v["counts"] }),
    };
    Ok(live_stream(&b, vec![snapshot], move |l| l.broadcast == Some(id)))
}

async fn events_all(State(b): State<Broadcasts>, reader: Reader) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let views = b.clone();
    let everything = reader.0.as_ref().is_none_or(|p| p.tenants.is_empty());
    let keep = move |l: &Live| match l.broadcast {
        Some(id) => views.view_tenant(id).is_some_and(|t| reader.may_see(&t)),
        None => everything,
    };
    live_stream(&b, Vec::new(), keep)
}
