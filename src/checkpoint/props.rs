//! Property tests of checkpoints read back: stored documents with any field missing, mistyped
//! or odd never panic and give a checkpoint or `ERR_CHECKPOINT` naming the collection; every
//! checkpoint written reads back equal.
//!
//! `cargo test checkpoint::props`; longer: `PROPTEST_CASES=20000 cargo test --release checkpoint::props`.

use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime, Document, Timestamp};
use proptest::prelude::*;

use super::{CollectionCheckpoint, CopyRange};
use crate::config::Namespace;
use crate::error::ErrorCode;

/// BSON values without NaN (which is never equal to itself, so cannot round-trip by `==`).
fn arb_bson() -> impl Strategy<Value = Bson> {
    let leaf = prop_oneof![
        Just(Bson::Null),
        any::<bool>().prop_map(Bson::Boolean),
        any::<i32>().prop_map(Bson::Int32),
        any::<i64>().prop_map(Bson::Int64),
        any::<f64>().prop_filter("not NaN", |f| !f.is_nan()).prop_map(Bson::Double),
        ".{0,8}".prop_map(Bson::String),
        any::<[u8; 12]>().prop_map(|b| Bson::ObjectId(ObjectId::from_bytes(b))),
        (any::<u32>(), any::<u32>()).prop_map(|(time, increment)| Bson::Timestamp(Timestamp { time, increment })),
        any::<i64>().prop_map(|ms| Bson::DateTime(DateTime::from_millis(ms))),
        Just(Bson::MaxKey),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Bson::Array),
            prop::collection::vec(("[a-zA-Z_]{1,6}", inner), 0..3).prop_map(|kv| Bson::Document(kv.into_iter().collect())),
        ]
    })
}

fn arb_range() -> impl Strategy<Value = CopyRange> {
    let bound = || prop::option::of(arb_bson());
    (bound(), bound(), bound(), any::<bool>(), any::<bool>()).prop_map(|(lower, upper, last_id, done, single_type)| CopyRange {
        lower,
        upper,
        last_id,
        done,
        single_type,
    })
}

fn arb_checkpoint() -> impl Strategy<Value = CollectionCheckpoint> {
    let ts = prop::option::of((any::<u32>(), any::<u32>()).prop_map(|(time, increment)| Timestamp { time, increment }));
    let token = prop::option::of("[0-9A-F]{0,40}".prop_map(|d| doc! {"_data": d}));
    let name = || prop::option::of("[a-z0-9-]{1,12}");
    (ts, prop::collection::vec(arb_range(), 0..4), any::<bool>(), 0..i64::MAX as u64, token, any::<bool>(), name(), any::<u32>(), name(), any::<u32>())
        .prop_map(
            |(start_at, copy_ranges, copy_done, copied, resume_token, token_is_invalidate, physical_index, generation, replaces, history_lost_resyncs)| {
                CollectionCheckpoint {
                    start_at,
                    copy_ranges,
                    copy_done,
                    copied,
                    resume_token,
                    token_is_invalidate,
                    physical_index,
                    generation,
                    replaces,
                    history_lost_resyncs,
                }
            },
        )
}

const FIELDS: &[&str] = &[
    "startAt",
    "copyRanges",
    "copyDone",
    "copied",
    "resumeToken",
    "tokenIsInvalidate",
    "physicalIndex",
    "generation",
    "replaces",
    "historyLostResyncs",
    "schema",
];

fn ns() -> Namespace {
    Namespace { db: "shop".into(), coll: "orders".into() }
}

fn check_read(doc: Document) -> Result<Option<CollectionCheckpoint>, TestCaseError> {
    match CollectionCheckpoint::from_document(&ns(), doc) {
        Ok(cp) => Ok(Some(cp)),
        Err(e) => {
            prop_assert_eq!(e.code, ErrorCode::Checkpoint);
            prop_assert!(e.message.starts_with("checkpoint of shop.orders "), "names the collection: {}", e.message);
            Ok(None)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_checkpoint_reads_back_equal(cp in arb_checkpoint()) {
        let stored = cp.to_document().expect("serialises");
        let read = check_read(stored)?;
        prop_assert_eq!(read, Some(cp));
    }

    #[test]
    fn stored_documents_with_changed_fields_load_or_fail_clearly(cp in arb_checkpoint(), changes in prop::collection::vec((prop::sample::select(FIELDS), prop::option::of(arb_bson())), 1..4)) {
        let mut stored = cp.to_document().expect("serialises");
        for (field, value) in changes {
            match value {
                Some(v) => stored.insert(field, v),
                None => stored.remove(field),
            };
        }
        check_read(stored)?;
    }

    #[test]
    fn arbitrary_documents_load_or_fail_clearly(fields in prop::collection::vec((prop_oneof![prop::sample::select(FIELDS).prop_map(str::to_string), "[a-zA-Z]{1,8}"], arb_bson()), 0..6)) {
        check_read(fields.into_iter().collect())?;
    }
}
