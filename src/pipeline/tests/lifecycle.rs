//! Starting and stopping in every phase.

use mongodb::bson::doc;

use super::*;
use crate::testkit::{config, ns};

#[tokio::test]
async fn stop_during_the_copy_keeps_what_was_acknowledged_and_the_next_start_resumes() {
    let parts = Parts::default();
    let c = ns("db.c");
    parts.source.insert(&c, docs(12));
    let mut cfg = config(&["db.c"]);
    cfg.batch.max_docs = 4;
    cfg.batch.concurrency = 1;
    parts.sink.hold();
    let (engine, _) = super::engine(cfg.clone());
    engine.start_with(&parts).await.unwrap();
    assert_eq!(engine.stats().state, SyncState::Copying);
    parts.sink.release(1);
    eventually("a second batch to wait", || async { (parts.sink.writes().len() == 1 && parts.sink.waiting() == 1).then_some(()) }).await;
    let stopping = tokio::spawn({
        let engine = engine.clone();
        async move { engine.stop().await }
    });
    wait_state(&engine, SyncState::Stopping).await;
    parts.sink.open();
    stopping.await.unwrap().unwrap();
    assert_eq!(engine.stats().state, SyncState::Stopped);
    let cp = parts.store.get(&c).unwrap();
    assert!(!cp.copy_done && cp.copied >= 4, "{cp:?}");
    let (again, _) = streaming(cfg, &parts).await;
    mirrored(&parts, &c, "c").await;
    again.stop().await.unwrap();
}

#[tokio::test]
async fn stop_while_a_stream_batch_is_in_flight_writes_it_and_saves_its_position() {
    let parts = Parts::default();
    let c = ns("db.c");
    parts.source.insert(&c, docs(1));
    let (engine, _) = streaming(config(&["db.c"]), &parts).await;
    parts.sink.hold();
    parts.source.insert(&c, [doc! {"_id": 2_i64, "v": 0}]);
    eventually("the write to wait", || async { (parts.sink.waiting() == 1).then_some(()) }).await;
    stop_then(&engine, || parts.sink.open()).await;
    mirrored(&parts, &c, "c").await;
    let token = parts.store.get(&c).unwrap().resume_token.unwrap();
    assert_eq!(token.get_str("_data").unwrap(), format!("{:016x}00", 2), "the position of the last change is saved");
}

/// An output whose retry wait the stop cut short answers `Flow::Stopped`: the collection ends
/// as stopped (a flow, not a failure: the sync stops cleanly), and the position of the change
/// that was not written is not saved.
#[tokio::test]
async fn a_write_ended_by_the_stop_stops_the_sync_without_saving_past_it() {
    let parts = Parts::default();
    let c = ns("db.c");
    parts.source.insert(&c, docs(1));
    let (engine, events) = streaming(config(&["db.c"]), &parts).await;
    mirrored(&parts, &c, "c").await;
    let saved = eventually("the position of the copy's changes", || async { parts.store.get(&c).and_then(|cp| cp.resume_token) }).await;
    parts.sink.hold();
    parts.sink.stop_held_writes();
    parts.source.insert(&c, [doc! {"_id": 2_i64, "v": 0}]);
    eventually("the write to wait", || async { (parts.sink.waiting() == 1).then_some(()) }).await;
    stop_then(&engine, || parts.sink.release(1)).await;
    assert_eq!(engine.stats().state, SyncState::Stopped);
    assert!(!events.all().iter().any(|e| matches!(e, SyncEvent::State { error: Some(_), .. })), "no error");
    assert!(!parts.sink.docs("c").contains_key("2"), "not written");
    assert_eq!(parts.store.get(&c).unwrap().resume_token, Some(saved), "the position stays before the change not written");
}

#[tokio::test]
async fn a_one_shot_copy_stops_by_itself() {
    let parts = Parts::default();
    let c = ns("db.c");
    parts.source.insert(&c, docs(3));
    let mut cfg = config(&["db.c"]);
    cfg.mode = crate::config::SyncMode::Copy;
    let (engine, _) = super::engine(cfg);
    engine.start_with(&parts).await.unwrap();
    engine.wait().await.unwrap();
    assert_eq!(engine.stats().state, SyncState::Stopped);
    mirrored(&parts, &c, "c").await;
    assert!(parts.source.opened().is_empty(), "no stream in copy mode");
}

/// Issue 13, item 20: `start()` held the engine's lock through index preparation, which an
/// output retries for as long as it fails, so `stop()` during such a `start()` never returned.
#[tokio::test]
async fn stop_during_a_start_that_cannot_prepare_its_index_ends_it() {
    let parts = Parts::default();
    parts.source.insert(&ns("db.c"), docs(1));
    parts.sink.block_prepare();
    let (engine, _) = super::engine(config(&["db.c"]));
    let starting = tokio::spawn({
        let (engine, parts) = (engine.clone(), parts.clone());
        async move { engine.start_with(&parts).await }
    });
    wait_state(&engine, SyncState::Starting).await;
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(5), engine.stop()).await;
    assert!(matches!(stopped, Ok(Ok(()))), "stop() returns during start()");
    let started = starting.await.unwrap();
    assert_eq!(started.unwrap_err().code, crate::error::ErrorCode::State, "start() rejects: it was stopped");
    assert_eq!(engine.stats().state, SyncState::Stopped);
    engine.wait().await.unwrap();
}

/// A binding runs `start()` and `stop()` as two futures on the engine's threads: called in that
/// order, the stop may reach the engine first. It found nothing running (`ERR_STATE`) and the
/// sync went on; now it ends that start all the same, and a stop called before a start does not.
#[tokio::test]
async fn a_stop_ends_the_start_called_before_it_whichever_reaches_the_engine_first() {
    let parts = Parts::default();
    let c = ns("db.c");
    parts.source.insert(&c, docs(1));
    let (engine, _) = super::engine(config(&["db.c"]));
    let (start, stop) = (engine.call_start(), engine.call_stop());
    // `join!` polls the stop first: it waits for the start to register its run, then ends it.
    let (stopped, started) = tokio::join!(engine.stop_called(stop), engine.run_start(start, &parts));
    stopped.unwrap();
    assert_eq!(started.unwrap_err().code, crate::error::ErrorCode::State, "start() rejects: it was stopped");
    assert_eq!(engine.stats().state, SyncState::Stopped);
    assert!(parts.sink.writes().is_empty(), "nothing was copied");
    let (stop, start) = (engine.call_stop(), engine.call_start());
    let (stopped, started) = tokio::join!(engine.stop_called(stop), engine.run_start(start, &parts));
    stopped.unwrap();
    started.unwrap();
    wait_state(&engine, SyncState::Streaming).await;
    mirrored(&parts, &c, "c").await;
    engine.stop().await.unwrap();
}

/// Collections are prepared side by side (a checkpoint read, a start point, an index each: at a
/// thousand collections, one after another took 82 s against the local servers), so one whose
/// index is slow to prepare does not hold the others back.
#[tokio::test]
async fn collections_are_prepared_side_by_side() {
    let parts = Parts::default();
    parts.sink.block_prepare_of("a");
    let (engine, _) = super::engine(config(&["db.a", "db.b", "db.c"]));
    let starting = tokio::spawn({
        let (engine, parts) = (engine.clone(), parts.clone());
        async move { engine.start_with(&parts).await }
    });
    let prepared = || async {
        let prepared = parts.sink.prepared();
        (prepared.contains(&"b".to_string()) && prepared.contains(&"c".to_string())).then_some(prepared)
    };
    let prepared = eventually("b and c prepared while a waits", prepared).await;
    assert!(!prepared.contains(&"a".to_string()), "{prepared:?}");
    engine.stop().await.unwrap();
    assert!(starting.await.unwrap().is_err(), "start() ends with the stop");
}

/// `rateLimit` caps the whole sync: every collection's context of a run (a partitioned member
/// makes one per owned collection) takes from the same buckets.
#[test]
fn every_context_of_a_run_takes_from_one_rate_limit() {
    let mut cfg = config(&["db.c"]);
    cfg.rate_limit = Some(crate::config::RateLimitConfig { docs_per_second: Some(10.0), bytes_per_second: None });
    let (engine, _) = super::engine(cfg);
    let setup = engine.setup();
    let parts = Parts::default();
    let context = || setup.context(Arc::new(parts.source.clone()), parts.sink.clone(), parts.store.clone(), Default::default(), Arc::default());
    let (first, second) = (context(), context());
    let limit = |ctx: &super::super::Context| ctx.rate_limit.as_ref().expect("a rate limit").reserve(10, 0);
    assert_eq!(limit(&first), Duration::ZERO, "a second's worth goes at once");
    assert!(limit(&second) >= Duration::from_millis(900), "the second context waits for the same bucket");
}
