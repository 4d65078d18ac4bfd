//! The sync engine: connects source, transform, sink and checkpoints, and runs one task per
//! collection. Its lifecycle is `start` → (`stop` | failure), observable through events and stats.
//!
//! - `connect`: where the source, the outputs and the checkpoint store come from;
//! - `prepare`: each collection's checkpoint and index before it runs, and namespace discovery;
//! - `supervisor`: the collection tasks, and collections found while running;
//! - `collection/`: one collection's phases (copy, stream, collection-level changes);
//! - `batch`, `ack`: batches of writes and their in-order acknowledgement.

mod ack;
mod batch;
mod calls;
mod collection;
mod connect;
mod partition;
mod prepare;
mod role;
mod supervisor;
#[cfg(test)]
mod tests;
pub(crate) mod throttle;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mongodb::bson::Timestamp;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::checkpoint::CheckpointStore;
use crate::config::{Namespace, SyncConfig};
use crate::coordination::{FencedSink, FencedStore, LeaseGuard};
use crate::error::{ErrorCode, SyncError, SyncResult};
use crate::event::{EventBus, SyncEvent, SyncState};
use crate::monitor::Monitor;
use crate::search::SearchClient;
use crate::sink::Sink;
use crate::source::ChangeSource;
use crate::stats::{CollectionPhase, Stats, StatsSnapshot};
use crate::transform::hook::DocumentHook;

pub use calls::{StartCall, StopCall};
pub use connect::{Connections, Connector, MongoConnector, PostgresConnector};

/// How a phase or a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Flow {
    Done,
    Stopped,
    /// The collection must be copied again (into a fresh index behind its alias), for this reason.
    Recopy(String),
    /// The collection, found by a `namespaces` pattern, was dropped (applied, and settled as a
    /// drop) at this time: it is followed no more, until discovery finds it again.
    Dropped(Timestamp),
}

/// How often the engine does its periodic chores; tests shorten them.
#[derive(Debug, Clone)]
pub(crate) struct Timing {
    /// While changes flow, the stream position is saved at most this often.
    pub stream_checkpoint_every: Duration,
    /// A saved idle position is refreshed at most this often.
    pub idle_checkpoint_every: Duration,
    /// During a copy, acknowledged ranges are saved at most this often (and when the copy
    /// stops or ends): a saved position that lags only re-copies a little after a crash.
    pub copy_checkpoint_every: Duration,
    /// During a copy, how often the change history is checked to still reach its start point.
    /// The check only makes a doomed copy fail before its end, so a minute is soon enough;
    /// and it is not free for every server: SecantusDB answers the oplog probe by decoding the
    /// whole oplog (~1.6 CPU-seconds per 20,000 entries), which every 10 s cost it as much as
    /// the copy's own scan.
    pub history_check_every: Duration,
    /// A drop followed by nothing is taken for a plain one only once the reopened stream has
    /// been quiet this long (a replacement's contents may arrive without a change: SecantusDB's
    /// `$out` drops, then renames).
    pub drop_settles_after: Duration,
    /// A position save that can wait is put off while the checkpoint store is busy, for at
    /// most this long since the collection's last save.
    pub save_put_off_at_most: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            stream_checkpoint_every: Duration::from_secs(1),
            idle_checkpoint_every: Duration::from_secs(5),
            copy_checkpoint_every: Duration::from_secs(1),
            history_check_every: Duration::from_secs(60),
            drop_settles_after: Duration::from_secs(1),
            save_put_off_at_most: Duration::from_secs(60),
        }
    }
}

/// Why a step of a phase ended before its work was done: the sync was stopped (an output's
/// retry wait was cut short, so nothing after it may count the work as done; not a failure),
/// or it failed. `?` passes either up; the collection's run loop ends on `Stopped`.
#[derive(Debug)]
pub(crate) enum Halt {
    Stopped,
    Failed(SyncError),
}

/// The result of a step that can be stopped midway.
pub(crate) type PhaseResult<T> = Result<T, Halt>;

impl Halt {
    /// A failure names the collection it happened in.
    fn in_collection(self, ns: &Namespace) -> Self {
        match self {
            Halt::Failed(e) => Halt::Failed(e.in_collection(ns)),
            Halt::Stopped => Halt::Stopped,
        }
    }
}

impl From<SyncError> for Halt {
    fn from(error: SyncError) -> Self {
        Halt::Failed(error)
    }
}

/// An output's answer ([`crate::retry::Flow`]) within a phase: its value, or the halt that
/// its stop or failure brings.
trait Proceed<T> {
    fn proceed(self) -> PhaseResult<T>;
}

impl<T> Proceed<T> for SyncResult<crate::retry::Flow<T>> {
    fn proceed(self) -> PhaseResult<T> {
        match self? {
            crate::retry::Flow::Done(value) => Ok(value),
            crate::retry::Flow::Stopped => Err(Halt::Stopped),
        }
    }
}

/// What every collection task shares.
pub(crate) struct Context {
    config: Arc<SyncConfig>,
    source: Arc<dyn ChangeSource>,
    sink: Arc<dyn Sink>,
    store: Arc<dyn CheckpointStore>,
    events: EventBus,
    stats: Arc<Stats>,
    cancel: CancellationToken,
    /// The collections copying now (shared by every collection of a partitioned member).
    copying: Arc<Mutex<HashSet<Namespace>>>,
    hook: Option<Arc<dyn DocumentHook>>,
    timing: Timing,
    /// `rateLimit`: one budget for all the collections of this run.
    rate_limit: Option<Arc<throttle::RateLimiter>>,
}

impl Context {
    /// Marks a collection's copy as finished; the last one moves the sync to `streaming`.
    fn copy_finished(&self, ns: &Namespace) {
        let mut copying = self.copying.lock().expect("copying lock");
        self.stats.collection(&ns.to_string()).set_phase(CollectionPhase::Streaming);
        if copying.remove(ns) && copying.is_empty() && !self.cancel.is_cancelled() {
            set_state(&self.stats, &self.events, SyncState::Streaming, None);
        }
    }

    /// Marks a collection as copying (again, after lost history); a streaming sync goes back to `copying`.
    fn copy_started(&self, ns: &Namespace) {
        self.stats.collection(&ns.to_string()).set_phase(CollectionPhase::Copying);
        self.copying.lock().expect("copying lock").insert(ns.clone());
        if self.stats.state() == SyncState::Streaming {
            set_state(&self.stats, &self.events, SyncState::Copying, None);
        }
    }

    fn is_copying(&self) -> bool {
        !self.copying.lock().expect("copying lock").is_empty()
    }

    fn warn(&self, namespace: &Namespace, message: String) {
        self.events.emit(SyncEvent::Warning { namespace: namespace.to_string(), message });
    }
}

fn set_state(stats: &Stats, events: &EventBus, state: SyncState, error: Option<SyncError>) {
    stats.set_state(state);
    events.emit(SyncEvent::State { state, error });
}

/// What every run (every lease term) of an engine is made with.
#[derive(Clone)]
pub(crate) struct Setup {
    config: Arc<SyncConfig>,
    events: EventBus,
    stats: Arc<Stats>,
    monitor: Option<Arc<Monitor>>,
    hook: Option<Arc<dyn DocumentHook>>,
    timing: Timing,
    /// `rateLimit`'s buckets, one for the whole run: every collection's context takes from them.
    rate_limit: Option<Arc<throttle::RateLimiter>>,
}

impl Setup {
    /// Connects and prepares the collections of one run; with a lease, every write and
    /// checkpoint save goes through its guard, and `cancel` fires when the lease is lost.
    async fn prepare(&self, connector: &dyn Connector, cancel: CancellationToken, guard: Option<&Arc<LeaseGuard>>) -> PhaseResult<supervisor::Prepared> {
        let Connections { source, mut sink, mut store } = connector.connect(&self.config, &self.sink_context(cancel.clone())).await?;
        if let Some(guard) = guard {
            sink = Arc::new(FencedSink::new(sink, guard.clone()));
            store = Arc::new(FencedStore::new(store, guard.clone()));
        }
        let store = connect::observed(store, self.stats.clone(), self.monitor.clone());
        sink.connect().await?;
        prepare::prepare_all(self.context(source, sink, store, cancel, Arc::default())).await
    }

    /// What the outputs retry and report with; their retries stop when `cancel` fires.
    fn sink_context(&self, cancel: CancellationToken) -> crate::sink::SinkContext {
        crate::sink::SinkContext { retry: self.config.retry.clone(), events: self.events.clone(), stats: self.stats.clone(), cancel }
    }

    /// What collection tasks run with: these parts, stopped by `cancel`.
    fn context(
        &self,
        source: Arc<dyn ChangeSource>,
        sink: Arc<dyn Sink>,
        store: Arc<dyn CheckpointStore>,
        cancel: CancellationToken,
        copying: Arc<Mutex<HashSet<Namespace>>>,
    ) -> Arc<Context> {
        Arc::new(Context {
            config: self.config.clone(),
            source,
            sink,
            store,
            events: self.events.clone(),
            stats: self.stats.clone(),
            cancel,
            copying,
            hook: self.hook.clone(),
            timing: self.timing.clone(),
            rate_limit: self.rate_limit.clone(),
        })
    }
}

/// The result of a finished run, shared by everyone waiting for it.
type Finished = Option<Result<(), SyncError>>;

struct Run {
    /// The `start()` call that began it: a stop called before that start ends it, a later one not.
    start: StartCall,
    cancel: CancellationToken,
    finished: watch::Receiver<Finished>,
}

/// What a stop found: the run it ended, or one started after it (left running).
enum StopOutcome {
    EndedRun,
    LeftLater,
}

pub struct SyncEngine {
    config: Arc<SyncConfig>,
    events: EventBus,
    stats: Arc<Stats>,
    run: tokio::sync::Mutex<Option<Run>>,
    /// `start()` and `stop()` in the order they were called.
    calls: calls::Calls,
    hook: Mutex<Option<Arc<dyn DocumentHook>>>,
    timing: Timing,
    /// The HTTP server's state and metrics, with the `http` option.
    monitor: Option<Arc<Monitor>>,
    /// The search API over this sync's indices, built at first use.
    search: Mutex<Option<Arc<SearchClient>>>,
}

impl SyncEngine {
    /// Validates the configuration; nothing connects until `start`.
    pub fn new(config: SyncConfig) -> SyncResult<Self> {
        config.validate()?;
        let (config, events, stats) = (Arc::new(config), EventBus::default(), Arc::new(Stats::default()));
        let monitor = config.http.clone().map(|http| Monitor::new(config.clone(), http, &events, stats.clone()));
        Ok(SyncEngine {
            config,
            events,
            stats,
            run: Default::default(),
            calls: Default::default(),
            hook: Mutex::new(None),
            timing: Timing::default(),
            monitor,
            search: Mutex::new(None),
        })
    }

    /// The search API over the indices this sync manages (or `search.indices`); `ERR_CONFIG`
    /// without the `elasticsearch` option.
    pub fn search_client(&self) -> SyncResult<Arc<SearchClient>> {
        let mut slot = self.search.lock().expect("search lock");
        if let Some(client) = &*slot {
            return Ok(client.clone());
        }
        let es = self.config.elasticsearch.as_ref().ok_or_else(|| SyncError::config("search: the elasticsearch option is required to search"))?;
        let settings = self.config.search.clone().unwrap_or_default();
        let scope = crate::search::sync_scope(self.config.clone(), self.stats.clone());
        let client = Arc::new(SearchClient::new(es, settings, scope, &self.events)?);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// The monitor serving the `http` option, if given.
    pub fn monitor(&self) -> Option<&Arc<Monitor>> {
        self.monitor.as_ref()
    }

    /// Sets the transform every document goes through; takes effect at the next `start`.
    pub fn set_transform(&self, hook: Arc<dyn DocumentHook>) -> SyncResult<()> {
        let state = self.stats.state();
        if !matches!(state, SyncState::Idle | SyncState::Stopped | SyncState::Failed) {
            return Err(SyncError::new(ErrorCode::State, format!("setTransform() called while the sync is {}; call it before start()", state.as_str())));
        }
        *self.hook.lock().expect("hook lock") = Some(hook);
        Ok(())
    }

    pub fn events(&self) -> &EventBus {
        &self.events
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    pub fn config(&self) -> &SyncConfig {
        &self.config
    }

    /// Connects to MongoDB and the configured outputs, checks the saved positions and starts
    /// syncing; resolves once it runs. The call is numbered when this future is first polled; a
    /// binding whose calls run as futures numbers them as they are made ([`call_start`](Self::call_start)).
    pub async fn start(&self) -> SyncResult<()> {
        self.start_called(self.call_start()).await
    }

    /// Numbers a `start()` call as it is made, before its future runs: a binding calls this on
    /// the caller's thread, then runs [`start_called`](Self::start_called) with it. A stop called
    /// after this ends that start even if the stop's future runs first.
    pub fn call_start(&self) -> StartCall {
        self.calls.start()
    }

    /// A numbered `start()` call whose future will not run (it could not be spawned): a stop
    /// called after it does not wait for it.
    pub fn start_abandoned(&self, call: StartCall) {
        self.calls.settle(call);
    }

    /// Runs a numbered `start()` call (see [`call_start`](Self::call_start)).
    pub async fn start_called(&self, call: StartCall) -> SyncResult<()> {
        match self.config.postgres {
            Some(_) => self.run_start(call, &PostgresConnector { monitor: self.monitor.clone() }).await,
            None => self.run_start(call, &MongoConnector { monitor: self.monitor.clone() }).await,
        }
    }

    /// `start`, with the source, outputs and checkpoint store that `connector` gives. With a
    /// lease that another instance holds, resolves at once in the `standby` state.
    pub async fn start_with(&self, connector: &dyn Connector) -> SyncResult<()> {
        self.run_start(self.call_start(), connector).await
    }

    async fn run_start(&self, call: StartCall, connector: &dyn Connector) -> SyncResult<()> {
        let settling = self.calls.settling(call);
        let begun = self.begin_run(call).await;
        drop(settling);
        let (cancel, done) = begun?;
        self.stats.set_runtime();
        let (setup, connector) = (self.setup(), connector.to_shared());
        // No lock is held from here on: `stop()` during the preparation (which may wait on an
        // output retrying for as long as it fails) cancels it.
        let stopped = || SyncError::new(ErrorCode::State, "stop() was called before start() finished");
        let first = tokio::select! {
            // The stop first: a start a stop was called after (its token cancelled when it was
            // registered) ends without connecting.
            biased;
            _ = cancel.cancelled() => Err(Halt::Stopped),
            first = role::first_term(&setup, &*connector, &cancel) => first,
        };
        let first = match first {
            Ok(f) if !cancel.is_cancelled() => f,
            Ok(f) => {
                f.abandon().await;
                return Err(self.end_run(&done, stopped()));
            }
            Err(Halt::Stopped) => return Err(self.end_run(&done, stopped())),
            Err(Halt::Failed(e)) => return Err(self.end_run(&done, if cancel.is_cancelled() { stopped() } else { e })),
        };
        // The state is set before `start()` resolves, so that `stats()` right after it is accurate.
        first.announce_state(&setup);
        let running = async move {
            let result = role::serve(setup.clone(), connector, first, cancel).await;
            match &result {
                Ok(()) => set_state(&setup.stats, &setup.events, SyncState::Stopped, None),
                Err(e) => set_state(&setup.stats, &setup.events, SyncState::Failed, Some(e.clone())),
            }
            let _ = done.send(Some(result));
        };
        tokio::spawn(running.in_current_span());
        Ok(())
    }

    fn setup(&self) -> Setup {
        Setup {
            config: self.config.clone(),
            events: self.events.clone(),
            stats: self.stats.clone(),
            monitor: self.monitor.clone(),
            hook: self.hook.lock().expect("hook lock").clone(),
            timing: self.timing.clone(),
            rate_limit: self.config.rate_limit.as_ref().map(|r| Arc::new(throttle::RateLimiter::new(r))),
        }
    }

    /// Registers a new run, so that `stop()` can end it from now on; fails if one is under way.
    /// A run whose start a stop was called after is registered stopping, its token cancelled.
    async fn begin_run(&self, call: StartCall) -> SyncResult<(CancellationToken, watch::Sender<Finished>)> {
        let mut run = self.run.lock().await;
        let state = self.stats.state();
        if !matches!(state, SyncState::Idle | SyncState::Stopped | SyncState::Failed) {
            return Err(SyncError::new(ErrorCode::State, format!("start() called while the sync is {}", state.as_str())));
        }
        if let Some(monitor) = &self.monitor {
            if self.config.search.is_some() && self.config.elasticsearch.is_some() {
                monitor.set_search(self.search_client()?);
            }
            monitor.serve().await?;
        }
        set_state(&self.stats, &self.events, SyncState::Starting, None);
        let cancel = CancellationToken::new();
        let (done, finished) = watch::channel::<Finished>(None);
        if self.calls.stopped(call) {
            set_state(&self.stats, &self.events, SyncState::Stopping, None);
            cancel.cancel();
        }
        *run = Some(Run { start: call, cancel: cancel.clone(), finished });
        Ok((cancel, done))
    }

    /// Ends a run that never got going: stopped during `start()` (then it is `stopped`), or
    /// failed to start.
    fn end_run(&self, done: &watch::Sender<Finished>, error: SyncError) -> SyncError {
        let (state, result) = match self.stats.state() {
            SyncState::Stopping => (SyncState::Stopped, Ok(())),
            _ => (SyncState::Failed, Err(error.clone())),
        };
        set_state(&self.stats, &self.events, state, result.clone().err());
        let _ = done.send(Some(result));
        error
    }

    /// Stops reading, writes what was read, saves the checkpoint; then closes the HTTP server.
    /// Idempotent once started.
    pub async fn stop(&self) -> SyncResult<()> {
        self.stop_called(self.call_stop()).await
    }

    /// Numbers a `stop()` call as it is made (see [`call_start`](Self::call_start)): it ends
    /// every start called before it, and none called after.
    pub fn call_stop(&self) -> StopCall {
        self.calls.stop()
    }

    /// Runs a numbered `stop()` call (see [`call_stop`](Self::call_stop)).
    pub async fn stop_called(&self, call: StopCall) -> SyncResult<()> {
        let stopped = self.stop_run(call).await;
        // The HTTP server of a run started after this stop keeps serving.
        if let (Some(monitor), false) = (&self.monitor, matches!(stopped, Ok(StopOutcome::LeftLater))) {
            monitor.shutdown().await;
        }
        stopped.map(drop)
    }

    async fn stop_run(&self, call: StopCall) -> SyncResult<StopOutcome> {
        // A start called before this stop whose future has not run yet: once registered, its
        // run is stopping already, and this waits for its end.
        self.calls.settled_before(call).await;
        let mut finished = {
            let run = self.run.lock().await;
            let Some(run) = run.as_ref() else {
                return Err(SyncError::new(ErrorCode::State, "stop() called before start()"));
            };
            if !call.covers(run.start) {
                // A start called after this stop: the runs this stop ends have ended.
                return Ok(StopOutcome::LeftLater);
            }
            if !matches!(self.stats.state(), SyncState::Stopped | SyncState::Failed) {
                set_state(&self.stats, &self.events, SyncState::Stopping, None);
            }
            run.cancel.cancel();
            run.finished.clone()
        };
        let _ = finished.wait_for(|f| f.is_some()).await;
        Ok(StopOutcome::EndedRun)
    }

    /// Resolves when the sync has stopped; rejects with the error that made it fail.
    pub async fn wait(&self) -> SyncResult<()> {
        let mut finished = {
            let run = self.run.lock().await;
            match run.as_ref() {
                Some(run) => run.finished.clone(),
                None => return Err(SyncError::new(ErrorCode::State, "the sync was never started")),
            }
        };
        let done = finished.wait_for(|f| f.is_some()).await.map_err(|_| SyncError::new(ErrorCode::Internal, "sync task vanished"))?;
        done.clone().expect("waited for Some")
    }
}
