//! The HTTP server: routes, the bearer token, and bounds on everything a client can make it
//! hold (connections, header bytes, request bodies, event-stream subscribers).
//!
//! | route | answers |
//! | --- | --- |
//! | `GET /healthz` | 200 unless the sync failed (503, with the error) |
//! | `GET /readyz` | 200 when streaming, or copying with progress, and no collection lags over `readyMaxLagMs`; else 503 with the reasons |
//! | `GET /stats` | the snapshot as JSON |
//! | `GET /metrics` | Prometheus text format, or OpenMetrics when asked for |
//! | `GET /events` | the snapshot every second, as server-sent events |
//! | `GET /public_key` | the service's public key (`age1…`, text) for sealing secrets; 404 without a private key |
//! | `GET /`, `/status.js`, `/status.css` | the status page (static; it reads `/events` or `/stats`) |
//!
//! With the `search` option, also the search routes (see `search_routes`); with `configStore`,
//! the stored definitions' routes (see `definition_routes`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::Stream;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;

use super::definition_routes::{self, DefinitionsApp};
use super::health;
use super::metrics::{Metrics, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE};
use super::search_routes::{self, PeerAddr, RateLimiter, SearchApp};
use super::snapshot::StatusSource;
use crate::config::{HttpConfig, StoreConfig};
use crate::error::{SyncError, SyncResult};
use crate::search::SearchClient;

/// Connections open at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 64;
/// `/events` subscribers at once; more get 503 (the page then polls `/stats`).
pub const MAX_SUBSCRIBERS: usize = 8;
/// Request bodies are not used: anything larger is refused with 413.
const MAX_BODY_BYTES: usize = 1024;
/// Request head (line and headers) buffered per connection.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// A client that does not send its request head within this is disconnected.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const EVENTS_EVERY: Duration = Duration::from_secs(1);
/// How long open connections get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

const PAGE: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/status.js");
const STYLE: &str = include_str!("assets/status.css");
/// The page loads only its own files and talks only to this server.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[derive(Clone)]
struct App {
    source: Arc<dyn StatusSource>,
    metrics: Arc<Metrics>,
    /// SHA-256 of the token: compared in constant time, whatever the length given.
    token: Option<[u8; 32]>,
    ready_max_lag: Duration,
    public_key: Option<Arc<str>>,
    subscribers: Arc<Semaphore>,
    shutdown: CancellationToken,
}

/// A running server; stops when [`Server::stop`] is called or when dropped.
pub struct Server {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Binds `config.host:port` and serves until stopped. Fails with `ERR_CONFIG` when the
    /// address cannot be listened on.
    pub async fn start(
        config: &HttpConfig,
        source: Arc<dyn StatusSource>,
        metrics: Arc<Metrics>,
        search: Option<Arc<SearchClient>>,
        store: Option<StoreConfig>,
    ) -> SyncResult<Server> {
        let listener = TcpListener::bind((config.host.as_str(), config.port))
            .await
            .map_err(|e| SyncError::config(format!("http: cannot listen on {}:{}: {e}", config.host, config.port)))?;
        let addr = listener.local_addr().map_err(|e| SyncError::config(format!("http: {e}")))?;
        let shutdown = CancellationToken::new();
        let app = App {
            source,
            metrics,
            token: config.token.as_ref().map(|t| Sha256::digest(t.expose().as_bytes()).into()),
            ready_max_lag: config.ready_max_lag,
            public_key: config.public_key.as_deref().map(Arc::from),
            subscribers: Arc::new(Semaphore::new(MAX_SUBSCRIBERS)),
            shutdown: shutdown.clone(),
        };
        let search = search.map(|client| {
            let limiter = Arc::new(RateLimiter::new(client.config().rate_per_second, client.config().rate_burst));
            SearchApp { client, limiter }
        });
        let task = tokio::spawn(accept_loop(listener, router(app, search, store.map(DefinitionsApp::new)), shutdown.clone()));
        tracing::info!(%addr, "monitoring server listening");
        Ok(Server { addr, shutdown, task: Some(task) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, ends the event streams, and gives open requests a moment to finish.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The search routes: the token, then the client's rate limit, then the body limit.
fn search_router(app: &App, search: SearchApp) -> Router<App> {
    let max_body = search.client.config().max_body_bytes;
    let limited = Router::new()
        .route("/search", post(search_routes::search))
        .route("/search/{index}/scroll", get(search_routes::scroll))
        .route("/indices", get(search_routes::indices))
        .route("/indices/{index}/fields", get(search_routes::fields))
        .layer(RequestBodyLimitLayer::new(max_body))
        .route_layer(middleware::from_fn_with_state(search.clone(), search_routes::rate_limit))
        .route("/health", get(search_routes::health))
        .with_state(search)
        .route_layer(middleware::from_fn_with_state(app.clone(), require_token));
    limited.route("/openapi.json", get(search_routes::openapi))
}

/// The stored definitions' routes: listing behind the token (as `/stats`); starting and stopping
/// only with a token configured (403 without one) and given (401).
fn definitions_router(app: &App, store: DefinitionsApp) -> Router<App> {
    let control = Router::new()
        .route("/definitions/{name}/start", post(definition_routes::start))
        .route("/definitions/{name}/stop", post(definition_routes::stop))
        .with_state(store.clone())
        .route_layer(middleware::from_fn_with_state(app.clone(), require_control));
    let list = Router::new()
        .route("/definitions", get(definition_routes::list))
        .with_state(store)
        .route_layer(middleware::from_fn_with_state(app.clone(), require_token));
    control.merge(list)
}

fn router(app: App, search: Option<SearchApp>, store: Option<DefinitionsApp>) -> Router {
    let data = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/events", get(events))
        .route_layer(middleware::from_fn_with_state(app.clone(), require_token));
    let page = Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", PAGE) }))
        .route("/status.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/status.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/public_key", get(public_key));
    let mut routes = data.merge(page);
    if let Some(store) = store {
        routes = routes.merge(definitions_router(&app, store));
    }
    let mut routes = routes.layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES));
    if let Some(search) = search {
        routes = routes.merge(search_router(&app, search));
    }
    routes
        .fallback(|| async { json(StatusCode::NOT_FOUND, &serde_json::json!({ "error": "not found" })) })
        .layer(middleware::from_fn(common_headers))
        .with_state(app)
}

/// Serves connections until `shutdown`, at most [`MAX_CONNECTIONS`] at once.
async fn accept_loop(listener: TcpListener, router: Router, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = shutdown.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!("monitoring server: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let peer = stream.peer_addr().map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        let router = router.clone().layer(axum::Extension(PeerAddr(peer)));
        connections.spawn(serve_connection(stream, router, permit, shutdown.clone()));
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async { while connections.join_next().await.is_some() {} }).await;
    connections.abort_all();
}

async fn serve_connection(stream: tokio::net::TcpStream, router: Router, _permit: OwnedSemaphorePermit, shutdown: CancellationToken) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEAD_TIMEOUT).max_buf_size(MAX_HEAD_BYTES);
    let mut connection = pin!(http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router)));
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, connection).await;
        }
    }
}

async fn common_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

/// With a token configured: `Authorization: Bearer <token>`, or 401.
async fn require_token(State(app): State<App>, request: Request, next: Next) -> Response {
    if let Some(expected) = &app.token {
        let credentials = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.split_once(' '));
        let given = credentials.filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")).map(|(_, token)| token.trim());
        let matches = given.is_some_and(|token| bool::from(Sha256::digest(token.as_bytes()).as_slice().ct_eq(expected)));
        if !matches {
            let mut response = json(StatusCode::UNAUTHORIZED, &serde_json::json!({ "error": "a valid 'Authorization: Bearer <token>' header is required" }));
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    next.run(request).await
}

/// Starting or stopping syncs: never without a token configured (403), else as [`require_token`].
async fn require_control(State(app): State<App>, request: Request, next: Next) -> Response {
    if app.token.is_none() {
        return json(StatusCode::FORBIDDEN, &serde_json::json!({ "error": "starting and stopping syncs needs the server's token (http.token)" }));
    }
    require_token(State(app), request, next).await
}

pub(super) fn json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(value).expect("status values serialize");
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers = [(header::CONTENT_TYPE, content_type), (header::CONTENT_SECURITY_POLICY, PAGE_POLICY), (header::CACHE_CONTROL, "no-cache")];
    (headers, body).into_response()
}

/// The public key is public: served without the token, so tools can seal secrets for this service.
async fn public_key(State(app): State<App>) -> Response {
    match app.public_key {
        Some(key) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{key}\n")).into_response(),
        None => json(StatusCode::NOT_FOUND, &serde_json::json!({ "error": "no private key is configured" })),
    }
}

async fn healthz(State(app): State<App>) -> Response {
    let s = app.source.snapshot();
    if health::healthy(&s) {
        json(StatusCode::OK, &serde_json::json!({ "status": "ok", "state": s.state.as_str() }))
    } else {
        json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({ "status": "failed", "state": s.state.as_str(), "error": s.error }))
    }
}

async fn readyz(State(app): State<App>) -> Response {
    let s = app.source.snapshot();
    match health::readiness(&s, app.ready_max_lag) {
        Ok(()) => json(StatusCode::OK, &serde_json::json!({ "ready": true, "state": s.state.as_str() })),
        Err(reasons) => json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({ "ready": false, "state": s.state.as_str(), "reasons": reasons })),
    }
}

async fn stats(State(app): State<App>) -> Response {
    json(StatusCode::OK, &app.source.snapshot())
}

async fn metrics(State(app): State<App>, headers: HeaderMap) -> Response {
    let openmetrics = headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|v| v.contains("application/openmetrics-text"));
    let content_type = if openmetrics { OPENMETRICS_CONTENT_TYPE } else { PROMETHEUS_CONTENT_TYPE };
    ([(header::CONTENT_TYPE, content_type)], app.metrics.render(openmetrics)).into_response()
}

async fn events(State(app): State<App>) -> Response {
    let Ok(permit) = app.subscribers.clone().try_acquire_owned() else {
        let message = format!("{MAX_SUBSCRIBERS} event streams are open already; poll /stats instead");
        return json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({ "error": message }));
    };
    Sse::new(snapshots(app, permit)).keep_alive(KeepAlive::default()).into_response()
}

/// A snapshot now and every [`EVENTS_EVERY`]; one is made only when the client has taken the
/// previous one, so a slow client holds one event, never a queue. Ends at shutdown.
fn snapshots(app: App, permit: OwnedSemaphorePermit) -> impl Stream<Item = Result<Event, Infallible>> {
    let mut every = tokio::time::interval(EVENTS_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    futures::stream::unfold((app, every, permit), |(app, mut every, permit)| async move {
        tokio::select! {
            _ = every.tick() => {}
            _ = app.shutdown.cancelled() => return None,
        }
        let data = serde_json::to_string(&app.source.snapshot()).expect("status values serialize");
        Some((Ok(Event::default().event("status").data(data)), (app, every, permit)))
    })
}
