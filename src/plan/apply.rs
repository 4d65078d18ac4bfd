//! Carries out a plan: fields mapped and dynamic settings and aliases changed in place, re-copies
//! begun (a new index, then the engine's copy and atomic alias swap), removed collections'
//! checkpoints deleted, new collections copied; then the applied definition is recorded, with one
//! audit record per apply.

use mongodb::bson::{doc, DateTime, Document};
use mongodb::options::ReturnDocument;
use mongodb::Client;

use super::observe::{connect, es_sink, DEFINITIONS, HISTORY};
use super::{fingerprint, Plan, Step};
use crate::checkpoint::{CheckpointStore, MongoCheckpointStore};
use crate::config::{CollectionConfig, SyncConfig, SyncMode};
use crate::error::{ErrorCode, SyncError, SyncResult};
use crate::pipeline::SyncEngine;
use crate::sink::elasticsearch::{EsSink, SettingChange};
use crate::source::mongo_error;

/// Carries out `plan` (made from `config` by [`super::diff`]); returns once every new or
/// re-copied collection is copied (the running service then streams from the saved positions).
pub async fn apply(config: &SyncConfig, plan: &Plan) -> SyncResult<()> {
    let client = connect(config).await?;
    let store = MongoCheckpointStore::new(&client, &config.checkpoint, &config.name);
    let es = es_sink(config)?;
    for step in &plan.steps {
        let collection = config.collections.iter().find(|c| c.namespace.to_string() == step.namespace());
        match (step, collection, es.as_ref()) {
            (Step::MapFields { index, .. }, Some(c), Some(es)) => {
                let wanted = c.index_body.as_ref().and_then(|b| b.get("mappings")).cloned().unwrap_or_default();
                es.put_mappings(index, &wanted).await?;
            }
            (Step::UpdateIndex { index, settings, alias, fields, .. }, Some(c), Some(es)) => update_index(es, c, index, settings, alias, fields).await?,
            (Step::Recopy { .. }, Some(c), es) => begin_recopy(&store, es, c).await?,
            (Step::Remove { namespace }, _, _) => {
                let checkpoints = client.database(&config.checkpoint.database).collection::<Document>(&config.checkpoint.collection);
                let key = format!("{}:{namespace}", config.name);
                checkpoints.delete_one(doc! { "_id": key }).await.map_err(|e| mongo_error(format!("cannot delete the checkpoint of {namespace}"), &e))?;
            }
            _ => {}
        }
    }
    if plan.steps.iter().any(|s| matches!(s, Step::Copy { .. } | Step::Recopy { .. })) {
        let engine = SyncEngine::new(SyncConfig { mode: SyncMode::Copy, http: None, ..config.clone() })?;
        engine.start().await?;
        engine.wait().await?;
    }
    record(&client, config, plan).await
}

/// Dynamic settings, a missing alias and new fields, changed in place.
async fn update_index(es: &EsSink, c: &CollectionConfig, index: &str, settings: &[SettingChange], alias: &Option<String>, fields: &[String]) -> SyncResult<()> {
    let part = |name: &str| c.index_body.as_ref().and_then(|b| b.get(name)).unwrap_or(&serde_json::Value::Null);
    if !settings.is_empty() {
        es.put_settings(index, part("settings"), settings).await?;
    }
    if let Some(alias) = alias {
        es.add_alias(index, alias).await?;
    }
    if !fields.is_empty() {
        es.put_mappings(index, part("mappings")).await?;
    }
    Ok(())
}

/// The collection's checkpoint points at a new index (created with the configured settings,
/// without the alias, which moves at the swap); the engine copies into it and swaps.
async fn begin_recopy(store: &MongoCheckpointStore, es: Option<&EsSink>, c: &CollectionConfig) -> SyncResult<()> {
    let mut checkpoint = store.load(&c.namespace).await?;
    let (new_index, unfinished) = checkpoint.begin_recopy(&c.index);
    if let Some(es) = es {
        if let Some(index) = unfinished {
            let _ = es.delete_index(&index).await?;
        }
        let _ = es.ensure_collection_index(&new_index, &CollectionConfig { alias: None, ..c.clone() }).await?;
    }
    store.save(&c.namespace, &checkpoint).await
}

/// The applied definition (its collections' rules) and an audit record of this apply.
async fn record(client: &Client, config: &SyncConfig, plan: &Plan) -> SyncResult<()> {
    let db = client.database(&config.checkpoint.database);
    let now = DateTime::now();
    let collections: Vec<Document> =
        config.collections.iter().map(|c| doc! { "namespace": c.namespace.to_string(), "index": &c.index, "rules": fingerprint(c) }).collect();
    let saved = db
        .collection::<Document>(DEFINITIONS)
        .find_one_and_update(doc! { "_id": &config.name }, doc! { "$set": { "collections": collections, "appliedAt": now }, "$inc": { "version": 1 } })
        .upsert(true)
        .return_document(ReturnDocument::After)
        .await
        .map_err(|e| mongo_error("cannot record the applied definition", &e))?;
    let version = saved.as_ref().and_then(|d| d.get("version")).cloned().unwrap_or(mongodb::bson::Bson::Int32(1));
    let steps = mongodb::bson::to_bson(&plan.steps).map_err(|e| SyncError::new(ErrorCode::Internal, format!("cannot record the plan: {e}")))?;
    db.collection::<Document>(HISTORY)
        .insert_one(doc! { "name": &config.name, "version": version, "appliedAt": now, "steps": steps })
        .await
        .map_err(|e| mongo_error("cannot record the apply in the history", &e))?;
    Ok(())
}
