//! The status, gathered from three places:
//! - the engine's stats: the totals, and per collection its phase, copy progress, changes
//!   applied, retries and dead letters (`crate::stats`);
//! - its events: the state and error, copy rate and ETA, the outcome of each batch (indexed,
//!   deleted, conflicts), warnings, retries and dead letters (the recent lists);
//! - the metered outputs (`super::meter`): batches in flight, how old the newest change written
//!   is when acknowledged (the lag), and checkpoint saves.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use super::recent::{RecentLog, Weigh};
use super::redact::Redactor;
use super::snapshot::{CollectionPhase, CollectionStatus, DeadLetter, ErrorInfo, Recent, Role, StatusSnapshot, StatusSource, Totals, Warning, WarningKind};
use crate::config::{Namespace, SyncConfig};
use crate::event::{Phase, SyncEvent, SyncState};
use crate::stats::{CollectionSnapshot, Stats};

/// Warnings and dead letters kept for the page, each: at most this many, and this many bytes.
const RECENT_ENTRIES: usize = 50;
const RECENT_BYTES: usize = 64 * 1024;

tokio::task_local! {
    /// The collection whose batch a metered output is writing, so that a retry inside the
    /// write is listed under it.
    pub static WRITING: Arc<str>;
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub struct StatusBoard {
    name: String,
    config: Arc<SyncConfig>,
    started_at: u64,
    stats: Arc<Stats>,
    redactor: Redactor,
    inner: Mutex<Board>,
}

struct Board {
    state: SyncState,
    state_since: u64,
    error: Option<ErrorInfo>,
    server: Option<String>,
    collections: BTreeMap<String, Track>,
    warnings: RecentLog<Warning>,
    dead_letters: RecentLog<DeadLetter>,
}

/// What the events and the meters tell of one collection.
#[derive(Debug, Default)]
struct Track {
    index: String,
    rate: Option<f64>,
    eta_seconds: Option<f64>,
    indexed: u64,
    deleted: u64,
    conflicts: u64,
    last_batch_at: Option<u64>,
    checkpoints: u64,
    last_checkpoint_at: Option<u64>,
    /// Lag of the last acknowledged stream batch (ms), and the cluster time of its newest change.
    applied_lag_ms: Option<u64>,
    last_change_at: Option<u64>,
    /// Batches in the outputs: (id, bytes, cluster time of their oldest change).
    in_flight: Vec<(u64, u64, Option<u64>)>,
}

impl Weigh for Warning {
    fn weight(&self) -> usize {
        64 + self.namespace.len() + self.message.len()
    }
}

impl Weigh for DeadLetter {
    fn weight(&self) -> usize {
        64 + self.namespace.len() + self.index.len() + self.id.len() + self.reason.len()
    }
}

impl StatusBoard {
    pub fn new(config: Arc<SyncConfig>, stats: Arc<Stats>) -> Self {
        let now = now_ms();
        let collections = config.collections.iter().map(|c| (c.namespace.to_string(), Track { index: c.index.clone(), ..Track::default() })).collect();
        StatusBoard {
            name: config.name.clone(),
            redactor: Redactor::for_config(&config),
            config,
            started_at: now,
            stats,
            inner: Mutex::new(Board {
                state: SyncState::Idle,
                state_since: now,
                error: None,
                server: None,
                collections,
                warnings: RecentLog::new(RECENT_ENTRIES, RECENT_BYTES),
                dead_letters: RecentLog::new(RECENT_ENTRIES, RECENT_BYTES),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Board> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes in one engine event; called on the emitting task, so it only updates memory.
    pub fn observe(&self, event: &SyncEvent) {
        let now = now_ms();
        let mut board = self.lock();
        match event {
            SyncEvent::State { state, error } => {
                (board.state, board.state_since) = (*state, now);
                board.error = error.as_ref().map(|e| ErrorInfo { code: e.code.as_str(), message: self.redactor.clean(&e.message) });
                if !matches!(state, SyncState::Copying | SyncState::Streaming | SyncState::Stopping) {
                    board.collections.values_mut().for_each(|t| t.in_flight.clear());
                }
            }
            SyncEvent::Connected { distribution, version } => board.server = Some(self.redactor.clean(&format!("{distribution} {version}"))),
            SyncEvent::Progress { namespace, rate, eta_seconds, done, .. } => {
                let track = self.track(&mut board, namespace);
                (track.rate, track.eta_seconds) = if *done { (None, None) } else { (Some(*rate), *eta_seconds) };
            }
            SyncEvent::Batch { namespace, phase, outcome, .. } => {
                let track = self.track(&mut board, namespace);
                track.indexed += outcome.indexed;
                track.deleted += outcome.deleted;
                track.conflicts += outcome.conflicts;
                track.last_batch_at = Some(now);
                if *phase == Phase::Copy {
                    // A re-copy: the stream's lag starts afresh after it.
                    track.applied_lag_ms = None;
                }
            }
            SyncEvent::Retry { attempt, delay_ms, cause } => {
                let namespace = WRITING.try_with(|ns| ns.to_string()).unwrap_or_default();
                let message = self.redactor.clean(&format!("attempt {attempt} failed, next in {delay_ms} ms: {cause}"));
                board.warnings.push(Warning { at: now, kind: WarningKind::Retry, namespace, message });
            }
            SyncEvent::DeadLetter { namespace, index, id, reason } => {
                let (id, reason) = (self.redactor.clean(id), self.redactor.clean(reason));
                board.dead_letters.push(DeadLetter { at: now, namespace: namespace.clone(), index: index.clone(), id, reason });
            }
            SyncEvent::Warning { namespace, message } => {
                board.warnings.push(Warning { at: now, kind: WarningKind::Warning, namespace: namespace.clone(), message: self.redactor.clean(message) });
            }
            // A discovered (or renamed-into) collection shows up from its first change on.
            SyncEvent::Change { namespace, .. } => {
                self.track(&mut board, namespace);
            }
            // The role shows as the state (`standby`) and in `/stats`.
            SyncEvent::Leadership { .. } | SyncEvent::Assignment { .. } => {}
            // The size of requests shows in `/stats` (`adaptiveBatch`).
            SyncEvent::BatchSize { .. } => {}
        }
    }

    /// The track of `namespace`, made on first sight (a collection found by the patterns).
    fn track<'b>(&self, board: &'b mut Board, namespace: &str) -> &'b mut Track {
        board.collections.entry(namespace.to_string()).or_insert_with(|| {
            let index = Namespace::parse(namespace).map_or_else(|_| String::new(), |ns| self.config.index_for(&ns));
            Track { index, ..Track::default() }
        })
    }

    /// A batch of `namespace` (`bytes`, the oldest of its changes made at `oldest_change_ms`)
    /// goes to the outputs; returns its id for [`StatusBoard::batch_done`].
    pub fn batch_sent(&self, namespace: &str, bytes: u64, oldest_change_ms: Option<u64>) -> u64 {
        let mut board = self.lock();
        let track = self.track(&mut board, namespace);
        let id = track.in_flight.iter().map(|b| b.0 + 1).max().unwrap_or(0);
        track.in_flight.push((id, bytes, oldest_change_ms));
        id
    }

    /// The batch `id` left the outputs: acknowledged when its newest change is given.
    pub fn batch_done(&self, namespace: &str, id: u64, newest_change_ms: Option<u64>) {
        let now = now_ms();
        let mut board = self.lock();
        let track = self.track(&mut board, namespace);
        track.in_flight.retain(|b| b.0 != id);
        if let Some(at) = newest_change_ms {
            track.applied_lag_ms = Some(now.saturating_sub(at));
            track.last_change_at = track.last_change_at.max(Some(at));
        }
    }

    pub fn checkpoint_saved(&self, namespace: &str) {
        let now = now_ms();
        let mut board = self.lock();
        let track = self.track(&mut board, namespace);
        track.checkpoints += 1;
        track.last_checkpoint_at = Some(now);
    }
}

impl Track {
    /// This collection's status: the engine's figures (`engine`, once it has some), with what
    /// the events and the meters add.
    fn status(&self, now: u64, engine: Option<&CollectionSnapshot>) -> CollectionStatus {
        let of = |figure: fn(&CollectionSnapshot) -> u64| engine.map_or(0, figure);
        let phase = engine.map_or(CollectionPhase::Starting, |e| e.phase.into());
        let copying = phase == CollectionPhase::Copying;
        // A batch waiting in the outputs is at least as far behind as its oldest change.
        let waiting = self.in_flight.iter().filter_map(|b| b.2).min().map(|oldest| now.saturating_sub(oldest));
        let lag_ms = match (self.applied_lag_ms, waiting) {
            (Some(applied), Some(waiting)) => Some(applied.max(waiting)),
            (applied, waiting) => applied.or(waiting),
        };
        CollectionStatus {
            index: self.index.clone(),
            phase,
            copied: of(|e| e.copied),
            total_estimate: of(|e| e.total_estimate),
            rate: self.rate.filter(|_| copying),
            eta_seconds: self.eta_seconds.filter(|_| copying),
            streamed: of(|e| e.streamed),
            indexed: self.indexed,
            deleted: self.deleted,
            conflicts: self.conflicts,
            dead_letters: of(|e| e.dead_letters),
            retries: of(|e| e.retries),
            checkpoints: self.checkpoints,
            lag_ms,
            last_change_at: self.last_change_at,
            last_batch_at: self.last_batch_at,
            last_checkpoint_at: self.last_checkpoint_at,
            checkpoint_age_ms: self.last_checkpoint_at.map(|at| now.saturating_sub(at)),
            in_flight_batches: self.in_flight.len() as u64,
            in_flight_bytes: self.in_flight.iter().map(|b| b.1).sum(),
        }
    }
}

impl StatusSource for StatusBoard {
    fn snapshot(&self) -> StatusSnapshot {
        let now = now_ms();
        let stats = self.stats.snapshot();
        let process = super::process::usage();
        let board = self.lock();
        // Every collection the board or the engine knows of.
        let mut collections: BTreeMap<String, CollectionStatus> =
            board.collections.iter().map(|(ns, t)| (ns.clone(), t.status(now, stats.collections.get(ns)))).collect();
        for (ns, engine) in &stats.collections {
            if !collections.contains_key(ns) {
                let index = Namespace::parse(ns).map_or_else(|_| String::new(), |n| self.config.index_for(&n));
                collections.insert(ns.clone(), Track { index, ..Track::default() }.status(now, Some(engine)));
            }
        }
        StatusSnapshot {
            name: self.name.clone(),
            version: env!("CARGO_PKG_VERSION"),
            state: board.state,
            state_since: board.state_since,
            role: Role::current(stats.role.as_ref()),
            term: stats.role.as_ref().map(|r| r.term),
            owned_collections: stats.role.as_ref().filter(|r| r.role == crate::stats::Role::Member).map(|r| r.owned_collections.clone()),
            error: board.error.clone(),
            server: board.server.clone(),
            started_at: self.started_at,
            now,
            totals: Totals::from(&stats),
            collections,
            recent: Recent {
                warnings: board.warnings.to_vec(),
                warnings_seen: board.warnings.seen(),
                dead_letters: board.dead_letters.to_vec(),
                dead_letters_seen: board.dead_letters.seen(),
            },
            process,
        }
    }
}
