//! The partitioned mode (`instances: { group }`): the instances of a group split the followed
//! collections, each collection run by the one instance that holds its lease.
//!
//! This instance keeps its heartbeat document fresh and, every poll, reads the members and the
//! collections' leases, computes who should own what ([`plan`], a pure function every member
//! computes alike), releases what it should no longer own (after its collection task stopped
//! cleanly: written, checkpoint saved) and looks at the leases of what it should own, taking
//! those that are free, released or expired. Each owned collection's writes and checkpoint
//! saves go through its own lease's guard and term.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use mongodb::bson::Timestamp;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::collection::CollectionSync;
use super::prepare::{find_new, prepare_collection, stream_only_start};
use super::role::{assign, stop_when_lost};
use super::{connect, set_state, Connections, Connector, Context, Halt, PhaseResult, Proceed, Setup};
use crate::checkpoint::CheckpointStore;
use crate::config::{CollectionConfig, Namespace, SyncMode};
use crate::coordination::{plan, Elector, FencedSink, FencedStore, GroupStore, Instance, Leadership, Look, Membership};
use crate::error::{ErrorCode, SyncError, SyncResult};
use crate::event::{SyncEvent, SyncState};
use crate::sink::Sink;
use crate::source::ChangeSource;
use crate::stats::Role;

/// A followed collection: its settings, and where a stream-only sync without a saved position
/// follows it from.
#[derive(Clone)]
struct Followed {
    config: CollectionConfig,
    stream_from: Option<Timestamp>,
}

/// A collection this instance owns: its lease, and its task (none once it ended by itself).
struct Owned {
    leadership: Leadership,
    cancel: CancellationToken,
    task: Option<JoinHandle<SyncResult<()>>>,
}

/// The run's connections, shared by every owned collection.
struct Shared {
    source: Arc<dyn ChangeSource>,
    sink: Arc<dyn Sink>,
    store: Arc<dyn CheckpointStore>,
    copying: Arc<Mutex<HashSet<Namespace>>>,
}

pub(super) struct Partition {
    setup: Setup,
    group: Arc<dyn GroupStore>,
    me: Instance,
    shared: Shared,
    cancel: CancellationToken,
    membership: Membership,
    electors: BTreeMap<String, Elector>,
    owned: BTreeMap<String, Owned>,
    followed: BTreeMap<String, Followed>,
    /// Discovery: collections seen (followed or passed over), when the source's time was last
    /// read before listing, and when to list next.
    known: HashSet<Namespace>,
    seen_at: Option<Timestamp>,
    next_listing: Instant,
    heartbeat: JoinHandle<()>,
    failure: Option<SyncError>,
}

/// Joins the group: connects, writes this member's heartbeat, and takes a first share.
pub(super) async fn join(setup: &Setup, connector: &dyn Connector, group: Arc<dyn GroupStore>, cancel: &CancellationToken) -> PhaseResult<Partition> {
    let sink_context = setup.sink_context(cancel.clone());
    let Connections { source, sink, store } = connector.connect(&setup.config, &sink_context).await?;
    sink.connect().await?;
    if let Some(dlq) = &setup.config.dead_letter_index {
        sink.prepare_dead_letters(dlq).await.proceed()?;
    }
    let shared = Shared { source, sink, store, copying: Arc::default() };
    let stream_from = match setup.config.mode {
        SyncMode::Stream { start_at } => Some(stream_only_start(&*shared.source, start_at).await?),
        _ => None,
    };
    let me = Instance::current();
    let lease = setup.config.lease.clone();
    group.heartbeat(&me, lease.duration).await?;
    let heartbeat = tokio::spawn(beat(group.clone(), me.clone(), lease).in_current_span());
    let followed = setup.config.collections.iter().map(|c| (c.namespace.to_string(), Followed { config: c.clone(), stream_from })).collect();
    let mut partition = Partition {
        setup: setup.clone(),
        group,
        membership: Membership::new(me.clone()),
        me,
        shared,
        cancel: cancel.clone(),
        electors: BTreeMap::new(),
        owned: BTreeMap::new(),
        followed,
        known: setup.config.collections.iter().map(|c| c.namespace.clone()).collect(),
        seen_at: stream_from,
        next_listing: Instant::now(),
        heartbeat,
        failure: None,
    };
    partition.round().await?;
    Ok(partition)
}

/// Keeps this member's heartbeat document fresh.
async fn beat(group: Arc<dyn GroupStore>, me: Instance, lease: crate::config::LeaseConfig) {
    loop {
        tokio::time::sleep(lease.renew_every()).await;
        if let Err(e) = group.heartbeat(&me, lease.duration).await {
            tracing::warn!("writing this member's heartbeat failed (will try again): {e}");
        }
    }
}

impl Partition {
    /// The state `start()` resolves in, and the state after each change of ownership.
    pub(super) fn state(&self) -> SyncState {
        match () {
            _ if self.owned.is_empty() => SyncState::Standby,
            _ if !self.shared.copying.lock().expect("copying lock").is_empty() => SyncState::Copying,
            _ => SyncState::Streaming,
        }
    }

    /// Follows the plan until stopped or a collection fails; then stops every owned
    /// collection, hands their leases over and leaves the group.
    pub(super) async fn serve(mut self) -> SyncResult<()> {
        let every = self.setup.config.lease.poll_every();
        while self.failure.is_none() {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.cancel.cancelled() => break,
            }
            match self.round().await {
                Ok(()) | Err(Halt::Stopped) => {}
                Err(Halt::Failed(e)) if e.code.is_source() => {
                    tracing::warn!("coordinating the group failed (will try again): {e}")
                }
                Err(Halt::Failed(e)) => self.failure = Some(e),
            }
        }
        self.leave().await
    }

    /// One look at the group: reap ended collections, find new ones, follow the plan.
    async fn round(&mut self) -> PhaseResult<()> {
        self.reap().await;
        if self.setup.config.discovery.is_some() && Instant::now() >= self.next_listing && !self.cancel.is_cancelled() {
            self.discover().await?;
        }
        let live = self.membership.live(&self.group.members().await?);
        let owners = crate::coordination::owners(&self.group.leases().await?);
        let collections: BTreeSet<String> = self.followed.keys().cloned().collect();
        let wanted = plan(&collections, &live, &owners, self.setup.config.instances.as_ref().and_then(|i| i.max_collections_per_instance));
        let mine = |ns: &String| wanted.get(ns) == Some(&self.me.id);
        let (release, take): (Vec<String>, Vec<String>) = (
            self.owned.keys().filter(|ns| !mine(ns)).cloned().collect(),
            collections.iter().filter(|ns| mine(ns) && !self.owned.contains_key(*ns)).cloned().collect(),
        );
        for ns in release {
            self.release(&ns).await;
        }
        for ns in take {
            if self.cancel.is_cancelled() {
                break;
            }
            self.try_take(&ns).await?;
        }
        self.publish();
        Ok(())
    }

    /// Lists the collections the patterns choose; new ones are followed from now on.
    async fn discover(&mut self) -> SyncResult<()> {
        let discovery = self.setup.config.discovery.as_ref().expect("listing only with discovery");
        self.next_listing = Instant::now() + discovery.interval;
        let (found, now) = find_new(&*self.shared.source, &self.setup.config, &self.setup.events, discovery, &mut self.known).await?;
        for config in found {
            self.known.insert(config.namespace.clone());
            let change = crate::event::CollectionChange::Discovered { index: config.index.clone() };
            self.setup.events.emit(SyncEvent::Change { namespace: config.namespace.to_string(), change });
            self.followed.insert(config.namespace.to_string(), Followed { config, stream_from: self.seen_at });
        }
        self.seen_at = Some(now);
        Ok(())
    }
}

impl Partition {
    /// Looks at the lease of a collection this instance should own; runs it once taken.
    async fn try_take(&mut self, ns: &str) -> SyncResult<()> {
        let (group, me, lease) = (&self.group, &self.me, &self.setup.config.lease);
        let elector = self.electors.entry(ns.to_string()).or_insert_with(|| Elector::new(group.lease(ns), me.clone(), lease.clone()));
        if let (Look::Acquired(term), sent) = elector.look().await? {
            let leadership = elector.lead(term, sent);
            self.run(ns, leadership);
        }
        Ok(())
    }

    /// Starts a collection's task under its lease: its writes and checkpoint saves go through
    /// the lease's guard, and it stops when the lease is lost.
    fn run(&mut self, ns: &str, leadership: Leadership) {
        let followed = self.followed[ns].clone();
        let cancel = self.cancel.child_token();
        stop_when_lost(leadership.guard(), &cancel);
        let guard = leadership.guard().clone();
        let sink: Arc<dyn Sink> = Arc::new(FencedSink::new(self.shared.sink.clone(), guard.clone()));
        let store = connect::observed(Arc::new(FencedStore::new(self.shared.store.clone(), guard)), self.setup.stats.clone(), self.setup.monitor.clone());
        let ctx = self.setup.context(self.shared.source.clone(), sink, store, cancel.clone(), self.shared.copying.clone());
        let stats = self.setup.stats.collection(ns);
        let task = tokio::spawn(stats.track(run_collection(ctx, followed)).in_current_span());
        self.owned.insert(ns.to_string(), Owned { leadership, cancel, task: Some(task) });
    }

    /// Collects the collections whose task ended: by losing its lease (then it is let go), by
    /// itself (kept, its lease renewed), or failing (the sync fails).
    async fn reap(&mut self) {
        let ended: Vec<String> = self.owned.iter().filter(|(_, o)| o.task.as_ref().is_some_and(JoinHandle::is_finished)).map(|(ns, _)| ns.clone()).collect();
        for ns in ended {
            let owned = self.owned.get_mut(&ns).expect("owned");
            let result = joined(owned.task.take().expect("a task")).await;
            let lost = owned.leadership.guard().is_lost();
            match result {
                _ if lost => {
                    let term = owned.leadership.term();
                    self.forget(&ns);
                    let message = format!(
                        "this instance lost the lease of this collection (term {term}): another instance may have taken it over; it stopped writing it"
                    );
                    self.setup.events.emit(SyncEvent::Warning { namespace: ns, message });
                }
                Ok(()) => {}
                Err(e) => {
                    self.failure.get_or_insert(e);
                }
            }
        }
    }

    /// Stops a collection cleanly (what was read is written, its checkpoint saved), then lets
    /// its lease go: the instance that should own it takes it at its next look.
    async fn release(&mut self, ns: &str) {
        let Some(mut owned) = self.owned.remove(ns) else { return };
        owned.cancel.cancel();
        if let Some(task) = owned.task.take() {
            if let Err(e) = joined(task).await {
                if !owned.leadership.guard().is_lost() && !self.cancel.is_cancelled() {
                    self.failure.get_or_insert(e);
                }
            }
        }
        self.shared.copying.lock().expect("copying lock").remove(&Namespace::parse(ns).expect("a followed namespace"));
        if let Err(e) = owned.leadership.release().await {
            // It runs out instead: the next owner waits for it.
            tracing::warn!("releasing the lease of {ns} failed: {e}");
        }
    }

    fn forget(&mut self, ns: &str) {
        self.owned.remove(ns);
        self.shared.copying.lock().expect("copying lock").remove(&Namespace::parse(ns).expect("a followed namespace"));
    }

    /// The role, the owned collections (an `assignment` event when they changed) and the state.
    fn publish(&self) {
        let term = self.owned.values().map(|o| o.leadership.term()).max().unwrap_or(0);
        assign(&self.setup, Role::Member, term, self.owned.keys().cloned().collect());
        let state = self.state();
        if !self.cancel.is_cancelled() && self.setup.stats.state() != state && self.setup.stats.state() != SyncState::Starting {
            set_state(&self.setup.stats, &self.setup.events, state, None);
        }
    }

    /// Stops every owned collection, hands its lease over, leaves the group and closes the
    /// outputs; the first failure, if any.
    pub(super) async fn leave(mut self) -> SyncResult<()> {
        for owned in self.owned.values() {
            owned.cancel.cancel();
        }
        let owned: Vec<String> = self.owned.keys().cloned().collect();
        for ns in owned {
            self.release(&ns).await;
        }
        self.heartbeat.abort();
        if let Err(e) = self.group.leave(&self.me).await {
            tracing::warn!("leaving the group failed (the others count this member gone once its heartbeat runs out): {e}");
        }
        assign(&self.setup, Role::Member, 0, Vec::new());
        if let Err(e) = self.shared.sink.close().await {
            self.failure.get_or_insert(e);
        }
        self.failure.take().map_or(Ok(()), Err)
    }
}

impl Drop for Partition {
    /// A member dropped without `leave` (a failed start) stops its heartbeat: others count it
    /// gone once it runs out. Its leases run out the same way (see `Leadership`'s drop).
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

async fn joined(task: JoinHandle<SyncResult<()>>) -> SyncResult<()> {
    task.await.unwrap_or_else(|e| Err(SyncError::new(ErrorCode::Internal, format!("collection task panicked: {e}"))))
}

/// One owned collection: prepared under its lease's term, then run until stopped.
async fn run_collection(ctx: Arc<Context>, followed: Followed) -> SyncResult<()> {
    let ns = followed.config.namespace.clone();
    let ready = match prepare_collection(&ctx, &followed.config, followed.stream_from).await {
        Ok(ready) => ready,
        Err(Halt::Stopped) => return Ok(()),
        Err(Halt::Failed(e)) => return Err(e.in_collection(&ns)),
    };
    // A dropped collection found by a pattern ends like a stopped one here: its lease stays with
    // this member until the next plan (see `Ended::Dropped`).
    CollectionSync::new(&ctx, ready.config, ready.checkpoint).run(ready.feed).await.map(|_| ()).map_err(|e| e.in_collection(&ns))
}
