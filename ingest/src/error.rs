//! The error every HTTP handler answers with: a status and a sentence for the client.
//!
//! Errors are JSON `{"error": "..."}` with a status that says whose fault it was; a server
//! error logs its cause and tells the client only that it happened. Low in ingest's module
//! graph so that auth and every domain's handlers can use it without depending on `api`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

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
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
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
