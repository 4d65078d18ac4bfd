//! The engine's configuration, already converted from JS or CLI input, and its validation.
//! Every validation error names the offending field the way the user wrote it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{SyncError, SyncResult};
use crate::transform::{ConvertOptions, FieldRules};

#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Key of the saved checkpoint: two syncs with the same name share their progress.
    pub name: String,
    pub mongo: MongoConfig,
    /// PostgreSQL as the source instead of MongoDB (its tables are the `collections`).
    pub postgres: Option<PostgresConfig>,
    /// The Elasticsearch connection: required when an `Elasticsearch` output is listed.
    pub elasticsearch: Option<EsConfig>,
    /// Where synced data goes; several outputs all get everything.
    pub outputs: Vec<OutputConfig>,
    pub collections: Vec<CollectionConfig>,
    /// The index of a collection without one (`{db}` and `{coll}` filled in), e.g. a rename's target.
    pub index_template: String,
    /// Collections chosen by name patterns, including ones created while the sync runs.
    pub discovery: Option<Discovery>,
    pub checkpoint: CheckpointConfig,
    pub batch: BatchConfig,
    pub retry: RetryConfig,
    pub on_drop: DropPolicy,
    pub on_rename: RenamePolicy,
    pub on_history_lost: HistoryLostPolicy,
    pub mode: SyncMode,
    /// Cursors reading one collection's copy in parallel, over `_id` ranges.
    pub copy_readers: usize,
    /// Fewest documents per range: smaller collections are read with fewer cursors.
    pub copy_range_min_docs: u64,
    /// Where dead letters are also written, as documents (none: events only).
    pub dead_letter_index: Option<String>,
    /// The HTTP server for health, readiness, stats, metrics and the status page (none: off).
    pub http: Option<HttpConfig>,
    /// The lease that lets one instance per `name` write (see `crate::coordination`).
    pub lease: LeaseConfig,
    /// The partitioned mode: the instances of this `name` in a group split the collections
    /// (none: one instance syncs them all, the others stand by).
    pub instances: Option<InstancesConfig>,
    /// The search API's settings; with `http`, its routes are served (none: `search()` with the
    /// defaults, no routes).
    pub search: Option<SearchConfig>,
    /// Where stored definitions live; with `http`, the status page lists them (see `crate::defstore`).
    pub config_store: Option<StoreConfig>,
    /// Caps on documents and bytes per second (none: as fast as the outputs take them).
    pub rate_limit: Option<RateLimitConfig>,
}

impl Default for SyncConfig {
    /// The defaults of every option; `name`, `mongo.uri` and the collections must still be given.
    fn default() -> Self {
        SyncConfig {
            name: String::new(),
            mongo: MongoConfig::default(),
            postgres: None,
            elasticsearch: None,
            outputs: vec![OutputConfig::Elasticsearch],
            collections: Vec::new(),
            index_template: DEFAULT_INDEX_TEMPLATE.to_string(),
            discovery: None,
            checkpoint: CheckpointConfig::default(),
            batch: BatchConfig::default(),
            retry: RetryConfig::default(),
            on_drop: DropPolicy::default(),
            on_rename: RenamePolicy::default(),
            on_history_lost: HistoryLostPolicy::default(),
            mode: SyncMode::default(),
            copy_readers: 4,
            copy_range_min_docs: 100_000,
            dead_letter_index: None,
            http: None,
            lease: LeaseConfig::default(),
            instances: None,
            search: None,
            config_store: None,
            rate_limit: None,
        }
    }
}

/// Collections matched by regular expressions over `db.collection` (each anchored at both ends),
/// found at start and then every `interval`; a collection listed in `collections` keeps its own
/// settings, the others get `defaults`.
#[derive(Debug, Clone)]
pub struct Discovery {
    pub include: Vec<regex::Regex>,
    pub exclude: Vec<regex::Regex>,
    /// The settings of every found collection: `index` and `alias` are templates (`{db}`,
    /// `{coll}`), made concrete by [`CollectionConfig::for_namespace`].
    pub defaults: CollectionConfig,
    pub interval: Duration,
}

impl Default for Discovery {
    /// No patterns yet; found collections get default settings, indexed by the default template.
    fn default() -> Self {
        Discovery {
            include: Vec::new(),
            exclude: Vec::new(),
            defaults: CollectionConfig::template(DEFAULT_INDEX_TEMPLATE.to_string()),
            interval: Duration::from_secs(10),
        }
    }
}

impl Discovery {
    pub fn matches(&self, ns: &Namespace) -> bool {
        let name = ns.to_string();
        self.include.iter().any(|r| r.is_match(&name)) && !self.exclude.iter().any(|r| r.is_match(&name))
    }

    /// The settings of a found collection that `collections` does not list.
    pub fn collection(&self, ns: Namespace) -> CollectionConfig {
        self.defaults.for_namespace(ns)
    }
}

/// One output of the sync.
#[derive(Debug, Clone)]
pub enum OutputConfig {
    /// Applies the writes to Elasticsearch/OpenSearch (the `elasticsearch` connection).
    Elasticsearch,
    /// NDJSON change records into rotated files (for Filebeat and other shippers).
    File(crate::sink::file::FileConfig),
    /// NDJSON change records on standard output.
    Stdout,
    /// NDJSON change records over TCP (Logstash `json_lines`).
    Tcp(crate::sink::tcp::TcpConfig),
    /// Change records published to NATS JetStream.
    Nats(crate::sink::nats::NatsConfig),
}

/// What a sync does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// Copy each collection, then follow its change stream.
    #[default]
    CopyAndStream,
    /// Copy each collection, then stop: a one-shot reindex.
    Copy,
    /// Only follow change streams: from the saved position, else from `start_at`, else from now.
    Stream { start_at: Option<mongodb::bson::Timestamp> },
}

/// What happens when a saved stream position is no longer in the oplog (or is invalid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HistoryLostPolicy {
    /// Stop with `ERR_HISTORY_LOST`; nothing is written.
    #[default]
    Fail,
    /// Copy the collection again into `<index>-<n>` while the old index stays readable, then
    /// point the alias `<index>` at the new one and drop the old.
    Resync,
}

/// What a `drop` (or `dropDatabase`) of a synced collection does to its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DropPolicy {
    /// Keep the index (mappings, settings) and delete its documents: the index mirrors the empty collection.
    #[default]
    DeleteDocuments,
    DeleteIndex,
    /// Leave the index as it was.
    Ignore,
}

/// What a `rename` of a synced collection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RenamePolicy {
    /// Move the documents, versions kept, to the new name's index (`_reindex`, then delete them from the old one).
    #[default]
    Move,
    /// Copy the renamed collection afresh into the new name's index, then empty the old one.
    Recopy,
    /// Leave both indices as they are.
    Ignore,
}

#[derive(Debug, Clone)]
pub struct MongoConfig {
    pub uri: Secret,
    /// TLS settings beyond (and overriding) those in the URI.
    pub tls: Option<MongoTls>,
    /// A database with more followed collections than this is read through one change stream
    /// of the database (a server-side `$match` on its followed collections) instead of one
    /// stream per collection.
    pub database_stream_threshold: usize,
}

/// Followed collections of one database past which they share one database change stream.
pub const DEFAULT_DATABASE_STREAM_THRESHOLD: usize = 50;
/// Past this many, per-collection streams would need more connections than a server allows.
pub const MAX_DATABASE_STREAM_THRESHOLD: usize = 10_000;

impl Default for MongoConfig {
    fn default() -> Self {
        MongoConfig { uri: Secret::default(), tls: None, database_stream_threshold: DEFAULT_DATABASE_STREAM_THRESHOLD }
    }
}

/// A PostgreSQL source: tables copied, then followed through logical replication.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database?sslmode=…`.
    pub uri: Secret,
    /// The publication streamed from; none: one named `mes_<name>` is created (or extended)
    /// with the synced tables. A given one must exist.
    pub publication: Option<String>,
    /// Replication slots are named `<slot_prefix><table key>`, one per table.
    pub slot_prefix: String,
    /// The table holding checkpoints (`schema.table`), created when missing.
    pub checkpoint_table: String,
    /// TLS settings beyond the URI's `sslmode`.
    pub tls: PostgresTls,
    /// Follow changes by polling a timestamp column instead of logical replication.
    pub poll: Option<PollConfig>,
}

/// TLS to PostgreSQL.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PostgresTls {
    /// PEM CA certificate(s) to trust (only these): TLS is then required and the server's
    /// certificate must chain to one of them and name the host.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) and its private key, for servers that require one
    /// (`clientcert=verify-ca`/`verify-full` or `cert` authentication in `pg_hba.conf`).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// Polling mode: a table's changes are its rows whose `column` moved past the last one read.
#[derive(Debug, Clone, PartialEq)]
pub struct PollConfig {
    /// A `timestamptz` or `timestamp` column every insert and update sets (e.g. `updated_at`).
    pub column: String,
    /// The wait between polls when nothing is left to read.
    pub interval: Duration,
    /// Rows whose column is within this of now are read at the next poll (a transaction that
    /// wrote it and commits within this is not passed over).
    pub settle: Duration,
}

impl PollConfig {
    pub fn new(column: String) -> Self {
        PollConfig { column, interval: Duration::from_secs(1), settle: Duration::from_secs(1) }
    }
}

impl PostgresConfig {
    pub fn new(uri: Secret) -> Self {
        PostgresConfig {
            uri,
            publication: None,
            slot_prefix: "mes_".into(),
            checkpoint_table: "public.mongo_elastic_sync_checkpoints".into(),
            tls: PostgresTls::default(),
            poll: None,
        }
    }

    /// The publication's name for the sync `name`.
    pub fn publication_for(&self, name: &str) -> String {
        self.publication.clone().unwrap_or_else(|| format!("mes_{}", sql_identifier_part(name)))
    }
}

/// Largest file read for a secret or a key (a path to the wrong file is refused, not read whole).
pub const MAX_SECRET_FILE: u64 = 1 << 20;
/// Largest certificate file read (CA bundles included).
pub const MAX_CERTIFICATE_FILE: u64 = 8 << 20;

/// A file named by option `field`, read whole if it holds at most `max` bytes; `what` names what
/// it should hold in the error of a larger one (`/dev/zero` included: reading stops past `max`).
pub fn read_option_file(field: &str, path: &std::path::Path, max: u64, what: &str) -> SyncResult<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    let read = std::fs::File::open(path).and_then(|file| file.take(max + 1).read_to_end(&mut bytes));
    read.map_err(|e| SyncError::config(format!("{field}: cannot read \"{}\": {e}", path.display())))?;
    if bytes.len() as u64 > max {
        let limit = if max.is_multiple_of(1 << 20) { format!("{} MiB", max >> 20) } else { format!("{max} bytes") };
        return Err(SyncError::config(format!("{field}: \"{}\" is larger than {limit}, too large for {what}", path.display())));
    }
    Ok(bytes)
}

/// A text file named by option `field` (see [`read_option_file`]).
pub fn read_option_text(field: &str, path: &std::path::Path, max: u64, what: &str) -> SyncResult<String> {
    String::from_utf8(read_option_file(field, path, max, what)?).map_err(|_| SyncError::config(format!("{field}: \"{}\" is not UTF-8 text", path.display())))
}

/// A name as lowercase letters, digits and `_` (others become `_`), for generated identifiers.
pub fn sql_identifier_part(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect()
}

#[derive(Debug, Clone, Default)]
pub struct MongoTls {
    pub ca_file: Option<PathBuf>,
    /// PEM file holding the client certificate and its private key.
    pub cert_key_file: Option<PathBuf>,
    pub allow_invalid_certificates: bool,
}

#[derive(Debug, Clone)]
pub struct EsConfig {
    pub node: String,
    pub auth: EsAuth,
    pub request_timeout: Duration,
    /// gzip request bodies.
    pub compression: bool,
    pub tls: EsTls,
}

impl Default for EsConfig {
    /// The defaults of the connection options; `node` must still be given.
    fn default() -> Self {
        EsConfig { node: String::new(), auth: EsAuth::None, request_timeout: Duration::from_secs(30), compression: false, tls: EsTls::default() }
    }
}

#[derive(Debug, Clone)]
pub struct EsTls {
    /// PEM CA certificate(s) to trust (in addition to none: only these are trusted when given).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for servers that require mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// `false` turns off certificate verification (logged as a warning).
    pub reject_unauthorized: bool,
}

impl Default for EsTls {
    fn default() -> Self {
        EsTls { ca_file: None, cert_file: None, key_file: None, reject_unauthorized: true }
    }
}

#[derive(Debug, Clone, Default)]
pub enum EsAuth {
    #[default]
    None,
    Basic {
        username: String,
        password: Secret,
    },
    ApiKey(Secret),
    Bearer(Secret),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace {
    pub db: String,
    pub coll: String,
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.db, self.coll)
    }
}

impl Namespace {
    /// Parses `db.collection`; the collection part may itself contain dots.
    pub fn parse(text: &str) -> Result<Namespace, NamespaceError> {
        let (db, coll) = text.split_once('.').filter(|(db, coll)| !db.is_empty() && !coll.is_empty()).ok_or_else(|| NamespaceError::NotDotted(text.into()))?;
        if db.contains(['/', '\\', ' ', '"', '$', '\0']) {
            return Err(NamespaceError::Database(db.into()));
        }
        if coll.contains(['$', '\0']) || coll.starts_with("system.") {
            return Err(NamespaceError::Collection(coll.into()));
        }
        Ok(Namespace { db: db.to_string(), coll: coll.to_string() })
    }
}

/// Why a text is not a namespace that can be synced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamespaceError {
    #[error("\"{0}\" is not of the form \"database.collection\"")]
    NotDotted(String),
    #[error("\"{0}\" is not a valid MongoDB database name")]
    Database(String),
    #[error("\"{0}\" is not a collection that can be synced")]
    Collection(String),
}

#[derive(Debug, Clone)]
pub struct CollectionConfig {
    pub namespace: Namespace,
    pub index: String,
    /// Body for creating the index: `{ "settings": …, "mappings": … }` (none: dynamic mapping).
    pub index_body: Option<serde_json::Value>,
    /// Ingest pipeline every write goes through.
    pub pipeline: Option<String>,
    /// Dotted path of the field whose value routes documents to shards.
    pub routing: Option<String>,
    /// An alias added to the index.
    pub alias: Option<String>,
    /// How documents become JSON (Decimal128 as numbers, `_id` kept in the source…).
    pub convert: ConvertOptions,
    /// Fields kept, dropped and renamed.
    pub fields: FieldRules,
    /// Which change types are applied while streaming (the copy writes every document).
    pub operations: OperationFilter,
    /// A MongoDB query: only matching documents are synced, in the copy and the stream alike.
    pub filter: Option<mongodb::bson::Document>,
}

impl CollectionConfig {
    /// A collection synced with default settings into `index`.
    pub fn new(index: String, namespace: Namespace) -> Self {
        CollectionConfig {
            namespace,
            index,
            index_body: None,
            pipeline: None,
            routing: None,
            alias: None,
            convert: ConvertOptions::default(),
            fields: FieldRules::default(),
            operations: OperationFilter::default(),
            filter: None,
        }
    }

    /// Settings for collections not known yet: the namespace is `{db}.{coll}`, and `index`
    /// and `alias` are templates.
    pub fn template(index_template: String) -> Self {
        CollectionConfig::new(index_template, Namespace { db: "{db}".into(), coll: "{coll}".into() })
    }

    /// These settings, as a template, for the collection `ns`.
    pub fn for_namespace(&self, ns: Namespace) -> CollectionConfig {
        CollectionConfig {
            index: index_from_template(&self.index, &ns),
            alias: self.alias.as_ref().map(|a| index_from_template(a, &ns)),
            fields: self.fields.for_namespace(&ns),
            namespace: ns,
            ..self.clone()
        }
    }

    /// `routing` while streaming must lie within `_id`: a delete's change event names its
    /// document by the document key alone, so only there is a delete's routing known, and only
    /// there can the value never change (a changed value would leave the old copy on another
    /// shard). A copy alone (mode 'copy') writes whole documents only and routes by any field.
    pub fn check_routing(&self, at: &str, mode: SyncMode) -> SyncResult<()> {
        match &self.routing {
            Some(path) if path != "_id" && !path.starts_with("_id.") && mode != SyncMode::Copy => Err(config_field(
                &format!("{at}.routing"),
                format!(
                    "\"{path}\" is not a field of _id. While streaming, a delete's change event carries only the document's _id, so \
                     its routing would be unknown and the delete would miss the document on a multi-shard index; and a changed \
                     value would leave the old copy on its old shard. Route by a field of _id (e.g. \"_id.tenant\" with \
                     _id: {{ tenant, … }}), or sync with mode 'copy'"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Checks the names and the index body; `at` names the settings in errors.
    pub fn validate(&self, at: &str) -> SyncResult<()> {
        let field = |path: &str, msg: String| SyncError::config(format!("{at}.{path}: {msg}"));
        check_index_name(&self.index).map_err(|e| field("index", e.to_string()))?;
        if let Some(alias) = &self.alias {
            check_index_name(alias).map_err(|e| field("alias", e.to_string()))?;
        }
        for key in self.index_body.iter().flat_map(|b| b.as_object()).flat_map(|o| o.keys()) {
            if key != "settings" && key != "mappings" {
                return Err(field(key, "only settings and mappings can be given".into()));
            }
        }
        Ok(())
    }
}

/// Change types applied while streaming: e.g. no deletes for an archive index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperationFilter {
    pub insert: bool,
    pub update: bool,
    pub replace: bool,
    pub delete: bool,
}

impl Default for OperationFilter {
    fn default() -> Self {
        OperationFilter { insert: true, update: true, replace: true, delete: true }
    }
}

#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    pub database: String,
    pub collection: String,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig { database: "mongo_elastic_sync".into(), collection: "checkpoints".into() }
    }
}

/// The lease of a sync `name`: its holder syncs, other instances with the same name wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// How long a holder that stopped renewing keeps the lease: a standby takes over this long
    /// (as its own clock measures) after it last saw the lease renewed.
    pub duration: Duration,
}

impl LeaseConfig {
    pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
    pub const MIN_DURATION: Duration = Duration::from_secs(1);
    pub const MAX_DURATION: Duration = Duration::from_secs(600);

    /// The holder renews this often (a quarter of the duration).
    pub fn renew_every(&self) -> Duration {
        self.duration / 4
    }

    /// The holder stops writing this long before the lease could have been taken over: room
    /// for a write under way and for clocks that run at slightly different rates.
    pub fn safety_margin(&self) -> Duration {
        self.duration / 5
    }

    /// A standby looks at the lease this often.
    pub fn poll_every(&self) -> Duration {
        (self.duration / 10).min(Duration::from_secs(1))
    }
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig { duration: Self::DEFAULT_DURATION }
    }
}

/// The partitioned mode: the live instances of one `name` and `group` split the followed
/// collections (listed and found by `namespaces`), each owned by one instance through a lease of
/// its own (lasting `lease.duration`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstancesConfig {
    pub group: String,
    /// At most this many collections per instance; with too few instances the rest wait,
    /// unowned, for more to join. Default: no maximum.
    pub max_collections_per_instance: Option<usize>,
}

impl InstancesConfig {
    pub const MAX_GROUP_LEN: usize = 100;

    /// A group of `group`, with the defaults.
    pub fn new(group: impl Into<String>) -> Self {
        InstancesConfig { group: group.into(), max_collections_per_instance: None }
    }

    fn validate(&self, config: &SyncConfig) -> SyncResult<()> {
        let group = &self.group;
        if group.trim().is_empty() || group.chars().count() > Self::MAX_GROUP_LEN || group.chars().any(char::is_control) {
            return Err(config_field("instances.group", format!("must be a non-empty string of at most {} characters", Self::MAX_GROUP_LEN)));
        }
        if self.max_collections_per_instance == Some(0) {
            return Err(config_field("instances.maxCollectionsPerInstance", "must be at least 1".into()));
        }
        if config.postgres.is_some() {
            return Err(config_field("instances", "the partitioned mode coordinates through MongoDB: not available with a postgres source".into()));
        }
        if config.mode == SyncMode::Copy {
            return Err(config_field("instances", "not with mode: 'copy' (a one-shot copy runs in one instance)".into()));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct BatchConfig {
    pub max_docs: usize,
    /// Upper bound of one `_bulk` request body.
    pub max_bytes: usize,
    /// While streaming, how long a change may wait for its batch to fill.
    pub flush_interval: Duration,
    /// Bulk requests in flight at once per collection during the copy.
    pub concurrency: usize,
    /// How the Elasticsearch output sizes its `_bulk` requests within `max_docs`/`max_bytes`.
    pub adaptive: AdaptiveBatchConfig,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_docs: 1000,
            max_bytes: 8 * 1024 * 1024,
            flush_interval: Duration::from_millis(1000),
            concurrency: 2,
            adaptive: AdaptiveBatchConfig::default(),
        }
    }
}

/// Adaptive `_bulk` sizes (see `crate::sink::elasticsearch::adaptive`): requests start at
/// `batch.maxDocs`/`maxBytes`, shrink on back-pressure (429) or slow replies, and grow back
/// while replies are fast, never below the floor given here nor above the maxima.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdaptiveBatchConfig {
    /// Off: every request carries up to `batch.maxDocs`/`maxBytes`.
    pub enabled: bool,
    /// The fewest documents a request is shrunk to (at most `batch.maxDocs`).
    pub min_docs: usize,
    /// The fewest bytes a request is shrunk to (at most `batch.maxBytes`).
    pub min_bytes: usize,
    /// A request slower than this shrinks the next ones; one faster than half of it lets them grow.
    pub target_latency: Duration,
}

impl AdaptiveBatchConfig {
    pub const MIN_TARGET_LATENCY: Duration = Duration::from_millis(100);

    /// The defaults, with the floors lowered to maxima smaller than them.
    pub fn default_within(max_docs: usize, max_bytes: usize) -> Self {
        let d = AdaptiveBatchConfig::default();
        AdaptiveBatchConfig { min_docs: d.min_docs.min(max_docs), min_bytes: d.min_bytes.min(max_bytes), ..d }
    }
}

impl Default for AdaptiveBatchConfig {
    fn default() -> Self {
        AdaptiveBatchConfig { enabled: false, min_docs: 10, min_bytes: 64 * 1024, target_latency: Duration::from_secs(5) }
    }
}

/// `rateLimit`: caps on what one sync hands to its outputs per second, copy and stream alike
/// (see `crate::pipeline::throttle`); none: no cap.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    pub docs_per_second: Option<f64>,
    /// Counted as the size of the documents' `_bulk` lines.
    pub bytes_per_second: Option<f64>,
}

impl RateLimitConfig {
    pub fn validate(&self) -> SyncResult<()> {
        if self.docs_per_second.is_none() && self.bytes_per_second.is_none() {
            return Err(config_field("rateLimit", "give docsPerSecond, bytesPerSecond or both".into()));
        }
        let positive = |v: Option<f64>| v.is_none_or(|v| v.is_finite() && v > 0.0);
        if !positive(self.docs_per_second) {
            return Err(config_field("rateLimit.docsPerSecond", "must be a number above 0".into()));
        }
        if !positive(self.bytes_per_second) || self.bytes_per_second.is_some_and(|b| b < 1024.0) {
            return Err(config_field("rateLimit.bytesPerSecond", "must be at least 1024".into()));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct RetryConfig {
    /// `None` retries transient failures forever.
    pub max_attempts: Option<u32>,
    pub initial_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig { max_attempts: None, initial_delay: Duration::from_millis(200), max_delay: Duration::from_secs(30) }
    }
}

/// The optional HTTP server: `/healthz`, `/readyz`, `/stats`, `/metrics`, `/events` and the
/// status page at `/` (see `crate::monitor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// An IP address to listen on (`127.0.0.1`: this machine only), or `localhost`.
    pub host: String,
    /// The TCP port; 0 lets the system choose a free one.
    pub port: u16,
    /// When set, every endpoint but the page's static files requires `Authorization: Bearer <token>`.
    pub token: Option<Secret>,
    /// `/readyz` answers 503 when a streaming collection lags more than this, or a copying one
    /// has made no progress for this long.
    pub ready_max_lag: Duration,
    /// The public key (`age1…`) served at `GET /public_key` when the service has a private key
    /// (see `crate::secrets`), so that other tools can seal secrets for it.
    pub public_key: Option<String>,
}

impl HttpConfig {
    pub const DEFAULT_HOST: &'static str = "127.0.0.1";
    pub const DEFAULT_PORT: u16 = 9810;
    pub const DEFAULT_READY_MAX_LAG: Duration = Duration::from_secs(60);
    /// Shorter tokens are refused: they can be guessed.
    pub const MIN_TOKEN_LEN: usize = 16;

    /// Whether the address is reachable only from this machine.
    pub fn is_loopback(&self) -> bool {
        self.host == "localhost" || self.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    pub fn validate(&self) -> SyncResult<()> {
        let field = |path: &str, msg: String| SyncError::config(format!("http.{path}: {msg}"));
        if self.host != "localhost" && self.host.parse::<std::net::IpAddr>().is_err() {
            return Err(field("host", format!("\"{}\" is not an IP address (e.g. 127.0.0.1, 0.0.0.0, ::1) or localhost", self.host)));
        }
        if let Some(token) = &self.token {
            let token = token.expose();
            if token.chars().count() < Self::MIN_TOKEN_LEN || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(field("token", format!("must be at least {} characters, without spaces", Self::MIN_TOKEN_LEN)));
            }
        }
        if self.ready_max_lag < Duration::from_secs(1) {
            return Err(field("readyMaxLagMs", "must be at least 1000".into()));
        }
        Ok(())
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { host: Self::DEFAULT_HOST.into(), port: Self::DEFAULT_PORT, token: None, ready_max_lag: Self::DEFAULT_READY_MAX_LAG, public_key: None }
    }
}

/// The search API: cursors, page sizes, which indices, and the HTTP routes' bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchConfig {
    /// Key for signing cursors (shared by processes that accept each other's); a random key of
    /// the process when absent.
    pub cursor_secret: Option<Secret>,
    /// How long a cursor (and its point in time) stays valid after its page.
    pub cursor_ttl: Duration,
    pub default_page_size: u64,
    pub max_page_size: u64,
    /// The indices (or aliases) that may be searched; none: the sync's own.
    pub indices: Option<Vec<String>>,
    /// Per client (IP address): requests per second, and the burst allowed above it.
    pub rate_per_second: f64,
    pub rate_burst: u32,
    /// Largest `POST /search` body.
    pub max_body_bytes: usize,
}

impl SearchConfig {
    /// Shorter cursor secrets are refused: they can be guessed.
    pub const MIN_SECRET_LEN: usize = 32;

    pub fn validate(&self) -> SyncResult<()> {
        let field = |path: &str, msg: &str| Err(SyncError::config(format!("search.{path}: {msg}")));
        if self.cursor_secret.as_ref().is_some_and(|s| s.expose().chars().count() < Self::MIN_SECRET_LEN) {
            return field("cursorSecret", &format!("must be at least {} characters", Self::MIN_SECRET_LEN));
        }
        if self.cursor_ttl < Duration::from_secs(1) {
            return field("cursorTtlMs", "must be at least 1000");
        }
        if self.max_page_size == 0 || self.default_page_size == 0 || self.default_page_size > self.max_page_size {
            return field("defaultPageSize", "page sizes must be at least 1, and defaultPageSize at most maxPageSize");
        }
        if !(self.rate_per_second > 0.0 && self.rate_per_second.is_finite()) || self.rate_burst == 0 {
            return field("rateLimit", "perSecond must be above 0 and burst at least 1");
        }
        if self.max_body_bytes < 256 {
            return field("maxBodyBytes", "must be at least 256");
        }
        Ok(())
    }
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            cursor_secret: None,
            cursor_ttl: Duration::from_secs(300),
            default_page_size: 20,
            max_page_size: 1000,
            indices: None,
            rate_per_second: 20.0,
            rate_burst: 40,
            max_body_bytes: 64 * 1024,
        }
    }
}

/// Where stored definitions live: a MongoDB collection or an Elasticsearch index.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    Mongo(MongoStoreConfig),
    Elasticsearch(EsStoreConfig),
}

impl StoreConfig {
    /// A MongoDB store at `uri` with the default database and collection.
    pub fn new(uri: Secret) -> Self {
        StoreConfig::Mongo(MongoStoreConfig::new(uri))
    }

    pub fn validate(&self) -> SyncResult<()> {
        match self {
            StoreConfig::Mongo(mongo) => mongo.validate(),
            StoreConfig::Elasticsearch(es) => es.validate(),
        }
    }
}

/// A MongoDB collection, with `<collection>_history` and `<collection>_instances` beside it.
#[derive(Debug, Clone)]
pub struct MongoStoreConfig {
    pub uri: Secret,
    pub database: String,
    pub collection: String,
}

impl MongoStoreConfig {
    pub const DEFAULT_DATABASE: &'static str = "mongo_elastic_sync";
    pub const DEFAULT_COLLECTION: &'static str = "sync_definitions";

    /// The defaults, with `uri`.
    pub fn new(uri: Secret) -> Self {
        MongoStoreConfig { uri, database: Self::DEFAULT_DATABASE.into(), collection: Self::DEFAULT_COLLECTION.into() }
    }

    pub fn validate(&self) -> SyncResult<()> {
        let uri = self.uri.expose();
        if !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://")) {
            return Err(config_field("configStore.uri", format!("\"{}\" must start with mongodb:// or mongodb+srv://", redact_uri(uri))));
        }
        for (field, name) in [("database", &self.database), ("collection", &self.collection)] {
            if name.is_empty() || name.contains(['$', '\0', '/', ' ']) || (field == "database" && name.contains('.')) {
                return Err(config_field(&format!("configStore.{field}"), format!("\"{name}\" is not a valid MongoDB {field} name")));
            }
        }
        Ok(())
    }
}

/// An Elasticsearch index, with `<index>-history` and `<index>-instances` beside it.
#[derive(Debug, Clone)]
pub struct EsStoreConfig {
    pub es: EsConfig,
    pub index: String,
}

impl EsStoreConfig {
    pub const DEFAULT_INDEX: &'static str = "mongo-elastic-sync-definitions";
    /// The suffixes of the sibling indices (history, registrations).
    pub const SIBLINGS: [&'static str; 2] = ["-history", "-instances"];

    pub fn validate(&self) -> SyncResult<()> {
        if !(self.es.node.starts_with("http://") || self.es.node.starts_with("https://")) {
            return Err(config_field("configStore.elasticsearch.node", "must start with http:// or https://".into()));
        }
        for suffix in std::iter::once("").chain(Self::SIBLINGS) {
            check_index_name(&format!("{}{suffix}", self.index)).map_err(|e| config_field("configStore.index", e.to_string()))?;
        }
        Ok(())
    }
}

/// A string that never shows in logs, events or errors.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A URL (or a comma-separated list of them) as it may appear in messages: every URL keeps its
/// host and loses its password (`user:***@`), a NATS token (`***@`), and the values of options
/// that carry secrets (`…Password=`, `…token=`, `authMechanismProperties=`). The user info ends
/// at the last `@`, as MongoDB's driver reads it, so a password with `/`, `?`, `@` or `,` in it
/// is hidden whole; a URL with `@` in its path or options loses more than its credentials
/// rather than risk showing them.
pub fn redact_uri(uri: &str) -> String {
    split_urls(uri).into_iter().map(redact_one_uri).collect::<Vec<_>>().join(",")
}

/// A comma list split where a new URL (`scheme://`) starts; MongoDB's host lists, and a comma in
/// a password, stay in one piece. Without any scheme (a NATS list of `host:port`s), at every comma.
fn split_urls(list: &str) -> Vec<&str> {
    if !list.contains("://") {
        return list.split(',').collect();
    }
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, _) in list.match_indices(',') {
        let next = list[i + 1..].trim_start();
        let scheme = next.split("://").next().filter(|s| next.contains("://") && !s.is_empty());
        if scheme.is_some_and(|s| s.chars().all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))) {
            parts.push(&list[start..i]);
            start = i + 1;
        }
    }
    parts.push(&list[start..]);
    parts
}

fn redact_one_uri(uri: &str) -> String {
    let (scheme, rest) = match uri.find("://") {
        Some(i) => uri.split_at(i + 3),
        None => ("", uri),
    };
    let mut out = scheme.to_string();
    let after_user = match rest.rfind('@') {
        Some(at) => {
            let user_info = &rest[..at];
            match user_info.split_once(':') {
                Some((user, _)) => out.push_str(&format!("{user}:***")),
                // A user name alone: an identity to MongoDB, a token to NATS and the others.
                None if scheme.trim_start().starts_with("mongodb") => out.push_str(user_info),
                None => out.push_str("***"),
            }
            &rest[at..]
        }
        None => rest,
    };
    match after_user.split_once('?') {
        Some((before, options)) => format!("{out}{before}?{}", redact_options(options)),
        None => out + after_user,
    }
}

/// URL options (`a=1&b=2`, or `;`-separated) with the values of secret ones hidden.
fn redact_options(options: &str) -> String {
    let secret = |key: &str| {
        let key = key.to_ascii_lowercase();
        ["password", "token", "secret", "apikey", "api_key", "authmechanismproperties"].iter().any(|s| key.contains(s))
    };
    let mut out = String::with_capacity(options.len());
    let mut rest = options;
    loop {
        let (part, tail) = rest.split_at(rest.find(['&', ';']).unwrap_or(rest.len()));
        match part.split_once('=') {
            Some((key, _)) if secret(key) => out.push_str(&format!("{key}=***")),
            _ => out.push_str(part),
        }
        let Some(separator) = tail.chars().next() else { return out };
        out.push(separator);
        rest = &tail[1..];
    }
}

/// Elasticsearch's rules for index names.
pub fn check_index_name(name: &str) -> Result<(), IndexNameError> {
    if name.is_empty() {
        return Err(IndexNameError::Empty);
    }
    if name.len() > 255 {
        return Err(IndexNameError::TooLong(name.into()));
    }
    if name == "." || name == ".." || name.starts_with(['-', '_', '+']) {
        return Err(IndexNameError::Reserved(name.into()));
    }
    if let Some(bad) = name.chars().find(|c| c.is_uppercase() || "\\/*?\"<>| ,#:".contains(*c)) {
        return Err(IndexNameError::Character { name: name.into(), bad });
    }
    Ok(())
}

/// Why a name is not an Elasticsearch index name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexNameError {
    #[error("index name is empty")]
    Empty,
    #[error("index name \"{0}\" is longer than 255 bytes")]
    TooLong(String),
    #[error("index name \"{0}\" may not be \".\", \"..\" or start with '-', '_' or '+'")]
    Reserved(String),
    #[error("index name \"{name}\" contains '{bad}' (lowercase letters, digits, '-', '_', '.' and '+' are allowed)")]
    Character { name: String, bad: char },
}

impl SyncConfig {
    /// The settings of `ns` (which may not run yet, e.g. a rename's target): its own when
    /// listed, from `namespaces.defaults` when the patterns match it, else none.
    pub fn collection_for(&self, ns: &Namespace) -> Option<CollectionConfig> {
        match (self.collections.iter().find(|c| &c.namespace == ns), &self.discovery) {
            (Some(c), _) => Some(c.clone()),
            (None, Some(d)) if d.matches(ns) => Some(d.collection(ns.clone())),
            _ => None,
        }
    }

    /// The index of `ns`: from its settings, else from `index_template`.
    pub fn index_for(&self, ns: &Namespace) -> String {
        self.collection_for(ns).map_or_else(|| index_from_template(&self.index_template, ns), |c| c.index)
    }

    pub fn validate(&self) -> SyncResult<()> {
        if self.name.trim().is_empty() {
            return Err(config_field("name", "must be a non-empty string".into()));
        }
        match &self.postgres {
            Some(pg) => pg.validate(self)?,
            None => {
                let uri = self.mongo.uri.expose();
                if !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://")) {
                    return Err(config_field("mongo.uri", format!("\"{}\" must start with mongodb:// or mongodb+srv://", redact_uri(uri))));
                }
            }
        }
        self.validate_outputs()?;
        self.validate_collections()?;
        if let Some(instances) = &self.instances {
            instances.validate(self)?;
        }
        if self.checkpoint.database.is_empty() || self.checkpoint.collection.is_empty() {
            return Err(config_field("checkpoint", "database and collection must be non-empty".into()));
        }
        self.validate_limits()?;
        if let Some(http) = &self.http {
            http.validate()?;
        }
        if let Some(search) = &self.search {
            if self.elasticsearch.is_none() {
                return Err(config_field("search", "needs the elasticsearch option (the server it searches)".into()));
            }
            search.validate()?;
        }
        Ok(())
    }

    fn validate_outputs(&self) -> SyncResult<()> {
        if self.outputs.is_empty() {
            return Err(config_field("outputs", "must list at least one output".into()));
        }
        for (i, output) in self.outputs.iter().enumerate() {
            let at = format!("outputs[{i}]");
            match output {
                OutputConfig::Elasticsearch if self.elasticsearch.is_none() => {
                    return Err(config_field("elasticsearch", format!("the connection options are required by {at} (type 'elasticsearch')")));
                }
                OutputConfig::Elasticsearch => {}
                OutputConfig::File(c) => c.validate(&at)?,
                OutputConfig::Stdout => {}
                OutputConfig::Tcp(c) => c.validate(&at)?,
                OutputConfig::Nats(c) => c.validate(&at)?,
            }
            let same_kind = |o: &OutputConfig| std::mem::discriminant(o) == std::mem::discriminant(output);
            let duplicate = match output {
                OutputConfig::File(c) => self.outputs[..i].iter().any(|o| matches!(o, OutputConfig::File(d) if d.path == c.path)),
                OutputConfig::Elasticsearch | OutputConfig::Stdout => self.outputs[..i].iter().any(same_kind),
                _ => false,
            };
            if duplicate {
                return Err(config_field(&at, "repeats an earlier output".into()));
            }
        }
        if let Some(es) = &self.elasticsearch {
            match url::Url::parse(&es.node) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => return Err(config_field("elasticsearch.node", format!("\"{}\" is not an http(s) URL", redact_uri(&es.node)))),
            }
        }
        Ok(())
    }

    fn validate_collections(&self) -> SyncResult<()> {
        if self.collections.is_empty() && self.discovery.is_none() {
            return Err(config_field("collections", "must list at least one \"database.collection\" (or give namespaces.include)".into()));
        }
        if let Some(d) = &self.discovery {
            if d.include.is_empty() {
                return Err(config_field("namespaces.include", "must list at least one pattern".into()));
            }
            if d.interval < Duration::from_millis(100) {
                return Err(config_field("namespaces.discoveryIntervalMs", "must be at least 100".into()));
            }
            // The templates, filled with a plain namespace, must give valid names.
            let defaults = d.collection(Namespace { db: "db".into(), coll: "coll".into() });
            defaults.validate("namespaces.defaults")?;
            defaults.check_routing("namespaces.defaults", self.mode)?;
        }
        for (i, c) in self.collections.iter().enumerate() {
            let at = format!("collections[{i}]");
            c.validate(&at)?;
            c.check_routing(&at, self.mode)?;
            if let Some(j) = self.collections[..i].iter().position(|o| o.namespace == c.namespace) {
                return Err(config_field(&at, format!("\"{}\" is listed twice (also at collections[{j}])", c.namespace)));
            }
        }
        if let Some(dlq) = &self.dead_letter_index {
            check_index_name(dlq).map_err(|e| config_field("deadLetterIndex", e.to_string()))?;
            if self.collections.iter().any(|c| &c.index == dlq) {
                return Err(config_field("deadLetterIndex", format!("\"{dlq}\" is also the index of a synced collection")));
            }
        }
        Ok(())
    }

    fn validate_limits(&self) -> SyncResult<()> {
        if self.batch.max_docs == 0 {
            return Err(config_field("batch.maxDocs", "must be at least 1".into()));
        }
        if self.copy_range_min_docs == 0 {
            return Err(config_field("copyRangeMinDocs", "must be at least 1".into()));
        }
        if self.mongo.database_stream_threshold > MAX_DATABASE_STREAM_THRESHOLD {
            return Err(config_field("mongo.databaseStreamThreshold", format!("must be from 0 to {MAX_DATABASE_STREAM_THRESHOLD}")));
        }
        if self.copy_readers == 0 || self.copy_readers > 64 {
            return Err(config_field("copyReaders", "must be from 1 to 64".into()));
        }
        if self.batch.concurrency == 0 || self.batch.concurrency > 64 {
            return Err(config_field("batch.concurrency", "must be from 1 to 64".into()));
        }
        if self.batch.max_bytes < 1024 {
            return Err(config_field("batch.maxBytes", "must be at least 1024".into()));
        }
        self.validate_adaptive()?;
        if let Some(rate) = &self.rate_limit {
            rate.validate()?;
        }
        if self.retry.initial_delay > self.retry.max_delay {
            return Err(config_field("retry.initialDelayMs", "must not exceed retry.maxDelayMs".into()));
        }
        if !(LeaseConfig::MIN_DURATION..=LeaseConfig::MAX_DURATION).contains(&self.lease.duration) {
            return Err(config_field(
                "lease.durationMs",
                format!("must be from {} to {}", LeaseConfig::MIN_DURATION.as_millis(), LeaseConfig::MAX_DURATION.as_millis()),
            ));
        }
        Ok(())
    }
}

impl SyncConfig {
    /// The floors must be usable; above the maxima, they are capped at them (a test's or a
    /// default's floor next to a small `maxDocs`; the options refuse such floors when given).
    fn validate_adaptive(&self) -> SyncResult<()> {
        let adaptive = &self.batch.adaptive;
        if adaptive.min_docs == 0 {
            return Err(config_field("batch.adaptive.minDocs", "must be at least 1".into()));
        }
        if adaptive.min_bytes < 1024 {
            return Err(config_field("batch.adaptive.minBytes", "must be at least 1024".into()));
        }
        if adaptive.target_latency < AdaptiveBatchConfig::MIN_TARGET_LATENCY {
            return Err(config_field("batch.adaptive.targetLatencyMs", format!("must be at least {}", AdaptiveBatchConfig::MIN_TARGET_LATENCY.as_millis())));
        }
        Ok(())
    }
}

/// An `ERR_CONFIG` naming the option at `path`.
fn config_field(path: &str, message: String) -> SyncError {
    SyncError::config(format!("{path}: {message}"))
}

pub const DEFAULT_INDEX_TEMPLATE: &str = "{coll}";

/// Fills `{db}` and `{coll}` in an index name template, lowercased.
pub fn index_from_template(template: &str, ns: &Namespace) -> String {
    template.replace("{db}", &ns.db).replace("{coll}", &ns.coll).to_lowercase()
}

impl PostgresConfig {
    /// What a PostgreSQL source cannot do (yet): `namespaces` patterns and MongoDB filters.
    fn validate(&self, config: &SyncConfig) -> SyncResult<()> {
        let field = |path: &str, msg: String| SyncError::config(format!("{path}: {msg}"));
        let uri = self.uri.expose();
        if !(uri.starts_with("postgres://") || uri.starts_with("postgresql://")) {
            return Err(field("postgres.uri", format!("\"{}\" must start with postgres:// or postgresql://", redact_uri(uri))));
        }
        if config.discovery.is_some() {
            return Err(field("namespaces", "not supported with a postgres source: list the tables in tables".into()));
        }
        if let Some(c) = config.collections.iter().find(|c| c.filter.is_some()) {
            return Err(field("tables", format!("{}: filter is not supported for PostgreSQL tables (use a transform returning null)", c.namespace)));
        }
        let plain = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !plain(&self.slot_prefix) || self.slot_prefix.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(field("postgres.slotPrefix", "must be lowercase letters, digits and '_'".into()));
        }
        if self.publication.as_deref().is_some_and(|p| !plain(p)) {
            return Err(field("postgres.publication", "must be letters, digits and '_'".into()));
        }
        if Namespace::parse(&self.checkpoint_table).is_err() {
            return Err(field("postgres.checkpointTable", format!("\"{}\" is not \"schema.table\"", self.checkpoint_table)));
        }
        if let Some(poll) = &self.poll {
            if poll.column.is_empty() {
                return Err(field("postgres.poll.column", "must name a timestamp column".into()));
            }
            if poll.interval.is_zero() {
                return Err(field("postgres.poll.intervalMs", "must be at least 1".into()));
            }
            if self.publication.is_some() {
                return Err(field("postgres.publication", "not used with postgres.poll (polling needs no publication)".into()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_parse_with_dotted_collection_names() {
        let ns = Namespace::parse("shop.orders.archive").unwrap();
        assert_eq!((ns.db.as_str(), ns.coll.as_str()), ("shop", "orders.archive"));
        assert!(Namespace::parse("orders").unwrap_err().to_string().contains("database.collection"));
        assert!(Namespace::parse(".orders").is_err());
        assert!(Namespace::parse("shop.system.users").is_err());
    }

    #[test]
    fn index_names_follow_elasticsearch_rules() {
        assert!(check_index_name("users-v1").is_ok());
        assert!(check_index_name("Users").unwrap_err().to_string().contains("'U'"));
        assert!(check_index_name("_x").is_err());
        assert!(check_index_name("a b").is_err());
        assert!(check_index_name("").is_err());
    }

    #[test]
    fn index_templates_fill_database_and_collection() {
        let ns = Namespace::parse("Shop.Orders").unwrap();
        assert_eq!(index_from_template("{db}-{coll}-v1", &ns), "shop-orders-v1");
        assert_eq!(index_from_template(DEFAULT_INDEX_TEMPLATE, &ns), "orders");
    }

    #[test]
    fn settings_templates_become_one_collection_s_settings() {
        use crate::transform::AddedValue;
        let mut defaults = CollectionConfig::template("logs-{db}-{coll}".into());
        defaults.alias = Some("all-{db}".into());
        defaults.pipeline = Some("enrich".into());
        defaults.fields.add = vec![
            ("src".into(), AddedValue::Namespace),
            ("db".into(), AddedValue::Database),
            ("c".into(), AddedValue::Collection),
            ("at".into(), AddedValue::SyncedAt),
        ];
        let c = defaults.for_namespace(Namespace::parse("App.Events").unwrap());
        assert_eq!((c.namespace.to_string().as_str(), c.index.as_str(), c.alias.as_deref()), ("App.Events", "logs-app-events", Some("all-app")));
        assert_eq!(c.pipeline.as_deref(), Some("enrich"));
        let constant = |v: &str| AddedValue::Constant(serde_json::Value::String(v.into()));
        assert_eq!(
            c.fields.add,
            vec![("src".into(), constant("App.Events")), ("db".into(), constant("App")), ("c".into(), constant("Events")), ("at".into(), AddedValue::SyncedAt)]
        );
    }

    /// Every URL form the MongoDB, Elasticsearch and NATS clients accept, with its credentials
    /// (the secret, which must not survive) and how it prints.
    const REDACTIONS: &[(&str, &str, &str)] = &[
        ("mongodb://bob:s3cret@h:1/db?x=1", "s3cret", "mongodb://bob:***@h:1/db?x=1"),
        ("mongodb://h:1/?replicaSet=rs", "", "mongodb://h:1/?replicaSet=rs"),
        ("https://u:p4ss@es:9200", "p4ss", "https://u:***@es:9200"),
        // The MongoDB driver ends the user info at the last `@` before the options.
        ("mongodb://app:pa/ss@host", "pa/ss", "mongodb://app:***@host"),
        ("mongodb://app:pa/ss@host/db?tls=true", "pa/ss", "mongodb://app:***@host/db?tls=true"),
        ("mongodb://app:p@ss@host/db", "p@ss", "mongodb://app:***@host/db"),
        ("mongodb://app:p:a:ss@host", "p:a:ss", "mongodb://app:***@host"),
        ("mongodb://app:pa?ss@host", "pa?ss", "mongodb://app:***@host"),
        ("mongodb://app:pa,ss@h1,h2/?replicaSet=rs0", "pa,ss", "mongodb://app:***@h1,h2/?replicaSet=rs0"),
        ("mongodb://:only-a-password@host", "only-a-password", "mongodb://:***@host"),
        ("mongodb+srv://app:srvpw@cluster0.example.net/?retryWrites=true", "srvpw", "mongodb+srv://app:***@cluster0.example.net/?retryWrites=true"),
        ("mongodb://u:pw1@h1:27017,h2:27018,[::1]:27019/?replicaSet=rs0", "pw1", "mongodb://u:***@h1:27017,h2:27018,[::1]:27019/?replicaSet=rs0"),
        ("mongodb://u:v6pw@[fe80::1%25eth0]:27017/", "v6pw", "mongodb://u:***@[fe80::1%25eth0]:27017/"),
        ("mongodb://u:p%40ss%3A@host", "p%40ss%3A", "mongodb://u:***@host"),
        // A user name alone is not secret to MongoDB (X.509, Kerberos)…
        ("mongodb://CN=client,OU=ops@host/?authMechanism=MONGODB-X509", "", "mongodb://CN=client,OU=ops@host/?authMechanism=MONGODB-X509"),
        // …but options can carry secrets.
        (
            "mongodb://AKID:awssecret@h/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:sesstok",
            "sesstok",
            "mongodb://AKID:***@h/?authMechanism=MONGODB-AWS&authMechanismProperties=***",
        ),
        ("mongodb://h/?tls=true&tlsCertificateKeyFilePassword=keypw", "keypw", "mongodb://h/?tls=true&tlsCertificateKeyFilePassword=***"),
        ("mongodb://h/?tls=true;tlsCertificateKeyFilePassword=keypw2", "keypw2", "mongodb://h/?tls=true;tlsCertificateKeyFilePassword=***"),
        // To NATS a lone user part is a token.
        ("nats://S3CRETTOKEN@127.0.0.1:4222", "S3CRETTOKEN", "nats://***@127.0.0.1:4222"),
        ("S3CRETTOKEN@127.0.0.1:4222", "S3CRETTOKEN", "***@127.0.0.1:4222"),
        ("nats://127.0.0.1:4222", "", "nats://127.0.0.1:4222"),
        ("tls://u:tlspw@h:4222", "tlspw", "tls://u:***@h:4222"),
        ("wss://tok3n@h/ws", "tok3n", "wss://***@h/ws"),
        // Comma lists: each URL keeps its host and loses its credentials.
        ("nats://u:first@h1:4222,nats://second@h2:4222", "first", "nats://u:***@h1:4222,nats://***@h2:4222"),
        ("nats://u:first@h1:4222,nats://second@h2:4222", "second", "nats://u:***@h1:4222,nats://***@h2:4222"),
        ("nats://h1:4222, nats://u:spaced@h2:4222", "spaced", "nats://h1:4222, nats://u:***@h2:4222"),
        ("h1:4222,tok2@h2:4222", "tok2", "h1:4222,***@h2:4222"),
        // IPv6 hosts.
        ("http://[::1]:9200", "", "http://[::1]:9200"),
        ("http://u:v6@[::1]:9200/prefix", "v6", "http://u:***@[::1]:9200/prefix"),
        ("not a url", "", "not a url"),
    ];

    #[test]
    fn every_url_form_prints_without_its_credentials() {
        for (uri, secret, printed) in REDACTIONS {
            let redacted = redact_uri(uri);
            assert_eq!(&redacted, printed, "{uri}");
            assert!(secret.is_empty() || !redacted.contains(secret), "{uri}: {secret} survived in {redacted}");
        }
    }

    #[test]
    fn routing_while_streaming_lies_within_id() {
        let with_routing = |mode: SyncMode, routing: &str| {
            let mut c = crate::testkit::config(&["db.c"]);
            c.mode = mode;
            c.collections[0].routing = Some(routing.into());
            c.validate()
        };
        for mode in [SyncMode::CopyAndStream, SyncMode::Stream { start_at: None }] {
            let err = with_routing(mode, "tenant").unwrap_err();
            assert_eq!(err.code, crate::error::ErrorCode::Config);
            assert!(err.message.starts_with("collections[0].routing: \"tenant\" is not a field of _id"), "{err}");
            assert!(err.message.contains("multi-shard") && err.message.contains("_id.tenant"), "says why and what to do: {err}");
            assert!(with_routing(mode, "_id.tenant").is_ok());
            assert!(with_routing(mode, "_id").is_ok());
            assert!(with_routing(mode, "_idx").is_err(), "a field that only starts like _id");
        }
        assert!(with_routing(SyncMode::Copy, "tenant.id").is_ok(), "a copy alone writes whole documents only");
        let mut c = crate::testkit::config(&["db.c"]);
        let mut discovery = Discovery { include: vec![regex::Regex::new("^db\\..*$").unwrap()], ..Default::default() };
        discovery.defaults.routing = Some("tenant".into());
        c.discovery = Some(discovery);
        assert!(c.validate().unwrap_err().message.starts_with("namespaces.defaults.routing:"));
    }

    #[test]
    fn http_options_are_checked() {
        assert!(HttpConfig::default().validate().is_ok());
        assert!(HttpConfig::default().is_loopback());
        let with = |f: fn(&mut HttpConfig)| {
            let mut c = HttpConfig::default();
            f(&mut c);
            c
        };
        assert!(with(|c| c.host = "0.0.0.0".into()).validate().is_ok());
        assert!(!with(|c| c.host = "0.0.0.0".into()).is_loopback());
        assert!(with(|c| c.host = "::1".into()).is_loopback());
        let err = with(|c| c.host = "example.org".into()).validate().unwrap_err();
        assert!(err.message.starts_with("http.host: \"example.org\""), "{err}");
        let err = with(|c| c.token = Some(Secret::new("short"))).validate().unwrap_err();
        assert!(err.message.starts_with("http.token:") && !err.message.contains("short"), "{err}");
        assert!(with(|c| c.token = Some(Secret::new("0123456789abcdef"))).validate().is_ok());
        let err = with(|c| c.ready_max_lag = Duration::from_millis(10)).validate().unwrap_err();
        assert!(err.message.starts_with("http.readyMaxLagMs:"), "{err}");
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
