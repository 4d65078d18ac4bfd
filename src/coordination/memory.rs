//! A lease kept in memory: for instances within one process (tests, embedding).

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::{Instance, LeaseRecord, LeaseStore};
use crate::error::SyncResult;

#[derive(Default)]
pub struct MemoryLeaseStore {
    record: Mutex<Option<LeaseRecord>>,
}

impl MemoryLeaseStore {
    fn with<T>(&self, f: impl FnOnce(&mut Option<LeaseRecord>) -> T) -> T {
        f(&mut self.record.lock().expect("lease lock"))
    }
}

fn held_by(me: &Instance, term: u64, version: u64, duration: Duration) -> LeaseRecord {
    LeaseRecord { holder: Some(me.id.clone()), term, version, duration, host: me.host.clone(), pid: me.pid }
}

#[async_trait]
impl LeaseStore for MemoryLeaseStore {
    async fn read(&self) -> SyncResult<Option<LeaseRecord>> {
        Ok(self.with(|r| r.clone()))
    }

    async fn create(&self, me: &Instance, duration: Duration) -> SyncResult<Option<LeaseRecord>> {
        Ok(self.with(|r| match r {
            Some(_) => None,
            None => r.insert(held_by(me, 1, 1, duration)).clone().into(),
        }))
    }

    async fn take(&self, me: &Instance, duration: Duration, seen: &LeaseRecord) -> SyncResult<Option<LeaseRecord>> {
        Ok(self.with(|r| match r {
            Some(current) if current.version == seen.version => {
                *current = held_by(me, seen.term + 1, seen.version + 1, duration);
                Some(current.clone())
            }
            _ => None,
        }))
    }

    async fn renew(&self, me: &Instance, term: u64) -> SyncResult<bool> {
        Ok(self.with(|r| match r {
            Some(current) if current.holder.as_deref() == Some(me.id.as_str()) && current.term == term => {
                current.version += 1;
                true
            }
            _ => false,
        }))
    }

    async fn release(&self, me: &Instance, term: u64) -> SyncResult<()> {
        self.with(|r| {
            if let Some(current) = r.as_mut().filter(|c| c.holder.as_deref() == Some(me.id.as_str()) && c.term == term) {
                current.holder = None;
                current.version += 1;
            }
        });
        Ok(())
    }
}
