//! An in-memory search server as a [`Sink`]: indices with external_gte versions (deletes leave
//! versioned tombstones), aliases, shards chosen by routing (so a delete without the right
//! routing misses its document, as on a multi-shard index), index actions, and writes that can
//! be held back or failed on demand.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::retry::Flow;
use tokio::sync::Semaphore;

use crate::config::CollectionConfig;
use crate::error::{SyncError, SyncResult};
use crate::sink::{IndexAction, IndexChange, Sink, Target, WriteReport};
use crate::transform::{DocumentWrite, Rejected, WriteOp};

#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub version: i64,
    /// The `_source`; none for a deleted document (a tombstone keeping its version).
    pub source: Option<serde_json::Value>,
    pub routing: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct FakeIndex {
    /// By (shard, id).
    pub docs: BTreeMap<(u32, String), Stored>,
    pub shards: u32,
    /// Created by a write rather than prepared (what a search server does with an unknown index).
    pub auto_created: bool,
    /// What it was prepared with: its settings and mappings.
    pub body: Option<serde_json::Value>,
}

impl FakeIndex {
    fn shard_of(&self, id: &str, routing: Option<&str>) -> u32 {
        let key = routing.unwrap_or(id);
        key.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32)) % self.shards.max(1)
    }

    /// The live documents: id → source.
    pub fn live(&self) -> BTreeMap<String, serde_json::Value> {
        self.docs.iter().filter_map(|((_, id), s)| s.source.clone().map(|src| (id.clone(), src))).collect()
    }
}

#[derive(Default)]
struct State {
    indices: BTreeMap<String, FakeIndex>,
    aliases: BTreeMap<String, BTreeSet<String>>,
    actions: Vec<IndexChange>,
    /// Every write call: the index and the (id, version) pairs.
    writes: Vec<(String, Vec<(String, i64)>)>,
    prepared: Vec<(String, Option<String>)>,
    write_faults: VecDeque<SyncError>,
    shards: u32,
}

impl State {
    /// The concrete index behind a name (an alias of one index, or the index itself).
    fn resolve(&self, name: &str) -> String {
        self.aliases.get(name).and_then(|s| s.iter().next().cloned()).unwrap_or_else(|| name.to_string())
    }

    fn index_mut(&mut self, name: &str, auto_create: bool) -> &mut FakeIndex {
        let name = self.resolve(name);
        let shards = self.shards;
        self.indices.entry(name).or_insert_with(|| FakeIndex { shards, auto_created: auto_create, ..Default::default() })
    }

    fn write_one(&mut self, index: &str, w: &DocumentWrite, report: &mut WriteReport) {
        let idx = self.index_mut(index, true);
        let key = (idx.shard_of(&w.id, w.routing.as_deref()), w.id.clone());
        if idx.docs.get(&key).is_some_and(|s| s.version > w.version) {
            report.outcome.conflicts += 1;
            return;
        }
        let source = match &w.op {
            WriteOp::Index(body) => Some(serde_json::from_slice(body).expect("JSON body")),
            WriteOp::Delete => None,
        };
        match source {
            Some(_) => report.outcome.indexed += 1,
            None => report.outcome.deleted += 1,
        }
        idx.docs.insert(key, Stored { version: w.version, source, routing: w.routing.clone() });
    }

    fn apply(&mut self, action: &IndexAction) {
        match action {
            IndexAction::DeleteDocuments { index } => {
                let name = self.resolve(index);
                if let Some(idx) = self.indices.get_mut(&name) {
                    idx.docs.clear();
                }
            }
            IndexAction::DeleteIndex { index } => self.delete_index(index),
            IndexAction::Reindex { from, to } => {
                let docs = self.indices.get(&self.resolve(from)).map(|i| i.docs.clone()).unwrap_or_default();
                let target = self.index_mut(to, true);
                for (key, stored) in docs.into_iter().filter(|(_, s)| s.source.is_some()) {
                    if target.docs.get(&key).is_none_or(|s| s.version < stored.version) {
                        target.docs.insert(key, stored);
                    }
                }
            }
            IndexAction::SwapAlias { alias, index, replaces, extra_aliases } => {
                if replaces != index {
                    self.delete_index(replaces);
                }
                for alias in std::iter::once(alias).chain(extra_aliases) {
                    self.aliases.entry(alias.clone()).or_default().insert(index.clone());
                }
            }
        }
    }

    fn delete_index(&mut self, name: &str) {
        let name = self.resolve(name);
        self.indices.remove(&name);
        for members in self.aliases.values_mut() {
            members.remove(&name);
        }
        self.aliases.retain(|_, members| !members.is_empty());
    }
}

pub struct MemorySink {
    state: Mutex<State>,
    /// Writes pass one permit each; holding takes the permits away.
    gate: Semaphore,
    held: AtomicBool,
    waiting: AtomicUsize,
    block_prepare: AtomicBool,
    /// Indices whose preparation never finishes.
    block_prepare_of: Mutex<Vec<String>>,
    /// Held writes, once let through, answer [`Flow::Stopped`] without writing.
    stop_held: AtomicBool,
}

impl Default for MemorySink {
    fn default() -> Self {
        MemorySink {
            state: Mutex::new(State { shards: 1, ..Default::default() }),
            gate: Semaphore::new(Semaphore::MAX_PERMITS),
            held: AtomicBool::new(false),
            waiting: AtomicUsize::new(0),
            block_prepare: AtomicBool::new(false),
            block_prepare_of: Mutex::new(Vec::new()),
            stop_held: AtomicBool::new(false),
        }
    }
}

impl MemorySink {
    /// Writes wait from now on until released.
    pub fn hold(&self) {
        if !self.held.swap(true, Ordering::SeqCst) {
            let all = self.gate.available_permits();
            self.gate.forget_permits(all);
        }
    }

    /// Lets `n` held writes through.
    pub fn release(&self, n: usize) {
        self.gate.add_permits(n);
    }

    /// Writes pass freely again.
    pub fn open(&self) {
        if self.held.swap(false, Ordering::SeqCst) {
            self.gate.add_permits(Semaphore::MAX_PERMITS - self.gate.available_permits());
        }
    }

    /// Writes waiting at the gate.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Held writes end as an output's do when a stop cuts its retry wait short: they answer
    /// [`Flow::Stopped`] once let through, and write nothing.
    pub fn stop_held_writes(&self) {
        self.stop_held.store(true, Ordering::SeqCst);
    }

    /// Index preparation never finishes from now on (as an output retrying forever).
    pub fn block_prepare(&self) {
        self.block_prepare.store(true, Ordering::SeqCst);
    }

    /// The preparation of `index` never finishes from now on (others go on).
    pub fn block_prepare_of(&self, index: &str) {
        self.block_prepare_of.lock().expect("sink").push(index.to_string());
    }

    /// The indices prepared so far, in order.
    pub fn prepared(&self) -> Vec<String> {
        self.state.lock().expect("sink").prepared.iter().map(|(index, _)| index.clone()).collect()
    }

    pub fn fail_next_write(&self, e: SyncError) {
        self.state.lock().expect("sink").write_faults.push_back(e);
    }

    /// A copy of an index, by name or alias.
    pub fn index(&self, name: &str) -> Option<FakeIndex> {
        let s = self.state.lock().expect("sink");
        s.indices.get(&s.resolve(name)).cloned()
    }

    /// The live documents of an index (none if it does not exist).
    pub fn docs(&self, name: &str) -> BTreeMap<String, serde_json::Value> {
        self.index(name).map(|i| i.live()).unwrap_or_default()
    }

    pub fn aliases(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.state.lock().expect("sink").aliases.clone()
    }

    pub fn actions(&self) -> Vec<IndexChange> {
        self.state.lock().expect("sink").actions.clone()
    }

    pub fn writes(&self) -> Vec<(String, Vec<(String, i64)>)> {
        self.state.lock().expect("sink").writes.clone()
    }
}

#[async_trait]
impl Sink for MemorySink {
    async fn connect(&self) -> SyncResult<()> {
        Ok(())
    }

    async fn prepare_index(&self, index: &str, collection: Option<&CollectionConfig>) -> SyncResult<Flow<()>> {
        if self.block_prepare.load(Ordering::SeqCst) || self.block_prepare_of.lock().expect("sink").iter().any(|i| i == index) {
            std::future::pending::<()>().await;
        }
        let mut s = self.state.lock().expect("sink");
        let alias = collection.and_then(|c| c.alias.clone());
        s.prepared.push((index.to_string(), alias.clone()));
        let idx = s.index_mut(index, false);
        if idx.docs.is_empty() && idx.auto_created {
            idx.auto_created = false;
        }
        if idx.body.is_none() {
            idx.body = collection.and_then(|c| c.index_body.clone());
        }
        let concrete = s.resolve(index);
        if let Some(alias) = alias {
            s.aliases.entry(alias).or_default().insert(concrete);
        }
        Ok(Flow::Done(()))
    }

    async fn prepare_dead_letters(&self, index: &str) -> SyncResult<Flow<()>> {
        self.state.lock().expect("sink").index_mut(index, false);
        Ok(Flow::Done(()))
    }

    async fn write(&self, _namespace: &str, target: &Target, writes: Vec<DocumentWrite>) -> SyncResult<Flow<WriteReport>> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let permit = self.gate.acquire().await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        permit.expect("gate open").forget();
        if self.held.load(Ordering::SeqCst) {
            // A released write uses its permit; the gate stays shut for the next.
            if self.stop_held.load(Ordering::SeqCst) {
                return Ok(Flow::Stopped);
            }
        } else {
            self.gate.add_permits(1);
        }
        let mut s = self.state.lock().expect("sink");
        if let Some(e) = s.write_faults.pop_front() {
            return Err(e);
        }
        let mut report = WriteReport::default();
        for w in &writes {
            s.write_one(&target.index, w, &mut report);
        }
        s.writes.push((target.index.clone(), writes.iter().map(|w| (w.id.clone(), w.version)).collect()));
        Ok(Flow::Done(report))
    }

    async fn write_dead_letters(&self, _dlq: &str, _namespace: &str, _index: &str, _records: &[Rejected]) -> SyncResult<Flow<()>> {
        Ok(Flow::Done(()))
    }

    async fn apply(&self, change: &IndexChange) -> SyncResult<Flow<()>> {
        let mut s = self.state.lock().expect("sink");
        s.apply(&change.action);
        s.actions.push(change.clone());
        Ok(Flow::Done(()))
    }
}
