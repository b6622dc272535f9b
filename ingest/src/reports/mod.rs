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
//! - [`billing`]: the billing export (JSON, CSV, XLSX), one [`water::meter_use`] per
//!   household meter.
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
pub mod billing;
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

#[cfg(test)]
pub(crate) mod testing {
    //! A store and an inventory for the reports' unit tests.

    use std::sync::Arc;

    use protocol::{DeviceKind, Metric, Reading, Timestamp};
    use store::{Store, StoreConfig};

    use super::ReportsState;
    use crate::inventory::{Device, GatewayInfo, Inventory, InventoryFile, MeteredDistrict, Site};

    /// 2025-04-07 00:00 in Beijing.
    pub(crate) const APRIL_7: i64 = 1_743_955_200_000;

    /// A state over a fresh store with `devices` (id, kind, site); sites `village` (tenant
    /// county, district-1), `works` (county, district-1) and `farm` (dairy); the district
    /// `village` with inlet `inlet` when such a device is listed.
    pub(crate) fn state(devices: &[(&str, DeviceKind, &str)]) -> (ReportsState, tempfile::TempDir) {
        let site = |id: &str, tenant: &str, district: Option<&str>| Site {
            id: id.into(),
            name: id.into(),
            kind: "village".into(),
            tenant: tenant.into(),
            lat: 0.0,
            lon: 0.0,
            village: None,
            district: district.map(Into::into),
            township: None,
        };
        let gw = |id: &str, site: &str, tenant: &str| GatewayInfo {
            id: id.into(),
            tenant: tenant.into(),
            site: site.into(),
            public_key: None,
        };
        let inv = Inventory::from_file(InventoryFile {
            sites: vec![
                site("village", "county", Some("district-1")),
                site("works", "county", Some("district-1")),
                site("farm", "dairy", None),
            ],
            gateways: vec![
                gw("gw-village", "village", "county"),
                gw("gw-works", "works", "county"),
                gw("gw-farm", "farm", "dairy"),
            ],
            devices: devices
                .iter()
                .map(|(id, kind, site)| Device {
                    id: (*id).into(),
                    kind: *kind,
                    site: (*site).into(),
                    gateway: format!("gw-{site}"),
                    model: String::new(),
                    lat: None,
                    lon: None,
                    public_key: None,
                })
                .collect(),
        });
        if devices.iter().any(|d| d.0 == "inlet") {
            inv.set_districts(vec![MeteredDistrict {
                id: "village".into(),
                name: "Village".into(),
                supply_district: Some("district-1".into()),
                inlets: vec!["inlet".into()],
                sites: vec!["village".into()],
            }]);
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, _) = Store::open(StoreConfig::new(dir.path().join("store"))).expect("store");
        let state = ReportsState {
            store: Arc::new(store),
            inventory: Arc::new(inv),
            alerts: None,
            clock: Arc::new(|| Timestamp(APRIL_7 + 30 * 86_400_000)),
        };
        (state, dir)
    }

    /// Writes `f(t)` for `device`'s `metric` every `step_ms` over `[from, to)`.
    pub(crate) fn write(
        s: &ReportsState,
        device: &str,
        metric: &str,
        from: i64,
        to: i64,
        step_ms: i64,
        f: impl Fn(i64) -> f64,
    ) {
        let m = Metric::new(metric);
        let readings: Vec<Reading> = (0..)
            .map(|i| from + i * step_ms)
            .take_while(|t| *t < to)
            .map(|t| Reading::new(device, m.clone(), Timestamp(t), f(t)))
            .collect();
        s.store.append_readings(&readings).expect("append");
    }
}
