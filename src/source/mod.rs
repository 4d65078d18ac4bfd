//! Reading from MongoDB: the initial copy of a collection, and its change stream.

pub mod change_stream;
pub mod copy;

use mongodb::error::{Error, ErrorKind};

use crate::error::{cause_chain, ErrorCode, SyncError};

/// Maps a driver error to an engine error. Network and server-selection failures get
/// `MongoUnreachable`, which the pipeline treats as transient once it runs.
pub fn mongo_error(context: impl std::fmt::Display, err: &Error) -> SyncError {
    let code = match *err.kind {
        ErrorKind::Io(_) | ErrorKind::ServerSelection { .. } | ErrorKind::ConnectionPoolCleared { .. } => ErrorCode::MongoUnreachable,
        _ if err.contains_label("ResumableChangeStreamError") || err.contains_label("RetryableWriteError") => {
            ErrorCode::MongoUnreachable
        }
        _ if change_stream::is_history_lost(err) => ErrorCode::HistoryLost,
        _ => ErrorCode::Mongo,
    };
    SyncError::new(code, format!("{context}: {}", cause_chain(err)))
}
