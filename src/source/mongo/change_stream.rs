//! MongoDB change streams: where one starts, its events as source-neutral [`Change`]s, and the
//! task that reads it ahead.

use std::time::Duration;

use mongodb::bson::{doc, Document, RawBsonRef, RawDocumentBuf, Timestamp};
use mongodb::change_stream::event::ResumeToken;
use mongodb::change_stream::ChangeStream;
use mongodb::options::FullDocumentType;
use mongodb::{Client, Collection};
use tokio_util::sync::CancellationToken;

use super::error::{is_history_lost, mongo_error};
use crate::config::Namespace;
use crate::error::{ErrorCode, SyncError, SyncResult};
use crate::event::CollectionChange;
use crate::source::{Change, ChangeKind, DocumentChange, FeedSender, StreamItem, StreamStart};
use crate::transform::Operation;

/// Events are read raw, so that their size is known without encoding them again.
pub type RawStream = ChangeStream<RawDocumentBuf>;

pub async fn open(collection: &Collection<Document>, start: &StreamStart, max_await: Duration) -> SyncResult<RawStream> {
    let ns = collection.namespace();
    let watch = collection.watch().full_document(FullDocumentType::UpdateLookup).max_await_time(max_await);
    let token = |d: &Document| -> mongodb::error::Result<ResumeToken> { Ok(mongodb::bson::from_document::<ResumeToken>(d.clone())?) };
    let opened = match start {
        StreamStart::ResumeAfter(d) => match token(d) {
            Ok(t) => watch.resume_after(t).await,
            Err(e) => Err(e),
        },
        StreamStart::StartAfter(d) => match token(d) {
            Ok(t) => watch.start_after(t).await,
            Err(e) => Err(e),
        },
        StreamStart::AtOperationTime(t) => watch.start_at_operation_time(*t).await,
    };
    opened.map(|s| s.with_type::<RawDocumentBuf>()).map_err(|e| open_error(&format!("{}.{}", ns.db, ns.coll), &e))
}

/// Opens the change stream of database `db` at `at`, reading only the changes of `collections`
/// (filtered by the server) and those of the database as a whole.
pub async fn open_database(client: &Client, db: &str, collections: &[&str], at: Timestamp, max_await: Duration) -> SyncResult<RawStream> {
    let only = doc! {"$match": {"$or": [{"ns.coll": {"$in": collections}}, {"operationType": {"$in": ["dropDatabase", "invalidate"]}}]}};
    let database = client.database(db);
    let watch = database.watch().pipeline([only]).full_document(FullDocumentType::UpdateLookup).max_await_time(max_await);
    let opened = watch.start_at_operation_time(at).await;
    opened.map(|s| s.with_type::<RawDocumentBuf>()).map_err(|e| open_error(&format!("database {db}"), &e))
}

/// Opening a stream at a position that is gone is lost history, not a passing fault.
fn open_error(ns: &str, err: &mongodb::error::Error) -> SyncError {
    let mut e = mongo_error(format!("cannot open the change stream of {ns}"), err);
    if is_history_lost(err) {
        e.code = ErrorCode::HistoryLost;
        e.message = format!(
            "the saved position of {ns} is no longer in the change stream history (or is invalid); \
             nothing was written. Re-copy the collection by deleting its checkpoint. Cause: {}",
            e.message
        );
    }
    e
}

/// A resume token as a plain document, for the checkpoint.
pub fn token_document(token: &ResumeToken) -> Option<Document> {
    mongodb::bson::to_document(token).ok()
}

/// The cluster's current time, read before a copy so that the stream can start there.
pub async fn cluster_time(client: &Client) -> mongodb::error::Result<Timestamp> {
    let mut session = client.start_session().await?;
    client.database("admin").run_command(doc! {"ping": 1}).session(&mut session).await?;
    session
        .operation_time()
        .ok_or_else(|| mongodb::error::Error::custom("the server reported no operationTime: change streams need a replica set or sharded cluster"))
}

/// Reads `stream` into `tx` until it ends (after an `invalidate` or a failure), the consumer
/// goes, or `cancel` fires. A read is never cancelled midway otherwise (a getMore interrupted
/// during a resume could lose its position).
pub async fn read_ahead(mut stream: RawStream, ns: Namespace, tx: FeedSender, cancel: CancellationToken) {
    loop {
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            next = stream.next_if_any() => next,
        };
        let item = match next {
            Ok(Some(raw)) => change_item(&ns, &raw),
            Ok(None) => StreamItem::Idle(stream.resume_token().as_ref().and_then(token_document)),
            Err(e) => StreamItem::Failed(mongo_error(format!("change stream of {ns} failed"), &e)),
        };
        let last = match &item {
            StreamItem::Change(c) => c.kind == ChangeKind::Collection(CollectionChange::Invalidate),
            StreamItem::Failed(_) => true,
            StreamItem::Idle(_) => false,
        };
        if !tx.send(item).await || last {
            return;
        }
    }
}

fn change_item(ns: &Namespace, raw: &RawDocumentBuf) -> StreamItem {
    match change_of(raw) {
        Ok(change) => StreamItem::Change(Box::new(change)),
        Err(e) => StreamItem::Failed(SyncError::new(ErrorCode::Mongo, format!("change stream of {ns}: {e}"))),
    }
}

/// A change event the engine cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeEventError {
    #[error("rename event without a target namespace")]
    RenameWithoutTarget,
    #[error("event without an operationType")]
    NoOperationType,
    #[error("unreadable event ({field}): {reason}")]
    Unreadable { field: &'static str, reason: String },
}

fn unreadable(field: &'static str) -> impl Fn(mongodb::bson::raw::Error) -> ChangeEventError {
    move |e| ChangeEventError::Unreadable { field, reason: e.to_string() }
}

/// A raw change event as a source-neutral change. Only its small parts are parsed (position,
/// time, type, key); the full document stays raw, converted straight to JSON later.
pub fn change_of(raw: &RawDocumentBuf) -> Result<Change, ChangeEventError> {
    let get = |key: &'static str| raw.get(key).map_err(unreadable(key));
    let token = match get("_id")? {
        Some(RawBsonRef::Document(token)) => Some(Document::try_from(token).map_err(unreadable("_id"))?),
        _ => None,
    };
    let cluster_time = match get("clusterTime")? {
        Some(RawBsonRef::Timestamp(t)) => Some(t),
        _ => None,
    };
    let Some(RawBsonRef::String(operation)) = get("operationType")? else {
        return Err(ChangeEventError::NoOperationType);
    };
    let document = |operation| -> Result<ChangeKind, ChangeEventError> {
        let key = match get("documentKey")? {
            Some(RawBsonRef::Document(key)) => Some(Document::try_from(key).map_err(unreadable("documentKey"))?),
            _ => None,
        };
        let document = match get("fullDocument")? {
            Some(RawBsonRef::Document(full)) => Some(full.to_raw_document_buf()),
            _ => None,
        };
        Ok(ChangeKind::Document(DocumentChange { operation, key, document }))
    };
    let kind = match operation {
        "insert" => document(Operation::Insert)?,
        "update" => document(Operation::Update)?,
        "replace" => document(Operation::Replace)?,
        "delete" => document(Operation::Delete)?,
        "drop" => ChangeKind::Collection(CollectionChange::Drop),
        "dropDatabase" => ChangeKind::Collection(CollectionChange::DropDatabase),
        "invalidate" => ChangeKind::Collection(CollectionChange::Invalidate),
        "rename" => ChangeKind::Collection(CollectionChange::Rename { to: rename_target(raw)? }),
        _ => ChangeKind::Other,
    };
    Ok(Change { token, cluster_time, kind, size: raw.as_bytes().len() })
}

/// The namespace a rename event moves its collection to.
fn rename_target(raw: &RawDocumentBuf) -> Result<Namespace, ChangeEventError> {
    let Ok(Some(RawBsonRef::Document(to))) = raw.get("to") else {
        return Err(ChangeEventError::RenameWithoutTarget);
    };
    let field = |key: &str| match to.get(key) {
        Ok(Some(RawBsonRef::String(s))) => Some(s.to_string()),
        _ => None,
    };
    let db = field("db").ok_or(ChangeEventError::RenameWithoutTarget)?;
    Ok(Namespace { db, coll: field("coll").unwrap_or_default() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{doc, rawdoc, RawDocument};

    fn event(operation: &str, full: Option<RawDocumentBuf>) -> RawDocumentBuf {
        let mut raw = rawdoc! {
            "_id": {"_data": "8265"},
            "operationType": operation,
            "clusterTime": Timestamp { time: 7, increment: 3 },
            "ns": {"db": "d", "coll": "c"},
            "documentKey": {"_id": 1},
        };
        if let Some(full) = full {
            raw.append("fullDocument", full);
        }
        raw
    }

    #[test]
    fn a_document_change_keeps_its_full_document_raw() {
        let full = rawdoc! {"_id": 1, "x": {"$numberLong": "7"}, "s": "é"};
        let change = change_of(&event("update", Some(full.clone()))).unwrap();
        assert_eq!(change.token, Some(doc! {"_data": "8265"}));
        assert_eq!(change.cluster_time, Some(Timestamp { time: 7, increment: 3 }));
        let ChangeKind::Document(dc) = change.kind else { panic!("a document change: {:?}", change.kind) };
        assert_eq!(dc.operation, Operation::Update);
        assert_eq!(dc.key, Some(doc! {"_id": 1}));
        // Byte for byte as stored: a sub-document shaped like extended JSON stays a sub-document.
        assert_eq!(dc.document.as_deref().map(RawDocument::as_bytes), Some(full.as_bytes()));
        let gone = change_of(&event("update", None)).unwrap();
        assert!(matches!(gone.kind, ChangeKind::Document(DocumentChange { document: None, .. })), "an update whose document was gone");
    }

    /// A string that is not UTF-8 inside the full document no longer fails the whole stream: the
    /// event is read, and the converter dead-letters that one document.
    #[test]
    fn a_full_document_that_is_not_valid_bson_still_reads_as_a_change() {
        let mut bytes = rawdoc! {"_id": 1, "s": "ab"}.into_bytes();
        let at = bytes.windows(2).position(|w| w == b"ab").unwrap();
        bytes[at] = 0xff;
        let full = RawDocumentBuf::from_bytes(bytes).unwrap();
        let change = change_of(&event("insert", Some(full))).unwrap();
        let ChangeKind::Document(dc) = change.kind else { panic!("a document change") };
        assert!(Document::try_from(dc.document.as_deref().unwrap()).is_err(), "the document is kept as read");
    }

    #[test]
    fn collection_changes_and_unknown_kinds() {
        let mut rename = event("rename", None);
        rename.append("to", rawdoc! {"db": "d2", "coll": "c2"});
        let change = change_of(&rename).unwrap();
        assert_eq!(change.kind, ChangeKind::Collection(CollectionChange::Rename { to: Namespace { db: "d2".into(), coll: "c2".into() } }));
        assert_eq!(change.size, rename.as_bytes().len());
        assert_eq!(change_of(&event("rename", None)).unwrap_err(), ChangeEventError::RenameWithoutTarget);
        assert_eq!(change_of(&event("drop", None)).unwrap().kind, ChangeKind::Collection(CollectionChange::Drop));
        assert_eq!(change_of(&event("invalidate", None)).unwrap().kind, ChangeKind::Collection(CollectionChange::Invalidate));
        assert_eq!(change_of(&event("createIndexes", None)).unwrap().kind, ChangeKind::Other);
        assert_eq!(change_of(&rawdoc! {"_id": {"_data": "1"}}).unwrap_err(), ChangeEventError::NoOperationType);
    }
}

#[cfg(test)]
#[path = "change_stream_props.rs"]
mod props;
