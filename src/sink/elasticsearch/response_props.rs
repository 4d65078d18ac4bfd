//! Property tests of what the sink reads from Elasticsearch: arbitrary bytes, truncated replies
//! and generated `_bulk` replies (any status, action and error body) never panic; every item is
//! classified (written, stale, retried or dead-lettered), and a reply that does not answer the
//! request is an error that says so. Whole replies: any status and body get a verdict.
//!
//! `cargo test elasticsearch::response_props`; longer: `PROPTEST_CASES=20000 cargo test --release
//! elasticsearch::response_props`.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::response::{parse_bulk_response, ItemOutcome, Reply};
use super::retry::{answer, is_retryable_status};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,10}".prop_map(Value::String),
        prop_oneof![
            Just("version_conflict_engine_exception"),
            Just("es_rejected_execution_exception"),
            Just("cluster_block_exception"),
            Just("mapper_parsing_exception")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![Just("type".to_string()), Just("reason".to_string()), Just("caused_by".to_string()), "[a-z_]{1,8}"],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One generated `_bulk` item: its action, status (any number, mostly realistic) and error.
fn arb_item() -> impl Strategy<Value = (String, u16, Option<Value>)> {
    let action = prop_oneof![Just("index".to_string()), Just("delete".to_string()), Just("create".to_string()), Just("update".to_string()), "[a-z]{0,6}"];
    let status = prop_oneof![Just(200u16), Just(201), Just(404), Just(409), Just(429), Just(400), Just(403), Just(500), Just(503), any::<u16>()];
    (action, status, prop::option::of(arb_json()))
}

fn item_json((action, status, error): &(String, u16, Option<Value>)) -> Value {
    let mut body = json!({ "status": status });
    if let Some(e) = error {
        body["error"] = e.clone();
    }
    json!({ action.clone(): body })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..200), expected in 0usize..5) {
        if let Ok(outcomes) = parse_bulk_response(&body, expected) {
            prop_assert_eq!(outcomes.len(), expected);
        }
    }

    #[test]
    fn arbitrary_json_never_panics(body in arb_json(), expected in 0usize..5) {
        let bytes = serde_json::to_vec(&body).expect("json");
        match parse_bulk_response(&bytes, expected) {
            Ok(outcomes) => prop_assert_eq!(outcomes.len(), expected),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn every_item_is_classified(items in prop::collection::vec(arb_item(), 1..8), errors in any::<bool>()) {
        let body = serde_json::to_vec(&json!({ "took": 1, "errors": errors, "items": items.iter().map(item_json).collect::<Vec<_>>() })).expect("json");
        let outcomes = parse_bulk_response(&body, items.len()).expect("a well-formed reply is read");
        prop_assert_eq!(outcomes.len(), items.len());
        for ((action, status, error), outcome) in items.iter().zip(&outcomes) {
            let error = error.as_ref().filter(|e| !e.is_null()); // `"error": null` is no error
            let error_type = error.and_then(|e| e.get("type")).and_then(Value::as_str).unwrap_or("");
            match outcome {
                ItemOutcome::Indexed => prop_assert!((200..300).contains(status) && action != "delete"),
                ItemOutcome::Deleted => prop_assert!(action == "delete" && (200..300).contains(status)),
                ItemOutcome::NotFound => prop_assert!(action == "delete" && *status == 404 && error.is_none()),
                ItemOutcome::Conflict => prop_assert!(*status == 409 && error_type == "version_conflict_engine_exception"),
                ItemOutcome::Retryable(why) | ItemOutcome::Permanent(why) => {
                    prop_assert!(!(200..300).contains(status), "a success is never retried nor dead-lettered");
                    prop_assert!(why.starts_with(&status.to_string()) || why == &format!("status {status}"), "the reason starts with the status: {why}");
                }
            }
            if *status == 429 || *status >= 500 {
                prop_assert!(matches!(outcome, ItemOutcome::Retryable(_)), "429 and 5xx are retried: {outcome:?}");
            }
        }
        // The same reply for a different number of writes does not answer the request.
        let wrong = parse_bulk_response(&body, items.len() + 1).expect_err("a count mismatch");
        let count = format!("{} items for {}", items.len(), items.len() + 1);
        prop_assert!(wrong.to_string().contains(&count), "{}", wrong);
    }

    #[test]
    fn a_truncated_reply_is_an_error(items in prop::collection::vec(arb_item(), 1..6), cut in any::<prop::sample::Index>()) {
        let body = serde_json::to_vec(&json!({ "errors": false, "items": items.iter().map(item_json).collect::<Vec<_>>() })).expect("json");
        let at = cut.index(body.len());
        let error = parse_bulk_response(&body[..at], items.len()).expect_err("a strict prefix is no reply");
        prop_assert!(error.to_string().starts_with("unreadable _bulk response"), "{error}");
    }

    #[test]
    fn every_whole_reply_gets_a_verdict(status in any::<u16>(), body in prop_oneof![arb_json().prop_map(|v| serde_json::to_vec(&v).expect("json")), prop::collection::vec(any::<u8>(), 0..64)]) {
        let reply = Reply { status, body };
        let described = reply.describe();
        let head = format!("HTTP {status}");
        prop_assert!(described.starts_with(&head), "{}", described);
        match answer(Ok(reply)) {
            Ok(answered) => prop_assert!(!is_retryable_status(answered.status)),
            Err(transient) => prop_assert!(is_retryable_status(status) || transient.to_string().starts_with(&head), "{}", transient),
        }
    }
}
