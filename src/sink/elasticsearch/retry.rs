//! Which Elasticsearch failures are transient (the backoff itself is `crate::retry`).

/// HTTP statuses of a whole `_bulk` request that are worth retrying.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 502 | 503 | 504) || status >= 500
}
