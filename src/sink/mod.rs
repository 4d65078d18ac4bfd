//! Where synced data goes. [`Sink`] is the one interface the pipeline writes through; each
//! output is a folder of the same shape (config, encoder, service) behind it:
//! - `elasticsearch`: applies the writes (versioned `_bulk`) and the index operations;
//! - `record` turns writes into change records (NDJSON), which `file`, `stdout`, `tcp` and
//!   `nats` carry; they record index operations instead of performing them;
//! - `fan_out` sends everything to several sinks and acknowledges when all did.

pub mod elasticsearch;
mod fan_out;
pub mod file;
pub mod nats;
pub mod record;
pub mod stdout;
pub mod tcp;

use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::config::{CollectionConfig, OutputConfig, RetryConfig, SyncConfig};
use crate::error::{ErrorCode, SyncError, SyncResult};
use crate::event::{BatchOutcome, EventBus};
use crate::retry::{may_retry, wait_before_retry};
use crate::stats::Stats;
use crate::transform::{DocumentWrite, Rejected};

pub use fan_out::FanOut;

/// Where a batch goes: the index and, optionally, the ingest pipeline of every write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub index: String,
    pub pipeline: Option<String>,
}

impl Target {
    pub fn index(index: impl Into<String>) -> Self {
        Target { index: index.into(), pipeline: None }
    }
}

/// What one acknowledged batch came to, and the documents set aside.
#[derive(Debug, Default)]
pub struct WriteReport {
    pub outcome: BatchOutcome,
    pub dead_letters: Vec<Rejected>,
}

/// An operation on a whole index, following a collection-level change (drop, rename, re-copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexAction {
    DeleteDocuments {
        index: String,
    },
    DeleteIndex {
        index: String,
    },
    /// Moves every document (versions kept) of `from` into `to`.
    Reindex {
        from: String,
        to: String,
    },
    /// Points `alias` (and `extra_aliases`) at `index`, dropping `replaces`, in one step.
    SwapAlias {
        alias: String,
        index: String,
        replaces: String,
        /// The collection's own alias, moved in the same step (readers never see both indices).
        extra_aliases: Vec<String>,
    },
}

/// An index action, with the collection and the change it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexChange {
    pub namespace: String,
    /// Version (cluster time) of the change that caused it, so a replay is recognisable.
    pub version: i64,
    pub action: IndexAction,
}

/// One output. Every method returns once the output has durably taken the data (per its
/// guarantees); only then does the pipeline move the checkpoint. Transient failures are retried
/// inside, with `crate::retry`'s backoff and `Retry` events.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Checks, once at start, that the output is reachable (fails fast: no retries).
    async fn connect(&self) -> SyncResult<()>;

    /// Prepares the index of a collection (or of a rename's target, when `collection` is none).
    async fn prepare_index(&self, index: &str, collection: Option<&CollectionConfig>) -> SyncResult<()>;

    /// Prepares the index dead letters are written to.
    async fn prepare_dead_letters(&self, index: &str) -> SyncResult<()>;

    /// Writes a batch of one collection; reports what became of every write.
    async fn write(&self, namespace: &str, target: &Target, writes: Vec<DocumentWrite>) -> SyncResult<WriteReport>;

    /// Records dead letters of `namespace` (whose documents were meant for `index`) in `dlq`.
    async fn write_dead_letters(&self, dlq: &str, namespace: &str, index: &str, records: &[Rejected]) -> SyncResult<()>;

    /// Performs (or records) an index operation.
    async fn apply(&self, change: &IndexChange) -> SyncResult<()>;

    /// Once the sync stops, after its last write: makes sure what was written arrived where the
    /// output cannot tell at write time (a TCP receiver that went away just after a write).
    async fn close(&self) -> SyncResult<()> {
        Ok(())
    }
}

/// What every sink may use while it runs.
#[derive(Clone)]
pub struct SinkContext {
    pub retry: RetryConfig,
    pub events: EventBus,
    pub stats: Arc<Stats>,
    pub cancel: CancellationToken,
}

impl SinkContext {
    /// After failed attempt number `attempt` of `what`: waits the backoff delay (announced as a
    /// `Retry` event), or fails with `code` once `retry.maxAttempts` are used up, or with
    /// `ERR_STATE` if the sync is stopped meanwhile.
    pub async fn pause_before_retry(&self, code: ErrorCode, what: &str, attempt: u32, cause: &str) -> SyncResult<()> {
        if !may_retry(&self.retry, attempt) {
            return Err(SyncError::new(code, format!("{what} failed after {attempt} attempts: {cause}")));
        }
        if wait_before_retry(&self.retry, attempt, format!("{what}: {cause}"), &self.stats, &self.events, &self.cancel).await {
            Ok(())
        } else {
            Err(SyncError::new(ErrorCode::State, format!("stopped while retrying {what}")))
        }
    }
}

/// The sinks of `config.outputs`: one, or a fan-out over several.
pub fn build(config: &SyncConfig, ctx: &SinkContext) -> SyncResult<Arc<dyn Sink>> {
    let mut sinks: Vec<Arc<dyn Sink>> = Vec::with_capacity(config.outputs.len());
    for output in &config.outputs {
        let sink: Arc<dyn Sink> = match output {
            OutputConfig::Elasticsearch => {
                let es = config.elasticsearch.as_ref().expect("validated: an elasticsearch output has its options");
                Arc::new(elasticsearch::EsSink::new(es, ctx.clone())?)
            }
            OutputConfig::File(c) => Arc::new(record::RecordSink::new(file::FileTransport::new(c.clone()), ctx)),
            OutputConfig::Stdout => Arc::new(record::RecordSink::new(stdout::StdoutTransport::default(), ctx)),
            OutputConfig::Tcp(c) => {
                if c.tls.as_ref().is_some_and(|t| !t.reject_unauthorized) {
                    ctx.events.emit(crate::event::SyncEvent::Warning {
                        namespace: String::new(),
                        message: format!("the tcp output to {}:{} does NOT verify the server's certificate (tls.rejectUnauthorized is false)", c.host, c.port),
                    });
                }
                Arc::new(record::RecordSink::new(tcp::TcpTransport::new(c.clone())?, ctx))
            }
            OutputConfig::Nats(c) => Arc::new(record::RecordSink::new(nats::NatsTransport::new(c.clone()), ctx)),
        };
        sinks.push(sink);
    }
    Ok(if sinks.len() == 1 { sinks.pop().expect("one sink") } else { Arc::new(FanOut::new(sinks)) })
}
