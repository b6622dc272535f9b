//! Supply interruptions per village and pressure per district.
//!
//! A village is without supply in a minute whose mean pressure at its inlet (else at its
//! waterworks' outlet) is under [`NO_SUPPLY_MPA`]: a tap there gives next to nothing. The
//! waterworks' pump state over the interruption says what the works showed (pump stopped,
//! or running while the village had no pressure). Minutes inside a planned maintenance
//! window are counted apart; minutes without data are "unknown", never "supplied".
//!
//! Maintenance windows are the alert manager's maintenance mutes (`crate::alerts`,
//! `SilenceKind::Maintenance`): a window applies to a village when every place it names
//! (device, site, gateway, district) is one of the village's (its inlet, its waterworks'
//! station, their sites and gateways, the district and its supply district).
//!
//! Reads minute roll-ups (means per minute: the same minutes as raw points give) for
//! interruptions, hour roll-ups (min of mins, max of maxes, sums and counts: exact) for
//! pressure statistics.

use std::collections::BTreeSet;

use protocol::Timestamp;
use store::Store;

use super::districts::{self, Dma};
use super::model::{DistrictPressure, Interruption, PlannedWindow, SupplyReport, VillageSupply};
use super::period::{HOUR_MS, Span};
use super::{ReportError, ReportsState};
use crate::alerts::model::SilenceKind;
use crate::auth::Reader;
use crate::time::rfc3339;

/// Pressure under which a village counts as without supply (MPa): 3 m of head, under
/// which a household tap gives next to nothing (our choice; GB 5749 sets no such figure).
pub const NO_SUPPLY_MPA: f64 = 0.03;
/// The network-end minimum (DOMAIN.md: >= 0.14 MPa).
pub const MIN_SERVICE_MPA: f64 = 0.14;
const MINUTE_MS: i64 = 60_000;

/// A maintenance window and the places it names.
#[derive(Debug, Clone)]
pub struct Window {
    /// Start (ms).
    pub from: i64,
    /// End (ms).
    pub to: i64,
    /// Places it names: (field, value).
    pub places: Vec<(&'static str, String)>,
    /// Why.
    pub reason: String,
}

/// Planned maintenance windows overlapping `span`: the alert manager's maintenance mutes.
/// The seam for a maintenance calendar of its own (console-ops' `GET /api/v1/maintenance`
/// keeps its windows in the same manager; read them here if they move).
pub fn planned_windows(state: &ReportsState, span: &Span) -> Vec<Window> {
    let Some(alerts) = &state.alerts else { return Vec::new() };
    let silences = alerts.with_manager(|m| {
        m.silences(|s| s.kind == SilenceKind::Maintenance && s.starts_at.0 < span.to && s.ends_at.0 > span.from)
    });
    silences
        .into_iter()
        .map(|s| {
            let m = &s.matchers;
            let places = [("device", &m.device), ("site", &m.site), ("gateway", &m.gateway), ("district", &m.district)]
                .into_iter()
                .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
                .collect();
            Window { from: s.starts_at.0, to: s.ends_at.0, places, reason: s.reason }
        })
        .collect()
}

/// The places of a village a window may name.
struct Places {
    devices: BTreeSet<String>,
    sites: BTreeSet<String>,
    gateways: BTreeSet<String>,
    districts: BTreeSet<String>,
}

impl Places {
    fn of(state: &ReportsState, dma: &Dma) -> Places {
        let mut p = Places {
            devices: dma.inlets.iter().chain(&dma.stations).cloned().collect(),
            sites: BTreeSet::new(),
            gateways: BTreeSet::new(),
            districts: [Some(dma.id.clone()), dma.supply_district.clone()].into_iter().flatten().collect(),
        };
        for d in p.devices.clone() {
            if let Some(dev) = state.inventory.device(&d) {
                p.sites.insert(dev.site);
                p.gateways.insert(dev.gateway);
            }
        }
        p
    }

    fn covers(&self, w: &Window) -> bool {
        !w.places.is_empty()
            && w.places.iter().all(|(k, v)| match *k {
                "device" => self.devices.contains(v),
                "site" => self.sites.contains(v),
                "gateway" => self.gateways.contains(v),
                _ => self.districts.contains(v),
            })
    }
}

/// Hour-roll-up statistics of one pressure series.
fn pressure_stats(store: &Store, device: &str, span: &Span) -> Result<Option<(f64, f64, f64, u64)>, ReportError> {
    let b = store.range_bucketed(device, "pressure", Timestamp(span.from), Timestamp(span.to), HOUR_MS)?;
    if b.is_empty() {
        return Ok(None);
    }
    let n: u64 = b.iter().map(|x| x.count).sum();
    let sum: f64 = b.iter().map(|x| x.mean * x.count as f64).sum();
    let min = b.iter().map(|x| x.min).fold(f64::INFINITY, f64::min);
    let max = b.iter().map(|x| x.max).fold(f64::NEG_INFINITY, f64::max);
    Ok(Some((min, sum / n.max(1) as f64, max, n)))
}

fn village_supply(
    state: &ReportsState,
    dma: &Dma,
    span: &Span,
    windows: &[Window],
) -> Result<VillageSupply, ReportError> {
    let store = &state.store;
    let places = Places::of(state, dma);
    let planned: Vec<&Window> = windows.iter().filter(|w| places.covers(w)).collect();
    // The inlet's pressure, else the waterworks outlet's.
    let mut judged_by = None;
    let mut minutes = Vec::new();
    for dev in dma.inlets.iter().chain(&dma.stations) {
        let b = store.range_bucketed(dev, "pressure", Timestamp(span.from), Timestamp(span.to), MINUTE_MS)?;
        if !b.is_empty() {
            judged_by = Some(dev.clone());
            minutes = b;
            break;
        }
    }
    let total_min = (span.to - span.from) / MINUTE_MS;
    let mut out = VillageSupply {
        village: dma.id.clone(),
        name: dma.name.clone(),
        judged_by,
        interruption_hours: 0.0,
        planned_interruption_hours: 0.0,
        low_pressure_hours: 0.0,
        interruptions: Vec::new(),
        unknown_hours: (total_min - minutes.len() as i64) as f64 / 60.0,
    };
    // Runs of minutes without supply: (start, end, planned).
    let mut run: Option<(i64, i64, bool)> = None;
    let mut runs = Vec::new();
    let mut low_minutes = 0u32;
    for m in &minutes {
        let t = m.start.0;
        low_minutes += u32::from(m.mean < MIN_SERVICE_MPA);
        let dry = m.mean < NO_SUPPLY_MPA;
        let is_planned = planned.iter().any(|w| t >= w.from && t < w.to);
        match (&mut run, dry) {
            (Some(r), true) if r.1 == t && r.2 == is_planned => r.1 = t + MINUTE_MS,
            (_, true) => {
                runs.extend(run.take());
                run = Some((t, t + MINUTE_MS, is_planned));
            }
            (_, false) => runs.extend(run.take()),
        }
    }
    runs.extend(run);
    out.low_pressure_hours = f64::from(low_minutes) / 60.0;
    for (a, b, is_planned) in runs {
        let hours = (b - a) as f64 / HOUR_MS as f64;
        if is_planned {
            out.planned_interruption_hours += hours;
        } else {
            out.interruption_hours += hours;
        }
        out.interruptions.push(Interruption {
            from: rfc3339(Timestamp(a)),
            to: rfc3339(Timestamp(b)),
            hours,
            planned: is_planned,
            cause: cause(store, &dma.stations, a, b)?,
        });
    }
    Ok(out)
}

/// What the waterworks showed during `[a, b)`: its pump stopped throughout, or running.
fn cause(store: &Store, stations: &[String], a: i64, b: i64) -> Result<String, ReportError> {
    let (from, to) = (a - a.rem_euclid(MINUTE_MS), b + (MINUTE_MS - b.rem_euclid(MINUTE_MS)) % MINUTE_MS);
    let mut seen = false;
    for s in stations {
        let b = store.range_bucketed(s, "pump_running", Timestamp(from), Timestamp(to), MINUTE_MS)?;
        seen |= !b.is_empty();
        if b.iter().any(|x| x.max >= 0.5) {
            return Ok("pump_running".into());
        }
    }
    Ok(if seen { "pump_stopped" } else { "unknown" }.into())
}

/// The supply report over `span` for the villages `reader` may see (or one).
pub fn report(
    state: &ReportsState,
    reader: &Reader,
    span: &Span,
    district: Option<&str>,
) -> Result<SupplyReport, ReportError> {
    let dmas = districts::resolve(&state.inventory, reader, district);
    if let Some(d) = district
        && dmas.is_empty()
    {
        return Err(ReportError::NotFound(format!("no district '{d}'")));
    }
    let windows = planned_windows(state, span);
    let mut villages = Vec::new();
    let mut pressure = Vec::new();
    let mut stations_done = BTreeSet::new();
    for dma in &dmas {
        villages.push(village_supply(state, dma, span, &windows)?);
        let stations = dma.stations.iter().filter(|s| stations_done.insert((*s).clone()));
        let points =
            dma.inlets.iter().map(|i| (dma.id.clone(), i.clone())).collect::<Vec<_>>().into_iter().chain(
                stations.map(|s| (dma.supply_district.clone().unwrap_or_default(), s.clone())).collect::<Vec<_>>(),
            );
        for (district, device) in points {
            let stats = pressure_stats(&state.store, &device, span)?;
            pressure.push(DistrictPressure {
                district,
                device,
                min_mpa: stats.map(|s| s.0),
                mean_mpa: stats.map(|s| s.1),
                max_mpa: stats.map(|s| s.2),
                samples: stats.map_or(0, |s| s.3),
            });
        }
    }
    let relevant: Vec<&Window> =
        windows.iter().filter(|w| dmas.iter().any(|d| Places::of(state, d).covers(w))).collect();
    Ok(SupplyReport {
        period: span.period(),
        no_supply_mpa: NO_SUPPLY_MPA,
        villages,
        pressure,
        planned: relevant
            .into_iter()
            .map(|w| PlannedWindow {
                from: rfc3339(Timestamp(w.from)),
                to: rfc3339(Timestamp(w.to)),
                scope: w.places.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
                reason: w.reason.clone(),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use protocol::DeviceKind;

    use super::*;
    use crate::reports::period::DAY_MS;
    use crate::reports::testing::{APRIL_7, state, write};

    #[test]
    fn a_village_without_pressure_is_interrupted_and_the_stopped_pump_is_the_cause() {
        let (s, _dir) = state(&[
            ("inlet", DeviceKind::WaterMeter, "village"),
            ("pump", DeviceKind::PumpStation, "works"),
            ("m1", DeviceKind::WaterMeter, "village"),
        ]);
        let (a, b) = (APRIL_7 + 10 * HOUR_MS, APRIL_7 + 12 * HOUR_MS);
        let dry = |t: i64| t >= a && t < b;
        write(&s, "inlet", "pressure", APRIL_7, APRIL_7 + DAY_MS, 10_000, |t| if dry(t) { 0.0 } else { 0.28 });
        write(&s, "pump", "pump_running", APRIL_7, APRIL_7 + DAY_MS, 10_000, |t| if dry(t) { 0.0 } else { 1.0 });
        write(&s, "pump", "pressure", APRIL_7, APRIL_7 + DAY_MS, 10_000, |_| 0.3);
        let r = report(&s, &Reader(None), &Span::day(APRIL_7), None).unwrap();
        let v = &r.villages[0];
        assert_eq!((v.judged_by.as_deref(), v.interruption_hours, v.unknown_hours), (Some("inlet"), 2.0, 0.0));
        assert_eq!(v.interruptions.len(), 1);
        assert_eq!((v.interruptions[0].cause.as_str(), v.interruptions[0].planned), ("pump_stopped", false));
        assert_eq!(v.low_pressure_hours, 2.0);
        let p = r.pressure.iter().find(|p| p.device == "inlet").unwrap();
        assert_eq!((p.min_mpa, p.max_mpa, p.samples), (Some(0.0), Some(0.28), 8640));
        assert!(r.pressure.iter().any(|p| p.device == "pump" && p.district == "district-1"));
    }

    #[test]
    fn a_maintenance_window_covers_a_village_only_through_its_own_places() {
        let (s, _dir) =
            state(&[("inlet", DeviceKind::WaterMeter, "village"), ("pump", DeviceKind::PumpStation, "works")]);
        let dma = &crate::reports::districts::resolve(&s.inventory, &Reader(None), None)[0];
        let places = Places::of(&s, dma);
        let w = |places: Vec<(&'static str, String)>| Window { from: 0, to: 1, places, reason: String::new() };
        assert!(places.covers(&w(vec![("device", "pump".into())])));
        assert!(places.covers(&w(vec![("district", "district-1".into()), ("site", "works".into())])));
        assert!(!places.covers(&w(vec![("site", "elsewhere".into())])));
        assert!(!places.covers(&w(vec![("district", "district-1".into()), ("device", "m9".into())])));
    }
}
