//! Locking out guessers: failed sign-ins counted per user name and per client address in
//! a sliding window.
//!
//! Design constraints:
//! - A name is counted whether or not such a user exists, so a lock says nothing about
//!   who has an account.
//! - A lock lifts by itself when its oldest failure leaves the window; `Retry-After` says
//!   when. A success clears the name's failures (not the address's: one right guess among
//!   many wrong ones from one address does not reset it).
//! - Bounded: at most [`MAX_KEYS`] names and addresses are remembered; past that the
//!   stalest go first, so a flood of made-up names cannot exhaust memory.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

/// Most names plus addresses remembered.
pub const MAX_KEYS: usize = 50_000;

/// What is counted: a name or an address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Ip(IpAddr),
}

/// The failure counts.
#[derive(Debug)]
pub struct Lockout {
    failures: HashMap<Key, VecDeque<i64>>,
    window_ms: i64,
    per_user: usize,
    per_ip: usize,
}

impl Lockout {
    /// Locks a name after `per_user` failures, an address after `per_ip`, within `window`.
    pub fn new(per_user: u32, per_ip: u32, window: Duration) -> Lockout {
        Lockout {
            failures: HashMap::new(),
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
            per_user: per_user.max(1) as usize,
            per_ip: per_ip.max(1) as usize,
        }
    }

    fn keys(user: &str, ip: Option<IpAddr>) -> impl Iterator<Item = Key> {
        // Names are bounded where they come in; cut here too, so keys stay small.
        let user: String = user.chars().take(crate::people::users::MAX_NAME_CHARS).collect();
        std::iter::once(Key::User(user)).chain(ip.map(Key::Ip))
    }

    fn limit(&self, key: &Key) -> usize {
        match key {
            Key::User(_) => self.per_user,
            Key::Ip(_) => self.per_ip,
        }
    }

    /// `Err(wait)` if `user` or `ip` is locked now: try again after `wait`.
    pub fn check(&mut self, user: &str, ip: Option<IpAddr>, now: i64) -> Result<(), Duration> {
        let mut wait = 0i64;
        for key in Self::keys(user, ip) {
            let limit = self.limit(&key);
            if let Some(times) = self.failures.get_mut(&key) {
                while times.front().is_some_and(|&t| now.saturating_sub(t) >= self.window_ms) {
                    times.pop_front();
                }
                if times.len() >= limit {
                    // Lifts when the failure that makes it `limit` leaves the window.
                    let lifts = times[times.len() - limit].saturating_add(self.window_ms);
                    wait = wait.max(lifts.saturating_sub(now));
                }
            }
        }
        if wait > 0 { Err(Duration::from_millis(wait.unsigned_abs())) } else { Ok(()) }
    }

    /// Counts a failed sign-in of `user` from `ip`.
    pub fn failed(&mut self, user: &str, ip: Option<IpAddr>, now: i64) {
        if self.failures.len() >= MAX_KEYS {
            self.forget_stale(now);
        }
        for key in Self::keys(user, ip) {
            let limit = self.limit(&key);
            let times = self.failures.entry(key).or_default();
            times.push_back(now);
            // Only the newest `limit` matter for the lock.
            while times.len() > limit {
                times.pop_front();
            }
        }
    }

    /// A successful sign-in of `user`: its failures are forgotten.
    pub fn succeeded(&mut self, user: &str) {
        self.failures.remove(&Key::User(user.to_string()));
    }

    /// Drops keys whose failures all left the window, then, if still too many, the half
    /// with the oldest last failure.
    fn forget_stale(&mut self, now: i64) {
        let window = self.window_ms;
        self.failures.retain(|_, t| t.back().is_some_and(|&last| now.saturating_sub(last) < window));
        if self.failures.len() >= MAX_KEYS {
            let mut lasts: Vec<i64> = self.failures.values().filter_map(|t| t.back().copied()).collect();
            lasts.sort_unstable();
            let cut = lasts[lasts.len() / 2];
            self.failures.retain(|_, t| t.back().is_some_and(|&last| last > cut));
        }
    }

    /// How many names and addresses are remembered.
    pub fn len(&self) -> usize {
        self.failures.len()
    }

    /// True if none is.
    pub fn is_empty(&self) -> bool {
        self.failures.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn ip(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, n]))
    }

    #[test]
    fn five_failures_of_a_name_lock_it_until_the_first_leaves_the_window() {
        let mut l = Lockout::new(5, 20, Duration::from_secs(15 * 60));
        for i in 0..4 {
            l.failed("wang", ip(1), i * MIN);
            assert!(l.check("wang", ip(1), i * MIN).is_ok(), "positive control: {} failures do not lock", i + 1);
        }
        l.failed("wang", ip(1), 4 * MIN);
        let wait = l.check("wang", ip(2), 4 * MIN).unwrap_err();
        assert_eq!(wait, Duration::from_secs(11 * 60), "from any address: the first failure leaves at 15 min");
        assert!(l.check("li", ip(3), 4 * MIN).is_ok(), "other names are not locked");
        assert!(l.check("wang", ip(1), 15 * MIN).is_ok(), "the lock lifts by itself");
        // A success forgets the name's failures.
        l.failed("li", ip(3), 0);
        l.succeeded("li");
        assert!(l.is_empty() || l.check("li", None, 1).is_ok());
    }

    #[test]
    fn one_address_guessing_many_names_is_locked() {
        let mut l = Lockout::new(5, 20, Duration::from_secs(15 * 60));
        for i in 0..20 {
            assert!(l.check(&format!("user{i}"), ip(9), i).is_ok());
            l.failed(&format!("user{i}"), ip(9), i);
        }
        assert!(l.check("someone-new", ip(9), 30).is_err());
        assert!(l.check("someone-new", ip(8), 30).is_ok(), "positive control: another address");
    }

    #[test]
    fn made_up_names_cannot_grow_the_table_without_bound() {
        let mut l = Lockout::new(5, u32::MAX, Duration::from_secs(60));
        for i in 0..(MAX_KEYS as i64 + 10) {
            l.failed(&format!("n{i}"), None, i);
        }
        assert!(l.len() <= MAX_KEYS, "{}", l.len());
    }
}
