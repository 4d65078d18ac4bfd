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
use crate::error::SyncResult;
use crate::event::{BatchOutcome, EventBus};
use crate::retry::{Flow, RetryPolicy};
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
/// inside, in `crate::retry`'s loop (backoff, `Retry` events); a sync stopped during a retry
/// ends the call with [`Flow::Stopped`]: the work is then not done, and must not be
/// checkpointed.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Checks, once at start, that the output is reachable (fails fast: no retries).
    async fn connect(&self) -> SyncResult<()>;

    /// Prepares the index of a collection (or of a rename's target, when `collection` is none).
    async fn prepare_index(&self, index: &str, collection: Option<&CollectionConfig>) -> SyncResult<Flow<()>>;

    /// Prepares the index dead letters are written to.
    async fn prepare_dead_letters(&self, index: &str) -> SyncResult<Flow<()>>;

    /// Writes a batch of one collection; reports what became of every write.
    async fn write(&self, namespace: &str, target: &Target, writes: Vec<DocumentWrite>) -> SyncResult<Flow<WriteReport>>;

    /// Records dead letters of `namespace` (whose documents were meant for `index`) in `dlq`.
    async fn write_dead_letters(&self, dlq: &str, namespace: &str, index: &str, records: &[Rejected]) -> SyncResult<Flow<()>>;

    /// Performs (or records) an index operation.
    async fn apply(&self, change: &IndexChange) -> SyncResult<Flow<()>>;

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
    /// The retry loop of this sync (see `crate::retry`).
    pub fn retry_policy(&self) -> RetryPolicy<'_> {
        RetryPolicy::new(&self.retry, &self.stats, &self.events, &self.cancel)
    }
}

/// The sinks of `config.outputs`: one, or a fan-out over several.
pub fn build(config: &SyncConfig, ctx: &SinkContext) -> SyncResult<Arc<dyn Sink>> {
    let mut sinks: Vec<Arc<dyn Sink>> = Vec::with_capacity(config.outputs.len());
    for output in &config.outputs {
        let sink: Arc<dyn Sink> = match output {
            OutputConfig::Elasticsearch => {
                let es = config.elasticsearch.as_ref().expect("validated: an elasticsearch output has its options");
                Arc::new(elasticsearch::EsSink::new(es, &config.batch, ctx.clone())?)
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
