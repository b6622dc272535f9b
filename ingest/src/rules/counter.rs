//! Consumption from totalised volume: a meter's counter turned into water used.
//!
//! Meters report a running total (`volume_total`), not what was used. Water used between
//! two readings is the difference of their totals, except when:
//! - the counter rolled over (it counts in a fixed-width register and wrapped to zero):
//!   the difference modulo the register's span is the use (DOMAIN.md: "Consumption is a
//!   difference of totals, across rollover and meter replacement");
//! - the meter was replaced (or reset): the new meter counts from zero, so its reading is
//!   the use since the swap (as Prometheus' `increase()` treats a counter reset). A new
//!   meter that starts at a non-zero factory reading adds nothing: that water is unknown,
//!   and unknown is not use;
//! - readings are missing (a gap): the difference across the gap is still exact; only how
//!   it splits over time is unknown.
//!
//! Invariants: consumption is never negative; the sum over consecutive intervals equals
//! the consumption over their union (nothing is invented or lost at interval boundaries,
//! which are interpolated linearly between the readings that straddle them).

use std::collections::VecDeque;

/// How a step between two totals was read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// An ordinary increase (or none).
    Increase(f64),
    /// The counter wrapped past its modulus.
    Rollover(f64),
    /// The total fell: a replaced or reset meter; the new total is the use since.
    Reset(f64),
}

impl Step {
    /// Water used over the step.
    pub fn volume(self) -> f64 {
        match self {
            Step::Increase(v) | Step::Rollover(v) | Step::Reset(v) => v,
        }
    }
}

/// Reads the step from total `prev` to total `cur` of a counter that wraps at `modulus`.
///
/// A fall is a rollover when the previous total was in the top tenth of the span and the
/// new one in the bottom tenth (a wrap); any other fall is a reset.
pub fn step(prev: f64, cur: f64, modulus: f64) -> Step {
    if cur >= prev {
        return Step::Increase(cur - prev);
    }
    if prev > 0.9 * modulus && cur < 0.1 * modulus {
        return Step::Rollover(cur + modulus - prev);
    }
    // A new meter's total since it was fitted; a negative reading would be a decoding
    // error and counts as nothing.
    Step::Reset(cur.max(0.0))
}

/// A counter turned into cumulative consumption, with checkpoints to answer "how much
/// between t0 and t1" for a sliding window.
#[derive(Debug, Clone)]
pub struct Consumption {
    modulus: f64,
    checkpoint_ms: i64,
    keep_ms: i64,
    last: Option<(i64, f64)>,
    cumulative: f64,
    /// (ts, cumulative) at readings at least `checkpoint_ms` apart, oldest first, and
    /// always the latest reading at the back.
    points: VecDeque<(i64, f64)>,
    resets: u32,
    rollovers: u32,
}

impl Consumption {
    /// A tracker that keeps `keep_ms` of checkpoints every `checkpoint_ms`.
    pub fn new(modulus: f64, checkpoint_ms: i64, keep_ms: i64) -> Consumption {
        Consumption {
            modulus,
            checkpoint_ms: checkpoint_ms.max(1),
            keep_ms,
            last: None,
            cumulative: 0.0,
            points: VecDeque::new(),
            resets: 0,
            rollovers: 0,
        }
    }

    /// Adds a reading of the total. Readings older than the last one are ignored (a
    /// replayed batch: the water is already counted).
    pub fn push(&mut self, ts: i64, total: f64) {
        if !total.is_finite() {
            return;
        }
        if let Some((last_ts, last_total)) = self.last {
            if ts <= last_ts {
                return;
            }
            let s = step(last_total, total, self.modulus);
            match s {
                Step::Rollover(_) => self.rollovers += 1,
                Step::Reset(_) => self.resets += 1,
                Step::Increase(_) => {}
            }
            self.cumulative += s.volume();
        }
        self.last = Some((ts, total));
        // Keep the back as the latest reading; promote it to a checkpoint once the next
        // one is far enough from the previous checkpoint.
        let n = self.points.len();
        if n >= 2 && ts - self.points[n - 2].0 < self.checkpoint_ms {
            self.points[n - 1] = (ts, self.cumulative);
        } else {
            self.points.push_back((ts, self.cumulative));
        }
        while self.points.len() > 2 && self.points.get(1).is_some_and(|p| ts - p.0 > self.keep_ms) {
            self.points.pop_front();
        }
    }

    /// Time of the newest reading.
    pub fn last_ts(&self) -> Option<i64> {
        self.last.map(|(t, _)| t)
    }

    /// Time of the oldest checkpoint kept.
    pub fn first_ts(&self) -> Option<i64> {
        self.points.front().map(|p| p.0)
    }

    /// Resets and rollovers seen so far.
    pub fn events(&self) -> (u32, u32) {
        (self.resets, self.rollovers)
    }

    /// Cumulative consumption at `t`, interpolated between the points around it; `None`
    /// outside the span of the points kept.
    pub fn at(&self, t: i64) -> Option<f64> {
        let front = self.points.front()?;
        let back = self.points.back()?;
        if t < front.0 || t > back.0 {
            return None;
        }
        let i = self.points.partition_point(|p| p.0 <= t);
        if i == 0 {
            return Some(front.1);
        }
        let (t0, c0) = self.points[i - 1];
        match self.points.get(i) {
            None => Some(c0),
            Some(&(t1, c1)) if t1 > t0 => Some(c0 + (c1 - c0) * (t - t0) as f64 / (t1 - t0) as f64),
            Some(_) => Some(c0),
        }
    }

    /// Water used between `t0` and `t1`, if both lie within the points kept.
    pub fn between(&self, t0: i64, t1: i64) -> Option<f64> {
        Some((self.at(t1)? - self.at(t0)?).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: f64 = 4_294_967.296;

    #[test]
    fn a_wrap_of_the_register_is_use_not_a_negative_number() {
        assert_eq!(step(M - 0.5, 0.25, M), Step::Rollover(0.75));
        assert_eq!(step(10.0, 12.5, M), Step::Increase(2.5));
    }

    #[test]
    fn a_replaced_meter_counts_from_its_first_total() {
        assert_eq!(step(812.3, 0.4, M), Step::Reset(0.4));
        let mut c = Consumption::new(M, 1, 10_000);
        c.push(0, 812.0);
        c.push(10, 812.3);
        c.push(20, 0.4); // swapped: the new meter used 0.4 since it was fitted
        c.push(30, 1.0);
        assert!((c.between(0, 30).unwrap() - 1.3).abs() < 1e-9);
        assert_eq!(c.events(), (1, 0));
    }

    #[test]
    fn gaps_neither_invent_nor_lose_water_and_windows_add_up() {
        let mut c = Consumption::new(M, 1, 1_000_000);
        c.push(0, 100.0);
        c.push(1000, 101.0);
        // three hours of missing reads, then the total caught up
        c.push(11_800, 110.0);
        c.push(12_800, 111.0);
        let whole = c.between(0, 12_800).unwrap();
        assert!((whole - 11.0).abs() < 1e-9);
        let parts = c.between(0, 5000).unwrap() + c.between(5000, 9000).unwrap() + c.between(9000, 12_800).unwrap();
        assert!((parts - whole).abs() < 1e-9, "{parts} != {whole}");
        assert_eq!(c.between(-1, 100), None, "before the first reading is unknown, not zero");
    }

    #[test]
    fn a_replayed_older_reading_is_not_counted_twice() {
        let mut c = Consumption::new(M, 1, 1_000_000);
        c.push(0, 5.0);
        c.push(20, 7.0);
        c.push(10, 6.0);
        assert_eq!(c.between(0, 20), Some(2.0));
    }

    #[test]
    fn checkpoints_are_thinned_but_the_latest_reading_is_kept() {
        let mut c = Consumption::new(M, 100, 1000);
        for t in 0..=2000 {
            c.push(t, t as f64 * 0.01);
        }
        assert!(c.points.len() < 20, "{} points", c.points.len());
        assert_eq!(c.last_ts(), Some(2000));
        assert!((c.between(1500, 2000).unwrap() - 5.0).abs() < 1e-6);
    }
}
