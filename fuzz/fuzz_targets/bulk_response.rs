//! Elasticsearch's replies to a `_bulk` request, judged as the sink judges them: first byte: the
//! HTTP status (mostly realistic ones); second: how many writes were sent; the rest: the body.
//! Every reply must get a verdict without a panic: the whole request retried (429, 5xx, a write
//! block…), split (413), refused or unreadable (a clear error), or one outcome per write (written,
//! stale, retried or dead-lettered), each agreeing with the item's status and error type. A
//! reply read as outcomes is no longer one once truncated.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mongo_elastic_sync::sink::elasticsearch::retry::{answer, is_retryable_status};
use mongo_elastic_sync::sink::elasticsearch::{read_bulk_reply, BulkReply, ItemOutcome, Reply};
use serde_json::Value;

const STATUSES: [u16; 24] = [200, 200, 200, 200, 200, 200, 200, 201, 413, 429, 500, 502, 503, 504, 400, 401, 403, 404, 409, 0, 299, 300, 599, 600];

/// The judgement of a reply: `None` for "send it all again".
fn judge(status: u16, body: &[u8], sent: usize) -> Option<BulkReply> {
    let reply = answer(Ok(Reply { status, body: body.to_vec() })).ok()?;
    Some(read_bulk_reply(&reply, sent, "bulk write to \"i\""))
}

/// The item's status and error type as the body gives them (to check the classification). None
/// where a field the sink does not read holds bytes that are not UTF-8 (seed
/// `invalid-utf8-in-unread-field`, found by the first CI-length run): serde_json skips the field
/// unchecked, a `Value` cannot hold it. Anything else accepted is objects all the way down (an
/// array where an object belongs, `[[{"index":{"status":201}}]]`, is an unreadable reply).
fn item(body: &[u8], i: usize) -> Option<(u16, String, Option<Value>)> {
    let parsed: Value = serde_json::from_slice(body).ok()?;
    let items = parsed.as_object().expect("an accepted reply is an object").get("items").expect("an accepted reply has items");
    let item = items.get(i).expect("an item per outcome").as_object().expect("an item is an object");
    assert_eq!(item.len(), 1, "an item read as an outcome has one action: {item:?}");
    let (action, result) = item.iter().next().expect("an action");
    let result = result.as_object().expect("an item's result is an object");
    let status = result.get("status").and_then(Value::as_u64).expect("a status") as u16;
    let error = result.get("error").filter(|e| !e.is_null()).cloned();
    Some((status, action.clone(), error))
}

fn check_outcome(outcome: &ItemOutcome, (status, action, error): (u16, String, Option<Value>)) {
    let kind = error.as_ref().and_then(|e| e.get("type")).and_then(Value::as_str).unwrap_or("");
    let transient = matches!(kind, "es_rejected_execution_exception" | "cluster_block_exception" | "index_closed_exception");
    match outcome {
        ItemOutcome::Indexed => assert!((200..300).contains(&status) && action != "delete"),
        ItemOutcome::Deleted => assert!((200..300).contains(&status) && action == "delete"),
        ItemOutcome::NotFound => assert!(status == 404 && action == "delete" && error.is_none()),
        ItemOutcome::Conflict => assert!(status == 409 && kind == "version_conflict_engine_exception"),
        ItemOutcome::Retryable(why) => assert!((status == 429 || status >= 500 || transient) && !why.is_empty()),
        ItemOutcome::Permanent(why) => {
            assert!(!(200..300).contains(&status) && status != 429 && status < 500 && !transient && !why.is_empty());
            assert!(why.contains(&status.to_string()), "a dead letter's reason gives the status: {why}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [s, n, body @ ..] = data else { return };
    let status = STATUSES[*s as usize % STATUSES.len()];
    let sent = *n as usize % 16;
    match judge(status, body, sent) {
        None => assert!(is_retryable_status(status) || !(200..300).contains(&status), "a success is never retried whole"),
        Some(BulkReply::TooLarge) => assert_eq!(status, 413),
        Some(BulkReply::Failed(e)) => assert!(e.to_string().starts_with("bulk write to \"i\""), "{e}"),
        Some(BulkReply::Items(outcomes)) => {
            assert!((200..300).contains(&status));
            assert_eq!(outcomes.len(), sent);
            for (i, outcome) in outcomes.iter().enumerate() {
                if let Some(item) = item(body, i) {
                    check_outcome(outcome, item);
                }
            }
            // Cut before its last byte that is not white space, the reply answers nothing.
            let end = body.iter().rposition(|b| !b.is_ascii_whitespace()).expect("a body");
            for cut in [end, end / 2] {
                assert!(matches!(judge(status, &body[..cut], sent), Some(BulkReply::Failed(_))), "a truncated reply is an error");
            }
        }
    }
});

/// What every napi function of the engine is bound to in this binary (see build.rs).
#[no_mangle]
pub extern "C" fn fuzz_napi_unavailable() -> ! {
    std::process::abort()
}
