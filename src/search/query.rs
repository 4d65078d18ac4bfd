//! The checked request against the index's fields, and the server query built from it.

use serde_json::{json, Map, Value};

use super::error::{SearchError, SearchResult};
use super::mapping::{FieldInfo, FieldKind, Fields};
use super::model::{Condition, SortKey, SortOrder};

/// The key added after the caller's sort so that every document has a unique position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tiebreaker {
    /// Within a point in time: the server's own cheap, unique key.
    ShardDoc,
    /// Without one (offset pages, servers without point in time): the document id.
    Id,
    /// Offset pages on Elasticsearch, which no longer sorts on `_id`: index order.
    Doc,
}

impl Tiebreaker {
    pub fn clause(self) -> Value {
        match self {
            Tiebreaker::ShardDoc => json!({ "_shard_doc": "asc" }),
            Tiebreaker::Id => json!({ "_id": "asc" }),
            Tiebreaker::Doc => json!({ "_doc": "asc" }),
        }
    }
}

/// The field `path` names, or an input error that says what fields there are.
fn field<'a>(fields: &'a Fields, at: &str, path: &str) -> SearchResult<&'a FieldInfo> {
    fields.get(path).ok_or_else(|| SearchError::input(format!("{at}: unknown field \"{path}\" (GET the index's fields for the list)")))
}

/// A `keyword` multi-field of a text field, which exact matches and sorting use.
fn keyword_of<'a>(fields: &'a Fields, text: &'a FieldInfo) -> Option<&'a FieldInfo> {
    fields.list_sub_fields(&text.name).find(|f| f.kind() == FieldKind::Keyword)
}

/// The server query for the `where` conditions: a filter of one clause per field.
pub fn build_query(conditions: &[(String, Condition)], fields: &Fields) -> SearchResult<Value> {
    if conditions.is_empty() {
        return Ok(json!({ "match_all": {} }));
    }
    let clauses = conditions.iter().map(|(path, condition)| clause(fields, path, condition)).collect::<SearchResult<Vec<_>>>()?;
    Ok(json!({ "bool": { "filter": clauses } }))
}

fn clause(fields: &Fields, path: &str, condition: &Condition) -> SearchResult<Value> {
    let at = format!("where.{path}");
    let info = field(fields, &at, path)?;
    if info.kind() == FieldKind::Object {
        return Err(SearchError::input(format!("{at}: \"{path}\" is an object; match one of its fields (\"{path}.<field>\")")));
    }
    let values: Vec<&Value> = match condition {
        Condition::Exact(v) => vec![v],
        Condition::AnyOf(vs) => vs.iter().collect(),
        Condition::Range(r) => r.values().collect(),
    };
    for value in values {
        check_value(&at, info, value)?;
    }
    let target = match info.kind() {
        FieldKind::Text => keyword_of(fields, info),
        _ => Some(info),
    };
    Ok(match (condition, target) {
        (Condition::Exact(v), Some(t)) => json!({ "term": { t.name.clone(): v } }),
        (Condition::AnyOf(vs), Some(t)) => json!({ "terms": { t.name.clone(): vs } }),
        (Condition::Range(r), Some(t)) => json!({ "range": { t.name.clone(): r } }),
        // Text without a keyword sub-field: the phrase, as analysed.
        (Condition::Exact(v), None) => json!({ "match_phrase": { path: v } }),
        (Condition::AnyOf(vs), None) => {
            let any: Vec<_> = vs.iter().map(|v| json!({ "match_phrase": { path: v } })).collect();
            json!({ "bool": { "should": any, "minimum_should_match": 1 } })
        }
        (Condition::Range(_), None) => return Err(SearchError::input(format!("{at}: \"{path}\" is analysed text without a keyword sub-field: no ranges"))),
    })
}

/// A value the field's type can hold. Integers may be given as strings of digits, which keeps
/// Int64 values past 2^53 exact for callers whose numbers are doubles.
fn check_value(at: &str, info: &FieldInfo, value: &Value) -> SearchResult<()> {
    let wrong = |expected: &str| Err(SearchError::input(format!("{at}: \"{}\" is {}; expected {expected} (got {value})", info.name, info.es_type)));
    let unsigned = info.es_type == "unsigned_long";
    match (info.kind(), value) {
        (FieldKind::Integer, Value::Number(n)) if n.is_i64() || (unsigned && n.is_u64()) => Ok(()),
        (FieldKind::Integer, Value::String(s)) if s.parse::<i64>().is_ok() || (unsigned && s.parse::<u64>().is_ok()) => Ok(()),
        (FieldKind::Integer, _) => wrong("a 64-bit integer (or a string of its digits)"),
        (FieldKind::Float, Value::Number(_)) => Ok(()),
        (FieldKind::Float, Value::String(s)) if s.parse::<f64>().is_ok() => Ok(()),
        (FieldKind::Float, _) => wrong("a number"),
        (FieldKind::Boolean, Value::Bool(_)) => Ok(()),
        (FieldKind::Boolean, Value::String(s)) if s == "true" || s == "false" => Ok(()),
        (FieldKind::Boolean, _) => wrong("true or false"),
        (FieldKind::Date, Value::String(_)) => Ok(()),
        (FieldKind::Date, Value::Number(n)) if n.is_i64() => Ok(()),
        (FieldKind::Date, _) => wrong("an ISO-8601 date string or milliseconds since the epoch"),
        _ => Ok(()),
    }
}

/// The caller's sort keys as server sort clauses (text fields through their keyword sub-field).
pub fn build_sort(keys: &[SortKey], fields: &Fields) -> SearchResult<Vec<Value>> {
    keys.iter()
        .enumerate()
        .map(|(i, key)| {
            let at = format!("sort[{i}]");
            let info = field(fields, &at, &key.field)?;
            let target = match info.kind() {
                FieldKind::Object => return Err(SearchError::input(format!("{at}: \"{}\" is an object; sort by one of its fields", key.field))),
                FieldKind::Text => keyword_of(fields, info)
                    .ok_or_else(|| SearchError::input(format!("{at}: \"{}\" is analysed text without a keyword sub-field: it cannot be sorted", key.field)))?,
                _ => info,
            };
            let order = if key.order == SortOrder::Desc { "desc" } else { "asc" };
            Ok(json!({ target.name.clone(): { "order": order } }))
        })
        .collect()
}

/// `fields`/`exclude` entries without wildcards must name fields of the index (a typo would
/// otherwise select nothing, silently).
pub fn check_source_fields(name: &str, patterns: &[String], fields: &Fields) -> SearchResult<()> {
    for (i, p) in patterns.iter().enumerate().filter(|(_, p)| !p.contains('*')) {
        field(fields, &format!("{name}[{i}]"), p)?;
    }
    Ok(())
}

/// `_source` filtering for `fields` and `exclude`.
pub fn source_filter(includes: Option<&[String]>, excludes: &[String]) -> Value {
    let mut source = Map::new();
    if let Some(includes) = includes {
        source.insert("includes".into(), json!(includes));
    }
    if !excludes.is_empty() {
        source.insert("excludes".into(), json!(excludes));
    }
    if source.is_empty() {
        Value::Bool(true)
    } else {
        Value::Object(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::model::{PageLimits, SearchRequest};

    fn fields() -> Fields {
        Fields::from_mapping_reply(&json!({ "idx": { "mappings": { "properties": {
            "n": { "type": "long" }, "price": { "type": "double" }, "ok": { "type": "boolean" }, "at": { "type": "date" },
            "title": { "type": "text", "fields": { "keyword": { "type": "keyword" } } },
            "body": { "type": "text" },
            "address": { "properties": { "city": { "type": "keyword" } } }
        } } } }))
    }

    fn query_of(request: Value) -> SearchResult<Value> {
        let request = SearchRequest::from_json(request)?;
        request.check(PageLimits::default())?;
        build_query(&request.conditions()?, &fields())
    }

    #[test]
    fn where_forms_become_filters() {
        let q = query_of(json!({ "index": "i", "where": {
            "address.city": "Oslo", "n": [1, "9007199254740993"], "at": { "gte": "2024-01-01T00:00:00.000Z", "lt": 1735689600000_i64 },
            "title": "Hello", "body": ["a b", "c"]
        } }))
        .unwrap();
        assert_eq!(
            q,
            json!({ "bool": { "filter": [
                { "term": { "address.city": "Oslo" } },
                { "terms": { "n": [1, "9007199254740993"] } },
                { "range": { "at": { "gte": "2024-01-01T00:00:00.000Z", "lt": 1735689600000_i64 } } },
                { "term": { "title.keyword": "Hello" } },
                { "bool": { "should": [{ "match_phrase": { "body": "a b" } }, { "match_phrase": { "body": "c" } }], "minimum_should_match": 1 } }
            ] } })
        );
        assert_eq!(query_of(json!({ "index": "i" })).unwrap(), json!({ "match_all": {} }));
    }

    #[test]
    fn int64_values_past_2_pow_53_stay_exact() {
        let q = query_of(json!({ "index": "i", "where": { "n": 9_007_199_254_740_993_i64 } })).unwrap();
        assert_eq!(serde_json::to_string(&q).unwrap(), r#"{"bool":{"filter":[{"term":{"n":9007199254740993}}]}}"#);
    }

    #[test]
    fn fields_and_values_are_checked_against_the_mapping() {
        let cases = [
            (json!({ "nope": 1 }), "where.nope: unknown field \"nope\""),
            (json!({ "address": "x" }), "is an object"),
            (json!({ "n": 1.5 }), "\"n\" is long; expected a 64-bit integer"),
            (json!({ "n": "12a" }), "expected a 64-bit integer"),
            (json!({ "n": "99999999999999999999" }), "expected a 64-bit integer"),
            (json!({ "n": 18_446_744_073_709_551_615_u64 }), "expected a 64-bit integer"),
            (json!({ "price": "cheap" }), "expected a number"),
            (json!({ "ok": 1 }), "expected true or false"),
            (json!({ "at": true }), "expected an ISO-8601 date"),
            (json!({ "body": { "gte": "a" } }), "without a keyword sub-field: no ranges"),
        ];
        for (filter, expected) in cases {
            match query_of(json!({ "index": "i", "where": filter })) {
                Err(SearchError::Input(m)) => assert!(m.contains(expected), "{filter}: {m:?} lacks {expected:?}"),
                other => panic!("{filter}: expected an input error, got {other:?}"),
            }
        }
    }

    #[test]
    fn sort_uses_keyword_sub_fields_and_refuses_what_cannot_sort() {
        let keys = |v: Value| SearchRequest::from_json(json!({ "index": "i", "sort": v })).unwrap().sort.unwrap();
        let sort = build_sort(&keys(json!(["-n", "title", { "field": "address.city", "order": "desc" }])), &fields()).unwrap();
        assert_eq!(
            sort,
            vec![json!({ "n": { "order": "desc" } }), json!({ "title.keyword": { "order": "asc" } }), json!({ "address.city": { "order": "desc" } })]
        );
        assert!(matches!(build_sort(&keys(json!(["body"])), &fields()), Err(SearchError::Input(m)) if m.contains("cannot be sorted")));
        assert!(matches!(build_sort(&keys(json!(["zzz"])), &fields()), Err(SearchError::Input(m)) if m.contains("sort[0]: unknown field")));
        assert_eq!(Tiebreaker::ShardDoc.clause(), json!({ "_shard_doc": "asc" }));
    }

    #[test]
    fn source_filtering() {
        assert_eq!(source_filter(None, &[]), json!(true));
        assert_eq!(source_filter(Some(&["a".into()]), &["a.b".into()]), json!({ "includes": ["a"], "excludes": ["a.b"] }));
        assert!(check_source_fields("fields", &["n".into(), "addr*".into()], &fields()).is_ok());
        assert!(matches!(check_source_fields("exclude", &["x".into()], &fields()), Err(SearchError::Input(m)) if m.starts_with("exclude[0]: unknown field")));
    }
}
