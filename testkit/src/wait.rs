//! Waiting with a deadline: poll until a condition holds, or bound one future.
//!
//! Both use tokio's clock, so they also work (and skip ahead) under paused time.

use std::future::Future;
use std::time::Duration;

/// How often [`eventually`] polls.
const POLL: Duration = Duration::from_millis(100);

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
///
/// For state that converges (a reading stored, a process answering): tests assert on the
/// end state without guessing how long the way there takes on a loaded machine.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Awaits `fut`, or panics after `timeout` naming `what`.
///
/// For one request that must be answered: a hung peer fails the test instead of hanging it.
pub async fn within<T>(what: &str, timeout: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(timeout, fut).await {
        Ok(v) => v,
        Err(_) => panic!("no answer within {timeout:?} for {what}"),
    }
}
