//! Engine events as a TypeScript discriminated union on `type`.

use napi_derive::napi;

use super::error::ErrorCode;
use crate::error::SyncError;
use crate::event::{self as core, SyncEvent};

/// The states of a sync: `starting → copying → streaming → stopping → stopped`, or `failed`;
/// `standby` while another instance with the same `name` holds the lease.
#[napi(string_enum = "lowercase")]
pub enum SyncState {
    Idle,
    Starting,
    Standby,
    Copying,
    Streaming,
    Stopping,
    Stopped,
    Failed,
}

impl From<core::SyncState> for SyncState {
    fn from(state: core::SyncState) -> Self {
        match state {
            core::SyncState::Idle => SyncState::Idle,
            core::SyncState::Starting => SyncState::Starting,
            core::SyncState::Standby => SyncState::Standby,
            core::SyncState::Copying => SyncState::Copying,
            core::SyncState::Streaming => SyncState::Streaming,
            core::SyncState::Stopping => SyncState::Stopping,
            core::SyncState::Stopped => SyncState::Stopped,
            core::SyncState::Failed => SyncState::Failed,
        }
    }
}

/// Where a write comes from: the initial copy or the change stream.
#[napi(string_enum = "lowercase")]
pub enum Phase {
    Copy,
    Stream,
}

impl From<core::Phase> for Phase {
    fn from(phase: core::Phase) -> Self {
        match phase {
            core::Phase::Copy => Phase::Copy,
            core::Phase::Stream => Phase::Stream,
        }
    }
}

#[napi(object)]
pub struct SyncErrorInfo {
    /// Stable code such as `ERR_HISTORY_LOST` (the `code` of thrown errors too).
    pub code: ErrorCode,
    pub message: String,
    /// The collection whose sync failed, when the error is one collection's.
    pub namespace: Option<String>,
}

impl From<SyncError> for SyncErrorInfo {
    fn from(e: SyncError) -> Self {
        SyncErrorInfo { code: e.code.into(), message: e.message, namespace: e.namespace }
    }
}

/// Everything `onEvent` callbacks receive; switch on `type`.
#[napi(js_name = "SyncEvent", discriminant = "type", discriminant_case = "camelCase")]
pub enum SyncEventJs {
    /// The sync moved to a new state; `error` is set when it is `failed`.
    State { state: SyncState, error: Option<SyncErrorInfo> },
    /// The search server answered at start.
    Connected {
        #[napi(ts_type = "'elasticsearch' | 'opensearch' | (string & {})")]
        distribution: String,
        version: String,
    },
    /// Copy progress of one collection (`done` on its last report).
    Progress {
        namespace: String,
        index: String,
        copied: i64,
        /// MongoDB's estimate of the collection size at the start of the copy.
        total_estimate: i64,
        /// Documents per second over this run of the copy.
        rate: f64,
        /// Seconds left at that rate.
        eta_seconds: Option<f64>,
        done: bool,
    },
    /// One batch acknowledged by Elasticsearch.
    Batch { namespace: String, index: String, phase: Phase, indexed: i64, deleted: i64, not_found: i64, conflicts: i64, dead_letters: i64, took_ms: i64 },
    /// A transient failure; the operation is tried again after `delayMs`.
    Retry { attempt: u32, delay_ms: i64, cause: String },
    /// A document that could not be written, set aside with the reason.
    DeadLetter { namespace: String, index: String, id: String, reason: String },
    /// A collection-level change and what was done about it (see `onDrop`, `onRename`).
    Change {
        namespace: String,
        #[napi(ts_type = "'drop' | 'rename' | 'dropDatabase' | 'invalidate' | 'resync' | 'discovered'")]
        operation: String,
        /// The new namespace of a `rename`; the new index of a `resync`; the index of a
        /// collection `discovered` by the `namespaces` patterns.
        to: Option<String>,
    },
    /// Something the sync got past but you may want to know (values altered to fit JSON,
    /// a collection passed over, verification off); `namespace` is empty when not one collection's.
    Warning { namespace: String, message: String },
    /// This instance's role among those with the same `name` changed: it `acquired` the lease
    /// (it syncs), `lost` it (another took over; it stopped writing and waits), or stands by
    /// (`standby`: another holds it). `term` is the lease's fencing term, `holder` its holder.
    Leadership {
        #[napi(ts_type = "'acquired' | 'lost' | 'standby'")]
        change: String,
        term: i64,
        holder: String,
    },
    /// The collections this instance syncs now (empty while standing by; a partitioned
    /// member's share, which changes as members join and leave).
    Assignment { collections: Vec<String> },
    /// The Elasticsearch output changed the most one `_bulk` request carries (`batch.adaptive`):
    /// `cause` is `'pressure'` (429, a full queue, 413: halved), `'slow'` (a reply slower than the
    /// target: cut by a quarter) or `'fast'` (replies under half the target: grown).
    BatchSize {
        docs: i64,
        bytes: i64,
        #[napi(ts_type = "'pressure' | 'slow' | 'fast'")]
        cause: String,
    },
}

impl From<&SyncEvent> for SyncEventJs {
    fn from(event: &SyncEvent) -> Self {
        let n = |v: u64| v as i64;
        match event.clone() {
            SyncEvent::State { state, error } => SyncEventJs::State { state: state.into(), error: error.map(SyncErrorInfo::from) },
            SyncEvent::Connected { distribution, version } => SyncEventJs::Connected { distribution, version },
            SyncEvent::Progress { namespace, index, copied, total_estimate, rate, eta_seconds, done } => {
                SyncEventJs::Progress { namespace, index, copied: n(copied), total_estimate: n(total_estimate), rate, eta_seconds, done }
            }
            SyncEvent::Batch { namespace, index, phase, outcome, took_ms } => SyncEventJs::Batch {
                namespace,
                index,
                phase: phase.into(),
                indexed: n(outcome.indexed),
                deleted: n(outcome.deleted),
                not_found: n(outcome.not_found),
                conflicts: n(outcome.conflicts),
                dead_letters: n(outcome.dead_letters),
                took_ms: n(took_ms),
            },
            SyncEvent::Retry { attempt, delay_ms, cause } => SyncEventJs::Retry { attempt, delay_ms: n(delay_ms), cause },
            SyncEvent::DeadLetter { namespace, index, id, reason } => SyncEventJs::DeadLetter { namespace, index, id, reason },
            SyncEvent::Change { namespace, change } => SyncEventJs::Change { namespace, operation: change.operation().to_string(), to: change.to() },
            SyncEvent::Warning { namespace, message } => SyncEventJs::Warning { namespace, message },
            SyncEvent::Leadership { change, term, holder } => SyncEventJs::Leadership { change: change.as_str().to_string(), term: n(term), holder },
            SyncEvent::Assignment { collections } => SyncEventJs::Assignment { collections },
            SyncEvent::BatchSize { docs, bytes, cause } => SyncEventJs::BatchSize { docs: n(docs), bytes: n(bytes), cause: cause.as_str().to_string() },
        }
    }
}
