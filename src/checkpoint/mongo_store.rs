//! Checkpoints kept in a MongoDB collection, one document per (sync name, namespace).

use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::options::{CollectionOptions, ReturnDocument, WriteConcern};
use mongodb::{Client, Collection};

use super::{CollectionCheckpoint, CopyRange};
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

    pub async fn load(&self, ns: &Namespace) -> SyncResult<CollectionCheckpoint> {
        let found =
            self.collection.find_one(doc! {"_id": self.key(ns)}).await.map_err(|e| checkpoint_error(format!("cannot read the checkpoint of {ns}"), &e))?;
        let Some(d) = found else { return Ok(CollectionCheckpoint::default()) };
        let bad = |field: &str| SyncError::new(ErrorCode::Checkpoint, format!("checkpoint of {ns} has an invalid \"{field}\""));
        Ok(CollectionCheckpoint {
            start_at: match d.get("startAt") {
                None | Some(Bson::Null) => None,
                Some(Bson::Timestamp(t)) => Some(*t),
                Some(_) => return Err(bad("startAt")),
            },
            copy_ranges: match d.get("copyRanges") {
                None | Some(Bson::Null) => Vec::new(),
                Some(Bson::Array(ranges)) => {
                    ranges.iter().map(|r| r.as_document().map(range_from_document)).collect::<Option<_>>().ok_or_else(|| bad("copyRanges"))?
                }
                Some(_) => return Err(bad("copyRanges")),
            },
            copy_done: d.get_bool("copyDone").unwrap_or(false),
            copied: d.get_i64("copied").unwrap_or(0).max(0) as u64,
            resume_token: match d.get("resumeToken") {
                None | Some(Bson::Null) => None,
                Some(Bson::Document(t)) => Some(t.clone()),
                Some(_) => return Err(bad("resumeToken")),
            },
            physical_index: d.get_str("physicalIndex").ok().map(str::to_string),
            generation: d.get_i32("generation").unwrap_or(0).max(0) as u32,
            replaces: d.get_str("replaces").ok().map(str::to_string),
        })
    }

    pub async fn save(&self, ns: &Namespace, cp: &CollectionCheckpoint) -> SyncResult<()> {
        let opt = |v: Option<Bson>| v.unwrap_or(Bson::Null);
        let record = doc! {
            "name": &self.name,
            "namespace": ns.to_string(),
            "startAt": opt(cp.start_at.map(Bson::Timestamp)),
            "copyRanges": cp.copy_ranges.iter().map(range_to_document).collect::<Vec<_>>(),
            "copyDone": cp.copy_done,
            "copied": cp.copied as i64,
            "resumeToken": opt(cp.resume_token.clone().map(Bson::Document)),
            "physicalIndex": opt(cp.physical_index.clone().map(Bson::String)),
            "generation": cp.generation as i32,
            "replaces": opt(cp.replaces.clone().map(Bson::String)),
            "updatedAt": DateTime::now(),
        };
        self.collection
            .find_one_and_update(doc! {"_id": self.key(ns)}, doc! {"$set": record})
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await
            .map_err(|e| checkpoint_error(format!("cannot save the checkpoint of {ns}"), &e))?;
        Ok(())
    }
}

fn range_to_document(r: &CopyRange) -> Bson {
    // Bounds are wrapped so that a null `_id` bound stays distinguishable from "no bound".
    Bson::Document(doc! {
        "lower": r.lower.as_ref().map_or(Bson::Null, |b| Bson::Document(doc! {"v": b.clone()})),
        "upper": r.upper.as_ref().map_or(Bson::Null, |b| Bson::Document(doc! {"v": b.clone()})),
        "lastId": r.last_id.as_ref().map_or(Bson::Null, |b| Bson::Document(doc! {"v": b.clone()})),
        "done": r.done,
        "singleType": r.single_type,
    })
}

fn range_from_document(d: &Document) -> CopyRange {
    let bound = |key: &str| d.get_document(key).ok().and_then(|w| w.get("v").cloned());
    CopyRange {
        lower: bound("lower"),
        upper: bound("upper"),
        last_id: bound("lastId"),
        done: d.get_bool("done").unwrap_or(false),
        single_type: d.get_bool("singleType").unwrap_or(false),
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
