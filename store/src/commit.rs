//! Group commit: many writers, one fdatasync, the head updated in log order.
//!
//! A writer appends its group of frames to the log under the writer lock and takes a
//! ticket (tickets number the groups in log order). It then waits until its ticket is
//! durable: the first waiter with nothing in flight becomes the syncer and runs one
//! fdatasync for every group written before it started; the others wait for it. Then each
//! writer applies its group to the head, in ticket order.
//!
//! Design constraints:
//! - Nothing is visible (in the head, in `gateway_seq`, in queries) before it is durable:
//!   ingest acks a gateway on what the store shows.
//! - The head sees groups in log order, so replaying the log after a crash rebuilds the same
//!   head, including which of two writes of one timestamp won.
//! - A failed fdatasync poisons the log: every group it covered, and every later one, fails;
//!   groups made durable by an earlier sync succeed. A writer whose group failed still takes
//!   its turn in the apply order (applying nothing), so no one waits for it forever.
//! - A checkpoint waits, under the writer lock, until every issued ticket is applied: the
//!   head it cuts then holds everything in the log segments it seals.

use std::sync::{Condvar, Mutex, MutexGuard};

use crate::config::FsyncPolicy;
use crate::error::StoreError;
use crate::wal::{self, SyncHandle};

pub(crate) struct Commit {
    state: Mutex<State>,
    changed: Condvar,
    fsync: FsyncPolicy,
}

struct State {
    /// Last ticket issued (groups written to the log).
    issued: u64,
    /// Every ticket up to this one is durable.
    synced: u64,
    /// Every ticket up to this one has been applied to the head (or failed).
    applied: u64,
    /// A syncer is running fdatasync.
    syncing: bool,
    /// The log file the latest group was written to.
    handle: SyncHandle,
}

impl Commit {
    pub(crate) fn new(handle: SyncHandle, fsync: FsyncPolicy) -> Commit {
        Commit {
            state: Mutex::new(State { issued: 0, synced: 0, applied: 0, syncing: false, handle }),
            changed: Condvar::new(),
            fsync,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed.wait(guard).unwrap_or_else(|e| e.into_inner())
    }

    /// Numbers a group just written to the log (call under the writer lock).
    pub(crate) fn issue(&self, handle: SyncHandle) -> u64 {
        let mut s = self.lock();
        s.issued += 1;
        s.handle = handle;
        s.issued
    }

    /// Points later syncs at a new log segment (call under the writer lock).
    pub(crate) fn set_handle(&self, handle: SyncHandle) {
        self.lock().handle = handle;
    }

    /// The log's path if a failed write or fdatasync has poisoned it: appends are refused
    /// until the store is reopened.
    pub(crate) fn poisoned(&self) -> Option<std::path::PathBuf> {
        let s = self.lock();
        s.handle.poisoned.load(std::sync::atomic::Ordering::Acquire).then(|| s.handle.path.clone())
    }

    /// Returns once `ticket`'s group is durable, running the fdatasync if no one else is.
    pub(crate) fn wait_durable(&self, ticket: u64) -> Result<(), StoreError> {
        if self.fsync == FsyncPolicy::Never {
            return Ok(());
        }
        let mut s = self.lock();
        loop {
            if s.synced >= ticket {
                return Ok(());
            }
            if s.handle.poisoned.load(std::sync::atomic::Ordering::Acquire) {
                return Err(StoreError::Poisoned { path: s.handle.path.clone() });
            }
            if s.syncing {
                s = self.wait(s);
                continue;
            }
            s.syncing = true;
            let target = s.issued;
            let handle = s.handle.clone();
            drop(s);
            let result = wal::sync(&handle, self.fsync);
            s = self.lock();
            s.syncing = false;
            if result.is_ok() {
                s.synced = s.synced.max(target);
            }
            self.changed.notify_all();
            result?;
        }
    }

    /// Runs `apply` once every earlier ticket has been applied.
    pub(crate) fn apply_in_order(&self, ticket: u64, apply: impl FnOnce()) {
        let mut s = self.lock();
        while s.applied + 1 < ticket {
            s = self.wait(s);
        }
        drop(s);
        apply();
        let mut s = self.lock();
        s.applied = s.applied.max(ticket);
        self.changed.notify_all();
    }

    /// Returns once every issued ticket has been applied (call under the writer lock, so
    /// that no new ticket can be issued meanwhile).
    pub(crate) fn wait_all_applied(&self) {
        let mut s = self.lock();
        while s.applied < s.issued {
            s = self.wait(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use frames::fs::FsFile;

    use super::*;

    /// A log file whose `sync_data` blocks until the test releases it, and counts.
    #[derive(Debug, Default)]
    struct GatedFile {
        state: Mutex<Gate>,
        changed: Condvar,
    }

    #[derive(Debug, Default)]
    struct Gate {
        entered: u64,
        released: u64,
        syncs: u64,
        fail: bool,
    }

    impl GatedFile {
        fn lock(&self) -> MutexGuard<'_, Gate> {
            self.state.lock().unwrap()
        }

        /// Waits until `n` syncs have started.
        fn wait_entered(&self, n: u64) {
            let mut g = self.lock();
            while g.entered < n {
                g = self.changed.wait(g).unwrap();
            }
        }

        /// Lets one more sync finish.
        fn release(&self) {
            self.lock().released += 1;
            self.changed.notify_all();
        }

        fn syncs(&self) -> u64 {
            self.lock().syncs
        }
    }

    impl FsFile for GatedFile {
        fn append(&self, _: &[u8]) -> std::io::Result<()> {
            Ok(())
        }
        fn read_all(&self) -> std::io::Result<Vec<u8>> {
            Ok(Vec::new())
        }
        fn read_exact_at(&self, _: &mut [u8], _: u64) -> std::io::Result<()> {
            Ok(())
        }
        fn set_len(&self, _: u64) -> std::io::Result<()> {
            Ok(())
        }
        fn sync_data(&self) -> std::io::Result<()> {
            let mut g = self.lock();
            g.entered += 1;
            let me = g.entered;
            self.changed.notify_all();
            while g.released < me {
                g = self.changed.wait(g).unwrap();
            }
            g.syncs += 1;
            if g.fail { Err(std::io::Error::other("the disk said no")) } else { Ok(()) }
        }
        fn sync_all(&self) -> std::io::Result<()> {
            self.sync_data()
        }
    }

    fn setup(fail: bool) -> (Arc<Commit>, Arc<GatedFile>, SyncHandle) {
        let file = Arc::new(GatedFile::default());
        file.lock().fail = fail;
        let handle = SyncHandle::new(file.clone(), "wal/1.log".into());
        (Arc::new(Commit::new(handle.clone(), FsyncPolicy::Always)), file, handle)
    }

    #[test]
    fn a_writer_is_acknowledged_only_after_the_sync_that_covers_its_group() {
        let (commit, file, handle) = setup(false);
        let t1 = commit.issue(handle.clone());
        let t2 = commit.issue(handle.clone());
        let acked = Arc::new(AtomicBool::new(false));
        let writer = {
            let (commit, acked) = (commit.clone(), acked.clone());
            std::thread::spawn(move || {
                let r = commit.wait_durable(t2);
                acked.store(true, Ordering::SeqCst);
                r
            })
        };
        file.wait_entered(1);
        // The sync has started and not finished: the writer must still be waiting.
        assert!(!acked.load(Ordering::SeqCst), "acknowledged before its sync finished");
        // A group written while that sync runs is not covered by it.
        let t3 = commit.issue(handle);
        file.release();
        writer.join().unwrap().unwrap();
        assert!(acked.load(Ordering::SeqCst));
        assert_eq!(file.syncs(), 1);
        // The group before shared that sync: no second one for it.
        commit.wait_durable(t1).unwrap();
        assert_eq!(file.syncs(), 1, "one sync covers every group written before it started");
        // The group written during the sync needs (and gets) its own.
        let late = {
            let commit = commit.clone();
            std::thread::spawn(move || commit.wait_durable(t3))
        };
        file.wait_entered(2);
        file.release();
        late.join().unwrap().unwrap();
        assert_eq!(file.syncs(), 2);
    }

    #[test]
    fn a_failed_sync_fails_every_waiter_it_covered_and_every_later_group() {
        let (commit, file, handle) = setup(true);
        assert_eq!(commit.poisoned(), None, "a log that has not failed takes writes");
        let tickets = [commit.issue(handle.clone()), commit.issue(handle.clone()), commit.issue(handle.clone())];
        let waiters: Vec<_> = tickets
            .iter()
            .map(|&t| {
                let commit = commit.clone();
                std::thread::spawn(move || commit.wait_durable(t))
            })
            .collect();
        file.wait_entered(1);
        file.release();
        for (t, w) in tickets.iter().zip(waiters) {
            let r = w.join().unwrap();
            assert!(r.is_err(), "ticket {t} was acknowledged although its sync failed");
        }
        assert_eq!(file.syncs(), 1, "the waiters learn of the failure; they do not retry on a poisoned log");
        assert!(handle.poisoned.load(Ordering::SeqCst));
        assert_eq!(commit.poisoned(), Some("wal/1.log".into()), "the store says it refuses writes, and which log");
        let later = commit.issue(handle);
        assert!(matches!(commit.wait_durable(later), Err(StoreError::Poisoned { .. })));
        // Failed groups still take their turn in the apply order: nobody waits for ever.
        for t in tickets.into_iter().chain([later]) {
            commit.apply_in_order(t, || {});
        }
        commit.wait_all_applied();
    }

    #[test]
    fn groups_are_applied_in_ticket_order_whatever_order_their_writers_arrive_in() {
        let (commit, _, handle) = setup(false);
        let tickets: Vec<u64> = (0..4).map(|_| commit.issue(handle.clone())).collect();
        let order = Arc::new(Mutex::new(Vec::new()));
        let late: Vec<_> = tickets[1..]
            .iter()
            .rev()
            .map(|&t| {
                let (commit, order) = (commit.clone(), order.clone());
                std::thread::spawn(move || commit.apply_in_order(t, || order.lock().unwrap().push(t)))
            })
            .collect();
        commit.apply_in_order(tickets[0], || order.lock().unwrap().push(tickets[0]));
        late.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(*order.lock().unwrap(), tickets);
        commit.wait_all_applied();
    }

    #[test]
    fn with_fsync_never_nothing_is_synced_and_every_group_is_acknowledged() {
        let file = Arc::new(GatedFile::default());
        let handle = SyncHandle::new(file.clone(), "wal".into());
        let commit = Commit::new(handle.clone(), FsyncPolicy::Never);
        let t = commit.issue(handle);
        commit.wait_durable(t).unwrap();
        assert_eq!(file.syncs(), 0);
    }
}
