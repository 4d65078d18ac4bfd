//! Change records: writes and index actions as NDJSON lines (see `encoder`), and the adapter
//! that makes any record transport (file, stdout, TCP, NATS) a [`Sink`]. Record outputs carry
//! changes to a consumer rather than apply them, so index actions become records too.

mod encoder;

use async_trait::async_trait;

use super::{IndexChange, Sink, SinkContext, Target, WriteReport};
use crate::config::CollectionConfig;
use crate::error::{ErrorCode, SyncError, SyncResult};
use crate::transform::{DocumentWrite, Rejected, WriteOp};

pub use encoder::{dead_letter_records, document_record, index_change_record};

/// One change record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `db.collection` it comes from.
    pub namespace: String,
    /// The index it is meant for.
    pub index: String,
    /// A stable identity of the change: the same after a replay, different for any two changes.
    pub key: String,
    /// One JSON object, without the line break.
    pub line: Vec<u8>,
}

/// Records as NDJSON: one line each.
pub fn ndjson(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.iter().map(|r| r.line.len() + 1).sum());
    for r in records {
        out.extend_from_slice(&r.line);
        out.push(b'\n');
    }
    out
}

/// Carries records to one destination.
#[async_trait]
pub trait RecordTransport: Send + Sync {
    /// The destination, for messages (never with secrets).
    fn describe(&self) -> String;

    /// Opens or reaches the destination, once at start.
    async fn open(&self) -> Result<(), String>;

    /// Delivers the records, in order; returns once they are as durable as the output promises.
    /// A failure is retried with the same records (the transport must not leave half of them).
    async fn send(&self, records: &[Record]) -> Result<(), String>;

    /// Ends the delivery when the sync stops; see [`Sink::close`].
    async fn close(&self) -> Result<(), String> {
        Ok(())
    }
}

pub struct RecordSink<T> {
    transport: T,
    ctx: SinkContext,
}

impl<T: RecordTransport> RecordSink<T> {
    pub fn new(transport: T, ctx: &SinkContext) -> Self {
        RecordSink { transport, ctx: ctx.clone() }
    }

    async fn deliver(&self, records: &[Record]) -> SyncResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut attempt = 0;
        loop {
            match self.transport.send(records).await {
                Ok(()) => return Ok(()),
                Err(cause) => {
                    attempt += 1;
                    let what = format!("writing {} record(s) to {}", records.len(), self.transport.describe());
                    self.ctx.pause_before_retry(ErrorCode::Output, &what, attempt, &cause).await?;
                }
            }
        }
    }
}

#[async_trait]
impl<T: RecordTransport> Sink for RecordSink<T> {
    async fn connect(&self) -> SyncResult<()> {
        self.transport
            .open()
            .await
            .map_err(|e| SyncError::new(ErrorCode::OutputUnreachable, format!("cannot open the output {}: {e}", self.transport.describe())))
    }

    /// Indices are the consumer's business.
    async fn prepare_index(&self, _index: &str, _collection: Option<&CollectionConfig>) -> SyncResult<()> {
        Ok(())
    }

    async fn prepare_dead_letters(&self, _index: &str) -> SyncResult<()> {
        Ok(())
    }

    /// Every change is recorded, in order (no coalescing: a consumer may want each one).
    async fn write(&self, namespace: &str, target: &Target, writes: Vec<DocumentWrite>) -> SyncResult<WriteReport> {
        let records: Vec<Record> = writes.iter().map(|w| document_record(namespace, target, w)).collect();
        self.deliver(&records).await?;
        let mut report = WriteReport::default();
        for w in &writes {
            match w.op {
                WriteOp::Index(_) => report.outcome.indexed += 1,
                WriteOp::Delete => report.outcome.deleted += 1,
            }
        }
        Ok(report)
    }

    async fn write_dead_letters(&self, dlq: &str, namespace: &str, index: &str, rejected: &[Rejected]) -> SyncResult<()> {
        self.deliver(&dead_letter_records(dlq, namespace, index, rejected)).await
    }

    async fn apply(&self, change: &IndexChange) -> SyncResult<()> {
        self.deliver(&[index_change_record(change)]).await
    }

    async fn close(&self) -> SyncResult<()> {
        self.transport
            .close()
            .await
            .map_err(|e| SyncError::new(ErrorCode::Output, format!("closing the output {}: {e}", self.transport.describe())))
    }
}
