//! Search errors: bad input (nothing was sent to the search server) or the server's failure.

use crate::error::{ErrorCode, SyncError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    /// The request is invalid; the message names what is wrong. Nothing reached the server
    /// (but for reading the index's mapping, to check field names).
    #[error("{0}")]
    Input(String),
    /// The index is not one this API may search (`ERR_SEARCH_INPUT`; HTTP 404).
    #[error("index \"{0}\" is not searchable here (not one of the allowed indices, or it does not exist)")]
    UnknownIndex(String),
    /// The cursor was not issued by this API, or was altered.
    #[error("the cursor is invalid: it was not issued here or it was altered")]
    TamperedCursor,
    /// The cursor is older than its time to live.
    #[error("the cursor expired {0} s ago; start again without a cursor")]
    ExpiredCursor(u64),
    /// The search server refused the search as invalid (e.g. a date it cannot parse); HTTP 400.
    #[error("the search server refused the search: {0}")]
    Refused(String),
    /// The point in time the cursor reads is gone: closed after the last page, or expired.
    #[error("the cursor's point in time is gone (closed after the last page, or expired on the server); start again without a cursor")]
    PitGone,
    /// The search server could not be reached, failed, or answered strangely.
    #[error("search server: {0}")]
    Server(String),
}

impl SearchError {
    pub fn input(message: impl Into<String>) -> Self {
        SearchError::Input(message.into())
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            SearchError::Server(_) | SearchError::Refused(_) => ErrorCode::Search,
            _ => ErrorCode::SearchInput,
        }
    }

    /// The stable code as a string (`ERR_SEARCH_INPUT` or `ERR_SEARCH`).
    pub fn code_str(&self) -> &'static str {
        self.code().as_str()
    }
}

impl From<SearchError> for SyncError {
    fn from(e: SearchError) -> Self {
        SyncError::new(e.code(), e.to_string())
    }
}

pub type SearchResult<T> = Result<T, SearchError>;
