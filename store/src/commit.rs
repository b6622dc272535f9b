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
            let result = wal::sync(&handle.file, &handle.path, &handle.poisoned, self.fsync);
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
