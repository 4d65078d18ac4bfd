//! Polling mode, for servers where logical replication is not allowed: a table's changes are
//! the rows whose timestamp column (`postgres.poll.column`, e.g. `updated_at`) moved past the
//! cursor, read every `intervalMs` in (column, primary key) order, so that rows sharing a
//! timestamp are neither skipped nor read twice. The cursor, (column, key) of the last row
//! read, is the stream position. Versions are the column's value in microseconds since
//! 1970, so a row's newer state always wins and reading a row again changes nothing.
//!
//! There is no copy of its own: the first poll starts before every row (the copy phase reads
//! nothing), so the whole table comes through in (column, key) order, resumable after any
//! batch. Rows whose column is no later than `settleMs` ago are read only: a transaction that
//! set the column (with `now()`, its start time) and commits within `settleMs` is not passed
//! over. Limits: deletes are not seen (a row deleted stays in the index), nor are rows whose
//! column is NULL, nor changes that do not move the column, nor rows committed more than
//! `settleMs` after the time they wrote in it.

use std::sync::Arc;

use mongodb::bson::{doc, Document};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::connect::pg_error;
use super::lsn_time;
use super::table::{quote, Table};
use super::types::PgType;
use crate::config::PollConfig;
use crate::error::{SyncError, SyncResult};
use crate::source::{Change, ChangeKind, DocumentChange, FeedSender, StreamItem};
use crate::transform::Operation;

/// Where a table's polling goes on: after `(column, key)`, or from a time on (`at`, µs since
/// 1970; 0: from the start).
#[derive(Debug, Clone, PartialEq)]
pub enum Cursor {
    After { column: String, key: Vec<String> },
    From(u64),
}

impl Cursor {
    /// The saved position: `_data` the version (16 hex digits, so positions sort as text),
    /// then the column's text and the key's.
    pub fn token(&self, micros: u64) -> Document {
        match self {
            Cursor::After { column, key } => doc! {"_data": format!("{micros:016X}"), "column": column, "key": key.clone()},
            Cursor::From(_) => doc! {"_data": format!("{micros:016X}")},
        }
    }

    pub fn of_token(token: &Document) -> Option<Cursor> {
        let micros = u64::from_str_radix(token.get_str("_data").ok()?, 16).ok()?;
        let Ok(column) = token.get_str("column") else { return Some(Cursor::From(micros)) };
        let key = token.get_array("key").ok()?.iter().map(|k| k.as_str().map(str::to_string)).collect::<Option<Vec<_>>>()?;
        Some(Cursor::After { column: column.to_string(), key })
    }
}

/// The polled column of `table`, checked: it exists and is a timestamp.
pub fn column_of(table: &Table, poll: &PollConfig) -> SyncResult<usize> {
    let index = table
        .column_index(&poll.column)
        .ok_or_else(|| SyncError::config(format!("postgres.poll.column: table {} has no column \"{}\"", table.ns, poll.column)))?;
    match table.columns[index].ty {
        PgType::Timestamptz | PgType::Timestamp => Ok(index),
        _ => Err(SyncError::config(format!(
            "postgres.poll.column: column \"{}\" of table {} is {}; it must be a timestamp (timestamptz or timestamp)",
            poll.column, table.ns, table.columns[index].type_sql
        ))),
    }
}

/// Reads one table's changes by polling, into its feed.
pub struct Poller {
    pub client: Client,
    pub table: Arc<Table>,
    pub column: usize,
    pub config: PollConfig,
    pub cursor: Cursor,
    pub page: i64,
    pub cancel: CancellationToken,
}

/// The SQL of a poll (apart from the client, for tests).
struct PollerSql<'a> {
    table: &'a Table,
    column: usize,
    config: &'a PollConfig,
    cursor: &'a Cursor,
    page: i64,
}

impl PollerSql<'_> {
    fn sql(&self) -> (String, Vec<String>) {
        let t = self.table;
        let col = &t.columns[self.column];
        let name = quote(&col.name);
        let settled = format!("{name} <= (clock_timestamp() - interval '{} milliseconds')::{}", self.config.settle.as_millis(), col.type_sql);
        let (cursor, params) = match self.cursor {
            Cursor::From(0) => (format!("{name} IS NOT NULL"), vec![]),
            Cursor::From(micros) => {
                (format!("{name} >= ('epoch'::{ty} + $1::text::int8 * interval '1 microsecond')", ty = col.type_sql), vec![micros.to_string()])
            }
            Cursor::After { column, key } => {
                let row = t.key_row();
                let params: Vec<String> = std::iter::once(column.clone()).chain(key.iter().cloned()).collect();
                (format!("({name}, {} > ($1::text::{}, {}", &row[1..], col.type_sql, &t.key_params(2)[1..]), params)
            }
        };
        let order = t.key_row();
        let sql = format!(
            "SELECT {}, {name}::text AS pc, (extract(epoch FROM {name}) * 1000000)::int8 AS pv FROM {} WHERE {cursor} AND {settled} ORDER BY {name}, {} LIMIT {}",
            t.select_list(),
            t.sql_name(),
            &order[1..order.len() - 1],
            self.page
        );
        (sql, params)
    }
}

impl Poller {
    fn sql(&self) -> (String, Vec<String>) {
        PollerSql { table: &self.table, column: self.column, config: &self.config, cursor: &self.cursor, page: self.page }.sql()
    }

    /// One page of changes after the cursor (moved past them).
    async fn poll(&mut self) -> SyncResult<Vec<StreamItem>> {
        let (sql, params) = self.sql();
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        let rows = self.client.query(&sql, &params).await.map_err(|e| pg_error(&format!("cannot poll {}", self.table.ns), &e))?;
        let n = self.table.columns.len();
        let mut items = Vec::with_capacity(rows.len());
        for row in rows {
            let values: Vec<Option<String>> = (0..n).map(|i| row.get(i)).collect();
            let micros = row.get::<_, Option<i64>>(n + 1).unwrap_or(0).max(0) as u64;
            self.cursor = Cursor::After { column: row.get(n), key: self.table.key.iter().map(|&i| values[i].clone().unwrap_or_default()).collect() };
            let doc = self.table.document(&values)?;
            let key = doc.get("_id").map(|id| doc! {"_id": id.clone()});
            let document = Some(crate::source::raw_of(&doc)?);
            let size = document.as_ref().map_or(0, |d| d.as_bytes().len());
            let kind = ChangeKind::Document(DocumentChange { operation: Operation::Update, key, document });
            items.push(StreamItem::Change(Box::new(Change { token: Some(self.cursor.token(micros)), cluster_time: Some(lsn_time(micros)), kind, size })));
        }
        Ok(items)
    }

    pub async fn run(mut self, tx: FeedSender) {
        loop {
            let items = match self.poll().await {
                Ok(items) => items,
                Err(e) => {
                    let _ = tx.send(StreamItem::Failed(e)).await;
                    return;
                }
            };
            let full = items.len() as i64 >= self.page;
            for item in items {
                if !tx.send(item).await {
                    return;
                }
            }
            if full {
                continue;
            }
            if !tx.send(StreamItem::Idle(None)).await {
                return;
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(self.config.interval) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Namespace;
    use crate::source::postgres::table::TableColumn;

    fn table() -> Table {
        let column = |name: &str, ty: PgType, type_sql: &str| TableColumn { name: name.into(), ty, type_sql: type_sql.into() };
        Table {
            ns: Namespace::parse("public.orders").unwrap(),
            columns: vec![
                column("id", PgType::Int32, "integer"),
                column("v", PgType::Int32, "integer"),
                column("at", PgType::Timestamptz, "timestamp with time zone"),
            ],
            key: vec![0],
        }
    }

    fn config(column: &str) -> PollConfig {
        PollConfig { settle: Duration::from_millis(250), ..PollConfig::new(column.into()) }
    }

    #[test]
    fn cursors_are_saved_and_read_back() {
        let after = Cursor::After { column: "2024-01-01 00:00:00+00".into(), key: vec!["7".into()] };
        let token = after.token(1_704_067_200_000_000);
        assert_eq!(token.get_str("_data").unwrap(), "00060DD710212000");
        assert_eq!(Cursor::of_token(&token), Some(after));
        assert_eq!(Cursor::of_token(&Cursor::From(5).token(5)), Some(Cursor::From(5)));
        assert_eq!(Cursor::of_token(&doc! {"_data": "zz"}), None);
        assert_eq!(Cursor::of_token(&doc! {"_data": "01", "column": "x", "key": [1]}), None, "key texts only");
    }

    #[test]
    fn the_column_must_exist_and_be_a_timestamp() {
        assert_eq!(column_of(&table(), &config("at")).unwrap(), 2);
        assert!(column_of(&table(), &config("nope")).unwrap_err().message.contains("has no column \"nope\""));
        assert!(column_of(&table(), &config("v")).unwrap_err().message.contains("is integer; it must be a timestamp"));
    }

    #[test]
    fn polls_read_past_the_cursor_in_column_then_key_order() {
        let sql = |cursor: Cursor| {
            let poller = PollerSql { table: &table(), column: 2, config: &config("at"), cursor: &cursor, page: 16 };
            poller.sql()
        };
        let (first, params) = sql(Cursor::From(0));
        assert!(
            first.contains("WHERE \"at\" IS NOT NULL AND \"at\" <= (clock_timestamp() - interval '250 milliseconds')::timestamp with time zone"),
            "{first}"
        );
        assert!(first.ends_with("ORDER BY \"at\", \"id\" LIMIT 16"), "{first}");
        assert!(params.is_empty());
        let (after, params) = sql(Cursor::After { column: "2024-01-01 00:00:00+00".into(), key: vec!["7".into()] });
        assert!(after.contains("WHERE (\"at\", \"id\") > ($1::text::timestamp with time zone, $2::text::integer) AND"), "{after}");
        assert_eq!(params, ["2024-01-01 00:00:00+00", "7"]);
        let (from, params) = sql(Cursor::From(42));
        assert!(from.contains("\"at\" >= ('epoch'::timestamp with time zone + $1::text::int8 * interval '1 microsecond')"), "{from}");
        assert_eq!(params, ["42"]);
    }
}
