//! Durable progress: where each collection's copy and stream stand, as acknowledged by the sink.
//! Only positions whose writes the outputs acknowledged (or dead-lettered) are ever saved here.
//!
//! A checkpoint is one document per (sync name, namespace), (de)serialised with serde and
//! stamped with [`SCHEMA`]; documents written before the stamp existed (schema 1) load as they are.

mod memory;
mod mongo_store;
mod postgres_store;
#[cfg(test)]
mod props;

use async_trait::async_trait;
use mongodb::bson::{Bson, Document, Timestamp};
use serde::{Deserialize, Serialize};

use crate::config::Namespace;
use crate::error::{ErrorCode, SyncError, SyncResult};
use crate::source::mongo::whole_number;

pub use memory::MemoryCheckpointStore;
pub use mongo_store::MongoCheckpointStore;
pub use postgres_store::PostgresCheckpointStore;

/// The checkpoint format written by this version. 1: the unversioned documents of earlier
/// versions (read as they are); 2: adds `schema` and `tokenIsInvalidate`; 3: adds `term`, the
/// lease term of the instance that saved it (saves of earlier terms are refused, and versions
/// that do not know terms refuse to read it).
pub const SCHEMA: u32 = 3;

/// Where checkpoints are kept. Every method returns once the checkpoint is durable.
#[async_trait]
pub trait CheckpointStore: Send + Sync {
    /// The saved checkpoint of a collection, or an empty one.
    async fn load(&self, ns: &Namespace) -> SyncResult<CollectionCheckpoint>;
    async fn save(&self, ns: &Namespace, checkpoint: &CollectionCheckpoint) -> SyncResult<()>;

    /// `load` by the holder of lease term `term`: the stored checkpoint's term is raised to it
    /// first, so that saves of earlier terms are refused from then on. `ERR_LEASE_LOST` if a
    /// later term has been there.
    async fn load_fenced(&self, ns: &Namespace, term: u64) -> SyncResult<CollectionCheckpoint>;

    /// `save` by the holder of lease term `term`: refused with `ERR_LEASE_LOST` once a later
    /// term has loaded or saved this checkpoint.
    async fn save_fenced(&self, ns: &Namespace, checkpoint: &CollectionCheckpoint, term: u64) -> SyncResult<()>;

    /// `load` of many collections (a start with a thousand of them), in their order; the first
    /// failure ends it. Stores that can read them in a few round trips instead of one each.
    async fn load_many(&self, namespaces: &[Namespace]) -> SyncResult<Vec<CollectionCheckpoint>> {
        let mut loaded = Vec::with_capacity(namespaces.len());
        for ns in namespaces {
            loaded.push(self.load(ns).await?);
        }
        Ok(loaded)
    }

    /// Whether its writes in flight are at their bound (a save now would wait behind others):
    /// position saves that can wait are put off then, so that a collection with changes to
    /// write does not queue behind a thousand others' saves.
    fn busy(&self) -> bool {
        false
    }

    /// `save` of many checkpoints (the start points of a thousand collections), as
    /// [`CheckpointStore::load_many`].
    async fn save_many(&self, checkpoints: &[(Namespace, CollectionCheckpoint)]) -> SyncResult<()> {
        for (ns, checkpoint) in checkpoints {
            self.save(ns, checkpoint).await?;
        }
        Ok(())
    }

    /// `save_fenced` of many checkpoints, as [`CheckpointStore::save_many`].
    async fn save_fenced_many(&self, checkpoints: &[(Namespace, CollectionCheckpoint)], term: u64) -> SyncResult<()> {
        for (ns, checkpoint) in checkpoints {
            self.save_fenced(ns, checkpoint, term).await?;
        }
        Ok(())
    }

    /// `load_fenced` of many collections, as [`CheckpointStore::load_many`].
    async fn load_fenced_many(&self, namespaces: &[Namespace], term: u64) -> SyncResult<Vec<CollectionCheckpoint>> {
        let mut loaded = Vec::with_capacity(namespaces.len());
        for ns in namespaces {
            loaded.push(self.load_fenced(ns, term).await?);
        }
        Ok(loaded)
    }
}

/// The refusal of a checkpoint save or load by a holder whose term is over.
pub fn fenced_off(ns: &Namespace, term: u64) -> SyncError {
    SyncError::new(ErrorCode::LeaseLost, format!("the checkpoint of {ns} is held by a later lease term than this instance's ({term}): not saved"))
}

/// The lease term a checkpoint document holds (0 when none): any whole, non-negative number, as
/// written by this engine (Int64), an older one, or by hand (mongosh writes doubles); anything
/// else is an error, never read as 0 (which would let any holder write).
pub fn stored_term(ns: &Namespace, doc: &Document) -> SyncResult<u64> {
    match doc.get("term") {
        None | Some(Bson::Null) => Ok(0),
        Some(term) => whole_number(Some(term)).ok_or_else(|| {
            SyncError::new(ErrorCode::Checkpoint, format!("the checkpoint of {ns} holds a term that is not a whole number of 0 or more: {term}"))
        }),
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CollectionCheckpoint {
    /// Cluster time read before the copy began: the stream starts here, and copied
    /// documents carry its version so that any change after it wins.
    pub start_at: Option<Timestamp>,
    /// The `_id` ranges the copy reads in parallel, each with its acknowledged progress.
    /// Empty until the copy starts.
    #[serde(deserialize_with = "null_as_default")]
    pub copy_ranges: Vec<CopyRange>,
    pub copy_done: bool,
    pub copied: u64,
    /// The change stream position up to which everything is acknowledged. Stored verbatim,
    /// beside serde (see [`CollectionCheckpoint::to_document`]): a token is opaque, and serde
    /// would read keys such as `$code` or `$oid` in it as BSON types.
    #[serde(skip)]
    pub resume_token: Option<Document>,
    /// `resume_token` is the token of an `invalidate` event (a drop or rename ended the
    /// stream): the server accepts it only as `startAfter`, never as `resumeAfter`.
    pub token_is_invalidate: bool,
    /// The concrete index written to, when it differs from the configured name (which is then
    /// an alias to it): `<index>-<generation>` after a re-copy.
    pub physical_index: Option<String>,
    pub generation: u32,
    /// The concrete index a re-copy replaces: dropped when the alias moves to the new one.
    pub replaces: Option<String>,
    /// Re-copies begun in a row because the history ran out during the copy; reset once a
    /// copy reaches its stream.
    pub history_lost_resyncs: u32,
}

/// One `_id` range of a collection's copy, read by its own cursor. Bounds are stored wrapped
/// (`{v: bound}`) so that a `null` `_id` bound stays distinguishable from "no bound".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CopyRange {
    /// Inclusive lower bound (none: from the smallest `_id`).
    #[serde(with = "wrapped_bound")]
    pub lower: Option<Bson>,
    /// Exclusive upper bound (none: to the largest `_id`).
    #[serde(with = "wrapped_bound")]
    pub upper: Option<Bson>,
    /// The last `_id` in this range that the outputs acknowledged; reading resumes after it.
    #[serde(with = "wrapped_bound")]
    pub last_id: Option<Bson>,
    pub done: bool,
    /// Every `_id` present when the copy started has the bounds' BSON type (the smallest and
    /// the largest did, and types sort together), so plain range bounds suffice: later inserts
    /// of other types come through the change stream.
    pub single_type: bool,
}

impl CollectionCheckpoint {
    /// Starts a re-copy of a collection whose configured index is `index`: from now on it is
    /// copied into a new concrete index `<index>-<n>` (returned), while the index readers use
    /// stays until the copy is done (then the alias `<index>` moves, see `replaces`). Also
    /// returns the half-filled index of an unfinished earlier re-copy, to delete.
    pub fn begin_recopy(&mut self, index: &str) -> (String, Option<String>) {
        let current = self.physical_index.clone().unwrap_or_else(|| index.to_string());
        let (serving, unfinished) = match self.replaces.clone() {
            Some(serving) if serving != current => (serving, Some(current)),
            Some(serving) => (serving, None),
            None => (current, None),
        };
        let generation = self.generation + 1;
        let new_index = format!("{index}-{generation}");
        *self = CollectionCheckpoint { physical_index: Some(new_index.clone()), generation, replaces: Some(serving), ..Default::default() };
        (new_index, unfinished)
    }

    /// The stored form: the fields, camelCased, and `schema`.
    pub fn to_document(&self) -> SyncResult<Document> {
        let mut doc = mongodb::bson::to_document(self).map_err(|e| SyncError::new(ErrorCode::Internal, format!("cannot serialise a checkpoint: {e}")))?;
        doc.insert("resumeToken", self.resume_token.clone().map_or(Bson::Null, Bson::Document));
        doc.insert("schema", SCHEMA as i32);
        Ok(doc)
    }

    /// Reads a stored checkpoint of `ns`, of this schema or an earlier one; other fields of the
    /// document (its key, name, time of update) are ignored.
    pub fn from_document(ns: &Namespace, mut doc: Document) -> SyncResult<Self> {
        let schema = match doc.get("schema") {
            None | Some(Bson::Null) => 1,
            Some(Bson::Int32(v)) => *v as i64,
            Some(Bson::Int64(v)) => *v,
            Some(other) => return Err(SyncError::new(ErrorCode::Checkpoint, format!("checkpoint of {ns} has an invalid \"schema\": {other}"))),
        };
        if schema > SCHEMA as i64 {
            return Err(SyncError::new(
                ErrorCode::Checkpoint,
                format!("checkpoint of {ns} has schema {schema}, written by a newer version of mongo-elastic-sync (this one reads up to {SCHEMA})"),
            ));
        }
        let resume_token = match doc.remove("resumeToken") {
            None | Some(Bson::Null) => None,
            Some(Bson::Document(token)) => Some(token),
            Some(other) => {
                let kind = other.element_type();
                return Err(SyncError::new(
                    ErrorCode::Checkpoint,
                    format!("checkpoint of {ns} has a \"resumeToken\" that is not a document (BSON type {kind:?})"),
                ));
            }
        };
        let checkpoint: Self =
            mongodb::bson::from_document(doc).map_err(|e| SyncError::new(ErrorCode::Checkpoint, format!("checkpoint of {ns} is invalid: {e}")))?;
        Ok(CollectionCheckpoint { resume_token, ..checkpoint })
    }
}

impl CollectionCheckpoint {
    /// The stored form as JSON text (canonical extended JSON, so that every BSON type reads back
    /// exactly), as kept where documents are not BSON (PostgreSQL).
    pub fn to_json(&self) -> SyncResult<String> {
        Ok(Bson::Document(self.to_document()?).into_canonical_extjson().to_string())
    }

    /// Reads a checkpoint of `ns` stored by [`CollectionCheckpoint::to_json`].
    pub fn from_json(ns: &Namespace, text: &str) -> SyncResult<Self> {
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|e| SyncError::new(ErrorCode::Checkpoint, format!("checkpoint of {ns} is not JSON: {e}")))?;
        match Bson::try_from(json) {
            Ok(Bson::Document(doc)) => CollectionCheckpoint::from_document(ns, doc),
            _ => Err(SyncError::new(ErrorCode::Checkpoint, format!("checkpoint of {ns} is not a document"))),
        }
    }
}

fn null_as_default<'de, D: serde::Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

mod wrapped_bound {
    use mongodb::bson::{doc, Bson, Document};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(bound: &Option<Bson>, s: S) -> Result<S::Ok, S::Error> {
        bound.as_ref().map(|b| doc! {"v": b.clone()}).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Bson>, D::Error> {
        Ok(Option::<Document>::deserialize(d)?.and_then(|mut w| w.remove("v")))
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{doc, oid::ObjectId, DateTime};

    use super::*;

    fn ns() -> Namespace {
        Namespace::parse("shop.orders").unwrap()
    }

    /// A term written by hand (mongosh writes numbers as doubles) or by an older version fences
    /// as the same number written as Int64; one that is no whole number is an error, never 0.
    #[tokio::test]
    async fn a_later_term_of_any_number_type_fences_off() {
        for later in [Bson::Double(5.0), Bson::Int32(5), Bson::Int64(5)] {
            let store = MemoryCheckpointStore::default();
            store.put_document(&ns(), doc! {"term": later.clone()});
            let refused = store.load_fenced(&ns(), 3).await.expect_err("a later term fences off");
            assert_eq!(refused.code, ErrorCode::LeaseLost, "{later}: {}", refused.message);
            assert!(store.load_fenced(&ns(), 5).await.is_ok(), "{later}: the same term loads");
        }
        for odd in [Bson::Double(4.5), Bson::String("7".into()), Bson::Double(-1.0)] {
            let store = MemoryCheckpointStore::default();
            store.put_document(&ns(), doc! {"term": odd.clone()});
            let refused = store.load_fenced(&ns(), 9).await.expect_err("an unreadable term is refused");
            assert_eq!(refused.code, ErrorCode::Checkpoint, "{odd}: {}", refused.message);
            assert!(refused.message.contains("term"), "{}", refused.message);
        }
    }

    /// A checkpoint exactly as versions before the schema stamp wrote it.
    fn schema_1_document() -> Document {
        let oid = ObjectId::parse_str("65f0c0ffee00000000000001").unwrap();
        doc! {
            "_id": "sync:shop.orders",
            "name": "sync",
            "namespace": "shop.orders",
            "startAt": Timestamp { time: 1_700_000_000, increment: 3 },
            "copyRanges": [
                { "lower": null, "upper": { "v": oid }, "lastId": { "v": null }, "done": true, "singleType": true },
                { "lower": { "v": oid }, "upper": null, "lastId": null, "done": false, "singleType": true },
            ],
            "copyDone": false,
            "copied": 1234_i64,
            "resumeToken": { "_data": "8265F0C0FF000000012B" },
            "physicalIndex": "orders-2",
            "generation": 2_i32,
            "replaces": null,
            "updatedAt": DateTime::from_millis(1_700_000_000_000),
        }
    }

    /// A resume token is opaque: whatever keys the server puts in it (here ones that look like
    /// extended JSON, as the fuzz target `change_event` found) are saved and loaded verbatim,
    /// never read as a type (a `{$code: …}` token was saved as JavaScript code, then refused on
    /// load: the sync could not restart).
    #[test]
    fn a_resume_token_of_any_shape_is_saved_and_loaded_verbatim() {
        let tokens = [
            doc! {"_id": {"$code": "8265F0C0FF000000012B"}},
            doc! {"$oid": "not hex", "_data": "82"},
            doc! {"_data": {"$numberLong": "1"}},
            doc! {"$code": "x", "$scope": {"a": 1}},
        ];
        for token in tokens {
            let cp = CollectionCheckpoint { resume_token: Some(token.clone()), ..Default::default() };
            let stored = cp.to_document().expect("serialises");
            assert_eq!(stored.get_document("resumeToken").ok(), Some(&token), "stored as it is");
            let loaded = CollectionCheckpoint::from_document(&ns(), stored).expect("loads");
            assert_eq!(loaded.resume_token, Some(token));
        }
        let odd = CollectionCheckpoint::from_document(&ns(), doc! {"resumeToken": "82"}).expect_err("a token that is no document");
        assert!(odd.message.contains("resumeToken"), "{}", odd.message);
    }

    #[test]
    fn a_checkpoint_in_the_format_before_schema_versions_loads() {
        let cp = CollectionCheckpoint::from_document(&ns(), schema_1_document()).unwrap();
        let oid = Bson::ObjectId(ObjectId::parse_str("65f0c0ffee00000000000001").unwrap());
        assert_eq!(cp.start_at, Some(Timestamp { time: 1_700_000_000, increment: 3 }));
        assert_eq!(cp.copy_ranges.len(), 2);
        assert_eq!(cp.copy_ranges[0], CopyRange { lower: None, upper: Some(oid.clone()), last_id: Some(Bson::Null), done: true, single_type: true });
        assert_eq!(cp.copy_ranges[1], CopyRange { lower: Some(oid), upper: None, last_id: None, done: false, single_type: true });
        assert_eq!((cp.copy_done, cp.copied, cp.generation), (false, 1234, 2));
        assert_eq!(cp.resume_token, Some(doc! {"_data": "8265F0C0FF000000012B"}));
        assert_eq!(cp.physical_index.as_deref(), Some("orders-2"));
        assert_eq!(cp.replaces, None);
        assert!(!cp.token_is_invalidate);
    }

    #[test]
    fn the_oldest_documents_with_nulls_and_missing_fields_load() {
        let cp = CollectionCheckpoint::from_document(&ns(), doc! {"_id": "x", "startAt": null, "copyRanges": null, "resumeToken": null}).unwrap();
        assert_eq!(cp, CollectionCheckpoint::default());
    }

    #[test]
    fn a_checkpoint_round_trips_with_its_schema() {
        let cp = CollectionCheckpoint {
            start_at: Some(Timestamp { time: 5, increment: 1 }),
            copy_ranges: vec![CopyRange { lower: Some(Bson::Null), upper: Some(Bson::Int32(7)), ..Default::default() }],
            copied: 9,
            resume_token: Some(doc! {"_data": "01"}),
            token_is_invalidate: true,
            generation: 1,
            physical_index: Some("i-1".into()),
            replaces: Some("i".into()),
            ..Default::default()
        };
        let stored = cp.to_document().unwrap();
        assert_eq!(stored.get_i32("schema").unwrap(), SCHEMA as i32);
        assert_eq!(stored.get_array("copyRanges").unwrap()[0].as_document().unwrap().get_document("lower").unwrap(), &doc! {"v": null});
        assert_eq!(CollectionCheckpoint::from_document(&ns(), stored).unwrap(), cp);
    }

    #[test]
    fn bad_or_newer_checkpoints_fail_with_err_checkpoint() {
        let newer = CollectionCheckpoint::from_document(&ns(), doc! {"schema": 99}).unwrap_err();
        assert_eq!(newer.code, ErrorCode::Checkpoint);
        assert!(newer.message.contains("newer version"), "{}", newer.message);
        let bad = CollectionCheckpoint::from_document(&ns(), doc! {"copied": "lots"}).unwrap_err();
        assert_eq!(bad.code, ErrorCode::Checkpoint);
        assert!(bad.message.contains("shop.orders"), "{}", bad.message);
    }
}
