//! Errors of the sync engine: a stable code for programs, a message for people.

use std::fmt;

/// Stable error codes; the binding exposes them as the JS `error.code` string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The configuration is invalid; the message names the field.
    Config,
    /// `start()` while running, `stop()` before `start()`, and similar misuse.
    State,
    /// MongoDB could not be reached or refused the connection (auth, TLS, DNS).
    MongoUnreachable,
    /// Elasticsearch could not be reached or refused the connection.
    EsUnreachable,
    /// A MongoDB operation failed after the sync had started.
    Mongo,
    /// PostgreSQL could not be reached or refused the connection (auth, TLS, DNS), or one of its
    /// sessions ended: the PostgreSQL source's `MongoUnreachable`.
    PostgresUnreachable,
    /// A PostgreSQL operation failed after the sync had started, or its reply was unreadable.
    Postgres,
    /// Elasticsearch failed permanently (not retryable, or retries exhausted).
    Elasticsearch,
    /// An output other than Elasticsearch (file, stdout, TCP, NATS) could not be opened or reached at start.
    OutputUnreachable,
    /// An output other than Elasticsearch failed permanently (not retryable, or retries exhausted).
    Output,
    /// The saved resume point is no longer in the change stream history, or is invalid.
    HistoryLost,
    /// A change event is over MongoDB's 16 MB limit: the server cannot return it, so the change
    /// stream cannot move past it.
    EventTooLarge,
    /// Reading or writing the checkpoint failed.
    Checkpoint,
    /// A search request is invalid (unknown field, bad value, tampered or expired cursor…);
    /// nothing was sent to the search server.
    SearchInput,
    /// The search server failed or refused a search.
    Search,
    /// This instance no longer holds the lease of its sync `name` (another instance took over):
    /// its writes and checkpoint saves are refused.
    LeaseLost,
    /// A bug or an unexpected server reply.
    Internal,
    /// A stored definition changed since it was read (another writer came first), or an
    /// instance is applying it: nothing was written.
    Conflict,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::Config,
        ErrorCode::State,
        ErrorCode::MongoUnreachable,
        ErrorCode::EsUnreachable,
        ErrorCode::Mongo,
        ErrorCode::PostgresUnreachable,
        ErrorCode::Postgres,
        ErrorCode::Elasticsearch,
        ErrorCode::OutputUnreachable,
        ErrorCode::Output,
        ErrorCode::HistoryLost,
        ErrorCode::EventTooLarge,
        ErrorCode::Checkpoint,
        ErrorCode::SearchInput,
        ErrorCode::Search,
        ErrorCode::LeaseLost,
        ErrorCode::Internal,
        ErrorCode::Conflict,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Config => "ERR_CONFIG",
            ErrorCode::State => "ERR_STATE",
            ErrorCode::MongoUnreachable => "ERR_MONGO_UNREACHABLE",
            ErrorCode::EsUnreachable => "ERR_ES_UNREACHABLE",
            ErrorCode::Mongo => "ERR_MONGO",
            ErrorCode::PostgresUnreachable => "ERR_POSTGRES_UNREACHABLE",
            ErrorCode::Postgres => "ERR_POSTGRES",
            ErrorCode::Elasticsearch => "ERR_ELASTICSEARCH",
            ErrorCode::OutputUnreachable => "ERR_OUTPUT_UNREACHABLE",
            ErrorCode::Output => "ERR_OUTPUT",
            ErrorCode::HistoryLost => "ERR_HISTORY_LOST",
            ErrorCode::EventTooLarge => "ERR_EVENT_TOO_LARGE",
            ErrorCode::Checkpoint => "ERR_CHECKPOINT",
            ErrorCode::SearchInput => "ERR_SEARCH_INPUT",
            ErrorCode::Search => "ERR_SEARCH",
            ErrorCode::LeaseLost => "ERR_LEASE_LOST",
            ErrorCode::Internal => "ERR_INTERNAL",
            ErrorCode::Conflict => "ERR_CONFLICT",
        }
    }

    /// A source (MongoDB or PostgreSQL) out of reach for now: worth retrying once running.
    pub fn is_source_unreachable(self) -> bool {
        matches!(self, ErrorCode::MongoUnreachable | ErrorCode::PostgresUnreachable)
    }

    /// Any error of a source, transient or not.
    pub fn is_source(self) -> bool {
        self.is_source_unreachable() || matches!(self, ErrorCode::Mongo | ErrorCode::Postgres)
    }
}

/// An engine error: its code and a message that already holds the cause chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncError {
    pub code: ErrorCode,
    pub message: String,
    /// The collection (`"db.collection"`) whose sync failed, when the error is one collection's.
    pub namespace: Option<String>,
}

impl SyncError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        SyncError { code, message: message.into(), namespace: None }
    }

    /// The error as one of `namespace`'s (unless it already names a collection).
    pub fn in_collection(mut self, namespace: &impl fmt::Display) -> Self {
        self.namespace.get_or_insert_with(|| namespace.to_string());
        self
    }

    /// Wraps a lower-level error, keeping its whole `source()` chain in the message.
    pub fn caused_by(code: ErrorCode, context: impl fmt::Display, cause: &(dyn std::error::Error + 'static)) -> Self {
        SyncError::new(code, format!("{context}: {}", cause_chain(cause)))
    }

    pub fn config(message: impl Into<String>) -> Self {
        SyncError::new(ErrorCode::Config, message)
    }
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for SyncError {}

pub type SyncResult<T> = Result<T, SyncError>;

/// "outer: inner: innermost", skipping links that only repeat their predecessor's text.
pub fn cause_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut next = err.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        next = cause.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Leaf;
    impl fmt::Display for Leaf {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("connection refused")
        }
    }
    impl std::error::Error for Leaf {}

    #[derive(Debug)]
    struct Outer(Leaf);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("request failed")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn message_keeps_the_cause_chain() {
        let err = SyncError::caused_by(ErrorCode::EsUnreachable, "cannot reach Elasticsearch", &Outer(Leaf));
        assert_eq!(err.to_string(), "ERR_ES_UNREACHABLE: cannot reach Elasticsearch: request failed: connection refused");
    }

    #[test]
    fn both_sources_out_of_reach_are_transient() {
        for code in [ErrorCode::MongoUnreachable, ErrorCode::PostgresUnreachable] {
            assert!(code.is_source_unreachable() && code.is_source(), "{code:?}");
        }
        for code in [ErrorCode::Mongo, ErrorCode::Postgres] {
            assert!(!code.is_source_unreachable() && code.is_source(), "{code:?}");
        }
        assert!(!ErrorCode::EsUnreachable.is_source());
        assert_eq!(ErrorCode::PostgresUnreachable.as_str(), "ERR_POSTGRES_UNREACHABLE");
    }
}
