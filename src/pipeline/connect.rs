//! Where a run's source, outputs and checkpoint store come from. [`MongoConnector`] builds them
//! from the configuration; another [`Connector`] can give others (a second kind of source,
//! in-memory parts in tests).

use std::sync::Arc;

use async_trait::async_trait;

use crate::checkpoint::{CheckpointStore, CollectionCheckpoint, MongoCheckpointStore};
use crate::config::{Namespace, SyncConfig};
use crate::error::SyncResult;
use crate::sink::{Sink, SinkContext};
use crate::source::mongo::MongoSource;
use crate::source::ChangeSource;
use crate::stats::Stats;

/// The parts a run reads from, writes to and keeps its progress in.
pub struct Connections {
    pub source: Arc<dyn ChangeSource>,
    pub sink: Arc<dyn Sink>,
    pub store: Arc<dyn CheckpointStore>,
}

#[async_trait]
pub trait Connector: Send + Sync {
    /// Opens the parts of one run; `sink_context` is what the outputs retry and report with.
    async fn connect(&self, config: &SyncConfig, sink_context: &SinkContext) -> SyncResult<Connections>;
}

/// MongoDB as the source and the checkpoint store, and the configured outputs (metered by the
/// monitor, when the `http` option gives one).
pub struct MongoConnector {
    pub monitor: Option<Arc<crate::monitor::Monitor>>,
}

#[async_trait]
impl Connector for MongoConnector {
    async fn connect(&self, config: &SyncConfig, sink_context: &SinkContext) -> SyncResult<Connections> {
        let source = MongoSource::connect(config, &sink_context.events).await?;
        let sink = crate::monitor::build_sink(self.monitor.as_deref(), config, sink_context)?;
        let store = MongoCheckpointStore::new(source.client(), &config.checkpoint, &config.name);
        Ok(Connections { source: Arc::new(source), sink, store: Arc::new(store) })
    }
}

/// PostgreSQL as the source and the checkpoint store (a table of the source database), and
/// the configured outputs.
pub struct PostgresConnector {
    pub monitor: Option<Arc<crate::monitor::Monitor>>,
}

#[async_trait]
impl Connector for PostgresConnector {
    async fn connect(&self, config: &SyncConfig, sink_context: &SinkContext) -> SyncResult<Connections> {
        use crate::source::postgres::{connect::PgTarget, AckedPositions, PostgresSource};
        let pg = config.postgres.as_ref().ok_or_else(|| crate::error::SyncError::config("postgres: required by the PostgreSQL connector"))?;
        let acked = AckedPositions::default();
        let source = PostgresSource::connect(config, pg, acked.clone()).await?;
        let table = Namespace::parse(&pg.checkpoint_table).map_err(|e| crate::error::SyncError::config(format!("postgres.checkpointTable: {e}")))?;
        let store = crate::checkpoint::PostgresCheckpointStore::open(PgTarget::parse(pg.uri.expose())?, &table, &config.name, acked).await?;
        let sink = crate::monitor::build_sink(self.monitor.as_deref(), config, sink_context)?;
        Ok(Connections { source: Arc::new(source), sink, store: Arc::new(store) })
    }
}

/// A checkpoint store whose saves are counted: in the collection's stats (its last checkpoint
/// time) and by the monitor, when there is one.
struct ObservedStore {
    inner: Arc<dyn CheckpointStore>,
    stats: Arc<Stats>,
    monitor: Option<Arc<crate::monitor::Monitor>>,
}

pub(super) fn observed(inner: Arc<dyn CheckpointStore>, stats: Arc<Stats>, monitor: Option<Arc<crate::monitor::Monitor>>) -> Arc<dyn CheckpointStore> {
    Arc::new(ObservedStore { inner, stats, monitor })
}

#[async_trait]
impl CheckpointStore for ObservedStore {
    async fn load(&self, ns: &Namespace) -> SyncResult<CollectionCheckpoint> {
        self.inner.load(ns).await
    }

    async fn save(&self, ns: &Namespace, checkpoint: &CollectionCheckpoint) -> SyncResult<()> {
        self.inner.save(ns, checkpoint).await?;
        self.saved(ns);
        Ok(())
    }

    async fn load_fenced(&self, ns: &Namespace, term: u64) -> SyncResult<CollectionCheckpoint> {
        self.inner.load_fenced(ns, term).await
    }

    async fn save_fenced(&self, ns: &Namespace, checkpoint: &CollectionCheckpoint, term: u64) -> SyncResult<()> {
        self.inner.save_fenced(ns, checkpoint, term).await?;
        self.saved(ns);
        Ok(())
    }
}

impl ObservedStore {
    fn saved(&self, ns: &Namespace) {
        let namespace = ns.to_string();
        self.stats.collection(&namespace).checkpointed();
        if let Some(monitor) = &self.monitor {
            monitor.checkpoint_saved(&namespace);
        }
    }
}
