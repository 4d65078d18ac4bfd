//! Several outputs at once: each call goes to all of them concurrently and succeeds only when
//! all did, so the checkpoint never gets ahead of the slowest output.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::{join_all, try_join_all};

use super::{IndexChange, Sink, Target, WriteReport};
use crate::config::CollectionConfig;
use crate::error::SyncResult;
use crate::transform::{DocumentWrite, Rejected};

pub struct FanOut {
    sinks: Vec<Arc<dyn Sink>>,
}

impl FanOut {
    pub fn new(sinks: Vec<Arc<dyn Sink>>) -> Self {
        FanOut { sinks }
    }
}

#[async_trait]
impl Sink for FanOut {
    async fn connect(&self) -> SyncResult<()> {
        try_join_all(self.sinks.iter().map(|s| s.connect())).await.map(drop)
    }

    async fn prepare_index(&self, index: &str, collection: Option<&CollectionConfig>) -> SyncResult<()> {
        try_join_all(self.sinks.iter().map(|s| s.prepare_index(index, collection))).await.map(drop)
    }

    async fn prepare_dead_letters(&self, index: &str) -> SyncResult<()> {
        try_join_all(self.sinks.iter().map(|s| s.prepare_dead_letters(index))).await.map(drop)
    }

    /// The first output's counts stand for the batch; a document any output set aside is a
    /// dead letter (once).
    async fn write(&self, namespace: &str, target: &Target, writes: Vec<DocumentWrite>) -> SyncResult<WriteReport> {
        let reports = try_join_all(self.sinks.iter().map(|s| s.write(namespace, target, writes.clone()))).await?;
        let mut reports = reports.into_iter();
        let mut merged = reports.next().unwrap_or_default();
        let mut seen: HashSet<String> = merged.dead_letters.iter().map(|r| r.id.clone()).collect();
        for report in reports {
            for rejected in report.dead_letters {
                if seen.insert(rejected.id.clone()) {
                    merged.dead_letters.push(rejected);
                }
            }
        }
        merged.outcome.dead_letters = merged.dead_letters.len() as u64;
        Ok(merged)
    }

    async fn write_dead_letters(&self, dlq: &str, namespace: &str, index: &str, records: &[Rejected]) -> SyncResult<()> {
        try_join_all(self.sinks.iter().map(|s| s.write_dead_letters(dlq, namespace, index, records))).await.map(drop)
    }

    async fn apply(&self, change: &IndexChange) -> SyncResult<()> {
        try_join_all(self.sinks.iter().map(|s| s.apply(change))).await.map(drop)
    }

    /// Every output is closed, even when one fails; the first failure is reported.
    async fn close(&self) -> SyncResult<()> {
        join_all(self.sinks.iter().map(|s| s.close())).await.into_iter().collect::<SyncResult<Vec<()>>>().map(drop)
    }
}
