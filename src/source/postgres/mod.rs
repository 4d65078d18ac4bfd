//! PostgreSQL as a [`ChangeSource`]: tables are the collections (`schema.table`), rows the
//! documents (`_id` from the primary key, see [`table`]), and logical replication with the
//! built-in `pgoutput` plugin the change stream.
//!
//! Each table has its own replication slot (`<slotPrefix><name>_<schema>_<table>`), created
//! when its copy starts (after the publication covers the table), exporting its snapshot: the
//! copy reads that snapshot ([`snapshot`]), the slot's consistent point is the copy's start
//! point, and the stream begins exactly there (retaining the WAL from there). Positions are LSNs: a change's version is its transaction's
//! commit LSN (changes of a row commit in LSN order, as row locks serialise them), copied rows
//! carry the slot's start LSN, so a change after the start always wins. The slot's confirmed
//! flush LSN moves only when a checkpoint holding that position is durable
//! ([`AckedPositions`], fed by the checkpoint store), so the server never drops WAL that the
//! outputs have not acknowledged, and a restart resumes exactly there.

pub mod connect;
pub mod pgoutput;
pub mod poll;
pub mod snapshot;
mod stream;
pub mod table;
pub mod types;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;
use mongodb::bson::{doc, Bson, Document, RawDocumentBuf, Timestamp};
use tokio_util::sync::CancellationToken;

use self::connect::{pg_error, PgTarget, SharedClient};
use self::table::{quote, Table};
use super::{ChangeFeed, ChangeSource, DocumentStream, FeedLimits, Found, RangePlan, ScanOptions, StreamStart};
use crate::checkpoint::CopyRange;
use crate::config::{sql_identifier_part, Namespace, PostgresConfig, SyncConfig, SyncMode};
use crate::error::{ErrorCode, SyncError, SyncResult};

/// Per table, the stream position last saved in a durable checkpoint: what the replication
/// session may confirm to the server as flushed.
#[derive(Debug, Clone, Default)]
pub struct AckedPositions(Arc<Mutex<HashMap<Namespace, u64>>>);

impl AckedPositions {
    pub fn set(&self, ns: &Namespace, token: Option<&Document>) {
        if let Some(lsn) = token.and_then(lsn_of_token) {
            let mut map = self.0.lock().expect("acked lock");
            let entry = map.entry(ns.clone()).or_insert(lsn);
            *entry = (*entry).max(lsn);
        }
    }

    pub fn get(&self, ns: &Namespace) -> Option<u64> {
        self.0.lock().expect("acked lock").get(ns).copied()
    }
}

/// An LSN as the source's clock: `version_of` of it is the LSN itself (for LSNs below 2^62).
pub fn lsn_time(lsn: u64) -> Timestamp {
    Timestamp { time: (lsn >> 31) as u32, increment: (lsn & 0x7fff_ffff) as u32 }
}

pub fn time_lsn(t: Timestamp) -> u64 {
    ((t.time as u64) << 31) | t.increment as u64
}

/// A stream position: the LSN, as 16 hex digits (so positions sort as text too).
pub fn lsn_token(lsn: u64) -> Document {
    doc! {"_data": format!("{lsn:016X}")}
}

pub fn lsn_of_token(token: &Document) -> Option<u64> {
    u64::from_str_radix(token.get_str("_data").ok()?, 16).ok()
}

/// `16/B374D848` → its number.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

pub struct PostgresSource {
    target: PgTarget,
    client: SharedClient,
    config: PostgresConfig,
    publication: String,
    sync_name: String,
    tables: Vec<Namespace>,
    copy_only: bool,
    acked: AckedPositions,
    described: Mutex<HashMap<Namespace, Arc<Table>>>,
    /// Per table whose copy this process began: the snapshot its slot exported, held until
    /// its stream opens.
    exported: Mutex<HashMap<Namespace, snapshot::Exported>>,
}

impl PostgresSource {
    /// Connects (so that bad credentials fail `start()`), reads every table's description and
    /// makes sure the publication covers them.
    pub async fn connect(config: &SyncConfig, pg: &PostgresConfig, acked: AckedPositions) -> SyncResult<Self> {
        let target = PgTarget::new(pg)?;
        let client = target.connect().await?;
        let source = PostgresSource {
            client: SharedClient::new(target.clone(), Some(client)),
            target,
            publication: pg.publication_for(&config.name),
            config: pg.clone(),
            sync_name: config.name.clone(),
            tables: config.collections.iter().map(|c| c.namespace.clone()).collect(),
            copy_only: config.mode == SyncMode::Copy,
            acked,
            described: Mutex::new(HashMap::new()),
            exported: Mutex::new(HashMap::new()),
        };
        for ns in &source.tables {
            let table = source.table(ns, false).await?;
            match &source.config.poll {
                // A polled column that is missing or not a timestamp fails start().
                Some(poll) => drop(poll::column_of(&table, poll)?),
                // A missing publication (or table in it) fails start(), not a collection later.
                None if !source.copy_only => source.ensure_publication(ns).await?,
                None => {}
            }
        }
        Ok(source)
    }

    pub fn target(&self) -> &PgTarget {
        &self.target
    }

    /// The shared SQL session, connected again if it was lost.
    async fn client(&self) -> SyncResult<Arc<tokio_postgres::Client>> {
        self.client.get().await
    }

    /// The table's description, read again when `fresh` (its columns changed).
    async fn table(&self, ns: &Namespace, fresh: bool) -> SyncResult<Arc<Table>> {
        if !fresh {
            if let Some(t) = self.described.lock().expect("tables lock").get(ns) {
                return Ok(t.clone());
            }
        }
        let table = Arc::new(Table::describe(&*self.client().await?, ns).await?);
        self.described.lock().expect("tables lock").insert(ns.clone(), table.clone());
        Ok(table)
    }

    /// The replication slot of a table: at most 63 characters.
    pub fn slot_name(&self, ns: &Namespace) -> String {
        let name =
            format!("{}{}_{}_{}", self.config.slot_prefix, sql_identifier_part(&self.sync_name), sql_identifier_part(&ns.db), sql_identifier_part(&ns.coll));
        if name.len() <= 63 {
            return name;
        }
        use sha2::Digest;
        let hash = sha2::Sha256::digest(name.as_bytes());
        let hex: String = hash.iter().take(6).map(|b| format!("{b:02x}")).collect();
        format!("{}_{hex}", &name[..50])
    }

    /// Makes sure the publication covers the table: created or extended when the sync owns it
    /// (no `publication` option), else it must exist and include the table.
    async fn ensure_publication(&self, ns: &Namespace) -> SyncResult<()> {
        let client = self.client().await?;
        let failed = |e: tokio_postgres::Error| pg_error(&format!("cannot check publication {}", self.publication), &e);
        let exists = client.query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&self.publication]).await.map_err(failed)?.is_some();
        let owned = self.config.publication.is_none();
        if !exists && !owned {
            return Err(SyncError::config(format!(
                "postgres.publication: publication \"{}\" does not exist in {}; create it (CREATE PUBLICATION {} FOR TABLE {ns}) or leave the option out so that the sync creates its own",
                self.publication,
                self.target.describe(),
                self.publication
            )));
        }
        let name = format!("{}.{}", quote(&ns.db), quote(&ns.coll));
        if !exists {
            let sql = format!("CREATE PUBLICATION {} FOR TABLE {name}", quote(&self.publication));
            return client.batch_execute(&sql).await.map_err(|e| pg_error(&format!("cannot create publication {}", self.publication), &e));
        }
        let covered = "SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3";
        if client.query_opt(covered, &[&self.publication, &ns.db, &ns.coll]).await.map_err(failed)?.is_some() {
            return Ok(());
        }
        if !owned {
            return Err(SyncError::config(format!(
                "postgres.publication: publication \"{}\" does not include table {ns}; add it (ALTER PUBLICATION {} ADD TABLE {ns})",
                self.publication, self.publication
            )));
        }
        let sql = format!("ALTER PUBLICATION {} ADD TABLE {name}", quote(&self.publication));
        client.batch_execute(&sql).await.map_err(|e| pg_error(&format!("cannot add {ns} to publication {}", self.publication), &e))
    }

    /// Drops the table's slot left by an earlier copy, if any.
    async fn drop_old_slot(&self, ns: &Namespace) -> SyncResult<()> {
        let slot = self.slot_name(ns);
        self.client()
            .await?
            .query("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
            .await
            .map_err(|e| pg_error(&format!("cannot drop the old replication slot {slot}"), &e))?;
        Ok(())
    }

    /// A fresh slot for a table that streams without a copy; its consistent point.
    async fn create_slot(&self, ns: &Namespace) -> SyncResult<u64> {
        self.ensure_publication(ns).await?;
        self.drop_old_slot(ns).await?;
        let slot = self.slot_name(ns);
        let failed = |e: tokio_postgres::Error| pg_error(&format!("cannot create replication slot {slot} for {ns}"), &e);
        let row = self.client().await?.query_one("SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')", &[&slot]).await.map_err(failed)?;
        let text: String = row.get(0);
        parse_lsn(&text).ok_or_else(|| SyncError::new(ErrorCode::Internal, format!("replication slot {slot}: unreadable LSN {text}")))
    }

    /// A fresh slot for a table about to be copied, exporting its snapshot (held for the
    /// copy's readers); its consistent point.
    async fn create_slot_for_copy(&self, ns: &Namespace) -> SyncResult<u64> {
        self.ensure_publication(ns).await?;
        self.drop_old_slot(ns).await?;
        let (lsn, exported) = snapshot::Exported::create(&self.target, &self.slot_name(ns), &self.publication).await?;
        self.exported.lock().expect("exported lock").insert(ns.clone(), exported);
        Ok(lsn)
    }

    /// A scan's session, in the table's exported snapshot when this process holds it; `false`
    /// when it reads current rows (the snapshot is gone: the copy was resumed, or its session lost).
    async fn scan_client(&self, ns: &Namespace) -> SyncResult<(tokio_postgres::Client, bool)> {
        let client = self.target.connect().await?;
        let Some(name) = self.exported.lock().expect("exported lock").get(ns).map(|e| e.name.clone()) else { return Ok((client, false)) };
        if snapshot::import(&client, &name).await.is_ok() {
            return Ok((client, true));
        }
        // The exporting session was lost (and the snapshot with it).
        self.exported.lock().expect("exported lock").remove(ns);
        client.batch_execute("ROLLBACK").await.map_err(|e| pg_error(&format!("copy of {ns} failed"), &e))?;
        Ok((client, false))
    }

    /// The slot's WAL status, if it exists (`lost` once its WAL was removed).
    async fn slot_status(&self, ns: &Namespace) -> SyncResult<Option<String>> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT COALESCE(wal_status, 'reserved') FROM pg_replication_slots WHERE slot_name = $1", &[&self.slot_name(ns)])
            .await
            .map_err(|e| pg_error("cannot read the replication slots", &e))?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Polling, not streaming, the changes (and not copy-only: a copy reads the table as usual).
    fn polls(&self) -> bool {
        self.config.poll.is_some() && !self.copy_only
    }

    /// The server's clock, in microseconds since 1970: polling mode's versions.
    async fn clock_micros(&self) -> SyncResult<u64> {
        let sql = "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::int8";
        let row = self.client().await?.query_one(sql, &[]).await.map_err(|e| pg_error("cannot read the server's clock", &e))?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }

    /// Polls the table from `start` on.
    async fn open_poll(&self, ns: &Namespace, start: &StreamStart, limits: FeedLimits, cancel: CancellationToken) -> SyncResult<ChangeFeed> {
        let poll = self.config.poll.clone().expect("polling");
        let cursor = match start {
            StreamStart::ResumeAfter(token) | StreamStart::StartAfter(token) => poll::Cursor::of_token(token)
                .ok_or_else(|| SyncError::new(ErrorCode::HistoryLost, format!("saved position of {ns} is not a polling position: {token}")))?,
            StreamStart::AtOperationTime(t) => poll::Cursor::From(time_lsn(*t)),
        };
        let table = self.table(ns, true).await?;
        let column = poll::column_of(&table, &poll)?;
        let client = self.target.connect().await?;
        let poller = poll::Poller { client, table, column, config: poll, cursor, page: limits.items.clamp(1, 10_000) as i64, cancel };
        Ok(ChangeFeed::spawn(limits, move |tx| poller.run(tx)))
    }

    async fn current_lsn(&self) -> SyncResult<u64> {
        let row = self.client().await?.query_one("SELECT pg_current_wal_lsn()::text", &[]).await.map_err(|e| pg_error("cannot read the WAL position", &e))?;
        let text: String = row.get(0);
        parse_lsn(&text).ok_or_else(|| SyncError::new(ErrorCode::Internal, format!("unreadable LSN {text}")))
    }
}

#[async_trait]
impl ChangeSource for PostgresSource {
    async fn now(&self) -> SyncResult<Timestamp> {
        if self.polls() {
            return Ok(lsn_time(self.clock_micros().await?));
        }
        Ok(lsn_time(self.current_lsn().await?))
    }

    /// The table's slot, created now: the copy that follows reads its exported snapshot.
    async fn start_point(&self, ns: &Namespace) -> SyncResult<Timestamp> {
        if self.copy_only {
            return self.now().await;
        }
        if self.polls() {
            // The first poll reads every row: the copy reads none (see `poll`).
            return Ok(lsn_time(0));
        }
        Ok(lsn_time(self.create_slot_for_copy(ns).await?))
    }

    async fn history_reaches(&self, ns: &Namespace, _at: Timestamp) -> SyncResult<bool> {
        Ok(self.copy_only || self.polls() || self.slot_status(ns).await?.is_some_and(|s| s != "lost"))
    }

    async fn open_stream(&self, ns: &Namespace, start: &StreamStart, limits: FeedLimits, cancel: CancellationToken) -> SyncResult<ChangeFeed> {
        if self.polls() {
            return self.open_poll(ns, start, limits, cancel).await;
        }
        // The copy is done: its snapshot is let go.
        self.exported.lock().expect("exported lock").remove(ns);
        let (lsn, saved) = match start {
            StreamStart::ResumeAfter(token) | StreamStart::StartAfter(token) => {
                (lsn_of_token(token).ok_or_else(|| SyncError::new(ErrorCode::HistoryLost, format!("saved position of {ns} is not an LSN: {token}")))?, true)
            }
            StreamStart::AtOperationTime(t) => (time_lsn(*t), false),
        };
        let lsn = match self.slot_status(ns).await? {
            Some(status) if status == "lost" => return Err(self.lost(ns, "its WAL was removed (max_slot_wal_keep_size)")),
            Some(_) => lsn,
            None if saved => return Err(self.lost(ns, "it does not exist any more")),
            // Stream only, from now: the slot starts here.
            None => self.create_slot(ns).await?.max(lsn),
        };
        let table = self.table(ns, false).await?;
        // Confirmed to the server until more is saved: the durable position, never a later one
        // (a stream reopened after a truncate starts past a change not applied yet).
        let durable = self.acked.get(ns).filter(|&a| a < lsn).unwrap_or(lsn);
        let session = stream::Session::open(&self.target, &self.slot_name(ns), &self.publication, lsn, durable).await?;
        let reader = stream::Reader { session, table, source: self.shared(), acked: self.acked.clone(), cancel };
        Ok(ChangeFeed::spawn(limits, move |tx| reader.run(tx)))
    }

    async fn estimated_count(&self, ns: &Namespace) -> u64 {
        if self.polls() {
            return 0;
        }
        let Ok(client) = self.client().await else { return 0 };
        let name = format!("{}.{}", quote(&ns.db), quote(&ns.coll));
        // Never analyzed (reltuples -1): counted.
        let sql =
            format!("SELECT CASE WHEN reltuples >= 0 THEN reltuples::int8 ELSE (SELECT count(*) FROM {name}) END FROM pg_class WHERE oid = $1::text::regclass");
        match client.query_one(&sql, &[&name]).await {
            Ok(row) => row.get::<_, i64>(0).max(0) as u64,
            Err(_) => 0,
        }
    }

    async fn plan_ranges(&self, ns: &Namespace, readers: usize) -> SyncResult<RangePlan> {
        let table = self.table(ns, false).await?;
        let single = vec![CopyRange { single_type: true, ..Default::default() }];
        let ([key], false) = (&table.key[..], self.polls()) else { return Ok(RangePlan { ranges: single, warning: None }) };
        let column = &table.columns[*key];
        if !matches!(column.ty, types::PgType::Int32 | types::PgType::Int64) {
            return Ok(RangePlan { ranges: single, warning: None });
        }
        let sql = format!("SELECT min({0})::int8, max({0})::int8 FROM {1}", quote(&column.name), table.sql_name());
        let row = self.client().await?.query_one(&sql, &[]).await.map_err(|e| pg_error(&format!("cannot read the key range of {ns}"), &e))?;
        let (Some(min), Some(max)) = (row.get::<_, Option<i64>>(0), row.get::<_, Option<i64>>(1)) else {
            return Ok(RangePlan { ranges: single, warning: None });
        };
        Ok(RangePlan { ranges: split_range(min, max, readers), warning: None })
    }

    async fn scan(&self, ns: &Namespace, range: &CopyRange, options: &ScanOptions) -> SyncResult<DocumentStream> {
        if options.filter.is_some() {
            return Err(SyncError::config(format!("{ns}: filter is not supported for PostgreSQL tables")));
        }
        if self.polls() {
            return Ok(futures::stream::empty().boxed());
        }
        // Described afresh: columns may have changed since start (a re-copy).
        let table = self.table(ns, true).await?;
        let (client, in_snapshot) = self.scan_client(ns).await?;
        let mut scan = stream::Scan::new(table, range, options.batch_size.max(1) as i64)?;
        if !in_snapshot {
            scan.end_at_last_key(&client).await?;
        }
        Ok(scan.into_stream(Arc::new(client)).map(|doc| doc.and_then(|doc| crate::source::raw_of(&doc))).boxed())
    }

    async fn lookup(&self, ns: &Namespace, id: &Bson, _filter: Option<&Document>, _not_before: Option<Timestamp>) -> SyncResult<Option<RawDocumentBuf>> {
        let table = self.table(ns, false).await?;
        stream::lookup(&*self.client().await?, &table, id).await?.as_ref().map(crate::source::raw_of).transpose()
    }

    /// One lookup per `_id` (filters are refused for tables, so this serves renames only).
    async fn lookup_many(
        &self,
        ns: &Namespace,
        ids: &[Bson],
        filter: Option<&Document>,
        not_before: Option<Timestamp>,
        _max_bytes: usize,
    ) -> SyncResult<Found> {
        let mut found = Found { documents: Vec::new(), complete: true };
        for id in ids {
            found.documents.extend(self.lookup(ns, id, filter, not_before).await?);
        }
        Ok(found)
    }

    async fn existing_ids(&self, ns: &Namespace, ids: &[Bson], not_before: Option<Timestamp>) -> SyncResult<Vec<Bson>> {
        let mut existing = Vec::new();
        for id in ids {
            if self.lookup(ns, id, None, not_before).await?.is_some() {
                existing.push(id.clone());
            }
        }
        Ok(existing)
    }

    async fn has_documents(&self, ns: &Namespace) -> SyncResult<bool> {
        let table = self.table(ns, false).await?;
        let sql = format!("SELECT EXISTS (SELECT 1 FROM {})", table.sql_name());
        let row = self.client().await?.query_one(&sql, &[]).await.map_err(|e| pg_error(&format!("cannot read {ns}"), &e))?;
        Ok(row.get(0))
    }

    async fn list_collections(&self) -> SyncResult<Vec<Namespace>> {
        Ok(self.tables.clone())
    }
}

impl PostgresSource {
    fn lost(&self, ns: &Namespace, why: &str) -> SyncError {
        SyncError::new(
            ErrorCode::HistoryLost,
            format!(
                "the replication slot {} of {ns} cannot resume: {why}; nothing was written. Re-copy the table by deleting its checkpoint (or onHistoryLost: 'resync')",
                self.slot_name(ns)
            ),
        )
    }

    /// What a stream reader needs of the source: the table descriptions and lookups.
    fn shared(&self) -> stream::Shared {
        stream::Shared { target: self.target.clone() }
    }
}

/// `[min, max]` in `parts` ranges of about equal width.
fn split_range(min: i64, max: i64, parts: usize) -> Vec<CopyRange> {
    let width = ((max as i128 - min as i128) / parts.max(1) as i128).max(1);
    let mut ranges = Vec::new();
    let mut lower: Option<Bson> = None;
    for i in 1..parts {
        let bound = min as i128 + width * i as i128;
        if bound > max as i128 {
            break;
        }
        let bound = Bson::Int64(bound as i64);
        ranges.push(CopyRange { lower: lower.clone(), upper: Some(bound.clone()), single_type: true, ..Default::default() });
        lower = Some(bound);
    }
    ranges.push(CopyRange { lower, single_type: true, ..Default::default() });
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::version_of;

    #[test]
    fn lsns_are_versions_and_tokens_that_sort() {
        for lsn in [0, 1, 0x16_B374_D848, (1 << 40) + 12345] {
            assert_eq!(time_lsn(lsn_time(lsn)), lsn);
            assert_eq!(version_of(lsn_time(lsn)), lsn as i64);
            assert_eq!(lsn_of_token(&lsn_token(lsn)), Some(lsn));
        }
        assert!(lsn_token(0xFF).get_str("_data").unwrap() < lsn_token(0x100).get_str("_data").unwrap());
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn("nope"), None);
    }

    #[test]
    fn acked_positions_only_move_forward() {
        let acked = AckedPositions::default();
        let ns = Namespace::parse("public.t").unwrap();
        acked.set(&ns, Some(&lsn_token(50)));
        acked.set(&ns, Some(&lsn_token(40)));
        acked.set(&ns, None);
        assert_eq!(acked.get(&ns), Some(50));
    }

    #[test]
    fn integer_keys_split_into_covering_ranges() {
        let ranges = split_range(1, 100, 4);
        assert_eq!(ranges.len(), 4);
        assert_eq!(ranges[0].lower, None);
        assert_eq!(ranges[0].upper, Some(Bson::Int64(25)));
        assert_eq!(ranges[3].lower, Some(Bson::Int64(73)));
        assert_eq!(ranges[3].upper, None);
        assert_eq!(split_range(5, 5, 4).len(), 1);
    }
}
