//! Reconnect delays: exponential from 1 s to 60 s, jittered, so that a hundred gateways
//! that lost the same broker do not all come back in the same second.
//!
//! Invariant: a delay is always within the upper half of its base (`base / 2 ..= base`),
//! and the jitter depends on the client's name and attempt as well as the clock, so two
//! clients with the same history still spread out.

use std::time::Duration;

/// Exponential backoff from 1 s to 60 s, with up to 50% jitter derived from `client` (a
/// gateway id, or `"ingest"`), the attempt and the clock's nanoseconds.
pub fn backoff(attempt: u32, client: &str) -> Duration {
    let base = 1000u64.saturating_mul(1 << attempt.saturating_sub(1).min(6)).min(60_000);
    Duration::from_millis(base / 2 + jitter(attempt, client) % (base / 2 + 1))
}

/// A delay of at most `max`, jittered within its upper half the same way: the cap for a
/// client configured to retry sooner than a minute (`min` it with [`backoff`]).
pub fn capped_backoff(max: Duration, attempt: u32, client: &str) -> Duration {
    let max = max.as_millis().max(2) as u64;
    Duration::from_millis(max / 2 + jitter(attempt, client) % (max / 2 + 1))
}

fn jitter(attempt: u32, client: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in client.bytes().chain(attempt.to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    h ^ u64::from(since_epoch.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_minute_and_stays_jittered() {
        for attempt in 1..20 {
            let d = backoff(attempt, "gw-1");
            let base = 1000u64 * (1 << (attempt - 1).min(6));
            let base = base.min(60_000);
            assert!(d >= Duration::from_millis(base / 2) && d <= Duration::from_millis(base), "{attempt}: {d:?}");
        }
        let capped = backoff(10, "gw").min(capped_backoff(Duration::from_secs(4), 10, "gw"));
        assert!(capped <= Duration::from_secs(4));
        assert!(capped >= Duration::from_secs(2));
    }
}
