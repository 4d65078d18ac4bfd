//! Checkpoints kept in a MongoDB collection, one document per (sync name, namespace).

use async_trait::async_trait;
use mongodb::bson::{doc, DateTime, Document, RawDocumentBuf};
use mongodb::options::{CollectionOptions, ReturnDocument, WriteConcern};
use mongodb::{Client, Collection};
use std::sync::Arc;
use tokio::sync::Semaphore;

use super::{fenced_off, CheckpointStore, CollectionCheckpoint};
use crate::config::{CheckpointConfig, Namespace};
use crate::error::{ErrorCode, SyncError, SyncResult};
use crate::source::mongo::is_duplicate_key;
use crate::source::mongo_error;

/// Checkpoint writes in flight at once (the others wait here, not in the driver's pool): a
/// thousand collections' saves, due together, otherwise fill the pool's wait queue, and the
/// lease renewal and the change stream's getMore wait behind them (measured: the lease lost).
const WRITES_AT_ONCE: usize = 8;

/// Checkpoints are read as raw BSON and converted element by element: read through serde, a
/// sub-document whose first key looks like extended JSON (`$code`, `$oid`, … in an opaque
/// resume token) would come back as another BSON type.
#[derive(Clone)]
pub struct MongoCheckpointStore {
    collection: Collection<RawDocumentBuf>,
    name: String,
    writes: Arc<Semaphore>,
}

impl MongoCheckpointStore {
    pub fn new(client: &Client, config: &CheckpointConfig, name: &str) -> Self {
        let options = CollectionOptions::builder().write_concern(WriteConcern::majority()).build();
        let collection = client.database(&config.database).collection_with_options::<RawDocumentBuf>(&config.collection, options);
        MongoCheckpointStore { collection, name: name.to_string(), writes: Arc::new(Semaphore::new(WRITES_AT_ONCE)) }
    }

    fn key(&self, ns: &Namespace) -> String {
        format!("{}:{}", self.name, ns)
    }
}

#[async_trait]
impl CheckpointStore for MongoCheckpointStore {
    async fn load(&self, ns: &Namespace) -> SyncResult<CollectionCheckpoint> {
        let found =
            self.collection.find_one(doc! {"_id": self.key(ns)}).await.map_err(|e| checkpoint_error(format!("cannot read the checkpoint of {ns}"), &e))?;
        match found {
            Some(raw) => CollectionCheckpoint::from_document(ns, document_of(ns, raw)?),
            None => Ok(CollectionCheckpoint::default()),
        }
    }

    async fn save(&self, ns: &Namespace, cp: &CollectionCheckpoint) -> SyncResult<()> {
        self.save_at(ns, cp, None).await
    }

    async fn load_fenced(&self, ns: &Namespace, term: u64) -> SyncResult<CollectionCheckpoint> {
        let _turn = self.writes.acquire().await.map_err(|_| checkpoint_error_text(ns))?;
        let raised = self
            .collection
            .find_one_and_update(
                doc! {"_id": self.key(ns)},
                doc! {"$max": {"term": term as i64}, "$setOnInsert": {"name": &self.name, "namespace": ns.to_string()}},
            )
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await
            .map_err(|e| checkpoint_error(format!("cannot read the checkpoint of {ns}"), &e))?;
        let Some(raw) = raised else { return Err(checkpoint_error_text(ns)) };
        let doc = document_of(ns, raw)?;
        if super::stored_term(ns, &doc)? > term {
            return Err(fenced_off(ns, term));
        }
        CollectionCheckpoint::from_document(ns, doc)
    }

    async fn save_fenced(&self, ns: &Namespace, cp: &CollectionCheckpoint, term: u64) -> SyncResult<()> {
        self.save_at(ns, cp, Some(term)).await
    }
}

impl MongoCheckpointStore {
    /// Saves; with a term, only where no later term has been (else the upsert's insert meets
    /// the existing `_id`: a duplicate key, the refusal).
    async fn save_at(&self, ns: &Namespace, cp: &CollectionCheckpoint, term: Option<u64>) -> SyncResult<()> {
        let mut record = cp.to_document()?;
        record.insert("name", &self.name);
        record.insert("namespace", ns.to_string());
        record.insert("updatedAt", DateTime::now());
        let mut filter = doc! {"_id": self.key(ns)};
        if let Some(term) = term {
            record.insert("term", term as i64);
            filter.insert("$or", vec![doc! {"term": {"$exists": false}}, doc! {"term": {"$lte": term as i64}}]);
        }
        let _turn = self.writes.acquire().await.map_err(|_| checkpoint_error_text(ns))?;
        let saved = self.collection.find_one_and_update(filter, doc! {"$set": record}).upsert(true).return_document(ReturnDocument::After).await;
        match saved {
            Ok(_) => Ok(()),
            Err(e) if term.is_some() && is_duplicate_key(&e) => Err(fenced_off(ns, term.unwrap_or_default())),
            Err(e) => Err(checkpoint_error(format!("cannot save the checkpoint of {ns}"), &e)),
        }
    }
}

/// A stored checkpoint as a `Document`, exactly (no serde on the way).
fn document_of(ns: &Namespace, raw: RawDocumentBuf) -> SyncResult<Document> {
    Document::try_from(raw).map_err(|e| SyncError::new(ErrorCode::Checkpoint, format!("the checkpoint of {ns} is not readable BSON: {e}")))
}

fn checkpoint_error_text(ns: &Namespace) -> SyncError {
    SyncError::new(ErrorCode::Checkpoint, format!("cannot read the checkpoint of {ns}: the server returned no document"))
}

/// A checkpoint failure: transient (`MongoUnreachable`, retried by the pipeline) when the
/// server is out of reach, `Checkpoint` otherwise.
fn checkpoint_error(context: String, err: &mongodb::error::Error) -> SyncError {
    let mut e = mongo_error(context, err);
    if e.code != ErrorCode::MongoUnreachable {
        e.code = ErrorCode::Checkpoint;
    }
    e
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{doc, Bson};

    use super::*;

    /// A checkpoint read back from the server keeps its resume token as it was saved: read
    /// through serde (as a `Collection<Document>` reads), `{$code: …}` turns into JavaScript code.
    #[test]
    fn a_stored_checkpoint_is_read_exactly() {
        let ns = Namespace::parse("shop.orders").unwrap();
        let stored = doc! {"_id": "s:shop.orders", "resumeToken": {"_id": {"$code": "8265F0C0FF"}, "$oid": "zz"}, "schema": 3};
        let raw = RawDocumentBuf::from_document(&stored).unwrap();
        let through_serde = mongodb::bson::from_slice::<Document>(raw.as_bytes());
        assert!(through_serde.as_ref().ok() != Some(&stored), "serde reads it otherwise (or fails): {through_serde:?}");
        let code_alone = RawDocumentBuf::from_document(&doc! {"t": {"_id": {"$code": "82"}}}).unwrap();
        let code_alone: Document = mongodb::bson::from_slice(code_alone.as_bytes()).unwrap();
        assert!(matches!(code_alone.get_document("t").unwrap().get("_id"), Some(Bson::JavaScriptCode(_))), "serde reads it as code");
        assert_eq!(document_of(&ns, raw).unwrap(), stored);
        let cp = CollectionCheckpoint::from_document(&ns, stored.clone()).unwrap();
        assert_eq!(cp.resume_token.as_ref(), stored.get_document("resumeToken").ok());
    }
}
