//! Checkpoints read back from where they are kept. First byte even: the rest is the stored
//! document as MongoDB returns it (raw BSON); odd: the stored JSON text as PostgreSQL returns it.
//! Either loads or fails with `ERR_CHECKPOINT` naming the collection, never a panic; a loaded
//! checkpoint saves and loads again to the same checkpoint, and the positions in it give the
//! copy's range filters and the stream's start without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mongo_elastic_sync::checkpoint::CollectionCheckpoint;
use mongo_elastic_sync::config::Namespace;
use mongo_elastic_sync::error::{ErrorCode, SyncResult};
use mongo_elastic_sync::source::mongo::copy::range_filter;
use mongo_elastic_sync::source::postgres::lsn_of_token;
use mongodb::bson::{Document, RawDocument};
use mongodb::change_stream::event::ResumeToken;

fn ns() -> Namespace {
    Namespace { db: "shop".into(), coll: "orders".into() }
}

/// The stored form's bytes (`==` on documents fails on NaN, which is never equal to itself).
fn stored(cp: &CollectionCheckpoint) -> Vec<u8> {
    mongodb::bson::to_vec(&cp.to_document().expect("a loaded checkpoint serialises")).expect("encodes")
}

fn check(loaded: SyncResult<CollectionCheckpoint>, again: impl Fn(&CollectionCheckpoint) -> SyncResult<CollectionCheckpoint>) {
    let cp = match loaded {
        Ok(cp) => cp,
        Err(e) => {
            assert_eq!(e.code, ErrorCode::Checkpoint, "{}", e.message);
            assert!(e.message.contains("shop.orders"), "names the collection: {}", e.message);
            return;
        }
    };
    let reloaded = again(&cp).expect("a saved checkpoint loads");
    assert_eq!(stored(&reloaded), stored(&cp), "a checkpoint saved and loaded again is the same");
    for range in &cp.copy_ranges {
        let _ = range_filter(range);
    }
    if let Some(token) = &cp.resume_token {
        let _ = mongodb::bson::from_document::<ResumeToken>(token.clone());
        let _ = lsn_of_token(token);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        let Ok(doc) = RawDocument::from_bytes(rest).map_err(|_| ()).and_then(|raw| Document::try_from(raw).map_err(|_| ())) else { return };
        check(CollectionCheckpoint::from_document(&ns(), doc), |cp| CollectionCheckpoint::from_document(&ns(), cp.to_document()?));
    } else {
        let Ok(text) = std::str::from_utf8(rest) else { return };
        check(CollectionCheckpoint::from_json(&ns(), text), |cp| CollectionCheckpoint::from_json(&ns(), &cp.to_json()?));
    }
});

/// What every napi function of the engine is bound to in this binary (see build.rs).
#[no_mangle]
pub extern "C" fn fuzz_napi_unavailable() -> ! {
    std::process::abort()
}
