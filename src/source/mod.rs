//! Reading from the source database: the copy's scans and each collection's change stream.
//!
//! [`ChangeSource`] is the one interface the pipeline reads through; [`mongo::MongoSource`] is
//! MongoDB's. A source speaks in source-neutral terms: documents as BSON, positions as resume
//! tokens (documents) and the source's clock as a [`Timestamp`] (whose version orders writes),
//! changes as [`Change`]s. Another database (e.g. PostgreSQL: a row as a document, an LSN as the
//! token and the clock) plugs in by implementing the trait.

mod feed;
pub mod mongo;
pub mod postgres;

use async_trait::async_trait;
use futures::stream::BoxStream;
use mongodb::bson::{Bson, Document, RawDocumentBuf, Timestamp};
use tokio_util::sync::CancellationToken;

use crate::checkpoint::CopyRange;
use crate::config::Namespace;
use crate::error::SyncResult;
use crate::event::CollectionChange;
use crate::transform::Operation;

pub use feed::{ChangeFeed, FeedLimits, FeedSender};
pub use mongo::mongo_error;

/// Where to open a change stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamStart {
    /// Right after an acknowledged position.
    ResumeAfter(Document),
    /// After the position of an `invalidate` event (a drop or rename ended the stream).
    StartAfter(Document),
    /// At a time of the source's clock captured before the copy began.
    AtOperationTime(Timestamp),
}

/// One change read from a collection's stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The position right after this change, to resume from once it is acknowledged.
    pub token: Option<Document>,
    /// When it happened on the source's clock: the version of the writes it causes.
    pub cluster_time: Option<Timestamp>,
    pub kind: ChangeKind,
    /// Bytes it took to read (for the read-ahead's byte bound).
    pub size: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ChangeKind {
    Document(DocumentChange),
    /// A change of the collection as a whole: drop, dropDatabase, rename or invalidate.
    Collection(CollectionChange),
    /// Changes no document (index builds, collection creation…).
    Other,
}

/// An insert, update, replace or delete of one document.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentChange {
    pub operation: Operation,
    /// The document's key: its `_id`, and the shard key fields of a sharded collection.
    pub key: Option<Document>,
    /// The whole document after the change (looked up for updates: none if it was gone by
    /// then); none for deletes. Raw, as read: it is converted straight to JSON.
    pub document: Option<RawDocumentBuf>,
}

/// What a change stream's reader passes on, in stream order.
#[derive(Debug)]
pub enum StreamItem {
    Change(Box<Change>),
    /// The source had nothing new; the stream's position now, if it reported one.
    Idle(Option<Document>),
    /// Reading failed; the stream ends.
    Failed(crate::error::SyncError),
}

/// What a batched lookup found.
#[derive(Debug, Default)]
pub struct Found {
    pub documents: Vec<RawDocumentBuf>,
    /// Every match was read (else the byte bound stopped the reading: a document not among
    /// `documents` may still match).
    pub complete: bool,
}

/// `_id` ranges for a collection's copy, and why fewer than asked if so.
#[derive(Debug, Clone, PartialEq)]
pub struct RangePlan {
    pub ranges: Vec<CopyRange>,
    pub warning: Option<String>,
}

/// How the copy reads one range.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Only documents matching this query.
    pub filter: Option<Document>,
    pub batch_size: u32,
    /// Read a state at least this recent (the copy's start point), whichever member serves it.
    pub not_before: Option<Timestamp>,
}

/// A scan's documents, raw as the cursor reads them.
pub type DocumentStream = BoxStream<'static, SyncResult<RawDocumentBuf>>;

/// A database the pipeline reads from. Errors carry engine codes: `MongoUnreachable` (`PostgresUnreachable`) for what
/// is worth retrying, `HistoryLost` for a position the stream cannot resume from.
#[async_trait]
pub trait ChangeSource: Send + Sync {
    /// The source's clock now: a stream started here misses nothing written after.
    async fn now(&self) -> SyncResult<Timestamp>;

    /// Where a collection's copy starts (read before it): its stream starts there. A source
    /// that must prepare the stream first (PostgreSQL creates the table's replication slot)
    /// does it here; by default, the source's clock now.
    async fn start_point(&self, _ns: &Namespace) -> SyncResult<Timestamp> {
        self.now().await
    }

    /// Notes collections about to be followed (before their streams open), so that a source
    /// can choose how to read them (MongoDB: one stream per database past a threshold).
    fn plan_streams(&self, _followed: &[Namespace]) {}

    /// A collection is followed no more (it was dropped).
    fn forget_stream(&self, _ns: &Namespace) {}

    /// Whether a collection's change history still reaches back to `at` (a stream could start there).
    async fn history_reaches(&self, ns: &Namespace, at: Timestamp) -> SyncResult<bool>;

    /// Opens a collection's change stream and reads it ahead into a bounded feed.
    async fn open_stream(&self, ns: &Namespace, start: &StreamStart, limits: FeedLimits, cancel: CancellationToken) -> SyncResult<ChangeFeed>;

    /// About how many documents a collection holds (0 when unknown).
    async fn estimated_count(&self, ns: &Namespace) -> u64;

    /// Splits a collection into about `readers` `_id` ranges of similar size.
    async fn plan_ranges(&self, ns: &Namespace, readers: usize) -> SyncResult<RangePlan>;

    /// The documents of one range still to copy, in `_id` order.
    async fn scan(&self, ns: &Namespace, range: &CopyRange, options: &ScanOptions) -> SyncResult<DocumentStream>;

    /// The document with this `_id` now, if it exists (and matches `filter`), as of `not_before`
    /// or later.
    async fn lookup(&self, ns: &Namespace, id: &Bson, filter: Option<&Document>, not_before: Option<Timestamp>) -> SyncResult<Option<RawDocumentBuf>>;

    /// The documents with these `_id`s now that match `filter`, as of `not_before` or later, in
    /// one round trip: read until they hold `max_bytes` (at least one is read).
    async fn lookup_many(&self, ns: &Namespace, ids: &[Bson], filter: Option<&Document>, not_before: Option<Timestamp>, max_bytes: usize) -> SyncResult<Found>;

    /// Which of these `_id`s exist now, as of `not_before` or later (one round trip, `_id`s only).
    async fn existing_ids(&self, ns: &Namespace, ids: &[Bson], not_before: Option<Timestamp>) -> SyncResult<Vec<Bson>>;

    /// Whether the collection holds any document now.
    async fn has_documents(&self, ns: &Namespace) -> SyncResult<bool>;

    /// Every collection holding user data (not views, not system collections).
    async fn list_collections(&self) -> SyncResult<Vec<Namespace>>;
}

/// A document as sources hand it on: raw BSON (for a source that builds `Document`s).
pub fn raw_of(doc: &Document) -> SyncResult<RawDocumentBuf> {
    RawDocumentBuf::from_document(doc)
        .map_err(|e| crate::error::SyncError::new(crate::error::ErrorCode::Internal, format!("cannot encode a document as BSON: {e}")))
}

/// A saved token as one string (its `_data`), naming the change's position in the stream.
pub fn position_of(token: &Document) -> String {
    match token.get_str("_data") {
        Ok(data) => data.to_string(),
        Err(_) => Bson::Document(token.clone()).into_relaxed_extjson().to_string(),
    }
}
