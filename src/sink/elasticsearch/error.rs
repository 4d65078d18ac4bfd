//! What can go wrong in the Elasticsearch sink; each kind maps to one stable error code at the
//! sink boundary.

use crate::error::{ErrorCode, SyncError};
use crate::retry::GaveUp;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EsError {
    /// The server did not answer at start, or refused our credentials (`ERR_ES_UNREACHABLE`).
    #[error("cannot reach Elasticsearch at {node}: {reason}")]
    Unreachable { node: String, reason: String },
    /// Transient failures went on past `retry.maxAttempts`.
    #[error(transparent)]
    GaveUp(#[from] GaveUp),
    /// A reply that is neither a success nor worth retrying.
    #[error("{what}: {reply}")]
    Refused { what: String, reply: String },
    /// A reply we cannot read as the answer to what we sent.
    #[error("{what}: {reason}")]
    BadReply { what: String, reason: String },
    /// An existing index maps a field differently from the configured mappings (`ERR_CONFIG`).
    #[error("mappings of {namespace}: the existing index \"{index}\" {conflict}; use another index or reindex it")]
    MappingConflict { namespace: String, index: String, conflict: String },
    /// A dead letter could not be recorded in the dead-letter index.
    #[error("cannot record the dead letter of {namespace} {id} in \"{index}\": {reason}")]
    DeadLetterRefused { namespace: String, id: String, index: String, reason: String },
    /// A server-side task (`_reindex`, `_delete_by_query`) ended with failures.
    #[error("{what} had {count} failures: {detail}")]
    TaskFailed { what: String, count: usize, detail: String },
}

impl EsError {
    pub fn code(&self) -> ErrorCode {
        match self {
            EsError::MappingConflict { .. } => ErrorCode::Config,
            EsError::Unreachable { .. } => ErrorCode::EsUnreachable,
            _ => ErrorCode::Elasticsearch,
        }
    }
}

impl From<EsError> for SyncError {
    fn from(e: EsError) -> Self {
        SyncError::new(e.code(), e.to_string())
    }
}
