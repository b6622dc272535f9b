//! Time in ingest: its clock, and times in the API (RFC 3339 out, RFC 3339 or
//! milliseconds since the epoch in).
//!
//! At the bottom of ingest's module graph: every module may use it, it uses none.

use std::sync::Arc;

use protocol::Timestamp;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Where ingest's clock comes from (tests and accelerated simulations pass their own).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-23T13:15:38.123Z`.
pub fn rfc3339(ts: Timestamp) -> String {
    let nanos = i128::from(ts.0) * 1_000_000;
    match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => {
            let (y, mo, d) = (t.year(), u8::from(t.month()), t.day());
            format!("{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", t.hour(), t.minute(), t.second(), t.millisecond())
        }
        Err(_) => ts.0.to_string(),
    }
}

/// Parses `2026-11-23T13:15:38Z`, `2026-11-23T21:15:38+08:00`, or milliseconds.
pub fn parse(text: &str) -> Result<Timestamp, String> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(Timestamp(ms));
    }
    OffsetDateTime::parse(text, &Rfc3339)
        .map(|t| Timestamp(i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)))
        .map_err(|e| {
            format!("'{text}' is not an RFC 3339 time (2026-11-23T13:15:38Z) or milliseconds since the epoch: {e}")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_through_rfc3339() {
        let ts = Timestamp(1_763_903_738_123);
        assert_eq!(rfc3339(ts), "2025-11-23T13:15:38.123Z");
        assert_eq!(parse(&rfc3339(ts)), Ok(ts));
        assert_eq!(parse("2025-11-23T21:15:38.123+08:00"), Ok(ts));
        assert_eq!(parse("1763903738123"), Ok(ts));
        assert!(parse("yesterday").unwrap_err().contains("RFC 3339"));
    }
}
