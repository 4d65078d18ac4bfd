//! The Elasticsearch client: connection check, index creation and versioned bulk writes
//! with whole-request and per-item retries.

use async_trait::async_trait;
use elasticsearch::auth::ClientCertificate;
use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::headers::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;

use super::encoder::encode_all;
use super::response::{parse_bulk_response, ItemOutcome};
use super::retry::is_retryable_status;
use crate::config::{redact_uri, CollectionConfig, EsAuth, EsConfig, EsTls, Secret};
use crate::error::{cause_chain, ErrorCode, SyncError, SyncResult};
use crate::event::{EventBus, SyncEvent};
use crate::sink::{IndexAction, IndexChange, Sink, SinkContext, Target, WriteReport};
use crate::transform::{coalesce, dead_letter_document, DocumentWrite, Operation, Rejected, WriteOp};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// "elasticsearch" or "opensearch".
    pub flavour: String,
    pub version: String,
}

#[derive(Clone)]
pub struct EsSink {
    client: Elasticsearch,
    node: String,
    ctx: SinkContext,
}

/// A reply read whole: status and body.
struct Reply {
    status: u16,
    body: Vec<u8>,
}

impl EsSink {
    pub fn new(config: &EsConfig, ctx: SinkContext) -> SyncResult<Self> {
        let mut url = url::Url::parse(&config.node).map_err(|e| SyncError::config(format!("elasticsearch.node: {e}")))?;
        // Credentials in the URL become basic auth, so the URL itself (which shows up in
        // transport errors) never carries them.
        let mut auth = config.auth.clone();
        if !url.username().is_empty() && matches!(auth, EsAuth::None) {
            auth = EsAuth::Basic { username: url.username().to_string(), password: Secret::new(url.password().unwrap_or("")) };
        }
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url.clone()))
            .disable_proxy()
            .enable_meta_header(false)
            .request_body_compression(config.compression)
            .timeout(config.request_timeout);
        // Auth goes in a header of its own, so that it combines with a client certificate
        // (which takes the client's one credentials slot).
        let authorization = match &auth {
            EsAuth::None => None,
            EsAuth::Basic { username, password } => {
                use base64::Engine;
                let pair = format!("{username}:{}", password.expose());
                Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair)))
            }
            EsAuth::ApiKey(key) => Some(format!("ApiKey {}", key.expose())),
            EsAuth::Bearer(token) => Some(format!("Bearer {}", token.expose())),
        };
        if let Some(value) = authorization {
            let mut value =
                HeaderValue::from_str(&value).map_err(|_| SyncError::config("elasticsearch: credentials contain characters not allowed in an HTTP header"))?;
            value.set_sensitive(true);
            builder = builder.header(AUTHORIZATION, value);
        }
        builder = apply_tls(builder, &config.tls, &ctx.events)?;
        let transport = builder.build().map_err(|e| SyncError::caused_by(ErrorCode::Config, "cannot build the Elasticsearch client", &e))?;
        Ok(EsSink { client: Elasticsearch::new(transport), node: url.to_string(), ctx })
    }

    async fn request(&self, method: Method, path: &str, body: Option<Vec<u8>>, ndjson: bool) -> Result<Reply, String> {
        let mut headers = HeaderMap::new();
        if ndjson {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
        }
        let response = self.client.send(method, path, headers, None::<&()>, body, None).await.map_err(|e| cause_chain(&e))?;
        let status = response.status_code().as_u16();
        let body = response.bytes().await.map_err(|e| cause_chain(&e))?.to_vec();
        Ok(Reply { status, body })
    }

    /// Asks the server who it is; fails fast (no retries) so that `start()` reports a wrong URL at once.
    pub async fn server_info(&self) -> SyncResult<ServerInfo> {
        let unreachable = |msg: String| SyncError::new(ErrorCode::EsUnreachable, format!("cannot reach Elasticsearch at {}: {msg}", redact_uri(&self.node)));
        let reply = self.request(Method::Get, "/", None, false).await.map_err(unreachable)?;
        if reply.status == 401 || reply.status == 403 {
            return Err(unreachable(format!("authentication refused (HTTP {})", reply.status)));
        }
        if reply.status != 200 {
            return Err(unreachable(format!("HTTP {}: {}", reply.status, snippet(&reply.body))));
        }
        let info: serde_json::Value = serde_json::from_slice(&reply.body).map_err(|e| unreachable(format!("the reply to GET / is not JSON ({e})")))?;
        let version = &info["version"];
        Ok(ServerInfo {
            flavour: version["distribution"].as_str().unwrap_or("elasticsearch").to_string(),
            version: version["number"].as_str().unwrap_or("unknown").to_string(),
        })
    }

    /// Creates the index with dynamic mapping unless it exists.
    pub async fn ensure_index(&self, index: &str) -> SyncResult<()> {
        self.ensure_index_with(index, b"{}").await.map(|_| ())
    }

    /// Prepares a collection's index: created with its settings and mappings unless it exists;
    /// an existing one must agree with the configured mappings; the alias is added.
    pub async fn ensure_collection_index(&self, index: &str, config: &CollectionConfig) -> SyncResult<()> {
        let body = config.index_body.as_ref().map_or_else(|| b"{}".to_vec(), |b| serde_json::to_vec(b).expect("serialising JSON"));
        let existed = self.ensure_index_with(index, &body).await?;
        if let (true, Some(wanted)) = (existed, config.index_body.as_ref().and_then(|b| b.get("mappings"))) {
            let path = format!("/{index}/_mapping");
            let reply = self.with_retries("read mappings", || self.request(Method::Get, &path, None, false)).await?;
            expect_success(&reply, &format!("read the mappings of \"{index}\""), &[])?;
            let existing: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
            // The reply is keyed by the concrete index name, which differs when `index` is an alias.
            let existing = existing.as_object().and_then(|o| o.values().next()).and_then(|v| v.get("mappings")).cloned().unwrap_or_default();
            if let Some(conflict) = mapping_conflict(wanted, &existing, "") {
                return Err(SyncError::new(
                    ErrorCode::Config,
                    format!("mappings of {}: the existing index \"{index}\" {conflict}; use another index or reindex it", config.namespace),
                ));
            }
        }
        if let Some(alias) = &config.alias {
            let body = serde_json::to_vec(&serde_json::json!({ "actions": [{ "add": { "index": index, "alias": alias } }] })).expect("serialising JSON");
            let reply = self.with_retries("add alias", || self.request(Method::Post, "/_aliases", Some(body.clone()), false)).await?;
            expect_success(&reply, &format!("add alias \"{alias}\" to \"{index}\""), &[])?;
        }
        Ok(())
    }

    /// Creates the index with the given settings/mappings body unless it exists; tells whether it existed.
    async fn ensure_index_with(&self, index: &str, body: &[u8]) -> SyncResult<bool> {
        let path = format!("/{index}");
        let reply = self.with_retries("check index", || self.request(Method::Head, &path, None, false)).await?;
        if reply.status == 200 {
            return Ok(true);
        }
        let reply = self.with_retries("create index", || self.request(Method::Put, &path, Some(body.to_vec()), false)).await?;
        if reply.status == 400 && snippet(&reply.body).contains("resource_already_exists") {
            return Ok(true);
        }
        if reply.status == 200 {
            return Ok(false);
        }
        Err(SyncError::new(ErrorCode::Elasticsearch, format!("cannot create index \"{index}\": HTTP {}: {}", reply.status, snippet(&reply.body))))
    }

    /// Sends a request until it gets a non-transient reply; transient = transport error, 429, 5xx.
    async fn with_retries<F, Fut>(&self, what: &str, mut send: F) -> SyncResult<Reply>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Reply, String>>,
    {
        let mut attempt = 0;
        loop {
            let cause = match send().await {
                Ok(reply) if !is_retryable_status(reply.status) => return Ok(reply),
                Ok(reply) => format!("HTTP {}: {}", reply.status, snippet(&reply.body)),
                Err(transport) => transport,
            };
            attempt += 1;
            self.pause_before_retry(what, attempt, &cause).await?;
        }
    }

    async fn pause_before_retry(&self, what: &str, attempt: u32, cause: &str) -> SyncResult<()> {
        self.ctx.pause_before_retry(ErrorCode::Elasticsearch, what, attempt, cause).await
    }

    /// Writes a batch to `index` and returns once every write is acknowledged, stale (conflict)
    /// or dead-lettered. Transient failures, of the whole request or of single items, are retried.
    pub async fn bulk(&self, target: &Target, writes: Vec<DocumentWrite>) -> SyncResult<WriteReport> {
        let index = target.index.as_str();
        let mut report = WriteReport::default();
        let mut pending = writes;
        let mut attempt = 0;
        while !pending.is_empty() {
            let body = encode_all(target, &pending);
            let reply = self.with_retries("bulk write", || self.request(Method::Post, "/_bulk", Some(body.clone()), true)).await?;
            if reply.status == 413 && pending.len() > 1 {
                // The server's request limit is below ours: halve and carry on.
                let rest = pending.split_off(pending.len() / 2);
                let first = Box::pin(self.bulk(target, std::mem::take(&mut pending))).await?;
                let second = Box::pin(self.bulk(target, rest)).await?;
                merge(&mut report, first);
                merge(&mut report, second);
                return Ok(report);
            }
            if reply.status == 413 {
                report.outcome.dead_letters += 1;
                report
                    .dead_letters
                    .push(Rejected::new(pending[0].id.clone(), format!("document of {} bytes is larger than the server accepts (HTTP 413)", body.len())));
                return Ok(report);
            }
            if !(200..300).contains(&reply.status) {
                return Err(SyncError::new(
                    ErrorCode::Elasticsearch,
                    format!("bulk write to \"{index}\" refused: HTTP {}: {}", reply.status, snippet(&reply.body)),
                ));
            }
            let outcomes = parse_bulk_response(&reply.body, pending.len())
                .map_err(|e| SyncError::new(ErrorCode::Elasticsearch, format!("bulk write to \"{index}\": {e}")))?;
            let mut retry_items = Vec::new();
            let mut retry_cause = String::new();
            for (write, outcome) in pending.into_iter().zip(outcomes) {
                match outcome {
                    ItemOutcome::Indexed => report.outcome.indexed += 1,
                    ItemOutcome::Deleted => report.outcome.deleted += 1,
                    ItemOutcome::Conflict => report.outcome.conflicts += 1,
                    ItemOutcome::Retryable(cause) => {
                        retry_cause = cause;
                        retry_items.push(write);
                    }
                    ItemOutcome::Permanent(reason) => {
                        report.outcome.dead_letters += 1;
                        report.dead_letters.push(match write.op {
                            WriteOp::Index(source) => Rejected::new(write.id, reason).with_document(String::from_utf8_lossy(&source).into_owned()),
                            WriteOp::Delete => Rejected::new(write.id, format!("delete failed: {reason}")),
                        });
                    }
                }
            }
            pending = retry_items;
            if !pending.is_empty() {
                attempt += 1;
                let what = format!("{} items of a bulk write", pending.len());
                self.pause_before_retry(&what, attempt, &retry_cause).await?;
            }
        }
        Ok(report)
    }

    /// The dead-letter index stores the failed documents unindexed (`dynamic: false`), so that
    /// the very values Elasticsearch rejected cannot make the record fail too.
    pub async fn ensure_dead_letter_index(&self, index: &str) -> SyncResult<()> {
        let body = br#"{"mappings":{"dynamic":false,"properties":{"namespace":{"type":"keyword"},"index":{"type":"keyword"},"id":{"type":"keyword"},"reason":{"type":"text"},"at":{"type":"date"}}}}"#;
        self.ensure_index_with(index, body).await.map(|_| ())
    }

    /// Records dead letters in `dlq`, one document per source document (the latest failure wins).
    pub async fn write_dead_letters(&self, dlq: &str, namespace: &str, index: &str, records: &[Rejected]) -> SyncResult<()> {
        let at = mongodb::bson::DateTime::now();
        let writes = records
            .iter()
            .map(|r| {
                let (id, body) = dead_letter_document(namespace, index, r, at);
                DocumentWrite {
                    id,
                    routing: None,
                    version: at.timestamp_millis(),
                    op: WriteOp::Index(serde_json::to_vec(&body).expect("serialising JSON")),
                    operation: Operation::Copy,
                    position: None,
                }
            })
            .collect();
        let report = self.bulk(&Target::index(dlq), writes).await?;
        match report.dead_letters.first() {
            None => Ok(()),
            Some(failed) => Err(SyncError::new(
                ErrorCode::Elasticsearch,
                format!("cannot record the dead letter of {namespace} {} in \"{dlq}\": {}", failed.id, failed.reason),
            )),
        }
    }

    /// Points `alias` at `new_index` and drops `old_index` in one atomic step, so readers of the
    /// alias never see a half-filled index. Repeating it after a crash is harmless.
    pub async fn swap_alias(&self, alias: &str, new_index: &str, old_index: &str, extra_aliases: &[String]) -> SyncResult<()> {
        let old_path = format!("/{old_index}");
        let old_exists = self.with_retries("check index", || self.request(Method::Head, &old_path, None, false)).await?.status == 200;
        let mut actions = vec![serde_json::json!({ "add": { "index": new_index, "alias": alias } })];
        actions.extend(extra_aliases.iter().map(|extra| serde_json::json!({ "add": { "index": new_index, "alias": extra } })));
        if old_exists && old_index != new_index {
            actions.push(serde_json::json!({ "remove_index": { "index": old_index } }));
        }
        let body = serde_json::to_vec(&serde_json::json!({ "actions": actions })).expect("serialising JSON");
        let reply = self.with_retries("alias swap", || self.request(Method::Post, "/_aliases", Some(body.clone()), false)).await?;
        expect_success(&reply, &format!("point alias \"{alias}\" at \"{new_index}\""), &[])
    }

    /// Deletes an index; a missing one is fine.
    pub async fn delete_index(&self, index: &str) -> SyncResult<()> {
        let path = format!("/{index}");
        let reply = self.with_retries("delete index", || self.request(Method::Delete, &path, None, false)).await?;
        expect_success(&reply, &format!("delete index \"{index}\""), &[404])
    }

    /// Deletes every document of an index, keeping the index; a missing index is fine.
    pub async fn delete_documents(&self, index: &str) -> SyncResult<()> {
        let path = format!("/{index}/_delete_by_query?refresh=true&conflicts=proceed");
        let body = br#"{"query":{"match_all":{}}}"#.to_vec();
        let reply = self.with_retries("delete documents", || self.request(Method::Post, &path, Some(body.clone()), false)).await?;
        expect_success(&reply, &format!("delete the documents of \"{index}\""), &[404])
    }

    /// Copies every document of `from` into `to`, keeping their versions so that newer data in
    /// `to` is not overwritten.
    pub async fn reindex(&self, from: &str, to: &str) -> SyncResult<()> {
        let body = serde_json::to_vec(&serde_json::json!({
            "conflicts": "proceed",
            "source": { "index": from },
            "dest": { "index": to, "version_type": "external" },
        }))
        .expect("serialising JSON");
        let reply = self.with_retries("reindex", || self.request(Method::Post, "/_reindex?refresh=true", Some(body.clone()), false)).await?;
        expect_success(&reply, &format!("reindex \"{from}\" into \"{to}\""), &[404])?;
        let failures = serde_json::from_slice::<serde_json::Value>(&reply.body)
            .ok()
            .and_then(|v| v.get("failures").and_then(|f| f.as_array()).map(|f| f.len()))
            .unwrap_or(0);
        if failures > 0 {
            return Err(SyncError::new(
                ErrorCode::Elasticsearch,
                format!("reindex \"{from}\" into \"{to}\" had {failures} failures: {}", snippet(&reply.body)),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for EsSink {
    async fn connect(&self) -> SyncResult<()> {
        let server = self.server_info().await?;
        tracing::info!(flavour = %server.flavour, version = %server.version, "connected to the search server");
        self.ctx.events.emit(SyncEvent::Connected { distribution: server.flavour, version: server.version });
        Ok(())
    }

    async fn prepare_index(&self, index: &str, collection: Option<&CollectionConfig>) -> SyncResult<()> {
        match collection {
            Some(config) => self.ensure_collection_index(index, config).await,
            None => self.ensure_index(index).await,
        }
    }

    async fn prepare_dead_letters(&self, index: &str) -> SyncResult<()> {
        self.ensure_dead_letter_index(index).await
    }

    /// Several changes of one document in a batch end as the last one: only it is sent.
    async fn write(&self, _namespace: &str, target: &Target, writes: Vec<DocumentWrite>) -> SyncResult<WriteReport> {
        self.bulk(target, coalesce(writes)).await
    }

    async fn write_dead_letters(&self, dlq: &str, namespace: &str, index: &str, records: &[Rejected]) -> SyncResult<()> {
        EsSink::write_dead_letters(self, dlq, namespace, index, records).await
    }

    async fn apply(&self, change: &IndexChange) -> SyncResult<()> {
        match &change.action {
            IndexAction::DeleteDocuments { index } => self.delete_documents(index).await,
            IndexAction::DeleteIndex { index } => self.delete_index(index).await,
            IndexAction::Reindex { from, to } => self.reindex(from, to).await,
            IndexAction::SwapAlias { alias, index, replaces, extra_aliases } => self.swap_alias(alias, index, replaces, extra_aliases).await,
        }
    }
}

/// Certificate verification and client certificates for HTTPS nodes.
fn apply_tls(mut builder: TransportBuilder, tls: &EsTls, events: &EventBus) -> SyncResult<TransportBuilder> {
    let read = |field: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| SyncError::config(format!("elasticsearch.tls.{field}: cannot read {}: {e}", path.display())))
    };
    if !tls.reject_unauthorized {
        events.emit(SyncEvent::Warning {
            namespace: String::new(),
            message: "elasticsearch.tls.rejectUnauthorized is false: the server's certificate is NOT verified".into(),
        });
        builder = builder.cert_validation(CertificateValidation::None);
    } else if let Some(ca) = &tls.ca_file {
        let pem = read("caFile", ca)?;
        let cert =
            Certificate::from_pem(&pem).map_err(|e| SyncError::config(format!("elasticsearch.tls.caFile: {} is not a PEM certificate: {e}", ca.display())))?;
        builder = builder.cert_validation(CertificateValidation::Full(cert));
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let mut pem = read("certFile", cert)?;
            pem.push(b'\n');
            pem.extend(read("keyFile", key)?);
            builder = builder.auth(Credentials::Certificate(ClientCertificate::Pem(pem)));
        }
        (None, None) => {}
        _ => return Err(SyncError::config("elasticsearch.tls: certFile and keyFile go together")),
    }
    Ok(builder)
}

/// How the configured mappings disagree with an existing index's, if they do: a field typed
/// differently (fields only one side has are fine: dynamic mapping adds them).
fn mapping_conflict(wanted: &serde_json::Value, existing: &serde_json::Value, prefix: &str) -> Option<String> {
    let wanted = wanted.get("properties")?.as_object()?;
    let existing = existing.get("properties").and_then(|p| p.as_object());
    for (name, spec) in wanted {
        let path = format!("{prefix}{name}");
        let Some(have) = existing.and_then(|e| e.get(name)) else { continue };
        let want_type = spec.get("type").and_then(|t| t.as_str()).unwrap_or("object");
        let have_type = have.get("type").and_then(|t| t.as_str()).unwrap_or("object");
        if want_type != have_type {
            return Some(format!("maps \"{path}\" as {have_type}, not {want_type}"));
        }
        if let Some(conflict) = mapping_conflict(spec, have, &format!("{path}.")) {
            return Some(conflict);
        }
    }
    None
}

/// A 2xx reply, or one of the `tolerated` statuses; anything else is a permanent failure.
fn expect_success(reply: &Reply, what: &str, tolerated: &[u16]) -> SyncResult<()> {
    if (200..300).contains(&reply.status) || tolerated.contains(&reply.status) {
        return Ok(());
    }
    Err(SyncError::new(ErrorCode::Elasticsearch, format!("{what}: HTTP {}: {}", reply.status, snippet(&reply.body))))
}

fn merge(into: &mut WriteReport, part: WriteReport) {
    into.outcome.indexed += part.outcome.indexed;
    into.outcome.deleted += part.outcome.deleted;
    into.outcome.conflicts += part.outcome.conflicts;
    into.outcome.dead_letters += part.outcome.dead_letters;
    into.dead_letters.extend(part.dead_letters);
}

/// The start of a reply body, for error messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    text.replace('\n', " ")
}
