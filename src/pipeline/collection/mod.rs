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

use super::{Context, Flow, Halt, PhaseResult};
use crate::checkpoint::CollectionCheckpoint;
use crate::config::{CollectionConfig, HistoryLostPolicy, SyncMode};
use crate::error::{ErrorCode, SyncError, SyncResult};
use crate::retry::{Attempt, GaveUp, RetryPolicy, Retryable};
use crate::sink::Target;
use crate::source::ChangeFeed;
use crate::transform::RawConverter;

pub(super) use collection_change::{begin_resync, index_settings};
pub(super) use stream::{feed_limits, stream_start};

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
    /// The code of the last transient source failure: the sync's when retries run out.
    transient: ErrorCode,
}

impl<'a> CollectionSync<'a> {
    pub fn new(ctx: &'a Context, config: CollectionConfig, checkpoint: CollectionCheckpoint) -> Self {
        let invalidated = checkpoint.resume_token.clone().filter(|_| checkpoint.token_is_invalidate);
        let converter = RawConverter::new(&config.convert, &config.fields);
        CollectionSync {
            ctx,
            config,
            checkpoint,
            position_unsaved: false,
            last_save: Instant::now(),
            invalidated,
            index_deleted: false,
            converter,
            transient: ErrorCode::MongoUnreachable,
        }
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
    /// the last checkpoint, which is also the in-memory position, through the sync's retry
    /// policy (backoff, `retry` events, `retry.maxAttempts` failures in a row; a failure after
    /// the checkpoint moved counts as the first). `feed`, opened (and so validated) at start,
    /// serves the first stream phase.
    pub async fn run(mut self, feed: Option<ChangeFeed>) -> SyncResult<Ended> {
        let ctx = self.ctx;
        let policy = RetryPolicy::new(&ctx.config.retry, &ctx.stats, &ctx.events, &ctx.cancel);
        let mark = self.checkpoint.clone();
        let what = format!("syncing {}", self.config.namespace);
        match policy.run(&what, Runs { sync: &mut self, feed, mark }).await {
            Ok(crate::retry::Flow::Done(ended)) => Ok(ended),
            Ok(crate::retry::Flow::Stopped) => Ok(Ended::Finished),
            Err(RunError::Failed(e)) => Err(e),
            Err(RunError::GaveUp(GaveUp { attempts, cause, .. })) => {
                Err(SyncError::new(self.transient, format!("{cause} (failed {attempts} attempts in a row; see retry.maxAttempts)")))
            }
        }
    }

    /// One attempt of the run: the phases, again after a re-copy begins or lost history is
    /// dealt with, until they end, fail for good, or fail transiently (a retry).
    async fn attempt(&mut self, feed: &mut Option<ChangeFeed>, mark: &mut CollectionCheckpoint) -> Attempt<Ended, RunError> {
        loop {
            let halt = match self.run_phases(feed.take()).await {
                Ok(Flow::Done) => return Attempt::Done(Ended::Finished),
                Ok(Flow::Dropped(at)) => return Attempt::Done(Ended::Dropped(at)),
                Ok(Flow::Stopped) | Err(Halt::Stopped) => return Attempt::Stopped,
                Ok(Flow::Recopy(reason)) => begin_resync(self.ctx, &self.config, &mut self.checkpoint, &reason).await.err(),
                Err(Halt::Failed(error)) => match self.recover(error, mark).await {
                    Recovery::Again => None,
                    Recovery::Ends(attempt) => return attempt,
                },
            };
            match halt {
                None => continue,
                Some(Halt::Stopped) => return Attempt::Stopped,
                Some(Halt::Failed(e)) => return Attempt::Fail(RunError::Failed(e)),
            }
        }
    }

    /// What a failed run of the phases leads to: another run at once (lost history dealt
    /// with), or the attempt's end: a retry (progress since `mark` resets the count), a stop,
    /// or the sync's failure.
    async fn recover(&mut self, error: SyncError, mark: &mut CollectionCheckpoint) -> Recovery {
        let ctx = self.ctx;
        match error.code {
            code if code.is_source_unreachable() && ctx.cancel.is_cancelled() => Recovery::Ends(Attempt::Stopped),
            code if code.is_source_unreachable() => {
                self.transient = code;
                if self.checkpoint == *mark {
                    return Recovery::Ends(Attempt::Retry(error.to_string()));
                }
                *mark = self.checkpoint.clone();
                Recovery::Ends(Attempt::Partial(error.to_string()))
            }
            // An event too large to read blocks the stream as lost history does: a re-copy gets past it.
            ErrorCode::HistoryLost | ErrorCode::EventTooLarge => match on_history_lost(ctx, &self.config, &mut self.checkpoint, error).await {
                Ok(()) => Recovery::Again,
                Err(Halt::Stopped) => Recovery::Ends(Attempt::Stopped),
                Err(Halt::Failed(e)) => Recovery::Ends(Attempt::Fail(RunError::Failed(e))),
            },
            _ => Recovery::Ends(Attempt::Fail(RunError::Failed(error))),
        }
    }

    async fn run_phases(&mut self, feed: Option<ChangeFeed>) -> PhaseResult<Flow> {
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
            self.checkpoint.start_at = Some(super::prepare::stream_only_start(&*self.ctx.source, start_at).await?);
            self.checkpoint.copy_done = true;
            self.save().await?;
        }
        if !self.checkpoint.copy_done && self.checkpoint.start_at.is_none() {
            self.checkpoint.start_at = Some(self.ctx.source.start_point(&self.config.namespace).await?);
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
pub(super) async fn on_history_lost(ctx: &Context, config: &CollectionConfig, checkpoint: &mut CollectionCheckpoint, error: SyncError) -> PhaseResult<()> {
    if let SyncMode::Stream { .. } = ctx.config.mode {
        let message = format!(
            "{}. With mode 'stream' nothing is copied, so the index is kept as it is (onHistoryLost: 'resync' re-copies only with \
             mode 'copyAndStream'): to follow {} from now (or startAt) on, delete its checkpoint; to copy it again, run with mode 'copyAndStream'",
            error.message, config.namespace
        );
        return Err(SyncError::new(error.code, message).into());
    }
    if ctx.config.on_history_lost != HistoryLostPolicy::Resync {
        return Err(error.into());
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
        return Err(SyncError::new(ErrorCode::HistoryLost, message).into());
    }
    begin_resync(ctx, config, checkpoint, &error.to_string()).await?;
    checkpoint.history_lost_resyncs = streak;
    Ok(ctx.store.save(&config.namespace, checkpoint).await?)
}

/// How a collection's run ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    /// Stopped, or done (a one-shot copy).
    Finished,
    /// Found by a pattern, then dropped at this time: no longer followed (see `Flow::Dropped`).
    Dropped(Timestamp),
}

/// How a failed run of the phases goes on.
enum Recovery {
    /// Run the phases again at once.
    Again,
    /// The attempt ends so.
    Ends(Attempt<Ended, RunError>),
}

/// How a collection's run fails: for good, or transiently `retry.maxAttempts` times in a row.
#[derive(Debug)]
enum RunError {
    Failed(SyncError),
    GaveUp(GaveUp),
}

impl From<GaveUp> for RunError {
    fn from(e: GaveUp) -> Self {
        RunError::GaveUp(e)
    }
}

/// The collection's runs, as work the retry policy attempts again: the feed opened at start
/// serves the first, and `mark` is the checkpoint at the last failure.
struct Runs<'s, 'a> {
    sync: &'s mut CollectionSync<'a>,
    feed: Option<ChangeFeed>,
    mark: CollectionCheckpoint,
}

impl Retryable for Runs<'_, '_> {
    type Output = Ended;
    type Error = RunError;
    async fn attempt(&mut self) -> Attempt<Ended, RunError> {
        self.sync.attempt(&mut self.feed, &mut self.mark).await
    }
}

/// Re-copies begun in a row because the previous copy could not reach its stream.
const MAX_RESYNCS_IN_A_ROW: u32 = 2;
