//! The lease in MongoDB: one document per sync name, `{_id: {lease: name}}`, in the checkpoint
//! collection (its `_id` is a document, so it never meets a checkpoint's string key). Every write
//! is a conditional update with majority write concern; reads are majority reads.

use std::time::Duration;

use async_trait::async_trait;
use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::error::ErrorKind;
use mongodb::options::{CollectionOptions, ReadConcern, WriteConcern};
use mongodb::{Client, Collection};

use super::{Instance, LeaseRecord, LeaseStore};
use crate::config::CheckpointConfig;
use crate::error::{ErrorCode, SyncError, SyncResult};
use crate::source::mongo_error;

#[derive(Clone)]
pub struct MongoLeaseStore {
    collection: Collection<Document>,
    key: Document,
}

impl MongoLeaseStore {
    pub fn new(client: &Client, config: &CheckpointConfig, name: &str) -> Self {
        let options = CollectionOptions::builder().write_concern(WriteConcern::majority()).read_concern(ReadConcern::majority()).build();
        let collection = client.database(&config.database).collection_with_options::<Document>(&config.collection, options);
        MongoLeaseStore { collection, key: doc! {"lease": name} }
    }

    fn held_by(&self, me: &Instance, term: u64, version: u64, duration: Duration) -> Document {
        doc! {
            "_id": self.key.clone(),
            "holder": &me.id,
            "term": term as i64,
            "version": version as i64,
            "durationMs": duration.as_millis() as i64,
            "host": &me.host,
            "pid": me.pid as i64,
            // For people reading the document: this machine's clock, never used to decide.
            "renewedAt": DateTime::now(),
        }
    }
}

fn lease_error(context: &str, e: &mongodb::error::Error) -> SyncError {
    let mut err = mongo_error(format!("the lease: {context}"), e);
    if err.code == ErrorCode::HistoryLost || err.code == ErrorCode::EventTooLarge {
        err.code = ErrorCode::Mongo;
    }
    err
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    match &*e.kind {
        ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) => w.code == 11000,
        ErrorKind::Command(c) => c.code == 11000,
        _ => false,
    }
}

fn record_of(doc: &Document) -> SyncResult<LeaseRecord> {
    let number = |key: &str| match doc.get(key) {
        Some(Bson::Int64(v)) => Ok(*v),
        Some(Bson::Int32(v)) => Ok(*v as i64),
        _ => Err(SyncError::new(
            ErrorCode::Mongo,
            format!("the lease document {} has no valid \"{key}\"", doc.get("_id").map(|i| i.to_string()).unwrap_or_default()),
        )),
    };
    Ok(LeaseRecord {
        holder: doc.get_str("holder").ok().map(str::to_string),
        term: number("term")?.max(0) as u64,
        version: number("version")?.max(0) as u64,
        duration: Duration::from_millis(number("durationMs")?.max(0) as u64),
        host: doc.get_str("host").unwrap_or_default().to_string(),
        pid: number("pid").unwrap_or(0).max(0) as u32,
    })
}

#[async_trait]
impl LeaseStore for MongoLeaseStore {
    async fn read(&self) -> SyncResult<Option<LeaseRecord>> {
        let found = self.collection.find_one(doc! {"_id": self.key.clone()}).await.map_err(|e| lease_error("cannot read it", &e))?;
        found.as_ref().map(record_of).transpose()
    }

    async fn create(&self, me: &Instance, duration: Duration) -> SyncResult<Option<LeaseRecord>> {
        let record = self.held_by(me, 1, 1, duration);
        match self.collection.insert_one(&record).await {
            Ok(_) => record_of(&record).map(Some),
            Err(e) if is_duplicate_key(&e) => Ok(None),
            Err(e) => Err(lease_error("cannot create it", &e)),
        }
    }

    async fn take(&self, me: &Instance, duration: Duration, seen: &LeaseRecord) -> SyncResult<Option<LeaseRecord>> {
        let record = self.held_by(me, seen.term + 1, seen.version + 1, duration);
        let filter = doc! {"_id": self.key.clone(), "version": seen.version as i64};
        let result = self.collection.replace_one(filter, &record).await.map_err(|e| lease_error("cannot take it over", &e))?;
        if result.matched_count == 1 {
            record_of(&record).map(Some)
        } else {
            Ok(None)
        }
    }

    async fn renew(&self, me: &Instance, term: u64) -> SyncResult<bool> {
        let filter = doc! {"_id": self.key.clone(), "holder": &me.id, "term": term as i64};
        let update = doc! {"$inc": {"version": 1_i64}, "$set": {"renewedAt": DateTime::now()}};
        let result = self.collection.update_one(filter, update).await.map_err(|e| lease_error("cannot renew it", &e))?;
        Ok(result.matched_count == 1)
    }

    async fn release(&self, me: &Instance, term: u64) -> SyncResult<()> {
        let filter = doc! {"_id": self.key.clone(), "holder": &me.id, "term": term as i64};
        let update = doc! {"$inc": {"version": 1_i64}, "$set": {"holder": Bson::Null, "releasedAt": DateTime::now()}};
        self.collection.update_one(filter, update).await.map_err(|e| lease_error("cannot release it", &e))?;
        Ok(())
    }
}
