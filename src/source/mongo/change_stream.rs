//! MongoDB change streams: where one starts, its events as source-neutral [`Change`]s, and the
//! task that reads it ahead.

use std::time::Duration;

use mongodb::bson::{doc, Document, RawDocumentBuf, Timestamp};
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType, ResumeToken};
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
    let event: ChangeStreamEvent<Document> = match mongodb::bson::from_slice(raw.as_bytes()) {
        Ok(event) => event,
        Err(e) => return StreamItem::Failed(SyncError::new(ErrorCode::Mongo, format!("change stream of {ns}: unreadable event: {e}"))),
    };
    match change_of(event, raw.as_bytes().len()) {
        Ok(change) => StreamItem::Change(Box::new(change)),
        Err(e) => StreamItem::Failed(SyncError::new(ErrorCode::Mongo, format!("change stream of {ns}: {e}"))),
    }
}

/// A change event the engine cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeEventError {
    #[error("rename event without a target namespace")]
    RenameWithoutTarget,
}

/// A driver event as a source-neutral change.
pub fn change_of(event: ChangeStreamEvent<Document>, size: usize) -> Result<Change, ChangeEventError> {
    let document = |operation| ChangeKind::Document(DocumentChange { operation, key: event.document_key.clone(), document: event.full_document.clone() });
    let kind = match event.operation_type {
        OperationType::Insert => document(Operation::Insert),
        OperationType::Update => document(Operation::Update),
        OperationType::Replace => document(Operation::Replace),
        OperationType::Delete => document(Operation::Delete),
        OperationType::Drop => ChangeKind::Collection(CollectionChange::Drop),
        OperationType::DropDatabase => ChangeKind::Collection(CollectionChange::DropDatabase),
        OperationType::Invalidate => ChangeKind::Collection(CollectionChange::Invalidate),
        OperationType::Rename => {
            let to = event.to.as_ref().ok_or(ChangeEventError::RenameWithoutTarget)?;
            ChangeKind::Collection(CollectionChange::Rename { to: Namespace { db: to.db.clone(), coll: to.coll.clone().unwrap_or_default() } })
        }
        _ => ChangeKind::Other,
    };
    Ok(Change { token: token_document(&event.id), cluster_time: event.cluster_time, kind, size })
}

#[cfg(test)]
#[path = "change_stream_props.rs"]
mod props;
