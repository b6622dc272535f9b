//! Billing export: for each household meter, the reads a billing clerk bills a period on
//! (start and end read with their times), the water used between them, and flags that say
//! where the figure needs a second look. `GET /api/v1/reports/billing` answers JSON, CSV
//! (UTF-8 with a byte-order mark, so Excel opens the Chinese headers right) or XLSX
//! (`rust_xlsxwriter`), headed in Chinese or, on request, English.
//!
//! What the figures mean:
//! - The read at a time `T` is the meter's newest real reading at or before `T` (looked for
//!   up to [`LOOKBACK_MS`] back); nothing is invented. The start read is the read at
//!   `from`, the end read the read at `to`, so the end read of one period is the start read
//!   of the next and consecutive periods add up, whatever was late or missing. A meter with
//!   no reading before `from` starts at its first reading in the period.
//! - Consumption is the sum of the counter's steps from the start read to the end read,
//!   read through [`crate::rules::counter::step`], the same semantics the rules use: a
//!   wrap of the register is use (rolled over), a fall is a replaced or reset meter whose
//!   new total is the use since (replaced), and a gap costs nothing but its timing.
//! - Flags: *estimated* when a boundary read is more than [`READ_WINDOW_MS`] from its
//!   boundary (the figure then covers more or less than the period); *replaced* and
//!   *rolled over* count those steps; *missing days* counts the period's days (China
//!   Standard Time, [`TZ_OFFSET_MS`]) without a single reading.
//!
//! Design constraints:
//! - Reads the 1-hour roll-ups, not every raw point (a county's meters read every 10 s make
//!   billions of points a month): between the boundary hours, each hour's last total is a
//!   step of the counter. Raw points are read only where the roll-up cannot answer exactly:
//!   the hours of the boundary reads (for their exact times), and any hour in which the
//!   counter fell (its minimum below the total before it, or its last below its maximum),
//!   which is where rollovers and replacements happen. For a counter that only falls at a
//!   rollover or a replacement this equals stepping through every raw point
//!   (`tests::the_rollups_give_the_same_bill_as_every_raw_point`).
//! - Tenant-scoped: only meters of sites the [`Reader`] may see.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use protocol::{DeviceKind, Timestamp};
use serde::{Deserialize, Serialize};
use store::{DAY_MS, HOUR_MS, Store, StoreError};

use crate::auth::Reader;
use crate::error::ApiError;
use crate::inventory::{Device, Inventory, Site};
use crate::rules::counter::{Step, step};

/// The counter metric billed.
pub const METRIC: &str = "volume_total";
/// Where household counters wrap: the simulated meters count u32 litres, read as m³ (the
/// rules' default, `rules::kinds::mass_balance`).
pub const MODULUS: f64 = crate::rules::kinds::mass_balance::DEFAULT_MODULUS;
/// A boundary read further than this from its boundary makes the bill an estimate: NB-IoT
/// meters upload once a day, so a read up to a day old is a normal read.
pub const READ_WINDOW_MS: i64 = DAY_MS;
/// How far before the period the start read is looked for.
pub const LOOKBACK_MS: i64 = 31 * DAY_MS;
/// Billing days are dates in China Standard Time (UTC+8), as the bureau's clerks count them.
pub const TZ_OFFSET_MS: i64 = 8 * HOUR_MS;
/// Longest period one export covers.
pub const MAX_PERIOD_MS: i64 = 400 * DAY_MS;

/// One real reading of a meter's total.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Read {
    /// When it was read (ms since the epoch).
    pub ts: i64,
    /// The total, m³.
    pub value: f64,
}

/// One household meter's bill for a period.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterBill {
    /// The metering point (device id): it stays when the meter on it is replaced.
    pub meter: String,
    /// Its site (village) id.
    pub site: String,
    /// The site's name.
    pub site_name: String,
    /// The read at the start of the period (`None`: no reading at all).
    pub start: Option<Read>,
    /// The read at the end of the period.
    pub end: Option<Read>,
    /// Water used from the start read to the end read, m³.
    pub consumption: Option<f64>,
    /// A boundary read is more than [`READ_WINDOW_MS`] from its boundary.
    pub estimated: bool,
    /// Falls of the counter read as a replaced (or reset) meter.
    pub replaced: u32,
    /// Wraps of the counter's register.
    pub rolled_over: u32,
    /// Days of the period (UTC+8 dates) without a reading.
    pub missing_days: u32,
    /// Days of the period (UTC+8 dates it touches).
    pub days: u32,
}

/// A billing period `[from, to)`, ms since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// Start (the start read is the read at this time).
    pub from: i64,
    /// End (the end read is the read at this time).
    pub to: i64,
}

impl Period {
    /// Checks the order and the length of a period.
    pub fn new(from: i64, to: i64) -> Result<Period, String> {
        if from >= to {
            return Err(format!("from ({}) must be before to ({})", fmt_utc(from), fmt_utc(to)));
        }
        if to.saturating_sub(from) > MAX_PERIOD_MS {
            return Err(format!("a billing period is at most {} days", MAX_PERIOD_MS / DAY_MS));
        }
        Ok(Period { from, to })
    }

    /// The UTC+8 dates the period touches, as day numbers since the epoch.
    fn days(&self) -> std::ops::RangeInclusive<i64> {
        local_day(self.from)..=local_day(self.to - 1)
    }
}

fn local_day(ts: i64) -> i64 {
    (ts + TZ_OFFSET_MS).div_euclid(DAY_MS)
}

fn floor_hour(ts: i64) -> i64 {
    ts.div_euclid(HOUR_MS) * HOUR_MS
}

/// The household meters a reader may see, optionally of one site, by site then id.
pub fn household_meters(inventory: &Inventory, reader: &Reader, site: Option<&str>) -> Vec<(Device, Site)> {
    let sites: std::collections::HashMap<String, Site> =
        inventory.sites().into_iter().map(|s| (s.id.clone(), s)).collect();
    let mut out: Vec<(Device, Site)> = inventory
        .devices()
        .into_iter()
        .filter(|d| d.kind == DeviceKind::WaterMeter && site.is_none_or(|s| d.site == s))
        .filter_map(|d| {
            let s = sites.get(&d.site)?.clone();
            reader.may_see(&s.tenant).then_some((d, s))
        })
        .collect();
    out.sort_by(|a, b| (&a.1.id, &a.0.id).cmp(&(&b.1.id, &b.0.id)));
    out
}

/// The bill of one meter for `period`, from the store.
pub fn bill_meter(store: &Store, meter: &Device, site: &Site, period: Period) -> Result<MeterBill, StoreError> {
    let id = meter.id.as_str();
    let mut bill = MeterBill {
        meter: meter.id.clone(),
        site: site.id.clone(),
        site_name: site.name.clone(),
        start: None,
        end: None,
        consumption: None,
        estimated: false,
        replaced: 0,
        rolled_over: 0,
        missing_days: 0,
        days: (period.days().end() - period.days().start() + 1) as u32,
    };
    // Hour roll-ups from the look-back to the hour after `to` (whole hours: the hour tier).
    let lo = floor_hour(period.from - LOOKBACK_MS);
    let hi = floor_hour(period.to) + HOUR_MS;
    let hours = store.range_bucketed(id, METRIC, Timestamp(lo), Timestamp(hi), HOUR_MS)?;
    let with_data: BTreeSet<i64> = hours
        .iter()
        .filter(|b| b.start.0 + HOUR_MS > period.from && b.start.0 < period.to)
        .map(|b| local_day(b.start.0.max(period.from)))
        .collect();
    bill.missing_days = period.days().filter(|d| !with_data.contains(d)).count() as u32;

    let hours: Vec<Hour> =
        hours.iter().map(|b| Hour { start: b.start.0, min: b.min, max: b.max, last: b.last }).collect();
    let reader = Raw { store, id };
    let start = match reader.read_at(&hours, period.from, period.from - LOOKBACK_MS)? {
        Some(r) => Some(r),
        None => reader.first_in(&hours, period.from, period.to)?,
    };
    let Some(start) = start else { return Ok(bill) };
    // There is a reading at or before `to` (the start read itself at worst).
    let end = reader.read_at(&hours, period.to, start.ts)?.unwrap_or(start);
    let steps = reader.steps(&hours, start, end)?;
    bill.start = Some(start);
    bill.end = Some(end);
    bill.consumption = Some(steps.volume);
    bill.replaced = steps.resets;
    bill.rolled_over = steps.rollovers;
    bill.estimated = (start.ts - period.from).abs() > READ_WINDOW_MS || period.to - end.ts > READ_WINDOW_MS;
    Ok(bill)
}

/// One hour's roll-up, as far as billing needs it.
#[derive(Debug, Clone, Copy)]
struct Hour {
    start: i64,
    min: f64,
    max: f64,
    last: f64,
}

/// The counter's steps over a stretch.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Steps {
    volume: f64,
    resets: u32,
    rollovers: u32,
    /// The last total stepped to.
    last: f64,
}

impl Steps {
    fn from(total: f64) -> Steps {
        Steps { last: total, ..Steps::default() }
    }

    fn push(&mut self, total: f64) {
        let s = step(self.last, total, MODULUS);
        match s {
            Step::Rollover(_) => self.rollovers += 1,
            Step::Reset(_) => self.resets += 1,
            Step::Increase(_) => {}
        }
        self.volume += s.volume();
        self.last = total;
    }
}

/// Raw reads of one meter, where the roll-ups cannot answer.
struct Raw<'a> {
    store: &'a Store,
    id: &'a str,
}

impl Raw<'_> {
    /// Points with `from <= ts < to`.
    fn points(&self, from: i64, to: i64) -> Result<Vec<Read>, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        Ok(self
            .store
            .range(self.id, METRIC, Timestamp(from), Timestamp(to), usize::MAX)?
            .into_iter()
            .filter(|p| p.value.is_finite())
            .map(|p| Read { ts: p.ts.0, value: p.value })
            .collect())
    }

    /// The newest reading at or before `t` and not before `not_before`.
    fn read_at(&self, hours: &[Hour], t: i64, not_before: i64) -> Result<Option<Read>, StoreError> {
        let h = floor_hour(t);
        if let Some(r) = self.points(h.max(not_before), t + 1)?.last() {
            return Ok(Some(*r));
        }
        // The newest earlier hour with data: its last point.
        for b in hours.iter().rev().filter(|b| b.start < h && b.start + HOUR_MS > not_before) {
            if let Some(r) = self.points(b.start.max(not_before), b.start + HOUR_MS)?.last() {
                return Ok(Some(*r));
            }
        }
        Ok(None)
    }

    /// The first reading with `from <= ts <= to`.
    fn first_in(&self, hours: &[Hour], from: i64, to: i64) -> Result<Option<Read>, StoreError> {
        for b in hours.iter().filter(|b| b.start + HOUR_MS > from && b.start <= to) {
            if let Some(r) = self.points(b.start.max(from), (b.start + HOUR_MS).min(to + 1))?.first() {
                return Ok(Some(*r));
            }
        }
        Ok(None)
    }

    /// The counter's steps from `start` to `end`: hour by hour from the roll-ups, raw
    /// points in the boundary hours and wherever the counter fell within an hour.
    fn steps(&self, hours: &[Hour], start: Read, end: Read) -> Result<Steps, StoreError> {
        let mut steps = Steps::from(start.value);
        let (hs, he) = (floor_hour(start.ts), floor_hour(end.ts));
        if hs == he {
            for r in self.points(start.ts + 1, end.ts + 1)? {
                steps.push(r.value);
            }
            return Ok(steps);
        }
        for r in self.points(start.ts + 1, hs + HOUR_MS)? {
            steps.push(r.value);
        }
        for b in hours.iter().filter(|b| b.start > hs && b.start < he) {
            // A fall inside the hour (a rollover, a replacement) needs every point.
            if b.min < steps.last || b.last < b.max {
                for r in self.points(b.start, b.start + HOUR_MS)? {
                    steps.push(r.value);
                }
            } else {
                steps.push(b.last);
            }
        }
        for r in self.points(he, end.ts + 1)? {
            steps.push(r.value);
        }
        Ok(steps)
    }
}

/// Bills every household meter a reader may see.
pub fn bill_all(
    store: &Store,
    inventory: &Inventory,
    reader: &Reader,
    site: Option<&str>,
    period: Period,
) -> Result<Vec<MeterBill>, StoreError> {
    household_meters(inventory, reader, site).iter().map(|(d, s)| bill_meter(store, d, s, period)).collect()
}

// ---- the API -------------------------------------------------------------------------

/// The query of `GET /api/v1/reports/billing`.
#[derive(Debug, Deserialize)]
pub struct BillingQuery {
    /// Start: a date (`2026-11-01`, midnight China Standard Time), RFC 3339, or ms.
    from: String,
    /// End, as `from`.
    to: String,
    /// `json` (default), `csv` or `xlsx`.
    format: Option<String>,
    /// Only this site's meters.
    site: Option<String>,
    /// Column headers: `zh` (default) or `en`.
    lang: Option<String>,
}

/// What the billing handler needs: the store and the inventory.
#[derive(Clone)]
pub struct BillingState {
    /// Readings.
    pub store: Arc<Store>,
    /// Meters and sites.
    pub inventory: Arc<Inventory>,
}

/// The output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `{"from", "to", "meters": [...], "totals"}`.
    Json,
    /// One header row, one row per meter.
    Csv,
    /// A workbook: the bill sheet, and a sheet that explains the columns.
    Xlsx,
}

/// Languages of the headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// 中文 (the default: the clerks').
    Zh,
    /// English.
    En,
}

/// Parses a time of the query: `YYYY-MM-DD` is that date's midnight in UTC+8.
pub fn parse_time(text: &str) -> Result<i64, String> {
    let b = text.as_bytes();
    if b.len() == 10 && b[4] == b'-' && b[7] == b'-' {
        let date = time::Date::parse(text, time::macros::format_description!("[year]-[month]-[day]"))
            .map_err(|e| format!("'{text}' is not a date like 2026-11-01: {e}"))?;
        let utc = date.midnight().assume_utc().unix_timestamp() * 1000;
        return Ok(utc - TZ_OFFSET_MS);
    }
    crate::time::parse(text).map(|t| t.0)
}

/// `GET /api/v1/reports/billing?from=&to=&format=json|csv|xlsx&site=&lang=zh|en`.
pub async fn billing(
    State(state): State<BillingState>,
    reader: Reader,
    Query(q): Query<BillingQuery>,
) -> Result<Response, ApiError> {
    let from = parse_time(&q.from).map_err(|e| ApiError::BadRequest(format!("from: {e}")))?;
    let to = parse_time(&q.to).map_err(|e| ApiError::BadRequest(format!("to: {e}")))?;
    let period = Period::new(from, to).map_err(ApiError::BadRequest)?;
    let format = match q.format.as_deref() {
        None | Some("json") => Format::Json,
        Some("csv") => Format::Csv,
        Some("xlsx") => Format::Xlsx,
        Some(other) => return Err(ApiError::BadRequest(format!("format '{other}' is not json, csv or xlsx"))),
    };
    let lang = match q.lang.as_deref() {
        None | Some("zh") => Lang::Zh,
        Some("en") => Lang::En,
        Some(other) => return Err(ApiError::BadRequest(format!("lang '{other}' is not zh or en"))),
    };
    if let Some(site) = &q.site
        && !state.inventory.sites().iter().any(|s| &s.id == site && reader.may_see(&s.tenant))
    {
        return Err(ApiError::NotFound(format!("no site '{site}'")));
    }
    let site = q.site.clone();
    let bills =
        tokio::task::spawn_blocking(move || bill_all(&state.store, &state.inventory, &reader, site.as_deref(), period))
            .await
            .map_err(|e| ApiError::Internal(format!("billing task: {e}")))??;
    let name = format!("billing-{}-{}", local_date(period.from), local_date(period.to));
    Ok(match format {
        Format::Json => axum::Json(json_of(&bills, period)).into_response(),
        Format::Csv => {
            download(csv_of(&bills, period, lang).into_bytes(), "text/csv; charset=utf-8", &format!("{name}.csv"))
        }
        Format::Xlsx => {
            let bytes = xlsx_of(&bills, period, lang).map_err(|e| ApiError::Internal(format!("xlsx: {e}")))?;
            download(bytes, XLSX_TYPE, &format!("{name}.xlsx"))
        }
    })
}

/// The content type of a workbook.
pub const XLSX_TYPE: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

fn download(body: Vec<u8>, content_type: &'static str, file: &str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

// ---- formats -------------------------------------------------------------------------

/// The columns, in order: (Chinese, English).
pub const COLUMNS: [(&str, &str); 14] = [
    ("户号", "Account"),
    ("表号", "Meter"),
    ("村", "Village"),
    ("起度时间", "Start read time"),
    ("起度(m³)", "Start read (m³)"),
    ("止度时间", "End read time"),
    ("止度(m³)", "End read (m³)"),
    ("用水量(m³)", "Consumption (m³)"),
    ("估算", "Estimated"),
    ("换表", "Replaced"),
    ("翻转", "Rolled over"),
    ("缺数天数", "Missing days"),
    ("天数", "Days"),
    ("备注", "Note"),
];

fn header(lang: Lang) -> impl Iterator<Item = &'static str> {
    COLUMNS.iter().map(move |(zh, en)| if lang == Lang::Zh { *zh } else { *en })
}

/// `2026-11-01 08:00`, China Standard Time.
fn local_time(ts: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts + TZ_OFFSET_MS) * 1_000_000) {
        Ok(t) => format!("{:04}-{:02}-{:02} {:02}:{:02}", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute()),
        Err(_) => ts.to_string(),
    }
}

fn local_date(ts: i64) -> String {
    local_time(ts).chars().take(10).collect()
}

fn fmt_utc(ts: i64) -> String {
    crate::time::rfc3339(Timestamp(ts))
}

/// A note for people: what the flags say, in words.
fn note(b: &MeterBill, lang: Lang) -> String {
    let mut parts = Vec::new();
    let zh = lang == Lang::Zh;
    if b.start.is_none() {
        parts.push(if zh { "无读数".to_string() } else { "no reading".to_string() });
    }
    if b.estimated {
        parts.push(if zh {
            "起止读数不在结算时点附近，用水量为估算".into()
        } else {
            "a boundary read is over a day from its date: estimated".into()
        });
    }
    if b.replaced > 0 {
        parts.push(if zh { format!("换表{}次", b.replaced) } else { format!("meter replaced {}x", b.replaced) });
    }
    if b.rolled_over > 0 {
        parts.push(if zh {
            format!("表码翻转{}次", b.rolled_over)
        } else {
            format!("counter rolled over {}x", b.rolled_over)
        });
    }
    if b.missing_days > 0 && b.start.is_some() {
        parts.push(if zh {
            format!("缺数{}天", b.missing_days)
        } else {
            format!("{} days without reads", b.missing_days)
        });
    }
    parts.join(if zh { "；" } else { "; " })
}

/// Rounds a volume for people: litres (3 decimals of m³), which is what meters resolve.
fn m3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// The JSON answer.
pub fn json_of(bills: &[MeterBill], period: Period) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = bills
        .iter()
        .map(|b| {
            let read = |r: &Option<Read>| r.map(|r| serde_json::json!({ "ts": fmt_utc(r.ts), "value": m3(r.value) }));
            serde_json::json!({
                "meter": b.meter,
                "site": b.site,
                "site_name": b.site_name,
                "start": read(&b.start),
                "end": read(&b.end),
                "consumption_m3": b.consumption.map(m3),
                "estimated": b.estimated,
                "replaced": b.replaced,
                "rolled_over": b.rolled_over,
                "missing_days": b.missing_days,
                "days": b.days,
            })
        })
        .collect();
    let total: f64 = bills.iter().filter_map(|b| b.consumption).sum();
    serde_json::json!({
        "from": fmt_utc(period.from),
        "to": fmt_utc(period.to),
        "timezone": "+08:00",
        "meters": rows,
        "totals": {
            "meters": bills.len(),
            "consumption_m3": m3(total),
            "estimated": bills.iter().filter(|b| b.estimated).count(),
            "replaced": bills.iter().filter(|b| b.replaced > 0).count(),
            "rolled_over": bills.iter().filter(|b| b.rolled_over > 0).count(),
            "with_missing_days": bills.iter().filter(|b| b.missing_days > 0).count(),
            "without_reading": bills.iter().filter(|b| b.start.is_none()).count(),
        },
    })
}

fn yes_no(v: bool, lang: Lang) -> &'static str {
    match (v, lang) {
        (true, Lang::Zh) => "是",
        (false, Lang::Zh) => "否",
        (true, Lang::En) => "yes",
        (false, Lang::En) => "no",
    }
}

/// A field of a CSV row, quoted when it must be (RFC 4180).
fn csv_field(out: &mut String, text: &str) {
    if text.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&text.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(text);
    }
}

fn csv_row<'a>(out: &mut String, fields: impl IntoIterator<Item = &'a str>) {
    for (i, f) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, f);
    }
    out.push_str("\r\n");
}

/// The CSV: a byte-order mark, one header row, one row per meter; times in China
/// Standard Time (`2026-11-01 00:00`), volumes in m³ to the litre.
pub fn csv_of(bills: &[MeterBill], _period: Period, lang: Lang) -> String {
    let mut out = String::from('\u{feff}');
    csv_row(&mut out, header(lang));
    for b in bills {
        let cells = row_text(b, lang);
        csv_row(&mut out, cells.iter().map(String::as_str));
    }
    out
}

/// A bill's cells as text, in [`COLUMNS`] order.
fn row_text(b: &MeterBill, lang: Lang) -> Vec<String> {
    let time = |r: &Option<Read>| r.map(|r| local_time(r.ts)).unwrap_or_default();
    let value = |r: &Option<Read>| r.map(|r| format!("{:.3}", r.value)).unwrap_or_default();
    vec![
        b.meter.clone(),
        b.meter.clone(),
        b.site_name.clone(),
        time(&b.start),
        value(&b.start),
        time(&b.end),
        value(&b.end),
        b.consumption.map(|c| format!("{c:.3}")).unwrap_or_default(),
        yes_no(b.estimated, lang).into(),
        b.replaced.to_string(),
        b.rolled_over.to_string(),
        b.missing_days.to_string(),
        b.days.to_string(),
        note(b, lang),
    ]
}

/// The workbook: sheet 1 the bill (times as Excel date-times in China Standard Time,
/// volumes as numbers), sheet 2 what the columns and flags mean.
pub fn xlsx_of(bills: &[MeterBill], period: Period, lang: Lang) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
    use rust_xlsxwriter::{ExcelDateTime, Format as Cell, Workbook};
    let zh = lang == Lang::Zh;
    let mut wb = Workbook::new();
    let bold = Cell::new().set_bold();
    let when = Cell::new().set_num_format("yyyy-mm-dd hh:mm");
    let volume = Cell::new().set_num_format("0.000");
    let ws = wb.add_worksheet();
    ws.set_name(if zh { "抄表结算" } else { "Billing" })?;
    for (c, h) in header(lang).enumerate() {
        ws.write_string_with_format(0, c as u16, h, &bold)?;
    }
    let widths = [22.0, 22.0, 12.0, 17.0, 12.0, 17.0, 12.0, 12.0, 8.0, 8.0, 8.0, 10.0, 8.0, 40.0];
    for (c, w) in widths.iter().enumerate() {
        ws.set_column_width(c as u16, *w)?;
    }
    ws.set_freeze_panes(1, 0)?;
    for (i, b) in bills.iter().enumerate() {
        let r = (i + 1) as u32;
        ws.write_string(r, 0, &b.meter)?;
        ws.write_string(r, 1, &b.meter)?;
        ws.write_string(r, 2, &b.site_name)?;
        for (col, read) in [(3u16, b.start), (5u16, b.end)] {
            if let Some(read) = read {
                let local = ExcelDateTime::from_timestamp((read.ts + TZ_OFFSET_MS).div_euclid(1000))?;
                ws.write_datetime_with_format(r, col, &local, &when)?;
                ws.write_number_with_format(r, col + 1, m3(read.value), &volume)?;
            }
        }
        if let Some(c) = b.consumption {
            ws.write_number_with_format(r, 7, m3(c), &volume)?;
        }
        ws.write_string(r, 8, yes_no(b.estimated, lang))?;
        ws.write_number(r, 9, f64::from(b.replaced))?;
        ws.write_number(r, 10, f64::from(b.rolled_over))?;
        ws.write_number(r, 11, f64::from(b.missing_days))?;
        ws.write_number(r, 12, f64::from(b.days))?;
        ws.write_string(r, 13, note(b, lang))?;
    }
    let about = wb.add_worksheet();
    about.set_name(if zh { "说明" } else { "Notes" })?;
    about.set_column_width(0, 16.0)?;
    about.set_column_width(1, 90.0)?;
    let lines: Vec<(String, String)> = if zh {
        vec![
            ("结算期".into(), format!("{} 至 {}（北京时间）", local_time(period.from), local_time(period.to))),
            (
                "起度 / 止度".into(),
                "结算期起点 / 终点时刻或之前最近的一次真实读数，不做推算；上一期的止度即下一期的起度。".into(),
            ),
            (
                "用水量".into(),
                "从起度到止度逐步累计的表码增量：表码翻转计为用水，换表后新表读数计为换表以来的用水。".into(),
            ),
            ("估算".into(), "起度或止度距结算时点超过 1 天：用水量包含或缺少结算期外的部分。".into()),
            ("缺数天数".into(), "结算期内没有任何读数的天数（北京时间日期）。".into()),
        ]
    } else {
        vec![
            ("Period".into(), format!("{} to {} (China Standard Time)", local_time(period.from), local_time(period.to))),
            ("Start / end read".into(), "The newest real reading at or before the period's start / end; never invented. One period's end read is the next one's start read.".into()),
            ("Consumption".into(), "The counter's steps from the start read to the end read: a rollover of the register is use; after a replacement the new meter's total is the use since.".into()),
            ("Estimated".into(), "A boundary read is more than a day from its boundary: the figure covers more or less than the period.".into()),
            ("Missing days".into(), "Days of the period (China Standard Time dates) without a single reading.".into()),
        ]
    };
    for (i, (k, v)) in lines.iter().enumerate() {
        about.write_string_with_format(i as u32, 0, k, &bold)?;
        about.write_string(i as u32, 1, v)?;
    }
    wb.save_to_buffer()
}

#[cfg(test)]
mod tests {
    use protocol::{Metric, Reading};

    use super::*;

    /// 2026-11-01T00:00:00+08:00.
    const NOV1: i64 = 1_793_462_400_000;
    const MIN: i64 = 60_000;

    fn store(dir: &std::path::Path) -> Store {
        let config = store::StoreConfig { background_checkpoints: false, ..store::StoreConfig::new(dir) };
        Store::open(config).unwrap().0
    }

    fn write(store: &Store, meter: &str, points: &[(i64, f64)]) {
        let readings: Vec<Reading> =
            points.iter().map(|&(t, v)| Reading::new(meter, Metric::new(METRIC), Timestamp(t), v)).collect();
        store.append_readings(&readings).unwrap();
    }

    fn device(id: &str) -> (Device, Site) {
        let d = Device {
            id: id.into(),
            kind: DeviceKind::WaterMeter,
            site: "dongcun".into(),
            gateway: "gw".into(),
            model: String::new(),
            lat: None,
            lon: None,
            public_key: None,
        };
        let s = Site {
            id: "dongcun".into(),
            name: "东村".into(),
            kind: "village".into(),
            tenant: "county".into(),
            lat: 0.0,
            lon: 0.0,
            village: None,
            district: None,
        };
        (d, s)
    }

    fn bill(store: &Store, id: &str, from: i64, to: i64) -> MeterBill {
        let (d, s) = device(id);
        bill_meter(store, &d, &s, Period::new(from, to).unwrap()).unwrap()
    }

    /// Every raw step from `start` to `end`, through the rules' counter semantics.
    fn raw_bill(points: &[(i64, f64)], start: Read, end: Read) -> (f64, u32, u32) {
        let mut s = Steps::from(start.value);
        for &(t, v) in points.iter().filter(|(t, _)| *t > start.ts && *t <= end.ts) {
            let _ = t;
            s.push(v);
        }
        (s.volume, s.resets, s.rollovers)
    }

    /// A meter read every minute for 3 days from 20:00 the day before the period, with a
    /// register wrap at 10:37 on day 1 and a replacement at 15:21 on day 2, both inside an
    /// hour, and a 5-hour gap.
    fn eventful() -> Vec<(i64, f64)> {
        let start = NOV1 - 4 * HOUR_MS;
        let wrap = NOV1 + 10 * HOUR_MS + 37 * MIN;
        let swap = NOV1 + DAY_MS + 15 * HOUR_MS + 21 * MIN;
        let mut total = MODULUS - 30.0;
        let mut out = Vec::new();
        let mut t = start;
        while t < NOV1 + 3 * DAY_MS {
            if t == swap {
                total = 0.0; // the new meter counts from zero
            }
            if !(NOV1 + 2 * DAY_MS + HOUR_MS..NOV1 + 2 * DAY_MS + 6 * HOUR_MS).contains(&t) {
                out.push((t, total));
            }
            total += 0.017;
            if t == wrap {
                total -= MODULUS;
            }
            t += MIN;
        }
        out
    }

    #[test]
    fn the_rollups_give_the_same_bill_as_every_raw_point() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let points = eventful();
        write(&s, "m-1", &points);
        s.checkpoint().unwrap();
        // Periods on whole days, and one that starts and ends inside hours.
        for (from, to) in [(NOV1, NOV1 + 3 * DAY_MS), (NOV1 + 7 * MIN + 5, NOV1 + 2 * DAY_MS + 33 * MIN)] {
            let b = bill(&s, "m-1", from, to);
            let (start, end) = (b.start.unwrap(), b.end.unwrap());
            // The reads are the newest real readings at or before the boundaries.
            let newest = |t: i64| points.iter().rev().find(|p| p.0 <= t).map(|&(ts, value)| Read { ts, value });
            assert_eq!((Some(start), Some(end)), (newest(from), newest(to)));
            let (volume, resets, rollovers) = raw_bill(&points, start, end);
            assert!((b.consumption.unwrap() - volume).abs() < 1e-6, "{:?} vs {volume}", b.consumption);
            assert_eq!((b.replaced, b.rolled_over), (resets, rollovers));
            assert_eq!((b.replaced, b.rolled_over), (1, 1), "one swap and one wrap inside the period");
            // And the volume is what the meter turned: 0.017 m³ a minute, less the old
            // meter's last minute's use before the swap (unknown: the new one starts at 0).
            let minutes = (end.ts - start.ts) / MIN;
            assert!((volume - 0.017 * (minutes - 1) as f64).abs() < 1e-6, "{volume} for {minutes} minutes");
        }
    }

    #[test]
    fn consecutive_periods_add_up_to_the_whole() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        write(&s, "m-1", &eventful());
        s.checkpoint().unwrap();
        let cut = NOV1 + DAY_MS + 15 * HOUR_MS + 30 * MIN; // just after the swap
        let (a, b) = (bill(&s, "m-1", NOV1, cut), bill(&s, "m-1", cut, NOV1 + 3 * DAY_MS));
        let whole = bill(&s, "m-1", NOV1, NOV1 + 3 * DAY_MS);
        assert_eq!(a.end, b.start, "one period's end read is the next one's start read");
        let sum = a.consumption.unwrap() + b.consumption.unwrap();
        assert!((sum - whole.consumption.unwrap()).abs() < 1e-6);
        assert_eq!((a.replaced, b.replaced), (1, 0));
    }

    #[test]
    fn late_reads_are_flagged_estimated_and_silent_days_counted() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        // A daily meter (23:50 each day, UTC+8), silent from Nov 3 to Nov 6 inclusive.
        let days: Vec<(i64, f64)> = (-2..10)
            .filter(|d| !(2..=5).contains(d))
            .map(|d| (NOV1 + d * DAY_MS - 10 * MIN, 100.0 + d as f64))
            .collect();
        write(&s, "daily", &days);
        // Data only after the period starts: a new meter.
        write(&s, "new", &[(NOV1 + 3 * DAY_MS, 5.0), (NOV1 + 4 * DAY_MS, 6.5)]);
        // A meter that never reported.
        s.checkpoint().unwrap();

        // Nov 1-8 (to = Nov 9 00:00): reads at Oct 31 23:50 and Nov 8 23:50, both normal.
        let b = bill(&s, "daily", NOV1, NOV1 + 8 * DAY_MS);
        assert_eq!(b.start.map(|r| r.value), Some(100.0));
        assert_eq!(b.end.map(|r| r.value), Some(108.0));
        assert_eq!(b.consumption, Some(8.0));
        assert!(!b.estimated);
        // Read on Nov 1, 6, 7 and 8 only (the Oct 31 23:50 read is before the period).
        assert_eq!((b.days, b.missing_days), (8, 4));
        // Ending on Nov 6 00:00: the end read is Nov 1 23:50, four days early: estimated.
        let b = bill(&s, "daily", NOV1, NOV1 + 5 * DAY_MS);
        assert!(b.estimated);
        assert_eq!(b.end.map(|r| r.value), Some(101.0));

        let b = bill(&s, "new", NOV1, NOV1 + 8 * DAY_MS);
        assert_eq!(b.start.map(|r| r.value), Some(5.0), "starts at its first reading");
        assert_eq!(b.consumption, Some(1.5));
        assert!(b.estimated, "the start read is three days into the period");

        let b = bill(&s, "silent", NOV1, NOV1 + 8 * DAY_MS);
        assert_eq!((b.start, b.consumption, b.missing_days), (None, None, 8));
        assert_eq!(note(&b, Lang::Zh), "无读数");
    }

    #[test]
    fn dates_are_midnight_in_china_and_periods_are_checked() {
        assert_eq!(parse_time("2026-11-01"), Ok(NOV1));
        assert_eq!(parse_time("2026-10-31T16:00:00Z"), Ok(NOV1));
        assert_eq!(parse_time(&NOV1.to_string()), Ok(NOV1));
        assert!(parse_time("2026-13-01").is_err());
        assert!(Period::new(NOV1, NOV1).is_err());
        assert!(Period::new(NOV1, NOV1 + 401 * DAY_MS).unwrap_err().contains("400 days"));
        assert_eq!(local_time(NOV1), "2026-11-01 00:00");
    }

    #[test]
    fn the_csv_has_a_bom_chinese_or_english_headers_and_quotes_what_it_must() {
        let b = MeterBill {
            meter: "m-1".into(),
            site: "dongcun".into(),
            site_name: "东村, 一组".into(),
            start: Some(Read { ts: NOV1, value: 10.0 }),
            end: Some(Read { ts: NOV1 + DAY_MS, value: 12.25 }),
            consumption: Some(2.25),
            estimated: false,
            replaced: 1,
            rolled_over: 0,
            missing_days: 0,
            days: 1,
        };
        let p = Period::new(NOV1, NOV1 + DAY_MS).unwrap();
        let zh = csv_of(std::slice::from_ref(&b), p, Lang::Zh);
        assert!(zh.starts_with("\u{feff}户号,表号,村,起度时间,起度(m³),止度时间,止度(m³),用水量(m³),"), "{zh}");
        assert!(zh.contains("\r\nm-1,m-1,\"东村, 一组\",2026-11-01 00:00,10.000,2026-11-02 00:00,12.250,2.250,否,1,0,0,1,换表1次\r\n"), "{zh}");
        let en = csv_of(&[b], p, Lang::En);
        assert!(en.starts_with("\u{feff}Account,Meter,Village,Start read time,"), "{en}");
        assert!(en.contains(",no,1,0,0,1,meter replaced 1x\r\n"), "{en}");
    }
}
