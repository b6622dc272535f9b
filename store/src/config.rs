//! The store's configuration: where it lives, when it syncs and seals, how long it keeps what.
//!
//! Retention is set per metric family ([`protocol::Family`]) and per tier (raw points,
//! 1-minute and 1-hour roll-ups), because a cow's temperature history is worth keeping
//! for a lactation while a gateway's queue depth is worth a month.

use std::collections::BTreeMap;
use std::path::PathBuf;

use protocol::Family;

use crate::rollup::{DAY_MS, HOUR_MS};

/// When appends are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fdatasync after every append call: nothing acknowledged is lost on power failure.
    Always,
    /// Leave it to the OS. Survives a killed process (the data is in the page cache) but not
    /// a power cut; for tests and for benchmarks that measure everything but the disk.
    Never,
}

/// How long one family's data is kept, per tier. A partition is dropped whole once its
/// end is older than `now - keep`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Raw points.
    pub raw_ms: i64,
    /// 1-minute roll-ups; at least `raw_ms`.
    pub minute_ms: i64,
    /// 1-hour roll-ups; at least `minute_ms`.
    pub hour_ms: i64,
}

impl Retention {
    /// Days to milliseconds, for readable defaults.
    pub const fn days(raw: i64, minute: i64, hour: i64) -> Retention {
        Retention { raw_ms: raw * DAY_MS, minute_ms: minute * DAY_MS, hour_ms: hour * DAY_MS }
    }
}

/// The default retention of each family.
///
/// Water and water quality are records a bureau must be able to show for two years; an
/// animal's history covers a lactation and the dry period (400 days); device health is for
/// troubleshooting now (30 days raw). Hour roll-ups are small and kept for years.
pub fn default_retention(family: Family) -> Retention {
    match family {
        Family::Water | Family::WaterQuality | Family::Pump => Retention::days(730, 730, 3650),
        Family::Animal | Family::Barn => Retention::days(400, 400, 3650),
        Family::Speaker => Retention::days(90, 180, 1825),
        Family::Health => Retention::days(30, 90, 730),
        Family::External => Retention::days(90, 365, 1825),
    }
}

/// Where and how the store keeps its data.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory of the store's files; created if missing.
    pub dir: PathBuf,
    /// When appends reach the disk.
    pub fsync: FsyncPolicy,
    /// Seal the write-ahead log into compressed blocks once this many points are buffered.
    /// Bounds memory and the log replayed at open; larger values compress partitions in
    /// fewer, bigger merges.
    pub checkpoint_points: usize,
    /// Run checkpoints on a background thread (true), or only when [`crate::Store::checkpoint`]
    /// is called (false; tests that want to control when data is sealed).
    pub background_checkpoints: bool,
    /// Width of raw and 1-minute partitions (default 7 days). A multiple of one hour. Fixed
    /// when the store is created; a store reopened with another width refuses to open.
    /// Wider partitions compress better (a week of minute data: 0.28 bytes a timestamp,
    /// a day: 0.43) but make retention coarser (data is dropped a whole week at a time) and
    /// each checkpoint rewrites the current partition's blocks.
    pub raw_partition_ms: i64,
    /// Width of 1-hour roll-up partitions (default 28 days). A multiple of
    /// `raw_partition_ms`. Fixed at creation like it.
    pub hour_partition_ms: i64,
    /// Retention per family that overrides [`default_retention`].
    pub retention: BTreeMap<Family, Retention>,
}

impl StoreConfig {
    /// A store in `dir` that fsyncs every append (the safe default).
    pub fn new(dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            dir: dir.into(),
            fsync: FsyncPolicy::Always,
            checkpoint_points: 2_000_000,
            background_checkpoints: true,
            raw_partition_ms: 7 * DAY_MS,
            hour_partition_ms: 28 * DAY_MS,
            retention: BTreeMap::new(),
        }
    }

    /// The retention in force for `family`.
    pub fn retention_for(&self, family: Family) -> Retention {
        self.retention.get(&family).copied().unwrap_or_else(|| default_retention(family))
    }

    /// Every problem with the configuration at once.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        if self.raw_partition_ms <= 0 || self.raw_partition_ms % HOUR_MS != 0 {
            errors
                .push(format!("raw_partition_ms ({}) must be a positive multiple of one hour", self.raw_partition_ms));
        }
        if self.hour_partition_ms <= 0
            || self.raw_partition_ms <= 0
            || self.hour_partition_ms % self.raw_partition_ms != 0
        {
            errors.push(format!(
                "hour_partition_ms ({}) must be a positive multiple of raw_partition_ms ({})",
                self.hour_partition_ms, self.raw_partition_ms
            ));
        }
        if self.checkpoint_points == 0 {
            errors.push("checkpoint_points must be at least 1".into());
        }
        for (family, r) in &self.retention {
            if !(0 < r.raw_ms && r.raw_ms <= r.minute_ms && r.minute_ms <= r.hour_ms) {
                errors.push(format!("retention of {family:?} must satisfy 0 < raw_ms <= minute_ms <= hour_ms"));
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_is_valid_and_every_family_keeps_rollups_longest() {
        assert_eq!(StoreConfig::new("/tmp/x").validate(), Ok(()));
        for f in [
            Family::Water,
            Family::WaterQuality,
            Family::Pump,
            Family::Animal,
            Family::Barn,
            Family::Speaker,
            Family::Health,
            Family::External,
        ] {
            let r = default_retention(f);
            assert!(0 < r.raw_ms && r.raw_ms <= r.minute_ms && r.minute_ms <= r.hour_ms, "{f:?}");
        }
        assert_eq!(default_retention(Family::Animal).raw_ms, 400 * DAY_MS);
        assert_eq!(default_retention(Family::Health).raw_ms, 30 * DAY_MS);
    }

    #[test]
    fn validation_reports_every_problem_at_once() {
        let mut c = StoreConfig::new("/tmp/x");
        c.raw_partition_ms = 100 * 60_000;
        c.checkpoint_points = 0;
        c.retention.insert(Family::Health, Retention::days(10, 5, 20));
        assert_eq!(c.validate().unwrap_err().len(), 4);
    }
}
