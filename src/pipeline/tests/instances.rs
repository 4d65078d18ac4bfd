//! Several engines with the same name over one lease: one syncs, the others stand by.

use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::doc;

use super::*;
use crate::checkpoint::CheckpointStore;
use crate::coordination::{Instance, LeaseStore, MemoryLeaseStore};
use crate::error::ErrorCode;
use crate::event::LeadershipChange;
use crate::stats::Role;
use crate::testkit::{config, ns};

fn leased() -> (Parts, SyncConfig) {
    let parts = Parts { lease: Some(Arc::new(MemoryLeaseStore::default())), ..Parts::default() };
    let mut cfg = config(&["db.c"]);
    cfg.lease.duration = Duration::from_millis(1000);
    (parts, cfg)
}

fn leadership(events: &Events) -> Vec<(LeadershipChange, u64)> {
    events.all().iter().filter_map(|e| if let SyncEvent::Leadership { change, term, .. } = e { Some((*change, *term)) } else { None }).collect()
}

#[tokio::test]
async fn the_second_instance_stands_by_and_takes_over_at_once_when_the_first_stops() {
    let (parts, cfg) = leased();
    let c = ns("db.c");
    parts.source.insert(&c, docs(3));
    let (first, first_events) = streaming(cfg.clone(), &parts).await;
    let (second, second_events) = engine(cfg.clone());
    second.start_with(&parts).await.expect("start");
    assert_eq!(second.stats().state, SyncState::Standby, "start() resolves standing by");
    let role = second.stats().role.expect("a role");
    assert_eq!((role.role, role.term, role.owned_collections.len()), (Role::Standby, 1, 0));
    assert_eq!(first.stats().role.expect("a role").owned_collections, ["db.c"]);
    mirrored(&parts, &c, "c").await;

    first.stop().await.unwrap();
    wait_state(&second, SyncState::Streaming).await;
    assert_eq!(leadership(&first_events), [(LeadershipChange::Acquired, 1)]);
    assert_eq!(leadership(&second_events), [(LeadershipChange::Standby, 1), (LeadershipChange::Acquired, 2)]);
    parts.source.insert(&c, [doc! {"_id": 4_i64, "v": 1}]);
    mirrored(&parts, &c, "c").await;
    assert_eq!(second.stats().role.expect("a role").role, Role::Leader);
    second.stop().await.unwrap();
}

#[tokio::test]
async fn a_leader_whose_lease_is_taken_stops_writing_and_stands_by() {
    let (parts, cfg) = leased();
    let c = ns("db.c");
    parts.source.insert(&c, docs(2));
    let (engine, events) = streaming(cfg, &parts).await;
    mirrored(&parts, &c, "c").await;
    // Another instance takes the lease over (as after this one was paused past its lease).
    let lease = parts.lease.clone().expect("a lease");
    let seen = lease.read().await.unwrap().expect("held");
    let other = Instance { id: "other".into(), host: String::new(), pid: 1 };
    lease.take(&other, Duration::from_secs(60), &seen).await.unwrap().expect("taken over");
    wait_state(&engine, SyncState::Standby).await;
    assert_eq!(leadership(&events), [(LeadershipChange::Acquired, 1), (LeadershipChange::Lost, 1), (LeadershipChange::Standby, 2)]);
    // Its checkpoints were saved under its term: an earlier term could not save over them.
    let refused = parts.store.save_fenced(&c, &Default::default(), 0).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::LeaseLost);
    let written = parts.sink.writes().len();
    parts.source.insert(&c, [doc! {"_id": 3_i64, "v": 1}]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(parts.sink.writes().len(), written, "a standby writes nothing");
    engine.stop().await.unwrap();
    assert_eq!(engine.stats().state, SyncState::Stopped);
}
