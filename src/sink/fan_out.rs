//! Several outputs at once: each call goes to all of them concurrently and succeeds only when
//! all did, so the checkpoint never gets ahead of the slowest output.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::{join_all, try_join_all};

use super::{IndexChange, Sink, Target, WriteReport};
use crate::config::CollectionConfig;
use crate::error::SyncResult;
use crate::retry::Flow;
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

    async fn prepare_index(&self, index: &str, collection: Option<&CollectionConfig>) -> SyncResult<Flow<()>> {
        all_done(try_join_all(self.sinks.iter().map(|s| s.prepare_index(index, collection))).await?)
    }

    async fn prepare_dead_letters(&self, index: &str) -> SyncResult<Flow<()>> {
        all_done(try_join_all(self.sinks.iter().map(|s| s.prepare_dead_letters(index))).await?)
    }

    /// The first output's counts stand for the batch; a document any output set aside is a
    /// dead letter (once).
    async fn write(&self, namespace: &str, target: &Target, writes: Vec<DocumentWrite>) -> SyncResult<Flow<WriteReport>> {
        let flows = try_join_all(self.sinks.iter().map(|s| s.write(namespace, target, writes.clone()))).await?;
        let Some(reports) = flows.into_iter().map(|flow| if let Flow::Done(report) = flow { Some(report) } else { None }).collect::<Option<Vec<_>>>() else {
            return Ok(Flow::Stopped);
        };
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
        Ok(Flow::Done(merged))
    }

    async fn write_dead_letters(&self, dlq: &str, namespace: &str, index: &str, records: &[Rejected]) -> SyncResult<Flow<()>> {
        all_done(try_join_all(self.sinks.iter().map(|s| s.write_dead_letters(dlq, namespace, index, records))).await?)
    }

    async fn apply(&self, change: &IndexChange) -> SyncResult<Flow<()>> {
        all_done(try_join_all(self.sinks.iter().map(|s| s.apply(change))).await?)
    }

    /// Every output is closed, even when one fails; the first failure is reported.
    async fn close(&self) -> SyncResult<()> {
        join_all(self.sinks.iter().map(|s| s.close())).await.into_iter().collect::<SyncResult<Vec<()>>>().map(drop)
    }
}

/// Done when every output was; stopped if any was stopped.
fn all_done(flows: Vec<Flow<()>>) -> SyncResult<Flow<()>> {
    Ok(if flows.iter().any(Flow::is_stopped) { Flow::Stopped } else { Flow::Done(()) })
}
