//! Encodes document writes as `_bulk` NDJSON.

use crate::transform::{DocumentWrite, WriteOp};

/// `external_gte` rather than `external`: changes of one transaction share a cluster time,
/// hence a version, and the later of them must still be applied (replays converge too).
const VERSION_TYPE: &str = "external_gte";

/// Appends the action line (and source line for index writes) of one write.
pub fn encode_write(index: &str, write: &DocumentWrite, out: &mut Vec<u8>) {
    let action = match write.op {
        WriteOp::Index(_) => "index",
        WriteOp::Delete => "delete",
    };
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(action.as_bytes());
    out.extend_from_slice(b"\":{\"_index\":");
    serde_json::to_writer(&mut *out, index).expect("writing to a Vec cannot fail");
    out.extend_from_slice(b",\"_id\":");
    serde_json::to_writer(&mut *out, &write.id).expect("writing to a Vec cannot fail");
    out.extend_from_slice(format!(",\"version\":{},\"version_type\":\"{VERSION_TYPE}\"}}}}\n", write.version).as_bytes());
    if let WriteOp::Index(source) = &write.op {
        out.extend_from_slice(source);
        out.push(b'\n');
    }
}

/// Bytes `encode_write` adds for this write, without encoding it: exact up to the version's
/// digits (counted as 20) and JSON escapes in the id (rare; an id is at most 512 bytes).
pub fn encoded_len(index: &str, write: &DocumentWrite) -> usize {
    // {"delete":{"_index":"…","_id":"…","version":…,"version_type":"external_gte"}}\n
    let fixed = 89 + "delete".len() + index.len() + write.id.len();
    match &write.op {
        WriteOp::Index(source) => fixed + source.len() + 1,
        WriteOp::Delete => fixed,
    }
}

pub fn encode_all<'a>(index: &str, writes: impl IntoIterator<Item = &'a DocumentWrite>) -> Vec<u8> {
    let mut out = Vec::new();
    for w in writes {
        encode_write(index, w, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_delete_lines_carry_external_versions() {
        let writes = [
            DocumentWrite { id: "a\"1".into(), version: 7, op: WriteOp::Index(br#"{"x":1}"#.to_vec()) },
            DocumentWrite { id: "b".into(), version: 9, op: WriteOp::Delete },
        ];
        let body = String::from_utf8(encode_all("idx", &writes)).unwrap();
        assert_eq!(
            body,
            concat!(
                r#"{"index":{"_index":"idx","_id":"a\"1","version":7,"version_type":"external_gte"}}"#, "\n",
                r#"{"x":1}"#, "\n",
                r#"{"delete":{"_index":"idx","_id":"b","version":9,"version_type":"external_gte"}}"#, "\n",
            )
        );
        for line in body.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }

    #[test]
    fn estimated_length_is_never_below_the_real_one_for_plain_ids() {
        let w = DocumentWrite { id: "65f0c0ffee".into(), version: i64::MAX, op: WriteOp::Index(b"{}".to_vec()) };
        let mut out = Vec::new();
        encode_write("some-index", &w, &mut out);
        assert!(encoded_len("some-index", &w) >= out.len());
    }
}
