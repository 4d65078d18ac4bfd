//! The sync engine: connects source, transform, sink and checkpoints, and runs one task per
//! collection. Its lifecycle is `start` → (`stop` | failure), observable through events and stats.

mod batch;
mod collection;
mod discovery;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mongodb::options::{ClientOptions, Tls, TlsOptions};
use mongodb::Client;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::checkpoint::{CollectionCheckpoint, MongoCheckpointStore};
use crate::config::{redact_uri, CollectionConfig, Discovery, HistoryLostPolicy, Namespace, SyncConfig, SyncMode};
use crate::error::{ErrorCode, SyncError, SyncResult};
use crate::event::{EventBus, SyncEvent, SyncState};
use crate::monitor::Monitor;
use crate::sink::{Sink, SinkContext};
use crate::source::change_stream::{self, StreamStart};
use crate::source::mongo_error;
use crate::stats::{CollectionPhase, Stats, StatsSnapshot};
use crate::transform::hook::DocumentHook;
use collection::{begin_resync, stream_open_error, CollectionSync};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Done,
    Stopped,
}

/// A sink call the stop ended ([`crate::retry::Flow::Stopped`]) ends the phase as the
/// `ERR_STATE` error `CollectionSync::run` takes for a stop while cancelled. Transitional: once
/// the phases pass the sinks' `Flow` on, this goes.
trait UntilStopped<T> {
    fn until_stopped(self) -> SyncResult<T>;
}

impl<T> UntilStopped<T> for SyncResult<crate::retry::Flow<T>> {
    fn until_stopped(self) -> SyncResult<T> {
        match self? {
            crate::retry::Flow::Done(value) => Ok(value),
            crate::retry::Flow::Stopped => Err(SyncError::new(ErrorCode::State, "stopped while an output was retrying")),
        }
    }
}

/// What every collection task shares.
pub(crate) struct Context {
    config: Arc<SyncConfig>,
    client: Client,
    sink: Arc<dyn Sink>,
    store: MongoCheckpointStore,
    events: EventBus,
    stats: Arc<Stats>,
    cancel: CancellationToken,
    copying: Mutex<HashSet<Namespace>>,
    hook: Option<Arc<dyn DocumentHook>>,
    monitor: Option<Arc<Monitor>>,
}

impl Context {
    /// Tells the monitor (if any) that a checkpoint of `ns` was saved.
    fn checkpoint_saved(&self, ns: &Namespace) {
        if let Some(monitor) = &self.monitor {
            monitor.checkpoint_saved(&ns.to_string());
        }
    }

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

    /// How long one getMore waits when there are no changes. The server answers as soon as
    /// there are some, so this sets only how often an idle stream is asked again (and its
    /// position refreshed); shorter only loads the server with empty getMores.
    fn max_await(&self) -> Duration {
        Duration::from_millis(500)
    }
}

fn set_state(stats: &Stats, events: &EventBus, state: SyncState, error: Option<SyncError>) {
    stats.set_state(state);
    events.emit(SyncEvent::State { state, error });
}

/// The result of a finished run, shared by everyone waiting for it.
type Finished = Option<Result<(), SyncError>>;

struct Run {
    cancel: CancellationToken,
    finished: watch::Receiver<Finished>,
}

pub struct SyncEngine {
    config: Arc<SyncConfig>,
    events: EventBus,
    stats: Arc<Stats>,
    run: tokio::sync::Mutex<Option<Run>>,
    hook: Mutex<Option<Arc<dyn DocumentHook>>>,
    /// The HTTP server's state and metrics, with the `http` option.
    monitor: Option<Arc<Monitor>>,
}

impl SyncEngine {
    /// Validates the configuration; nothing connects until `start`.
    pub fn new(config: SyncConfig) -> SyncResult<Self> {
        config.validate()?;
        let (config, events, stats) = (Arc::new(config), EventBus::default(), Arc::new(Stats::default()));
        let monitor = config.http.clone().map(|http| Monitor::new(config.clone(), http, &events, stats.clone()));
        Ok(SyncEngine { config, events, stats, run: Default::default(), hook: Mutex::new(None), monitor })
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

    /// The monitor serving the `http` option, if given.
    pub fn monitor(&self) -> Option<&Arc<Monitor>> {
        self.monitor.as_ref()
    }

    /// Connects, checks the saved positions and starts syncing; resolves once it runs.
    pub async fn start(&self) -> SyncResult<()> {
        let mut run = self.run.lock().await;
        let state = self.stats.state();
        if !matches!(state, SyncState::Idle | SyncState::Stopped | SyncState::Failed) {
            return Err(SyncError::new(ErrorCode::State, format!("start() called while the sync is {}", state.as_str())));
        }
        if let Some(monitor) = &self.monitor {
            monitor.serve().await?;
        }
        set_state(&self.stats, &self.events, SyncState::Starting, None);
        let cancel = CancellationToken::new();
        let prepared = match self.prepare(cancel.clone()).await {
            Ok(p) => p,
            Err(e) => {
                set_state(&self.stats, &self.events, SyncState::Failed, Some(e.clone()));
                return Err(e);
            }
        };
        // The state is set before `start()` resolves, so that `stats()` right after it is accurate.
        let copying = !prepared.ctx.copying.lock().expect("copying lock").is_empty();
        set_state(&self.stats, &self.events, if copying { SyncState::Copying } else { SyncState::Streaming }, None);
        let (done_tx, done_rx) = watch::channel::<Finished>(None);
        let events = self.events.clone();
        let stats = self.stats.clone();
        let running = async move {
            let result = run_all(prepared).await;
            match &result {
                Ok(()) => set_state(&stats, &events, SyncState::Stopped, None),
                Err(e) => set_state(&stats, &events, SyncState::Failed, Some(e.clone())),
            }
            let _ = done_tx.send(Some(result));
        };
        tokio::spawn(running.in_current_span());
        *run = Some(Run { cancel, finished: done_rx });
        Ok(())
    }

    async fn prepare(&self, cancel: CancellationToken) -> SyncResult<Prepared> {
        let config = self.config.clone();
        let client = connect_mongo(&config, &self.events).await?;
        let sink_context = SinkContext { retry: config.retry.clone(), events: self.events.clone(), stats: self.stats.clone(), cancel: cancel.clone() };
        let sink = crate::monitor::build_sink(self.monitor.as_deref(), &config, &sink_context)?;
        sink.connect().await?;
        let store = MongoCheckpointStore::new(&client, &config.checkpoint, &config.name);
        let ctx = Arc::new(Context {
            config: config.clone(),
            client: client.clone(),
            sink,
            store,
            events: self.events.clone(),
            stats: self.stats.clone(),
            cancel,
            copying: Mutex::new(HashSet::new()),
            hook: self.hook.lock().expect("hook lock").clone(),
            monitor: self.monitor.clone(),
        });
        if let Some(dlq) = &config.dead_letter_index {
            ctx.sink.prepare_dead_letters(dlq).await.until_stopped()?;
        }
        // Stream only: "now" is read once, before start() resolves, so that a change made
        // right after it is never before a collection's start point.
        let stream_from = match config.mode {
            SyncMode::Stream { start_at } => Some(stream_start(&client, start_at).await?),
            _ => None,
        };
        let mut collections = Vec::with_capacity(config.collections.len());
        for c in &config.collections {
            let (checkpoint, opened_stream) = prepare_collection(&ctx, c, stream_from).await.map_err(|e| e.in_collection(&c.namespace))?;
            collections.push((c.clone(), checkpoint, opened_stream));
        }
        let mut seen_at = None;
        let mut known: HashSet<Namespace> = config.collections.iter().map(|c| c.namespace.clone()).collect();
        if let Some(discovery) = &config.discovery {
            let (found, now) = discover(&ctx, discovery, &mut known, stream_from).await?;
            collections.extend(found);
            seen_at = Some(now);
        }
        Ok(Prepared { ctx, collections, seen_at, known })
    }

    /// Stops reading, writes what was read, saves the checkpoint; then closes the HTTP server.
    /// Idempotent once started.
    pub async fn stop(&self) -> SyncResult<()> {
        let stopped = self.stop_run().await;
        if let Some(monitor) = &self.monitor {
            monitor.shutdown().await;
        }
        stopped
    }

    async fn stop_run(&self) -> SyncResult<()> {
        let mut finished = {
            let run = self.run.lock().await;
            let Some(run) = run.as_ref() else {
                return Err(SyncError::new(ErrorCode::State, "stop() called before start()"));
            };
            if !matches!(self.stats.state(), SyncState::Stopped | SyncState::Failed) {
                set_state(&self.stats, &self.events, SyncState::Stopping, None);
            }
            run.cancel.cancel();
            run.finished.clone()
        };
        let _ = finished.wait_for(|f| f.is_some()).await;
        Ok(())
    }

    /// Resolves when the sync has stopped; rejects with the error that made it fail.
    pub async fn wait(&self) -> SyncResult<()> {
        let finished = {
            let run = self.run.lock().await;
            match run.as_ref() {
                Some(run) => run.finished.clone(),
                None => return Err(SyncError::new(ErrorCode::State, "the sync was never started")),
            }
        };
        let mut finished = finished;
        let done = finished.wait_for(|f| f.is_some()).await.map_err(|_| SyncError::new(ErrorCode::Internal, "sync task vanished"))?;
        done.clone().expect("waited for Some")
    }
}

/// Loads a collection's checkpoint and prepares its index. A saved stream position is checked
/// now, so that lost history fails `start()` (or, with `onHistoryLost: 'resync'`, starts the
/// re-copy at once). `stream_from`, in stream mode, for a collection without a saved position:
/// where it is followed from (`startAt` or the time of `start()`; for a collection found while
/// the sync runs, the last moment it was known not to be there), so none of its changes is missed.
async fn prepare_collection(
    ctx: &Context,
    c: &CollectionConfig,
    stream_from: Option<mongodb::bson::Timestamp>,
) -> SyncResult<(CollectionCheckpoint, Option<change_stream::CollectionStream>)> {
    let config = &ctx.config;
    let mut checkpoint = ctx.store.load(&c.namespace).await?;
    if let (Some(at), None, SyncMode::Stream { .. }) = (stream_from, &checkpoint.start_at, config.mode) {
        checkpoint.start_at = Some(at);
        checkpoint.copy_done = true;
        ctx.store.save(&c.namespace, &checkpoint).await?;
        ctx.checkpoint_saved(&c.namespace);
    }
    let opened_stream = match (&checkpoint.resume_token, checkpoint.copy_done) {
        (Some(token), true) if config.mode != SyncMode::Copy => {
            let collection = ctx.client.database(&c.namespace.db).collection(&c.namespace.coll);
            match change_stream::open(&collection, &StreamStart::ResumeAfter(token.clone()), ctx.max_await()).await {
                Ok(stream) => Some(stream),
                Err(e) => {
                    let err = stream_open_error(&c.namespace.to_string(), &e);
                    if err.code != ErrorCode::HistoryLost || config.on_history_lost != HistoryLostPolicy::Resync {
                        return Err(err);
                    }
                    begin_resync(ctx, c, &mut checkpoint, &err).await?;
                    None
                }
            }
        }
        _ => None,
    };
    if !checkpoint.copy_done && !matches!(config.mode, SyncMode::Stream { .. }) {
        ctx.copy_started(&c.namespace);
    }
    ctx.sink.prepare_index(checkpoint.physical_index.as_deref().unwrap_or(&c.index), Some(c)).await.until_stopped()?;
    Ok((checkpoint, opened_stream))
}

struct Prepared {
    ctx: Arc<Context>,
    collections: Vec<(CollectionConfig, CollectionCheckpoint, Option<change_stream::CollectionStream>)>,
    /// With discovery: the cluster time read before the collections were listed.
    seen_at: Option<mongodb::bson::Timestamp>,
    /// The listed collections and those the patterns found but passed over: not to be found
    /// again (run_all adds every collection it starts).
    known: HashSet<Namespace>,
}

async fn run_all(prepared: Prepared) -> SyncResult<()> {
    let Prepared { ctx, collections, mut seen_at, known: mut running } = prepared;
    let mut tasks = tokio::task::JoinSet::new();
    let spawn = |tasks: &mut tokio::task::JoinSet<SyncResult<()>>, config: CollectionConfig, checkpoint, opened_stream| {
        let (ctx, stats) = (ctx.clone(), ctx.stats.collection(&config.namespace.to_string()));
        let task = async move { CollectionSync::new(&ctx, &config, checkpoint).run(opened_stream).await.map_err(|e| e.in_collection(&config.namespace)) };
        tasks.spawn(stats.track(task).in_current_span());
    };
    for (config, checkpoint, opened_stream) in collections {
        running.insert(config.namespace.clone());
        spawn(&mut tasks, config, checkpoint, opened_stream);
    }
    // A one-shot copy copies what is there at start; otherwise new collections are picked up.
    let discovery = ctx.config.discovery.as_ref().filter(|_| ctx.config.mode != SyncMode::Copy);
    let mut poll = tokio::time::interval(discovery.map_or(std::time::Duration::from_secs(3600), |d| d.interval));
    poll.tick().await;
    let mut first_error = None;
    loop {
        tokio::select! {
            joined = tasks.join_next(), if !tasks.is_empty() => {
                let Some(joined) = joined else { continue };
                let result = joined.unwrap_or_else(|e| Err(SyncError::new(ErrorCode::Internal, format!("collection task panicked: {e}"))));
                if let Err(e) = result {
                    // One collection failing stops the others (cleanly, with their checkpoints saved).
                    ctx.cancel.cancel();
                    first_error.get_or_insert(e);
                }
            }
            _ = poll.tick(), if discovery.is_some() && !ctx.cancel.is_cancelled() => {
                let discovery = discovery.expect("polling only with discovery");
                match discover(&ctx, discovery, &mut running, seen_at).await {
                    Ok((found, now)) => {
                        seen_at = Some(now);
                        for (config, checkpoint, opened_stream) in found {
                            ctx.events.emit(SyncEvent::Change { namespace: config.namespace.to_string(), operation: "discovered".into(), to: Some(config.index.clone()) });
                            running.insert(config.namespace.clone());
                            spawn(&mut tasks, config, checkpoint, opened_stream);
                        }
                    }
                    Err(e) if e.code == ErrorCode::MongoUnreachable || e.code == ErrorCode::Mongo => {
                        ctx.events.emit(SyncEvent::Warning { namespace: String::new(), message: format!("looking for new collections failed (will try again): {e}") });
                    }
                    Err(e) => {
                        ctx.cancel.cancel();
                        first_error.get_or_insert(e);
                    }
                }
            }
            _ = ctx.cancel.cancelled(), if tasks.is_empty() => break,
            else => break,
        }
        if tasks.is_empty() && (discovery.is_none() || ctx.cancel.is_cancelled()) {
            break;
        }
    }
    // After the last write of every collection, whether the sync stops or failed.
    if let Err(e) = ctx.sink.close().await {
        first_error.get_or_insert(e);
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Collections that match the patterns and are not `known` yet, prepared; and the cluster time
/// read before listing them (a collection found next time did not exist before that time).
/// One whose settings from `namespaces.defaults` are unusable (its name makes an invalid index
/// name) is passed over with a warning, once: it is added to `known`.
async fn discover(
    ctx: &Context,
    discovery: &Discovery,
    known: &mut HashSet<Namespace>,
    seen_at: Option<mongodb::bson::Timestamp>,
) -> SyncResult<(Vec<(CollectionConfig, CollectionCheckpoint, Option<change_stream::CollectionStream>)>, mongodb::bson::Timestamp)> {
    let now = cluster_now(&ctx.client).await?;
    let mut found = Vec::new();
    for ns in discovery::list(&ctx.client, discovery, &ctx.config).await? {
        if known.contains(&ns) {
            continue;
        }
        // Listed collections are known from the start: a found one takes the defaults.
        let config = discovery.collection(ns.clone());
        if let Err(e) = config.validate("namespaces.defaults") {
            ctx.events.emit(SyncEvent::Warning {
                namespace: ns.to_string(),
                message: format!("matches namespaces.include but is not synced: {}; list it in collections with an index of its own", e.message),
            });
            known.insert(ns);
            continue;
        }
        let (checkpoint, opened_stream) = prepare_collection(ctx, &config, seen_at).await?;
        found.push((config, checkpoint, opened_stream));
    }
    Ok((found, now))
}

/// The cluster's time now: a stream started from it misses nothing written after.
async fn cluster_now(client: &Client) -> SyncResult<mongodb::bson::Timestamp> {
    change_stream::cluster_time(client).await.map_err(|e| mongo_error("cannot read the cluster time", &e))
}

/// Where a stream-only collection without a saved position starts: `startAt`, or now.
async fn stream_start(client: &Client, start_at: Option<mongodb::bson::Timestamp>) -> SyncResult<mongodb::bson::Timestamp> {
    match start_at {
        Some(at) => Ok(at),
        None => cluster_now(client).await,
    }
}

/// Connections to MongoDB when the URI sets no `maxPoolSize`: room for about this many
/// collections' change streams, copy readers and checkpoint writes, plus one per listed collection.
const DEFAULT_MAX_POOL_SIZE: u32 = 100;

async fn connect_mongo(config: &SyncConfig, events: &EventBus) -> SyncResult<Client> {
    let uri = config.mongo.uri.expose();
    let unreachable = |msg: String| SyncError::new(ErrorCode::MongoUnreachable, format!("cannot connect to MongoDB at {}: {msg}", redact_uri(uri)));
    let mut options = ClientOptions::parse(uri).await.map_err(|e| unreachable(crate::error::cause_chain(&e)))?;
    if let Some(tls) = &config.mongo.tls {
        for (field, file) in [("caFile", &tls.ca_file), ("certKeyFile", &tls.cert_key_file)] {
            if let Some(path) = file.as_ref().filter(|p| !p.is_file()) {
                return Err(SyncError::config(format!("mongo.tls.{field}: {} is not a readable file", path.display())));
            }
        }
        if tls.allow_invalid_certificates {
            events.emit(SyncEvent::Warning {
                namespace: String::new(),
                message: "mongo.tls.allowInvalidCertificates is true: the server's certificate is NOT verified".into(),
            });
        }
        let mut tls_options = match options.tls.take() {
            Some(Tls::Enabled(existing)) => existing,
            _ => TlsOptions::default(),
        };
        tls_options.ca_file_path = tls.ca_file.clone().or(tls_options.ca_file_path);
        tls_options.cert_key_file_path = tls.cert_key_file.clone().or(tls_options.cert_key_file_path);
        if tls.allow_invalid_certificates {
            tls_options.allow_invalid_certificates = Some(true);
        }
        options.tls = Some(Tls::Enabled(tls_options));
    }
    options.server_selection_timeout.get_or_insert(Duration::from_secs(10));
    options.connect_timeout.get_or_insert(Duration::from_secs(10));
    // Every followed collection keeps a getMore waiting on a connection of its own; with the
    // driver's 10, collections past the tenth would wait their turn (seen as +500 ms latency).
    options.max_pool_size.get_or_insert(DEFAULT_MAX_POOL_SIZE + config.collections.len() as u32);
    options.app_name.get_or_insert_with(|| "mongo-elastic-sync".to_string());
    let client = Client::with_options(options).map_err(|e| unreachable(crate::error::cause_chain(&e)))?;
    client.database("admin").run_command(mongodb::bson::doc! {"ping": 1}).await.map_err(|e| {
        let mut err = mongo_error("ping failed", &e);
        err.code = ErrorCode::MongoUnreachable;
        unreachable(err.message)
    })?;
    Ok(client)
}
