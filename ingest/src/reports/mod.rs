//! Reports a water bureau and a dairy file: the water balance of every district metered
//! area (IWA terms, CJJ 92-2016 leakage rates, minimum night flow), supply interruptions
//! and pressure, water-quality compliance against GB 5749-2022, and the herd's day.
//!
//! - [`model`]: the JSON shapes of `GET /api/v1/reports/...` (the contract the dashboard's
//!   Reports page and the exports build on).
//! - [`period`]: local days and months as UTC spans.
//! - [`districts`]: which meters are a district's inlets and which its customers, from
//!   the inventory.
//! - [`water`]: the water balance and night flow; [`meter_use`](water::meter_use) is one
//!   meter's billing figure.
//! - [`supply`]: interruptions and pressure; [`quality`]: compliance; [`herd`]: the herd.
//! - [`api`]: the routes, tenant-scoped through [`crate::auth::Reader`].
//!
//! Invariants:
//! - consumption comes from counters through [`crate::rules::counter`], the same reading
//!   of rollover, replacement and gaps the rules make; nothing here re-implements it;
//! - a figure computed with missing data says so and by how much; nothing is silently low;
//! - reports read the store's roll-ups where they give the same answer as raw points, and
//!   raw points only where they do not (docs/REPORTS.md lists which is which);
//! - everything is a pure function of the store, the inventory and the rules: computing a
//!   report twice gives the same JSON.

pub mod api;
pub mod districts;
pub mod herd;
pub mod model;
pub mod period;
pub mod quality;
pub mod supply;
pub mod water;

use std::sync::Arc;

use store::Store;

use crate::alerts::Alerts;
use crate::inventory::Inventory;
use crate::time::Clock;

/// What the reports read: the store, the inventory, the alerts (for the rules and the
/// maintenance windows) and the clock (for "today").
#[derive(Clone)]
pub struct ReportsState {
    /// The store.
    pub store: Arc<Store>,
    /// Sites, gateways, devices and district roles.
    pub inventory: Arc<Inventory>,
    /// Rules and maintenance windows, when alerts run.
    pub alerts: Option<Alerts>,
    /// Ingest's clock.
    pub clock: Clock,
}

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The request is wrong: a bad date, an unknown district.
    #[error("{0}")]
    BadRequest(String),
    /// Nothing of that name the reader may see.
    #[error("{0}")]
    NotFound(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
}

impl From<ReportError> for crate::error::ApiError {
    fn from(e: ReportError) -> crate::error::ApiError {
        use crate::error::ApiError;
        match e {
            ReportError::BadRequest(m) => ApiError::BadRequest(m),
            ReportError::NotFound(m) => ApiError::NotFound(m),
            ReportError::Store(e) => ApiError::Internal(format!("store: {e}")),
        }
    }
}
