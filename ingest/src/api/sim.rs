//! Demo-only endpoints: inject and clear faults in the simulated county.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use simulator::{Fault, SimError};

use super::{ApiError, AppState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InjectRequest {
    device: String,
    fault: String,
}

fn county(s: &AppState) -> Result<&simulator::County, ApiError> {
    s.sim.as_ref().ok_or_else(|| ApiError::NotFound("no simulated county: faults exist only in demo mode".into()))
}

fn sim_error(e: SimError) -> ApiError {
    match e {
        SimError::UnknownDevice(_) => ApiError::NotFound(e.to_string()),
        other => ApiError::Unprocessable(other.to_string()),
    }
}

pub(super) async fn inject(
    State(s): State<AppState>,
    body: Result<Json<InjectRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(req) =
        body.map_err(|e| ApiError::BadRequest(format!("expected {{\"device\": ID, \"fault\": NAME}}: {e}")))?;
    let fault: Fault = req.fault.parse().map_err(|e: simulator::UnknownFault| ApiError::BadRequest(e.to_string()))?;
    county(&s)?.inject(&req.device, fault).map_err(sim_error)?;
    tracing::info!(message = "Fault injected.", device = %req.device, fault = %fault);
    Ok((StatusCode::CREATED, Json(json!({ "device": req.device, "fault": fault.to_string() }))))
}

pub(super) async fn clear(State(s): State<AppState>, Path(device): Path<String>) -> Result<Json<Value>, ApiError> {
    county(&s)?.clear(&device).map_err(sim_error)?;
    tracing::info!(message = "Faults cleared.", device = %device);
    Ok(Json(json!({ "device": device, "faults": [] })))
}

pub(super) async fn list(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let faults: Vec<Value> = county(&s)?
        .faults()
        .into_iter()
        .map(|(device, f)| json!({ "device": device, "fault": f.to_string() }))
        .collect();
    Ok(Json(json!(faults)))
}
