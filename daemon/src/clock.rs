//! The wall clock, as the [`Timestamp`]s readings and commands carry.
//!
//! Invariant: a clock before the Unix epoch reads as the epoch, one past `i64::MAX`
//! milliseconds as `i64::MAX`; reading the clock never panics.

use std::sync::Arc;

use protocol::Timestamp;

/// Where readings and commands get their time from. Services take one so that tests and
/// simulations can pass their own (paused, sped up, fixed).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The system clock as a [`Clock`].
pub fn system_clock() -> Clock {
    Arc::new(now)
}

/// Now, from the system clock, in milliseconds since the Unix epoch.
pub fn now() -> Timestamp {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
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
}
