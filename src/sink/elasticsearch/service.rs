//! The Elasticsearch client: connection check, index creation and versioned bulk writes
//! with whole-request and per-item retries.

use std::sync::Arc;

use async_trait::async_trait;
use elasticsearch::http::headers::{HeaderMap, HeaderValue, CONTENT_TYPE};
use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;

use super::adaptive::{chunk_len, is_pressure, SharedSizer};
use super::client::build_client;
use super::encoder::encode_all;
use super::error::EsError;
use super::response::{read_bulk_reply, BulkReply, ItemOutcome, Reply};
use super::retry::{answer, Transient};
use super::task::TasksApi;
use crate::config::{redact_uri, BatchConfig, CollectionConfig, EsConfig};
use crate::error::{cause_chain, SyncResult};
use crate::event::SyncEvent;
use crate::retry::{proceed, Attempt, Flow, RetryPolicy, Retryable};
use crate::sink::{IndexAction, IndexChange, Sink, SinkContext, Target, WriteReport};
use crate::transform::{coalesce, dead_letter_document, DocumentWrite, Operation, Rejected, WriteOp};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// "elasticsearch" or "opensearch".
    pub flavour: String,
    pub version: String,
}

pub(super) type EsResult<T> = Result<T, EsError>;

#[derive(Clone)]
pub struct EsSink {
    client: Elasticsearch,
    node: String,
    ctx: SinkContext,
    tasks_api: Arc<TasksApi>,
    /// Sizes the `_bulk` requests within the batch limits (none: `batch.adaptive.enabled` off).
    sizer: Option<Arc<SharedSizer>>,
}

impl EsSink {
    pub fn new(config: &EsConfig, batch: &BatchConfig, ctx: SinkContext) -> SyncResult<Self> {
        let (client, node) = build_client(config, &ctx.events)?;
        let sizer = SharedSizer::new(batch).map(Arc::new);
        ctx.stats.set_adaptive_batch(sizer.as_ref().map(|s| s.snapshot()));
        Ok(EsSink { client, node, ctx, tasks_api: Arc::default(), sizer })
    }

    pub(super) fn sizer(&self) -> Option<&SharedSizer> {
        self.sizer.as_deref()
    }

    pub(super) fn context(&self) -> &SinkContext {
        &self.ctx
    }

    pub(super) async fn request(&self, method: Method, path: &str, body: Option<Vec<u8>>, ndjson: bool) -> Result<Reply, elasticsearch::Error> {
        let mut headers = HeaderMap::new();
        if ndjson {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
        }
        let response = self.client.send(method, path, headers, None::<&()>, body, None).await?;
        let status = response.status_code().as_u16();
        let body = response.bytes().await?.to_vec();
        Ok(Reply { status, body })
    }

    pub(super) fn policy(&self) -> RetryPolicy<'_> {
        self.ctx.retry_policy()
    }

    /// Sends a request until it gets an answer that is not transient (see `retry`).
    pub(super) async fn send(&self, what: &str, method: Method, path: &str, body: Option<&[u8]>) -> EsResult<Flow<Reply>> {
        self.policy()
            .run(what, || async {
                answer(self.request(method, path, body.map(<[u8]>::to_vec), false).await).map_or_else(|t| Attempt::Retry(t.to_string()), Attempt::Done)
            })
            .await
    }

    /// [`send`](Self::send), where any answer but a success (or one of `tolerated`) is an error.
    pub(super) async fn send_expecting(&self, what: &str, method: Method, path: &str, body: Option<&[u8]>, tolerated: &[u16]) -> EsResult<Flow<Reply>> {
        let reply = proceed!(self.send(what, method, path, body).await?);
        expect_success(&reply, what, tolerated)?;
        Ok(Flow::Done(reply))
    }

    /// Asks the server who it is; fails fast (no retries) so that `start()` reports a wrong URL at once.
    pub async fn server_info(&self) -> EsResult<ServerInfo> {
        let unreachable = |reason: String| EsError::Unreachable { node: redact_uri(&self.node), reason };
        let reply = self.request(Method::Get, "/", None, false).await.map_err(|e| unreachable(cause_chain(&e)))?;
        if reply.status == 401 || reply.status == 403 {
            return Err(unreachable(format!("authentication refused (HTTP {})", reply.status)));
        }
        if reply.status != 200 {
            return Err(unreachable(reply.describe()));
        }
        let info: serde_json::Value = serde_json::from_slice(&reply.body).map_err(|e| unreachable(format!("the reply to GET / is not JSON ({e})")))?;
        let version = &info["version"];
        Ok(ServerInfo {
            flavour: version["distribution"].as_str().unwrap_or("elasticsearch").to_string(),
            version: version["number"].as_str().unwrap_or("unknown").to_string(),
        })
    }

    /// Creates the index with dynamic mapping unless it exists.
    pub async fn ensure_index(&self, index: &str) -> EsResult<Flow<()>> {
        self.ensure_index_with(index, b"{}").await.map(|flow| flow.map(drop))
    }

    /// Prepares a collection's index: created with its settings and mappings unless it exists;
    /// an existing one must agree with the configured mappings; the alias is added.
    pub async fn ensure_collection_index(&self, index: &str, config: &CollectionConfig) -> EsResult<Flow<()>> {
        let body = config.index_body.as_ref().map_or_else(|| b"{}".to_vec(), |b| serde_json::to_vec(b).expect("serialising JSON"));
        let existed = proceed!(self.ensure_index_with(index, &body).await?);
        if let (true, Some(wanted)) = (existed, config.index_body.as_ref().and_then(|b| b.get("mappings"))) {
            let path = format!("/{index}/_mapping");
            let reply = proceed!(self.send_expecting(&format!("read the mappings of \"{index}\""), Method::Get, &path, None, &[]).await?);
            let existing: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
            // The reply is keyed by the concrete index name, which differs when `index` is an alias.
            let existing = existing.as_object().and_then(|o| o.values().next()).and_then(|v| v.get("mappings")).cloned().unwrap_or_default();
            if let Some(conflict) = mapping_conflict(wanted, &existing, "") {
                return Err(EsError::MappingConflict { namespace: config.namespace.to_string(), index: index.to_string(), conflict });
            }
        }
        if let Some(alias) = &config.alias {
            let body = serde_json::to_vec(&serde_json::json!({ "actions": [{ "add": { "index": index, "alias": alias } }] })).expect("serialising JSON");
            proceed!(self.send_expecting(&format!("add alias \"{alias}\" to \"{index}\""), Method::Post, "/_aliases", Some(&body), &[]).await?);
        }
        Ok(Flow::Done(()))
    }

    /// Creates the index with the given settings/mappings body unless it exists; tells whether it existed.
    async fn ensure_index_with(&self, index: &str, body: &[u8]) -> EsResult<Flow<bool>> {
        let path = format!("/{index}");
        if proceed!(self.send("check index", Method::Head, &path, None).await?).status == 200 {
            return Ok(Flow::Done(true));
        }
        let reply = proceed!(self.send("create index", Method::Put, &path, Some(body)).await?);
        if already_exists(&reply) {
            return Ok(Flow::Done(true));
        }
        expect_success(&reply, &format!("cannot create index \"{index}\""), &[])?;
        Ok(Flow::Done(false))
    }

    /// Writes a batch to `index` and returns once every write is acknowledged, stale (conflict)
    /// or dead-lettered. Transient failures, of the whole request or of single items, are
    /// retried in one loop: an attempt that got some items through counts as progress.
    pub async fn bulk(&self, target: &Target, writes: Vec<DocumentWrite>) -> EsResult<Flow<WriteReport>> {
        let mut report = WriteReport::default();
        if writes.is_empty() {
            // A batch of only skipped or rejected changes sends nothing (an empty `_bulk` is refused).
            return Ok(Flow::Done(report));
        }
        let mut pending = writes;
        let what = format!("bulk write to \"{}\"", target.index);
        let attempt = BulkAttempt { sink: self, target, pending: &mut pending, report: &mut report };
        if proceed!(self.policy().run(&what, attempt).await?) == BulkEnd::TooLarge {
            proceed!(self.bulk_too_large(target, pending, &mut report).await?);
        }
        Ok(Flow::Done(report))
    }

    /// The server's request limit is below ours: halve and carry on; a single document over the
    /// limit is dead-lettered.
    async fn bulk_too_large(&self, target: &Target, mut pending: Vec<DocumentWrite>, report: &mut WriteReport) -> EsResult<Flow<()>> {
        if pending.len() == 1 {
            let size = encode_all(target, &pending).len();
            report.outcome.dead_letters += 1;
            report.dead_letters.push(Rejected::new(pending[0].id.clone(), format!("document of {size} bytes is larger than the server accepts (HTTP 413)")));
            return Ok(Flow::Done(()));
        }
        let rest = pending.split_off(pending.len() / 2);
        for half in [pending, rest] {
            merge(report, proceed!(Box::pin(self.bulk(target, half)).await?));
        }
        Ok(Flow::Done(()))
    }

    /// The dead-letter index stores the failed documents unindexed (`dynamic: false`), so that
    /// the very values Elasticsearch rejected cannot make the record fail too.
    pub async fn ensure_dead_letter_index(&self, index: &str) -> EsResult<Flow<()>> {
        let body = br#"{"mappings":{"dynamic":false,"properties":{"namespace":{"type":"keyword"},"index":{"type":"keyword"},"id":{"type":"keyword"},"reason":{"type":"text"},"at":{"type":"date"}}}}"#;
        self.ensure_index_with(index, body).await.map(|flow| flow.map(drop))
    }

    /// Records dead letters in `dlq`, one document per source document (the latest failure wins).
    pub async fn write_dead_letters(&self, dlq: &str, namespace: &str, index: &str, records: &[Rejected]) -> EsResult<Flow<()>> {
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
        let report = proceed!(self.bulk(&Target::index(dlq), writes).await?);
        match report.dead_letters.into_iter().next() {
            None => Ok(Flow::Done(())),
            Some(failed) => Err(EsError::DeadLetterRefused { namespace: namespace.to_string(), id: failed.id, index: dlq.to_string(), reason: failed.reason }),
        }
    }

    /// Points `alias` at `new_index` and drops `old_index` in one atomic step, so readers of the
    /// alias never see a half-filled index (the new index is refreshed first: its writes within
    /// the refresh interval would be missing from searches). Repeating it after a crash is harmless.
    pub async fn swap_alias(&self, alias: &str, new_index: &str, old_index: &str, extra_aliases: &[String]) -> EsResult<Flow<()>> {
        proceed!(self.refresh(new_index).await?);
        let old_exists = proceed!(self.send("check index", Method::Head, &format!("/{old_index}"), None).await?).status == 200;
        let mut actions = vec![serde_json::json!({ "add": { "index": new_index, "alias": alias } })];
        actions.extend(extra_aliases.iter().map(|extra| serde_json::json!({ "add": { "index": new_index, "alias": extra } })));
        if old_exists && old_index != new_index {
            actions.push(serde_json::json!({ "remove_index": { "index": old_index } }));
        }
        let body = serde_json::to_vec(&serde_json::json!({ "actions": actions })).expect("serialising JSON");
        let what = format!("point alias \"{alias}\" at \"{new_index}\"");
        self.send_expecting(&what, Method::Post, "/_aliases", Some(&body), &[]).await.map(|flow| flow.map(drop))
    }

    /// Deletes an index; a missing one is fine.
    pub async fn delete_index(&self, index: &str) -> EsResult<Flow<()>> {
        let what = format!("delete index \"{index}\"");
        self.send_expecting(&what, Method::Delete, &format!("/{index}"), None, &[404]).await.map(|flow| flow.map(drop))
    }

    /// Deletes every document of an index, keeping the index; a missing index is fine. The
    /// index is refreshed first: `_delete_by_query` sees only searchable documents.
    pub async fn delete_documents(&self, index: &str) -> EsResult<Flow<()>> {
        proceed!(self.refresh(index).await?);
        let path = format!("/{index}/_delete_by_query?refresh=true&conflicts=proceed");
        self.run_task(&format!("delete the documents of \"{index}\""), &path, br#"{"query":{"match_all":{}}}"#).await
    }

    /// Copies every document of `from` into `to`, keeping their versions so that newer data in
    /// `to` is not overwritten. `from` is refreshed first: `_reindex` reads only searchable documents.
    pub async fn reindex(&self, from: &str, to: &str) -> EsResult<Flow<()>> {
        proceed!(self.refresh(from).await?);
        let body = serde_json::to_vec(&serde_json::json!({
            "conflicts": "proceed",
            "source": { "index": from },
            "dest": { "index": to, "version_type": "external" },
        }))
        .expect("serialising JSON");
        self.run_task(&format!("reindex \"{from}\" into \"{to}\""), "/_reindex?refresh=true", &body).await
    }

    pub(super) fn tasks_api(&self) -> &TasksApi {
        &self.tasks_api
    }

    /// Resolves once the sync is stopped.
    pub(super) async fn cancelled(&self) {
        self.ctx.cancel.cancelled().await
    }
}

/// One `_bulk` request of the writes still `pending`; what became of each item goes into
/// `report`, and the transient failures stay in `pending` for the next attempt.
struct BulkAttempt<'a> {
    sink: &'a EsSink,
    target: &'a Target,
    pending: &'a mut Vec<DocumentWrite>,
    report: &'a mut WriteReport,
}

impl Retryable for BulkAttempt<'_> {
    type Output = BulkEnd;
    type Error = EsError;

    /// Sends what is pending in requests sized by the adaptive controller (one request without
    /// it), one after the other, until all are settled or one fails transiently: then the
    /// rest waits for the next attempt, after the backoff.
    async fn attempt(&mut self) -> Attempt<BulkEnd, EsError> {
        let mut unsent = std::mem::take(self.pending);
        let mut progressed = false;
        while !unsent.is_empty() {
            let limit = self.sink.bulk_limit();
            let len = limit.map_or(unsent.len(), |(limit, _)| chunk_len(self.target, &unsent, limit));
            let rest = unsent.split_off(len);
            *self.pending = std::mem::replace(&mut unsent, rest);
            let sent = self.send_pending(limit.map(|(_, epoch)| epoch)).await;
            if matches!(sent, Attempt::Done(BulkEnd::Finished)) {
                progressed = true;
                continue;
            }
            // What this request left (retryable items) goes first, then the requests not sent.
            self.pending.append(&mut unsent);
            return match sent {
                Attempt::Retry(cause) if progressed => Attempt::Partial(cause),
                other => other,
            };
        }
        Attempt::Done(BulkEnd::Finished)
    }
}

impl BulkAttempt<'_> {
    /// One `_bulk` request of everything in `pending`; `epoch`: the controller's, when it sized it.
    async fn send_pending(&mut self, epoch: Option<u64>) -> Attempt<BulkEnd, EsError> {
        let what = || format!("bulk write to \"{}\"", self.target.index);
        let body = encode_all(self.target, self.pending.iter());
        let timer = epoch.map(|epoch| self.sink.start_timer(epoch, self.pending.len(), body.len()));
        let observe = |pressure: bool| timer.map(|t| self.sink.observe(t, pressure));
        let reply = match answer(self.sink.request(Method::Post, "/_bulk", Some(body), true).await) {
            Ok(reply) => reply,
            Err(transient) => {
                if matches!(&transient, Transient::Reply(r) if r.status == 429) {
                    observe(true);
                }
                return Attempt::Retry(transient.to_string());
            }
        };
        let outcomes = match read_bulk_reply(&reply, self.pending.len(), &what()) {
            BulkReply::Items(outcomes) => outcomes,
            BulkReply::TooLarge => {
                observe(true);
                return Attempt::Done(BulkEnd::TooLarge);
            }
            BulkReply::Failed(e) => return Attempt::Fail(e),
        };
        let sent = self.pending.len();
        let mut cause = String::new();
        let mut pressure = false;
        for (write, outcome) in std::mem::take(self.pending).into_iter().zip(outcomes) {
            if let Some(transient) = settle(self.report, write, outcome, self.pending) {
                pressure |= is_pressure(&transient);
                cause = transient;
            }
        }
        observe(pressure);
        match self.pending.len() {
            0 => Attempt::Done(BulkEnd::Finished),
            left if left < sent => Attempt::Partial(format!("{left} of {sent} items: {cause}")),
            left => Attempt::Retry(format!("{left} of {sent} items: {cause}")),
        }
    }
}

/// A create refused because the index exists: made by an earlier attempt whose reply was lost
/// (a timeout, a reset after the server applied it) or by another writer. Read from the error's
/// `type`, wherever the server puts it in the body.
fn already_exists(reply: &Reply) -> bool {
    reply.status == 400 && reply.error_type().as_deref() == Some("resource_already_exists_exception")
}

/// How a bulk write's loop ended.
#[derive(Debug, PartialEq, Eq)]
enum BulkEnd {
    /// Every write is acknowledged, stale or dead-lettered.
    Finished,
    /// HTTP 413: what is left must go in smaller requests.
    TooLarge,
}

/// Books one item's outcome in `report`; a transient failure goes back to `retry` and its cause
/// is returned.
fn settle(report: &mut WriteReport, write: DocumentWrite, outcome: ItemOutcome, retry: &mut Vec<DocumentWrite>) -> Option<String> {
    match outcome {
        ItemOutcome::Indexed => report.outcome.indexed += 1,
        ItemOutcome::Deleted => report.outcome.deleted += 1,
        ItemOutcome::NotFound => report.outcome.not_found += 1,
        ItemOutcome::Conflict => report.outcome.conflicts += 1,
        ItemOutcome::Retryable(cause) => {
            retry.push(write);
            return Some(cause);
        }
        ItemOutcome::Permanent(reason) => {
            report.outcome.dead_letters += 1;
            report.dead_letters.push(match write.op {
                WriteOp::Index(source) => Rejected::new(write.id, reason).with_document(String::from_utf8_lossy(&source).into_owned()),
                WriteOp::Delete => Rejected::new(write.id, format!("delete failed: {reason}")),
            });
        }
    }
    None
}

#[async_trait]
impl Sink for EsSink {
    async fn connect(&self) -> SyncResult<()> {
        let server = self.server_info().await?;
        tracing::info!(flavour = %server.flavour, version = %server.version, "connected to the search server");
        self.ctx.events.emit(SyncEvent::Connected { distribution: server.flavour, version: server.version });
        Ok(())
    }

    async fn prepare_index(&self, index: &str, collection: Option<&CollectionConfig>) -> SyncResult<Flow<()>> {
        Ok(match collection {
            Some(config) => self.ensure_collection_index(index, config).await?,
            None => self.ensure_index(index).await?,
        })
    }

    async fn prepare_dead_letters(&self, index: &str) -> SyncResult<Flow<()>> {
        Ok(self.ensure_dead_letter_index(index).await?)
    }

    /// Several changes of one document in a batch end as the last one: only it is sent.
    async fn write(&self, _namespace: &str, target: &Target, writes: Vec<DocumentWrite>) -> SyncResult<Flow<WriteReport>> {
        Ok(self.bulk(target, coalesce(writes)).await?)
    }

    async fn write_dead_letters(&self, dlq: &str, namespace: &str, index: &str, records: &[Rejected]) -> SyncResult<Flow<()>> {
        Ok(EsSink::write_dead_letters(self, dlq, namespace, index, records).await?)
    }

    async fn apply(&self, change: &IndexChange) -> SyncResult<Flow<()>> {
        Ok(match &change.action {
            IndexAction::DeleteDocuments { index } => self.delete_documents(index).await?,
            IndexAction::DeleteIndex { index } => self.delete_index(index).await?,
            IndexAction::Reindex { from, to } => self.reindex(from, to).await?,
            IndexAction::SwapAlias { alias, index, replaces, extra_aliases } => self.swap_alias(alias, index, replaces, extra_aliases).await?,
        })
    }
}

/// How the configured mappings disagree with an existing index's, if they do: a field typed
/// differently (fields only one side has are fine: dynamic mapping adds them).
pub(super) fn mapping_conflict(wanted: &serde_json::Value, existing: &serde_json::Value, prefix: &str) -> Option<String> {
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
pub(super) fn expect_success(reply: &Reply, what: &str, tolerated: &[u16]) -> EsResult<()> {
    if reply.is_success() || tolerated.contains(&reply.status) {
        return Ok(());
    }
    Err(EsError::Refused { what: what.to_string(), reply: reply.describe() })
}

fn merge(into: &mut WriteReport, part: WriteReport) {
    into.outcome.indexed += part.outcome.indexed;
    into.outcome.deleted += part.outcome.deleted;
    into.outcome.not_found += part.outcome.not_found;
    into.outcome.conflicts += part.outcome.conflicts;
    into.outcome.dead_letters += part.outcome.dead_letters;
    into.dead_letters.extend(part.dead_letters);
}

#[cfg(test)]
mod already_exists_tests {
    use super::{already_exists, Reply};

    /// Found by the stress schedules: osmem-server writes `type` after a long `reason`, so the
    /// 300-byte snippet that was searched missed it and a create retried after a timeout (the
    /// first attempt applied) failed the sync with "index already exists".
    #[test]
    fn an_existing_index_is_recognised_wherever_the_type_is() {
        let osmem = r#"{"error":{"index":"stress0_1231_mx33socc","index_uuid":"_na_","reason":"index [stress0_1231_mx33socc/osmem18eccaaf8ac893de0] already exists","root_cause":[{"index":"stress0_1231_mx33socc","index_uuid":"_na_","reason":"index [stress0_1231_mx33socc/osmem18eccaaf8ac893de0] already exists","type":"resource_already_exists_exception"}],"type":"resource_already_exists_exception"},"status":400}"#;
        let searched = super::super::response::snippet(osmem.as_bytes());
        assert!(!searched.contains("resource_already_exists"), "past the 300 bytes that were searched");
        assert!(already_exists(&Reply { status: 400, body: osmem.as_bytes().to_vec() }));
        let elasticsearch = r#"{"error":{"root_cause":[{"type":"resource_already_exists_exception","reason":"index [a/x] already exists"}],"type":"resource_already_exists_exception","reason":"index [a/x] already exists"},"status":400}"#;
        assert!(already_exists(&Reply { status: 400, body: elasticsearch.as_bytes().to_vec() }));
        let other = r#"{"error":{"type":"invalid_index_name_exception","reason":"resource_already_exists"},"status":400}"#;
        assert!(!already_exists(&Reply { status: 400, body: other.as_bytes().to_vec() }));
    }
}
