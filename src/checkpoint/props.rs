//! Property tests of checkpoints read back: stored documents with any field missing, mistyped
//! or odd never panic and give a checkpoint or `ERR_CHECKPOINT` naming the collection; every
//! checkpoint written reads back equal.
//!
//! `cargo test checkpoint::props`; longer: `PROPTEST_CASES=20000 cargo test --release checkpoint::props`.

use mongodb::bson::{doc, Document, Timestamp};
use proptest::prelude::*;

use super::{CollectionCheckpoint, CopyRange};
use crate::config::Namespace;
use crate::error::ErrorCode;
use crate::testkit::bson::{arb_bson, Nan};

fn arb_range() -> impl Strategy<Value = CopyRange> {
    let bound = || prop::option::of(arb_bson(Nan::Excluded));
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
    fn stored_documents_with_changed_fields_load_or_fail_clearly(cp in arb_checkpoint(), changes in prop::collection::vec((prop::sample::select(FIELDS), prop::option::of(arb_bson(Nan::Excluded))), 1..4)) {
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
    fn arbitrary_documents_load_or_fail_clearly(fields in prop::collection::vec((prop_oneof![prop::sample::select(FIELDS).prop_map(str::to_string), "[a-zA-Z]{1,8}"], arb_bson(Nan::Excluded)), 0..6)) {
        check_read(fields.into_iter().collect())?;
    }
}
