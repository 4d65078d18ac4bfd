//! What the monitor shows: one snapshot of the sync, served as `/stats`, streamed to the status
//! page, and read by `/healthz`, `/readyz` and `/metrics`. Everything the HTTP side needs goes
//! through [`StatusSource`], so where the figures come from (today the event-fed
//! [`super::board::StatusBoard`]; later the engine's own per-collection stats) can change
//! without touching the endpoints, the metrics or the page.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};

use crate::event::SyncState;
use crate::stats::StatsSnapshot;

/// Gives the current snapshot; called once per request or page update.
pub trait StatusSource: Send + Sync + 'static {
    fn snapshot(&self) -> StatusSnapshot;
}

/// Whether this instance writes (active) or waits to take over (standby).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Active,
    Standby,
}

impl Role {
    /// The role of this instance, as the engine's lease decided it: standby while another
    /// instance with the same name holds the lease (or, in a partitioned group, while it owns
    /// no collection), active otherwise.
    pub fn current(engine: Option<&crate::stats::RoleSnapshot>) -> Role {
        match engine {
            Some(r) if r.role == crate::stats::Role::Standby => Role::Standby,
            Some(r) if r.role == crate::stats::Role::Member && r.owned_collections.is_empty() => Role::Standby,
            _ => Role::Active,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
        }
    }
}

/// What one collection is doing (the engine's `stats::CollectionPhase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CollectionPhase {
    /// Preparing, or not copying or streaming yet.
    Starting,
    Copying,
    Streaming,
    /// `mode: 'copy'`: its copy is finished.
    Done,
    Stopped,
    Failed,
}

impl From<crate::stats::CollectionPhase> for CollectionPhase {
    fn from(phase: crate::stats::CollectionPhase) -> Self {
        use crate::stats::CollectionPhase as P;
        match phase {
            P::Starting => CollectionPhase::Starting,
            P::Copying => CollectionPhase::Copying,
            P::Streaming => CollectionPhase::Streaming,
            P::Done => CollectionPhase::Done,
            P::Stopped => CollectionPhase::Stopped,
            P::Failed => CollectionPhase::Failed,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusSnapshot {
    /// The sync's `name`.
    pub name: String,
    pub version: &'static str,
    #[serde(serialize_with = "state_name")]
    pub state: SyncState,
    /// Since when it is in this state (ms since the Unix epoch).
    pub state_since: u64,
    pub role: Role,
    /// The lease term this instance holds or waits behind, when it coordinates with others.
    pub term: Option<u64>,
    /// A member of a partitioned group (`instances`): the collections it owns now.
    pub owned_collections: Option<Vec<String>>,
    /// Why the sync failed (secrets redacted), while it is `failed`.
    pub error: Option<ErrorInfo>,
    /// The search server, once it answered (e.g. `elasticsearch 8.15.0`).
    pub server: Option<String>,
    /// When the monitor started, and now (ms since the Unix epoch).
    pub started_at: u64,
    pub now: u64,
    pub totals: Totals,
    /// By `"db.collection"`.
    pub collections: BTreeMap<String, CollectionStatus>,
    pub recent: Recent,
    pub process: ProcessUsage,
}

fn state_name<S: Serializer>(state: &SyncState, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(state.as_str())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorInfo {
    pub code: &'static str,
    pub message: String,
}

/// The sync's running totals (`sync.stats()`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub copied: u64,
    pub streamed: u64,
    pub indexed: u64,
    pub deleted: u64,
    pub conflicts: u64,
    pub dead_letters: u64,
    pub retries: u64,
    pub batches: u64,
    pub values_altered: u64,
}

impl From<&StatsSnapshot> for Totals {
    fn from(s: &StatsSnapshot) -> Self {
        Totals {
            copied: s.copied,
            streamed: s.streamed,
            indexed: s.indexed,
            deleted: s.deleted,
            conflicts: s.conflicts,
            dead_letters: s.dead_letters,
            retries: s.retries,
            batches: s.batches,
            values_altered: s.values_altered,
        }
    }
}

/// One collection; times in ms since the Unix epoch, durations in ms.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectionStatus {
    pub index: String,
    pub phase: CollectionPhase,
    /// Documents copied (over every run of the copy) of about `total_estimate`.
    pub copied: u64,
    pub total_estimate: u64,
    /// Copy rate (documents/s) and time left at that rate, while copying.
    pub rate: Option<f64>,
    pub eta_seconds: Option<f64>,
    /// Change events applied.
    pub streamed: u64,
    pub indexed: u64,
    pub deleted: u64,
    pub conflicts: u64,
    pub dead_letters: u64,
    /// Retries in this collection's task.
    pub retries: u64,
    pub checkpoints: u64,
    /// How far behind MongoDB the index is: at the last acknowledged batch, the time since its
    /// newest change was made (to the second); more while a batch waits longer than that.
    pub lag_ms: Option<u64>,
    /// Cluster time of the newest change applied.
    pub last_change_at: Option<u64>,
    /// When the last batch was acknowledged.
    pub last_batch_at: Option<u64>,
    pub last_checkpoint_at: Option<u64>,
    pub checkpoint_age_ms: Option<u64>,
    /// Batches handed to the outputs and not acknowledged yet, and their bytes.
    pub in_flight_batches: u64,
    pub in_flight_bytes: u64,
}

/// The latest warnings (retries included) and dead letters, newest last.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Recent {
    pub warnings: Vec<Warning>,
    /// Warnings seen in all, of which `warnings` are the latest.
    pub warnings_seen: u64,
    pub dead_letters: Vec<DeadLetter>,
    pub dead_letters_seen: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WarningKind {
    Warning,
    Retry,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Warning {
    pub at: u64,
    pub kind: WarningKind,
    pub namespace: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub at: u64,
    pub namespace: String,
    pub index: String,
    pub id: String,
    pub reason: String,
}

/// This process's resources, where the platform tells them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessUsage {
    pub rss_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
}
