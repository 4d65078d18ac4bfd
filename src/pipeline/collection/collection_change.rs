//! Changes of a collection as a whole: drop and dropDatabase (`onDrop`), rename (`onRename`),
//! and the re-copy into a fresh index that ends with an atomic alias swap (`onHistoryLost:
//! 'resync'`).

use mongodb::bson::Timestamp;
use tokio::sync::mpsc;

use super::copy::{CopyItem, RangeReader};
use super::missed::MissedLookups;
use super::CollectionSync;
use crate::checkpoint::{CollectionCheckpoint, CopyRange};
use crate::config::{CollectionConfig, DropPolicy, Namespace, RenamePolicy};
use crate::error::{ErrorCode, SyncError, SyncResult};
use crate::event::{CollectionChange, Phase, SyncEvent};
use crate::pipeline::batch::{commit, Batch, Room};
use crate::pipeline::{Context, Flow};
use crate::sink::{IndexAction, IndexChange, Target};
use crate::transform::{delete_write, version_of};

impl CollectionSync<'_> {
    /// Applies a drop, dropDatabase or rename of the collection to its index, per `onDrop` /
    /// `onRename`; or, when the change replaced the collection's contents, asks for a re-copy.
    /// `missed`: documents the stream could not find (see [`MissedLookups`]), read again from a
    /// rename's target.
    pub(super) async fn apply_collection_change(
        &mut self,
        change: &CollectionChange,
        cluster_time: Option<Timestamp>,
        missed: &mut MissedLookups,
    ) -> SyncResult<Option<Flow>> {
        let version = version_of(cluster_time.unwrap_or(Timestamp { time: 0, increment: 0 }));
        let replaced = self.replacement(change).await?;
        match (change, &replaced) {
            (_, Some(_)) => {}
            (CollectionChange::Rename { to }, None) => self.apply_rename(to, version, missed).await?,
            (_, None) => self.apply_drop(version).await?,
        }
        missed.clear();
        self.ctx.events.emit(SyncEvent::Change { namespace: self.namespace(), change: change.clone() });
        Ok(replaced.map(Flow::Recopy))
    }

    /// Why the collection must be copied again, if this drop or rename replaced its contents
    /// (a rename into it with `dropTarget`, `$out` onto it): its stream will never carry the new
    /// documents. Such a drop is told from a plain one by the collection holding documents
    /// again (then a re-copy is right even if they were inserted after a plain drop).
    async fn replacement(&self, change: &CollectionChange) -> SyncResult<Option<String>> {
        let ns = &self.config.namespace;
        let replaced = match change {
            CollectionChange::Rename { to } => to == ns,
            CollectionChange::Drop | CollectionChange::DropDatabase => self.ctx.source.has_documents(ns).await?,
            _ => false,
        };
        Ok(replaced.then(|| format!("{ns} was replaced by other contents (a rename into it, or $out onto it)")))
    }

    async fn apply_index_action(&self, version: i64, action: IndexAction) -> SyncResult<()> {
        self.ctx.sink.apply(&IndexChange { namespace: self.namespace(), version, action }).await
    }

    async fn apply_drop(&mut self, version: i64) -> SyncResult<()> {
        let index = self.index();
        match self.ctx.config.on_drop {
            DropPolicy::DeleteDocuments => self.apply_index_action(version, IndexAction::DeleteDocuments { index }).await,
            DropPolicy::DeleteIndex => self.apply_index_action(version, IndexAction::DeleteIndex { index }).await,
            DropPolicy::Ignore => Ok(()),
        }
    }

    /// Moves or copies the documents to the index of the new name, then empties this one.
    async fn apply_rename(&mut self, to: &Namespace, version: i64, missed: &MissedLookups) -> SyncResult<()> {
        let config = &self.ctx.config;
        let (index, to_index) = (self.index(), config.index_for(to));
        if to_index == index || to_index == self.config.index || config.on_rename == RenamePolicy::Ignore {
            return Ok(());
        }
        self.ctx.sink.prepare_index(&to_index, None).await?;
        let target = Target::index(to_index.clone());
        match config.on_rename {
            RenamePolicy::Move => {
                self.apply_index_action(version, IndexAction::Reindex { from: index.clone(), to: to_index }).await?;
                self.reread_missed(to, &target, version, missed).await?;
            }
            _ => self.copy_once(to, config.collection_for(to).as_ref(), &target, version).await?,
        }
        self.apply_index_action(version, IndexAction::DeleteDocuments { index }).await
    }

    /// After a move: documents whose last changes were read after the rename (and so were not
    /// found under the old name) are read again under the new one, and written with the
    /// rename's version (later changes there carry later ones). Too many to list: the whole
    /// renamed collection is copied.
    async fn reread_missed(&self, to: &Namespace, target: &Target, version: i64, missed: &MissedLookups) -> SyncResult<()> {
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
    async fn copy_once(&self, source: &Namespace, settings: Option<&CollectionConfig>, target: &Target, version: i64) -> SyncResult<()> {
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

    /// After a re-copy: the configured name becomes an alias of the new index, and the index it
    /// replaces is dropped, in one step.
    pub(super) async fn finish_resync(&mut self) -> SyncResult<()> {
        let Some(old) = self.checkpoint.replaces.clone() else { return Ok(()) };
        let new_index = self.index();
        let version = version_of(self.start_at());
        let action = IndexAction::SwapAlias { alias: self.config.index.clone(), index: new_index.clone(), replaces: old };
        self.apply_index_action(version, action).await?;
        self.checkpoint.replaces = None;
        self.save().await?;
        self.ctx.events.emit(SyncEvent::Change { namespace: self.namespace(), change: CollectionChange::Resync { index: new_index } });
        Ok(())
    }
}

/// Starts copying a collection again: into a new concrete index `<index>-<n>`, while the index
/// readers use stays as it is until the copy is done.
pub async fn begin_resync(ctx: &Context, config: &CollectionConfig, cp: &mut CollectionCheckpoint, reason: &str) -> SyncResult<()> {
    let current = cp.physical_index.clone().unwrap_or_else(|| config.index.clone());
    // An unfinished earlier re-copy: its half-filled index goes, the one readers use stays.
    let serving = match cp.replaces.clone() {
        Some(serving) => {
            if serving != current {
                let action = IndexAction::DeleteIndex { index: current.clone() };
                ctx.sink.apply(&IndexChange { namespace: config.namespace.to_string(), version: cp.start_at.map_or(0, version_of), action }).await?;
            }
            serving
        }
        None => current,
    };
    let generation = cp.generation + 1;
    let new_index = format!("{}-{generation}", config.index);
    *cp = CollectionCheckpoint { physical_index: Some(new_index.clone()), generation, replaces: Some(serving.clone()), ..Default::default() };
    ctx.sink.prepare_index(&new_index, Some(config)).await?;
    ctx.store.save(&config.namespace, cp).await?;
    ctx.copy_started(&config.namespace);
    ctx.warn(&config.namespace, format!("{reason}; copying again into \"{new_index}\" (\"{serving}\" stays readable until then)"));
    Ok(())
}
