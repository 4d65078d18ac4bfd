//! Encodes document writes as `_bulk` NDJSON.

use crate::sink::Target;
use crate::transform::{DocumentWrite, WriteOp};

/// `external_gte` rather than `external`: changes of one transaction share a cluster time,
/// hence a version, and the later of them must still be applied (replays converge too).
const VERSION_TYPE: &str = "external_gte";

/// Appends the action line (and source line for index writes) of one write.
pub fn encode_write(target: &Target, write: &DocumentWrite, out: &mut Vec<u8>) {
    let action = match write.op {
        WriteOp::Index(_) => "index",
        WriteOp::Delete => "delete",
    };
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(action.as_bytes());
    out.extend_from_slice(b"\":{\"_index\":");
    serde_json::to_writer(&mut *out, &target.index).expect("writing to a Vec cannot fail");
    out.extend_from_slice(b",\"_id\":");
    serde_json::to_writer(&mut *out, &write.id).expect("writing to a Vec cannot fail");
    if let Some(routing) = &write.routing {
        out.extend_from_slice(b",\"routing\":");
        serde_json::to_writer(&mut *out, routing).expect("writing to a Vec cannot fail");
    }
    if let (Some(pipeline), WriteOp::Index(_)) = (&target.pipeline, &write.op) {
        out.extend_from_slice(b",\"pipeline\":");
        serde_json::to_writer(&mut *out, pipeline).expect("writing to a Vec cannot fail");
    }
    out.extend_from_slice(format!(",\"version\":{},\"version_type\":\"{VERSION_TYPE}\"}}}}\n", write.version).as_bytes());
    if let WriteOp::Index(source) = &write.op {
        out.extend_from_slice(source);
        out.push(b'\n');
    }
}

/// Bytes `encode_write` adds for this write, without encoding it: exact up to the version's
/// digits (counted as 20) and JSON escapes in the id (rare; an id is at most 512 bytes).
pub fn encoded_len(target: &Target, write: &DocumentWrite) -> usize {
    // {"delete":{"_index":"…","_id":"…","version":…,"version_type":"external_gte"}}\n
    let mut fixed = 89 + "delete".len() + target.index.len() + write.id.len();
    // ,"routing":"…"  ,"pipeline":"…"
    fixed += write.routing.as_ref().map_or(0, |r| 13 + r.len());
    fixed += target.pipeline.as_ref().map_or(0, |p| 14 + p.len());
    match &write.op {
        WriteOp::Index(source) => fixed + source.len() + 1,
        WriteOp::Delete => fixed,
    }
}

pub fn encode_all<'a>(target: &Target, writes: impl IntoIterator<Item = &'a DocumentWrite>) -> Vec<u8> {
    let mut out = Vec::new();
    for w in writes {
        encode_write(target, w, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(id: &str, routing: Option<&str>, version: i64, op: WriteOp) -> DocumentWrite {
        DocumentWrite { id: id.into(), routing: routing.map(Into::into), version, op, operation: Default::default(), position: None }
    }

    #[test]
    fn index_and_delete_lines_carry_external_versions() {
        let writes = [write("a\"1", None, 7, WriteOp::Index(br#"{"x":1}"#.to_vec())), write("b", None, 9, WriteOp::Delete)];
        let body = String::from_utf8(encode_all(&Target::index("idx"), &writes)).unwrap();
        assert_eq!(
            body,
            concat!(
                r#"{"index":{"_index":"idx","_id":"a\"1","version":7,"version_type":"external_gte"}}"#,
                "\n",
                r#"{"x":1}"#,
                "\n",
                r#"{"delete":{"_index":"idx","_id":"b","version":9,"version_type":"external_gte"}}"#,
                "\n",
            )
        );
        for line in body.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }

    #[test]
    fn routing_and_pipeline_go_into_the_action_line() {
        let target = Target { index: "idx".into(), pipeline: Some("enrich".into()) };
        let writes = [write("a", Some("t1"), 1, WriteOp::Index(b"{}".to_vec())), write("b", Some("t1"), 2, WriteOp::Delete)];
        let body = String::from_utf8(encode_all(&target, &writes)).unwrap();
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines[0], r#"{"index":{"_index":"idx","_id":"a","routing":"t1","pipeline":"enrich","version":1,"version_type":"external_gte"}}"#);
        assert_eq!(lines[2], r#"{"delete":{"_index":"idx","_id":"b","routing":"t1","version":2,"version_type":"external_gte"}}"#, "deletes take no pipeline");
    }

    #[test]
    fn estimated_length_is_never_below_the_real_one_for_plain_ids() {
        let target = Target { index: "some-index".into(), pipeline: Some("p".into()) };
        for routing in [None, Some("r-1")] {
            let w = write("65f0c0ffee", routing, i64::MAX, WriteOp::Index(b"{}".to_vec()));
            let mut out = Vec::new();
            encode_write(&target, &w, &mut out);
            assert!(encoded_len(&target, &w) >= out.len());
        }
    }
}
