//! Tests of the pipeline with a scripted source, an in-memory sink and an in-memory store:
//! each behaviour of a collection's life, without servers.

mod changes;
mod instances;
mod lifecycle;
mod partition;
mod retries;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::{doc, Document};

use super::{SyncEngine, Timing};
use crate::config::{Namespace, SyncConfig};
use crate::event::{SyncEvent, SyncState};
use crate::testkit::{eventually, Events, Parts};

/// An engine over `parts`, with quick periodic chores, and what it emits.
fn engine(config: SyncConfig) -> (Arc<SyncEngine>, Events) {
    engine_with(config, |_| {})
}

/// `engine`, with its timing adjusted by `adjust`.
fn engine_with(config: SyncConfig, adjust: impl FnOnce(&mut Timing)) -> (Arc<SyncEngine>, Events) {
    let mut engine = SyncEngine::new(config).expect("a valid configuration");
    engine.timing = Timing {
        stream_checkpoint_every: Duration::from_millis(10),
        idle_checkpoint_every: Duration::from_millis(50),
        copy_checkpoint_every: Duration::ZERO,
        history_check_every: Duration::from_millis(20),
        drop_settles_after: Duration::ZERO,
        save_put_off_at_most: Duration::from_secs(60),
    };
    adjust(&mut engine.timing);
    let events = Events::default();
    let sink = events.clone();
    engine.events().subscribe(move |e| sink.0.lock().expect("events").push(e.clone()));
    (Arc::new(engine), events)
}

/// Starts an engine and waits until every collection streams.
async fn streaming(config: SyncConfig, parts: &Parts) -> (Arc<SyncEngine>, Events) {
    let (engine, events) = engine(config);
    engine.start_with(parts).await.expect("start");
    wait_state(&engine, SyncState::Streaming).await;
    (engine, events)
}

/// Stops `engine`, and once the stop is under way, does `then` (e.g. lets held writes through),
/// so that what they finish comes after the stop.
async fn stop_then(engine: &Arc<SyncEngine>, then: impl FnOnce()) {
    let stopping = tokio::spawn({
        let engine = engine.clone();
        async move { engine.stop().await }
    });
    wait_state(engine, SyncState::Stopping).await;
    then();
    stopping.await.expect("the stop task").expect("stop");
}

async fn wait_state(engine: &SyncEngine, state: SyncState) {
    eventually(&format!("state {state:?}"), || async { (engine.stats().state == state).then_some(()) }).await;
}

/// Documents with `_id` 1..=n and `v: 0`.
fn docs(n: i64) -> Vec<Document> {
    (1..=n).map(|i| doc! {"_id": i, "v": 0}).collect()
}

/// Waits until `index` holds exactly the documents of `ns` (by `_id` and content).
async fn mirrored(parts: &Parts, ns: &Namespace, index: &str) {
    eventually(&format!("{index} to mirror {ns}"), || async {
        let want: std::collections::BTreeMap<String, serde_json::Value> = parts
            .source
            .documents(ns)
            .into_iter()
            .map(|(id, mut d)| {
                d.remove("_id");
                (id.to_string(), serde_json::to_value(&d).expect("JSON"))
            })
            .collect();
        (parts.sink.docs(index) == want).then_some(())
    })
    .await;
}

fn retries(events: &Events) -> usize {
    events.all().iter().filter(|e| matches!(e, SyncEvent::Retry { .. })).count()
}
