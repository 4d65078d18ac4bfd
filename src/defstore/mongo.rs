//! The MongoDB backend: `<collection>` holds one document per sync, `<collection>_history` the
//! audit records, `<collection>_instances` the registrations. Writes are atomic filters on the
//! version and the fence; `wait_change` follows a change stream.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use mongodb::bson::{doc, DateTime, Document};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection};

use super::{Desired, HistoryEntry, Registration, StoredDefinition, APPLY_FENCE, MAX_LISTED};
use crate::config::{redact_uri, MongoStoreConfig};
use crate::error::{cause_chain, ErrorCode, SyncError, SyncResult};
use crate::source::mongo::{is_duplicate_key, whole_number};
use crate::source::mongo_error;

pub struct MongoStore {
    client: Client,
    database: String,
    collection: String,
}

fn store_error(context: &str, e: &mongodb::error::Error) -> SyncError {
    let mut err = mongo_error(format!("the definition store: {context}"), e);
    err.code = ErrorCode::Mongo;
    err
}

fn rfc3339(at: Option<&mongodb::bson::Bson>) -> String {
    at.and_then(mongodb::bson::Bson::as_datetime).and_then(|d| d.try_to_rfc3339_string().ok()).unwrap_or_default()
}

impl MongoStore {
    /// Connects to the store's MongoDB (and checks it answers).
    pub async fn connect(config: &MongoStoreConfig) -> SyncResult<Self> {
        let uri = config.uri.expose();
        let unreachable = |msg: String| SyncError::new(ErrorCode::MongoUnreachable, format!("configStore: cannot connect to {}: {msg}", redact_uri(uri)));
        let mut options = ClientOptions::parse(uri).await.map_err(|e| unreachable(cause_chain(&e)))?;
        options.server_selection_timeout.get_or_insert(Duration::from_secs(10));
        options.app_name.get_or_insert_with(|| "mongo-elastic-sync-store".to_string());
        let client = Client::with_options(options).map_err(|e| unreachable(cause_chain(&e)))?;
        client.database("admin").run_command(doc! { "ping": 1 }).await.map_err(|e| unreachable(cause_chain(&e)))?;
        Ok(MongoStore { client, database: config.database.clone(), collection: config.collection.clone() })
    }

    fn collection(&self, suffix: &str) -> Collection<Document> {
        self.client.database(&self.database).collection(&format!("{}{suffix}", self.collection))
    }

    pub async fn read(&self, name: &str) -> SyncResult<Option<StoredDefinition>> {
        let found = self.collection("").find_one(doc! { "_id": name }).await.map_err(|e| store_error("cannot read a definition", &e))?;
        found.map(|d| stored_of(name, &d)).transpose()
    }

    /// Stores `text` as version `expected + 1` if the stored version is `expected` (0: none)
    /// and the fence is free; false when refused.
    pub async fn put(&self, name: &str, text: &str, expected: i64) -> SyncResult<bool> {
        let now = DateTime::now();
        if expected == 0 {
            let new = doc! { "_id": name, "version": 1_i64, "definition": text, "desired": "running", "updatedAt": now };
            return match self.collection("").insert_one(new).await {
                Ok(_) => Ok(true),
                Err(e) if is_duplicate_key(&e) => Ok(false),
                Err(e) => Err(store_error("cannot store a definition", &e)),
            };
        }
        let free = doc! { "$or": [{ "applying": null }, { "applying.until": { "$lt": now } }] };
        let filter = doc! { "_id": name, "version": expected, "$and": [free] };
        let update = doc! { "$set": { "version": expected + 1, "definition": text, "updatedAt": now } };
        let result = self.collection("").update_one(filter, update).await.map_err(|e| store_error("cannot store a definition", &e))?;
        Ok(result.matched_count == 1)
    }

    /// Sets `desired`; the stored version, or `None` when nothing is stored.
    pub async fn set_desired(&self, name: &str, desired: Desired) -> SyncResult<Option<i64>> {
        let update = doc! { "$set": { "desired": desired.as_str(), "desiredAt": DateTime::now() } };
        let found = self.collection("").find_one_and_update(doc! { "_id": name }, update).await.map_err(|e| store_error("cannot change a definition", &e))?;
        found.map(|d| stored_of(name, &d).map(|s| s.version)).transpose()
    }

    pub async fn begin_apply(&self, name: &str, version: i64, instance: &str) -> SyncResult<bool> {
        let now = DateTime::now();
        let free = doc! { "$or": [{ "applying": null }, { "applying.until": { "$lt": now } }, { "applying.instance": instance }] };
        let until = DateTime::from_millis(now.timestamp_millis() + APPLY_FENCE.as_millis() as i64);
        let update = doc! { "$set": { "applying": { "instance": instance, "version": version, "until": until } } };
        let result = self
            .collection("")
            .update_one(doc! { "_id": name, "version": version, "$and": [free] }, update)
            .await
            .map_err(|e| store_error("cannot take the apply fence", &e))?;
        Ok(result.matched_count == 1)
    }

    pub async fn end_apply(&self, name: &str, instance: &str, applied: Option<i64>) -> SyncResult<()> {
        let mut update = doc! { "$unset": { "applying": "" } };
        if let Some(version) = applied {
            update.insert("$set", doc! { "appliedVersion": version });
        }
        self.collection("")
            .update_one(doc! { "_id": name, "applying.instance": instance }, update)
            .await
            .map_err(|e| store_error("cannot release the apply fence", &e))?;
        Ok(())
    }

    pub async fn record(&self, entry: &HistoryEntry) -> SyncResult<()> {
        let mut record = mongodb::bson::to_document(entry).map_err(|e| SyncError::new(ErrorCode::Internal, format!("cannot record the history: {e}")))?;
        record.insert("at", DateTime::now());
        self.collection("_history").insert_one(record).await.map_err(|e| store_error("cannot record the history", &e))?;
        Ok(())
    }

    /// The last `limit` records, newest first: by the store's time, then `_id` (ObjectIds made
    /// by two processes within one second do not order by time).
    pub async fn history(&self, name: &str, limit: i64) -> SyncResult<Vec<HistoryEntry>> {
        let cursor = self
            .collection("_history")
            .find(doc! { "name": name })
            .sort(doc! { "at": -1, "_id": -1 })
            .limit(limit)
            .await
            .map_err(|e| store_error("cannot read the history", &e))?;
        let docs: Vec<Document> = cursor.try_collect().await.map_err(|e| store_error("cannot read the history", &e))?;
        docs.iter().map(history_of).collect()
    }

    pub async fn heartbeat(&self, instance: &Registration) -> SyncResult<()> {
        let mut record = mongodb::bson::to_document(instance).map_err(|e| SyncError::new(ErrorCode::Internal, format!("cannot register: {e}")))?;
        record.remove("id");
        record.insert("heartbeatAt", DateTime::now());
        self.collection("_instances")
            .replace_one(doc! { "_id": &instance.id }, record)
            .upsert(true)
            .await
            .map_err(|e| store_error("cannot register the instance", &e))?;
        Ok(())
    }

    pub async fn deregister(&self, id: &str) -> SyncResult<()> {
        self.collection("_instances").delete_one(doc! { "_id": id }).await.map_err(|e| store_error("cannot deregister the instance", &e))?;
        Ok(())
    }

    /// The registrations renewed within `alive`.
    pub async fn instances(&self, alive: Duration) -> SyncResult<Vec<Registration>> {
        let since = DateTime::from_millis(DateTime::now().timestamp_millis() - alive.as_millis() as i64);
        let cursor = self.collection("_instances").find(doc! { "heartbeatAt": { "$gte": since } }).limit(MAX_LISTED).await;
        let docs: Vec<Document> =
            cursor.map_err(|e| store_error("cannot list the instances", &e))?.try_collect().await.map_err(|e| store_error("cannot list the instances", &e))?;
        docs.iter().map(registration_of).collect()
    }

    /// Every stored definition, by name.
    pub async fn definitions(&self) -> SyncResult<Vec<StoredDefinition>> {
        let cursor = self.collection("").find(doc! {}).sort(doc! { "_id": 1 }).limit(MAX_LISTED).await;
        let docs: Vec<Document> = cursor
            .map_err(|e| store_error("cannot list the definitions", &e))?
            .try_collect()
            .await
            .map_err(|e| store_error("cannot list the definitions", &e))?;
        docs.iter().map(|d| stored_of(d.get_str("_id").unwrap_or_default(), d)).collect()
    }

    /// Returns once `name`'s stored document changes (a change stream), or after `timeout`.
    /// Where change streams are not available, waits `timeout` (the caller polls).
    pub async fn wait_change(&self, name: &str, timeout: Duration) -> SyncResult<bool> {
        let definitions = self.collection("");
        let watch = definitions.watch().pipeline([doc! { "$match": { "documentKey._id": name } }]).max_await_time(timeout);
        let waited = tokio::time::timeout(timeout, async {
            match watch.await {
                Ok(mut stream) => stream.next().await.is_some_and(|event| event.is_ok()),
                Err(e) => {
                    tracing::debug!("definition store: no change stream ({}); polling", cause_chain(&e));
                    tokio::time::sleep(timeout).await;
                    false
                }
            }
        })
        .await;
        Ok(waited.unwrap_or(false))
    }
}

pub(super) fn stored_of(name: &str, d: &Document) -> SyncResult<StoredDefinition> {
    let bad = |what: &str| SyncError::new(ErrorCode::Mongo, format!("the stored definition \"{name}\" has no valid {what}"));
    let number = |key: &str| whole_number(d.get(key)).and_then(|v| i64::try_from(v).ok());
    let definition: serde_json::Value = d.get_str("definition").ok().and_then(|t| serde_json::from_str(t).ok()).ok_or_else(|| bad("\"definition\""))?;
    let desired = super::desired_of(d.get_str("desired").ok()).ok_or_else(|| bad("\"desired\""))?;
    Ok(StoredDefinition {
        name: name.to_string(),
        version: number("version").ok_or_else(|| bad("\"version\""))?,
        definition,
        desired,
        updated_at: rfc3339(d.get("updatedAt")),
        applied_version: number("appliedVersion"),
    })
}

pub(super) fn history_of(d: &Document) -> SyncResult<HistoryEntry> {
    let mut entry = d.clone();
    let at = rfc3339(entry.remove("at").as_ref());
    entry.remove("_id");
    let mut entry: HistoryEntry = mongodb::bson::from_document(entry)
        .map_err(|e| SyncError::new(ErrorCode::Mongo, format!("the definition store: an unreadable history record: {e}")))?;
    entry.at = at;
    Ok(entry)
}

fn registration_of(d: &Document) -> SyncResult<Registration> {
    let mut record = d.clone();
    let heartbeat_at = rfc3339(record.remove("heartbeatAt").as_ref());
    let id = record.remove("_id").map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string)).unwrap_or_default();
    record.insert("id", id);
    let mut registration: Registration =
        mongodb::bson::from_document(record).map_err(|e| SyncError::new(ErrorCode::Mongo, format!("the definition store: an unreadable registration: {e}")))?;
    registration.heartbeat_at = heartbeat_at;
    Ok(registration)
}
