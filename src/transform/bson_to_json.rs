//! BSON → JSON conversion for Elasticsearch `_source` documents and `_id`s.
//!
//! Lossy or suspicious conversions never fail: they are reported as
//! [`ConvertWarning`]s (dotted path, array indexes as numbers) so the caller
//! can log them, and the document is still indexed.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{Binary, Bson, DateTime, Document, Timestamp};
use serde_json::{json, Map, Number, Value};

#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    /// Emit Decimal128 as a JSON number (via f64: precision beyond ~17
    /// significant digits is lost) instead of its exact decimal string.
    pub decimal_as_number: bool,
    /// Store the converted `_id` in `_source` under this field name.
    pub keep_id_as: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConvertWarning {
    /// Dotted path of the value, array indexes as numbers: "a.b.3.c".
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdError {
    EmptyString,
    TooLong { len: usize },
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::EmptyString => {
                write!(f, "_id is an empty string; Elasticsearch rejects empty ids")
            }
            IdError::TooLong { len } => write!(
                f,
                "_id is {len} bytes once converted; \
                 Elasticsearch ids are limited to {MAX_ES_ID_BYTES} bytes"
            ),
        }
    }
}

impl std::error::Error for IdError {}

const MAX_ES_ID_BYTES: usize = 512;

/// Epoch-millisecond bounds of years 0000..=9999, the range RFC 3339 can render.
/// Checked explicitly because bson clamps out-of-range dates before formatting,
/// which would silently produce a wrong (clamped) date instead of an error.
pub(crate) const MIN_RFC3339_MILLIS: i64 = -62_167_219_200_000; // 0000-01-01T00:00:00.000Z
pub(crate) const MAX_RFC3339_MILLIS: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z

/// Converts a MongoDB document into an Elasticsearch `_source`.
///
/// The top-level `_id` is removed (ES rejects `_id` inside `_source`) unless
/// `opts.keep_id_as` names a field to store its converted value under; that
/// field overwrites a same-named document field, with a warning.
pub fn document_to_source(doc: &Document, opts: &ConvertOptions, warnings: &mut Vec<ConvertWarning>) -> Map<String, Value> {
    let mut source = convert_document(doc, "", true, opts, warnings);
    if let (Some(field), Some(id)) = (&opts.keep_id_as, doc.get("_id")) {
        if let Some(value) = bson_to_json(id, opts, field, warnings) {
            if source.insert(field.clone(), value).is_some() {
                warn(warnings, field, ID_OVERWRITTEN);
            }
        }
    }
    source
}

/// Converts one BSON value found at `path`; `None` means "drop the field"
/// (arrays turn a dropped element into `null` to keep positions stable).
pub fn bson_to_json(value: &Bson, opts: &ConvertOptions, path: &str, warnings: &mut Vec<ConvertWarning>) -> Option<Value> {
    Some(match value {
        Bson::Document(doc) => Value::Object(convert_document(doc, path, false, opts, warnings)),
        Bson::Array(items) => Value::Array(
            items.iter().enumerate().map(|(i, item)| bson_to_json(item, opts, &child_path(path, &i.to_string()), warnings).unwrap_or(Value::Null)).collect(),
        ),
        Bson::ObjectId(oid) => Value::String(oid.to_hex()),
        Bson::DateTime(dt) => datetime_to_json(*dt, path, warnings),
        Bson::Int32(n) => Value::from(*n),
        Bson::Int64(n) => Value::from(*n),
        Bson::Double(f) => match Number::from_f64(*f) {
            Some(n) => Value::Number(n),
            None => {
                warn(warnings, path, non_finite_double(*f));
                return None;
            }
        },
        Bson::Decimal128(d) if opts.decimal_as_number => {
            let text = d.to_string();
            match text.parse::<f64>().ok().and_then(Number::from_f64) {
                Some(n) => Value::Number(n),
                None => {
                    warn(warnings, path, non_finite_decimal(&text));
                    return None;
                }
            }
        }
        Bson::Decimal128(d) => Value::String(d.to_string()),
        Bson::Binary(bin) => Value::String(binary_to_string(bin)),
        Bson::Timestamp(ts) => json!({ "t": ts.time, "i": ts.increment }),
        Bson::RegularExpression(re) => Value::String(format!("/{}/{}", re.pattern, re.options)),
        Bson::JavaScriptCode(code) => Value::String(code.clone()),
        Bson::JavaScriptCodeWithScope(cws) => {
            warn(warnings, path, CODE_SCOPE_DROPPED);
            Value::String(cws.code.clone())
        }
        Bson::Symbol(s) | Bson::String(s) => Value::String(s.clone()),
        Bson::Null | Bson::Undefined => Value::Null,
        Bson::Boolean(b) => Value::Bool(*b),
        Bson::MaxKey => Value::String("MaxKey".to_owned()),
        Bson::MinKey => Value::String("MinKey".to_owned()),
        // DbPointer's fields are private; its extended JSON is the only public view.
        Bson::DbPointer(_) => Value::String(value.clone().into_canonical_extjson().to_string()),
    })
}

/// Elasticsearch `_id` for a MongoDB `_id`.
///
/// Numbers render by value (Int32 3, Int64 3 and Double 3.0 all give "3"),
/// matching MongoDB, where they are the same `_id`. Note that distinct MongoDB
/// ids of different types can still collide (String "3" vs Int32 3).
pub fn es_id(id: &Bson) -> Result<String, IdError> {
    let text = match id {
        Bson::ObjectId(oid) => oid.to_hex(),
        Bson::String(s) => return es_id_of_str(s),
        Bson::Int32(n) => n.to_string(),
        Bson::Int64(n) => n.to_string(),
        // Exact integer digits inside i64 range (f64 Display would print the
        // shortest round-trip digits, e.g. 2^60 as "1152921504606847000").
        // The bounds are -2^63 and 2^63, both exact in f64.
        Bson::Double(f) if f.fract() == 0.0 && *f >= -9_223_372_036_854_775_808.0 && *f < 9_223_372_036_854_775_808.0 => (*f as i64).to_string(),
        // Shortest round-trip repr, never exponent notation nor ".0"; NaN/inf give "NaN"/"inf".
        Bson::Double(f) => f.to_string(),
        // Canonical extended JSON renders every type exactly (no lossy relaxed
        // forms), so an _id always maps to the same string. bson enables
        // serde_json's preserve_order, so document key order is kept: it is
        // significant for MongoDB _id equality.
        other => other.clone().into_canonical_extjson().to_string(),
    };
    if text.len() > MAX_ES_ID_BYTES {
        return Err(IdError::TooLong { len: text.len() });
    }
    Ok(text)
}

/// Elasticsearch `_id` for a string MongoDB `_id`: the string itself, within Elasticsearch's limits.
pub(crate) fn es_id_of_str(s: &str) -> Result<String, IdError> {
    if s.is_empty() {
        return Err(IdError::EmptyString);
    }
    if s.len() > MAX_ES_ID_BYTES {
        return Err(IdError::TooLong { len: s.len() });
    }
    Ok(s.to_owned())
}

/// Elasticsearch external version from a MongoDB cluster time.
///
/// The classic `time << 32 | increment` exceeds i64::MAX once `time` reaches
/// 2^31 (year 2038); ES versions are signed 64-bit. Shifting by 31 fits 63
/// bits for every u32 `time` (up to year 2106) and still orders by
/// (time, increment). Increments are capped at 2^31-1, which real oplog
/// counters (operations within one second) never reach.
pub fn bson_timestamp_version(t: Timestamp) -> i64 {
    (i64::from(t.time) << 31) | i64::from(t.increment).min(i64::from(i32::MAX))
}

fn convert_document(doc: &Document, path: &str, skip_id: bool, opts: &ConvertOptions, warnings: &mut Vec<ConvertWarning>) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, value) in doc {
        if skip_id && key == "_id" {
            continue;
        }
        let field_path = child_path(path, key);
        if let Some(json) = bson_to_json(value, opts, &field_path, warnings) {
            if is_rejected_key(key) {
                warn(warnings, &field_path, rejected_key(key));
            }
            out.insert(key.clone(), json);
        }
    }
    out
}

/// ES splits field names on dots into object paths, so these leave an empty
/// path segment and the document is rejected.
pub(crate) fn is_rejected_key(key: &str) -> bool {
    key.is_empty() || key.starts_with('.') || key.ends_with('.') || key.contains("..")
}

// The warning texts, shared with the raw converter (`super::raw`).
pub(crate) const ID_OVERWRITTEN: &str = "document field overwritten by the converted _id (keep_id_as)";
pub(crate) const CODE_SCOPE_DROPPED: &str = "JavaScript code scope dropped; only the code is kept";

pub(crate) fn rejected_key(key: &str) -> String {
    format!("field name {key:?} is rejected by Elasticsearch (empty, or dots at the start, end or doubled)")
}

pub(crate) fn non_finite_double(f: f64) -> String {
    format!("non-finite double {f} has no JSON form; dropped (null inside arrays)")
}

pub(crate) fn non_finite_decimal(text: &str) -> String {
    format!("Decimal128 {text} has no finite f64 value; dropped (null inside arrays)")
}

pub(crate) fn date_out_of_range(millis: i64) -> String {
    format!("date {millis} ms since epoch is outside years 0000-9999; emitted as epoch milliseconds")
}

fn datetime_to_json(dt: DateTime, path: &str, warnings: &mut Vec<ConvertWarning>) -> Value {
    let millis = dt.timestamp_millis();
    if (MIN_RFC3339_MILLIS..=MAX_RFC3339_MILLIS).contains(&millis) {
        // bson's RFC 3339 output trims the fraction (".5Z", or none at all), so
        // format whole seconds and always append exactly three digits.
        let whole_seconds = DateTime::from_millis(millis.div_euclid(1000) * 1000);
        if let Some(text) = whole_seconds.try_to_rfc3339_string().ok().and_then(|s| s.strip_suffix('Z').map(|s| format!("{s}.{:03}Z", millis.rem_euclid(1000))))
        {
            return Value::String(text);
        }
    }
    warn(warnings, path, date_out_of_range(millis));
    Value::from(millis)
}

fn binary_to_string(bin: &Binary) -> String {
    match (bin.subtype, bin.bytes.len()) {
        // UuidOld is rendered in stored byte order: its legacy driver-specific
        // (Java/C#) byte orders cannot be told apart from the data.
        (BinarySubtype::Uuid | BinarySubtype::UuidOld, 16) => {
            let hex: String = bin.bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
        }
        _ => BASE64.encode(&bin.bytes),
    }
}

fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

fn warn(warnings: &mut Vec<ConvertWarning>, path: &str, reason: impl Into<String>) {
    warnings.push(ConvertWarning { path: path.to_owned(), reason: reason.into() });
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::oid::ObjectId;
    use mongodb::bson::{doc, Decimal128, JavaScriptCodeWithScope, Regex};
    use std::str::FromStr;

    fn convert(value: Bson) -> (Option<Value>, Vec<ConvertWarning>) {
        convert_with(value, &ConvertOptions::default())
    }

    fn convert_with(value: Bson, opts: &ConvertOptions) -> (Option<Value>, Vec<ConvertWarning>) {
        let mut warnings = Vec::new();
        let out = bson_to_json(&value, opts, "f", &mut warnings);
        (out, warnings)
    }

    fn ok(value: Bson) -> Value {
        let (out, warnings) = convert(value);
        assert!(warnings.is_empty(), "unexpected warnings: {warnings:?}");
        out.expect("value dropped")
    }

    fn paths(warnings: &[ConvertWarning]) -> Vec<&str> {
        warnings.iter().map(|w| w.path.as_str()).collect()
    }

    fn binary(subtype: BinarySubtype, bytes: Vec<u8>) -> Bson {
        Bson::Binary(Binary { subtype, bytes })
    }

    const UUID_BYTES: [u8; 16] = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10];

    #[test]
    fn object_id_is_lowercase_hex() {
        let oid = ObjectId::parse_str("65A1B2C3D4E5F60718293A4B").unwrap();
        assert_eq!(ok(Bson::ObjectId(oid)), json!("65a1b2c3d4e5f60718293a4b"));
    }

    #[test]
    fn datetime_is_iso_utc_with_exactly_three_fraction_digits() {
        let at = |ms: i64| ok(Bson::DateTime(DateTime::from_millis(ms)));
        assert_eq!(at(1_704_164_645_678), json!("2024-01-02T03:04:05.678Z"));
        assert_eq!(at(1_704_164_645_000), json!("2024-01-02T03:04:05.000Z"));
        assert_eq!(at(1_704_164_645_500), json!("2024-01-02T03:04:05.500Z"));
        assert_eq!(at(0), json!("1970-01-01T00:00:00.000Z"));
        assert_eq!(at(-1), json!("1969-12-31T23:59:59.999Z"));
        assert_eq!(at(MIN_RFC3339_MILLIS), json!("0000-01-01T00:00:00.000Z"));
        assert_eq!(at(MAX_RFC3339_MILLIS), json!("9999-12-31T23:59:59.999Z"));
    }

    #[test]
    fn datetime_outside_rfc3339_years_is_epoch_millis_with_warning() {
        for ms in [MIN_RFC3339_MILLIS - 1, MAX_RFC3339_MILLIS + 1, i64::MIN, i64::MAX] {
            let (out, warnings) = convert(Bson::DateTime(DateTime::from_millis(ms)));
            assert_eq!(out, Some(json!(ms)));
            assert_eq!(paths(&warnings), ["f"]);
        }
    }

    #[test]
    fn int32_and_int64_keep_every_digit() {
        assert_eq!(ok(Bson::Int32(i32::MIN)), json!(i32::MIN));
        assert_eq!(ok(Bson::Int64(i64::MIN)), json!(i64::MIN));
        let max = ok(Bson::Int64(i64::MAX));
        assert_eq!(serde_json::to_string(&max).unwrap(), "9223372036854775807");
        let near = ok(Bson::Int64(9_007_199_254_740_993)); // 2^53 + 1: not an f64
        assert_eq!(serde_json::to_string(&near).unwrap(), "9007199254740993");
    }

    #[test]
    fn finite_double_is_number() {
        assert_eq!(ok(Bson::Double(1.5)), json!(1.5));
        assert_eq!(ok(Bson::Double(-0.25)), json!(-0.25));
    }

    #[test]
    fn non_finite_double_is_dropped_from_objects_with_warning() {
        let doc = doc! { "a": { "nan": f64::NAN, "inf": f64::INFINITY, "ninf": f64::NEG_INFINITY, "ok": 1 } };
        let mut warnings = Vec::new();
        let source = document_to_source(&doc, &ConvertOptions::default(), &mut warnings);
        assert_eq!(Value::Object(source), json!({ "a": { "ok": 1 } }));
        assert_eq!(paths(&warnings), ["a.nan", "a.inf", "a.ninf"]);
    }

    #[test]
    fn non_finite_double_is_null_in_arrays_with_warning() {
        let doc = doc! { "xs": [1.0, f64::NAN, 3.0, f64::INFINITY] };
        let mut warnings = Vec::new();
        let source = document_to_source(&doc, &ConvertOptions::default(), &mut warnings);
        assert_eq!(Value::Object(source), json!({ "xs": [1.0, null, 3.0, null] }));
        assert_eq!(paths(&warnings), ["xs.1", "xs.3"]);
    }

    #[test]
    fn decimal128_is_exact_string_by_default() {
        let d = |s: &str| Bson::Decimal128(Decimal128::from_str(s).unwrap());
        assert_eq!(ok(d("1.23E+5")), json!("1.23E+5"));
        assert_eq!(ok(d("12345678901234567890.123456789")), json!("12345678901234567890.123456789"));
        assert_eq!(ok(d("NaN")), json!("NaN"));
    }

    #[test]
    fn decimal128_as_number_option() {
        let opts = ConvertOptions { decimal_as_number: true, ..Default::default() };
        let d = |s: &str| Bson::Decimal128(Decimal128::from_str(s).unwrap());
        assert_eq!(convert_with(d("1.23E+5"), &opts), (Some(json!(123000.0)), vec![]));
        assert_eq!(convert_with(d("-0.5"), &opts), (Some(json!(-0.5)), vec![]));
        for bad in ["NaN", "Infinity", "-Infinity", "1E+400"] {
            let (out, warnings) = convert_with(d(bad), &opts);
            assert_eq!(out, None, "{bad}");
            assert_eq!(paths(&warnings), ["f"], "{bad}");
        }
    }

    #[test]
    fn binary_is_padded_standard_base64() {
        assert_eq!(ok(binary(BinarySubtype::Generic, vec![0xfb, 0xff])), json!("+/8="));
        assert_eq!(ok(binary(BinarySubtype::Generic, vec![])), json!(""));
        // A UUID subtype with the wrong length is plain binary.
        assert_eq!(ok(binary(BinarySubtype::Uuid, vec![0xfb, 0xff])), json!("+/8="));
        // 16 bytes of another subtype are not a UUID.
        assert_eq!(ok(binary(BinarySubtype::Md5, UUID_BYTES.to_vec())), json!(BASE64.encode(UUID_BYTES)));
    }

    #[test]
    fn uuid_binary_is_hyphenated_lowercase() {
        for subtype in [BinarySubtype::Uuid, BinarySubtype::UuidOld] {
            assert_eq!(ok(binary(subtype, UUID_BYTES.to_vec())), json!("01234567-89ab-cdef-fedc-ba9876543210"));
        }
    }

    #[test]
    fn timestamp_is_t_i_object() {
        let ts = Timestamp { time: u32::MAX, increment: 7 };
        assert_eq!(ok(Bson::Timestamp(ts)), json!({ "t": 4_294_967_295u32, "i": 7 }));
    }

    #[test]
    fn regex_is_slash_delimited() {
        let re = Regex { pattern: "^a.*b$".to_owned(), options: "im".to_owned() };
        assert_eq!(ok(Bson::RegularExpression(re)), json!("/^a.*b$/im"));
    }

    #[test]
    fn javascript_code_is_its_source() {
        assert_eq!(ok(Bson::JavaScriptCode("x + 1".to_owned())), json!("x + 1"));
    }

    #[test]
    fn javascript_code_with_scope_drops_scope_with_warning() {
        let cws = JavaScriptCodeWithScope { code: "x + y".to_owned(), scope: doc! { "y": 2 } };
        let (out, warnings) = convert(Bson::JavaScriptCodeWithScope(cws));
        assert_eq!(out, Some(json!("x + y")));
        assert_eq!(paths(&warnings), ["f"]);
    }

    #[test]
    fn string_and_symbol_are_strings() {
        assert_eq!(ok(Bson::String("héllo".to_owned())), json!("héllo"));
        assert_eq!(ok(Bson::Symbol("sym".to_owned())), json!("sym"));
    }

    #[test]
    fn null_undefined_and_booleans() {
        assert_eq!(ok(Bson::Null), Value::Null);
        assert_eq!(ok(Bson::Undefined), Value::Null);
        assert_eq!(ok(Bson::Boolean(true)), json!(true));
        assert_eq!(ok(Bson::Boolean(false)), json!(false));
    }

    #[test]
    fn min_and_max_key_are_names() {
        assert_eq!(ok(Bson::MaxKey), json!("MaxKey"));
        assert_eq!(ok(Bson::MinKey), json!("MinKey"));
    }

    #[test]
    fn db_pointer_is_its_extended_json() {
        // DbPointer can only be built by parsing extended JSON.
        let ext = json!({ "$dbPointer": { "$ref": "db.coll", "$id": { "$oid": "65a1b2c3d4e5f60718293a4b" } } });
        let pointer = Bson::try_from(ext.clone()).unwrap();
        assert!(matches!(pointer, Bson::DbPointer(_)));
        assert_eq!(ok(pointer), json!(ext.to_string()));
    }

    #[test]
    fn nested_documents_and_arrays_of_documents() {
        let oid = ObjectId::new();
        let doc = doc! {
            "_id": 1,
            "a": { "b": [ { "c": 1_i64, "_id": oid }, [ { "d": f64::NAN } ], "s" ], "e": {} },
            "empty": [],
        };
        let mut warnings = Vec::new();
        let source = document_to_source(&doc, &ConvertOptions::default(), &mut warnings);
        assert_eq!(Value::Object(source), json!({ "a": { "b": [ { "c": 1, "_id": oid.to_hex() }, [ {} ], "s" ], "e": {} }, "empty": [] }));
        assert_eq!(paths(&warnings), ["a.b.1.0.d"]);
    }

    #[test]
    fn source_keeps_document_key_order() {
        let doc = doc! { "z": 1, "a": 2, "m": 3 };
        let source = document_to_source(&doc, &ConvertOptions::default(), &mut Vec::new());
        assert_eq!(serde_json::to_string(&source).unwrap(), r#"{"z":1,"a":2,"m":3}"#);
    }

    #[test]
    fn keys_rejected_by_elasticsearch_are_kept_with_warnings() {
        let doc = doc! {
            "": 1, ".": 2, "...": 3, ".a": 4, "a.": 5, "a..b": 6,
            "a.b": 7, "ok": { "x..y": 8, "fine": 9 }, "list": [ { "": 10 } ],
        };
        let mut warnings = Vec::new();
        let source = document_to_source(&doc, &ConvertOptions::default(), &mut warnings);
        assert_eq!(source.len(), 9);
        assert_eq!(source["a..b"], json!(6));
        assert_eq!(paths(&warnings), ["", ".", "...", ".a", "a.", "a..b", "ok.x..y", "list.0."]);
        assert!(warnings[0].reason.contains("\"\""));
    }

    #[test]
    fn id_is_removed_from_source_by_default() {
        let doc = doc! { "_id": ObjectId::new(), "x": 1 };
        let source = document_to_source(&doc, &ConvertOptions::default(), &mut Vec::new());
        assert_eq!(Value::Object(source), json!({ "x": 1 }));
    }

    #[test]
    fn id_is_kept_under_keep_id_as() {
        let oid = ObjectId::new();
        let opts = ConvertOptions { keep_id_as: Some("mongo_id".to_owned()), ..Default::default() };
        let mut warnings = Vec::new();
        let source = document_to_source(&doc! { "_id": oid, "x": 1 }, &opts, &mut warnings);
        assert_eq!(Value::Object(source), json!({ "x": 1, "mongo_id": oid.to_hex() }));
        assert!(warnings.is_empty());

        let compound = doc! { "_id": { "a": 1, "b": "z" }, "mongo_id": "clash" };
        let source = document_to_source(&compound, &opts, &mut warnings);
        assert_eq!(Value::Object(source), json!({ "mongo_id": { "a": 1, "b": "z" } }));
        assert_eq!(paths(&warnings), ["mongo_id"]);
    }

    #[test]
    fn es_id_object_id_is_hex() {
        let oid = ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap();
        assert_eq!(es_id(&Bson::ObjectId(oid)).unwrap(), "65a1b2c3d4e5f60718293a4b");
    }

    #[test]
    fn es_id_string_is_verbatim_within_limits() {
        assert_eq!(es_id(&Bson::String("user:42/é".to_owned())).unwrap(), "user:42/é");
        assert_eq!(es_id(&Bson::String("x".repeat(512))).unwrap().len(), 512);
        assert_eq!(es_id(&Bson::String(String::new())), Err(IdError::EmptyString));
        // 256 two-byte chars = 512 bytes is fine; one more char is 514 bytes.
        assert!(es_id(&Bson::String("é".repeat(256))).is_ok());
        assert_eq!(es_id(&Bson::String("é".repeat(257))), Err(IdError::TooLong { len: 514 }));
        assert_eq!(es_id(&Bson::String("x".repeat(513))), Err(IdError::TooLong { len: 513 }));
    }

    #[test]
    fn es_id_integers_are_decimal() {
        assert_eq!(es_id(&Bson::Int32(-42)).unwrap(), "-42");
        assert_eq!(es_id(&Bson::Int64(i64::MAX)).unwrap(), "9223372036854775807");
        assert_eq!(es_id(&Bson::Int64(i64::MIN)).unwrap(), "-9223372036854775808");
    }

    #[test]
    fn es_id_doubles() {
        let id = |f: f64| es_id(&Bson::Double(f)).unwrap();
        assert_eq!(id(3.0), "3");
        assert_eq!(id(-0.0), "0");
        assert_eq!(id(-7.0), "-7");
        assert_eq!(id(2f64.powi(60)), "1152921504606846976"); // same as Int64 2^60
        assert_eq!(id(-2f64.powi(63)), "-9223372036854775808");
        // Beyond i64 no Int64 can share the value: shortest digits, zero-padded.
        assert_eq!(id(2f64.powi(63)), "9223372036854776000");
        assert_eq!(id(1e20), "100000000000000000000");
        assert_eq!(id(0.1), "0.1");
        assert_eq!(id(-2.5), "-2.5");
        assert_eq!(id(1e-7), "0.0000001");
        assert_eq!(id(f64::NAN), "NaN");
        assert_eq!(id(f64::INFINITY), "inf");
    }

    #[test]
    fn es_id_other_types_are_canonical_extended_json() {
        let compound = Bson::Document(doc! { "b": 1, "a": 2_i64, "c": 1.5 });
        assert_eq!(es_id(&compound).unwrap(), r#"{"b":{"$numberInt":"1"},"a":{"$numberLong":"2"},"c":{"$numberDouble":"1.5"}}"#);
        // Key order is part of a MongoDB _id's identity, so it must not be normalized.
        assert_ne!(es_id(&compound).unwrap(), es_id(&Bson::Document(doc! { "a": 2_i64, "b": 1, "c": 1.5 })).unwrap());
        assert_eq!(es_id(&Bson::DateTime(DateTime::from_millis(1_704_164_645_678))).unwrap(), r#"{"$date":{"$numberLong":"1704164645678"}}"#);
        assert_eq!(es_id(&binary(BinarySubtype::Uuid, UUID_BYTES.to_vec())).unwrap(), r#"{"$binary":{"base64":"ASNFZ4mrze/+3LqYdlQyEA==","subType":"04"}}"#);
        assert_eq!(es_id(&Bson::Decimal128(Decimal128::from_str("1.5").unwrap())).unwrap(), r#"{"$numberDecimal":"1.5"}"#);
        assert_eq!(es_id(&Bson::Boolean(true)).unwrap(), "true");
        assert_eq!(es_id(&Bson::Null).unwrap(), "null");
        let big = Bson::Document(doc! { "k": "x".repeat(600) });
        assert!(matches!(es_id(&big), Err(IdError::TooLong { .. })));
    }

    #[test]
    fn id_error_display_names_the_problem() {
        assert!(IdError::EmptyString.to_string().contains("empty"));
        let msg = IdError::TooLong { len: 600 }.to_string();
        assert!(msg.contains("600") && msg.contains("512"), "{msg}");
    }

    #[test]
    fn version_increases_with_time_then_increment() {
        let pairs = [
            (0, 0),
            (0, 1),
            (0, i32::MAX as u32),
            (1, 0),
            (1, 5),
            (1_700_000_000, 1),
            (1_700_000_000, 2),
            (1_700_000_001, 0),
            (i32::MAX as u32, i32::MAX as u32), // 2038: where time << 32 overflows
            (1 << 31, 0),
            (1 << 31, 1),
            (u32::MAX - 1, i32::MAX as u32),
            (u32::MAX, 0),
            (u32::MAX, 1),
        ];
        let versions: Vec<i64> = pairs.iter().map(|&(time, increment)| bson_timestamp_version(Timestamp { time, increment })).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
        assert!(versions.iter().all(|&v| v >= 0));
    }

    #[test]
    fn version_at_u32_max_time_fits_i64() {
        let v = |time, increment| bson_timestamp_version(Timestamp { time, increment });
        assert_eq!(v(u32::MAX, u32::MAX), i64::MAX);
        assert_eq!(v(u32::MAX, 0), i64::MAX - (i32::MAX as i64));
        // Increments beyond 2^31-1 saturate rather than bleed into the time bits.
        assert_eq!(v(5, u32::MAX), v(5, i32::MAX as u32));
        assert!(v(5, u32::MAX) < v(6, 0));
    }
}
