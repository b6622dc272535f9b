//! The session table: who is signed in, in memory.
//!
//! Design constraints:
//! - A session id is 32 random bytes (hex in the cookie); the table keeps only its
//!   SHA-256, so a copy of the table (a memory dump, a debug print) signs nobody in.
//! - Each session has its own CSRF token (32 random bytes, hex), returned at sign-in and
//!   by `GET /api/v1/session`, never in a cookie.
//! - A session ends when nobody used it for `idle_timeout`, at `absolute_timeout` after
//!   sign-in whatever happens, at sign-out, and when its person's password is reset or
//!   the person removed. Ended sessions are dropped when next looked at, and all of them
//!   on every sign-in (a sweep), so the table holds only live ones.
//! - Bounded: at most [`MAX_PER_USER`] sessions a person (the oldest ends) and
//!   [`MAX_SESSIONS`] in all (the least recently used ends).
//! - In memory only: a restart of ingest signs everyone out. That keeps stolen state off
//!   the disk; a cluster would put this table behind the same narrow interface in a
//!   shared store (docs/SECURITY.md).

use std::collections::HashMap;

use sha2::{Digest as _, Sha256};

/// Most sessions one person may hold at once.
pub const MAX_PER_USER: usize = 16;
/// Most sessions in all.
pub const MAX_SESSIONS: usize = 10_000;

/// One live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Whose.
    pub user: String,
    /// Its CSRF token.
    pub csrf: String,
    /// When it began (ms since the epoch).
    pub created_ms: i64,
    /// When it was last used (ms).
    pub last_ms: i64,
}

/// The table.
#[derive(Debug)]
pub struct Sessions {
    by_hash: HashMap<[u8; 32], Session>,
    idle_ms: i64,
    absolute_ms: i64,
}

/// 32 random bytes as 64 hex digits.
pub fn random_hex() -> String {
    use rand_core::RngCore as _;
    let mut b = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    /// An empty table whose sessions end after `idle` unused or `absolute` in all.
    pub fn new(idle: std::time::Duration, absolute: std::time::Duration) -> Sessions {
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Sessions { by_hash: HashMap::new(), idle_ms: ms(idle), absolute_ms: ms(absolute) }
    }

    fn live(&self, s: &Session, now: i64) -> bool {
        now.saturating_sub(s.last_ms) < self.idle_ms && now.saturating_sub(s.created_ms) < self.absolute_ms
    }

    /// When a session ends if nobody uses it again (ms).
    pub fn ends_at(&self, s: &Session) -> i64 {
        s.last_ms.saturating_add(self.idle_ms).min(s.created_ms.saturating_add(self.absolute_ms))
    }

    /// Starts a session for `user`; returns its id (for the cookie) and the session.
    pub fn start(&mut self, user: &str, now: i64) -> (String, Session) {
        self.sweep(now);
        let mine: Vec<([u8; 32], i64)> =
            self.by_hash.iter().filter(|(_, s)| s.user == user).map(|(k, s)| (*k, s.created_ms)).collect();
        if mine.len() >= MAX_PER_USER
            && let Some((k, _)) = mine.iter().min_by_key(|(_, c)| *c)
        {
            self.by_hash.remove(k);
        }
        if self.by_hash.len() >= MAX_SESSIONS
            && let Some(k) = self.by_hash.iter().min_by_key(|(_, s)| s.last_ms).map(|(k, _)| *k)
        {
            self.by_hash.remove(&k);
        }
        let id = random_hex();
        let session = Session { user: user.to_string(), csrf: random_hex(), created_ms: now, last_ms: now };
        self.by_hash.insert(key(&id), session.clone());
        (id, session)
    }

    /// The live session of `id`; `touch` pushes its idle expiry back. An ended one is
    /// dropped and not returned.
    pub fn get(&mut self, id: &str, now: i64, touch: bool) -> Option<Session> {
        let k = key(id);
        let live = self.by_hash.get(&k).map(|s| self.live(s, now))?;
        if !live {
            self.by_hash.remove(&k);
            return None;
        }
        let s = self.by_hash.get_mut(&k)?;
        if touch {
            s.last_ms = s.last_ms.max(now);
        }
        Some(s.clone())
    }

    /// Ends the session of `id`; returns it if it was live.
    pub fn end(&mut self, id: &str) -> Option<Session> {
        self.by_hash.remove(&key(id))
    }

    /// Ends every session of `user`; returns how many.
    pub fn end_user(&mut self, user: &str) -> usize {
        let before = self.by_hash.len();
        self.by_hash.retain(|_, s| s.user != user);
        before - self.by_hash.len()
    }

    /// Drops every ended session.
    pub fn sweep(&mut self, now: i64) {
        let (idle, absolute) = (self.idle_ms, self.absolute_ms);
        self.by_hash.retain(|_, s| now.saturating_sub(s.last_ms) < idle && now.saturating_sub(s.created_ms) < absolute);
    }

    /// How many sessions are live (after the last sweep).
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// True if none is.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIN: i64 = 60_000;

    #[test]
    fn a_session_ends_when_idle_and_at_its_absolute_limit_but_use_keeps_it() {
        let mut t = Sessions::new(Duration::from_secs(30 * 60), Duration::from_secs(2 * 3600));
        let (id, s) = t.start("wang", 0);
        assert_eq!(s.csrf.len(), 64);
        assert_ne!(id, s.csrf);
        // Used every 20 minutes: alive past the idle time...
        for m in [20, 40, 60, 80, 100] {
            assert!(t.get(&id, m * MIN, true).is_some(), "at {m} min");
        }
        // ...but not past two hours.
        assert!(t.get(&id, 120 * MIN, true).is_none());
        // Idle: a look that does not touch keeps the idle clock running.
        let (id, _) = t.start("wang", 0);
        assert!(t.get(&id, 20 * MIN, false).is_some());
        assert!(t.get(&id, 31 * MIN, false).is_none(), "background reads do not keep a session alive");
        // And an ended session stays ended.
        assert!(t.get(&id, 0, true).is_none());
    }

    #[test]
    fn only_the_hash_of_an_id_is_kept_and_sign_out_ends_one_session() {
        let mut t = Sessions::new(Duration::from_secs(60), Duration::from_secs(600));
        let (a, _) = t.start("wang", 0);
        let (b, _) = t.start("wang", 0);
        assert!(!format!("{t:?}").contains(&a));
        assert!(t.end(&a).is_some());
        assert!(t.get(&a, 1, true).is_none());
        assert!(t.get(&b, 1, true).is_some(), "the other session of the same person lives on");
        assert_eq!(t.end_user("wang"), 1);
        assert!(t.get(&b, 1, true).is_none());
        assert!(t.get("made-up", 1, true).is_none());
    }

    #[test]
    fn one_person_holds_a_bounded_number_of_sessions() {
        let mut t = Sessions::new(Duration::from_secs(60), Duration::from_secs(600));
        let (first, _) = t.start("li", 0);
        for i in 1..=MAX_PER_USER as i64 {
            t.start("li", i);
        }
        assert_eq!(t.len(), MAX_PER_USER);
        assert!(t.get(&first, 20, false).is_none(), "the oldest session ended");
    }
}
