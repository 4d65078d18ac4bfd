//! Change records: writes and index actions as NDJSON lines (see `encoder`), and the adapter
//! that makes any record transport (file, stdout, TCP, NATS) a [`Sink`]. Record outputs carry
//! changes to a consumer rather than apply them, so index actions become records too.

mod encoder;

use async_trait::async_trait;

use super::{IndexChange, Sink, SinkContext, Target, WriteReport};
use crate::config::CollectionConfig;
use crate::error::{cause_chain, ErrorCode, SyncError, SyncResult};
use crate::retry::{Attempt, Flow, GaveUp, Retryable};
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

/// How far one delivery got, kept across its attempts, for transports that can deliver part of
/// a batch (and must know what they delivered when they try again).
pub trait Progress: Default + Send {
    /// Leading records known to be delivered.
    fn delivered(&self) -> usize {
        0
    }
}

/// For transports that deliver a batch whole or not at all.
impl Progress for () {}

/// Carries records to one destination.
#[async_trait]
pub trait RecordTransport: Send + Sync {
    type Error: std::error::Error + Send + Sync + 'static;
    type Progress: Progress;

    /// The destination, for messages (never with secrets).
    fn describe(&self) -> String;

    /// Opens or reaches the destination, once at start.
    async fn open(&self) -> Result<(), Self::Error>;

    /// Delivers the records, in order; returns once they are as durable as the output promises.
    /// A failure is retried with the same records and `progress` (fresh for each batch): a
    /// transport that delivered some of them notes it there, and must not deliver them out of
    /// order when it tries again.
    async fn send(&self, records: &[Record], progress: &mut Self::Progress) -> Result<(), Self::Error>;

    /// Why the destination cannot carry `record` at all (e.g. it is over a size limit), if so.
    /// Such a record is never sent (retrying it would block the sync): its document is
    /// dead-lettered instead.
    fn refuses(&self, _record: &Record) -> Option<String> {
        None
    }

    /// Ends the delivery when the sync stops; see [`Sink::close`].
    async fn close(&self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// What can go wrong in a record output; each kind maps to one stable error code at the sink boundary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputError {
    /// The output cannot be opened or reached at start (`ERR_OUTPUT_UNREACHABLE`).
    #[error("cannot open the output {output}: {cause}")]
    Unreachable { output: String, cause: String },
    /// Transient failures went on past `retry.maxAttempts`.
    #[error(transparent)]
    GaveUp(#[from] GaveUp),
    /// A dead letter the output cannot carry even without its document.
    #[error("the dead letter of {namespace} {id} cannot be recorded in {output}, even without its document: {reason}")]
    DeadLetterTooLarge { namespace: String, id: String, output: String, reason: String },
    /// Ending the delivery at stop showed that recent records may be lost.
    #[error("closing the output {output}: {cause}")]
    Close { output: String, cause: String },
}

impl From<OutputError> for SyncError {
    fn from(e: OutputError) -> Self {
        let code = match e {
            OutputError::Unreachable { .. } => ErrorCode::OutputUnreachable,
            _ => ErrorCode::Output,
        };
        SyncError::new(code, e.to_string())
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

    /// Sends the records until the transport took them; a failure of the transport is transient,
    /// and one that delivered part of them is progress.
    async fn deliver(&self, records: &[Record]) -> Result<Flow<()>, OutputError> {
        if records.is_empty() {
            return Ok(Flow::Done(()));
        }
        let what = format!("writing {} record(s) to {}", records.len(), self.transport.describe());
        self.ctx.retry_policy().run(&what, Delivery { transport: &self.transport, records, progress: T::Progress::default() }).await
    }
}

/// One batch of records on its way, across attempts.
struct Delivery<'a, T: RecordTransport> {
    transport: &'a T,
    records: &'a [Record],
    progress: T::Progress,
}

impl<T: RecordTransport> Retryable for Delivery<'_, T> {
    type Output = ();
    type Error = OutputError;

    async fn attempt(&mut self) -> Attempt<(), OutputError> {
        let before = self.progress.delivered();
        match self.transport.send(self.records, &mut self.progress).await {
            Ok(()) => Attempt::Done(()),
            Err(e) if self.progress.delivered() > before => Attempt::Partial(cause_chain(&e)),
            Err(e) => Attempt::Retry(cause_chain(&e)),
        }
    }
}

#[async_trait]
impl<T: RecordTransport> Sink for RecordSink<T> {
    async fn connect(&self) -> SyncResult<()> {
        let unreachable = |e: T::Error| OutputError::Unreachable { output: self.transport.describe(), cause: cause_chain(&e) };
        Ok(self.transport.open().await.map_err(unreachable)?)
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
                    let output = self.transport.describe();
                    return Err(OutputError::DeadLetterTooLarge { namespace: namespace.to_string(), id: r.id.clone(), output, reason }.into());
                }
            }
        }
        Ok(self.deliver(&records).await?)
    }

    async fn apply(&self, change: &IndexChange) -> SyncResult<Flow<()>> {
        Ok(self.deliver(&[index_change_record(change)]).await?)
    }

    async fn close(&self) -> SyncResult<()> {
        let unsure = |e: T::Error| OutputError::Close { output: self.transport.describe(), cause: cause_chain(&e) };
        Ok(self.transport.close().await.map_err(unsure)?)
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

    #[derive(Debug, thiserror::Error)]
    #[error("{0} bytes sent past the limit")]
    struct PastTheLimit(usize);

    #[async_trait]
    impl RecordTransport for Limited {
        type Error = PastTheLimit;
        type Progress = ();
        fn describe(&self) -> String {
            "limited".into()
        }
        async fn open(&self) -> Result<(), PastTheLimit> {
            Ok(())
        }
        async fn send(&self, records: &[Record], _: &mut ()) -> Result<(), PastTheLimit> {
            if let Some(r) = records.iter().find(|r| r.line.len() > self.limit) {
                return Err(PastTheLimit(r.line.len()));
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
