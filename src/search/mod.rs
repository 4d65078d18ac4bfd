//! Reading the synced data back: a small, safe query model instead of raw query DSL.
//!
//! - `model`: the request (`where` exact / list / range on dotted paths, `fields`, `exclude`,
//!   `sort`, `size`, `page` or `cursor`) and its checks that need no server;
//! - `mapping`: the index mapping flattened to dotted paths; `query`: the request checked
//!   against it and turned into the server's query;
//! - `cursor`: opaque, HMAC-signed, expiring cursors; `client`: the requests, points in time
//!   and both ways of paging.
//!
//! Errors are `ERR_SEARCH_INPUT` (the request is wrong; no search reached the server) or
//! `ERR_SEARCH` (the server failed). Numbers are kept exact: the server's JSON integers are
//! read as 64-bit integers, never as doubles.

mod client;
mod cursor;
mod error;
mod mapping;
mod model;
mod query;
mod scope;

pub use crate::config::SearchConfig;
pub use client::{IndexScope, IndexSummary, SearchClient, SearchMeta, SearchResponse};
pub use cursor::{CursorSigner, CursorState};
pub use error::{SearchError, SearchResult};
pub use mapping::{FieldInfo, FieldKind, Fields};
pub use model::{PageLimits, SearchRequest, SortKey, SortOrder};
pub use scope::sync_scope;
