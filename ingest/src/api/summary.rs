//! `GET /api/v1/summary`: what the dashboard shows of every site and township, computed
//! on the server from the newest values, without shipping them.
//!
//! A county of 15,000 meters has about 100,000 latest values (7 MB of JSON); the page
//! needs a few numbers per site: device counts by kind and state, the site's state and
//! why, the figures its card draws (tank and pumps, water quality, barn, herd, speakers,
//! meters) and its open alerts. This module computes those in one pass over the store's
//! latest values and answers about 1 KB per site.
//!
//! Invariants:
//! - The rules of state are the dashboard's (`dashboards/web/js/model.js`): a device is
//!   `offline` when its gateway's last poll failed, `nodata` without a reading, `stale`
//!   when its newest reading is older than [`stale_after_ms`] of its kind, else `ok`; a
//!   site is the worst of `offline` (gateway offline, or every device), `attention` (an
//!   issue), `stale`, `ok`, `nodata`. Issues carry a `key` and raw arguments, never text:
//!   the page writes the sentence in its language.
//! - Tenant scope: the [`Reader`] sees only its tenants' sites, devices and alerts; totals
//!   and townships count only what it sees.
//! - The answer carries no time of its own: unchanged values give the same bytes and
//!   ETag, so an unchanged refresh is a `304`.
//! - Township sites (kind `township`, the seat of a 乡镇) are listed under `townships`, not
//!   as sites.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::{Query, State};
use protocol::DeviceKind;
use serde::{Deserialize, Serialize};

use super::{AppState, Reader};
use crate::alerts::model::{Alert, AlertState, Severity};
use crate::inventory::Site;
use crate::time::rfc3339;

/// Data older than this is stale (the dashboard's `STALE_MS`): three 10-40 s polls missed.
pub(super) const STALE_MS: i64 = 120_000;
/// Household meters report every 15-60 minutes (the large county's plan; NB-IoT meters
/// in the field once a day): stale after two hourly reports missed. A gateway's health
/// readings about a meter keep it fresh between its own reports.
pub(super) const METER_STALE_MS: i64 = 2 * 3_600_000 + 600_000;
/// Minimum pressure at a district inlet (DOMAIN.md: network ends >= 0.14 MPa).
const MIN_PRESSURE_MPA: f64 = 0.14;
/// Free chlorine leaving the plant (GB 5749-2022: >= 0.3 mg/L).
const OUTLET_CHLORINE_MIN: f64 = 0.3;
/// A running pump with less outlet flow than this delivers nothing (m3/h).
const NO_FLOW_M3H: f64 = 0.1;
/// A tank below this level is close to running dry (m).
const TANK_LOW_M: f64 = 0.5;
/// Share of a site's meters not reporting above which the site needs attention.
const METERS_SILENT_SHARE: f64 = 0.1;
/// Body temperature that counts as fever (DOMAIN.md: 39.5 °C common).
const FEVER_C: f64 = 39.5;
/// THI from which a barn is under heat stress (NRC: 72 moderate).
const HEAT_STRESS_THI: f64 = 72.0;
/// Meter battery below this is low (simulated meters' 3.40 V alarm).
const LOW_BATTERY_V: f64 = 3.4;
/// Drinking-water limits at the tap, GB 5749-2022: (metric, min, max).
const QUALITY_LIMITS: [(&str, f64, f64); 3] =
    [("free_chlorine", 0.05, 2.0), ("turbidity", f64::NEG_INFINITY, 1.0), ("ph", 6.5, 8.5)];
/// Analyser parameters the summary carries, in the order the page shows them.
const QUALITY_ORDER: [&str; 5] = ["free_chlorine", "turbidity", "ph", "conductivity", "water_temperature"];

/// How long a device of `kind` may stay silent before it is stale.
pub(super) fn stale_after_ms(kind: &str) -> i64 {
    if kind == DeviceKind::WaterMeter.as_str() { METER_STALE_MS } else { STALE_MS }
}

/// The metrics the summary reads, each a slot in [`Acc::values`].
const METRICS: [&str; 24] = [
    "device_online",
    "tank_level",
    "pump_running",
    "flow",
    "pump_flow",
    "pressure",
    "pump_current",
    "free_chlorine",
    "fault_word",
    "turbidity",
    "ph",
    "conductivity",
    "water_temperature",
    "barn_temperature",
    "relative_humidity",
    "thi",
    "body_temperature",
    "activity",
    "rumination",
    "speaker_online",
    "playback_state",
    "speaker_volume",
    "battery_voltage",
    "valve_open",
];

fn slot(metric: &str) -> Option<usize> {
    METRICS.iter().position(|m| *m == metric)
}

/// What the summary keeps of one device's latest values.
#[derive(Debug, Clone)]
struct Acc {
    newest: Option<i64>,
    values: [f64; METRICS.len()],
}

impl Default for Acc {
    fn default() -> Acc {
        Acc { newest: None, values: [f64::NAN; METRICS.len()] }
    }
}

impl Acc {
    fn get(&self, metric: &str) -> Option<f64> {
        slot(metric).map(|i| self.values[i]).filter(|v| v.is_finite())
    }
}

/// `?township=&site=`: only these sites (and their totals).
#[derive(Debug, Default, Deserialize)]
pub(super) struct SummaryQuery {
    township: Option<String>,
    site: Option<String>,
}

/// Counts of devices by state.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub(super) struct StateCounts {
    total: usize,
    ok: usize,
    stale: usize,
    offline: usize,
    nodata: usize,
}

impl StateCounts {
    fn add(&mut self, state: DeviceState) {
        self.total += 1;
        match state {
            DeviceState::Ok => self.ok += 1,
            DeviceState::Stale => self.stale += 1,
            DeviceState::Offline => self.offline += 1,
            DeviceState::Nodata => self.nodata += 1,
        }
    }

    fn merge(&mut self, o: &StateCounts) {
        self.total += o.total;
        self.ok += o.ok;
        self.stale += o.stale;
        self.offline += o.offline;
        self.nodata += o.nodata;
    }
}

/// Counts of sites by state.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub(super) struct SiteStates {
    offline: usize,
    attention: usize,
    stale: usize,
    ok: usize,
    nodata: usize,
}

impl SiteStates {
    fn add(&mut self, s: SiteState) {
        match s {
            SiteState::Offline => self.offline += 1,
            SiteState::Attention => self.attention += 1,
            SiteState::Stale => self.stale += 1,
            SiteState::Ok => self.ok += 1,
            SiteState::Nodata => self.nodata += 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeviceState {
    Ok,
    Stale,
    Offline,
    Nodata,
}

/// A site's state, worst first (the dashboard's `STATES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum SiteState {
    /// The gateway is offline, or every device.
    Offline,
    /// Something needs a look (see the issues).
    Attention,
    /// Nothing new for longer than the devices' staleness.
    Stale,
    /// Fine.
    Ok,
    /// Nothing heard yet.
    Nodata,
}

/// Why a site is in its state: a key the page turns into a sentence, and its arguments.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Issue {
    /// The state it puts the site in (`offline` or `attention`; `stale` for `stale`).
    state: SiteState,
    /// `gateway_offline`, `all_offline`, `device_offline`, `pump_fault`, `pump_no_flow`,
    /// `flow_no_pump`, `tank_low`, `low_pressure`, `outlet_chlorine`, `quality_low`,
    /// `quality_high`, `heat_stress`, `fever`, `speakers_offline`, `meters_silent`, `stale`.
    key: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metric: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<f64>,
    /// How many (cows with fever, speakers or meters down).
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<usize>,
    /// Out of how many.
    #[serde(skip_serializing_if = "Option::is_none")]
    of: Option<usize>,
}

impl Issue {
    fn new(state: SiteState, key: &'static str) -> Issue {
        Issue { state, key, device: None, metric: None, value: None, count: None, of: None }
    }
    fn device(mut self, id: &str) -> Issue {
        self.device = Some(id.to_string());
        self
    }
    fn measured(mut self, metric: &'static str, value: f64) -> Issue {
        self.metric = Some(metric);
        self.value = Some(value);
        self
    }
    fn count(mut self, count: usize, of: usize) -> Issue {
        self.count = Some(count);
        self.of = Some(of);
        self
    }
}

/// Open alerts of a site, township or the county.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub(super) struct AlertCounts {
    pending: usize,
    firing: usize,
    acknowledged: usize,
    /// The worst severity of the firing and acknowledged ones.
    worst: Option<Severity>,
}

impl AlertCounts {
    fn add(&mut self, a: &Alert) {
        match a.state {
            AlertState::Pending => self.pending += 1,
            AlertState::Firing => self.firing += 1,
            AlertState::Acknowledged => self.acknowledged += 1,
            AlertState::Resolved => return,
        }
        if a.state != AlertState::Pending {
            self.worst = self.worst.max(Some(a.severity));
        }
    }
    fn merge(&mut self, o: &AlertCounts) {
        self.pending += o.pending;
        self.firing += o.firing;
        self.acknowledged += o.acknowledged;
        self.worst = self.worst.max(o.worst);
    }
}

/// A pump station as its card draws it.
#[derive(Debug, Serialize)]
pub(super) struct PumpView {
    device: String,
    state: &'static str,
    tank_level: Option<f64>,
    pump_running: Option<f64>,
    flow: Option<f64>,
    pump_flow: Option<f64>,
    pressure: Option<f64>,
    pump_current: Option<f64>,
    free_chlorine: Option<f64>,
    fault_word: Option<f64>,
}

/// A water-quality analyser: its parameters, and those outside GB 5749-2022.
#[derive(Debug, Serialize)]
pub(super) struct AnalyserView {
    device: String,
    state: &'static str,
    values: BTreeMap<&'static str, f64>,
    out_of_limits: Vec<&'static str>,
    fault_word: Option<f64>,
}

/// A barn climate sensor.
#[derive(Debug, Serialize)]
pub(super) struct BarnView {
    device: String,
    state: &'static str,
    barn_temperature: Option<f64>,
    relative_humidity: Option<f64>,
    thi: Option<f64>,
}

/// A site's meters, counted.
#[derive(Debug, Default, Serialize)]
pub(super) struct MetersView {
    total: usize,
    reporting: usize,
    /// Sum of the meters' flows (m3/h), null when none reported one.
    flow: Option<f64>,
    low_battery: usize,
    valves_closed: usize,
    faults: usize,
}

/// A site's speakers, counted.
#[derive(Debug, Default, Serialize)]
pub(super) struct SpeakersView {
    total: usize,
    online: usize,
    playing: usize,
}

/// A site's herd, counted.
#[derive(Debug, Default, Serialize)]
pub(super) struct HerdView {
    cows: usize,
    reporting: usize,
    fever: usize,
}

/// Gateways of a site or the county: `online` and `offline` by their last status;
/// the rest have sent none yet.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub(super) struct GatewayCounts {
    total: usize,
    online: usize,
    offline: usize,
}

/// One site's card.
#[derive(Debug, Serialize)]
pub(super) struct SiteSummary {
    id: String,
    name: String,
    kind: String,
    tenant: String,
    township: Option<String>,
    district: Option<String>,
    village: Option<String>,
    lat: f64,
    lon: f64,
    state: SiteState,
    /// Time of the newest reading of any device of the site.
    newest: Option<String>,
    issues: Vec<Issue>,
    /// Devices by kind (`water_meter`, `speaker`, `cow`, `collar_hub`, ...) and state.
    counts: BTreeMap<&'static str, StateCounts>,
    gateways: GatewayCounts,
    alerts: AlertCounts,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pumps: Vec<PumpView>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    analysers: Vec<AnalyserView>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    barns: Vec<BarnView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    meters: Option<MetersView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    speakers: Option<SpeakersView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    herd: Option<HerdView>,
}

/// One township: its seat and what its sites add up to.
#[derive(Debug, Serialize)]
pub(super) struct TownshipSummary {
    id: String,
    name: String,
    lat: f64,
    lon: f64,
    /// Its sites by state.
    sites: SiteStates,
    /// The worst state of its sites.
    state: SiteState,
    /// Its devices by state.
    devices: StateCounts,
    alerts: AlertCounts,
}

/// County-wide figures for the summary strip.
#[derive(Debug, Default, Serialize)]
pub(super) struct Totals {
    sites: SiteStates,
    devices: StateCounts,
    by_kind: BTreeMap<&'static str, StateCounts>,
    gateways: GatewayCounts,
    meters: MetersView,
    speakers: SpeakersView,
    cows: HerdView,
    pumps: PumpTotals,
    quality: QualityTotals,
}

/// Pumps counted.
#[derive(Debug, Default, Serialize)]
pub(super) struct PumpTotals {
    total: usize,
    running: usize,
    faults: usize,
}

/// Analysers counted.
#[derive(Debug, Default, Serialize)]
pub(super) struct QualityTotals {
    total: usize,
    out: usize,
}

/// The answer. It holds no clock reading of its own (the `Date` header has it), so it is
/// byte for byte the same, and its ETag with it, until a device's state or value changes.
#[derive(Debug, Serialize)]
pub(super) struct Summary {
    /// Staleness thresholds used (ms): by kind, and for everything else.
    stale_after_ms: BTreeMap<&'static str, i64>,
    totals: Totals,
    alerts: AlertCounts,
    townships: Vec<TownshipSummary>,
    sites: Vec<SiteSummary>,
}

struct Dev {
    id: String,
    kind: &'static str,
    state: DeviceState,
    acc: Acc,
}

fn state_name(s: DeviceState) -> &'static str {
    match s {
        DeviceState::Ok => "ok",
        DeviceState::Stale => "stale",
        DeviceState::Offline => "offline",
        DeviceState::Nodata => "nodata",
    }
}

/// `GET /api/v1/summary`.
pub(super) async fn summary(State(s): State<AppState>, reader: Reader, Query(q): Query<SummaryQuery>) -> Json<Summary> {
    let now = (s.clock)().0;
    let all_sites: Vec<Site> = s.inventory.sites().into_iter().filter(|x| reader.may_see(&x.tenant)).collect();
    let wanted = |x: &Site| {
        q.township.as_deref().is_none_or(|t| x.township.as_deref() == Some(t))
            && q.site.as_deref().is_none_or(|id| x.id == id)
    };
    let (township_sites, sites): (Vec<Site>, Vec<Site>) =
        all_sites.into_iter().filter(|x| wanted(x)).partition(|x| x.kind == "township");
    let site_index: HashMap<&str, usize> = sites.iter().enumerate().map(|(i, x)| (x.id.as_str(), i)).collect();

    // Devices of the wanted sites, and the latest values in one pass.
    let mut per_site: Vec<Vec<Dev>> = sites.iter().map(|_| Vec::new()).collect();
    let mut gateways: Vec<GatewayCounts> = vec![GatewayCounts::default(); sites.len()];
    let mut accs: HashMap<String, Acc> = HashMap::new();
    let mut kinds: HashMap<String, (usize, DeviceKind)> = HashMap::new();
    for d in s.inventory.devices() {
        let Some(&i) = site_index.get(d.site.as_str()) else { continue };
        if d.kind == DeviceKind::Gateway {
            gateways[i].total += 1;
            match s.inventory.gateway_online(&d.id) {
                Some(true) => gateways[i].online += 1,
                Some(false) => gateways[i].offline += 1,
                None => {}
            }
            continue;
        }
        let acc = Acc { newest: s.inventory.last_seen(&d.id).map(|t| t.0), ..Acc::default() };
        accs.insert(d.id.clone(), acc);
        kinds.insert(d.id, (i, d.kind));
    }
    for l in s.store.latest() {
        let Some(acc) = accs.get_mut(&l.device) else { continue };
        acc.newest = acc.newest.max(Some(l.point.ts.0));
        if let Some(k) = slot(l.metric.name()) {
            acc.values[k] = l.point.value;
        }
    }
    for (id, acc) in accs {
        let Some(&(i, kind)) = kinds.get(&id) else { continue };
        let kind = kind_key(kind, &acc);
        let state = device_state(&acc, kind, now);
        per_site[i].push(Dev { id, kind, state, acc });
    }

    let alerts: Vec<Alert> = match &s.alerts {
        Some(a) => a.with_manager(|m| m.alerts(|x| x.state.is_open() && reader.may_see(&x.tenant), usize::MAX)),
        None => Vec::new(),
    };
    let mut site_alerts = vec![AlertCounts::default(); sites.len()];
    let mut county_alerts = AlertCounts::default();
    for a in &alerts {
        if let Some(&i) = a.site.as_deref().and_then(|x| site_index.get(x)) {
            site_alerts[i].add(a);
        }
        if q.township.is_none() && q.site.is_none() {
            county_alerts.add(a);
        }
    }
    if q.township.is_some() || q.site.is_some() {
        for c in &site_alerts {
            county_alerts.merge(c);
        }
    }

    let mut totals = Totals::default();
    let mut out: Vec<SiteSummary> = Vec::with_capacity(sites.len());
    for (i, site) in sites.into_iter().enumerate() {
        let mut devices = std::mem::take(&mut per_site[i]);
        devices.sort_by(|a, b| a.id.cmp(&b.id));
        let summary = summarise(site, &devices, gateways[i], site_alerts[i], now);
        add_totals(&mut totals, &summary, &devices);
        out.push(summary);
    }
    out.sort_by(|a, b| site_rank(&a.kind).cmp(&site_rank(&b.kind)).then_with(|| a.id.cmp(&b.id)));

    let mut townships: Vec<TownshipSummary> = township_sites
        .into_iter()
        .map(|t| TownshipSummary {
            id: t.id.clone(),
            name: t.name,
            lat: t.lat,
            lon: t.lon,
            sites: SiteStates::default(),
            state: SiteState::Nodata,
            devices: StateCounts::default(),
            alerts: AlertCounts::default(),
        })
        .collect();
    let by_id: HashMap<String, usize> = townships.iter().enumerate().map(|(i, t)| (t.id.clone(), i)).collect();
    for site in &out {
        let Some(&t) = site.township.as_deref().and_then(|x| by_id.get(x)) else { continue };
        let t = &mut townships[t];
        t.sites.add(site.state);
        t.state = t.state.min(site.state);
        for c in site.counts.values() {
            t.devices.merge(c);
        }
        t.alerts.merge(&site.alerts);
    }
    townships.sort_by(|a, b| a.id.cmp(&b.id));

    let stale_after_ms = BTreeMap::from([("water_meter", METER_STALE_MS), ("default", STALE_MS)]);
    Json(Summary { stale_after_ms, totals, alerts: county_alerts, townships, sites: out })
}

/// Few large sites first, then the many villages (the dashboard's order).
fn site_rank(kind: &str) -> usize {
    match kind {
        "waterworks" => 1,
        "farm" => 2,
        "village" => 3,
        _ => 50,
    }
}

/// The key a device is counted under: its kind, with cows and their collar hubs apart (a
/// hub is polled itself, so it has an online state, but has no animal readings).
fn kind_key(kind: DeviceKind, acc: &Acc) -> &'static str {
    if kind != DeviceKind::CowCollar {
        return kind.as_str();
    }
    let animal = ["body_temperature", "activity", "rumination"].iter().any(|m| acc.get(m).is_some());
    if !animal && acc.get("device_online").is_some() { "collar_hub" } else { "cow" }
}

fn device_state(acc: &Acc, kind: &str, now: i64) -> DeviceState {
    if acc.get("device_online").is_some_and(|v| v < 0.5) {
        return DeviceState::Offline;
    }
    match acc.newest {
        None => DeviceState::Nodata,
        Some(t) if now - t > stale_after_ms(kind) => DeviceState::Stale,
        Some(_) => DeviceState::Ok,
    }
}

/// A site's figures, issues and state (the dashboard's `summarise`).
fn summarise(site: Site, devices: &[Dev], gateways: GatewayCounts, alerts: AlertCounts, now: i64) -> SiteSummary {
    let mut issues = Vec::new();
    if gateways.offline > 0 {
        issues.push(Issue::new(SiteState::Offline, "gateway_offline").count(gateways.offline, gateways.total));
    }
    let mut counts: BTreeMap<&'static str, StateCounts> = BTreeMap::new();
    let mut newest: Option<i64> = None;
    let (mut pumps, mut analysers, mut barns) = (Vec::new(), Vec::new(), Vec::new());
    let (mut meters, mut speakers, mut herd) = (MetersView::default(), SpeakersView::default(), HerdView::default());
    let mut meter_flow = None::<f64>;
    for d in devices {
        counts.entry(d.kind).or_default().add(d.state);
        newest = newest.max(d.acc.newest);
        let v = |m: &str| d.acc.get(m);
        let key_device = matches!(d.kind, "pump_station" | "water_quality" | "barn_climate" | "collar_hub");
        if key_device && d.state == DeviceState::Offline {
            issues.push(Issue::new(SiteState::Attention, "device_offline").device(&d.id));
        }
        match d.kind {
            "pump_station" => pumps.push(pump(d, &mut issues)),
            "water_quality" => analysers.push(analyser(d, &mut issues)),
            "barn_climate" => {
                let (t, rh) = (v("barn_temperature"), v("relative_humidity"));
                let thi = v("thi").or_else(|| Some(thi(t?, rh?)));
                if let Some(x) = thi.filter(|x| *x >= HEAT_STRESS_THI) {
                    issues.push(Issue::new(SiteState::Attention, "heat_stress").device(&d.id).measured("thi", x));
                }
                barns.push(BarnView {
                    device: d.id.clone(),
                    state: state_name(d.state),
                    barn_temperature: t,
                    relative_humidity: rh,
                    thi,
                });
            }
            "cow" => {
                herd.cows += 1;
                herd.reporting += usize::from(d.state == DeviceState::Ok);
                herd.fever += usize::from(v("body_temperature").is_some_and(|t| t >= FEVER_C));
            }
            "speaker" => {
                speakers.total += 1;
                let online = d.state == DeviceState::Ok && v("speaker_online") != Some(0.0);
                speakers.online += usize::from(online);
                speakers.playing += usize::from(v("playback_state") == Some(1.0));
            }
            "water_meter" => {
                meters.total += 1;
                meters.reporting += usize::from(d.state == DeviceState::Ok);
                if let Some(f) = v("flow") {
                    meter_flow = Some(meter_flow.unwrap_or(0.0) + f);
                }
                meters.low_battery += usize::from(v("battery_voltage").is_some_and(|b| b < LOW_BATTERY_V));
                meters.valves_closed += usize::from(v("valve_open") == Some(0.0));
                meters.faults += usize::from(v("fault_word").is_some_and(|w| w != 0.0));
            }
            _ => {}
        }
    }
    meters.flow = meter_flow;
    if herd.fever > 0 {
        issues.push(Issue::new(SiteState::Attention, "fever").count(herd.fever, herd.cows));
    }
    if speakers.online < speakers.total {
        issues.push(
            Issue::new(SiteState::Attention, "speakers_offline")
                .count(speakers.total - speakers.online, speakers.total),
        );
    }
    let silent = meters.total - meters.reporting;
    if meters.total > 0 && silent as f64 > METERS_SILENT_SHARE * meters.total as f64 {
        issues.push(Issue::new(SiteState::Attention, "meters_silent").count(silent, meters.total));
    }
    let known: Vec<&Dev> = devices.iter().filter(|d| d.acc.get("device_online").is_some()).collect();
    if !known.is_empty() && known.iter().all(|d| d.state == DeviceState::Offline) {
        issues.push(Issue::new(SiteState::Offline, "all_offline"));
    }
    let stale_after = devices.iter().map(|d| stale_after_ms(d.kind)).min().unwrap_or(STALE_MS);
    // Nothing heard: no reading, and no gateway status either (the dashboard's rule).
    let state = if newest.is_none() && gateways.online + gateways.offline == 0 {
        SiteState::Nodata
    } else if let Some(worst) = issues.iter().map(|i| i.state).min() {
        worst
    } else if newest.is_none_or(|t| now - t > stale_after) {
        SiteState::Stale
    } else {
        SiteState::Ok
    };
    if state == SiteState::Stale {
        // The age is the page's to compute from `newest`: the answer stays the same (and
        // its ETag with it) while nothing new arrives.
        issues.push(Issue::new(SiteState::Stale, "stale"));
    }
    let has = |k: &str| counts.contains_key(k);
    SiteSummary {
        meters: has("water_meter").then_some(meters),
        speakers: has("speaker").then_some(speakers),
        herd: has("cow").then_some(herd),
        id: site.id,
        name: site.name,
        kind: site.kind,
        tenant: site.tenant,
        township: site.township,
        district: site.district,
        village: site.village,
        lat: site.lat,
        lon: site.lon,
        state,
        newest: newest.map(|t| rfc3339(protocol::Timestamp(t))),
        issues,
        counts,
        gateways,
        alerts,
        pumps,
        analysers,
        barns,
    }
}

fn pump(d: &Dev, issues: &mut Vec<Issue>) -> PumpView {
    let v = |m: &str| d.acc.get(m);
    let p = PumpView {
        device: d.id.clone(),
        state: state_name(d.state),
        tank_level: v("tank_level"),
        pump_running: v("pump_running"),
        flow: v("flow"),
        pump_flow: v("pump_flow"),
        pressure: v("pressure"),
        pump_current: v("pump_current"),
        free_chlorine: v("free_chlorine"),
        fault_word: v("fault_word"),
    };
    let issue = |key| Issue::new(SiteState::Attention, key).device(&d.id);
    if let Some(w) = p.fault_word.filter(|w| *w != 0.0) {
        issues.push(issue("pump_fault").measured("fault_word", w));
    }
    // DOMAIN.md: a pump that runs with no flow, or flow with no pump running, is a failure.
    match (p.pump_running, p.pump_flow) {
        (Some(r), Some(f)) if r == 1.0 && f < NO_FLOW_M3H => issues.push(issue("pump_no_flow")),
        (Some(r), Some(f)) if r == 0.0 && f >= NO_FLOW_M3H => {
            issues.push(issue("flow_no_pump").measured("pump_flow", f))
        }
        _ => {}
    }
    if let Some(l) = p.tank_level.filter(|l| *l < TANK_LOW_M) {
        issues.push(issue("tank_low").measured("tank_level", l));
    }
    if let Some(x) = p.pressure.filter(|x| *x < MIN_PRESSURE_MPA) {
        issues.push(issue("low_pressure").measured("pressure", x));
    }
    if let Some(c) = p.free_chlorine.filter(|c| *c < OUTLET_CHLORINE_MIN) {
        issues.push(issue("outlet_chlorine").measured("free_chlorine", c));
    }
    p
}

fn analyser(d: &Dev, issues: &mut Vec<Issue>) -> AnalyserView {
    let mut values = BTreeMap::new();
    let mut out = Vec::new();
    for m in QUALITY_ORDER {
        let Some(v) = d.acc.get(m) else { continue };
        values.insert(m, v);
        if let Some(&(_, min, max)) = QUALITY_LIMITS.iter().find(|(x, _, _)| *x == m) {
            let key = if v < min {
                "quality_low"
            } else if v > max {
                "quality_high"
            } else {
                continue;
            };
            out.push(m);
            issues.push(Issue::new(SiteState::Attention, key).device(&d.id).measured(m, v));
        }
    }
    AnalyserView {
        device: d.id.clone(),
        state: state_name(d.state),
        values,
        out_of_limits: out,
        fault_word: d.acc.get("fault_word"),
    }
}

/// Temperature-humidity index (DOMAIN.md, NRC), T in °C, RH in %.
fn thi(t: f64, rh: f64) -> f64 {
    1.8 * t + 32.0 - (0.55 - 0.0055 * rh) * (1.8 * t - 26.0)
}

fn add_totals(t: &mut Totals, s: &SiteSummary, devices: &[Dev]) {
    t.sites.add(s.state);
    for d in devices {
        t.devices.add(d.state);
        t.by_kind.entry(d.kind).or_default().add(d.state);
    }
    t.gateways.total += s.gateways.total;
    t.gateways.online += s.gateways.online;
    t.gateways.offline += s.gateways.offline;
    if let Some(m) = &s.meters {
        t.meters.total += m.total;
        t.meters.reporting += m.reporting;
        t.meters.low_battery += m.low_battery;
        t.meters.valves_closed += m.valves_closed;
        t.meters.faults += m.faults;
        if let Some(f) = m.flow {
            t.meters.flow = Some(t.meters.flow.unwrap_or(0.0) + f);
        }
    }
    if let Some(x) = &s.speakers {
        t.speakers.total += x.total;
        t.speakers.online += x.online;
        t.speakers.playing += x.playing;
    }
    if let Some(h) = &s.herd {
        t.cows.cows += h.cows;
        t.cows.reporting += h.reporting;
        t.cows.fever += h.fever;
    }
    for p in &s.pumps {
        t.pumps.total += 1;
        t.pumps.running += usize::from(p.pump_running == Some(1.0));
        t.pumps.faults += usize::from(p.fault_word.is_some_and(|w| w != 0.0));
    }
    for a in &s.analysers {
        t.quality.total += 1;
        t.quality.out += usize::from(!a.out_of_limits.is_empty());
    }
}
