//! With a `configStore`: the stored definitions and the instances running them, and starting
//! or stopping a defined sync (through the store: its instances follow their stored `desired`).
//!
//! | route | answers |
//! | --- | --- |
//! | `GET /definitions` | `{ definitions: [{ name, version, desired, appliedVersion, collections, instances }] }` (no options, so no secret) |
//! | `POST /definitions/{name}/start`, `/stop` | 200 `{ name, desired, version }`; 404 for an unknown name; 403 when the server has no token, 401 without it |

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;
use tokio::sync::OnceCell;

use super::server::json as reply;
use crate::config::StoreConfig;
use crate::defstore::{DefinitionStore, Desired};
use crate::error::{ErrorCode, SyncResult};

/// Instances that renewed their registration within this are listed as running.
const ALIVE: Duration = Duration::from_secs(15);

#[derive(Clone)]
pub struct DefinitionsApp {
    config: StoreConfig,
    store: Arc<OnceCell<DefinitionStore>>,
}

impl DefinitionsApp {
    pub fn new(config: StoreConfig) -> Self {
        DefinitionsApp { config, store: Arc::new(OnceCell::new()) }
    }

    /// The store, connected at first use.
    async fn store(&self) -> SyncResult<&DefinitionStore> {
        self.store.get_or_try_init(|| DefinitionStore::connect(&self.config)).await
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    reply(status, &json!({ "error": message }))
}

pub async fn list(State(app): State<DefinitionsApp>) -> Response {
    match app.store().await {
        Ok(store) => match store.overview(ALIVE).await {
            Ok(definitions) => reply(StatusCode::OK, &json!({ "definitions": definitions })),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.message),
        },
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.message),
    }
}

pub async fn start(State(app): State<DefinitionsApp>, Path(name): Path<String>) -> Response {
    set_desired(&app, &name, Desired::Running).await
}

pub async fn stop(State(app): State<DefinitionsApp>, Path(name): Path<String>) -> Response {
    set_desired(&app, &name, Desired::Stopped).await
}

async fn set_desired(app: &DefinitionsApp, name: &str, desired: Desired) -> Response {
    let result = match app.store().await {
        Ok(store) => store.set_desired(name, desired, "http").await,
        Err(e) => Err(e),
    };
    match result {
        Ok(version) => reply(StatusCode::OK, &json!({ "name": name, "desired": desired.as_str(), "version": version })),
        Err(e) if e.code == ErrorCode::Config => error(StatusCode::NOT_FOUND, &e.message),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.message),
    }
}
