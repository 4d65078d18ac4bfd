//! The Elasticsearch retry logic: which replies are transient (the loop itself is
//! `crate::retry`). Per-item outcomes of `_bulk` are classified in `response`.

use super::response::{is_transient_error, Reply};
use crate::error::cause_chain;

/// Why a request is worth sending again.
#[derive(Debug, thiserror::Error)]
pub enum Transient {
    /// No reply: connection refused or reset, timeout.
    #[error("{}", cause_chain(.0))]
    Transport(elasticsearch::Error),
    /// Overload, a server-side failure, a write block, a closed index.
    #[error("{}", .0.describe())]
    Reply(Reply),
}

/// HTTP statuses of a whole request that are worth retrying.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 502 | 503 | 504) || status >= 500
}

/// The verdict on one request: the reply, when it is an answer (the caller judges it), or why it
/// is worth sending again: a transport failure, a transient status, a temporary refusal (a
/// write block, a closed index).
pub fn answer(sent: Result<Reply, elasticsearch::Error>) -> Result<Reply, Transient> {
    match sent {
        Ok(reply) if is_retryable_status(reply.status) => Err(Transient::Reply(reply)),
        Ok(reply) if !reply.is_success() && reply.error_type().is_some_and(|t| is_transient_error(&t)) => Err(Transient::Reply(reply)),
        Ok(answer) => Ok(answer),
        Err(transport) => Err(Transient::Transport(transport)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Result<Reply, elasticsearch::Error> {
        Ok(Reply { status, body: body.as_bytes().to_vec() })
    }

    #[test]
    fn transient_replies_go_again_and_others_are_answers() {
        let verdict = |sent| if answer(sent).is_ok() { "answer" } else { "retry" };
        assert_eq!(verdict(reply(503, "{}")), "retry");
        assert_eq!(verdict(reply(429, "{}")), "retry");
        assert_eq!(verdict(reply(400, r#"{"error":{"type":"index_closed_exception","reason":"closed"},"status":400}"#)), "retry");
        assert_eq!(verdict(reply(403, r#"{"error":{"type":"cluster_block_exception","reason":"blocked"},"status":403}"#)), "retry");
        assert_eq!(verdict(reply(400, r#"{"error":{"type":"mapper_parsing_exception","reason":"bad"},"status":400}"#)), "answer");
        assert_eq!(verdict(reply(404, r#"{"error":{"type":"index_not_found_exception"},"status":404}"#)), "answer");
        assert_eq!(verdict(reply(200, "{}")), "answer");
    }
}
