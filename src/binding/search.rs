//! The search API in JS: the `search` option, `SearchClient` (no sync needed), and the request
//! and reply conversions shared with `MongoElasticSync`'s `search()`, `indices()`, `fields()`.
//! Integers past 2^53 come back as `BigInt` (napi's reading of the engine's exact 64-bit
//! integers), as in a transform's documents.

use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use serde::Deserialize;

use super::error::{js_error, promise};
use super::options::ElasticsearchOptions;
use super::parse::parse;
use crate::config::{SearchConfig, Secret};
use crate::error::{SyncError, SyncResult};
use crate::event::EventBus;
use crate::search::{IndexScope, SearchClient as Client, SearchError, SearchRequest};

/// The search API (`search()`, `indices()`, `fields()`, and with `http` its routes).
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SearchOptions {
    /// Key that signs cursors, at least 32 characters; give the same one to processes that must
    /// accept each other's cursors (default: a random key of this process).
    pub cursor_secret: Option<String>,
    /// How long a cursor (and the point in time it reads) stays valid after its page (default 300000).
    pub cursor_ttl_ms: Option<u32>,
    /// Page size when none is asked for (default 20).
    pub default_page_size: Option<u32>,
    /// Largest page size (default 1000).
    pub max_page_size: Option<u32>,
    /// Indices or aliases that may be searched (default: the sync's own; for a `SearchClient`,
    /// any index not starting with `.`).
    pub indices: Option<Vec<String>>,
    /// HTTP routes, per client address: requests per second and burst (default 20 and 40).
    pub rate_limit: Option<RateLimitOptions>,
    /// Largest `POST /search` body in bytes (default 65536).
    pub max_body_bytes: Option<u32>,
}

#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitOptions {
    pub per_second: Option<f64>,
    pub burst: Option<u32>,
}

impl SearchOptions {
    pub fn into_config(self) -> SyncResult<SearchConfig> {
        let d = SearchConfig::default();
        let rate = self.rate_limit.unwrap_or(RateLimitOptions { per_second: None, burst: None });
        let config = SearchConfig {
            cursor_secret: self.cursor_secret.map(Secret::new),
            cursor_ttl: self.cursor_ttl_ms.map_or(d.cursor_ttl, |ms| Duration::from_millis(ms.into())),
            default_page_size: self.default_page_size.map_or(d.default_page_size, u64::from),
            max_page_size: self.max_page_size.map_or(d.max_page_size, u64::from),
            indices: self.indices,
            rate_per_second: rate.per_second.unwrap_or(d.rate_per_second),
            rate_burst: rate.burst.unwrap_or(d.rate_burst),
            max_body_bytes: self.max_body_bytes.map_or(d.max_body_bytes, |b| b as usize),
        };
        config.validate()?;
        Ok(config)
    }
}

/// `new SearchClient(options)`: the `elasticsearch` connection (as a sync's) and `search` settings.
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SearchClientOptions {
    pub elasticsearch: ElasticsearchOptions,
    pub search: Option<SearchOptions>,
}

/// The request as the engine reads it; a value JSON cannot hold is an `ERR_SEARCH_INPUT`.
fn request(env: &Env, value: Unknown) -> SyncResult<SearchRequest> {
    let json = unsafe { serde_json::Value::from_napi_value(env.raw(), value.raw()) }
        .map_err(|e| SyncError::from(SearchError::input(format!("the search request cannot be read: {}", e.reason))))?;
    Ok(SearchRequest::from_json(json)?)
}

fn to_json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("search replies serialize")
}

/// `search(request)`: one page; see `SearchRequest`.
pub fn search<'env>(env: &'env Env, client: SyncResult<Arc<Client>>, value: Unknown) -> Result<PromiseRaw<'env, serde_json::Value>> {
    let parsed = client.and_then(|c| request(env, value).map(|r| (c, r)));
    promise(env, async move {
        let (client, request) = parsed?;
        Ok(to_json(&client.search(request).await?))
    })
}

pub fn indices<'env>(env: &'env Env, client: SyncResult<Arc<Client>>) -> Result<PromiseRaw<'env, serde_json::Value>> {
    promise(env, async move { Ok(to_json(&client?.indices().await?)) })
}

pub fn fields<'env>(env: &'env Env, client: SyncResult<Arc<Client>>, index: String) -> Result<PromiseRaw<'env, serde_json::Value>> {
    promise(env, async move { Ok(to_json(&client?.fields(&index).await?)) })
}

/// Searches the indices of a cluster without a sync: the same query model, cursors and limits.
#[napi]
pub struct SearchClient {
    client: Arc<Client>,
}

#[napi]
impl SearchClient {
    /// Validates the options; throws `ERR_CONFIG` naming the bad field. Nothing connects yet.
    #[napi(constructor)]
    pub fn new(env: Env, #[napi(ts_arg_type = "SearchClientOptions")] options: Unknown) -> Result<Self> {
        super::logging::init();
        let build = || -> SyncResult<Client> {
            let json = unsafe { serde_json::Value::from_napi_value(env.raw(), options.raw()) }
                .map_err(|e| SyncError::config(format!("invalid options: {}", e.reason)))?;
            let options = parse::<SearchClientOptions>(json)?;
            let es = options.elasticsearch.into_config()?;
            let search = options.search.unwrap_or_default().into_config()?;
            let scope = search.indices.clone().map_or(IndexScope::Any, IndexScope::list);
            Client::new(&es, search, scope, &EventBus::default())
        };
        let client = build().map_err(|e| js_error(&env, &e))?;
        Ok(SearchClient { client: Arc::new(client) })
    }

    /// One page of documents and its `meta`; rejects with `ERR_SEARCH_INPUT` or `ERR_SEARCH`.
    #[napi(ts_args_type = "request: Record<string, unknown>", ts_return_type = "Promise<unknown>")]
    pub fn search<'env>(&self, env: &'env Env, request: Unknown) -> Result<PromiseRaw<'env, serde_json::Value>> {
        search(env, Ok(self.client.clone()), request)
    }

    /// The searchable indices with aliases, health and document counts.
    #[napi(ts_return_type = "Promise<unknown>")]
    pub fn indices<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, serde_json::Value>> {
        indices(env, Ok(self.client.clone()))
    }

    /// The fields of `index` from its mapping: dotted paths and types.
    #[napi(ts_return_type = "Promise<unknown>")]
    pub fn fields<'env>(&self, env: &'env Env, index: String) -> Result<PromiseRaw<'env, serde_json::Value>> {
        fields(env, Ok(self.client.clone()), index)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn search_options_are_strict_and_checked() {
        let config = |v: serde_json::Value| parse::<SearchOptions>(v).and_then(SearchOptions::into_config);
        let c = config(json!({ "cursorTtlMs": 60000, "maxPageSize": 50, "defaultPageSize": 10, "rateLimit": { "perSecond": 2, "burst": 3 } })).unwrap();
        assert_eq!((c.cursor_ttl, c.max_page_size, c.default_page_size, c.rate_per_second, c.rate_burst), (Duration::from_secs(60), 50, 10, 2.0, 3));
        let message = |v| config(v).unwrap_err().message;
        assert!(message(json!({ "cursorSecret": "short" })).contains("search.cursorSecret: must be at least 32"));
        assert!(message(json!({ "maxPageSize": 5, "defaultPageSize": 10 })).contains("defaultPageSize"));
        assert!(message(json!({ "rateLimit": { "perSecond": 0 } })).contains("rateLimit"));
        assert!(message(json!({ "pageSize": 5 })).contains("pageSize: unknown option"));
    }
}
