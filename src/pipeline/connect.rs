//! Where a run's source, outputs and checkpoint store come from. [`MongoConnector`] builds them
//! from the configuration; another [`Connector`] can give others (a second kind of source,
//! in-memory parts in tests).

use std::sync::Arc;

use async_trait::async_trait;

use crate::checkpoint::{CheckpointStore, MongoCheckpointStore};
use crate::config::SyncConfig;
use crate::error::SyncResult;
use crate::sink::{self, Sink, SinkContext};
use crate::source::mongo::MongoSource;
use crate::source::ChangeSource;

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

/// MongoDB as the source and the checkpoint store, and the configured outputs.
pub struct MongoConnector;

#[async_trait]
impl Connector for MongoConnector {
    async fn connect(&self, config: &SyncConfig, sink_context: &SinkContext) -> SyncResult<Connections> {
        let source = MongoSource::connect(config, &sink_context.events).await?;
        let sink = sink::build(config, sink_context)?;
        let store = MongoCheckpointStore::new(source.client(), &config.checkpoint, &config.name);
        Ok(Connections { source: Arc::new(source), sink, store: Arc::new(store) })
    }
}
