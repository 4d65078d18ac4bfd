//! Change events as the sources read them, then as the stream turns them into writes.
//!
//! First byte even: the rest is a MongoDB change event (raw BSON, as a change stream returns it).
//! It decodes to a change whose kind is its `operationType`'s, or fails clearly; a document
//! change becomes a versioned write (or a dead letter); its resume token survives a checkpoint
//! save and load and reads as a driver resume token.
//!
//! First byte odd: a table of up to 8 columns (each next byte: a column's type, the low bit
//! marking a primary-key column), then one `pgoutput` message as PostgreSQL's logical replication
//! sends it. It decodes or fails with what is wrong; a row image becomes a document with an `_id`
//! or fails with `ERR_MONGO` naming the table and column, and a composite key's `_id` reads
//! back to the key's texts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mongo_elastic_sync::checkpoint::CollectionCheckpoint;
use mongo_elastic_sync::config::Namespace;
use mongo_elastic_sync::error::ErrorCode;
use mongo_elastic_sync::event::CollectionChange;
use mongo_elastic_sync::source::mongo::change_stream::change_of;
use mongo_elastic_sync::source::postgres::pgoutput::{decode, Message, Value};
use mongo_elastic_sync::source::postgres::table::{Table, TableColumn};
use mongo_elastic_sync::source::postgres::types::PgType;
use mongo_elastic_sync::source::{ChangeKind, DocumentChange};
use mongo_elastic_sync::transform::{delete_write, version_of, ConvertOptions, FieldRules, Operation, RawConverter, WriteOp};
use mongodb::bson::{Bson, RawBsonRef, RawDocumentBuf, Timestamp};
use mongodb::change_stream::event::ResumeToken;

fn ns() -> Namespace {
    Namespace { db: "d".into(), coll: "c".into() }
}

/// The write the stream makes of a document change (as `pipeline::collection::stream` does).
fn check_write(change: &DocumentChange, at: Timestamp) {
    let version = version_of(at);
    assert!(version >= 0, "versions are positive 63-bit numbers");
    let write = match (&change.document, change.key.as_ref().and_then(|k| k.get("_id"))) {
        (_, Some(id)) if change.operation == Operation::Delete => delete_write(id, version),
        (Some(doc), _) if change.operation != Operation::Delete => {
            RawConverter::new(&ConvertOptions::default(), &FieldRules::default()).index_write(doc, version, &mut Vec::new())
        }
        _ => return,
    };
    match write {
        Ok(write) => {
            assert!(!write.id.is_empty() && write.id.len() <= 512, "an Elasticsearch id: {:?}", write.id);
            assert_eq!(write.version, version);
            if let WriteOp::Index(body) = &write.op {
                assert!(serde_json::from_slice::<serde_json::Value>(body).expect("valid JSON").is_object());
            }
        }
        Err(rejected) => assert!(!rejected.reason.is_empty()),
    }
}

/// A token saved in a checkpoint loads back the same, and the driver reads it as a token.
fn check_token(token: &mongodb::bson::Document) {
    let cp = CollectionCheckpoint { resume_token: Some(token.clone()), ..Default::default() };
    let loaded = CollectionCheckpoint::from_document(&ns(), cp.to_document().expect("a checkpoint serialises")).expect("a saved checkpoint loads");
    let bytes = |d: &mongodb::bson::Document| mongodb::bson::to_vec(d).expect("encodes");
    assert_eq!(loaded.resume_token.as_ref().map(bytes), Some(bytes(token)));
    let _ = mongodb::bson::from_document::<ResumeToken>(token.clone());
}

fn mongo_event(bytes: &[u8]) {
    let Ok(raw) = RawDocumentBuf::from_bytes(bytes.to_vec()) else { return };
    let operation = match raw.get("operationType") {
        Ok(Some(RawBsonRef::String(op))) => Some(op.to_string()),
        _ => None,
    };
    let Ok(change) = change_of(&raw) else { return };
    assert_eq!(change.size, bytes.len());
    let op = operation.expect("a decoded event has an operationType");
    match &change.kind {
        ChangeKind::Document(d) => {
            let expected = match op.as_str() {
                "insert" => Operation::Insert,
                "update" => Operation::Update,
                "replace" => Operation::Replace,
                "delete" => Operation::Delete,
                other => panic!("{other} read as a document change"),
            };
            assert_eq!(d.operation, expected);
            check_write(d, change.cluster_time.unwrap_or(Timestamp { time: 0, increment: 0 }));
        }
        ChangeKind::Collection(CollectionChange::Drop) => assert_eq!(op, "drop"),
        ChangeKind::Collection(CollectionChange::DropDatabase) => assert_eq!(op, "dropDatabase"),
        ChangeKind::Collection(CollectionChange::Invalidate) => assert_eq!(op, "invalidate"),
        ChangeKind::Collection(CollectionChange::Rename { .. }) => assert_eq!(op, "rename"),
        ChangeKind::Collection(other) => panic!("{op} read as {other:?}"),
        ChangeKind::Other => assert!(!["insert", "update", "replace", "delete", "drop", "dropDatabase", "invalidate", "rename"].contains(&op.as_str())),
    }
    if let Some(token) = &change.token {
        check_token(token);
    }
}

/// Column types a table can have (arrays of each too).
const TYPES: [u32; 12] = [23, 20, 16, 700, 1700, 17, 3802, 1184, 1114, 25, 21, 2950];

fn table(spec: &[u8]) -> Table {
    let columns = spec
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            let oid = TYPES[(b >> 2) as usize % TYPES.len()];
            let ty = PgType::of_oid(oid, None);
            let ty = if b & 2 == 0 { ty } else { PgType::Array(Box::new(ty)) };
            TableColumn { name: format!("c{i}"), ty, type_sql: "text".into() }
        })
        .collect();
    let mut key: Vec<usize> = spec.iter().enumerate().filter(|(_, b)| **b & 1 == 1).map(|(i, _)| i).collect();
    if key.is_empty() {
        key.push(0);
    }
    Table { ns: Namespace { db: "public".into(), coll: "t".into() }, columns, key }
}

fn check_row(table: &Table, row: &[Value]) {
    let texts: Vec<Option<String>> = row.iter().map(|v| if let Value::Text(t) = v { Some(t.clone()) } else { None }).collect();
    match table.document(&texts) {
        Ok(doc) => assert!(doc.contains_key("_id")),
        Err(e) => assert!(e.code == ErrorCode::Postgres && e.message.contains("public.t"), "{}", e.message),
    }
    let key: Vec<Option<String>> = table.key.iter().map(|&i| texts.get(i).cloned().flatten()).collect();
    if let (Ok(id), true) = (table.id_of(&key), key.len() > 1) {
        assert!(matches!(id, Bson::String(_)));
        let back = table.key_of(&id).expect("a composite _id reads back");
        assert_eq!(back.into_iter().map(Some).collect::<Vec<_>>(), key);
    }
}

fn pg_message(bytes: &[u8]) {
    let Some((&count, rest)) = bytes.split_first() else { return };
    let count = (count as usize % 8 + 1).min(rest.len());
    if count == 0 {
        return;
    }
    let (spec, message) = rest.split_at(count);
    let table = table(spec);
    match decode(message) {
        Ok(Message::Insert { new, .. }) => check_row(&table, &new),
        Ok(Message::Update { old, new, .. }) => {
            check_row(&table, &new);
            if let Some(old) = old {
                check_row(&table, &old);
            }
        }
        Ok(Message::Delete { old, .. }) => check_row(&table, &old),
        Ok(_) => {}
        Err(e) => assert!(e.to_string().starts_with("pgoutput") || e.to_string().starts_with("binary")),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        mongo_event(rest);
    } else {
        pg_message(rest);
    }
});

/// What every napi function of the engine is bound to in this binary (see build.rs).
#[no_mangle]
pub extern "C" fn fuzz_napi_unavailable() -> ! {
    std::process::abort()
}
