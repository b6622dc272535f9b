//! The HTTP API and the dashboard, with axum.
//!
//! `/api/v1` is a fixed contract that other tools and checks build on (docs/API.md).
//! Reads are open to anyone who can reach the port when `public_read` is on (the demo);
//! otherwise, and for every write, a token is needed (see [`crate::auth`]). A token scoped
//! to tenants only ever sees those tenants' devices.
//!
//! Errors are JSON `{"error": "..."}` with a status that says whose fault it was; a server
//! error logs its cause and tells the client only that it happened.

mod dashboard;
mod read;
pub mod time;
pub mod write;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use store::Store;

use crate::auth::{Authorized, Principal, Tokens};
use crate::inventory::Inventory;
use crate::metrics::Metrics;
use crate::pipeline::Clock;
use crate::pipeline::validate::Rejections;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Arc<Store>,
    /// Sites, gateways, devices.
    pub inventory: Arc<Inventory>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Recent refusals.
    pub rejections: Arc<Rejections>,
    /// API tokens.
    pub tokens: Tokens,
    /// Whether reads need no token.
    pub public_read: bool,
    /// True once the store is open and the pipeline subscribed.
    pub ready: Arc<AtomicBool>,
    /// Ingest's clock.
    pub clock: Clock,
    /// Rules and alerts, when enabled.
    pub alerts: Option<crate::alerts::Alerts>,
    /// Emergency broadcasts: create, approve, cancel, follow.
    pub broadcasts: crate::broadcast::Broadcasts,
    /// Signs, sends and tracks commands to gateways.
    pub commands: crate::command::Commander,
    /// Line protocol in (`/api/v2/write`): its sinks, limits and counters.
    pub line_protocol: Arc<write::LineProtocolIn>,
}

/// An API error: a status and a sentence for the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is wrong (400).
    #[error("{0}")]
    BadRequest(String),
    /// No or an unknown token (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The token may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such thing (404).
    #[error("{0}")]
    NotFound(String),
    /// Understood, but not applicable (422).
    #[error("{0}")]
    Unprocessable(String),
    /// Not ready yet (503).
    #[error("{0}")]
    Unavailable(String),
    /// Our fault (500); the cause is logged, not sent.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ApiError::Internal(cause) => {
                tracing::error!(message = "API request failed.", cause = %cause);
                "internal error; see the ingest log".to_string()
            }
            other => other.to_string(),
        };
        (status, axum::Json(json!({ "error": message }))).into_response()
    }
}

impl From<store::StoreError> for ApiError {
    fn from(e: store::StoreError) -> ApiError {
        match e {
            store::StoreError::BadQuery(q) => ApiError::BadRequest(q),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// A reader: anyone when reads are public, otherwise a token holder. Carries the tenant
/// scope reads are filtered by.
#[derive(Debug, Clone)]
pub struct Reader(pub Option<Principal>);

impl Reader {
    /// True if the reader may see `tenant`'s data.
    pub fn may_see(&self, tenant: &str) -> bool {
        self.0.as_ref().is_none_or(|p| p.may_access(tenant))
    }
}

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Reader, ApiError> {
        if parts.headers.contains_key(axum::http::header::AUTHORIZATION) {
            let Authorized(p) = Authorized::from_request_parts(parts, state).await?;
            return Ok(Reader(Some(p)));
        }
        if state.public_read {
            Ok(Reader(None))
        } else {
            Err(ApiError::Unauthorized("reads need a token here (Authorization: Token <token>)".into()))
        }
    }
}

/// The whole HTTP surface.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/health", get(health))
        .route("/catalogue", get(read::catalogue))
        .route("/sites", get(read::sites))
        .route("/devices", get(read::devices))
        .route("/latest", get(read::latest))
        .route("/series", get(read::series))
        .route("/rejections", get(read::rejections))
        .merge(crate::alerts::api::router())
        .merge(crate::broadcast::routes())
        .merge(crate::command::routes());
    Router::new()
        .merge(dashboard::routes())
        .route("/metrics", get(metrics))
        .route("/api/v2/write", post(write::write))
        .nest("/api/v1", api)
        .with_state(state)
}

async fn health(State(s): State<AppState>) -> Response {
    if s.ready.load(Ordering::Relaxed) {
        axum::Json(json!({ "status": "ready" })).into_response()
    } else {
        ApiError::Unavailable("starting: store or broker subscription not ready".into()).into_response()
    }
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.encode())
}
