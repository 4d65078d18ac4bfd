//! The Elasticsearch retry logic: which replies are transient (the loop itself is
//! `crate::retry`). Per-item outcomes of `_bulk` are classified in `response`.

use super::response::Reply;
use crate::retry::Attempt;

/// HTTP statuses of a whole request that are worth retrying.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 502 | 503 | 504) || status >= 500
}

/// The verdict on one request: a transport failure or a transient status goes again; any
/// other reply is the answer (the caller judges it).
pub fn classify_request<E>(sent: Result<Reply, String>) -> Attempt<Reply, E> {
    match sent {
        Ok(reply) if is_retryable_status(reply.status) => Attempt::Retry(reply.describe()),
        Ok(reply) => Attempt::Done(reply),
        Err(transport) => Attempt::Retry(transport),
    }
}
