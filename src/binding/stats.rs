//! `sync.stats()` as a plain JS object: the totals, and one entry per collection.

use std::collections::BTreeMap;

use napi_derive::napi;

use super::event::SyncState;
use crate::stats::{self as core, CollectionSnapshot, StatsSnapshot};

#[napi(object, js_name = "NativeSyncStats")]
pub struct SyncStats {
    /// Documents read by the initial copy and acknowledged.
    pub copied: i64,
    /// Change events read from the stream and acknowledged.
    pub streamed: i64,
    pub indexed: i64,
    pub deleted: i64,
    /// Stale writes Elasticsearch refused because it held a newer version (expected after replays).
    pub conflicts: i64,
    pub dead_letters: i64,
    pub retries: i64,
    pub batches: i64,
    /// Values changed to fit JSON (NaN/Infinity dropped, out-of-range dates as numbers); see `warning` events.
    pub values_altered: i64,
    /// Where the time of the writes went, per stage (totals since the sync was made).
    pub stages: StageTimings,
    pub state: SyncState,
    /// `'leader'` (holds the lease of its `name` and syncs), `'standby'` (waits to take over) or
    /// `'member'` (of a partitioned group: syncs the collections it owns); absent before the
    /// first look at the lease.
    pub role: Option<Role>,
    /// The lease's fencing term: this instance's as leader, the holder's as standby, the highest
    /// of its collections' as a member.
    pub term: Option<i64>,
    /// The collections this instance syncs now.
    pub owned_collections: Vec<String>,
    /// With an Elasticsearch output and `batch.adaptive` on (off by default): the current size of
    /// its `_bulk` requests and how often it changed.
    pub adaptive_batch: Option<AdaptiveBatchStats>,
    /// Per collection, by `"db.collection"`.
    pub collections: BTreeMap<String, NativeCollectionStats>,
    /// Tasks alive in the engine's runtime, shared by every sync of the process (after
    /// `start()`): a count that keeps growing is a leak (the soak checks its slope).
    pub runtime_tasks: Option<i64>,
}

/// The most documents and bytes the next `_bulk` request carries, and the changes so far.
#[napi(object)]
pub struct AdaptiveBatchStats {
    pub docs: i64,
    pub bytes: i64,
    pub shrinks: i64,
    pub grows: i64,
}

impl From<core::AdaptiveBatchSnapshot> for AdaptiveBatchStats {
    fn from(s: core::AdaptiveBatchSnapshot) -> Self {
        AdaptiveBatchStats { docs: n(s.docs), bytes: n(s.bytes), shrinks: n(s.shrinks), grows: n(s.grows) }
    }
}

/// This instance's part among those with the same `name`.
#[napi(string_enum = "lowercase")]
pub enum Role {
    Leader,
    Standby,
    Member,
}

impl From<core::Role> for Role {
    fn from(role: core::Role) -> Self {
        match role {
            core::Role::Leader => Role::Leader,
            core::Role::Standby => Role::Standby,
            core::Role::Member => Role::Member,
        }
    }
}

/// What one collection is doing: `starting` (preparing), `copying`, `streaming`, `done`
/// (`mode: 'copy'` finished), `stopped`, or `failed` (its error failed the sync).
#[napi(string_enum = "lowercase")]
pub enum CollectionPhase {
    Starting,
    Copying,
    Streaming,
    Done,
    Stopped,
    Failed,
}

impl From<core::CollectionPhase> for CollectionPhase {
    fn from(phase: core::CollectionPhase) -> Self {
        match phase {
            core::CollectionPhase::Starting => CollectionPhase::Starting,
            core::CollectionPhase::Copying => CollectionPhase::Copying,
            core::CollectionPhase::Streaming => CollectionPhase::Streaming,
            core::CollectionPhase::Done => CollectionPhase::Done,
            core::CollectionPhase::Stopped => CollectionPhase::Stopped,
            core::CollectionPhase::Failed => CollectionPhase::Failed,
        }
    }
}

/// One collection's figures as the addon gives them (times in ms since the Unix epoch; the
/// package's `stats()` turns them into `Date`s).
#[napi(object)]
pub struct NativeCollectionStats {
    pub phase: CollectionPhase,
    /// Documents copied, over every run of the copy.
    pub copied: i64,
    /// MongoDB's estimate of the collection size when its copy started (at least `copied` once the copy is over).
    pub total_estimate: i64,
    /// Change events applied.
    pub streamed: i64,
    /// Milliseconds between the cluster time of the newest change applied and now.
    pub lag_ms: Option<i64>,
    pub last_change_at: Option<f64>,
    pub last_checkpoint_at: Option<f64>,
    /// Milliseconds since the last checkpoint was saved.
    pub checkpoint_age_ms: Option<i64>,
    /// Bytes of batches handed to the outputs and not acknowledged yet.
    pub in_flight_bytes: i64,
    pub retries: i64,
    pub dead_letters: i64,
}

/// How often a stage ran and how long it took, in milliseconds.
#[napi(object)]
pub struct StageTiming {
    pub count: i64,
    pub total_ms: f64,
    pub max_ms: f64,
}

/// The engine's stages: `readAheadWait` (the stream waiting for its next change), `convert` (one
/// document to JSON), `groupCommitWait` (a ready stream batch waiting for the one in flight),
/// `bulkRequest` (one request to the outputs, answer included), `checkpointSave`,
/// `rateLimitWait` (a batch held back by `rateLimit`).
#[napi(object)]
pub struct StageTimings {
    pub read_ahead_wait: StageTiming,
    pub convert: StageTiming,
    pub group_commit_wait: StageTiming,
    pub bulk_request: StageTiming,
    pub checkpoint_save: StageTiming,
    pub rate_limit_wait: StageTiming,
}

impl From<core::StageSnapshot> for StageTiming {
    fn from(s: core::StageSnapshot) -> Self {
        StageTiming { count: n(s.count), total_ms: s.total_us as f64 / 1000.0, max_ms: s.max_us as f64 / 1000.0 }
    }
}

impl From<core::StageTimings> for StageTimings {
    fn from(s: core::StageTimings) -> Self {
        StageTimings {
            read_ahead_wait: s.read_ahead_wait.into(),
            convert: s.convert.into(),
            group_commit_wait: s.group_commit_wait.into(),
            bulk_request: s.bulk_request.into(),
            checkpoint_save: s.checkpoint_save.into(),
            rate_limit_wait: s.rate_limit_wait.into(),
        }
    }
}

fn n(v: u64) -> i64 {
    v as i64
}

impl From<CollectionSnapshot> for NativeCollectionStats {
    fn from(c: CollectionSnapshot) -> Self {
        NativeCollectionStats {
            phase: c.phase.into(),
            copied: n(c.copied),
            total_estimate: n(c.total_estimate),
            streamed: n(c.streamed),
            lag_ms: c.lag_ms.map(n),
            last_change_at: c.last_change_at_ms.map(|ms| ms as f64),
            last_checkpoint_at: c.last_checkpoint_at_ms.map(|ms| ms as f64),
            checkpoint_age_ms: c.checkpoint_age_ms.map(n),
            in_flight_bytes: n(c.in_flight_bytes),
            retries: n(c.retries),
            dead_letters: n(c.dead_letters),
        }
    }
}

impl From<StatsSnapshot> for SyncStats {
    fn from(s: StatsSnapshot) -> Self {
        SyncStats {
            copied: n(s.copied),
            streamed: n(s.streamed),
            indexed: n(s.indexed),
            deleted: n(s.deleted),
            conflicts: n(s.conflicts),
            dead_letters: n(s.dead_letters),
            retries: n(s.retries),
            batches: n(s.batches),
            values_altered: n(s.values_altered),
            stages: s.stages.into(),
            state: s.state.into(),
            role: s.role.as_ref().map(|r| r.role.into()),
            term: s.role.as_ref().map(|r| n(r.term)),
            owned_collections: s.role.map(|r| r.owned_collections).unwrap_or_default(),
            adaptive_batch: s.adaptive_batch.map(AdaptiveBatchStats::from),
            collections: s.collections.into_iter().map(|(ns, c)| (ns, c.into())).collect(),
            runtime_tasks: s.runtime_tasks.map(n),
        }
    }
}
