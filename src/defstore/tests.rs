use mongodb::bson::{doc, DateTime};
use serde_json::json;

use super::mongo::{history_of, stored_of};
use super::*;

#[test]
fn only_sealed_secrets_are_stored() {
    let sealed = crate::secrets::seal(&crate::secrets::PrivateKey::generate().public_key(), "pw").unwrap();
    let ok = json!({ "mongo": { "uri": "mongodb://h:27017/?replicaSet=rs" }, "elasticsearch": { "node": "http://h", "password": sealed },
        "collections": [{ "namespace": "a.b", "index": "x" }] });
    check_sealed(&ok, "syncs.s").unwrap();
    let cases = [
        (json!({ "mongo": { "uri": "mongodb://u:p@h/" } }), "syncs.s.mongo.uri"),
        (json!({ "elasticsearch": { "apiKey": "abc" } }), "syncs.s.elasticsearch.apiKey"),
        (json!({ "outputs": [{ "type": "nats", "url": "nats://tok@h:4222" }] }), "syncs.s.outputs[0].url"),
        (json!({ "http": { "token": "0123456789abcdef0" } }), "syncs.s.http.token"),
        (json!({ "mongo": { "uri": "mongodb://h/?authMechanism=X&password=y" } }), "syncs.s.mongo.uri"),
    ];
    for (definition, path) in cases {
        let err = check_sealed(&definition, "syncs.s").unwrap_err();
        assert!(err.message.starts_with(&format!("{path}: holds a secret in plain text")), "{}", err.message);
        assert!(!err.message.contains("abc") && !err.message.contains("u:p"), "{}", err.message);
    }
}

#[test]
fn the_overview_names_collections_and_tables_but_no_option() {
    let stored = StoredDefinition {
        name: "s".into(),
        version: 3,
        definition: json!({ "mongo": { "uri": "enc:age:xyz" }, "collections": ["a.b", { "namespace": "a.c", "index": "i" }], "tables": [{ "table": "public.t" }] }),
        desired: Desired::Stopped,
        updated_at: String::new(),
        applied_version: Some(2),
    };
    let summary = summary_of(stored, Vec::new());
    assert_eq!(summary.collections, ["a.b", "a.c", "public.t"]);
    let text = serde_json::to_string(&summary).unwrap();
    assert!(!text.contains("enc:age") && text.contains("\"desired\":\"stopped\"") && text.contains("\"appliedVersion\":2"), "{text}");
}

#[test]
fn stored_documents_read_back_and_bad_ones_are_named() {
    let d = doc! { "_id": "s", "version": 2_i64, "definition": "{\"collections\":[\"a.b\"]}", "desired": "stopped", "updatedAt": DateTime::now() };
    let stored = stored_of("s", &d).unwrap();
    assert_eq!((stored.version, stored.desired, stored.definition["collections"][0].as_str()), (2, Desired::Stopped, Some("a.b")));
    let err = stored_of("s", &doc! { "_id": "s", "version": 1, "definition": "{" }).unwrap_err();
    assert_eq!(err.message, "the stored definition \"s\" has no valid \"definition\"");
    let entry =
        history_of(&doc! { "_id": 1, "name": "s", "version": 4_i64, "outcome": "rejected", "summary": "why", "by": "i", "at": DateTime::now() }).unwrap();
    assert_eq!((entry.outcome, entry.version, entry.at.is_empty()), (Outcome::Rejected, 4, false));
}

#[test]
fn elasticsearch_documents_read_back_and_bad_ones_are_named() {
    let source = json!({ "name": "s", "version": 3, "definition": "{\"collections\":[\"a.b\"]}", "desired": "stopped", "updatedAt": "2026-01-01T00:00:00Z", "appliedVersion": 2 });
    let stored = elastic::stored_of("s", &source).unwrap();
    assert_eq!((stored.version, stored.desired, stored.applied_version, stored.updated_at.as_str()), (3, Desired::Stopped, Some(2), "2026-01-01T00:00:00Z"));
    let err = elastic::stored_of("s", &json!({ "version": 1, "definition": "{", "desired": "running" })).unwrap_err();
    assert_eq!(err.message, "the stored definition \"s\" has no valid \"definition\"");
    let err = elastic::stored_of("s", &json!({ "version": 1, "definition": "{}", "desired": "paused" })).unwrap_err();
    assert_eq!(err.message, "the stored definition \"s\" has no valid \"desired\"");
    let entry = elastic::history_of(
        json!({ "name": "s", "version": 4, "outcome": "applied", "summary": "+ copy", "by": "i", "at": "2026-01-01T00:00:00.001Z", "order": 5 }),
    )
    .unwrap();
    assert_eq!((entry.outcome, entry.version, entry.at.as_str()), (Outcome::Applied, 4, "2026-01-01T00:00:00.001Z"));
}

#[test]
fn the_elasticsearch_fence_is_free_when_absent_expired_or_ours() {
    let now = DateTime::from_millis(10_000);
    let held = |until: i64| json!({ "version": 2, "applying": { "instance": "a", "version": 2, "until": until } });
    assert!(elastic::fence_free(&json!({ "version": 2 }), now, None));
    assert!(elastic::fence_free(&json!({ "version": 2, "applying": null }), now, Some("b")));
    assert!(!elastic::fence_free(&held(20_000), now, None), "a writer waits for a held fence");
    assert!(!elastic::fence_free(&held(20_000), now, Some("b")), "another instance waits");
    assert!(elastic::fence_free(&held(20_000), now, Some("a")), "the holder takes it again");
    assert!(elastic::fence_free(&held(9_999), now, None), "an expired fence is free");
}

#[test]
fn history_records_of_one_millisecond_keep_their_order() {
    let keys: Vec<i64> = (0..3).map(|i| elastic::history_order(1_700_000_000_000, 998 + i)).collect();
    assert!(keys[0] < keys[1], "{keys:?}");
    assert!(elastic::history_order(1_700_000_000_001, 0) > keys[0] && elastic::history_order(1_700_000_000_001, 0) > keys[1]);
    assert!(elastic::history_order(i64::MAX, 5) > 0, "no overflow");
}
