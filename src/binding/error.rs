//! Engine errors as JS `Error`s with a stable string `code` (and the failing `namespace`).

use std::future::Future;

use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::error::{self, SyncError, SyncResult};

/// Stable error codes: the `code` of every error the package throws, rejects with or reports.
#[napi(string_enum)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Invalid options (thrown by the constructor); the message names the field.
    #[napi(value = "ERR_CONFIG")]
    Config,
    /// `start()` while running, `stop()` before `start()`, and similar misuse.
    #[napi(value = "ERR_STATE")]
    State,
    /// MongoDB cannot be reached (or refuses auth/TLS) at `start()`.
    #[napi(value = "ERR_MONGO_UNREACHABLE")]
    MongoUnreachable,
    /// Elasticsearch cannot be reached (or refuses auth) at `start()`.
    #[napi(value = "ERR_ES_UNREACHABLE")]
    EsUnreachable,
    /// A MongoDB operation failed permanently while syncing.
    #[napi(value = "ERR_MONGO")]
    Mongo,
    /// PostgreSQL cannot be reached (or refuses auth/TLS) at `start()`, or a session ended.
    #[napi(value = "ERR_POSTGRES_UNREACHABLE")]
    PostgresUnreachable,
    /// A PostgreSQL operation failed permanently while syncing.
    #[napi(value = "ERR_POSTGRES")]
    Postgres,
    /// Elasticsearch refused a request permanently, or retries ran out.
    #[napi(value = "ERR_ELASTICSEARCH")]
    Elasticsearch,
    /// A `file`, `tcp` or `nats` output cannot be opened or reached at `start()`.
    #[napi(value = "ERR_OUTPUT_UNREACHABLE")]
    OutputUnreachable,
    /// A `file`, `stdout`, `tcp` or `nats` output failed permanently.
    #[napi(value = "ERR_OUTPUT")]
    Output,
    /// The saved resume point is no longer in the change stream history, or is invalid.
    #[napi(value = "ERR_HISTORY_LOST")]
    HistoryLost,
    /// A change event is over MongoDB's 16 MB limit, so the stream cannot move past it.
    #[napi(value = "ERR_EVENT_TOO_LARGE")]
    EventTooLarge,
    /// The checkpoint could not be read or saved.
    #[napi(value = "ERR_CHECKPOINT")]
    Checkpoint,
    /// A search request is invalid (unknown field, bad value, tampered or expired cursor…); nothing was sent to the search server.
    #[napi(value = "ERR_SEARCH_INPUT")]
    SearchInput,
    /// The search server failed or refused a search.
    #[napi(value = "ERR_SEARCH")]
    Search,
    /// Another instance with the same `name` took the lease over: this one's writes and
    /// checkpoint saves are refused.
    #[napi(value = "ERR_LEASE_LOST")]
    LeaseLost,
    /// A bug or an unexpected server reply.
    #[napi(value = "ERR_INTERNAL")]
    Internal,
    /// An event listener (or the `logger`) threw or rejected; reported, the sync goes on.
    #[napi(value = "ERR_LISTENER")]
    Listener,
    /// An `events()` iterator fell more than its buffer behind; it ends with this error.
    #[napi(value = "ERR_EVENTS_OVERFLOW")]
    EventsOverflow,
    /// A stored definition changed since it was read (another writer came first), or an
    /// instance is applying it: nothing was written.
    #[napi(value = "ERR_CONFLICT")]
    Conflict,
}

impl From<error::ErrorCode> for ErrorCode {
    fn from(code: error::ErrorCode) -> Self {
        use error::ErrorCode as C;
        match code {
            C::Config => ErrorCode::Config,
            C::State => ErrorCode::State,
            C::MongoUnreachable => ErrorCode::MongoUnreachable,
            C::EsUnreachable => ErrorCode::EsUnreachable,
            C::Mongo => ErrorCode::Mongo,
            C::PostgresUnreachable => ErrorCode::PostgresUnreachable,
            C::Postgres => ErrorCode::Postgres,
            C::Elasticsearch => ErrorCode::Elasticsearch,
            C::OutputUnreachable => ErrorCode::OutputUnreachable,
            C::Output => ErrorCode::Output,
            C::HistoryLost => ErrorCode::HistoryLost,
            C::EventTooLarge => ErrorCode::EventTooLarge,
            C::Checkpoint => ErrorCode::Checkpoint,
            C::SearchInput => ErrorCode::SearchInput,
            C::Search => ErrorCode::Search,
            C::LeaseLost => ErrorCode::LeaseLost,
            C::Internal => ErrorCode::Internal,
            C::Conflict => ErrorCode::Conflict,
        }
    }
}

/// A JS `Error` whose `code` is the engine's code (e.g. `ERR_CONFIG`), with the failing
/// `namespace` when there is one; napi throws or rejects with exactly this object.
pub fn js_error(env: &Env, err: &SyncError) -> napi::Error {
    let build = || -> Result<napi::Error> {
        let mut object = env.create_error(napi::Error::new(Status::GenericFailure, err.message.clone()))?;
        object.set_named_property("code", ErrorCode::from(err.code))?;
        if let Some(namespace) = &err.namespace {
            object.set_named_property("namespace", namespace.as_str())?;
        }
        Ok(napi::Error::from(object.to_unknown()))
    };
    build().unwrap_or_else(|e| e)
}

/// Runs an engine future and settles a JS promise with its result, errors carrying their code.
pub fn promise<T, F>(env: &Env, fut: F) -> Result<PromiseRaw<'_, T>>
where
    T: ToNapiValue + Send + 'static,
    F: Future<Output = SyncResult<T>> + Send + 'static,
{
    env.spawn_future_with_callback(async move { Ok(fut.await) }, |env, result| result.map_err(|e| js_error(env, &e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JS codes are the engine's (the exhaustive `From` makes a missing one a compile error).
    #[test]
    fn every_engine_code_keeps_its_string_in_js() {
        for code in error::ErrorCode::ALL {
            let js = ErrorCode::from(code);
            let name = format!("{js:?}");
            assert!(code.as_str().replace('_', "").ends_with(&name.to_uppercase()), "{} → {name}", code.as_str());
        }
    }
}
