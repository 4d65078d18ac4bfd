//! Where a run's source, outputs and checkpoint store come from. [`MongoConnector`] builds them
//! from the configuration; another [`Connector`] can give others (a second kind of source,
//! in-memory parts in tests).

use std::sync::Arc;

use async_trait::async_trait;

use crate::checkpoint::{CheckpointStore, CollectionCheckpoint, MongoCheckpointStore};
use crate::config::{Namespace, SyncConfig};
use crate::coordination::{GroupStore, LeaseStore, MongoGroupStore, MongoLeaseStore};
use crate::error::SyncResult;
use crate::event::EventBus;
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
pub trait Connector: Send + Sync + 'static {
    /// Opens the parts of one run (of one lease term); `sink_context` is what the outputs retry
    /// and report with.
    async fn connect(&self, config: &SyncConfig, sink_context: &SinkContext) -> SyncResult<Connections>;

    /// Where the instances with the same `name` contend for the lease; none: this instance
    /// syncs without one.
    async fn lease(&self, config: &SyncConfig, events: &EventBus) -> SyncResult<Option<Arc<dyn LeaseStore>>>;

    /// Where the members of a partitioned group (`instances`) meet and keep their collections'
    /// leases; none: this connector cannot coordinate a group.
    async fn group(&self, _config: &SyncConfig, _events: &EventBus) -> SyncResult<Option<Arc<dyn GroupStore>>> {
        Ok(None)
    }

    /// This connector, to connect again for later lease terms.
    fn to_shared(&self) -> Arc<dyn Connector>;
}

/// MongoDB as the source, the checkpoint store and the lease, and the configured outputs
/// (metered by the monitor, when the `http` option gives one).
#[derive(Clone)]
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

    async fn lease(&self, config: &SyncConfig, events: &EventBus) -> SyncResult<Option<Arc<dyn LeaseStore>>> {
        let source = MongoSource::connect(config, events).await?;
        Ok(Some(Arc::new(MongoLeaseStore::new(source.client(), &config.checkpoint, &config.name))))
    }

    async fn group(&self, config: &SyncConfig, events: &EventBus) -> SyncResult<Option<Arc<dyn GroupStore>>> {
        let Some(instances) = &config.instances else { return Ok(None) };
        let source = MongoSource::connect(config, events).await?;
        Ok(Some(Arc::new(MongoGroupStore::new(source.client(), &config.checkpoint, &config.name, &instances.group))))
    }

    fn to_shared(&self) -> Arc<dyn Connector> {
        Arc::new(self.clone())
    }
}

/// PostgreSQL as the source and the checkpoint store (a table of the source database), and
/// the configured outputs. No lease yet (it lives in MongoDB): one instance per `name`.
#[derive(Clone)]
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
        let store = crate::checkpoint::PostgresCheckpointStore::open(PgTarget::new(pg)?, &table, &config.name, acked).await?;
        let sink = crate::monitor::build_sink(self.monitor.as_deref(), config, sink_context)?;
        Ok(Connections { source: Arc::new(source), sink, store: Arc::new(store) })
    }

    async fn lease(&self, _config: &SyncConfig, _events: &EventBus) -> SyncResult<Option<Arc<dyn LeaseStore>>> {
        Ok(None)
    }

    fn to_shared(&self) -> Arc<dyn Connector> {
        Arc::new(self.clone())
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
        let started = std::time::Instant::now();
        self.inner.save(ns, checkpoint).await?;
        self.stats.record_stage(crate::stats::Stage::CheckpointSave, started.elapsed());
        self.saved(ns);
        Ok(())
    }

    async fn load_fenced(&self, ns: &Namespace, term: u64) -> SyncResult<CollectionCheckpoint> {
        self.inner.load_fenced(ns, term).await
    }

    async fn load_many(&self, namespaces: &[Namespace]) -> SyncResult<Vec<CollectionCheckpoint>> {
        self.inner.load_many(namespaces).await
    }

    async fn load_fenced_many(&self, namespaces: &[Namespace], term: u64) -> SyncResult<Vec<CollectionCheckpoint>> {
        self.inner.load_fenced_many(namespaces, term).await
    }

    fn busy(&self) -> bool {
        self.inner.busy()
    }

    async fn save_many(&self, checkpoints: &[(Namespace, CollectionCheckpoint)]) -> SyncResult<()> {
        let started = std::time::Instant::now();
        self.inner.save_many(checkpoints).await?;
        self.stats.record_stage(crate::stats::Stage::CheckpointSave, started.elapsed());
        checkpoints.iter().for_each(|(ns, _)| self.saved(ns));
        Ok(())
    }

    async fn save_fenced_many(&self, checkpoints: &[(Namespace, CollectionCheckpoint)], term: u64) -> SyncResult<()> {
        let started = std::time::Instant::now();
        self.inner.save_fenced_many(checkpoints, term).await?;
        self.stats.record_stage(crate::stats::Stage::CheckpointSave, started.elapsed());
        checkpoints.iter().for_each(|(ns, _)| self.saved(ns));
        Ok(())
    }

    async fn save_fenced(&self, ns: &Namespace, checkpoint: &CollectionCheckpoint, term: u64) -> SyncResult<()> {
        let started = std::time::Instant::now();
        self.inner.save_fenced(ns, checkpoint, term).await?;
        self.stats.record_stage(crate::stats::Stage::CheckpointSave, started.elapsed());
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
