//! The record format, one JSON object per line:
//! `{"operation","namespace","index","id","action","version",["routing"],"document"}` for
//! document changes, `"deadLetter"` records for dead letters, and index actions with
//! `"action":null`. `operation` is the MongoDB change (`copy` for the initial copy), `action`
//! the Elasticsearch bulk action it maps to.

use sha2::{Digest, Sha256};

use super::Record;
use crate::sink::{IndexAction, IndexChange, Target};
use crate::transform::{dead_letter_document, DocumentWrite, Rejected, WriteOp};

/// A short stable digest, for record keys (e.g. NATS `Nats-Msg-Id`).
fn digest(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    let hash = hasher.finalize();
    hash[..16].iter().map(|b| format!("{b:02x}")).collect()
}

fn push_json(out: &mut Vec<u8>, value: &str) {
    serde_json::to_writer(&mut *out, value).expect("writing to a Vec cannot fail");
}

/// The fields every record starts with.
fn head(out: &mut Vec<u8>, operation: &str, namespace: &str, index: &str) {
    out.extend_from_slice(b"{\"operation\":");
    push_json(out, operation);
    out.extend_from_slice(b",\"namespace\":");
    push_json(out, namespace);
    out.extend_from_slice(b",\"index\":");
    push_json(out, index);
}

pub fn document_record(namespace: &str, target: &Target, write: &DocumentWrite) -> Record {
    let operation = write.operation.as_str();
    let action = match write.op {
        WriteOp::Index(_) => "index",
        WriteOp::Delete => "delete",
    };
    let mut line = Vec::with_capacity(160 + write.id.len() + if let WriteOp::Index(s) = &write.op { s.len() } else { 0 });
    head(&mut line, operation, namespace, &target.index);
    line.extend_from_slice(b",\"id\":");
    push_json(&mut line, &write.id);
    line.extend_from_slice(format!(",\"action\":\"{action}\",\"version\":{}", write.version).as_bytes());
    if let Some(routing) = &write.routing {
        line.extend_from_slice(b",\"routing\":");
        push_json(&mut line, routing);
    }
    line.extend_from_slice(b",\"document\":");
    match &write.op {
        WriteOp::Index(source) => line.extend_from_slice(source),
        WriteOp::Delete => line.extend_from_slice(b"null"),
    }
    line.push(b'}');
    // A change stream event is identified by its position; a copied document by what it is.
    let key = match &write.position {
        Some(position) => digest(&["change", position, &write.id]),
        None => digest(&[operation, namespace, &write.id, &write.version.to_string(), action]),
    };
    Record { namespace: namespace.to_string(), index: target.index.clone(), key, line }
}

pub fn dead_letter_records(dlq: &str, namespace: &str, index: &str, rejected: &[Rejected]) -> Vec<Record> {
    let at = mongodb::bson::DateTime::now();
    rejected
        .iter()
        .map(|r| {
            let (id, document) = dead_letter_document(namespace, index, r, at);
            let mut line = Vec::new();
            head(&mut line, "deadLetter", namespace, dlq);
            line.extend_from_slice(b",\"id\":");
            push_json(&mut line, &id);
            line.extend_from_slice(format!(",\"action\":\"index\",\"version\":{},\"document\":", at.timestamp_millis()).as_bytes());
            serde_json::to_writer(&mut line, &document).expect("writing to a Vec cannot fail");
            line.push(b'}');
            // What the dead letter says, so that a replay keeps its key and a later failure of the
            // same document (another version, another reason) gets a new one.
            let key = match &r.document {
                Some(document) => digest(&["deadLetter", &id, &r.reason, "document", document]),
                None => digest(&["deadLetter", &id, &r.reason]),
            };
            Record { namespace: namespace.to_string(), index: dlq.to_string(), key, line }
        })
        .collect()
}

pub fn index_change_record(change: &IndexChange) -> Record {
    let (operation, index, extra) = match &change.action {
        IndexAction::DeleteDocuments { index } => ("deleteDocuments", index, serde_json::json!({})),
        IndexAction::DeleteIndex { index } => ("deleteIndex", index, serde_json::json!({})),
        IndexAction::Reindex { from, to } => ("reindex", from, serde_json::json!({ "to": to })),
        IndexAction::SwapAlias { alias, index, replaces, extra_aliases } if extra_aliases.is_empty() => {
            ("swapAlias", index, serde_json::json!({ "alias": alias, "replaces": replaces }))
        }
        IndexAction::SwapAlias { alias, index, replaces, extra_aliases } => {
            ("swapAlias", index, serde_json::json!({ "alias": alias, "replaces": replaces, "extraAliases": extra_aliases }))
        }
    };
    let mut line = Vec::new();
    head(&mut line, operation, &change.namespace, index);
    for (name, value) in extra.as_object().expect("an object") {
        line.push(b',');
        push_json(&mut line, name);
        line.push(b':');
        serde_json::to_writer(&mut line, value).expect("writing to a Vec cannot fail");
    }
    line.extend_from_slice(format!(",\"action\":null,\"version\":{}}}", change.version).as_bytes());
    let key = digest(&[std::str::from_utf8(&line).expect("JSON is UTF-8")]);
    Record { namespace: change.namespace.clone(), index: index.clone(), key, line }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::Operation;
    use serde_json::{json, Value};

    fn parse(r: &Record) -> Value {
        serde_json::from_slice(&r.line).unwrap()
    }

    fn write(op: WriteOp, operation: Operation, position: Option<&str>) -> DocumentWrite {
        DocumentWrite { id: "a\"1".into(), routing: None, version: 7, op, operation, position: position.map(Into::into) }
    }

    #[test]
    fn document_records_carry_the_change_and_its_action() {
        let target = Target::index("idx");
        let r = document_record("db.c", &target, &write(WriteOp::Index(br#"{"x":1}"#.to_vec()), Operation::Update, Some("8263")));
        assert_eq!(parse(&r), json!({"operation":"update","namespace":"db.c","index":"idx","id":"a\"1","action":"index","version":7,"document":{"x":1}}));
        let d = document_record("db.c", &target, &DocumentWrite { routing: Some("t".into()), ..write(WriteOp::Delete, Operation::Update, Some("8264")) });
        assert_eq!(
            parse(&d),
            json!({"operation":"update","namespace":"db.c","index":"idx","id":"a\"1","action":"delete","version":7,"routing":"t","document":null})
        );
    }

    #[test]
    fn keys_are_stable_and_tell_changes_apart() {
        let target = Target::index("idx");
        let at = |pos| document_record("db.c", &target, &write(WriteOp::Delete, Operation::Delete, pos)).key;
        assert_eq!(at(Some("p1")), at(Some("p1")), "a replayed change keeps its key");
        assert_ne!(at(Some("p1")), at(Some("p2")), "two changes of one transaction (same version) differ");
        let copy = |v| document_record("db.c", &target, &DocumentWrite { version: v, ..write(WriteOp::Index(b"{}".to_vec()), Operation::Copy, None) }).key;
        assert_eq!(copy(1), copy(1));
        assert_ne!(copy(1), copy(2));
    }

    #[test]
    fn a_later_different_dead_letter_of_a_document_gets_a_key_of_its_own() {
        let key = |reason: &str, document: Option<&str>| {
            let rejected = Rejected { document: document.map(str::to_string), ..Rejected::new("5", reason) };
            dead_letter_records("dlq", "db.c", "idx", &[rejected]).pop().unwrap().key
        };
        let first = key("mapper_parsing_exception: x", Some(r#"{"x":"a"}"#));
        assert_eq!(first, key("mapper_parsing_exception: x", Some(r#"{"x":"a"}"#)), "the same dead letter again (a replay) keeps its key");
        assert_ne!(first, key("mapper_parsing_exception: x", Some(r#"{"x":"b"}"#)), "the document changed and failed again");
        assert_ne!(first, key("mapper_parsing_exception: y", Some(r#"{"x":"a"}"#)));
        assert_ne!(key("too large", None), key("too large", Some("{}")));
        assert_ne!(first, dead_letter_records("dlq", "db.d", "idx", &[Rejected::new("5", "mapper_parsing_exception: x")])[0].key);
    }

    #[test]
    fn dead_letters_and_index_actions_are_records_too() {
        let dl = dead_letter_records("dlq", "db.c", "idx", &[Rejected::new("5", "mapper_parsing_exception")]);
        let v = parse(&dl[0]);
        assert_eq!(
            (v["operation"].as_str(), v["index"].as_str(), v["id"].as_str(), v["action"].as_str()),
            (Some("deadLetter"), Some("dlq"), Some("db.c:5"), Some("index"))
        );
        assert_eq!(v["document"]["reason"], "mapper_parsing_exception");
        let change = IndexChange {
            namespace: "db.c".into(),
            version: 9,
            action: IndexAction::SwapAlias { alias: "idx".into(), index: "idx-1".into(), replaces: "idx".into(), extra_aliases: vec![] },
        };
        assert_eq!(
            parse(&index_change_record(&change)),
            json!({"operation":"swapAlias","namespace":"db.c","index":"idx-1","alias":"idx","replaces":"idx","action":null,"version":9})
        );
    }
}
