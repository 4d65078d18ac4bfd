//! The search request as callers give it, and its checks that need no server: shapes, limits,
//! names. [`query`](super::query) then checks it against the index's fields and builds the
//! server's query.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::{SearchError, SearchResult};

/// Fields in `where`, values in one list, entries in `fields`/`exclude`, sort keys: at most this.
pub const MAX_WHERE_FIELDS: usize = 64;
pub const MAX_LIST_VALUES: usize = 1024;
pub const MAX_FIELD_PATTERNS: usize = 256;
pub const MAX_SORT_KEYS: usize = 8;
/// Longest field path or string value.
pub const MAX_PATH_LEN: usize = 256;
pub const MAX_VALUE_LEN: usize = 8 * 1024;

/// `sync.search()`'s argument and `POST /search`'s body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// Required unless `cursor` is given (then it must be the cursor's, if given).
    #[serde(default)]
    pub index: Option<String>,
    /// Per field (dotted path): a value, a list (any of) or a range `{ gte, gt, lte, lt }`.
    #[serde(default, rename = "where")]
    pub filter: Option<Map<String, Value>>,
    /// `_source` includes (`*` wildcards allowed); all fields when absent.
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    /// `_source` excludes.
    #[serde(default)]
    pub exclude: Option<Vec<String>>,
    /// `"field"` or `"-field"` (descending) or `{ field, order: "asc" | "desc" }`.
    #[serde(default)]
    pub sort: Option<Vec<SortKey>>,
    #[serde(default)]
    pub size: Option<u64>,
    /// Offset paging: the page number, from 1.
    #[serde(default)]
    pub page: Option<u64>,
    /// Cursor paging: the `nextCursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    Asc,
    Desc,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Value")]
pub struct SortKey {
    pub field: String,
    pub order: SortOrder,
}

impl TryFrom<Value> for SortKey {
    type Error = SearchError;

    fn try_from(value: Value) -> SearchResult<Self> {
        const SHAPE: &str = "expected \"field\", \"-field\" or { field, order: \"asc\" | \"desc\" }";
        match value {
            Value::String(s) => match s.strip_prefix('-') {
                Some(field) => Ok(SortKey { field: field.to_string(), order: SortOrder::Desc }),
                None => Ok(SortKey { field: s, order: SortOrder::Asc }),
            },
            Value::Object(mut o) => {
                let field = match o.remove("field") {
                    Some(Value::String(f)) => f,
                    _ => return Err(SearchError::Input(format!("{SHAPE} (field must be a string)"))),
                };
                let order = match o.remove("order") {
                    None => SortOrder::Asc,
                    Some(order) => serde_json::from_value(order).map_err(|_| SearchError::Input(format!("{SHAPE} (order must be \"asc\" or \"desc\")")))?,
                };
                if let Some(key) = o.keys().next() {
                    return Err(SearchError::Input(format!("{SHAPE} (unknown key \"{key}\")")));
                }
                Ok(SortKey { field, order })
            }
            _ => Err(SearchError::Input(SHAPE.to_string())),
        }
    }
}

/// One `where` condition, checked for shape.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Exact(Value),
    AnyOf(Vec<Value>),
    Range(Map<String, Value>),
}

/// How many results per page, and the most a caller may ask for.
#[derive(Debug, Clone, Copy)]
pub struct PageLimits {
    pub default_size: u64,
    pub max_size: u64,
}

impl Default for PageLimits {
    fn default() -> Self {
        PageLimits { default_size: 20, max_size: 1000 }
    }
}

impl SearchRequest {
    /// From JSON, naming the path of what does not fit (`sort[1]: …`).
    pub fn from_json(value: Value) -> SearchResult<SearchRequest> {
        if !value.is_object() {
            return Err(SearchError::input("the search request must be an object"));
        }
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            SearchError::input(if path == "." { inner } else { format!("{path}: {inner}") })
        })
    }

    /// Every check that needs no server.
    pub fn check(&self, limits: PageLimits) -> SearchResult<()> {
        if let Some(size) = self.size {
            if size == 0 || size > limits.max_size {
                return Err(SearchError::input(format!("size: must be between 1 and {} (got {size})", limits.max_size)));
            }
        }
        if let Some(index) = &self.index {
            check_index_name(index)?;
        }
        if self.cursor.is_some() {
            let extra = [("where", self.filter.is_some()), ("sort", self.sort.is_some()), ("page", self.page.is_some())];
            if let Some((name, _)) = extra.iter().find(|(_, given)| *given) {
                return Err(SearchError::input(format!("{name}: not allowed with cursor (the cursor carries the query and sort)")));
            }
        } else if self.index.is_none() {
            return Err(SearchError::input("index: required (unless cursor is given)"));
        }
        if self.page == Some(0) {
            return Err(SearchError::input("page: pages are numbered from 1"));
        }
        self.conditions()?;
        for (name, list) in [("fields", &self.fields), ("exclude", &self.exclude)] {
            check_patterns(name, list.as_deref().unwrap_or_default())?;
        }
        self.check_sort()
    }

    fn check_sort(&self) -> SearchResult<()> {
        let sort = self.sort.as_deref().unwrap_or_default();
        if sort.len() > MAX_SORT_KEYS {
            return Err(SearchError::input(format!("sort: at most {MAX_SORT_KEYS} keys")));
        }
        for (i, key) in sort.iter().enumerate() {
            check_path(&format!("sort[{i}]"), &key.field, false)?;
            if sort[..i].iter().any(|k| k.field == key.field) {
                return Err(SearchError::input(format!("sort[{i}]: \"{}\" is already a sort key", key.field)));
            }
        }
        Ok(())
    }

    /// The `where` conditions by field, checked for shape.
    pub fn conditions(&self) -> SearchResult<Vec<(String, Condition)>> {
        let filter = match &self.filter {
            None => return Ok(Vec::new()),
            Some(f) => f,
        };
        if filter.len() > MAX_WHERE_FIELDS {
            return Err(SearchError::input(format!("where: at most {MAX_WHERE_FIELDS} fields")));
        }
        filter.iter().map(|(field, value)| Ok((field.clone(), condition(field, value)?))).collect()
    }
}

fn condition(field: &str, value: &Value) -> SearchResult<Condition> {
    let at = format!("where.{field}");
    check_path(&at, field, false)?;
    match value {
        Value::Array(items) => {
            if items.is_empty() || items.len() > MAX_LIST_VALUES {
                return Err(SearchError::input(format!("{at}: a list needs 1 to {MAX_LIST_VALUES} values (got {})", items.len())));
            }
            for (i, item) in items.iter().enumerate() {
                check_scalar(&format!("{at}[{i}]"), item)?;
            }
            Ok(Condition::AnyOf(items.clone()))
        }
        Value::Object(range) => {
            if range.is_empty() {
                return Err(SearchError::input(format!("{at}: a range needs at least one of gte, gt, lte, lt")));
            }
            for (key, bound) in range {
                if !["gte", "gt", "lte", "lt"].contains(&key.as_str()) {
                    return Err(SearchError::input(format!("{at}: unknown range key \"{key}\" (expected gte, gt, lte, lt)")));
                }
                check_scalar(&format!("{at}.{key}"), bound)?;
                if bound.is_boolean() {
                    return Err(SearchError::input(format!("{at}.{key}: a range bound must be a number or a string")));
                }
            }
            if range.contains_key("gt") && range.contains_key("gte") || range.contains_key("lt") && range.contains_key("lte") {
                return Err(SearchError::input(format!("{at}: give gt or gte, lt or lte, not both")));
            }
            Ok(Condition::Range(range.clone()))
        }
        other => {
            check_scalar(&at, other)?;
            Ok(Condition::Exact(other.clone()))
        }
    }
}

fn check_scalar(at: &str, value: &Value) -> SearchResult<()> {
    match value {
        Value::String(s) if s.len() > MAX_VALUE_LEN => Err(SearchError::input(format!("{at}: longer than {MAX_VALUE_LEN} bytes"))),
        Value::String(_) | Value::Number(_) | Value::Bool(_) => Ok(()),
        Value::Null => Err(SearchError::input(format!("{at}: null is not a value to match"))),
        _ => Err(SearchError::input(format!("{at}: expected a string, number or boolean"))),
    }
}

fn check_patterns(name: &str, patterns: &[String]) -> SearchResult<()> {
    if patterns.len() > MAX_FIELD_PATTERNS {
        return Err(SearchError::input(format!("{name}: at most {MAX_FIELD_PATTERNS} entries")));
    }
    for (i, p) in patterns.iter().enumerate() {
        check_path(&format!("{name}[{i}]"), p, true)?;
    }
    Ok(())
}

/// A dotted field path: non-empty parts, no spaces or control characters; `*` only where allowed.
pub fn check_path(at: &str, path: &str, wildcards: bool) -> SearchResult<()> {
    let bad = |why: &str| Err(SearchError::input(format!("{at}: \"{}\" {why}", truncate(path))));
    if path.is_empty() || path.len() > MAX_PATH_LEN {
        return bad(&format!("must be a field path of 1 to {MAX_PATH_LEN} characters"));
    }
    if path.split('.').any(str::is_empty) {
        return bad("is not a dotted field path (empty part)");
    }
    if path.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return bad("contains whitespace or control characters");
    }
    if !wildcards && path.contains('*') {
        return bad("is not a field path (no wildcards here)");
    }
    Ok(())
}

/// A single index or alias name: no wildcards, lists, or characters that change the URL.
pub fn check_index_name(name: &str) -> SearchResult<()> {
    let bad = |why: &str| Err(SearchError::input(format!("index: \"{}\" {why}", truncate(name))));
    if name.is_empty() || name.len() > 255 {
        return bad("must be an index name of 1 to 255 bytes");
    }
    if name.starts_with(['_', '-', '+', '.']) {
        return bad("must not start with _, -, + or .");
    }
    if name.chars().any(|c| c.is_uppercase() || c.is_whitespace() || c.is_control() || "\\/*?\"<>|,#:%&".contains(c)) {
        return bad("is not a valid index name (lowercase, none of \\ / * ? \" < > | , # : % & or spaces)");
    }
    Ok(())
}

fn truncate(s: &str) -> String {
    if s.chars().count() <= 64 {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(64).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn checked(value: Value) -> SearchResult<SearchRequest> {
        let request = SearchRequest::from_json(value)?;
        request.check(PageLimits::default())?;
        Ok(request)
    }

    fn message(value: Value) -> String {
        match checked(value) {
            Err(SearchError::Input(m)) => m,
            other => panic!("expected an input error, got {other:?}"),
        }
    }

    #[test]
    fn every_where_form_is_recognised() {
        let r = checked(json!({ "index": "i", "where": { "a.b": "x", "n": [1, 2], "at": { "gte": "2024-01-01", "lt": 5 } } })).unwrap();
        let c = r.conditions().unwrap();
        // In the caller's order.
        assert_eq!(c[0], ("a.b".into(), Condition::Exact(json!("x"))));
        assert_eq!(c[1], ("n".into(), Condition::AnyOf(vec![json!(1), json!(2)])));
        assert!(matches!(&c[2], (f, Condition::Range(r)) if f == "at" && r.len() == 2));
    }

    #[test]
    fn sort_keys_in_both_forms() {
        let r = checked(json!({ "index": "i", "sort": ["a", "-b", { "field": "c", "order": "desc" }, { "field": "d" }] })).unwrap();
        let keys: Vec<_> = r.sort.unwrap().into_iter().map(|k| (k.field, k.order)).collect();
        assert_eq!(keys, vec![("a".into(), SortOrder::Asc), ("b".into(), SortOrder::Desc), ("c".into(), SortOrder::Desc), ("d".into(), SortOrder::Asc)]);
    }

    #[test]
    fn malformed_requests_name_what_is_wrong() {
        let cases = [
            (json!({ "where": {} }), "index: required"),
            (json!({ "index": "i", "size": 0 }), "size: must be between 1 and 1000"),
            (json!({ "index": "i", "size": 1001 }), "size: must be between 1 and 1000"),
            (json!({ "index": "i", "page": 0 }), "page: pages are numbered from 1"),
            (json!({ "index": "i", "size": "10" }), "size: invalid type"),
            (json!({ "index": "i", "limit": 10 }), "unknown field `limit`"),
            (json!({ "index": "A*" }), "index: \"A*\" is not a valid index name"),
            (json!({ "index": "_all" }), "must not start with _"),
            (json!({ "index": "i", "where": { "a..b": 1 } }), "where.a..b: \"a..b\" is not a dotted field path"),
            (json!({ "index": "i", "where": { "a": null } }), "where.a: null is not a value"),
            (json!({ "index": "i", "where": { "a": [] } }), "where.a: a list needs 1 to 1024 values (got 0)"),
            (json!({ "index": "i", "where": { "a": [[1]] } }), "where.a[0]: expected a string, number or boolean"),
            (json!({ "index": "i", "where": { "a": { "gte": 1, "gt": 2 } } }), "give gt or gte"),
            (json!({ "index": "i", "where": { "a": { "from": 1 } } }), "unknown range key \"from\""),
            (json!({ "index": "i", "where": { "a": {} } }), "a range needs at least one"),
            (json!({ "index": "i", "where": { "a": { "gte": true } } }), "a range bound must be a number or a string"),
            (json!({ "index": "i", "sort": [{ "field": "a", "order": "up" }] }), "sort[0]: expected \"field\""),
            (json!({ "index": "i", "sort": [5] }), "sort[0]: expected"),
            (json!({ "index": "i", "sort": ["a", "-a"] }), "sort[1]: \"a\" is already a sort key"),
            (json!({ "index": "i", "sort": ["a*"] }), "no wildcards here"),
            (json!({ "index": "i", "fields": ["a b"] }), "fields[0]: \"a b\" contains whitespace"),
            (json!({ "cursor": "x", "where": { "a": 1 } }), "where: not allowed with cursor"),
            (json!({ "cursor": "x", "page": 2 }), "page: not allowed with cursor"),
        ];
        for (request, expected) in cases {
            let got = message(request.clone());
            assert!(got.contains(expected), "{request}: {got:?} does not contain {expected:?}");
        }
        assert!(matches!(SearchRequest::from_json(json!([1])), Err(SearchError::Input(m)) if m.contains("must be an object")));
    }
}
