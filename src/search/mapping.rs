//! An index mapping flattened to dotted paths, with what each field allows.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// What a field's mapped type allows in `where` and `sort`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Analysed text: matched through its `.keyword` sub-field when there is one; not sortable.
    Text,
    Keyword,
    Integer,
    Float,
    Date,
    Boolean,
    /// An object or nested field: not a leaf, cannot be matched directly.
    Object,
    /// Any other type (geo, ip, binary…): matched as given.
    Other,
}

impl FieldKind {
    fn of(es_type: &str) -> FieldKind {
        match es_type {
            "text" | "match_only_text" => FieldKind::Text,
            "keyword" | "constant_keyword" | "wildcard" => FieldKind::Keyword,
            "long" | "integer" | "short" | "byte" | "unsigned_long" => FieldKind::Integer,
            "double" | "float" | "half_float" | "scaled_float" => FieldKind::Float,
            "date" | "date_nanos" => FieldKind::Date,
            "boolean" => FieldKind::Boolean,
            "object" | "nested" => FieldKind::Object,
            _ => FieldKind::Other,
        }
    }
}

/// One field of the mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldInfo {
    /// Dotted path, e.g. `address.city` or `title.keyword` (a multi-field).
    pub name: String,
    /// The mapped type, as the server names it.
    #[serde(rename = "type")]
    pub es_type: String,
    /// A multi-field (`title.keyword`): searchable, but not a field of the documents.
    #[serde(rename = "subField")]
    pub sub_field: bool,
}

impl FieldInfo {
    pub fn kind(&self) -> FieldKind {
        FieldKind::of(&self.es_type)
    }
}

/// The fields of an index (or of the indices behind an alias), by dotted path.
#[derive(Debug, Clone, Default)]
pub struct Fields(BTreeMap<String, FieldInfo>);

impl Fields {
    /// From a `GET /<index>/_mapping` reply (keyed by concrete index; several behind an alias).
    pub fn from_mapping_reply(reply: &Value) -> Fields {
        let mut fields = BTreeMap::new();
        for index in reply.as_object().into_iter().flat_map(|o| o.values()) {
            if let Some(properties) = index.pointer("/mappings/properties") {
                collect(properties, "", &mut fields);
            }
        }
        Fields(fields)
    }

    pub fn get(&self, path: &str) -> Option<&FieldInfo> {
        self.0.get(path)
    }

    /// The multi-fields of `path` (`title.keyword` of `title`).
    pub fn list_sub_fields<'a>(&'a self, path: &'a str) -> impl Iterator<Item = &'a FieldInfo> + 'a {
        self.0.values().filter(move |f| f.sub_field && f.name.strip_prefix(path).is_some_and(|rest| rest.starts_with('.') && !rest[1..].contains('.')))
    }

    /// Every field, sorted by path.
    pub fn list(&self) -> Vec<FieldInfo> {
        self.0.values().cloned().collect()
    }

    /// The document fields (leaves, not multi-fields) `includes`/`excludes` select, by the
    /// rules of `_source` filtering (a path selects itself and what is under it; `*` wildcards).
    pub fn selected(&self, includes: Option<&[String]>, excludes: &[String]) -> Vec<String> {
        let matches = |patterns: &[String], path: &str| patterns.iter().any(|p| path_matches(p, path));
        self.0
            .values()
            .filter(|f| !f.sub_field && f.kind() != FieldKind::Object)
            .filter(|f| includes.is_none_or(|inc| matches(inc, &f.name)) && !matches(excludes, &f.name))
            .map(|f| f.name.clone())
            .collect()
    }
}

fn collect(properties: &Value, prefix: &str, out: &mut BTreeMap<String, FieldInfo>) {
    for (name, def) in properties.as_object().into_iter().flatten() {
        let path = format!("{prefix}{name}");
        let es_type = def.get("type").and_then(Value::as_str).unwrap_or(if def.get("properties").is_some() { "object" } else { "unknown" });
        out.insert(path.clone(), FieldInfo { name: path.clone(), es_type: es_type.to_string(), sub_field: false });
        if let Some(children) = def.get("properties") {
            collect(children, &format!("{path}."), out);
        }
        for (sub, sub_def) in def.get("fields").and_then(Value::as_object).into_iter().flatten() {
            let sub_type = sub_def.get("type").and_then(Value::as_str).unwrap_or("unknown").to_string();
            let name = format!("{path}.{sub}");
            out.insert(name.clone(), FieldInfo { name, es_type: sub_type, sub_field: true });
        }
    }
}

/// Whether a `_source` pattern (`a.b`, `a.*`, `*name`) selects `path` or an object above it.
fn path_matches(pattern: &str, path: &str) -> bool {
    if !pattern.contains('*') {
        return path == pattern || path.starts_with(&format!("{pattern}."));
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !path.starts_with(first) {
        return false;
    }
    let mut rest = &path[first.len()..];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last) || rest.contains(&format!("{last}."))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sample() -> Fields {
        Fields::from_mapping_reply(&json!({ "idx": { "mappings": { "properties": {
            "n": { "type": "long" },
            "title": { "type": "text", "fields": { "keyword": { "type": "keyword", "ignore_above": 256 } } },
            "address": { "properties": { "city": { "type": "keyword" }, "geo": { "properties": { "lat": { "type": "double" } } } } },
            "at": { "type": "date" }
        } } } }))
    }

    #[test]
    fn flattens_objects_and_multi_fields_to_dotted_paths() {
        let f = sample();
        let names: Vec<_> = f.list().into_iter().map(|f| (f.name, f.es_type, f.sub_field)).collect();
        assert_eq!(
            names,
            vec![
                ("address".into(), "object".into(), false),
                ("address.city".into(), "keyword".into(), false),
                ("address.geo".into(), "object".into(), false),
                ("address.geo.lat".into(), "double".into(), false),
                ("at".into(), "date".into(), false),
                ("n".into(), "long".into(), false),
                ("title".into(), "text".into(), false),
                ("title.keyword".into(), "keyword".into(), true),
            ]
        );
        assert_eq!(f.get("address.geo.lat").map(FieldInfo::kind), Some(FieldKind::Float));
    }

    #[test]
    fn selected_fields_follow_source_filtering() {
        let f = sample();
        assert_eq!(f.selected(None, &[]), vec!["address.city", "address.geo.lat", "at", "n", "title"]);
        assert_eq!(f.selected(Some(&["address".into()]), &["address.geo".into()]), vec!["address.city"]);
        assert_eq!(f.selected(Some(&["a*".into()]), &[]), vec!["address.city", "address.geo.lat", "at"]);
        assert_eq!(f.selected(None, &["*.lat".into(), "title".into()]), vec!["address.city", "at", "n"]);
    }
}
