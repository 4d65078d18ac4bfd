//! Checkpoints kept in a PostgreSQL table (of the source database), one row per (sync name,
//! table): the checkpoint document as canonical extended JSON. Each save, once committed,
//! tells the replication session of that table the position it may confirm to the server.

use std::sync::Arc;

use async_trait::async_trait;

use super::{fenced_off, CheckpointStore, CollectionCheckpoint};
use crate::config::Namespace;
use crate::error::{ErrorCode, SyncError, SyncResult};
use crate::source::postgres::connect::{pg_error, PgTarget, SharedClient};
use crate::source::postgres::table::quote;
use crate::source::postgres::AckedPositions;

pub struct PostgresCheckpointStore {
    client: SharedClient,
    table: String,
    name: String,
    acked: AckedPositions,
}

impl PostgresCheckpointStore {
    /// Creates the table `schema.table` if missing.
    pub async fn open(target: PgTarget, table: &Namespace, name: &str, acked: AckedPositions) -> SyncResult<Self> {
        let store = PostgresCheckpointStore {
            client: SharedClient::new(target, None),
            table: format!("{}.{}", quote(&table.db), quote(&table.coll)),
            name: name.into(),
            acked,
        };
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {0} (name text NOT NULL, namespace text NOT NULL, checkpoint jsonb NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (name, namespace)); \
             ALTER TABLE {0} ADD COLUMN IF NOT EXISTS term bigint NOT NULL DEFAULT 0",
            store.table
        );
        store.client().await?.batch_execute(&sql).await.map_err(|e| failed(&format!("cannot create the checkpoint table {table}"), &e))?;
        Ok(store)
    }

    async fn client(&self) -> SyncResult<Arc<tokio_postgres::Client>> {
        self.client.get().await
    }
}

/// Out of reach: retried (`ERR_POSTGRES_UNREACHABLE`); else `ERR_CHECKPOINT`.
fn failed(context: &str, e: &tokio_postgres::Error) -> SyncError {
    let mut err = pg_error(context, e);
    if err.code != ErrorCode::PostgresUnreachable {
        err.code = ErrorCode::Checkpoint;
    }
    err
}

#[async_trait]
impl CheckpointStore for PostgresCheckpointStore {
    async fn load(&self, ns: &Namespace) -> SyncResult<CollectionCheckpoint> {
        let sql = format!("SELECT checkpoint::text FROM {} WHERE name = $1 AND namespace = $2", self.table);
        let row = self
            .client()
            .await?
            .query_opt(&sql, &[&self.name, &ns.to_string()])
            .await
            .map_err(|e| failed(&format!("cannot read the checkpoint of {ns}"), &e))?;
        let Some(row) = row else { return Ok(CollectionCheckpoint::default()) };
        CollectionCheckpoint::from_json(ns, &row.get::<_, String>(0))
    }

    async fn load_fenced(&self, ns: &Namespace, term: u64) -> SyncResult<CollectionCheckpoint> {
        let sql = format!(
            "INSERT INTO {0} AS t (name, namespace, checkpoint, term) VALUES ($1, $2, '{{}}'::jsonb, $3) \
             ON CONFLICT (name, namespace) DO UPDATE SET term = GREATEST(t.term, EXCLUDED.term) RETURNING checkpoint::text, term",
            self.table
        );
        let row = self
            .client()
            .await?
            .query_one(&sql, &[&self.name, &ns.to_string(), &(term as i64)])
            .await
            .map_err(|e| failed(&format!("cannot read the checkpoint of {ns}"), &e))?;
        if row.get::<_, i64>(1) > term as i64 {
            return Err(fenced_off(ns, term));
        }
        CollectionCheckpoint::from_json(ns, &row.get::<_, String>(0))
    }

    async fn save_fenced(&self, ns: &Namespace, cp: &CollectionCheckpoint, term: u64) -> SyncResult<()> {
        self.save_at(ns, cp, Some(term)).await
    }

    async fn save(&self, ns: &Namespace, cp: &CollectionCheckpoint) -> SyncResult<()> {
        self.save_at(ns, cp, None).await
    }
}

impl PostgresCheckpointStore {
    /// Saves; with a term, only where no later term has been (else nothing is updated: the
    /// refusal).
    async fn save_at(&self, ns: &Namespace, cp: &CollectionCheckpoint, term: Option<u64>) -> SyncResult<()> {
        let json = cp.to_json()?;
        let sql = format!(
            "INSERT INTO {0} AS t (name, namespace, checkpoint, updated_at, term) VALUES ($1, $2, $3::text::jsonb, now(), COALESCE($4::bigint, 0)) \
             ON CONFLICT (name, namespace) DO UPDATE SET checkpoint = EXCLUDED.checkpoint, updated_at = now(), \
             term = GREATEST(t.term, EXCLUDED.term) WHERE $4::bigint IS NULL OR t.term <= $4::bigint",
            self.table
        );
        let term_param = term.map(|t| t as i64);
        let updated = self
            .client()
            .await?
            .execute(&sql, &[&self.name, &ns.to_string(), &json, &term_param])
            .await
            .map_err(|e| failed(&format!("cannot save the checkpoint of {ns}"), &e))?;
        if updated == 0 {
            return Err(fenced_off(ns, term.unwrap_or_default()));
        }
        self.acked.set(ns, cp.resume_token.as_ref());
        Ok(())
    }
}
