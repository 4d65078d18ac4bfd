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
    /// The last `_id` of the copy that Elasticsearch acknowledged; the copy resumes after it.
    pub copy_last_id: Option<Bson>,
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
