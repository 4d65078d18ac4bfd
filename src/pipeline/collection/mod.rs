//! One collection's sync: its phases run in turn (copy if not done, then stream), and the
//! policies between them: transient source failures are retried from the checkpoint, lost
//! history re-copies or fails (`onHistoryLost`).
//!
//! - `copy`: the initial copy, ranges read in parallel, commits acknowledged in order;
//! - `stream`: the change stream, batched, one commit at a time;
//! - `collection_change`: drop, rename, replacement, re-copy and alias swap.

mod collection_change;
mod copy;
mod lookups;
mod missed;
mod stream;

use std::time::Instant;

use mongodb::bson::{Document, Timestamp};

use super::{Context, Flow};
use crate::checkpoint::CollectionCheckpoint;
use crate::config::{CollectionConfig, HistoryLostPolicy, SyncMode};
use crate::error::{ErrorCode, SyncError, SyncResult};
use crate::retry::{may_retry, wait_before_retry};
use crate::sink::Target;
use crate::source::ChangeFeed;
use crate::transform::RawConverter;

pub(super) use collection_change::{begin_resync, index_settings};
pub(super) use stream::{feed_limits, stream_start};

/// Consecutive failures of a collection's run, and its checkpoint at the last one.
struct Retry {
    attempt: u32,
    mark: CollectionCheckpoint,
}

pub(super) struct CollectionSync<'a> {
    ctx: &'a Context,
    config: CollectionConfig,
    checkpoint: CollectionCheckpoint,
    /// The in-memory checkpoint holds an acknowledged stream position not saved yet.
    position_unsaved: bool,
    last_save: Instant,
    /// The token of the last `invalidate` read (or saved): a position only `startAfter` accepts.
    invalidated: Option<Document>,
    /// The index was deleted with its collection: prepared again before the next write.
    index_deleted: bool,
    /// The collection's conversion options and field rules, prepared once for the stream.
    converter: RawConverter,
}

impl<'a> CollectionSync<'a> {
    pub fn new(ctx: &'a Context, config: CollectionConfig, checkpoint: CollectionCheckpoint) -> Self {
        let invalidated = checkpoint.resume_token.clone().filter(|_| checkpoint.token_is_invalidate);
        let converter = RawConverter::new(&config.convert, &config.fields);
        CollectionSync { ctx, config, checkpoint, position_unsaved: false, last_save: Instant::now(), invalidated, index_deleted: false, converter }
    }

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

    async fn save(&mut self) -> SyncResult<()> {
        self.ctx.store.save(&self.config.namespace, &self.checkpoint).await?;
        self.position_unsaved = false;
        self.last_save = Instant::now();
        Ok(())
    }

    /// Copy then stream; returns when stopped. Transient source failures are retried from
    /// the last checkpoint, which is also the in-memory position. `feed`, opened (and so
    /// validated) at start, serves the first stream phase.
    pub async fn run(mut self, mut feed: Option<ChangeFeed>) -> SyncResult<()> {
        let mut retry = Retry { attempt: 0, mark: self.checkpoint.clone() };
        loop {
            let error = match self.run_phases(feed.take()).await {
                Ok(Flow::Done | Flow::Stopped) => return Ok(()),
                Ok(Flow::Recopy(reason)) => {
                    begin_resync(self.ctx, &self.config, &mut self.checkpoint, &reason).await?;
                    continue;
                }
                Err(e) => e,
            };
            if !self.recover(error, &mut retry).await? {
                return Ok(());
            }
        }
    }

    /// What a failed run of the phases leads to: another run (`true`), a stop (`false`), or
    /// the sync's failure.
    async fn recover(&mut self, error: SyncError, retry: &mut Retry) -> SyncResult<bool> {
        let ctx = self.ctx;
        match error.code {
            ErrorCode::MongoUnreachable if !ctx.cancel.is_cancelled() => {
                // The count starts again once the durable position moved since the last failure.
                if self.checkpoint != retry.mark {
                    retry.attempt = 0;
                    retry.mark = self.checkpoint.clone();
                }
                retry.attempt += 1;
                if !may_retry(&ctx.config.retry, retry.attempt) {
                    return Err(SyncError::new(error.code, format!("{} (failed {} attempts in a row; see retry.maxAttempts)", error.message, retry.attempt)));
                }
                Ok(wait_before_retry(&ctx.config.retry, retry.attempt, error.to_string(), &ctx.stats, &ctx.events, &ctx.cancel).await)
            }
            ErrorCode::State | ErrorCode::MongoUnreachable if ctx.cancel.is_cancelled() => Ok(false),
            // An event too large to read blocks the stream as lost history does: a re-copy gets past it.
            ErrorCode::HistoryLost | ErrorCode::EventTooLarge => on_history_lost(ctx, &self.config, &mut self.checkpoint, error).await.map(|()| true),
            _ => Err(error),
        }
    }

    async fn run_phases(&mut self, feed: Option<ChangeFeed>) -> SyncResult<Flow> {
        self.ensure_start_point().await?;
        if !self.checkpoint.copy_done && self.copy().await? == Flow::Stopped {
            return Ok(Flow::Stopped);
        }
        self.finish_resync().await?;
        if self.ctx.config.mode == SyncMode::Copy {
            self.ctx.stats.collection(&self.namespace()).set_phase(crate::stats::CollectionPhase::Done);
            return Ok(Flow::Done);
        }
        self.ctx.copy_finished(&self.config.namespace);
        self.stream(feed).await
    }

    /// Captures where the stream starts before anything is copied, so that nothing changed
    /// during the copy is missed (stream only: `startAt` or now, and no copy).
    async fn ensure_start_point(&mut self) -> SyncResult<()> {
        if let (SyncMode::Stream { start_at }, false) = (self.ctx.config.mode, self.checkpoint.copy_done) {
            // Stream only, after a resync (start() set the others' start points).
            self.checkpoint.start_at = Some(super::prepare::stream_only_start(self.ctx, start_at).await?);
            self.checkpoint.copy_done = true;
            self.save().await?;
        }
        if !self.checkpoint.copy_done && self.checkpoint.start_at.is_none() {
            self.checkpoint.start_at = Some(self.ctx.source.now().await?);
            self.save().await?;
        }
        Ok(())
    }

    fn start_at(&self) -> Timestamp {
        self.checkpoint.start_at.expect("start point captured before the copy")
    }
}

/// Lost history (or an event too large to read) of a collection: re-copied with
/// `onHistoryLost: 'resync'`, else the sync fails with the error. A stream-only sync never
/// re-copies (it copies nothing: the new index would be empty); it fails and says what to do.
pub(super) async fn on_history_lost(ctx: &Context, config: &CollectionConfig, checkpoint: &mut CollectionCheckpoint, error: SyncError) -> SyncResult<()> {
    if let SyncMode::Stream { .. } = ctx.config.mode {
        let message = format!(
            "{}. With mode 'stream' nothing is copied, so the index is kept as it is (onHistoryLost: 'resync' re-copies only with \
             mode 'copyAndStream'): to follow {} from now (or startAt) on, delete its checkpoint; to copy it again, run with mode 'copyAndStream'",
            error.message, config.namespace
        );
        return Err(SyncError::new(error.code, message));
    }
    if ctx.config.on_history_lost != HistoryLostPolicy::Resync {
        return Err(error);
    }
    // Re-copies whose stream could not start (the copy outlasted the history) are counted:
    // each would go the same way.
    let streak = if checkpoint.resume_token.is_none() { checkpoint.history_lost_resyncs + 1 } else { 1 };
    if streak > MAX_RESYNCS_IN_A_ROW {
        let message = format!(
            "{}. The copy of {} outlasted the change history {MAX_RESYNCS_IN_A_ROW} times in a row, so copying it again is given up: \
             enlarge the oplog or make the copy faster",
            error.message, config.namespace
        );
        return Err(SyncError::new(ErrorCode::HistoryLost, message));
    }
    begin_resync(ctx, config, checkpoint, &error.to_string()).await?;
    checkpoint.history_lost_resyncs = streak;
    ctx.store.save(&config.namespace, checkpoint).await
}

/// Re-copies begun in a row because the previous copy could not reach its stream.
const MAX_RESYNCS_IN_A_ROW: u32 = 2;
