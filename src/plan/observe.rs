//! What exists of a sync: its checkpoints, the definition applied last, and its indices.

use std::sync::Arc;

use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::Client;

use super::Observed;
use crate::config::SyncConfig;
use crate::error::SyncResult;
use crate::event::EventBus;
use crate::sink::elasticsearch::EsSink;
use crate::sink::SinkContext;
use crate::source::mongo::MongoSource;
use crate::source::mongo_error;
use crate::stats::Stats;

/// The collection (in the checkpoint database) holding each sync's applied definition.
pub const DEFINITIONS: &str = "definitions";
/// The collection holding one record per apply: the audit history.
pub const HISTORY: &str = "definitions_history";
/// Attempts of a request of `plan`: it reports a server out of reach instead of waiting for it.
const ATTEMPTS: u32 = 3;

/// Reads what exists of `config`'s sync.
pub async fn observe(config: &SyncConfig) -> SyncResult<Observed> {
    let client = connect(config).await?;
    let db = client.database(&config.checkpoint.database);
    let mut checkpoints = Vec::new();
    let mut cursor = db
        .collection::<Document>(&config.checkpoint.collection)
        .find(doc! { "name": &config.name })
        .await
        .map_err(|e| mongo_error("cannot read the checkpoints", &e))?;
    while let Some(d) = cursor.try_next().await.map_err(|e| mongo_error("cannot read the checkpoints", &e))? {
        if let Ok(ns) = d.get_str("namespace") {
            checkpoints.push(ns.to_string());
        }
    }
    let mut observed = Observed { checkpoints, ..Observed::default() };
    let applied = db
        .collection::<Document>(DEFINITIONS)
        .find_one(doc! { "_id": &config.name })
        .await
        .map_err(|e| mongo_error("cannot read the applied definition", &e))?;
    for c in applied.as_ref().and_then(|d| d.get_array("collections").ok()).into_iter().flatten() {
        if let Some((Ok(ns), Ok(rules))) = c.as_document().map(|c| (c.get_str("namespace"), c.get_str("rules"))) {
            observed.applied.insert(ns.to_string(), rules.to_string());
        }
    }
    if let Some(es) = es_sink(config)? {
        for c in &config.collections {
            let wanted = c.index_body.as_ref().and_then(|b| b.get("mappings"));
            observed.indices.insert(c.index.clone(), es.index_state(&c.index, wanted).await?);
            let settings = c.index_body.as_ref().and_then(|b| b.get("settings"));
            if let Some(setup) = es.index_setup(&c.index, settings, c.alias.as_deref()).await? {
                observed.setups.insert(c.index.clone(), setup);
            }
        }
    }
    Ok(observed)
}

pub(super) async fn connect(config: &SyncConfig) -> SyncResult<Client> {
    Ok(MongoSource::connect(config, &EventBus::default()).await?.client().clone())
}

/// A client of the sync's Elasticsearch, when it has one.
pub(super) fn es_sink(config: &SyncConfig) -> SyncResult<Option<EsSink>> {
    let Some(es) = &config.elasticsearch else { return Ok(None) };
    let mut retry = config.retry.clone();
    retry.max_attempts = Some(retry.max_attempts.map_or(ATTEMPTS, |n| n.min(ATTEMPTS)));
    let ctx = SinkContext { retry, events: EventBus::default(), stats: Arc::new(Stats::default()), cancel: Default::default() };
    EsSink::new(es, &config.batch, ctx).map(Some)
}
