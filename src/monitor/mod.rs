//! Operating a sync: health and readiness, Prometheus metrics, JSON stats and a live status
//! page, served over HTTP when the `http` option is given.
//!
//! - `snapshot`: what is shown ([`StatusSnapshot`]), behind the [`StatusSource`] trait;
//! - `board`: the source: the engine's stats and events, and its metered outputs (`meter`);
//! - `health`, `metrics`: readiness verdicts and the Prometheus exposition over snapshots;
//! - `server`: the routes, the token, the bounds; `assets/`: the page, embedded in the binary;
//! - `redact`: secrets never leave (a second line behind the engine's own care).
//!
//! The engine makes one [`Monitor`] per sync with an `http` option: it listens from `start()`
//! on (so the `starting` state can be probed), keeps serving after a failure (so the failed
//! state can be seen), and closes at `stop()`.

mod board;
mod definition_routes;
mod health;
mod meter;
mod metrics;
mod openapi;
mod process;
mod recent;
mod redact;
mod search_routes;
mod server;
mod snapshot;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

pub use board::StatusBoard;
pub use metrics::RetryCause;
pub use redact::Redactor;
pub use snapshot::{CollectionPhase, CollectionStatus, Role, StatusSnapshot, StatusSource};

use crate::config::{HttpConfig, SyncConfig};
use crate::error::SyncResult;
use crate::event::{EventBus, SyncEvent};
use crate::search::SearchClient;
use crate::sink::{Sink, SinkContext};
use crate::stats::Stats;

pub struct Monitor {
    config: HttpConfig,
    board: Arc<StatusBoard>,
    metrics: Arc<metrics::Metrics>,
    events: EventBus,
    server: tokio::sync::Mutex<Option<server::Server>>,
    /// With the `search` option: the search routes' client.
    search: std::sync::Mutex<Option<Arc<SearchClient>>>,
    /// With the `configStore` option: the stored definitions' routes.
    store: Option<crate::config::StoreConfig>,
}

impl Monitor {
    /// Follows `events` from now on; serves nothing until [`Monitor::serve`].
    pub fn new(config: Arc<SyncConfig>, http: HttpConfig, events: &EventBus, stats: Arc<Stats>) -> Arc<Self> {
        let store = config.config_store.clone();
        let board = Arc::new(StatusBoard::new(config, stats));
        let metrics = Arc::new(metrics::Metrics::new(board.clone()));
        let (b, m) = (board.clone(), metrics.clone());
        events.subscribe(move |event| {
            b.observe(event);
            m.observe(event);
        });
        Arc::new(Monitor { config: http, board, metrics, events: events.clone(), server: tokio::sync::Mutex::new(None), search: Default::default(), store })
    }

    /// Serves the search routes with `client` (from the next [`Monitor::serve`] on).
    pub fn set_search(&self, client: Arc<SearchClient>) {
        *self.search.lock().expect("search lock") = Some(client);
    }

    /// Starts listening, unless it already does. Fails with `ERR_CONFIG` when the address
    /// cannot be listened on.
    pub async fn serve(&self) -> SyncResult<()> {
        let mut server = self.server.lock().await;
        if server.is_none() {
            let search = self.search.lock().expect("search lock").clone();
            let started = server::Server::start(&self.config, self.board.clone(), self.metrics.clone(), search, self.store.clone()).await?;
            if !self.config.is_loopback() && self.config.token.is_none() {
                self.events.emit(SyncEvent::Warning {
                    namespace: String::new(),
                    message: format!("the http server listens on {} without a token: anyone who can reach it can read the stats", started.local_addr()),
                });
            }
            *server = Some(started);
        }
        Ok(())
    }

    /// Stops listening (and ends the open event streams), if it listens.
    pub async fn shutdown(&self) {
        if let Some(server) = self.server.lock().await.take() {
            server.stop().await;
        }
    }

    /// Where it listens, while it does.
    pub async fn local_addr(&self) -> Option<SocketAddr> {
        self.server.lock().await.as_ref().map(server::Server::local_addr)
    }

    /// The outputs of `config`, metered (write durations and sizes, batches in flight, lag).
    pub fn build_sink(&self, config: &SyncConfig, ctx: &SinkContext) -> SyncResult<Arc<dyn Sink>> {
        meter::build(config, ctx, self.board.clone(), self.metrics.clone())
    }

    /// A checkpoint of `namespace` was saved.
    pub fn checkpoint_saved(&self, namespace: &str) {
        self.board.checkpoint_saved(namespace);
    }

    pub fn snapshot(&self) -> StatusSnapshot {
        self.board.snapshot()
    }
}

/// The sinks of `config`: metered when there is a monitor, else as `sink::build` makes them.
pub fn build_sink(monitor: Option<&Monitor>, config: &SyncConfig, ctx: &SinkContext) -> SyncResult<Arc<dyn Sink>> {
    match monitor {
        Some(monitor) => monitor.build_sink(config, ctx),
        None => crate::sink::build(config, ctx),
    }
}
