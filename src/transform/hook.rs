//! A user transform applied to every document before it is written: the host (e.g. a JS
//! callback) can change a document, drop it (→ it is deleted from the index), or fail on it
//! (→ dead letter). Calls run with bounded concurrency.

use futures::future::BoxFuture;
use futures::stream::{self, StreamExt};
use serde_json::Value;

use super::{DocumentWrite, Rejected, WriteOp};
use crate::event::Phase;

/// What a transform is told about the document it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookContext {
    pub namespace: String,
    /// The Elasticsearch `_id`.
    pub id: String,
    pub phase: Phase,
}

/// `Ok(Some(doc))` replaces the document, `Ok(None)` drops it, `Err(_)` dead-letters it.
pub type HookOutcome = Result<Option<Value>, HookError>;

/// Why a transform gave no document: the dead letter's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// The transform threw (or its promise rejected), with this reason.
    #[error("{0}")]
    Threw(String),
    /// The host could not call it (e.g. the process is exiting).
    #[error("the transform was not called ({0})")]
    NotCalled(&'static str),
}

pub trait DocumentHook: Send + Sync {
    fn call(&self, doc: Value, ctx: HookContext) -> BoxFuture<'static, HookOutcome>;
}

/// Calls in flight at once, per batch.
const CONCURRENCY: usize = 16;

/// Runs the hook over the index writes of a batch. Dropped documents become versioned deletes,
/// so the index reads the same whether a document was dropped in the copy or in the stream.
pub async fn apply_hook(hook: &dyn DocumentHook, namespace: &str, phase: Phase, writes: Vec<DocumentWrite>) -> (Vec<DocumentWrite>, Vec<Rejected>) {
    let results: Vec<Result<DocumentWrite, Rejected>> = stream::iter(writes)
        .map(|write| async move {
            let WriteOp::Index(body) = &write.op else { return Ok(write) };
            let doc: Value = serde_json::from_slice(body).expect("the engine's own JSON");
            let ctx = HookContext { namespace: namespace.to_string(), id: write.id.clone(), phase };
            let reject = |reason: String| Rejected::new(write.id.clone(), reason).with_document(String::from_utf8_lossy(body).into_owned());
            match hook.call(doc, ctx).await {
                Ok(Some(Value::Object(map))) => {
                    let body = serde_json::to_vec(&map).expect("serialising JSON");
                    Ok(DocumentWrite { op: WriteOp::Index(body), ..write })
                }
                Ok(Some(Value::Null) | None) => Ok(DocumentWrite { op: WriteOp::Delete, ..write }),
                Ok(Some(other)) => Err(reject(format!("transform returned {} instead of an object or null", kind(&other)))),
                Err(reason) => Err(reject(format!("transform failed: {reason}"))),
            }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let mut kept = Vec::with_capacity(results.len());
    let mut rejected = Vec::new();
    for r in results {
        match r {
            Ok(w) => kept.push(w),
            Err(r) => rejected.push(r),
        }
    }
    (kept, rejected)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Upper;
    impl DocumentHook for Upper {
        fn call(&self, mut doc: Value, ctx: HookContext) -> BoxFuture<'static, HookOutcome> {
            Box::pin(async move {
                match ctx.id.as_str() {
                    "drop" => Ok(None),
                    "fail" => Err(HookError::Threw("boom".into())),
                    "weird" => Ok(Some(Value::from(3))),
                    _ => {
                        doc["name"] = Value::from(doc["name"].as_str().unwrap_or("").to_uppercase());
                        Ok(Some(doc))
                    }
                }
            })
        }
    }

    #[tokio::test]
    async fn the_hook_changes_drops_or_rejects_documents() {
        let w = |id: &str| DocumentWrite {
            id: id.into(),
            routing: None,
            version: 1,
            op: WriteOp::Index(br#"{"name":"ann"}"#.to_vec()),
            operation: Default::default(),
            position: None,
        };
        let del = DocumentWrite { op: WriteOp::Delete, ..w("gone") };
        let (kept, rejected) = apply_hook(&Upper, "db.c", Phase::Stream, vec![w("a"), w("drop"), w("fail"), w("weird"), del.clone()]).await;
        assert_eq!(kept[0].op, WriteOp::Index(br#"{"name":"ANN"}"#.to_vec()));
        assert_eq!(kept[1].op, WriteOp::Delete, "a dropped document is deleted from the index");
        assert_eq!(kept[2], del, "deletes pass through");
        assert_eq!(rejected.len(), 2);
        assert!(rejected[0].reason.contains("boom") && rejected[0].document.is_some());
        assert!(rejected[1].reason.contains("a number"));
    }
}
