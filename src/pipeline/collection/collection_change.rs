//! Changes of a collection as a whole: drop and dropDatabase (`onDrop`), rename (`onRename`),
//! and the re-copy into a fresh index that ends with an atomic alias swap (`onHistoryLost:
//! 'resync'`).

use std::time::{Duration, Instant};

use mongodb::bson::{Document, Timestamp};
use tokio::sync::mpsc;

use super::copy::{CopyItem, RangeReader};
use super::missed::MissedLookups;
use super::stream::StreamBatch;
use super::CollectionSync;
use crate::checkpoint::{CollectionCheckpoint, CopyRange};
use crate::config::{CollectionConfig, DropPolicy, Namespace, RenamePolicy};
use crate::error::{ErrorCode, SyncError, SyncResult};
use crate::event::{CollectionChange, Phase, SyncEvent};
use crate::pipeline::batch::{commit, Batch, Room};
use crate::pipeline::{Context, Flow, Halt, PhaseResult, Proceed};
use crate::sink::{IndexAction, IndexChange, Target};
use crate::source::{ChangeFeed, StreamStart};
use crate::transform::{delete_write, version_of};

/// A drop (or an `invalidate` with no drop or rename before it) waiting to be told from a
/// replacement until the stream reopened after it shows what followed: a change through it
/// means a plain drop, none while the collection holds documents means its contents were
/// replaced (a rename into it with `dropTarget`, `$out`), which its stream never carries.
pub(super) struct PendingDrop {
    /// The drop to apply per `onDrop` if it was a plain one (none for a bare `invalidate`).
    change: Option<CollectionChange>,
    /// When the drop happened (its version is made from it).
    at: Timestamp,
    /// When the `invalidate` after it happened (a stream there reads nothing before it).
    invalidated_at: Option<Timestamp>,
    /// When the stream after the `invalidate` was opened: its first change settles it, or an
    /// idle turn once it has been quiet for `Timing::drop_settles_after`.
    pub reopened: Option<Instant>,
}

impl PendingDrop {
    /// Whether an idle turn now may settle it.
    pub fn quiet_for(&self, at_least: Duration) -> bool {
        self.reopened.is_some_and(|at| at.elapsed() >= at_least)
    }
}

/// After a drop applied (or a bare `invalidate`) with the collection empty: contents that then
/// appear without a change in its stream were put there by a rename, which its stream never
/// shows (SecantusDB's `$out` drops, then renames into the absent collection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum EmptiedWatch {
    #[default]
    Off,
    /// No documents seen yet.
    Watching,
    /// Documents seen at one idle turn with no change before it: one more quiet turn (which a
    /// plain insert's change would have come before) and they were renamed in.
    Found,
}

impl CollectionSync<'_> {
    fn emit(&self, change: CollectionChange) {
        self.ctx.events.emit(SyncEvent::Change { namespace: self.namespace(), change });
    }

    /// The collection's contents were replaced: it is copied again.
    fn replaced(&self, change: Option<CollectionChange>) -> Flow {
        if let Some(change) = change {
            self.emit(change);
        }
        Flow::Recopy(format!("{} was replaced by other contents (a rename into it, or $out onto it)", self.config.namespace))
    }

    /// A drop, dropDatabase or rename read from the stream, once everything before it is
    /// acknowledged. A flow when the collection must be copied again.
    pub(super) async fn on_collection_change(
        &mut self,
        change: CollectionChange,
        cluster_time: Option<Timestamp>,
        token: Option<Document>,
        state: &mut StreamBatch<'_>,
    ) -> PhaseResult<Option<Flow>> {
        let at = cluster_time.unwrap_or(Timestamp { time: 0, increment: 0 });
        let version = version_of(at);
        let missed = std::mem::take(&mut state.missed);
        match &change {
            CollectionChange::Rename { to } if *to == self.config.namespace => Ok(Some(self.replaced(Some(change)))),
            CollectionChange::Rename { to } => {
                self.apply_rename(to, version, &missed).await?;
                self.emit(change);
                state.renamed = true;
                if let Some(token) = token {
                    self.set_position(token);
                    self.save().await?;
                }
                Ok(None)
            }
            _ if self.ctx.source.has_documents(&self.config.namespace).await? => Ok(Some(self.replaced(Some(change)))),
            _ => {
                state.pending_drop = Some(PendingDrop { change: Some(change), at, invalidated_at: None, reopened: None });
                Ok(None)
            }
        }
    }

    /// The stream ended with `invalidate` (after a drop or rename); it goes on after it. Its
    /// token is saved as such (the server resumes from it only with `startAfter`), unless a
    /// drop before it is not settled yet: then the position stays before the drop.
    pub(super) async fn on_invalidate(&mut self, token: Option<Document>, at: Option<Timestamp>, state: &mut StreamBatch<'_>) -> SyncResult<ChangeFeed> {
        self.emit(CollectionChange::Invalidate);
        let Some(token) = token else {
            return Err(SyncError::new(ErrorCode::Mongo, format!("invalidate event of {} has no usable token", self.namespace())));
        };
        self.invalidated = Some(token.clone());
        match &mut state.pending_drop {
            Some(pending) => (pending.reopened, pending.invalidated_at) = (Some(Instant::now()), at),
            None if std::mem::take(&mut state.renamed) => {
                self.set_position(token.clone());
                self.save().await?;
            }
            None => {
                let at0 = Timestamp { time: 0, increment: 0 };
                state.pending_drop = Some(PendingDrop { change: None, at: at0, invalidated_at: at, reopened: Some(Instant::now()) });
            }
        }
        self.open_feed(&StreamStart::StartAfter(token)).await
    }

    /// Settles a drop waiting since the last `invalidate`, once the reopened stream read a
    /// change (`changed`) or found nothing new for a moment. A flow when the collection holds
    /// documents again (replaced, or re-created at once): it is copied again.
    pub(super) async fn settle_drop(&mut self, state: &mut StreamBatch<'_>, changed: bool) -> PhaseResult<Option<Flow>> {
        let Some(pending) = state.pending_drop.take_if(|p| p.reopened.is_some()) else { return Ok(None) };
        // Documents there by now, with or without changes before them: the contents were
        // replaced (SecantusDB's `$out` drops, then renames into the collection, which a stream
        // opened after it reads as inserts), or the collection was re-created at once; either
        // way a re-copy behind the alias ends equal to it, and readers never see it emptied.
        if self.ctx.source.has_documents(&self.config.namespace).await? {
            return Ok(Some(self.replaced(pending.change)));
        }
        if let Some(change) = pending.change {
            self.apply_drop(version_of(pending.at)).await?;
            state.target = self.target();
            self.emit(change);
            if self.found_by_pattern() {
                return self.unfollow(pending.at.max(pending.invalidated_at.unwrap_or(pending.at))).await.map(Some);
            }
        }
        if !changed {
            state.emptied = EmptiedWatch::Watching;
        }
        // Everything up to the invalidate is applied.
        let token = self.invalidated.clone().expect("reopened after an invalidate");
        self.set_position(token);
        self.save().await?;
        Ok(None)
    }

    /// Whether the collection was found by a `namespaces` pattern (not listed in `collections`).
    fn found_by_pattern(&self) -> bool {
        self.ctx.config.discovery.is_some() && !self.ctx.config.collections.iter().any(|c| c.namespace == self.config.namespace)
    }

    /// A dropped collection that a pattern found is followed no more (its stream and the
    /// connection its reads hold go), so that collections created and dropped without end do
    /// not pile up. Its checkpoint starts over, keeping only its concrete indices: if discovery
    /// finds it again, it is copied (or, stream only, followed from after `ended_at`, its drop
    /// or the `invalidate` after it) as a new one.
    async fn unfollow(&mut self, ended_at: Timestamp) -> PhaseResult<Flow> {
        let CollectionCheckpoint { physical_index, generation, replaces, .. } = std::mem::take(&mut self.checkpoint);
        self.checkpoint = CollectionCheckpoint { physical_index, generation, replaces, ..Default::default() };
        self.save().await?;
        Ok(Flow::Dropped(ended_at))
    }

    /// On an idle turn after a drop was settled with the collection empty: documents there now,
    /// with no change read since, on two turns in a row, were renamed in. A flow when so.
    pub(super) async fn watch_emptied(&mut self, state: &mut StreamBatch<'_>) -> PhaseResult<Option<Flow>> {
        if state.emptied == EmptiedWatch::Off || !self.ctx.source.has_documents(&self.config.namespace).await? {
            return Ok(None);
        }
        if state.emptied == EmptiedWatch::Watching {
            state.emptied = EmptiedWatch::Found;
            return Ok(None);
        }
        state.emptied = EmptiedWatch::Off;
        Ok(Some(self.replaced(None)))
    }

    async fn apply_index_action(&self, version: i64, action: IndexAction) -> PhaseResult<()> {
        self.ctx.sink.apply(&IndexChange { namespace: self.namespace(), version, action }).await.proceed()
    }

    async fn apply_drop(&mut self, version: i64) -> PhaseResult<()> {
        let index = self.index();
        match self.ctx.config.on_drop {
            DropPolicy::DeleteDocuments => self.apply_index_action(version, IndexAction::DeleteDocuments { index }).await,
            DropPolicy::DeleteIndex => {
                self.apply_index_action(version, IndexAction::DeleteIndex { index }).await?;
                // Its next index is prepared as at start, under the configured name (an alias
                // of a re-copied index went with it).
                self.checkpoint.physical_index = None;
                self.checkpoint.replaces = None;
                self.index_deleted = true;
                Ok(())
            }
            DropPolicy::Ignore => Ok(()),
        }
    }

    /// Moves or copies the documents to the index of the new name, then empties this one.
    async fn apply_rename(&mut self, to: &Namespace, version: i64, missed: &MissedLookups) -> PhaseResult<()> {
        let config = &self.ctx.config;
        let (index, to_index) = (self.index(), config.index_for(to));
        if to_index == index || to_index == self.config.index || config.on_rename == RenamePolicy::Ignore {
            return Ok(());
        }
        // The target is prepared with the settings it will be synced (and checked) with, when
        // it has some: listed, or matched by `namespaces` (and then found later).
        let to_settings = config.collection_for(to);
        self.ctx.sink.prepare_index(&to_index, to_settings.as_ref()).await.proceed()?;
        let target = Target::index(to_index.clone());
        match config.on_rename {
            RenamePolicy::Move => {
                self.apply_index_action(version, IndexAction::Reindex { from: index.clone(), to: to_index }).await?;
                self.reread_missed(to, &target, version, missed).await?;
            }
            _ => self.copy_once(to, to_settings.as_ref(), &target, version).await?,
        }
        self.apply_index_action(version, IndexAction::DeleteDocuments { index }).await
    }

    /// After a move: documents whose last changes were read after the rename (and so were not
    /// found under the old name) are read again under the new one, and written with the
    /// rename's version (later changes there carry later ones). Too many to list: the whole
    /// renamed collection is copied.
    async fn reread_missed(&self, to: &Namespace, target: &Target, version: i64, missed: &MissedLookups) -> PhaseResult<()> {
        let renamed = CollectionConfig { namespace: to.clone(), ..self.config.clone() };
        if missed.overflowed() {
            return self.copy_once(to, Some(&renamed), target, version).await;
        }
        let (ctx, ns, limits) = (self.ctx, self.namespace(), &self.ctx.config.batch);
        let mut batch = Batch::default();
        for id in missed.ids() {
            let write = match ctx.source.lookup(to, id, self.config.filter.as_ref(), None).await? {
                Some(doc) => self.index_write(&doc, version, &mut batch),
                None => delete_write(id, version),
            };
            match write {
                Ok(write) => {
                    if batch.room_for(target, &write, limits) == Room::FlushFirst {
                        commit(ctx, &ns, target, Phase::Stream, std::mem::take(&mut batch)).await?;
                    }
                    batch.push(target, write, limits);
                }
                Err(rejected) => batch.push_rejected(rejected),
            }
        }
        commit(ctx, &ns, target, Phase::Stream, batch).await
    }

    /// A one-off copy of another collection (a rename's target), without checkpoints: if it is
    /// interrupted, the rename event is not checkpointed and is applied again. Its documents are
    /// shaped by its own `settings` when it has some (listed, or matched by `namespaces`), else
    /// by this collection's field rules, without this collection's filter and routing.
    async fn copy_once(&self, source: &Namespace, settings: Option<&CollectionConfig>, target: &Target, version: i64) -> PhaseResult<()> {
        let ctx = self.ctx;
        let reader = match settings {
            Some(settings) => RangeReader { version, ..RangeReader::new(self, settings, CopyRange::default(), 0, target) },
            None => RangeReader {
                namespace: source.clone(),
                routing: None,
                filter: None,
                version,
                ..RangeReader::new(self, &self.config, CopyRange::default(), 0, target)
            },
        };
        let ns = source.to_string();
        let (tx, mut rx) = mpsc::channel::<SyncResult<CopyItem>>(2);
        let reading = async move {
            let result = reader.read(&tx).await;
            drop(tx);
            result.map_err(Halt::from)
        };
        let writing = async {
            while let Some(item) = rx.recv().await {
                match item? {
                    CopyItem::Batch { batch, .. } => commit(ctx, &ns, target, Phase::Copy, *batch).await?,
                    CopyItem::RangeDone(_) => return Ok(()),
                }
            }
            // The readers ended before their last range: the copy was stopped.
            Err(Halt::Stopped)
        };
        tokio::try_join!(reading, writing).map(drop)
    }

    /// After a re-copy: the configured name becomes an alias of the new index, and the index it
    /// replaces is dropped, in one step.
    pub(super) async fn finish_resync(&mut self) -> PhaseResult<()> {
        let Some(old) = self.checkpoint.replaces.clone() else { return Ok(()) };
        let new_index = self.index();
        let version = version_of(self.start_at());
        let extra_aliases = self.config.alias.iter().cloned().collect();
        let action = IndexAction::SwapAlias { alias: self.config.index.clone(), index: new_index.clone(), replaces: old, extra_aliases };
        self.apply_index_action(version, action).await?;
        self.checkpoint.replaces = None;
        self.save().await?;
        self.ctx.events.emit(SyncEvent::Change { namespace: self.namespace(), change: CollectionChange::Resync { index: new_index } });
        Ok(())
    }
}

/// The settings an index is prepared with: during a re-copy, without the collection's alias
/// (it moves to the new index at the swap; added now, readers would see both indices).
pub fn index_settings(config: &CollectionConfig, cp: &CollectionCheckpoint) -> CollectionConfig {
    match cp.replaces {
        Some(_) => CollectionConfig { alias: None, ..config.clone() },
        None => config.clone(),
    }
}

/// Starts copying a collection again: into a new concrete index `<index>-<n>`, while the index
/// readers use stays as it is until the copy is done.
pub async fn begin_resync(ctx: &Context, config: &CollectionConfig, cp: &mut CollectionCheckpoint, reason: &str) -> PhaseResult<()> {
    let version = cp.start_at.map_or(0, version_of);
    // An unfinished earlier re-copy: its half-filled index goes, the one readers use stays.
    let (new_index, unfinished) = cp.begin_recopy(&config.index);
    if let Some(index) = unfinished {
        let action = IndexAction::DeleteIndex { index };
        ctx.sink.apply(&IndexChange { namespace: config.namespace.to_string(), version, action }).await.proceed()?;
    }
    let serving = cp.replaces.clone().unwrap_or_default();
    ctx.sink.prepare_index(&new_index, Some(&index_settings(config, cp))).await.proceed()?;
    ctx.store.save(&config.namespace, cp).await?;
    ctx.copy_started(&config.namespace);
    ctx.warn(&config.namespace, format!("{reason}; copying again into \"{new_index}\" (\"{serving}\" stays readable until then)"));
    Ok(())
}
