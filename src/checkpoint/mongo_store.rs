//! Checkpoints kept in a MongoDB collection, one document per (sync name, namespace).

use async_trait::async_trait;
use mongodb::bson::{doc, DateTime, Document};
use mongodb::options::{CollectionOptions, ReturnDocument, WriteConcern};
use mongodb::{Client, Collection};

use super::{CheckpointStore, CollectionCheckpoint};
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
        let mut record = cp.to_document()?;
        record.insert("name", &self.name);
        record.insert("namespace", ns.to_string());
        record.insert("updatedAt", DateTime::now());
        self.collection
            .find_one_and_update(doc! {"_id": self.key(ns)}, doc! {"$set": record})
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await
            .map_err(|e| checkpoint_error(format!("cannot save the checkpoint of {ns}"), &e))?;
        Ok(())
    }
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
