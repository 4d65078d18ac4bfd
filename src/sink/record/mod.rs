//! Change records: writes and index actions as NDJSON lines (see `encoder`), and the adapter
//! that makes any record transport (file, stdout, TCP, NATS) a [`Sink`]. Record outputs carry
//! changes to a consumer rather than apply them, so index actions become records too.

mod encoder;

use async_trait::async_trait;

use super::{IndexChange, Sink, SinkContext, Target, WriteReport};
use crate::config::CollectionConfig;
use crate::error::{ErrorCode, SyncError, SyncResult};
use crate::retry::{Attempt, Flow, GaveUp};
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

    /// Why the destination cannot carry `record` at all (e.g. it is over a size limit), if so.
    /// Such a record is never sent (retrying it would block the sync): its document is
    /// dead-lettered instead.
    fn refuses(&self, _record: &Record) -> Option<String> {
        None
    }

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

    /// Sends the records until the transport took them; a failure of the transport is transient.
    async fn deliver(&self, records: &[Record]) -> SyncResult<Flow<()>> {
        if records.is_empty() {
            return Ok(Flow::Done(()));
        }
        let what = format!("writing {} record(s) to {}", records.len(), self.transport.describe());
        let sent = self.ctx.retry_policy().run(&what, || async { self.transport.send(records).await.map_or_else(Attempt::Retry, Attempt::Done) }).await;
        sent.map_err(|gave_up: GaveUp| SyncError::new(ErrorCode::Output, gave_up.to_string()))
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
    async fn prepare_index(&self, _index: &str, _collection: Option<&CollectionConfig>) -> SyncResult<Flow<()>> {
        Ok(Flow::Done(()))
    }

    async fn prepare_dead_letters(&self, _index: &str) -> SyncResult<Flow<()>> {
        Ok(Flow::Done(()))
    }

    /// Every change is recorded, in order (no coalescing: a consumer may want each one).
    async fn write(&self, namespace: &str, target: &Target, writes: Vec<DocumentWrite>) -> SyncResult<Flow<WriteReport>> {
        let mut report = WriteReport::default();
        let mut records = Vec::with_capacity(writes.len());
        for w in &writes {
            let record = document_record(namespace, target, w);
            if let Some(reason) = self.transport.refuses(&record) {
                // The document is not attached: it is what the output cannot carry.
                report.outcome.dead_letters += 1;
                report.dead_letters.push(Rejected::new(w.id.clone(), format!("{}: {reason}", self.transport.describe())));
                continue;
            }
            match w.op {
                WriteOp::Index(_) => report.outcome.indexed += 1,
                WriteOp::Delete => report.outcome.deleted += 1,
            }
            records.push(record);
        }
        Ok(self.deliver(&records).await?.map(|()| report))
    }

    async fn write_dead_letters(&self, dlq: &str, namespace: &str, index: &str, rejected: &[Rejected]) -> SyncResult<Flow<()>> {
        let mut records = dead_letter_records(dlq, namespace, index, rejected);
        for (record, r) in records.iter_mut().zip(rejected) {
            if let Some(reason) = self.transport.refuses(record) {
                let slim = Rejected { reason: format!("{}; the document is left out of this record: {reason}", r.reason), document: None, ..r.clone() };
                *record = dead_letter_records(dlq, namespace, index, std::slice::from_ref(&slim)).pop().expect("one record per dead letter");
                if let Some(reason) = self.transport.refuses(record) {
                    let what =
                        format!("the dead letter of {namespace} {} cannot be recorded in {}, even without its document", r.id, self.transport.describe());
                    return Err(SyncError::new(ErrorCode::Output, format!("{what}: {reason}")));
                }
            }
        }
        self.deliver(&records).await
    }

    async fn apply(&self, change: &IndexChange) -> SyncResult<Flow<()>> {
        self.deliver(&[index_change_record(change)]).await
    }

    async fn close(&self) -> SyncResult<()> {
        self.transport.close().await.map_err(|e| SyncError::new(ErrorCode::Output, format!("closing the output {}: {e}", self.transport.describe())))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::config::RetryConfig;
    use crate::event::EventBus;
    use crate::stats::Stats;
    use crate::transform::Operation;

    /// Keeps what it is sent; refuses lines over `limit` bytes, as a size-limited broker does.
    struct Limited {
        limit: usize,
        sent: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl RecordTransport for Limited {
        fn describe(&self) -> String {
            "limited".into()
        }
        async fn open(&self) -> Result<(), String> {
            Ok(())
        }
        async fn send(&self, records: &[Record]) -> Result<(), String> {
            if let Some(r) = records.iter().find(|r| r.line.len() > self.limit) {
                return Err(format!("{} bytes sent past the limit", r.line.len()));
            }
            self.sent.lock().unwrap().extend(records.iter().map(|r| String::from_utf8(r.line.clone()).unwrap()));
            Ok(())
        }
        fn refuses(&self, record: &Record) -> Option<String> {
            (record.line.len() > self.limit).then(|| format!("over {} bytes", self.limit))
        }
    }

    fn sink(limit: usize) -> RecordSink<Limited> {
        let retry = RetryConfig { max_attempts: Some(1), ..RetryConfig::default() };
        let ctx = SinkContext { retry, events: EventBus::default(), stats: Arc::new(Stats::default()), cancel: Default::default() };
        RecordSink::new(Limited { limit, sent: Mutex::new(Vec::new()) }, &ctx)
    }

    fn insert(id: &str, body: &str) -> DocumentWrite {
        DocumentWrite { id: id.into(), routing: None, version: 1, op: WriteOp::Index(body.as_bytes().to_vec()), operation: Operation::Insert, position: None }
    }

    #[tokio::test]
    async fn records_the_output_refuses_become_dead_letters_and_the_rest_is_sent() {
        let sink = sink(300);
        let big = format!("{{\"blob\":\"{}\"}}", "x".repeat(400));
        let report = sink.write("db.c", &Target::index("c"), vec![insert("a", "{}"), insert("big", &big), insert("b", "{}")]).await.unwrap();
        let Flow::Done(report) = report else { panic!("not stopped") };
        assert_eq!((report.outcome.indexed, report.outcome.dead_letters), (2, 1));
        assert_eq!(report.dead_letters[0].id, "big");
        assert_eq!(report.dead_letters[0].reason, "limited: over 300 bytes");
        let sent = sink.transport.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 2);
        assert!(sent.iter().all(|line| !line.contains("xxx")));
    }

    #[tokio::test]
    async fn a_dead_letter_too_large_with_its_document_is_recorded_without_it() {
        let sink = sink(400);
        let rejected = [Rejected::new("small", "bad").with_document("{}".into()), Rejected::new("big", "transform failed").with_document("y".repeat(500))];
        assert_eq!(sink.write_dead_letters("dlq", "db.c", "c", &rejected).await, Ok(Flow::Done(())));
        let sent = sink.transport.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 2);
        let letters: Vec<serde_json::Value> = sent.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(letters[0]["document"]["document"], "{}");
        assert_eq!(letters[1]["document"]["document"], serde_json::Value::Null);
        assert_eq!(letters[1]["document"]["reason"], "transform failed; the document is left out of this record: over 400 bytes");
        // An output too small for even that fails, rather than retrying forever.
        let tiny = super::tests::sink(100);
        let err = tiny.write_dead_letters("dlq", "db.c", "c", &rejected[..1]).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::Output);
        assert!(err.message.contains("cannot be recorded in limited, even without its document"), "{}", err.message);
    }
}
