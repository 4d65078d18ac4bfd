//! Collection-level changes: drop, rename, invalidate, lost history and the re-copy.

use mongodb::bson::{doc, Timestamp};

use super::*;
use crate::config::{DropPolicy, HistoryLostPolicy, RenamePolicy, SyncMode};
use crate::error::ErrorCode;
use crate::source::StreamStart;
use crate::testkit::{config, ns};

#[tokio::test]
async fn a_drop_empties_the_index_and_the_stream_goes_on_after_the_invalidate() {
    let parts = Parts::default();
    let c = ns("db.c");
    parts.source.insert(&c, docs(3));
    let (engine, events) = streaming(config(&["db.c"]), &parts).await;
    mirrored(&parts, &c, "c").await;
    parts.source.drop_collection(&c);
    eventually("the invalidate", || async { events.changes().contains(&("db.c".into(), "invalidate".into())).then_some(()) }).await;
    assert!(parts.sink.docs("c").is_empty());
    assert!(events.changes().contains(&("db.c".into(), "drop".into())));
    let actions: Vec<_> = parts.sink.actions().into_iter().map(|a| a.action).collect();
    assert_eq!(actions, vec![crate::sink::IndexAction::DeleteDocuments { index: "c".into() }]);
    assert!(matches!(parts.source.opened().last(), Some((_, StreamStart::StartAfter(_)))));
    parts.source.insert(&c, [doc! {"_id": 9_i64, "v": 1}]);
    mirrored(&parts, &c, "c").await;
    engine.stop().await.unwrap();
}

#[tokio::test]
async fn drop_policies_delete_the_index_or_leave_it() {
    for (policy, index_left, docs_left) in [(DropPolicy::DeleteIndex, false, 0), (DropPolicy::Ignore, true, 3)] {
        let parts = Parts::default();
        let c = ns("db.c");
        parts.source.insert(&c, docs(3));
        let mut cfg = config(&["db.c"]);
        cfg.on_drop = policy;
        let (engine, events) = streaming(cfg, &parts).await;
        mirrored(&parts, &c, "c").await;
        parts.source.drop_collection(&c);
        eventually("the drop", || async { events.changes().contains(&("db.c".into(), "drop".into())).then_some(()) }).await;
        assert_eq!(parts.sink.index("c").is_some(), index_left, "{policy:?}");
        assert_eq!(parts.sink.docs("c").len(), docs_left, "{policy:?}");
        engine.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_rename_moves_or_recopies_the_documents_to_the_new_name_s_index() {
    for policy in [RenamePolicy::Move, RenamePolicy::Recopy] {
        let parts = Parts::default();
        let (c, renamed) = (ns("db.c"), ns("db.renamed"));
        parts.source.insert(&c, docs(4));
        let mut cfg = config(&["db.c"]);
        cfg.on_rename = policy;
        let (engine, events) = streaming(cfg, &parts).await;
        mirrored(&parts, &c, "c").await;
        parts.source.rename(&c, &renamed);
        eventually("the rename", || async { events.changes().contains(&("db.c".into(), "rename".into())).then_some(()) }).await;
        mirrored(&parts, &renamed, "renamed").await;
        assert!(parts.sink.docs("c").is_empty(), "{policy:?}: the old index is emptied");
        engine.stop().await.unwrap();
    }
}

#[tokio::test]
async fn lost_history_fails_start_and_writes_nothing() {
    let parts = Parts::default();
    let c = ns("db.c");
    parts.source.insert(&c, docs(2));
    let (engine, _) = streaming(config(&["db.c"]), &parts).await;
    mirrored(&parts, &c, "c").await;
    eventually("a saved position", || async { parts.store.get(&c).and_then(|cp| cp.resume_token) }).await;
    engine.stop().await.unwrap();
    parts.source.insert(&c, [doc! {"_id": 5_i64, "v": 0}]);
    parts.source.truncate_history();
    let (again, _) = super::engine(config(&["db.c"]));
    let err = again.start_with(&parts).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::HistoryLost);
    assert_eq!(again.stats().state, SyncState::Failed);
    assert!(!parts.sink.docs("c").contains_key("5"));
}

#[tokio::test]
async fn lost_history_with_resync_recopies_into_a_new_index_and_swaps_the_alias() {
    let parts = Parts::default();
    let c = ns("db.c");
    parts.source.insert(&c, docs(3));
    let (engine, _) = streaming(config(&["db.c"]), &parts).await;
    mirrored(&parts, &c, "c").await;
    engine.stop().await.unwrap();
    parts.source.insert(&c, [doc! {"_id": 5_i64, "v": 0}]);
    parts.source.truncate_history();
    let mut cfg = config(&["db.c"]);
    cfg.on_history_lost = HistoryLostPolicy::Resync;
    let (again, events) = streaming(cfg, &parts).await;
    eventually("the swap", || async { events.changes().contains(&("db.c".into(), "resync".into())).then_some(()) }).await;
    assert_eq!(parts.sink.aliases().get("c").map(|s| s.iter().cloned().collect::<Vec<_>>()), Some(vec!["c-1".to_string()]));
    mirrored(&parts, &c, "c").await;
    parts.source.update(&c, 1, doc! {"v": 7});
    mirrored(&parts, &c, "c").await;
    assert_eq!(parts.store.get(&c).unwrap().physical_index.as_deref(), Some("c-1"));
    again.stop().await.unwrap();
}

/// Issue 13, item 9: after a drop the driver reports the `startAfter` (invalidate) token until
/// a batch is empty; saved as a plain position, a restart then resumed after an invalidate
/// token, which the server refuses (ERR_HISTORY_LOST).
#[tokio::test]
async fn a_restart_right_after_an_invalidate_resumes_with_start_after() {
    let parts = Parts::default();
    let c = ns("db.c");
    parts.source.insert(&c, docs(2));
    let (engine, events) = streaming(config(&["db.c"]), &parts).await;
    parts.source.drop_collection(&c);
    eventually("the invalidate", || async { events.changes().contains(&("db.c".into(), "invalidate".into())).then_some(()) }).await;
    engine.stop().await.unwrap();
    parts.source.insert(&c, [doc! {"_id": 7_i64, "v": 1}]);
    let (again, _) = streaming(config(&["db.c"]), &parts).await;
    mirrored(&parts, &c, "c").await;
    assert!(matches!(parts.source.opened().last(), Some((_, StreamStart::StartAfter(_)))));
    again.stop().await.unwrap();
}

/// Issue 13, item 2: in stream mode nothing is copied, so a "re-copy" after lost history
/// swapped an empty index in; and a `startAt` outside the history re-copied forever.
#[tokio::test]
async fn stream_mode_never_recopies_lost_history() {
    let parts = Parts::default();
    let c = ns("db.c");
    let mut cfg = config(&["db.c"]);
    cfg.mode = crate::config::SyncMode::Stream { start_at: None };
    cfg.on_history_lost = HistoryLostPolicy::Resync;
    let (engine, _) = streaming(cfg.clone(), &parts).await;
    parts.source.insert(&c, docs(2));
    mirrored(&parts, &c, "c").await;
    eventually("a saved position", || async { parts.store.get(&c).and_then(|cp| cp.resume_token) }).await;
    engine.stop().await.unwrap();
    parts.source.insert(&c, [doc! {"_id": 5_i64, "v": 0}]);
    parts.source.truncate_history();
    let (again, _) = super::engine(cfg);
    let err = again.start_with(&parts).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::HistoryLost);
    assert!(err.message.contains("mode 'stream'"), "{}", err.message);
    assert_eq!(parts.sink.docs("c").len(), 2, "the index keeps what it had");
    assert!(parts.sink.aliases().is_empty());
}

#[tokio::test]
async fn a_start_at_outside_the_history_fails_start() {
    let parts = Parts::default();
    let c = ns("db.c");
    parts.source.insert(&c, docs(2));
    parts.source.truncate_history();
    let mut cfg = config(&["db.c"]);
    cfg.mode = crate::config::SyncMode::Stream { start_at: Some(mongodb::bson::Timestamp { time: 1, increment: 0 }) };
    cfg.on_history_lost = HistoryLostPolicy::Resync;
    let (engine, _) = super::engine(cfg);
    let started = tokio::time::timeout(std::time::Duration::from_secs(5), engine.start_with(&parts)).await.expect("start() ends");
    assert_eq!(started.unwrap_err().code, ErrorCode::HistoryLost);
    assert_eq!(engine.stats().state, SyncState::Failed);
    assert!(parts.sink.docs("c").is_empty() && parts.sink.aliases().is_empty());
}

/// Waits until the index named `alias` is an alias of `index` alone.
async fn aliased(parts: &Parts, alias: &str, index: &str) {
    eventually(&format!("{alias} to alias {index}"), || async {
        (parts.sink.aliases().get(alias).map(|s| s.iter().cloned().collect::<Vec<_>>()) == Some(vec![index.to_string()])).then_some(())
    })
    .await;
}

/// Issue 13, item 1: a collection replaced by a rename into it (`$out`, `dropTarget`) kept the
/// old contents (nothing is in its stream about the new ones); after an earlier re-copy (its
/// name an alias), the rename event made it reindex its index into itself and empty it.
#[tokio::test]
async fn a_collection_replaced_by_a_rename_into_it_is_copied_again_behind_its_alias() {
    for reported_as_rename in [false, true] {
        let parts = Parts::default();
        let (c, incoming) = (ns("db.c"), ns("db.incoming"));
        parts.source.insert(&c, docs(4));
        let (engine, _) = streaming(config(&["db.c"]), &parts).await;
        mirrored(&parts, &c, "c").await;
        parts.source.insert(&incoming, [doc! {"_id": 100_i64, "v": 1}, doc! {"_id": 101_i64, "v": 1}]);
        match reported_as_rename {
            false => parts.source.rename(&incoming, &c),
            true => parts.source.rename_reported_as_rename(&incoming, &c),
        }
        aliased(&parts, "c", "c-1").await;
        mirrored(&parts, &c, "c").await;
        // Once more, now that the name is an alias.
        parts.source.insert(&incoming, [doc! {"_id": 200_i64, "v": 2}]);
        match reported_as_rename {
            false => parts.source.rename(&incoming, &c),
            true => parts.source.rename_reported_as_rename(&incoming, &c),
        }
        aliased(&parts, "c", "c-2").await;
        mirrored(&parts, &c, "c").await;
        assert!(parts.sink.index("c-1").is_none(), "the replaced index is dropped at the swap");
        parts.source.insert(&c, [doc! {"_id": 300_i64, "v": 3}]);
        mirrored(&parts, &c, "c").await;
        engine.stop().await.unwrap();
    }
}

/// Issue 13, item 4: updates read after a rename arrive without their document (it is no
/// longer found under the old name): they were skipped (with a filter: turned into deletes),
/// and the move carried the documents as they were before them.
#[tokio::test]
async fn updates_read_after_a_rename_reach_the_new_name_s_index() {
    for filtered in [false, true] {
        let parts = Parts::default();
        let (c, renamed) = (ns("db.c"), ns("db.renamed"));
        let mut cfg = config(&["db.c"]);
        if filtered {
            cfg.collections[0].filter = Some(doc! {"kind": "keep"});
        }
        let (engine, _) = streaming(cfg.clone(), &parts).await;
        parts.source.insert(&c, (1..=6).map(|i| doc! {"_id": i as i64, "kind": "keep", "v": 0}));
        mirrored(&parts, &c, "c").await;
        eventually("a saved position", || async { parts.store.get(&c).and_then(|cp| cp.resume_token) }).await;
        engine.stop().await.unwrap();
        for id in 1..=3 {
            parts.source.update(&c, id, doc! {"v": 1});
        }
        parts.source.delete(&c, 4);
        parts.source.rename(&c, &renamed);
        let (again, events) = streaming(cfg, &parts).await;
        eventually("the rename", || async { events.changes().contains(&("db.c".into(), "rename".into())).then_some(()) }).await;
        mirrored(&parts, &renamed, "renamed").await;
        again.stop().await.unwrap();
    }
}

/// A drop read before the new contents arrived (SecantusDB drops, then renames, and shows
/// nothing of a rename into a collection that does not exist), and MongoDB's bare
/// `invalidate` for a rename into an absent collection: the first idle turn after the
/// `invalidate` finds the collection full, with nothing in its stream, and copies it again.
#[tokio::test]
async fn contents_that_arrive_without_changes_after_a_drop_are_copied_again() {
    let parts = Parts::default();
    let (c, incoming) = (ns("db.c"), ns("db.incoming"));
    parts.source.insert(&c, docs(3));
    let (engine, events) = streaming(config(&["db.c"]), &parts).await;
    mirrored(&parts, &c, "c").await;
    parts.source.hold_idle(true);
    parts.source.drop_collection(&c);
    eventually("the invalidate", || async { events.changes().contains(&("db.c".into(), "invalidate".into())).then_some(()) }).await;
    assert_eq!(parts.sink.docs("c").len(), 3, "the drop waits to be told from a replacement");
    parts.source.put_silently(&c, [doc! {"_id": 50_i64, "v": 5}]);
    parts.source.hold_idle(false);
    aliased(&parts, "c", "c-1").await;
    mirrored(&parts, &c, "c").await;
    // A bare invalidate (a rename into the collection after it was dropped).
    parts.source.drop_collection(&c);
    eventually("the drop applied", || async { parts.sink.docs("c").is_empty().then_some(()) }).await;
    parts.source.insert(&incoming, [doc! {"_id": 60_i64, "v": 6}]);
    parts.source.rename_into_absent(&incoming, &c);
    aliased(&parts, "c", "c-2").await;
    mirrored(&parts, &c, "c").await;
    engine.stop().await.unwrap();
}

/// `$out` onto a followed collection as SecantusDB runs it: a drop, then a rename into the
/// collection, which its stream shows nothing of. When the drop was settled as a plain one
/// before the rename (the reopened stream was idle and the collection still empty), the new
/// contents were never copied: the index stayed empty for good (the intermittent failure of the
/// end-to-end `$out` test). Contents that appear after a drop without any change are copied.
#[tokio::test]
async fn contents_renamed_in_after_a_settled_drop_are_copied_again() {
    let parts = Parts::default();
    let (c, staging) = (ns("db.c"), ns("db.staging"));
    parts.source.insert(&c, docs(3));
    let (engine, events) = streaming(config(&["db.c"]), &parts).await;
    mirrored(&parts, &c, "c").await;
    parts.source.drop_collection(&c);
    eventually("the drop applied", || async { events.changes().contains(&("db.c".into(), "drop".into())).then_some(()) }).await;
    assert!(parts.sink.docs("c").is_empty());
    parts.source.put_silently(&staging, [doc! {"_id": 61_i64, "v": 1}, doc! {"_id": 62_i64, "v": 1}]);
    parts.source.rename_silently_into(&staging, &c);
    aliased(&parts, "c", "c-1").await;
    mirrored(&parts, &c, "c").await;
    parts.source.insert(&c, [doc! {"_id": 63_i64, "v": 1}]);
    mirrored(&parts, &c, "c").await;
    engine.stop().await.unwrap();
}

/// The same `$out`, its rename coming soon after the drop's `invalidate` was read: the drop is
/// settled only once the stream stayed quiet for a moment, so the contents are found first and
/// the index is replaced by a re-copy, never emptied in between (readers never see it empty).
#[tokio::test]
async fn a_drop_is_settled_only_after_a_quiet_moment() {
    let parts = Parts::default();
    let (c, staging) = (ns("db.c"), ns("db.staging"));
    let engine = dropped_and_reopened(&parts, &c).await;
    parts.source.put_silently(&staging, [doc! {"_id": 61_i64, "v": 1}]);
    parts.source.rename_silently_into(&staging, &c);
    recopied_never_emptied(&parts, &c).await;
    engine.stop().await.unwrap();
}

/// A collection `c` of three documents, synced, then dropped: once the stream after the drop
/// is open (and settles a drop followed by nothing only after 2 s), the engine.
async fn dropped_and_reopened(parts: &Parts, c: &Namespace) -> Arc<SyncEngine> {
    parts.source.insert(c, docs(3));
    let (engine, events) = engine_with(config(&["db.c"]), |t| t.drop_settles_after = std::time::Duration::from_secs(2));
    engine.start_with(parts).await.expect("start");
    wait_state(&engine, SyncState::Streaming).await;
    mirrored(parts, c, "c").await;
    parts.source.drop_collection(c);
    eventually("the invalidate", || async { events.changes().contains(&("db.c".into(), "invalidate".into())).then_some(()) }).await;
    engine
}

/// The index `c` ends re-copied into `c-1` behind its alias, equal to `ns`, never emptied.
async fn recopied_never_emptied(parts: &Parts, ns: &Namespace) {
    aliased(parts, "c", "c-1").await;
    mirrored(parts, ns, "c").await;
    let deletes = parts.sink.actions().into_iter().filter(|a| matches!(a.action, crate::sink::IndexAction::DeleteDocuments { .. })).count();
    assert_eq!(deletes, 0, "the index was never emptied");
}

/// `$out` as SecantusDB sometimes shows it: the drop read while the collection is empty, then
/// the renamed-in documents as inserts on the reopened stream. Taken for a plain drop, the index
/// was emptied (readers saw it empty) and the new documents written into it under its old
/// mappings (a field of another type was dead-lettered). Documents there when the drop settles
/// mean a replacement: re-copied into a fresh index behind the alias.
#[tokio::test]
async fn a_drop_followed_by_new_documents_is_a_replacement() {
    let parts = Parts::default();
    let c = ns("db.c");
    let engine = dropped_and_reopened(&parts, &c).await;
    parts.source.insert(&c, [doc! {"_id": 61_i64, "v": "out"}, doc! {"_id": 62_i64, "v": "out"}]);
    recopied_never_emptied(&parts, &c).await;
    engine.stop().await.unwrap();
}

/// Issue 13, item 5: after `onDrop: 'deleteIndex'`, the collection's next write auto-created
/// its index, with dynamic mappings, no settings and no alias.
#[tokio::test]
async fn a_deleted_index_is_prepared_again_when_its_collection_comes_back() {
    let parts = Parts::default();
    let c = ns("db.c");
    parts.source.insert(&c, docs(2));
    let mut cfg = config(&["db.c"]);
    cfg.on_drop = DropPolicy::DeleteIndex;
    cfg.collections[0].alias = Some("c-read".into());
    cfg.collections[0].index_body = Some(serde_json::json!({"mappings": {"properties": {"v": {"type": "keyword"}}}}));
    let (engine, events) = streaming(cfg, &parts).await;
    mirrored(&parts, &c, "c").await;
    parts.source.drop_collection(&c);
    eventually("the drop", || async { events.changes().contains(&("db.c".into(), "drop".into())).then_some(()) }).await;
    assert!(parts.sink.index("c").is_none());
    parts.source.insert(&c, [doc! {"_id": 9_i64, "v": 9}]);
    mirrored(&parts, &c, "c").await;
    let index = parts.sink.index("c").unwrap();
    assert!(!index.auto_created, "prepared, not auto-created");
    assert_eq!(index.body, Some(serde_json::json!({"mappings": {"properties": {"v": {"type": "keyword"}}}})));
    assert_eq!(parts.sink.aliases().get("c-read").map(|s| s.iter().cloned().collect::<Vec<_>>()), Some(vec!["c".to_string()]));
    engine.stop().await.unwrap();
}

/// Issue 13, item 8: a rename's target index was created without the settings it is later
/// checked against (`namespaces.defaults` when the patterns match the new name).
#[tokio::test]
async fn a_rename_s_target_index_is_prepared_with_its_own_settings() {
    let parts = Parts::default();
    let (c, moved) = (ns("db.c"), ns("db.moved"));
    parts.source.insert(&c, docs(2));
    let mut cfg = config(&["db.c"]);
    let mut defaults = crate::config::CollectionConfig::template("{coll}".into());
    defaults.index_body = Some(serde_json::json!({"mappings": {"properties": {"v": {"type": "keyword"}}}}));
    cfg.discovery = Some(crate::config::Discovery {
        include: vec![regex::Regex::new("^db\\.moved$").unwrap()],
        exclude: vec![],
        defaults,
        interval: std::time::Duration::from_secs(3600),
    });
    let (engine, events) = streaming(cfg, &parts).await;
    mirrored(&parts, &c, "c").await;
    parts.source.rename(&c, &moved);
    eventually("the rename", || async { events.changes().contains(&("db.c".into(), "rename".into())).then_some(()) }).await;
    mirrored(&parts, &moved, "moved").await;
    assert_eq!(parts.sink.index("moved").unwrap().body, Some(serde_json::json!({"mappings": {"properties": {"v": {"type": "keyword"}}}})));
    engine.stop().await.unwrap();
}

/// Issue 13, item 15: a re-copy added the collection's alias to its half-filled new index at
/// once, so readers of the alias saw documents twice.
#[tokio::test]
async fn the_collection_s_alias_moves_to_a_recopied_index_only_at_the_swap() {
    let parts = Parts::default();
    let c = ns("db.c");
    parts.source.insert(&c, docs(3));
    let mut cfg = config(&["db.c"]);
    cfg.collections[0].alias = Some("read".into());
    let (engine, _) = streaming(cfg.clone(), &parts).await;
    eventually("a saved position", || async { parts.store.get(&c).and_then(|cp| cp.resume_token) }).await;
    engine.stop().await.unwrap();
    parts.source.insert(&c, [doc! {"_id": 4_i64, "v": 0}]);
    parts.source.truncate_history();
    cfg.on_history_lost = HistoryLostPolicy::Resync;
    parts.sink.hold();
    let (again, _) = super::engine(cfg.clone());
    again.start_with(&parts).await.unwrap();
    eventually("the re-copy to write", || async { (parts.sink.waiting() == 1).then_some(()) }).await;
    let read = || parts.sink.aliases().get("read").map(|s| s.iter().cloned().collect::<Vec<_>>());
    assert_eq!(read(), Some(vec!["c".to_string()]), "the alias stays on the complete index");
    // A restart during the re-copy keeps it there too (stopped before the held write returns:
    // let through first, the copy could finish and swap before the stop).
    stop_then(&again, || parts.sink.open()).await;
    assert_eq!(read(), Some(vec!["c".to_string()]));
    let (third, events) = streaming(cfg, &parts).await;
    eventually("the swap", || async { events.changes().contains(&("db.c".into(), "resync".into())).then_some(()) }).await;
    assert_eq!(read(), Some(vec!["c-1".to_string()]));
    third.stop().await.unwrap();
}

/// Truncates the history every few milliseconds until dropped, as a small oplog under load does.
fn shrinking_history(parts: &Parts) -> tokio::task::JoinHandle<()> {
    let source = parts.source.clone();
    tokio::spawn(async move {
        loop {
            source.truncate_history();
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
}

/// Issue 13, item 13: a copy longer than the history window was only found out once it was
/// done (with 'fail': every restart ended the same way), and with 'resync' it began again
/// forever. It is detected during the copy, reported, and the re-copies are bounded.
#[tokio::test]
async fn a_copy_longer_than_the_history_window_is_detected_during_the_copy() {
    let parts = Parts::default();
    let c = ns("db.c");
    parts.source.insert(&c, docs(10));
    parts.sink.hold();
    let (engine, events) = super::engine(config(&["db.c"]));
    engine.start_with(&parts).await.unwrap();
    eventually("the copy to write", || async { (parts.sink.waiting() == 1).then_some(()) }).await;
    let shrinking = shrinking_history(&parts);
    let err = tokio::time::timeout(std::time::Duration::from_secs(5), engine.wait()).await.expect("found during the copy").unwrap_err();
    shrinking.abort();
    assert_eq!(err.code, ErrorCode::HistoryLost);
    assert!(err.message.contains("copy"), "{}", err.message);
    assert!(!parts.store.get(&c).unwrap().copy_done, "the copy had not finished");
    assert!(events.find(|e| matches!(e, SyncEvent::Warning { message, .. } if message.contains("oplog")).then_some(())).is_some(), "{:?}", events.all());
    parts.sink.open();
}

#[tokio::test]
async fn re_copies_that_each_outlast_the_history_window_end_in_err_history_lost() {
    let parts = Parts::default();
    let c = ns("db.c");
    parts.source.insert(&c, docs(10));
    parts.sink.hold();
    let mut cfg = config(&["db.c"]);
    cfg.on_history_lost = HistoryLostPolicy::Resync;
    let (engine, events) = super::engine(cfg);
    engine.start_with(&parts).await.unwrap();
    let shrinking = shrinking_history(&parts);
    let err = tokio::time::timeout(std::time::Duration::from_secs(5), engine.wait()).await.expect("the re-copies are bounded").unwrap_err();
    shrinking.abort();
    assert_eq!(err.code, ErrorCode::HistoryLost);
    let recopies = events.all().iter().filter(|e| matches!(e, SyncEvent::Warning { message, .. } if message.contains("copying again"))).count();
    assert_eq!(recopies, 2, "two re-copies, then it gives up: {}", err.message);
    parts.sink.open();
}

/// A configuration following every collection of `db` by pattern, looking for new ones often.
fn by_pattern(mode: SyncMode) -> SyncConfig {
    let mut cfg = config(&[]);
    cfg.mode = mode;
    cfg.discovery = Some(crate::config::Discovery {
        include: vec![regex::Regex::new("^db\\..*$").unwrap()],
        exclude: vec![],
        defaults: crate::config::CollectionConfig::template("{coll}".into()),
        interval: std::time::Duration::from_millis(100),
    });
    cfg
}

fn discovered(events: &Events, namespace: &str) -> usize {
    events.changes().iter().filter(|(n, op)| n == namespace && op == "discovered").count()
}

/// Issue 23's soak: a dropped collection found by a pattern stayed followed (its task, its stream
/// and the connection its reads hold), so collections of ever-new names piled up. Once its drop
/// settles it is followed no more; re-created, it is found again and copied, then streamed.
#[tokio::test]
async fn a_dropped_collection_a_pattern_found_is_followed_no_more_and_found_again() {
    let parts = Parts::default();
    let c = ns("db.c");
    parts.source.insert(&c, docs(2));
    let (engine, events) = streaming(by_pattern(SyncMode::CopyAndStream), &parts).await;
    mirrored(&parts, &c, "c").await;
    parts.source.drop_collection(&c);
    eventually("c followed no more", || async { (!engine.stats().collections.contains_key("db.c")).then_some(()) }).await;
    assert!(events.changes().contains(&("db.c".into(), "drop".into())), "the drop was applied first");
    assert!(parts.sink.docs("c").is_empty());
    parts.source.insert(&c, [doc! {"_id": 7_i64, "v": 1}]);
    // Found at start without a `discovered` event; found again with one.
    eventually("c found again", || async { (discovered(&events, "db.c") == 1).then_some(()) }).await;
    mirrored(&parts, &c, "c").await;
    parts.source.update(&c, 7, doc! {"v": 2});
    mirrored(&parts, &c, "c").await;
    assert_eq!(engine.stats().state, SyncState::Streaming);
    engine.stop().await.unwrap();
}

/// Stream only, a collection found again after its drop is followed from right after the drop,
/// never from before it (which would read the drop again), even when the last look for new
/// collections was earlier.
#[tokio::test]
async fn stream_only_a_collection_found_again_starts_after_its_drop() {
    let parts = Parts::default();
    let c = ns("db.c");
    parts.source.insert(&c, docs(1));
    let (engine, events) = streaming(by_pattern(SyncMode::Stream { start_at: None }), &parts).await;
    parts.source.insert(&c, [doc! {"_id": 2_i64, "v": 0}]);
    eventually("the insert", || async { (parts.sink.docs("c").len() == 1).then_some(()) }).await;
    // The scripted clock: `now()` is just after the last entry, the drop is the next one.
    use crate::source::ChangeSource as _;
    let before = parts.source.now().await.unwrap();
    let drop_at = Timestamp { time: before.time + 1, increment: 1 };
    parts.source.drop_collection(&c);
    eventually("c followed no more", || async { (!engine.stats().collections.contains_key("db.c")).then_some(()) }).await;
    parts.source.insert(&c, [doc! {"_id": 3_i64, "v": 0}]);
    // Found at start without a `discovered` event; found again with one.
    eventually("c found again", || async { (discovered(&events, "db.c") == 1).then_some(()) }).await;
    eventually("the insert after the re-creation", || async { parts.sink.docs("c").contains_key("3").then_some(()) }).await;
    let (_, start) = parts.source.opened().into_iter().rev().find(|(n, _)| *n == c).expect("c's stream");
    match start {
        StreamStart::AtOperationTime(at) => assert!(at > drop_at, "opened at {at:?}, not after the drop at {drop_at:?}"),
        other => panic!("opened at {other:?}"),
    }
    assert_eq!(parts.sink.docs("c").len(), 1, "only the new document: the drop emptied the index, and was not applied again after the re-creation");
    engine.stop().await.unwrap();
}
