//! The copy's consistent snapshot. A table's slot is created on a replication session with
//! `EXPORT_SNAPSHOT`; that session stays open, idle, until the copy is done, so that each copy
//! reader can import the snapshot (`SET TRANSACTION SNAPSHOT` in a `REPEATABLE READ`
//! transaction) and read the table exactly as of the slot's consistent point, where the stream
//! begins: no change is missed and none is applied twice.
//!
//! Without the snapshot (a copy resumed by another process than the one that created the slot,
//! e.g. after a SIGKILL, or the exporting session lost) the copy reads current rows, and each
//! open-ended range ends at the greatest key present when its reading starts (see
//! `Scan::end_at_last_key`): every row committed before the consistent point is at or below it,
//! later rows come through the stream, and a row read in a newer state is rewritten by its
//! streamed changes (their versions, commit LSNs, are above the copy's), ending as it is now.

use pgwire_replication::ReplicationClient;
use tokio_postgres::Client;

use super::connect::{wire_error, PgTarget};
use super::parse_lsn;
use crate::error::{ErrorCode, SyncError, SyncResult};

/// A slot's exported snapshot, valid while its session is held.
pub struct Exported {
    pub name: String,
    /// Ended (and the snapshot with it) when dropped.
    _session: ReplicationClient,
}

impl Exported {
    /// Creates `slot` exporting its snapshot; its consistent point and the snapshot.
    pub async fn create(target: &PgTarget, slot: &str, publication: &str) -> SyncResult<(u64, Exported)> {
        let failed = |e: &pgwire_replication::PgWireError| wire_error(&format!("cannot create replication slot {slot} of {}", target.describe()), e);
        let mut session = ReplicationClient::connect_gated(target.replication(slot, publication)).await.map_err(|e| failed(&e))?;
        // The keyword form, understood by PostgreSQL 10 and later.
        let rows = session.simple_query(&format!("CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput EXPORT_SNAPSHOT")).await.map_err(|e| failed(&e))?;
        // slot_name, consistent_point, snapshot_name, output_plugin
        let column = |i: usize| rows.first().and_then(|row| row.get(i)).and_then(|v| v.as_ref()).map(|b| String::from_utf8_lossy(b).into_owned());
        let unreadable = || SyncError::new(ErrorCode::Postgres, format!("replication slot {slot}: the server's reply to its creation is unreadable"));
        let lsn = column(1).and_then(|text| parse_lsn(&text)).ok_or_else(unreadable)?;
        let name = column(2).ok_or_else(unreadable)?;
        Ok((lsn, Exported { name, _session: session }))
    }
}

/// Begins `client`'s transaction in the snapshot `name` (its queries then read as of it).
pub async fn import(client: &Client, name: &str) -> Result<(), tokio_postgres::Error> {
    let sql = format!("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'", name.replace('\'', "''"));
    client.batch_execute(&sql).await
}
