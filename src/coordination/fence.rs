//! The outputs and the checkpoint store as a lease holder uses them: every write, every index
//! operation and every checkpoint save first checks that the lease is still surely held, and
//! checkpoints are loaded and saved under the holder's term.

use std::sync::Arc;

use async_trait::async_trait;

use super::LeaseGuard;
use crate::checkpoint::{CheckpointStore, CollectionCheckpoint};
use crate::config::{CollectionConfig, Namespace};
use crate::error::SyncResult;
use crate::retry::Flow;
use crate::sink::{IndexChange, Sink, Target, WriteReport};
use crate::transform::{DocumentWrite, Rejected};

pub struct FencedSink {
    inner: Arc<dyn Sink>,
    guard: Arc<LeaseGuard>,
}

impl FencedSink {
    pub fn new(inner: Arc<dyn Sink>, guard: Arc<LeaseGuard>) -> Self {
        FencedSink { inner, guard }
    }
}

#[async_trait]
impl Sink for FencedSink {
    async fn connect(&self) -> SyncResult<()> {
        self.inner.connect().await
    }

    async fn prepare_index(&self, index: &str, collection: Option<&CollectionConfig>) -> SyncResult<Flow<()>> {
        self.guard.check()?;
        self.inner.prepare_index(index, collection).await
    }

    async fn prepare_dead_letters(&self, index: &str) -> SyncResult<Flow<()>> {
        self.guard.check()?;
        self.inner.prepare_dead_letters(index).await
    }

    async fn write(&self, namespace: &str, target: &Target, writes: Vec<DocumentWrite>) -> SyncResult<Flow<WriteReport>> {
        self.guard.check()?;
        self.inner.write(namespace, target, writes).await
    }

    async fn write_dead_letters(&self, dlq: &str, namespace: &str, index: &str, records: &[Rejected]) -> SyncResult<Flow<()>> {
        self.guard.check()?;
        self.inner.write_dead_letters(dlq, namespace, index, records).await
    }

    async fn apply(&self, change: &IndexChange) -> SyncResult<Flow<()>> {
        self.guard.check()?;
        self.inner.apply(change).await
    }

    async fn close(&self) -> SyncResult<()> {
        self.inner.close().await
    }
}

/// Checkpoints loaded and saved under the guard's term; a save is refused once the lease is
/// not surely held (and by the store, once a later term has been there).
pub struct FencedStore {
    inner: Arc<dyn CheckpointStore>,
    guard: Arc<LeaseGuard>,
}

impl FencedStore {
    pub fn new(inner: Arc<dyn CheckpointStore>, guard: Arc<LeaseGuard>) -> Self {
        FencedStore { inner, guard }
    }
}

#[async_trait]
impl CheckpointStore for FencedStore {
    async fn load(&self, ns: &Namespace) -> SyncResult<CollectionCheckpoint> {
        self.inner.load_fenced(ns, self.guard.term()).await
    }

    async fn save(&self, ns: &Namespace, checkpoint: &CollectionCheckpoint) -> SyncResult<()> {
        self.guard.check()?;
        self.inner.save_fenced(ns, checkpoint, self.guard.term()).await
    }

    async fn load_fenced(&self, ns: &Namespace, term: u64) -> SyncResult<CollectionCheckpoint> {
        self.inner.load_fenced(ns, term.max(self.guard.term())).await
    }

    async fn save_fenced(&self, ns: &Namespace, checkpoint: &CollectionCheckpoint, term: u64) -> SyncResult<()> {
        self.guard.check()?;
        self.inner.save_fenced(ns, checkpoint, term.max(self.guard.term())).await
    }

    async fn load_many(&self, namespaces: &[Namespace]) -> SyncResult<Vec<CollectionCheckpoint>> {
        self.inner.load_fenced_many(namespaces, self.guard.term()).await
    }

    async fn load_fenced_many(&self, namespaces: &[Namespace], term: u64) -> SyncResult<Vec<CollectionCheckpoint>> {
        self.inner.load_fenced_many(namespaces, term.max(self.guard.term())).await
    }

    fn busy(&self) -> bool {
        self.inner.busy()
    }

    async fn save_many(&self, checkpoints: &[(Namespace, CollectionCheckpoint)]) -> SyncResult<()> {
        self.guard.check()?;
        self.inner.save_fenced_many(checkpoints, self.guard.term()).await
    }

    async fn save_fenced_many(&self, checkpoints: &[(Namespace, CollectionCheckpoint)], term: u64) -> SyncResult<()> {
        self.guard.check()?;
        self.inner.save_fenced_many(checkpoints, term.max(self.guard.term())).await
    }
}
