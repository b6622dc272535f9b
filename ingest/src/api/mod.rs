//! The HTTP API and the dashboard, with axum.
//!
//! `/api/v1` is a fixed contract that other tools and checks build on (docs/API.md).
//! Reads are open to anyone who can reach the port when `public_read` is on (the demo);
//! otherwise, and for every write, a token or a signed-in person's session is needed (see
//! [`crate::auth`] and [`crate::people`]). A principal scoped to tenants only ever sees
//! those tenants' devices.
//!
//! Errors are JSON `{"error": "..."}` with a status that says whose fault it was; a server
//! error logs its cause and tells the client only that it happened ([`ApiError`]).
//!
//! At county size (issue 17): `/summary` gives what the dashboard shows per site and
//! township without shipping the values, `/devices` and `/latest` filter by township and
//! page, `/stream` pushes what changed, and [`http_cache`] adds ETags (`304` for an
//! unchanged refresh) and gzip.
//!
//! Layering: `api` composes the routers. Each domain (alerts, broadcasts, commands, the
//! line-protocol source) writes its handlers against its own state, taken out of
//! [`AppState`] with axum's `FromRef`, so no domain module depends on `api`.

mod dashboard;
pub mod http_cache;
mod read;
pub mod serve;
mod stream;
mod summary;
pub use crate::auth::Reader;
pub use crate::error::ApiError;
/// Times in the API, kept under this name for callers of `ingest::api::time`.
pub use crate::time;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{FromRef, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use store::Store;

use crate::alerts::Alerts;
use crate::auth::{Access, Tokens};
use crate::broadcast::Broadcasts;
use crate::command::Commander;
use crate::inventory::Inventory;
use crate::metrics::Metrics;
use crate::people::People;
use crate::pipeline::validate::Rejections;
use crate::sources::line_protocol::LineProtocol;
use crate::time::Clock;

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
    pub alerts: Option<Alerts>,
    /// Emergency broadcasts: create, approve, cancel, follow.
    pub broadcasts: Broadcasts,
    /// Signs, sends and tracks commands to gateways.
    pub commands: Commander,
    /// Line protocol in (`/api/v2/write`): the source, its limits and counters.
    pub line_protocol: Arc<LineProtocol>,
    /// People: users, sessions, the lockout and the people's audit log.
    pub people: People,
}

impl FromRef<AppState> for People {
    fn from_ref(s: &AppState) -> People {
        s.people.clone()
    }
}

impl FromRef<AppState> for Access {
    fn from_ref(s: &AppState) -> Access {
        Access { tokens: s.tokens.clone(), public_read: s.public_read }
    }
}

impl FromRef<AppState> for Option<Alerts> {
    fn from_ref(s: &AppState) -> Option<Alerts> {
        s.alerts.clone()
    }
}

impl FromRef<AppState> for Broadcasts {
    fn from_ref(s: &AppState) -> Broadcasts {
        s.broadcasts.clone()
    }
}

impl FromRef<AppState> for Commander {
    fn from_ref(s: &AppState) -> Commander {
        s.commands.clone()
    }
}

impl FromRef<AppState> for Arc<Inventory> {
    fn from_ref(s: &AppState) -> Arc<Inventory> {
        s.inventory.clone()
    }
}

impl FromRef<AppState> for Arc<LineProtocol> {
    fn from_ref(s: &AppState) -> Arc<LineProtocol> {
        s.line_protocol.clone()
    }
}

impl FromRef<AppState> for crate::reports::ReportsState {
    fn from_ref(s: &AppState) -> crate::reports::ReportsState {
        crate::reports::ReportsState {
            store: s.store.clone(),
            inventory: s.inventory.clone(),
            alerts: s.alerts.clone(),
            clock: s.clock.clone(),
        }
    }
}

/// The whole HTTP surface. Every request carries the session table and the audit log
/// ([`crate::auth::Gate`]); the service adds them again over routes it merges later.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/health", get(health))
        .route("/catalogue", get(read::catalogue))
        .route("/sites", get(read::sites))
        .route("/devices", get(read::devices))
        .route("/latest", get(read::latest))
        .route("/series", get(read::series))
        .route("/rejections", get(read::rejections))
        .route("/summary", get(summary::summary))
        .merge(crate::alerts::api::router())
        .merge(crate::broadcast::routes())
        .merge(crate::command::routes())
        .merge(crate::reports::api::router())
        .layer(axum::middleware::from_fn(http_cache::etag))
        // After the ETag layer: a stream is never buffered, and a session's answer is one
        // person's, never a cached one.
        .merge(stream::routes(state.clone()))
        .merge(crate::people::api::routes());
    let gate = state.people.gate();
    Router::new()
        .merge(dashboard::routes())
        .route("/metrics", get(metrics))
        .route("/api/v2/write", post(crate::sources::line_protocol::write))
        .nest("/api/v1", api)
        .with_state(state)
        .layer(axum::Extension(gate))
        .layer(axum::middleware::from_fn(http_cache::compress))
}

async fn health(State(s): State<AppState>) -> Response {
    if let Some(why) = s.store.refuses_writes() {
        return ApiError::Unavailable(why).into_response();
    }
    if s.ready.load(Ordering::Relaxed) {
        axum::Json(json!({ "status": "ready" })).into_response()
    } else {
        ApiError::Unavailable("starting: store or broker subscription not ready".into()).into_response()
    }
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.encode())
}
