//! One change stream per database for databases with many followed collections
//! (`mongo.databaseStreamThreshold`): a single `db.watch()` with a server-side `$match` on the
//! followed collections, read by one task (the database's *hub*), which hands each change to
//! the feed of its collection. Each collection keeps its own feed, batches, ordering and
//! checkpoint, exactly as with a stream of its own; only the reading is shared, so a thousand
//! collections use one cursor (and one pooled connection at a time) instead of a thousand.
//!
//! Positions. A database stream's idle resume tokens cannot resume a collection's stream (and
//! SecantusDB refuses them there), and opaque tokens cannot be ordered. So a collection read
//! through its database's stream keeps a [`DbPosition`] as its resume token: a cluster time and
//! how many of the collection's changes at that time are delivered. The hub opens its stream at
//! the earliest time any of its collections needs (`startAtOperationTime`, inclusive), counts
//! each collection's changes per cluster time (changes of one transaction share it, in a fixed
//! order), and hands a collection only the changes after its own position: a restart, or a
//! collection joining later, replays the database's changes from that time and nothing is
//! applied twice or missed. A collection with nothing new moves on to a *safe time*: the
//! cluster time of the last change the hub read (every earlier one has been read). Never to
//! the server's clock: a change stream returns a write only once a majority has it, which can
//! be later than any clock reading by more than a poll, and a position past a change not yet
//! read would skip it.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mongodb::bson::{Bson, Document, RawBsonRef, RawDocumentBuf, Timestamp};
use mongodb::Client;
use tokio::sync::mpsc;

use super::change_stream::{self, RawStream};
use super::error::mongo_error;
use crate::config::Namespace;
use crate::error::{ErrorCode, SyncError};
use crate::event::CollectionChange;
use crate::source::{Change, ChangeFeed, ChangeKind, FeedLimits, FeedSender, StreamItem, StreamStart};

/// The token keys of a [`DbPosition`].
const AT: &str = "dbStreamAt";
const COUNT: &str = "dbStreamCount";

/// After a collection joins, others joining within this window are taken in the same reopening.
const JOIN_WINDOW: Duration = Duration::from_millis(50);
/// How often every collection gets an idle turn.
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// How far (in cluster time) the position of a collection with nothing new may fall behind the
/// safe time before it moves on (each move is a checkpoint save; a restart replays at most about
/// this much), at least: see [`move_after`].
const MOVE_AFTER: Duration = Duration::from_secs(30);
/// The lag allowed per member: a thousand members move about twice a second (a save each),
/// each once per 500 s, instead of all at once.
const MOVE_AFTER_PER_MEMBER: Duration = Duration::from_millis(500);
/// Positions moved on per idle turn: the steady rate is at most 2 a second (each member once
/// per [`move_after`]), so a backlog (every member joined at once) clears four times as fast.
const MOVES_PER_TURN: usize = 8;

/// How far a quiet position may lag the safe time with `members` collections in the hub.
fn move_after(members: usize) -> Duration {
    MOVE_AFTER.max(MOVE_AFTER_PER_MEMBER * u32::try_from(members).unwrap_or(u32::MAX))
}

/// Where a collection stands in its database's stream: every change of it before `at`, and its
/// first `count` changes at `at`, are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DbPosition {
    pub at: Timestamp,
    pub count: u32,
}

impl DbPosition {
    /// The position a resume token names, if it is one of a database stream.
    pub fn of_token(token: &Document) -> Option<DbPosition> {
        let at = token.get_timestamp(AT).ok()?;
        let count = match token.get(COUNT)? {
            Bson::Int32(n) => u32::try_from(*n).ok()?,
            Bson::Int64(n) => u32::try_from(*n).ok()?,
            _ => return None,
        };
        Some(DbPosition { at, count })
    }

    /// Where a stream opened at `start` continues, if a database stream can serve it (a
    /// collection stream's own token cannot be placed in time).
    pub fn of_start(start: &StreamStart) -> Option<DbPosition> {
        match start {
            StreamStart::AtOperationTime(at) => Some(DbPosition { at: *at, count: 0 }),
            StreamStart::ResumeAfter(token) | StreamStart::StartAfter(token) => DbPosition::of_token(token),
        }
    }

    /// As a resume token; `data`, the event's own token, names the change for record outputs.
    pub fn token(self, data: Option<&str>) -> Document {
        let mut token = Document::new();
        if let Some(data) = data {
            token.insert("_data", data);
        }
        token.insert(AT, self.at);
        token.insert(COUNT, i64::from(self.count));
        token
    }
}

/// Which collections are followed through their database's stream, and the hubs reading them.
pub struct DatabaseStreams {
    client: Client,
    /// A database with more followed collections than this is read through one stream.
    threshold: usize,
    max_await: Duration,
    groups: Mutex<Groups>,
}

#[derive(Default)]
struct Groups {
    followed: HashMap<String, HashSet<String>>,
    hubs: HashMap<String, mpsc::UnboundedSender<Join>>,
}

impl DatabaseStreams {
    pub fn new(client: Client, threshold: usize, max_await: Duration) -> Self {
        DatabaseStreams { client, threshold, max_await, groups: Mutex::default() }
    }

    /// Notes collections that will be followed (to count them per database).
    pub fn plan(&self, namespaces: &[Namespace]) {
        let mut groups = self.groups.lock().expect("groups lock");
        for ns in namespaces {
            groups.followed.entry(ns.db.clone()).or_default().insert(ns.coll.clone());
        }
    }

    /// A collection followed no more (dropped).
    pub fn forget(&self, ns: &Namespace) {
        let mut groups = self.groups.lock().expect("groups lock");
        if let Some(followed) = groups.followed.get_mut(&ns.db) {
            followed.remove(&ns.coll);
        }
    }

    /// Whether the stream of `ns` from `start` is read through its database's stream: a
    /// position of one always is; a start time is once the database has had more followed
    /// collections than the threshold; a collection stream's own token never is.
    pub fn shared_start(&self, ns: &Namespace, start: &StreamStart) -> Option<DbPosition> {
        let from = DbPosition::of_start(start)?;
        if let StreamStart::AtOperationTime(_) = start {
            let groups = self.groups.lock().expect("groups lock");
            let many = groups.followed.get(&ns.db).map_or(0, HashSet::len) > self.threshold;
            if !many && !groups.hubs.contains_key(&ns.db) {
                return None;
            }
        }
        Some(from)
    }

    /// The feed of `ns` from `from`, served by its database's hub (started if needed).
    pub fn open(&self, ns: &Namespace, from: DbPosition, limits: FeedLimits) -> ChangeFeed {
        let joins = {
            let mut groups = self.groups.lock().expect("groups lock");
            let hub = groups.hubs.get(&ns.db).filter(|h| !h.is_closed()).cloned();
            hub.unwrap_or_else(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                let hub = Hub::new(self.client.clone(), ns.db.clone(), self.max_await, rx);
                tokio::spawn(hub.run());
                groups.hubs.insert(ns.db.clone(), tx.clone());
                tx
            })
        };
        let coll = ns.coll.clone();
        ChangeFeed::spawn(limits, move |tx| async move {
            // The hub holds the sender from now on: the feed ends when the hub lets it go.
            let _ = joins.send(Join { coll, from, tx });
        })
    }
}

struct Join {
    coll: String,
    from: DbPosition,
    tx: FeedSender,
}

/// A collection read through the hub.
struct Member {
    tx: FeedSender,
    /// What it has been handed (or its start).
    delivered: DbPosition,
    /// The cluster time of its last change read since the stream (re)opened, and how many of
    /// its changes were read at that time.
    seen: Option<(Timestamp, u32)>,
    /// The event token (`_data`) of the change at `delivered`, if one was handed there: idle
    /// turns carry it, so that their token equals the one saved with that change (a token
    /// without it differs, and each collection saved its checkpoint once more per change).
    data: Option<String>,
}

impl Member {
    /// Counts a change of this collection read at `at`: its position, if it is past `delivered`.
    fn count(&mut self, at: Timestamp) -> Option<DbPosition> {
        let count = match self.seen {
            Some((t, n)) if t == at => n + 1,
            _ => 1,
        };
        self.seen = Some((at, count));
        let position = DbPosition { at, count };
        (position > self.delivered).then_some(position)
    }

    /// Its token for an idle turn: its position, moved on to `safe` if that is later.
    fn idle_token(&mut self, safe: Option<DbPosition>) -> Document {
        if let Some(safe) = safe.filter(|s| *s > self.delivered) {
            (self.delivered, self.data) = (safe, None);
        }
        self.delivered.token(self.data.as_deref())
    }
}

struct Hub {
    client: Client,
    db: String,
    max_await: Duration,
    joins: mpsc::UnboundedReceiver<Join>,
    /// Every handle on the hub is gone (the source was dropped): it ends with its members.
    orphaned: bool,
    members: HashMap<String, Member>,
    stream: Option<RawStream>,
    /// The cluster time of the last change read (or where the stream opened): every change
    /// before it has been read.
    last_read: Option<Timestamp>,
    last_refresh: Instant,
}

impl Hub {
    fn new(client: Client, db: String, max_await: Duration, joins: mpsc::UnboundedReceiver<Join>) -> Self {
        Hub { client, db, max_await, joins, orphaned: false, members: HashMap::new(), stream: None, last_read: None, last_refresh: Instant::now() }
    }

    /// Reads until every handle on the hub is gone; with no collection to serve, its stream is
    /// closed (and its connection returned) until one joins.
    async fn run(mut self) {
        loop {
            self.members.retain(|_, m| !m.tx.is_closed());
            if self.members.is_empty() {
                self.stream = None;
                match self.joins.recv().await {
                    Some(join) => self.admit(join),
                    None => return,
                }
            }
            if self.stream.is_none() {
                self.take_joins().await;
                if let Err(e) = self.open().await {
                    self.fail_all(e).await;
                    continue;
                }
            }
            self.read_once().await;
        }
    }

    fn admit(&mut self, join: Join) {
        self.members.insert(join.coll, Member { tx: join.tx, delivered: join.from, seen: None, data: None });
        // The stream is opened again, early enough for everyone, with the new `$match`.
        self.stream = None;
    }

    /// Takes the joins waiting, and those arriving within a short window.
    async fn take_joins(&mut self) {
        if self.orphaned {
            return;
        }
        tokio::time::sleep(JOIN_WINDOW).await;
        loop {
            match self.joins.try_recv() {
                Ok(join) => self.admit(join),
                Err(mpsc::error::TryRecvError::Empty) => return,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.orphaned = true;
                    return;
                }
            }
        }
    }

    /// Opens the stream at the earliest position a member needs; each member's changes are
    /// counted again from there.
    async fn open(&mut self) -> Result<(), SyncError> {
        let Some(from) = self.members.values().map(|m| m.delivered.at).min() else { return Ok(()) };
        let names: Vec<&str> = self.members.keys().map(String::as_str).collect();
        let stream = change_stream::open_database(&self.client, &self.db, &names, from, self.max_await).await?;
        for member in self.members.values_mut() {
            member.seen = None;
        }
        (self.stream, self.last_read) = (Some(stream), Some(from));
        Ok(())
    }

    /// One read: a change handed to its collection, or an empty one (the safe time moves on).
    /// A collection joining cuts it short: the stream reopens.
    async fn read_once(&mut self) {
        let Some(mut stream) = self.stream.take() else { return };
        let next = tokio::select! {
            biased;
            join = self.joins.recv(), if !self.orphaned => {
                match join {
                    Some(join) => self.admit(join),
                    None => {
                        self.orphaned = true;
                        self.stream = Some(stream);
                    }
                }
                return;
            }
            next = stream.next_if_any() => next,
        };
        match next {
            Ok(Some(raw)) => {
                self.stream = Some(stream);
                self.route(&raw).await;
                self.refresh().await;
            }
            // Ended (a dropped database invalidates it): opened again.
            Ok(None) if !stream.is_alive() => {}
            Ok(None) => {
                self.stream = Some(stream);
                self.refresh().await;
            }
            Err(e) => self.fail_all(mongo_error(format!("change stream of database {} failed", self.db), &e)).await,
        }
    }

    /// Hands a change to its collection, unless it was handed before. After a drop or a rename
    /// the collection's feed ends with an `invalidate`, as its own stream would.
    async fn route(&mut self, raw: &RawDocumentBuf) {
        let Some(coll) = collection_of(raw) else {
            self.on_database_change(raw);
            return;
        };
        if !self.members.contains_key(&coll) {
            return;
        }
        let change = match change_stream::change_of(raw) {
            Ok(change) => change,
            Err(e) => {
                let error = SyncError::new(ErrorCode::Mongo, format!("change stream of {}.{coll}: {e}", self.db));
                if let Some(member) = self.members.remove(&coll) {
                    member.tx.send(StreamItem::Failed(error)).await;
                }
                return;
            }
        };
        let item = self.position(&coll, change);
        let Some(member) = self.members.get_mut(&coll) else { return };
        let Some(change) = item else { return };
        let ends = matches!(change.kind, ChangeKind::Collection(CollectionChange::Drop | CollectionChange::DropDatabase | CollectionChange::Rename { .. }));
        let invalidate = Change { kind: ChangeKind::Collection(CollectionChange::Invalidate), size: 0, ..change.clone() };
        let sent = member.tx.send(StreamItem::Change(Box::new(change))).await;
        if sent && ends {
            member.tx.send(StreamItem::Change(Box::new(invalidate))).await;
        }
        if !sent || ends {
            self.members.remove(&coll);
        }
    }

    /// A change of the whole database: its drop (each collection had its own drop before it),
    /// then the `invalidate` that ends the stream, which reopens past them, not at them again.
    fn on_database_change(&mut self, raw: &RawDocumentBuf) {
        let Ok(Change { kind: ChangeKind::Collection(change), cluster_time: Some(at), .. }) = change_stream::change_of(raw) else {
            return;
        };
        if !matches!(change, CollectionChange::Invalidate | CollectionChange::DropDatabase) {
            return;
        }
        let past = DbPosition { at: Timestamp { time: at.time, increment: at.increment.saturating_add(1) }, count: 0 };
        for member in self.members.values_mut().filter(|m| m.delivered < past) {
            (member.delivered, member.data) = (past, None);
        }
        if change == CollectionChange::Invalidate {
            self.stream = None;
        }
    }

    /// The change with the collection's position as its token, if it was not handed before (a
    /// change without a time passes as it is: the collection fails on it).
    fn position(&mut self, coll: &str, change: Change) -> Option<Change> {
        let Some(at) = change.cluster_time else { return Some(change) };
        self.last_read = self.last_read.max(Some(at));
        let member = self.members.get_mut(coll)?;
        let position = member.count(at)?;
        member.delivered = position;
        member.data = change.token.as_ref().and_then(|t| t.get_str("_data").ok()).map(str::to_string);
        let token = position.token(member.data.as_deref());
        Some(Change { token: Some(token), ..change })
    }

    /// At most every [`REFRESH_EVERY`], every collection with room in its feed gets an idle
    /// turn with its position (drops settle, positions are saved now and then). Positions that
    /// lag the safe time (the last change read) by [`move_after`] move on to it, a few per turn,
    /// furthest behind first: moving all at once made a thousand checkpoint saves at once, and
    /// a collection with a change waited behind them.
    async fn refresh(&mut self) {
        if self.last_refresh.elapsed() < REFRESH_EVERY {
            return;
        }
        self.last_refresh = Instant::now();
        let moving = self.due_to_move();
        let safe = self.last_read.map(|at| DbPosition { at, count: 0 });
        let mut gone = Vec::new();
        for (coll, member) in self.members.iter_mut().filter(|(_, m)| m.tx.has_room()) {
            let token = member.idle_token(safe.filter(|_| moving.contains(coll)));
            if !member.tx.send(StreamItem::Idle(Some(token))).await {
                gone.push(coll.clone());
            }
        }
        for coll in gone {
            self.members.remove(&coll);
        }
    }

    /// The members whose positions move on to the safe time this turn (see [`Hub::refresh`]).
    fn due_to_move(&self) -> HashSet<String> {
        let Some(safe) = self.last_read else { return HashSet::new() };
        let lag_allowed = move_after(self.members.len()).as_secs();
        let mut due: Vec<(&String, DbPosition)> = (self.members.iter())
            .filter(|(_, m)| m.tx.has_room() && u64::from(safe.time.saturating_sub(m.delivered.at.time)) >= lag_allowed)
            .map(|(coll, m)| (coll, m.delivered))
            .collect();
        due.sort_by_key(|(_, delivered)| *delivered);
        due.into_iter().take(MOVES_PER_TURN).map(|(coll, _)| coll.clone()).collect()
    }

    /// The stream failed: every collection reading it gets the error (and, per its policy,
    /// retries from its checkpoint, joining again, or fails).
    async fn fail_all(&mut self, error: SyncError) {
        self.stream = None;
        for (_, member) in self.members.drain() {
            member.tx.send(StreamItem::Failed(error.clone())).await;
        }
    }
}

/// The collection a database stream's event is about (none for a whole database's).
fn collection_of(raw: &RawDocumentBuf) -> Option<String> {
    match raw.get("ns").ok()?? {
        RawBsonRef::Document(ns) => match ns.get("coll").ok()?? {
            RawBsonRef::String(coll) => Some(coll.to_string()),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    fn at(time: u32, increment: u32) -> Timestamp {
        Timestamp { time, increment }
    }

    #[test]
    fn positions_round_trip_as_tokens_and_order_by_time_then_count() {
        let p = DbPosition { at: at(10, 2), count: 3 };
        let token = p.token(Some("82aa"));
        assert_eq!(token.get_str("_data").unwrap(), "82aa");
        assert_eq!(DbPosition::of_token(&token), Some(p));
        assert_eq!(DbPosition::of_token(&doc! {"_data": "82aa"}), None, "a collection stream's token has no time");
        assert_eq!(DbPosition::of_token(&doc! {AT: at(1, 1), COUNT: -1_i64}), None);
        assert!(DbPosition { at: at(10, 2), count: 0 } < p && p < DbPosition { at: at(10, 3), count: 0 });
        assert_eq!(DbPosition::of_start(&StreamStart::AtOperationTime(at(5, 1))), Some(DbPosition { at: at(5, 1), count: 0 }));
        assert_eq!(DbPosition::of_start(&StreamStart::StartAfter(token)), Some(p));
    }

    /// A collection's changes read again from an earlier time (a restart, or another collection
    /// joining) are counted from the first one at each time: only those after its position pass,
    /// including the rest of a transaction whose first changes it already had.
    #[tokio::test]
    async fn a_member_is_handed_only_the_changes_after_its_position() {
        let (tx, _feed) = test_sender().await;
        let mut member = Member { tx, delivered: DbPosition { at: at(10, 1), count: 2 }, seen: None, data: None };
        let read = [at(9, 5), at(10, 1), at(10, 1), at(10, 1), at(10, 2), at(11, 1)];
        let passed: Vec<_> = read.iter().filter_map(|t| member.count(*t)).collect();
        assert_eq!(passed, vec![DbPosition { at: at(10, 1), count: 3 }, DbPosition { at: at(10, 2), count: 1 }, DbPosition { at: at(11, 1), count: 1 }]);
    }

    /// An idle turn right after a change carries the token saved with that change, so the
    /// collection does not save its checkpoint again (a thousand collections saved twice per
    /// change); once moved on to the safe time, it names that time alone.
    #[tokio::test]
    async fn an_idle_turn_after_a_change_carries_the_token_saved_with_it() {
        let (tx, _feed) = test_sender().await;
        let (joins_tx, joins) = mpsc::unbounded_channel();
        drop(joins_tx);
        let client = Client::with_uri_str("mongodb://127.0.0.1:1").await.expect("client");
        let mut hub = Hub::new(client, "db".into(), Duration::from_secs(1), joins);
        hub.members.insert("c".into(), Member { tx, delivered: DbPosition { at: at(10, 1), count: 0 }, seen: None, data: None });
        let change =
            Change { token: Some(doc! {"_data": "82aa"}), cluster_time: Some(at(11, 1)), kind: ChangeKind::Collection(CollectionChange::Invalidate), size: 0 };
        let saved = hub.position("c", change).expect("a new change").token.expect("its token");
        let member = hub.members.get_mut("c").expect("member");
        assert_eq!(member.idle_token(None), saved);
        assert_eq!(member.idle_token(Some(DbPosition { at: at(11, 1), count: 0 })), saved, "an earlier safe time does not move it back");
        let moved = member.idle_token(Some(DbPosition { at: at(12, 1), count: 0 }));
        assert_eq!(moved, DbPosition { at: at(12, 1), count: 0 }.token(None));
    }

    /// Quiet positions lagging the safe time by [`move_after`] move on to it a few per turn,
    /// furthest behind first; those within the lag stay (a thousand collections moving at once
    /// made a thousand checkpoint saves at once).
    #[tokio::test]
    async fn quiet_positions_move_on_to_the_safe_time_a_few_per_turn() {
        let (joins_tx, joins) = mpsc::unbounded_channel();
        drop(joins_tx);
        let client = Client::with_uri_str("mongodb://127.0.0.1:1").await.expect("client");
        let mut hub = Hub::new(client, "db".into(), Duration::from_secs(1), joins);
        let mut feeds = Vec::new();
        for i in 0..20u32 {
            let (tx, feed) = test_sender().await;
            // 12 far behind (the first ones furthest), 8 within the allowed lag.
            let time = if i < 12 { 100 + i } else { 990 };
            hub.members.insert(format!("c{i}"), Member { tx, delivered: DbPosition { at: at(time, 1), count: 0 }, seen: None, data: None });
            feeds.push(feed);
        }
        hub.last_read = Some(at(1000, 1));
        let moved_after_turn = |hub: &Hub| {
            let mut moved: Vec<u32> = (0..20).filter(|i| hub.members[&format!("c{i}")].delivered.at == at(1000, 1)).collect();
            moved.sort_unstable();
            moved
        };
        hub.last_refresh = Instant::now() - REFRESH_EVERY;
        hub.refresh().await;
        assert_eq!(moved_after_turn(&hub), (0..8).collect::<Vec<_>>(), "the 8 furthest behind move first");
        hub.refresh().await;
        assert_eq!(moved_after_turn(&hub).len(), 8, "one turn per REFRESH_EVERY");
        hub.last_refresh = Instant::now() - REFRESH_EVERY;
        hub.refresh().await;
        assert_eq!(moved_after_turn(&hub), (0..12).collect::<Vec<_>>(), "the rest of those behind, not those within the lag");
        for feed in &mut feeds {
            assert!(matches!(feed.next().await, Some(StreamItem::Idle(Some(_)))), "every member had an idle turn");
        }
        assert_eq!((move_after(20), move_after(1000)), (MOVE_AFTER, Duration::from_secs(500)));
    }

    async fn test_sender() -> (FeedSender, ChangeFeed) {
        let (tx_out, rx) = tokio::sync::oneshot::channel();
        let feed = ChangeFeed::spawn(FeedLimits::default(), move |tx| async move {
            let _ = tx_out.send(tx);
        });
        (rx.await.expect("sender"), feed)
    }
}
