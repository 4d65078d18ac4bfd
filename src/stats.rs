//! Running totals, readable at any time without locking the pipeline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::event::{BatchOutcome, Phase, SyncState};

#[derive(Debug)]
pub struct Stats {
    copied: AtomicU64,
    streamed: AtomicU64,
    indexed: AtomicU64,
    deleted: AtomicU64,
    conflicts: AtomicU64,
    dead_letters: AtomicU64,
    retries: AtomicU64,
    batches: AtomicU64,
    values_altered: AtomicU64,
    state: Mutex<SyncState>,
}

/// A consistent-enough copy of the totals for reporting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub copied: u64,
    pub streamed: u64,
    pub indexed: u64,
    pub deleted: u64,
    pub conflicts: u64,
    pub dead_letters: u64,
    pub retries: u64,
    pub batches: u64,
    /// Values changed to fit JSON (NaN/Infinity dropped, out-of-range dates as numbers).
    pub values_altered: u64,
    pub state: SyncState,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            copied: AtomicU64::new(0),
            streamed: AtomicU64::new(0),
            indexed: AtomicU64::new(0),
            deleted: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            values_altered: AtomicU64::new(0),
            state: Mutex::new(SyncState::Idle),
        }
    }
}

impl Stats {
    /// Counts one acknowledged batch: `documents` read from MongoDB for it, in the given phase.
    pub fn record_batch(&self, phase: Phase, documents: u64, outcome: &BatchOutcome) {
        let read = match phase {
            Phase::Copy => &self.copied,
            Phase::Stream => &self.streamed,
        };
        read.fetch_add(documents, Ordering::Relaxed);
        self.indexed.fetch_add(outcome.indexed, Ordering::Relaxed);
        self.deleted.fetch_add(outcome.deleted, Ordering::Relaxed);
        self.conflicts.fetch_add(outcome.conflicts, Ordering::Relaxed);
        self.dead_letters.fetch_add(outcome.dead_letters, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_altered_values(&self, count: u64) {
        self.values_altered.fetch_add(count, Ordering::Relaxed);
    }

    pub fn record_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_state(&self, state: SyncState) {
        *self.state.lock().expect("state lock") = state;
    }

    pub fn state(&self) -> SyncState {
        *self.state.lock().expect("state lock")
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            copied: get(&self.copied),
            streamed: get(&self.streamed),
            indexed: get(&self.indexed),
            deleted: get(&self.deleted),
            conflicts: get(&self.conflicts),
            dead_letters: get(&self.dead_letters),
            retries: get(&self.retries),
            batches: get(&self.batches),
            values_altered: get(&self.values_altered),
            state: self.state(),
        }
    }
}
