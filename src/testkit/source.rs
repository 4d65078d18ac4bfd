//! A scripted change source: a tiny in-memory MongoDB with collections, an oplog of changes
//! with resume tokens and cluster times, change streams that behave as MongoDB's do where the
//! pipeline depends on it (updates looked up when read, drop/rename followed by `invalidate`,
//! `invalidate` tokens refused by `resumeAfter`, the `startAfter` token reported until the first
//! empty batch, lost history), and failures injected on demand.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use mongodb::bson::{doc, Bson, Document, Timestamp};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::CopyRange;
use crate::config::Namespace;
use crate::error::{ErrorCode, SyncError, SyncResult};
use crate::event::CollectionChange;
use crate::source::{
    Change, ChangeFeed, ChangeKind, ChangeSource, DocumentChange, DocumentStream, FeedLimits, FeedSender, RangePlan, ScanOptions, StreamItem, StreamStart,
};
use crate::transform::Operation;

#[derive(Debug, Clone)]
enum Entry {
    Insert(Document),
    /// Read with the document as it is when the stream reads it (`updateLookup`).
    Update(i64),
    Replace(Document),
    Delete(i64),
    Collection(CollectionChange),
}

#[derive(Debug, Clone)]
struct Logged {
    ns: Namespace,
    seq: u64,
    entry: Entry,
}

/// Failures to inject, each used once.
#[derive(Default)]
struct Faults {
    open: VecDeque<SyncError>,
    /// The next stream opened fails after this many changes.
    stream: VecDeque<(usize, SyncError)>,
    scan: VecDeque<SyncError>,
    /// The next scan fails after this many documents.
    scan_after: VecDeque<(usize, SyncError)>,
    now: VecDeque<SyncError>,
}

#[derive(Default)]
struct World {
    collections: HashMap<Namespace, BTreeMap<i64, Document>>,
    log: Vec<Logged>,
    /// Entries before this sequence number are gone from the history.
    history_from: u64,
    faults: Faults,
    opened: Vec<(Namespace, StreamStart)>,
    lookups: Vec<(Namespace, Bson, Option<Timestamp>)>,
    scans: Vec<(Namespace, CopyRange, ScanOptions)>,
    /// Streams report no idle turns while set.
    idle_held: bool,
}

struct Shared {
    world: Mutex<World>,
    appended: watch::Sender<u64>,
}

/// A token names a place in the log: after entry `seq`; `kind` 0 for a change, 1 for an
/// invalidate, 2 for a high-water mark reported by an idle stream.
fn token(seq: u64, kind: u8) -> Document {
    doc! {"_data": format!("{seq:016x}{kind:02x}")}
}

fn parse_token(d: &Document) -> Option<(u64, u8)> {
    let data = d.get_str("_data").ok()?;
    Some((u64::from_str_radix(data.get(..16)?, 16).ok()?, u8::from_str_radix(data.get(16..)?, 16).ok()?))
}

/// The cluster time of log entry `seq`.
fn time_of(seq: u64) -> Timestamp {
    Timestamp { time: 1000 + seq as u32, increment: 1 }
}

fn history_lost(message: &str) -> SyncError {
    SyncError::new(ErrorCode::HistoryLost, message.to_string())
}

fn id_of(doc: &Document) -> i64 {
    match doc.get("_id") {
        Some(Bson::Int32(i)) => *i as i64,
        Some(Bson::Int64(i)) => *i,
        other => panic!("the scripted source keys documents by integer _id, not {other:?}"),
    }
}

fn matches(doc: &Document, filter: Option<&Document>) -> bool {
    filter.is_none_or(|f| f.iter().all(|(k, v)| doc.get(k) == Some(v)))
}

impl World {
    fn append(&mut self, ns: &Namespace, entry: Entry) -> u64 {
        let seq = self.log.len() as u64 + 1;
        self.log.push(Logged { ns: ns.clone(), seq, entry });
        seq
    }

    fn last_seq(&self) -> u64 {
        self.log.len() as u64
    }

    /// The sequence number a stream opened at `start` reads after.
    fn start_seq(&self, start: &StreamStart) -> SyncResult<u64> {
        let seq = match start {
            StreamStart::ResumeAfter(t) => match parse_token(t) {
                Some((_, 1)) => return Err(history_lost("cannot resume with resumeAfter from an invalidate token; use startAfter (InvalidResumeToken)")),
                Some((seq, _)) => seq,
                None => return Err(history_lost("invalid resume token")),
            },
            StreamStart::StartAfter(t) => parse_token(t).ok_or_else(|| history_lost("invalid resume token"))?.0,
            StreamStart::AtOperationTime(at) => (1..=self.last_seq() + 1).find(|s| time_of(*s) >= *at).expect("a later sequence") - 1,
        };
        if seq + 1 < self.history_from {
            return Err(history_lost("resume point is no longer in the oplog (ChangeStreamHistoryLost)"));
        }
        Ok(seq)
    }

    fn change(&self, logged: &Logged) -> Change {
        let key = |id: i64| Some(doc! {"_id": id});
        let document = |operation, id, document| ChangeKind::Document(DocumentChange { operation, key: key(id), document });
        let (kind, kind_code) = match &logged.entry {
            Entry::Insert(d) => (document(Operation::Insert, id_of(d), Some(d.clone())), 0),
            Entry::Replace(d) => (document(Operation::Replace, id_of(d), Some(d.clone())), 0),
            Entry::Update(id) => {
                let now = self.collections.get(&logged.ns).and_then(|c| c.get(id)).cloned();
                (document(Operation::Update, *id, now), 0)
            }
            Entry::Delete(id) => (document(Operation::Delete, *id, None), 0),
            Entry::Collection(c) => (ChangeKind::Collection(c.clone()), u8::from(*c == CollectionChange::Invalidate)),
        };
        Change { token: Some(token(logged.seq, kind_code)), cluster_time: Some(time_of(logged.seq)), kind, size: 100 }
    }
}

/// An opened stream's reading state.
struct Reader {
    shared: Arc<Shared>,
    ns: Namespace,
    after: u64,
    /// Reported by the first idle turn (the driver reports the `startAfter` token until a batch is empty).
    start_after: Option<Document>,
    fail_after: Option<(usize, SyncError)>,
    delivered: usize,
}

impl Reader {
    /// The next item, or none when caught up.
    fn next(&mut self) -> Option<StreamItem> {
        if let Some((n, _)) = &self.fail_after {
            if self.delivered >= *n {
                return Some(StreamItem::Failed(self.fail_after.take().expect("checked").1));
            }
        }
        let world = self.shared.world.lock().expect("world");
        let logged = world.log.iter().skip(self.after as usize).find(|l| l.ns == self.ns)?;
        self.after = logged.seq;
        self.delivered += 1;
        self.start_after = None;
        Some(StreamItem::Change(Box::new(world.change(logged))))
    }

    fn idle_position(&mut self) -> Document {
        self.start_after.take().unwrap_or_else(|| token(self.shared.world.lock().expect("world").last_seq().max(self.after), 2))
    }

    async fn run(mut self, tx: FeedSender, cancel: CancellationToken) {
        let mut appended = self.shared.appended.subscribe();
        loop {
            let idle_held = self.shared.world.lock().expect("world").idle_held;
            let item = match self.next() {
                Some(item) => item,
                None if idle_held => {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                    }
                    continue;
                }
                None => {
                    if !tx.send(StreamItem::Idle(Some(self.idle_position()))).await {
                        return;
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = appended.changed() => {}
                        _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    }
                    continue;
                }
            };
            let last = match &item {
                StreamItem::Change(c) => c.kind == ChangeKind::Collection(CollectionChange::Invalidate),
                _ => true,
            };
            if !tx.send(item).await || last {
                return;
            }
        }
    }
}

#[derive(Clone)]
pub struct FakeSource {
    shared: Arc<Shared>,
}

impl Default for FakeSource {
    fn default() -> Self {
        FakeSource { shared: Arc::new(Shared { world: Mutex::new(World::default()), appended: watch::channel(0).0 }) }
    }
}

impl FakeSource {
    fn write<T>(&self, f: impl FnOnce(&mut World) -> T) -> T {
        let out = f(&mut self.shared.world.lock().expect("world"));
        let last = self.shared.world.lock().expect("world").last_seq();
        self.shared.appended.send_replace(last);
        out
    }

    pub fn insert(&self, ns: &Namespace, docs: impl IntoIterator<Item = Document>) {
        self.write(|w| {
            for d in docs {
                w.collections.entry(ns.clone()).or_default().insert(id_of(&d), d.clone());
                w.append(ns, Entry::Insert(d));
            }
        })
    }

    /// Changes a document in place (`$set`), logged as an update.
    pub fn update(&self, ns: &Namespace, id: i64, set: Document) {
        self.write(|w| {
            let d = w.collections.get_mut(ns).and_then(|c| c.get_mut(&id)).expect("updating a document that exists");
            d.extend(set);
            w.append(ns, Entry::Update(id));
        })
    }

    pub fn replace(&self, ns: &Namespace, d: Document) {
        self.write(|w| {
            w.collections.entry(ns.clone()).or_default().insert(id_of(&d), d.clone());
            w.append(ns, Entry::Replace(d));
        })
    }

    pub fn delete(&self, ns: &Namespace, id: i64) {
        self.write(|w| {
            w.collections.get_mut(ns).and_then(|c| c.remove(&id));
            w.append(ns, Entry::Delete(id));
        })
    }

    pub fn drop_collection(&self, ns: &Namespace) {
        self.write(|w| {
            w.collections.remove(ns);
            w.append(ns, Entry::Collection(CollectionChange::Drop));
            w.append(ns, Entry::Collection(CollectionChange::Invalidate));
        })
    }

    /// `renameCollection`; onto an existing collection with `dropTarget` (as `$out` does): the
    /// target's stream sees a drop, as SecantusDB's does.
    pub fn rename(&self, from: &Namespace, to: &Namespace) {
        self.write(|w| {
            let docs = w.collections.remove(from).unwrap_or_default();
            if w.collections.insert(to.clone(), docs).is_some() {
                w.append(to, Entry::Collection(CollectionChange::Drop));
                w.append(to, Entry::Collection(CollectionChange::Invalidate));
            }
            w.append(from, Entry::Collection(CollectionChange::Rename { to: to.clone() }));
            w.append(from, Entry::Collection(CollectionChange::Invalidate));
        })
    }

    /// `renameCollection` onto an existing collection with `dropTarget`, as a MongoDB server may
    /// report it on the target's stream: a rename event whose `to` is the target.
    pub fn rename_reported_as_rename(&self, from: &Namespace, to: &Namespace) {
        self.write(|w| {
            let docs = w.collections.remove(from).unwrap_or_default();
            w.collections.insert(to.clone(), docs);
            w.append(to, Entry::Collection(CollectionChange::Rename { to: to.clone() }));
            w.append(to, Entry::Collection(CollectionChange::Invalidate));
            w.append(from, Entry::Collection(CollectionChange::Rename { to: to.clone() }));
            w.append(from, Entry::Collection(CollectionChange::Invalidate));
        })
    }

    /// Puts documents in a collection without a change in its stream (as SecantusDB shows a
    /// rename into a collection that does not exist: nothing).
    pub fn put_silently(&self, ns: &Namespace, docs: impl IntoIterator<Item = Document>) {
        self.write(|w| w.collections.entry(ns.clone()).or_default().extend(docs.into_iter().map(|d| (id_of(&d), d))))
    }

    /// A rename into a collection that does not exist, as MongoDB reports it on the target's
    /// stream: an `invalidate` alone.
    pub fn rename_into_absent(&self, from: &Namespace, to: &Namespace) {
        self.write(|w| {
            let docs = w.collections.remove(from).unwrap_or_default();
            w.collections.insert(to.clone(), docs);
            w.append(to, Entry::Collection(CollectionChange::Invalidate));
            w.append(from, Entry::Collection(CollectionChange::Rename { to: to.clone() }));
            w.append(from, Entry::Collection(CollectionChange::Invalidate));
        })
    }

    /// `renameCollection` into a collection that does not exist (any more), as SecantusDB shows
    /// it (and so the second step of its `$out` onto an existing collection, after the drop):
    /// nothing on the target's stream.
    pub fn rename_silently_into(&self, from: &Namespace, to: &Namespace) {
        self.write(|w| {
            let docs = w.collections.remove(from).unwrap_or_default();
            w.collections.insert(to.clone(), docs);
            w.append(from, Entry::Collection(CollectionChange::Rename { to: to.clone() }));
            w.append(from, Entry::Collection(CollectionChange::Invalidate));
        })
    }

    /// Puts a document under `key` whatever its `_id` (e.g. one the sync cannot use), silently.
    pub fn put_raw(&self, ns: &Namespace, key: i64, doc: Document) {
        self.write(|w| w.collections.entry(ns.clone()).or_default().insert(key, doc));
    }

    /// While set, streams report no idle turns (the server's empty batches are late).
    pub fn hold_idle(&self, held: bool) {
        self.write(|w| w.idle_held = held)
    }

    /// Everything logged so far falls out of the history window.
    pub fn truncate_history(&self) {
        self.write(|w| w.history_from = w.last_seq() + 1)
    }

    pub fn documents(&self, ns: &Namespace) -> BTreeMap<i64, Document> {
        self.shared.world.lock().expect("world").collections.get(ns).cloned().unwrap_or_default()
    }

    pub fn fail_next_open(&self, e: SyncError) {
        self.write(|w| w.faults.open.push_back(e))
    }

    pub fn fail_next_stream_after(&self, changes: usize, e: SyncError) {
        self.write(|w| w.faults.stream.push_back((changes, e)))
    }

    pub fn fail_next_scan(&self, e: SyncError) {
        self.write(|w| w.faults.scan.push_back(e))
    }

    pub fn fail_next_scan_after(&self, documents: usize, e: SyncError) {
        self.write(|w| w.faults.scan_after.push_back((documents, e)))
    }

    /// Every scan so far: the collection, the range and the options.
    pub fn scans(&self) -> Vec<(Namespace, CopyRange, ScanOptions)> {
        self.shared.world.lock().expect("world").scans.clone()
    }

    /// Every lookup so far: the collection, the `_id` and the time it had to read no older than.
    pub fn lookups(&self) -> Vec<(Namespace, Bson, Option<Timestamp>)> {
        self.shared.world.lock().expect("world").lookups.clone()
    }

    pub fn fail_next_now(&self, e: SyncError) {
        self.write(|w| w.faults.now.push_back(e))
    }

    /// Every stream opened so far, and where.
    pub fn opened(&self) -> Vec<(Namespace, StreamStart)> {
        self.shared.world.lock().expect("world").opened.clone()
    }
}

#[async_trait]
impl ChangeSource for FakeSource {
    async fn now(&self) -> SyncResult<Timestamp> {
        let mut w = self.shared.world.lock().expect("world");
        if let Some(e) = w.faults.now.pop_front() {
            return Err(e);
        }
        let t = time_of(w.last_seq());
        Ok(Timestamp { time: t.time, increment: t.increment + 1 })
    }

    async fn history_reaches(&self, _ns: &Namespace, at: Timestamp) -> SyncResult<bool> {
        let w = self.shared.world.lock().expect("world");
        Ok(w.history_from == 0 || at >= time_of(w.history_from))
    }

    async fn open_stream(&self, ns: &Namespace, start: &StreamStart, limits: FeedLimits, cancel: CancellationToken) -> SyncResult<ChangeFeed> {
        let (after, fail_after) = {
            let mut w = self.shared.world.lock().expect("world");
            w.opened.push((ns.clone(), start.clone()));
            if let Some(e) = w.faults.open.pop_front() {
                return Err(e);
            }
            (w.start_seq(start)?, w.faults.stream.pop_front())
        };
        let start_after = match start {
            StreamStart::StartAfter(t) => Some(t.clone()),
            _ => None,
        };
        let reader = Reader { shared: self.shared.clone(), ns: ns.clone(), after, start_after, fail_after, delivered: 0 };
        Ok(ChangeFeed::spawn(limits, move |tx| reader.run(tx, cancel)))
    }

    async fn estimated_count(&self, ns: &Namespace) -> u64 {
        self.documents(ns).len() as u64
    }

    async fn plan_ranges(&self, _ns: &Namespace, _readers: usize) -> SyncResult<RangePlan> {
        Ok(RangePlan { ranges: vec![CopyRange::default()], warning: None })
    }

    async fn scan(&self, ns: &Namespace, range: &CopyRange, options: &ScanOptions) -> SyncResult<DocumentStream> {
        let mut w = self.shared.world.lock().expect("world");
        w.scans.push((ns.clone(), range.clone(), options.clone()));
        if let Some(e) = w.faults.scan.pop_front() {
            return Err(e);
        }
        let fail_after = w.faults.scan_after.pop_front();
        let after = range.last_id.as_ref().and_then(Bson::as_i64).or(range.last_id.as_ref().and_then(|b| b.as_i32().map(i64::from)));
        let docs: Vec<SyncResult<Document>> = w
            .collections
            .get(ns)
            .map(|c| c.range(after.map_or(i64::MIN, |a| a + 1)..).map(|(_, d)| d.clone()).filter(|d| matches(d, options.filter.as_ref())).map(Ok).collect())
            .unwrap_or_default();
        let docs = match fail_after {
            Some((n, e)) => docs.into_iter().take(n).chain([Err(e)]).collect(),
            None => docs,
        };
        Ok(futures::stream::iter(docs).boxed())
    }

    async fn lookup(&self, ns: &Namespace, id: &Bson, filter: Option<&Document>, not_before: Option<Timestamp>) -> SyncResult<Option<Document>> {
        let mut w = self.shared.world.lock().expect("world");
        w.lookups.push((ns.clone(), id.clone(), not_before));
        let key = id.as_i64().or(id.as_i32().map(i64::from)).expect("integer ids");
        Ok(w.collections.get(ns).and_then(|c| c.get(&key)).filter(|d| matches(d, filter)).cloned())
    }

    async fn has_documents(&self, ns: &Namespace) -> SyncResult<bool> {
        Ok(!self.documents(ns).is_empty())
    }

    async fn list_collections(&self) -> SyncResult<Vec<Namespace>> {
        let mut found: Vec<Namespace> = self.shared.world.lock().expect("world").collections.keys().cloned().collect();
        found.sort_by_key(|ns| ns.to_string());
        Ok(found)
    }
}
