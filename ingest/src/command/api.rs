//! HTTP calls for commands: issue a write, see a command and its acks, get the public key.
//!
//! | call | what |
//! |---|---|
//! | `POST /api/v1/devices/{id}/commands` `{"point","value","ttl_secs","reason"}` | operator token of the device's tenant; `point` one of the writable points of the device's profile (else 422 naming them); `reason` (optional, at most 500 characters) goes into the audit log; 202 `{"id", "status": "sent"}` |
//! | `GET /api/v1/commands/{id}` | the command, who issued it and why, its acks, and its `outcome` (token of the tenant, or public reads) |
//! | `GET /api/v1/controls` | the device models with writable points: each point's name, unit, range and kind of control |
//! | `GET /api/v1/devices/{id}/controls` | one device's writable points, whether the caller may command it, and its recent commands |
//! | `GET /api/v1/keys/commands` | `{"algorithm": "ed25519", "public_key": HEX}`: the gateways' `command_key` |

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{FromRef, Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use protocol::command::Action;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Commander, Issue};
use crate::auth::{Access, Authorized, Reader, Role, Trail};
use crate::error::ApiError;
use crate::inventory::Inventory;

/// Longest a command may wait to be carried out.
const MAX_TTL_SECS: u64 = 24 * 3600;

/// The command routes, to nest under `/api/v1`; the handlers take the [`Commander`], the
/// inventory and the tokens out of the API's state.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Access: FromRef<S>,
    Commander: FromRef<S>,
    Arc<Inventory>: FromRef<S>,
{
    Router::new()
        .route("/devices/{id}/commands", post(issue_write))
        .route("/commands/{id}", get(get_command))
        .route("/controls", get(controls))
        .route("/devices/{id}/controls", get(device_controls))
        .route("/keys/commands", get(public_key))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteRequest {
    point: String,
    value: f64,
    #[serde(default = "default_ttl_secs")]
    ttl_secs: u64,
    /// Why the operator sends it: for the audit log and whoever reads it later.
    #[serde(default)]
    reason: Option<String>,
}

/// Longest reason an operator may give with a command.
const MAX_REASON_CHARS: usize = 500;

const fn default_ttl_secs() -> u64 {
    60
}

async fn issue_write(
    State(commands): State<Commander>,
    State(inventory): State<Arc<Inventory>>,
    Authorized(principal): Authorized,
    trail: Trail,
    Path(device): Path<String>,
    body: Result<Json<WriteRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    principal.require(Role::Operator)?;
    let Json(req) = body.map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"point\": NAME, \"value\": NUMBER, \"ttl_secs\": N, \"reason\": TEXT}}: {e}"
        ))
    })?;
    let reason = req.reason.as_deref().map(str::trim).filter(|r| !r.is_empty()).map(str::to_string);
    if reason.as_ref().is_some_and(|r| r.chars().count() > MAX_REASON_CHARS) {
        return Err(ApiError::BadRequest(format!("reason is longer than {MAX_REASON_CHARS} characters")));
    }
    let d = inventory.device(&device).ok_or_else(|| ApiError::NotFound(format!("no device '{device}'")))?;
    let gw = inventory
        .gateway(&d.gateway)
        .ok_or_else(|| ApiError::Unprocessable(format!("device '{device}' has no known gateway")))?;
    principal.require_tenant(&gw.tenant)?;
    if !req.value.is_finite() {
        return Err(ApiError::BadRequest("value must be a finite number".into()));
    }
    if req.ttl_secs == 0 || req.ttl_secs > MAX_TTL_SECS {
        return Err(ApiError::BadRequest(format!("ttl_secs must be 1..={MAX_TTL_SECS}")));
    }
    // Only a writable point of the device's profile: anything else the gateway would
    // refuse, and an unchecked point of any length made commands too large to publish.
    let writable = commands.writable_points(&d.model).ok_or_else(|| {
        ApiError::Unprocessable(format!(
            "device '{device}' has model '{}', which has no profile ingest knows: its writable points are unknown",
            d.model
        ))
    })?;
    if !writable.contains(&req.point) {
        let shown: String = req.point.chars().take(64).collect();
        let more = if shown.len() < req.point.len() { "..." } else { "" };
        return Err(ApiError::Unprocessable(if writable.is_empty() {
            format!("'{shown}{more}' is not writable: model '{}' has no writable points", d.model)
        } else {
            format!(
                "'{shown}{more}' is not a writable point of model '{}' (writable: {})",
                d.model,
                writable.join(", ")
            )
        }));
    }
    let issue = Issue {
        tenant: gw.tenant.clone(),
        gateway: gw.id.clone(),
        device: device.clone(),
        action: Action::Write { point: req.point.clone(), value: req.value },
        ttl: Duration::from_secs(req.ttl_secs),
        expires_at: None,
        issued_by: principal.name.clone(),
    };
    let sent = match reason.clone() {
        Some(r) => commands.issue_because(issue, r).await,
        None => commands.issue(issue).await,
    };
    let id = sent.map_err(|e| match e {
        super::CommandError::Publish(_) => ApiError::Unavailable(format!("cannot reach the broker: {e}")),
        super::CommandError::TooLarge { .. } => ApiError::Unprocessable(e.to_string()),
        other => ApiError::Internal(other.to_string()),
    })?;
    let what = json!({ "device": device, "point": req.point, "value": req.value, "reason": reason });
    trail.record(&principal, "command.write", Some(&gw.tenant), id, what).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(
            json!({ "id": id, "status": "sent", "device": device, "gateway": gw.id, "point": req.point, "value": req.value }),
        ),
    ))
}

async fn get_command(
    State(commands): State<Commander>,
    reader: Reader,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    let r = commands.get(id).ok_or_else(|| ApiError::NotFound(format!("no command {id} since ingest started")))?;
    if !reader.may_see(&r.command.tenant) {
        return Err(ApiError::NotFound(format!("no command {id} since ingest started")));
    }
    Ok(Json(command_view(&r, commands.now())))
}

/// A command as the API shows it: `state` is the latest ack's (or `sent`), `outcome` what
/// it means for the person who sent it (docs/API.md).
fn command_view(r: &super::Record, now: protocol::Timestamp) -> Value {
    let state = r.acks.last().map_or(json!("sent"), |a| json!(a.state));
    let outcome = r.outcome(now);
    json!({
        "id": r.command.id,
        "state": state,
        "issued_by": r.issued_by,
        "reason": r.reason,
        "command": r.command,
        "acks": r.acks,
        "outcome": {
            "state": outcome.state,
            "reason": outcome.reason,
            "at": outcome.at.map(crate::time::rfc3339),
            "final": outcome.last,
        },
    })
}

/// Every device model with writable points, and those points: what the control panel can
/// offer (which devices of those models a caller may command is `device_controls`).
async fn controls(State(commands): State<Commander>, _reader: Reader) -> Json<Value> {
    let mut models: Vec<(&str, &[super::profiles::PointInfo])> = commands.points().models().collect();
    models.sort_by_key(|(m, _)| *m);
    Json(json!(
        models.into_iter().map(|(model, points)| json!({ "model": model, "points": points })).collect::<Vec<_>>()
    ))
}

/// Commands to one device shown with its controls.
const RECENT_COMMANDS: usize = 10;

/// One device's controls: its writable points, whether the caller may command it (an
/// operator or admin of its tenant), and the commands sent to it since ingest started.
async fn device_controls(
    State(commands): State<Commander>,
    State(inventory): State<Arc<Inventory>>,
    reader: Reader,
    Path(device): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let missing = || ApiError::NotFound(format!("no device '{device}'"));
    let d = inventory.device(&device).ok_or_else(missing)?;
    let tenant = inventory.gateway(&d.gateway).map(|g| g.tenant.clone()).ok_or_else(missing)?;
    if !reader.may_see(&tenant) {
        return Err(missing());
    }
    let may_command = reader.0.as_ref().is_some_and(|p| p.role >= Role::Operator && p.may_access(&tenant));
    let points = commands.points().info(&d.model).unwrap_or_default();
    let now = commands.now();
    let recent: Vec<Value> = commands.recent(&device, RECENT_COMMANDS).iter().map(|r| command_view(r, now)).collect();
    Ok(Json(json!({
        "device": d.id,
        "model": d.model,
        "kind": d.kind,
        "site": d.site,
        "gateway": d.gateway,
        "tenant": tenant,
        "may_command": may_command,
        "points": points,
        "recent": recent,
    })))
}

async fn public_key(State(commands): State<Commander>) -> Json<Value> {
    Json(json!({ "algorithm": "ed25519", "public_key": commands.public_key_hex() }))
}
