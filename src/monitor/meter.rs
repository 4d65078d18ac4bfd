//! Metered outputs: decorators around the sinks that see every batch on its way out.
//! - [`OutputMeter`], around each output: how long its writes take and how large they are
//!   (histograms by collection and output);
//! - [`BatchMeter`], around them all: the batches in flight, and how old the changes are when
//!   all outputs acknowledged them (the stream's lag). The retries inside a write count to its
//!   collection.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::board::{StatusBoard, WRITING};
use super::metrics::Metrics;
use crate::config::{CollectionConfig, OutputConfig, SyncConfig};
use crate::error::SyncResult;
use crate::retry::Flow;
use crate::sink::elasticsearch::encoded_len;
use crate::sink::{self, FanOut, IndexChange, Sink, SinkContext, Target, WriteReport};
use crate::transform::{DocumentWrite, Operation, Rejected};

/// The sinks of `config.outputs` as `sink::build` makes them, each metered, behind one meter.
pub fn build(config: &SyncConfig, ctx: &SinkContext, board: Arc<StatusBoard>, metrics: Arc<Metrics>) -> SyncResult<Arc<dyn Sink>> {
    let mut outputs = Vec::with_capacity(config.outputs.len());
    for output in &config.outputs {
        let alone = SyncConfig { outputs: vec![output.clone()], ..config.clone() };
        outputs.push((output_name(output), sink::build(&alone, ctx)?));
    }
    Ok(metered(outputs, board, metrics))
}

/// Each output behind an [`OutputMeter`], all of them (a fan-out when several) behind a [`BatchMeter`].
pub(super) fn metered(outputs: Vec<(&'static str, Arc<dyn Sink>)>, board: Arc<StatusBoard>, metrics: Arc<Metrics>) -> Arc<dyn Sink> {
    let mut outputs: Vec<Arc<dyn Sink>> =
        outputs.into_iter().map(|(output, inner)| Arc::new(OutputMeter { inner, output, metrics: metrics.clone() }) as Arc<dyn Sink>).collect();
    let all: Arc<dyn Sink> = if outputs.len() == 1 { outputs.pop().expect("one output") } else { Arc::new(FanOut::new(outputs)) };
    Arc::new(BatchMeter { inner: all, board })
}

/// The `output` label: the kind of output (two of a kind share their series).
pub fn output_name(output: &OutputConfig) -> &'static str {
    match output {
        OutputConfig::Elasticsearch => "elasticsearch",
        OutputConfig::File(_) => "file",
        OutputConfig::Stdout => "stdout",
        OutputConfig::Tcp(_) => "tcp",
        OutputConfig::Nats(_) => "nats",
    }
}

/// The cluster time (ms since the epoch, to the second) a change's version was made from: the
/// inverse of `transform::version_of` (`seconds << 31 | increment`).
pub fn cluster_ms_of_version(version: i64) -> u64 {
    (version.max(0) >> 31) as u64 * 1000
}

fn body_bytes(target: &Target, writes: &[DocumentWrite]) -> u64 {
    writes.iter().map(|w| encoded_len(target, w) as u64).sum()
}

struct OutputMeter {
    inner: Arc<dyn Sink>,
    output: &'static str,
    metrics: Arc<Metrics>,
}

struct BatchMeter {
    inner: Arc<dyn Sink>,
    board: Arc<StatusBoard>,
}

/// A batch in the outputs; leaves the board's in-flight list however the write ends.
struct InFlight<'a> {
    board: &'a StatusBoard,
    namespace: &'a str,
    id: u64,
    /// Set once acknowledged: the cluster time of its newest change.
    acknowledged: Option<u64>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.board.batch_done(self.namespace, self.id, self.acknowledged);
    }
}

/// `impl Sink for $ty` with the given `write`; everything else goes to `self.inner` as it is.
macro_rules! metered_sink {
    ($ty:ty, $($write:tt)*) => {
        #[async_trait]
        impl Sink for $ty {
            async fn connect(&self) -> SyncResult<()> {
                self.inner.connect().await
            }
            async fn prepare_index(&self, index: &str, collection: Option<&CollectionConfig>) -> SyncResult<Flow<()>> {
                self.inner.prepare_index(index, collection).await
            }
            async fn prepare_dead_letters(&self, index: &str) -> SyncResult<Flow<()>> {
                self.inner.prepare_dead_letters(index).await
            }
            async fn write_dead_letters(&self, dlq: &str, namespace: &str, index: &str, records: &[Rejected]) -> SyncResult<Flow<()>> {
                self.inner.write_dead_letters(dlq, namespace, index, records).await
            }
            async fn apply(&self, change: &IndexChange) -> SyncResult<Flow<()>> {
                self.inner.apply(change).await
            }
            async fn close(&self) -> SyncResult<()> {
                self.inner.close().await
            }
            $($write)*
        }
    };
}

metered_sink!(
    OutputMeter,
    async fn write(&self, namespace: &str, target: &Target, writes: Vec<DocumentWrite>) -> SyncResult<Flow<WriteReport>> {
        let (documents, bytes) = (writes.len() as u64, body_bytes(target, &writes));
        let started = Instant::now();
        let result = self.inner.write(namespace, target, writes).await;
        if let Ok(Flow::Done(_)) = &result {
            self.metrics.batch_written(namespace, self.output, started.elapsed(), documents, bytes);
        }
        result
    }
);

metered_sink!(
    BatchMeter,
    async fn write(&self, namespace: &str, target: &Target, writes: Vec<DocumentWrite>) -> SyncResult<Flow<WriteReport>> {
        let changes = writes.iter().filter(|w| w.operation != Operation::Copy).map(|w| cluster_ms_of_version(w.version));
        let (oldest, newest) = changes.fold((None, None), |(lo, hi): (Option<u64>, Option<u64>), at| (Some(lo.map_or(at, |l| l.min(at))), hi.max(Some(at))));
        let id = self.board.batch_sent(namespace, body_bytes(target, &writes), oldest);
        let mut in_flight = InFlight { board: &self.board, namespace, id, acknowledged: None };
        let result = WRITING.scope(Arc::from(namespace), self.inner.write(namespace, target, writes)).await;
        if let Ok(Flow::Done(_)) = &result {
            in_flight.acknowledged = newest;
        }
        result
    }
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::version_of;

    #[test]
    fn versions_give_back_their_cluster_time() {
        let v = version_of(mongodb::bson::Timestamp { time: 1_700_000_123, increment: 45 });
        assert_eq!(cluster_ms_of_version(v), 1_700_000_123_000);
        assert_eq!(cluster_ms_of_version(-5), 0);
    }
}
