//! The options object of `new MongoElasticSync(options)` and its conversion into the engine's config.

use std::path::PathBuf;
use std::time::Duration;

use napi::bindgen_prelude::Either;
use napi_derive::napi;
use serde::Deserialize;

use super::outputs::{outputs_config, parse};
use crate::config::{
    index_from_template, BatchConfig, CheckpointConfig, CollectionConfig, Discovery, DropPolicy, EsAuth, EsConfig, EsTls, HistoryLostPolicy, MongoConfig,
    MongoTls, Namespace, OperationFilter, RenamePolicy, RetryConfig, Secret, SyncConfig, SyncMode, DEFAULT_INDEX_TEMPLATE,
};
use crate::error::{SyncError, SyncResult};
use crate::transform::{AddedValue, ConvertOptions, FieldRules};

#[napi(object)]
pub struct SyncOptions {
    /// Key of the saved checkpoint; a restarted sync with the same name continues where it stopped.
    pub name: String,
    pub mongo: MongoOptions,
    /// The Elasticsearch connection; required unless `outputs` lists no `'elasticsearch'` output.
    pub elasticsearch: Option<ElasticsearchOptions>,
    /// Where synced data goes (default `[{ type: 'elasticsearch' }]`); with several, each gets
    /// everything and a position is saved only once all acknowledged it.
    #[napi(ts_type = "Array<ElasticsearchOutput | FileOutput | StdoutOutput | TcpOutput | NatsOutput>")]
    pub outputs: Option<Vec<serde_json::Value>>,
    /// `"db.collection"` (index named by `indexTemplate`) or `{ namespace, index, … }`.
    /// Optional when `namespaces` chooses collections by pattern.
    pub collections: Option<Vec<Either<String, CollectionOptions>>>,
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
    pub on_drop: Option<String>,
    /// On `rename` of a synced collection (default `'move'`): move its documents (versions kept)
    /// to the new name's index, copy the renamed collection afresh, or do nothing.
    #[napi(ts_type = "'move' | 'recopy' | 'ignore'")]
    pub on_rename: Option<String>,
    /// When the saved position is gone from the oplog (default `'fail'`: stop with
    /// `ERR_HISTORY_LOST`), or a change event over 16 MB blocks the stream (`ERR_EVENT_TOO_LARGE`).
    /// `'resync'` copies again into `<index>-<n>` while the old index stays readable, then points
    /// the alias `<index>` at the new index and drops the old one.
    #[napi(ts_type = "'fail' | 'resync'")]
    pub on_history_lost: Option<String>,
    /// Also write dead letters (id, reason, document) into this index.
    pub dead_letter_index: Option<String>,
    /// `'copyAndStream'` (default); `'copy'`: copy, then stop (a one-shot reindex; `wait()`
    /// resolves when done); `'stream'`: no copy, follow changes from the saved position, else
    /// from `startAt`, else from now.
    #[napi(ts_type = "'copyAndStream' | 'copy' | 'stream'")]
    pub mode: Option<String>,
    /// Cursors reading one collection's copy in parallel over `_id` ranges (default 4).
    pub copy_readers: Option<u32>,
    /// Fewest documents per `_id` range (default 100000): a collection gets one cursor per this
    /// many documents, up to `copyReaders`; a smaller one is read with a single cursor.
    pub copy_range_min_docs: Option<u32>,
    /// With `mode: 'stream'` and no saved position: an ISO-8601 time (within the oplog window) to start from.
    pub start_at: Option<String>,
    /// The HTTP server for health, readiness, stats, metrics and the status page (off unless given).
    #[napi(ts_type = "HttpOptions")]
    pub http: Option<serde_json::Value>,
}

#[napi(object)]
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
    pub defaults: Option<serde_json::Value>,
}

#[napi(object)]
pub struct MongoOptions {
    /// A replica set or sharded cluster URI (change streams need one).
    pub uri: String,
    /// TLS settings, in addition to (and overriding) `tls=true&tlsCAFile=…` in the URI.
    pub tls: Option<MongoTlsOptions>,
}

#[napi(object)]
pub struct MongoTlsOptions {
    /// PEM file of the CA(s) to trust.
    pub ca_file: Option<String>,
    /// PEM file with the client certificate and its private key.
    pub cert_key_file: Option<String>,
    /// Skip certificate verification (logged as a warning). Never in production.
    pub allow_invalid_certificates: Option<bool>,
}

#[napi(object)]
pub struct ElasticsearchOptions {
    /// e.g. `http://127.0.0.1:9200`; credentials in the URL are used as basic auth.
    pub node: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Base64 `id:key` API key.
    pub api_key: Option<String>,
    pub bearer_token: Option<String>,
    /// Per-request timeout (default 30000).
    pub request_timeout_ms: Option<u32>,
    /// gzip request bodies (default false).
    pub compression: Option<bool>,
    pub tls: Option<ElasticsearchTlsOptions>,
}

#[napi(object)]
pub struct ElasticsearchTlsOptions {
    /// PEM file of the CA(s) to trust; when given, only these are trusted.
    pub ca_file: Option<String>,
    /// PEM client certificate, for servers requiring mutual TLS (with `keyFile`).
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    /// `false` skips certificate verification (logged as a warning). Never in production.
    pub reject_unauthorized: Option<bool>,
}

#[napi(object)]
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
    pub settings: Option<serde_json::Value>,
    /// Index mappings used when the index is created; an existing index must agree with them.
    #[napi(ts_type = "Record<string, unknown>")]
    pub mappings: Option<serde_json::Value>,
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
    pub operations: Option<Vec<String>>,
    /// A MongoDB query (extended JSON for special types, e.g. `{ "$date": "…" }`): only matching
    /// documents are synced; a document updated out of it is deleted from the index.
    #[napi(ts_type = "Record<string, unknown>")]
    pub filter: Option<serde_json::Value>,
}

/// Which fields reach the index; dotted paths, reaching into arrays of documents.
#[napi(object)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FieldOptions {
    /// Keep only these paths (and the `_id`).
    pub include: Option<Vec<String>>,
    /// Drop these paths.
    pub exclude: Option<Vec<String>>,
    /// `{ from: to }` renames, applied after include and exclude.
    pub rename: Option<std::collections::HashMap<String, String>>,
    /// Fields set on every document, after the renames: `{ path: value }`. A value is a
    /// constant, or one of the strings `'$namespace'`, `'$db'`, `'$collection'` and
    /// `'$syncedAt'` (the time of the conversion, ISO-8601); `'$$…'` stands for a literal `'$…'`.
    #[napi(ts_type = "Record<string, unknown>")]
    pub add: Option<serde_json::Value>,
    /// Nested objects become top-level keys joined by `'.'` (`true`) or the given separator,
    /// applied last. Arrays stay as they are.
    #[serde(default, deserialize_with = "bool_or_string")]
    pub flatten: Option<Either<bool, String>>,
}

/// `flatten` as serde reads it (napi's `Either` has no serde support).
fn bool_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Either<bool, String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a boolean or a separator string")]
    enum BoolOrString {
        Bool(bool),
        String(String),
    }
    Ok(Option::<BoolOrString>::deserialize(d)?.map(|v| match v {
        BoolOrString::Bool(b) => Either::A(b),
        BoolOrString::String(s) => Either::B(s),
    }))
}

#[napi(object)]
pub struct CheckpointOptions {
    /// Database holding checkpoints (default `mongo_elastic_sync`).
    pub database: Option<String>,
    /// Collection holding checkpoints (default `checkpoints`).
    pub collection: Option<String>,
}

#[napi(object)]
pub struct BatchOptions {
    /// Most documents per `_bulk` request (default 1000).
    pub max_docs: Option<u32>,
    /// Most bytes per `_bulk` request (default 8 MiB); a larger single document is dead-lettered.
    pub max_bytes: Option<u32>,
    /// While streaming, the longest a change waits for its batch (default 1000).
    pub flush_interval_ms: Option<u32>,
    /// Bulk requests in flight at once per collection during the copy (default 2).
    pub concurrency: Option<u32>,
}

#[napi(object)]
pub struct RetryOptions {
    /// Attempts before a transient Elasticsearch failure fails the sync (default: retry forever).
    pub max_attempts: Option<u32>,
    pub initial_delay_ms: Option<u32>,
    pub max_delay_ms: Option<u32>,
}

fn ms(v: u32) -> Duration {
    Duration::from_millis(v as u64)
}

impl CollectionOptions {
    /// A `collections` entry.
    fn into_config(self, i: usize, template: &str) -> SyncResult<CollectionConfig> {
        let at = format!("collections[{i}]");
        let namespace = Namespace::parse(&self.namespace).map_err(|m| SyncError::config(format!("{at}: {m}")))?;
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
            match value {
                Some(v @ serde_json::Value::Object(_)) => {
                    body.insert(key.to_string(), v);
                }
                Some(_) => return Err(SyncError::config(format!("{at}.{key}: must be an object"))),
                None => {}
            }
        }
        let fields = self.fields.map(|f| field_rules(at, f)).transpose()?.unwrap_or_default();
        Ok(CollectionConfig {
            index_body: (!body.is_empty()).then_some(serde_json::Value::Object(body)),
            pipeline: self.pipeline,
            routing: self.routing,
            alias: self.alias,
            convert: ConvertOptions { decimal_as_number: self.decimal_as_number.unwrap_or(false), keep_id_as: self.keep_id_as },
            fields,
            operations: match self.operations {
                None => OperationFilter::default(),
                Some(list) => operation_filter(at, &list)?,
            },
            filter: match self.filter {
                None => None,
                Some(json @ serde_json::Value::Object(_)) => match mongodb::bson::Bson::try_from(json) {
                    Ok(mongodb::bson::Bson::Document(d)) => Some(d),
                    Ok(_) => return Err(SyncError::config(format!("{at}.filter: must be an object"))),
                    Err(e) => return Err(SyncError::config(format!("{at}.filter: {e}"))),
                },
                Some(_) => return Err(SyncError::config(format!("{at}.filter: must be an object"))),
            },
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
    match f.add {
        None => {}
        Some(serde_json::Value::Object(map)) => {
            for (path, value) in map {
                check("add", &path)?;
                let value = match value {
                    serde_json::Value::String(text) if text.starts_with('$') => match text.as_str() {
                        "$namespace" => AddedValue::Namespace,
                        "$db" => AddedValue::Database,
                        "$collection" => AddedValue::Collection,
                        "$syncedAt" => AddedValue::SyncedAt,
                        literal if literal.starts_with("$$") => AddedValue::Constant(literal[1..].into()),
                        other => {
                            return Err(SyncError::config(format!(
                            "{at}.fields.add.{path}: \"{other}\" is not one of '$namespace', '$db', '$collection', '$syncedAt' (write '$$' for a literal '$')"
                        )))
                        }
                    },
                    constant => AddedValue::Constant(constant),
                };
                add.push((path, value));
            }
        }
        Some(_) => return Err(SyncError::config(format!("{at}.fields.add: must be an object of {{ path: value }}"))),
    }
    let flatten = match f.flatten {
        None | Some(Either::A(false)) => None,
        Some(Either::A(true)) => Some(".".to_string()),
        Some(Either::B(separator)) if !separator.is_empty() => Some(separator),
        Some(Either::B(_)) => return Err(SyncError::config(format!("{at}.fields.flatten: the separator must not be empty"))),
    };
    Ok(FieldRules { include, exclude, rename, add, flatten })
}

fn operation_filter(at: &str, list: &[String]) -> SyncResult<OperationFilter> {
    let mut filter = OperationFilter { insert: false, update: false, replace: false, delete: false };
    for op in list {
        match op.as_str() {
            "insert" => filter.insert = true,
            "update" => filter.update = true,
            "replace" => filter.replace = true,
            "delete" => filter.delete = true,
            other => return Err(SyncError::config(format!("{at}.operations: \"{other}\" is not one of 'insert', 'update', 'replace', 'delete'"))),
        }
    }
    Ok(filter)
}

impl ElasticsearchOptions {
    fn into_config(self) -> SyncResult<EsConfig> {
        let es = self;
        let auth = match (es.username, es.password, es.api_key, es.bearer_token) {
            (None, None, None, None) => EsAuth::None,
            (Some(username), password, None, None) => EsAuth::Basic { username, password: Secret::new(password.unwrap_or_default()) },
            (None, None, Some(key), None) => EsAuth::ApiKey(Secret::new(key)),
            (None, None, None, Some(token)) => EsAuth::Bearer(Secret::new(token)),
            (None, Some(_), None, None) => return Err(SyncError::config("elasticsearch.password: given without elasticsearch.username")),
            _ => return Err(SyncError::config("elasticsearch: give only one of username/password, apiKey or bearerToken")),
        };
        Ok(EsConfig {
            node: es.node,
            auth,
            request_timeout: ms(es.request_timeout_ms.unwrap_or(30_000)),
            compression: es.compression.unwrap_or(false),
            tls: es.tls.map_or_else(EsTls::default, |t| EsTls {
                ca_file: path(t.ca_file),
                cert_file: path(t.cert_file),
                key_file: path(t.key_file),
                reject_unauthorized: t.reject_unauthorized.unwrap_or(true),
            }),
        })
    }
}

fn discovery(options: NamespaceOptions, template: &str) -> SyncResult<Discovery> {
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
    Ok(Discovery {
        include: compile("include", options.include)?,
        exclude: compile("exclude", options.exclude.unwrap_or_default())?,
        defaults: match options.defaults {
            None => CollectionConfig::template(template.to_string()),
            Some(value) => parse::<CollectionOptions>("namespaces.defaults", value)?.into_defaults(template)?,
        },
        interval: ms(options.discovery_interval_ms.unwrap_or(10_000)),
    })
}

fn path(value: Option<String>) -> Option<PathBuf> {
    value.map(PathBuf::from)
}

impl SyncOptions {
    pub fn into_config(self) -> SyncResult<SyncConfig> {
        let template = self.index_template.as_deref().unwrap_or(DEFAULT_INDEX_TEMPLATE);
        let collections = self
            .collections
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, c)| match c {
                Either::A(namespace) => Namespace::parse(&namespace)
                    .map(|ns| CollectionConfig::new(index_from_template(template, &ns), ns))
                    .map_err(|m| SyncError::config(format!("collections[{i}]: {m}"))),
                Either::B(o) => o.into_config(i, template),
            })
            .collect::<SyncResult<Vec<_>>>()?;
        let checkpoint_defaults = CheckpointConfig::default();
        let checkpoint = self.checkpoint.map_or(checkpoint_defaults.clone(), |c| CheckpointConfig {
            database: c.database.unwrap_or(checkpoint_defaults.database),
            collection: c.collection.unwrap_or(checkpoint_defaults.collection),
        });
        let batch_defaults = BatchConfig::default();
        let batch = self.batch.map_or(batch_defaults.clone(), |b| BatchConfig {
            max_docs: b.max_docs.map_or(batch_defaults.max_docs, |v| v as usize),
            max_bytes: b.max_bytes.map_or(batch_defaults.max_bytes, |v| v as usize),
            flush_interval: b.flush_interval_ms.map_or(batch_defaults.flush_interval, ms),
            concurrency: b.concurrency.map_or(batch_defaults.concurrency, |v| v as usize),
        });
        let retry_defaults = RetryConfig::default();
        let retry = self.retry.map_or(retry_defaults.clone(), |r| RetryConfig {
            max_attempts: r.max_attempts.or(retry_defaults.max_attempts),
            initial_delay: r.initial_delay_ms.map_or(retry_defaults.initial_delay, ms),
            max_delay: r.max_delay_ms.map_or(retry_defaults.max_delay, ms),
        });
        let on_drop = match self.on_drop.as_deref() {
            None | Some("deleteDocuments") => DropPolicy::DeleteDocuments,
            Some("deleteIndex") => DropPolicy::DeleteIndex,
            Some("ignore") => DropPolicy::Ignore,
            Some(other) => return Err(SyncError::config(format!("onDrop: \"{other}\" is not one of 'deleteDocuments', 'deleteIndex', 'ignore'"))),
        };
        let on_rename = match self.on_rename.as_deref() {
            None | Some("move") => RenamePolicy::Move,
            Some("recopy") => RenamePolicy::Recopy,
            Some("ignore") => RenamePolicy::Ignore,
            Some(other) => return Err(SyncError::config(format!("onRename: \"{other}\" is not one of 'move', 'recopy', 'ignore'"))),
        };
        let on_history_lost = match self.on_history_lost.as_deref() {
            None | Some("fail") => HistoryLostPolicy::Fail,
            Some("resync") => HistoryLostPolicy::Resync,
            Some(other) => return Err(SyncError::config(format!("onHistoryLost: \"{other}\" is not one of 'fail', 'resync'"))),
        };
        let start_at = match self.start_at.as_deref() {
            None => None,
            Some(text) => {
                let at = mongodb::bson::DateTime::parse_rfc3339_str(text)
                    .map_err(|_| SyncError::config(format!("startAt: \"{text}\" is not an ISO-8601 time such as 2026-01-31T12:00:00Z")))?;
                let secs =
                    u32::try_from(at.timestamp_millis().div_euclid(1000)).map_err(|_| SyncError::config(format!("startAt: \"{text}\" is out of range")))?;
                Some(mongodb::bson::Timestamp { time: secs, increment: 0 })
            }
        };
        let mode = match (self.mode.as_deref(), start_at) {
            (None | Some("copyAndStream"), None) => SyncMode::CopyAndStream,
            (Some("copy"), None) => SyncMode::Copy,
            (Some("stream"), start_at) => SyncMode::Stream { start_at },
            (None | Some("copyAndStream" | "copy"), Some(_)) => return Err(SyncError::config("startAt: only goes with mode: 'stream'")),
            (Some(other), _) => return Err(SyncError::config(format!("mode: \"{other}\" is not one of 'copyAndStream', 'copy', 'stream'"))),
        };
        let config = SyncConfig {
            name: self.name,
            mongo: MongoConfig {
                uri: Secret::new(self.mongo.uri),
                tls: self.mongo.tls.map(|t| MongoTls {
                    ca_file: path(t.ca_file),
                    cert_key_file: path(t.cert_key_file),
                    allow_invalid_certificates: t.allow_invalid_certificates.unwrap_or(false),
                }),
            },
            elasticsearch: self.elasticsearch.map(ElasticsearchOptions::into_config).transpose()?,
            outputs: outputs_config(self.outputs)?,
            collections,
            index_template: template.to_string(),
            discovery: self.namespaces.map(|n| discovery(n, template)).transpose()?,
            checkpoint,
            batch,
            retry,
            on_drop,
            on_rename,
            on_history_lost,
            mode,
            copy_readers: self.copy_readers.map_or(4, |v| v as usize),
            copy_range_min_docs: self.copy_range_min_docs.map_or(100_000, u64::from),
            dead_letter_index: self.dead_letter_index,
            http: self.http.map(super::http::http_config).transpose()?,
        };
        config.validate()?;
        Ok(config)
    }
}
