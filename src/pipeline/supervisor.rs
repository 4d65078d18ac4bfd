//! The collection tasks of a run: started, watched (one failing stops the others, cleanly), and
//! joined by the collections `namespaces` patterns find while it runs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use mongodb::bson::Timestamp;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::collection::{CollectionSync, Ended};
use super::prepare::{discover, Ready};
use super::Context;
use super::Halt;
use crate::config::{Namespace, SyncMode};
use crate::error::{ErrorCode, SyncError, SyncResult};
use crate::event::{CollectionChange, SyncEvent};

pub(super) struct Prepared {
    pub ctx: Arc<Context>,
    pub collections: Vec<Ready>,
    /// With discovery: the source's time read before the collections were listed.
    pub seen_at: Option<Timestamp>,
    /// The listed collections and those the patterns found but passed over: not to be found
    /// again (every collection started is added).
    pub known: HashSet<Namespace>,
}

struct Supervisor {
    ctx: Arc<Context>,
    tasks: JoinSet<(Namespace, SyncResult<Ended>)>,
    known: HashSet<Namespace>,
    seen_at: Option<Timestamp>,
    /// Collections dropped and followed no more, with the time right after their drop: found
    /// again (re-created), a stream-only one starts there at the earliest, never before its drop.
    /// Kept until `seen_at` passes it.
    dropped: HashMap<Namespace, Timestamp>,
    first_error: Option<SyncError>,
}

impl Supervisor {
    fn spawn(&mut self, ready: Ready) {
        let namespace = ready.config.namespace.clone();
        self.known.insert(namespace.clone());
        let (ctx, stats) = (self.ctx.clone(), self.ctx.stats.collection(&namespace.to_string()));
        let in_collection = namespace.clone();
        let task = async move { CollectionSync::new(&ctx, ready.config, ready.checkpoint).run(ready.feed).await.map_err(|e| e.in_collection(&in_collection)) };
        self.tasks.spawn(async move { (namespace, stats.track(task).await) }.in_current_span());
    }

    /// A collection's task ended: a failure stops the others; a dropped collection is
    /// forgotten, so that discovery finds it again if it comes back.
    fn ended(&mut self, namespace: Namespace, result: SyncResult<Ended>) {
        match result {
            Err(e) => self.fail(e),
            Ok(Ended::Finished) => {}
            Ok(Ended::Dropped(at)) => {
                self.ctx.stats.forget_collection(&namespace.to_string());
                self.ctx.source.forget_stream(&namespace);
                self.known.remove(&namespace);
                self.dropped.insert(namespace, Timestamp { time: at.time, increment: at.increment.saturating_add(1) });
            }
        }
    }

    fn fail(&mut self, error: SyncError) {
        // One collection failing stops the others (cleanly, with their checkpoints saved).
        self.ctx.cancel.cancel();
        self.first_error.get_or_insert(error);
    }

    /// Starts the collections the patterns find now.
    async fn discover_more(&mut self) {
        let discovery = self.ctx.config.discovery.as_ref().expect("polling only with discovery");
        match discover(&self.ctx, discovery, &mut self.known, self.seen_at, &self.dropped).await {
            Ok((found, now)) => {
                self.seen_at = Some(now);
                self.dropped.retain(|_, after| *after > now);
                for ready in found {
                    let change = CollectionChange::Discovered { index: ready.config.index.clone() };
                    self.ctx.events.emit(SyncEvent::Change { namespace: ready.config.namespace.to_string(), change });
                    self.spawn(ready);
                }
            }
            Err(Halt::Stopped) => {}
            Err(Halt::Failed(e)) if e.code.is_source() => {
                let message = format!("looking for new collections failed (will try again): {e}");
                self.ctx.events.emit(SyncEvent::Warning { namespace: String::new(), message });
            }
            Err(Halt::Failed(e)) => self.fail(e),
        }
    }
}

pub(super) async fn run_all(prepared: Prepared) -> SyncResult<()> {
    let Prepared { ctx, collections, seen_at, known } = prepared;
    let mut sup = Supervisor { ctx: ctx.clone(), tasks: JoinSet::new(), known, seen_at, dropped: HashMap::new(), first_error: None };
    for ready in collections {
        sup.spawn(ready);
    }
    // A one-shot copy copies what is there at start; otherwise new collections are picked up.
    let discovery = ctx.config.discovery.as_ref().filter(|_| ctx.config.mode != SyncMode::Copy);
    let mut poll = tokio::time::interval(discovery.map_or(std::time::Duration::from_secs(3600), |d| d.interval));
    poll.tick().await;
    loop {
        tokio::select! {
            joined = sup.tasks.join_next(), if !sup.tasks.is_empty() => {
                match joined {
                    Some(Ok((namespace, result))) => sup.ended(namespace, result),
                    Some(Err(e)) => sup.fail(SyncError::new(ErrorCode::Internal, format!("collection task panicked: {e}"))),
                    None => continue,
                }
            }
            _ = poll.tick(), if discovery.is_some() && !ctx.cancel.is_cancelled() => sup.discover_more().await,
            _ = ctx.cancel.cancelled(), if sup.tasks.is_empty() => break,
            else => break,
        }
        if sup.tasks.is_empty() && (discovery.is_none() || ctx.cancel.is_cancelled()) {
            break;
        }
    }
    // After the last write of every collection, whether the sync stops or failed.
    if let Err(e) = ctx.sink.close().await {
        sup.first_error.get_or_insert(e);
    }
    sup.first_error.map_or(Ok(()), Err)
}
