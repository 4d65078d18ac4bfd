//! MongoDB as a [`ChangeSource`]: the client set-up, change streams read ahead, the copy's
//! range scans, and the collections `namespaces` patterns choose from.

pub mod change_stream;
mod connect;
pub mod copy;
mod database_stream;
mod discovery;
mod error;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::{doc, Bson, Document, RawDocumentBuf, Timestamp};
use mongodb::{Client, Collection};
use tokio_util::sync::CancellationToken;

use super::{ChangeFeed, ChangeSource, DocumentStream, FeedLimits, Found, RangePlan, ScanOptions, StreamStart};
use crate::checkpoint::CopyRange;
use crate::config::{Namespace, SyncConfig};
use crate::error::{cause_chain, SyncResult};
use crate::event::EventBus;

use database_stream::DatabaseStreams;
pub use database_stream::DbPosition;
pub use error::{is_duplicate_key, is_history_lost, mongo_error, whole_number};

/// How long one getMore waits when there are no changes. The server answers as soon as there
/// are some, so this sets only how often an idle stream is asked again (and its position
/// refreshed); shorter only loads the server with empty getMores.
const MAX_AWAIT: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct MongoSource {
    client: Client,
    /// The databases read through one stream for all their followed collections.
    databases: Arc<DatabaseStreams>,
}

impl MongoSource {
    /// Connects (and pings) with the configured URI and TLS options.
    pub async fn connect(config: &SyncConfig, events: &EventBus) -> SyncResult<Self> {
        let client = connect::connect(config, events).await?;
        let databases = Arc::new(DatabaseStreams::new(client.clone(), config.mongo.database_stream_threshold, MAX_AWAIT));
        Ok(MongoSource { client, databases })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn collection(&self, ns: &Namespace) -> Collection<Document> {
        self.client.database(&ns.db).collection(&ns.coll)
    }

    /// The collection read raw: documents are converted from their BSON bytes.
    fn raw_collection(&self, ns: &Namespace) -> Collection<RawDocumentBuf> {
        self.client.database(&ns.db).collection(&ns.coll)
    }

    /// A causally consistent session whose reads see at least the state at `at`, whichever
    /// member the URI's read preference picks: a lagging secondary waits until it has caught
    /// up (`readConcern.afterClusterTime`), so the copy and the filter's lookups never read
    /// from before the stream's start point or the change being applied.
    async fn session_after(&self, at: Option<Timestamp>) -> mongodb::error::Result<mongodb::ClientSession> {
        let mut session = self.client.start_session().causal_consistency(true).await?;
        if let Some(at) = at {
            session.advance_operation_time(at);
        }
        Ok(session)
    }
}

#[async_trait]
impl ChangeSource for MongoSource {
    async fn now(&self) -> SyncResult<Timestamp> {
        change_stream::cluster_time(&self.client).await.map_err(|e| mongo_error("cannot read the cluster time", &e))
    }

    async fn history_reaches(&self, ns: &Namespace, at: Timestamp) -> SyncResult<bool> {
        // The oplog's oldest entry bounds where any change stream can start.
        let oplog = self.client.database("local").collection::<Document>("oplog.rs");
        if let Ok(Some(oldest)) = oplog.find_one(doc! {}).sort(doc! {"$natural": 1}).projection(doc! {"ts": 1}).await {
            if let Ok(ts) = oldest.get_timestamp("ts") {
                return Ok(ts <= at);
            }
        }
        // Not readable here (through mongos, or without the rights): a stream opened there,
        // asked once, is refused if the history is gone.
        let probe = async {
            let mut stream = change_stream::open(&self.collection(ns), &StreamStart::AtOperationTime(at), Duration::from_millis(1)).await?;
            stream.next_if_any().await.map_err(|e| mongo_error(format!("change stream of {ns} failed"), &e))
        };
        match probe.await {
            Ok(_) => Ok(true),
            Err(e) if e.code == crate::error::ErrorCode::HistoryLost => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn plan_streams(&self, followed: &[Namespace]) {
        self.databases.plan(followed);
    }

    fn forget_stream(&self, ns: &Namespace) {
        self.databases.forget(ns);
    }

    async fn open_stream(&self, ns: &Namespace, start: &StreamStart, limits: FeedLimits, cancel: CancellationToken) -> SyncResult<ChangeFeed> {
        if let Some(from) = self.databases.shared_start(ns, start) {
            return Ok(self.databases.open(ns, from, limits));
        }
        let stream = change_stream::open(&self.collection(ns), start, MAX_AWAIT).await?;
        let ns = ns.clone();
        Ok(ChangeFeed::spawn(limits, move |tx| change_stream::read_ahead(stream, ns, tx, cancel)))
    }

    async fn estimated_count(&self, ns: &Namespace) -> u64 {
        self.collection(ns).estimated_document_count().await.unwrap_or(0)
    }

    async fn plan_ranges(&self, ns: &Namespace, readers: usize) -> SyncResult<RangePlan> {
        let collection = self.collection(ns);
        let extremes = copy::id_extremes(&collection).await.map_err(|e| mongo_error(format!("cannot read the _id range of {ns}"), &e))?;
        let extremes = extremes.as_ref().map(|(min, max)| (min, max));
        Ok(match copy::sample_ids(&collection, readers * 32).await {
            Ok(sample) => RangePlan { ranges: copy::plan_ranges(&sample, readers, extremes), warning: None },
            Err(e) => RangePlan {
                ranges: copy::plan_ranges(&[], 1, extremes),
                warning: Some(format!("cannot sample _ids to split the copy ({}); reading with one cursor", cause_chain(&e))),
            },
        })
    }

    async fn scan(&self, ns: &Namespace, range: &CopyRange, options: &ScanOptions) -> SyncResult<DocumentStream> {
        let failed = |e: mongodb::error::Error| mongo_error(format!("cannot start copying {ns}"), &e);
        let mut session = self.session_after(options.not_before).await.map_err(failed)?;
        let cursor = copy::open(&self.raw_collection(ns), range, options.filter.as_ref(), options.batch_size, &mut session).await.map_err(failed)?;
        let ns = ns.clone();
        // Each document is copied out of the batch as it is: nothing parses it but the converter.
        let documents = futures::stream::unfold((cursor, session), |(mut cursor, mut session)| async move {
            let next = match cursor.advance(&mut session).await {
                Ok(true) => Ok(cursor.current().to_raw_document_buf()),
                Ok(false) => return None,
                Err(e) => Err(e),
            };
            Some((next, (cursor, session)))
        });
        Ok(documents.map_err(move |e| mongo_error(format!("copy of {ns} failed"), &e)).boxed())
    }

    async fn lookup(&self, ns: &Namespace, id: &Bson, filter: Option<&Document>, not_before: Option<Timestamp>) -> SyncResult<Option<RawDocumentBuf>> {
        let failed = |e: mongodb::error::Error| mongo_error(format!("cannot look up {id} in {ns}"), &e);
        let query = copy::and_filter(doc! {"_id": id.clone()}, filter);
        let mut session = self.session_after(not_before).await.map_err(failed)?;
        self.raw_collection(ns).find_one(query).session(&mut session).await.map_err(failed)
    }

    async fn lookup_many(&self, ns: &Namespace, ids: &[Bson], filter: Option<&Document>, not_before: Option<Timestamp>, max_bytes: usize) -> SyncResult<Found> {
        let failed = |e: mongodb::error::Error| mongo_error(format!("cannot look up {} documents in {ns}", ids.len()), &e);
        let query = copy::and_filter(doc! {"_id": {"$in": ids}}, filter);
        let mut session = self.session_after(not_before).await.map_err(failed)?;
        let mut cursor = self.raw_collection(ns).find(query).session(&mut session).await.map_err(failed)?;
        let mut found = Found { documents: Vec::new(), complete: true };
        let mut bytes = 0;
        while cursor.advance(&mut session).await.map_err(failed)? {
            if bytes >= max_bytes {
                found.complete = false;
                break;
            }
            bytes += cursor.current().as_bytes().len();
            found.documents.push(cursor.current().to_raw_document_buf());
        }
        Ok(found)
    }

    async fn existing_ids(&self, ns: &Namespace, ids: &[Bson], not_before: Option<Timestamp>) -> SyncResult<Vec<Bson>> {
        let failed = |e: mongodb::error::Error| mongo_error(format!("cannot look up {} documents in {ns}", ids.len()), &e);
        let mut session = self.session_after(not_before).await.map_err(failed)?;
        let query = doc! {"_id": {"$in": ids}};
        let mut cursor = self.collection(ns).find(query).projection(doc! {"_id": 1}).session(&mut session).await.map_err(failed)?;
        let mut existing = Vec::new();
        while let Some(mut found) = cursor.next(&mut session).await.transpose().map_err(failed)? {
            existing.extend(found.remove("_id"));
        }
        Ok(existing)
    }

    async fn has_documents(&self, ns: &Namespace) -> SyncResult<bool> {
        let found = self.collection(ns).find_one(doc! {}).projection(doc! {"_id": 1}).await;
        Ok(found.map_err(|e| mongo_error(format!("cannot read {ns}"), &e))?.is_some())
    }

    async fn list_collections(&self) -> SyncResult<Vec<Namespace>> {
        discovery::list(&self.client).await
    }
}
