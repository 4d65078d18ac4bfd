//! Finds the collections that `namespaces` patterns choose.

use mongodb::bson::doc;
use mongodb::Client;

use crate::config::{Discovery, Namespace, SyncConfig};
use crate::error::SyncResult;
use crate::source::mongo_error;

/// Databases that hold no user data.
const SYSTEM_DATABASES: [&str; 3] = ["admin", "local", "config"];

/// Every collection (not view, not `system.*`, not the checkpoint store) whose namespace matches.
pub async fn list(client: &Client, discovery: &Discovery, config: &SyncConfig) -> SyncResult<Vec<Namespace>> {
    let databases = client.list_database_names().await.map_err(|e| mongo_error("cannot list the databases", &e))?;
    let mut found = Vec::new();
    for db in databases.iter().filter(|d| !SYSTEM_DATABASES.contains(&d.as_str())) {
        let names = client
            .database(db)
            .list_collection_names()
            .filter(doc! { "type": "collection" })
            .await
            .map_err(|e| mongo_error(format!("cannot list the collections of {db}"), &e))?;
        for coll in names {
            let ns = Namespace { db: db.clone(), coll };
            let is_checkpoints = ns.db == config.checkpoint.database && ns.coll == config.checkpoint.collection;
            if !is_checkpoints && !ns.coll.starts_with("system.") && discovery.matches(&ns) {
                found.push(ns);
            }
        }
    }
    found.sort_by_key(|ns| ns.to_string());
    Ok(found)
}
