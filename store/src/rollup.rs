//! Roll-ups: per-bucket min, max, sum, count and last, and how they combine.
//!
//! The store keeps two roll-up tiers, 1 minute and 1 hour, so long-range charts do not
//! decode every raw point. Roll-ups are a pure function of the raw data: whenever a raw
//! block changes, the roll-ups of its whole partition are recomputed from the merged,
//! deduplicated block. That is what keeps them in step with late and out-of-order points
//! and with duplicates: a point written twice at the same timestamp is one raw point, so
//! it is counted once.
//!
//! Backfill (history from an old system, written after newer data) is the extreme case of
//! late points: whole old partitions arrive after newer ones were sealed and after
//! retention runs. Sealing treats them like any change to a raw block: the old
//! partitions' minute and hour roll-ups are computed at that checkpoint, the hour blocks
//! of the hour partitions they fall in are rewritten with those hours replaced, and a
//! bucketed query over a backfilled month answers from the hour tier exactly as from the
//! raw points (`tests::backfilled_old_partitions_get_rollups_that_answer_like_the_raw_points`).
//! Only points older than the family's raw retention are discarded at sealing, which is why
//! line-protocol input takes history back to that retention and no further.
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

    /// Two years of 15-minute counter readings written newest year first, then the older
    /// year in reverse order, each after a checkpoint and a retention run: every old hour
    /// and day is answered from the roll-ups as from the raw points, also after reopening.
    #[test]
    fn backfilled_old_partitions_get_rollups_that_answer_like_the_raw_points() {
        use crate::{Resolution, Store, StoreConfig};
        use protocol::{Metric, Reading, Timestamp};

        const Q: i64 = 15 * MINUTE_MS;
        let now: i64 = 1_798_761_600_000; // 2027-01-01T00:00:00Z
        let start = now - 728 * DAY_MS;
        let mid = now - 364 * DAY_MS;
        let value = |t: i64| ((t - start) / Q) as f64 * 0.01 + ((t / Q) % 7) as f64 * 0.001;
        let readings = |ts: &mut dyn Iterator<Item = i64>| -> Vec<Reading> {
            ts.map(|t| Reading::new("m-1", Metric::new("volume_total"), Timestamp(t), value(t))).collect()
        };
        let dir = tempfile::tempdir().unwrap();
        let config = || StoreConfig { background_checkpoints: false, ..StoreConfig::new(dir.path()) };
        {
            let (store, _) = Store::open(config()).unwrap();
            // The recent year first, sealed, and retention run with the real "now".
            store.append_readings(&readings(&mut (mid..now).step_by(Q as usize))).unwrap();
            store.checkpoint().unwrap();
            store.enforce_retention(Timestamp(now)).unwrap();
            // Then the old year, newest first, in chunks as a client would send it.
            let mut old: Vec<i64> = (start..mid).step_by(Q as usize).collect();
            old.reverse();
            for chunk in old.chunks(5_000) {
                store.append_readings(&readings(&mut chunk.iter().copied())).unwrap();
            }
            let report = store.checkpoint().unwrap();
            assert_eq!(report.expired_points, 0, "history within the raw retention is kept");
            store.close().unwrap();
        }
        let (store, _) = Store::open(config()).unwrap();
        // A month in the first year: hourly and daily buckets from the hour tier.
        let (from, to) = (start + 40 * DAY_MS, start + 70 * DAY_MS);
        assert_eq!(Resolution::for_query(from, to, HOUR_MS), Resolution::Hour);
        for step in [HOUR_MS, DAY_MS] {
            let from_rollups =
                store.range_bucketed("m-1", "volume_total", Timestamp(from), Timestamp(to), step).unwrap();
            let raw = store.range("m-1", "volume_total", Timestamp(from), Timestamp(to), usize::MAX).unwrap();
            let mut expected = Folder::new(step);
            for p in &raw {
                expected.add(&Agg::of(p.ts.0, p.value));
            }
            let expected = expected.finish();
            assert_eq!(from_rollups.len(), expected.len(), "step {step}");
            assert_eq!(expected.len() as i64, (to - from) / step, "every bucket has data");
            for (b, e) in from_rollups.iter().zip(&expected) {
                assert_eq!((b.start.0, b.count, b.min, b.max, b.last), (e.start, e.count, e.min, e.max, e.last));
                assert!((b.mean - e.sum / e.count as f64).abs() < 1e-9);
            }
        }
        // Positive control on the shape: a day has 96 readings, and the first day's first
        // reading is the backfill's first.
        let day =
            store.range_bucketed("m-1", "volume_total", Timestamp(start), Timestamp(start + DAY_MS), DAY_MS).unwrap();
        assert_eq!(day[0].count, 96);
        assert_eq!(day[0].min, value(start));
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
