//! Adaptive `_bulk` sizes: a small controller that sizes each request from how the last ones
//! went. It grows the size while requests come back fast, shrinks it by half on back-pressure
//! (HTTP 429, items refused with 429 / `es_rejected_execution_exception`, 413) and by a quarter
//! when a request is slow, and always stays between its floor and `batch.maxDocs` /
//! `batch.maxBytes`. Additive increase, multiplicative decrease: several syncs writing to one
//! cluster converge on sharing it rather than on one starving the others.
//!
//! The controller is pure (no clock, no I/O): the sink tells it what each request carried, how
//! long it took and whether the server pushed back, and reads the limits for the next one.

use std::time::Duration;

use std::sync::Mutex;
use std::time::Instant;

use super::encoder::encoded_len;
use super::service::EsSink;
use crate::config::{AdaptiveBatchConfig, BatchConfig};
use crate::event::{BatchResize, SyncEvent};
use crate::sink::Target;
use crate::stats::AdaptiveBatchSnapshot;
use crate::transform::DocumentWrite;

/// How much one request may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkLimit {
    pub docs: usize,
    pub bytes: usize,
}

/// What became of one request, as the controller needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkObservation {
    /// The [`BatchSizer::epoch`] the request was sized under.
    pub epoch: u64,
    pub docs: usize,
    pub bytes: usize,
    pub took: Duration,
    /// The server pushed back: 429 (whole request or items), 413, or a rejected execution.
    pub pressure: bool,
}

#[derive(Debug, Clone)]
pub struct BatchSizer {
    max: BulkLimit,
    min: BulkLimit,
    target: Duration,
    current: BulkLimit,
    /// Counts the changes; a request sized before the last change says nothing about the
    /// current size (it was in flight while the size changed).
    epoch: u64,
}

impl BatchSizer {
    /// Starts at the configured maximum (what a sync without the controller sends); none when
    /// `batch.adaptive.enabled` is off.
    pub fn new(batch: &BatchConfig) -> Option<Self> {
        let AdaptiveBatchConfig { enabled, min_docs, min_bytes, target_latency } = batch.adaptive.clone();
        let max = BulkLimit { docs: batch.max_docs, bytes: batch.max_bytes };
        let min = BulkLimit { docs: min_docs.min(max.docs), bytes: min_bytes.min(max.bytes) };
        enabled.then_some(BatchSizer { max, min, target: target_latency, current: max, epoch: 0 })
    }

    pub fn limit(&self) -> BulkLimit {
        self.current
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Takes one request's outcome into account; says how the size changed, if it did.
    pub fn observe(&mut self, seen: BulkObservation) -> Option<BatchResize> {
        if seen.epoch != self.epoch {
            return None;
        }
        let next = if seen.pressure {
            (self.scaled(1, 2), BatchResize::ShrankPressure)
        } else if seen.took > self.target {
            (self.scaled(3, 4), BatchResize::ShrankSlow)
        } else if seen.took * 2 < self.target && self.was_full(&seen) {
            (self.grown(), BatchResize::Grew)
        } else {
            return None;
        };
        if next.0 == self.current {
            return None;
        }
        self.current = next.0;
        self.epoch += 1;
        Some(next.1)
    }

    /// A request that used at least half of either limit: one far below them says nothing
    /// about how a bigger one would fare.
    fn was_full(&self, seen: &BulkObservation) -> bool {
        seen.docs * 2 >= self.current.docs || seen.bytes * 2 >= self.current.bytes
    }

    fn scaled(&self, num: usize, den: usize) -> BulkLimit {
        BulkLimit { docs: (self.current.docs * num / den).max(self.min.docs), bytes: (self.current.bytes / den * num).max(self.min.bytes) }
    }

    /// One sixteenth of the range more, per fast request.
    fn grown(&self) -> BulkLimit {
        let step = |max: usize| (max / 16).max(1);
        BulkLimit { docs: (self.current.docs + step(self.max.docs)).min(self.max.docs), bytes: (self.current.bytes + step(self.max.bytes)).min(self.max.bytes) }
    }
}

/// How many of `writes`, from the first, fit in one request under `limit` (at least one).
pub fn chunk_len(target: &Target, writes: &[DocumentWrite], limit: BulkLimit) -> usize {
    let mut bytes = 0;
    let fitting = writes.iter().take(limit.docs).take_while(|w| {
        bytes += encoded_len(target, w);
        bytes <= limit.bytes
    });
    fitting.count().max(1)
}

/// The sink's controller, shared by its clones (every collection's writes tell it how the
/// cluster fares), with the figures `stats()` shows.
#[derive(Debug)]
pub struct SharedSizer {
    sizer: Mutex<(BatchSizer, AdaptiveBatchSnapshot)>,
}

impl SharedSizer {
    pub fn new(batch: &BatchConfig) -> Option<Self> {
        let sizer = BatchSizer::new(batch)?;
        let limit = sizer.limit();
        let snapshot = AdaptiveBatchSnapshot { docs: limit.docs as u64, bytes: limit.bytes as u64, ..Default::default() };
        Some(SharedSizer { sizer: Mutex::new((sizer, snapshot)) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (BatchSizer, AdaptiveBatchSnapshot)> {
        self.sizer.lock().expect("batch sizer lock")
    }

    pub fn snapshot(&self) -> AdaptiveBatchSnapshot {
        self.lock().1
    }
}

/// One request's measurement, started when it is sent.
pub(super) struct BulkTimer {
    epoch: u64,
    docs: usize,
    bytes: usize,
    started: Instant,
}

impl EsSink {
    /// The limits of the next request, and the epoch they belong to; none without the controller.
    pub(super) fn bulk_limit(&self) -> Option<(BulkLimit, u64)> {
        self.sizer().map(|s| {
            let guard = s.lock();
            (guard.0.limit(), guard.0.epoch())
        })
    }

    pub(super) fn start_timer(&self, epoch: u64, docs: usize, bytes: usize) -> BulkTimer {
        BulkTimer { epoch, docs, bytes, started: Instant::now() }
    }

    /// Tells the controller how a request fared; a change of size goes to `stats()` and out as a `batchSize` event.
    pub(super) fn observe(&self, timer: BulkTimer, pressure: bool) {
        let Some(shared) = self.sizer() else { return };
        let seen = BulkObservation { epoch: timer.epoch, docs: timer.docs, bytes: timer.bytes, took: timer.started.elapsed(), pressure };
        let mut guard = shared.lock();
        let Some(cause) = guard.0.observe(seen) else { return };
        let limit = guard.0.limit();
        let snapshot = &mut guard.1;
        (snapshot.docs, snapshot.bytes) = (limit.docs as u64, limit.bytes as u64);
        match cause {
            BatchResize::Grew => snapshot.grows += 1,
            BatchResize::ShrankSlow | BatchResize::ShrankPressure => snapshot.shrinks += 1,
        }
        self.context().stats.set_adaptive_batch(Some(*snapshot));
        drop(guard);
        self.context().events.emit(SyncEvent::BatchSize { docs: limit.docs as u64, bytes: limit.bytes as u64, cause });
    }
}

/// A per-item failure that is the cluster pushing back (rather than a shard failing): the
/// item's status 429, or an execution queue full.
pub(super) fn is_pressure(cause: &str) -> bool {
    cause.starts_with("429 ") || cause.contains("es_rejected_execution_exception")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizer(max_docs: usize, min_docs: usize) -> BatchSizer {
        let mut batch = BatchConfig { max_docs, max_bytes: 1 << 20, ..Default::default() };
        batch.adaptive = AdaptiveBatchConfig { min_docs, min_bytes: 4096, target_latency: Duration::from_secs(2), enabled: true };
        BatchSizer::new(&batch).expect("enabled")
    }

    fn seen(s: &BatchSizer, ms: u64, pressure: bool) -> BulkObservation {
        let limit = s.limit();
        BulkObservation { epoch: s.epoch(), docs: limit.docs, bytes: 1000, took: Duration::from_millis(ms), pressure }
    }

    #[test]
    fn it_starts_at_the_maximum_and_halves_on_pressure_down_to_the_floor() {
        let mut s = sizer(1000, 100);
        assert_eq!(s.limit(), BulkLimit { docs: 1000, bytes: 1 << 20 });
        assert_eq!(s.observe(seen(&s, 10, true)), Some(BatchResize::ShrankPressure));
        assert_eq!(s.limit(), BulkLimit { docs: 500, bytes: 1 << 19 });
        for _ in 0..10 {
            s.observe(seen(&s, 10, true));
        }
        assert_eq!(s.limit(), BulkLimit { docs: 100, bytes: 4096 }, "never below the floors");
        assert_eq!(s.observe(seen(&s, 10, true)), None, "at the floor nothing changes");
    }

    #[test]
    fn slow_replies_shrink_by_a_quarter_and_fast_full_ones_grow_back_to_the_maximum() {
        let mut s = sizer(1000, 10);
        assert_eq!(s.observe(seen(&s, 2500, false)), Some(BatchResize::ShrankSlow));
        assert_eq!(s.limit().docs, 750);
        assert_eq!(s.observe(seen(&s, 1500, false)), None, "between half the target and the target: hold");
        assert_eq!(s.observe(seen(&s, 900, false)), Some(BatchResize::Grew));
        assert_eq!(s.limit().docs, 750 + 1000 / 16);
        for _ in 0..10 {
            s.observe(seen(&s, 100, false));
        }
        assert_eq!(s.limit(), BulkLimit { docs: 1000, bytes: 1 << 20 }, "never above the maxima");
        assert_eq!(s.observe(seen(&s, 100, false)), None);
    }

    #[test]
    fn a_small_request_or_one_sized_before_the_last_change_says_nothing() {
        let mut s = sizer(1000, 10);
        s.observe(seen(&s, 10, true));
        let small = BulkObservation { docs: 3, ..seen(&s, 10, false) };
        assert_eq!(s.observe(small), None, "a request far below the limits does not let them grow");
        let stale = BulkObservation { epoch: s.epoch() - 1, ..seen(&s, 10, true) };
        assert_eq!(s.observe(stale), None, "in flight while the size changed: already counted");
        assert_eq!(s.limit().docs, 500);
    }

    #[test]
    fn it_can_be_turned_off_and_floors_above_the_maxima_are_capped() {
        let mut batch = BatchConfig::default();
        batch.adaptive.enabled = false;
        assert!(BatchSizer::new(&batch).is_none());
        let mut s = sizer(5, 10);
        s.observe(seen(&s, 10, true));
        assert_eq!(s.limit().docs, 5);
    }

    #[test]
    fn requests_are_cut_by_documents_and_bytes() {
        let target = Target::index("i");
        let write = |i: usize| DocumentWrite {
            id: format!("d{i}"),
            routing: None,
            version: 1,
            op: crate::transform::WriteOp::Index(vec![b'x'; 100]),
            operation: crate::transform::Operation::Insert,
            position: None,
        };
        let writes: Vec<DocumentWrite> = (0..10).map(write).collect();
        let one = encoded_len(&target, &writes[0]);
        assert_eq!(chunk_len(&target, &writes, BulkLimit { docs: 4, bytes: 1 << 20 }), 4);
        assert_eq!(chunk_len(&target, &writes, BulkLimit { docs: 100, bytes: 3 * one }), 3);
        assert_eq!(chunk_len(&target, &writes, BulkLimit { docs: 100, bytes: 1 }), 1, "at least one");
        assert_eq!(chunk_len(&target, &writes, BulkLimit { docs: 100, bytes: 1 << 20 }), 10);
    }

    #[test]
    fn pressure_is_429_or_a_full_queue() {
        assert!(is_pressure("429 es_rejected_execution_exception: queue full"));
        assert!(is_pressure("503 es_rejected_execution_exception: rejected"));
        assert!(!is_pressure("500 illegal_state_exception: shard failed"));
    }
}
