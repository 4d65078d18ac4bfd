//! Several instances of one sync `name`: a lease, kept in MongoDB, lets one of them (the
//! holder) sync while the others wait as standbys.
//!
//! - The lease is one document per name, written with majority write concern. It names its
//!   holder and carries a fencing `term`, raised at every takeover, and a `version`, raised at
//!   every renewal.
//! - Expiry is clock-free across machines: a standby takes the lease over once it has seen the
//!   same `version` for the lease's duration by its *own* monotonic clock (as Kubernetes' leader
//!   election does); a holder counts its lease from *before* it sent the renewal, so the holder's
//!   deadline always comes first. Only the clocks' rates must agree, within the safety margin.
//! - The holder stops writing to every output and saving checkpoints at its deadline: the
//!   duration minus a safety margin after its last successful renewal was sent
//!   ([`LeaseGuard::check`]); checkpoint saves are also conditional on the term in MongoDB itself
//!   (see `crate::checkpoint`), so a holder paused past its lease can never move a checkpoint
//!   back.
//! - A holder that stops cleanly releases the lease: a standby takes over at its next look. A
//!   holder whose process is gone on the same machine (same boot, same PID namespace) is known
//!   dead at once.
//!
//! In the partitioned mode (`instances`), the same leases exist per collection, and the members
//! of a group split the collections between them (see [`group`] and [`assignment`]).

mod assignment;
mod fence;
pub mod group;
mod memory;
mod mongo;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::LeaseConfig;
use crate::error::{ErrorCode, SyncError, SyncResult};

pub use assignment::plan;
pub use fence::{FencedSink, FencedStore};
pub use group::{owners, GroupStore, MemberRecord, Membership};
pub use memory::{MemoryGroupStore, MemoryLeaseStore};
pub use mongo::{MongoGroupStore, MongoLeaseStore};

/// The stored lease of a sync name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The instance holding it; none once released.
    pub holder: Option<String>,
    /// Raised at every takeover: a checkpoint saved under a term refuses saves of earlier ones.
    pub term: u64,
    /// Raised at every write of the lease (renewal, takeover, release).
    pub version: u64,
    /// The holder's lease duration: how long a standby waits on an unchanged version.
    pub duration: Duration,
    /// Where the holder runs (boot and PID namespace) and its process id: a standby on the same
    /// machine knows at once when the holder's process is gone.
    pub host: String,
    pub pid: u32,
}

/// This instance, as the lease names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub host: String,
    pub pid: u32,
}

impl Instance {
    /// This process, with an id of its own (two engines in one process are two instances).
    pub fn current() -> Self {
        let host = host_id();
        let id = format!("{}-{}-{:08x}", hostname(), std::process::id(), rand::random::<u32>());
        Instance { id, host, pid: std::process::id() }
    }

    /// Whether the holder of `record` is a process of this machine that no longer exists.
    fn holder_is_gone(&self, record: &LeaseRecord) -> bool {
        self.process_is_gone(&record.host, record.pid)
    }

    /// Whether the process `pid` of `host` is one of this machine that no longer exists.
    fn process_is_gone(&self, host: &str, pid: u32) -> bool {
        !self.host.is_empty() && host == self.host && pid != self.pid && !pid_alive(pid)
    }
}

/// Where leases are kept. Writes are atomic compare-and-set operations.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    async fn read(&self) -> SyncResult<Option<LeaseRecord>>;
    /// Creates the lease, held by `me` at term 1; `None` if it exists already.
    async fn create(&self, me: &Instance, duration: Duration) -> SyncResult<Option<LeaseRecord>>;
    /// Takes the lease over at `seen.term + 1`, if it is still at `seen.version`.
    async fn take(&self, me: &Instance, duration: Duration, seen: &LeaseRecord) -> SyncResult<Option<LeaseRecord>>;
    /// Renews it, if `me` still holds it at `term`; false if it was taken over.
    async fn renew(&self, me: &Instance, term: u64) -> SyncResult<bool>;
    /// Lets it go, if `me` still holds it at `term`.
    async fn release(&self, me: &Instance, term: u64) -> SyncResult<()>;
}

/// What one look at the lease found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Look {
    /// This instance holds the lease now, at this term.
    Acquired(u64),
    /// Another instance holds it.
    Held { holder: String, term: u64 },
}

/// Contends for the lease of one name: looks at it, and takes it when it is free, released,
/// expired, or its holder's process is gone.
pub struct Elector {
    store: Arc<dyn LeaseStore>,
    me: Instance,
    config: LeaseConfig,
    /// The version last seen, and when (this machine's monotonic clock) it was first seen.
    seen: Option<(u64, Instant)>,
    /// The holder and term last reported as held by another.
    reported: Option<(String, u64)>,
}

impl Elector {
    pub fn new(store: Arc<dyn LeaseStore>, me: Instance, config: LeaseConfig) -> Self {
        Elector { store, me, config, seen: None, reported: None }
    }

    pub fn instance(&self) -> &Instance {
        &self.me
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Looks once; takes the lease when it may. On acquiring, the lease's deadline counts from
    /// before the look.
    pub async fn look(&mut self) -> SyncResult<(Look, Instant)> {
        let sent = Instant::now();
        let Some(record) = self.store.read().await? else {
            return match self.store.create(&self.me, self.config.duration).await? {
                Some(created) => Ok((Look::Acquired(created.term), sent)),
                None => Ok((Look::Held { holder: String::new(), term: 0 }, sent)),
            };
        };
        if !self.may_take(&record) {
            return Ok((Look::Held { holder: record.holder.unwrap_or_default(), term: record.term }, sent));
        }
        let sent = Instant::now();
        match self.store.take(&self.me, self.config.duration, &record).await? {
            Some(taken) => Ok((Look::Acquired(taken.term), sent)),
            None => Ok((Look::Held { holder: record.holder.unwrap_or_default(), term: record.term }, sent)),
        }
    }

    fn may_take(&mut self, record: &LeaseRecord) -> bool {
        let Some(holder) = &record.holder else { return true };
        if *holder == self.me.id || self.me.holder_is_gone(record) {
            return true;
        }
        match self.seen {
            Some((version, since)) if version == record.version => since.elapsed() >= record.duration,
            _ => {
                self.seen = Some((record.version, Instant::now()));
                false
            }
        }
    }

    /// Looks until the lease is acquired (`Some`) or `cancel` fires (`None`); `on_held` is
    /// called at the first look that finds another holder, and whenever the holder changes.
    pub async fn acquire(&mut self, cancel: &CancellationToken, mut on_held: impl FnMut(&str, u64)) -> SyncResult<Option<Leadership>> {
        loop {
            if cancel.is_cancelled() {
                return Ok(None);
            }
            let looked = tokio::select! {
                looked = self.look() => looked,
                _ = cancel.cancelled() => return Ok(None),
            };
            match looked {
                Ok((Look::Acquired(term), sent)) => return Ok(Some(self.lead(term, sent))),
                Ok((Look::Held { holder, term }, _)) => {
                    if self.newly_held(&holder, term) {
                        on_held(&holder, term);
                    }
                }
                // A standby outlives MongoDB's outages and errors: it only ever reads and
                // compare-and-sets, so trying again is safe.
                Err(e) if e.code.is_source() => {
                    tracing::warn!("looking at the lease failed (will try again): {e}")
                }
                Err(e) => return Err(e),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.poll_every()) => {}
                _ = cancel.cancelled() => return Ok(None),
            }
        }
    }

    /// Whether `holder` at `term` was not the last holder reported (then it is now).
    pub fn newly_held(&mut self, holder: &str, term: u64) -> bool {
        let new = self.reported.as_ref().is_none_or(|(h, t)| h != holder || *t != term);
        self.reported = Some((holder.to_string(), term));
        new
    }

    /// The leadership of a lease just acquired at `term` (by a write sent at `sent`), renewed
    /// by a task of its own until it is released or lost.
    pub fn lead(&mut self, term: u64, sent: Instant) -> Leadership {
        self.reported = None;
        let guard = Arc::new(LeaseGuard { term, deadline: Mutex::new(sent + self.valid_for()), lost: CancellationToken::new() });
        let heartbeat = tokio::spawn(heartbeat(self.store.clone(), self.me.clone(), self.config.clone(), guard.clone()));
        Leadership { guard, heartbeat, store: self.store.clone(), me: self.me.clone() }
    }

    fn valid_for(&self) -> Duration {
        self.config.duration - self.config.safety_margin()
    }
}

/// What a holder checks before every write: the lease is still its own.
#[derive(Debug)]
pub struct LeaseGuard {
    term: u64,
    deadline: Mutex<Instant>,
    /// Cancelled once the lease is lost or released: the term's work stops.
    lost: CancellationToken,
}

impl LeaseGuard {
    pub fn term(&self) -> u64 {
        self.term
    }

    /// Ok while the lease is surely held; `ERR_LEASE_LOST` from its deadline on.
    pub fn check(&self) -> SyncResult<()> {
        if self.lost.is_cancelled() || Instant::now() >= self.deadline() {
            self.lost.cancel();
            return Err(SyncError::new(
                ErrorCode::LeaseLost,
                format!("this instance no longer holds the lease (term {}): another instance may have taken over; the write is refused", self.term),
            ));
        }
        Ok(())
    }

    /// Fires when the lease is lost or released.
    pub fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    pub fn is_lost(&self) -> bool {
        self.check().is_err()
    }

    fn deadline(&self) -> Instant {
        *self.deadline.lock().expect("deadline lock")
    }

    fn extend(&self, until: Instant) {
        let mut deadline = self.deadline.lock().expect("deadline lock");
        *deadline = (*deadline).max(until);
    }
}

/// Holding the lease: its guard, and the task renewing it.
pub struct Leadership {
    guard: Arc<LeaseGuard>,
    heartbeat: tokio::task::JoinHandle<()>,
    store: Arc<dyn LeaseStore>,
    me: Instance,
}

impl Leadership {
    pub fn guard(&self) -> &Arc<LeaseGuard> {
        &self.guard
    }

    pub fn term(&self) -> u64 {
        self.guard.term
    }

    /// Stops renewing and, when the lease is still held, lets it go so that a standby takes
    /// over at once. Every write is refused from here on.
    pub async fn release(self) -> SyncResult<()> {
        let still_held = self.guard.check().is_ok();
        self.guard.lost.cancel();
        self.heartbeat.abort();
        if still_held {
            self.store.release(&self.me, self.guard.term).await?;
        }
        Ok(())
    }
}

impl Drop for Leadership {
    /// A leadership dropped without `release` (a failed start) stops renewing: the lease runs out.
    fn drop(&mut self) {
        self.guard.lost.cancel();
        self.heartbeat.abort();
    }
}

/// Renews the lease every `renew_every` until it is released, or lost: taken over, or not
/// renewed before its deadline (then the guard fires).
async fn heartbeat(store: Arc<dyn LeaseStore>, me: Instance, config: LeaseConfig, guard: Arc<LeaseGuard>) {
    let valid_for = config.duration - config.safety_margin();
    loop {
        let deadline = guard.deadline();
        tokio::select! {
            _ = tokio::time::sleep(config.renew_every()) => {}
            _ = tokio::time::sleep_until(deadline) => break,
            _ = guard.lost.cancelled() => return,
        }
        let sent = Instant::now();
        match tokio::time::timeout_at(guard.deadline(), store.renew(&me, guard.term)).await {
            Ok(Ok(true)) => guard.extend(sent + valid_for),
            Ok(Ok(false)) => break,
            Ok(Err(e)) => tracing::warn!("renewing the lease failed (will try again until it runs out): {e}"),
            Err(_) => {}
        }
    }
    guard.lost.cancel();
}

/// This machine's boot and PID namespace (Linux); empty elsewhere, where no holder is ever
/// known dead before its lease runs out.
fn host_id() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let pid_ns = std::fs::read_link("/proc/self/ns/pid").map(|p| p.display().to_string()).unwrap_or_default();
    if boot.trim().is_empty() || pid_ns.is_empty() {
        return String::new();
    }
    format!("{}/{}", boot.trim(), pid_ns)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()).filter(|h| !h.is_empty()).unwrap_or_else(|| "instance".into())
}

/// Whether the process runs (a zombie, killed but not yet reaped, does not).
fn pid_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
    !matches!(state, Some('Z' | 'X'))
}

#[cfg(test)]
mod tests;
