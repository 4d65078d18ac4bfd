//! Reading a table: the copy's key-ordered pages, lookups by key, and the replication
//! session's messages as source-neutral changes.
//!
//! Replica identity: an update or delete carries the old key (REPLICA IDENTITY DEFAULT) or the
//! whole old row (FULL); a delete needs only the key. An update that leaves a TOASTed (large,
//! out-of-line) column unchanged does not carry that column unless the table has REPLICA
//! IDENTITY FULL: the row is then read back by its key, so the document holds the row's
//! current values (a later change, already committed, carries a higher version and wins anyway).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use mongodb::bson::{Bson, Document};
use pgwire_replication::{Lsn, ReplicationClient, ReplicationEvent};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::connect::{pg_error, wire_error, PgTarget};
use super::pgoutput::{self, Message, Relation, Value};
use super::table::{quote, Table};
use super::{lsn_time, lsn_token, AckedPositions};
use crate::checkpoint::CopyRange;
use crate::error::{ErrorCode, SyncError, SyncResult};
use crate::event::CollectionChange;
use crate::source::{Change, ChangeKind, DocumentChange, FeedSender, StreamItem};
use crate::transform::Operation;

/// How long a session may stay silent before the reader reports an idle turn.
const IDLE_AFTER: Duration = Duration::from_secs(1);

/// One range of the copy, read page by page in key order (resumable after any key).
pub struct Scan {
    table: Arc<Table>,
    /// Key texts of the last row read (or the resumed range's last acknowledged `_id`).
    after: Option<Vec<String>>,
    lower: Option<Vec<String>>,
    upper: Option<Vec<String>>,
    /// The last key read, inclusive (a range read without the snapshot: its end when it began).
    through: Option<Vec<String>>,
    page: i64,
    done: bool,
    buffer: VecDeque<Document>,
}

impl Scan {
    pub fn new(table: Arc<Table>, range: &CopyRange, page: i64) -> SyncResult<Self> {
        let key = |b: &Option<Bson>| b.as_ref().map(|b| table.key_of(b)).transpose();
        Ok(Scan {
            after: key(&range.last_id)?,
            lower: key(&range.lower)?,
            upper: key(&range.upper)?,
            through: None,
            table: table.clone(),
            page,
            done: false,
            buffer: VecDeque::new(),
        })
    }

    fn sql(&self) -> (String, Vec<String>) {
        let t = &self.table;
        let (mut conditions, mut params) = (Vec::new(), Vec::new());
        let mut bound = |op: &str, key: &Vec<String>, params: &mut Vec<String>| {
            conditions.push(format!("{} {op} {}", t.key_row(), t.key_params(params.len() + 1)));
            params.extend(key.iter().cloned());
        };
        match (&self.after, &self.lower) {
            (Some(after), _) => bound(">", after, &mut params),
            (None, Some(lower)) => bound(">=", lower, &mut params),
            (None, None) => {}
        }
        if let Some(upper) = &self.upper {
            bound("<", upper, &mut params);
        }
        if let Some(through) = &self.through {
            bound("<=", through, &mut params);
        }
        let filter = if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) };
        let order = t.key_row();
        let order = &order[1..order.len() - 1];
        (format!("SELECT {} FROM {}{filter} ORDER BY {order} LIMIT {}", t.select_list(), t.sql_name(), self.page), params)
    }

    /// For a read of current rows (not the exported snapshot): an open-ended range ends at the
    /// greatest key present now, so that it does not follow rows inserted while it reads. Rows
    /// past it were committed after the slot's consistent point (which is before now): the
    /// stream brings them.
    pub async fn end_at_last_key(&mut self, client: &Client) -> SyncResult<()> {
        if self.upper.is_some() {
            return Ok(());
        }
        let t = &self.table;
        let keys: Vec<String> = t.key.iter().enumerate().map(|(n, &i)| format!("{}::text AS k{n}", quote(&t.columns[i].name))).collect();
        let order: Vec<String> = t.key.iter().map(|&i| format!("{} DESC", quote(&t.columns[i].name))).collect();
        let sql = format!("SELECT {} FROM {} ORDER BY {} LIMIT 1", keys.join(", "), t.sql_name(), order.join(", "));
        let row = client.query_opt(&sql, &[]).await.map_err(|e| pg_error(&format!("cannot read the last key of {}", t.ns), &e))?;
        match row {
            Some(row) => self.through = Some((0..t.key.len()).map(|n| row.get(n)).collect()),
            // Empty now: whatever comes is streamed.
            None => self.done = true,
        }
        Ok(())
    }

    async fn next_page(&mut self, client: &Client) -> SyncResult<()> {
        let (sql, params) = self.sql();
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        let rows = client.query(&sql, &params).await.map_err(|e| pg_error(&format!("copy of {} failed", self.table.ns), &e))?;
        self.done = (rows.len() as i64) < self.page;
        for row in rows {
            let values: Vec<Option<String>> = (0..self.table.columns.len()).map(|i| row.get(i)).collect();
            self.after = Some(self.table.key.iter().map(|&i| values[i].clone().unwrap_or_default()).collect());
            self.buffer.push_back(self.table.document(&values)?);
        }
        Ok(())
    }

    pub fn into_stream(self, client: Arc<Client>) -> impl Stream<Item = SyncResult<Document>> + Send + 'static {
        futures::stream::unfold((self, client), |(mut scan, client)| async move {
            loop {
                if let Some(doc) = scan.buffer.pop_front() {
                    return Some((Ok(doc), (scan, client)));
                }
                if scan.done {
                    return None;
                }
                if let Err(e) = scan.next_page(&client).await {
                    scan.done = true;
                    return Some((Err(e), (scan, client)));
                }
            }
        })
    }
}

/// The row with this `_id` now, if any.
pub async fn lookup(client: &Client, table: &Table, id: &Bson) -> SyncResult<Option<Document>> {
    let key = table.key_of(id)?;
    let sql = format!("SELECT {} FROM {} WHERE {} = {}", table.select_list(), table.sql_name(), table.key_row(), table.key_params(1));
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = key.iter().map(|p| p as _).collect();
    let row = client.query_opt(&sql, &params).await.map_err(|e| pg_error(&format!("cannot look up {id} in {}", table.ns), &e))?;
    row.map(|row| table.document(&(0..table.columns.len()).map(|i| row.get(i)).collect::<Vec<_>>())).transpose()
}

/// A started replication session.
pub struct Session {
    client: ReplicationClient,
}

impl Session {
    /// Starts streaming `slot` from `lsn`, confirming `durable` until more is saved. A slot
    /// still held by the session before (ending) is waited for, a few seconds.
    pub async fn open(target: &PgTarget, slot: &str, publication: &str, lsn: u64, durable: u64) -> SyncResult<Session> {
        let config = target.replication(slot, publication).with_start_lsn(Lsn(lsn)).with_ack_lsn(Lsn(durable)).with_status_interval(Duration::from_secs(1));
        let mut attempt = 0;
        loop {
            let started = async {
                let mut client = ReplicationClient::connect(config.clone()).await?;
                client.wait_started().await?;
                Ok::<_, pgwire_replication::PgWireError>(client)
            };
            match started.await {
                Ok(client) => return Ok(Session { client }),
                Err(e) if e.to_string().contains("is active for PID") && attempt < 20 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(wire_error(&format!("cannot stream replication slot {slot} of {}", target.describe()), &e)),
            }
        }
    }
}

/// What a reader needs to read rows back.
pub struct Shared {
    pub target: PgTarget,
}

/// Reads one table's session into its feed.
pub struct Reader {
    pub session: Session,
    pub table: Arc<Table>,
    pub source: Shared,
    pub acked: AckedPositions,
    pub cancel: CancellationToken,
}

/// The reader's state between messages.
#[derive(Default)]
struct Position {
    /// The commit LSN of the transaction being read (its changes' version).
    commit: Option<u64>,
    /// The table's relation id in this session, once described.
    relation: Option<Relation>,
}

impl Reader {
    pub async fn run(mut self, tx: FeedSender) {
        let mut position = Position::default();
        let mut lookups: Option<Client> = None;
        loop {
            if let Some(lsn) = self.acked.get(&self.table.ns) {
                self.session.client.update_applied_lsn(Lsn(lsn));
            }
            let event = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                event = tokio::time::timeout(IDLE_AFTER, self.session.client.recv()) => event,
            };
            let items = match event {
                Err(_) if position.commit.is_none() => vec![StreamItem::Idle(None)],
                Err(_) => continue,
                Ok(Ok(Some(event))) => self.items(event, &mut position, &mut lookups).await.unwrap_or_else(|e| vec![StreamItem::Failed(e)]),
                Ok(Ok(None)) => {
                    vec![StreamItem::Failed(SyncError::new(ErrorCode::PostgresUnreachable, format!("the replication session of {} ended", self.table.ns)))]
                }
                Ok(Err(e)) => vec![StreamItem::Failed(wire_error(&format!("replication of {} failed", self.table.ns), &e))],
            };
            for item in items {
                let last = matches!(&item, StreamItem::Failed(_))
                    || matches!(&item, StreamItem::Change(c) if c.kind == ChangeKind::Collection(CollectionChange::Invalidate));
                if !tx.send(item).await || last {
                    self.session.client.stop();
                    return;
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.session.client.shutdown()).await;
    }

    async fn items(&mut self, event: ReplicationEvent, position: &mut Position, lookups: &mut Option<Client>) -> SyncResult<Vec<StreamItem>> {
        Ok(match event {
            ReplicationEvent::Begin { final_lsn, .. } => {
                position.commit = Some(final_lsn.0);
                vec![]
            }
            ReplicationEvent::Commit { lsn, end_lsn, .. } => {
                position.commit = None;
                vec![change(Some(end_lsn.0), lsn.0, ChangeKind::Other, 0)]
            }
            ReplicationEvent::KeepAlive { wal_end, .. } if position.commit.is_none() => vec![StreamItem::Idle(Some(lsn_token(wal_end.0)))],
            ReplicationEvent::XLogData { data, .. } => {
                let message = pgoutput::decode(&data).map_err(|e| SyncError::new(ErrorCode::Postgres, format!("replication of {}: {e}", self.table.ns)))?;
                self.on_message(message, data.len(), position, lookups).await?
            }
            _ => vec![],
        })
    }

    async fn on_message(&mut self, message: Message, size: usize, position: &mut Position, lookups: &mut Option<Client>) -> SyncResult<Vec<StreamItem>> {
        let commit = position.commit.unwrap_or(0);
        let ours = |id: u32| position.relation.as_ref().is_some_and(|r| r.id == id);
        Ok(match message {
            Message::Relation(r) if r.schema == self.table.ns.db && r.name == self.table.ns.coll => {
                if r.columns.iter().map(|c| &c.name).ne(self.table.columns.iter().map(|c| &c.name)) {
                    // Columns were added, dropped or renamed: the table is described again.
                    let client = self.lookup_client(lookups).await?;
                    self.table = Arc::new(Table::describe(client, &self.table.ns).await?);
                }
                position.relation = Some(r);
                vec![]
            }
            Message::Insert { relation, new } if ours(relation) => {
                let doc = self.row(position, &new, lookups).await?;
                vec![self.document(Operation::Insert, doc, commit, size)]
            }
            Message::Update { relation, old, new } if ours(relation) => {
                let mut items = Vec::new();
                let new_key = self.key_of(position, &new)?;
                if let Some(old_key) = old.as_ref().map(|o| self.key_of(position, o)).transpose()?.filter(|k| *k != new_key) {
                    // The key changed: the old document goes.
                    items.push(self.delete(old_key, commit, size));
                }
                let doc = self.row(position, &new, lookups).await?;
                items.push(match doc {
                    Some(doc) => self.document(Operation::Update, Some(doc), commit, size),
                    None => self.delete(new_key, commit, size),
                });
                items
            }
            Message::Delete { relation, old } if ours(relation) => vec![self.delete(self.key_of(position, &old)?, commit, size)],
            Message::Truncate { relations } if relations.iter().any(|&r| ours(r)) => {
                // As a drop (`onDrop` applies); the stream goes on after this transaction
                // (a table refilled in it is copied again, as a replaced collection is).
                vec![
                    change(None, commit, ChangeKind::Collection(CollectionChange::Drop), size),
                    change(Some(commit + 1), commit, ChangeKind::Collection(CollectionChange::Invalidate), 0),
                ]
            }
            _ => vec![],
        })
    }

    async fn lookup_client<'a>(&self, lookups: &'a mut Option<Client>) -> SyncResult<&'a Client> {
        if lookups.as_ref().is_none_or(|c| c.is_closed()) {
            *lookups = Some(self.source.target.connect().await?);
        }
        Ok(lookups.as_ref().expect("connected"))
    }

    /// Texts by the table's column order from a row image in the relation's order.
    fn values(&self, position: &Position, row: &[Value]) -> Option<Vec<Option<String>>> {
        let relation = position.relation.as_ref()?;
        let mut values = vec![None; self.table.columns.len()];
        for (column, value) in relation.columns.iter().zip(row) {
            let Some(i) = self.table.column_index(&column.name) else { continue };
            match value {
                Value::Text(t) => values[i] = Some(t.clone()),
                Value::Null => {}
                Value::Unchanged => return None,
            }
        }
        Some(values)
    }

    fn key_of(&self, position: &Position, row: &[Value]) -> SyncResult<Bson> {
        let relation = position.relation.as_ref().ok_or_else(|| SyncError::new(ErrorCode::Internal, "a change before its relation".to_string()))?;
        let mut key = vec![None; self.table.key.len()];
        for (column, value) in relation.columns.iter().zip(row) {
            if let (Some(n), Value::Text(t)) = (self.table.key.iter().position(|&k| self.table.columns[k].name == column.name), value) {
                key[n] = Some(t.clone());
            }
        }
        self.table.id_of(&key)
    }

    /// The document of a new row image; one with unchanged TOASTed columns is read back by
    /// its key (none if the row is gone by now: a delete follows).
    async fn row(&self, position: &Position, row: &[Value], lookups: &mut Option<Client>) -> SyncResult<Option<Document>> {
        match self.values(position, row) {
            Some(values) => self.table.document(&values).map(Some),
            None => {
                let id = self.key_of(position, row)?;
                let client = self.lookup_client(lookups).await?;
                lookup(client, &self.table, &id).await
            }
        }
    }

    fn document(&self, operation: Operation, doc: Option<Document>, commit: u64, size: usize) -> StreamItem {
        let key = doc.as_ref().and_then(|d| d.get("_id")).map(|id| mongodb::bson::doc! {"_id": id.clone()});
        let document = match doc.as_ref().map(crate::source::raw_of).transpose() {
            Ok(document) => document,
            Err(e) => return StreamItem::Failed(e),
        };
        change(None, commit, ChangeKind::Document(DocumentChange { operation, key, document }), size)
    }

    fn delete(&self, id: Bson, commit: u64, size: usize) -> StreamItem {
        change(
            None,
            commit,
            ChangeKind::Document(DocumentChange { operation: Operation::Delete, key: Some(mongodb::bson::doc! {"_id": id}), document: None }),
            size,
        )
    }
}

/// A change at `commit`; `position`: where to resume after it (only at transaction ends).
fn change(position: Option<u64>, commit: u64, kind: ChangeKind, size: usize) -> StreamItem {
    StreamItem::Change(Box::new(Change { token: position.map(lsn_token), cluster_time: Some(lsn_time(commit)), kind, size }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Namespace;
    use crate::source::postgres::table::TableColumn;
    use crate::source::postgres::types::PgType;

    #[test]
    fn a_range_read_without_the_snapshot_ends_at_its_last_key_inclusive() {
        let column = |name: &str| TableColumn { name: name.into(), ty: PgType::Int32, type_sql: "integer".into() };
        let table = Arc::new(Table { ns: Namespace::parse("public.t").unwrap(), columns: vec![column("id"), column("v")], key: vec![0] });
        let mut scan = Scan::new(table, &CopyRange { lower: Some(Bson::Int64(10)), single_type: true, ..Default::default() }, 50).unwrap();
        let (open, params) = scan.sql();
        assert_eq!(open, "SELECT \"id\"::text AS c0, \"v\"::text AS c1 FROM \"public\".\"t\" WHERE (\"id\") >= ($1::text::integer) ORDER BY \"id\" LIMIT 50");
        assert_eq!(params, ["10"]);
        scan.through = Some(vec!["99".into()]);
        let (bounded, params) = scan.sql();
        assert!(bounded.contains("WHERE (\"id\") >= ($1::text::integer) AND (\"id\") <= ($2::text::integer) ORDER BY"), "{bounded}");
        assert_eq!(params, ["10", "99"]);
    }
}
