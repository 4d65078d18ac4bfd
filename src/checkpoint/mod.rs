//! Durable progress: where each collection's copy and stream stand, as acknowledged by the sink.
//! Only positions whose writes Elasticsearch acknowledged (or dead-lettered) are ever saved here.

mod mongo_store;

use mongodb::bson::{Bson, Document, Timestamp};

pub use mongo_store::MongoCheckpointStore;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CollectionCheckpoint {
    /// Cluster time read before the copy began: the stream starts here, and copied
    /// documents carry its version so that any change after it wins.
    pub start_at: Option<Timestamp>,
    /// The `_id` ranges the copy reads in parallel, each with its acknowledged progress.
    /// Empty until the copy starts.
    pub copy_ranges: Vec<CopyRange>,
    pub copy_done: bool,
    pub copied: u64,
    /// The change stream position up to which everything is acknowledged.
    pub resume_token: Option<Document>,
    /// The concrete index written to, when it differs from the configured name (which is then
    /// an alias to it): `<index>-<generation>` after a re-copy.
    pub physical_index: Option<String>,
    pub generation: u32,
    /// The concrete index a re-copy replaces: dropped when the alias moves to the new one.
    pub replaces: Option<String>,
}

/// One `_id` range of a collection's copy, read by its own cursor.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CopyRange {
    /// Inclusive lower bound (none: from the smallest `_id`).
    pub lower: Option<Bson>,
    /// Exclusive upper bound (none: to the largest `_id`).
    pub upper: Option<Bson>,
    /// The last `_id` in this range that Elasticsearch acknowledged; reading resumes after it.
    pub last_id: Option<Bson>,
    pub done: bool,
    /// Every `_id` present when the copy started has the bounds' BSON type (the smallest and
    /// the largest did, and types sort together), so plain range bounds suffice: later inserts
    /// of other types come through the change stream.
    pub single_type: bool,
}
