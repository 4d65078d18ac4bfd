//! Engines of one partitioned group (`instances`) over in-memory parts: the collections are
//! split between the members, each owned by one; a member that stops hands its collections over.

use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::doc;

use super::*;
use crate::config::InstancesConfig;
use crate::coordination::MemoryGroupStore;
use crate::stats::Role;
use crate::testkit::{config, eventually};

fn grouped(n: usize) -> (Parts, SyncConfig, Vec<Namespace>) {
    let parts = Parts { group: Some(Arc::new(MemoryGroupStore::default())), ..Parts::default() };
    let names: Vec<String> = (0..n).map(|i| format!("db.c{i}")).collect();
    let mut cfg = config(&names.iter().map(String::as_str).collect::<Vec<_>>());
    cfg.lease.duration = Duration::from_millis(1000);
    cfg.instances = Some(InstancesConfig::new("g"));
    let namespaces = names.iter().map(|n| Namespace::parse(n).expect("a namespace")).collect();
    (parts, cfg, namespaces)
}

fn owned(engine: &SyncEngine) -> Vec<String> {
    engine.stats().role.map(|r| r.owned_collections).unwrap_or_default()
}

fn assignments(events: &Events) -> Vec<Vec<String>> {
    events.all().iter().filter_map(|e| if let SyncEvent::Assignment { collections } = e { Some(collections.clone()) } else { None }).collect()
}

#[tokio::test]
async fn two_members_split_four_collections_and_one_takes_them_all_when_the_other_stops() {
    let (parts, cfg, namespaces) = grouped(4);
    for ns in &namespaces {
        parts.source.insert(ns, docs(3));
    }
    let (a, a_events) = engine(cfg.clone());
    a.start_with(&parts).await.expect("start a");
    let (b, b_events) = engine(cfg.clone());
    b.start_with(&parts).await.expect("start b");
    eventually("an even split", || async { (owned(&a).len() == 2 && owned(&b).len() == 2).then_some(()) }).await;
    let mut all = [owned(&a), owned(&b)].concat();
    all.sort();
    assert_eq!(all, namespaces.iter().map(|n| n.to_string()).collect::<Vec<_>>(), "each collection owned by one member");
    for ns in &namespaces {
        mirrored(&parts, ns, &ns.coll).await;
    }
    assert_eq!(a.stats().role.expect("a role").role, Role::Member);
    assert_eq!(assignments(&b_events).last(), Some(&owned(&b)));

    a.stop().await.expect("stop a");
    eventually("b to own all four", || async { (owned(&b).len() == 4).then_some(()) }).await;
    assert_eq!(assignments(&a_events).last(), Some(&Vec::new()), "a owns nothing once stopped");
    for ns in &namespaces {
        parts.source.insert(ns, [doc! {"_id": 100_i64, "v": 1}]);
        mirrored(&parts, ns, &ns.coll).await;
    }
    assert_eq!(b.stats().state, SyncState::Streaming);
    b.stop().await.expect("stop b");
}

#[tokio::test]
async fn a_member_over_its_maximum_leaves_the_rest_unowned_until_another_joins() {
    let (parts, mut cfg, namespaces) = grouped(3);
    cfg.instances = Some(InstancesConfig { max_collections_per_instance: Some(2), ..InstancesConfig::new("g") });
    let (a, _) = engine(cfg.clone());
    a.start_with(&parts).await.expect("start a");
    eventually("a to own two", || async { (owned(&a).len() == 2).then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(owned(&a).len(), 2, "never more than the maximum");
    let (b, _) = engine(cfg);
    b.start_with(&parts).await.expect("start b");
    eventually("all three owned", || async { (owned(&a).len() + owned(&b).len() == 3).then_some(()) }).await;
    for ns in &namespaces {
        mirrored(&parts, ns, &ns.coll).await;
    }
    a.stop().await.expect("stop a");
    b.stop().await.expect("stop b");
}
