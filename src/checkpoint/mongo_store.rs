//! Checkpoints kept in a MongoDB collection, one document per (sync name, namespace).

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{doc, DateTime, Document, RawDocumentBuf};
use mongodb::options::{CollectionOptions, ReturnDocument, WriteConcern};
use mongodb::{Client, Collection};
use std::collections::HashMap;
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
        self.load_fenced_one(ns, term).await
    }

    async fn save_fenced(&self, ns: &Namespace, cp: &CollectionCheckpoint, term: u64) -> SyncResult<()> {
        self.save_at(ns, cp, Some(term)).await
    }

    /// `load_fenced` of each, [`KEYS_AT_ONCE`] per few round trips (a thousand one by one took
    /// ~40 s on the local server): the term raised where a checkpoint exists, the checkpoints
    /// read, and the missing ones created holding the term.
    async fn load_fenced_many(&self, namespaces: &[Namespace], term: u64) -> SyncResult<Vec<CollectionCheckpoint>> {
        let mut loaded = Vec::with_capacity(namespaces.len());
        for chunk in namespaces.chunks(KEYS_AT_ONCE) {
            let _turn = self.writes.acquire().await.map_err(|_| checkpoint_error_text(&chunk[0]))?;
            loaded.extend(self.load_fenced_chunk(chunk, term).await?);
        }
        Ok(loaded)
    }

    fn busy(&self) -> bool {
        self.writes.available_permits() == 0
    }

    async fn save_many(&self, checkpoints: &[(Namespace, CollectionCheckpoint)]) -> SyncResult<()> {
        self.save_grouped(checkpoints, None).await
    }

    async fn save_fenced_many(&self, checkpoints: &[(Namespace, CollectionCheckpoint)], term: u64) -> SyncResult<()> {
        self.save_grouped(checkpoints, Some(term)).await
    }
}

/// Checkpoints read, raised or saved per command by the `*_many` methods.
const KEYS_AT_ONCE: usize = 500;

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

impl MongoCheckpointStore {
    /// `load_fenced` of one checkpoint: its term raised (the document created if missing) and read back at once.
    async fn load_fenced_one(&self, ns: &Namespace, term: u64) -> SyncResult<CollectionCheckpoint> {
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
        checked_term(ns, document_of(ns, raw)?, term)
    }

    async fn load_fenced_chunk(&self, chunk: &[Namespace], term: u64) -> SyncResult<Vec<CollectionCheckpoint>> {
        let keys: Vec<String> = chunk.iter().map(|ns| self.key(ns)).collect();
        let failed = |e: &mongodb::error::Error| checkpoint_error(format!("cannot read the checkpoints of {} collections ({} …)", chunk.len(), chunk[0]), e);
        self.collection.update_many(doc! {"_id": {"$in": &keys}}, doc! {"$max": {"term": term as i64}}).await.map_err(|e| failed(&e))?;
        let mut found = self.find_many(&keys).await.map_err(|e| failed(&e))?;
        let missing: Vec<&Namespace> = chunk.iter().filter(|ns| !found.contains_key(&self.key(ns))).collect();
        if !missing.is_empty() {
            let created: Vec<Document> =
                missing.iter().map(|ns| doc! {"_id": self.key(ns), "term": term as i64, "name": &self.name, "namespace": ns.to_string()}).collect();
            let raw: Vec<RawDocumentBuf> = created
                .iter()
                .map(RawDocumentBuf::from_document)
                .collect::<Result<_, _>>()
                .map_err(|e| SyncError::new(ErrorCode::Checkpoint, format!("cannot create the checkpoints of {} collections: {e}", missing.len())))?;
            // Unordered: one created meanwhile by another instance (a duplicate key) leaves the
            // others created; those are read again below.
            let inserted = self.collection.insert_many(raw).ordered(false).await;
            if inserted.is_err() {
                found = self.find_many(&keys).await.map_err(|e| failed(&e))?;
            } else {
                found.extend(created.into_iter().map(|d| (d.get_str("_id").unwrap_or_default().to_string(), d)));
            }
        }
        let mut loaded = Vec::with_capacity(chunk.len());
        for ns in chunk {
            // Still missing (an insert failed otherwise than on a duplicate key): one by one.
            let Some(doc) = found.remove(&self.key(ns)) else {
                loaded.push(self.load_fenced_one(ns, term).await?);
                continue;
            };
            loaded.push(checked_term(ns, doc, term)?);
        }
        Ok(loaded)
    }

    /// Saves checkpoints that are alike (the start points of collections starting together) with
    /// one update per [`KEYS_AT_ONCE`]; where not every one was there to update (missing, or held
    /// by a later term), those are saved one by one, which tells which.
    async fn save_grouped(&self, checkpoints: &[(Namespace, CollectionCheckpoint)], term: Option<u64>) -> SyncResult<()> {
        let mut groups: Vec<(Document, Vec<&Namespace>)> = Vec::new();
        for (ns, cp) in checkpoints {
            let record = cp.to_document()?;
            match groups.iter_mut().find(|(r, _)| *r == record) {
                Some((_, namespaces)) => namespaces.push(ns),
                None => groups.push((record, vec![ns])),
            }
        }
        for (mut record, namespaces) in groups {
            record.insert("name", &self.name);
            record.insert("updatedAt", DateTime::now());
            if let Some(term) = term {
                record.insert("term", term as i64);
            }
            for chunk in namespaces.chunks(KEYS_AT_ONCE) {
                if !self.update_alike(chunk, &record, term).await? {
                    let cp = checkpoints.iter().find(|(ns, _)| ns == chunk[0]).map(|(_, cp)| cp).expect("grouped from these");
                    for ns in chunk {
                        self.save_at(ns, cp, term).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Sets `record` on every one of these checkpoints that exists (and, with a term, is not
    /// held by a later one): whether every one was.
    async fn update_alike(&self, chunk: &[&Namespace], record: &Document, term: Option<u64>) -> SyncResult<bool> {
        let keys: Vec<String> = chunk.iter().map(|ns| self.key(ns)).collect();
        let mut filter = doc! {"_id": {"$in": &keys}};
        if let Some(term) = term {
            filter.insert("$or", vec![doc! {"term": {"$exists": false}}, doc! {"term": {"$lte": term as i64}}]);
        }
        let _turn = self.writes.acquire().await.map_err(|_| checkpoint_error_text(chunk[0]))?;
        let updated = (self.collection.update_many(filter, doc! {"$set": record}).await)
            .map_err(|e| checkpoint_error(format!("cannot save the checkpoints of {} collections ({} …)", chunk.len(), chunk[0]), &e))?;
        Ok(updated.matched_count == keys.len() as u64)
    }

    /// The stored checkpoints with these keys, by key.
    async fn find_many(&self, keys: &[String]) -> mongodb::error::Result<HashMap<String, Document>> {
        let mut cursor = self.collection.find(doc! {"_id": {"$in": keys}}).await?;
        let mut found = HashMap::new();
        while let Some(raw) = cursor.try_next().await? {
            let Ok(doc) = Document::try_from(raw) else { continue };
            if let Ok(id) = doc.get_str("_id") {
                found.insert(id.to_string(), doc);
            }
        }
        Ok(found)
    }
}

/// A checkpoint loaded by the holder of `term`: refused if a later term has been there.
fn checked_term(ns: &Namespace, doc: Document, term: u64) -> SyncResult<CollectionCheckpoint> {
    if super::stored_term(ns, &doc)? > term {
        return Err(fenced_off(ns, term));
    }
    CollectionCheckpoint::from_document(ns, doc)
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
