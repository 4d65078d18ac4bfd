//! The monitor end to end over real HTTP: a board fed with the engine's events (and writes
//! through metered fake outputs), the server on a free port, requests with a real client.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use openmetrics_parser::{OpenMetricsType, PrometheusType};
use tokio::sync::Notify;

use super::*;
use crate::config::{
    BatchConfig, CheckpointConfig, CollectionConfig, DropPolicy, EsAuth, EsConfig, EsTls, HistoryLostPolicy, MongoConfig, Namespace, OutputConfig,
    RenamePolicy, RetryConfig, Secret, SyncMode,
};
use crate::error::{ErrorCode, SyncError};
use crate::event::{BatchOutcome, Phase, SyncState};
use crate::retry::Flow;
use crate::sink::{IndexChange, Target, WriteReport};
use crate::stats::CollectionPhase as EnginePhase;
use crate::transform::{version_of, DocumentWrite, Operation, Rejected, WriteOp};

const TOKEN: &str = "http-token-0123456789";
/// Every secret of the test configuration: none may appear in any output.
const SECRETS: [&str; 5] = ["mongo-pass-123", "es-pass-456", "api-key-789xyz", TOKEN, "nats-t0ken-555"];

fn config(token: Option<&str>) -> Arc<SyncConfig> {
    let ns = |s: &str| Namespace::parse(s).expect("namespace");
    let nats = crate::sink::nats::NatsConfig {
        url: Secret::new("nats://nats-t0ken-555@127.0.0.1:4222"),
        subject: "mongo.{db}.{coll}".into(),
        stream: "S".into(),
        create_stream: true,
        auth: crate::sink::nats::NatsAuth::None,
    };
    Arc::new(SyncConfig {
        name: "shop-sync".into(),
        mongo: MongoConfig { uri: Secret::new("mongodb://app:mongo-pass-123@127.0.0.1:27017/?replicaSet=rs0"), tls: None, ..Default::default() },
        postgres: None,
        elasticsearch: Some(EsConfig {
            node: "http://elastic:es-pass-456@127.0.0.1:9200".into(),
            auth: EsAuth::ApiKey(Secret::new("api-key-789xyz")),
            request_timeout: Duration::from_secs(30),
            compression: false,
            tls: EsTls::default(),
        }),
        outputs: vec![OutputConfig::Elasticsearch, OutputConfig::Nats(nats)],
        collections: vec![CollectionConfig::new("orders".into(), ns("shop.orders")), CollectionConfig::new("users-v1".into(), ns("shop.users"))],
        index_template: "{coll}".into(),
        discovery: None,
        checkpoint: CheckpointConfig::default(),
        batch: BatchConfig::default(),
        retry: RetryConfig::default(),
        on_drop: DropPolicy::default(),
        on_rename: RenamePolicy::default(),
        on_history_lost: HistoryLostPolicy::default(),
        mode: SyncMode::CopyAndStream,
        copy_readers: 4,
        copy_range_min_docs: 100_000,
        dead_letter_index: None,
        http: Some(HttpConfig { host: "127.0.0.1".into(), port: 0, token: token.map(Secret::new), ready_max_lag: Duration::from_secs(5), public_key: None }),
        lease: Default::default(),
        instances: None,
        search: None,
        config_store: None,
        rate_limit: None,
    })
}

/// An output that acknowledges every write; one write can be held until released, and the
/// first write can retry first (counted and announced, as `RetryPolicy` does).
struct FakeOutput {
    events: EventBus,
    stats: Arc<Stats>,
    hold: AtomicBool,
    release: Notify,
    held: Notify,
    retry_once: AtomicBool,
}

impl FakeOutput {
    fn new(h: &Harness) -> Arc<Self> {
        Arc::new(FakeOutput {
            events: h.events.clone(),
            stats: h.stats.clone(),
            hold: AtomicBool::new(false),
            release: Notify::new(),
            held: Notify::new(),
            retry_once: AtomicBool::new(false),
        })
    }
}

#[async_trait]
impl Sink for FakeOutput {
    async fn connect(&self) -> SyncResult<()> {
        Ok(())
    }
    async fn prepare_index(&self, _: &str, _: Option<&CollectionConfig>) -> SyncResult<Flow<()>> {
        Ok(Flow::Done(()))
    }
    async fn prepare_dead_letters(&self, _: &str) -> SyncResult<Flow<()>> {
        Ok(Flow::Done(()))
    }
    async fn write(&self, _: &str, _: &Target, writes: Vec<DocumentWrite>) -> SyncResult<Flow<WriteReport>> {
        if self.retry_once.swap(false, Ordering::SeqCst) {
            let cause = "bulk write to orders: HTTP 429: es-pass-456 too many requests".to_string();
            self.stats.record_retry();
            self.events.emit(SyncEvent::Retry { attempt: 1, delay_ms: 10, cause });
        }
        if self.hold.swap(false, Ordering::SeqCst) {
            self.held.notify_one();
            self.release.notified().await;
        }
        let outcome = BatchOutcome { indexed: writes.len() as u64, ..Default::default() };
        Ok(Flow::Done(WriteReport { outcome, dead_letters: Vec::new() }))
    }
    async fn write_dead_letters(&self, _: &str, _: &str, _: &str, _: &[Rejected]) -> SyncResult<Flow<()>> {
        Ok(Flow::Done(()))
    }
    async fn apply(&self, _: &IndexChange) -> SyncResult<Flow<()>> {
        Ok(Flow::Done(()))
    }
}

struct Harness {
    events: EventBus,
    stats: Arc<Stats>,
    monitor: Arc<Monitor>,
    base: String,
    client: reqwest::Client,
    token: Option<&'static str>,
}

async fn harness(token: Option<&'static str>) -> Harness {
    let (events, stats) = (EventBus::default(), Arc::new(Stats::default()));
    let config = config(token);
    let monitor = Monitor::new(config.clone(), config.http.clone().expect("http"), &events, stats.clone());
    monitor.serve().await.expect("listens");
    let addr = monitor.local_addr().await.expect("address");
    Harness { events, stats, monitor, base: format!("http://{addr}"), client: reqwest::Client::new(), token }
}

struct Reply {
    status: u16,
    content_type: String,
    body: String,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl Harness {
    fn state(&self, state: SyncState, error: Option<SyncError>) {
        self.stats.set_state(state);
        self.events.emit(SyncEvent::State { state, error });
    }

    async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(token) = self.token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let content_type = response.headers().get("content-type").map(|v| v.to_str().expect("ascii").to_string()).unwrap_or_default();
        Reply { status, content_type, body: response.text().await.expect("body") }
    }

    async fn get(&self, path: &str) -> Reply {
        self.get_with(path, &[]).await
    }

    /// Writes a batch of `ns` through metered outputs and reports it, as the engine does.
    async fn write(&self, sink: &Arc<dyn Sink>, ns: &str, writes: Vec<DocumentWrite>, phase: Phase) {
        let n = writes.len() as u64;
        let newest = writes.iter().map(|w| w.version).max();
        let flow = sink.write(ns, &Target::index("orders"), writes).await.expect("written");
        assert!(matches!(flow, Flow::Done(_)));
        let outcome = BatchOutcome { indexed: n, ..Default::default() };
        self.stats.record_batch(ns, phase, n, newest, &outcome);
        self.events.emit(SyncEvent::Batch { namespace: ns.into(), index: "orders".into(), phase, outcome, took_ms: 3 });
    }

    /// The engine moves collection `ns` into `phase`.
    fn phase(&self, ns: &str, phase: EnginePhase) {
        self.stats.collection(ns).set_phase(phase);
    }

    fn metered(&self, outputs: Vec<(&'static str, Arc<dyn Sink>)>) -> Arc<dyn Sink> {
        meter::metered(outputs, self.monitor.board.clone(), self.monitor.metrics.clone())
    }
}

fn doc(id: &str, operation: Operation, cluster_secs: u32) -> DocumentWrite {
    DocumentWrite {
        id: id.into(),
        routing: None,
        version: version_of(mongodb::bson::Timestamp { time: cluster_secs, increment: 1 }),
        op: WriteOp::Index(br#"{"total":"12.50"}"#.to_vec()),
        operation,
        position: None,
    }
}

fn now_secs() -> u32 {
    (board::now_ms() / 1000) as u32
}

fn progress(ns: &str, copied: u64, total: u64, done: bool) -> SyncEvent {
    let eta_seconds = (!done).then_some(2.0);
    SyncEvent::Progress { namespace: ns.into(), index: "orders".into(), copied, total_estimate: total, rate: 50.0, eta_seconds, done }
}

#[tokio::test]
async fn a_standby_instance_is_alive_not_ready_and_shows_its_role() {
    let h = harness(None).await;
    h.state(SyncState::Standby, None);
    h.stats.set_role(Some(crate::stats::RoleSnapshot { role: crate::stats::Role::Standby, term: 3, owned_collections: Vec::new() }));
    assert_eq!(h.get("/healthz").await.status, 200);
    assert_eq!(h.get("/readyz").await.status, 503);
    let stats = h.get("/stats").await.json();
    assert_eq!((stats["state"].as_str(), stats["role"].as_str()), (Some("standby"), Some("standby")));
    h.state(SyncState::Streaming, None);
    h.stats.set_role(Some(crate::stats::RoleSnapshot { role: crate::stats::Role::Leader, term: 4, owned_collections: vec!["shop.orders".into()] }));
    assert_eq!(h.get("/stats").await.json()["role"], "active");
    assert_eq!(h.get("/stats").await.json()["term"], 4);
}

#[tokio::test]
async fn a_partitioned_member_shows_its_term_and_the_collections_it_owns() {
    let h = harness(None).await;
    h.state(SyncState::Streaming, None);
    let owned = vec!["shop.orders".to_string(), "shop.users".to_string()];
    h.stats.set_role(Some(crate::stats::RoleSnapshot { role: crate::stats::Role::Member, term: 7, owned_collections: owned }));
    let stats = h.get("/stats").await.json();
    assert_eq!((stats["role"].as_str(), stats["term"].as_u64()), (Some("active"), Some(7)));
    assert_eq!(stats["ownedCollections"], serde_json::json!(["shop.orders", "shop.users"]));
    h.stats.set_role(None);
    let alone = h.get("/stats").await.json();
    assert!(alone["term"].is_null() && alone["ownedCollections"].is_null(), "{alone}");
}

#[tokio::test]
async fn endpoints_answer_for_each_state() {
    let h = harness(None).await;
    starting_is_alive_not_ready(&h).await;
    copying_with_progress_is_ready(&h).await;
    let sink = streaming_is_ready_while_the_lag_is_small(&h).await;
    behind_the_stream_is_not_ready(&h, &sink).await;
    failed_is_unhealthy_with_code_and_message(&h).await;
    h.monitor.shutdown().await;
}

/// Idle, then starting: alive, not ready.
async fn starting_is_alive_not_ready(h: &Harness) {
    h.state(SyncState::Starting, None);
    let health = h.get("/healthz").await;
    assert_eq!((health.status, health.json()["state"].as_str()), (200, Some("starting")));
    assert_eq!(health.content_type, "application/json");
    let ready = h.get("/readyz").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["reasons"][0], "the sync is starting");
    let stats = h.get("/stats").await.json();
    assert_eq!(stats["state"], "starting");
    assert_eq!(stats["role"], "active");
    assert_eq!(stats["name"], "shop-sync");
    assert_eq!(stats["collections"]["shop.orders"]["phase"], "starting");
    assert_eq!(stats["collections"]["shop.users"]["index"], "users-v1");
}

/// Copying with progress: ready.
async fn copying_with_progress_is_ready(h: &Harness) {
    h.state(SyncState::Copying, None);
    h.phase("shop.orders", EnginePhase::Copying);
    h.stats.collection("shop.orders").copy_started(0, 100);
    h.stats.record_batch("shop.orders", Phase::Copy, 40, None, &BatchOutcome { indexed: 40, ..Default::default() });
    h.events.emit(progress("shop.orders", 40, 100, false));
    assert_eq!(h.get("/readyz").await.status, 200);
    let stats = h.get("/stats").await.json();
    let orders = &stats["collections"]["shop.orders"];
    assert_eq!((orders["phase"].as_str(), orders["copied"].as_u64(), orders["totalEstimate"].as_u64()), (Some("copying"), Some(40), Some(100)));
    assert_eq!((orders["rate"].as_f64(), orders["etaSeconds"].as_f64()), (Some(50.0), Some(2.0)));
}

/// Streaming: every collection follows its stream; ready while the lag is small.
async fn streaming_is_ready_while_the_lag_is_small(h: &Harness) -> Arc<dyn Sink> {
    h.events.emit(progress("shop.orders", 100, 100, true));
    h.phase("shop.orders", EnginePhase::Streaming);
    h.phase("shop.users", EnginePhase::Streaming);
    h.state(SyncState::Streaming, None);
    let sink = h.metered(vec![("elasticsearch", FakeOutput::new(h))]);
    h.write(&sink, "shop.orders", vec![doc("a", Operation::Insert, now_secs())], Phase::Stream).await;
    let stats = h.get("/stats").await.json();
    assert_eq!(stats["collections"]["shop.orders"]["phase"], "streaming");
    assert_eq!(stats["collections"]["shop.users"]["phase"], "streaming");
    assert!(stats["collections"]["shop.orders"]["lagMs"].as_u64().expect("a lag") < 5_000);
    assert_eq!(h.get("/readyz").await.json(), serde_json::json!({ "ready": true, "state": "streaming" }));
    assert_eq!(h.get("/healthz").await.status, 200);
    sink
}

/// A change applied 60 s after it was made: behind readyMaxLagMs (5 s).
async fn behind_the_stream_is_not_ready(h: &Harness, sink: &Arc<dyn Sink>) {
    h.write(sink, "shop.orders", vec![doc("b", Operation::Update, now_secs() - 60)], Phase::Stream).await;
    let ready = h.get("/readyz").await;
    assert_eq!(ready.status, 503);
    let reason = ready.json()["reasons"][0].as_str().expect("a reason").to_string();
    assert!(reason.starts_with("shop.orders: 6") && reason.contains("behind its change stream"), "{reason}");
}

/// Failed: unhealthy, with the code and the message.
async fn failed_is_unhealthy_with_code_and_message(h: &Harness) {
    h.phase("shop.orders", EnginePhase::Failed);
    h.state(SyncState::Failed, Some(SyncError::new(ErrorCode::HistoryLost, "shop.orders: the resume token is no longer in the oplog")));
    let health = h.get("/healthz").await;
    assert_eq!(health.status, 503);
    assert_eq!(
        health.json(),
        serde_json::json!({ "status": "failed", "state": "failed", "error": { "code": "ERR_HISTORY_LOST", "message": "shop.orders: the resume token is no longer in the oplog" } })
    );
    assert_eq!(h.get("/readyz").await.json()["reasons"][0], "the sync is failed");
    let stats = h.get("/stats").await.json();
    assert_eq!(stats["error"]["code"], "ERR_HISTORY_LOST");
    assert_eq!(stats["collections"]["shop.orders"]["phase"], "failed");
}

#[tokio::test]
async fn a_copy_without_progress_is_not_ready() {
    let h = harness(None).await;
    h.state(SyncState::Copying, None);
    h.phase("shop.orders", EnginePhase::Copying);
    let mut s = h.monitor.snapshot();
    assert!(health::readiness(&s, Duration::from_secs(5)).is_ok());
    // As seen 6 s later, with no batch since.
    s.now += 6_000;
    let reasons = health::readiness(&s, Duration::from_secs(5)).unwrap_err();
    assert_eq!(reasons, vec!["shop.orders: no copy progress for 6 s (readyMaxLagMs: 5000)".to_string()]);
    h.monitor.shutdown().await;
}

#[tokio::test]
async fn lag_grows_while_a_batch_waits_in_the_outputs() {
    let h = harness(None).await;
    h.state(SyncState::Streaming, None);
    let output = FakeOutput::new(&h);
    let sink = h.metered(vec![("elasticsearch", output.clone())]);
    // A copied document carries no change time: no lag from it.
    h.write(&sink, "shop.orders", vec![doc("c", Operation::Copy, 1)], Phase::Copy).await;
    assert_eq!(h.monitor.snapshot().collections["shop.orders"].lag_ms, None);

    output.hold.store(true, Ordering::SeqCst);
    let made = now_secs() - 30;
    let writing = {
        let sink = sink.clone();
        tokio::spawn(async move { sink.write("shop.orders", &Target::index("orders"), vec![doc("d", Operation::Insert, made)]).await })
    };
    output.held.notified().await;
    let waiting = h.monitor.snapshot().collections["shop.orders"].clone();
    assert_eq!(waiting.in_flight_batches, 1);
    assert!(waiting.in_flight_bytes > 0);
    assert!(waiting.lag_ms.expect("lag while waiting") >= 30_000);
    output.release.notify_one();
    assert!(matches!(writing.await.expect("task").expect("write"), Flow::Done(_)));
    let after = h.monitor.snapshot().collections["shop.orders"].clone();
    assert_eq!((after.in_flight_batches, after.in_flight_bytes), (0, 0));
    let lag = after.lag_ms.expect("lag at acknowledgement");
    assert!((30_000..32_000).contains(&lag), "{lag}");
    assert_eq!(after.last_change_at, Some(u64::from(made) * 1000));
    h.monitor.shutdown().await;
}

#[tokio::test]
async fn retries_inside_a_write_count_to_its_collection_and_cause() {
    let h = harness(None).await;
    let output = FakeOutput::new(&h);
    output.retry_once.store(true, Ordering::SeqCst);
    let sink = h.metered(vec![("elasticsearch", output)]);
    // In the collection's task, as the engine runs it.
    let task = async {
        h.write(&sink, "shop.users", vec![doc("u", Operation::Copy, 1)], Phase::Copy).await;
        Ok::<_, SyncError>(())
    };
    h.stats.collection("shop.users").track(task).await.expect("task");
    // A retry outside any write (a MongoDB reconnection) counts only by cause.
    h.events.emit(SyncEvent::Retry { attempt: 1, delay_ms: 5, cause: "ERR_MONGO_UNREACHABLE: ping failed".into() });
    let s = h.monitor.snapshot();
    assert_eq!((s.collections["shop.users"].retries, s.collections["shop.orders"].retries), (1, 0));
    let warnings: Vec<_> = s.recent.warnings.iter().map(|w| (w.kind, w.namespace.as_str())).collect();
    assert_eq!(warnings, vec![(snapshot::WarningKind::Retry, "shop.users"), (snapshot::WarningKind::Retry, "")]);
    let metrics = h.get("/metrics").await.body;
    assert!(metrics.contains("mongo_elastic_sync_retries_total{cause=\"rate_limited\"} 1"), "{metrics}");
    assert!(metrics.contains("mongo_elastic_sync_retries_total{cause=\"mongo\"} 1"), "{metrics}");
    h.monitor.shutdown().await;
}

/// Feeds a bit of everything: copy, stream through two outputs, a dead letter, a checkpoint.
async fn busy(h: &Harness) {
    h.state(SyncState::Copying, None);
    h.phase("shop.orders", EnginePhase::Copying);
    let sink = h.metered(vec![("elasticsearch", FakeOutput::new(h)), ("nats", FakeOutput::new(h))]);
    h.write(&sink, "shop.orders", (0..3).map(|i| doc(&i.to_string(), Operation::Copy, 1)).collect(), Phase::Copy).await;
    h.events.emit(progress("shop.orders", 3, 3, true));
    h.monitor.checkpoint_saved("shop.orders");
    h.phase("shop.orders", EnginePhase::Streaming);
    h.state(SyncState::Streaming, None);
    h.write(&sink, "shop.orders", vec![doc("9", Operation::Insert, now_secs())], Phase::Stream).await;
    h.events.emit(SyncEvent::DeadLetter {
        namespace: "shop.orders".into(),
        index: "orders".into(),
        id: "65f0c0ffee00000000000001".into(),
        reason: "mapper_parsing_exception: failed to parse field [total]".into(),
    });
}

fn family_types_prometheus(text: &str) -> HashMap<String, PrometheusType> {
    let parsed = openmetrics_parser::prometheus::parse_prometheus(text).unwrap_or_else(|e| panic!("not Prometheus text ({e:?}):\n{text}"));
    parsed.families.into_iter().map(|(name, f)| (name, f.family_type)).collect()
}

fn family_types_openmetrics(text: &str) -> HashMap<String, OpenMetricsType> {
    let parsed = openmetrics_parser::openmetrics::parse_openmetrics(text).unwrap_or_else(|e| panic!("not OpenMetrics ({e:?}):\n{text}"));
    parsed.families.into_iter().map(|(name, f)| (name, f.family_type)).collect()
}

/// Every metric family, with its Prometheus type.
const PROMETHEUS_FAMILIES: [(&str, PrometheusType); 19] = [
    ("mongo_elastic_sync_state", PrometheusType::Gauge),
    ("mongo_elastic_sync_active", PrometheusType::Gauge),
    ("mongo_elastic_sync_documents_copied_total", PrometheusType::Counter),
    ("mongo_elastic_sync_changes_streamed_total", PrometheusType::Counter),
    ("mongo_elastic_sync_documents_indexed_total", PrometheusType::Counter),
    ("mongo_elastic_sync_documents_deleted_total", PrometheusType::Counter),
    ("mongo_elastic_sync_version_conflicts_total", PrometheusType::Counter),
    ("mongo_elastic_sync_dead_letters_total", PrometheusType::Counter),
    ("mongo_elastic_sync_checkpoint_saves_total", PrometheusType::Counter),
    ("mongo_elastic_sync_retries_total", PrometheusType::Counter),
    ("mongo_elastic_sync_change_stream_lag_seconds", PrometheusType::Gauge),
    ("mongo_elastic_sync_checkpoint_age_seconds", PrometheusType::Gauge),
    ("mongo_elastic_sync_in_flight_batches", PrometheusType::Gauge),
    ("mongo_elastic_sync_in_flight_bytes", PrometheusType::Gauge),
    ("mongo_elastic_sync_bulk_request_duration_seconds", PrometheusType::Histogram),
    ("mongo_elastic_sync_bulk_request_documents", PrometheusType::Histogram),
    ("mongo_elastic_sync_bulk_request_bytes", PrometheusType::Histogram),
    ("process_resident_memory_bytes", PrometheusType::Gauge),
    ("process_cpu_seconds_total", PrometheusType::Counter),
];

/// Values and labels: collection and output only (and the bounded state and cause).
fn prometheus_values_and_labels(body: &str) {
    for line in [
        "mongo_elastic_sync_state{state=\"streaming\"} 1",
        "mongo_elastic_sync_state{state=\"copying\"} 0",
        "mongo_elastic_sync_documents_copied_total{collection=\"shop.orders\"} 3",
        "mongo_elastic_sync_changes_streamed_total{collection=\"shop.orders\"} 1",
        "mongo_elastic_sync_dead_letters_total{collection=\"shop.orders\"} 0",
        "mongo_elastic_sync_checkpoint_saves_total{collection=\"shop.orders\"} 1",
        "mongo_elastic_sync_bulk_request_documents_count{collection=\"shop.orders\",output=\"nats\"} 2",
        "mongo_elastic_sync_bulk_request_documents_sum{collection=\"shop.orders\",output=\"elasticsearch\"} 4",
    ] {
        assert!(body.contains(line), "{line} not in:\n{body}");
    }
    assert!(!body.contains("65f0c0ffee"), "no document id in metrics");
    let labels: std::collections::BTreeSet<&str> = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('{').map(|(_, rest)| rest))
        .flat_map(|rest| rest.split(',').filter_map(|kv| kv.split_once('=').map(|(k, _)| k.trim_start_matches('}'))))
        .collect();
    assert_eq!(labels.into_iter().collect::<Vec<_>>(), vec!["cause", "collection", "le", "output", "state"]);
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_openmetrics() {
    let h = harness(None).await;
    busy(&h).await;
    let reply = h.get("/metrics").await;
    assert_eq!((reply.status, reply.content_type.as_str()), (200, "text/plain; version=0.0.4; charset=utf-8"));
    let types = family_types_prometheus(&reply.body);
    for (name, ty) in &PROMETHEUS_FAMILIES {
        assert_eq!(types.get(*name), Some(ty), "{name} in:\n{}", reply.body);
    }
    prometheus_values_and_labels(&reply.body);

    let reply = h.get_with("/metrics", &[("accept", "application/openmetrics-text; version=1.0.0")]).await;
    assert_eq!(reply.content_type, "application/openmetrics-text; version=1.0.0; charset=utf-8");
    assert!(reply.body.ends_with("# EOF\n"));
    let types = family_types_openmetrics(&reply.body);
    for (name, ty) in [
        ("mongo_elastic_sync_documents_copied", OpenMetricsType::Counter),
        ("mongo_elastic_sync_change_stream_lag_seconds", OpenMetricsType::Gauge),
        ("mongo_elastic_sync_bulk_request_duration_seconds", OpenMetricsType::Histogram),
        ("process_cpu_seconds", OpenMetricsType::Counter),
    ] {
        assert_eq!(types.get(name), Some(&ty), "{name} in:\n{}", reply.body);
    }
    h.monitor.shutdown().await;
}

#[tokio::test]
async fn no_secret_in_any_output() {
    let h = harness(Some(TOKEN)).await;
    busy(&h).await;
    let all = SECRETS.join(" and ");
    h.events.emit(SyncEvent::Warning { namespace: "shop.orders".into(), message: format!("something mentioned {all}") });
    h.events.emit(SyncEvent::Retry { attempt: 2, delay_ms: 400, cause: "GET http://elastic:es-pass-456@127.0.0.1:9200/ refused".into() });
    h.events.emit(SyncEvent::DeadLetter { namespace: "shop.orders".into(), index: "orders".into(), id: "x".into(), reason: format!("rejected: {all}") });
    let error = SyncError::new(ErrorCode::EsUnreachable, format!("cannot reach mongodb://app:mongo-pass-123@127.0.0.1:27017 or {all}"));
    h.state(SyncState::Failed, Some(error));
    let mut outputs = Vec::new();
    for path in ["/healthz", "/readyz", "/stats", "/metrics", "/", "/status.js", "/status.css", "/nope"] {
        outputs.push((path.to_string(), h.get(path).await.body));
    }
    outputs.push(("/events".into(), first_event(&h).await));
    for (path, body) in &outputs {
        for secret in SECRETS {
            assert!(!body.contains(secret), "{secret} in {path}:\n{body}");
        }
    }
    // The redacted texts are still there, with *** where the secrets were.
    let stats = h.get("/stats").await.json();
    assert_eq!(stats["error"]["message"], "cannot reach mongodb://app:***@127.0.0.1:27017 or *** and *** and *** and *** and ***");
    let retry = &stats["recent"]["warnings"][1]["message"];
    assert_eq!(retry, "attempt 2 failed, next in 400 ms: GET http://elastic:***@127.0.0.1:9200/ refused");
    h.monitor.shutdown().await;
}

/// The first server-sent event of `/events`, read by hand as a browser would.
async fn first_event(h: &Harness) -> String {
    let mut response = h.client.get(format!("{}/events", h.base)).bearer_auth(TOKEN).send().await.expect("events");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), response.chunk()).await.expect("an event within 5 s").expect("read").expect("not ended");
        text.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
    }
    text
}

/// A monitor of `config(token)` with a `configStore` (unreachable: no request may get as far as it).
async fn store_harness(token: Option<&'static str>) -> (Arc<Monitor>, String) {
    let mut config = (*config(token)).clone();
    config.config_store = Some(crate::config::StoreConfig::new(Secret::new("mongodb://store:store-pass-1@127.0.0.1:9/?serverSelectionTimeoutMS=500")));
    let config = Arc::new(config);
    let monitor = Monitor::new(config.clone(), config.http.clone().expect("http"), &EventBus::default(), Arc::new(Stats::default()));
    monitor.serve().await.expect("listens");
    let addr = monitor.local_addr().await.expect("address");
    (monitor, format!("http://{addr}"))
}

#[tokio::test]
async fn starting_and_stopping_stored_syncs_needs_a_configured_token() {
    let client = reqwest::Client::new();
    let (open, base) = store_harness(None).await;
    let reply = client.post(format!("{base}/definitions/orders/stop")).send().await.expect("request");
    assert_eq!(reply.status(), 403, "a server without a token starts or stops nothing");
    assert!(reply.text().await.expect("body").contains("http.token"));
    open.shutdown().await;
    let (guarded, base) = store_harness(Some(TOKEN)).await;
    for path in ["/definitions/orders/stop", "/definitions/orders/start"] {
        assert_eq!(client.post(format!("{base}{path}")).send().await.expect("request").status(), 401, "{path} without the token");
        assert_eq!(client.post(format!("{base}{path}")).bearer_auth("http-token-012345678X").send().await.expect("request").status(), 401, "{path}");
    }
    assert_eq!(client.get(format!("{base}/definitions")).send().await.expect("request").status(), 401);
    let reply = client.get(format!("{base}/definitions")).bearer_auth(TOKEN).send().await.expect("request");
    assert_eq!(reply.status(), 503, "past the token, the unreachable store is reported");
    assert!(!reply.text().await.expect("body").contains("store-pass-1"), "the store's password never shows");
    guarded.shutdown().await;
}

#[tokio::test]
async fn the_token_guards_everything_but_the_page() {
    let h = harness(Some(TOKEN)).await;
    let anonymous = |path: &str| h.client.get(format!("{}{path}", h.base)).send();
    for path in ["/healthz", "/readyz", "/stats", "/metrics", "/events"] {
        let reply = anonymous(path).await.expect("request");
        assert_eq!(reply.status(), 401, "{path}");
        assert_eq!(reply.headers()["www-authenticate"], "Bearer");
        for wrong in ["http-token-012345678X", "short", "http-token-0123456789-and-more"] {
            let reply = h.client.get(format!("{}{path}", h.base)).bearer_auth(wrong).send().await.expect("request");
            assert_eq!(reply.status(), 401, "{path} with {wrong}");
        }
    }
    for (path, kind) in [("/", "text/html"), ("/status.js", "text/javascript"), ("/status.css", "text/css")] {
        let reply = anonymous(path).await.expect("request");
        assert_eq!(reply.status(), 200, "{path}");
        assert!(reply.headers()["content-type"].to_str().expect("ascii").starts_with(kind));
        assert!(reply.headers()["content-security-policy"].to_str().expect("ascii").contains("default-src 'none'"));
    }
    assert_eq!(h.get("/stats").await.status, 200);
    let lowercase = h.client.get(format!("{}/stats", h.base)).header("authorization", format!("bearer {TOKEN}")).send().await.expect("request");
    assert_eq!(lowercase.status(), 200, "the scheme is case-insensitive");
    h.monitor.shutdown().await;
}

#[tokio::test]
async fn requests_and_streams_are_bounded() {
    let h = harness(None).await;
    let big = h.client.get(format!("{}/stats", h.base)).body(vec![b'x'; 4096]).send().await.expect("request");
    assert_eq!(big.status(), 413);
    let post = h.client.post(format!("{}/stats", h.base)).send().await.expect("request");
    assert_eq!(post.status(), 405);
    assert_eq!(h.get("/nowhere").await.status, 404);
    let mut streams = Vec::new();
    for _ in 0..server::MAX_SUBSCRIBERS {
        let response = h.client.get(format!("{}/events", h.base)).send().await.expect("events");
        assert_eq!(response.status(), 200);
        streams.push(response);
    }
    let refused = h.get("/events").await;
    assert_eq!(refused.status, 503);
    assert!(refused.json()["error"].as_str().expect("error").contains("poll /stats"));
    // A subscriber leaving frees its place.
    drop(streams.pop());
    let reopened = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let response = h.client.get(format!("{}/events", h.base)).send().await.expect("events");
            if response.status() == 200 {
                return response;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a place frees up");
    streams.push(reopened);
    // Shutting down ends the open streams rather than waiting for them.
    tokio::time::timeout(Duration::from_secs(5), h.monitor.shutdown()).await.expect("shutdown ends the streams");
    for mut stream in streams {
        let ended = tokio::time::timeout(Duration::from_secs(5), async { while let Ok(Some(_)) = stream.chunk().await {} }).await;
        assert!(ended.is_ok(), "a stream ended at shutdown");
    }
    assert!(h.monitor.local_addr().await.is_none());
}

#[tokio::test]
async fn the_recent_lists_and_the_copy_follow_the_events() {
    let h = harness(None).await;
    busy(&h).await;
    for i in 0..(2 * 50) {
        // Four bytes a character: the byte bound keeps fewer than the count bound would.
        h.events.emit(SyncEvent::Warning { namespace: "shop.users".into(), message: format!("warning {i} {}", "𝄞".repeat(2000)) });
    }
    let s = h.monitor.snapshot();
    assert_eq!(s.recent.dead_letters.len(), 1);
    assert_eq!(s.recent.dead_letters[0].id, "65f0c0ffee00000000000001");
    assert_eq!(s.recent.warnings_seen, 100);
    let kept = &s.recent.warnings;
    assert!((10..50).contains(&kept.len()), "bounded by bytes: {}", kept.len());
    assert!(kept.iter().all(|w| w.message.chars().count() <= recent::MAX_TEXT + 1), "texts are cut");
    assert!(kept.last().expect("newest kept").message.starts_with("warning 99 "));
    let orders = &s.collections["shop.orders"];
    assert_eq!((orders.phase, orders.copied, orders.streamed, orders.indexed, orders.checkpoints), (CollectionPhase::Streaming, 3, 1, 4, 1));
    assert!(orders.checkpoint_age_ms.is_some() && orders.last_checkpoint_at.is_some());
    assert_eq!(s.totals.copied, 3);
    h.monitor.shutdown().await;
}
