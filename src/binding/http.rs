//! The `http` option: the HTTP server for health, readiness, stats, metrics and the status page.
//! (Kept apart from `options.rs`: one field there, `http: Option<HttpOptions>`, and one line in its
//! conversion use it.)

use std::time::Duration;

use napi_derive::napi;
use serde::Deserialize;

use crate::config::{HttpConfig, Secret};
use crate::error::{SyncError, SyncResult};

/// The HTTP server (off unless given): `/healthz`, `/readyz`, `/stats`, `/metrics`, `/events`
/// and a status page at `/`.
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpOptions {
    /// IP address to listen on (default `'127.0.0.1'`: this machine only), or `'localhost'`.
    pub host: Option<String>,
    /// TCP port (default 9810; 0: a free port chosen by the system).
    pub port: Option<u32>,
    /// When given, every endpoint but the page's static files requires
    /// `Authorization: Bearer <token>` (at least 16 characters).
    pub token: Option<String>,
    /// `/readyz` fails when a streaming collection lags more than this, or a copying one made no
    /// progress for this long (default 60000).
    pub ready_max_lag_ms: Option<u32>,
}

impl HttpOptions {
    pub fn into_config(self) -> SyncResult<HttpConfig> {
        let defaults = HttpConfig::default();
        let port = match self.port {
            None => defaults.port,
            Some(p) => u16::try_from(p).map_err(|_| SyncError::config(format!("http.port: {p} is not a port (0 to 65535)")))?,
        };
        Ok(HttpConfig {
            host: self.host.unwrap_or(defaults.host),
            port,
            token: self.token.map(Secret::new),
            ready_max_lag: self.ready_max_lag_ms.map_or(defaults.ready_max_lag, |ms| Duration::from_millis(ms.into())),
            public_key: None,
        })
    }
}
