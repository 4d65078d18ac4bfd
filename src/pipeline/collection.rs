//! One collection's sync: the copy (if not done yet), then its change stream, checkpointing
//! after every acknowledged batch.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::{Bson, Document, Timestamp};
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType};
use mongodb::Collection;
use sync_wrapper::SyncWrapper;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::batch::{commit, Batch, Room};
use super::{cluster_now, stream_start, Context, Flow, UntilStopped};
use crate::checkpoint::{CollectionCheckpoint, CopyRange};
use crate::config::{BatchConfig, CollectionConfig, DropPolicy, HistoryLostPolicy, Namespace, RenamePolicy, SyncMode};
use crate::error::{ErrorCode, SyncError, SyncResult};
use crate::event::{Phase, SyncEvent};
use crate::retry::wait_before_retry;
use crate::sink::{IndexAction, IndexChange, Target};
use crate::source::change_stream::{self, CollectionStream, ReadAhead, StreamItem, StreamStart};
use crate::source::{copy, mongo_error};
use crate::stats::CollectionPhase;
use crate::transform::{delete_write, describe_id, index_write, routing_value, version_of, ConvertOptions, DocumentWrite, FieldRules, Operation, Rejected};

/// What range readers send to the copy's writer.
enum CopyItem {
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

/// Reads one `_id` range of the copy and turns it into batches of writes.
struct RangeReader {
    collection: Collection<Document>,
    range: CopyRange,
    index: usize,
    namespace: String,
    target: Target,
    routing: Option<String>,
    version: i64,
    limits: BatchConfig,
    convert: ConvertOptions,
    fields: FieldRules,
    filter: Option<Document>,
    cancel: CancellationToken,
}

impl RangeReader {
    async fn read(self, tx: &mpsc::Sender<SyncResult<CopyItem>>) -> SyncResult<()> {
        let ns = &self.namespace;
        let mut cursor = copy::open(&self.collection, &self.range, self.filter.as_ref(), self.limits.max_docs.min(10_000) as u32)
            .await
            .map_err(|e| mongo_error(format!("cannot start copying {ns}"), &e))?;
        let mut batch = Batch::default();
        let mut last_id = Bson::Null;
        let send = |batch: Batch, last_id: Bson| tx.send(Ok(CopyItem::Batch { range: self.index, batch: Box::new(batch), last_id }));
        while let Some(doc) = cursor.try_next().await.map_err(|e| mongo_error(format!("copy of {ns} failed"), &e))? {
            if self.cancel.is_cancelled() {
                return Ok(());
            }
            let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
            match index_write(&doc, self.version, &self.convert, &self.fields, batch.warnings()) {
                Ok(mut write) => {
                    write.routing = self.routing.as_deref().and_then(|path| routing_value(&doc, path));
                    if batch.room_for(&self.target, &write, &self.limits) == Room::FlushFirst
                        && send(std::mem::take(&mut batch), last_id.clone()).await.is_err()
                    {
                        return Ok(());
                    }
                    batch.push(&self.target, write, &self.limits);
                }
                Err(rejected) => batch.push_rejected(rejected),
            }
            last_id = id;
        }
        if !batch.is_empty() && send(batch, last_id).await.is_err() {
            return Ok(());
        }
        let _ = tx.send(Ok(CopyItem::RangeDone(self.index))).await;
        Ok(())
    }
}

/// Copy progress: rate over this run, and the time left at that rate.
struct ProgressMeter {
    started: Instant,
    copied_at_start: u64,
    total: u64,
}

impl ProgressMeter {
    fn new(copied_at_start: u64, total: u64) -> Self {
        ProgressMeter { started: Instant::now(), copied_at_start, total }
    }

    fn event(&self, namespace: &str, index: &str, copied: u64, done: bool) -> SyncEvent {
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = if elapsed > 0.0 { (copied - self.copied_at_start.min(copied)) as f64 / elapsed } else { 0.0 };
        let total = if done { self.total.max(copied) } else { self.total };
        let eta_seconds = match (done, rate > 0.0) {
            (true, _) => Some(0.0),
            (false, true) => Some(total.saturating_sub(copied) as f64 / rate),
            (false, false) => None,
        };
        SyncEvent::Progress { namespace: namespace.to_string(), index: index.to_string(), copied, total_estimate: total, rate, eta_seconds, done }
    }
}

/// While changes flow, the stream position is saved at most this often.
const STREAM_CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// A saved idle position is refreshed at most this often.
const IDLE_CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

pub struct CollectionSync<'a> {
    ctx: &'a Context,
    config: &'a CollectionConfig,
    checkpoint: CollectionCheckpoint,
    /// The in-memory checkpoint holds an acknowledged stream position not saved yet.
    position_unsaved: bool,
    last_save: Instant,
    /// The stream batch being committed, resolving to the position it acknowledges. (Only ever
    /// used through `&mut self`; the wrapper lets `&CollectionSync` cross awaits elsewhere.)
    in_flight: SyncWrapper<Option<BoxFuture<'a, SyncResult<Option<Document>>>>>,
}

impl<'a> CollectionSync<'a> {
    fn namespace(&self) -> String {
        self.config.namespace.to_string()
    }

    /// The concrete index written to: the configured name, or `<name>-<n>` after a re-copy.
    fn index(&self) -> String {
        self.checkpoint.physical_index.clone().unwrap_or_else(|| self.config.index.clone())
    }

    fn target(&self) -> Target {
        Target { index: self.index(), pipeline: self.config.pipeline.clone() }
    }

    /// The shard routing value of a document (or a delete's document key), when configured.
    fn routing_of(&self, doc: &Document) -> Option<String> {
        self.config.routing.as_deref().and_then(|path| routing_value(doc, path))
    }

    fn collection(&self) -> Collection<Document> {
        self.ctx.client.database(&self.config.namespace.db).collection(&self.config.namespace.coll)
    }

    pub fn new(ctx: &'a Context, config: &'a CollectionConfig, checkpoint: CollectionCheckpoint) -> Self {
        CollectionSync { ctx, config, checkpoint, position_unsaved: false, last_save: Instant::now(), in_flight: SyncWrapper::new(None) }
    }

    async fn save(&mut self) -> SyncResult<()> {
        self.ctx.store.save(&self.config.namespace, &self.checkpoint).await?;
        self.ctx.stats.collection(&self.namespace()).checkpointed();
        self.ctx.checkpoint_saved(&self.config.namespace);
        self.position_unsaved = false;
        self.last_save = Instant::now();
        Ok(())
    }

    /// Saves the acknowledged stream position: while changes flow, at most once per
    /// `STREAM_CHECKPOINT_EVERY` (a replay of that much after a crash is harmless, and a
    /// checkpoint write per batch would load MongoDB); always when `force`d (idle, stop, errors).
    async fn save_position(&mut self, force: bool) -> SyncResult<()> {
        if self.position_unsaved && (force || self.last_save.elapsed() >= STREAM_CHECKPOINT_EVERY) {
            self.save().await?;
        }
        Ok(())
    }

    /// Copy then stream; returns when stopped. Transient MongoDB failures are retried from
    /// the last checkpoint, which is also the in-memory position. `opened_stream`, opened (and
    /// so validated) at start, serves the first stream phase.
    pub async fn run(mut self, mut opened_stream: Option<CollectionStream>) -> SyncResult<()> {
        let mut attempt = 0;
        loop {
            let result = self.run_phases(opened_stream.take()).await;
            match result {
                Ok(_) => return Ok(()),
                Err(e) if e.code == ErrorCode::MongoUnreachable && !self.ctx.cancel.is_cancelled() => {
                    attempt += 1;
                    let ctx = self.ctx;
                    if !wait_before_retry(&ctx.config.retry, attempt, e.to_string(), &ctx.stats, &ctx.events, &ctx.cancel).await {
                        return Ok(());
                    }
                }
                Err(e) if e.code == ErrorCode::State && self.ctx.cancel.is_cancelled() => return Ok(()),
                // An event too large to read blocks the stream as lost history does: a re-copy gets past it.
                Err(e)
                    if matches!(e.code, ErrorCode::HistoryLost | ErrorCode::EventTooLarge) && self.ctx.config.on_history_lost == HistoryLostPolicy::Resync =>
                {
                    begin_resync(self.ctx, self.config, &mut self.checkpoint, &e).await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn run_phases(&mut self, opened_stream: Option<CollectionStream>) -> SyncResult<Flow> {
        if let (SyncMode::Stream { start_at }, false) = (self.ctx.config.mode, self.checkpoint.copy_done) {
            // Stream only, after a resync (start() set the others' start points): no copy.
            self.checkpoint.start_at = Some(stream_start(&self.ctx.client, start_at).await?);
            self.checkpoint.copy_done = true;
            self.save().await?;
        }
        if !self.checkpoint.copy_done {
            if self.checkpoint.start_at.is_none() {
                // Rule: capture the stream's start before scanning, so nothing changed during the copy is missed.
                self.checkpoint.start_at = Some(cluster_now(&self.ctx.client).await?);
                self.save().await?;
            }
            if self.copy().await? == Flow::Stopped {
                return Ok(Flow::Stopped);
            }
        }
        if let Some(old) = self.checkpoint.replaces.clone() {
            let new_index = self.index();
            let version = self.checkpoint.start_at.map_or(0, version_of);
            let action = IndexAction::SwapAlias { alias: self.config.index.clone(), index: new_index.clone(), replaces: old };
            self.ctx.sink.apply(&IndexChange { namespace: self.namespace(), version, action }).await.until_stopped()?;
            self.checkpoint.replaces = None;
            self.save().await?;
            self.ctx.events.emit(SyncEvent::Change { namespace: self.namespace(), operation: "resync".into(), to: Some(new_index) });
        }
        if self.ctx.config.mode == SyncMode::Copy {
            self.ctx.stats.collection(&self.namespace()).set_phase(CollectionPhase::Done);
            return Ok(Flow::Done);
        }
        self.ctx.copy_finished(&self.config.namespace);
        self.stream(opened_stream).await
    }

    /// Reads `range` of `collection` for `target`, shaped by `settings`.
    fn range_reader(
        &self,
        settings: &CollectionConfig,
        collection: Collection<Document>,
        range: CopyRange,
        index: usize,
        target: &Target,
        version: i64,
    ) -> RangeReader {
        RangeReader {
            collection,
            range,
            index,
            namespace: settings.namespace.to_string(),
            target: target.clone(),
            routing: settings.routing.clone(),
            version,
            limits: self.ctx.config.batch.clone(),
            convert: settings.convert.clone(),
            fields: settings.fields.clone(),
            filter: settings.filter.clone(),
            cancel: self.ctx.cancel.clone(),
        }
    }

    async fn copy(&mut self) -> SyncResult<Flow> {
        let ctx = self.ctx;
        let ns = self.namespace();
        let target = self.target();
        let start_at = self.checkpoint.start_at.expect("start point captured before the copy");
        let version = version_of(start_at);
        let collection = self.collection();
        let total = collection.estimated_document_count().await.unwrap_or(0);
        ctx.stats.collection(&ns).copy_started(self.checkpoint.copied, total);
        if self.checkpoint.copy_ranges.is_empty() {
            self.checkpoint.copy_ranges = self.plan_ranges(&collection, total).await?;
            self.save().await?;
        }

        // One reader per unfinished range converts while the writer waits on Elasticsearch;
        // the channel bounds what is read ahead.
        let readers = self.checkpoint.copy_ranges.iter().filter(|r| !r.done).count().max(1);
        let (tx, mut rx) = mpsc::channel::<SyncResult<CopyItem>>(2 * readers);
        let mut reader_tasks = tokio::task::JoinSet::new();
        for (index, range) in self.checkpoint.copy_ranges.iter().enumerate().filter(|(_, r)| !r.done) {
            let reader = self.range_reader(self.config, collection.clone(), range.clone(), index, &target, version);
            let tx = tx.clone();
            reader_tasks.spawn(async move {
                if let Err(e) = reader.read(&tx).await {
                    let _ = tx.send(Err(e)).await;
                }
            });
        }
        drop(tx);

        // Up to `concurrency` bulk requests in flight; they are acknowledged, and so checkpointed,
        // in read order. (Their relative order does not matter for correctness: the versions do.)
        let concurrency = ctx.config.batch.concurrency.max(1);
        let mut in_flight = FuturesOrdered::new();
        let mut reader_done = false;
        let mut stopping = false;
        let progress = ProgressMeter::new(self.checkpoint.copied, total);
        let mut last_progress = Instant::now();
        let (ns_ref, target_ref) = (&ns, &target);
        // Until everything read is acknowledged (or, once stopping, everything sent).
        while !((reader_done || stopping) && in_flight.is_empty()) {
            tokio::select! {
                biased;
                _ = ctx.cancel.cancelled(), if !stopping => stopping = true,
                acked = in_flight.next(), if !in_flight.is_empty() => {
                    let Some(acked) = acked else { continue };
                    match acked? {
                        CopyAck::Batch { range, last_id, read } => {
                            self.checkpoint.copy_ranges[range].last_id = Some(last_id);
                            self.checkpoint.copied += read;
                        }
                        CopyAck::RangeDone(range) => self.checkpoint.copy_ranges[range].done = true,
                    }
                    self.save().await?;
                    if last_progress.elapsed() >= Duration::from_millis(500) {
                        last_progress = Instant::now();
                        ctx.events.emit(progress.event(ns_ref, &target_ref.index, self.checkpoint.copied, false));
                    }
                }
                next = rx.recv(), if !reader_done && !stopping && in_flight.len() < concurrency => match next {
                    None => reader_done = true,
                    Some(Err(e)) => return Err(e),
                    Some(Ok(item)) => in_flight.push_back(async move {
                        match item {
                            CopyItem::Batch { range, batch, last_id } => {
                                let read = batch.read_count();
                                commit(ctx, ns_ref, target_ref, Phase::Copy, *batch).await.map(|()| CopyAck::Batch { range, last_id, read })
                            }
                            CopyItem::RangeDone(range) => Ok(CopyAck::RangeDone(range)),
                        }
                    }),
                },
            }
        }
        reader_tasks.abort_all();
        if stopping {
            return Ok(Flow::Stopped);
        }
        self.checkpoint.copy_done = true;
        self.save().await?;
        ctx.events.emit(progress.event(&ns, &target.index, self.checkpoint.copied, true));
        Ok(Flow::Done)
    }

    /// Ranges for a fresh copy: split at a sample of `_id`s when the collection is large enough
    /// to gain from several cursors.
    async fn plan_ranges(&self, collection: &Collection<Document>, total: u64) -> SyncResult<Vec<CopyRange>> {
        // A range per `copy_range_min_docs` documents, at most `copy_readers`: parallel cursors
        // pay off only when the copy is long; a short one reads with one cursor and plans nothing.
        let config = &self.ctx.config;
        let readers = config.copy_readers.min((total / config.copy_range_min_docs.max(1)) as usize);
        if readers < 2 {
            return Ok(vec![CopyRange::default()]);
        }
        let extremes = copy::id_extremes(collection).await.map_err(|e| mongo_error(format!("cannot read the _id range of {}", self.namespace()), &e))?;
        let extremes = extremes.as_ref().map(|(min, max)| (min, max));
        match copy::sample_ids(collection, readers * 32).await {
            Ok(sample) => Ok(copy::plan_ranges(&sample, readers, extremes)),
            Err(e) => {
                self.ctx.events.emit(SyncEvent::Warning {
                    namespace: self.namespace(),
                    message: format!("cannot sample _ids to split the copy ({}); reading with one cursor", crate::error::cause_chain(&e)),
                });
                Ok(copy::plan_ranges(&[], 1, extremes))
            }
        }
    }

    fn stream_start(&self) -> StreamStart {
        match (&self.checkpoint.resume_token, self.checkpoint.start_at) {
            (Some(token), _) => StreamStart::ResumeAfter(token.clone()),
            (None, Some(at)) => StreamStart::AtOperationTime(at),
            (None, None) => unreachable!("a collection reaches its stream with a start point"),
        }
    }

    async fn open_stream(&self, start: &StreamStart) -> SyncResult<CollectionStream> {
        change_stream::open(&self.collection(), start, self.ctx.max_await()).await.map_err(|e| stream_open_error(&self.config.namespace.to_string(), &e))
    }

    /// Follows the change stream, read ahead by its own task: batches are committed one at a
    /// time, each as soon as the previous one is acknowledged and nothing more is waiting
    /// (or it is full, or `flushInterval` old), so that under load batches grow instead of
    /// changes waiting behind one another.
    async fn stream(&mut self, opened_stream: Option<CollectionStream>) -> SyncResult<Flow> {
        let ctx = self.ctx;
        let ns = self.namespace();
        let target = self.target();
        let limits = ctx.config.batch.clone();
        let stream = match opened_stream {
            Some(s) => s,
            None => self.open_stream(&self.stream_start()).await?,
        };
        let read_ahead = limits.max_docs.clamp(16, 1024);
        let mut reader = ReadAhead::start(stream, read_ahead, ctx.cancel.clone());
        let mut batch = Batch::default();
        // Token of the last event in `batch`: the position to save once it is acknowledged.
        let mut batch_token: Option<Document> = None;
        let mut last_saved = Instant::now();

        loop {
            if self.in_flight.get_mut().is_none() && !batch.is_empty() && (reader.is_empty() || batch.age_ms() >= limits.flush_interval.as_millis()) {
                self.dispatch(&ns, &target, &mut batch, &mut batch_token).await?;
            }
            let item = tokio::select! {
                biased;
                _ = ctx.cancel.cancelled() => None,
                acked = async { self.in_flight.get_mut().as_mut().expect("polled only when in flight").await }, if self.in_flight.get_mut().is_some() => {
                    *self.in_flight.get_mut() = None;
                    self.acknowledge(acked?).await?;
                    if batch.is_empty() && reader.is_empty() {
                        // Caught up: the position is saved now, not at the next change.
                        self.save_position(true).await?;
                        last_saved = Instant::now();
                    }
                    continue;
                }
                item = reader.next() => match item {
                    Some(item) => Some(item),
                    None if ctx.cancel.is_cancelled() => None,
                    None => return Err(SyncError::new(ErrorCode::Internal, format!("the change stream reader of {ns} ended"))),
                },
            };
            match item {
                None => {
                    self.flush(&ns, &target, &mut batch, &mut batch_token).await?;
                    self.save_position(true).await?;
                    return Ok(Flow::Stopped);
                }
                Some(StreamItem::Failed(e)) => {
                    // What was read is still written and checkpointed before reopening.
                    self.flush(&ns, &target, &mut batch, &mut batch_token).await?;
                    self.save_position(true).await?;
                    return Err(mongo_error(format!("change stream of {ns} failed"), &e));
                }
                Some(StreamItem::Idle(position)) => {
                    if self.in_flight.get_mut().is_some() || !batch.is_empty() {
                        // Dispatched and acknowledged by the loop; saved at the next idle turn.
                    } else if self.position_unsaved {
                        self.save_position(true).await?;
                        last_saved = Instant::now();
                    } else if last_saved.elapsed() >= IDLE_CHECKPOINT_EVERY {
                        // Rule: idle collections keep a fresh token so they stay inside the history window.
                        if let Some(token) = position {
                            if self.checkpoint.resume_token.as_ref() != Some(&token) {
                                self.checkpoint.resume_token = Some(token);
                                self.save().await?;
                            }
                        }
                        last_saved = Instant::now();
                    }
                }
                Some(StreamItem::Event(event)) => {
                    let event = *event;
                    let token = change_stream::token_document(&event.id);
                    if event.operation_type == OperationType::Invalidate {
                        self.flush(&ns, &target, &mut batch, &mut batch_token).await?;
                        ctx.events.emit(SyncEvent::Change { namespace: ns.clone(), operation: "invalidate".into(), to: None });
                        let Some(token) = token else {
                            return Err(SyncError::new(ErrorCode::Mongo, format!("invalidate event of {ns} has no usable token")));
                        };
                        let stream = self.open_stream(&StreamStart::StartAfter(token)).await?;
                        // The new stream's first position replaces the invalidate token, which cannot be resumed after.
                        if let Some(t) = stream.resume_token().as_ref().and_then(change_stream::token_document) {
                            self.checkpoint.resume_token = Some(t);
                            self.save().await?;
                        }
                        reader = ReadAhead::start(stream, read_ahead, ctx.cancel.clone());
                        continue;
                    }
                    if matches!(event.operation_type, OperationType::Drop | OperationType::DropDatabase | OperationType::Rename) {
                        self.flush(&ns, &target, &mut batch, &mut batch_token).await?;
                        self.apply_collection_change(&event).await?;
                        if let Some(token) = token {
                            self.checkpoint.resume_token = Some(token);
                            self.save().await?;
                        }
                        continue;
                    }
                    self.add_event(&ns, &target, &mut batch, &mut batch_token, event, token, &limits).await?;
                    last_saved = Instant::now();
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn add_event(
        &mut self,
        ns: &str,
        target: &Target,
        batch: &mut Batch,
        batch_token: &mut Option<Document>,
        event: ChangeStreamEvent<Document>,
        token: Option<Document>,
        limits: &BatchConfig,
    ) -> SyncResult<()> {
        let Some(cluster_time) = event.cluster_time else {
            return Err(SyncError::new(ErrorCode::Mongo, format!("change event of {ns} has no clusterTime")));
        };
        let version = version_of(cluster_time);
        let wanted = self.config.operations;
        let (applied, operation) = match event.operation_type {
            OperationType::Insert => (wanted.insert, Operation::Insert),
            OperationType::Update => (wanted.update, Operation::Update),
            OperationType::Replace => (wanted.replace, Operation::Replace),
            OperationType::Delete => (wanted.delete, Operation::Delete),
            _ => (true, Operation::Update),
        };
        if !applied {
            batch.push_skipped();
            *batch_token = token;
            return Ok(());
        }
        // Record outputs tell the change apart by its stream position.
        let position = token.as_ref().map(change_stream::position_of);
        let stamp = |w: DocumentWrite| DocumentWrite { operation, position: position.clone(), ..w };
        if let (Some(filter), OperationType::Insert | OperationType::Update | OperationType::Replace) = (&self.config.filter, &event.operation_type) {
            let write = self.filtered_write(ns, filter, &event, version, batch).await?.map(stamp);
            return self.add_write(ns, target, batch, batch_token, Some(write), token, limits).await;
        }
        let write = match event.operation_type {
            // An update whose document is already deleted has no full document: its delete event follows.
            OperationType::Insert | OperationType::Replace | OperationType::Update => event.full_document.as_ref().map(|doc| {
                index_write(doc, version, &self.config.convert, &self.config.fields, batch.warnings())
                    .map(|w| DocumentWrite { routing: self.routing_of(doc), ..w })
            }),
            // The routing of a delete can only come from the document key (a shard key field).
            OperationType::Delete => match event.document_key.as_ref().and_then(|k| k.get("_id").map(|id| (k, id))) {
                Some((key, id)) => Some(delete_write(id, version).map(|w| DocumentWrite { routing: self.routing_of(key), ..w })),
                None => Some(Err(Rejected::new(describe_id(&Bson::Null), "delete event without documentKey._id"))),
            },
            // Other event types (index builds, collection creation…) change no document.
            _ => None,
        };
        let write = write.map(|w| w.map(stamp));
        self.add_write(ns, target, batch, batch_token, write, token, limits).await
    }

    /// For a filtered collection: whether the changed document matches now decides between
    /// indexing it and deleting it (an update may move it out of the filter, or into it). The
    /// server answers, so the filter means exactly what it means to MongoDB.
    async fn filtered_write(
        &self,
        ns: &str,
        filter: &Document,
        event: &ChangeStreamEvent<Document>,
        version: i64,
        batch: &mut Batch,
    ) -> SyncResult<Result<DocumentWrite, Rejected>> {
        let Some(id) = event.document_key.as_ref().and_then(|k| k.get("_id")) else {
            return Ok(Err(Rejected::new(describe_id(&Bson::Null), "change event without documentKey._id")));
        };
        let current = self
            .collection()
            .find_one(mongodb::bson::doc! {"$and": [{"_id": id.clone()}, filter.clone()]})
            .await
            .map_err(|e| mongo_error(format!("cannot check the filter of {ns}"), &e))?;
        Ok(match current {
            Some(doc) => index_write(&doc, version, &self.config.convert, &self.config.fields, batch.warnings())
                .map(|w| DocumentWrite { routing: self.routing_of(&doc), ..w }),
            None => delete_write(id, version),
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn add_write(
        &mut self,
        ns: &str,
        target: &Target,
        batch: &mut Batch,
        batch_token: &mut Option<Document>,
        write: Option<Result<DocumentWrite, Rejected>>,
        token: Option<Document>,
        limits: &BatchConfig,
    ) -> SyncResult<()> {
        match write {
            Some(Ok(write)) => {
                if batch.room_for(target, &write, limits) == Room::FlushFirst {
                    self.dispatch(ns, target, batch, batch_token).await?;
                }
                batch.push(target, write, limits);
            }
            Some(Err(rejected)) => batch.push_rejected(rejected),
            None => batch.push_skipped(),
        }
        *batch_token = token;
        Ok(())
    }

    /// Applies a drop, dropDatabase or rename of the collection to its index, per `onDrop` / `onRename`.
    async fn apply_collection_change(&mut self, event: &ChangeStreamEvent<Document>) -> SyncResult<()> {
        let ctx = self.ctx;
        let ns = self.namespace();
        let index = self.index();
        let version = version_of(event.cluster_time.unwrap_or(Timestamp { time: 0, increment: 0 }));
        let change = |action| IndexChange { namespace: ns.clone(), version, action };
        let (operation, to) = match event.operation_type {
            OperationType::Drop => ("drop", None),
            OperationType::DropDatabase => ("dropDatabase", None),
            _ => ("rename", event.to.as_ref().map(|t| Namespace { db: t.db.clone(), coll: t.coll.clone().unwrap_or_default() })),
        };
        match (operation, &to) {
            ("rename", Some(to_ns)) => {
                let to_settings = ctx.config.collection_for(to_ns);
                let to_index = ctx.config.index_for(to_ns);
                if to_index != index && ctx.config.on_rename != RenamePolicy::Ignore {
                    ctx.sink.prepare_index(&to_index, None).await.until_stopped()?;
                    match ctx.config.on_rename {
                        RenamePolicy::Move => {
                            ctx.sink.apply(&change(IndexAction::Reindex { from: index.clone(), to: to_index.clone() })).await.until_stopped()?
                        }
                        _ => self.copy_once(to_ns, to_settings.as_ref(), &Target::index(to_index.clone()), version).await?,
                    }
                    ctx.sink.apply(&change(IndexAction::DeleteDocuments { index: index.clone() })).await.until_stopped()?;
                }
            }
            ("rename", None) => return Err(SyncError::new(ErrorCode::Mongo, format!("rename event of {ns} has no target namespace"))),
            _ => match ctx.config.on_drop {
                DropPolicy::DeleteDocuments => ctx.sink.apply(&change(IndexAction::DeleteDocuments { index })).await.until_stopped()?,
                DropPolicy::DeleteIndex => ctx.sink.apply(&change(IndexAction::DeleteIndex { index })).await.until_stopped()?,
                DropPolicy::Ignore => {}
            },
        }
        ctx.events.emit(SyncEvent::Change { namespace: ns, operation: operation.into(), to: to.map(|t| t.to_string()) });
        Ok(())
    }

    /// A one-off copy of another collection (a rename's target), without checkpoints: if it is
    /// interrupted, the rename event is not checkpointed and is applied again. Its documents are
    /// shaped by its own `settings` when it has some (listed, or matched by `namespaces`), else
    /// by this collection's field rules, without this collection's filter and routing.
    async fn copy_once(&self, source: &Namespace, settings: Option<&CollectionConfig>, target: &Target, version: i64) -> SyncResult<()> {
        let ctx = self.ctx;
        let ns = source.to_string();
        let collection = ctx.client.database(&source.db).collection::<Document>(&source.coll);
        let reader = match settings {
            Some(settings) => self.range_reader(settings, collection, CopyRange::default(), 0, target, version),
            None => RangeReader {
                namespace: ns.clone(),
                routing: None,
                filter: None,
                ..self.range_reader(self.config, collection, CopyRange::default(), 0, target, version)
            },
        };
        let (tx, mut rx) = mpsc::channel::<SyncResult<CopyItem>>(2);
        let reading = async move {
            let result = reader.read(&tx).await;
            drop(tx);
            result
        };
        let writing = async {
            while let Some(item) = rx.recv().await {
                match item? {
                    CopyItem::Batch { batch, .. } => commit(ctx, &ns, target, Phase::Copy, *batch).await?,
                    CopyItem::RangeDone(_) => return Ok(()),
                }
            }
            Err(SyncError::new(ErrorCode::State, format!("stopped while copying {ns}")))
        };
        tokio::try_join!(reading, writing).map(drop)
    }

    /// Commits the batch and waits for it (and any batch before it) to be acknowledged.
    async fn flush(&mut self, ns: &str, target: &Target, batch: &mut Batch, batch_token: &mut Option<Document>) -> SyncResult<()> {
        self.dispatch(ns, target, batch, batch_token).await?;
        self.settle().await
    }

    /// Starts committing the batch, after the one in flight (if any) is acknowledged: one
    /// batch in flight at a time keeps the stream's writes in order.
    async fn dispatch(&mut self, ns: &str, target: &Target, batch: &mut Batch, batch_token: &mut Option<Document>) -> SyncResult<()> {
        self.settle().await?;
        if batch.is_empty() {
            return Ok(());
        }
        let (ctx, ns, target) = (self.ctx, ns.to_string(), target.clone());
        let (batch, token) = (std::mem::take(batch), batch_token.take());
        *self.in_flight.get_mut() = Some(Box::pin(async move { commit(ctx, &ns, &target, Phase::Stream, batch).await.map(|()| token) }));
        Ok(())
    }

    /// Waits for the batch in flight, if any.
    async fn settle(&mut self) -> SyncResult<()> {
        if let Some(in_flight) = self.in_flight.get_mut().take() {
            let token = in_flight.await?;
            self.acknowledge(token).await?;
        }
        Ok(())
    }

    /// The position of a committed batch's last event is acknowledged (and saved, see `save_position`).
    async fn acknowledge(&mut self, token: Option<Document>) -> SyncResult<()> {
        if let Some(token) = token {
            self.checkpoint.resume_token = Some(token);
            self.position_unsaved = true;
            self.save_position(false).await?;
        }
        Ok(())
    }
}

/// Starts copying a collection again after its stream position was lost: into a new concrete
/// index `<index>-<n>`, while the index readers use stays as it is until the copy is done.
pub(super) async fn begin_resync(ctx: &Context, config: &CollectionConfig, cp: &mut CollectionCheckpoint, cause: &SyncError) -> SyncResult<()> {
    let current = cp.physical_index.clone().unwrap_or_else(|| config.index.clone());
    // An unfinished earlier re-copy: its half-filled index goes, the one readers use stays.
    let serving = match cp.replaces.clone() {
        Some(serving) => {
            if serving != current {
                let action = IndexAction::DeleteIndex { index: current.clone() };
                ctx.sink
                    .apply(&IndexChange { namespace: config.namespace.to_string(), version: cp.start_at.map_or(0, version_of), action })
                    .await
                    .until_stopped()?;
            }
            serving
        }
        None => current,
    };
    let generation = cp.generation + 1;
    let new_index = format!("{}-{generation}", config.index);
    *cp = CollectionCheckpoint { physical_index: Some(new_index.clone()), generation, replaces: Some(serving.clone()), ..Default::default() };
    ctx.sink.prepare_index(&new_index, Some(config)).await.until_stopped()?;
    ctx.store.save(&config.namespace, cp).await?;
    ctx.checkpoint_saved(&config.namespace);
    ctx.copy_started(&config.namespace);
    ctx.events.emit(SyncEvent::Warning {
        namespace: config.namespace.to_string(),
        message: format!("{cause}; copying again into \"{new_index}\" (\"{serving}\" stays readable until then)"),
    });
    Ok(())
}

/// Opening a stream at a saved position that is gone is lost history, not a passing fault.
pub fn stream_open_error(ns: &str, err: &mongodb::error::Error) -> SyncError {
    let mut e = mongo_error(format!("cannot open the change stream of {ns}"), err);
    if change_stream::is_history_lost(err) {
        e.code = ErrorCode::HistoryLost;
        e.message = format!(
            "the saved position of {ns} is no longer in the change stream history (or is invalid); \
             nothing was written. Re-copy the collection by deleting its checkpoint. Cause: {}",
            e.message
        );
    }
    e
}
