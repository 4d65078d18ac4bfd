//! A filtered collection's changes: whether a changed document matches the filter now decides
//! between indexing it and deleting it, and the source answers (so the filter means exactly what
//! it means to MongoDB). The changes wait in a queue, in stream order, and the queue is answered
//! with one batched lookup when the batch goes (or the queue holds `batch.maxDocs`), not with one
//! round trip per change.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use mongodb::bson::{Bson, Document, RawDocumentBuf, Timestamp};

use super::missed::MissedLookups;
use super::stream::{applies, StreamBatch};
use super::CollectionSync;
use crate::error::SyncResult;
use crate::pipeline::batch::Batch;
use crate::pipeline::PhaseResult;
use crate::source::{position_of, DocumentChange};
use crate::transform::{describe_id, version_of, DocumentWrite, Operation, Rejected};

/// A change waiting for its lookup (its full document is not kept: it is looked up again).
struct Pending {
    change: DocumentChange,
    token: Option<Document>,
    at: Timestamp,
}

/// The changes of a filtered collection not answered yet, in stream order; at most
/// `batch.maxDocs` of them, each without its document.
#[derive(Default)]
pub(super) struct PendingLookups {
    changes: VecDeque<Pending>,
    since: Option<Instant>,
}

impl PendingLookups {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    pub fn age_ms(&self) -> u128 {
        self.since.map_or(0, |t| t.elapsed().as_millis())
    }
}

/// What one batched lookup told: the matching documents by `_id`, and, when all of them were
/// read, which of the others still exist.
struct Answers {
    matching: HashMap<String, RawDocumentBuf>,
    complete: bool,
    existing: HashSet<String>,
}

/// The `_id` of a change that needs a lookup: an insert, update or replace of a filtered collection.
fn lookup_id(change: &DocumentChange) -> Option<&Bson> {
    match change.operation {
        Operation::Insert | Operation::Update | Operation::Replace => change.key.as_ref().and_then(|k| k.get("_id")),
        _ => None,
    }
}

fn raw_id_key(doc: &RawDocumentBuf) -> Option<String> {
    let id = doc.get("_id").ok()??;
    Some(describe_id(&Bson::try_from(id).ok()?))
}

impl<'a> CollectionSync<'a> {
    /// Queues a change of a filtered collection; a full queue is answered and dispatched.
    pub(super) async fn queue_change(
        &mut self,
        change: DocumentChange,
        token: Option<Document>,
        at: Timestamp,
        state: &mut StreamBatch<'a>,
    ) -> PhaseResult<()> {
        let change = DocumentChange { document: None, ..change };
        state.pending.changes.push_back(Pending { change, token, at });
        state.pending.since.get_or_insert_with(Instant::now);
        if state.pending.changes.len() >= self.ctx.config.batch.max_docs {
            self.dispatch(state).await?;
        }
        Ok(())
    }

    /// Turns the queued changes into writes of the batch, in order: one lookup for all of them
    /// (more only when the documents found exceed `batch.maxBytes`).
    pub(super) async fn resolve_lookups(&mut self, state: &mut StreamBatch<'a>) -> PhaseResult<()> {
        while !state.pending.is_empty() {
            let answers = self.look_up(state.pending.changes.iter(), self.ctx.config.batch.max_bytes).await?;
            let mut answered = 0;
            while let Some(pending) = state.pending.changes.front() {
                let Some(write) = self.pending_write(pending, &answers, &mut state.batch, &mut state.missed) else { break };
                let token = pending.token.clone();
                state.pending.changes.pop_front();
                self.add_write(write, token, state).await?;
                answered += 1;
            }
            if answered == 0 {
                // The first change's document was past the byte bound: it is looked up alone.
                let answers = self.look_up(state.pending.changes.iter().take(1), usize::MAX).await?;
                let pending = state.pending.changes.pop_front().expect("a change waits");
                let write = self.pending_write(&pending, &answers, &mut state.batch, &mut state.missed).expect("looked up alone, it is answered");
                self.add_write(write, pending.token, state).await?;
            }
        }
        state.pending.since = None;
        Ok(())
    }

    /// One lookup of the documents these changes need (as of the latest of them), and which of
    /// those not matching still exist.
    async fn look_up(&self, changes: impl Iterator<Item = &Pending>, max_bytes: usize) -> SyncResult<Answers> {
        let mut answers = Answers { matching: HashMap::new(), complete: true, existing: HashSet::new() };
        let (mut wanted, mut seen, mut at) = (Vec::new(), HashSet::new(), None);
        for pending in changes {
            if let Some(id) = lookup_id(&pending.change).filter(|_| applies(self.config.operations, pending.change.operation)) {
                if seen.insert(describe_id(id)) {
                    wanted.push(id.clone());
                }
                at = at.max(Some(pending.at));
            }
        }
        let (Some(filter), false) = (&self.config.filter, wanted.is_empty()) else { return Ok(answers) };
        let ns = &self.config.namespace;
        let found = self.ctx.source.lookup_many(ns, &wanted, Some(filter), at, max_bytes).await?;
        answers.complete = found.complete;
        answers.matching = found.documents.into_iter().filter_map(|doc| Some((raw_id_key(&doc)?, doc))).collect();
        let absent: Vec<Bson> = wanted.into_iter().filter(|id| !answers.matching.contains_key(&describe_id(id))).collect();
        if answers.complete && !absent.is_empty() {
            // Out of the filter, or gone (deleted, or renamed: then it is read again after the rename).
            answers.existing = self.ctx.source.existing_ids(ns, &absent, at).await?.iter().map(describe_id).collect();
        }
        Ok(answers)
    }

    /// The write a queued change comes to, if `answers` tell (`None`: not answered yet).
    fn pending_write(
        &self,
        pending: &Pending,
        answers: &Answers,
        batch: &mut Batch,
        missed: &mut MissedLookups,
    ) -> Option<Option<Result<DocumentWrite, Rejected>>> {
        let change = &pending.change;
        if !applies(self.config.operations, change.operation) {
            return Some(None);
        }
        let version = version_of(pending.at);
        let write = match (change.operation, lookup_id(change)) {
            (Operation::Delete, _) => self.delete_for(change, version, missed),
            (_, None) => Some(Err(Rejected::new(describe_id(&Bson::Null), "change event without documentKey._id"))),
            (_, Some(id)) => {
                let key = describe_id(id);
                match answers.matching.get(&key) {
                    Some(doc) => Some(self.index_write(doc, version, batch)),
                    None if !answers.complete => return None,
                    None => {
                        if !answers.existing.contains(&key) {
                            missed.add(id);
                        }
                        // Without deletes in `operations` (an archive), a document that left the filter stays.
                        self.config.operations.delete.then(|| self.delete_write(id, version))
                    }
                }
            }
        };
        let position = pending.token.as_ref().map(position_of);
        Some(write.map(|w| w.map(|w| DocumentWrite { operation: change.operation, position, ..w })))
    }
}
