//! Roll-ups: per-bucket min, max, sum, count and last, and how they combine.
//!
//! The store keeps two roll-up tiers, 1 minute and 1 hour, so long-range charts do not
//! decode every raw point. Roll-ups are a pure function of the raw data: whenever a raw
//! block changes, the roll-ups of its whole partition are recomputed from the merged,
//! deduplicated block. That is what keeps them in step with late and out-of-order points
//! and with duplicates: a point written twice at the same timestamp is one raw point, so
//! it is counted once.
//!
//! Invariants:
//! - Buckets are aligned to multiples of their width since the epoch (UTC).
//! - `count >= 1`; a bucket with one point has `min = max = sum = last`.
//! - Combining buckets in time order gives the bucket of their union: `min` of mins,
//!   `max` of maxes, sums and counts added, `last` from the newest.

use crate::block::Points;

/// One minute in milliseconds.
pub const MINUTE_MS: i64 = 60_000;
/// One hour in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;
/// One day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// The start of the `width` bucket (aligned to the epoch) that holds `ts`. The bucket of
/// the first instants after `i64::MIN` would start before it, so it is clamped to `i64::MIN`.
pub(crate) fn floor_to(ts: i64, width: i64) -> i64 {
    ts.div_euclid(width).saturating_mul(width)
}

/// Which data answers a bucketed query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resolution {
    /// The raw points.
    Raw,
    /// The 1-minute roll-ups.
    Minute,
    /// The 1-hour roll-ups.
    Hour,
}

impl Resolution {
    /// The coarsest tier that answers buckets of `step_ms` over `[from, to)` exactly:
    /// its width must divide the step and both ends of the range.
    pub fn for_query(from: i64, to: i64, step_ms: i64) -> Resolution {
        let fits = |w: i64| step_ms % w == 0 && from.rem_euclid(w) == 0 && to.rem_euclid(w) == 0;
        if fits(HOUR_MS) {
            Resolution::Hour
        } else if fits(MINUTE_MS) {
            Resolution::Minute
        } else {
            Resolution::Raw
        }
    }

    /// Bucket width of the tier (1 ms for raw: every point is its own bucket).
    pub(crate) fn width_ms(self) -> i64 {
        match self {
            Resolution::Raw => 1,
            Resolution::Minute => MINUTE_MS,
            Resolution::Hour => HOUR_MS,
        }
    }
}

/// The aggregate of the points in one bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Agg {
    /// Start of the bucket (ms since the epoch, aligned to the bucket width).
    pub(crate) start: i64,
    /// Points in the bucket, at least 1.
    pub(crate) count: u64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) sum: f64,
    /// Value of the newest point.
    pub(crate) last: f64,
}

impl Agg {
    fn of(start: i64, v: f64) -> Agg {
        Agg { start, count: 1, min: v, max: v, sum: v, last: v }
    }

    /// Folds in a later bucket (or point) of the same output bucket.
    pub(crate) fn absorb(&mut self, later: &Agg) {
        self.count += later.count;
        self.min = self.min.min(later.min);
        self.max = self.max.max(later.max);
        self.sum += later.sum;
        self.last = later.last;
    }
}

/// Roll-ups of `width_ms` buckets over sorted, deduplicated points.
pub(crate) fn aggregate(points: &Points, width_ms: i64) -> Vec<Agg> {
    let mut out: Vec<Agg> = Vec::new();
    for (&ts, &v) in points.ts.iter().zip(&points.values) {
        let start = floor_to(ts, width_ms);
        match out.last_mut() {
            Some(a) if a.start == start => a.absorb(&Agg::of(start, v)),
            _ => out.push(Agg::of(start, v)),
        }
    }
    out
}

/// Folds aggregates (sorted by start, each inside one output bucket) into output buckets
/// of `step_ms` aligned to the epoch. Raw points come in as one-point aggregates.
pub(crate) struct Folder {
    step_ms: i64,
    out: Vec<Agg>,
}

impl Folder {
    pub(crate) fn new(step_ms: i64) -> Folder {
        Folder { step_ms, out: Vec::new() }
    }

    pub(crate) fn add(&mut self, a: &Agg) {
        let start = floor_to(a.start, self.step_ms);
        match self.out.last_mut() {
            Some(b) if b.start == start => b.absorb(a),
            _ => self.out.push(Agg { start, ..*a }),
        }
    }

    pub(crate) fn add_points(&mut self, points: &Points) {
        for (&ts, &v) in points.ts.iter().zip(&points.values) {
            self.add(&Agg::of(ts, v));
        }
    }

    pub(crate) fn finish(self) -> Vec<Agg> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coarsest_tier_that_divides_step_and_range_is_chosen() {
        let day = DAY_MS;
        assert_eq!(Resolution::for_query(0, 365 * day, 9 * HOUR_MS), Resolution::Hour);
        assert_eq!(Resolution::for_query(0, 365 * day, 526 * MINUTE_MS), Resolution::Minute);
        assert_eq!(Resolution::for_query(0, 365 * day, 90_000), Resolution::Raw);
        // A range that starts mid-hour cannot be answered from hour buckets.
        assert_eq!(Resolution::for_query(MINUTE_MS, 365 * day, HOUR_MS), Resolution::Minute);
        assert_eq!(Resolution::for_query(-HOUR_MS, HOUR_MS, HOUR_MS), Resolution::Hour);
    }

    #[test]
    fn minute_buckets_combine_into_the_same_hour_bucket_as_the_raw_points() {
        let mut p = Points::default();
        for i in 0..180i64 {
            p.push(i * 20_000 + 7, (i % 13) as f64 - 4.5, 0);
        }
        let minutes = aggregate(&p, MINUTE_MS);
        let mut from_minutes = Folder::new(HOUR_MS);
        minutes.iter().for_each(|a| from_minutes.add(a));
        let mut from_raw = Folder::new(HOUR_MS);
        from_raw.add_points(&p);
        assert_eq!(from_minutes.finish(), from_raw.finish());
    }

    #[test]
    fn buckets_before_the_epoch_align_downwards() {
        let mut p = Points::default();
        p.push(-1, 1.0, 0);
        p.push(0, 2.0, 0);
        let a = aggregate(&p, MINUTE_MS);
        assert_eq!(a.iter().map(|a| a.start).collect::<Vec<_>>(), vec![-MINUTE_MS, 0]);
    }
}
