use mongodb::bson::{doc, rawdoc, DateTime, Document, RawDocument, RawDocumentBuf};

use super::props::{encode, G};
use super::walk::{write_date, MAX_DEPTH};
use super::*;
use crate::transform::bson_to_json::{MAX_RFC3339_MILLIS, MIN_RFC3339_MILLIS};
use crate::transform::index_write_at;
use crate::transform::AddedValue;

const NOW: DateTime = DateTime::from_millis(1_704_164_645_678);

fn raw(doc: &RawDocument, options: &ConvertOptions, rules: &FieldRules) -> (Result<DocumentWrite, Rejected>, Vec<ConvertWarning>) {
    let mut warnings = Vec::new();
    let result = RawConverter::new(options, rules).index_write_at(doc, 1, &mut warnings, NOW);
    (result, warnings)
}

fn reference(doc: &Document, options: &ConvertOptions, rules: &FieldRules) -> (Result<DocumentWrite, Rejected>, Vec<ConvertWarning>) {
    let mut warnings = Vec::new();
    let result = index_write_at(doc, 1, options, rules, &mut warnings, NOW);
    (result, warnings)
}

fn body(result: &Result<DocumentWrite, Rejected>) -> String {
    match &result.as_ref().expect("converted").op {
        WriteOp::Index(body) => String::from_utf8(body.clone()).expect("UTF-8"),
        WriteOp::Delete => panic!("not an index write"),
    }
}

#[test]
fn a_typical_document_converts_as_the_reference_does() {
    let d = doc! {
        "seq": 3, "_id": mongodb::bson::oid::ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap(), "name": "river \"quoted\" é",
        "seq64": 9_007_199_254_740_993_i64, "rating": 4.25, "nan": f64::NAN, "at": DateTime::from_millis(1_704_164_645_678),
        "balance": mongodb::bson::Decimal128::from_bytes([1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x3c, 0x30]),
        "tags": ["a", f64::INFINITY], "customer": { "address": { "geo": { "lat": -12.5 } }, "..bad": 1 },
    };
    let bytes = RawDocumentBuf::from_document(&d).unwrap();
    let (got, warnings) = raw(&bytes, &ConvertOptions::default(), &FieldRules::default());
    assert_eq!((got.clone(), warnings.clone()), reference(&d, &ConvertOptions::default(), &FieldRules::default()));
    assert_eq!(got.as_ref().unwrap().id, "65a1b2c3d4e5f60718293a4b");
    assert_eq!(
        body(&got),
        r#"{"seq":3,"name":"river \"quoted\" é","seq64":9007199254740993,"rating":4.25,"at":"2024-01-02T03:04:05.678Z","balance":"0.01","tags":["a",null],"customer":{"address":{"geo":{"lat":-12.5}},"..bad":1}}"#
    );
    let paths: Vec<&str> = warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(paths, ["nan", "tags.1", "customer...bad"]);
}

#[test]
fn sub_documents_that_look_like_extended_json_stay_documents() {
    // The driver's serde path reads these as a date, an ObjectId and a number.
    let d = rawdoc! { "_id": 1, "x": { "$date": { "$numberLong": "5" } }, "y": { "$oid": "65a1b2c3d4e5f60718293a4b" }, "z": { "$numberLong": "7" } };
    let through_serde: Document = mongodb::bson::from_slice(d.as_bytes()).unwrap();
    assert!(matches!(through_serde.get("z"), Some(mongodb::bson::Bson::Int64(7))));
    let (got, _) = raw(&d, &ConvertOptions::default(), &FieldRules::default());
    assert_eq!(body(&got), r#"{"x":{"$date":{"$numberLong":"5"}},"y":{"$oid":"65a1b2c3d4e5f60718293a4b"},"z":{"$numberLong":"7"}}"#);
}

#[test]
fn a_string_that_is_not_utf8_rejects_the_document_naming_the_path() {
    let bytes = encode(&[(b"_id".to_vec(), G::Int32(4)), (b"a".to_vec(), G::Doc(vec![(b"b".to_vec(), G::Str(b"ok\xc3".to_vec()))]))]);
    let (got, warnings) = raw(RawDocument::from_bytes(&bytes).unwrap(), &ConvertOptions::default(), &FieldRules::default());
    let rejected = got.unwrap_err();
    assert_eq!(rejected.id, "4");
    assert!(rejected.reason.contains("not valid BSON") && rejected.reason.contains("(at a.b)"), "{}", rejected.reason);
    assert!(warnings.is_empty());
}

#[test]
fn a_repeated_key_keeps_the_last_value_at_the_first_place() {
    let bytes = encode(&[(b"_id".to_vec(), G::Int32(1)), (b"a".to_vec(), G::Double(f64::NAN)), (b"b".to_vec(), G::Int32(2)), (b"a".to_vec(), G::Int32(3))]);
    let doc = RawDocument::from_bytes(&bytes).unwrap();
    let (got, warnings) = raw(doc, &ConvertOptions::default(), &FieldRules::default());
    assert_eq!(body(&got), r#"{"a":3,"b":2}"#);
    assert!(warnings.is_empty(), "the overwritten NaN is not reported: {warnings:?}");
    assert_eq!((got, warnings), reference(&Document::try_from(doc).unwrap(), &ConvertOptions::default(), &FieldRules::default()));
}

#[test]
fn keep_id_as_over_a_document_field_takes_its_place() {
    let options = ConvertOptions { keep_id_as: Some("mongo_id".into()), ..Default::default() };
    let d = doc! { "a": 1, "mongo_id": "clash", "_id": 5_i64, "z": 2 };
    let bytes = RawDocumentBuf::from_document(&d).unwrap();
    let (got, warnings) = raw(&bytes, &options, &FieldRules::default());
    assert_eq!(body(&got), r#"{"a":1,"mongo_id":5,"z":2}"#);
    assert_eq!((got, warnings), reference(&d, &options, &FieldRules::default()));
}

#[test]
fn ids_are_mapped_and_rejected_as_by_the_reference() {
    for id in [
        mongodb::bson::Bson::String(String::new()),
        mongodb::bson::Bson::String("x".repeat(600)),
        mongodb::bson::Bson::Double(2f64.powi(60)),
        mongodb::bson::Bson::Document(doc! { "b": 1, "a": 2_i64 }),
    ] {
        let d = doc! { "_id": id, "v": f64::NAN };
        let bytes = RawDocumentBuf::from_document(&d).unwrap();
        assert_eq!(raw(&bytes, &ConvertOptions::default(), &FieldRules::default()), reference(&d, &ConvertOptions::default(), &FieldRules::default()));
    }
    let d = doc! { "v": 1 };
    let (got, _) = raw(&RawDocumentBuf::from_document(&d).unwrap(), &ConvertOptions::default(), &FieldRules::default());
    assert_eq!(got.unwrap_err().reason, "document has no _id");
}

#[test]
fn regex_options_are_sorted_as_bson_values_have_them() {
    let bytes = encode(&[(b"_id".to_vec(), G::Int32(1)), (b"r".to_vec(), G::Regex("a.b".into(), "xsmi".into()))]);
    let (got, _) = raw(RawDocument::from_bytes(&bytes).unwrap(), &ConvertOptions::default(), &FieldRules::default());
    assert_eq!(body(&got), r#"{"r":"/a.b/imsx"}"#);
}

#[test]
fn dates_are_written_as_bson_formats_them() {
    let reference = |ms: i64| {
        let seconds = DateTime::from_millis(ms.div_euclid(1000) * 1000).try_to_rfc3339_string().unwrap();
        format!("\"{}.{:03}Z\"", seconds.trim_end_matches('Z'), ms.rem_euclid(1000))
    };
    let days = [0, 1, 59, 60, 365, 366, 10_957, 11_016, 11_017, -1, -719_468, 2_932_896];
    for day in days {
        for ms in [0, 1, 999, 86_399_999] {
            let at = day * 86_400_000 + ms;
            let mut out = Vec::new();
            assert!(write_date(&mut out, at));
            assert_eq!(String::from_utf8(out).unwrap(), reference(at), "{at}");
        }
    }
    for at in [MIN_RFC3339_MILLIS, MAX_RFC3339_MILLIS] {
        let mut out = Vec::new();
        assert!(write_date(&mut out, at));
        assert_eq!(String::from_utf8(out).unwrap(), reference(at));
    }
    assert!(!write_date(&mut Vec::new(), MIN_RFC3339_MILLIS - 1));
    assert!(!write_date(&mut Vec::new(), MAX_RFC3339_MILLIS + 1));
}

/// `{"_id": 1, "a": [[…[]…]]}` with `depth` arrays, as raw bytes (outermost first, no recursion).
fn nested_arrays(depth: usize) -> Vec<u8> {
    let mut doc = vec![0; 4];
    doc.extend_from_slice(&[0x10, b'_', b'i', b'd', 0, 1, 0, 0, 0, 0x04, b'a', 0]);
    for level in (2..=depth).rev() {
        // An array of `level` nested arrays takes 5 + 8 * (level - 1) bytes.
        doc.extend_from_slice(&((5 + 8 * (level - 1)) as i32).to_le_bytes());
        doc.extend_from_slice(&[0x04, b'0', 0]);
    }
    doc.extend_from_slice(&[5, 0, 0, 0, 0]);
    doc.resize(doc.len() + depth, 0);
    let len = doc.len() as i32;
    doc[..4].copy_from_slice(&len.to_le_bytes());
    doc
}

#[test]
fn documents_nested_too_deep_are_rejected_without_exhausting_the_stack() {
    let rules = FieldRules { exclude: vec!["a.x".into()], ..Default::default() };
    for rules in [FieldRules::default(), rules] {
        let deepest = nested_arrays(MAX_DEPTH);
        let (got, _) = raw(RawDocument::from_bytes(&deepest).unwrap(), &ConvertOptions::default(), &rules);
        assert_eq!(body(&got), format!("{{\"a\":{}{}}}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH)));
        let too_deep = nested_arrays(MAX_DEPTH + 1);
        let (got, _) = raw(RawDocument::from_bytes(&too_deep).unwrap(), &ConvertOptions::default(), &rules);
        assert!(got.unwrap_err().reason.contains("nested deeper than 256"));
        // A 1.6 MB document of 200,000 levels, in a thread with tokio's default 2 MiB stack.
        let deep = nested_arrays(200_000);
        let rejected = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || raw(RawDocument::from_bytes(&deep).unwrap(), &ConvertOptions::default(), &rules).0)
            .unwrap()
            .join()
            .expect("no stack overflow")
            .unwrap_err();
        assert_eq!(rejected.id, "1");
        assert!(rejected.reason.contains("nested deeper than 256"), "{}", rejected.reason);
    }
}

#[test]
fn the_convenience_function_matches_the_converter() {
    let d = rawdoc! { "_id": 1, "a": { "b": 1, "c": 2 } };
    let rules = FieldRules { exclude: vec!["a.b".into()], ..Default::default() };
    let got = index_write_raw(&d, 1, &ConvertOptions::default(), &rules, &mut Vec::new());
    assert_eq!(body(&got), r#"{"a":{"c":2}}"#);
}

/// Found by the property tests: a Timestamp converts to `{"t", "i"}`, an object the rules see.
#[test]
fn timestamps_are_objects_for_the_field_rules() {
    let d = doc! { "_id": 1, "a": { "ts": mongodb::bson::Timestamp { time: 7, increment: 2 } } };
    let bytes = RawDocumentBuf::from_document(&d).unwrap();
    for rules in [
        FieldRules { flatten: Some("_".into()), ..Default::default() },
        FieldRules { include: vec!["a.ts.t".into()], ..Default::default() },
        FieldRules { exclude: vec!["a.ts.i".into()], ..Default::default() },
        FieldRules { add: vec![("a.ts.x".into(), AddedValue::Constant(1.into()))], ..Default::default() },
    ] {
        let (got, warnings) = raw(&bytes, &ConvertOptions::default(), &rules);
        assert_eq!((got.clone(), warnings), reference(&d, &ConvertOptions::default(), &rules), "{rules:?}: {}", body(&got));
    }
    let flat = FieldRules { flatten: Some("_".into()), ..Default::default() };
    assert_eq!(body(&raw(&bytes, &ConvertOptions::default(), &flat).0), r#"{"a_ts_t":7,"a_ts_i":2}"#);
}

/// Found by the property tests: a non-canonical Decimal128 `_id` maps to the extended JSON of its
/// value (as the reference does), which reads back as the canonical encoding of that value.
#[test]
fn a_non_canonical_decimal_id_maps_by_value() {
    let mut bits = [0u8; 16];
    bits[15] = 0x60;
    let d = doc! { "_id": mongodb::bson::Decimal128::from_bytes(bits) };
    let bytes = RawDocumentBuf::from_document(&d).unwrap();
    let (got, warnings) = raw(&bytes, &ConvertOptions::default(), &FieldRules::default());
    assert_eq!((got.clone(), warnings), reference(&d, &ConvertOptions::default(), &FieldRules::default()));
    let id = got.unwrap().id;
    let back = mongodb::bson::Bson::try_from(serde_json::from_str::<serde_json::Value>(&id).unwrap()).unwrap();
    assert_eq!(back.to_string(), mongodb::bson::Bson::Decimal128(mongodb::bson::Decimal128::from_bytes(bits)).to_string(), "{id}");
}
