//! Property tests of change-event decoding: generated change documents (every operation type,
//! known or not, with missing, mistyped or odd fields) and corrupted bytes never panic; each
//! gives a change of the right kind or a failure (`ERR_MONGO`) naming the collection.
//!
//! `cargo test change_stream::props`; longer: `PROPTEST_CASES=20000 cargo test --release change_stream::props`.

use mongodb::bson::{doc, Bson, Document, RawDocumentBuf, Timestamp};
use proptest::prelude::*;

use super::change_item;
use crate::config::Namespace;
use crate::error::ErrorCode;
use crate::event::CollectionChange;
use crate::source::{ChangeKind, StreamItem};
use crate::testkit::bson::{arb_bson, Nan};
use crate::transform::Operation;

const OPERATIONS: &[&str] =
    &["insert", "update", "replace", "delete", "drop", "dropDatabase", "rename", "invalidate", "createIndexes", "modify", "create", "shardCollection"];

/// A change document as a server might send it, each field present or not, well typed or not.
fn arb_event() -> impl Strategy<Value = Document> {
    let operation = prop_oneof![4 => prop::sample::select(OPERATIONS).prop_map(|s| Bson::String(s.to_string())), 1 => arb_bson(Nan::Allowed)];
    let token = prop_oneof![3 => "[0-9A-F]{2,40}".prop_map(|d| Bson::Document(doc! {"_data": d})), 1 => arb_bson(Nan::Allowed)];
    let cluster_time = prop_oneof![3 => (any::<u32>(), any::<u32>()).prop_map(|(time, increment)| Bson::Timestamp(Timestamp { time, increment })), 1 => arb_bson(Nan::Allowed)];
    let ns = prop_oneof![3 => Just(Bson::Document(doc! {"db": "d", "coll": "c"})), 1 => arb_bson(Nan::Allowed)];
    let key = prop_oneof![3 => arb_bson(Nan::Allowed).prop_map(|id| Bson::Document(doc! {"_id": id})), 1 => arb_bson(Nan::Allowed)];
    let full = prop_oneof![2 => prop::collection::vec(("[a-z_]{1,6}", arb_bson(Nan::Allowed)), 0..4).prop_map(|kv| Bson::Document(kv.into_iter().collect())), 1 => arb_bson(Nan::Allowed)];
    let to =
        prop_oneof![2 => Just(Bson::Document(doc! {"db": "d", "coll": "other"})), 1 => Just(Bson::Document(doc! {"db": "d"})), 1 => arb_bson(Nan::Allowed)];
    let present = prop::collection::vec(any::<bool>(), 8);
    (operation, token, cluster_time, ns, key, full, to, present).prop_map(|(operation, token, cluster_time, ns, key, full, to, present)| {
        let mut d = Document::new();
        let fields =
            [("_id", token), ("operationType", operation), ("clusterTime", cluster_time), ("ns", ns), ("documentKey", key), ("fullDocument", full), ("to", to)];
        for (i, (name, value)) in fields.into_iter().enumerate() {
            // `_id` and `operationType` are there most of the time (the server always sends them).
            if present[i] || (i < 2 && present[7]) {
                d.insert(name, value);
            }
        }
        d
    })
}

fn ns() -> Namespace {
    Namespace { db: "d".into(), coll: "c".into() }
}

fn check_failure(item: &StreamItem) -> Result<(), TestCaseError> {
    if let StreamItem::Failed(e) = item {
        prop_assert_eq!(e.code, ErrorCode::Mongo);
        prop_assert!(e.message.starts_with("change stream of d.c: "), "names the collection: {}", e.message);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn generated_events_are_decoded_or_refused_clearly(event in arb_event()) {
        let raw = RawDocumentBuf::from_document(&event).expect("encodes");
        let item = change_item(&ns(), &raw);
        check_failure(&item)?;
        let operation = event.get_str("operationType").ok();
        match &item {
            StreamItem::Change(change) => {
                prop_assert_eq!(change.size, raw.as_bytes().len());
                let expected = match operation {
                    Some("insert") => Some(Operation::Insert),
                    Some("update") => Some(Operation::Update),
                    Some("replace") => Some(Operation::Replace),
                    Some("delete") => Some(Operation::Delete),
                    _ => None,
                };
                match (&change.kind, expected) {
                    (ChangeKind::Document(d), Some(op)) => prop_assert_eq!(d.operation, op),
                    (ChangeKind::Collection(CollectionChange::Drop), None) => prop_assert_eq!(operation, Some("drop")),
                    (ChangeKind::Collection(CollectionChange::DropDatabase), None) => prop_assert_eq!(operation, Some("dropDatabase")),
                    (ChangeKind::Collection(CollectionChange::Invalidate), None) => prop_assert_eq!(operation, Some("invalidate")),
                    (ChangeKind::Collection(CollectionChange::Rename { to }), None) => {
                        prop_assert_eq!(operation, Some("rename"));
                        prop_assert_eq!(&to.db, "d");
                    }
                    (ChangeKind::Other, None) => prop_assert!(!matches!(operation, Some("insert" | "update" | "replace" | "delete" | "drop" | "dropDatabase" | "rename" | "invalidate"))),
                    (kind, expected) => prop_assert!(false, "{operation:?} became {kind:?} (expected {expected:?})"),
                }
            }
            StreamItem::Failed(_) => {}
            StreamItem::Idle(_) => prop_assert!(false, "a read event is never idle"),
        }
    }

    #[test]
    fn corrupted_bytes_are_refused_clearly(event in arb_event(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = RawDocumentBuf::from_document(&event).expect("encodes").into_bytes();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        // Only what passes the header check reaches decoding (the driver refuses the rest).
        if let Ok(raw) = RawDocumentBuf::from_bytes(bytes) {
            check_failure(&change_item(&ns(), &raw))?;
        }
    }
}

#[test]
fn a_well_formed_insert_is_a_document_change() {
    let event = doc! {"_id": {"_data": "82"}, "operationType": "insert", "clusterTime": Timestamp { time: 5, increment: 1 }, "ns": {"db": "d", "coll": "c"}, "documentKey": {"_id": 1}, "fullDocument": {"_id": 1, "a": 2}};
    let raw = RawDocumentBuf::from_document(&event).expect("encodes");
    match change_item(&ns(), &raw) {
        StreamItem::Change(change) => {
            assert_eq!(change.cluster_time, Some(Timestamp { time: 5, increment: 1 }));
            assert!(
                matches!(&change.kind, ChangeKind::Document(d) if d.operation == Operation::Insert && d.document == Some(mongodb::bson::rawdoc! {"_id": 1, "a": 2}))
            );
        }
        other => panic!("not a change: {other:?}"),
    }
}
