//! Transient source failures: retried from the checkpoint, nothing lost.

use mongodb::bson::doc;

use super::*;
use crate::error::{ErrorCode, SyncError};
use crate::source::StreamStart;
use crate::testkit::{config, ns};

fn unreachable() -> SyncError {
    SyncError::new(ErrorCode::MongoUnreachable, "connection reset (scripted)")
}

#[tokio::test]
async fn a_failed_stream_resumes_from_its_checkpoint() {
    let parts = Parts::default();
    let c = ns("db.c");
    parts.source.insert(&c, docs(2));
    // The first stream fails after one change, and reopening fails once more.
    parts.source.fail_next_stream_after(1, unreachable());
    parts.source.fail_next_open(unreachable());
    let (engine, events) = super::engine(config(&["db.c"]));
    engine.start_with(&parts).await.unwrap();
    eventually("the failed opening to be retried", || async { (retries(&events) == 1).then_some(()) }).await;
    for i in 10..20 {
        parts.source.insert(&c, [doc! {"_id": i as i64, "v": i}]);
    }
    mirrored(&parts, &c, "c").await;
    assert_eq!(retries(&events), 2, "the failed stream is retried too");
    let opened: Vec<_> = parts.source.opened().into_iter().map(|(_, start)| start).collect();
    assert!(matches!(opened[..], [StreamStart::AtOperationTime(a), StreamStart::AtOperationTime(b), StreamStart::ResumeAfter(_)] if a == b), "{opened:?}");
    assert_eq!(engine.stats().state, SyncState::Streaming);
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn a_failed_copy_resumes_after_its_last_acknowledged_id() {
    let parts = Parts::default();
    let c = ns("db.c");
    parts.source.insert(&c, docs(10));
    parts.source.fail_next_scan(unreachable());
    // Then a server restart interrupts the copy midway (issue 13, item 12).
    parts.source.fail_next_scan_after(7, SyncError::new(ErrorCode::MongoUnreachable, "InterruptedAtShutdown (scripted)"));
    let mut cfg = config(&["db.c"]);
    cfg.batch.max_docs = 3;
    cfg.batch.concurrency = 1;
    let (engine, events) = streaming(cfg, &parts).await;
    mirrored(&parts, &c, "c").await;
    assert_eq!(retries(&events), 2);
    let scans = parts.source.scans();
    assert_eq!(scans.len(), 3);
    let resumed_after = scans[2].1.last_id.clone();
    assert!(matches!(resumed_after, Some(mongodb::bson::Bson::Int64(3 | 6))), "the third scan resumes after an acknowledged _id: {resumed_after:?}");
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn a_failed_read_of_the_start_point_is_retried() {
    let parts = Parts::default();
    let c = ns("db.c");
    parts.source.insert(&c, docs(3));
    parts.source.fail_next_now(unreachable());
    let (engine, events) = streaming(config(&["db.c"]), &parts).await;
    mirrored(&parts, &c, "c").await;
    assert_eq!(retries(&events), 1);
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn a_permanent_output_failure_fails_the_sync_and_keeps_the_position() {
    let parts = Parts::default();
    let c = ns("db.c");
    parts.source.insert(&c, docs(1));
    let (engine, _) = streaming(config(&["db.c"]), &parts).await;
    let before = eventually("a first position", || async { parts.store.get(&c).and_then(|cp| cp.resume_token) }).await;
    parts.sink.fail_next_write(SyncError::new(ErrorCode::Elasticsearch, "mapping refused (scripted)"));
    parts.source.insert(&c, [doc! {"_id": 2_i64, "v": 0}]);
    let err = engine.wait().await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Elasticsearch);
    assert_eq!(engine.stats().state, SyncState::Failed);
    assert_eq!(parts.store.get(&c).unwrap().resume_token, Some(before), "nothing past the failed batch is saved");
}

fn attempts(events: &Events) -> Vec<u32> {
    events
        .all()
        .iter()
        .filter_map(|e| match e {
            SyncEvent::Retry { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect()
}

/// Issue 13, item 20: the attempt counter of the collection loop never went back to 1, so
/// failures hours apart, each after progress, backed off ever longer.
#[tokio::test]
async fn the_attempt_count_starts_again_after_progress() {
    let parts = Parts::default();
    let c = ns("db.c");
    parts.source.insert(&c, docs(1));
    for _ in 0..3 {
        parts.source.fail_next_stream_after(1, unreachable());
    }
    let mut cfg = config(&["db.c"]);
    cfg.retry.max_attempts = Some(2);
    let (engine, events) = streaming(cfg, &parts).await;
    for i in 10..16 {
        parts.source.insert(&c, [doc! {"_id": i as i64, "v": i}]);
        mirrored(&parts, &c, "c").await;
    }
    eventually("three retries", || async { (attempts(&events).len() == 3).then_some(()) }).await;
    assert_eq!(attempts(&events), vec![1, 1, 1], "each failure came after progress");
    assert_eq!(engine.stats().state, SyncState::Streaming);
    engine.stop().await.unwrap();
}

/// Issue 13, item 20: `retry.maxAttempts` did not apply to MongoDB: a source failing for good
/// was retried forever.
#[tokio::test]
async fn max_attempts_applies_to_the_source() {
    let parts = Parts::default();
    let c = ns("db.c");
    parts.source.insert(&c, docs(1));
    for _ in 0..5 {
        parts.source.fail_next_open(unreachable());
    }
    let mut cfg = config(&["db.c"]);
    cfg.retry.max_attempts = Some(3);
    let (engine, events) = super::engine(cfg);
    engine.start_with(&parts).await.unwrap();
    let err = tokio::time::timeout(std::time::Duration::from_secs(5), engine.wait()).await.expect("the sync gives up").unwrap_err();
    assert_eq!(err.code, ErrorCode::MongoUnreachable);
    assert!(err.message.contains("3 attempts"), "{}", err.message);
    assert_eq!(attempts(&events), vec![1, 2], "two retries after the first attempt: three attempts");
}

/// A PostgreSQL source out of reach is retried as MongoDB is, and when retries run out the
/// sync fails with its code (it said `ERR_MONGO_UNREACHABLE`).
#[tokio::test]
async fn a_postgres_source_out_of_reach_is_retried_and_fails_with_its_own_code() {
    let parts = Parts::default();
    let c = ns("db.c");
    parts.source.insert(&c, docs(1));
    for _ in 0..5 {
        parts.source.fail_next_open(SyncError::new(ErrorCode::PostgresUnreachable, "the replication session of db.c ended (scripted)"));
    }
    let mut cfg = config(&["db.c"]);
    cfg.retry.max_attempts = Some(3);
    let (engine, events) = super::engine(cfg);
    engine.start_with(&parts).await.unwrap();
    let err = tokio::time::timeout(std::time::Duration::from_secs(5), engine.wait()).await.expect("the sync gives up").unwrap_err();
    assert_eq!(err.code, ErrorCode::PostgresUnreachable, "{err}");
    assert!(err.message.contains("3 attempts"), "{}", err.message);
    assert_eq!(attempts(&events), vec![1, 2], "retried as a MongoDB source is");
}
