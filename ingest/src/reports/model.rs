//! The JSON shapes of `GET /api/v1/reports/...`: a contract the dashboard's Reports page
//! and the CSV/XLSX exports build on (docs/REPORTS.md defines every figure and its source).
//!
//! Conventions, the same in every report:
//! - volumes in m³, flows in m³/h, pressures in MPa, times RFC 3339 UTC
//!   (`crate::time::rfc3339`), local dates `YYYY-MM-DD` in the county's time zone
//!   ([`Period::utc_offset_hours`]);
//! - a figure that could not be computed is `null`, never 0;
//! - a figure computed with missing data carries a [`Completeness`] saying that it is
//!   incomplete and by how much: nothing is silently low.

use serde::{Deserialize, Serialize};

/// The time span a report covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Period {
    /// `day`, `month` or `range`.
    pub kind: PeriodKind,
    /// The local date or month asked for (`2025-04-07`, `2025-04`), or a range's first
    /// and last day (`2025-04-03..2025-04-09`).
    pub label: String,
    /// Start, inclusive (local midnight, as UTC).
    pub from: String,
    /// End, exclusive.
    pub to: String,
    /// The county's offset from UTC in hours (China Standard Time: 8).
    pub utc_offset_hours: f64,
    /// Local days in the period.
    pub days: u32,
}

/// Day or month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodKind {
    /// One local day.
    Day,
    /// One calendar month, local time.
    Month,
    /// A run of whole local days (`from`..`to` dates): a billing cycle that is not a
    /// calendar month.
    Range,
}

/// Whether a figure had all its data, and if not, how much is missing or estimated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Completeness {
    /// True when every expected device reported throughout and nothing is estimated.
    pub complete: bool,
    /// Share of expected device-hours with at least one reading (inlets and customer
    /// meters), percent.
    pub coverage_pct: f64,
    /// Customer meters the inventory lists in the district(s).
    pub meters_expected: u32,
    /// Of those, meters with no reading at all in or around the period (their
    /// consumption is estimated from the district's other meters).
    pub meters_silent: u32,
    /// Part of `system_input_m3` that is estimated, not read (split across a silence at
    /// the period's edge, or extrapolated where no reading follows yet).
    pub estimated_input_m3: f64,
    /// Part of `billed_metered_m3` that is estimated, same meaning.
    pub estimated_consumption_m3: f64,
    /// Silences that touched the period, hour-resolved: whole gateways first, then single
    /// devices (at most [`Completeness::MAX_SILENCES`]; `silences_total` counts them all).
    pub silences: Vec<Silence>,
    /// Silences in all.
    pub silences_total: u32,
}

impl Completeness {
    /// Most silences listed in one figure.
    pub const MAX_SILENCES: usize = 50;
}

/// A device or gateway that sent nothing for a while.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    /// `gateway`, `inlet` or `meter`.
    pub source: String,
    /// Its id.
    pub id: String,
    /// First hour without data (start of the hour).
    pub from: String,
    /// End of the last hour without data.
    pub to: String,
    /// Hours without data within the period.
    pub hours: f64,
}

/// One water balance in IWA terms (DOMAIN.md, "Water reports").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Balance {
    /// System input volume: what the district's inlet meters counted (m³).
    pub system_input_m3: f64,
    /// Billed metered consumption: the customer meters' counters read as consumption
    /// across rollover, replacement and gaps (m³), estimates included (see
    /// `completeness.estimated_consumption_m3`).
    pub billed_metered_m3: f64,
    /// Non-revenue water: input minus billed metered consumption (m³).
    pub nrw_m3: f64,
    /// NRW as a share of input, percent (`null` without input).
    pub nrw_pct: Option<f64>,
    /// NRW per customer connection per day, litres (`null` without connections).
    pub nrw_l_per_connection_day: Option<f64>,
    /// CJJ 92-2016 leakage rates.
    pub leakage: LeakageRate,
    /// Customer connections (household meters) in the inventory.
    pub connections: u32,
    /// Whether the figures had all their data.
    pub completeness: Completeness,
}

/// CJJ 92-2016 (revised 2018) leakage rates of a balance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LeakageRate {
    /// Comprehensive leakage rate R_WL = (supplied - registered use) / supplied, percent.
    pub comprehensive_pct: Option<f64>,
    /// Correction R1 for household metering (0.08 x the share of supply metered at
    /// households), percent.
    pub household_metering_correction_pct: Option<f64>,
    /// Assessed rate R_BL = R_WL - R1, percent. The corrections for pipe length, outlet
    /// pressure and frost depth are not applied (the inventory has no pipe lengths):
    /// this is an upper bound of the standard's assessed rate.
    pub assessed_pct: Option<f64>,
    /// `grade_1` (<= 10 %), `grade_2` (<= 12 %) or `above` (the standard grades an annual
    /// balance; a day or a month is indicative).
    pub grade: Option<String>,
}

/// Minimum night flow of one night (02:00-04:00 local) into one district.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Night {
    /// The local date of the night (02:00 of this date).
    pub date: String,
    /// Minimum of the 15-minute means of the inlets' summed flow (m³/h).
    pub mnf_m3h: Option<f64>,
    /// Customer meters' metered use over the same window (m³/h): legitimate night use,
    /// measured.
    pub night_use_m3h: Option<f64>,
    /// MNF minus night use: the leakage it implies (m³/h).
    pub implied_leakage_m3h: Option<f64>,
    /// Median MNF of the 7 nights before (m³/h).
    pub baseline_m3h: Option<f64>,
    /// `mnf_m3h - baseline_m3h`.
    pub change_m3h: Option<f64>,
    /// False when an inlet was silent in the window (then the MNF is not judged).
    pub complete: bool,
}

/// Minimum night flow of a district over a period and its trend.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NightFlowTrend {
    /// Every night of the period, oldest first.
    pub nights: Vec<Night>,
    /// Least-squares slope of the period's MNF (m³/h per day); `null` under 2 nights.
    pub trend_m3h_per_day: Option<f64>,
    /// Mean implied leakage over the period's nights (m³/h).
    pub implied_leakage_m3h: Option<f64>,
}

/// One district metered area's balance over the period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistrictBalance {
    /// DMA id (the village it supplies).
    pub district: String,
    /// Name for people.
    pub name: String,
    /// The water-supply district (waterworks) that feeds it.
    pub supply_district: Option<String>,
    /// Its inlet meters.
    pub inlets: Vec<String>,
    /// The whole period.
    pub total: Balance,
    /// Each local day of the period (one entry for `period=day`).
    pub days: Vec<DayBalance>,
    /// Minimum night flow.
    pub night_flow: NightFlowTrend,
}

/// One local day of a balance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DayBalance {
    /// Local date.
    pub date: String,
    /// The balance of that day.
    #[serde(flatten)]
    pub balance: Balance,
}

/// `GET /api/v1/reports/water-balance`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaterBalanceReport {
    /// The period.
    pub period: Period,
    /// The sum over the districts shown (county or tenant view).
    pub county: Balance,
    /// The county's days (sum over districts per day).
    pub county_days: Vec<DayBalance>,
    /// Every district the reader may see, by id (or the one asked for).
    pub districts: Vec<DistrictBalance>,
    /// How the figures were read (`hour roll-ups`, ...), for the footnote of a filed report.
    pub method: String,
}

/// Supply interruptions of one village.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VillageSupply {
    /// Village (DMA) id.
    pub village: String,
    /// Name for people.
    pub name: String,
    /// The device whose pressure judged it (its inlet, else its waterworks' station).
    pub judged_by: Option<String>,
    /// Hours without supply (pressure under `no_supply_mpa`), outside planned work.
    pub interruption_hours: f64,
    /// Hours without supply inside planned maintenance windows, shown apart.
    pub planned_interruption_hours: f64,
    /// Hours under the 0.14 MPa network minimum (GB/T, DOMAIN.md), supply interruptions
    /// included.
    pub low_pressure_hours: f64,
    /// Each interruption.
    pub interruptions: Vec<Interruption>,
    /// Hours of the period with no pressure data (not counted as interrupted).
    pub unknown_hours: f64,
}

/// One supply interruption.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interruption {
    /// Start (first minute without supply).
    pub from: String,
    /// End (first minute with supply again, or the period's end).
    pub to: String,
    /// Length in hours.
    pub hours: f64,
    /// Inside a planned maintenance window.
    pub planned: bool,
    /// What the waterworks showed: `pump_stopped`, `pump_running_no_flow`, `unknown`.
    pub cause: String,
}

/// Pressure of one district over the period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistrictPressure {
    /// DMA (village) or supply-district id.
    pub district: String,
    /// The device measured (inlet meter or pump station outlet).
    pub device: String,
    /// Minimum (MPa).
    pub min_mpa: Option<f64>,
    /// Mean of the readings (MPa).
    pub mean_mpa: Option<f64>,
    /// Maximum (MPa).
    pub max_mpa: Option<f64>,
    /// Readings.
    pub samples: u64,
}

/// A planned maintenance window as the report used it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedWindow {
    /// Start.
    pub from: String,
    /// End.
    pub to: String,
    /// Site, device or district it covers (`*` for all).
    pub scope: String,
    /// Why.
    pub reason: String,
}

/// `GET /api/v1/reports/supply`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SupplyReport {
    /// The period.
    pub period: Period,
    /// Pressure under which a village is without supply (MPa).
    pub no_supply_mpa: f64,
    /// Every village.
    pub villages: Vec<VillageSupply>,
    /// Pressure per DMA (inlet) and per supply district (station outlet).
    pub pressure: Vec<DistrictPressure>,
    /// Maintenance windows read (from the alert manager's maintenance mutes).
    pub planned: Vec<PlannedWindow>,
}

/// A limit of GB 5749-2022.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limit {
    /// Lowest allowed value.
    pub min: Option<f64>,
    /// Highest allowed value.
    pub max: Option<f64>,
    /// Where it comes from.
    pub source: String,
}

/// One longest stretch out of limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Excursion {
    /// First reading out of limits.
    pub from: String,
    /// First reading back within limits (or the period's end).
    pub to: String,
    /// Length in minutes.
    pub minutes: f64,
    /// The reading furthest out.
    pub worst: f64,
}

/// Compliance of one parameter of one analyser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParameterCompliance {
    /// Metric (`free_chlorine`, `turbidity`, `ph`, `conductivity`).
    pub metric: String,
    /// Its unit.
    pub unit: String,
    /// The limit applied.
    pub limit: Limit,
    /// Readings in the period.
    pub samples: u64,
    /// Readings within the limit.
    pub within: u64,
    /// `within / samples`, percent.
    pub within_pct: Option<f64>,
    /// Time out of limits (minutes): from each reading out to the next reading in.
    pub minutes_out: f64,
    /// The longest excursion.
    pub longest_excursion: Option<Excursion>,
    /// Smallest reading.
    pub min: Option<f64>,
    /// Mean reading.
    pub mean: Option<f64>,
    /// Largest reading.
    pub max: Option<f64>,
}

/// One analyser (network analyser or station outlet probe).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalyserCompliance {
    /// Device id.
    pub device: String,
    /// `network` (an analyser out in the pipes: tap limits) or `plant_outlet` (a
    /// station's outlet probe: leaving-the-plant limits).
    pub point: String,
    /// Site.
    pub site: String,
    /// Supply district.
    pub district: Option<String>,
    /// Each parameter it measures.
    pub parameters: Vec<ParameterCompliance>,
}

/// `GET /api/v1/reports/quality`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityReport {
    /// The period.
    pub period: Period,
    /// Every analyser the reader may see.
    pub analysers: Vec<AnalyserCompliance>,
}

/// Why a cow needs attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Body temperature above her own baseline.
    Fever,
    /// Rumination below her own baseline for the hour of day.
    RuminationDrop,
    /// Activity well above her own baseline for the hour of day.
    Estrus,
}

/// The readings behind a flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Metric (`body_temperature`, `activity`, `rumination`).
    pub metric: String,
    /// Its unit.
    pub unit: String,
    /// `rise` (value minus baseline, in the unit) or `ratio` (value / baseline).
    pub comparison: String,
    /// The rule's figure when it fired (rise or ratio).
    pub value: f64,
    /// The rule's limit (rise or ratio).
    pub threshold: f64,
    /// Her baseline at the flagged hours (mean of her previous 10 days, same hours of
    /// day for the hour-of-day rules), in the unit.
    pub baseline: Option<f64>,
    /// Her hourly means of the day, `[time, value]`.
    pub readings: Vec<(String, f64)>,
}

/// One cow flagged on the day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CowFlag {
    /// Device id (`cow-<eartag>`).
    pub cow: String,
    /// The condition.
    pub condition: Condition,
    /// The rule that flagged it (`cow-fever`, ...).
    pub rule: String,
    /// The rule's severity.
    pub severity: String,
    /// When it fired.
    pub since: String,
    /// When it cleared, if it did that day.
    pub until: Option<String>,
    /// Hours flagged within the day.
    pub hours: f64,
    /// 1 is the most urgent.
    pub rank: u32,
    /// The readings and the baseline.
    pub evidence: Evidence,
}

/// Herd averages of the day.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HerdAverages {
    /// Cows the inventory lists.
    pub cows: u32,
    /// Cows with readings that day.
    pub cows_reporting: u32,
    /// Mean body temperature (°C).
    pub body_temperature_c: Option<f64>,
    /// Mean activity (the collar's unit).
    pub activity: Option<f64>,
    /// Mean rumination (the collar's unit).
    pub rumination: Option<f64>,
    /// Mean milk yield per cow and milking (the meter's unit), where measured.
    pub milk_yield: Option<f64>,
}

/// Heat stress of one barn over the day (THI, NRC formula, DOMAIN.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BarnHeat {
    /// Barn climate sensor.
    pub device: String,
    /// Hours at THI 68-71 (mild).
    pub mild_hours: f64,
    /// Hours at THI 72-79 (moderate).
    pub moderate_hours: f64,
    /// Hours at THI 80-89 (severe).
    pub severe_hours: f64,
    /// Hours at THI >= 90 (extreme).
    pub extreme_hours: f64,
    /// Hours at THI >= 72 (conception falls): the sum of the three bands above mild.
    pub stress_hours: f64,
    /// Highest THI.
    pub max_thi: Option<f64>,
    /// Hours with climate data.
    pub hours_with_data: f64,
}

/// `GET /api/v1/reports/herd`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HerdReport {
    /// The day.
    pub period: Period,
    /// Cows needing attention, most urgent first.
    pub flagged: Vec<CowFlag>,
    /// Herd averages.
    pub averages: HerdAverages,
    /// Heat stress per barn.
    pub heat_stress: Vec<BarnHeat>,
    /// How the flags were found (the rules replayed and the data they were fed).
    pub method: String,
}

/// One meter's use over a period through the counter semantics the rules use
/// (`crate::rules::counter`): what a billing line is made of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeterUse {
    /// Meter id.
    pub meter: String,
    /// Total read at (or interpolated to) the period's start (m³); `null` when nothing
    /// was read before the period ended.
    pub start_read_m3: Option<f64>,
    /// When that total was read (the reading's hour end).
    pub start_at: Option<String>,
    /// Total at the period's end (m³).
    pub end_read_m3: Option<f64>,
    /// When that total was read.
    pub end_at: Option<String>,
    /// Consumption over the period (m³), across rollover and replacement; estimates
    /// included. `null` when the meter has no reading around the period at all.
    pub consumption_m3: Option<f64>,
    /// Part of it that is estimated (interpolated across a silence at the period's edge,
    /// or extrapolated).
    pub estimated_m3: f64,
    /// The counter fell: the meter was replaced (or reset) in the period.
    pub replaced: bool,
    /// The counter wrapped past its modulus in the period.
    pub rolled_over: bool,
    /// Local days of the period without any reading.
    pub missing_days: u32,
    /// Hours of the period with at least one reading.
    pub hours_with_data: u32,
}
