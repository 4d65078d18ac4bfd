//! Before a collection runs: its checkpoint, its start point (stream mode), its index, and, for
//! one that streams first, its stream opened at once so that lost history shows at `start()`.
//! Also finds the collections `namespaces` patterns choose.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use mongodb::bson::Timestamp;

use super::collection::{feed_limits, index_settings, on_history_lost, stream_start};
use super::supervisor::Prepared;
use super::{Context, PhaseResult, Proceed};
use crate::checkpoint::CollectionCheckpoint;
use crate::config::{CollectionConfig, Discovery, Namespace, SyncConfig, SyncMode};
use crate::error::{ErrorCode, SyncResult};
use crate::event::{EventBus, SyncEvent};
use crate::source::{ChangeFeed, ChangeSource};

/// A collection ready to run: its settings, its checkpoint, and its stream if already opened.
pub(super) struct Ready {
    pub config: CollectionConfig,
    pub checkpoint: CollectionCheckpoint,
    pub feed: Option<ChangeFeed>,
}

/// Prepares every listed collection, and those the patterns find.
pub(super) async fn prepare_all(ctx: Arc<Context>) -> PhaseResult<Prepared> {
    if let Some(dlq) = &ctx.config.dead_letter_index {
        ctx.sink.prepare_dead_letters(dlq).await.proceed()?;
    }
    // Stream only: "now" is read once, before start() resolves, so that a change made
    // right after it is never before a collection's start point.
    let stream_from = match ctx.config.mode {
        SyncMode::Stream { start_at } => Some(stream_only_start(&*ctx.source, start_at).await?),
        _ => None,
    };
    let listed: Vec<Namespace> = ctx.config.collections.iter().map(|c| c.namespace.clone()).collect();
    ctx.source.plan_streams(&listed);
    let listed = ctx.config.collections.iter().map(|c| (c.clone(), stream_from));
    let mut collections = prepare_many(&ctx, listed).await?;
    let mut known: HashSet<Namespace> = ctx.config.collections.iter().map(|c| c.namespace.clone()).collect();
    let mut seen_at = None;
    if let Some(discovery) = &ctx.config.discovery {
        let (found, now) = discover(&ctx, discovery, &mut known, stream_from, &HashMap::new()).await?;
        collections.extend(found);
        seen_at = Some(now);
    }
    Ok(Prepared { ctx, collections, seen_at, known })
}

/// How many collections are prepared at once: each is a few round trips to the checkpoint
/// store, the source and the outputs, so a thousand one after another take minutes.
const PREPARE_AT_ONCE: usize = 16;

/// Prepares collections (each with where its stream starts, see [`prepare_collection`]), up to
/// [`PREPARE_AT_ONCE`] at a time, in their order, their checkpoints loaded together first; the
/// first failure ends it, naming its collection.
async fn prepare_many(ctx: &Context, collections: impl Iterator<Item = (CollectionConfig, Option<Timestamp>)>) -> PhaseResult<Vec<Ready>> {
    use futures::{FutureExt, StreamExt, TryStreamExt};
    let collections: Vec<(CollectionConfig, Option<Timestamp>)> = collections.collect();
    let namespaces: Vec<Namespace> = collections.iter().map(|(c, _)| c.namespace.clone()).collect();
    let mut checkpoints = ctx.store.load_many(&namespaces).await?;
    let mut starting = Vec::new();
    for ((c, from), checkpoint) in collections.iter().zip(checkpoints.iter_mut()) {
        if set_start_point(ctx, *from, checkpoint) {
            starting.push((c.namespace.clone(), checkpoint.clone()));
        }
    }
    ctx.store.save_many(&starting).await?;
    // Boxed one by one (a closure returning the futures is not `Send` for every lifetime).
    let preparing: Vec<futures::future::BoxFuture<'_, PhaseResult<Ready>>> = (collections.into_iter().zip(checkpoints))
        .map(|((c, from), checkpoint)| async move { prepare_loaded(ctx, &c, from, checkpoint).await.map_err(|e| e.in_collection(&c.namespace)) }.boxed())
        .collect();
    futures::stream::iter(preparing).buffered(PREPARE_AT_ONCE).try_collect().await
}

/// Loads a collection's checkpoint and prepares it (see [`prepare_loaded`]).
pub(super) async fn prepare_collection(ctx: &Context, c: &CollectionConfig, stream_from: Option<Timestamp>) -> PhaseResult<Ready> {
    let checkpoint = ctx.store.load(&c.namespace).await?;
    prepare_loaded(ctx, c, stream_from, checkpoint).await
}

/// Prepares a collection from its loaded checkpoint and its index. A saved stream position is
/// checked now, so that lost history fails `start()` (or, with `onHistoryLost: 'resync'`, starts
/// the re-copy at once). `stream_from`, in stream mode, for a collection without a saved
/// position: where it is followed from (`startAt` or the time of `start()`; for a collection
/// found while the sync runs, the last moment it was known not to be there), so none of its
/// changes is missed.
async fn prepare_loaded(ctx: &Context, c: &CollectionConfig, stream_from: Option<Timestamp>, mut checkpoint: CollectionCheckpoint) -> PhaseResult<Ready> {
    if set_start_point(ctx, stream_from, &mut checkpoint) {
        ctx.store.save(&c.namespace, &checkpoint).await?;
    }
    let feed = open_first_stream(ctx, c, &mut checkpoint).await?;
    if !checkpoint.copy_done && !matches!(ctx.config.mode, SyncMode::Stream { .. }) {
        ctx.copy_started(&c.namespace);
    } else {
        // Copied by an earlier run: counted as its checkpoint counts it.
        ctx.stats.collection(&c.namespace.to_string()).copy_started(checkpoint.copied, checkpoint.copied);
    }
    ctx.sink.prepare_index(checkpoint.physical_index.as_deref().unwrap_or(&c.index), Some(&index_settings(c, &checkpoint))).await.proceed()?;
    Ok(Ready { config: c.clone(), checkpoint, feed })
}

/// In stream mode, a collection without a saved start point starts at `stream_from`: whether
/// it was set (and is to be saved before the collection runs).
fn set_start_point(ctx: &Context, stream_from: Option<Timestamp>, checkpoint: &mut CollectionCheckpoint) -> bool {
    let (Some(at), None, SyncMode::Stream { .. }) = (stream_from, &checkpoint.start_at, ctx.config.mode) else { return false };
    checkpoint.start_at = Some(at);
    checkpoint.copy_done = true;
    true
}

/// Opens the stream of a collection that streams first (from a saved position, its start
/// point or `startAt`), so that a position outside the history fails `start()`.
async fn open_first_stream(ctx: &Context, c: &CollectionConfig, checkpoint: &mut CollectionCheckpoint) -> PhaseResult<Option<ChangeFeed>> {
    let Some(start) = stream_start(checkpoint).filter(|_| ctx.config.mode != SyncMode::Copy && checkpoint.copy_done) else {
        return Ok(None);
    };
    match ctx.source.open_stream(&c.namespace, &start, feed_limits(ctx), ctx.cancel.clone()).await {
        Ok(feed) => Ok(Some(feed)),
        Err(e) if e.code == ErrorCode::HistoryLost => on_history_lost(ctx, c, checkpoint, e).await.map(|()| None),
        Err(e) => Err(e.into()),
    }
}

/// Collections that match the patterns and are not `known` yet, prepared; and the source's time
/// read before listing them (a collection found next time did not exist before that time).
/// `dropped`: collections followed until their drop, with the time after it (stream only: where
/// one found again starts, at the earliest).
pub(super) async fn discover(
    ctx: &Context,
    discovery: &Discovery,
    known: &mut HashSet<Namespace>,
    seen_at: Option<Timestamp>,
    dropped: &HashMap<Namespace, Timestamp>,
) -> PhaseResult<(Vec<Ready>, Timestamp)> {
    let (configs, now) = find_new(&*ctx.source, &ctx.config, &ctx.events, discovery, known).await?;
    ctx.source.plan_streams(&configs.iter().map(|c| c.namespace.clone()).collect::<Vec<_>>());
    let found = configs.into_iter().map(|config| {
        let from = seen_at.max(dropped.get(&config.namespace).copied());
        (config, from)
    });
    Ok((prepare_many(ctx, found).await?, now))
}

/// The settings of the collections that match the patterns and are not `known` yet (each is
/// added to it); and the source's time read before listing them. One whose settings from
/// `namespaces.defaults` are unusable (its name makes an invalid index name) is passed over
/// with a warning, once: it is added to `known`.
pub(super) async fn find_new(
    source: &dyn ChangeSource,
    config: &SyncConfig,
    events: &EventBus,
    discovery: &Discovery,
    known: &mut HashSet<Namespace>,
) -> SyncResult<(Vec<CollectionConfig>, Timestamp)> {
    let now = source.now().await?;
    let checkpoints = Namespace { db: config.checkpoint.database.clone(), coll: config.checkpoint.collection.clone() };
    let mut found = Vec::new();
    for ns in source.list_collections().await? {
        if known.contains(&ns) || ns == checkpoints || !discovery.matches(&ns) {
            continue;
        }
        // Listed collections are known from the start: a found one takes the defaults.
        let collection = discovery.collection(ns.clone());
        if let Err(e) = collection.validate("namespaces.defaults") {
            let message = format!("matches namespaces.include but is not synced: {}; list it in collections with an index of its own", e.message);
            events.emit(SyncEvent::Warning { namespace: ns.to_string(), message });
            known.insert(ns);
            continue;
        }
        found.push(collection);
    }
    Ok((found, now))
}

/// Where a stream-only collection without a saved position starts: `startAt`, or now.
pub(super) async fn stream_only_start(source: &dyn ChangeSource, start_at: Option<Timestamp>) -> SyncResult<Timestamp> {
    match start_at {
        Some(at) => Ok(at),
        None => source.now().await,
    }
}
