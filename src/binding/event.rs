//! Engine events as a TypeScript discriminated union on `type`.

use napi_derive::napi;

use crate::event::SyncEvent;

#[napi(object)]
pub struct SyncErrorInfo {
    /// Stable code such as `ERR_HISTORY_LOST` (the `code` of thrown errors too).
    #[napi(
        ts_type = "'ERR_CONFIG' | 'ERR_STATE' | 'ERR_MONGO_UNREACHABLE' | 'ERR_ES_UNREACHABLE' | 'ERR_MONGO' | 'ERR_ELASTICSEARCH' | 'ERR_OUTPUT_UNREACHABLE' | 'ERR_OUTPUT' | 'ERR_HISTORY_LOST' | 'ERR_EVENT_TOO_LARGE' | 'ERR_CHECKPOINT' | 'ERR_INTERNAL'"
    )]
    pub code: String,
    pub message: String,
}

/// Everything `onEvent` callbacks receive; switch on `type`.
#[napi(js_name = "SyncEvent", discriminant = "type", discriminant_case = "camelCase")]
pub enum SyncEventJs {
    /// The sync moved to a new state; `error` is set when it is `failed`.
    State {
        #[napi(ts_type = "'idle' | 'starting' | 'copying' | 'streaming' | 'stopping' | 'stopped' | 'failed'")]
        state: String,
        error: Option<SyncErrorInfo>,
    },
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
    Batch {
        namespace: String,
        index: String,
        #[napi(ts_type = "'copy' | 'stream'")]
        phase: String,
        indexed: i64,
        deleted: i64,
        conflicts: i64,
        dead_letters: i64,
        took_ms: i64,
    },
    /// A transient failure; the operation is tried again after `delayMs`.
    Retry {
        attempt: u32,
        delay_ms: i64,
        cause: String,
    },
    /// A document that could not be written, set aside with the reason.
    DeadLetter {
        namespace: String,
        index: String,
        id: String,
        reason: String,
    },
    /// A collection-level change and what was done about it (see `onDrop`, `onRename`).
    Change {
        namespace: String,
        #[napi(ts_type = "'drop' | 'rename' | 'dropDatabase' | 'invalidate' | 'resync' | 'discovered'")]
        operation: String,
        /// The new namespace of a `rename`; the new index of a `resync`; the index of a
        /// collection `discovered` by the `namespaces` patterns.
        to: Option<String>,
    },
    Warning {
        namespace: String,
        message: String,
    },
}

impl From<&SyncEvent> for SyncEventJs {
    fn from(event: &SyncEvent) -> Self {
        let n = |v: u64| v as i64;
        match event.clone() {
            SyncEvent::State { state, error } => SyncEventJs::State {
                state: state.as_str().to_string(),
                error: error.map(|e| SyncErrorInfo { code: e.code.as_str().to_string(), message: e.message }),
            },
            SyncEvent::Connected { distribution, version } => SyncEventJs::Connected { distribution, version },
            SyncEvent::Progress { namespace, index, copied, total_estimate, rate, eta_seconds, done } => {
                SyncEventJs::Progress { namespace, index, copied: n(copied), total_estimate: n(total_estimate), rate, eta_seconds, done }
            }
            SyncEvent::Batch { namespace, index, phase, outcome, took_ms } => SyncEventJs::Batch {
                namespace,
                index,
                phase: phase.as_str().to_string(),
                indexed: n(outcome.indexed),
                deleted: n(outcome.deleted),
                conflicts: n(outcome.conflicts),
                dead_letters: n(outcome.dead_letters),
                took_ms: n(took_ms),
            },
            SyncEvent::Retry { attempt, delay_ms, cause } => SyncEventJs::Retry { attempt, delay_ms: n(delay_ms), cause },
            SyncEvent::DeadLetter { namespace, index, id, reason } => SyncEventJs::DeadLetter { namespace, index, id, reason },
            SyncEvent::Change { namespace, change } => SyncEventJs::Change { namespace, operation: change.operation().to_string(), to: change.to() },
            SyncEvent::Warning { namespace, message } => SyncEventJs::Warning { namespace, message },
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::error::ErrorCode;

    /// The committed `index.d.ts` names every code the engine can give.
    #[test]
    fn the_typescript_error_codes_are_complete() {
        let dts = include_str!("../../index.d.ts");
        let start = dts.find("export interface SyncErrorInfo").expect("SyncErrorInfo in index.d.ts");
        let info = &dts[start..start + dts[start..].find('}').expect("end of SyncErrorInfo")];
        for code in ErrorCode::ALL {
            assert!(info.contains(&format!("'{}'", code.as_str())), "index.d.ts SyncErrorInfo.code lacks {}", code.as_str());
        }
    }
}
