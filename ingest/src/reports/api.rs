//! `GET /api/v1/reports/...`: the reports as JSON (and the billing export as CSV/XLSX,
//! [`super::billing`]), tenant-scoped through
//! [`crate::auth::Reader`] (a reader sees the districts, analysers and herds of its
//! tenants only; a district it may not see is "not found", as a device is).
//!
//! Reports read the store synchronously (hour and minute roll-ups); each runs on the
//! blocking pool so a month of 15,000 meters does not stall the server's reactor.

use axum::extract::{FromRef, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::model::{HerdReport, QualityReport, SupplyReport, WaterBalanceReport};
use super::{ReportError, ReportsState, herd, period, quality, supply, water};
use crate::auth::{Access, Reader};
use crate::error::ApiError;

/// The report routes (nested under `/api/v1`).
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Access: FromRef<S>,
    ReportsState: FromRef<S>,
{
    Router::new()
        .route("/reports/water-balance", get(water_balance))
        .route("/reports/supply", get(supply_report))
        .route("/reports/quality", get(quality_report))
        .route("/reports/herd", get(herd_report))
        .route("/reports/billing", get(super::billing::billing))
}

/// The query every report takes.
#[derive(Debug, Deserialize)]
pub struct ReportQuery {
    /// `day` (default) or `month`.
    pub period: Option<String>,
    /// `YYYY-MM-DD` or `YYYY-MM`; today when absent.
    pub date: Option<String>,
    /// One district (DMA id) only.
    pub district: Option<String>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ReportError> + Send + 'static,
) -> Result<Json<T>, ApiError> {
    let out = tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::Internal(format!("report task: {e}")))?;
    Ok(Json(out?))
}

async fn water_balance(
    State(s): State<ReportsState>,
    reader: Reader,
    Query(q): Query<ReportQuery>,
) -> Result<Json<WaterBalanceReport>, ApiError> {
    let span = period::parse(q.period.as_deref(), q.date.as_deref(), (s.clock)().0)?;
    blocking(move || water::report(&s, &reader, &span, q.district.as_deref())).await
}

async fn supply_report(
    State(s): State<ReportsState>,
    reader: Reader,
    Query(q): Query<ReportQuery>,
) -> Result<Json<SupplyReport>, ApiError> {
    let span = period::parse(q.period.as_deref(), q.date.as_deref(), (s.clock)().0)?;
    blocking(move || supply::report(&s, &reader, &span, q.district.as_deref())).await
}

async fn quality_report(
    State(s): State<ReportsState>,
    reader: Reader,
    Query(q): Query<ReportQuery>,
) -> Result<Json<QualityReport>, ApiError> {
    let span = period::parse(q.period.as_deref(), q.date.as_deref(), (s.clock)().0)?;
    blocking(move || quality::report(&s, &reader, &span)).await
}

/// The herd report is per day: `date=YYYY-MM-DD`.
#[derive(Debug, Deserialize)]
pub struct HerdQuery {
    /// The local day; today when absent.
    pub date: Option<String>,
}

async fn herd_report(
    State(s): State<ReportsState>,
    reader: Reader,
    Query(q): Query<HerdQuery>,
) -> Result<Json<HerdReport>, ApiError> {
    let span = period::parse(Some("day"), q.date.as_deref(), (s.clock)().0)?;
    blocking(move || herd::report(&s, &reader, &span)).await
}
