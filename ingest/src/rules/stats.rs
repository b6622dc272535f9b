//! Small statistics the rule kinds share: hold timers with hysteresis, running mean and
//! variance, drift charts, trends.
//!
//! Everything here is driven by data time (milliseconds) passed in by the caller, never by
//! a clock of its own, so accelerated simulations and replays behave as real time does.

/// What a condition looks like to the alert manager.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cond {
    /// The condition holds since `since`; its hold time has not passed.
    Pending {
        /// Data time the condition began.
        since: i64,
    },
    /// The condition held for its hold time.
    Firing {
        /// Data time the condition began.
        since: i64,
    },
    /// No condition.
    Clear,
}

impl Cond {
    fn tag(self) -> u8 {
        match self {
            Cond::Pending { .. } => 1,
            Cond::Firing { .. } => 2,
            Cond::Clear => 0,
        }
    }
}

/// A condition with a hold time to raise and a hold time to clear.
///
/// `raise` and `clear` are separate so that hysteresis lives in the caller: between the
/// two limits neither is true and the state stays as it is (except that a pending
/// condition needs `raise` on every sample: a sample that does not raise cancels it).
#[derive(Debug, Clone, Default)]
pub struct Hold {
    since: Option<i64>,
    firing: bool,
    clear_since: Option<i64>,
    reported: Option<u8>,
}

impl Hold {
    /// Feeds one evaluation at data time `now`; returns the condition when it changed
    /// (and on the very first evaluation, so that the alert manager learns the state of
    /// alerts it restored after a restart).
    pub fn step(&mut self, raise: bool, clear: bool, now: i64, for_ms: i64, clear_for_ms: i64) -> Option<Cond> {
        let cond = if self.firing {
            if clear {
                let cs = *self.clear_since.get_or_insert(now);
                if now - cs >= clear_for_ms {
                    self.firing = false;
                    self.since = None;
                    self.clear_since = None;
                    Cond::Clear
                } else {
                    Cond::Firing { since: self.since.unwrap_or(now) }
                }
            } else {
                self.clear_since = None;
                Cond::Firing { since: self.since.unwrap_or(now) }
            }
        } else if raise {
            let since = *self.since.get_or_insert(now);
            if now - since >= for_ms {
                self.firing = true;
                Cond::Firing { since }
            } else {
                Cond::Pending { since }
            }
        } else {
            self.since = None;
            Cond::Clear
        };
        (self.reported != Some(cond.tag())).then(|| {
            self.reported = Some(cond.tag());
            cond
        })
    }

    /// True while the condition holds (pending or firing).
    pub fn active(&self) -> bool {
        self.firing || self.since.is_some()
    }

    /// True while firing.
    pub fn firing(&self) -> bool {
        self.firing
    }

    /// Forces the condition clear (suppressed, or its entity went away).
    pub fn reset(&mut self) -> Option<Cond> {
        self.firing = false;
        self.since = None;
        self.clear_since = None;
        (self.reported != Some(0)).then(|| {
            self.reported = Some(0);
            Cond::Clear
        })
    }
}

/// Welford's running mean and variance.
#[derive(Debug, Clone, Copy, Default)]
pub struct Welford {
    n: u64,
    mean: f64,
    m2: f64,
}

impl Welford {
    /// Adds a sample.
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    /// Samples so far.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// The mean.
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// The sample variance (0 with fewer than two samples).
    pub fn variance(&self) -> f64 {
        if self.n < 2 { 0.0 } else { self.m2 / (self.n - 1) as f64 }
    }
}

/// Tabular CUSUM on standardised values (Montgomery): `k` reference, `h` decision
/// interval, both in sigmas.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cusum {
    /// Upper sum.
    pub hi: f64,
    /// Lower sum.
    pub lo: f64,
}

impl Cusum {
    /// Adds a standardised value; returns (upper, lower) sums.
    pub fn push(&mut self, z: f64, k: f64) -> (f64, f64) {
        self.hi = (self.hi + z - k).max(0.0);
        self.lo = (self.lo - z - k).max(0.0);
        (self.hi, self.lo)
    }

    /// Starts again with a head start of `start` sigmas (fast initial response).
    pub fn restart(&mut self, start: f64) {
        self.hi = start;
        self.lo = start;
    }
}

/// EWMA of standardised values; its limit is `l * sqrt(lambda / (2 - lambda))` (NIST).
#[derive(Debug, Clone, Copy, Default)]
pub struct EwmaChart {
    /// The statistic.
    pub z: f64,
}

impl EwmaChart {
    /// Adds a standardised value; returns the statistic.
    pub fn push(&mut self, x: f64, lambda: f64) -> f64 {
        self.z = lambda * x + (1.0 - lambda) * self.z;
        self.z
    }

    /// The control limit in sigmas of the raw values.
    pub fn limit(lambda: f64, l: f64) -> f64 {
        l * (lambda / (2.0 - lambda)).sqrt()
    }
}

/// Least-squares slope (units per ms) of points; `None` with fewer than three points or
/// no spread in time.
pub fn slope(points: impl Iterator<Item = (i64, f64)> + Clone) -> Option<f64> {
    let n = points.clone().count();
    if n < 3 {
        return None;
    }
    let t0 = points.clone().next()?.0;
    let (mut st, mut sv) = (0.0, 0.0);
    for (t, v) in points.clone() {
        st += (t - t0) as f64;
        sv += v;
    }
    let (mt, mv) = (st / n as f64, sv / n as f64);
    let (mut num, mut den) = (0.0, 0.0);
    for (t, v) in points {
        let dt = (t - t0) as f64 - mt;
        num += dt * (v - mv);
        den += dt * dt;
    }
    (den > 0.0).then(|| num / den)
}

/// Weight of a new sample in an exponential average with time constant `tau_ms` after
/// `dt_ms` (irregular sampling gets the right weight).
pub fn alpha(dt_ms: i64, tau_ms: i64) -> f64 {
    if tau_ms <= 0 {
        return 1.0;
    }
    1.0 - (-(dt_ms.max(0) as f64) / tau_ms as f64).exp()
}

/// Local hour of day (0..24) at UTC offset `offset_hours`.
pub fn local_hour(ts_ms: i64, offset_hours: f64) -> f64 {
    let ms = ts_ms + (offset_hours * 3_600_000.0) as i64;
    ms.rem_euclid(86_400_000) as f64 / 3_600_000.0
}

/// Local day number at UTC offset `offset_hours`.
pub fn local_day(ts_ms: i64, offset_hours: f64) -> i64 {
    (ts_ms + (offset_hours * 3_600_000.0) as i64).div_euclid(86_400_000)
}

/// UTC ms of local `hour` on local day `day`.
pub fn local_time(day: i64, hour: f64, offset_hours: f64) -> i64 {
    day * 86_400_000 + (hour * 3_600_000.0) as i64 - (offset_hours * 3_600_000.0) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_fires_only_after_the_condition_held_for_its_time() {
        let mut h = Hold::default();
        assert_eq!(h.step(false, true, 0, 300, 0), Some(Cond::Clear), "the first evaluation is reported");
        assert_eq!(h.step(true, false, 10, 300, 0), Some(Cond::Pending { since: 10 }));
        assert_eq!(h.step(true, false, 200, 300, 0), None);
        assert_eq!(h.step(false, false, 250, 300, 0), Some(Cond::Clear), "one good sample cancels pending");
        assert_eq!(h.step(true, false, 300, 300, 0), Some(Cond::Pending { since: 300 }));
        assert_eq!(h.step(true, false, 600, 300, 0), Some(Cond::Firing { since: 300 }));
        // between the limits: neither raise nor clear, it stays firing
        assert_eq!(h.step(false, false, 700, 300, 0), None);
        assert!(h.firing());
        assert_eq!(h.step(false, true, 800, 300, 100), None, "clearing needs its own hold");
        assert_eq!(h.step(false, true, 900, 300, 100), Some(Cond::Clear));
    }

    #[test]
    fn cusum_catches_a_one_sigma_shift_within_a_dozen_samples() {
        // Montgomery: k = 0.5, h = 5 has an ARL of about 10 for a 1-sigma shift.
        let mut c = Cusum::default();
        let mut n = 0;
        while c.push(1.0, 0.5).0 <= 5.0 {
            n += 1;
            assert!(n < 20);
        }
        assert!(n <= 11, "{n}");
    }

    #[test]
    fn the_ewma_limit_follows_nist() {
        let lim = EwmaChart::limit(0.2, 3.0);
        assert!((lim - 1.0).abs() < 1e-9, "{lim}");
    }

    #[test]
    fn slope_of_a_line_is_its_gradient() {
        let pts: Vec<(i64, f64)> = (0..10).map(|i| (i * 1000, 5.0 - 0.002 * (i * 1000) as f64)).collect();
        let s = slope(pts.iter().copied()).unwrap();
        assert!((s + 0.002).abs() < 1e-12, "{s}");
    }

    #[test]
    fn local_hours_are_in_china_standard_time() {
        // 2024-06-01T00:00Z is 08:00 CST.
        assert!((local_hour(1_717_200_000_000, 8.0) - 8.0).abs() < 1e-9);
        let day = local_day(1_717_200_000_000, 8.0);
        assert_eq!(local_time(day, 8.0, 8.0), 1_717_200_000_000);
    }
}
