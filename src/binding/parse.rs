//! Strict deserialization of options: an error names the field's path (`batch.maxDocs: …`), and
//! an unknown key or value gets the closest known one as a suggestion (`indexTemplte` → did you
//! mean `indexTemplate`?).

use serde::de::{self, DeserializeOwned};

use super::strict::{Strict, ARRAY_FOR_OBJECT};
use crate::error::{SyncError, SyncResult};

/// Marks an error message that carries the path of a nested parse (see [`parse_nested`]).
const NESTED: char = '\u{1f}';

/// Deserializes `value` as `T`; an error is `ERR_CONFIG` naming the field.
pub fn parse<T: DeserializeOwned>(value: serde_json::Value) -> SyncResult<T> {
    serde_path_to_error::deserialize(Strict(value)).map_err(|e| SyncError::config(describe(&e.path().to_string(), &e.inner().to_string())))
}

/// For a `Deserialize` impl that parses part of the tree on its own (after reading a tag): the
/// inner error keeps its path, which [`parse`] appends to the outer one.
pub fn parse_nested<T: DeserializeOwned, E: de::Error>(value: serde_json::Value) -> Result<T, E> {
    serde_path_to_error::deserialize(Strict(value)).map_err(|e| E::custom(format!("{NESTED}{}{NESTED}{}", e.path(), e.inner())))
}

/// `path: message`, in the words of the options (an unknown key is named in the path).
fn describe(path: &str, message: &str) -> String {
    let (path, message) = match message.strip_prefix(NESTED).and_then(|m| m.split_once(NESTED)) {
        Some((inner, message)) => (join(path, inner), message),
        None => (path.to_string(), message),
    };
    if let Some((key, known)) = named(message, "unknown field `") {
        let at = if path.ends_with(&format!(".{key}")) || path == key { path.clone() } else { join(&path, &key) };
        return match (closest(&key, &known), known.is_empty()) {
            (Some(best), _) => format!("{at}: unknown option, did you mean `{best}`?"),
            (None, true) => format!("{at}: unknown option (none are allowed here)"),
            (None, false) => format!("{at}: unknown option (known: {})", quoted(&known)),
        };
    }
    if let Some((value, known)) = named(message, "unknown variant `") {
        let hint = closest(&value, &known).map(|best| format!(", did you mean '{best}'?")).unwrap_or_default();
        return format!("{}: \"{value}\" is not one of {}{hint}", shown(&path), quoted(&known).replace('`', "'"));
    }
    if let Some((key, _)) = named(message, "missing field `") {
        return format!("{}: required", join(&path, &key));
    }
    // serde would read a struct from an array (by position); `Strict` refuses it.
    if message == ARRAY_FOR_OBJECT {
        return format!("{}: must be an object, not an array", shown(&path));
    }
    if path == "." {
        message.to_string()
    } else {
        format!("{path}: {message}")
    }
}

fn shown(path: &str) -> &str {
    if path == "." {
        "options"
    } else {
        path
    }
}

fn join(outer: &str, inner: &str) -> String {
    match (outer, inner) {
        (".", inner) => inner.to_string(),
        (outer, ".") => outer.to_string(),
        (outer, inner) if inner.starts_with('[') => format!("{outer}{inner}"),
        (outer, inner) => format!("{outer}.{inner}"),
    }
}

/// In serde's "<prefix>name`, expected one of `a`, `b`" messages: the name and the known names.
fn named(message: &str, prefix: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix(prefix)?;
    let (name, rest) = rest.split_once('`')?;
    let known = rest.split('`').skip(1).step_by(2).map(str::to_string).collect();
    Some((name.to_string(), known))
}

fn quoted(names: &[String]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// The known name closest to `given`, if close enough to be what was meant: case, `_` and `-`
/// aside, at most one edit in four characters.
fn closest(given: &str, known: &[String]) -> Option<String> {
    let norm = |s: &str| s.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect::<Vec<_>>();
    let given = norm(given);
    known
        .iter()
        .map(|k| (edit_distance(&given, &norm(k)), k))
        .filter(|(d, k)| *d <= (k.chars().count() / 4).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.clone())
}

/// Levenshtein distance, with a swap of two neighbours counting as one edit.
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut rows = vec![(0..=b.len()).collect::<Vec<_>>()];
    for i in 1..=a.len() {
        let mut row = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            row[j] = (rows[i - 1][j] + 1).min(row[j - 1] + 1).min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                row[j] = row[j].min(rows[i - 2][j - 2] + 1);
            }
        }
        rows.push(row);
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn close_matches_are_suggested_and_far_ones_are_not() {
        let known = names(&["indexTemplate", "index", "apiKey", "maxDocs", "maxBytes"]);
        assert_eq!(closest("indexTemplte", &known).as_deref(), Some("indexTemplate"));
        assert_eq!(closest("apikey", &known).as_deref(), Some("apiKey"));
        assert_eq!(closest("api_key", &known).as_deref(), Some("apiKey"));
        assert_eq!(closest("maxDoc", &known).as_deref(), Some("maxDocs"));
        assert_eq!(closest("maxBtyes", &known).as_deref(), Some("maxBytes"));
        assert_eq!(closest("colour", &known), None);
    }

    #[test]
    fn serde_messages_become_option_messages() {
        assert_eq!(describe("batch", "unknown field `maxDoc`, expected one of `maxDocs`, `maxBytes`"), "batch.maxDoc: unknown option, did you mean `maxDocs`?");
        assert_eq!(describe(".", "unknown field `zzz`, expected `name` or `mongo`"), "zzz: unknown option (known: `name`, `mongo`)");
        assert_eq!(describe("mongo", "missing field `uri`"), "mongo.uri: required");
        assert_eq!(
            describe("onDrop", "unknown variant `deleteIndx`, expected one of `deleteDocuments`, `deleteIndex`, `ignore`"),
            "onDrop: \"deleteIndx\" is not one of 'deleteDocuments', 'deleteIndex', 'ignore', did you mean 'deleteIndex'?"
        );
        let nested = format!("{NESTED}tls{NESTED}unknown field `caFil`, expected one of `caFile`, `serverName`");
        assert_eq!(describe("outputs[1]", &nested), "outputs[1].tls.caFil: unknown option, did you mean `caFile`?");
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    #[allow(dead_code)]
    struct Probe {
        max_docs: u32,
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        a: u32,
        b: Vec<u32>,
    }

    fn message<T: std::fmt::Debug>(result: SyncResult<T>) -> String {
        result.expect_err("must be refused").to_string()
    }

    #[test]
    fn an_array_is_never_read_as_an_object_even_with_every_field_in_order() {
        use serde_json::json;
        assert!(message(parse::<Probe>(json!([5, null]))).contains("options: must be an object, not an array"));
        assert!(message(parse::<Probe>(json!({"maxDocs": 5, "inner": [1, [2]]}))).contains("inner: must be an object, not an array"));
        let nested = json!({"maxDocs": 5, "inner": {"a": 1, "b": [2, 3]}});
        assert_eq!(parse::<Probe>(nested).expect("an object is read").inner.expect("inner").b, vec![2, 3]);
    }
}
