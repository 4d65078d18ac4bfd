//! The stream phase: the collection's change stream, read ahead by the source; changes become
//! writes in a batch, committed one batch at a time (keeping changes in order), each as soon as
//! the previous one is acknowledged and nothing more is waiting (or it is full, or
//! `flushInterval` old), so that under load batches grow instead of changes queueing. The
//! position after an acknowledged batch is the durable one.

use std::time::Instant;

use mongodb::bson::{Bson, Document, RawDocument, Timestamp};

use super::collection_change::{EmptiedWatch, PendingDrop};
use super::lookups::PendingLookups;
use super::missed::MissedLookups;
use super::CollectionSync;
use crate::checkpoint::CollectionCheckpoint;
use crate::config::OperationFilter;
use crate::error::{ErrorCode, SyncError, SyncResult};
use crate::event::{CollectionChange, Phase};
use crate::pipeline::ack::InOrder;
use crate::pipeline::batch::{commit, Batch, Room};
use crate::pipeline::{Context, Flow, PhaseResult, Proceed};
use crate::sink::Target;
use crate::source::{position_of, Change, ChangeFeed, ChangeKind, DocumentChange, FeedLimits, StreamItem, StreamStart};
use crate::stats::Stage;
use crate::transform::{delete_write, describe_id, routing_value, routing_value_raw, version_of, DocumentWrite, Operation, Rejected};

/// How much of a collection's stream is read ahead of its writes.
pub fn feed_limits(ctx: &Context) -> FeedLimits {
    FeedLimits { items: ctx.config.batch.max_docs.clamp(16, 1024), ..FeedLimits::default() }
}

/// Where a collection's stream continues from its checkpoint.
pub fn stream_start(cp: &CollectionCheckpoint) -> Option<StreamStart> {
    match (&cp.resume_token, cp.start_at) {
        (Some(token), _) if cp.token_is_invalidate => Some(StreamStart::StartAfter(token.clone())),
        (Some(token), _) => Some(StreamStart::ResumeAfter(token.clone())),
        (None, Some(at)) => Some(StreamStart::AtOperationTime(at)),
        (None, None) => None,
    }
}

/// Whether a change of this kind is applied, per `operations`.
pub(super) fn applies(operations: OperationFilter, operation: Operation) -> bool {
    match operation {
        Operation::Insert => operations.insert,
        Operation::Update => operations.update,
        Operation::Replace => operations.replace,
        Operation::Delete => operations.delete,
        Operation::Copy => true,
    }
}

/// The stream's batch state: the batch being filled, the position after its last change, and
/// the one batch being committed.
pub(super) struct StreamBatch<'a> {
    pub target: Target,
    pub batch: Batch,
    /// The position to save once `batch` is acknowledged.
    token: Option<Document>,
    acks: InOrder<'a, Option<Document>, crate::pipeline::Halt>,
    /// When the position was last saved or found unchanged.
    last_saved: Instant,
    pub missed: MissedLookups,
    /// A filtered collection's changes waiting for their lookup (before anything else goes in `batch`).
    pub pending: PendingLookups,
    /// A drop read, not settled yet.
    pub pending_drop: Option<PendingDrop>,
    /// A rename was applied: the `invalidate` that follows is expected.
    pub renamed: bool,
    /// After a drop settled with the collection empty: whether contents appeared silently.
    pub emptied: EmptiedWatch,
}

impl StreamBatch<'_> {
    /// A batch that may go now: none in flight, and nothing more waiting (or it is old enough).
    fn due(&self, feed: &ChangeFeed, ctx: &Context) -> bool {
        let age = self.batch.age_ms().max(self.pending.age_ms());
        self.acks.is_empty() && !self.is_empty() && (feed.is_empty() || age >= ctx.config.batch.flush_interval.as_millis())
    }

    /// Nothing read waits to be written.
    fn is_empty(&self) -> bool {
        self.batch.is_empty() && self.pending.is_empty()
    }

    /// A change that makes no write still moves the position.
    fn skip(&mut self, token: Option<Document>) {
        self.batch.push_skipped();
        self.token = token;
    }
}

impl<'a> CollectionSync<'a> {
    pub(super) async fn open_feed(&self, start: &StreamStart) -> SyncResult<ChangeFeed> {
        self.ctx.source.open_stream(&self.config.namespace, start, feed_limits(self.ctx), self.ctx.cancel.clone()).await
    }

    /// Follows the change stream until stopped, or until the collection must be copied again.
    pub(super) async fn stream(&mut self, feed: Option<ChangeFeed>) -> PhaseResult<Flow> {
        let mut feed = match feed {
            Some(feed) => feed,
            None => self.open_feed(&stream_start(&self.checkpoint).expect("a collection reaches its stream with a start point")).await?,
        };
        let ctx = self.ctx;
        let mut state = StreamBatch {
            target: self.target(),
            batch: Batch::default(),
            token: None,
            acks: InOrder::new(1),
            last_saved: Instant::now(),
            missed: MissedLookups::default(),
            pending: PendingLookups::default(),
            pending_drop: None,
            renamed: false,
            emptied: EmptiedWatch::Off,
        };
        loop {
            if state.due(&feed, ctx) {
                self.dispatch(&mut state).await?;
            }
            let waiting = Instant::now();
            let item = tokio::select! {
                biased;
                _ = ctx.cancel.cancelled() => None,
                acked = state.acks.next(), if !state.acks.is_empty() => {
                    self.on_acknowledged(acked.expect("in flight")?, &mut state, &feed).await?;
                    continue;
                }
                item = feed.next() => match item {
                    Some(item) => {
                        ctx.stats.record_stage(Stage::ReadAheadWait, waiting.elapsed());
                        Some(item)
                    }
                    None if ctx.cancel.is_cancelled() => None,
                    None => return Err(SyncError::new(ErrorCode::Internal, format!("the change stream reader of {} ended", self.namespace())).into()),
                },
            };
            let Some(item) = item else {
                self.flush(&mut state).await?;
                self.save_position(true).await?;
                return Ok(Flow::Stopped);
            };
            if let Some(flow) = self.on_item(item, &mut state, &mut feed).await? {
                return Ok(flow);
            }
        }
    }

    async fn on_item(&mut self, item: StreamItem, state: &mut StreamBatch<'a>, feed: &mut ChangeFeed) -> PhaseResult<Option<Flow>> {
        match item {
            StreamItem::Failed(e) => {
                // What was read is still written and checkpointed before reopening.
                self.flush(state).await?;
                self.save_position(true).await?;
                Err(e.into())
            }
            StreamItem::Idle(position) => self.on_idle(position, state).await,
            StreamItem::Change(change) => self.on_change(*change, state, feed).await,
        }
    }

    async fn on_change(&mut self, change: Change, state: &mut StreamBatch<'a>, feed: &mut ChangeFeed) -> PhaseResult<Option<Flow>> {
        let Change { token, cluster_time, kind, .. } = change;
        if !matches!(kind, ChangeKind::Collection(_)) {
            // A change after a drop settles it.
            if let Some(flow) = self.settle_drop(state, true).await? {
                return Ok(Some(flow));
            }
        }
        match kind {
            ChangeKind::Document(dc) => {
                // The collection came back through its stream, which carries all of it.
                state.emptied = EmptiedWatch::Off;
                self.add_change(dc, token, cluster_time, state).await?;
                state.last_saved = Instant::now();
                Ok(None)
            }
            ChangeKind::Other => {
                self.resolve_lookups(state).await?;
                state.skip(token);
                Ok(None)
            }
            ChangeKind::Collection(CollectionChange::Invalidate) => {
                self.flush(state).await?;
                *feed = self.on_invalidate(token, cluster_time, state).await?;
                Ok(None)
            }
            ChangeKind::Collection(change) => {
                self.flush(state).await?;
                self.on_collection_change(change, cluster_time, token, state).await
            }
        }
    }

    /// The source has nothing new. A batch waiting is dispatched by the loop; an acknowledged
    /// position not saved yet is saved now; a quiet collection refreshes its saved position
    /// now and then so that it stays inside the history window.
    async fn on_idle(&mut self, position: Option<Document>, state: &mut StreamBatch<'a>) -> PhaseResult<Option<Flow>> {
        if let Some(pending) = &state.pending_drop {
            // Nothing followed a drop (yet): it was a plain one, or the collection was replaced,
            // which a quiet moment tells (the replacement's contents may still be arriving).
            if !pending.quiet_for(self.ctx.timing.drop_settles_after) {
                return Ok(None);
            }
            return self.settle_drop(state, false).await;
        }
        if !state.acks.is_empty() || !state.is_empty() {
            return Ok(None);
        }
        if let Some(flow) = self.watch_emptied(state).await? {
            return Ok(Some(flow));
        }
        if self.position_unsaved {
            // Caught up: saved once `stream_checkpoint_every` has passed since the last save, so
            // that a slow stream (a change or two per batch) does not write a checkpoint per batch.
            if !self.save_due() {
                return Ok(None);
            }
            self.save().await?;
        } else if state.last_saved.elapsed() >= self.ctx.timing.idle_checkpoint_every && self.may_save_now() {
            if let Some(token) = position.filter(|t| self.checkpoint.resume_token.as_ref() != Some(t)) {
                self.set_position(token);
                self.save().await?;
            }
        } else {
            return Ok(None);
        }
        state.last_saved = Instant::now();
        Ok(None)
    }

    async fn add_change(
        &mut self,
        dc: DocumentChange,
        token: Option<Document>,
        cluster_time: Option<Timestamp>,
        state: &mut StreamBatch<'a>,
    ) -> PhaseResult<()> {
        let Some(cluster_time) = cluster_time else {
            return Err(SyncError::new(ErrorCode::Mongo, format!("change event of {} has no clusterTime", self.namespace())).into());
        };
        if self.config.filter.is_some() {
            return self.queue_change(dc, token, cluster_time, state).await;
        }
        if !applies(self.config.operations, dc.operation) {
            state.skip(token);
            return Ok(());
        }
        // Record outputs tell the change apart by its stream position.
        let position = token.as_ref().map(position_of);
        let operation = dc.operation;
        let write = self.write_for(&dc, cluster_time, &mut state.batch, &mut state.missed);
        let write = write.map(|w| w.map(|w| DocumentWrite { operation, position, ..w }));
        self.add_write(write, token, state).await
    }

    /// The write a change of an unfiltered collection comes to: none for an update whose
    /// document is already gone (a delete follows, or a rename: the miss is noted in `missed`).
    fn write_for(&self, dc: &DocumentChange, at: Timestamp, batch: &mut Batch, missed: &mut MissedLookups) -> Option<Result<DocumentWrite, Rejected>> {
        let version = version_of(at);
        if dc.operation == Operation::Delete {
            return self.delete_for(dc, version, missed);
        }
        match (&dc.document, dc.key.as_ref().and_then(|k| k.get("_id"))) {
            (Some(doc), _) => Some(self.index_write(doc, version, batch)),
            (None, Some(id)) => {
                missed.add(id);
                None
            }
            (None, None) => None,
        }
    }

    /// The versioned delete of a delete event's document, routed by its key.
    pub(super) fn delete_for(&self, dc: &DocumentChange, version: i64, missed: &mut MissedLookups) -> Option<Result<DocumentWrite, Rejected>> {
        let Some(id) = dc.key.as_ref().and_then(|k| k.get("_id")) else {
            return Some(Err(Rejected::new(describe_id(&Bson::Null), "delete event without documentKey._id")));
        };
        missed.remove(id);
        Some(self.delete_write(id, version))
    }

    /// An index write of a whole raw document, routed when configured.
    pub(super) fn index_write(&self, doc: &RawDocument, version: i64, batch: &mut Batch) -> Result<DocumentWrite, Rejected> {
        let started = Instant::now();
        let routing = self.config.routing.as_deref().and_then(|path| routing_value_raw(doc, path));
        let write = self.converter.index_write(doc, version, batch.warnings()).map(|w| DocumentWrite { routing, ..w });
        self.ctx.stats.record_stage(Stage::Convert, started.elapsed());
        write
    }

    /// A delete of the document with this `_id`, routed when configured: routing lies within
    /// `_id` while streaming (see `CollectionConfig::check_routing`), so the `_id` gives it.
    pub(super) fn delete_write(&self, id: &Bson, version: i64) -> Result<DocumentWrite, Rejected> {
        let key = mongodb::bson::doc! {"_id": id.clone()};
        delete_write(id, version).map(|w| DocumentWrite { routing: self.routing_of(Some(&key)), ..w })
    }

    /// The shard routing value of a document, when configured.
    fn routing_of(&self, doc: Option<&Document>) -> Option<String> {
        self.config.routing.as_deref().zip(doc).and_then(|(path, doc)| routing_value(doc, path))
    }

    pub(super) async fn add_write(
        &mut self,
        write: Option<Result<DocumentWrite, Rejected>>,
        token: Option<Document>,
        state: &mut StreamBatch<'a>,
    ) -> PhaseResult<()> {
        match write {
            Some(Ok(write)) => {
                if state.batch.room_for(&state.target, &write, &self.ctx.config.batch) == Room::FlushFirst {
                    self.dispatch_batch(state).await?;
                }
                state.batch.push(&state.target, write, &self.ctx.config.batch);
            }
            Some(Err(rejected)) => state.batch.push_rejected(rejected),
            None => state.batch.push_skipped(),
        }
        state.token = token;
        if state.batch.is_full(&self.ctx.config.batch) {
            self.dispatch_batch(state).await?;
        }
        Ok(())
    }

    /// Commits the batch and waits for it (and any batch before it) to be acknowledged.
    pub(super) async fn flush(&mut self, state: &mut StreamBatch<'a>) -> PhaseResult<()> {
        self.dispatch(state).await?;
        self.settle(state).await
    }

    /// Answers the changes waiting for lookups, then commits the batch.
    pub(super) async fn dispatch(&mut self, state: &mut StreamBatch<'a>) -> PhaseResult<()> {
        self.resolve_lookups(state).await?;
        self.dispatch_batch(state).await
    }

    /// Starts committing the batch, after the one in flight (if any) is acknowledged: one
    /// batch in flight at a time keeps the stream's writes in order.
    async fn dispatch_batch(&mut self, state: &mut StreamBatch<'a>) -> PhaseResult<()> {
        let waiting = (!state.acks.is_empty() && !state.batch.is_empty()).then(Instant::now);
        self.settle(state).await?;
        if let Some(waiting) = waiting {
            self.ctx.stats.record_stage(Stage::GroupCommitWait, waiting.elapsed());
        }
        if state.batch.is_empty() {
            return Ok(());
        }
        let (ctx, ns, target) = (self.ctx, self.namespace(), state.target.clone());
        if std::mem::take(&mut self.index_deleted) {
            // The index was deleted with its collection (onDrop: 'deleteIndex'): it is prepared
            // again before anything is written to it, as at start.
            self.ctx.sink.prepare_index(&state.target.index, Some(&self.config)).await.proceed()?;
        }
        let (batch, token) = (std::mem::take(&mut state.batch), state.token.take());
        state.acks.push(async move { commit(ctx, &ns, &target, Phase::Stream, batch).await.map(|()| token) });
        Ok(())
    }

    /// Waits for the batch in flight, if any.
    async fn settle(&mut self, state: &mut StreamBatch<'a>) -> PhaseResult<()> {
        while let Some(acked) = state.acks.next().await {
            self.acknowledge(acked?).await?;
        }
        Ok(())
    }

    /// A batch was acknowledged while reading on; its position is saved at most once per
    /// `stream_checkpoint_every` (see `save_position`), and by the next idle moment after that.
    async fn on_acknowledged(&mut self, token: Option<Document>, state: &mut StreamBatch<'a>, feed: &ChangeFeed) -> SyncResult<()> {
        self.acknowledge(token).await?;
        if state.is_empty() && feed.is_empty() && !self.position_unsaved {
            state.last_saved = Instant::now();
        }
        Ok(())
    }

    /// The position of a committed batch's last change is acknowledged (and saved, see `save_position`).
    async fn acknowledge(&mut self, token: Option<Document>) -> SyncResult<()> {
        if let Some(token) = token {
            self.set_position(token);
            self.position_unsaved = true;
            self.save_position(false).await?;
        }
        Ok(())
    }

    /// Moves the durable stream position (in memory) to `token`, noting whether it is an
    /// `invalidate` token (reported by a stream opened after one until its first empty batch).
    pub(super) fn set_position(&mut self, token: Document) {
        self.checkpoint.token_is_invalidate = self.invalidated.as_ref() == Some(&token);
        self.checkpoint.resume_token = Some(token);
    }

    /// Saves the acknowledged stream position: while changes flow, at most once per
    /// `stream_checkpoint_every` (a replay of that much after a crash is harmless, and a
    /// checkpoint write per batch would load the store); always when `force`d (idle, stop, errors).
    pub(super) async fn save_position(&mut self, force: bool) -> SyncResult<()> {
        if self.position_unsaved && (force || self.save_due()) {
            self.save().await?;
        }
        Ok(())
    }

    /// `stream_checkpoint_every` has passed since the position was last saved (and the save
    /// may go now, see `may_save_now`).
    fn save_due(&self) -> bool {
        self.last_save.elapsed() >= self.ctx.timing.stream_checkpoint_every && self.may_save_now()
    }

    /// A position save that can wait goes now unless the checkpoint store is busy: then it is
    /// put off (for `save_put_off_at_most` at most), so that this collection reads and writes
    /// its changes instead of queueing behind others' saves (a thousand collections' saves,
    /// due together, held a change back for 30 s).
    fn may_save_now(&self) -> bool {
        !self.ctx.store.busy() || self.last_save.elapsed() >= self.ctx.timing.save_put_off_at_most
    }
}
