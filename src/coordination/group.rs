//! A partitioned group: the instances of one `name` and `instances.group` split the followed
//! collections between them, each collection owned through a lease of its own.
//!
//! - Membership: every member keeps a heartbeat document up to date; another member counts it
//!   live while it has seen that document change within its duration, by its *own* clock (as for
//!   the lease), and drops it at once when it is removed (a clean stop) or its process is known
//!   gone on the same machine.
//! - Ownership: one lease per collection ([`GroupStore::lease`]), with its own fencing term;
//!   [`super::assignment::plan`] says who should own what.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Instance, LeaseRecord, LeaseStore};
use crate::error::SyncResult;

/// A member's heartbeat document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    pub id: String,
    /// Raised at every heartbeat.
    pub version: u64,
    /// How long others wait on an unchanged version before counting it gone.
    pub duration: Duration,
    pub host: String,
    pub pid: u32,
}

/// Where a group keeps its members and its collections' leases.
#[async_trait]
pub trait GroupStore: Send + Sync {
    /// Writes (or creates) `me`'s heartbeat document, raising its version.
    async fn heartbeat(&self, me: &Instance, duration: Duration) -> SyncResult<()>;
    /// Removes `me`'s heartbeat document (a clean stop): others count it gone at once.
    async fn leave(&self, me: &Instance) -> SyncResult<()>;
    async fn members(&self) -> SyncResult<Vec<MemberRecord>>;
    /// Every collection's lease, by namespace.
    async fn leases(&self) -> SyncResult<BTreeMap<String, LeaseRecord>>;
    /// The lease of one collection.
    fn lease(&self, namespace: &str) -> Arc<dyn LeaseStore>;
}

/// Which members are live, as this instance sees them.
pub struct Membership {
    me: Instance,
    /// Per member: the version last seen, and when (this machine's clock) it was first seen.
    seen: BTreeMap<String, (u64, Instant)>,
}

impl Membership {
    pub fn new(me: Instance) -> Self {
        Membership { me, seen: BTreeMap::new() }
    }

    /// The live members among `records` (this instance always is one).
    pub fn live(&mut self, records: &[MemberRecord]) -> BTreeSet<String> {
        let now = Instant::now();
        let mut live = BTreeSet::from([self.me.id.clone()]);
        let mut seen = BTreeMap::new();
        for r in records.iter().filter(|r| r.id != self.me.id) {
            let since = match self.seen.get(&r.id) {
                Some((version, since)) if *version == r.version => *since,
                _ => now,
            };
            seen.insert(r.id.clone(), (r.version, since));
            let gone = self.me.process_is_gone(&r.host, r.pid);
            if !gone && now.duration_since(since) < r.duration {
                live.insert(r.id.clone());
            }
        }
        self.seen = seen;
        live
    }
}

/// The owners named by `leases` (released leases name none).
pub fn owners(leases: &BTreeMap<String, LeaseRecord>) -> BTreeMap<String, String> {
    leases.iter().filter_map(|(ns, l)| l.holder.clone().map(|h| (ns.clone(), h))).collect()
}
