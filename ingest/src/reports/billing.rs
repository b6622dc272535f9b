//! Billing export: for each household meter, the reads a billing clerk bills a period on
//! (start and end read with their times), the water used between them, and flags that say
//! where the figure needs a second look. `GET /api/v1/reports/billing` answers JSON, CSV
//! (UTF-8 with a byte-order mark, so Excel opens the Chinese headers right) or XLSX
//! (`rust_xlsxwriter`), headed in Chinese or, on request, English.
//!
//! Every figure of a line is [`water::meter_use`]'s, the function the water balance's billed
//! metered consumption is made of: the same counter semantics (`crate::rules::counter`:
//! rollover, replacement, gaps), the same hour roll-ups, the same local days. This module
//! only chooses the meters, adds their village, and writes the formats; so a district's
//! billed lines add up to its `billed_metered_m3` (less the district's estimate for meters
//! with no reading at all, which a bill leaves blank).
//!
//! Invariants:
//! - household meters only: a district's inlets are never billed
//!   ([`crate::inventory::Inventory::meter_role`]);
//! - tenant-scoped: only meters of sites the [`Reader`] may see; another tenant's district
//!   or site is "not found";
//! - a meter with no reading is a line with blank reads and consumption and a note, never 0.

use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use protocol::DeviceKind;
use serde::{Deserialize, Serialize};

use super::model::{MeterUse, Period};
use super::period::{self, Span, UTC_OFFSET_HOURS};
use super::{ReportError, ReportsState, districts, water};
use crate::auth::Reader;
use crate::error::ApiError;
use crate::inventory::{Inventory, MeterRole};

/// An estimate at least this large (m³, half a litre) flags a line as estimated: below it
/// the figure shows the same to the litre.
pub const ESTIMATE_SHOWN_M3: f64 = 0.0005;

/// One household meter's line of the bill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BillLine {
    /// Its site (village) id.
    pub site: String,
    /// The site's name.
    pub site_name: String,
    /// The district metered area it is a customer of, if any.
    pub district: Option<String>,
    /// Reads, consumption and flags ([`water::meter_use`]).
    #[serde(flatten)]
    pub usage: MeterUse,
}

impl BillLine {
    /// Whether the figure includes an estimate worth showing.
    pub fn estimated(&self) -> bool {
        self.usage.estimated_m3 >= ESTIMATE_SHOWN_M3
    }
}

/// The bill's sums, for the clerk's check.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BillingTotals {
    /// Lines.
    pub meters: u32,
    /// Consumption of the lines that have one (m³).
    pub consumption_m3: f64,
    /// Part of it that is estimated (m³).
    pub estimated_m3: f64,
    /// Lines flagged estimated.
    pub estimated: u32,
    /// Lines whose meter was replaced.
    pub replaced: u32,
    /// Lines whose counter rolled over.
    pub rolled_over: u32,
    /// Lines with at least one day without a reading.
    pub with_missing_days: u32,
    /// Lines without any reading (blank consumption).
    pub without_reading: u32,
}

/// `GET /api/v1/reports/billing` as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BillingReport {
    /// The period billed.
    pub period: Period,
    /// One line per household meter, by site then meter id.
    pub meters: Vec<BillLine>,
    /// Sums.
    pub totals: BillingTotals,
    /// How the figures were read, for the footnote.
    pub method: String,
}

/// Which meters a bill covers.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Customers of this district metered area only.
    pub district: Option<String>,
    /// Meters of this site only.
    pub site: Option<String>,
}

/// A household meter and where it is, as a bill line names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HouseholdMeter {
    /// Device id.
    pub meter: String,
    /// Site id.
    pub site: String,
    /// Site name.
    pub site_name: String,
    /// The district metered area it is a customer of, if any.
    pub district: Option<String>,
}

/// The household meters a reader may see under `filter`, by site then id. A district or
/// site the reader may not see is not found.
pub fn household_meters(
    inventory: &Inventory,
    reader: &Reader,
    filter: &Filter,
) -> Result<Vec<HouseholdMeter>, ReportError> {
    let sites: std::collections::HashMap<String, crate::inventory::Site> =
        inventory.sites().into_iter().map(|s| (s.id.clone(), s)).collect();
    if let Some(d) = &filter.district
        && districts::resolve(inventory, reader, Some(d)).is_empty()
    {
        return Err(ReportError::NotFound(format!("no district '{d}'")));
    }
    if let Some(site) = &filter.site
        && !sites.get(site).is_some_and(|s| reader.may_see(&s.tenant))
    {
        return Err(ReportError::NotFound(format!("no site '{site}'")));
    }
    let mut out = Vec::new();
    for d in inventory.devices() {
        if d.kind != DeviceKind::WaterMeter || filter.site.as_ref().is_some_and(|s| *s != d.site) {
            continue;
        }
        let Some(site) = sites.get(&d.site).filter(|s| reader.may_see(&s.tenant)) else { continue };
        let district = match inventory.meter_role(&d.id) {
            Some((_, MeterRole::Inlet)) => continue,
            Some((district, _)) => Some(district),
            None => None,
        };
        if filter.district.is_some() && filter.district != district {
            continue;
        }
        out.push(HouseholdMeter { meter: d.id, site: site.id.clone(), site_name: site.name.clone(), district });
    }
    out.sort_by(|a, b| (&a.site, &a.meter).cmp(&(&b.site, &b.meter)));
    Ok(out)
}

/// The bill of every household meter a reader may see, for `span`.
pub fn report(
    state: &ReportsState,
    reader: &Reader,
    span: &Span,
    filter: &Filter,
) -> Result<BillingReport, ReportError> {
    let modulus = water::modulus(state);
    let mut lines = Vec::new();
    for m in household_meters(&state.inventory, reader, filter)? {
        let usage = water::meter_use(&state.store, &m.meter, span, modulus)?;
        lines.push(BillLine { site: m.site, site_name: m.site_name, district: m.district, usage });
    }
    let count = |f: &dyn Fn(&BillLine) -> bool| lines.iter().filter(|l| f(l)).count() as u32;
    let totals = BillingTotals {
        meters: lines.len() as u32,
        consumption_m3: lines.iter().filter_map(|l| l.usage.consumption_m3).sum(),
        estimated_m3: lines.iter().map(|l| l.usage.estimated_m3).sum(),
        estimated: count(&|l| l.estimated()),
        replaced: count(&|l| l.usage.replaced),
        rolled_over: count(&|l| l.usage.rolled_over),
        with_missing_days: count(&|l| l.usage.missing_days > 0),
        without_reading: count(&|l| l.usage.consumption_m3.is_none()),
    };
    Ok(BillingReport {
        period: span.period(),
        meters: lines,
        totals,
        method: "volume_total hour roll-ups through the rules' counter semantics (water::meter_use)".into(),
    })
}

// ---- the API -------------------------------------------------------------------------

/// The query of `GET /api/v1/reports/billing`.
#[derive(Debug, Deserialize)]
pub struct BillingQuery {
    /// `month` (default) or `day`, as every report.
    period: Option<String>,
    /// `YYYY-MM` or `YYYY-MM-DD`; this month when absent.
    date: Option<String>,
    /// A billing cycle that is not a calendar month: its first day (`YYYY-MM-DD`)...
    from: Option<String>,
    /// ... and the day after its last (the next cycle's `from`).
    to: Option<String>,
    /// Customers of this district metered area only.
    district: Option<String>,
    /// Meters of this site only.
    site: Option<String>,
    /// `json` (default), `csv` or `xlsx`.
    format: Option<String>,
    /// Column headers: `zh` (default) or `en`.
    lang: Option<String>,
}

/// The output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// [`BillingReport`].
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

/// The span a billing query asks for: `from`/`to` dates, else `period`/`date` (a month
/// by default).
pub fn span_of(q: &BillingQuery, now: i64) -> Result<Span, ReportError> {
    match (&q.from, &q.to) {
        (Some(from), Some(to)) => period::range(from, to),
        (None, None) => period::parse(Some(q.period.as_deref().unwrap_or("month")), q.date.as_deref(), now),
        _ => Err(ReportError::BadRequest("from and to go together".into())),
    }
}

/// `GET /api/v1/reports/billing?period=month&date=2026-11&district=&site=&format=json|csv|xlsx&lang=zh|en`
/// (or `from=2026-11-03&to=2026-12-03` for a cycle that is not a calendar month).
pub async fn billing(
    State(state): State<ReportsState>,
    reader: Reader,
    Query(q): Query<BillingQuery>,
) -> Result<Response, ApiError> {
    let span = span_of(&q, (state.clock)().0)?;
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
    let filter = Filter { district: q.district.clone(), site: q.site.clone() };
    let bill = tokio::task::spawn_blocking(move || report(&state, &reader, &span, &filter))
        .await
        .map_err(|e| ApiError::Internal(format!("billing task: {e}")))??;
    let mut name = format!("billing-{}", bill.period.label.replace("..", "-to-"));
    if let Some(scope) = q.district.as_ref().or(q.site.as_ref()) {
        name = format!("{name}-{scope}");
    }
    Ok(match format {
        Format::Json => axum::Json(bill).into_response(),
        Format::Csv => download(csv_of(&bill, lang).into_bytes(), "text/csv; charset=utf-8", &format!("{name}.csv")),
        Format::Xlsx => {
            let bytes = xlsx_of(&bill, lang).map_err(|e| ApiError::Internal(format!("xlsx: {e}")))?;
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
pub const COLUMNS: [(&str, &str); 15] = [
    ("户号", "Account"),
    ("表号", "Meter"),
    ("村", "Village"),
    ("起度时间", "Start read time"),
    ("起度(m³)", "Start read (m³)"),
    ("止度时间", "End read time"),
    ("止度(m³)", "End read (m³)"),
    ("用水量(m³)", "Consumption (m³)"),
    ("其中估算(m³)", "Of which estimated (m³)"),
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

fn offset_ms() -> i64 {
    (UTC_OFFSET_HOURS * 3_600_000.0) as i64
}

/// Ms since the epoch of an RFC 3339 time of the report.
fn ms_of(rfc3339: &str) -> Option<i64> {
    crate::time::parse(rfc3339).ok().map(|t| t.0)
}

/// `2026-11-01 08:00`, China Standard Time.
fn local_time(ts: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts + offset_ms()) * 1_000_000) {
        Ok(t) => format!("{:04}-{:02}-{:02} {:02}:{:02}", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute()),
        Err(_) => ts.to_string(),
    }
}

fn yes_no(v: bool, lang: Lang) -> &'static str {
    match (v, lang) {
        (true, Lang::Zh) => "是",
        (false, Lang::Zh) => "否",
        (true, Lang::En) => "yes",
        (false, Lang::En) => "no",
    }
}

/// A note for people: what the flags say, in words.
fn note(l: &BillLine, lang: Lang) -> String {
    let u = &l.usage;
    let zh = lang == Lang::Zh;
    let mut parts = Vec::new();
    if u.consumption_m3.is_none() {
        parts.push(if zh { "无读数".to_string() } else { "no reading".to_string() });
    }
    if l.estimated() {
        parts.push(if zh {
            format!("含估算{:.3} m³（结算时点前后无读数）", u.estimated_m3)
        } else {
            format!("{:.3} m³ estimated (no read at a boundary)", u.estimated_m3)
        });
    }
    if u.replaced {
        parts.push(if zh { "换表".to_string() } else { "meter replaced".to_string() });
    }
    if u.rolled_over {
        parts.push(if zh { "表码翻转".to_string() } else { "counter rolled over".to_string() });
    }
    if u.missing_days > 0 && u.consumption_m3.is_some() {
        parts.push(if zh {
            format!("缺数{}天", u.missing_days)
        } else {
            format!("{} days without reads", u.missing_days)
        });
    }
    parts.join(if zh { "；" } else { "; " })
}

/// Rounds a volume for people: litres (3 decimals of m³), which is what meters resolve.
fn m3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
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
pub fn csv_of(bill: &BillingReport, lang: Lang) -> String {
    let mut out = String::from('\u{feff}');
    csv_row(&mut out, header(lang));
    for l in &bill.meters {
        let cells = row_text(l, bill.period.days, lang);
        csv_row(&mut out, cells.iter().map(String::as_str));
    }
    out
}

/// A line's cells as text, in [`COLUMNS`] order.
fn row_text(l: &BillLine, days: u32, lang: Lang) -> Vec<String> {
    let u = &l.usage;
    let time = |at: &Option<String>| at.as_deref().and_then(ms_of).map(local_time).unwrap_or_default();
    let value = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
    vec![
        u.meter.clone(),
        u.meter.clone(),
        l.site_name.clone(),
        time(&u.start_at),
        value(u.start_read_m3),
        time(&u.end_at),
        value(u.end_read_m3),
        value(u.consumption_m3),
        value(u.consumption_m3.map(|_| u.estimated_m3)),
        yes_no(l.estimated(), lang).into(),
        yes_no(u.replaced, lang).into(),
        yes_no(u.rolled_over, lang).into(),
        u.missing_days.to_string(),
        days.to_string(),
        note(l, lang),
    ]
}

/// The workbook: sheet 1 the bill (times as Excel date-times in China Standard Time,
/// volumes as numbers), sheet 2 what the columns and flags mean.
pub fn xlsx_of(bill: &BillingReport, lang: Lang) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
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
    let widths = [22.0, 22.0, 12.0, 17.0, 12.0, 17.0, 12.0, 12.0, 12.0, 8.0, 8.0, 8.0, 10.0, 8.0, 40.0];
    for (c, w) in widths.iter().enumerate() {
        ws.set_column_width(c as u16, *w)?;
    }
    ws.set_freeze_panes(1, 0)?;
    for (i, l) in bill.meters.iter().enumerate() {
        let u = &l.usage;
        let r = (i + 1) as u32;
        ws.write_string(r, 0, &u.meter)?;
        ws.write_string(r, 1, &u.meter)?;
        ws.write_string(r, 2, &l.site_name)?;
        for (col, at, read) in [(3u16, &u.start_at, u.start_read_m3), (5u16, &u.end_at, u.end_read_m3)] {
            if let (Some(ts), Some(read)) = (at.as_deref().and_then(ms_of), read) {
                let local = ExcelDateTime::from_timestamp((ts + offset_ms()).div_euclid(1000))?;
                ws.write_datetime_with_format(r, col, &local, &when)?;
                ws.write_number_with_format(r, col + 1, m3(read), &volume)?;
            }
        }
        if let Some(c) = u.consumption_m3 {
            ws.write_number_with_format(r, 7, m3(c), &volume)?;
            ws.write_number_with_format(r, 8, m3(u.estimated_m3), &volume)?;
        }
        ws.write_string(r, 9, yes_no(l.estimated(), lang))?;
        ws.write_string(r, 10, yes_no(u.replaced, lang))?;
        ws.write_string(r, 11, yes_no(u.rolled_over, lang))?;
        ws.write_number(r, 12, f64::from(u.missing_days))?;
        ws.write_number(r, 13, f64::from(bill.period.days))?;
        ws.write_string(r, 14, note(l, lang))?;
    }
    let about = wb.add_worksheet();
    about.set_name(if zh { "说明" } else { "Notes" })?;
    about.set_column_width(0, 16.0)?;
    about.set_column_width(1, 90.0)?;
    let (from, to) = (ms_of(&bill.period.from).unwrap_or(0), ms_of(&bill.period.to).unwrap_or(0));
    let lines: Vec<(String, String)> = if zh {
        vec![
            ("结算期".into(), format!("{} 至 {}（北京时间）", local_time(from), local_time(to))),
            (
                "起度 / 止度".into(),
                "结算期起点 / 终点时刻所在整点之前最近的一次读数（时间为该读数所在小时的结束时刻）；上一期的止度即下一期的起度。".into(),
            ),
            (
                "用水量".into(),
                "结算期起点到终点的表码增量：表码翻转计为用水，换表后新表读数计为换表以来的用水；与水平衡报表的计费用水量为同一算法。".into(),
            ),
            ("其中估算 / 估算".into(), "结算时点前后无读数时，按前后读数插补或按该表平均用水外推的部分。".into()),
            ("缺数天数".into(), "结算期内没有任何读数的天数（北京时间日期）。".into()),
        ]
    } else {
        vec![
            ("Period".into(), format!("{} to {} (China Standard Time)", local_time(from), local_time(to))),
            ("Start / end read".into(), "The newest reading in the whole hours before the period's start / end (its time is the end of that reading's hour). One period's end read is the next one's start read.".into()),
            ("Consumption".into(), "The counter's rise from the period's start to its end: a rollover of the register is use; after a replacement the new meter's total is the use since. The same figure as the water balance's billed consumption.".into()),
            ("Estimated".into(), "Where no reading was taken at a boundary: interpolated between the reads either side, or extrapolated at the meter's own mean rate.".into()),
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
    use protocol::DeviceKind::WaterMeter;

    use super::*;
    use crate::auth::{Principal, Role};
    use crate::reports::period::{DAY_MS, HOUR_MS};
    use crate::reports::testing::{APRIL_7, state, write};

    fn week() -> Span {
        period::range("2025-04-07", "2025-04-14").unwrap()
    }

    #[test]
    fn a_bill_line_is_the_water_balances_meter_use_and_inlets_are_not_billed() {
        let (s, _dir) =
            state(&[("inlet", WaterMeter, "village"), ("m-1", WaterMeter, "village"), ("m-2", WaterMeter, "village")]);
        let from = APRIL_7 - 2 * DAY_MS;
        let to = APRIL_7 + 9 * DAY_MS;
        write(&s, "inlet", "volume_total", from, to, HOUR_MS, |t| 1000.0 + (t - from) as f64 / 1e5);
        // m-1 turns 0.01 m³ an hour; m-2 never reports.
        write(&s, "m-1", "volume_total", from, to, HOUR_MS, |t| 5.0 + 0.01 * ((t - from) / HOUR_MS) as f64);
        s.store.checkpoint().unwrap();
        let bill = report(&s, &Reader(None), &week(), &Filter::default()).unwrap();
        let ids: Vec<&str> = bill.meters.iter().map(|l| l.usage.meter.as_str()).collect();
        assert_eq!(ids, ["m-1", "m-2"], "the inlet is no household meter");
        let m1 = &bill.meters[0];
        assert_eq!(m1.usage, water::meter_use(&s.store, "m-1", &week(), water::DEFAULT_MODULUS).unwrap());
        assert!((m1.usage.consumption_m3.unwrap() - 0.01 * 7.0 * 24.0).abs() < 1e-9, "{m1:?}");
        assert_eq!(m1.district.as_deref(), Some("village"));
        let m2 = &bill.meters[1];
        assert_eq!((m2.usage.consumption_m3, m2.usage.missing_days), (None, 7), "blank, not 0");
        assert_eq!(note(m2, Lang::Zh), "无读数");
        assert_eq!((bill.totals.meters, bill.totals.without_reading), (2, 1));
        assert_eq!(bill.period.kind, crate::reports::model::PeriodKind::Range);

        // One district: its customers; a district or site of another tenant: not found.
        let one = Filter { district: Some("village".into()), site: None };
        assert_eq!(report(&s, &Reader(None), &week(), &one).unwrap().meters.len(), 2);
        let dairy = Reader(Some(Principal::new("d", Role::Viewer, vec!["dairy".into()])));
        assert!(matches!(report(&s, &dairy, &week(), &one), Err(ReportError::NotFound(_))));
        let site = Filter { district: None, site: Some("village".into()) };
        assert!(matches!(report(&s, &dairy, &week(), &site), Err(ReportError::NotFound(_))));
        assert!(report(&s, &dairy, &week(), &Filter::default()).unwrap().meters.is_empty());
    }

    #[test]
    fn the_csv_has_a_bom_chinese_or_english_headers_and_quotes_what_it_must() {
        let line = BillLine {
            site: "dongcun".into(),
            site_name: "东村, 一组".into(),
            district: None,
            usage: MeterUse {
                meter: "m-1".into(),
                start_read_m3: Some(10.0),
                start_at: Some("2025-04-06T16:00:00.000Z".into()),
                end_read_m3: Some(12.25),
                end_at: Some("2025-04-07T16:00:00.000Z".into()),
                consumption_m3: Some(2.25),
                estimated_m3: 0.0,
                replaced: true,
                rolled_over: false,
                missing_days: 0,
                hours_with_data: 24,
            },
        };
        let bill = BillingReport {
            period: Span::day(APRIL_7).period(),
            meters: vec![line],
            totals: BillingTotals::default(),
            method: String::new(),
        };
        let zh = csv_of(&bill, Lang::Zh);
        assert!(zh.starts_with("\u{feff}户号,表号,村,起度时间,起度(m³),止度时间,止度(m³),用水量(m³),"), "{zh}");
        assert!(
            zh.contains("\r\nm-1,m-1,\"东村, 一组\",2025-04-07 00:00,10.000,2025-04-08 00:00,12.250,2.250,0.000,否,是,否,0,1,换表\r\n"),
            "{zh}"
        );
        let en = csv_of(&bill, Lang::En);
        assert!(en.starts_with("\u{feff}Account,Meter,Village,Start read time,"), "{en}");
        assert!(en.contains(",no,yes,no,0,1,meter replaced\r\n"), "{en}");
        let xlsx = xlsx_of(&bill, Lang::Zh).unwrap();
        assert_eq!(&xlsx[..2], b"PK");
    }
}
