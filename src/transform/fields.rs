//! Field rules applied to every document, in the copy and the stream alike: keep only some
//! fields, drop some, rename some, add constant or derived ones, flatten nested objects. Paths are dotted; include and exclude reach into arrays of
//! documents (`items.sku` applies to every element of `items`).

use serde_json::{Map, Value};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldRules {
    /// When not empty, only these paths are kept.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// `(from, to)` pairs, applied after include and exclude, through nested objects (not arrays).
    pub rename: Vec<(String, String)>,
    /// Fields set on every document (after the renames), at dotted paths.
    pub add: Vec<(String, AddedValue)>,
    /// Nested objects become top-level keys joined by this separator (arrays stay as they are).
    pub flatten: Option<String>,
}

/// The value of an added field.
#[derive(Debug, Clone, PartialEq)]
pub enum AddedValue {
    /// The same value for every document (e.g. the namespace, resolved from the config).
    Constant(Value),
    /// The time the document was converted, RFC 3339 with milliseconds.
    SyncedAt,
    /// `db.collection`, `db` or `collection` of the document's collection: settings written
    /// for many collections hold these, and [`FieldRules::for_namespace`] makes them constants.
    Namespace,
    Database,
    Collection,
}

impl FieldRules {
    pub fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty() && self.rename.is_empty() && self.add.is_empty() && self.flatten.is_none()
    }

    /// These rules for the collection `ns`: its name parts become constants.
    pub fn for_namespace(&self, ns: &crate::config::Namespace) -> FieldRules {
        let add = self
            .add
            .iter()
            .map(|(path, value)| {
                let value = match value {
                    AddedValue::Namespace => AddedValue::Constant(ns.to_string().into()),
                    AddedValue::Database => AddedValue::Constant(ns.db.clone().into()),
                    AddedValue::Collection => AddedValue::Constant(ns.coll.clone().into()),
                    other => other.clone(),
                };
                (path.clone(), value)
            })
            .collect();
        FieldRules { add, ..self.clone() }
    }

    pub fn apply(&self, source: &mut Map<String, Value>) {
        self.apply_at(source, mongodb::bson::DateTime::now());
    }

    /// [`Self::apply`] with `now` as the conversion time (`$syncedAt`).
    pub(crate) fn apply_at(&self, source: &mut Map<String, Value>, now: mongodb::bson::DateTime) {
        if !self.include.is_empty() {
            let paths: Vec<Vec<&str>> = self.include.iter().map(|p| p.split('.').collect()).collect();
            let kept = keep(&Value::Object(std::mem::take(source)), &paths.iter().map(|p| p.as_slice()).collect::<Vec<_>>());
            if let Value::Object(map) = kept {
                *source = map;
            }
        }
        for path in &self.exclude {
            remove(source, &path.split('.').collect::<Vec<_>>());
        }
        for (from, to) in &self.rename {
            if let Some(value) = take(source, &from.split('.').collect::<Vec<_>>()) {
                put(source, &to.split('.').collect::<Vec<_>>(), value);
            }
        }
        if !self.add.is_empty() {
            for (path, value) in &self.add {
                let value = match value {
                    AddedValue::Constant(v) => v.clone(),
                    AddedValue::SyncedAt => Value::String(now.try_to_rfc3339_string().unwrap_or_default()),
                    // Every collection's rules went through `for_namespace` before it runs.
                    AddedValue::Namespace | AddedValue::Database | AddedValue::Collection => continue,
                };
                put(source, &path.split('.').collect::<Vec<_>>(), value);
            }
        }
        if let Some(separator) = &self.flatten {
            let nested = std::mem::take(source);
            flatten_into(source, "", separator, nested);
        }
    }
}

/// Moves the fields of `map` into `out`, nested objects as `prefix<sep>key` keys.
fn flatten_into(out: &mut Map<String, Value>, prefix: &str, separator: &str, map: Map<String, Value>) {
    for (key, value) in map {
        let name = if prefix.is_empty() { key } else { format!("{prefix}{separator}{key}") };
        match value {
            Value::Object(child) if !child.is_empty() => flatten_into(out, &name, separator, child),
            other => {
                out.insert(name, other);
            }
        }
    }
}

/// The parts of `value` that the paths reach; an empty path keeps everything below it.
fn keep(value: &Value, paths: &[&[&str]]) -> Value {
    if paths.iter().any(|p| p.is_empty()) {
        return value.clone();
    }
    match value {
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, child) in map {
                let tails: Vec<&[&str]> = paths.iter().filter(|p| p[0] == key).map(|p| &p[1..]).collect();
                if tails.is_empty() {
                    continue;
                }
                let kept = keep(child, &tails);
                // A path into a scalar reaches nothing: the field goes.
                if tails.iter().any(|t| t.is_empty()) || kept.is_object() || kept.is_array() {
                    out.insert(key.clone(), kept);
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|item| keep(item, paths)).collect()),
        _ => Value::Null,
    }
}

fn remove(map: &mut Map<String, Value>, path: &[&str]) {
    match path {
        [] => {}
        [last] => {
            // Not `remove`: with serde_json's preserve_order it swaps the last field into the gap.
            map.shift_remove(*last);
        }
        [first, rest @ ..] => match map.get_mut(*first) {
            Some(Value::Object(child)) => remove(child, rest),
            Some(Value::Array(items)) => {
                for item in items {
                    if let Value::Object(child) = item {
                        remove(child, rest);
                    }
                }
            }
            _ => {}
        },
    }
}

fn take(map: &mut Map<String, Value>, path: &[&str]) -> Option<Value> {
    match path {
        [] => None,
        [last] => map.shift_remove(*last),
        [first, rest @ ..] => match map.get_mut(*first) {
            Some(Value::Object(child)) => take(child, rest),
            _ => None,
        },
    }
}

fn put(map: &mut Map<String, Value>, path: &[&str], value: Value) {
    match path {
        [] => {}
        [last] => {
            map.insert((*last).to_string(), value);
        }
        [first, rest @ ..] => {
            let child = map.entry((*first).to_string()).or_insert_with(|| Value::Object(Map::new()));
            if !child.is_object() {
                *child = Value::Object(Map::new());
            }
            if let Value::Object(child) = child {
                put(child, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apply(rules: FieldRules, doc: Value) -> Value {
        let Value::Object(mut map) = doc else { unreachable!() };
        rules.apply(&mut map);
        Value::Object(map)
    }

    #[test]
    fn include_keeps_only_the_paths_also_inside_arrays() {
        let rules = FieldRules { include: vec!["name".into(), "items.sku".into(), "meta.a".into()], ..Default::default() };
        let out =
            apply(rules, json!({"name": "n", "secret": 1, "items": [{"sku": "a", "price": 1}, {"sku": "b"}], "meta": {"a": 1, "b": 2}, "scalar": {"x": 1}}));
        assert_eq!(out, json!({"name": "n", "items": [{"sku": "a"}, {"sku": "b"}], "meta": {"a": 1}}));
    }

    #[test]
    fn exclude_removes_paths_also_inside_arrays() {
        let rules = FieldRules { exclude: vec!["password".into(), "items.cost".into(), "a.b.c".into()], ..Default::default() };
        let out = apply(rules, json!({"password": "x", "items": [{"sku": "a", "cost": 1}], "a": {"b": {"c": 1, "d": 2}}}));
        assert_eq!(out, json!({"items": [{"sku": "a"}], "a": {"b": {"d": 2}}}));
    }

    #[test]
    fn exclude_and_rename_keep_the_order_of_the_other_fields() {
        let rules = FieldRules { exclude: vec!["a".into(), "x.p".into()], rename: vec![("b".into(), "z".into())], ..Default::default() };
        let out = apply(rules, json!({"a": 1, "b": 2, "c": 3, "x": {"p": 1, "q": 2, "r": 3}, "d": 4}));
        let text = serde_json::to_string(&out).unwrap();
        assert_eq!(text, r#"{"c":3,"x":{"q":2,"r":3},"d":4,"z":2}"#);
    }

    #[test]
    fn rename_moves_values_between_dotted_paths() {
        let rules = FieldRules {
            rename: vec![("user.email".into(), "email".into()), ("n".into(), "stats.count".into()), ("missing".into(), "x".into())],
            ..Default::default()
        };
        let out = apply(rules, json!({"user": {"email": "e", "id": 1}, "n": 3}));
        assert_eq!(out, json!({"user": {"id": 1}, "email": "e", "stats": {"count": 3}}));
    }

    #[test]
    fn added_fields_then_flattening() {
        let rules = FieldRules {
            add: vec![("meta.source".into(), AddedValue::Constant(json!("shop.orders"))), ("syncedAt".into(), AddedValue::SyncedAt)],
            flatten: Some("_".into()),
            ..Default::default()
        };
        let out = apply(rules, json!({"a": {"b": {"c": 1}, "d": [{"e": 1}]}, "empty": {}, "n": 2}));
        let synced = out["syncedAt"].as_str().unwrap().to_string();
        assert!(synced.ends_with('Z') && synced.len() >= 20, "{synced}");
        assert_eq!(out, json!({"a_b_c": 1, "a_d": [{"e": 1}], "empty": {}, "n": 2, "meta_source": "shop.orders", "syncedAt": synced}));
    }
}
