//! Running totals and per-collection figures, readable at any time without locking the pipeline.
//!
//! The pipeline reports through a few named calls: `record_batch` for every acknowledged batch,
//! `record_retry` (counted to the collection whose task retries, see `CollectionStats::track`),
//! and on `collection(ns)`: `set_phase`, `copy_started`, `checkpointed` and `in_flight`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::SyncResult;
use crate::event::{BatchOutcome, Phase, SyncState};

tokio::task_local! {
    /// The collection whose task is running, so that retries deep in a sink count to it.
    static CURRENT_COLLECTION: Arc<CollectionStats>;
}

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
    /// Time spent per stage, indexed by `Stage as usize`.
    stages: [StageTimer; Stage::ALL.len()],
    state: Mutex<SyncState>,
    role: Mutex<Option<RoleSnapshot>>,
    adaptive_batch: Mutex<Option<AdaptiveBatchSnapshot>>,
    collections: RwLock<BTreeMap<String, Arc<CollectionStats>>>,
    /// The runtime the sync runs on (set at `start`), for its live task count.
    runtime: Mutex<Option<tokio::runtime::Handle>>,
}

/// The Elasticsearch output's current `_bulk` size (`batch.adaptive`) and how often it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AdaptiveBatchSnapshot {
    /// The most documents the next request carries.
    pub docs: u64,
    /// The most bytes the next request carries.
    pub bytes: u64,
    pub shrinks: u64,
    pub grows: u64,
}

/// This instance's part among the instances with the same `name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It holds the lease and syncs.
    Leader,
    /// Another instance holds the lease; this one waits to take over.
    Standby,
    /// A member of a partitioned group (`instances`): it syncs the collections it owns.
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Standby => "standby",
            Role::Member => "member",
        }
    }
}

/// The role, the lease's term (this instance's as leader, the holder's as standby; as a member,
/// the highest term among its collections' leases) and the collections this instance syncs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSnapshot {
    pub role: Role,
    pub term: u64,
    pub owned_collections: Vec<String>,
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
    /// Where the time of the writes went, per stage.
    pub stages: StageTimings,
    pub state: SyncState,
    /// With a lease (every MongoDB-backed sync): this instance's role; none before the first look.
    pub role: Option<RoleSnapshot>,
    /// With an Elasticsearch output and `batch.adaptive` on: its current request size.
    pub adaptive_batch: Option<AdaptiveBatchSnapshot>,
    /// One entry per collection the sync has worked on, by namespace.
    pub collections: BTreeMap<String, CollectionSnapshot>,
    /// Tasks alive in the runtime the sync runs on (shared by every sync of the process): a
    /// count that grows without bound is a leak. None before `start`.
    pub runtime_tasks: Option<u64>,
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
            stages: Default::default(),
            state: Mutex::new(SyncState::Idle),
            role: Mutex::new(None),
            adaptive_batch: Mutex::new(None),
            collections: RwLock::new(BTreeMap::new()),
            runtime: Mutex::new(None),
        }
    }
}

impl Stats {
    /// The figures of one collection, created at first use.
    pub fn collection(&self, namespace: &str) -> Arc<CollectionStats> {
        if let Some(found) = self.collections.read().expect("collections lock").get(namespace) {
            return found.clone();
        }
        self.collections.write().expect("collections lock").entry(namespace.to_string()).or_default().clone()
    }

    /// Counts one acknowledged batch of `namespace`: `documents` read from MongoDB for it, in
    /// the given phase; `newest_version` is the highest version among its writes (in the stream,
    /// that of its newest change).
    /// Remembers the runtime the sync runs on (the caller's), whose tasks `snapshot` counts.
    pub fn set_runtime(&self) {
        *self.runtime.lock().expect("runtime lock") = tokio::runtime::Handle::try_current().ok();
    }

    /// Drops a collection that is followed no more (dropped): its figures go with it.
    pub fn forget_collection(&self, namespace: &str) {
        self.collections.write().expect("collections lock").remove(namespace);
    }

    pub fn record_batch(&self, namespace: &str, phase: Phase, documents: u64, newest_version: Option<i64>, outcome: &BatchOutcome) {
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
        self.collection(namespace).record_batch(phase, documents, newest_version, outcome);
    }

    pub fn record_altered_values(&self, count: u64) {
        self.values_altered.fetch_add(count, Ordering::Relaxed);
    }

    /// Counts a retry, to the total and to the collection whose task it happens in (if any).
    /// One pass through `stage` took `took`.
    pub fn record_stage(&self, stage: Stage, took: Duration) {
        self.stages[stage as usize].record(took);
    }

    pub fn record_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        let _ = CURRENT_COLLECTION.try_with(|c| c.retries.fetch_add(1, Ordering::Relaxed));
    }

    pub fn set_state(&self, state: SyncState) {
        *self.state.lock().expect("state lock") = state;
    }

    pub fn state(&self) -> SyncState {
        *self.state.lock().expect("state lock")
    }

    pub fn set_role(&self, role: Option<RoleSnapshot>) {
        *self.role.lock().expect("role lock") = role;
    }

    pub fn role(&self) -> Option<RoleSnapshot> {
        self.role.lock().expect("role lock").clone()
    }

    pub fn set_adaptive_batch(&self, batch: Option<AdaptiveBatchSnapshot>) {
        *self.adaptive_batch.lock().expect("adaptive batch lock") = batch;
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let now = now_ms();
        let collections = self.collections.read().expect("collections lock").iter().map(|(ns, c)| (ns.clone(), c.snapshot(now))).collect();
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
            stages: StageTimings::from_timers(&self.stages),
            state: self.state(),
            role: self.role(),
            adaptive_batch: *self.adaptive_batch.lock().expect("adaptive batch lock"),
            collections,
            runtime_tasks: self.runtime.lock().expect("runtime lock").as_ref().map(|h| h.metrics().num_alive_tasks() as u64),
        }
    }
}

/// A stage of a change's (or copied document's) way from the source to an acknowledged write,
/// timed so that the engine's own share of the latency shows apart from the servers'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The stream waiting for its read-ahead to hand it the next change.
    ReadAheadWait,
    /// Converting one document to the JSON of its write.
    Convert,
    /// A stream batch ready to go waiting for the one in flight to be acknowledged.
    GroupCommitWait,
    /// One request to the outputs (a `_bulk` to Elasticsearch), answer included.
    BulkRequest,
    /// Saving a checkpoint.
    CheckpointSave,
    /// A batch waiting for `rateLimit` to let it go.
    RateLimitWait,
}

impl Stage {
    pub const ALL: [Stage; 6] = [Stage::ReadAheadWait, Stage::Convert, Stage::GroupCommitWait, Stage::BulkRequest, Stage::CheckpointSave, Stage::RateLimitWait];
}

#[derive(Debug, Default)]
struct StageTimer {
    count: AtomicU64,
    total_us: AtomicU64,
    max_us: AtomicU64,
}

impl StageTimer {
    fn record(&self, took: Duration) {
        let us = took.as_micros().min(u64::MAX as u128) as u64;
        self.count.fetch_add(1, Ordering::Relaxed);
        self.total_us.fetch_add(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    fn snapshot(&self) -> StageSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StageSnapshot { count: get(&self.count), total_us: get(&self.total_us), max_us: get(&self.max_us) }
    }
}

/// How often a stage ran and how long it took, in microseconds (totals since the sync was made).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StageSnapshot {
    pub count: u64,
    pub total_us: u64,
    pub max_us: u64,
}

/// The time of every [`Stage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StageTimings {
    pub read_ahead_wait: StageSnapshot,
    pub convert: StageSnapshot,
    pub group_commit_wait: StageSnapshot,
    pub bulk_request: StageSnapshot,
    pub checkpoint_save: StageSnapshot,
    pub rate_limit_wait: StageSnapshot,
}

impl StageTimings {
    fn from_timers(timers: &[StageTimer; Stage::ALL.len()]) -> Self {
        let at = |stage: Stage| timers[stage as usize].snapshot();
        StageTimings {
            read_ahead_wait: at(Stage::ReadAheadWait),
            convert: at(Stage::Convert),
            group_commit_wait: at(Stage::GroupCommitWait),
            bulk_request: at(Stage::BulkRequest),
            checkpoint_save: at(Stage::CheckpointSave),
            rate_limit_wait: at(Stage::RateLimitWait),
        }
    }
}

/// What one collection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CollectionPhase {
    /// Its task is preparing (checkpoint, index) or has not reached the copy or the stream yet.
    #[default]
    Starting,
    Copying,
    Streaming,
    /// `mode: 'copy'`: its copy is finished.
    Done,
    /// Its task ended without an error (the sync was stopped, or another collection failed).
    Stopped,
    /// Its task ended with the error that failed the sync.
    Failed,
}

impl CollectionPhase {
    const ALL: [CollectionPhase; 6] = [
        CollectionPhase::Starting,
        CollectionPhase::Copying,
        CollectionPhase::Streaming,
        CollectionPhase::Done,
        CollectionPhase::Stopped,
        CollectionPhase::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CollectionPhase::Starting => "starting",
            CollectionPhase::Copying => "copying",
            CollectionPhase::Streaming => "streaming",
            CollectionPhase::Done => "done",
            CollectionPhase::Stopped => "stopped",
            CollectionPhase::Failed => "failed",
        }
    }

    fn from_u8(n: u8) -> Self {
        Self::ALL.get(n as usize).copied().unwrap_or_default()
    }
}

/// The running figures of one collection.
#[derive(Debug, Default)]
pub struct CollectionStats {
    phase: AtomicU8,
    copied: AtomicU64,
    total_estimate: AtomicU64,
    streamed: AtomicU64,
    retries: AtomicU64,
    dead_letters: AtomicU64,
    in_flight_bytes: AtomicU64,
    /// Cluster time (ms since the epoch) of the newest change applied; 0 before the first.
    applied_ms: AtomicU64,
    /// Wall-clock time (ms since the epoch) of the last checkpoint saved; 0 before the first.
    checkpointed_ms: AtomicU64,
}

/// A copy of one collection's figures; times in milliseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionSnapshot {
    pub phase: CollectionPhase,
    /// Documents copied, over every run of the copy (as its checkpoint counts them).
    pub copied: u64,
    /// MongoDB's estimate of the collection's size when its copy started (at least `copied` once done).
    pub total_estimate: u64,
    /// Change events applied.
    pub streamed: u64,
    /// Now minus the cluster time of the newest change applied (0 if the clocks disagree).
    pub lag_ms: Option<u64>,
    pub last_change_at_ms: Option<u64>,
    pub last_checkpoint_at_ms: Option<u64>,
    pub checkpoint_age_ms: Option<u64>,
    /// Bytes of batches handed to the outputs and not acknowledged yet.
    pub in_flight_bytes: u64,
    pub retries: u64,
    pub dead_letters: u64,
}

impl CollectionStats {
    pub fn set_phase(&self, phase: CollectionPhase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    pub fn phase(&self) -> CollectionPhase {
        CollectionPhase::from_u8(self.phase.load(Ordering::Relaxed))
    }

    /// A run of the copy starts with `copied` documents already done (by earlier runs) of
    /// about `total_estimate`.
    pub fn copy_started(&self, copied: u64, total_estimate: u64) {
        self.copied.store(copied, Ordering::Relaxed);
        self.total_estimate.store(total_estimate, Ordering::Relaxed);
    }

    /// A checkpoint of this collection was saved just now.
    pub fn checkpointed(&self) {
        self.checkpointed_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// `bytes` are handed to the outputs until the returned guard is dropped (acknowledged,
    /// failed or abandoned alike).
    pub fn in_flight(self: &Arc<Self>, bytes: usize) -> InFlight {
        let bytes = bytes as u64;
        self.in_flight_bytes.fetch_add(bytes, Ordering::Relaxed);
        InFlight { stats: self.clone(), bytes }
    }

    /// Runs a collection's task: retries inside it count to this collection, and its phase
    /// ends as `stopped` (or stays `done`) on success, `failed` on error.
    pub async fn track<T>(self: Arc<Self>, task: impl Future<Output = SyncResult<T>>) -> SyncResult<T> {
        let result = CURRENT_COLLECTION.scope(self.clone(), task).await;
        match (&result, self.phase()) {
            (Err(_), _) => self.set_phase(CollectionPhase::Failed),
            (Ok(_), CollectionPhase::Done) => {}
            (Ok(_), _) => self.set_phase(CollectionPhase::Stopped),
        }
        result
    }

    fn record_batch(&self, phase: Phase, documents: u64, newest_version: Option<i64>, outcome: &BatchOutcome) {
        self.dead_letters.fetch_add(outcome.dead_letters, Ordering::Relaxed);
        match phase {
            Phase::Copy => {
                self.copied.fetch_add(documents, Ordering::Relaxed);
            }
            Phase::Stream => {
                self.streamed.fetch_add(documents, Ordering::Relaxed);
                if let Some(version) = newest_version {
                    self.applied_ms.fetch_max(cluster_ms_of_version(version), Ordering::Relaxed);
                }
            }
        }
    }

    fn snapshot(&self, now_ms: u64) -> CollectionSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let when = |c: &AtomicU64| Some(get(c)).filter(|&ms| ms > 0);
        let (copied, phase) = (get(&self.copied), self.phase());
        let total_estimate = get(&self.total_estimate);
        let copy_over = !matches!(phase, CollectionPhase::Starting | CollectionPhase::Copying);
        let last_change_at_ms = when(&self.applied_ms);
        let last_checkpoint_at_ms = when(&self.checkpointed_ms);
        CollectionSnapshot {
            phase,
            copied,
            total_estimate: if copy_over { total_estimate.max(copied) } else { total_estimate },
            streamed: get(&self.streamed),
            lag_ms: last_change_at_ms.map(|at| now_ms.saturating_sub(at)),
            last_change_at_ms,
            last_checkpoint_at_ms,
            checkpoint_age_ms: last_checkpoint_at_ms.map(|at| now_ms.saturating_sub(at)),
            in_flight_bytes: get(&self.in_flight_bytes),
            retries: get(&self.retries),
            dead_letters: get(&self.dead_letters),
        }
    }
}

/// Bytes in flight for a collection, released when dropped.
#[derive(Debug)]
pub struct InFlight {
    stats: Arc<CollectionStats>,
    bytes: u64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.stats.in_flight_bytes.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// The cluster time (ms since the epoch, to the second) a write's version was made from: the
/// inverse of `transform::version_of` (`seconds << 31 | increment`).
fn cluster_ms_of_version(version: i64) -> u64 {
    (version.max(0) >> 31) as u64 * 1000
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use mongodb::bson::Timestamp;

    use super::*;
    use crate::error::{ErrorCode, SyncError};
    use crate::transform::version_of;

    fn outcome(indexed: u64, dead_letters: u64) -> BatchOutcome {
        BatchOutcome { indexed, dead_letters, ..Default::default() }
    }

    #[test]
    fn batches_count_to_the_totals_and_to_their_collection() {
        let stats = Stats::default();
        stats.collection("shop.orders").copy_started(10, 100);
        stats.record_batch("shop.orders", Phase::Copy, 5, Some(7), &outcome(4, 1));
        stats.record_batch("shop.users", Phase::Stream, 3, None, &outcome(3, 0));
        let s = stats.snapshot();
        assert_eq!((s.copied, s.streamed, s.indexed, s.dead_letters, s.batches), (5, 3, 7, 1, 2));
        let orders = &s.collections["shop.orders"];
        assert_eq!((orders.copied, orders.total_estimate, orders.streamed, orders.dead_letters), (15, 100, 0, 1));
        assert_eq!(orders.last_change_at_ms, None, "a copy applies no change");
        let users = &s.collections["shop.users"];
        assert_eq!((users.copied, users.streamed, users.phase), (0, 3, CollectionPhase::Starting));
        assert_eq!(s.collections.keys().collect::<Vec<_>>(), ["shop.orders", "shop.users"]);
    }

    #[test]
    fn lag_is_now_minus_the_newest_applied_cluster_time() {
        let stats = Stats::default();
        let at = |secs: u32, inc: u32| Some(version_of(Timestamp { time: secs, increment: inc }));
        stats.record_batch("a.b", Phase::Stream, 2, at(1_700_000_100, 7), &outcome(2, 0));
        // An older batch acknowledged later (a replay) does not move the time back.
        stats.record_batch("a.b", Phase::Stream, 1, at(1_700_000_050, 1), &outcome(1, 0));
        let c = stats.collection("a.b").snapshot(1_700_000_102_500);
        assert_eq!(c.last_change_at_ms, Some(1_700_000_100_000));
        assert_eq!(c.lag_ms, Some(2_500));
        // A cluster clock ahead of ours is no negative lag.
        assert_eq!(stats.collection("a.b").snapshot(1_700_000_000_000).lag_ms, Some(0));
    }

    #[test]
    fn checkpoint_age_and_bytes_in_flight() {
        let stats = Stats::default();
        let c = stats.collection("a.b");
        assert_eq!((c.snapshot(5).last_checkpoint_at_ms, c.snapshot(5).checkpoint_age_ms), (None, None));
        c.checkpointed();
        let at = c.snapshot(0).last_checkpoint_at_ms.expect("checkpointed");
        assert_eq!(c.snapshot(at + 1200).checkpoint_age_ms, Some(1200));
        let first = c.in_flight(1000);
        let second = c.in_flight(24);
        assert_eq!(c.snapshot(0).in_flight_bytes, 1024);
        drop(first);
        assert_eq!(c.snapshot(0).in_flight_bytes, 24);
        drop(second);
        assert_eq!(c.snapshot(0).in_flight_bytes, 0);
    }

    #[test]
    fn the_total_estimate_is_at_least_what_was_copied_once_the_copy_is_over() {
        let c = CollectionStats::default();
        c.set_phase(CollectionPhase::Copying);
        c.copy_started(0, 10);
        c.record_batch(Phase::Copy, 12, None, &outcome(12, 0));
        assert_eq!(c.snapshot(0).total_estimate, 10, "an estimate while copying");
        c.set_phase(CollectionPhase::Streaming);
        assert_eq!(c.snapshot(0).total_estimate, 12);
    }

    #[tokio::test]
    async fn retries_count_to_the_collection_whose_task_retries() {
        let stats = Arc::new(Stats::default());
        let inner = stats.clone();
        let task = async move {
            inner.record_retry();
            // Also from futures polled inside the task, as sinks are.
            futures::future::join(async { inner.record_retry() }, async {}).await;
            Ok::<_, SyncError>(())
        };
        stats.collection("a.b").track(task).await.expect("task");
        stats.record_retry(); // outside any collection's task
        let s = stats.snapshot();
        assert_eq!(s.retries, 3);
        assert_eq!(s.collections["a.b"].retries, 2);
        assert_eq!(s.collections["a.b"].phase, CollectionPhase::Stopped);
    }

    #[tokio::test]
    async fn a_task_ends_stopped_done_or_failed() {
        let stats = Stats::default();
        let done = stats.collection("a.done");
        done.set_phase(CollectionPhase::Done);
        done.clone().track(async { Ok::<_, SyncError>(()) }).await.expect("done");
        let failed = stats.collection("a.failed");
        failed.set_phase(CollectionPhase::Streaming);
        let err = failed.clone().track(async { Err::<(), _>(SyncError::new(ErrorCode::Mongo, "boom")) }).await;
        assert!(err.is_err());
        assert_eq!((done.phase(), failed.phase()), (CollectionPhase::Done, CollectionPhase::Failed));
    }

    #[test]
    fn phases_round_trip_through_their_number() {
        for phase in CollectionPhase::ALL {
            assert_eq!(CollectionPhase::from_u8(phase as u8), phase);
        }
    }

    #[tokio::test]
    async fn the_runtime_tasks_are_counted_once_started() {
        let stats = Stats::default();
        assert_eq!(stats.snapshot().runtime_tasks, None, "not started");
        stats.set_runtime();
        let before = stats.snapshot().runtime_tasks.expect("counted once started");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move { rx.await.ok() });
        assert_eq!(stats.snapshot().runtime_tasks, Some(before + 1));
        tx.send(()).unwrap();
        task.await.unwrap();
        assert_eq!(stats.snapshot().runtime_tasks, Some(before));
    }
}
