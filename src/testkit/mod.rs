//! Test support for the engine: a scripted change source, an in-memory sink and the in-memory
//! checkpoint store, wired into a [`SyncEngine`] through its [`Connector`] seam.

pub mod bson;
pub mod sink;
pub mod source;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::checkpoint::MemoryCheckpointStore;
use crate::config::{CheckpointConfig, CollectionConfig, MongoConfig, Namespace, OutputConfig, RetryConfig, Secret, SyncConfig, SyncMode};
use crate::coordination::{GroupStore, LeaseStore, MemoryGroupStore, MemoryLeaseStore};
use crate::error::SyncResult;
use crate::event::{EventBus, SyncEvent};
use crate::pipeline::{Connections, Connector};
use crate::sink::SinkContext;

pub use sink::MemorySink;
pub use source::FakeSource;

/// One set of parts: every run of every engine built on it shares them, as restarts share
/// MongoDB, the search server and the checkpoint store.
#[derive(Clone, Default)]
pub struct Parts {
    pub source: FakeSource,
    pub sink: Arc<MemorySink>,
    pub store: Arc<MemoryCheckpointStore>,
    /// The lease the engines built on these parts contend for; none: no lease.
    pub lease: Option<Arc<MemoryLeaseStore>>,
    /// Where the members of a partitioned group meet (with `instances`).
    pub group: Option<Arc<MemoryGroupStore>>,
}

#[async_trait]
impl Connector for Parts {
    async fn connect(&self, _config: &SyncConfig, _sink_context: &SinkContext) -> SyncResult<Connections> {
        Ok(Connections { source: Arc::new(self.source.clone()), sink: self.sink.clone(), store: self.store.clone() })
    }

    async fn lease(&self, _config: &SyncConfig, _events: &EventBus) -> SyncResult<Option<Arc<dyn LeaseStore>>> {
        Ok(self.lease.clone().map(|l| l as Arc<dyn LeaseStore>))
    }

    async fn group(&self, _config: &SyncConfig, _events: &EventBus) -> SyncResult<Option<Arc<dyn GroupStore>>> {
        Ok(self.group.clone().map(|g| g as Arc<dyn GroupStore>))
    }

    fn to_shared(&self) -> Arc<dyn Connector> {
        Arc::new(self.clone())
    }
}

pub fn ns(text: &str) -> Namespace {
    Namespace::parse(text).expect("a namespace")
}

/// A valid configuration syncing `collections` (index: the collection's name), with quick
/// batches and retries.
pub fn config(collections: &[&str]) -> SyncConfig {
    let mut config = SyncConfig {
        name: "test".into(),
        mongo: MongoConfig { uri: Secret::new("mongodb://scripted"), tls: None, ..Default::default() },
        postgres: None,
        elasticsearch: None,
        outputs: vec![OutputConfig::Stdout],
        collections: collections.iter().map(|c| CollectionConfig::new(ns(c).coll, ns(c))).collect(),
        index_template: crate::config::DEFAULT_INDEX_TEMPLATE.into(),
        discovery: None,
        checkpoint: CheckpointConfig::default(),
        batch: Default::default(),
        retry: RetryConfig { max_attempts: None, initial_delay: Duration::from_millis(5), max_delay: Duration::from_millis(20) },
        on_drop: Default::default(),
        on_rename: Default::default(),
        on_history_lost: Default::default(),
        mode: SyncMode::CopyAndStream,
        copy_readers: 1,
        copy_range_min_docs: 100_000,
        dead_letter_index: None,
        http: None,
        lease: Default::default(),
        instances: None,
        search: None,
        config_store: None,
        rate_limit: None,
    };
    config.batch.flush_interval = Duration::from_millis(20);
    config
}

/// Everything an engine emitted.
#[derive(Clone, Default)]
pub struct Events(pub Arc<Mutex<Vec<SyncEvent>>>);

impl Events {
    pub fn all(&self) -> Vec<SyncEvent> {
        self.0.lock().expect("events").clone()
    }

    pub fn find<T>(&self, f: impl Fn(&SyncEvent) -> Option<T>) -> Option<T> {
        self.all().iter().find_map(f)
    }

    /// The collection-level changes, as (namespace, operation).
    pub fn changes(&self) -> Vec<(String, String)> {
        self.all()
            .iter()
            .filter_map(|e| match e {
                SyncEvent::Change { namespace, change } => Some((namespace.clone(), change.operation().to_string())),
                _ => None,
            })
            .collect()
    }
}

/// Polls `check` until it gives a value; panics naming `what` after 10 s.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
