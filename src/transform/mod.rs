//! Turns MongoDB documents and change events into versioned Elasticsearch writes.

pub mod bson_to_json;
mod fields;
pub mod hook;
mod raw;

use mongodb::bson::{Bson, Document, Timestamp};

pub use bson_to_json::{ConvertOptions, ConvertWarning};
pub use fields::{AddedValue, FieldRules};
pub use raw::{index_write_raw, routing_value_raw, RawConverter};

/// One document-level write, already serialised: what Elasticsearch is asked to do, and the
/// MongoDB change it comes from (for outputs that record changes rather than apply them).
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentWrite {
    pub id: String,
    /// Shard routing value, when the collection routes by a field.
    pub routing: Option<String>,
    /// External version: newer MongoDB history always carries a higher (or equal) number.
    pub version: i64,
    pub op: WriteOp,
    /// The kind of MongoDB change (an update may still map to a delete, e.g. out of a filter).
    pub operation: Operation,
    /// The change stream position of the change (its resume token's `_data`); none for the copy.
    pub position: Option<String>,
}

/// Where a write comes from: the copy, or a change stream event of this type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Operation {
    #[default]
    Copy,
    Insert,
    Update,
    Replace,
    Delete,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Copy => "copy",
            Operation::Insert => "insert",
            Operation::Update => "update",
            Operation::Replace => "replace",
            Operation::Delete => "delete",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    /// The `_source` as JSON bytes.
    Index(Vec<u8>),
    Delete,
}

/// A document that cannot become a write, with the reason it is dead-lettered.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub id: String,
    pub reason: String,
    /// The document as JSON (or MongoDB extended JSON when it could not be converted), if known.
    pub document: Option<String>,
}

impl Rejected {
    pub fn new(id: impl Into<String>, reason: impl Into<String>) -> Self {
        Rejected { id: id.into(), reason: reason.into(), document: None }
    }

    pub fn with_document(mut self, document: String) -> Self {
        self.document = Some(document);
        self
    }
}

/// A dead letter as a document (in a dead-letter index, or as a record): `id` is unique per
/// source document, so that the latest failure of a document replaces the earlier ones.
pub fn dead_letter_document(namespace: &str, index: &str, rejected: &Rejected, at: mongodb::bson::DateTime) -> (String, serde_json::Value) {
    let body = serde_json::json!({
        "namespace": namespace,
        "index": index,
        "id": rejected.id,
        "reason": rejected.reason,
        "document": rejected.document,
        "at": at.try_to_rfc3339_string().unwrap_or_default(),
    });
    (format!("{namespace}:{}", rejected.id), body)
}

/// A document as relaxed extended JSON, for dead letters of documents that could not be converted.
fn extended_json(doc: &Document) -> String {
    Bson::Document(doc.clone()).into_relaxed_extjson().to_string()
}

/// The version Elasticsearch stores for a change made at MongoDB cluster time `t`.
pub fn version_of(t: Timestamp) -> i64 {
    bson_to_json::bson_timestamp_version(t)
}

/// A display form of any `_id`, for dead letters and messages.
pub fn describe_id(id: &Bson) -> String {
    bson_to_json::es_id(id).unwrap_or_else(|_| id.to_string())
}

/// An index (create or replace) write of a whole document.
pub fn index_write(
    doc: &Document,
    version: i64,
    options: &ConvertOptions,
    fields: &FieldRules,
    warnings: &mut Vec<ConvertWarning>,
) -> Result<DocumentWrite, Rejected> {
    index_write_at(doc, version, options, fields, warnings, mongodb::bson::DateTime::now())
}

/// [`index_write`] with `now` as the conversion time (`$syncedAt`).
pub(crate) fn index_write_at(
    doc: &Document,
    version: i64,
    options: &ConvertOptions,
    fields: &FieldRules,
    warnings: &mut Vec<ConvertWarning>,
    now: mongodb::bson::DateTime,
) -> Result<DocumentWrite, Rejected> {
    let rejected = |id: String, reason: String| Rejected::new(id, reason).with_document(extended_json(doc));
    let raw_id = doc.get("_id").ok_or_else(|| rejected(String::new(), "document has no _id".into()))?;
    let id = bson_to_json::es_id(raw_id).map_err(|e| rejected(describe_id(raw_id), e.to_string()))?;
    let mut source = bson_to_json::document_to_source(doc, options, warnings);
    fields.apply_at(&mut source, now);
    let body = serde_json::to_vec(&source).map_err(|e| rejected(id.clone(), format!("cannot serialise document: {e}")))?;
    Ok(DocumentWrite { id, routing: None, version, op: WriteOp::Index(body), operation: Operation::Copy, position: None })
}

/// A versioned delete, so that an older index write replayed later cannot resurrect it.
pub fn delete_write(id: &Bson, version: i64) -> Result<DocumentWrite, Rejected> {
    let es_id = bson_to_json::es_id(id).map_err(|e| Rejected::new(describe_id(id), e.to_string()))?;
    Ok(DocumentWrite { id: es_id, routing: None, version, op: WriteOp::Delete, operation: Operation::Delete, position: None })
}

/// The routing value at a dotted `path` of a document (for deletes: of its `documentKey`),
/// in the same string form as ids.
pub fn routing_value(doc: &Document, path: &str) -> Option<String> {
    let mut current = doc;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let value = current.get(part)?;
        if parts.peek().is_none() {
            return bson_to_json::es_id(value).ok();
        }
        current = value.as_document()?;
    }
    None
}

/// Keeps only the last write per `_id`, in first-seen order. Several changes of one
/// document inside a batch (e.g. one transaction, same cluster time) thus end as the last one.
pub fn coalesce(writes: Vec<DocumentWrite>) -> Vec<DocumentWrite> {
    use std::collections::HashMap;
    let mut position: HashMap<String, usize> = HashMap::with_capacity(writes.len());
    let mut out: Vec<DocumentWrite> = Vec::with_capacity(writes.len());
    for w in writes {
        match position.get(&w.id) {
            Some(&i) => out[i] = w,
            None => {
                position.insert(w.id.clone(), out.len());
                out.push(w);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    #[test]
    fn index_write_moves_id_out_of_the_source() {
        let mut warnings = vec![];
        let w = index_write(&doc! {"_id": 7_i64, "a": 1}, 42, &ConvertOptions::default(), &FieldRules::default(), &mut warnings).unwrap();
        assert_eq!(w.id, "7");
        assert_eq!(w.version, 42);
        assert_eq!(w.op, WriteOp::Index(br#"{"a":1}"#.to_vec()));
    }

    #[test]
    fn a_document_without_id_is_rejected_not_dropped() {
        let err = index_write(&doc! {"a": 1}, 1, &ConvertOptions::default(), &FieldRules::default(), &mut vec![]).unwrap_err();
        assert!(err.reason.contains("_id"));
    }

    #[test]
    fn routing_values_come_from_dotted_paths() {
        let d = doc! {"_id": 1, "tenant": {"id": 42_i64, "name": "acme"}};
        assert_eq!(routing_value(&d, "tenant.id").as_deref(), Some("42"));
        assert_eq!(routing_value(&d, "tenant.name").as_deref(), Some("acme"));
        assert_eq!(routing_value(&d, "tenant.missing"), None);
        assert_eq!(routing_value(&d, "_id.x"), None);
    }

    #[test]
    fn coalescing_keeps_the_last_write_per_id_in_order() {
        let w = |id: &str, v: i64, op: WriteOp| DocumentWrite { id: id.into(), routing: None, version: v, op, operation: Operation::Copy, position: None };
        let out = coalesce(vec![w("a", 1, WriteOp::Index(b"1".to_vec())), w("b", 1, WriteOp::Index(b"2".to_vec())), w("a", 1, WriteOp::Delete)]);
        assert_eq!(out, vec![w("a", 1, WriteOp::Delete), w("b", 1, WriteOp::Index(b"2".to_vec()))]);
    }
}
