//! Demo-only endpoints under `/api/v1/sim`: inject, list and clear faults in the simulated
//! county.
//!
//! They reach the service only through [`crate::service::Options::extra_routes`]: the
//! service core knows nothing of a simulator, so a build without the `demo` feature has
//! neither these routes nor the simulator. The router carries its own state (the county
//! and the tokens), so it merges into the app whatever the app's state is.
//!
//! Invariant: every route needs an operator token (401 without one, 403 for a viewer).
//! A fault stops a pump or silences a speaker in the simulated county, which is acting,
//! not reading, even in a demo that anyone on the network can reach.

use axum::extract::{FromRef, Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use simulator::{County, Fault, SimError};

use crate::api::ApiError;
use crate::auth::{Access, Authorized, Role, Tokens};

/// What the fault routes reach: the county, and the tokens that may act on it.
#[derive(Clone)]
struct SimState {
    county: County,
    access: Access,
}

impl FromRef<SimState> for Access {
    fn from_ref(s: &SimState) -> Access {
        s.access.clone()
    }
}

impl FromRef<SimState> for County {
    fn from_ref(s: &SimState) -> County {
        s.county.clone()
    }
}

/// The fault routes for `county`, at their full paths (`/api/v1/sim/faults...`); each
/// needs an operator token of `tokens`.
pub fn routes(county: County, tokens: Tokens) -> Router {
    let access = Access { tokens, public_read: false };
    Router::new()
        .route("/api/v1/sim/faults", get(list).post(inject))
        .route("/api/v1/sim/faults/{device}", delete(clear))
        .with_state(SimState { county, access })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InjectRequest {
    device: String,
    fault: String,
}

fn sim_error(e: SimError) -> ApiError {
    match e {
        SimError::UnknownDevice(_) => ApiError::NotFound(e.to_string()),
        other => ApiError::Unprocessable(other.to_string()),
    }
}

async fn inject(
    State(county): State<County>,
    Authorized(principal): Authorized,
    body: Result<Json<InjectRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    principal.require(Role::Operator)?;
    let Json(req) =
        body.map_err(|e| ApiError::BadRequest(format!("expected {{\"device\": ID, \"fault\": NAME}}: {e}")))?;
    let fault: Fault = req.fault.parse().map_err(|e: simulator::UnknownFault| ApiError::BadRequest(e.to_string()))?;
    county.inject(&req.device, fault).map_err(sim_error)?;
    tracing::info!(message = "Fault injected.", device = %req.device, fault = %fault, by = %principal.name);
    Ok((StatusCode::CREATED, Json(json!({ "device": req.device, "fault": fault.to_string() }))))
}

async fn clear(
    State(county): State<County>,
    Authorized(principal): Authorized,
    Path(device): Path<String>,
) -> Result<Json<Value>, ApiError> {
    principal.require(Role::Operator)?;
    county.clear(&device).map_err(sim_error)?;
    tracing::info!(message = "Faults cleared.", device = %device, by = %principal.name);
    Ok(Json(json!({ "device": device, "faults": [] })))
}

async fn list(State(county): State<County>, Authorized(principal): Authorized) -> Result<Json<Value>, ApiError> {
    principal.require(Role::Operator)?;
    let faults: Vec<Value> =
        county.faults().into_iter().map(|(device, f)| json!({ "device": device, "fault": f.to_string() })).collect();
    Ok(Json(json!(faults)))
}
