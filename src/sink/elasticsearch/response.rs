//! Reads replies: whole ones ([`Reply`]), and a `_bulk` response item by item, classifying
//! every outcome.

use serde::Deserialize;

use super::error::EsError;

/// A reply read whole: status and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The `error.type` of an error reply (`{"error":{"type":…}}`), if it has one.
    pub fn error_type(&self) -> Option<String> {
        let value: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        value.get("error")?.get("type")?.as_str().map(str::to_string)
    }

    /// "HTTP 503: <the start of the body>", for messages.
    pub fn describe(&self) -> String {
        format!("HTTP {}: {}", self.status, snippet(&self.body))
    }
}

/// The start of a reply body, for error messages.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    text.replace('\n', " ")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    Indexed,
    Deleted,
    /// A delete of a document the index does not hold (never written, already deleted, or
    /// under another routing value): a success, counted apart from deletes.
    NotFound,
    /// Elasticsearch holds a newer version: the write was stale. Expected after replays.
    Conflict,
    /// Worth sending again: overload (429), server-side failures (5xx).
    Retryable(String),
    /// Will never succeed as is: mapping conflicts, bad values. Goes to dead letters.
    Permanent(String),
}

#[derive(Deserialize)]
struct BulkResponse {
    #[serde(default)]
    items: Vec<std::collections::HashMap<String, ObjectOnly<BulkItem>>>,
}

/// `T` read only from a JSON object: a derived struct also takes an array of its fields by
/// position (`[201]` as `{"status": 201}`), which no server sends as an answer.
struct ObjectOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Object<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_map(Object(std::marker::PhantomData)).map(ObjectOnly)
    }
}

#[derive(Deserialize)]
struct BulkItem {
    status: u16,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// A `_bulk` reply that does not answer the request.
#[derive(Debug, thiserror::Error)]
pub enum BulkReplyError {
    #[error("unreadable _bulk response: {0}")]
    Unreadable(#[from] serde_json::Error),
    #[error("_bulk response has {got} items for {sent} writes")]
    ItemCount { got: usize, sent: usize },
    #[error("_bulk response item has {0} actions instead of one")]
    ItemActions(usize),
}

/// What a `_bulk` reply that is not transient (see `retry::answer`) means for the writes sent.
#[derive(Debug)]
pub enum BulkReply {
    /// One outcome per write, in request order.
    Items(Vec<ItemOutcome>),
    /// HTTP 413: the writes must go in smaller requests.
    TooLarge,
    /// The request was refused as a whole, or the reply does not answer it.
    Failed(EsError),
}

/// Reads the reply to a `_bulk` request of `sent` writes; `what` names the request in errors.
pub fn read_bulk_reply(reply: &Reply, sent: usize, what: &str) -> BulkReply {
    if reply.status == 413 {
        return BulkReply::TooLarge;
    }
    if !reply.is_success() {
        return BulkReply::Failed(EsError::Refused { what: format!("{what} refused"), reply: reply.describe() });
    }
    match parse_bulk_response(&reply.body, sent) {
        Ok(outcomes) => BulkReply::Items(outcomes),
        Err(e) => BulkReply::Failed(EsError::BadReply { what: what.to_string(), reason: e.to_string() }),
    }
}

/// One outcome per item, in request order; an error if the reply does not match the request.
pub fn parse_bulk_response(body: &[u8], expected_items: usize) -> Result<Vec<ItemOutcome>, BulkReplyError> {
    let ObjectOnly(parsed) = serde_json::from_slice::<ObjectOnly<BulkResponse>>(body)?;
    if parsed.items.len() != expected_items {
        return Err(BulkReplyError::ItemCount { got: parsed.items.len(), sent: expected_items });
    }
    parsed
        .items
        .into_iter()
        .map(|item| {
            if item.len() != 1 {
                return Err(BulkReplyError::ItemActions(item.len()));
            }
            let (action, result) = item.into_iter().next().ok_or(BulkReplyError::ItemActions(0))?;
            Ok(classify(&action, result.0.status, result.0.error.as_ref()))
        })
        .collect()
}

/// Refusals that end by themselves, whatever their status: overload, a write block while an
/// index is shrunk, cloned or low on disk (403 `cluster_block_exception`), a closed index
/// (400 `index_closed_exception`).
pub fn is_transient_error(error_type: &str) -> bool {
    matches!(error_type, "es_rejected_execution_exception" | "cluster_block_exception" | "index_closed_exception")
}

fn classify(action: &str, status: u16, error: Option<&serde_json::Value>) -> ItemOutcome {
    let error_type = error.and_then(|e| e.get("type")).and_then(|t| t.as_str()).unwrap_or("");
    match status {
        200..=299 if action == "delete" => ItemOutcome::Deleted,
        200..=299 => ItemOutcome::Indexed,
        404 if action == "delete" && error.is_none() => ItemOutcome::NotFound,
        409 if error_type == "version_conflict_engine_exception" => ItemOutcome::Conflict,
        // As for whole requests (`retry::is_retryable_status`): any status from 500 up.
        429 | 500.. => ItemOutcome::Retryable(describe(status, error)),
        _ if is_transient_error(error_type) => ItemOutcome::Retryable(describe(status, error)),
        _ => ItemOutcome::Permanent(describe(status, error)),
    }
}

/// "400 mapper_parsing_exception: failed to parse field [a] (caused by: ...)"
fn describe(status: u16, error: Option<&serde_json::Value>) -> String {
    let Some(error) = error else { return format!("status {status}") };
    let text = |e: &serde_json::Value| {
        let kind = e.get("type").and_then(|t| t.as_str()).unwrap_or("error");
        let reason = e.get("reason").and_then(|t| t.as_str()).unwrap_or("");
        format!("{kind}: {reason}")
    };
    match error.get("caused_by") {
        Some(cause) => format!("{status} {} (caused by {})", text(error), text(cause)),
        None => format!("{status} {}", text(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_and_replies_that_are_arrays_are_unreadable() {
        // A derived struct also takes an array of its fields by position: a reply shaped so
        // answers nothing and must not be read as one that does.
        for body in [&br#"{"items":[{"index":[201]}]}"#[..], br#"[[{"index":{"status":201}}]]"#, br#"{"items":[{"index":[201, null]}]}"#] {
            let got = parse_bulk_response(body, 1);
            assert!(matches!(got, Err(BulkReplyError::Unreadable(_))), "{}: {got:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn every_kind_of_item_is_classified() {
        let body = br#"{"errors":true,"items":[
            {"index":{"status":201,"result":"created"}},
            {"delete":{"status":404,"result":"not_found"}},
            {"index":{"status":409,"error":{"type":"version_conflict_engine_exception","reason":"old"}}},
            {"index":{"status":429,"error":{"type":"es_rejected_execution_exception","reason":"busy"}}},
            {"index":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"bad","caused_by":{"type":"illegal_argument_exception","reason":"x"}}}},
            {"delete":{"status":200,"result":"deleted"}},
            {"index":{"status":403,"error":{"type":"cluster_block_exception","reason":"index [a] blocked by: [FORBIDDEN/8/index write (api)];"}}},
            {"delete":{"status":400,"error":{"type":"index_closed_exception","reason":"closed"}}}
        ]}"#;
        let out = parse_bulk_response(body, 8).unwrap();
        assert_eq!(out[0], ItemOutcome::Indexed);
        assert_eq!(out[1], ItemOutcome::NotFound, "a delete that found nothing is not counted as deleted");
        assert_eq!(out[2], ItemOutcome::Conflict);
        assert!(matches!(&out[3], ItemOutcome::Retryable(r) if r.contains("busy")));
        assert_eq!(out[4], ItemOutcome::Permanent("400 mapper_parsing_exception: bad (caused by illegal_argument_exception: x)".into()));
        assert_eq!(out[5], ItemOutcome::Deleted);
        assert!(matches!(&out[6], ItemOutcome::Retryable(r) if r.starts_with("403 cluster_block_exception")), "a write block passes");
        assert!(matches!(&out[7], ItemOutcome::Retryable(r) if r.starts_with("400 index_closed_exception")), "a closed index reopens");
    }

    /// Found by the properties: an item's status past 599 was dead-lettered while a whole
    /// request's was retried.
    #[test]
    fn an_item_status_past_599_is_retried_like_a_request() {
        let out = parse_bulk_response(br#"{"items":[{"index":{"status":600}}]}"#, 1).unwrap();
        assert_eq!(out[0], ItemOutcome::Retryable("status 600".into()));
        assert!(super::super::retry::is_retryable_status(600));
    }

    /// Found while writing the fuzz target `bulk_response` (which now checks it): an item naming
    /// several actions was classified by whichever one a hash map gave first, which varies from
    /// one process to the next.
    #[test]
    fn an_item_with_several_actions_is_no_answer() {
        let body = br#"{"items":[{"index":{"status":201},"delete":{"status":500}}]}"#;
        let error = parse_bulk_response(body, 1).unwrap_err();
        assert_eq!(error.to_string(), "_bulk response item has 2 actions instead of one");
        assert_eq!(parse_bulk_response(br#"{"items":[{}]}"#, 1).unwrap_err().to_string(), "_bulk response item has 0 actions instead of one");
    }

    #[test]
    fn a_reply_with_the_wrong_item_count_is_an_error() {
        assert!(parse_bulk_response(br#"{"items":[]}"#, 1).unwrap_err().to_string().contains("0 items for 1"));
        assert!(parse_bulk_response(b"<html>", 1).is_err());
    }
}
