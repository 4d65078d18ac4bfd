//! A batch of writes bounded by documents and bytes, and its commit to the sink.

use std::time::Instant;

use crate::config::BatchConfig;
use crate::event::{Phase, SyncEvent};
use crate::sink::elasticsearch::encoded_len;
use crate::sink::Target;
use crate::stats::Stage;
use crate::transform::hook::apply_hook;
use crate::transform::{ConvertWarning, DocumentWrite, Rejected};

use super::{Context, PhaseResult, Proceed};

#[derive(Debug, Default)]
pub struct Batch {
    writes: Vec<DocumentWrite>,
    bytes: usize,
    /// MongoDB documents or change events this batch stands for (some make no write).
    read: u64,
    rejected: Vec<Rejected>,
    /// Bytes of the rejected documents kept for their dead letters.
    rejected_bytes: usize,
    warnings: Vec<ConvertWarning>,
    opened: Option<Instant>,
}

/// What adding a write needs first.
#[derive(Debug, PartialEq, Eq)]
pub enum Room {
    Fits,
    /// Commit the batch, then add.
    FlushFirst,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.read == 0
    }

    pub fn read_count(&self) -> u64 {
        self.read
    }

    pub fn age_ms(&self) -> u128 {
        self.opened.map_or(0, |t| t.elapsed().as_millis())
    }

    pub fn warnings(&mut self) -> &mut Vec<ConvertWarning> {
        &mut self.warnings
    }

    fn touch(&mut self) {
        self.read += 1;
        self.opened.get_or_insert_with(Instant::now);
    }

    /// Whether `write` fits next to what is already here (rejected documents, kept for their
    /// dead letters, count too).
    pub fn room_for(&self, target: &Target, write: &DocumentWrite, limits: &BatchConfig) -> Room {
        let len = encoded_len(target, write);
        let full = self.read as usize >= limits.max_docs || self.bytes + self.rejected_bytes + len > limits.max_bytes;
        if full && !self.is_empty() {
            Room::FlushFirst
        } else {
            Room::Fits
        }
    }

    /// Holds `batch.maxDocs` reads or `batch.maxBytes`: it goes before anything else is added.
    pub fn is_full(&self, limits: &BatchConfig) -> bool {
        self.read as usize >= limits.max_docs || self.bytes + self.rejected_bytes >= limits.max_bytes
    }

    /// Adds a write; one that alone exceeds the byte cap is dead-lettered instead, since no
    /// request may exceed the cap.
    pub fn push(&mut self, target: &Target, write: DocumentWrite, limits: &BatchConfig) {
        self.touch();
        let len = encoded_len(target, &write);
        if len > limits.max_bytes {
            // The document itself is left out of the record: it is too large by definition.
            self.rejected.push(Rejected::new(write.id, format!("document of {len} bytes exceeds batch.maxBytes ({})", limits.max_bytes)));
            return;
        }
        self.bytes += len;
        self.writes.push(write);
    }

    /// Counts a read that produced no write (e.g. an update whose document is already gone).
    pub fn push_skipped(&mut self) {
        self.touch();
    }

    pub fn push_rejected(&mut self, rejected: Rejected) {
        self.touch();
        self.rejected_bytes += rejected.document.as_ref().map_or(0, String::len) + rejected.reason.len();
        self.rejected.push(rejected);
    }
}

/// Holds the batch back until `rateLimit` lets it go; a stop during the wait ends it unwritten
/// (nothing of it is checkpointed).
async fn throttle(ctx: &Context, batch: &Batch) -> PhaseResult<()> {
    let Some(limiter) = &ctx.rate_limit else { return Ok(()) };
    let wait = limiter.reserve(batch.writes.len(), batch.bytes);
    if wait.is_zero() {
        return Ok(());
    }
    ctx.stats.record_stage(Stage::RateLimitWait, wait);
    tokio::select! {
        _ = tokio::time::sleep(wait) => Ok(()),
        _ = ctx.cancel.cancelled() => Err(super::Halt::Stopped),
    }
}

/// Writes the batch and reports it; returns once everything in it is acknowledged or dead-lettered.
pub async fn commit(ctx: &Context, namespace: &str, target: &Target, phase: Phase, batch: Batch) -> PhaseResult<()> {
    if batch.is_empty() {
        return Ok(());
    }
    throttle(ctx, &batch).await?;
    let started = Instant::now();
    let _in_flight = ctx.stats.collection(namespace).in_flight(batch.bytes);
    let index = target.index.as_str();
    let newest_version = batch.writes.iter().map(|w| w.version).max();
    let mut writes = batch.writes;
    let mut rejected = batch.rejected;
    if let Some(hook) = &ctx.hook {
        let (kept, refused) = apply_hook(hook.as_ref(), namespace, phase, writes).await;
        writes = kept;
        rejected.extend(refused);
    }
    let request = Instant::now();
    let mut report = ctx.sink.write(namespace, target, writes).await.proceed()?;
    ctx.stats.record_stage(Stage::BulkRequest, request.elapsed());
    report.outcome.dead_letters += rejected.len() as u64;
    let dead_letters: Vec<Rejected> = rejected.into_iter().chain(report.dead_letters).collect();
    if let (Some(dlq), false) = (&ctx.config.dead_letter_index, dead_letters.is_empty()) {
        // Written before the batch counts as acknowledged: a dead letter is never only in memory.
        ctx.sink.write_dead_letters(dlq, namespace, index, &dead_letters).await.proceed()?;
    }
    for rejected in dead_letters {
        ctx.events.emit(SyncEvent::DeadLetter { namespace: namespace.to_string(), index: index.to_string(), id: rejected.id, reason: rejected.reason });
    }
    ctx.stats.record_altered_values(batch.warnings.len() as u64);
    if let Some(first) = batch.warnings.first() {
        ctx.events.emit(SyncEvent::Warning {
            namespace: namespace.to_string(),
            message: format!("{} value(s) altered while converting to JSON, e.g. at \"{}\": {}", batch.warnings.len(), first.path, first.reason),
        });
    }
    ctx.stats.record_batch(namespace, phase, batch.read, newest_version, &report.outcome);
    ctx.events.emit(SyncEvent::Batch {
        namespace: namespace.to_string(),
        index: index.to_string(),
        phase,
        outcome: report.outcome,
        took_ms: started.elapsed().as_millis() as u64,
    });
    Ok(())
}
