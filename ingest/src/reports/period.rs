//! Local days and months as UTC spans: a report's period.
//!
//! The county keeps one local time (China Standard Time, UTC+8, no daylight saving), so a
//! local day is 24 h and starts at a whole UTC hour: the store's hour roll-ups line up
//! with it.

use super::ReportError;
use super::model::{Period, PeriodKind};
use crate::time::rfc3339;
use protocol::Timestamp;

/// China Standard Time.
pub const UTC_OFFSET_HOURS: f64 = 8.0;
/// One hour (ms).
pub const HOUR_MS: i64 = 3_600_000;
/// One day (ms).
pub const DAY_MS: i64 = 86_400_000;

/// A report's span in UTC milliseconds, with its local days.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// Day or month.
    pub kind: PeriodKind,
    /// What was asked for (`2025-04-07`, `2025-04`).
    pub label: String,
    /// Start (local midnight, ms since the epoch).
    pub from: i64,
    /// End, exclusive.
    pub to: i64,
}

impl Span {
    /// The starts of its local days.
    pub fn days(&self) -> impl Iterator<Item = i64> + '_ {
        (0..((self.to - self.from) / DAY_MS)).map(|d| self.from + d * DAY_MS)
    }

    /// The JSON form.
    pub fn period(&self) -> Period {
        Period {
            kind: self.kind,
            label: self.label.clone(),
            from: rfc3339(Timestamp(self.from)),
            to: rfc3339(Timestamp(self.to)),
            utc_offset_hours: UTC_OFFSET_HOURS,
            days: ((self.to - self.from) / DAY_MS) as u32,
        }
    }

    /// One local day starting at `from`.
    pub fn day(from: i64) -> Span {
        Span { kind: PeriodKind::Day, label: local_date(from), from, to: from + DAY_MS }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of days since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

fn offset_ms() -> i64 {
    (UTC_OFFSET_HOURS * HOUR_MS as f64) as i64
}

/// Local midnight of a civil date, as UTC ms.
pub fn local_midnight(y: i64, m: i64, d: i64) -> i64 {
    days_from_civil(y, m, d) * DAY_MS - offset_ms()
}

/// Start of the local day holding `ts`.
pub fn day_start(ts: i64) -> i64 {
    (ts + offset_ms()).div_euclid(DAY_MS) * DAY_MS - offset_ms()
}

/// The local date (`YYYY-MM-DD`) of `ts`.
pub fn local_date(ts: i64) -> String {
    let (y, m, d) = civil_from_days((ts + offset_ms()).div_euclid(DAY_MS));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Parses `period` (`day` or `month`) and `date` (`YYYY-MM-DD` or `YYYY-MM`; a day's
/// `YYYY-MM-DD` also names its month). Without a date: today (or this month) at `now`.
pub fn parse(period: Option<&str>, date: Option<&str>, now: i64) -> Result<Span, ReportError> {
    let kind = match period.unwrap_or("day") {
        "day" => PeriodKind::Day,
        "month" => PeriodKind::Month,
        other => return Err(ReportError::BadRequest(format!("period '{other}' is not day or month"))),
    };
    let today = local_date(now);
    let text = date.unwrap_or(&today);
    let bad = || ReportError::BadRequest(format!("date '{text}' is not YYYY-MM-DD or YYYY-MM"));
    let parts: Vec<&str> = text.split('-').collect();
    let num = |s: &str, len: usize| -> Result<i64, ReportError> {
        if s.len() != len || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse::<i64>().map_err(|_| bad())
    };
    let (y, m) = match parts.as_slice() {
        [y, m] | [y, m, _] => (num(y, 4)?, num(m, 2)?),
        _ => return Err(bad()),
    };
    if !(1..=12).contains(&m) || y < 1970 {
        return Err(bad());
    }
    let month_start = local_midnight(y, m, 1);
    let next_month = if m == 12 { local_midnight(y + 1, 1, 1) } else { local_midnight(y, m + 1, 1) };
    match (kind, parts.as_slice()) {
        (PeriodKind::Month, _) => Ok(Span { kind, label: format!("{y:04}-{m:02}"), from: month_start, to: next_month }),
        (PeriodKind::Day, [_, _, d]) => {
            let d = num(d, 2)?;
            let from = local_midnight(y, m, d);
            if d < 1 || from >= next_month {
                return Err(bad());
            }
            Ok(Span::day(from))
        }
        (_, _) => Err(ReportError::BadRequest(format!("period=day needs date=YYYY-MM-DD, not '{text}'"))),
    }
}

/// Longest [`range`], in days (a billing cycle is a month or two; a year and a bit is the
/// most an export covers).
pub const MAX_RANGE_DAYS: i64 = 400;

/// The local days from `from` to `to` (`YYYY-MM-DD`; `to` exclusive, so one cycle ends
/// where the next starts): a period that is not a calendar month, for billing cycles.
pub fn range(from: &str, to: &str) -> Result<Span, ReportError> {
    let (a, b) = (parse(Some("day"), Some(from), 0)?, parse(Some("day"), Some(to), 0)?);
    if a.from >= b.from {
        return Err(ReportError::BadRequest(format!("from ({from}) must be before to ({to})")));
    }
    if b.from - a.from > MAX_RANGE_DAYS * DAY_MS {
        return Err(ReportError::BadRequest(format!("a period is at most {MAX_RANGE_DAYS} days")));
    }
    Ok(Span {
        kind: PeriodKind::Range,
        label: format!("{}..{}", a.label, local_date(b.from - DAY_MS)),
        from: a.from,
        to: b.from,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2025-04-07 00:00 in Beijing.
    const APRIL_7: i64 = 1_743_955_200_000;

    #[test]
    fn a_local_day_starts_at_midnight_beijing_time() {
        let s = parse(Some("day"), Some("2025-04-07"), 0).unwrap();
        assert_eq!((s.from, s.to), (APRIL_7, APRIL_7 + DAY_MS));
        assert_eq!(local_date(APRIL_7 + DAY_MS - 1), "2025-04-07");
        assert_eq!(day_start(APRIL_7 + 5 * HOUR_MS), APRIL_7);
        assert_eq!(s.period().from, "2025-04-06T16:00:00.000Z");
    }

    #[test]
    fn a_month_has_its_calendar_days_and_december_ends_in_january() {
        let s = parse(Some("month"), Some("2024-02"), 0).unwrap();
        assert_eq!(s.days().count(), 29);
        let dec = parse(Some("month"), Some("2024-12-15"), 0).unwrap();
        assert_eq!((dec.label.as_str(), dec.days().count()), ("2024-12", 31));
        assert_eq!(local_date(dec.to), "2025-01-01");
    }

    #[test]
    fn bad_dates_are_refused_and_a_missing_one_is_today() {
        for (p, d) in [("day", "2025-04"), ("day", "2025-02-30"), ("week", "2025-04-07"), ("day", "25-04-07")] {
            assert!(parse(Some(p), Some(d), 0).is_err(), "{p} {d}");
        }
        let today = parse(None, None, APRIL_7 + 10 * HOUR_MS).unwrap();
        assert_eq!(today.from, APRIL_7);
    }

    #[test]
    fn a_range_is_whole_local_days_to_an_exclusive_end() {
        let r = range("2025-04-07", "2025-04-14").unwrap();
        assert_eq!((r.from, r.to, r.days().count()), (APRIL_7, APRIL_7 + 7 * DAY_MS, 7));
        assert_eq!(r.label, "2025-04-07..2025-04-13");
        assert_eq!(r.period().kind, PeriodKind::Range);
        assert!(range("2025-04-07", "2025-04-07").is_err());
        assert!(range("2025-04-07", "2026-05-13").is_err(), "over 400 days");
        assert!(range("2025-04-07", "2026-05-12").is_ok());
    }
}
