//! Stored definitions: each sync's options kept in a MongoDB collection or an Elasticsearch
//! index (the `configStore`), versioned, with an audit history and the instances running them.
//!
//! - the definitions (`<collection>` / `<index>`): one document per sync `{ _id: name, version,
//!   definition (JSON text, secrets sealed), desired: running | stopped, appliedVersion, applying }`;
//! - the history (`<collection>_history` / `<index>-history`): one record per change (written,
//!   applied, rejected, started, stopped);
//! - the registrations (`<collection>_instances` / `<index>-instances`): one per running
//!   instance, renewed by its heartbeat.
//!
//! Writes are fenced: a write names the version it replaces (compare-and-set) and is refused
//! while an instance applies the stored version, so two writers, or a writer and a live
//! reconfiguration, never interleave. Nothing here decrypts: stored secrets stay sealed.

mod elastic;
mod mongo;
mod sealed;
#[cfg(test)]
mod tests;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use sealed::check_sealed;

use crate::config::StoreConfig;
use crate::error::{ErrorCode, SyncError, SyncResult};

/// Largest definition stored (its JSON text).
pub const MAX_DEFINITION_BYTES: usize = 1024 * 1024;
/// Most history records or definitions returned at once.
pub const MAX_LISTED: i64 = 1000;
/// How long an instance that began applying a version keeps the fence without finishing.
const APPLY_FENCE: Duration = Duration::from_secs(600);

/// Whether the instances of a stored sync should run it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Desired {
    Running,
    Stopped,
}

impl Desired {
    pub fn as_str(self) -> &'static str {
        match self {
            Desired::Running => "running",
            Desired::Stopped => "stopped",
        }
    }
}

/// What a history record tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// A new version was stored.
    Written,
    /// An instance carried a version out.
    Applied,
    /// An instance refused a version (it keeps running the last good one).
    Rejected,
    /// The sync was asked to run.
    Started,
    /// The sync was asked to stop.
    Stopped,
}

/// One sync's stored definition.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredDefinition {
    pub name: String,
    pub version: i64,
    /// The options as written (sealed secrets stay sealed).
    pub definition: serde_json::Value,
    pub desired: Desired,
    pub updated_at: String,
    /// The version an instance applied last.
    pub applied_version: Option<i64>,
}

/// One record of the audit history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub name: String,
    pub version: i64,
    pub outcome: Outcome,
    /// What changed (a plan's text), or why a version was refused.
    pub summary: String,
    /// Who: an instance id, `http`, or the writer's name.
    pub by: String,
    /// When (RFC 3339, set by the store).
    #[serde(default)]
    pub at: String,
}

/// A running instance, as it registers itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    pub id: String,
    pub name: String,
    pub host: String,
    pub pid: u32,
    /// The sync's state (`streaming`, `stopped`…).
    pub state: String,
    /// The version it runs.
    pub version: i64,
    /// When it last renewed its registration (RFC 3339, set by the store).
    #[serde(default)]
    pub heartbeat_at: String,
}

/// A stored definition as the status page shows it: no options, so no secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DefinitionSummary {
    pub name: String,
    pub version: i64,
    pub desired: Desired,
    pub updated_at: String,
    pub applied_version: Option<i64>,
    /// The collections (or tables) it names.
    pub collections: Vec<String>,
    /// The instances that renewed their registration recently.
    pub instances: Vec<Registration>,
}

/// The store, on one of its backends; the same operations and guarantees on both.
pub enum DefinitionStore {
    Mongo(mongo::MongoStore),
    Elasticsearch(elastic::EsStore),
}

/// Runs the same call on whichever backend `$store` is.
macro_rules! on_backend {
    ($store:expr, $s:ident => $call:expr) => {
        match $store {
            DefinitionStore::Mongo($s) => $call,
            DefinitionStore::Elasticsearch($s) => $call,
        }
    };
}

fn conflict(message: String) -> SyncError {
    SyncError::new(ErrorCode::Conflict, message)
}

/// `desired` as stored (absent: running); `None` when it is something else.
fn desired_of(text: Option<&str>) -> Option<Desired> {
    match text {
        Some("stopped") => Some(Desired::Stopped),
        Some("running") | None => Some(Desired::Running),
        Some(_) => None,
    }
}

impl DefinitionStore {
    /// Connects to the store (and checks it answers; an Elasticsearch store creates its indices).
    pub async fn connect(config: &StoreConfig) -> SyncResult<Self> {
        Ok(match config {
            StoreConfig::Mongo(c) => DefinitionStore::Mongo(mongo::MongoStore::connect(c).await?),
            StoreConfig::Elasticsearch(c) => DefinitionStore::Elasticsearch(elastic::EsStore::connect(c).await?),
        })
    }

    /// The stored definition of `name`, if any.
    pub async fn read(&self, name: &str) -> SyncResult<Option<StoredDefinition>> {
        on_backend!(self, s => s.read(name).await)
    }

    /// Stores `definition` as the next version of `name`, if the stored version is still
    /// `expected` (0: none stored yet; `None`: the version read now) and no instance is applying
    /// it; else `ERR_CONFLICT`. Secrets must be sealed. Returns the new version.
    pub async fn write(&self, name: &str, definition: &serde_json::Value, expected: Option<i64>, by: &str) -> SyncResult<i64> {
        check_sealed(definition, &format!("syncs.{name}"))?;
        let text = definition.to_string();
        if text.len() > MAX_DEFINITION_BYTES {
            return Err(SyncError::config(format!("syncs.{name}: the definition is over {MAX_DEFINITION_BYTES} bytes")));
        }
        let expected = match expected {
            Some(expected) => expected,
            None => self.read(name).await?.map_or(0, |c| c.version),
        };
        if !on_backend!(self, s => s.put(name, &text, expected).await)? {
            return Err(self.refusal(name, expected).await);
        }
        let version = expected + 1;
        self.record(&HistoryEntry { name: name.into(), version, outcome: Outcome::Written, summary: "stored".into(), by: by.into(), at: String::new() })
            .await?;
        Ok(version)
    }

    /// Why a write expecting `expected` was refused.
    async fn refusal(&self, name: &str, expected: i64) -> SyncError {
        match self.read(name).await {
            Ok(Some(now)) if now.version != expected => {
                conflict(format!("syncs.{name}: the stored definition is at version {}, not {expected}: another apply came first (plan again)", now.version))
            }
            Ok(Some(now)) => conflict(format!("syncs.{name}: an instance is applying version {}; apply again once it is done", now.version)),
            Ok(None) => conflict(format!("syncs.{name}: no definition is stored, not version {expected}")),
            Err(e) => e,
        }
    }

    /// Asks the instances of `name` to run or stop it; `ERR_CONFIG` when none is stored.
    pub async fn set_desired(&self, name: &str, desired: Desired, by: &str) -> SyncResult<i64> {
        let version = on_backend!(self, s => s.set_desired(name, desired).await)?
            .ok_or_else(|| SyncError::config(format!("no stored definition is named \"{name}\"")))?;
        let outcome = if desired == Desired::Running { Outcome::Started } else { Outcome::Stopped };
        let summary = format!("asked to be {}", desired.as_str());
        self.record(&HistoryEntry { name: name.into(), version, outcome, summary, by: by.into(), at: String::new() }).await?;
        Ok(version)
    }

    /// Takes the fence to apply `version` of `name`: false when the stored version moved on or
    /// another instance applies it (then nothing is to be done now).
    pub async fn begin_apply(&self, name: &str, version: i64, instance: &str) -> SyncResult<bool> {
        on_backend!(self, s => s.begin_apply(name, version, instance).await)
    }

    /// Releases the fence taken by `instance`; `applied`: the version it carried out.
    pub async fn end_apply(&self, name: &str, instance: &str, applied: Option<i64>) -> SyncResult<()> {
        on_backend!(self, s => s.end_apply(name, instance, applied).await)
    }

    /// Adds a record to the audit history (its time is the store's).
    pub async fn record(&self, entry: &HistoryEntry) -> SyncResult<()> {
        on_backend!(self, s => s.record(entry).await)
    }

    /// The last `limit` records of `name`'s history, oldest first.
    pub async fn history(&self, name: &str, limit: i64) -> SyncResult<Vec<HistoryEntry>> {
        let limit = limit.clamp(1, MAX_LISTED);
        let mut entries = on_backend!(self, s => s.history(name, limit).await)?;
        entries.reverse();
        Ok(entries)
    }

    /// Registers `instance` (or renews its registration).
    pub async fn heartbeat(&self, instance: &Registration) -> SyncResult<()> {
        on_backend!(self, s => s.heartbeat(instance).await)
    }

    /// Removes the registration of an instance that stops.
    pub async fn deregister(&self, id: &str) -> SyncResult<()> {
        on_backend!(self, s => s.deregister(id).await)
    }

    /// Every stored definition (no options: no secret) with the instances that renewed their
    /// registration within `alive`.
    pub async fn overview(&self, alive: Duration) -> SyncResult<Vec<DefinitionSummary>> {
        let instances = on_backend!(self, s => s.instances(alive).await)?;
        let definitions = on_backend!(self, s => s.definitions().await)?;
        Ok(definitions
            .into_iter()
            .map(|stored| {
                let running = instances.iter().filter(|i| i.name == stored.name).cloned().collect();
                summary_of(stored, running)
            })
            .collect())
    }

    /// Returns true once `name`'s stored document changes, false after `timeout` (a MongoDB
    /// store follows a change stream where it can, an Elasticsearch store polls).
    pub async fn wait_change(&self, name: &str, timeout: Duration) -> SyncResult<bool> {
        on_backend!(self, s => s.wait_change(name, timeout).await)
    }
}

fn summary_of(stored: StoredDefinition, instances: Vec<Registration>) -> DefinitionSummary {
    let listed = |key: &str, field: &str| -> Vec<String> {
        let entries = stored.definition.get(key).and_then(serde_json::Value::as_array).cloned().unwrap_or_default();
        entries.iter().filter_map(|e| e.as_str().or_else(|| e.get(field).and_then(serde_json::Value::as_str)).map(str::to_string)).collect()
    };
    let mut collections = listed("collections", "namespace");
    collections.extend(listed("tables", "table"));
    DefinitionSummary {
        name: stored.name,
        version: stored.version,
        desired: stored.desired,
        updated_at: stored.updated_at,
        applied_version: stored.applied_version,
        collections,
        instances,
    }
}
