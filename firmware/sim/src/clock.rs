//! Simulated time: China Standard Time helpers and the wall-to-sim clock.
//!
//! Sim time is a [`protocol::Timestamp`] (ms since the Unix epoch, UTC). Diurnal rhythms
//! (household demand, milkings, barn climate, routine broadcasts) follow local time in
//! China Standard Time, UTC+8 all year (no daylight saving).
//!
//! The [`Clock`] maps wall time to sim time at a speed factor once serving starts, and
//! manual [`Clock::shift`]s (from `County::advance`) move its anchor so the two ways of
//! moving time add up instead of fighting: after `advance(1 h)` the ticker goes on from
//! the new time, it does not wait an hour of wall time to catch up.
//!
//! Wall time is `tokio::time::Instant`, so tests can pause and advance it instead of
//! sleeping.

use tokio::time::Instant;

use protocol::Timestamp;

/// UTC+8 in milliseconds.
pub const CST_OFFSET_MS: i64 = 8 * 3_600_000;
/// Milliseconds per day.
pub const DAY_MS: i64 = 86_400_000;

/// Local (CST) hours since midnight, in `[0, 24)`.
pub fn local_hours(ts: Timestamp) -> f64 {
    (ts.0 + CST_OFFSET_MS).rem_euclid(DAY_MS) as f64 / 3_600_000.0
}

/// Local (CST) day number since 1970-01-01.
pub fn local_day(ts: Timestamp) -> i64 {
    (ts.0 + CST_OFFSET_MS).div_euclid(DAY_MS)
}

/// UTC timestamp of local midnight starting local day `day`.
pub fn local_midnight(day: i64) -> i64 {
    day * DAY_MS - CST_OFFSET_MS
}

/// Local (CST) date of `ts` as YYYYMMDD, as meters write their frozen-data dates.
pub fn local_date(ts: Timestamp) -> u32 {
    // Days since 1970-01-01 to a civil date (proleptic Gregorian, eras of 400 years).
    let z = local_day(ts) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    u32::try_from(year * 10_000 + month * 100 + day).unwrap_or(0)
}

/// Fractional day of the year (0 = 1 January), close enough for seasons (365.25-day
/// years from the epoch; off by under a day).
pub fn day_of_year(ts: Timestamp) -> f64 {
    let days = (ts.0 + CST_OFFSET_MS) as f64 / DAY_MS as f64;
    days.rem_euclid(365.2425)
}

/// Maps wall time to sim time while serving.
#[derive(Debug, Clone)]
pub(crate) struct Clock {
    /// Wall instant and sim time (ms) that correspond, once serving started.
    anchor: Option<(Instant, f64)>,
    /// Sim seconds per wall second.
    speed: f64,
}

impl Clock {
    pub(crate) fn new(speed: f64) -> Clock {
        let speed = if speed.is_finite() && speed >= 0.0 { speed } else { 0.0 };
        Clock { anchor: None, speed }
    }

    /// Starts following wall time from sim time `now_ms`.
    pub(crate) fn start(&mut self, wall: Instant, now_ms: i64) {
        self.anchor = Some((wall, now_ms as f64));
    }

    /// Moves the sim side of the anchor by `ms` (a manual advance).
    pub(crate) fn shift(&mut self, ms: i64) {
        if let Some((_, sim)) = &mut self.anchor {
            *sim += ms as f64;
        }
    }

    /// Sim time that wall instant `wall` maps to, if the clock runs.
    pub(crate) fn target(&self, wall: Instant) -> Option<i64> {
        let (w0, s0) = self.anchor?;
        let elapsed = wall.saturating_duration_since(w0).as_secs_f64();
        Some((s0 + elapsed * 1000.0 * self.speed) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn local_time_is_utc_plus_eight() {
        // 2024-06-01T00:00:00Z is 08:00 in Beijing.
        let ts = Timestamp(1_717_200_000_000);
        assert!((local_hours(ts) - 8.0).abs() < 1e-9);
        assert_eq!(local_midnight(local_day(ts)), 1_717_200_000_000 - 8 * 3_600_000);
        let doy = day_of_year(ts);
        assert!((150.0..154.0).contains(&doy), "{doy}");
    }

    #[test]
    fn local_dates_turn_at_beijing_midnight_across_month_year_and_leap_day() {
        // 2024-06-01T00:00:00Z is 08:00 on 1 June in Beijing; 15:59:59Z the last second.
        assert_eq!(local_date(Timestamp(1_717_200_000_000)), 20240601);
        assert_eq!(local_date(Timestamp(1_717_200_000_000 + 16 * 3_600_000 - 1_000)), 20240601);
        assert_eq!(local_date(Timestamp(1_717_200_000_000 + 16 * 3_600_000)), 20240602);
        // 2024-02-29 (leap day, day 19,782) and the turn of 2025 (2024-12-31T16:00:00Z is
        // local midnight of 1 January).
        assert_eq!(local_date(Timestamp(local_midnight(19_782))), 20240229);
        assert_eq!(local_date(Timestamp(1_735_660_800_000)), 20250101);
        assert_eq!(local_date(Timestamp(1_735_660_800_000 - 1)), 20241231);
        assert_eq!(local_date(Timestamp(0)), 19700101);
    }

    #[test]
    fn the_clock_follows_wall_time_at_its_speed_and_keeps_manual_shifts() {
        let mut c = Clock::new(60.0);
        let w0 = Instant::now();
        assert_eq!(c.target(w0), None);
        c.start(w0, 1_000);
        assert_eq!(c.target(w0 + Duration::from_secs(2)), Some(121_000));
        c.shift(3_600_000);
        assert_eq!(c.target(w0 + Duration::from_secs(2)), Some(3_721_000));
    }
}
