//! What the engine tells its host while it runs. The binding turns these into JS objects.

use std::sync::{Arc, RwLock};

use crate::config::Namespace;
use crate::error::SyncError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    Idle,
    Starting,
    /// Another instance with the same `name` holds the lease; this one waits to take over.
    Standby,
    Copying,
    Streaming,
    Stopping,
    Stopped,
    Failed,
}

impl SyncState {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::Idle => "idle",
            SyncState::Starting => "starting",
            SyncState::Standby => "standby",
            SyncState::Copying => "copying",
            SyncState::Streaming => "streaming",
            SyncState::Stopping => "stopping",
            SyncState::Stopped => "stopped",
            SyncState::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Copy,
    Stream,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Copy => "copy",
            Phase::Stream => "stream",
        }
    }
}

/// A collection-level change: a change of the collection as a whole (read from its change
/// stream), or a step the engine took for a whole collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollectionChange {
    /// The collection was dropped (handled per `onDrop`).
    Drop,
    /// Its database was dropped (handled per `onDrop`).
    DropDatabase,
    /// The collection was renamed to `to` (handled per `onRename`).
    Rename { to: Namespace },
    /// Its change stream ended after a drop or rename and was opened again.
    Invalidate,
    /// A re-copy finished: `index` now serves the collection (the configured name is its alias).
    Resync { index: String },
    /// The `namespaces` patterns found the collection; it is synced into `index`.
    Discovered { index: String },
}

impl CollectionChange {
    /// The name of the change, as events give it.
    pub fn operation(&self) -> &'static str {
        match self {
            CollectionChange::Drop => "drop",
            CollectionChange::DropDatabase => "dropDatabase",
            CollectionChange::Rename { .. } => "rename",
            CollectionChange::Invalidate => "invalidate",
            CollectionChange::Resync { .. } => "resync",
            CollectionChange::Discovered { .. } => "discovered",
        }
    }

    /// What the change points to: a rename's new namespace, or the index of a re-copy or of a
    /// found collection.
    pub fn to(&self) -> Option<String> {
        match self {
            CollectionChange::Rename { to } => Some(to.to_string()),
            CollectionChange::Resync { index } | CollectionChange::Discovered { index } => Some(index.clone()),
            CollectionChange::Drop | CollectionChange::DropDatabase | CollectionChange::Invalidate => None,
        }
    }
}

/// A change of this instance's role among the instances with the same `name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeadershipChange {
    /// This instance took the lease: it syncs.
    Acquired,
    /// This instance lost the lease (another took over while it could not renew): it stopped
    /// writing and waits again.
    Lost,
    /// Another instance holds the lease: this one waits.
    Standby,
}

impl LeadershipChange {
    pub fn as_str(self) -> &'static str {
        match self {
            LeadershipChange::Acquired => "acquired",
            LeadershipChange::Lost => "lost",
            LeadershipChange::Standby => "standby",
        }
    }
}

/// Outcome of one acknowledged `_bulk` batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub indexed: u64,
    pub deleted: u64,
    /// Deletes of documents the index did not hold (never written, or already deleted).
    pub not_found: u64,
    /// Writes Elasticsearch refused because it already holds a newer version: expected, not errors.
    pub conflicts: u64,
    pub dead_letters: u64,
}

/// Why the Elasticsearch output changed the size of its `_bulk` requests (`batch.adaptive`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchResize {
    /// Replies came back in under half the target latency: requests grow.
    Grew,
    /// A reply took longer than the target latency: requests shrink by a quarter.
    ShrankSlow,
    /// The server pushed back (429, a full queue, 413): requests are halved.
    ShrankPressure,
}

impl BatchResize {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchResize::Grew => "fast",
            BatchResize::ShrankSlow => "slow",
            BatchResize::ShrankPressure => "pressure",
        }
    }
}

#[derive(Debug, Clone)]
pub enum SyncEvent {
    State {
        state: SyncState,
        error: Option<SyncError>,
    },
    /// The search server answered: its distribution ("elasticsearch", "opensearch") and version.
    Connected {
        distribution: String,
        version: String,
    },
    /// Copy progress of one collection; `done` on its last report.
    Progress {
        namespace: String,
        index: String,
        copied: u64,
        total_estimate: u64,
        /// Documents per second over this run of the copy.
        rate: f64,
        /// Seconds left at that rate (unknown before the first batch).
        eta_seconds: Option<f64>,
        done: bool,
    },
    Batch {
        namespace: String,
        index: String,
        phase: Phase,
        outcome: BatchOutcome,
        took_ms: u64,
    },
    Retry {
        attempt: u32,
        delay_ms: u64,
        cause: String,
    },
    /// A document that could not be written and was set aside, with why.
    DeadLetter {
        namespace: String,
        index: String,
        id: String,
        reason: String,
    },
    /// A change that is not a document write, and what the engine did about it.
    Change {
        namespace: String,
        change: CollectionChange,
    },
    Warning {
        namespace: String,
        message: String,
    },
    /// This instance's role changed: `term` is the lease's (this instance's when acquired or
    /// lost, the holder's when standing by), `holder` the instance holding it.
    Leadership {
        change: LeadershipChange,
        term: u64,
        holder: String,
    },
    /// The collections this instance syncs now (empty while standing by; a partitioned
    /// member's share, which changes as members join and leave).
    Assignment {
        collections: Vec<String>,
    },
    /// The Elasticsearch output changed the most a `_bulk` request carries.
    BatchSize {
        docs: u64,
        bytes: u64,
        cause: BatchResize,
    },
}

type Listener = Arc<dyn Fn(&SyncEvent) + Send + Sync>;

/// Fan-out to every registered listener. Listeners must not block: the binding's one
/// queues the event for the JS thread and returns.
#[derive(Clone, Default)]
pub struct EventBus {
    listeners: Arc<RwLock<Vec<Listener>>>,
}

impl EventBus {
    pub fn subscribe(&self, listener: impl Fn(&SyncEvent) + Send + Sync + 'static) {
        self.listeners.write().expect("listener lock").push(Arc::new(listener));
    }

    pub fn emit(&self, event: SyncEvent) {
        match &event {
            SyncEvent::Warning { namespace, message } => tracing::warn!(namespace, "{message}"),
            SyncEvent::Retry { attempt, delay_ms, cause } => tracing::warn!(attempt, delay_ms, "retrying: {cause}"),
            other => tracing::debug!(event = ?other),
        }
        let listeners = self.listeners.read().expect("listener lock").clone();
        for listener in listeners {
            listener(&event);
        }
    }
}
