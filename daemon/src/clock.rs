//! The wall clock, as the [`Timestamp`]s readings and commands carry.
//!
//! Invariant: a clock before the Unix epoch reads as the epoch, one past `i64::MAX`
//! milliseconds as `i64::MAX`; reading the clock never panics.
//!
//! Test hook: with `VT_TEST_CLOCK_FILE` set to a file, [`now`] runs on the timeline that file
//! describes (`wall_anchor_ms sim_anchor_ms speed step_ms`: `sim_anchor + (wall -
//! wall_anchor) x speed + step`), re-read at most every 100 ms. It lets an end-to-end test
//! run real gateway and ingest processes on one accelerated timeline and step one process's
//! clock while it runs (`tests/e2e/day_of_faults.rs`). Without the variable (production)
//! the system clock is read and nothing else; a missing or unreadable file keeps the last
//! timeline read (or the system clock).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use protocol::Timestamp;

/// Where readings and commands get their time from. Services take one so that tests and
/// simulations can pass their own (paused, sped up, fixed).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The system clock as a [`Clock`].
pub fn system_clock() -> Clock {
    Arc::new(now)
}

/// Now, from the system clock, in milliseconds since the Unix epoch (or on the test
/// timeline of `VT_TEST_CLOCK_FILE`: see the module doc).
pub fn now() -> Timestamp {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let wall = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    Timestamp(test_timeline().map_or(wall, |t| t.at(wall)))
}

/// The environment variable of the test hook.
pub const TEST_CLOCK_FILE: &str = "VT_TEST_CLOCK_FILE";

/// A timeline read from the test clock file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeline {
    /// A wall time (ms since the epoch)...
    pub wall_anchor_ms: i64,
    /// ...and the time the timeline shows then.
    pub sim_anchor_ms: i64,
    /// Timeline milliseconds per wall millisecond.
    pub speed: f64,
    /// Added on top: a step of this process's clock.
    pub step_ms: i64,
}

impl Timeline {
    /// Parses `wall_anchor_ms sim_anchor_ms speed step_ms`.
    pub fn parse(text: &str) -> Option<Timeline> {
        let mut it = text.split_whitespace();
        let t = Timeline {
            wall_anchor_ms: it.next()?.parse().ok()?,
            sim_anchor_ms: it.next()?.parse().ok()?,
            speed: it.next()?.parse().ok()?,
            step_ms: it.next()?.parse().ok()?,
        };
        t.speed.is_finite().then_some(t)
    }

    /// The file's text for this timeline.
    pub fn to_text(&self) -> String {
        format!("{} {} {} {}\n", self.wall_anchor_ms, self.sim_anchor_ms, self.speed, self.step_ms)
    }

    /// The timeline's time at wall time `wall` (ms since the epoch), saturating.
    pub fn at(&self, wall: i64) -> i64 {
        let elapsed = (wall.saturating_sub(self.wall_anchor_ms) as f64 * self.speed) as i64;
        self.sim_anchor_ms.saturating_add(elapsed).saturating_add(self.step_ms).max(0)
    }
}

struct TestClock {
    file: PathBuf,
    cached: Mutex<(Option<Instant>, Option<Timeline>)>,
}

/// The timeline of `VT_TEST_CLOCK_FILE`, if set (re-read at most every 100 ms).
fn test_timeline() -> Option<Timeline> {
    static HOOK: OnceLock<Option<TestClock>> = OnceLock::new();
    let hook = HOOK
        .get_or_init(|| {
            std::env::var_os(TEST_CLOCK_FILE).map(|f| TestClock { file: f.into(), cached: Mutex::new((None, None)) })
        })
        .as_ref()?;
    let mut cached = hook.cached.lock().unwrap_or_else(|e| e.into_inner());
    if cached.0.is_none_or(|at| at.elapsed() >= Duration::from_millis(100)) {
        if let Some(t) = std::fs::read_to_string(&hook.file).ok().as_deref().and_then(Timeline::parse) {
            cached.1 = Some(t);
        }
        cached.0 = Some(Instant::now());
    }
    cached.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_reads_milliseconds_since_the_epoch() {
        let before = now();
        let clock = system_clock();
        let read = clock();
        // 2020-01-01 in ms: any real clock is past it, and a seconds clock would not be.
        assert!(before.0 > 1_577_836_800_000, "{before:?}");
        assert!(read >= before);
    }

    #[test]
    fn a_test_timeline_runs_at_its_speed_from_its_anchor_with_its_step() {
        let t = Timeline::parse("1000 500000 360 -60000").unwrap();
        assert_eq!(t.at(1000), 500_000 - 60_000);
        assert_eq!(t.at(2000), 500_000 + 360_000 - 60_000);
        assert_eq!(t.at(-10_000_000), 0, "never before the epoch");
        assert_eq!(Timeline::parse(&t.to_text()), Some(t));
        assert_eq!(Timeline::parse("1000 5000 fast 0"), None, "a bad file is not a timeline");
        assert_eq!(Timeline::parse("1 2 3"), None);
    }
}
