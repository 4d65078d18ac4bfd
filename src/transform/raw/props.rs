//! Property tests: generated BSON documents (every type, deep nesting, odd keys, repeated keys,
//! extreme numbers, invalid UTF-8, corrupted bytes) and generated field rules. The raw converter
//! never panics, writes valid JSON, keeps the exact values exact, and equals the `Document`-based
//! converter (JSON text, warnings, `_id`, rejections).
//!
//! `cargo test transform::raw` runs the default case count (quick); for a longer run:
//! `PROPTEST_CASES=20000 cargo test --release transform::raw::props`.

use std::str::FromStr;

use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Bson, DateTime, Decimal128, Document, RawDocument};
use proptest::prelude::*;
use serde_json::Value;

use super::RawConverter;
use crate::transform::{index_write_at, AddedValue, ConvertOptions, ConvertWarning, DocumentWrite, FieldRules, Rejected};

/// A generated BSON value, encoded by hand so that what `bson` would never write can be
/// written: repeated keys, invalid UTF-8, any Decimal128 bits.
#[derive(Debug, Clone)]
pub(super) enum G {
    Double(f64),
    Str(Vec<u8>),
    Doc(Vec<(Vec<u8>, G)>),
    Array(Vec<G>),
    Binary(u8, Vec<u8>),
    Undefined,
    Oid([u8; 12]),
    Bool(bool),
    Date(i64),
    Null,
    Regex(String, String),
    DbPointer(Vec<u8>, [u8; 12]),
    Code(Vec<u8>),
    Symbol(Vec<u8>),
    CodeWithScope(Vec<u8>, Vec<(Vec<u8>, G)>),
    Int32(i32),
    Timestamp(u32, u32),
    Int64(i64),
    Decimal([u8; 16]),
    MinKey,
    MaxKey,
}

impl G {
    fn tag(&self) -> u8 {
        match self {
            G::Double(_) => 0x01,
            G::Str(_) => 0x02,
            G::Doc(_) => 0x03,
            G::Array(_) => 0x04,
            G::Binary(..) => 0x05,
            G::Undefined => 0x06,
            G::Oid(_) => 0x07,
            G::Bool(_) => 0x08,
            G::Date(_) => 0x09,
            G::Null => 0x0a,
            G::Regex(..) => 0x0b,
            G::DbPointer(..) => 0x0c,
            G::Code(_) => 0x0d,
            G::Symbol(_) => 0x0e,
            G::CodeWithScope(..) => 0x0f,
            G::Int32(_) => 0x10,
            G::Timestamp(..) => 0x11,
            G::Int64(_) => 0x12,
            G::Decimal(_) => 0x13,
            G::MinKey => 0xff,
            G::MaxKey => 0x7f,
        }
    }
}

/// The BSON bytes of a document with these fields.
pub(super) fn encode(fields: &[(Vec<u8>, G)]) -> Vec<u8> {
    let mut out = vec![0; 4];
    for (key, value) in fields {
        out.push(value.tag());
        cstring(&mut out, key);
        encode_value(&mut out, value);
    }
    out.push(0);
    let len = out.len() as i32;
    out[..4].copy_from_slice(&len.to_le_bytes());
    out
}

fn cstring(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend(bytes.iter().copied().filter(|&b| b != 0));
    out.push(0);
}

fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as i32 + 1).to_le_bytes());
    out.extend_from_slice(bytes);
    out.push(0);
}

fn encode_value(out: &mut Vec<u8>, value: &G) {
    match value {
        G::Double(f) => out.extend_from_slice(&f.to_le_bytes()),
        G::Str(s) | G::Code(s) | G::Symbol(s) => string(out, s),
        G::Doc(fields) => out.extend(encode(fields)),
        G::Array(items) => {
            let fields: Vec<(Vec<u8>, G)> = items.iter().enumerate().map(|(i, v)| (i.to_string().into_bytes(), v.clone())).collect();
            out.extend(encode(&fields));
        }
        G::Binary(subtype, bytes) if *subtype == 0x02 => {
            out.extend_from_slice(&(bytes.len() as i32 + 4).to_le_bytes());
            out.push(0x02);
            out.extend_from_slice(&(bytes.len() as i32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        G::Binary(subtype, bytes) => {
            out.extend_from_slice(&(bytes.len() as i32).to_le_bytes());
            out.push(*subtype);
            out.extend_from_slice(bytes);
        }
        G::Undefined | G::Null | G::MinKey | G::MaxKey => {}
        G::Oid(bytes) => out.extend_from_slice(bytes),
        G::Bool(b) => out.push(u8::from(*b)),
        G::Date(ms) => out.extend_from_slice(&ms.to_le_bytes()),
        G::Regex(pattern, options) => {
            cstring(out, pattern.as_bytes());
            cstring(out, options.as_bytes());
        }
        G::DbPointer(ns, id) => {
            string(out, ns);
            out.extend_from_slice(id);
        }
        G::CodeWithScope(code, scope) => {
            let scope = encode(scope);
            out.extend_from_slice(&((4 + 4 + code.len() + 1 + scope.len()) as i32).to_le_bytes());
            string(out, code);
            out.extend(scope);
        }
        G::Int32(n) => out.extend_from_slice(&n.to_le_bytes()),
        G::Timestamp(time, increment) => {
            out.extend_from_slice(&increment.to_le_bytes());
            out.extend_from_slice(&time.to_le_bytes());
        }
        G::Int64(n) => out.extend_from_slice(&n.to_le_bytes()),
        G::Decimal(bytes) => out.extend_from_slice(bytes),
    }
}

// ---- strategies ----

const KEYS: &[&str] = &[
    "a",
    "b",
    "c",
    "name",
    "items",
    "sku",
    "price",
    "x",
    "y",
    "_id",
    "mongo_id",
    "",
    ".",
    "..",
    "a.b",
    ".a",
    "a.",
    "$date",
    "$oid",
    "$numberLong",
    "$numberDecimal",
    "$binary",
    "$regex",
    "$x",
    "é",
    "日本語",
    "🦀",
    "\"",
    "\\",
    "\n",
    "\u{1}",
    "\u{7f}",
    "a_b",
    "a__b",
    "_",
    "0",
    "1",
];

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => proptest::sample::select(KEYS).prop_map(|k| k.as_bytes().to_vec()),
        2 => "[a-c_.$]{0,4}".prop_map(String::into_bytes),
        1 => any::<String>().prop_map(String::into_bytes),
        // Not UTF-8: the reading of the element fails in both converters.
        1 => proptest::collection::vec(any::<u8>(), 1..4),
    ]
}

fn text() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => "[a-z \"\\\\/\u{0}-\u{1f}\u{7f}é日🦀]{0,12}".prop_map(String::into_bytes),
        2 => any::<String>().prop_map(String::into_bytes),
        // Invalid UTF-8 (a lone continuation byte, a truncated sequence, or any bytes).
        1 => prop_oneof![Just(vec![0x80]), Just(b"ok\xc3".to_vec()), proptest::collection::vec(any::<u8>(), 0..6)],
    ]
}

fn double() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => any::<f64>(),
        1 => proptest::sample::select(vec![
            0.0, -0.0, f64::NAN, -f64::NAN, f64::INFINITY, f64::NEG_INFINITY, f64::MIN, f64::MAX, f64::MIN_POSITIVE, 5e-324, -5e-324, 1e300, 1e-300,
            9_007_199_254_740_993.0, 0.1, 1.5, 3.0,
        ]),
        2 => (-1000..1000i32).prop_map(f64::from),
    ]
}

fn int64() -> impl Strategy<Value = i64> {
    prop_oneof![
        3 => any::<i64>(),
        1 => proptest::sample::select(vec![i64::MIN, i64::MAX, 0, -1, 1 << 53, (1 << 53) + 1, -(1 << 53) - 1, i64::from(i32::MAX) + 1]),
        2 => -1000..1000i64,
    ]
}

fn date() -> impl Strategy<Value = i64> {
    use crate::transform::bson_to_json::{MAX_RFC3339_MILLIS, MIN_RFC3339_MILLIS};
    prop_oneof![
        3 => MIN_RFC3339_MILLIS - 5..=MAX_RFC3339_MILLIS + 5,
        2 => -100_000_000_000_000i64..4_000_000_000_000,
        1 => any::<i64>(),
        1 => proptest::sample::select(vec![MIN_RFC3339_MILLIS, MIN_RFC3339_MILLIS - 1, MAX_RFC3339_MILLIS, MAX_RFC3339_MILLIS + 1, 0, -1, 951_782_400_000, i64::MIN, i64::MAX]),
    ]
}

fn decimal() -> impl Strategy<Value = [u8; 16]> {
    let parsed = proptest::sample::select(vec![
        "0",
        "-0",
        "1.5",
        "1.23E+5",
        "12345678901234567890.123456789",
        "NaN",
        "-NaN",
        "Infinity",
        "-Infinity",
        "1E+400",
        "1E-6176",
        "9.999999999999999999999999999999999E+6144",
        "0.000001",
        "-1E-7",
        "123",
    ])
    .prop_map(|s| Decimal128::from_str(s).map(|d| d.bytes()).unwrap_or([0; 16]));
    prop_oneof![2 => parsed, 1 => any::<[u8; 16]>()]
}

fn binary() -> impl Strategy<Value = G> {
    let subtype = proptest::sample::select(vec![0x00u8, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x80, 0xff]);
    let bytes = prop_oneof![proptest::collection::vec(any::<u8>(), 16..=16), proptest::collection::vec(any::<u8>(), 0..40)];
    (subtype, bytes).prop_map(|(s, b)| G::Binary(s, b))
}

fn regex_part() -> impl Strategy<Value = String> {
    "[a-z^$.*/\\\\\"é]{0,6}"
}

fn leaf() -> impl Strategy<Value = G> {
    prop_oneof![
        3 => double().prop_map(G::Double),
        4 => text().prop_map(G::Str),
        1 => binary(),
        1 => Just(G::Undefined),
        1 => any::<[u8; 12]>().prop_map(G::Oid),
        1 => any::<bool>().prop_map(G::Bool),
        2 => date().prop_map(G::Date),
        1 => Just(G::Null),
        1 => (regex_part(), "[imsxlu]{0,4}").prop_map(|(p, o)| G::Regex(p, o)),
        1 => (text(), any::<[u8; 12]>()).prop_map(|(n, i)| G::DbPointer(n, i)),
        1 => text().prop_map(G::Code),
        1 => text().prop_map(G::Symbol),
        2 => any::<i32>().prop_map(G::Int32),
        1 => (any::<u32>(), any::<u32>()).prop_map(|(t, i)| G::Timestamp(t, i)),
        3 => int64().prop_map(G::Int64),
        2 => decimal().prop_map(G::Decimal),
        1 => Just(G::MinKey),
        1 => Just(G::MaxKey),
    ]
}

/// Fields of a document; a third of the documents repeat a key.
fn fields(value: impl Strategy<Value = G> + Clone) -> impl Strategy<Value = Vec<(Vec<u8>, G)>> {
    (proptest::collection::vec((key(), value.clone()), 0..6), proptest::option::weighted(0.05, (any::<prop::sample::Index>(), value))).prop_map(
        |(mut fields, repeat)| {
            if let (Some((at, value)), false) = (repeat, fields.is_empty()) {
                let key = fields[at.index(fields.len())].0.clone();
                fields.push((key, value));
            }
            fields
        },
    )
}

pub(super) fn value() -> BoxedStrategy<G> {
    leaf()
        .prop_recursive(8, 96, 6, |inner| {
            prop_oneof![
                3 => fields(inner.clone()).prop_map(G::Doc),
                2 => proptest::collection::vec(inner.clone(), 0..6).prop_map(G::Array),
                1 => (text(), fields(inner)).prop_map(|(c, s)| G::CodeWithScope(c, s)),
            ]
        })
        .boxed()
}

fn id() -> impl Strategy<Value = Option<G>> {
    prop_oneof![
        4 => any::<[u8; 12]>().prop_map(|b| Some(G::Oid(b))),
        2 => text().prop_map(|s| Some(G::Str(s))),
        1 => Just(Some(G::Str(vec![b'x'; 513]))),
        1 => int64().prop_map(|n| Some(G::Int64(n))),
        1 => any::<i32>().prop_map(|n| Some(G::Int32(n))),
        1 => double().prop_map(|f| Some(G::Double(f))),
        1 => value().prop_map(Some),
        1 => Just(None),
    ]
}

/// A top-level document: an `_id` (or none) somewhere among the fields.
pub(super) fn document() -> impl Strategy<Value = Vec<(Vec<u8>, G)>> {
    (fields(value()), id(), any::<prop::sample::Index>()).prop_map(|(mut fields, id, at)| {
        if let Some(id) = id {
            fields.insert(at.index(fields.len() + 1), (b"_id".to_vec(), id));
        }
        fields
    })
}

/// Paths through the generated fields (array levels skipped, as the rules see them).
fn paths_of(fields: &[(Vec<u8>, G)], prefix: &str, out: &mut Vec<String>) {
    for (key, value) in fields {
        let Ok(key) = std::str::from_utf8(key) else { continue };
        let path = if prefix.is_empty() { key.to_owned() } else { format!("{prefix}.{key}") };
        out.push(path.clone());
        let mut value = value;
        while let G::Array(items) = value {
            match items.first() {
                Some(first) => value = first,
                None => break,
            }
        }
        if let G::Doc(children) = value {
            paths_of(children, &path, out);
        }
    }
}

fn path_choice(paths: Vec<String>) -> impl Strategy<Value = String> + Clone {
    let mut pool = paths;
    pool.extend(["a", "a.b", "items.sku", "x.y", "", "mongo_id", "nothing.here"].map(String::from));
    proptest::sample::select(pool)
}

fn added_value() -> impl Strategy<Value = AddedValue> {
    prop_oneof![
        3 => proptest::sample::select(vec![
            serde_json::json!("shop.orders"),
            serde_json::json!(1),
            serde_json::json!(null),
            serde_json::json!({"k": {"deep": [1, 2]}, "e": {}}),
            serde_json::json!({}),
            serde_json::json!([{"a": 1}]),
            serde_json::json!(9_007_199_254_740_993_i64),
        ]).prop_map(AddedValue::Constant),
        1 => Just(AddedValue::SyncedAt),
        1 => Just(AddedValue::Namespace),
    ]
}

fn rules(paths: Vec<String>) -> impl Strategy<Value = FieldRules> {
    let path = path_choice(paths);
    let list = |n| proptest::collection::vec(path.clone(), 0..n);
    (
        prop_oneof![2 => Just(vec![]), 1 => list(4)],
        prop_oneof![1 => Just(vec![]), 1 => list(4)],
        prop_oneof![1 => Just(vec![]), 1 => proptest::collection::vec((path.clone(), path.clone()), 0..4)],
        prop_oneof![2 => Just(vec![]), 1 => proptest::collection::vec((path.clone(), added_value()), 0..3)],
        prop_oneof![3 => Just(None), 1 => proptest::sample::select(vec!["_", ".", "", "__"]).prop_map(|s| Some(s.to_owned()))],
    )
        .prop_map(|(include, exclude, rename, add, flatten)| FieldRules { include, exclude, rename, add, flatten })
}

fn options() -> impl Strategy<Value = ConvertOptions> {
    (any::<bool>(), prop_oneof![3 => Just(None), 1 => proptest::sample::select(vec!["mongo_id", "a", "_id", "", "x.y"]).prop_map(|s| Some(s.to_owned()))])
        .prop_map(|(decimal_as_number, keep_id_as)| ConvertOptions { decimal_as_number, keep_id_as })
}

/// A document, options and rules over the document's own paths.
fn case() -> impl Strategy<Value = (Vec<(Vec<u8>, G)>, ConvertOptions, FieldRules)> {
    document().prop_flat_map(|doc| {
        let mut paths = Vec::new();
        paths_of(&doc, "", &mut paths);
        (Just(doc), options(), prop_oneof![1 => Just(FieldRules::default()), 2 => rules(paths)])
    })
}

// ---- properties ----

const NOW: i64 = 1_704_164_645_678;

type Outcome = (Result<DocumentWrite, Rejected>, Vec<ConvertWarning>);

fn raw_outcome(bytes: &[u8], options: &ConvertOptions, rules: &FieldRules) -> Option<Outcome> {
    let doc = RawDocument::from_bytes(bytes).ok()?;
    let mut warnings = vec![ConvertWarning { path: "earlier".into(), reason: "kept".into() }];
    let result = RawConverter::new(options, rules).index_write_at(doc, 7, &mut warnings, DateTime::from_millis(NOW));
    Some((result, warnings))
}

fn reference_outcome(bytes: &[u8], options: &ConvertOptions, rules: &FieldRules) -> Option<Outcome> {
    let doc = Document::try_from(RawDocument::from_bytes(bytes).ok()?).ok()?;
    let mut warnings = vec![ConvertWarning { path: "earlier".into(), reason: "kept".into() }];
    let result = index_write_at(&doc, 7, options, rules, &mut warnings, DateTime::from_millis(NOW));
    Some((result, warnings))
}

/// An outcome with the body as text, for failure messages.
fn readable(outcome: &Outcome) -> (Result<(String, String), Rejected>, Vec<ConvertWarning>) {
    let result = outcome.0.clone().map(|w| match w.op {
        crate::transform::WriteOp::Index(body) => (w.id, String::from_utf8_lossy(&body).into_owned()),
        crate::transform::WriteOp::Delete => (w.id, "delete".into()),
    });
    (result, outcome.1.clone())
}

/// The raw converter against the reference on `bytes`; both must agree on whether it is BSON.
fn check_same(bytes: &[u8], options: &ConvertOptions, rules: &FieldRules) -> Result<Option<Outcome>, TestCaseError> {
    let Some(raw) = raw_outcome(bytes, options, rules) else { return Ok(None) };
    match reference_outcome(bytes, options, rules) {
        Some(reference) => {
            prop_assert_eq!(readable(&raw), readable(&reference));
            prop_assert_eq!(&raw, &reference);
            if let Ok(DocumentWrite { op: crate::transform::WriteOp::Index(body), .. }) = &raw.0 {
                let parsed: Result<Value, _> = serde_json::from_slice(body);
                prop_assert!(parsed.as_ref().is_ok_and(Value::is_object), "not a JSON object: {}", String::from_utf8_lossy(body));
            }
        }
        None => {
            let rejected = raw.0.as_ref().err();
            prop_assert!(rejected.is_some_and(|r| r.reason.starts_with("document ") && r.document.is_none()), "not BSON, yet {:?}", raw.0);
            prop_assert_eq!(raw.1.len(), 1, "no warnings for a rejected document");
        }
    }
    Ok(Some(raw))
}

/// The JSON a value converts to, when the README documents it as exact.
fn exact(value: &G, options: &ConvertOptions) -> Option<Value> {
    Some(match value {
        G::Int32(n) => Value::from(*n),
        G::Int64(n) => Value::from(*n),
        G::Decimal(bytes) if !options.decimal_as_number => Value::String(Decimal128::from_bytes(*bytes).to_string()),
        G::Date(ms) => match DateTime::from_millis(*ms).try_to_rfc3339_string() {
            Ok(_) if (crate::transform::bson_to_json::MIN_RFC3339_MILLIS..=crate::transform::bson_to_json::MAX_RFC3339_MILLIS).contains(ms) => {
                let mut out = Vec::new();
                super::walk::write_date(&mut out, *ms);
                serde_json::from_slice(&out).ok()?
            }
            _ => Value::from(*ms),
        },
        G::Oid(bytes) => Value::String(ObjectId::from_bytes(*bytes).to_hex()),
        _ => return None,
    })
}

/// Every exact value of `fields` at its place in `json`, a document without repeated keys.
fn check_exact(fields: &[(Vec<u8>, G)], json: &serde_json::Map<String, Value>, options: &ConvertOptions, top: bool) -> Result<(), TestCaseError> {
    for (key, value) in fields {
        let key = String::from_utf8(key.clone()).expect("keys are UTF-8 here");
        if top && (key == "_id" || Some(&key) == options.keep_id_as.as_ref()) {
            continue;
        }
        match json.get(&key) {
            Some(json) => check_exact_value(value, json, options)?,
            None => prop_assert!(exact(value, options).is_none(), "{} dropped", key),
        }
    }
    Ok(())
}

fn check_exact_value(value: &G, json: &Value, options: &ConvertOptions) -> Result<(), TestCaseError> {
    match (value, json) {
        (G::Doc(fields), Value::Object(map)) => check_exact(fields, map, options, false),
        (G::Array(items), Value::Array(values)) => items.iter().zip(values).try_for_each(|(v, j)| check_exact_value(v, j, options)),
        (value, json) => match exact(value, options) {
            Some(expected) => {
                prop_assert_eq!(json, &expected, "{:?}", value);
                if let (G::Date(ms), Value::String(text)) = (value, json) {
                    prop_assert_eq!(DateTime::parse_rfc3339_str(text).map(|d| d.timestamp_millis()).ok(), Some(*ms));
                }
                Ok(())
            }
            None => Ok(()),
        },
    }
}

fn utf8_keys_unique(fields: &[(Vec<u8>, G)]) -> bool {
    let mut seen = std::collections::HashSet::new();
    fields.iter().all(|(k, v)| std::str::from_utf8(k).is_ok() && seen.insert(k.clone()) && value_keys_unique(v))
}

/// Documents at any depth, also inside arrays of arrays, have UTF-8 keys without repeats.
fn value_keys_unique(value: &G) -> bool {
    match value {
        G::Doc(f) => utf8_keys_unique(f),
        G::Array(items) => items.iter().all(value_keys_unique),
        _ => true,
    }
}

proptest! {
    // 256 cases unless PROPTEST_CASES says otherwise. Failures are not saved to a file: each
    // one found became a unit test in `tests.rs`.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    /// Without rules: same output as the reference, valid JSON, exact values exact, ids exact.
    #[test]
    fn raw_equals_reference_and_keeps_exact_values(doc in document(), options in options()) {
        let bytes = encode(&doc);
        let Some((result, _)) = check_same(&bytes, &options, &FieldRules::default())? else { return Ok(()) };
        if let Ok(write) = &result {
            if utf8_keys_unique(&doc) {
                let crate::transform::WriteOp::Index(body) = &write.op else { unreachable!() };
                let json: serde_json::Map<String, Value> = serde_json::from_slice(body).expect("checked");
                check_exact(&doc, &json, &options, true)?;
                match doc.iter().find(|(k, _)| k == b"_id").map(|(_, v)| v) {
                    Some(G::Oid(bytes)) => prop_assert_eq!(ObjectId::parse_str(&write.id).ok(), Some(ObjectId::from_bytes(*bytes))),
                    Some(G::Int64(n)) => prop_assert_eq!(write.id.parse::<i64>().ok(), Some(*n)),
                    Some(G::Int32(n)) => prop_assert_eq!(write.id.parse::<i32>().ok(), Some(*n)),
                    Some(G::Str(s)) => prop_assert_eq!(write.id.as_bytes(), s.as_slice()),
                    Some(G::Decimal(bytes)) => {
                        // By value: a non-canonical encoding reads back as the canonical one.
                        let back = Bson::try_from(serde_json::from_str::<Value>(&write.id).expect("extended JSON")).ok();
                        let back = back.and_then(|b| if let Bson::Decimal128(d) = b { Some(d.to_string()) } else { None });
                        prop_assert_eq!(back, Some(Decimal128::from_bytes(*bytes).to_string()));
                    }
                    Some(G::Date(ms)) => prop_assert_eq!(Bson::try_from(serde_json::from_str::<Value>(&write.id).expect("extended JSON")).ok(), Some(Bson::DateTime(DateTime::from_millis(*ms)))),
                    _ => {}
                }
            }
        }
    }

    /// Field rules (include, exclude, rename, add, flatten) over the document's own paths.
    #[test]
    fn raw_equals_reference_through_field_rules((doc, options, rules) in case()) {
        check_same(&encode(&doc), &options, &rules)?;
    }

    /// Flattened, every exact value is at its joined name.
    #[test]
    fn flattening_keeps_exact_values(doc in fields(value())) {
        let doc = plain_keys(doc);
        let mut all = doc.clone();
        all.push((b"_id".to_vec(), G::Int32(1)));
        let rules = FieldRules { flatten: Some("/".into()), ..Default::default() };
        let options = ConvertOptions::default();
        let Some((Ok(write), _)) = check_same(&encode(&all), &options, &rules)? else { return Ok(()) };
        let crate::transform::WriteOp::Index(body) = &write.op else { unreachable!() };
        let json: serde_json::Map<String, Value> = serde_json::from_slice(body).expect("checked");
        let mut leaves = Vec::new();
        flat_leaves(&doc, "", &mut leaves);
        for (name, value) in leaves {
            if let Some(expected) = exact(value, &options) {
                prop_assert_eq!(json.get(&name), Some(&expected), "{}", name);
            }
        }
    }

    /// Routing values are read from raw documents as from `Document`s.
    #[test]
    fn routing_values_equal_the_reference((doc, _, _) in case(), extra in path_choice(vec![])) {
        let bytes = encode(&doc);
        let Some(reference) = RawDocument::from_bytes(&bytes).ok().and_then(|raw| Document::try_from(raw).ok()) else { return Ok(()) };
        let raw = RawDocument::from_bytes(&bytes).expect("read above");
        let mut paths = vec![extra];
        paths_of(&doc, "", &mut paths);
        for path in paths {
            prop_assert_eq!(super::routing_value_raw(raw, &path), crate::transform::routing_value(&reference, &path), "{}", path);
        }
    }

    /// Corrupted bytes: never a panic, and both converters agree on what is BSON.
    #[test]
    fn corrupted_documents_are_rejected_not_panicked_on(
        (doc, options, rules) in case(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut bytes = encode(&doc);
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            // Keep the length header mostly right, so the damage is met inside the walk.
            if i >= 4 {
                bytes[i] = byte;
            }
        }
        if let Some(cut) = cut {
            let len = cut.index(bytes.len()).max(5);
            bytes.truncate(len);
            bytes[..4].copy_from_slice(&(len as i32).to_le_bytes());
        }
        check_same(&bytes, &options, &rules)?;
    }
}

/// The fields whose keys flatten to distinct names (UTF-8, not empty, no "/" or NUL, not repeated),
/// at every level.
fn plain_keys(fields: Vec<(Vec<u8>, G)>) -> Vec<(Vec<u8>, G)> {
    let mut seen = std::collections::HashSet::new();
    fields
        .into_iter()
        .filter(|(k, _)| std::str::from_utf8(k).is_ok() && !k.is_empty() && !k.contains(&b'/') && !k.contains(&0) && k != b"_id" && seen.insert(k.clone()))
        .map(|(k, v)| match v {
            G::Doc(children) => (k, G::Doc(plain_keys(children))),
            other => (k, other),
        })
        .collect()
}

/// Leaves outside arrays (whole arrays are leaves) at their flattened names.
fn flat_leaves<'g>(fields: &'g [(Vec<u8>, G)], prefix: &str, out: &mut Vec<(String, &'g G)>) {
    for (key, value) in fields {
        let key = String::from_utf8_lossy(key);
        let name = if prefix.is_empty() { key.into_owned() } else { format!("{prefix}/{key}") };
        match value {
            G::Doc(children) if !children.is_empty() => flat_leaves(children, &name, out),
            other => out.push((name, other)),
        }
    }
}
