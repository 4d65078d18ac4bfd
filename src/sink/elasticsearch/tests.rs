//! The Elasticsearch sink against a loopback server ([`super::fake`]) for what the local server
//! cannot show: near-real-time search and long-running server-side tasks.

use std::sync::Arc;
use std::time::Duration;

use super::fake::{FakeEs, State};
use super::{EsError, EsSink};
use crate::config::{EsAuth, EsConfig, EsTls, RetryConfig};
use crate::event::EventBus;
use crate::retry::{Flow, GaveUp};
use crate::sink::{SinkContext, Target};
use crate::stats::Stats;
use crate::transform::{DocumentWrite, Operation, WriteOp};

fn context(max_attempts: u32) -> SinkContext {
    let retry = RetryConfig { max_attempts: Some(max_attempts), initial_delay: Duration::from_millis(1), max_delay: Duration::from_millis(5) };
    SinkContext { retry, events: EventBus::default(), stats: Arc::new(Stats::default()), cancel: Default::default() }
}

fn sink(es: &FakeEs, ctx: SinkContext) -> EsSink {
    let config = EsConfig { node: es.url.clone(), auth: EsAuth::None, request_timeout: Duration::from_secs(10), compression: false, tls: EsTls::default() };
    EsSink::new(&config, &crate::config::BatchConfig::default(), ctx).expect("a client")
}

fn writes(n: usize) -> Vec<DocumentWrite> {
    (0..n)
        .map(|i| DocumentWrite {
            id: format!("d{i}"),
            routing: None,
            version: 1,
            op: WriteOp::Index(format!("{{\"n\":{i}}}").into_bytes()),
            operation: Operation::Insert,
            position: None,
        })
        .collect()
}

/// Documents acknowledged by `_bulk`, not yet refreshed (within the refresh interval).
async fn written_not_refreshed(es: &FakeEs, sink: &EsSink, index: &str, n: usize) {
    assert!(matches!(sink.bulk(&Target::index(index), writes(n)).await, Ok(Flow::Done(_))));
    assert_eq!(es.state().indices[index].unrefreshed.len(), n, "the fake keeps new writes out of search until a refresh");
}

#[tokio::test]
async fn an_alias_moves_to_a_re_copied_index_only_once_its_writes_are_searchable() {
    let es = FakeEs::start(State::default()).await;
    let sink = sink(&es, context(3));
    written_not_refreshed(&es, &sink, "a-1", 3).await;
    assert_eq!(sink.swap_alias("a", "a-1", "a", &[]).await, Ok(Flow::Done(())));
    assert_eq!(es.state().indices["a-1"].searchable.len(), 3, "readers of the alias see every copied document at once");
    let requests = es.state().requests.clone();
    let at = |r: &str| requests.iter().position(|x| x.starts_with(r)).unwrap_or_else(|| panic!("{r} in {requests:?}"));
    assert!(at("POST /a-1/_refresh") < at("POST /_aliases"), "{requests:?}");
}

#[tokio::test]
async fn a_batch_without_writes_sends_no_request() {
    let es = FakeEs::start(State::default()).await;
    let sink = sink(&es, context(3));
    let report = sink.bulk(&Target::index("a"), Vec::new()).await;
    assert!(matches!(report, Ok(Flow::Done(ref r)) if r.outcome.indexed == 0 && r.dead_letters.is_empty()), "{report:?}");
    assert_eq!(es.state().requests, Vec::<String>::new(), "an empty _bulk is refused by the server");
}

#[tokio::test]
async fn a_drop_deletes_the_documents_written_since_the_last_refresh() {
    let es = FakeEs::start(State::default()).await;
    let sink = sink(&es, context(3));
    written_not_refreshed(&es, &sink, "a", 3).await;
    assert_eq!(sink.delete_documents("a").await, Ok(Flow::Done(())));
    assert_eq!(es.state().indices["a"].len(), 0, "no acknowledged write survives the drop");
}

#[tokio::test]
async fn a_rename_moves_the_documents_written_since_the_last_refresh() {
    let es = FakeEs::start(State::default()).await;
    let sink = sink(&es, context(3));
    written_not_refreshed(&es, &sink, "a", 3).await;
    assert_eq!(sink.reindex("a", "b").await, Ok(Flow::Done(())));
    assert_eq!(es.state().indices["b"].len(), 3, "every acknowledged write is moved");
}

/// A server with the tasks API, whose tasks run for `polls` polls, behind a proxy that times a
/// long request out (504) while the server goes on with it.
async fn slow_server(polls: u32) -> FakeEs {
    FakeEs::start(State { tasks_api: true, task_polls: polls, slow_requests: true, ..State::default() }).await
}

#[tokio::test]
async fn a_long_reindex_is_sent_once_and_waited_for() {
    let es = slow_server(4).await;
    let sink = sink(&es, context(3));
    written_not_refreshed(&es, &sink, "a", 3).await;
    assert_eq!(sink.reindex("a", "b").await, Ok(Flow::Done(())));
    let state = es.state();
    assert_eq!(state.count("POST /_reindex"), 1, "never sent again while it runs: {:?}", state.requests);
    assert_eq!(state.count("GET /_tasks/"), 5, "polled until it ended");
    assert_eq!(state.indices["b"].len(), 3);
}

#[tokio::test]
async fn a_long_delete_by_query_is_sent_once_and_waited_for() {
    let es = slow_server(2).await;
    let sink = sink(&es, context(3));
    written_not_refreshed(&es, &sink, "a", 3).await;
    assert_eq!(sink.delete_documents("a").await, Ok(Flow::Done(())));
    assert_eq!(es.state().count("POST /a/_delete_by_query"), 1, "{:?}", es.state().requests);
    assert_eq!(es.state().indices["a"].len(), 0);
}

#[tokio::test]
async fn a_failed_poll_is_polled_again_without_sending_the_task_again() {
    let es = slow_server(3).await;
    // Two attempts allowed: two failed polls in a row would use them up, but the answered poll
    // between these shows the task alive, which counts as progress.
    es.state().failures.extend([("GET /_tasks/".to_string(), 503), ("GET /_tasks/".to_string(), 0), ("GET /_tasks/".to_string(), 502)]);
    let sink = sink(&es, context(2));
    written_not_refreshed(&es, &sink, "a", 2).await;
    assert_eq!(sink.reindex("a", "b").await, Ok(Flow::Done(())));
    assert_eq!(es.state().count("POST /_reindex"), 1, "{:?}", es.state().requests);
    assert_eq!(es.state().indices["b"].len(), 2);
}

#[tokio::test]
async fn a_task_that_vanished_runs_again() {
    let es = slow_server(1).await;
    // Its node restarted: the task is gone, with no stored result.
    es.state().failures.push_back(("GET /_tasks/".to_string(), 404));
    let sink = sink(&es, context(3));
    written_not_refreshed(&es, &sink, "a", 2).await;
    assert_eq!(sink.reindex("a", "b").await, Ok(Flow::Done(())));
    assert_eq!(es.state().count("POST /_reindex"), 2, "{:?}", es.state().requests);
}

#[tokio::test]
async fn a_stop_while_a_task_runs_ends_the_wait() {
    let es = slow_server(u32::MAX).await;
    let ctx = context(3);
    let cancel = ctx.cancel.clone();
    let sink = sink(&es, ctx);
    written_not_refreshed(&es, &sink, "a", 1).await;
    let stopping = async {
        while es.state().count("GET /_tasks/") < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cancel.cancel();
    };
    let (ended, ()) =
        tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(sink.reindex("a", "b"), stopping) }).await.expect("the stop ends the wait");
    assert_eq!(ended, Ok(Flow::Stopped));
}

#[tokio::test]
async fn without_a_tasks_api_the_work_is_done_within_the_request() {
    // As osmem (and a user without the `monitor` privilege): `GET /_tasks` is refused.
    let es = FakeEs::start(State::default()).await;
    let sink = sink(&es, context(3));
    written_not_refreshed(&es, &sink, "a", 2).await;
    assert_eq!(sink.reindex("a", "b").await, Ok(Flow::Done(())));
    assert_eq!(sink.delete_documents("a").await, Ok(Flow::Done(())));
    let state = es.state();
    assert_eq!((state.indices["b"].len(), state.indices["a"].len()), (2, 0));
    assert_eq!(state.count("GET /_tasks"), 1, "asked once: {:?}", state.requests);
    assert!(state.requests.iter().all(|r| !r.contains("wait_for_completion=false")));
}

#[tokio::test]
async fn a_missing_index_is_nothing_to_do_and_failures_are_errors() {
    let es = FakeEs::start(State { tasks_api: true, ..State::default() }).await;
    let sink = sink(&es, context(3));
    assert_eq!(sink.reindex("gone", "b").await, Ok(Flow::Done(())));
    assert_eq!(sink.delete_documents("gone").await, Ok(Flow::Done(())));
    // Retries that run out name the work and the last cause.
    es.state().failures.extend((0..3).map(|_| ("POST /_reindex".to_string(), 503)));
    written_not_refreshed(&es, &sink, "a", 1).await;
    let err = sink.reindex("a", "b").await.unwrap_err();
    assert!(matches!(&err, EsError::GaveUp(GaveUp { attempts: 3, .. })), "{err}");
    assert!(err.to_string().starts_with("reindex \"a\" into \"b\" failed after 3 attempts: HTTP 503"), "{err}");
}

/// A 429 halves the requests that follow, the retry included; `stats()` and a `batchSize`
/// event show it. Without the controller the same writes go in one request per attempt.
#[tokio::test]
async fn back_pressure_halves_the_requests_and_shows_in_stats_and_events() {
    use crate::event::{BatchResize, SyncEvent};
    let es = FakeEs::start(State::default()).await;
    es.state().failures.push_back(("POST /_bulk".to_string(), 429));
    let ctx = context(5);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let events = seen.clone();
    ctx.events.subscribe(move |e| {
        if let SyncEvent::BatchSize { docs, cause, .. } = e {
            events.lock().unwrap().push((*docs, *cause));
        }
    });
    let stats = ctx.stats.clone();
    let config = EsConfig { node: es.url.clone(), auth: EsAuth::None, request_timeout: Duration::from_secs(10), compression: false, tls: EsTls::default() };
    let mut batch = crate::config::BatchConfig { max_docs: 100, ..Default::default() };
    batch.adaptive.enabled = true;
    let adaptive = EsSink::new(&config, &batch, ctx).expect("a client");
    assert_eq!(stats.snapshot().adaptive_batch.map(|a| a.docs), Some(100), "starts at maxDocs");
    assert!(matches!(adaptive.bulk(&Target::index("a"), writes(100)).await, Ok(Flow::Done(_))));
    assert_eq!(es.state().count("POST /_bulk"), 3, "refused whole, then two halves: {:?} {:?}", es.state().requests, stats.snapshot().adaptive_batch);
    assert_eq!(es.state().indices["a"].len(), 100);
    let now = stats.snapshot().adaptive_batch.expect("turned on");
    // Halved to 50 by the 429, then grown by 1/16 of maxDocs (6) after each of the two fast replies.
    assert_eq!((now.docs, now.shrinks, now.grows), (62, 1, 2));
    assert_eq!(seen.lock().unwrap().first(), Some(&(50, BatchResize::ShrankPressure)));

    let es = FakeEs::start(State::default()).await;
    es.state().failures.push_back(("POST /_bulk".to_string(), 429));
    let mut off = batch.clone();
    off.adaptive.enabled = false;
    let ctx = context(5);
    let stats = ctx.stats.clone();
    let fixed = EsSink::new(&EsConfig { node: es.url.clone(), ..config }, &off, ctx).expect("a client");
    assert!(matches!(fixed.bulk(&Target::index("a"), writes(100)).await, Ok(Flow::Done(_))));
    assert_eq!(es.state().count("POST /_bulk"), 2, "the retry sends the whole batch again");
    assert_eq!(stats.snapshot().adaptive_batch, None);
}
