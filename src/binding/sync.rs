//! The `MongoElasticSync` JS class.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use tracing::Instrument;

use super::error::{js_error, promise};
use super::event::SyncEventJs;
use super::log_forward::{self, LogLevel, LogRecord};
use super::options::sync_config;
use super::stats::SyncStats;
use super::transform::{JsTransform, TransformArgs, TransformReturn};
use crate::error::SyncError;
use crate::pipeline::SyncEngine;

/// Events waiting for the JS thread; beyond this the engine waits (backpressure, not growth).
const EVENT_QUEUE: usize = 10_000;

type EventCallback = ThreadsafeFunction<SyncEventJs, (), SyncEventJs, Status, false, true, EVENT_QUEUE>;

/// Numbers the syncs of this process, so that each one's logs reach its own logger.
static INSTANCES: AtomicU64 = AtomicU64::new(1);

/// Syncs MongoDB collections into Elasticsearch indices: copy, then change streams. This is
/// the native class of the generated loader; the package's entry wraps it with Node idioms.
#[napi]
pub struct MongoElasticSync {
    engine: Arc<SyncEngine>,
    instance: u64,
}

impl MongoElasticSync {
    /// The span the engine's work for this sync runs in (its records go to this sync's logger).
    fn span(&self) -> tracing::Span {
        log_forward::sync_span(self.instance, &self.engine.config().name)
    }
}

impl Drop for MongoElasticSync {
    fn drop(&mut self) {
        log_forward::unregister(self.instance);
    }
}

#[napi]
impl MongoElasticSync {
    /// Validates the options; throws an `Error` with `code: 'ERR_CONFIG'` naming the bad field.
    #[napi(constructor)]
    pub fn new(env: Env, #[napi(ts_arg_type = "SyncOptions")] options: Unknown) -> Result<Self> {
        super::logging::init();
        let config = unsafe { serde_json::Value::from_napi_value(env.raw(), options.raw()) }
            .map_err(|e| SyncError::config(format!("invalid options: {}", e.reason)))
            .and_then(sync_config)
            .map_err(|e| js_error(&env, &e))?;
        let engine = SyncEngine::new(config).map_err(|e| js_error(&env, &e))?;
        Ok(MongoElasticSync { engine: Arc::new(engine), instance: INSTANCES.fetch_add(1, Ordering::Relaxed) })
    }

    /// Registers a listener for every event. Listening does not keep the process alive.
    #[napi(ts_args_type = "callback: (event: SyncEvent) => void")]
    pub fn on_event(&self, callback: Function<SyncEventJs, ()>) -> Result<()> {
        let tsfn: EventCallback = callback.build_threadsafe_function().callee_handled::<false>().weak::<true>().max_queue_size::<EVENT_QUEUE>().build()?;
        self.engine.events().subscribe(move |event| {
            tsfn.call(SyncEventJs::from(event), ThreadsafeFunctionCallMode::Blocking);
        });
        Ok(())
    }

    /// Forwards the engine's log records at `level` and above to `callback`, which must not
    /// throw (the package's `logger` option wraps the user's logger in one that does not).
    #[napi]
    pub fn set_logger(&self, callback: Function<LogRecord, ()>, level: LogLevel) -> Result<()> {
        log_forward::register(self.instance, callback, level)
    }

    /// Sets a transform every document goes through before it is written, in the copy and the
    /// stream: return the (changed) document, or `null` to keep it out of the index (it is then
    /// deleted there); a throw or rejection dead-letters the document. Call before `start()`.
    #[napi(
        ts_args_type = "transform: (doc: Record<string, unknown>, ctx: TransformContext) => Record<string, unknown> | null | Promise<Record<string, unknown> | null>"
    )]
    pub fn set_transform(&self, env: Env, transform: Function<TransformArgs, TransformReturn>) -> Result<()> {
        let hook = JsTransform::new(transform)?;
        self.engine.set_transform(Arc::new(hook)).map_err(|e| js_error(&env, &e))
    }

    /// Connects and starts syncing; resolves once it runs. Rejects with `ERR_CONFIG`,
    /// `ERR_MONGO_UNREACHABLE` (`ERR_POSTGRES_UNREACHABLE`), `ERR_ES_UNREACHABLE`, `ERR_HISTORY_LOST` or `ERR_STATE`.
    /// While the sync runs it keeps the Node.js process alive.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn start<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let engine = self.engine.clone();
        let waiter = self.engine.clone();
        let span = self.span();
        // Numbered now, on the caller's thread: a stop() called after this ends this start,
        // whichever of the two futures reaches the engine first.
        let call = self.engine.call_start();
        let started = env.spawn_future_with_callback(async move { Ok(engine.start_called(call).instrument(span).await) }, move |env, started| {
            started.map_err(|e| js_error(env, &e))?;
            // A pending promise holds the event loop open until the sync stops or fails.
            env.spawn_future(async move {
                let _ = waiter.wait().await;
                Ok(())
            })?;
            Ok(())
        });
        if started.is_err() {
            self.engine.start_abandoned(call);
        }
        started
    }

    /// Stops reading, writes what was read, saves the checkpoint, then resolves. Also ends a
    /// `start()` called before it that has not resolved yet (that start rejects with `ERR_STATE`).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn stop<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let engine = self.engine.clone();
        let span = self.span();
        let call = self.engine.call_stop();
        promise(env, async move { engine.stop_called(call).instrument(span).await })
    }

    /// Resolves when the sync has stopped; rejects with the error (and its `code`) if it failed.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn wait<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let engine = self.engine.clone();
        promise(env, async move { engine.wait().await })
    }

    /// One page of documents of an index this sync manages, and its `meta`; rejects with
    /// `ERR_SEARCH_INPUT` (bad request) or `ERR_SEARCH` (server). Works whether or not it runs.
    #[napi(ts_args_type = "request: Record<string, unknown>", ts_return_type = "Promise<unknown>")]
    pub fn search<'env>(&self, env: &'env Env, request: Unknown) -> Result<PromiseRaw<'env, serde_json::Value>> {
        super::search::search(env, self.engine.search_client(), request)
    }

    /// The indices this sync manages, with aliases, health and document counts.
    #[napi(ts_return_type = "Promise<unknown>")]
    pub fn indices<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, serde_json::Value>> {
        super::search::indices(env, self.engine.search_client())
    }

    /// The fields of `index` (one this sync manages) from its mapping: dotted paths and types.
    #[napi(ts_return_type = "Promise<unknown>")]
    pub fn fields<'env>(&self, env: &'env Env, index: String) -> Result<PromiseRaw<'env, serde_json::Value>> {
        super::search::fields(env, self.engine.search_client(), index)
    }

    /// Running totals, per-collection figures and the current state.
    #[napi]
    pub fn stats(&self) -> SyncStats {
        self.engine.stats().into()
    }
}
