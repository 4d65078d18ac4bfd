//! What `plan` reads of an index, and the one change `apply` makes to it in place: mapping new
//! fields (anything else that differs needs a re-copy).

use elasticsearch::http::Method;

use super::error::EsError;
use super::response::Reply;
use super::service::{expect_success, mapping_conflict, EsSink};
use crate::retry::Flow;

type EsResult<T> = Result<T, EsError>;

/// The reply to a request of `plan` or `apply`; a stop (they have no stop of their own, so it
/// is unexpected) is an error naming the request.
pub(super) fn replied(flow: Flow<Reply>, what: &str) -> EsResult<Reply> {
    match flow {
        Flow::Done(reply) => Ok(reply),
        Flow::Stopped => Err(EsError::BadReply { what: what.into(), reason: "stopped".into() }),
    }
}

/// How an existing index's mappings compare with the configured ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexState {
    /// Neither an index nor an alias of that name.
    Missing,
    /// It exists; `conflict`: a field mapped otherwise (needs a re-copy); `added`: configured
    /// fields it does not map yet (mapped in place).
    Exists { conflict: Option<String>, added: Vec<String> },
}

impl EsSink {
    /// `index` (or the index the alias `index` points to) compared with the `wanted` mappings.
    pub async fn index_state(&self, index: &str, wanted: Option<&serde_json::Value>) -> EsResult<IndexState> {
        let what = format!("read the mappings of \"{index}\"");
        let reply = replied(self.send(&what, Method::Get, &format!("/{index}/_mapping"), None).await?, &what)?;
        if reply.status == 404 {
            return Ok(IndexState::Missing);
        }
        expect_success(&reply, &what, &[])?;
        let body: serde_json::Value = serde_json::from_slice(&reply.body).map_err(|e| EsError::BadReply { what: what.clone(), reason: e.to_string() })?;
        // Keyed by the concrete index, which differs when `index` is an alias.
        let existing = body.as_object().and_then(|o| o.values().next()).and_then(|v| v.get("mappings")).cloned().unwrap_or_default();
        let Some(wanted) = wanted else { return Ok(IndexState::Exists { conflict: None, added: Vec::new() }) };
        Ok(IndexState::Exists { conflict: mapping_conflict(wanted, &existing, ""), added: unmapped(wanted, &existing, "") })
    }

    /// Maps the `wanted` mappings' fields on an existing index (new fields only: see [`IndexState`]).
    pub async fn put_mappings(&self, index: &str, wanted: &serde_json::Value) -> EsResult<()> {
        let what = format!("map new fields of \"{index}\"");
        let body = serde_json::to_vec(&serde_json::json!({ "properties": wanted.get("properties").cloned().unwrap_or_default() })).expect("serialising JSON");
        replied(self.send_expecting(&what, Method::Put, &format!("/{index}/_mapping"), Some(&body), &[]).await?, &what).map(drop)
    }
}

/// Dotted paths of the fields `wanted` maps and `existing` does not.
fn unmapped(wanted: &serde_json::Value, existing: &serde_json::Value, prefix: &str) -> Vec<String> {
    let Some(wanted) = wanted.get("properties").and_then(|p| p.as_object()) else { return Vec::new() };
    let existing = existing.get("properties").and_then(|p| p.as_object());
    let mut found = Vec::new();
    for (name, spec) in wanted {
        let path = format!("{prefix}{name}");
        match existing.and_then(|e| e.get(name)) {
            None => found.push(path),
            Some(have) => found.extend(unmapped(spec, have, &format!("{path}."))),
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn new_fields_are_found_at_every_depth() {
        let wanted = json!({ "properties": { "a": { "type": "keyword" }, "b": { "properties": { "c": { "type": "long" }, "d": { "type": "text" } } } } });
        let existing = json!({ "properties": { "b": { "properties": { "c": { "type": "long" } } } } });
        assert_eq!(unmapped(&wanted, &existing, ""), ["a", "b.d"]);
        assert!(unmapped(&wanted, &wanted, "").is_empty());
    }
}
