//! The copy phase: the collection's `_id` ranges read in parallel, each by a reader task that
//! converts documents into batches; up to `batch.concurrency` batches are committed at once and
//! acknowledged in read order, each acknowledgement checkpointing its range.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::StreamExt;
use mongodb::bson::{Bson, Document, RawDocument, Timestamp};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::CollectionSync;
use crate::checkpoint::CopyRange;
use crate::config::{BatchConfig, CollectionConfig, Namespace};
use crate::error::{ErrorCode, SyncError, SyncResult};
use crate::event::{Phase, SyncEvent};
use crate::pipeline::ack::InOrder;
use crate::pipeline::batch::{commit, Batch, Room};
use crate::pipeline::{Flow, Halt, PhaseResult};
use crate::sink::Target;
use crate::source::{ChangeSource, ScanOptions};
use crate::stats::{Stage, Stats};
use crate::transform::{routing_value_raw, version_of, RawConverter};

/// A raw document's `_id` (where its range resumes after it); null if it has none that reads.
fn raw_id(doc: &RawDocument) -> Bson {
    match doc.get("_id") {
        Ok(Some(id)) => Bson::try_from(id).unwrap_or(Bson::Null),
        _ => Bson::Null,
    }
}

/// What range readers send to the copy's writer.
pub(super) enum CopyItem {
    Batch {
        range: usize,
        batch: Box<Batch>,
        last_id: Bson,
    },
    /// Everything of the range was sent.
    RangeDone(usize),
}

/// What the writer acknowledged, in the order the items were sent.
enum CopyAck {
    Batch { range: usize, last_id: Bson, read: u64 },
    RangeDone(usize),
}

/// Reads one `_id` range of a collection and turns it into batches of writes.
pub(super) struct RangeReader {
    pub source: Arc<dyn ChangeSource>,
    pub namespace: Namespace,
    pub range: CopyRange,
    pub index: usize,
    pub target: Target,
    pub routing: Option<String>,
    /// The version of every copied document: that of the copy's start point.
    pub version: i64,
    pub start_at: Timestamp,
    pub limits: BatchConfig,
    /// The collection's conversion options and field rules, prepared once.
    pub converter: Arc<RawConverter>,
    pub filter: Option<Document>,
    pub cancel: CancellationToken,
    pub stats: Arc<Stats>,
}

impl RangeReader {
    /// Reads `range` of `settings.namespace` for `target`, shaped by `settings`.
    pub fn new(sync: &CollectionSync<'_>, settings: &CollectionConfig, range: CopyRange, index: usize, target: &Target) -> Self {
        let start_at = sync.start_at();
        RangeReader {
            source: sync.ctx.source.clone(),
            namespace: settings.namespace.clone(),
            range,
            index,
            target: target.clone(),
            routing: settings.routing.clone(),
            version: version_of(start_at),
            start_at,
            limits: sync.ctx.config.batch.clone(),
            converter: Arc::new(RawConverter::new(&settings.convert, &settings.fields)),
            filter: settings.filter.clone(),
            cancel: sync.ctx.cancel.clone(),
            stats: sync.ctx.stats.clone(),
        }
    }

    pub async fn read(self, tx: &mpsc::Sender<SyncResult<CopyItem>>) -> SyncResult<()> {
        let options = ScanOptions { filter: self.filter.clone(), batch_size: self.limits.max_docs.min(10_000) as u32, not_before: Some(self.start_at) };
        let mut documents = self.source.scan(&self.namespace, &self.range, &options).await?;
        let mut batch = Batch::default();
        let mut last_id = Bson::Null;
        let send = |batch: Batch, last_id: Bson| tx.send(Ok(CopyItem::Batch { range: self.index, batch: Box::new(batch), last_id }));
        while let Some(doc) = documents.next().await.transpose()? {
            if self.cancel.is_cancelled() {
                return Ok(());
            }
            let converting = Instant::now();
            let converted = self.converter.index_write(&doc, self.version, batch.warnings());
            self.stats.record_stage(Stage::Convert, converting.elapsed());
            match converted {
                Ok(mut write) => {
                    write.routing = self.routing.as_deref().and_then(|path| routing_value_raw(&doc, path));
                    if batch.room_for(&self.target, &write, &self.limits) == Room::FlushFirst
                        && send(std::mem::take(&mut batch), last_id.clone()).await.is_err()
                    {
                        return Ok(());
                    }
                    batch.push(&self.target, write, &self.limits);
                }
                Err(rejected) => batch.push_rejected(rejected),
            }
            last_id = raw_id(&doc);
            if batch.is_full(&self.limits) && send(std::mem::take(&mut batch), last_id.clone()).await.is_err() {
                return Ok(());
            }
        }
        if !batch.is_empty() && send(batch, last_id).await.is_err() {
            return Ok(());
        }
        let _ = tx.send(Ok(CopyItem::RangeDone(self.index))).await;
        Ok(())
    }

    /// Reads on its own task; a failure is passed on to the writer.
    fn spawn(self, tasks: &mut tokio::task::JoinSet<()>, tx: mpsc::Sender<SyncResult<CopyItem>>) {
        tasks.spawn(async move {
            if let Err(e) = self.read(&tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
    }
}

/// Copy progress: rate over this run, and the time left at that rate.
struct ProgressMeter {
    started: Instant,
    last: Instant,
    copied_at_start: u64,
    total: u64,
}

impl ProgressMeter {
    fn new(copied_at_start: u64, total: u64) -> Self {
        ProgressMeter { started: Instant::now(), last: Instant::now(), copied_at_start, total }
    }

    /// A report at most twice a second, and always when `done`.
    fn event(&mut self, namespace: &str, index: &str, copied: u64, done: bool) -> Option<SyncEvent> {
        if !done && self.last.elapsed() < Duration::from_millis(500) {
            return None;
        }
        self.last = Instant::now();
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = if elapsed > 0.0 { (copied - self.copied_at_start.min(copied)) as f64 / elapsed } else { 0.0 };
        let total = if done { self.total.max(copied) } else { self.total };
        let eta_seconds = match (done, rate > 0.0) {
            (true, _) => Some(0.0),
            (false, true) => Some(total.saturating_sub(copied) as f64 / rate),
            (false, false) => None,
        };
        let (namespace, index) = (namespace.to_string(), index.to_string());
        Some(SyncEvent::Progress { namespace, index, copied, total_estimate: total, rate, eta_seconds, done })
    }
}

impl CollectionSync<'_> {
    pub(super) async fn copy(&mut self) -> PhaseResult<Flow> {
        let total = self.ctx.source.estimated_count(&self.config.namespace).await;
        self.ctx.stats.collection(&self.namespace()).copy_started(self.checkpoint.copied, total);
        if self.checkpoint.copy_ranges.is_empty() {
            self.checkpoint.copy_ranges = self.plan_ranges(total).await?;
            self.save().await?;
        }
        // One reader per unfinished range converts while the writer waits on the outputs;
        // the channel bounds what is read ahead.
        let target = self.target();
        let readers = self.checkpoint.copy_ranges.iter().filter(|r| !r.done).count().max(1);
        let (tx, rx) = mpsc::channel::<SyncResult<CopyItem>>(2 * readers);
        let mut reader_tasks = tokio::task::JoinSet::new();
        for (index, range) in self.checkpoint.copy_ranges.iter().enumerate().filter(|(_, r)| !r.done) {
            RangeReader::new(self, &self.config, range.clone(), index, &target).spawn(&mut reader_tasks, tx.clone());
        }
        drop(tx);
        let mut progress = ProgressMeter::new(self.checkpoint.copied, total);
        let flow = self.write_copy(rx, &target, &mut progress).await;
        reader_tasks.abort_all();
        // Saves are spaced out: however the copy ended (a stop, a failure the retry policy may
        // retry), what was acknowledged is saved, so that only the rest is read again.
        let saved = if !matches!(flow, Ok(Flow::Done)) && self.position_unsaved { self.save().await } else { Ok(()) };
        if flow? == Flow::Stopped {
            saved?;
            return Ok(Flow::Stopped);
        }
        self.checkpoint.copy_done = true;
        self.save().await?;
        self.ctx.events.emit(progress.event(&self.namespace(), &target.index, self.checkpoint.copied, true).expect("done is always reported"));
        Ok(Flow::Done)
    }

    /// Commits what the readers send, up to `concurrency` batches at once, and checkpoints
    /// each range as its batches are acknowledged, in read order. (Their relative order does
    /// not matter for correctness: the versions do.) Ends when everything read is acknowledged,
    /// or, once stopping, everything sent.
    async fn write_copy(&mut self, mut rx: mpsc::Receiver<SyncResult<CopyItem>>, target: &Target, progress: &mut ProgressMeter) -> PhaseResult<Flow> {
        let ctx = self.ctx;
        let ns = self.namespace();
        let mut acks = InOrder::<_, Halt>::new(ctx.config.batch.concurrency);
        let (mut reader_done, mut stopping) = (false, false);
        let mut history_check = tokio::time::interval_at(tokio::time::Instant::now() + ctx.timing.history_check_every, ctx.timing.history_check_every);
        history_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The probe runs alongside the writes: a slow answer does not hold up the copy.
        let mut probe: Option<BoxFuture<'static, SyncResult<bool>>> = None;
        while !((reader_done || stopping) && acks.is_empty()) {
            tokio::select! {
                biased;
                _ = ctx.cancel.cancelled(), if !stopping => stopping = true,
                reaches = async { probe.as_mut().expect("checked").await }, if probe.is_some() => {
                    probe = None;
                    if !reaches? {
                        return Err(self.history_lost().into());
                    }
                }
                _ = history_check.tick(), if probe.is_none() => probe = Some(self.history_probe()),
                acked = acks.next(), if !acks.is_empty() => {
                    self.acknowledge_copy(acked.expect("not empty")?).await?;
                    if let Some(event) = progress.event(&ns, &target.index, self.checkpoint.copied, false) {
                        ctx.events.emit(event);
                    }
                }
                next = rx.recv(), if !reader_done && !stopping && acks.has_room() => match next {
                    None => reader_done = true,
                    Some(item) => acks.push(commit_copy(ctx, ns.clone(), target.clone(), item?)),
                },
            }
        }
        Ok(if stopping { Flow::Stopped } else { Flow::Done })
    }

    /// The stream starts where the copy began: a copy that outlasts the change history can
    /// never reach its stream, which is better known now than at its end. Whether the history
    /// still reaches the copy's start point, asked of the source without borrowing the copy.
    fn history_probe(&self) -> BoxFuture<'static, SyncResult<bool>> {
        let (source, ns, start_at) = (self.ctx.source.clone(), self.config.namespace.clone(), self.start_at());
        Box::pin(async move { source.history_reaches(&ns, start_at).await })
    }

    /// The copy outlasted the change history: reported, and the error that ends it.
    fn history_lost(&self) -> SyncError {
        let ns = &self.config.namespace;
        let message = format!(
            "the copy of {ns} has taken longer than the change history (the oplog window) reaches back: the changes made since it \
             began are no longer in the history, so it cannot go on to stream them. Enlarge the oplog (replSetResizeOplog, or \
             oplogMinRetentionHours) or make the copy faster (copyReaders, batch.concurrency, a faster search server)"
        );
        self.ctx.warn(ns, message.clone());
        SyncError::new(ErrorCode::HistoryLost, message)
    }

    async fn acknowledge_copy(&mut self, ack: CopyAck) -> SyncResult<()> {
        match ack {
            CopyAck::Batch { range, last_id, read } => {
                self.checkpoint.copy_ranges[range].last_id = Some(last_id);
                self.checkpoint.copied += read;
            }
            CopyAck::RangeDone(range) => self.checkpoint.copy_ranges[range].done = true,
        }
        // One save per batch was a write to the user's database per batch (and an oplog entry).
        self.position_unsaved = true;
        if self.last_save.elapsed() >= self.ctx.timing.copy_checkpoint_every {
            self.save().await?;
        }
        Ok(())
    }

    /// Ranges for a fresh copy: split at a sample of `_id`s when the collection is large enough
    /// to gain from several cursors.
    async fn plan_ranges(&self, total: u64) -> SyncResult<Vec<CopyRange>> {
        // A range per `copy_range_min_docs` documents, at most `copy_readers`: parallel cursors
        // pay off only when the copy is long; a short one reads with one cursor and plans nothing.
        let config = &self.ctx.config;
        let readers = config.copy_readers.min((total / config.copy_range_min_docs.max(1)) as usize);
        if readers < 2 {
            return Ok(vec![CopyRange::default()]);
        }
        let plan = self.ctx.source.plan_ranges(&self.config.namespace, readers).await?;
        if let Some(warning) = plan.warning {
            self.ctx.warn(&self.config.namespace, warning);
        }
        Ok(plan.ranges)
    }
}

async fn commit_copy(ctx: &crate::pipeline::Context, ns: String, target: Target, item: CopyItem) -> PhaseResult<CopyAck> {
    match item {
        CopyItem::Batch { range, batch, last_id } => {
            let read = batch.read_count();
            commit(ctx, &ns, &target, Phase::Copy, *batch).await.map(|()| CopyAck::Batch { range, last_id, read })
        }
        CopyItem::RangeDone(range) => Ok(CopyAck::RangeDone(range)),
    }
}
