//! Checkpoints kept in a MongoDB collection, one document per (sync name, namespace).

use async_trait::async_trait;
use mongodb::bson::{doc, DateTime, Document};
use mongodb::options::{CollectionOptions, ReturnDocument, WriteConcern};
use mongodb::{Client, Collection};

use super::{fenced_off, CheckpointStore, CollectionCheckpoint};
use crate::config::{CheckpointConfig, Namespace};
use crate::error::{ErrorCode, SyncError, SyncResult};
use crate::source::mongo_error;

#[derive(Clone)]
pub struct MongoCheckpointStore {
    collection: Collection<Document>,
    name: String,
}

impl MongoCheckpointStore {
    pub fn new(client: &Client, config: &CheckpointConfig, name: &str) -> Self {
        let options = CollectionOptions::builder().write_concern(WriteConcern::majority()).build();
        let collection = client.database(&config.database).collection_with_options::<Document>(&config.collection, options);
        MongoCheckpointStore { collection, name: name.to_string() }
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
            Some(d) => CollectionCheckpoint::from_document(ns, d),
            None => Ok(CollectionCheckpoint::default()),
        }
    }

    async fn save(&self, ns: &Namespace, cp: &CollectionCheckpoint) -> SyncResult<()> {
        self.save_at(ns, cp, None).await
    }

    async fn load_fenced(&self, ns: &Namespace, term: u64) -> SyncResult<CollectionCheckpoint> {
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
        let Some(doc) = raised else { return Err(checkpoint_error_text(ns)) };
        if doc.get_i64("term").unwrap_or(0) > term as i64 {
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
        let saved = self.collection.find_one_and_update(filter, doc! {"$set": record}).upsert(true).return_document(ReturnDocument::After).await;
        match saved {
            Ok(_) => Ok(()),
            Err(e) if term.is_some() && is_duplicate_key(&e) => Err(fenced_off(ns, term.unwrap_or_default())),
            Err(e) => Err(checkpoint_error(format!("cannot save the checkpoint of {ns}"), &e)),
        }
    }
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    match &*e.kind {
        mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) => w.code == 11000,
        mongodb::error::ErrorKind::Command(c) => c.code == 11000,
        _ => false,
    }
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
