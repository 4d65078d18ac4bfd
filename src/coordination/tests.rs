use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::checkpoint::{CheckpointStore, CollectionCheckpoint, MemoryCheckpointStore};
use crate::config::Namespace;
use crate::coordination::group::GroupStore;

fn config(ms: u64) -> LeaseConfig {
    LeaseConfig { duration: Duration::from_millis(ms) }
}

fn instance(id: &str) -> Instance {
    Instance { id: id.into(), host: String::new(), pid: 1 }
}

fn elector(store: &Arc<MemoryLeaseStore>, id: &str, ms: u64) -> Elector {
    Elector::new(store.clone(), instance(id), config(ms))
}

#[tokio::test(start_paused = true)]
async fn the_first_instance_holds_the_lease_and_the_second_waits_for_it_to_run_out() {
    let store = Arc::new(MemoryLeaseStore::default());
    let (mut a, mut b) = (elector(&store, "a", 10_000), elector(&store, "b", 10_000));
    assert_eq!(a.look().await.unwrap().0, Look::Acquired(1));
    assert_eq!(b.look().await.unwrap().0, Look::Held { holder: "a".into(), term: 1 });
    // Unrenewed, but not yet for the whole duration (by b's clock, from when b first saw it).
    tokio::time::advance(Duration::from_millis(9_900)).await;
    assert_eq!(b.look().await.unwrap().0, Look::Held { holder: "a".into(), term: 1 });
    tokio::time::advance(Duration::from_millis(200)).await;
    assert_eq!(b.look().await.unwrap().0, Look::Acquired(2), "taken over, at the next term");
    assert_eq!(a.look().await.unwrap().0, Look::Held { holder: "b".into(), term: 2 });
}

#[tokio::test(start_paused = true)]
async fn a_renewed_lease_is_never_taken_and_a_released_one_at_once() {
    let store = Arc::new(MemoryLeaseStore::default());
    let (mut a, mut b) = (elector(&store, "a", 4_000), elector(&store, "b", 4_000));
    let (Look::Acquired(term), sent) = a.look().await.unwrap() else { panic!("a acquires") };
    let leadership = a.lead(term, sent);
    for _ in 0..20 {
        assert!(matches!(b.look().await.unwrap().0, Look::Held { .. }));
        tokio::time::sleep(Duration::from_millis(700)).await;
        leadership.guard().check().expect("renewed in time");
    }
    let guard = leadership.guard().clone();
    leadership.release().await.unwrap();
    assert_eq!(guard.check().unwrap_err().code, ErrorCode::LeaseLost, "nothing is written after the release");
    assert_eq!(b.look().await.unwrap().0, Look::Acquired(2));
}

#[tokio::test(start_paused = true)]
async fn a_holder_that_cannot_renew_stops_writing_before_anyone_may_take_over() {
    let store = Arc::new(MemoryLeaseStore::default());
    let (mut a, mut b) = (elector(&store, "a", 10_000), elector(&store, "b", 10_000));
    let (Look::Acquired(term), sent) = a.look().await.unwrap() else { panic!("a acquires") };
    let leadership = a.lead(term, sent);
    assert!(matches!(b.look().await.unwrap().0, Look::Held { .. }));
    // The holder pauses: its renewals stop (as under SIGSTOP), the standby's clock runs on.
    leadership.heartbeat.abort();
    tokio::time::advance(Duration::from_millis(7_999)).await;
    leadership.guard().check().expect("still surely held");
    tokio::time::advance(Duration::from_millis(2)).await;
    assert_eq!(leadership.guard().check().unwrap_err().code, ErrorCode::LeaseLost, "its deadline: duration minus the margin");
    assert!(matches!(b.look().await.unwrap().0, Look::Held { .. }), "while the standby still waits");
    tokio::time::advance(Duration::from_millis(2_000)).await;
    assert_eq!(b.look().await.unwrap().0, Look::Acquired(2));
}

#[tokio::test(start_paused = true)]
async fn a_holder_whose_lease_was_taken_over_loses_it_at_its_next_renewal() {
    let store = Arc::new(MemoryLeaseStore::default());
    let mut a = elector(&store, "a", 4_000);
    let (Look::Acquired(term), sent) = a.look().await.unwrap() else { panic!("a acquires") };
    let leadership = a.lead(term, sent);
    let seen = store.read().await.unwrap().unwrap();
    store.take(&instance("b"), Duration::from_secs(4), &seen).await.unwrap().expect("b takes over");
    tokio::time::timeout(Duration::from_secs(2), leadership.guard().lost().cancelled()).await.expect("lost at the next renewal");
    assert!(leadership.guard().is_lost());
}

#[tokio::test]
async fn a_checkpoint_under_a_later_term_refuses_saves_of_earlier_terms() {
    let ns = Namespace::parse("shop.orders").unwrap();
    let store = MemoryCheckpointStore::default();
    let at = |copied| CollectionCheckpoint { copied, ..Default::default() };
    store.save_fenced(&ns, &at(10), 1).await.unwrap();
    // Term 2 loads: from then on term 1 can no longer save, even before term 2 saved anything.
    assert_eq!(store.load_fenced(&ns, 2).await.unwrap().copied, 10);
    assert_eq!(store.save_fenced(&ns, &at(5), 1).await.unwrap_err().code, ErrorCode::LeaseLost);
    store.save_fenced(&ns, &at(20), 2).await.unwrap();
    assert_eq!(store.load_fenced(&ns, 1).await.unwrap_err().code, ErrorCode::LeaseLost);
    assert_eq!(store.load(&ns).await.unwrap().copied, 20);
}

#[test]
fn this_process_is_alive_and_a_reaped_one_is_not() {
    assert!(pid_alive(std::process::id()));
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    assert!(!pid_alive(pid));
    let me = Instance::current();
    let record = |pid| LeaseRecord { holder: Some("x".into()), term: 1, version: 1, duration: Duration::from_secs(1), host: me.host.clone(), pid };
    assert!(me.holder_is_gone(&record(pid)));
    assert!(!me.holder_is_gone(&record(std::process::id())));
    assert!(!me.holder_is_gone(&LeaseRecord { host: "elsewhere".into(), ..record(pid) }), "a process elsewhere is never known dead");
}

fn ids(items: &[&str]) -> std::collections::BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(start_paused = true)]
async fn a_member_is_live_while_its_heartbeat_moves_and_gone_once_it_stops_or_leaves() {
    let group = MemoryGroupStore::default();
    let (a, b, beat) = (instance("a"), instance("b"), Duration::from_secs(4));
    let mut seen_by_a = Membership::new(a.clone());
    assert_eq!(seen_by_a.live(&group.members().await.unwrap()), ids(&["a"]), "this instance always counts");
    group.heartbeat(&a, beat).await.unwrap();
    group.heartbeat(&b, beat).await.unwrap();
    assert_eq!(seen_by_a.live(&group.members().await.unwrap()), ids(&["a", "b"]));
    for _ in 0..10 {
        tokio::time::advance(Duration::from_secs(1)).await;
        group.heartbeat(&b, beat).await.unwrap();
        assert_eq!(seen_by_a.live(&group.members().await.unwrap()), ids(&["a", "b"]), "a beating member stays");
    }
    // b stops beating: gone once a has seen the same version for the duration, by a's clock.
    tokio::time::advance(Duration::from_millis(3_900)).await;
    assert_eq!(seen_by_a.live(&group.members().await.unwrap()), ids(&["a", "b"]));
    tokio::time::advance(Duration::from_millis(200)).await;
    assert_eq!(seen_by_a.live(&group.members().await.unwrap()), ids(&["a"]));
    group.heartbeat(&b, beat).await.unwrap();
    assert_eq!(seen_by_a.live(&group.members().await.unwrap()), ids(&["a", "b"]), "back once it beats again");
    group.leave(&b).await.unwrap();
    assert_eq!(seen_by_a.live(&group.members().await.unwrap()), ids(&["a"]), "a member that leaves is gone at once");
}

#[tokio::test(start_paused = true)]
async fn each_collection_has_a_lease_and_a_term_of_its_own() {
    let group = Arc::new(MemoryGroupStore::default());
    let elector = |ns: &str, id: &str| Elector::new(group.lease(ns), instance(id), config(4_000));
    let (mut a1, mut b1, mut b2) = (elector("db.c1", "a"), elector("db.c1", "b"), elector("db.c2", "b"));
    let (Look::Acquired(term), sent) = a1.look().await.unwrap() else { panic!("a takes c1") };
    let c1 = a1.lead(term, sent);
    let (Look::Acquired(term), sent) = b2.look().await.unwrap() else { panic!("b takes c2, whose lease is free") };
    let c2 = b2.lead(term, sent);
    assert_eq!(b1.look().await.unwrap().0, Look::Held { holder: "a".into(), term: 1 }, "c1 is a's");
    let owned = owners(&group.leases().await.unwrap());
    assert_eq!(owned.into_iter().collect::<Vec<_>>(), [("db.c1".to_string(), "a".to_string()), ("db.c2".to_string(), "b".to_string())]);

    // Checkpoints are fenced by their own collection's term.
    let store = MemoryCheckpointStore::default();
    let (n1, n2) = (Namespace::parse("db.c1").unwrap(), Namespace::parse("db.c2").unwrap());
    let at = |copied| CollectionCheckpoint { copied, ..Default::default() };
    store.load_fenced(&n1, c1.term()).await.unwrap();
    store.save_fenced(&n1, &at(5), c1.term()).await.unwrap();
    store.save_fenced(&n2, &at(7), c2.term()).await.unwrap();

    // a stops renewing c1 (paused or dead); c2 is renewed all along and stays b's.
    c1.heartbeat.abort();
    for _ in 0..5 {
        tokio::time::advance(Duration::from_millis(1_000)).await;
        tokio::task::yield_now().await;
    }
    assert!(c1.guard().is_lost(), "a stopped writing c1 before anyone could take it");
    c2.guard().check().expect("c2 is still b's");
    assert_eq!(b1.look().await.unwrap().0, Look::Acquired(2), "c1 taken over, at its next term");
    assert_eq!(store.load_fenced(&n1, 2).await.unwrap().copied, 5);
    assert_eq!(store.save_fenced(&n1, &at(6), 1).await.unwrap_err().code, ErrorCode::LeaseLost, "c1's former owner can no longer save");
    assert_eq!(elector("db.c2", "a").look().await.unwrap().0, Look::Held { holder: "b".into(), term: 1 });
    c2.release().await.unwrap();
    assert_eq!(elector("db.c2", "a").look().await.unwrap().0, Look::Acquired(2), "a released collection is taken at once");
}
