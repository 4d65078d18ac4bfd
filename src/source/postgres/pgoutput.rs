//! The messages of PostgreSQL's built-in `pgoutput` plugin (protocol version 1) that carry row
//! changes, decoded from the bytes of a replication stream's `XLogData`. `Begin` and `Commit`
//! are decoded by the replication client; `Message` and anything newer are passed over.

/// A column of a relation, as the stream describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// Part of the replica identity (the primary key by default).
    pub key: bool,
    pub type_oid: u32,
}

/// A table's description, sent before its first change in a session and after it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub id: u32,
    pub schema: String,
    pub name: String,
    /// `d` default (the primary key), `f` full, `i` an index, `n` nothing.
    pub replica_identity: u8,
    pub columns: Vec<Column>,
}

/// One column's value in a row image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    /// A TOASTed value that the change did not touch: not sent (see REPLICA IDENTITY FULL).
    Unchanged,
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Relation(Relation),
    Insert {
        relation: u32,
        new: Vec<Value>,
    },
    /// `old`: the old key (or the whole old row with REPLICA IDENTITY FULL) when sent.
    Update {
        relation: u32,
        old: Option<Vec<Value>>,
        new: Vec<Value>,
    },
    /// `old`: the key columns (others null), or the whole row with REPLICA IDENTITY FULL.
    Delete {
        relation: u32,
        old: Vec<Value>,
    },
    Truncate {
        relations: Vec<u32>,
    },
    /// Types, origins, logical messages: nothing to apply.
    Other(u8),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("pgoutput message ends early (reading {0})")]
    Truncated(&'static str),
    #[error("pgoutput message has unexpected tag {tag:?} in {at}")]
    Tag { tag: char, at: &'static str },
    #[error("pgoutput text is not UTF-8 in {0}")]
    Utf8(&'static str),
    #[error("binary column values are not requested, yet one came")]
    Binary,
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take(2, what)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }
    /// A NUL-terminated string.
    fn cstr(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let end = self.bytes.iter().position(|&b| b == 0).ok_or(DecodeError::Truncated(what))?;
        let text = std::str::from_utf8(&self.bytes[..end]).map_err(|_| DecodeError::Utf8(what))?.to_string();
        self.bytes = &self.bytes[end + 1..];
        Ok(text)
    }
    fn tuple(&mut self) -> Result<Vec<Value>, DecodeError> {
        let n = self.u16("column count")?;
        (0..n)
            .map(|_| match self.u8("value kind")? {
                b'n' => Ok(Value::Null),
                b'u' => Ok(Value::Unchanged),
                b't' => {
                    let len = self.u32("value length")? as usize;
                    let bytes = self.take(len, "value")?;
                    Ok(Value::Text(std::str::from_utf8(bytes).map_err(|_| DecodeError::Utf8("value"))?.to_string()))
                }
                b'b' => Err(DecodeError::Binary),
                tag => Err(DecodeError::Tag { tag: tag as char, at: "tuple" }),
            })
            .collect()
    }
}

/// Decodes one `XLogData` payload.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader { bytes };
    let tag = r.u8("tag")?;
    Ok(match tag {
        b'R' => {
            let id = r.u32("relation id")?;
            let (schema, name) = (r.cstr("schema")?, r.cstr("relation name")?);
            let replica_identity = r.u8("replica identity")?;
            let n = r.u16("column count")?;
            let columns = (0..n)
                .map(|_| {
                    let flags = r.u8("column flags")?;
                    let name = r.cstr("column name")?;
                    let type_oid = r.u32("column type")?;
                    r.u32("column type modifier")?;
                    Ok(Column { name, key: flags & 1 == 1, type_oid })
                })
                .collect::<Result<_, DecodeError>>()?;
            Message::Relation(Relation { id, schema, name, replica_identity, columns })
        }
        b'I' => {
            let relation = r.u32("relation id")?;
            expect(&mut r, b'N', "insert")?;
            Message::Insert { relation, new: r.tuple()? }
        }
        b'U' => {
            let relation = r.u32("relation id")?;
            let (old, new) = match r.u8("update kind")? {
                b'K' | b'O' => {
                    let old = r.tuple()?;
                    expect(&mut r, b'N', "update")?;
                    (Some(old), r.tuple()?)
                }
                b'N' => (None, r.tuple()?),
                tag => return Err(DecodeError::Tag { tag: tag as char, at: "update" }),
            };
            Message::Update { relation, old, new }
        }
        b'D' => {
            let relation = r.u32("relation id")?;
            match r.u8("delete kind")? {
                b'K' | b'O' => Message::Delete { relation, old: r.tuple()? },
                tag => return Err(DecodeError::Tag { tag: tag as char, at: "delete" }),
            }
        }
        b'T' => {
            let n = r.u32("relation count")?;
            r.u8("truncate options")?;
            Message::Truncate { relations: (0..n).map(|_| r.u32("relation id")).collect::<Result<_, _>>()? }
        }
        other => Message::Other(other),
    })
}

fn expect(r: &mut Reader<'_>, tag: u8, at: &'static str) -> Result<(), DecodeError> {
    match r.u8("tuple tag")? {
        t if t == tag => Ok(()),
        t => Err(DecodeError::Tag { tag: t as char, at }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds messages the way the server lays them out.
    #[derive(Default)]
    struct Bytes(Vec<u8>);

    impl Bytes {
        fn u8(mut self, v: u8) -> Self {
            self.0.push(v);
            self
        }
        fn u16(mut self, v: u16) -> Self {
            self.0.extend(v.to_be_bytes());
            self
        }
        fn u32(mut self, v: u32) -> Self {
            self.0.extend(v.to_be_bytes());
            self
        }
        fn cstr(mut self, s: &str) -> Self {
            self.0.extend(s.as_bytes());
            self.0.push(0);
            self
        }
        fn text(self, s: &str) -> Self {
            let mut b = self.u8(b't').u32(s.len() as u32);
            b.0.extend(s.as_bytes());
            b
        }
    }

    #[test]
    fn a_relation_names_its_columns_and_key() {
        let bytes = Bytes::default().u8(b'R').u32(16384).cstr("public").cstr("orders").u8(b'd').u16(2);
        let bytes = bytes.u8(1).cstr("id").u32(23).u32(u32::MAX).u8(0).cstr("note").u32(25).u32(u32::MAX);
        let expected = Relation {
            id: 16384,
            schema: "public".into(),
            name: "orders".into(),
            replica_identity: b'd',
            columns: vec![Column { name: "id".into(), key: true, type_oid: 23 }, Column { name: "note".into(), key: false, type_oid: 25 }],
        };
        assert_eq!(decode(&bytes.0), Ok(Message::Relation(expected)));
    }

    #[test]
    fn inserts_updates_and_deletes_carry_their_rows() {
        let insert = Bytes::default().u8(b'I').u32(7).u8(b'N').u16(3).text("1").u8(b'n').u8(b'u');
        assert_eq!(decode(&insert.0), Ok(Message::Insert { relation: 7, new: vec![Value::Text("1".into()), Value::Null, Value::Unchanged] }));
        let update = Bytes::default().u8(b'U').u32(7).u8(b'K').u16(1).text("1").u8(b'N').u16(1).text("2");
        assert_eq!(decode(&update.0), Ok(Message::Update { relation: 7, old: Some(vec![Value::Text("1".into())]), new: vec![Value::Text("2".into())] }));
        let plain_update = Bytes::default().u8(b'U').u32(7).u8(b'N').u16(1).text("é");
        assert_eq!(decode(&plain_update.0), Ok(Message::Update { relation: 7, old: None, new: vec![Value::Text("é".into())] }));
        let delete = Bytes::default().u8(b'D').u32(7).u8(b'O').u16(2).text("1").u8(b'n');
        assert_eq!(decode(&delete.0), Ok(Message::Delete { relation: 7, old: vec![Value::Text("1".into()), Value::Null] }));
    }

    #[test]
    fn truncates_list_their_relations() {
        let bytes = Bytes::default().u8(b'T').u32(2).u8(0).u32(7).u32(9);
        assert_eq!(decode(&bytes.0), Ok(Message::Truncate { relations: vec![7, 9] }));
        assert_eq!(decode(&[b'Y', 0, 0]), Ok(Message::Other(b'Y')));
    }

    #[test]
    fn broken_messages_are_errors() {
        assert_eq!(decode(&[]), Err(DecodeError::Truncated("tag")));
        let short = Bytes::default().u8(b'I').u32(7).u8(b'N').u16(1).u8(b't').u32(10);
        assert_eq!(decode(&short.0), Err(DecodeError::Truncated("value")));
        let bad = Bytes::default().u8(b'I').u32(7).u8(b'X');
        assert_eq!(decode(&bad.0), Err(DecodeError::Tag { tag: 'X', at: "insert" }));
        let binary = Bytes::default().u8(b'I').u32(7).u8(b'N').u16(1).u8(b'b');
        assert_eq!(decode(&binary.0), Err(DecodeError::Binary));
    }
}
