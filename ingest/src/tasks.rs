//! Every task ingest spawns, by name, so that a stop waits for all of them and says which
//! one is stuck.
//!
//! Invariants: a task spawned through [`Tasks`] ends when ingest's shutdown token is
//! cancelled (or its input closes because of it), so [`Tasks::stop`] returning `true` means
//! nothing of ingest runs any more; a stop that does not finish within its time names the
//! tasks still running instead of hanging silently. A tracked thread holds a token of the
//! same tracker until it returns.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::task::TaskTracker;

/// How long [`Tasks::stop`] waits by default before naming the stuck tasks.
pub const STOP_WITHIN: Duration = Duration::from_secs(10);

/// The tracker of ingest's tasks (cheap to clone; clones share it).
#[derive(Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    running: Arc<Mutex<BTreeMap<u64, &'static str>>>,
    next: Arc<AtomicU64>,
}

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tasks").field("running", &self.running()).finish()
    }
}

/// Takes a task's name off the list when it ends, returns, panics or is aborted.
struct Running {
    running: Arc<Mutex<BTreeMap<u64, &'static str>>>,
    id: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

impl Tasks {
    /// A new, empty tracker.
    pub fn new() -> Tasks {
        Tasks::default()
    }

    fn register(&self, name: &'static str) -> Running {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.running.lock().unwrap_or_else(|e| e.into_inner()).insert(id, name);
        Running { running: self.running.clone(), id }
    }

    /// Spawns `task` on the current runtime, tracked under `name`.
    pub fn spawn<F>(&self, name: &'static str, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let running = self.register(name);
        self.tracker.spawn(async move {
            let _running = running;
            task.await
        })
    }

    /// Spawns an OS thread named `name`, tracked until `f` returns.
    pub fn spawn_thread<F>(&self, name: &'static str, f: F) -> std::io::Result<std::thread::JoinHandle<()>>
    where
        F: FnOnce() + Send + 'static,
    {
        let running = self.register(name);
        let token = self.tracker.token();
        std::thread::Builder::new().name(name.into()).spawn(move || {
            let _held = (running, token);
            f();
        })
    }

    /// The names of the tasks still running, sorted.
    pub fn running(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.running.lock().unwrap_or_else(|e| e.into_inner()).values().copied().collect();
        names.sort_unstable();
        names
    }

    /// Waits (at most `within`) for every task to end; call after cancelling the shutdown
    /// token. Returns `false`, after logging the names of the tasks still running, if they
    /// did not all end in time.
    pub async fn stop(&self, within: Duration) -> bool {
        self.tracker.close();
        if tokio::time::timeout(within, self.tracker.wait()).await.is_ok() {
            return true;
        }
        let stuck = self.running();
        tracing::error!(
            message = "Stop did not finish in time; these tasks are still running.",
            within_secs = within.as_secs_f64(),
            tasks = ?stuck
        );
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stop_waits_for_every_task_and_names_the_stuck_ones() {
        let tasks = Tasks::new();
        let stop = tokio_util::sync::CancellationToken::new();
        let s = stop.clone();
        tasks.spawn("obedient", async move { s.cancelled().await });
        tasks.spawn("stubborn", std::future::pending::<()>());
        let t = stop.clone();
        tasks
            .spawn_thread("obedient-thread", move || {
                while !t.is_cancelled() {
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
            .unwrap();
        assert_eq!(tasks.running(), ["obedient", "obedient-thread", "stubborn"]);
        stop.cancel();
        assert!(!tasks.stop(Duration::from_millis(300)).await, "the stubborn task keeps the stop from finishing");
        assert_eq!(tasks.running(), ["stubborn"]);

        // Positive control: tasks that obey the token all end, and the stop says so.
        let tasks = Tasks::new();
        let stop = tokio_util::sync::CancellationToken::new();
        let s = stop.clone();
        tasks.spawn("obedient", async move { s.cancelled().await });
        stop.cancel();
        assert!(tasks.stop(Duration::from_secs(5)).await);
        assert!(tasks.running().is_empty());
    }
}
