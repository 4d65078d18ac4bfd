//! Lists the collections that hold user data, for `namespaces` patterns to choose from.

use mongodb::bson::doc;
use mongodb::Client;

use super::error::mongo_error;
use crate::config::Namespace;
use crate::error::SyncResult;

/// Databases that hold no user data.
const SYSTEM_DATABASES: [&str; 3] = ["admin", "local", "config"];

/// Every collection (not view, not `system.*`) of every database but the system ones, sorted.
pub async fn list(client: &Client) -> SyncResult<Vec<Namespace>> {
    let databases = client.list_database_names().await.map_err(|e| mongo_error("cannot list the databases", &e))?;
    let mut found = Vec::new();
    for db in databases.iter().filter(|d| !SYSTEM_DATABASES.contains(&d.as_str())) {
        let names = client
            .database(db)
            .list_collection_names()
            .filter(doc! { "type": "collection" })
            .await
            .map_err(|e| mongo_error(format!("cannot list the collections of {db}"), &e))?;
        found.extend(names.into_iter().filter(|coll| !coll.starts_with("system.")).map(|coll| Namespace { db: db.clone(), coll }));
    }
    found.sort_by_key(|ns| ns.to_string());
    Ok(found)
}
