//! The options of `new MongoElasticSync(options)` (and of the CLI's config file): one strict
//! serde deserialization of the whole tree (an unknown key is an error naming its path, with the
//! closest known key), then the conversion into the engine's config, whose types hold every
//! default. The structs also generate the TypeScript types of `index.d.ts`.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use napi_derive::napi;
use serde::de::{self, value::MapAccessDeserializer, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::outputs::OutputOptions;
use super::parse::parse;
use crate::config::{
    index_from_template, AdaptiveBatchConfig, BatchConfig, CheckpointConfig, CollectionConfig, Discovery, DropPolicy, EsAuth, EsConfig, EsTls,
    HistoryLostPolicy, InstancesConfig, LeaseConfig, MongoConfig, MongoTls, Namespace, OperationFilter, RateLimitConfig, RenamePolicy, RetryConfig, Secret,
    SyncConfig, SyncMode, DEFAULT_DATABASE_STREAM_THRESHOLD,
};
use crate::error::{SyncError, SyncResult};
use crate::secrets;
use crate::transform::{AddedValue, FieldRules};

/// The engine's config from the options object, checked whole; errors name the field. Sealed
/// secrets (`enc:age:…`) are opened first with the service's private key (see `crate::secrets`).
pub fn sync_config(mut options: serde_json::Value) -> SyncResult<SyncConfig> {
    if !options.is_object() {
        return Err(SyncError::config(format!("options: must be an object, not {}", kind_of(&options))));
    }
    let key_file = options.get("privateKeyFile").and_then(serde_json::Value::as_str).map(str::to_string);
    let key = secrets::load_key(key_file.as_deref())?;
    secrets::open_tree(&mut options, key.as_ref())?;
    let mut config = parse::<SyncOptions>(options)?.into_config()?;
    if let (Some(http), Some(key)) = (config.http.as_mut(), key.as_ref()) {
        http.public_key = Some(key.public_key());
    }
    Ok(config)
}

#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncOptions {
    /// Key of the saved checkpoint; a restarted sync with the same name continues where it stopped.
    pub name: String,
    /// The MongoDB source; required unless `postgres` is given.
    pub mongo: Option<MongoOptions>,
    /// A PostgreSQL source instead of MongoDB: its `tables` are copied, then followed through
    /// logical replication.
    pub postgres: Option<super::postgres_options::PostgresOptions>,
    /// With `postgres`: `"schema.table"` or `{ table, index, … }` (the options of a
    /// `collections` entry, without `filter`).
    #[napi(ts_type = "Array<string | (Omit<CollectionOptions, 'namespace' | 'filter'> & { table: string })>")]
    pub tables: Option<Vec<super::postgres_options::TableEntry>>,
    /// The Elasticsearch connection; required unless `outputs` lists no `'elasticsearch'` output.
    pub elasticsearch: Option<ElasticsearchOptions>,
    /// Where synced data goes (default `[{ type: 'elasticsearch' }]`); with several, each gets
    /// everything and a position is saved only once all acknowledged it.
    #[napi(ts_type = "Array<ElasticsearchOutput | FileOutput | StdoutOutput | TcpOutput | NatsOutput>")]
    pub outputs: Option<Vec<OutputOptions>>,
    /// `"db.collection"` (index named by `indexTemplate`) or `{ namespace, index, … }`.
    /// Optional when `namespaces` chooses collections by pattern.
    #[napi(ts_type = "Array<string | CollectionOptions>")]
    pub collections: Option<Vec<CollectionEntry>>,
    /// Collections chosen by regular expressions over `"db.collection"`, including ones created
    /// while the sync runs; a collection also listed in `collections` keeps its settings there.
    pub namespaces: Option<NamespaceOptions>,
    /// Index name for collections without `index`: `{db}` and `{coll}` are replaced, then
    /// lowercased (default `'{coll}'`).
    pub index_template: Option<String>,
    pub checkpoint: Option<CheckpointOptions>,
    pub batch: Option<BatchOptions>,
    pub retry: Option<RetryOptions>,
    /// On `drop`/`dropDatabase` of a synced collection (default `'deleteDocuments'`).
    #[napi(ts_type = "'deleteDocuments' | 'deleteIndex' | 'ignore'")]
    pub on_drop: Option<DropPolicy>,
    /// On `rename` of a synced collection (default `'move'`): move its documents (versions kept)
    /// to the new name's index, copy the renamed collection afresh, or do nothing.
    #[napi(ts_type = "'move' | 'recopy' | 'ignore'")]
    pub on_rename: Option<RenamePolicy>,
    /// When the saved position is gone from the oplog (default `'fail'`: stop with
    /// `ERR_HISTORY_LOST`), or a change event over 16 MB blocks the stream (`ERR_EVENT_TOO_LARGE`).
    /// `'resync'` copies again into `<index>-<n>` while the old index stays readable, then points
    /// the alias `<index>` at the new index and drops the old one.
    #[napi(ts_type = "'fail' | 'resync'")]
    pub on_history_lost: Option<HistoryLostPolicy>,
    /// Also write dead letters (id, reason, document) into this index.
    pub dead_letter_index: Option<String>,
    /// `'copyAndStream'` (default); `'copy'`: copy, then stop (a one-shot reindex; `wait()`
    /// resolves when done); `'stream'`: no copy, follow changes from the saved position, else
    /// from `startAt`, else from now.
    #[napi(ts_type = "'copyAndStream' | 'copy' | 'stream'")]
    pub mode: Option<ModeOption>,
    /// Cursors reading one collection's copy in parallel over `_id` ranges (default 4).
    pub copy_readers: Option<u32>,
    /// Fewest documents per `_id` range (default 100000): a collection gets one cursor per this
    /// many documents, up to `copyReaders`; a smaller one is read with a single cursor.
    pub copy_range_min_docs: Option<u32>,
    /// With `mode: 'stream'` and no saved position: an ISO-8601 time (within the oplog window) to start from.
    pub start_at: Option<String>,
    /// The HTTP server for health, readiness, stats, metrics and the status page (off unless given).
    pub http: Option<super::http::HttpOptions>,
    /// The search API's settings; with `http`, also its routes (`/search`, `/indices`, …).
    pub search: Option<super::search::SearchOptions>,
    /// The lease that lets one instance per `name` sync while the others wait as standbys.
    pub lease: Option<LeaseOptions>,
    /// The partitioned mode: the running instances of this `name` with the same `group` split
    /// the collections between them, each collection synced by one instance at a time.
    pub instances: Option<InstancesOptions>,
    /// Where stored definitions live (a MongoDB collection); with `http`, the status page lists
    /// them and their instances, and starts or stops them (see README, "Definitions as code").
    pub config_store: Option<super::defstore::StoreOptions>,
    /// Caps on documents and bytes per second sent to the outputs (default: none).
    pub rate_limit: Option<SyncRateLimitOptions>,
    /// A file holding the service's private key (from `mongo-elastic-sync keygen`), which opens
    /// the sealed (`'enc:age:…'`) values of secret fields; else `MES_PRIVATE_KEY_FILE` or
    /// `MES_PRIVATE_KEY` in the environment.
    #[allow(dead_code)] // read before the parse, which it must pass (see `sync_config`)
    pub private_key_file: Option<String>,
}

#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaseOptions {
    /// How long after its holder last renewed it a standby takes the lease over (default 10000,
    /// from 1000 to 600000); the holder stops writing a fifth of it earlier.
    pub duration_ms: Option<u32>,
}

#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstancesOptions {
    /// The group's name: instances with the same `name` and `group` split the collections.
    pub group: String,
    /// At most this many collections per instance (default: no maximum); with too few
    /// instances the rest wait, unowned, for more to join.
    pub max_collections_per_instance: Option<u32>,
}

impl InstancesOptions {
    fn into_config(self) -> InstancesConfig {
        InstancesConfig { max_collections_per_instance: self.max_collections_per_instance.map(|v| v as usize), ..InstancesConfig::new(self.group) }
    }
}

pub(super) fn kind_of(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The `mode` option (`startAt` completes `'stream'`).
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub enum ModeOption {
    CopyAndStream,
    Copy,
    Stream,
}

#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceOptions {
    /// Patterns (Rust regex syntax, matched against the whole `"db.collection"`), e.g. `'shop\\..*'`.
    pub include: Vec<String>,
    /// Patterns of namespaces left out, e.g. `'.*\\.tmp_.*'`.
    pub exclude: Option<Vec<String>>,
    /// How often new collections are looked for (default 10000).
    pub discovery_interval_ms: Option<u32>,
    /// Settings for every collection the patterns find (one listed in `collections` keeps its
    /// own): the options of `collections` entries but `namespace`, with `{db}` and `{coll}`
    /// filled in `index` (default `indexTemplate`) and `alias`.
    #[napi(ts_type = "Omit<CollectionOptions, 'namespace'>")]
    pub defaults: Option<CollectionOptions>,
}

#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MongoOptions {
    /// A replica set or sharded cluster URI (change streams need one). Required unless `uriFile` is given.
    pub uri: Option<String>,
    /// A file holding the URI (e.g. a mounted secret, as it has the credentials); its trailing line break is dropped.
    pub uri_file: Option<String>,
    /// TLS settings, in addition to (and overriding) `tls=true&tlsCAFile=…` in the URI.
    pub tls: Option<MongoTlsOptions>,
    /// A database with more followed collections than this (default 50) is read through one
    /// change stream of the database instead of one per collection; 0: always.
    pub database_stream_threshold: Option<u32>,
}

#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MongoTlsOptions {
    /// PEM file of the CA(s) to trust.
    pub ca_file: Option<String>,
    /// PEM file with the client certificate and its private key.
    pub cert_key_file: Option<String>,
    /// Skip certificate verification (logged as a warning). Never in production.
    pub allow_invalid_certificates: Option<bool>,
}

#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ElasticsearchOptions {
    /// e.g. `http://127.0.0.1:9200`; credentials in the URL are used as basic auth.
    pub node: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// A file holding the password (e.g. a mounted secret).
    pub password_file: Option<String>,
    /// Base64 `id:key` API key.
    pub api_key: Option<String>,
    /// A file holding the API key.
    pub api_key_file: Option<String>,
    pub bearer_token: Option<String>,
    /// A file holding the bearer token.
    pub bearer_token_file: Option<String>,
    /// Per-request timeout (default 30000).
    pub request_timeout_ms: Option<u32>,
    /// gzip request bodies (default false).
    pub compression: Option<bool>,
    pub tls: Option<ElasticsearchTlsOptions>,
}

#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ElasticsearchTlsOptions {
    /// PEM file of the CA(s) to trust; when given, only these are trusted.
    pub ca_file: Option<String>,
    /// PEM client certificate, for servers requiring mutual TLS (with `keyFile`).
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    /// `false` skips certificate verification (logged as a warning). Never in production.
    pub reject_unauthorized: Option<bool>,
}

/// A `collections` entry: `"db.collection"` or its options.
pub(super) enum CollectionEntry {
    Name(String),
    Options(Box<CollectionOptions>),
}

impl<'de> Deserialize<'de> for CollectionEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = CollectionEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a \"database.collection\" string or an object of collection options")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CollectionEntry, E> {
                Ok(CollectionEntry::Name(v.to_string()))
            }
            // Read through the caller's map, so errors inside keep their path.
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<CollectionEntry, A::Error> {
                CollectionOptions::deserialize(MapAccessDeserializer::new(map)).map(|o| CollectionEntry::Options(Box::new(o)))
            }
        }
        d.deserialize_any(EntryVisitor)
    }
}

#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CollectionOptions {
    /// `"db.collection"`.
    #[serde(default)]
    pub namespace: String,
    /// Target index (default: from `indexTemplate`).
    pub index: Option<String>,
    /// Index settings used when the index is created.
    #[napi(ts_type = "Record<string, unknown>")]
    pub settings: Option<serde_json::Map<String, serde_json::Value>>,
    /// Index mappings used when the index is created; an existing index must agree with them.
    #[napi(ts_type = "Record<string, unknown>")]
    pub mappings: Option<serde_json::Map<String, serde_json::Value>>,
    /// Ingest pipeline every write goes through.
    pub pipeline: Option<String>,
    /// Dotted path of the field whose value is the shard routing key.
    pub routing: Option<String>,
    /// Alias to add to the index.
    pub alias: Option<String>,
    /// Decimal128 values as JSON numbers (precision beyond ~17 digits is lost) instead of exact strings (default false).
    pub decimal_as_number: Option<bool>,
    /// Also keep the converted `_id` in `_source`, under this field name (list it in `fields.include` if that is used).
    pub keep_id_as: Option<String>,
    pub fields: Option<FieldOptions>,
    /// Change types applied while streaming (default all); e.g. `['insert', 'update', 'replace']`
    /// keeps deleted documents in an archive index. The copy writes every document.
    #[napi(ts_type = "Array<'insert' | 'update' | 'replace' | 'delete'>")]
    pub operations: Option<Vec<Operation>>,
    /// A MongoDB query (extended JSON for special types, e.g. `{ "$date": "…" }`): only matching
    /// documents are synced; a document updated out of it is deleted from the index.
    #[napi(ts_type = "Record<string, unknown>")]
    pub filter: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A change type of `operations`.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub enum Operation {
    Insert,
    Update,
    Replace,
    Delete,
}

/// Which fields reach the index; dotted paths, reaching into arrays of documents.
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FieldOptions {
    /// Keep only these paths (and the `_id`).
    pub include: Option<Vec<String>>,
    /// Drop these paths.
    pub exclude: Option<Vec<String>>,
    /// `{ from: to }` renames, applied after include and exclude.
    pub rename: Option<HashMap<String, String>>,
    /// Fields set on every document, after the renames: `{ path: value }`. A value is a
    /// constant, or one of the strings `'$namespace'`, `'$db'`, `'$collection'` and
    /// `'$syncedAt'` (the time of the conversion, ISO-8601); `'$$…'` stands for a literal `'$…'`.
    #[napi(ts_type = "Record<string, unknown>")]
    pub add: Option<serde_json::Map<String, serde_json::Value>>,
    /// Nested objects become top-level keys joined by `'.'` (`true`) or the given separator,
    /// applied last. Arrays stay as they are.
    #[napi(ts_type = "boolean | string")]
    pub flatten: Option<Flatten>,
}

/// `fields.flatten`: on/off, or the separator.
pub enum Flatten {
    On(bool),
    Separator(String),
}

impl<'de> Deserialize<'de> for Flatten {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FlattenVisitor;
        impl Visitor<'_> for FlattenVisitor {
            type Value = Flatten;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a boolean or a separator string")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Flatten, E> {
                Ok(Flatten::On(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Flatten, E> {
                Ok(Flatten::Separator(v.to_string()))
            }
        }
        d.deserialize_any(FlattenVisitor)
    }
}

#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckpointOptions {
    /// Database holding checkpoints (default `mongo_elastic_sync`).
    pub database: Option<String>,
    /// Collection holding checkpoints (default `checkpoints`).
    pub collection: Option<String>,
}

#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchOptions {
    /// Most documents per `_bulk` request (default 1000).
    pub max_docs: Option<u32>,
    /// Most bytes per `_bulk` request (default 8 MiB); a larger single document is dead-lettered.
    pub max_bytes: Option<u32>,
    /// While streaming, the longest a change waits for its batch (default 1000).
    pub flush_interval_ms: Option<u32>,
    /// Bulk requests in flight at once per collection during the copy (default 2).
    pub concurrency: Option<u32>,
    /// How the Elasticsearch output sizes its `_bulk` requests within `maxDocs`/`maxBytes`
    /// (default: fixed at the maxima; with `enabled: true`, from 10 documents / 64 KiB up,
    /// aiming at replies within 5 s).
    pub adaptive: Option<AdaptiveBatchOptions>,
}

/// Adaptive `_bulk` sizes: requests start at `maxDocs`/`maxBytes`, are halved on back-pressure
/// (HTTP 429, items refused with 429, 413) and cut by a quarter after a reply slower than
/// `targetLatencyMs`, and grow back by a sixteenth of the maxima after each reply faster than
/// half of it. The current size is in `stats().adaptiveBatch`, each change a `batchSize` event.
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdaptiveBatchOptions {
    /// `true`: sized from how the last requests went; `false` (the default): every request
    /// carries up to `maxDocs`/`maxBytes`.
    pub enabled: Option<bool>,
    /// Fewest documents a request is shrunk to (default 10, at most `maxDocs`).
    pub min_docs: Option<u32>,
    /// Fewest bytes a request is shrunk to (default 65536, from 1024 to `maxBytes`).
    pub min_bytes: Option<u32>,
    /// Replies slower than this shrink the requests; faster than half of it, they grow (default 5000, at least 100).
    pub target_latency_ms: Option<u32>,
}

/// `rateLimit`: caps on what the sync hands to its outputs per second, for the copy and the
/// stream alike (one budget shared by all its collections); a batch waits until it fits.
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncRateLimitOptions {
    /// Most documents (writes and deletes) per second, above 0.
    pub docs_per_second: Option<f64>,
    /// Most bytes per second, as the size of the documents' `_bulk` lines (at least 1024).
    pub bytes_per_second: Option<f64>,
}

#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryOptions {
    /// Attempts before a transient Elasticsearch failure fails the sync (default: retry forever).
    pub max_attempts: Option<u32>,
    /// First delay between attempts (default 200), doubling up to `maxDelayMs`.
    pub initial_delay_ms: Option<u32>,
    /// Longest delay between attempts (default 30000).
    pub max_delay_ms: Option<u32>,
}

pub(super) fn ms(v: u32) -> Duration {
    Duration::from_millis(v as u64)
}

/// A credential given inline (`key`) or as a file holding it (`keyFile`, as container platforms
/// mount secrets); the file's trailing line break is dropped. `at` is the options' path.
pub(super) fn credential(at: &str, key: &str, value: Option<String>, file: Option<String>) -> SyncResult<Option<Secret>> {
    let field = format!("{at}.{key}File");
    match (value, file) {
        (Some(_), Some(_)) => Err(SyncError::config(format!("{field}: give only one of {key} and {key}File"))),
        (Some(value), None) => Ok(Some(Secret::new(value))),
        (None, None) => Ok(None),
        (None, Some(path)) => {
            let text = crate::config::read_option_text(&field, path.as_ref(), crate::config::MAX_SECRET_FILE, "a secret")?;
            let value = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
            if value.is_empty() {
                return Err(SyncError::config(format!("{field}: \"{path}\" is empty")));
            }
            Ok(Some(Secret::new(value)))
        }
    }
}

impl CollectionOptions {
    /// A `collections` entry.
    fn into_config(self, i: usize, template: &str) -> SyncResult<CollectionConfig> {
        let at = format!("collections[{i}]");
        if self.namespace.is_empty() {
            return Err(SyncError::config(format!("{at}.namespace: required")));
        }
        let namespace = Namespace::parse(&self.namespace).map_err(|m| SyncError::config(format!("{at}.namespace: {m}")))?;
        let index = self.index.clone().unwrap_or_else(|| index_from_template(template, &namespace));
        let settings = self.into_settings(&at, CollectionConfig::new(index, namespace.clone()))?;
        Ok(CollectionConfig { fields: settings.fields.for_namespace(&namespace), ..settings })
    }

    /// `namespaces.defaults`: settings for collections found later, as a template.
    fn into_defaults(self, template: &str) -> SyncResult<CollectionConfig> {
        const AT: &str = "namespaces.defaults";
        if !self.namespace.is_empty() {
            return Err(SyncError::config(format!("{AT}.namespace: not allowed: the patterns choose the collections")));
        }
        let index = self.index.clone().unwrap_or_else(|| template.to_string());
        self.into_settings(AT, CollectionConfig::template(index))
    }

    /// Everything but the namespace and index, set on `base`; `at` names the options in errors.
    fn into_settings(self, at: &str, base: CollectionConfig) -> SyncResult<CollectionConfig> {
        let mut body = serde_json::Map::new();
        for (key, value) in [("settings", self.settings), ("mappings", self.mappings)] {
            if let Some(value) = value {
                body.insert(key.to_string(), serde_json::Value::Object(value));
            }
        }
        let filter = match self.filter.map(|f| mongodb::bson::Bson::try_from(serde_json::Value::Object(f))) {
            None => None,
            Some(Ok(mongodb::bson::Bson::Document(d))) => Some(d),
            Some(Ok(_)) => return Err(SyncError::config(format!("{at}.filter: must be an object"))),
            Some(Err(e)) => return Err(SyncError::config(format!("{at}.filter: {e}"))),
        };
        let mut convert = base.convert.clone();
        convert.decimal_as_number = self.decimal_as_number.unwrap_or(convert.decimal_as_number);
        convert.keep_id_as = self.keep_id_as.or(convert.keep_id_as);
        Ok(CollectionConfig {
            index_body: (!body.is_empty()).then_some(serde_json::Value::Object(body)),
            pipeline: self.pipeline,
            routing: self.routing,
            alias: self.alias,
            convert,
            fields: self.fields.map(|f| field_rules(at, f)).transpose()?.unwrap_or_default(),
            operations: self.operations.map_or(base.operations, |list| operation_filter(&list)),
            filter,
            ..base
        })
    }
}

fn field_rules(at: &str, f: FieldOptions) -> SyncResult<FieldRules> {
    let check = |what: &str, path: &str| {
        if path.is_empty() || path.split('.').any(str::is_empty) {
            Err(SyncError::config(format!("{at}.fields.{what}: \"{path}\" is not a dotted field path")))
        } else if path == "_id" || path.starts_with("_id.") {
            Err(SyncError::config(format!("{at}.fields.{what}: the _id is not a source field (see keepIdAs)")))
        } else {
            Ok(())
        }
    };
    let include = f.include.unwrap_or_default();
    let exclude = f.exclude.unwrap_or_default();
    let mut rename: Vec<(String, String)> = f.rename.unwrap_or_default().into_iter().collect();
    rename.sort();
    for p in &include {
        check("include", p)?;
    }
    for p in &exclude {
        check("exclude", p)?;
    }
    for (from, to) in &rename {
        check("rename", from)?;
        check("rename", to)?;
    }
    let mut add = Vec::new();
    for (path, value) in f.add.unwrap_or_default() {
        check("add", &path)?;
        add.push((path.clone(), added_value(&format!("{at}.fields.add.{path}"), value)?));
    }
    let flatten = match f.flatten {
        None | Some(Flatten::On(false)) => None,
        Some(Flatten::On(true)) => Some(".".to_string()),
        Some(Flatten::Separator(separator)) if !separator.is_empty() => Some(separator),
        Some(Flatten::Separator(_)) => return Err(SyncError::config(format!("{at}.fields.flatten: the separator must not be empty"))),
    };
    Ok(FieldRules { include, exclude, rename, add, flatten })
}

/// A `fields.add` value: a constant, or one of the derived values (`'$namespace'`…).
fn added_value(at: &str, value: serde_json::Value) -> SyncResult<AddedValue> {
    let serde_json::Value::String(text) = &value else { return Ok(AddedValue::Constant(value)) };
    Ok(match text.as_str() {
        "$namespace" => AddedValue::Namespace,
        "$db" => AddedValue::Database,
        "$collection" => AddedValue::Collection,
        "$syncedAt" => AddedValue::SyncedAt,
        literal if literal.starts_with("$$") => AddedValue::Constant(literal[1..].into()),
        other if other.starts_with('$') => {
            return Err(SyncError::config(format!(
                "{at}: \"{other}\" is not one of '$namespace', '$db', '$collection', '$syncedAt' (write '$$' for a literal '$')"
            )))
        }
        _ => AddedValue::Constant(value),
    })
}

fn operation_filter(list: &[Operation]) -> OperationFilter {
    let mut filter = OperationFilter { insert: false, update: false, replace: false, delete: false };
    for op in list {
        match op {
            Operation::Insert => filter.insert = true,
            Operation::Update => filter.update = true,
            Operation::Replace => filter.replace = true,
            Operation::Delete => filter.delete = true,
        }
    }
    filter
}

impl MongoOptions {
    fn into_config(self) -> SyncResult<MongoConfig> {
        let uri = credential("mongo", "uri", self.uri, self.uri_file)?.ok_or_else(|| SyncError::config("mongo.uri: required (or mongo.uriFile)"))?;
        Ok(MongoConfig {
            uri,
            tls: self.tls.map(|t| {
                let defaults = MongoTls::default();
                MongoTls {
                    ca_file: path(t.ca_file),
                    cert_key_file: path(t.cert_key_file),
                    allow_invalid_certificates: t.allow_invalid_certificates.unwrap_or(defaults.allow_invalid_certificates),
                }
            }),
            database_stream_threshold: self.database_stream_threshold.map_or(DEFAULT_DATABASE_STREAM_THRESHOLD, |n| n as usize),
        })
    }
}

impl ElasticsearchOptions {
    pub(super) fn into_config(self) -> SyncResult<EsConfig> {
        const AT: &str = "elasticsearch";
        let password = credential(AT, "password", self.password, self.password_file)?;
        let api_key = credential(AT, "apiKey", self.api_key, self.api_key_file)?;
        let bearer = credential(AT, "bearerToken", self.bearer_token, self.bearer_token_file)?;
        let auth = match (self.username, password, api_key, bearer) {
            (None, None, None, None) => EsAuth::None,
            (Some(username), password, None, None) => EsAuth::Basic { username, password: password.unwrap_or_default() },
            (None, None, Some(key), None) => EsAuth::ApiKey(key),
            (None, None, None, Some(token)) => EsAuth::Bearer(token),
            (None, Some(_), None, None) => return Err(SyncError::config("elasticsearch.password: given without elasticsearch.username")),
            _ => return Err(SyncError::config("elasticsearch: give only one of username/password, apiKey or bearerToken")),
        };
        let defaults = EsConfig::default();
        let tls = self.tls.map_or(defaults.tls.clone(), |t| EsTls {
            ca_file: path(t.ca_file),
            cert_file: path(t.cert_file),
            key_file: path(t.key_file),
            reject_unauthorized: t.reject_unauthorized.unwrap_or(defaults.tls.reject_unauthorized),
        });
        Ok(EsConfig {
            node: self.node,
            auth,
            request_timeout: self.request_timeout_ms.map_or(defaults.request_timeout, ms),
            compression: self.compression.unwrap_or(defaults.compression),
            tls,
        })
    }
}

impl NamespaceOptions {
    fn into_config(self, template: &str) -> SyncResult<Discovery> {
        let compile = |what: &str, patterns: Vec<String>| {
            patterns
                .into_iter()
                .enumerate()
                .map(|(i, p)| {
                    regex::Regex::new(&format!("^(?:{p})$"))
                        .map_err(|e| SyncError::config(format!("namespaces.{what}[{i}]: \"{p}\" is not a regular expression: {e}")))
                })
                .collect::<SyncResult<Vec<_>>>()
        };
        let defaults = Discovery::default();
        Ok(Discovery {
            include: compile("include", self.include)?,
            exclude: compile("exclude", self.exclude.unwrap_or_default())?,
            defaults: match self.defaults {
                None => CollectionConfig::template(template.to_string()),
                Some(options) => options.into_defaults(template)?,
            },
            interval: self.discovery_interval_ms.map_or(defaults.interval, ms),
        })
    }
}

pub(super) fn path(value: Option<String>) -> Option<PathBuf> {
    value.map(PathBuf::from)
}

/// `startAt` on the source's clock: a cluster time (MongoDB), or the polled column's time in
/// microseconds (PostgreSQL's polling mode). PostgreSQL's logical replication has no such
/// start: a slot begins where it is created.
fn start_at(text: &str, postgres: Option<&crate::config::PostgresConfig>) -> SyncResult<mongodb::bson::Timestamp> {
    let at = mongodb::bson::DateTime::parse_rfc3339_str(text)
        .map_err(|_| SyncError::config(format!("startAt: \"{text}\" is not an ISO-8601 time such as 2026-01-31T12:00:00Z")))?;
    let out_of_range = || SyncError::config(format!("startAt: \"{text}\" is out of range"));
    match postgres {
        None => {
            let secs = u32::try_from(at.timestamp_millis().div_euclid(1000)).map_err(|_| out_of_range())?;
            Ok(mongodb::bson::Timestamp { time: secs, increment: 0 })
        }
        Some(pg) if pg.poll.is_some() => {
            let micros = u64::try_from(at.timestamp_millis()).map_err(|_| out_of_range())? * 1000;
            Ok(crate::source::postgres::lsn_time(micros))
        }
        Some(_) => Err(SyncError::config(
            "startAt: not available with PostgreSQL logical replication (a table's replication slot begins where it is created; \
             the changes before it cannot be read): leave it out to follow from start(), or use postgres.poll to start from a time",
        )),
    }
}

fn sync_mode(mode: Option<ModeOption>, start: Option<&str>, postgres: Option<&crate::config::PostgresConfig>) -> SyncResult<SyncMode> {
    let start_at = start.map(|text| start_at(text, postgres)).transpose()?;
    Ok(match (mode, start_at) {
        (None, None) => SyncMode::default(),
        (Some(ModeOption::CopyAndStream), None) => SyncMode::CopyAndStream,
        (Some(ModeOption::Copy), None) => SyncMode::Copy,
        (Some(ModeOption::Stream), start_at) => SyncMode::Stream { start_at },
        (_, Some(_)) => return Err(SyncError::config("startAt: only goes with mode: 'stream'")),
    })
}

impl SyncOptions {
    pub fn into_config(self) -> SyncResult<SyncConfig> {
        let d = SyncConfig::default();
        let template = self.index_template.unwrap_or(d.index_template.clone());
        let (mongo, postgres, entries) = source_options(self.mongo, self.postgres, self.collections, self.tables)?;
        let mongo_uri = mongo.uri.clone();
        let collections = entries
            .into_iter()
            .enumerate()
            .map(|(i, c)| match c {
                CollectionEntry::Name(namespace) => Namespace::parse(&namespace)
                    .map(|ns| CollectionConfig::new(index_from_template(&template, &ns), ns))
                    .map_err(|m| SyncError::config(format!("collections[{i}]: {m}"))),
                CollectionEntry::Options(o) => o.into_config(i, &template),
            })
            .collect::<SyncResult<Vec<_>>>()?;
        let outputs = match self.outputs {
            None => d.outputs.clone(),
            Some(list) => list.into_iter().enumerate().map(|(i, o)| o.into_config(&format!("outputs[{i}]"))).collect::<SyncResult<_>>()?,
        };
        let mode = sync_mode(self.mode, self.start_at.as_deref(), postgres.as_ref())?;
        let config = SyncConfig {
            name: self.name,
            mongo,
            postgres,
            elasticsearch: self.elasticsearch.map(ElasticsearchOptions::into_config).transpose()?,
            outputs,
            collections,
            discovery: self.namespaces.map(|n| n.into_config(&template)).transpose()?,
            index_template: template,
            checkpoint: self.checkpoint.map_or(d.checkpoint.clone(), |c| c.into_config(&d.checkpoint)),
            batch: self.batch.map_or(Ok(d.batch.clone()), |b| b.into_config(&d.batch))?,
            retry: self.retry.map_or(d.retry.clone(), |r| r.into_config(&d.retry)),
            on_drop: self.on_drop.unwrap_or(d.on_drop),
            on_rename: self.on_rename.unwrap_or(d.on_rename),
            on_history_lost: self.on_history_lost.unwrap_or(d.on_history_lost),
            mode,
            copy_readers: self.copy_readers.map_or(d.copy_readers, |v| v as usize),
            copy_range_min_docs: self.copy_range_min_docs.map_or(d.copy_range_min_docs, u64::from),
            dead_letter_index: self.dead_letter_index,
            http: self.http.map(super::http::HttpOptions::into_config).transpose()?,
            lease: LeaseConfig { duration: self.lease.and_then(|l| l.duration_ms).map_or(d.lease.duration, |v| Duration::from_millis(v.into())) },
            instances: self.instances.map(InstancesOptions::into_config),
            search: self.search.map(super::search::SearchOptions::into_config).transpose()?,
            config_store: self.config_store.map(|s| s.into_config(Some(&mongo_uri))).transpose()?,
            rate_limit: self.rate_limit.map(|r| RateLimitConfig { docs_per_second: r.docs_per_second, bytes_per_second: r.bytes_per_second }),
        };
        config.validate()?;
        Ok(config)
    }
}

/// The source (MongoDB or PostgreSQL) and its collections (`collections`, or `tables`).
fn source_options(
    mongo: Option<MongoOptions>,
    postgres: Option<super::postgres_options::PostgresOptions>,
    collections: Option<Vec<CollectionEntry>>,
    tables: Option<Vec<super::postgres_options::TableEntry>>,
) -> SyncResult<(MongoConfig, Option<crate::config::PostgresConfig>, Vec<CollectionEntry>)> {
    match (mongo, postgres) {
        (Some(_), Some(_)) => Err(SyncError::config("postgres: give only one source, mongo or postgres")),
        (None, None) => Err(SyncError::config("mongo: required (or postgres for a PostgreSQL source)")),
        (Some(_), None) if tables.is_some() => Err(SyncError::config("tables: only with a postgres source (MongoDB collections go in collections)")),
        (Some(mongo), None) => Ok((mongo.into_config()?, None, collections.unwrap_or_default())),
        (None, Some(_)) if collections.is_some() => Err(SyncError::config("collections: with a postgres source, list the tables in tables")),
        (None, Some(pg)) => {
            let entries = tables.unwrap_or_default().into_iter().map(|t| t.0).collect();
            Ok((MongoConfig::default(), Some(pg.into_config()?), entries))
        }
    }
}

impl CheckpointOptions {
    fn into_config(self, d: &CheckpointConfig) -> CheckpointConfig {
        CheckpointConfig { database: self.database.unwrap_or(d.database.clone()), collection: self.collection.unwrap_or(d.collection.clone()) }
    }
}

impl BatchOptions {
    fn into_config(self, d: &BatchConfig) -> SyncResult<BatchConfig> {
        let max_docs = self.max_docs.map_or(d.max_docs, |v| v as usize);
        let max_bytes = self.max_bytes.map_or(d.max_bytes, |v| v as usize);
        let a = AdaptiveBatchConfig::default_within(max_docs, max_bytes);
        let adaptive = match self.adaptive {
            None => a,
            Some(o) => {
                if o.min_docs.is_some_and(|v| v as usize > max_docs) {
                    return Err(SyncError::config(format!("batch.adaptive.minDocs: must not exceed batch.maxDocs ({max_docs})")));
                }
                if o.min_bytes.is_some_and(|v| v as usize > max_bytes) {
                    return Err(SyncError::config(format!("batch.adaptive.minBytes: must not exceed batch.maxBytes ({max_bytes})")));
                }
                AdaptiveBatchConfig {
                    enabled: o.enabled.unwrap_or(a.enabled),
                    min_docs: o.min_docs.map_or(a.min_docs, |v| v as usize),
                    min_bytes: o.min_bytes.map_or(a.min_bytes, |v| v as usize),
                    target_latency: o.target_latency_ms.map_or(a.target_latency, ms),
                }
            }
        };
        Ok(BatchConfig {
            max_docs,
            max_bytes,
            flush_interval: self.flush_interval_ms.map_or(d.flush_interval, ms),
            concurrency: self.concurrency.map_or(d.concurrency, |v| v as usize),
            adaptive,
        })
    }
}

impl RetryOptions {
    fn into_config(self, d: &RetryConfig) -> RetryConfig {
        RetryConfig {
            max_attempts: self.max_attempts.or(d.max_attempts),
            initial_delay: self.initial_delay_ms.map_or(d.initial_delay, ms),
            max_delay: self.max_delay_ms.map_or(d.max_delay, ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn base() -> serde_json::Value {
        json!({ "name": "n", "mongo": { "uri": "mongodb://h/?replicaSet=rs" }, "elasticsearch": { "node": "http://h:9200" }, "collections": ["shop.orders"] })
    }

    /// The error of `base()` with `patch` merged in at the top level.
    fn error(patch: serde_json::Value) -> String {
        let mut options = base();
        for (k, v) in patch.as_object().unwrap() {
            options[k] = v.clone();
        }
        sync_config(options).expect_err("invalid options").message
    }

    #[test]
    fn instances_need_a_group_have_no_maximum_by_default_and_strict_keys() {
        assert_eq!(sync_config(base()).unwrap().instances, None);
        let mut options = base();
        options["instances"] = json!({ "group": "workers" });
        assert_eq!(sync_config(options.clone()).unwrap().instances, Some(InstancesConfig::new("workers")));
        options["instances"] = json!({ "group": "workers", "maxCollectionsPerInstance": 5 });
        assert_eq!(sync_config(options).unwrap().instances.and_then(|i| i.max_collections_per_instance), Some(5));
        assert_eq!(error(json!({ "instances": { "group": " " } })), "instances.group: must be a non-empty string of at most 100 characters");
        assert_eq!(error(json!({ "instances": { "group": "g", "maxCollectionsPerInstance": 0 } })), "instances.maxCollectionsPerInstance: must be at least 1");
        assert_eq!(
            error(json!({ "instances": { "group": "g", "mode": "copy" } })),
            "instances.mode: unknown option (known: `group`, `maxCollectionsPerInstance`)"
        );
        let missing = error(json!({ "instances": { "maxCollectionsPerInstance": 2 } }));
        assert!(missing.starts_with("instances") && missing.contains("group"), "{missing}");
        assert_eq!(error(json!({ "instances": { "group": "g" }, "mode": "copy" })), "instances: not with mode: 'copy' (a one-shot copy runs in one instance)");
    }

    #[test]
    fn adaptive_batches_and_rate_limits_are_read_and_checked() {
        let config = sync_config(base()).unwrap();
        assert!(!config.batch.adaptive.enabled && config.rate_limit.is_none(), "fixed batches by default, no cap");
        let mut options = base();
        options["batch"] = json!({ "maxDocs": 5, "adaptive": { "enabled": true, "targetLatencyMs": 800 } });
        options["rateLimit"] = json!({ "docsPerSecond": 50, "bytesPerSecond": 2048.5 });
        let config = sync_config(options).unwrap();
        assert_eq!(config.batch.adaptive.min_docs, 5, "the default floor is capped at a smaller maxDocs");
        assert_eq!(config.batch.adaptive.target_latency, Duration::from_millis(800));
        assert_eq!(config.rate_limit, Some(RateLimitConfig { docs_per_second: Some(50.0), bytes_per_second: Some(2048.5) }));
        let cases = [
            (json!({ "batch": { "adaptive": { "enabled": false, "minDocs": 0 } } }), "batch.adaptive.minDocs: must be at least 1"),
            (json!({ "batch": { "maxDocs": 50, "adaptive": { "minDocs": 51 } } }), "batch.adaptive.minDocs: must not exceed batch.maxDocs (50)"),
            (json!({ "batch": { "adaptive": { "minBytes": 100 } } }), "batch.adaptive.minBytes: must be at least 1024"),
            (json!({ "batch": { "adaptive": { "targetLatencyMs": 10 } } }), "batch.adaptive.targetLatencyMs: must be at least 100"),
            (json!({ "batch": { "adaptive": { "minDoc": 1 } } }), "batch.adaptive.minDoc: unknown option"),
            (json!({ "rateLimit": {} }), "rateLimit: give docsPerSecond, bytesPerSecond or both"),
            (json!({ "rateLimit": { "docsPerSecond": 0 } }), "rateLimit.docsPerSecond: must be a number above 0"),
            (json!({ "rateLimit": { "docsPerSecond": -3 } }), "rateLimit.docsPerSecond: must be a number above 0"),
            (json!({ "rateLimit": { "bytesPerSecond": 10 } }), "rateLimit.bytesPerSecond: must be at least 1024"),
            (json!({ "rateLimit": { "docsPerSecond": "fast" } }), "rateLimit.docsPerSecond: invalid type"),
        ];
        for (patch, wanted) in cases {
            let message = error(patch.clone());
            assert!(message.starts_with(wanted), "{patch}: {message}");
        }
    }

    #[test]
    fn the_lease_duration_has_a_default_a_range_and_strict_keys() {
        assert_eq!(sync_config(base()).unwrap().lease.duration, Duration::from_secs(10));
        let mut options = base();
        options["lease"] = json!({ "durationMs": 3000 });
        assert_eq!(sync_config(options).unwrap().lease.duration, Duration::from_secs(3));
        assert_eq!(error(json!({ "lease": { "durationMs": 999 } })), "lease.durationMs: must be from 1000 to 600000");
        assert_eq!(error(json!({ "lease": { "duration": 5000 } })), "lease.duration: unknown option, did you mean `durationMs`?");
    }

    #[test]
    fn unknown_keys_are_named_with_their_path_and_a_close_match_at_every_level() {
        let cases = [
            (json!({ "indexTemplte": "x" }), "indexTemplte: unknown option, did you mean `indexTemplate`?"),
            (json!({ "elasticsearch": { "node": "http://h", "apikey": "k" } }), "elasticsearch.apikey: unknown option, did you mean `apiKey`?"),
            (json!({ "mongo": { "uri": "mongodb://h", "tls": { "caFiel": "x" } } }), "mongo.tls.caFiel: unknown option, did you mean `caFile`?"),
            (json!({ "collections": ["a.b", { "namespace": "a.c", "indx": "c" }] }), "collections[1].indx: unknown option, did you mean `index`?"),
            (
                json!({ "collections": [{ "namespace": "a.c", "fields": { "includ": ["x"] } }] }),
                "collections[0].fields.includ: unknown option, did you mean `include`?",
            ),
            (
                json!({ "namespaces": { "include": ["a\\..*"], "defaults": { "pipline": "p" } } }),
                "namespaces.defaults.pipline: unknown option, did you mean `pipeline`?",
            ),
            (json!({ "namespaces": { "includes": ["a\\..*"] } }), "namespaces.includes: unknown option, did you mean `include`?"),
            (json!({ "batch": { "maxDoc": 5 } }), "batch.maxDoc: unknown option, did you mean `maxDocs`?"),
            (json!({ "retry": { "max_attempts": 5 } }), "retry.max_attempts: unknown option, did you mean `maxAttempts`?"),
            (json!({ "checkpoint": { "databse": "x" } }), "checkpoint.databse: unknown option, did you mean `database`?"),
            (
                json!({ "outputs": [{ "type": "file", "path": "/tmp/x", "rotateByte": 5 }] }),
                "outputs[0].rotateByte: unknown option, did you mean `rotateBytes`?",
            ),
            (
                json!({ "outputs": [{ "type": "stdout" }, { "type": "tcp", "host": "h", "port": 1, "tls": { "caFil": "x" } }] }),
                "outputs[1].tls.caFil: unknown option, did you mean `caFile`?",
            ),
            (json!({ "outputs": [{ "type": "stdout", "colour": true }] }), "outputs[0].colour: unknown option (known: `type`)"),
        ];
        for (patch, expected) in cases {
            assert_eq!(error(patch), expected);
        }
    }

    #[test]
    fn wrong_values_and_types_name_the_field() {
        assert_eq!(
            error(json!({ "onDrop": "deleteIndx" })),
            "onDrop: \"deleteIndx\" is not one of 'deleteDocuments', 'deleteIndex', 'ignore', did you mean 'deleteIndex'?"
        );
        assert!(error(json!({ "collections": [{ "namespace": "a.b", "operations": ["insert", "delet"] }] }))
            .starts_with("collections[0].operations[1]: \"delet\" is not one of"));
        assert_eq!(
            error(json!({ "elasticsearch": null, "outputs": [{ "type": "stdout" }], "search": {} })),
            "search: needs the elasticsearch option (the server it searches)"
        );
        assert_eq!(error(json!({ "search": { "cursorTtlMs": 10 } })), "search.cursorTtlMs: must be at least 1000");
        assert_eq!(error(json!({ "outputs": [{ "type": "kafka" }] })), "outputs[0]: \"kafka\" is not one of 'elasticsearch', 'file', 'stdout', 'tcp', 'nats'");
        assert_eq!(error(json!({ "outputs": [{ "path": "x" }] })), "outputs[0].type: required");
        assert_eq!(error(json!({ "outputs": [{ "type": "file" }] })), "outputs[0].path: required");
        assert!(error(json!({ "batch": { "maxDocs": "many" } })).starts_with("batch.maxDocs: invalid type: string \"many\""));
        assert!(error(json!({ "batch": { "maxDocs": 1.5 } })).starts_with("batch.maxDocs: invalid type: floating point"));
        assert_eq!(error(json!({ "mongo": {} })), "mongo.uri: required (or mongo.uriFile)");
        assert_eq!(error(json!({ "collections": [{ "index": "x" }] })), "collections[0].namespace: required");
        assert!(error(json!({ "collections": [42] })).starts_with("collections[0]: invalid type: integer `42`, expected a \"database.collection\" string"));
        assert!(
            error(json!({ "collections": [{ "namespace": "a.b", "fields": { "flatten": 1 } }] })).starts_with("collections[0].fields.flatten: invalid type")
        );
        let mut no_name = base();
        no_name.as_object_mut().unwrap().remove("name");
        assert_eq!(sync_config(no_name).unwrap_err().message, "name: required");
    }

    #[test]
    fn a_postgres_source_takes_tables_and_strict_options() {
        let pg = |patch: serde_json::Value| {
            let mut options = json!({ "name": "s", "elasticsearch": { "node": "http://h:9200" }, "postgres": { "uri": "postgres://u:p@127.0.0.1/db" }, "tables": ["public.orders", { "table": "shop.lines", "index": "lines" }] });
            for (k, v) in patch.as_object().unwrap() {
                options[k] = v.clone();
            }
            sync_config(options)
        };
        let config = pg(json!({})).unwrap();
        let names: Vec<(String, String)> = config.collections.iter().map(|c| (c.namespace.to_string(), c.index.clone())).collect();
        assert_eq!(names, [("public.orders".to_string(), "orders".to_string()), ("shop.lines".to_string(), "lines".to_string())]);
        let postgres = config.postgres.unwrap();
        assert_eq!((postgres.slot_prefix.as_str(), postgres.publication_for("My Sync").as_str()), ("mes_", "mes_my_sync"));
        let message = |patch| pg(patch).unwrap_err().message;
        assert_eq!(message(json!({ "postgres": { "uri": "x", "slotPrefx": "a" } })), "postgres.slotPrefx: unknown option, did you mean `slotPrefix`?");
        assert!(message(json!({ "tables": [{ "table": "a.b", "filter": {} }] })).contains("filter"));
        assert!(message(json!({ "tables": [{ "table": "a.b", "indx": "i" }] })).contains("indx"));
        assert!(message(json!({ "tables": [{ "index": "i" }] })).contains("table"));
        assert_eq!(message(json!({ "postgres": { "uri": "mongodb://h" } })), "postgres.uri: \"mongodb://h\" must start with postgres:// or postgresql://");
        assert_eq!(message(json!({ "mongo": { "uri": "mongodb://h" } })), "postgres: give only one source, mongo or postgres");
        assert_eq!(message(json!({ "collections": ["a.b"] })), "collections: with a postgres source, list the tables in tables");
        assert_eq!(
            message(json!({ "postgres": { "uri": "postgres://h/db", "slotPrefix": "Bad-" } })),
            "postgres.slotPrefix: must be lowercase letters, digits and '_'"
        );
        assert!(error(json!({ "tables": ["a.b"] })).starts_with("tables: only with a postgres source"));
        let uri = "postgres://u:p@127.0.0.1/db";
        let poll = pg(json!({ "postgres": { "uri": uri, "poll": { "column": "updated_at", "intervalMs": 250 }, "tls": { "caFile": "/ca.pem" } } }))
            .unwrap()
            .postgres
            .unwrap();
        assert_eq!(poll.poll, Some(crate::config::PollConfig { interval: Duration::from_millis(250), ..crate::config::PollConfig::new("updated_at".into()) }));
        assert_eq!(poll.tls.ca_file, Some(PathBuf::from("/ca.pem")));
        assert_eq!(message(json!({ "postgres": { "uri": uri, "poll": { "colum": "x" } } })), "postgres.poll.colum: unknown option, did you mean `column`?");
        assert_eq!(
            message(json!({ "postgres": { "uri": uri, "tls": { "ca": "x" } } })),
            "postgres.tls.ca: unknown option (known: `caFile`, `certFile`, `keyFile`)"
        );
        assert_eq!(message(json!({ "postgres": { "uri": uri, "poll": { "column": "" } } })), "postgres.poll.column: must name a timestamp column");
        assert_eq!(message(json!({ "postgres": { "uri": uri, "poll": { "column": "u", "intervalMs": 0 } } })), "postgres.poll.intervalMs: must be at least 1");
        assert!(message(json!({ "postgres": { "uri": uri, "publication": "p", "poll": { "column": "u" } } }))
            .starts_with("postgres.publication: not used with postgres.poll"));
    }

    #[test]
    fn valid_options_get_the_config_types_defaults() {
        let config = sync_config(base()).unwrap();
        let d = SyncConfig::default();
        assert_eq!((config.copy_readers, config.copy_range_min_docs, config.index_template.as_str()), (d.copy_readers, d.copy_range_min_docs, "{coll}"));
        assert_eq!(config.elasticsearch.unwrap().request_timeout, EsConfig::default().request_timeout);
        assert_eq!(config.batch.max_docs, d.batch.max_docs);
        assert!(matches!(config.outputs.as_slice(), [crate::config::OutputConfig::Elasticsearch]));
    }

    #[test]
    fn credentials_come_from_files_without_showing_in_errors() {
        let dir = std::env::temp_dir().join(format!("mes-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path.to_string_lossy().into_owned()
        };
        let uri = file("uri", "mongodb://app:s3cret@h/?replicaSet=rs\n");
        let password = file("password", "hunter2\r\n");
        let mut options = base();
        options["mongo"] = json!({ "uriFile": uri });
        options["elasticsearch"] = json!({ "node": "http://h:9200", "username": "u", "passwordFile": password });
        let config = sync_config(options).unwrap();
        assert_eq!(config.mongo.uri.expose(), "mongodb://app:s3cret@h/?replicaSet=rs");
        let EsAuth::Basic { password, .. } = config.elasticsearch.unwrap().auth else { panic!("basic auth") };
        assert_eq!(password.expose(), "hunter2");

        let both = error(json!({ "elasticsearch": { "node": "http://h", "apiKey": "k", "apiKeyFile": uri } }));
        assert_eq!(both, "elasticsearch.apiKeyFile: give only one of apiKey and apiKeyFile");
        let missing = error(json!({ "outputs": [{ "type": "nats", "url": "nats://h", "tokenFile": dir.join("none").to_string_lossy() }] }));
        assert!(missing.starts_with("outputs[0].tokenFile: cannot read \""), "{missing}");
        let empty = file("empty", "\n");
        assert_eq!(error(json!({ "mongo": { "uriFile": empty } })), format!("mongo.uriFile: \"{empty}\" is empty"));
        // A path to the wrong file (a log, a disk image) is refused before it is read whole.
        let huge = file("huge", &"x".repeat(2 << 20));
        let refused = error(json!({ "elasticsearch": { "node": "http://h", "apiKeyFile": huge } }));
        assert_eq!(refused, format!("elasticsearch.apiKeyFile: \"{huge}\" is larger than 1 MiB, too large for a secret"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
