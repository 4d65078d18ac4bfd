//! The lease in MongoDB: one document per sync name, `{_id: {lease: name}}`, in the checkpoint
//! collection (its `_id` is a document, so it never meets a checkpoint's string key); in the
//! partitioned mode also one per collection, `{_id: {lease: name, ns}}`, and one heartbeat
//! document per member, `{_id: {members: name, group, id}}`. Every write is a conditional update
//! with majority write concern; reads are majority reads. Every lease document also carries
//! `kind` and `sync` (the name), and a collection's its `ns`, so that they can be found by query
//! and a new term chosen above every term of the name.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::options::{CollectionOptions, ReadConcern, WriteConcern};
use mongodb::{Client, Collection};

use super::group::{GroupStore, MemberRecord};
use super::{Instance, LeaseRecord, LeaseStore};
use crate::config::CheckpointConfig;
use crate::error::{ErrorCode, SyncError, SyncResult};
use crate::source::mongo::{is_duplicate_key, whole_number};
use crate::source::mongo_error;

const LEASE: &str = "lease";
const MEMBER: &str = "member";

#[derive(Clone)]
pub struct MongoLeaseStore {
    collection: Collection<Document>,
    key: Document,
    name: String,
    /// A collection's lease (partitioned mode): its namespace.
    ns: Option<String>,
}

fn coordination_collection(client: &Client, config: &CheckpointConfig) -> Collection<Document> {
    let options = CollectionOptions::builder().write_concern(WriteConcern::majority()).read_concern(ReadConcern::majority()).build();
    client.database(&config.database).collection_with_options::<Document>(&config.collection, options)
}

impl MongoLeaseStore {
    pub fn new(client: &Client, config: &CheckpointConfig, name: &str) -> Self {
        MongoLeaseStore { collection: coordination_collection(client, config), key: doc! {"lease": name}, name: name.to_string(), ns: None }
    }

    fn held_by(&self, me: &Instance, term: u64, version: u64, duration: Duration) -> Document {
        let mut record = doc! {
            "_id": self.key.clone(),
            "kind": LEASE,
            "sync": &self.name,
            "holder": &me.id,
            "term": term as i64,
            "version": version as i64,
            "durationMs": duration.as_millis() as i64,
            "host": &me.host,
            "pid": me.pid as i64,
            // For people reading the document: this machine's clock, never used to decide.
            "renewedAt": DateTime::now(),
        };
        if let Some(ns) = &self.ns {
            record.insert("ns", ns);
        }
        record
    }

    /// A new term: above `seen` and above every term of this name's leases (the whole-name
    /// lease and the collections'), so that a checkpoint saved under either mode never refuses
    /// the other's next holder.
    async fn next_term(&self, seen: u64) -> SyncResult<u64> {
        let filter = doc! {"kind": LEASE, "sync": &self.name};
        let highest = self.collection.find_one(filter).sort(doc! {"term": -1}).await.map_err(|e| lease_error("cannot read the terms", &e))?;
        let highest = highest.as_ref().map(record_of).transpose()?.map_or(0, |r| r.term);
        Ok(highest.max(seen) + 1)
    }
}

fn lease_error(context: &str, e: &mongodb::error::Error) -> SyncError {
    let mut err = mongo_error(format!("the lease: {context}"), e);
    if err.code == ErrorCode::HistoryLost || err.code == ErrorCode::EventTooLarge {
        err.code = ErrorCode::Mongo;
    }
    err
}

fn number(doc: &Document, key: &str) -> SyncResult<u64> {
    match whole_number(doc.get(key)) {
        Some(v) => Ok(v),
        None => Err(SyncError::new(
            ErrorCode::Mongo,
            format!("the coordination document {} has no valid \"{key}\"", doc.get("_id").map(|i| i.to_string()).unwrap_or_default()),
        )),
    }
}

fn record_of(doc: &Document) -> SyncResult<LeaseRecord> {
    Ok(LeaseRecord {
        holder: doc.get_str("holder").ok().map(str::to_string),
        term: number(doc, "term")?,
        version: number(doc, "version")?,
        duration: Duration::from_millis(number(doc, "durationMs")?),
        host: doc.get_str("host").unwrap_or_default().to_string(),
        pid: u32::try_from(number(doc, "pid").unwrap_or(0)).unwrap_or(0),
    })
}

#[async_trait]
impl LeaseStore for MongoLeaseStore {
    async fn read(&self) -> SyncResult<Option<LeaseRecord>> {
        let found = self.collection.find_one(doc! {"_id": self.key.clone()}).await.map_err(|e| lease_error("cannot read it", &e))?;
        found.as_ref().map(record_of).transpose()
    }

    async fn create(&self, me: &Instance, duration: Duration) -> SyncResult<Option<LeaseRecord>> {
        let record = self.held_by(me, self.next_term(0).await?, 1, duration);
        match self.collection.insert_one(&record).await {
            Ok(_) => record_of(&record).map(Some),
            Err(e) if is_duplicate_key(&e) => Ok(None),
            Err(e) => Err(lease_error("cannot create it", &e)),
        }
    }

    async fn take(&self, me: &Instance, duration: Duration, seen: &LeaseRecord) -> SyncResult<Option<LeaseRecord>> {
        let record = self.held_by(me, self.next_term(seen.term).await?, seen.version + 1, duration);
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
        let update = doc! {"$inc": {"version": 1_i64}, "$set": {"renewedAt": DateTime::now(), "kind": LEASE, "sync": &self.name}};
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

/// A partitioned group's members and collection leases, beside the checkpoints.
#[derive(Clone)]
pub struct MongoGroupStore {
    collection: Collection<Document>,
    name: String,
    group: String,
}

impl MongoGroupStore {
    pub fn new(client: &Client, config: &CheckpointConfig, name: &str, group: &str) -> Self {
        MongoGroupStore { collection: coordination_collection(client, config), name: name.to_string(), group: group.to_string() }
    }

    fn member_key(&self, me: &Instance) -> Document {
        doc! {"members": &self.name, "group": &self.group, "id": &me.id}
    }

    async fn all(&self, filter: Document, what: &str) -> SyncResult<Vec<Document>> {
        let cursor = self.collection.find(filter).await.map_err(|e| lease_error(what, &e))?;
        cursor.try_collect().await.map_err(|e| lease_error(what, &e))
    }
}

#[async_trait]
impl GroupStore for MongoGroupStore {
    async fn heartbeat(&self, me: &Instance, duration: Duration) -> SyncResult<()> {
        let set = doc! {
            "kind": MEMBER, "sync": &self.name, "group": &self.group, "member": &me.id,
            "durationMs": duration.as_millis() as i64, "host": &me.host, "pid": me.pid as i64, "renewedAt": DateTime::now(),
        };
        let update = doc! {"$inc": {"version": 1_i64}, "$set": set};
        self.collection
            .update_one(doc! {"_id": self.member_key(me)}, update)
            .upsert(true)
            .await
            .map_err(|e| lease_error("cannot write this member's heartbeat", &e))?;
        Ok(())
    }

    async fn leave(&self, me: &Instance) -> SyncResult<()> {
        self.collection.delete_one(doc! {"_id": self.member_key(me)}).await.map_err(|e| lease_error("cannot remove this member", &e))?;
        Ok(())
    }

    async fn members(&self) -> SyncResult<Vec<MemberRecord>> {
        let found = self.all(doc! {"kind": MEMBER, "sync": &self.name, "group": &self.group}, "cannot read the group's members").await?;
        found
            .iter()
            .map(|d| {
                Ok(MemberRecord {
                    id: d.get_str("member").unwrap_or_default().to_string(),
                    version: number(d, "version")?,
                    duration: Duration::from_millis(number(d, "durationMs")?),
                    host: d.get_str("host").unwrap_or_default().to_string(),
                    pid: u32::try_from(number(d, "pid").unwrap_or(0)).unwrap_or(0),
                })
            })
            .collect()
    }

    async fn leases(&self) -> SyncResult<BTreeMap<String, LeaseRecord>> {
        let filter = doc! {"kind": LEASE, "sync": &self.name, "ns": {"$exists": true}};
        let found = self.all(filter, "cannot read the collections' leases").await?;
        found.iter().filter_map(|d| d.get_str("ns").ok().map(|ns| record_of(d).map(|r| (ns.to_string(), r)))).collect()
    }

    fn lease(&self, namespace: &str) -> std::sync::Arc<dyn LeaseStore> {
        let key = doc! {"lease": &self.name, "ns": namespace};
        std::sync::Arc::new(MongoLeaseStore { collection: self.collection.clone(), key, name: self.name.clone(), ns: Some(namespace.to_string()) })
    }
}
