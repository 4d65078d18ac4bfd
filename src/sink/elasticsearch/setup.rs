//! What `plan` reads of an existing index besides its mappings: its settings and aliases,
//! compared with the configured ones; and the changes `apply` makes to them in place (dynamic
//! settings, a missing alias). A static setting that differs needs a new index (a re-copy).

use std::collections::BTreeMap;

use elasticsearch::http::Method;
use serde::Serialize;

use super::error::EsError;
use super::inspect::replied;
use super::service::{expect_success, EsSink};

type EsResult<T> = Result<T, EsError>;

/// Index settings Elasticsearch and OpenSearch change on an open index (`PUT _settings`), by
/// their key after `index.`; any other setting (shards, analysis, codec, sort…) is static here.
const DYNAMIC: [&str; 22] = [
    "number_of_replicas",
    "auto_expand_replicas",
    "refresh_interval",
    "max_result_window",
    "max_inner_result_window",
    "max_rescore_window",
    "max_docvalue_fields_search",
    "max_script_fields",
    "max_ngram_diff",
    "max_shingle_diff",
    "max_refresh_listeners",
    "max_terms_count",
    "max_regex_length",
    "default_pipeline",
    "final_pipeline",
    "gc_deletes",
    "hidden",
    "priority",
    "query.default_field",
    "highlight.max_analyzed_offset",
    "unassigned.node_left.delayed_timeout",
    "mapping.total_fields.limit",
];

/// Prefixes of dynamic settings (after `index.`).
const DYNAMIC_PREFIXES: [&str; 6] = ["blocks.", "routing.allocation.", "routing.rebalance.", "translog.", "search.slowlog.", "indexing.slowlog."];

/// One configured setting whose value the index does not have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SettingChange {
    /// The flat key, `index.refresh_interval`.
    pub key: String,
    /// The index's value (none: not set on the index).
    pub from: Option<String>,
    /// The configured value.
    pub to: String,
    /// Changed in place (`PUT _settings`); otherwise only a new index has it.
    pub dynamic: bool,
}

impl SettingChange {
    /// `index.refresh_interval 1s → 5s`.
    pub fn describe(&self) -> String {
        format!("{} {} → {}", self.key, self.from.as_deref().unwrap_or("(unset)"), self.to)
    }
}

/// How an existing index's settings and aliases compare with the configured ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexSetup {
    /// Configured settings whose value differs.
    pub settings: Vec<SettingChange>,
    /// The configured alias, when the index does not have it.
    pub missing_alias: Option<String>,
}

impl EsSink {
    /// `index` (or the index the alias `index` points to) compared with the configured
    /// `settings` and `alias`; none when there is no such index.
    pub async fn index_setup(&self, index: &str, settings: Option<&serde_json::Value>, alias: Option<&str>) -> EsResult<Option<IndexSetup>> {
        let Some((_, existing)) =
            self.read_keyed(&format!("read the settings of \"{index}\""), &format!("/{index}/_settings?flat_settings=true"), "settings").await?
        else {
            return Ok(None);
        };
        let existing: BTreeMap<String, String> = existing.as_object().into_iter().flatten().map(|(k, v)| (k.clone(), setting_text(v))).collect();
        let settings = wanted_settings(settings)
            .into_iter()
            .filter_map(|(key, to)| {
                let from = existing.get(&key).cloned();
                (from.as_deref() != Some(to.as_str())).then(|| SettingChange { dynamic: is_dynamic(&key), key, from, to })
            })
            .collect();
        let mut missing_alias = None;
        if let Some(alias) = alias {
            let aliases = self.read_keyed(&format!("read the aliases of \"{index}\""), &format!("/{index}/_alias"), "aliases").await?;
            let has = aliases.as_ref().is_some_and(|(_, a)| a.get(alias).is_some());
            missing_alias = (!has).then(|| alias.to_string());
        }
        Ok(Some(IndexSetup { settings, missing_alias }))
    }

    /// Sets the `changes` (dynamic ones) on `index` (or the index its alias points to), with
    /// their values as configured in `settings`.
    pub async fn put_settings(&self, index: &str, settings: &serde_json::Value, changes: &[SettingChange]) -> EsResult<()> {
        let values = flat_values(settings);
        let body: serde_json::Map<String, serde_json::Value> = changes.iter().filter_map(|c| Some((c.key.clone(), values.get(&c.key)?.clone()))).collect();
        let body = serde_json::to_vec(&body).expect("serialising JSON");
        let what = format!("change the settings of \"{index}\"");
        replied(self.send_expecting(&what, Method::Put, &format!("/{index}/_settings"), Some(&body), &[]).await?, &what).map(drop)
    }

    /// Adds `alias` to the concrete index behind `index`.
    pub async fn add_alias(&self, index: &str, alias: &str) -> EsResult<()> {
        let what = format!("add alias \"{alias}\" to \"{index}\"");
        let Some((concrete, _)) = self.read_keyed(&what, &format!("/{index}/_alias"), "aliases").await? else {
            return Err(EsError::BadReply { what, reason: "the index is gone".into() });
        };
        let body = serde_json::to_vec(&serde_json::json!({ "actions": [{ "add": { "index": concrete, "alias": alias } }] })).expect("serialising JSON");
        replied(self.send_expecting(&what, Method::Post, "/_aliases", Some(&body), &[]).await?, &what).map(drop)
    }

    /// A GET whose reply is keyed by the concrete index: its name and its `field`; none on 404.
    async fn read_keyed(&self, what: &str, path: &str, field: &str) -> EsResult<Option<(String, serde_json::Value)>> {
        let reply = replied(self.send(what, Method::Get, path, None).await?, what)?;
        if reply.status == 404 {
            return Ok(None);
        }
        expect_success(&reply, what, &[])?;
        let bad = |reason: String| EsError::BadReply { what: what.into(), reason };
        let body: serde_json::Value = serde_json::from_slice(&reply.body).map_err(|e| bad(e.to_string()))?;
        let (concrete, value) = body.as_object().and_then(|o| o.iter().next()).ok_or_else(|| bad("no index in the reply".into()))?;
        Ok(Some((concrete.clone(), value.get(field).cloned().unwrap_or_default())))
    }
}

/// The configured settings as flat `index.…` keys and their values as the server shows them.
fn wanted_settings(settings: Option<&serde_json::Value>) -> BTreeMap<String, String> {
    settings.map(flat_values).unwrap_or_default().into_iter().map(|(k, v)| (k, setting_text(&v))).collect()
}

/// The settings as flat `index.…` keys (however nested or prefixed they were given).
fn flat_values(settings: &serde_json::Value) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    flatten(settings, "", &mut out);
    out.into_iter().map(|(k, v)| (if k.starts_with("index.") { k } else { format!("index.{k}") }, v)).collect()
}

fn flatten(value: &serde_json::Value, prefix: &str, out: &mut BTreeMap<String, serde_json::Value>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                flatten(value, &if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") }, out);
            }
        }
        serde_json::Value::Null => {}
        leaf => {
            out.insert(prefix.to_string(), leaf.clone());
        }
    }
}

/// A setting's value as text: settings replies give numbers and booleans as strings.
fn setting_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => format!("[{}]", items.iter().map(setting_text).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

fn is_dynamic(key: &str) -> bool {
    let key = key.strip_prefix("index.").unwrap_or(key);
    DYNAMIC.contains(&key) || DYNAMIC_PREFIXES.iter().any(|p| key.starts_with(p))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn configured_settings_are_compared_by_flat_key_whatever_their_shape() {
        let wanted = json!({ "number_of_replicas": 0, "index": { "refresh_interval": "5s" }, "index.number_of_shards": 2,
            "analysis": { "analyzer": { "a": { "type": "custom", "filter": ["lowercase", "asciifolding"] } } } });
        let flat = wanted_settings(Some(&wanted));
        assert_eq!(flat["index.number_of_replicas"], "0");
        assert_eq!(flat["index.refresh_interval"], "5s");
        assert_eq!(flat["index.number_of_shards"], "2");
        assert_eq!(flat["index.analysis.analyzer.a.filter"], "[lowercase, asciifolding]");
        assert_eq!(flat.len(), 5);
    }

    #[test]
    fn only_settings_an_open_index_can_change_are_dynamic() {
        for key in ["index.number_of_replicas", "index.refresh_interval", "index.blocks.write", "index.routing.allocation.include._tier_preference"] {
            assert!(is_dynamic(key), "{key}");
        }
        for key in ["index.number_of_shards", "index.analysis.analyzer.a.type", "index.codec", "index.sort.field", "index.mapping.coerce"] {
            assert!(!is_dynamic(key), "{key}");
        }
    }
}
