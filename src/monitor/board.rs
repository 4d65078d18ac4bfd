//! The status as the engine reports it today: its events (state, progress, batches, retries,
//! dead letters, warnings), its global totals, and what the metered outputs see (bytes in
//! flight, how old the newest change written is, checkpoint saves).
//!
//! When the engine keeps per-collection figures itself, [`StatusBoard::snapshot`] takes them
//! from there instead of from the events; nothing else changes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use super::recent::{RecentLog, Weigh};
use super::redact::Redactor;
use super::snapshot::{CollectionPhase, CollectionStatus, DeadLetter, ErrorInfo, Recent, Role, StatusSnapshot, StatusSource, Totals, Warning, WarningKind};
use crate::config::{Namespace, SyncConfig, SyncMode};
use crate::event::{Phase, SyncEvent, SyncState};
use crate::stats::Stats;

/// Warnings and dead letters kept for the page, each: at most this many, and this many bytes.
const RECENT_ENTRIES: usize = 50;
const RECENT_BYTES: usize = 64 * 1024;

tokio::task_local! {
    /// The collection whose batch a metered output is writing, so that the retries inside the
    /// write count to it.
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
    error: Option<ErrorInfo>,
    server: Option<String>,
    collections: BTreeMap<String, Track>,
    warnings: RecentLog<Warning>,
    dead_letters: RecentLog<DeadLetter>,
}

/// One collection: its status, and what the lag is computed from.
struct Track {
    status: CollectionStatus,
    /// Lag of the last acknowledged stream batch (ms).
    applied_lag_ms: Option<u64>,
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
        let collections = config.collections.iter().map(|c| (c.namespace.to_string(), Track::new(c.index.clone(), now))).collect();
        StatusBoard {
            name: config.name.clone(),
            redactor: Redactor::for_config(&config),
            config,
            started_at: now,
            stats,
            inner: Mutex::new(Board {
                state: SyncState::Idle,
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
                board.state = *state;
                board.error = error.as_ref().map(|e| ErrorInfo { code: e.code.as_str(), message: self.redactor.clean(&e.message) });
                board.state_changed(*state, now);
            }
            SyncEvent::Connected { distribution, version } => board.server = Some(self.redactor.clean(&format!("{distribution} {version}"))),
            SyncEvent::Progress { namespace, copied, total_estimate, rate, eta_seconds, done, .. } => {
                let copy_only = self.config.mode == SyncMode::Copy;
                let track = self.track(&mut board, namespace, now);
                let s = &mut track.status;
                (s.copied, s.total_estimate) = (*copied, *total_estimate);
                (s.rate, s.eta_seconds) = if *done { (None, None) } else { (Some(*rate), *eta_seconds) };
                let phase = match (done, copy_only) {
                    (false, _) => CollectionPhase::Copying,
                    (true, true) => CollectionPhase::Done,
                    (true, false) => CollectionPhase::Streaming,
                };
                track.enter(phase, now);
            }
            SyncEvent::Batch { namespace, phase, outcome, .. } => {
                let track = self.track(&mut board, namespace, now);
                let s = &mut track.status;
                let documents = outcome.indexed + outcome.deleted + outcome.conflicts + outcome.dead_letters;
                match phase {
                    Phase::Copy => s.copied += documents,
                    Phase::Stream => s.streamed += documents,
                }
                s.indexed += outcome.indexed;
                s.deleted += outcome.deleted;
                s.conflicts += outcome.conflicts;
                s.dead_letters += outcome.dead_letters;
                s.last_batch_at = Some(now);
                if s.phase != CollectionPhase::Done {
                    track.enter(if *phase == Phase::Copy { CollectionPhase::Copying } else { CollectionPhase::Streaming }, now);
                }
            }
            SyncEvent::Retry { attempt, delay_ms, cause } => {
                let namespace = WRITING.try_with(|ns| ns.to_string()).ok();
                if let Some(namespace) = &namespace {
                    self.track(&mut board, namespace, now).status.retries += 1;
                }
                let message = self.redactor.clean(&format!("attempt {attempt} failed, next in {delay_ms} ms: {cause}"));
                let namespace = namespace.unwrap_or_default();
                board.warnings.push(Warning { at: now, kind: WarningKind::Retry, namespace, message });
            }
            SyncEvent::DeadLetter { namespace, index, id, reason } => {
                let entry = DeadLetter {
                    at: now,
                    namespace: namespace.clone(),
                    index: index.clone(),
                    id: self.redactor.clean(id),
                    reason: self.redactor.clean(reason),
                };
                board.dead_letters.push(entry);
            }
            SyncEvent::Warning { namespace, message } => {
                board.warnings.push(Warning { at: now, kind: WarningKind::Warning, namespace: namespace.clone(), message: self.redactor.clean(message) });
            }
            // A discovered (or renamed-into) collection shows up from its first change on.
            SyncEvent::Change { namespace, .. } => {
                self.track(&mut board, namespace, now);
            }
        }
    }

    /// The track of `namespace`, made on first sight (a collection found by the patterns).
    fn track<'b>(&self, board: &'b mut Board, namespace: &str, now: u64) -> &'b mut Track {
        board.collections.entry(namespace.to_string()).or_insert_with(|| {
            let index = Namespace::parse(namespace).map_or_else(|_| String::new(), |ns| self.config.index_for(&ns));
            Track::new(index, now)
        })
    }

    /// A batch of `namespace` (`bytes`, the oldest of its changes made at `oldest_change_ms`)
    /// goes to the outputs; returns its id for [`StatusBoard::batch_done`].
    pub fn batch_sent(&self, namespace: &str, bytes: u64, oldest_change_ms: Option<u64>) -> u64 {
        let now = now_ms();
        let mut board = self.lock();
        let track = self.track(&mut board, namespace, now);
        let id = track.in_flight.iter().map(|b| b.0 + 1).max().unwrap_or(0);
        track.in_flight.push((id, bytes, oldest_change_ms));
        id
    }

    /// The batch `id` left the outputs: acknowledged when its newest change is given.
    pub fn batch_done(&self, namespace: &str, id: u64, newest_change_ms: Option<u64>) {
        let now = now_ms();
        let mut board = self.lock();
        let track = self.track(&mut board, namespace, now);
        track.in_flight.retain(|b| b.0 != id);
        if let Some(at) = newest_change_ms {
            track.applied_lag_ms = Some(now.saturating_sub(at));
            track.status.last_change_at = track.status.last_change_at.max(Some(at));
        }
    }

    pub fn checkpoint_saved(&self, namespace: &str) {
        let now = now_ms();
        let mut board = self.lock();
        let s = &mut self.track(&mut board, namespace, now).status;
        s.checkpoints += 1;
        s.last_checkpoint_at = Some(now);
    }
}

impl Board {
    fn state_changed(&mut self, state: SyncState, now: u64) {
        let settled = |p: CollectionPhase| matches!(p, CollectionPhase::Done | CollectionPhase::Stopped | CollectionPhase::Failed);
        for track in self.collections.values_mut() {
            match state {
                SyncState::Starting => track.enter(CollectionPhase::Starting, now),
                // Every collection follows its stream once the whole sync does.
                SyncState::Streaming if !settled(track.status.phase) => track.enter(CollectionPhase::Streaming, now),
                SyncState::Stopped if track.status.phase != CollectionPhase::Done => track.enter(CollectionPhase::Stopped, now),
                SyncState::Failed if !settled(track.status.phase) => track.enter(CollectionPhase::Failed, now),
                _ => {}
            }
            if !matches!(state, SyncState::Copying | SyncState::Streaming | SyncState::Stopping) {
                track.in_flight.clear();
            }
        }
    }
}

impl Track {
    fn new(index: String, now: u64) -> Self {
        Track { status: CollectionStatus::new(index, now), applied_lag_ms: None, in_flight: Vec::new() }
    }

    fn enter(&mut self, phase: CollectionPhase, now: u64) {
        if self.status.phase != phase {
            self.status.phase = phase;
            self.status.phase_since = now;
            if phase == CollectionPhase::Copying {
                // A re-copy: the stream's lag starts afresh after it.
                self.applied_lag_ms = None;
            }
        }
    }

    fn status(&self, now: u64) -> CollectionStatus {
        let mut s = self.status.clone();
        s.in_flight_batches = self.in_flight.len() as u64;
        s.in_flight_bytes = self.in_flight.iter().map(|b| b.1).sum();
        // A batch waiting in the outputs is at least as far behind as its oldest change.
        let waiting = self.in_flight.iter().filter_map(|b| b.2).min().map(|oldest| now.saturating_sub(oldest));
        s.lag_ms = match (self.applied_lag_ms, waiting) {
            (Some(applied), Some(waiting)) => Some(applied.max(waiting)),
            (applied, waiting) => applied.or(waiting),
        };
        s.checkpoint_age_ms = s.last_checkpoint_at.map(|at| now.saturating_sub(at));
        s
    }
}

impl StatusSource for StatusBoard {
    fn snapshot(&self) -> StatusSnapshot {
        let now = now_ms();
        let totals = Totals::from(&self.stats.snapshot());
        let process = super::process::usage();
        let board = self.lock();
        StatusSnapshot {
            name: self.name.clone(),
            version: env!("CARGO_PKG_VERSION"),
            state: board.state,
            role: Role::current(),
            error: board.error.clone(),
            server: board.server.clone(),
            started_at: self.started_at,
            now,
            totals,
            collections: board.collections.iter().map(|(ns, t)| (ns.clone(), t.status(now))).collect(),
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
