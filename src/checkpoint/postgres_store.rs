//! Checkpoints kept in a PostgreSQL table (of the source database), one row per (sync name,
//! table): the checkpoint document as canonical extended JSON. Each save, once committed,
//! tells the replication session of that table the position it may confirm to the server.

use std::sync::Arc;

use async_trait::async_trait;
use mongodb::bson::{Bson, Document};

use super::{CheckpointStore, CollectionCheckpoint};
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
            "CREATE TABLE IF NOT EXISTS {} (name text NOT NULL, namespace text NOT NULL, checkpoint jsonb NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (name, namespace))",
            store.table
        );
        store.client().await?.batch_execute(&sql).await.map_err(|e| failed(&format!("cannot create the checkpoint table {table}"), &e))?;
        Ok(store)
    }

    async fn client(&self) -> SyncResult<Arc<tokio_postgres::Client>> {
        self.client.get().await
    }
}

/// Out of reach: retried (`ERR_MONGO_UNREACHABLE`, the source's code); else `ERR_CHECKPOINT`.
fn failed(context: &str, e: &tokio_postgres::Error) -> SyncError {
    let mut err = pg_error(context, e);
    if err.code != ErrorCode::MongoUnreachable {
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
        let text: String = row.get(0);
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| SyncError::new(ErrorCode::Checkpoint, format!("checkpoint of {ns} is not JSON: {e}")))?;
        match Bson::try_from(json) {
            Ok(Bson::Document(doc)) => CollectionCheckpoint::from_document(ns, doc),
            _ => Err(SyncError::new(ErrorCode::Checkpoint, format!("checkpoint of {ns} is not a document"))),
        }
    }

    async fn save(&self, ns: &Namespace, cp: &CollectionCheckpoint) -> SyncResult<()> {
        let doc: Document = cp.to_document()?;
        let json = Bson::Document(doc).into_canonical_extjson().to_string();
        let sql = format!(
            "INSERT INTO {} (name, namespace, checkpoint, updated_at) VALUES ($1, $2, $3::text::jsonb, now()) \
             ON CONFLICT (name, namespace) DO UPDATE SET checkpoint = EXCLUDED.checkpoint, updated_at = now()",
            self.table
        );
        self.client()
            .await?
            .execute(&sql, &[&self.name, &ns.to_string(), &json])
            .await
            .map_err(|e| failed(&format!("cannot save the checkpoint of {ns}"), &e))?;
        self.acked.set(ns, cp.resume_token.as_ref());
        Ok(())
    }
}
