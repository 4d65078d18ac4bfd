//! Copy then stream: the index mirrors the collection, writes go in order, and positions are
//! saved only once acknowledged.

use mongodb::bson::doc;

use super::*;
use crate::source::StreamStart;
use crate::testkit::{config, ns};

#[tokio::test]
async fn copy_then_stream_mirrors_every_change_type() {
    let parts = Parts::default();
    let orders = ns("shop.orders");
    parts.source.insert(&orders, docs(5));
    let (engine, events) = streaming(config(&["shop.orders"]), &parts).await;
    mirrored(&parts, &orders, "orders").await;
    parts.source.insert(&orders, [doc! {"_id": 6_i64, "v": 1}]);
    parts.source.update(&orders, 1, doc! {"v": 2});
    parts.source.replace(&orders, doc! {"_id": 2_i64, "w": "x"});
    parts.source.delete(&orders, 3);
    mirrored(&parts, &orders, "orders").await;
    engine.stop().await.unwrap();
    assert_eq!(engine.stats().state, SyncState::Stopped);
    let stats = engine.stats();
    assert_eq!((stats.copied, stats.streamed), (5, 4));
    assert!(events.find(|e| matches!(e, SyncEvent::Progress { done: true, copied: 5, .. }).then_some(())).is_some());
    let cp = parts.store.get(&orders).unwrap();
    assert!(cp.copy_done && cp.resume_token.is_some(), "{cp:?}");
}

#[tokio::test]
async fn writes_of_one_document_apply_in_change_order() {
    let parts = Parts::default();
    let c = ns("db.c");
    parts.source.insert(&c, docs(1));
    let mut cfg = config(&["db.c"]);
    cfg.batch.max_docs = 3;
    let (_engine, _) = streaming(cfg, &parts).await;
    for v in 1..=50 {
        parts.source.update(&c, 1, doc! {"v": v});
    }
    mirrored(&parts, &c, "c").await;
    let versions: Vec<i64> = parts.sink.writes().into_iter().flat_map(|(_, w)| w).map(|(_, v)| v).collect();
    assert!(versions.windows(2).all(|w| w[0] <= w[1]), "versions only grow: {versions:?}");
    assert_eq!(parts.sink.docs("c")["1"], serde_json::json!({"v": 50}));
}

#[tokio::test]
async fn a_position_is_saved_only_after_its_batch_is_acknowledged() {
    let parts = Parts::default();
    let c = ns("db.c");
    parts.source.insert(&c, docs(1));
    let (engine, _) = streaming(config(&["db.c"]), &parts).await;
    let saved = || parts.store.get(&c).and_then(|cp| cp.resume_token);
    let before = eventually("a first position", || async { saved() }).await;
    parts.sink.hold();
    parts.source.insert(&c, [doc! {"_id": 2_i64, "v": 0}]);
    eventually("the write to wait", || async { (parts.sink.waiting() == 1).then_some(()) }).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(saved(), Some(before.clone()), "nothing past the unacknowledged batch is saved");
    parts.sink.release(1);
    eventually("the position after the batch", || async { saved().filter(|t| *t != before) }).await;
    parts.sink.open();
    engine.stop().await.unwrap();
    // A restart continues after the saved position.
    let at_stop = saved().unwrap();
    let (again, _) = streaming(config(&["db.c"]), &parts).await;
    parts.source.insert(&c, [doc! {"_id": 3_i64, "v": 0}]);
    mirrored(&parts, &c, "c").await;
    assert_eq!(parts.source.opened().last().cloned(), Some((c.clone(), StreamStart::ResumeAfter(at_stop))));
    again.stop().await.unwrap();
}

/// A collection copied by an earlier run reports what its checkpoint counts (the status page
/// and `stats()` showed 0 copied after a restart).
#[tokio::test]
async fn a_restart_reports_the_documents_copied_before() {
    let parts = Parts::default();
    let orders = ns("shop.orders");
    parts.source.insert(&orders, docs(5));
    let (engine, _) = streaming(config(&["shop.orders"]), &parts).await;
    engine.stop().await.unwrap();
    let (again, _) = streaming(config(&["shop.orders"]), &parts).await;
    let stats = eventually("the collection's stats", || async { again.stats().collections.get("shop.orders").cloned() }).await;
    assert_eq!((stats.copied, stats.total_estimate), (5, 5));
    again.stop().await.unwrap();
}

/// Issue 19: a slow stream (caught up after every batch of one change) saved its position after
/// each batch: one checkpoint write per change, on the user's database, in the stream's path. It
/// is saved at most once per `stream_checkpoint_every`, and the newest by the next idle moment.
#[tokio::test]
async fn a_slow_stream_saves_its_position_at_most_once_per_interval() {
    let parts = Parts::default();
    let c = ns("db.c");
    parts.source.insert(&c, docs(1));
    let every = Duration::from_millis(400);
    let (engine, _) = engine_with(config(&["db.c"]), |t| t.stream_checkpoint_every = every);
    engine.start_with(&parts).await.expect("start");
    wait_state(&engine, SyncState::Streaming).await;
    let saved = || parts.store.get(&c).and_then(|cp| cp.resume_token);
    eventually("a first position", || async { saved() }).await;
    tokio::time::sleep(every).await;
    let saves = || engine.stats().stages.checkpoint_save.count;
    let before = saves();
    let started = std::time::Instant::now();
    for v in 1..=10_i64 {
        parts.source.update(&c, 1, doc! {"v": v});
        eventually("the change written", || async { (parts.sink.docs("c")["1"]["v"] == v).then_some(()) }).await;
    }
    let windows = (started.elapsed().as_millis() / every.as_millis()) as u64 + 1;
    let made = saves() - before;
    assert!(made <= windows, "{made} checkpoint saves for 10 changes over {windows} interval(s) of {every:?}");
    // The position of the last change (entry 11: the insert, then 10 updates) is saved by an idle moment.
    let last = format!("{:016x}", 11);
    eventually("the last change's position saved", || async { saved().filter(|t| t.get_str("_data").is_ok_and(|d| d.starts_with(&last))) }).await;
    engine.stop().await.unwrap();
}

/// While the checkpoint store is busy (its writes in flight at their bound), a streaming
/// collection writes its changes and puts its position saves off, for at most
/// `save_put_off_at_most`: a thousand collections' saves due together held a change back 30 s.
#[tokio::test]
async fn a_busy_store_puts_off_position_saves_not_changes() {
    let parts = Parts::default();
    let c = ns("db.c");
    parts.source.insert(&c, docs(1));
    let put_off = Duration::from_millis(800);
    let (engine, _) = engine_with(config(&["db.c"]), |t| t.save_put_off_at_most = put_off);
    engine.start_with(&parts).await.expect("start");
    wait_state(&engine, SyncState::Streaming).await;
    let saves = || parts.store.history().len();
    eventually("a first position", || async { parts.store.get(&c).and_then(|cp| cp.resume_token) }).await;
    parts.store.set_busy(true);
    let (before, busy_since) = (saves(), std::time::Instant::now());
    for v in 1..=3_i64 {
        parts.source.update(&c, 1, doc! {"v": v});
        eventually("the change written", || async { (parts.sink.docs("c")["1"]["v"] == v).then_some(()) }).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    if busy_since.elapsed() < put_off / 2 {
        assert_eq!(saves(), before, "no position saved while the store is busy");
    }
    // Put off at most so long: saved even though the store stays busy.
    eventually("the position saved after the put-off", || async { (saves() > before).then_some(()) }).await;
    assert!(busy_since.elapsed() >= put_off / 2, "saved after {:?}, before the put-off ran out", busy_since.elapsed());
    parts.store.set_busy(false);
    engine.stop().await.unwrap();
}

/// Ten documents of `db.c` copied in batches of four, every write held at the output.
fn held_copy_of_ten() -> (Parts, Namespace, SyncConfig) {
    let parts = Parts::default();
    let c = ns("db.c");
    parts.source.insert(&c, docs(10));
    let mut cfg = config(&["db.c"]);
    cfg.batch.max_docs = 4;
    parts.sink.hold();
    (parts, c, cfg)
}

#[tokio::test]
async fn the_copy_checkpoints_each_range_only_after_its_batches_are_acknowledged() {
    let (parts, c, cfg) = held_copy_of_ten();
    let (engine, _) = super::engine(cfg);
    engine.start_with(&parts).await.unwrap();
    eventually("a copy batch to wait", || async { (parts.sink.waiting() >= 1).then_some(()) }).await;
    let cp = parts.store.get(&c).unwrap();
    assert_eq!((cp.copied, cp.copy_ranges[0].last_id.clone()), (0, None), "nothing acknowledged, nothing saved");
    parts.sink.release(1);
    eventually("the first batch's range position", || async {
        parts.store.get(&c).filter(|cp| cp.copy_ranges[0].last_id == Some(mongodb::bson::Bson::Int64(4))).map(|cp| cp.copied)
    })
    .await;
    parts.sink.open();
    wait_state(&engine, SyncState::Streaming).await;
    mirrored(&parts, &c, "c").await;
    engine.stop().await.unwrap();
}

/// Issue 19: a checkpoint write per copy batch was a write to the user's database per batch
/// (and an oplog entry each). Saves are spaced out; a stop still saves what was acknowledged.
#[tokio::test]
async fn the_copy_saves_its_position_at_most_so_often_and_what_was_acknowledged_when_stopped() {
    let (parts, c, cfg) = held_copy_of_ten();
    let (engine, _) = super::engine_with(cfg, |t| t.copy_checkpoint_every = std::time::Duration::from_secs(3600));
    engine.start_with(&parts).await.unwrap();
    eventually("a copy batch to wait", || async { (parts.sink.waiting() >= 1).then_some(()) }).await;
    parts.sink.release(1);
    eventually("the first batch written", || async { (parts.sink.docs("c").len() == 4).then_some(()) }).await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let cp = parts.store.get(&c).unwrap();
    assert_eq!((cp.copied, cp.copy_ranges[0].last_id.clone()), (0, None), "not saved within the interval");
    stop_then(&engine, || {
        parts.sink.stop_held_writes();
        parts.sink.open();
    })
    .await;
    // Whatever was written before the stop took hold is acknowledged, and saved.
    let (cp, written) = (parts.store.get(&c).unwrap(), parts.sink.docs("c").len() as u64);
    assert!(written >= 4, "{written}");
    assert_eq!((cp.copied, cp.copy_ranges[0].last_id.clone()), (written, Some(mongodb::bson::Bson::Int64(written as i64))), "saved at the stop");
}

/// Issue 13, item 19: with a filter, an update out of it was turned into a delete even when
/// `operations` excludes deletes (an archive index lost documents).
#[tokio::test]
async fn a_filtered_archive_never_deletes() {
    let parts = Parts::default();
    let c = ns("db.c");
    let mut cfg = config(&["db.c"]);
    cfg.collections[0].filter = Some(doc! {"kind": "keep"});
    cfg.collections[0].operations.delete = false;
    let (engine, _) = streaming(cfg, &parts).await;
    parts.source.insert(&c, (1..=3).map(|i| doc! {"_id": i as i64, "kind": "keep"}));
    eventually("three documents", || async { (parts.sink.docs("c").len() == 3).then_some(()) }).await;
    parts.source.update(&c, 1, doc! {"kind": "gone"});
    parts.source.delete(&c, 2);
    parts.source.insert(&c, [doc! {"_id": 4_i64, "kind": "keep"}]);
    eventually("the marker", || async { parts.sink.docs("c").contains_key("4").then_some(()) }).await;
    assert_eq!(parts.sink.docs("c").keys().cloned().collect::<Vec<_>>(), vec!["1", "2", "3", "4"]);
    assert_eq!(parts.sink.docs("c")["1"], serde_json::json!({"kind": "keep"}));
    engine.stop().await.unwrap();
}

/// Issue 13, item 14: documents the copy cannot convert are kept (as extended JSON, for the
/// dead letter) in their batch, which only counted convertible writes against its bounds: a
/// range of large unconvertible documents gathered in one batch without limit.
#[tokio::test]
async fn rejected_copy_documents_count_toward_the_batch_bounds() {
    let parts = Parts::default();
    let c = ns("db.c");
    let filler = "x".repeat(200_000);
    for key in 0..20 {
        // A string `_id` over 512 bytes cannot be an Elasticsearch id: dead-lettered with the document.
        parts.source.put_raw(&c, key, doc! {"_id": format!("{key:0>600}"), "filler": filler.clone()});
    }
    let mut cfg = config(&["db.c"]);
    cfg.batch.max_bytes = 1_000_000;
    let (engine, events) = streaming(cfg, &parts).await;
    let per_batch: Vec<u64> = events
        .all()
        .iter()
        .filter_map(|e| match e {
            SyncEvent::Batch { outcome, phase: crate::event::Phase::Copy, .. } => Some(outcome.dead_letters),
            _ => None,
        })
        .collect();
    assert_eq!(per_batch.iter().sum::<u64>(), 20, "{per_batch:?}");
    assert!(per_batch.iter().all(|&n| n <= 5), "no batch holds much more than batch.maxBytes of rejected documents: {per_batch:?}");
    engine.stop().await.unwrap();
}

/// Issue 13, item 7: the copy and the filter's lookups followed the URI's read preference with
/// no causal bound, so a lagging secondary could answer from before the stream's start point.
/// Every such read now names the time it must read no older than.
#[tokio::test]
async fn the_copy_and_the_lookups_read_no_older_than_the_stream() {
    let parts = Parts::default();
    let c = ns("db.c");
    parts.source.insert(&c, (1..=3).map(|i| doc! {"_id": i as i64, "kind": "keep"}));
    let mut cfg = config(&["db.c"]);
    cfg.collections[0].filter = Some(doc! {"kind": "keep"});
    let (engine, _) = streaming(cfg, &parts).await;
    parts.source.update(&c, 2, doc! {"v": 1});
    mirrored(&parts, &c, "c").await;
    let start_at = parts.store.get(&c).unwrap().start_at;
    let scans = parts.source.scans();
    assert!(!scans.is_empty() && scans.iter().all(|(_, _, options)| options.not_before == start_at), "{scans:?}");
    let lookups = parts.source.lookups();
    assert!(!lookups.is_empty() && lookups.iter().all(|(_, _, at)| at.is_some() && *at > start_at), "{lookups:?}");
    engine.stop().await.unwrap();
}

/// Issue 19: a filtered collection looked each changed document up with a round trip of its own,
/// one change after another. The changes waiting while a batch is written are now answered with
/// one lookup for all of them, and still applied in order (in, out of the filter, deleted).
#[tokio::test]
async fn a_filtered_collection_looks_up_a_batch_of_changes_at_once() {
    let parts = Parts::default();
    let c = ns("db.c");
    parts.source.insert(&c, (1..=40).map(|i| doc! {"_id": i as i64, "kind": "keep", "v": 0}));
    let mut cfg = config(&["db.c"]);
    cfg.collections[0].filter = Some(doc! {"kind": "keep"});
    let (engine, _) = streaming(cfg, &parts).await;
    eventually("the copy", || async { (parts.sink.docs("c").len() == 40).then_some(()) }).await;
    parts.sink.hold();
    parts.source.update(&c, 1, doc! {"v": 1});
    eventually("a batch in flight", || async { (parts.sink.waiting() == 1).then_some(()) }).await;
    let before = parts.source.lookup_round_trips();
    for i in 2..=40 {
        parts.source.update(&c, i, doc! {"v": 1});
    }
    for i in 2..=11 {
        parts.source.update(&c, i, doc! {"kind": "drop"});
    }
    parts.source.delete(&c, 12);
    parts.source.update(&c, 13, doc! {"v": 2});
    let batches_before = parts.sink.writes().len();
    parts.sink.open();
    eventually("the last change", || async { (parts.sink.docs("c").get("13") == Some(&serde_json::json!({"kind": "keep", "v": 2}))).then_some(()) }).await;
    let docs = parts.sink.docs("c");
    let expected: Vec<String> = std::iter::once(1).chain(13..=40).map(|i: i64| i.to_string()).collect();
    assert_eq!(docs.keys().cloned().collect::<Vec<_>>().len(), expected.len(), "{docs:?}");
    assert!(expected.iter().all(|id| docs.contains_key(id)), "{docs:?}");
    assert_eq!(docs["40"], serde_json::json!({"kind": "keep", "v": 1}));
    // At most two per batch (the matching documents; which of the others exist), however the
    // changes fell into batches; one per change (and two out of the filter) before.
    let (round_trips, batches) = (parts.source.lookup_round_trips() - before, parts.sink.writes().len() - batches_before + 1);
    assert!(round_trips <= 2 * batches && round_trips < 20, "51 changes in {batches} batches took {round_trips} lookups");
    engine.stop().await.unwrap();
}

/// Issue 19: where a change's time goes is measured per stage, so that the engine's own share
/// of the latency shows apart from the servers'.
#[tokio::test]
async fn each_stage_of_a_write_is_timed() {
    let parts = Parts::default();
    let c = ns("db.c");
    parts.source.insert(&c, docs(3));
    let (engine, _) = streaming(config(&["db.c"]), &parts).await;
    mirrored(&parts, &c, "c").await;
    let copied = engine.stats().stages;
    assert!(copied.convert.count >= 3 && copied.bulk_request.count >= 1 && copied.checkpoint_save.count >= 1, "{copied:?}");
    parts.source.insert(&c, [doc! {"_id": 4_i64, "v": 1}]);
    mirrored(&parts, &c, "c").await;
    let stages = eventually("the stream's stages", || async {
        let stages = engine.stats().stages;
        (stages.read_ahead_wait.count >= 1 && stages.convert.count >= 4 && stages.bulk_request.count > copied.bulk_request.count).then_some(stages)
    })
    .await;
    assert!(stages.bulk_request.max_us <= stages.bulk_request.total_us, "{stages:?}");
    engine.stop().await.unwrap();
}
