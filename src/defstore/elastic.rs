//! The Elasticsearch backend: `<index>` holds one document per sync (its `_id` the name),
//! `<index>-history` the audit records, `<index>-instances` the registrations. Writes are
//! compare-and-set on the document's `_seq_no`/`_primary_term` (`_create` for a first
//! version), so a write that lost a race is refused, never merged; `wait_change` polls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use mongodb::bson::DateTime;
use serde_json::{json, Value};

use super::{Desired, HistoryEntry, Registration, StoredDefinition, APPLY_FENCE, MAX_LISTED};
use crate::config::EsStoreConfig;
use crate::error::{ErrorCode, SyncError, SyncResult};
use crate::event::EventBus;
use crate::sink::elasticsearch::{send_json, JsonReply};

/// How often `wait_change` reads the stored document.
const POLL: Duration = Duration::from_millis(250);
/// Attempts of a read-modify-write that lost races (the fence, `desired`).
const CAS_ATTEMPTS: usize = 5;
/// Orders history records written within one millisecond by this process.
static ORDER: AtomicU64 = AtomicU64::new(0);

pub struct EsStore {
    client: Elasticsearch,
    index: String,
}

/// A stored document and its compare-and-set token.
pub(super) struct Versioned {
    pub source: Value,
    seq_no: i64,
    primary_term: i64,
}

fn store_error(context: &str, detail: &str) -> SyncError {
    SyncError::new(ErrorCode::Elasticsearch, format!("the definition store: {context}: {detail}"))
}

fn now_text(now: DateTime) -> String {
    now.try_to_rfc3339_string().unwrap_or_default()
}

/// The mappings of the three indices (`dynamic: false`: the rest is kept, not indexed).
fn mappings(suffix: &str) -> Value {
    let properties = match suffix {
        "" => json!({ "name": { "type": "keyword" }, "version": { "type": "long" }, "updatedAt": { "type": "date" } }),
        "-history" => json!({ "name": { "type": "keyword" }, "order": { "type": "long" }, "at": { "type": "date" } }),
        _ => json!({ "name": { "type": "keyword" }, "heartbeatMs": { "type": "long" } }),
    };
    json!({ "mappings": { "dynamic": false, "properties": properties } })
}

impl EsStore {
    /// A client of the store's server (the sync's ES options); creates the indices if missing.
    pub async fn connect(config: &EsStoreConfig) -> SyncResult<Self> {
        let (client, node) =
            crate::sink::elasticsearch::build_client(&config.es, &EventBus::default()).map_err(|e| SyncError::config(format!("configStore.{}", e.message)))?;
        let store = EsStore { client, index: config.index.clone() };
        let unreachable = |msg: String| SyncError::new(ErrorCode::EsUnreachable, format!("configStore: cannot reach {node}: {msg}"));
        for suffix in std::iter::once("").chain(EsStoreConfig::SIBLINGS) {
            let index = format!("{}{suffix}", store.index);
            // Only a missing index is created (a user allowed to write documents only may use existing ones).
            if store.send(Method::Head, &index, &[], None).await.map_err(|e| unreachable(e.message))?.status == 200 {
                continue;
            }
            let reply = store.send(Method::Put, &index, &[], Some(&mappings(suffix))).await.map_err(|e| unreachable(e.message))?;
            let exists = reply.error_type() == "resource_already_exists_exception";
            if !(reply.status < 300 || exists) {
                return Err(unreachable(format!("cannot create the index {index}: {}", reply.reason())));
            }
        }
        Ok(store)
    }

    async fn send(&self, method: Method, path: &str, query: &[(&str, String)], body: Option<&Value>) -> SyncResult<JsonReply> {
        send_json(&self.client, method, &format!("/{path}"), query, body).await.map_err(|e| store_error("no answer", &e))
    }

    /// The document `name` of the definitions index with its CAS token.
    pub(super) async fn get(&self, name: &str) -> SyncResult<Option<Versioned>> {
        let reply = self.send(Method::Get, &format!("{}/_doc/{}", self.index, encode(name)), &[], None).await?;
        if reply.status == 404 {
            return Ok(None);
        }
        if reply.status >= 300 {
            return Err(store_error("cannot read a definition", &reply.reason()));
        }
        let number = |key: &str| reply.body.get(key).and_then(Value::as_i64);
        match (reply.body.get("_source"), number("_seq_no"), number("_primary_term")) {
            (Some(source), Some(seq_no), Some(primary_term)) => Ok(Some(Versioned { source: source.clone(), seq_no, primary_term })),
            _ => Err(store_error("cannot read a definition", "a reply without _source, _seq_no or _primary_term")),
        }
    }

    /// Writes `source` as `name` if it is still at `token` (`None`: only if absent); false when
    /// another write came first.
    async fn put_if(&self, name: &str, source: &Value, token: Option<&Versioned>) -> SyncResult<bool> {
        let mut query = vec![("refresh", "true".to_string())];
        let path = match token {
            None => format!("{}/_create/{}", self.index, encode(name)),
            Some(t) => {
                query.push(("if_seq_no", t.seq_no.to_string()));
                query.push(("if_primary_term", t.primary_term.to_string()));
                format!("{}/_doc/{}", self.index, encode(name))
            }
        };
        let reply = self.send(Method::Put, &path, &query, Some(source)).await?;
        match reply.status {
            409 => Ok(false),
            s if s < 300 => Ok(true),
            _ => Err(store_error("cannot store a definition", &reply.reason())),
        }
    }

    pub async fn read(&self, name: &str) -> SyncResult<Option<StoredDefinition>> {
        self.get(name).await?.map(|v| stored_of(name, &v.source)).transpose()
    }

    /// Stores `text` as version `expected + 1` if the stored version is `expected` (0: none)
    /// and the fence is free; false when refused.
    pub async fn put(&self, name: &str, text: &str, expected: i64) -> SyncResult<bool> {
        let now = DateTime::now();
        let current = self.get(name).await?;
        let mut source = match (&current, expected) {
            (None, 0) => json!({ "name": name, "desired": "running" }),
            (Some(c), e) if e > 0 && version_of(&c.source) == Some(e) && fence_free(&c.source, now, None) => c.source.clone(),
            _ => return Ok(false),
        };
        source["version"] = json!(expected + 1);
        source["definition"] = json!(text);
        source["updatedAt"] = json!(now_text(now));
        self.put_if(name, &source, current.as_ref()).await
    }

    /// Applies `change` to the stored document of `name` with compare-and-set, again when
    /// another write came first; `None` when nothing is stored, `Some(false)` when `change`
    /// declines.
    async fn update(&self, name: &str, change: impl Fn(&mut Value) -> bool) -> SyncResult<Option<(bool, Value)>> {
        for _ in 0..CAS_ATTEMPTS {
            let Some(current) = self.get(name).await? else { return Ok(None) };
            let mut source = current.source.clone();
            if !change(&mut source) {
                return Ok(Some((false, source)));
            }
            if self.put_if(name, &source, Some(&current)).await? {
                return Ok(Some((true, source)));
            }
        }
        Err(SyncError::new(ErrorCode::Conflict, format!("syncs.{name}: the stored definition changed {CAS_ATTEMPTS} times while it was updated; try again")))
    }

    pub async fn set_desired(&self, name: &str, desired: Desired) -> SyncResult<Option<i64>> {
        let now = now_text(DateTime::now());
        let updated = self.update(name, |s| {
            s["desired"] = json!(desired.as_str());
            s["desiredAt"] = json!(now);
            true
        });
        Ok(updated.await?.and_then(|(_, s)| version_of(&s)))
    }

    pub async fn begin_apply(&self, name: &str, version: i64, instance: &str) -> SyncResult<bool> {
        let updated = self.update(name, |s| {
            let now = DateTime::now();
            if version_of(s) != Some(version) || !fence_free(s, now, Some(instance)) {
                return false;
            }
            let until = now.timestamp_millis() + APPLY_FENCE.as_millis() as i64;
            s["applying"] = json!({ "instance": instance, "version": version, "until": until });
            true
        });
        Ok(updated.await?.is_some_and(|(taken, _)| taken))
    }

    pub async fn end_apply(&self, name: &str, instance: &str, applied: Option<i64>) -> SyncResult<()> {
        let updated = self.update(name, |s| {
            if s.pointer("/applying/instance").and_then(Value::as_str) != Some(instance) {
                return false;
            }
            s.as_object_mut().map(|o| o.remove("applying"));
            if let Some(version) = applied {
                s["appliedVersion"] = json!(version);
            }
            true
        });
        updated.await.map(|_| ())
    }

    pub async fn record(&self, entry: &HistoryEntry) -> SyncResult<()> {
        let now = DateTime::now();
        let mut record = serde_json::to_value(entry).map_err(|e| SyncError::new(ErrorCode::Internal, format!("cannot record the history: {e}")))?;
        record["at"] = json!(now_text(now));
        record["order"] = json!(history_order(now.timestamp_millis(), ORDER.fetch_add(1, Ordering::Relaxed)));
        let reply = self.send(Method::Post, &format!("{}-history/_doc", self.index), &[("refresh", "true".into())], Some(&record)).await?;
        if reply.status >= 300 {
            return Err(store_error("cannot record the history", &reply.reason()));
        }
        Ok(())
    }

    async fn search(&self, suffix: &str, body: &Value, what: &str) -> SyncResult<Vec<Value>> {
        let reply = self.send(Method::Post, &format!("{}{suffix}/_search", self.index), &[], Some(body)).await?;
        if reply.status >= 300 {
            return Err(store_error(what, &reply.reason()));
        }
        let hits = reply.body.pointer("/hits/hits").and_then(Value::as_array).cloned().unwrap_or_default();
        Ok(hits.into_iter().map(|mut h| h.get_mut("_source").map(Value::take).unwrap_or_default()).collect())
    }

    /// The last `limit` records, newest first.
    pub async fn history(&self, name: &str, limit: i64) -> SyncResult<Vec<HistoryEntry>> {
        let body = json!({ "query": { "term": { "name": name } }, "sort": [{ "order": "desc" }], "size": limit });
        let hits = self.search("-history", &body, "cannot read the history").await?;
        hits.into_iter().map(history_of).collect()
    }

    pub async fn heartbeat(&self, instance: &Registration) -> SyncResult<()> {
        let now = DateTime::now();
        let mut record = serde_json::to_value(instance).map_err(|e| SyncError::new(ErrorCode::Internal, format!("cannot register: {e}")))?;
        record["heartbeatAt"] = json!(now_text(now));
        record["heartbeatMs"] = json!(now.timestamp_millis());
        let path = format!("{}-instances/_doc/{}", self.index, encode(&instance.id));
        let reply = self.send(Method::Put, &path, &[("refresh", "true".into())], Some(&record)).await?;
        if reply.status >= 300 {
            return Err(store_error("cannot register the instance", &reply.reason()));
        }
        Ok(())
    }

    pub async fn deregister(&self, id: &str) -> SyncResult<()> {
        let path = format!("{}-instances/_doc/{}", self.index, encode(id));
        let reply = self.send(Method::Delete, &path, &[("refresh", "true".into())], None).await?;
        if reply.status >= 300 && reply.status != 404 {
            return Err(store_error("cannot deregister the instance", &reply.reason()));
        }
        Ok(())
    }

    /// The registrations renewed within `alive`.
    pub async fn instances(&self, alive: Duration) -> SyncResult<Vec<Registration>> {
        let since = DateTime::now().timestamp_millis() - alive.as_millis() as i64;
        let body = json!({ "query": { "range": { "heartbeatMs": { "gte": since } } }, "size": MAX_LISTED });
        let hits = self.search("-instances", &body, "cannot list the instances").await?;
        hits.into_iter().map(registration_of).collect()
    }

    /// Every stored definition, by name.
    pub async fn definitions(&self) -> SyncResult<Vec<StoredDefinition>> {
        let body = json!({ "query": { "match_all": {} }, "sort": [{ "name": "asc" }], "size": MAX_LISTED });
        let hits = self.search("", &body, "cannot list the definitions").await?;
        hits.iter().map(|s| stored_of(s.get("name").and_then(Value::as_str).unwrap_or_default(), s)).collect()
    }

    /// Returns true once `name`'s stored document changes (read every [`POLL`]), false after `timeout`.
    pub async fn wait_change(&self, name: &str, timeout: Duration) -> SyncResult<bool> {
        let token = |v: Option<Versioned>| v.map(|v| (v.seq_no, v.primary_term));
        let start = Instant::now();
        let first = token(self.get(name).await?);
        while start.elapsed() < timeout {
            tokio::time::sleep(POLL.min(timeout.saturating_sub(start.elapsed()))).await;
            if token(self.get(name).await?) != first {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// A document id in a URL path.
fn encode(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>().replace('+', "%20")
}

/// The sort key of a history record: its millisecond, then this process's counter.
pub(super) fn history_order(millis: i64, counter: u64) -> i64 {
    millis.saturating_mul(1000).saturating_add((counter % 1000) as i64)
}

fn version_of(source: &Value) -> Option<i64> {
    source.get("version").and_then(Value::as_i64)
}

/// Whether no instance other than `me` holds the apply fence of `source` at `now`.
pub(super) fn fence_free(source: &Value, now: DateTime, me: Option<&str>) -> bool {
    let Some(applying) = source.get("applying").filter(|a| !a.is_null()) else { return true };
    let until = applying.get("until").and_then(Value::as_i64).unwrap_or(0);
    until < now.timestamp_millis() || (me.is_some() && applying.get("instance").and_then(Value::as_str) == me)
}

pub(super) fn stored_of(name: &str, s: &Value) -> SyncResult<StoredDefinition> {
    let bad = |what: &str| SyncError::new(ErrorCode::Elasticsearch, format!("the stored definition \"{name}\" has no valid {what}"));
    let definition: Value = s.get("definition").and_then(Value::as_str).and_then(|t| serde_json::from_str(t).ok()).ok_or_else(|| bad("\"definition\""))?;
    let desired = super::desired_of(s.get("desired").and_then(Value::as_str)).ok_or_else(|| bad("\"desired\""))?;
    Ok(StoredDefinition {
        name: name.to_string(),
        version: version_of(s).ok_or_else(|| bad("\"version\""))?,
        definition,
        desired,
        updated_at: s.get("updatedAt").and_then(Value::as_str).unwrap_or_default().to_string(),
        applied_version: s.get("appliedVersion").and_then(Value::as_i64),
    })
}

pub(super) fn history_of(mut record: Value) -> SyncResult<HistoryEntry> {
    record.as_object_mut().map(|o| o.remove("order"));
    serde_json::from_value(record).map_err(|e| SyncError::new(ErrorCode::Elasticsearch, format!("the definition store: an unreadable history record: {e}")))
}

fn registration_of(mut record: Value) -> SyncResult<Registration> {
    record.as_object_mut().map(|o| o.remove("heartbeatMs"));
    serde_json::from_value(record).map_err(|e| SyncError::new(ErrorCode::Elasticsearch, format!("the definition store: an unreadable registration: {e}")))
}
