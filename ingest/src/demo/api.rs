//! Demo-only endpoints under `/api/v1/sim`: inject, list and clear faults in the simulated
//! county.
//!
//! They reach the service only through [`crate::service::Options::extra_routes`]: the
//! service core knows nothing of a simulator, so a build without the `demo` feature has
//! neither these routes nor the simulator. The router carries its own state (the county),
//! so it merges into the app whatever the app's state is.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use simulator::{County, Fault, SimError};

use crate::api::ApiError;

/// The fault routes for `county`, at their full paths (`/api/v1/sim/faults...`).
pub fn routes(county: County) -> Router {
    Router::new()
        .route("/api/v1/sim/faults", get(list).post(inject))
        .route("/api/v1/sim/faults/{device}", delete(clear))
        .with_state(county)
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
    body: Result<Json<InjectRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(req) =
        body.map_err(|e| ApiError::BadRequest(format!("expected {{\"device\": ID, \"fault\": NAME}}: {e}")))?;
    let fault: Fault = req.fault.parse().map_err(|e: simulator::UnknownFault| ApiError::BadRequest(e.to_string()))?;
    county.inject(&req.device, fault).map_err(sim_error)?;
    tracing::info!(message = "Fault injected.", device = %req.device, fault = %fault);
    Ok((StatusCode::CREATED, Json(json!({ "device": req.device, "fault": fault.to_string() }))))
}

async fn clear(State(county): State<County>, Path(device): Path<String>) -> Result<Json<Value>, ApiError> {
    county.clear(&device).map_err(sim_error)?;
    tracing::info!(message = "Faults cleared.", device = %device);
    Ok(Json(json!({ "device": device, "faults": [] })))
}

async fn list(State(county): State<County>) -> Json<Value> {
    let faults: Vec<Value> =
        county.faults().into_iter().map(|(device, f)| json!({ "device": device, "fault": f.to_string() })).collect();
    Json(json!(faults))
}
