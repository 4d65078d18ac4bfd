//! `/metrics`: the Prometheus exposition, through `prometheus-client` (text format 0.0.4, or
//! OpenMetrics when the scraper asks for it). Labels are `collection` and `output` (plus the
//! bounded `cause` of retries and `state` of the state gauge); never a document id.
//!
//! Figures the snapshot has (documents, lag, in-flight, checkpoints, state, process) are read
//! from it at each scrape by [`SnapshotCollector`]; what happens between scrapes (retries, the
//! duration and size of each batch written) is counted as it happens.

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use regex::Regex;

use super::snapshot::{CollectionStatus, Role, StatusSnapshot, StatusSource};
use crate::event::{SyncEvent, SyncState};

pub const PROMETHEUS_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const STATES: [SyncState; 8] = [
    SyncState::Idle,
    SyncState::Starting,
    SyncState::Standby,
    SyncState::Copying,
    SyncState::Streaming,
    SyncState::Stopping,
    SyncState::Stopped,
    SyncState::Failed,
];

/// Why a retry happened: a bounded set, read from the retry's cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryCause {
    /// HTTP 429, Elasticsearch's rejected executions.
    RateLimited,
    /// HTTP 5xx.
    ServerError,
    /// A write block or a closed index.
    Blocked,
    Timeout,
    /// A refused, reset or lost connection.
    Connection,
    /// MongoDB unreachable (the change stream or the copy resumes after it).
    Mongo,
    /// PostgreSQL unreachable (the copy or the replication session resumes after it).
    Postgres,
    Other,
}

impl RetryCause {
    pub const ALL: [RetryCause; 8] = [
        RetryCause::RateLimited,
        RetryCause::ServerError,
        RetryCause::Blocked,
        RetryCause::Timeout,
        RetryCause::Connection,
        RetryCause::Mongo,
        RetryCause::Postgres,
        RetryCause::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RetryCause::RateLimited => "rate_limited",
            RetryCause::ServerError => "server_error",
            RetryCause::Blocked => "blocked",
            RetryCause::Timeout => "timeout",
            RetryCause::Connection => "connection",
            RetryCause::Mongo => "mongo",
            RetryCause::Postgres => "postgres",
            RetryCause::Other => "other",
        }
    }

    /// The cause of a `retry` event's text. Statuses are read where the engine writes them
    /// (`HTTP 503`, `status 503`, `… items: 503 …`), so numbers elsewhere do not count.
    pub fn of(cause: &str) -> RetryCause {
        static STATUS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)(?:http |status |items: )(\d{3})\b").expect("valid pattern"));
        let text = cause.to_ascii_lowercase();
        let status = STATUS.captures(&text).and_then(|c| c[1].parse::<u16>().ok());
        let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
        if text.starts_with("err_mongo") {
            RetryCause::Mongo
        } else if text.starts_with("err_postgres") {
            RetryCause::Postgres
        } else if status == Some(429) || has(&["too_many_requests", "es_rejected_execution"]) {
            RetryCause::RateLimited
        } else if has(&["cluster_block_exception", "index_closed_exception"]) {
            RetryCause::Blocked
        } else if status == Some(408) || has(&["timed out", "timeout", "deadline"]) {
            RetryCause::Timeout
        } else if status.is_some_and(|s| s >= 500) {
            RetryCause::ServerError
        } else if has(&["connect", "reset", "refused", "broken pipe", "unreachable", "eof", "dns", "closed"]) {
            RetryCause::Connection
        } else {
            RetryCause::Other
        }
    }
}

impl EncodeLabelValue for RetryCause {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CauseLabels {
    cause: RetryCause,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutputLabels {
    collection: String,
    output: &'static str,
}

type Histograms = Family<OutputLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
}

fn documents_histogram() -> Histogram {
    Histogram::new([1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0])
}

fn bytes_histogram() -> Histogram {
    // 1 KiB to 64 MiB, by 4.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(1024.0, 4.0, 9))
}

pub struct Metrics {
    registry: Registry,
    retries: Family<CauseLabels, Counter>,
    duration: Histograms,
    documents: Histograms,
    bytes: Histograms,
}

impl Metrics {
    pub fn new(source: Arc<dyn StatusSource>) -> Self {
        let mut registry = Registry::default();
        let retries = Family::<CauseLabels, Counter>::default();
        let duration = Histograms::new_with_constructor(duration_histogram as fn() -> Histogram);
        let documents = Histograms::new_with_constructor(documents_histogram as fn() -> Histogram);
        let bytes = Histograms::new_with_constructor(bytes_histogram as fn() -> Histogram);
        registry.register("mongo_elastic_sync_retries", "Transient failures retried, by cause", retries.clone());
        registry.register(
            "mongo_elastic_sync_bulk_request_duration_seconds",
            "Time to write one batch to an output (for elasticsearch, one _bulk request), retries included",
            duration.clone(),
        );
        registry.register("mongo_elastic_sync_bulk_request_documents", "Documents in one batch written to an output", documents.clone());
        registry.register("mongo_elastic_sync_bulk_request_bytes", "Size of one batch written to an output, as a _bulk request body", bytes.clone());
        registry.register_collector(Box::new(SnapshotCollector { source }));
        // Every cause is shown from the start, so that rate() sees the first retry.
        for cause in RetryCause::ALL {
            drop(retries.get_or_create(&CauseLabels { cause }));
        }
        Metrics { registry, retries, duration, documents, bytes }
    }

    /// Counts what happens between scrapes: retries, by cause.
    pub fn observe(&self, event: &SyncEvent) {
        if let SyncEvent::Retry { cause, .. } = event {
            self.retries.get_or_create(&CauseLabels { cause: RetryCause::of(cause) }).inc();
        }
    }

    /// One batch of `collection` acknowledged by `output`.
    pub fn batch_written(&self, collection: &str, output: &'static str, took: Duration, documents: u64, bytes: u64) {
        let labels = OutputLabels { collection: collection.to_string(), output };
        self.duration.get_or_create(&labels).observe(took.as_secs_f64());
        self.documents.get_or_create(&labels).observe(documents as f64);
        self.bytes.get_or_create(&labels).observe(bytes as f64);
    }

    /// The exposition: OpenMetrics, or the Prometheus text format.
    pub fn render(&self, openmetrics: bool) -> String {
        let mut out = String::new();
        let encoded = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        };
        // Writing into a String cannot fail; a metric that could not be encoded is a bug.
        encoded.expect("metrics encode into a string");
        out
    }
}

/// Reads the snapshot at each scrape.
struct SnapshotCollector {
    source: Arc<dyn StatusSource>,
}

impl fmt::Debug for SnapshotCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SnapshotCollector")
    }
}

/// One metric family with a value per collection (collections without a value are left out).
fn per_collection<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    s: &StatusSnapshot,
    (name, help): (&str, &str),
    value: impl Fn(&CollectionStatus) -> Option<M>,
) -> fmt::Result {
    let rows: Vec<(&str, M)> = s.collections.iter().filter_map(|(ns, c)| value(c).map(|v| (ns.as_str(), v))).collect();
    let Some(first) = rows.first() else { return Ok(()) };
    let mut family = encoder.encode_descriptor(name, help, None, first.1.metric_type())?;
    for (ns, v) in &rows {
        v.encode(family.encode_family(&[("collection", *ns)])?)?;
    }
    Ok(())
}

fn single<M: EncodeMetric>(encoder: &mut DescriptorEncoder, (name, help): (&str, &str), value: M) -> fmt::Result {
    value.encode(encoder.encode_descriptor(name, help, None, value.metric_type())?)
}

fn counter(v: u64) -> Option<ConstCounter> {
    Some(ConstCounter::new(v))
}

fn seconds(ms: Option<u64>) -> Option<ConstGauge<f64>> {
    ms.map(|ms| ConstGauge::new(ms as f64 / 1000.0))
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let s = self.source.snapshot();
        let e = &mut encoder;
        let mut states = e.encode_descriptor("mongo_elastic_sync_state", "1 for the state the sync is in, 0 for the others", None, MetricType::Gauge)?;
        for state in STATES {
            ConstGauge::new(i64::from(s.state == state)).encode(states.encode_family(&[("state", state.as_str())])?)?;
        }
        single(e, ("mongo_elastic_sync_active", "1 when this instance is the active one (0: standby)"), ConstGauge::new(i64::from(s.role == Role::Active)))?;
        per_collection(e, &s, ("mongo_elastic_sync_documents_copied", "Documents copied by the initial copy"), |c| counter(c.copied))?;
        per_collection(e, &s, ("mongo_elastic_sync_changes_streamed", "Change events applied from the change stream"), |c| counter(c.streamed))?;
        per_collection(e, &s, ("mongo_elastic_sync_documents_indexed", "Index writes acknowledged"), |c| counter(c.indexed))?;
        per_collection(e, &s, ("mongo_elastic_sync_documents_deleted", "Deletes acknowledged"), |c| counter(c.deleted))?;
        per_collection(
            e,
            &s,
            ("mongo_elastic_sync_version_conflicts", "Stale writes refused because the index holds a newer version (expected after replays)"),
            |c| counter(c.conflicts),
        )?;
        per_collection(e, &s, ("mongo_elastic_sync_dead_letters", "Documents set aside as dead letters"), |c| counter(c.dead_letters))?;
        per_collection(e, &s, ("mongo_elastic_sync_checkpoint_saves", "Checkpoints saved"), |c| counter(c.checkpoints))?;
        per_collection(e, &s, ("mongo_elastic_sync_change_stream_lag_seconds", "How far the index is behind MongoDB's change stream"), |c| seconds(c.lag_ms))?;
        per_collection(e, &s, ("mongo_elastic_sync_checkpoint_age_seconds", "Time since the last checkpoint was saved"), |c| seconds(c.checkpoint_age_ms))?;
        per_collection(e, &s, ("mongo_elastic_sync_in_flight_batches", "Batches handed to the outputs and not yet acknowledged"), |c| {
            Some(ConstGauge::new(c.in_flight_batches as i64))
        })?;
        per_collection(e, &s, ("mongo_elastic_sync_in_flight_bytes", "Bytes of the batches in flight"), |c| Some(ConstGauge::new(c.in_flight_bytes as i64)))?;
        if let Some(rss) = s.process.rss_bytes {
            single(e, ("process_resident_memory_bytes", "Resident memory size in bytes"), ConstGauge::new(rss as i64))?;
        }
        if let Some(cpu) = s.process.cpu_seconds {
            single(e, ("process_cpu_seconds", "User and system CPU time spent in seconds"), ConstCounter::new(cpu))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::RetryCause;

    #[test]
    fn retry_causes_come_from_where_the_engine_writes_statuses() {
        let cases = [
            ("bulk write to orders: HTTP 429: {\"error\":\"too many\"}", RetryCause::RateLimited),
            ("bulk write to orders: 3 of 500 items: 429 es_rejected_execution_exception: queue full", RetryCause::RateLimited),
            ("bulk write to orders: 500 of 1000 items: 403 cluster_block_exception: index [x] blocked", RetryCause::Blocked),
            ("bulk write: HTTP 503: unavailable", RetryCause::ServerError),
            ("bulk write: 2 of 2 items: 503 unavailable_shards_exception: x", RetryCause::ServerError),
            ("bulk write: error sending request: operation timed out", RetryCause::Timeout),
            ("bulk write: error sending request for url (http://127.0.0.1:9200/_bulk): connection refused", RetryCause::Connection),
            ("ERR_MONGO_UNREACHABLE: change stream of shop.orders: connection pool cleared", RetryCause::Mongo),
            ("ERR_POSTGRES_UNREACHABLE: the replication session of public.orders ended", RetryCause::Postgres),
            ("file output: No space left on device (os error 28)", RetryCause::Other),
            ("bulk write to idx-500: 12 of 500 items: 409 strange", RetryCause::Other),
        ];
        for (text, want) in cases {
            assert_eq!(RetryCause::of(text), want, "{text}");
        }
    }
}
