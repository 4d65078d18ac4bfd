//! The change stream of one collection: where it starts, and which failures mean lost history.

use std::time::Duration;

use mongodb::bson::{doc, Document, Timestamp};
use mongodb::change_stream::event::{ChangeStreamEvent, ResumeToken};
use mongodb::change_stream::ChangeStream;
use mongodb::options::FullDocumentType;
use mongodb::{Client, Collection};

/// Where to open a change stream.
#[derive(Debug, Clone)]
pub enum StreamStart {
    /// Right after an acknowledged position.
    ResumeAfter(Document),
    /// After an `invalidate` event (a drop or rename of the collection).
    StartAfter(Document),
    /// At a cluster time captured before the copy began.
    AtOperationTime(Timestamp),
}

pub type CollectionStream = ChangeStream<ChangeStreamEvent<Document>>;

pub async fn open(collection: &Collection<Document>, start: &StreamStart, max_await: Duration) -> mongodb::error::Result<CollectionStream> {
    let watch = collection.watch().full_document(FullDocumentType::UpdateLookup).max_await_time(max_await);
    let token = |d: &Document| -> mongodb::error::Result<ResumeToken> { Ok(mongodb::bson::from_document::<ResumeToken>(d.clone())?) };
    match start {
        StreamStart::ResumeAfter(d) => watch.resume_after(token(d)?).await,
        StreamStart::StartAfter(d) => watch.start_after(token(d)?).await,
        StreamStart::AtOperationTime(t) => watch.start_at_operation_time(*t).await,
    }
}

/// The resume token as a plain document, for the checkpoint.
pub fn token_document(token: &ResumeToken) -> Option<Document> {
    mongodb::bson::to_document(token).ok()
}

/// A saved token as one string (its `_data`), naming the change's position in the stream.
pub fn position_of(token: &Document) -> String {
    match token.get_str("_data") {
        Ok(data) => data.to_string(),
        Err(_) => mongodb::bson::Bson::Document(token.clone()).into_relaxed_extjson().to_string(),
    }
}

/// The cluster's current time, read before a copy so that the stream can start there.
pub async fn cluster_time(client: &Client) -> mongodb::error::Result<Timestamp> {
    let mut session = client.start_session().await?;
    client.database("admin").run_command(doc! {"ping": 1}).session(&mut session).await?;
    session
        .operation_time()
        .ok_or_else(|| mongodb::error::Error::custom("the server reported no operationTime: change streams need a replica set or sharded cluster"))
}

/// The saved position is gone from the oplog (ChangeStreamHistoryLost, 286), or the token
/// is not one the server can resume from (e.g. FailedToParse for a corrupted token).
pub fn is_history_lost(err: &mongodb::error::Error) -> bool {
    use mongodb::error::ErrorKind;
    let code = match &*err.kind {
        ErrorKind::Command(c) => Some(c.code),
        _ => None,
    };
    matches!(code, Some(286 | 280 | 9 | 260)) || err.to_string().contains("resume token")
}

/// What the read-ahead task passes on, in stream order.
pub enum StreamItem {
    Event(Box<ChangeStreamEvent<Document>>),
    /// The server had nothing new; the stream's position now (a post-batch token).
    Idle(Option<Document>),
    Failed(mongodb::error::Error),
}

/// Reads a change stream ahead of its consumer into a bounded queue, so that reading goes on
/// while the consumer waits for a write. It ends after an `invalidate` event (the consumer opens
/// the next stream), after a failure, or when `cancel` fires; it is never cancelled mid-read
/// otherwise (a getMore interrupted during a resume could lose its position).
pub struct ReadAhead {
    items: tokio::sync::mpsc::Receiver<StreamItem>,
    task: tokio::task::JoinHandle<()>,
}

impl ReadAhead {
    pub fn start(mut stream: CollectionStream, capacity: usize, cancel: tokio_util::sync::CancellationToken) -> Self {
        let (tx, items) = tokio::sync::mpsc::channel(capacity.max(1));
        let task = tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return,
                    next = stream.next_if_any() => next,
                };
                let (item, last) = match next {
                    Ok(Some(event)) => {
                        let invalidate = event.operation_type == mongodb::change_stream::event::OperationType::Invalidate;
                        (StreamItem::Event(Box::new(event)), invalidate)
                    }
                    Ok(None) => (StreamItem::Idle(stream.resume_token().as_ref().and_then(token_document)), false),
                    Err(e) => (StreamItem::Failed(e), true),
                };
                if tx.send(item).await.is_err() || last {
                    return;
                }
            }
        });
        ReadAhead { items, task }
    }

    /// Nothing read is waiting.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The next item; `None` once the reader ended (stopped, or after its last item).
    pub async fn next(&mut self) -> Option<StreamItem> {
        self.items.recv().await
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.task.abort();
    }
}
