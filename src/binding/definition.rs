//! Definition files: one or more syncs by name, `{ version?: 1, syncs: { <name>: <options> } }`,
//! each checked with the strict options parser; errors name the path from the file's root
//! (`syncs.orders.collections[0].index: …`).

use napi::bindgen_prelude::*;
use napi_derive::napi;
use serde::Deserialize;

use super::error::js_error;
use super::options::{kind_of, sync_config};
use super::parse::parse;
use crate::error::{SyncError, SyncResult};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Definition {
    /// The schema's version (1).
    version: Option<u32>,
    /// The syncs, by name (their checkpoint name).
    syncs: serde_json::Map<String, serde_json::Value>,
}

/// The names of the definition's syncs, once every one is valid.
pub fn definition_names(definition: serde_json::Value) -> SyncResult<Vec<String>> {
    if !definition.is_object() {
        return Err(SyncError::config(format!("definition: must be an object with `syncs`, not {}", kind_of(&definition))));
    }
    let definition: Definition = parse(definition)?;
    if let Some(v) = definition.version.filter(|v| *v != 1) {
        return Err(SyncError::config(format!("version: {v} is not a known version (1)")));
    }
    if definition.syncs.is_empty() {
        return Err(SyncError::config("syncs: defines no sync"));
    }
    let mut names = Vec::new();
    for (name, options) in definition.syncs {
        let options = sync_options(&name, options)?;
        sync_config(options).map_err(|e| SyncError::config(format!("syncs.{name}.{}", e.message)))?;
        names.push(name);
    }
    Ok(names)
}

/// A sync's options with its name (the key, unless the options give the same one); errors name
/// the path from the definition's root.
fn sync_options(name: &str, mut options: serde_json::Value) -> SyncResult<serde_json::Value> {
    let serde_json::Value::Object(map) = &mut options else { return Err(SyncError::config(format!("syncs.{name}: must be an object of options"))) };
    match map.get("name") {
        None => {
            map.insert("name".into(), name.into());
        }
        Some(serde_json::Value::String(given)) if given == name => {}
        Some(_) => return Err(SyncError::config(format!("syncs.{name}.name: must be the sync's key \"{name}\" (or left out)"))),
    }
    Ok(options)
}

/// Checks a definition (the parsed file) and returns its syncs' names; throws `ERR_CONFIG`
/// naming the path of what is wrong.
#[napi]
#[cfg_attr(test, allow(dead_code))] // called from JS
pub fn validate_definition(env: Env, #[napi(ts_arg_type = "unknown")] definition: Unknown) -> Result<Vec<String>> {
    let value = unsafe { serde_json::Value::from_napi_value(env.raw(), definition.raw()) }
        .map_err(|e| js_error(&env, &SyncError::config(format!("invalid definition: {}", e.reason))))?;
    definition_names(value).map_err(|e| js_error(&env, &e))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sync() -> serde_json::Value {
        json!({ "mongo": { "uri": "mongodb://h/?replicaSet=rs" }, "elasticsearch": { "node": "http://h:9200" }, "collections": ["shop.orders"] })
    }

    #[test]
    fn a_definition_that_is_not_an_object_is_named_as_such() {
        // Found by the config_options fuzz target: the message named no path.
        for (tree, kind) in [(json!("n"), "a string"), (json!([1]), "an array"), (json!(null), "null")] {
            let message = definition_names(tree).expect_err("refused").message;
            assert_eq!(message, format!("definition: must be an object with `syncs`, not {kind}"));
        }
    }

    #[test]
    fn every_sync_is_checked_and_errors_name_the_path_from_the_root() {
        assert_eq!(definition_names(json!({ "version": 1, "syncs": { "a": sync(), "b": sync() } })).unwrap(), ["a", "b"]);
        let mut bad = sync();
        bad["collections"] = json!([{ "namespace": "shop.orders", "indx": "x" }]);
        let err = definition_names(json!({ "syncs": { "a": sync(), "b": bad } })).unwrap_err();
        assert_eq!(err.message, "syncs.b.collections[0].indx: unknown option, did you mean `index`?");
        assert_eq!(definition_names(json!({ "sync": {} })).unwrap_err().message, "sync: unknown option, did you mean `syncs`?");
        assert_eq!(definition_names(json!({ "version": 2, "syncs": { "a": sync() } })).unwrap_err().message, "version: 2 is not a known version (1)");
        let mut named = sync();
        named["name"] = json!("other");
        assert_eq!(definition_names(json!({ "syncs": { "a": named } })).unwrap_err().message, "syncs.a.name: must be the sync's key \"a\" (or left out)");
        assert_eq!(definition_names(json!({ "syncs": {} })).unwrap_err().message, "syncs: defines no sync");
    }

    /// Found while writing the fuzz target `config_options` (whose check, a path before a colon,
    /// its seed `def-json-5` fails without the fix): a sync that is not an object was reported
    /// as "syncs.a.must be an object of options".
    #[test]
    fn a_sync_that_is_not_an_object_is_named_by_its_path() {
        assert_eq!(definition_names(json!({ "syncs": { "a": [] } })).unwrap_err().message, "syncs.a: must be an object of options");
    }
}
