//! This instance's role among the instances started with the same `name`: the holder of the
//! lease (see `crate::coordination`) runs the collections; the others stand by and take over
//! when it stops, dies or loses the lease. Each lease term is one run: connect, prepare (loading
//! every checkpoint under the term), run the collections, close.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::partition::Partition;
use super::supervisor::{self, Prepared};
use super::{set_state, Connector, Halt, PhaseResult, Setup};
use crate::coordination::{Elector, Instance, Leadership, LeaseGuard, Look};
use crate::error::{SyncError, SyncResult};
use crate::event::{LeadershipChange, SyncEvent, SyncState};
use crate::stats::{Role, RoleSnapshot};

/// How the first look went.
pub(super) enum First {
    /// No lease: the collections run as they are.
    Alone(Prepared),
    /// This instance holds the lease; the collections are prepared under its term.
    Leader(Prepared, Elector, Leadership),
    /// Another instance holds it.
    Standby(Elector),
    /// A member of a partitioned group (`instances`), owning its first share.
    Partitioned(Box<Partition>),
}

impl First {
    /// The state `start()` resolves in.
    pub(super) fn announce_state(&self, setup: &Setup) {
        let state = match self {
            First::Alone(p) | First::Leader(p, ..) if p.ctx.is_copying() => SyncState::Copying,
            First::Alone(_) | First::Leader(..) => SyncState::Streaming,
            First::Standby(_) => SyncState::Standby,
            First::Partitioned(p) => p.state(),
        };
        set_state(&setup.stats, &setup.events, state, None);
    }

    /// A start cut short by `stop()`: a lease just taken is let go.
    pub(super) async fn abandon(self) {
        match self {
            First::Leader(_, _, leadership) => {
                let _ = leadership.release().await;
            }
            First::Partitioned(partition) => {
                let _ = (*partition).leave().await;
            }
            First::Alone(_) | First::Standby(_) => {}
        }
    }
}

/// Connects to the lease (if the connector has one) and looks once: leader (prepared), or standby.
pub(super) async fn first_term(setup: &Setup, connector: &dyn Connector, cancel: &CancellationToken) -> PhaseResult<First> {
    if setup.config.instances.is_some() {
        let group = connector.group(&setup.config, &setup.events).await?;
        let group = group.ok_or_else(|| SyncError::config("instances: this source has no place to coordinate a group (the partitioned mode needs MongoDB)"))?;
        return Ok(First::Partitioned(Box::new(super::partition::join(setup, connector, group, cancel).await?)));
    }
    let Some(store) = connector.lease(&setup.config, &setup.events).await? else {
        return Ok(First::Alone(setup.prepare(connector, cancel.clone(), None).await?));
    };
    let mut elector = Elector::new(store, Instance::current(), setup.config.lease.clone());
    match elector.look().await? {
        (Look::Acquired(term), sent) => {
            let leadership = elector.lead(term, sent);
            acquired(setup, &elector, term);
            match prepare_term(setup, connector, cancel, &leadership).await {
                Ok(prepared) => Ok(First::Leader(prepared, elector, leadership)),
                Err(e) => {
                    let _ = leadership.release().await;
                    Err(e)
                }
            }
        }
        (Look::Held { holder, term }, _) => {
            if elector.newly_held(&holder, term) {
                standing_by(setup, &holder, term);
            }
            Ok(First::Standby(elector))
        }
    }
}

/// Runs the collections for as long as this instance holds the lease, and stands by whenever
/// another holds it; ends when stopped, when a run ends by itself (`mode: 'copy'`), or fails.
pub(super) async fn serve(setup: Setup, connector: Arc<dyn Connector>, first: First, cancel: CancellationToken) -> SyncResult<()> {
    let (mut elector, mut term) = match first {
        First::Alone(prepared) => return supervisor::run_all(prepared).await,
        First::Leader(prepared, elector, leadership) => (elector, Some((prepared, leadership))),
        First::Standby(elector) => (elector, None),
        First::Partitioned(partition) => return (*partition).serve().await,
    };
    loop {
        let (prepared, leadership) = match term.take() {
            Some(term) => term,
            None => match next_term(&setup, &*connector, &mut elector, &cancel).await? {
                Some(term) => term,
                None => return Ok(()),
            },
        };
        let owned = prepared.collections.iter().map(|c| c.config.namespace.to_string()).collect();
        assign(&setup, Role::Leader, leadership.term(), owned);
        let result = supervisor::run_all(prepared).await;
        let (lost, term_number) = (leadership.guard().is_lost() && !cancel.is_cancelled(), leadership.term());
        // Stopped or ended: the lease goes at once to a standby.
        let released = leadership.release().await;
        assign(&setup, Role::Leader, term_number, Vec::new());
        if !lost || cancel.is_cancelled() {
            return result.and(released);
        }
        let holder = elector.instance().id.clone();
        setup.events.emit(SyncEvent::Leadership { change: LeadershipChange::Lost, term: term_number, holder });
    }
}

/// Stands by until the lease is acquired, then prepares the collections under its term;
/// `None` once stopped.
async fn next_term(setup: &Setup, connector: &dyn Connector, elector: &mut Elector, cancel: &CancellationToken) -> SyncResult<Option<(Prepared, Leadership)>> {
    loop {
        set_state(&setup.stats, &setup.events, SyncState::Standby, None);
        let Some(leadership) = elector.acquire(cancel, |holder, term| standing_by(setup, holder, term)).await? else { return Ok(None) };
        acquired(setup, elector, leadership.term());
        match prepare_term(setup, connector, cancel, &leadership).await {
            Ok(prepared) => {
                let state = if prepared.ctx.is_copying() { SyncState::Copying } else { SyncState::Streaming };
                set_state(&setup.stats, &setup.events, state, None);
                return Ok(Some((prepared, leadership)));
            }
            Err(halt) => {
                let lost = leadership.guard().is_lost();
                let _ = leadership.release().await;
                match halt {
                    _ if cancel.is_cancelled() => return Ok(None),
                    // Stopped without a stop: the lease was lost while preparing.
                    Halt::Stopped => {}
                    Halt::Failed(_) if lost => {}
                    Halt::Failed(e) => return Err(e),
                }
            }
        }
    }
}

/// Prepares one term's run: its work stops when the sync stops or the lease is lost.
async fn prepare_term(setup: &Setup, connector: &dyn Connector, cancel: &CancellationToken, leadership: &Leadership) -> PhaseResult<Prepared> {
    let term_cancel = cancel.child_token();
    stop_when_lost(leadership.guard(), &term_cancel);
    setup.prepare(connector, term_cancel, Some(leadership.guard())).await
}

/// Cancels `stop` when the lease of `guard` is lost.
pub(super) fn stop_when_lost(guard: &LeaseGuard, stop: &CancellationToken) {
    let (lost, stop) = (guard.lost().clone(), stop.clone());
    tokio::spawn(async move {
        tokio::select! {
            _ = lost.cancelled() => stop.cancel(),
            _ = stop.cancelled() => {}
        }
    });
}

fn acquired(setup: &Setup, elector: &Elector, term: u64) {
    assign(setup, Role::Leader, term, Vec::new());
    setup.events.emit(SyncEvent::Leadership { change: LeadershipChange::Acquired, term, holder: elector.instance().id.clone() });
}

fn standing_by(setup: &Setup, holder: &str, term: u64) {
    assign(setup, Role::Standby, term, Vec::new());
    setup.events.emit(SyncEvent::Leadership { change: LeadershipChange::Standby, term, holder: holder.to_string() });
}

/// Records the role and the collections this instance syncs, and tells when the latter change.
pub(super) fn assign(setup: &Setup, role: Role, term: u64, owned_collections: Vec<String>) {
    let before = setup.stats.role().map(|r| r.owned_collections).unwrap_or_default();
    let changed = before != owned_collections;
    setup.stats.set_role(Some(RoleSnapshot { role, term, owned_collections: owned_collections.clone() }));
    if changed {
        setup.events.emit(SyncEvent::Assignment { collections: owned_collections });
    }
}
