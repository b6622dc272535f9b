//! Rule packs: the TOML format, its validation, and the compiled [`Rule`]s.
//!
//! A pack is one TOML file of `[[rules]]`. Every rule has an `id` (unique across all
//! loaded packs), a `kind`, a `severity`, a `summary` template and a selector; the other
//! keys depend on the kind (`docs/ALERTS.md` lists them). Loading goes through `conf`, so
//! every problem is reported with file, line and reason, and all problems of all files
//! at once. A set of packs loads as a whole or not at all: on reload, an invalid file is
//! refused and the rules already running keep running.
//!
//! Invariants of a compiled [`RuleSet`]:
//! - rule ids are unique; each rule knows the file and line it came from;
//! - every metric named is in the catalogue, every device kind parses;
//! - numbers that must be positive are (windows, hold times, limits).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use conf::{ConfigError, ConfigErrors, Problems, Source, Spanned};
use protocol::{DeviceKind, Metric, catalogue};
use serde::{Deserialize, Serialize};

use crate::alerts::model::Severity;

/// The packs shipped with ingest, built into the binary: `(file name, text)`.
pub const DEFAULT_PACKS: &[(&str, &str)] = &[
    ("drinking-water.toml", include_str!("../../rules/drinking-water.toml")),
    ("dairy.toml", include_str!("../../rules/dairy.toml")),
    ("gateways.toml", include_str!("../../rules/gateways.toml")),
];

/// One value or a list of them (`kind = "water_meter"` or `kind = ["a", "b"]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single value.
    One(String),
    /// A list.
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// The selector as written: which series a rule looks at.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SelectSpec {
    kind: Option<OneOrMany>,
    site: Option<OneOrMany>,
    district: Option<OneOrMany>,
    device: Option<OneOrMany>,
    gateway: Option<OneOrMany>,
    tenant: Option<OneOrMany>,
}

/// A proposed broadcast a rule asks for when it fires.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BroadcastSpec {
    /// Warning level: `red`, `orange`, `yellow` or `blue` (Emergency Response Law art. 42).
    pub level: String,
    /// Text for the speakers' TTS; the same placeholders as `summary`.
    pub text: String,
}

/// One `[[rules]]` table as written. Flat on purpose: serde's tagged enums lose the
/// positions `conf` needs, so validation checks which keys a kind allows.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    id: Spanned<String>,
    kind: Spanned<String>,
    severity: Spanned<String>,
    summary: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    select: SelectSpec,
    metric: Option<Spanned<String>>,
    broadcast: Option<BroadcastSpec>,
    // threshold, thi
    above: Option<f64>,
    below: Option<f64>,
    clear: Option<f64>,
    bit: Option<u8>,
    for_secs: Option<u64>,
    clear_for_secs: Option<u64>,
    // rate_of_change
    window_secs: Option<u64>,
    rise: Option<f64>,
    fall: Option<f64>,
    // staleness, gateway_offline
    missed: Option<u32>,
    expected_interval_secs: Option<u64>,
    min_silence_secs: Option<u64>,
    group_min_devices: Option<u32>,
    silence_secs: Option<u64>,
    grace_secs: Option<u64>,
    // flatline
    tolerance: Option<f64>,
    // drift
    method: Option<String>,
    subgroup_secs: Option<u64>,
    learn_subgroups: Option<u32>,
    baseline_lambda: Option<f64>,
    lambda: Option<f64>,
    limit_l: Option<f64>,
    k: Option<f64>,
    h: Option<f64>,
    direction: Option<String>,
    min_sigma: Option<f64>,
    hour_of_day: Option<bool>,
    // mass_balance
    inflow: Option<SelectSpec>,
    meters: Option<SelectSpec>,
    every_secs: Option<u64>,
    max_loss_pct: Option<f64>,
    clear_loss_pct: Option<f64>,
    counter_modulus: Option<f64>,
    max_gap_secs: Option<u64>,
    min_inflow: Option<f64>,
    // night_flow
    night_start_hour: Option<f64>,
    night_end_hour: Option<f64>,
    utc_offset_hours: Option<f64>,
    baseline_nights: Option<u32>,
    min_nights: Option<u32>,
    rise_pct: Option<f64>,
    min_rise: Option<f64>,
    smoothing_secs: Option<u64>,
    // pump_flow
    mode: Option<String>,
    min_flow_ratio: Option<f64>,
    min_flow: Option<f64>,
    // tank_empty
    trend_secs: Option<u64>,
    floor: Option<f64>,
    within_hours: Option<f64>,
    // animal_baseline
    baseline_hours: Option<f64>,
    min_baseline_hours: Option<f64>,
    ratio: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PackSpec {
    #[serde(default)]
    description: String,
    #[serde(default)]
    rules: Vec<Spanned<RuleSpec>>,
}

/// Which series a rule looks at. Empty lists match everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Selector {
    /// Device kinds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<DeviceKind>,
    /// Site ids.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<String>,
    /// Supply districts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub districts: Vec<String>,
    /// Device ids.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// Gateway ids.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Tenants.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<String>,
}

/// What a selector is matched against: a device as the inventory knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceMeta {
    /// Device id.
    pub id: String,
    /// Its kind.
    pub kind: DeviceKind,
    /// Its site.
    pub site: String,
    /// The gateway that reads it (itself for a gateway).
    pub gateway: String,
    /// The tenant of its site.
    pub tenant: String,
    /// The supply district of its site.
    pub district: Option<String>,
    /// The village of its site.
    pub village: Option<String>,
}

impl Selector {
    /// True if `d` is selected.
    pub fn matches(&self, d: &DeviceMeta) -> bool {
        fn any(list: &[String], v: &str) -> bool {
            list.is_empty() || list.iter().any(|x| x == v)
        }
        (self.kinds.is_empty() || self.kinds.contains(&d.kind))
            && any(&self.sites, &d.site)
            && any(&self.devices, &d.id)
            && any(&self.gateways, &d.gateway)
            && any(&self.tenants, &d.tenant)
            && (self.districts.is_empty() || d.district.as_deref().is_some_and(|x| any(&self.districts, x)))
    }
}

/// Which way a drift or change counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Upwards only.
    Up,
    /// Downwards only.
    Down,
    /// Either way.
    Both,
}

/// How a drift is charted (DOMAIN.md, drift detection).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "method")]
pub enum DriftMethod {
    /// EWMA chart on standardised subgroup means: limit `l` EWMA sigmas (NIST).
    Ewma {
        /// Smoothing weight.
        lambda: f64,
        /// Limit in EWMA sigmas.
        l: f64,
    },
    /// Tabular CUSUM on standardised subgroup means (Montgomery).
    Cusum {
        /// Reference value in sigmas.
        k: f64,
        /// Decision interval in sigmas.
        h: f64,
    },
}

/// How an animal is compared with herself.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "method")]
pub enum AnimalMethod {
    /// Smoothed value at least `by` above her baseline (body temperature).
    Rise {
        /// Rise in the metric's unit.
        by: f64,
    },
    /// Smoothed value at least `ratio` times her baseline (activity in estrus).
    RatioAbove {
        /// Ratio.
        ratio: f64,
    },
    /// Smoothed value at most `ratio` times her baseline (rumination drop).
    RatioBelow {
        /// Ratio.
        ratio: f64,
    },
}

/// What a pump-flow rule looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PumpMode {
    /// Run feedback on, no pump flow.
    RunWithoutFlow,
    /// Pump flow, run feedback off.
    FlowWithoutRun,
}

/// The kind of a rule and its parameters; times in milliseconds.
///
/// Variants differ in size (a mass balance carries two selectors); rules are few and
/// built once, so boxing the large ones would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Kind {
    /// Value above or below a limit, with hysteresis and a hold time.
    Threshold {
        /// The metric.
        metric: Metric,
        /// Raise above this.
        above: Option<f64>,
        /// Raise below this.
        below: Option<f64>,
        /// Clear only once back past this (hysteresis).
        clear: f64,
        /// Look at this bit of an integer value (fault words).
        bit: Option<u8>,
    },
    /// Change of a value over a window.
    RateOfChange {
        /// The metric.
        metric: Metric,
        /// Window.
        window_ms: i64,
        /// Raise on a rise of at least this over the window.
        rise: Option<f64>,
        /// Raise on a fall of at least this over the window.
        fall: Option<f64>,
    },
    /// No data from a device for `missed` expected intervals; devices of one gateway
    /// that all go silent together are one alert for the gateway.
    Staleness {
        /// Only this metric counts as data (default: any non-health metric).
        metric: Option<Metric>,
        /// Missed intervals before the device is stale.
        missed: u32,
        /// The interval the device should report at; learned from its data when `None`.
        expected_ms: Option<i64>,
        /// Never stale before this much silence.
        min_silence_ms: i64,
        /// At least this many silent devices of one gateway, all of its selected ones,
        /// make one gateway-level alert instead of one per device.
        group_min_devices: u32,
    },
    /// A whole gateway offline: its status says so for `grace_ms`, or nothing came from
    /// any of its devices for `silence_ms`. Suppresses the staleness of its devices.
    GatewayOffline {
        /// Silence of every device that means the gateway is gone.
        silence_ms: i64,
        /// How long an offline status must last.
        grace_ms: i64,
    },
    /// A value that does not move at all where the process always does (stuck sensor).
    Flatline {
        /// The metric.
        metric: Metric,
        /// Changes up to this are no change.
        tolerance: f64,
    },
    /// Drift of subgroup means against a learned baseline.
    Drift {
        /// The metric.
        metric: Metric,
        /// The chart.
        method: DriftMethod,
        /// Subgroup length.
        subgroup_ms: i64,
        /// Subgroups that make the first baseline.
        learn_subgroups: u32,
        /// Weight of each in-control subgroup in the baseline's slow update.
        baseline_lambda: f64,
        /// Which way counts.
        direction: Direction,
        /// Least sigma (measurement uncertainty), so a very steady series does not alarm
        /// on noise.
        min_sigma: f64,
        /// Keep one baseline per local hour of day (diurnal processes).
        hour_of_day: bool,
        /// Local time offset from UTC, hours.
        utc_offset_hours: f64,
    },
    /// District loss: inflow against the sum of the district's meters.
    MassBalance {
        /// Inflow meters (selected within the district).
        inflow: Selector,
        /// Household meters (selected within the district).
        meters: Selector,
        /// The counter metric.
        metric: Metric,
        /// Balance window.
        window_ms: i64,
        /// How often to evaluate.
        every_ms: i64,
        /// Raise above this loss.
        max_loss_pct: f64,
        /// Clear below this loss.
        clear_loss_pct: f64,
        /// Where the counter rolls over.
        modulus: f64,
        /// A meter silent for longer has no usable reading.
        max_gap_ms: i64,
        /// Less inflow than this over the window is not judged.
        min_inflow: f64,
    },
    /// Minimum night flow above its baseline of the previous nights.
    NightFlow {
        /// The flow metric.
        metric: Metric,
        /// Night window start, local hour.
        start_hour: f64,
        /// Night window end, local hour.
        end_hour: f64,
        /// Local time offset from UTC, hours.
        utc_offset_hours: f64,
        /// Nights in the baseline.
        baseline_nights: u32,
        /// Fewest nights to judge.
        min_nights: u32,
        /// Raise when tonight is this much above the baseline, percent.
        rise_pct: f64,
        /// ...and at least this much in absolute terms.
        min_rise: f64,
        /// Means over this long before taking the minimum.
        smoothing_ms: i64,
    },
    /// Pump state against pump flow.
    PumpFlow {
        /// What to look for.
        mode: PumpMode,
        /// Flow below this share of the pump's learned running flow is "no flow".
        min_flow_ratio: f64,
        /// Floor of "no flow" before a running flow is learned (m³/h).
        min_flow: f64,
    },
    /// Tank level trend projects empty within `within_hours`.
    TankEmpty {
        /// The level metric.
        metric: Metric,
        /// Window of the trend.
        trend_ms: i64,
        /// Level that counts as empty.
        floor: f64,
        /// Raise when empty is closer than this.
        within_hours: f64,
    },
    /// An animal against her own recent normal.
    AnimalBaseline {
        /// The metric.
        metric: Metric,
        /// The comparison.
        method: AnimalMethod,
        /// Where the condition clears (same unit as the method's limit).
        clear: f64,
        /// Time constant of the baseline.
        baseline_ms: i64,
        /// Data needed before the animal is judged.
        min_baseline_ms: i64,
        /// Time constant of the smoothed value.
        smoothing_ms: i64,
        /// One baseline per local hour of day.
        hour_of_day: bool,
        /// Local time offset from UTC, hours.
        utc_offset_hours: f64,
    },
    /// Barn temperature-humidity index (NRC), computed from temperature and humidity.
    Thi {
        /// Raise at or above.
        above: f64,
        /// Clear below.
        clear: f64,
    },
}

impl Kind {
    /// The kind's name as written in packs.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Threshold { .. } => "threshold",
            Kind::RateOfChange { .. } => "rate_of_change",
            Kind::Staleness { .. } => "staleness",
            Kind::GatewayOffline { .. } => "gateway_offline",
            Kind::Flatline { .. } => "flatline",
            Kind::Drift { .. } => "drift",
            Kind::MassBalance { .. } => "mass_balance",
            Kind::NightFlow { .. } => "night_flow",
            Kind::PumpFlow { .. } => "pump_flow",
            Kind::TankEmpty { .. } => "tank_empty",
            Kind::AnimalBaseline { .. } => "animal_baseline",
            Kind::Thi { .. } => "thi",
        }
    }

    /// The metrics whose readings feed the rule (empty: driven by the tick only, or by
    /// every metric for staleness).
    pub fn metrics(&self) -> Vec<Metric> {
        match self {
            Kind::Threshold { metric, .. }
            | Kind::RateOfChange { metric, .. }
            | Kind::Flatline { metric, .. }
            | Kind::Drift { metric, .. }
            | Kind::TankEmpty { metric, .. }
            | Kind::AnimalBaseline { metric, .. } => vec![metric.clone()],
            Kind::MassBalance { metric, .. } => vec![metric.clone()],
            Kind::PumpFlow { .. } => vec![Metric::new("pump_running"), Metric::new("pump_flow")],
            Kind::Thi { .. } => vec![Metric::new("barn_temperature"), Metric::new("relative_humidity")],
            Kind::Staleness { .. } | Kind::GatewayOffline { .. } | Kind::NightFlow { .. } => Vec::new(),
        }
    }
}

/// A compiled rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    /// Unique id; part of every alert's fingerprint.
    pub id: String,
    /// The pack file it came from.
    pub pack: String,
    /// Where in the file (for people reading `GET /api/v1/rules`).
    pub line: usize,
    /// Severity of its alerts.
    pub severity: Severity,
    /// Summary template: `{device}`, `{site}`, `{gateway}`, `{district}`, `{value}`.
    pub summary: String,
    /// For people.
    pub description: String,
    /// Which devices it looks at.
    pub select: Selector,
    /// How long the condition must hold before the alert fires.
    pub for_ms: i64,
    /// How long the clear condition must hold before the condition ends.
    pub clear_for_ms: i64,
    /// What it checks.
    #[serde(flatten)]
    pub kind: Kind,
    /// A broadcast to propose to the affected villages when it fires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broadcast: Option<BroadcastSpec>,
}

/// Every loaded rule, with where they came from.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    /// The rules, in load order.
    pub rules: Vec<Rule>,
    /// The pack files, for the reload check.
    pub files: Vec<PathBuf>,
}

impl RuleSet {
    /// The packs shipped with ingest.
    pub fn defaults() -> Result<RuleSet, ConfigErrors> {
        let sources: Vec<Source> =
            DEFAULT_PACKS.iter().map(|(name, text)| Source::from_text(format!("ingest/rules/{name}"), *text)).collect();
        RuleSet::from_sources(&sources)
    }

    /// Every `*.toml` of `dir` (sorted by name), or one file.
    pub fn load(path: &Path) -> Result<RuleSet, ConfigErrors> {
        let files = pack_files(path)?;
        let mut problems = Vec::new();
        let mut sources = Vec::new();
        for f in &files {
            match Source::read(f) {
                Ok(s) => sources.push(s),
                Err(e) => problems.extend(e.0),
            }
        }
        if !problems.is_empty() {
            return Err(ConfigErrors(problems));
        }
        let mut set = RuleSet::from_sources(&sources)?;
        set.files = files;
        Ok(set)
    }

    /// Parses and validates packs; rule ids must be unique across all of them.
    pub fn from_sources(sources: &[Source]) -> Result<RuleSet, ConfigErrors> {
        let mut all = Vec::new();
        let mut rules = Vec::new();
        let mut ids: HashSet<String> = HashSet::new();
        for src in sources {
            match parse_pack(src, &mut ids) {
                Ok(r) => rules.extend(r),
                Err(e) => all.extend(e.0),
            }
        }
        if all.is_empty() { Ok(RuleSet { rules, files: Vec::new() }) } else { Err(ConfigErrors(all)) }
    }
}

/// The pack files at `path`: the file itself, or the `*.toml` in the directory.
pub fn pack_files(path: &Path) -> Result<Vec<PathBuf>, ConfigErrors> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            reason: format!("cannot read the rule directory: {e}"),
        }])
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

fn parse_pack(src: &Source, ids: &mut HashSet<String>) -> Result<Vec<Rule>, ConfigErrors> {
    let spec: PackSpec = src.parse()?;
    let _ = &spec.description;
    let mut problems = Problems::new();
    let mut out = Vec::new();
    let pack = src.name().file_name().map_or_else(|| src.name().display().to_string(), |n| n.to_string_lossy().into());
    for r in spec.rules {
        let line = src.error(&r, "").line.unwrap_or(0);
        let span = r.span();
        let spec = r.into_inner();
        let mut ctx = Ctx {
            src,
            problems: &mut problems,
            span: span.clone(),
            id: spec.id.get_ref().clone(),
            kind: spec.kind.get_ref().clone(),
        };
        if !ids.insert(spec.id.get_ref().clone()) {
            let e = src.error(&spec.id, format!("rule id '{}' is used twice", spec.id.get_ref()));
            ctx.problems.push(e);
        }
        if let Err(e) = protocol::id::validate(spec.id.get_ref()) {
            let e = src.error(&spec.id, format!("rule id '{}': {e}", spec.id.get_ref()));
            ctx.problems.push(e);
        }
        if let Some(rule) = compile(&mut ctx, spec, &pack, line) {
            out.push(rule);
        }
    }
    problems.finish(out)
}

/// Validation context of one rule: errors land at the rule's line unless a field has its own.
struct Ctx<'a> {
    src: &'a Source,
    problems: &'a mut Problems,
    span: std::ops::Range<usize>,
    id: String,
    kind: String,
}

impl Ctx<'_> {
    fn fail(&mut self, reason: impl Into<String>) {
        let e = self.src.error_at(Some(self.span.clone()), format!("rule '{}': {}", self.id, reason.into()));
        self.problems.push(e);
    }

    fn fail_at<T>(&mut self, at: &Spanned<T>, reason: impl Into<String>) {
        let e = self.src.error(at, format!("rule '{}': {}", self.id, reason.into()));
        self.problems.push(e);
    }

    fn positive(&mut self, name: &str, v: Option<f64>, default: f64) -> f64 {
        let v = v.unwrap_or(default);
        if !(v.is_finite() && v > 0.0) {
            self.fail(format!("{name} must be a positive number, not {v}"));
        }
        v
    }

    fn secs(&mut self, name: &str, v: Option<u64>, default: u64) -> i64 {
        let v = v.unwrap_or(default);
        if v == 0 {
            self.fail(format!("{name} must be at least 1"));
        }
        i64::try_from(v.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    fn required<T>(&mut self, name: &str, v: Option<T>) -> Option<T> {
        if v.is_none() {
            let kind = self.kind.clone();
            self.fail(format!("a {kind} rule needs `{name}`"));
        }
        v
    }

    fn metric(&mut self, spec: &Option<Spanned<String>>, default: Option<&str>) -> Option<Metric> {
        match (spec, default) {
            (Some(m), _) => match catalogue::by_name(m.get_ref()) {
                Some(def) => Some(Metric::from(def)),
                None => {
                    self.fail_at(m, format!("metric '{}' is not in the catalogue", m.get_ref()));
                    None
                }
            },
            (None, Some(d)) => Some(Metric::new(d)),
            (None, None) => {
                self.fail("needs `metric`");
                None
            }
        }
    }

    fn selector(&mut self, s: SelectSpec) -> Selector {
        let kinds = s
            .kind
            .map(OneOrMany::into_vec)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|k| match k.parse::<DeviceKind>() {
                Ok(k) => Some(k),
                Err(e) => {
                    self.fail(format!("select.kind '{k}': {e}"));
                    None
                }
            })
            .collect();
        let list = |v: Option<OneOrMany>| v.map(OneOrMany::into_vec).unwrap_or_default();
        Selector {
            kinds,
            sites: list(s.site),
            districts: list(s.district),
            devices: list(s.device),
            gateways: list(s.gateway),
            tenants: list(s.tenant),
        }
    }
}

/// Which optional keys each kind takes (the common ones are always allowed).
fn allowed(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "threshold" => &["metric", "above", "below", "clear", "bit", "for_secs", "clear_for_secs"],
        "rate_of_change" => &["metric", "window_secs", "rise", "fall", "for_secs", "clear_for_secs"],
        "staleness" => &["metric", "missed", "expected_interval_secs", "min_silence_secs", "group_min_devices"],
        "gateway_offline" => &["silence_secs", "grace_secs"],
        "flatline" => &["metric", "tolerance", "for_secs"],
        "drift" => &[
            "metric",
            "method",
            "subgroup_secs",
            "learn_subgroups",
            "baseline_lambda",
            "lambda",
            "limit_l",
            "k",
            "h",
            "direction",
            "min_sigma",
            "hour_of_day",
            "utc_offset_hours",
        ],
        "mass_balance" => &[
            "metric",
            "inflow",
            "meters",
            "window_secs",
            "every_secs",
            "max_loss_pct",
            "clear_loss_pct",
            "counter_modulus",
            "max_gap_secs",
            "min_inflow",
            "for_secs",
        ],
        "night_flow" => &[
            "metric",
            "night_start_hour",
            "night_end_hour",
            "utc_offset_hours",
            "baseline_nights",
            "min_nights",
            "rise_pct",
            "min_rise",
            "smoothing_secs",
        ],
        "pump_flow" => &["mode", "min_flow_ratio", "min_flow", "for_secs", "clear_for_secs"],
        "tank_empty" => &["metric", "trend_secs", "floor", "within_hours", "for_secs", "clear_for_secs"],
        "animal_baseline" => &[
            "metric",
            "method",
            "rise",
            "ratio",
            "clear",
            "baseline_hours",
            "min_baseline_hours",
            "smoothing_secs",
            "hour_of_day",
            "utc_offset_hours",
            "for_secs",
            "clear_for_secs",
        ],
        "thi" => &["above", "clear", "for_secs", "clear_for_secs"],
        _ => return None,
    })
}

/// The optional keys a spec sets.
fn present(s: &RuleSpec) -> Vec<&'static str> {
    let mut p = Vec::new();
    macro_rules! check {
        ($($f:ident),*) => { $( if s.$f.is_some() { p.push(stringify!($f)); } )* };
    }
    check!(
        metric,
        above,
        below,
        clear,
        bit,
        for_secs,
        clear_for_secs,
        window_secs,
        rise,
        fall,
        missed,
        expected_interval_secs,
        min_silence_secs,
        group_min_devices,
        silence_secs,
        grace_secs,
        tolerance,
        method,
        subgroup_secs,
        learn_subgroups,
        baseline_lambda,
        lambda,
        limit_l,
        k,
        h,
        direction,
        min_sigma,
        hour_of_day,
        inflow,
        meters,
        every_secs,
        max_loss_pct,
        clear_loss_pct,
        counter_modulus,
        max_gap_secs,
        min_inflow,
        night_start_hour,
        night_end_hour,
        utc_offset_hours,
        baseline_nights,
        min_nights,
        rise_pct,
        min_rise,
        smoothing_secs,
        mode,
        min_flow_ratio,
        min_flow,
        trend_secs,
        floor,
        within_hours,
        baseline_hours,
        min_baseline_hours,
        ratio
    );
    p
}

/// Counters of the simulated meters are u32 litres read as m³ (firmware/src/water_meter.rs).
const DEFAULT_MODULUS: f64 = 4_294_967.296;

fn compile(ctx: &mut Ctx<'_>, s: RuleSpec, pack: &str, line: usize) -> Option<Rule> {
    let kind_name = s.kind.get_ref().clone();
    let Some(allowed) = allowed(&kind_name) else {
        ctx.fail_at(
            &s.kind,
            format!(
                "unknown kind '{kind_name}'; expected one of threshold, rate_of_change, staleness, gateway_offline, \
                 flatline, drift, mass_balance, night_flow, pump_flow, tank_empty, animal_baseline, thi"
            ),
        );
        return None;
    };
    for key in present(&s) {
        if !allowed.contains(&key) {
            ctx.fail(format!("`{key}` does not apply to a {kind_name} rule"));
        }
    }
    let severity = match s.severity.get_ref().parse::<Severity>() {
        Ok(sev) => sev,
        Err(e) => {
            ctx.fail_at(&s.severity, e);
            Severity::Warning
        }
    };
    if let Some(b) = &s.broadcast
        && !matches!(b.level.as_str(), "red" | "orange" | "yellow" | "blue")
    {
        ctx.fail(format!("broadcast.level '{}' must be red, orange, yellow or blue", b.level));
    }
    let for_ms = i64::try_from(s.for_secs.unwrap_or(0).saturating_mul(1000)).unwrap_or(i64::MAX);
    let clear_for_ms = i64::try_from(s.clear_for_secs.unwrap_or(0).saturating_mul(1000)).unwrap_or(i64::MAX);
    let tz = s.utc_offset_hours.unwrap_or(8.0);
    if !(-14.0..=14.0).contains(&tz) {
        ctx.fail(format!("utc_offset_hours {tz} is not a time zone offset"));
    }
    let select = ctx.selector(s.select.clone());
    let kind = match kind_name.as_str() {
        "threshold" => {
            let metric = ctx.metric(&s.metric, None)?;
            if s.above.is_some() == s.below.is_some() {
                ctx.fail("a threshold rule needs exactly one of `above` and `below`");
            }
            let limit = s.above.or(s.below).unwrap_or(0.0);
            let clear = s.clear.unwrap_or(limit);
            if s.above.is_some() && clear > limit || s.below.is_some() && clear < limit {
                ctx.fail(format!("clear {clear} must lie on the safe side of the limit {limit}"));
            }
            Kind::Threshold { metric, above: s.above, below: s.below, clear, bit: s.bit }
        }
        "rate_of_change" => {
            let metric = ctx.metric(&s.metric, None)?;
            if s.rise.is_none() && s.fall.is_none() {
                ctx.fail("a rate_of_change rule needs `rise` or `fall`");
            }
            let window_ms = ctx.secs("window_secs", s.window_secs, 600);
            Kind::RateOfChange { metric, window_ms, rise: s.rise, fall: s.fall }
        }
        "staleness" => {
            let metric = match &s.metric {
                Some(_) => ctx.metric(&s.metric, None),
                None => None,
            };
            let missed = s.missed.unwrap_or(3);
            if missed == 0 {
                ctx.fail("missed must be at least 1");
            }
            Kind::Staleness {
                metric,
                missed,
                expected_ms: s.expected_interval_secs.map(|v| ctx.secs("expected_interval_secs", Some(v), 1)),
                min_silence_ms: ctx.secs("min_silence_secs", s.min_silence_secs, 300),
                group_min_devices: s.group_min_devices.unwrap_or(2).max(2),
            }
        }
        "gateway_offline" => Kind::GatewayOffline {
            silence_ms: ctx.secs("silence_secs", s.silence_secs, 300),
            grace_ms: i64::try_from(s.grace_secs.unwrap_or(60) * 1000).unwrap_or(60_000),
        },
        "flatline" => {
            let metric = ctx.metric(&s.metric, None)?;
            let tolerance = s.tolerance.unwrap_or(0.0);
            if !(tolerance.is_finite() && tolerance >= 0.0) {
                ctx.fail("tolerance must be zero or positive");
            }
            if for_ms <= 0 {
                ctx.fail("a flatline rule needs `for_secs`: how long a value may stay unchanged");
            }
            Kind::Flatline { metric, tolerance }
        }
        "drift" => {
            let metric = ctx.metric(&s.metric, None)?;
            let method = match s.method.as_deref().unwrap_or("cusum") {
                "cusum" => {
                    let k = ctx.positive("k", s.k, 0.5);
                    let h = ctx.positive("h", s.h, 5.0);
                    DriftMethod::Cusum { k, h }
                }
                "ewma" => {
                    let lambda = ctx.positive("lambda", s.lambda, 0.2);
                    if lambda > 1.0 {
                        ctx.fail("lambda must be at most 1");
                    }
                    let l = ctx.positive("limit_l", s.limit_l, 3.0);
                    DriftMethod::Ewma { lambda, l }
                }
                other => {
                    ctx.fail(format!("method '{other}' must be cusum or ewma"));
                    return None;
                }
            };
            let baseline_lambda = ctx.positive("baseline_lambda", s.baseline_lambda, 0.02);
            Kind::Drift {
                metric,
                method,
                subgroup_ms: ctx.secs("subgroup_secs", s.subgroup_secs, 3600),
                learn_subgroups: s.learn_subgroups.unwrap_or(24).max(2),
                baseline_lambda: baseline_lambda.min(1.0),
                direction: direction(ctx, s.direction.as_deref()),
                min_sigma: ctx.positive("min_sigma", s.min_sigma, f64::MIN_POSITIVE),
                hour_of_day: s.hour_of_day.unwrap_or(false),
                utc_offset_hours: tz,
            }
        }
        "mass_balance" => {
            let metric = ctx.metric(&s.metric, Some("volume_total"))?;
            let inflow = ctx.required("inflow", s.inflow.clone()).map(|x| ctx.selector(x)).unwrap_or_default();
            let meters = ctx.required("meters", s.meters.clone()).map(|x| ctx.selector(x)).unwrap_or_default();
            let max_loss_pct = ctx.positive("max_loss_pct", s.max_loss_pct, 25.0);
            let clear_loss_pct = s.clear_loss_pct.unwrap_or(max_loss_pct * 0.8);
            if clear_loss_pct > max_loss_pct {
                ctx.fail("clear_loss_pct must not be above max_loss_pct");
            }
            Kind::MassBalance {
                inflow,
                meters,
                metric,
                window_ms: ctx.secs("window_secs", s.window_secs, 86_400),
                every_ms: ctx.secs("every_secs", s.every_secs, 900),
                max_loss_pct,
                clear_loss_pct,
                modulus: ctx.positive("counter_modulus", s.counter_modulus, DEFAULT_MODULUS),
                max_gap_ms: ctx.secs("max_gap_secs", s.max_gap_secs, 3600),
                min_inflow: s.min_inflow.unwrap_or(0.0).max(0.0),
            }
        }
        "night_flow" => {
            let metric = ctx.metric(&s.metric, Some("flow"))?;
            let start_hour = s.night_start_hour.unwrap_or(2.0);
            let end_hour = s.night_end_hour.unwrap_or(4.0);
            if !(0.0..24.0).contains(&start_hour) || !(0.0..=24.0).contains(&end_hour) || end_hour <= start_hour {
                ctx.fail("the night window needs 0 <= night_start_hour < night_end_hour <= 24");
            }
            let baseline_nights = s.baseline_nights.unwrap_or(7).max(1);
            Kind::NightFlow {
                metric,
                start_hour,
                end_hour,
                utc_offset_hours: tz,
                baseline_nights,
                min_nights: s.min_nights.unwrap_or(3).clamp(1, baseline_nights),
                rise_pct: ctx.positive("rise_pct", s.rise_pct, 50.0),
                min_rise: s.min_rise.unwrap_or(0.0).max(0.0),
                smoothing_ms: ctx.secs("smoothing_secs", s.smoothing_secs, 900),
            }
        }
        "pump_flow" => {
            let mode = match ctx.required("mode", s.mode.clone())?.as_str() {
                "run_without_flow" => PumpMode::RunWithoutFlow,
                "flow_without_run" => PumpMode::FlowWithoutRun,
                other => {
                    ctx.fail(format!("mode '{other}' must be run_without_flow or flow_without_run"));
                    return None;
                }
            };
            Kind::PumpFlow {
                mode,
                min_flow_ratio: ctx.positive("min_flow_ratio", s.min_flow_ratio, 0.1),
                min_flow: ctx.positive("min_flow", s.min_flow, 0.05),
            }
        }
        "tank_empty" => Kind::TankEmpty {
            metric: ctx.metric(&s.metric, Some("tank_level"))?,
            trend_ms: ctx.secs("trend_secs", s.trend_secs, 1800),
            floor: s.floor.unwrap_or(0.0),
            within_hours: ctx.positive("within_hours", s.within_hours, 1.0),
        },
        "animal_baseline" => {
            let metric = ctx.metric(&s.metric, None)?;
            let method = match ctx.required("method", s.method.clone())?.as_str() {
                "rise" => AnimalMethod::Rise { by: ctx.positive("rise", s.rise, 0.8) },
                "ratio_above" => {
                    let ratio = ctx.positive("ratio", s.ratio, 2.0);
                    if ratio <= 1.0 {
                        ctx.fail("ratio_above needs a ratio above 1");
                    }
                    AnimalMethod::RatioAbove { ratio }
                }
                "ratio_below" => {
                    let ratio = ctx.positive("ratio", s.ratio, 0.7);
                    if ratio >= 1.0 {
                        ctx.fail("ratio_below needs a ratio below 1");
                    }
                    AnimalMethod::RatioBelow { ratio }
                }
                other => {
                    ctx.fail(format!("method '{other}' must be rise, ratio_above or ratio_below"));
                    return None;
                }
            };
            let clear = match method {
                AnimalMethod::Rise { by } => s.clear.unwrap_or(by * 0.75),
                AnimalMethod::RatioAbove { ratio } => s.clear.unwrap_or(1.0 + (ratio - 1.0) * 0.75),
                AnimalMethod::RatioBelow { ratio } => s.clear.unwrap_or(1.0 - (1.0 - ratio) * 0.75),
            };
            let hours = |ctx: &mut Ctx<'_>, name: &str, v: Option<f64>, d: f64| -> i64 {
                (ctx.positive(name, v, d) * 3_600_000.0) as i64
            };
            Kind::AnimalBaseline {
                metric,
                method,
                clear,
                baseline_ms: hours(ctx, "baseline_hours", s.baseline_hours, 240.0),
                min_baseline_ms: hours(ctx, "min_baseline_hours", s.min_baseline_hours, 48.0),
                smoothing_ms: ctx.secs("smoothing_secs", s.smoothing_secs, 3600),
                hour_of_day: s.hour_of_day.unwrap_or(false),
                utc_offset_hours: tz,
            }
        }
        "thi" => {
            let above = ctx.positive("above", s.above, 72.0);
            let clear = s.clear.unwrap_or(above);
            if clear > above {
                ctx.fail("clear must not be above `above`");
            }
            Kind::Thi { above, clear }
        }
        _ => return None,
    };
    Some(Rule {
        id: s.id.into_inner(),
        pack: pack.to_string(),
        line,
        severity,
        summary: s.summary,
        description: s.description,
        select,
        for_ms,
        clear_for_ms,
        kind,
        broadcast: s.broadcast,
    })
}

fn direction(ctx: &mut Ctx<'_>, d: Option<&str>) -> Direction {
    match d.unwrap_or("both") {
        "up" => Direction::Up,
        "down" => Direction::Down,
        "both" => Direction::Both,
        other => {
            ctx.fail(format!("direction '{other}' must be up, down or both"));
            Direction::Both
        }
    }
}

/// Counts of rules per kind, for logs.
pub fn census(rules: &[Rule]) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for r in rules {
        *m.entry(r.kind.name()).or_default() += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<RuleSet, ConfigErrors> {
        RuleSet::from_sources(&[Source::from_text("p.toml", text)])
    }

    #[test]
    fn the_default_packs_load() {
        let set = RuleSet::defaults().unwrap_or_else(|e| panic!("{e}"));
        assert!(set.rules.len() >= 20, "{} rules", set.rules.len());
        let kinds = census(&set.rules);
        for k in [
            "threshold",
            "rate_of_change",
            "staleness",
            "gateway_offline",
            "flatline",
            "drift",
            "mass_balance",
            "night_flow",
            "pump_flow",
            "tank_empty",
            "animal_baseline",
            "thi",
        ] {
            assert!(kinds.contains_key(k), "no {k} rule in the default packs");
        }
    }

    #[test]
    fn every_problem_is_reported_with_file_line_and_reason() {
        let text = r#"
[[rules]]
id = "a"
kind = "threshold"
severity = "critical"
summary = "x"
metric = "free_chlorine"

[[rules]]
id = "b"
kind = "treshold"
severity = "critical"
summary = "x"

[[rules]]
id = "c"
kind = "staleness"
severity = "loud"
summary = "x"
above = 3.0
"#;
        let errs = load(text).unwrap_err();
        let text = errs.to_string();
        assert!(
            text.contains("p.toml:2:1: rule 'a': a threshold rule needs exactly one of `above` and `below`"),
            "{text}"
        );
        assert!(text.contains("p.toml:11:8: rule 'b': unknown kind 'treshold'"), "{text}");
        assert!(text.contains("p.toml:18:12: rule 'c':"), "{text}");
        assert!(text.contains("`above` does not apply to a staleness rule"), "{text}");
    }

    #[test]
    fn a_misspelt_key_and_a_duplicate_id_are_refused() {
        let e = load("[[rules]]\nid = \"a\"\nkind = \"thi\"\nseverity = \"info\"\nsummary = \"x\"\nabove_ = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("p.toml:6:1: unknown field `above_`"), "{e}");
        let one = "[[rules]]\nid = \"a\"\nkind = \"thi\"\nseverity = \"info\"\nsummary = \"x\"\n";
        let e = load(&format!("{one}{one}")).unwrap_err().to_string();
        assert!(e.contains("rule id 'a' is used twice"), "{e}");
    }

    #[test]
    fn selectors_match_on_every_field_they_name() {
        let d = DeviceMeta {
            id: "m1".into(),
            kind: DeviceKind::WaterMeter,
            site: "dongcun".into(),
            gateway: "gw".into(),
            tenant: "county".into(),
            district: Some("district-1".into()),
            village: Some("dongcun".into()),
        };
        let mut s = Selector { kinds: vec![DeviceKind::WaterMeter], ..Selector::default() };
        assert!(s.matches(&d));
        s.districts = vec!["district-2".into()];
        assert!(!s.matches(&d));
        s.districts = vec!["district-1".into()];
        s.tenants = vec!["dairy".into()];
        assert!(!s.matches(&d));
    }
}
