//! Leases kept in memory: for instances within one process (tests, embedding).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::group::{GroupStore, MemberRecord};
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

/// A partitioned group kept in memory: members and collection leases for instances within one
/// process (tests, embedding).
#[derive(Default)]
pub struct MemoryGroupStore {
    members: Mutex<BTreeMap<String, MemberRecord>>,
    leases: Mutex<BTreeMap<String, Arc<MemoryLeaseStore>>>,
}

#[async_trait]
impl GroupStore for MemoryGroupStore {
    async fn heartbeat(&self, me: &Instance, duration: Duration) -> SyncResult<()> {
        let mut members = self.members.lock().expect("members lock");
        let version = members.get(&me.id).map_or(1, |m| m.version + 1);
        members.insert(me.id.clone(), MemberRecord { id: me.id.clone(), version, duration, host: me.host.clone(), pid: me.pid });
        Ok(())
    }

    async fn leave(&self, me: &Instance) -> SyncResult<()> {
        self.members.lock().expect("members lock").remove(&me.id);
        Ok(())
    }

    async fn members(&self) -> SyncResult<Vec<MemberRecord>> {
        Ok(self.members.lock().expect("members lock").values().cloned().collect())
    }

    async fn leases(&self) -> SyncResult<BTreeMap<String, LeaseRecord>> {
        let leases = self.leases.lock().expect("leases lock");
        Ok(leases.iter().filter_map(|(ns, l)| l.with(|r| r.clone()).map(|r| (ns.clone(), r))).collect())
    }

    fn lease(&self, namespace: &str) -> Arc<dyn LeaseStore> {
        self.leases.lock().expect("leases lock").entry(namespace.to_string()).or_default().clone()
    }
}
