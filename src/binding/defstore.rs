//! Stored definitions from JS: the `DefinitionStore` class (read, write with a version check,
//! history, desired state, the apply fence, registrations, waiting for a change) and the
//! `configStore` option; the work is `crate::defstore`'s.

use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use serde::Deserialize;
use tokio::sync::OnceCell;

use super::error::{js_error, promise};
use super::parse::parse;
use crate::config::{EsStoreConfig, MongoStoreConfig, Secret, StoreConfig};
use crate::defstore::{DefinitionStore as Store, Desired, HistoryEntry, Registration};
use crate::error::{ErrorCode, SyncError, SyncResult};
use crate::secrets;

/// Where stored definitions live: a MongoDB collection (`uri`) or an Elasticsearch index
/// (`elasticsearch`), see README, "Definitions as code".
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoreOptions {
    /// A MongoDB store: its URI (may be sealed); in a sync's options, default `mongo.uri`
    /// (unless `elasticsearch` is given).
    pub uri: Option<String>,
    /// A MongoDB store's database, default `mongo_elastic_sync`.
    pub database: Option<String>,
    /// A MongoDB store's collection, default `sync_definitions` (history and registrations go
    /// to `<collection>_history` and `<collection>_instances`).
    pub collection: Option<String>,
    /// An Elasticsearch store: the server, as a sync's `elasticsearch` options (secrets may be
    /// sealed). Not with `uri`, `database` or `collection`.
    pub elasticsearch: Option<super::options::ElasticsearchOptions>,
    /// An Elasticsearch store's index, default `mongo-elastic-sync-definitions` (history and
    /// registrations go to `<index>-history` and `<index>-instances`).
    pub index: Option<String>,
    /// For `new DefinitionStore()`: the key opening sealed values (else `MES_PRIVATE_KEY_FILE`
    /// or `MES_PRIVATE_KEY`); in a sync's options, its `privateKeyFile` is used.
    #[allow(dead_code)] // read from the options before they are parsed (`store_config`)
    pub private_key_file: Option<String>,
}

impl StoreOptions {
    /// The store's settings; `fallback` is the sync's own MongoDB URI.
    pub fn into_config(self, fallback: Option<&Secret>) -> SyncResult<StoreConfig> {
        let config = match self.elasticsearch {
            Some(es) => {
                let mongo_only = [("uri", self.uri.is_some()), ("database", self.database.is_some()), ("collection", self.collection.is_some())];
                if let Some((field, _)) = mongo_only.iter().find(|(_, given)| *given) {
                    return Err(SyncError::config(format!(
                        "configStore.{field}: a MongoDB store's option; with configStore.elasticsearch the store is an Elasticsearch index (give index, or drop elasticsearch)"
                    )));
                }
                let es = es.into_config().map_err(|e| SyncError::config(format!("configStore.{}", e.message)))?;
                StoreConfig::Elasticsearch(EsStoreConfig { es, index: self.index.unwrap_or_else(|| EsStoreConfig::DEFAULT_INDEX.into()) })
            }
            None => {
                if self.index.is_some() {
                    return Err(SyncError::config("configStore.index: an Elasticsearch store's option; give configStore.elasticsearch with it (a MongoDB store takes database and collection)"));
                }
                let uri = match (self.uri, fallback) {
                    (Some(uri), _) => Secret::new(uri),
                    (None, Some(uri)) if !uri.expose().is_empty() => uri.clone(),
                    _ => {
                        return Err(SyncError::config(
                            "configStore.uri: required (the store's MongoDB URI), or configStore.elasticsearch for an Elasticsearch store",
                        ))
                    }
                };
                let d = MongoStoreConfig::new(Secret::default());
                StoreConfig::Mongo(MongoStoreConfig { uri, database: self.database.unwrap_or(d.database), collection: self.collection.unwrap_or(d.collection) })
            }
        };
        config.validate()?;
        Ok(config)
    }
}

fn store_config(mut options: serde_json::Value) -> SyncResult<StoreConfig> {
    let key_file = options.get("privateKeyFile").and_then(serde_json::Value::as_str).map(str::to_string);
    let key = secrets::load_key(key_file.as_deref())?;
    secrets::open_tree(&mut options, key.as_ref()).map_err(|e| SyncError::config(format!("configStore.{}", e.message)))?;
    parse::<StoreOptions>(options).map_err(|e| SyncError::config(format!("configStore.{}", e.message)))?.into_config(None)
}

fn desired_of(text: &str) -> SyncResult<Desired> {
    match text {
        "running" => Ok(Desired::Running),
        "stopped" => Ok(Desired::Stopped),
        other => Err(SyncError::config(format!("desired: \"{other}\" is not one of running, stopped"))),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> SyncResult<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| SyncError::new(ErrorCode::Internal, format!("cannot convert a stored value: {e}")))
}

fn from_js<T: serde::de::DeserializeOwned>(env: &Env, value: Unknown, what: &str) -> Result<T> {
    let json = unsafe { serde_json::Value::from_napi_value(env.raw(), value.raw()) }
        .map_err(|e| js_error(env, &SyncError::config(format!("{what}: {}", e.reason))))?;
    serde_json::from_value(json).map_err(|e| js_error(env, &SyncError::config(format!("{what}: {e}"))))
}

/// A store of sync definitions (a MongoDB collection or an Elasticsearch index): versioned,
/// with their history and the instances running them. Connects at first use.
#[napi]
pub struct DefinitionStore {
    config: StoreConfig,
    store: Arc<OnceCell<Store>>,
}

impl DefinitionStore {
    /// Runs `work` on the connected store, as a promise.
    fn with<'env, T, F, Fut>(&self, env: &'env Env, work: F) -> Result<PromiseRaw<'env, T>>
    where
        T: ToNapiValue + Send + 'static,
        F: FnOnce(Arc<OnceCell<Store>>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = SyncResult<T>> + Send + 'static,
    {
        let (cell, config) = (self.store.clone(), self.config.clone());
        promise(env, async move {
            cell.get_or_try_init(|| Store::connect(&config)).await?;
            work(cell).await
        })
    }
}

fn connected(cell: &OnceCell<Store>) -> &Store {
    cell.get().expect("connected before use")
}

#[napi]
#[cfg_attr(test, allow(dead_code))] // called from JS
impl DefinitionStore {
    /// Checks the options (`ERR_CONFIG` naming the field); nothing connects yet.
    #[napi(constructor)]
    pub fn new(env: Env, #[napi(ts_arg_type = "StoreOptions")] options: Unknown) -> Result<Self> {
        super::logging::init();
        let json = unsafe { serde_json::Value::from_napi_value(env.raw(), options.raw()) }
            .map_err(|e| js_error(&env, &SyncError::config(format!("configStore: {}", e.reason))))?;
        let config = store_config(json).map_err(|e| js_error(&env, &e))?;
        Ok(DefinitionStore { config, store: Arc::new(OnceCell::new()) })
    }

    /// `{ name, version, definition, desired, updatedAt, appliedVersion }`, or null.
    #[napi(ts_return_type = "Promise<unknown>")]
    pub fn read<'env>(&self, env: &'env Env, name: String) -> Result<PromiseRaw<'env, serde_json::Value>> {
        self.with(env, move |s| async move { to_json(&connected(&s).read(&name).await?) })
    }

    /// Stores the next version of `name` if the stored one is still `expectedVersion` (0: none
    /// yet; omitted: the one read now); `ERR_CONFLICT` else. Resolves with the new version.
    #[napi]
    pub fn write<'env>(
        &self,
        env: &'env Env,
        name: String,
        #[napi(ts_arg_type = "Record<string, unknown>")] definition: Unknown,
        expected_version: Option<i64>,
        by: Option<String>,
    ) -> Result<PromiseRaw<'env, i64>> {
        let definition: serde_json::Value = from_js(env, definition, &format!("syncs.{name}"))?;
        let by = by.unwrap_or_else(|| "api".into());
        self.with(env, move |s| async move { connected(&s).write(&name, &definition, expected_version, &by).await })
    }

    /// Asks the instances of `name` to run (`'running'`) or stop (`'stopped'`) it.
    #[napi]
    pub fn set_desired<'env>(&self, env: &'env Env, name: String, desired: String, by: Option<String>) -> Result<PromiseRaw<'env, i64>> {
        let desired = desired_of(&desired).map_err(|e| js_error(env, &e))?;
        let by = by.unwrap_or_else(|| "api".into());
        self.with(env, move |s| async move { connected(&s).set_desired(&name, desired, &by).await })
    }

    /// The last `limit` (default 100) records of `name`'s history, oldest first.
    #[napi(ts_return_type = "Promise<unknown>")]
    pub fn history<'env>(&self, env: &'env Env, name: String, limit: Option<u32>) -> Result<PromiseRaw<'env, serde_json::Value>> {
        self.with(env, move |s| async move { to_json(&connected(&s).history(&name, limit.map_or(100, i64::from)).await?) })
    }

    /// Adds `{ name, version, outcome, summary, by }` to the history.
    #[napi]
    pub fn record<'env>(&self, env: &'env Env, #[napi(ts_arg_type = "Record<string, unknown>")] entry: Unknown) -> Result<PromiseRaw<'env, ()>> {
        let entry: HistoryEntry = from_js(env, entry, "history record")?;
        self.with(env, move |s| async move { connected(&s).record(&entry).await })
    }

    /// Takes the fence to apply `version` (false: the version moved on, or another instance applies it).
    #[napi]
    pub fn begin_apply<'env>(&self, env: &'env Env, name: String, version: i64, instance: String) -> Result<PromiseRaw<'env, bool>> {
        self.with(env, move |s| async move { connected(&s).begin_apply(&name, version, &instance).await })
    }

    /// Releases the fence; `applied`: the version carried out.
    #[napi]
    pub fn end_apply<'env>(&self, env: &'env Env, name: String, instance: String, applied: Option<i64>) -> Result<PromiseRaw<'env, ()>> {
        self.with(env, move |s| async move { connected(&s).end_apply(&name, &instance, applied).await })
    }

    /// Registers an instance `{ id, name, host, pid, state, version }`, or renews it.
    #[napi]
    pub fn heartbeat<'env>(&self, env: &'env Env, #[napi(ts_arg_type = "Record<string, unknown>")] instance: Unknown) -> Result<PromiseRaw<'env, ()>> {
        let instance: Registration = from_js(env, instance, "registration")?;
        self.with(env, move |s| async move { connected(&s).heartbeat(&instance).await })
    }

    #[napi]
    pub fn deregister<'env>(&self, env: &'env Env, id: String) -> Result<PromiseRaw<'env, ()>> {
        self.with(env, move |s| async move { connected(&s).deregister(&id).await })
    }

    /// Every stored definition (names, versions, collections; never options) with the
    /// instances that renewed their registration within `aliveMs`.
    #[napi(ts_return_type = "Promise<unknown>")]
    pub fn overview<'env>(&self, env: &'env Env, alive_ms: u32) -> Result<PromiseRaw<'env, serde_json::Value>> {
        self.with(env, move |s| async move { to_json(&connected(&s).overview(Duration::from_millis(alive_ms.into())).await?) })
    }

    /// Resolves true once `name`'s stored document changes, false after `timeoutMs` (or at
    /// once false-after-waiting where change streams are not available).
    #[napi]
    pub fn wait_change<'env>(&self, env: &'env Env, name: String, timeout_ms: u32) -> Result<PromiseRaw<'env, bool>> {
        self.with(env, move |s| async move { connected(&s).wait_change(&name, Duration::from_millis(timeout_ms.into())).await })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config_of(options: serde_json::Value, fallback: Option<&Secret>) -> SyncResult<StoreConfig> {
        parse::<StoreOptions>(options).map_err(|e| SyncError::config(format!("configStore.{}", e.message)))?.into_config(fallback)
    }

    #[test]
    fn an_elasticsearch_store_takes_the_sync_elasticsearch_options_and_an_index() {
        let config = config_of(json!({ "elasticsearch": { "node": "http://127.0.0.1:9", "username": "u", "password": "p" } }), None).unwrap();
        let StoreConfig::Elasticsearch(es) = config else { panic!("an Elasticsearch store") };
        assert_eq!((es.index.as_str(), es.es.node.as_str()), (EsStoreConfig::DEFAULT_INDEX, "http://127.0.0.1:9"));
        let fallback = Secret::new("mongodb://127.0.0.1:1/");
        let config = config_of(json!({ "elasticsearch": { "node": "https://h:9200", "apiKey": "k" }, "index": "defs" }), Some(&fallback)).unwrap();
        assert!(matches!(config, StoreConfig::Elasticsearch(EsStoreConfig { ref index, .. }) if index == "defs"), "the sync's MongoDB URI is no fallback then");
        assert!(matches!(config_of(json!({}), Some(&fallback)).unwrap(), StoreConfig::Mongo(_)));
    }

    #[test]
    fn contradictory_or_unknown_store_options_name_their_path() {
        let es = json!({ "node": "http://127.0.0.1:9" });
        let cases = [
            (json!({ "uri": "mongodb://h/", "elasticsearch": es }), "configStore.uri: a MongoDB store's option"),
            (json!({ "collection": "c", "elasticsearch": es }), "configStore.collection: a MongoDB store's option"),
            (json!({ "uri": "mongodb://h/", "index": "defs" }), "configStore.index: an Elasticsearch store's option"),
            (json!({ "elasticsearch": es, "index": "Defs" }), "configStore.index: index name \"Defs\" contains 'D'"),
            (json!({ "elasticsearch": { "node": "ftp://h" } }), "configStore.elasticsearch.node: must start with http:// or https://"),
            (json!({ "elasticsearch": { "node": "http://h", "password": "p" } }), "configStore.elasticsearch.password: given without elasticsearch.username"),
            (json!({ "elasticsearch": { "node": "http://h", "nodes": [] } }), "configStore.elasticsearch.nodes"),
            (json!({}), "configStore.uri: required"),
        ];
        for (options, expected) in cases {
            let err = config_of(options.clone(), None).unwrap_err();
            assert_eq!(err.code, ErrorCode::Config, "{options}");
            assert!(err.message.starts_with(expected), "{options}: {}", err.message);
        }
    }
}
