//! PostgreSQL values as BSON, from their text form (the form `pgoutput` streams and the copy
//! reads with `::text`), so that both phases give the same document for the same row.
//!
//! | PostgreSQL | document value |
//! | --- | --- |
//! | `boolean` | boolean |
//! | `smallint`, `integer` / `bigint`, `oid` | 32-bit / 64-bit integer |
//! | `real`, `double precision` | double (`NaN`, `Infinity` as such) |
//! | `numeric` | Decimal128 (an exact string in the index, like MongoDB decimals; a number with `decimalAsNumber`); beyond 34 digits, or `NaN`, the exact text |
//! | `timestamptz` | ISO-8601 in UTC with its microseconds: `2024-05-01T10:00:00.123456Z` |
//! | `timestamp` | ISO-8601 without zone: `2024-05-01T10:00:00.123456` |
//! | `json`, `jsonb` | the JSON value (objects, arrays, numbers…) |
//! | `bytea` | binary (base64 in the index) |
//! | arrays | arrays of the element's mapping (`NULL` elements as null; nested for several dimensions) |
//! | `uuid`, `date`, `time`, enums, text types and any other | their text |

use std::str::FromStr;

use mongodb::bson::{spec::BinarySubtype, Binary, Bson, Decimal128, Document};

/// How a column's text is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgType {
    Bool,
    Int32,
    Int64,
    Float,
    Numeric,
    Bytea,
    Json,
    Timestamptz,
    Timestamp,
    Array(Box<PgType>),
    /// Kept as its text (uuid, dates, enums, text types…).
    Text,
}

/// A value whose text does not read as its type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read {text:?} as {ty:?}: {reason}")]
pub struct TypeError {
    pub ty: PgType,
    pub text: String,
    pub reason: String,
}

impl PgType {
    /// The mapping of a (domain's base) type, by OID; `element` is an array's element type.
    pub fn of_oid(oid: u32, element: Option<PgType>) -> PgType {
        match (oid, element) {
            (_, Some(element)) => PgType::Array(Box::new(element)),
            (16, _) => PgType::Bool,
            (21 | 23, _) => PgType::Int32,
            (20 | 26, _) => PgType::Int64,
            (700 | 701, _) => PgType::Float,
            (1700, _) => PgType::Numeric,
            (17, _) => PgType::Bytea,
            (114 | 3802, _) => PgType::Json,
            (1184, _) => PgType::Timestamptz,
            (1114, _) => PgType::Timestamp,
            _ => PgType::Text,
        }
    }

    /// The value of `text`, this type's text form (with `DateStyle=ISO` and `TimeZone=UTC`).
    pub fn to_bson(&self, text: &str) -> Result<Bson, TypeError> {
        let fail = |reason: &str| TypeError { ty: self.clone(), text: text.chars().take(100).collect(), reason: reason.into() };
        Ok(match self {
            PgType::Bool => Bson::Boolean(boolean(text).ok_or_else(|| fail("not a boolean (PostgreSQL writes t or f, and true or false cast to text)"))?),
            PgType::Int32 => Bson::Int32(text.parse().map_err(|_| fail("not a 32-bit integer"))?),
            PgType::Int64 => Bson::Int64(text.parse().map_err(|_| fail("not a 64-bit integer"))?),
            PgType::Float => Bson::Double(match text {
                "Infinity" => f64::INFINITY,
                "-Infinity" => f64::NEG_INFINITY,
                _ => text.parse().map_err(|_| fail("not a number"))?,
            }),
            PgType::Numeric => numeric(text),
            PgType::Bytea => Bson::Binary(Binary { subtype: BinarySubtype::Generic, bytes: bytea(text).ok_or_else(|| fail("not \\x hex"))? }),
            PgType::Json => {
                let value: serde_json::Value = serde_json::from_str(text).map_err(|e| fail(&e.to_string()))?;
                json_to_bson(value)
            }
            PgType::Timestamptz => Bson::String(timestamp(text, true)),
            PgType::Timestamp => Bson::String(timestamp(text, false)),
            PgType::Array(element) => Bson::Array(parse_array(text).map_err(fail)?.into_iter().map(|e| e.to_bson(element)).collect::<Result<_, _>>()?),
            PgType::Text => Bson::String(text.to_string()),
        })
    }
}

/// A boolean in one of the forms PostgreSQL writes: `t`/`f` (its output, as `pgoutput` and
/// arrays give it) or `true`/`false` (`::text`, as the copy reads it); nothing else.
fn boolean(text: &str) -> Option<bool> {
    match text {
        "t" | "true" => Some(true),
        "f" | "false" => Some(false),
        _ => None,
    }
}

/// Exact: a Decimal128 when the digits fit it, else the text itself.
fn numeric(text: &str) -> Bson {
    let digits = text.chars().filter(char::is_ascii_digit).count();
    match Decimal128::from_str(text) {
        Ok(d) if (1..=34).contains(&digits) => Bson::Decimal128(d),
        _ => Bson::String(text.to_string()),
    }
}

fn bytea(text: &str) -> Option<Vec<u8>> {
    let hex = text.strip_prefix("\\x")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

/// `2024-05-01 10:00:00.123+00` → `2024-05-01T10:00:00.123Z` (the session runs in UTC);
/// `infinity` and BC dates stay as they are.
fn timestamp(text: &str, zoned: bool) -> String {
    let Some((date, time)) = text.split_once(' ') else { return text.to_string() };
    if text.ends_with(" BC") {
        return text.to_string();
    }
    match (zoned, time.strip_suffix("+00")) {
        (true, Some(utc)) => format!("{date}T{utc}Z"),
        // Another offset (a session not in UTC): kept, as ISO-8601.
        (true, None) => format!("{date}T{time}"),
        (false, _) => format!("{date}T{time}"),
    }
}

/// JSON as BSON, keys as they are (no extended JSON: a `$date` key is just a key).
pub fn json_to_bson(value: serde_json::Value) -> Bson {
    match value {
        serde_json::Value::Null => Bson::Null,
        serde_json::Value::Bool(b) => Bson::Boolean(b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Bson::Int64(i),
            (None, Some(f)) if n.is_f64() => Bson::Double(f),
            // Beyond i64 (u64 or arbitrary precision): exact as Decimal128 when it fits.
            _ => numeric(&n.to_string()),
        },
        serde_json::Value::String(s) => Bson::String(s),
        serde_json::Value::Array(a) => Bson::Array(a.into_iter().map(json_to_bson).collect()),
        serde_json::Value::Object(o) => Bson::Document(o.into_iter().map(|(k, v)| (k, json_to_bson(v))).collect::<Document>()),
    }
}

/// One element of an array literal: its text (unquoted, unescaped), `NULL`, or a nested array.
#[derive(Debug, Clone, PartialEq)]
pub enum ArrayItem {
    Null,
    Text(String),
    Nested(Vec<ArrayItem>),
}

impl ArrayItem {
    fn to_bson(&self, element: &PgType) -> Result<Bson, TypeError> {
        match self {
            ArrayItem::Null => Ok(Bson::Null),
            ArrayItem::Text(t) => element.to_bson(t),
            ArrayItem::Nested(items) => Ok(Bson::Array(items.iter().map(|i| i.to_bson(element)).collect::<Result<_, _>>()?)),
        }
    }
}

/// The most nested levels an array literal may have: PostgreSQL's own limit on dimensions
/// (`MAXDIM`). Deeper text is refused, not read by an unbounded recursion.
pub const MAX_ARRAY_DEPTH: usize = 6;

/// Parses an array literal such as `{1,NULL,"a \"b\"",{2,3}}` (an optional `[1:2]=`
/// dimension prefix is skipped). Elements are separated by `,` (every built-in type but `box`).
/// At most [`MAX_ARRAY_DEPTH`] levels.
pub fn parse_array(text: &str) -> Result<Vec<ArrayItem>, &'static str> {
    let text = match text.find("={") {
        Some(at) if text.starts_with('[') => &text[at + 1..],
        _ => text,
    };
    let mut chars = text.chars().peekable();
    if chars.next() != Some('{') {
        return Err("an array literal starts with '{'");
    }
    let items = array_items(&mut chars, 1)?;
    if chars.next().is_some() {
        return Err("text after the array's closing '}'");
    }
    Ok(items)
}

/// The elements of the array (at nesting level `depth`) whose `{` was just read, through its `}`.
fn array_items(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, depth: usize) -> Result<Vec<ArrayItem>, &'static str> {
    if depth > MAX_ARRAY_DEPTH {
        return Err("more than 6 nested levels (PostgreSQL arrays have at most 6 dimensions)");
    }
    let mut items = Vec::new();
    if chars.peek() == Some(&'}') {
        chars.next();
        return Ok(items);
    }
    loop {
        let item = match chars.peek() {
            Some('{') => {
                chars.next();
                ArrayItem::Nested(array_items(chars, depth + 1)?)
            }
            Some('"') => {
                chars.next();
                let mut text = String::new();
                loop {
                    match chars.next().ok_or("unterminated quoted element")? {
                        '\\' => text.push(chars.next().ok_or("unterminated escape")?),
                        '"' => break,
                        c => text.push(c),
                    }
                }
                ArrayItem::Text(text)
            }
            _ => {
                let mut text = String::new();
                while let Some(&c) = chars.peek() {
                    if c == ',' || c == '}' {
                        break;
                    }
                    text.push(c);
                    chars.next();
                }
                if text == "NULL" {
                    ArrayItem::Null
                } else {
                    ArrayItem::Text(text)
                }
            }
        };
        items.push(item);
        match chars.next() {
            Some(',') => continue,
            Some('}') => return Ok(items),
            _ => return Err("expected ',' or '}' after an element"),
        }
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::doc;
    use proptest::prelude::*;

    use super::*;

    fn b(ty: PgType, text: &str) -> Bson {
        ty.to_bson(text).unwrap()
    }

    #[test]
    fn scalars_map_by_type() {
        assert_eq!(b(PgType::Bool, "t"), Bson::Boolean(true));
        assert_eq!(b(PgType::Bool, "f"), Bson::Boolean(false));
        assert_eq!(b(PgType::Int32, "-7"), Bson::Int32(-7));
        assert_eq!(b(PgType::Int64, "9223372036854775807"), Bson::Int64(i64::MAX));
        assert_eq!(b(PgType::Float, "1.5"), Bson::Double(1.5));
        assert_eq!(b(PgType::Float, "-Infinity"), Bson::Double(f64::NEG_INFINITY));
        assert!(matches!(b(PgType::Float, "NaN"), Bson::Double(f) if f.is_nan()));
        assert_eq!(b(PgType::Text, "3f2504e0-4f89-11d3-9a0c-0305e82c3301"), Bson::String("3f2504e0-4f89-11d3-9a0c-0305e82c3301".into()));
        let err = PgType::Int32.to_bson("x1").unwrap_err();
        assert!(err.to_string().contains("32-bit"), "{err}");
    }

    #[test]
    fn numerics_stay_exact() {
        assert_eq!(b(PgType::Numeric, "12345678901234567890.123456789"), Bson::Decimal128("12345678901234567890.123456789".parse().unwrap()));
        assert_eq!(b(PgType::Numeric, "0.10").to_string(), Bson::Decimal128("0.10".parse().unwrap()).to_string());
        // More digits than Decimal128 holds, and NaN: the text.
        let long = "1234567890123456789012345678901234567890.5";
        assert_eq!(b(PgType::Numeric, long), Bson::String(long.into()));
        assert_eq!(b(PgType::Numeric, "NaN"), Bson::String("NaN".into()));
    }

    #[test]
    fn timestamps_become_iso_8601() {
        assert_eq!(b(PgType::Timestamptz, "2024-05-01 10:00:00.123456+00"), Bson::String("2024-05-01T10:00:00.123456Z".into()));
        assert_eq!(b(PgType::Timestamptz, "2024-05-01 10:00:00+02"), Bson::String("2024-05-01T10:00:00+02".into()));
        assert_eq!(b(PgType::Timestamp, "2024-05-01 10:00:00"), Bson::String("2024-05-01T10:00:00".into()));
        assert_eq!(b(PgType::Timestamptz, "infinity"), Bson::String("infinity".into()));
    }

    #[test]
    fn json_keeps_its_shape_and_dollar_keys() {
        let v = b(PgType::Json, r#"{"a":[1,2.5,"x",null,true],"$date":{"n":12345678901234567890}}"#);
        let expected = doc! {"a": [1_i64, 2.5, "x", Bson::Null, true], "$date": {"n": Bson::Decimal128("12345678901234567890".parse().unwrap())}};
        assert_eq!(v, Bson::Document(expected));
        assert!(PgType::Json.to_bson("{oops").is_err());
    }

    #[test]
    fn bytea_hex_becomes_binary() {
        assert_eq!(b(PgType::Bytea, "\\xdeadbeef"), Bson::Binary(Binary { subtype: BinarySubtype::Generic, bytes: vec![0xde, 0xad, 0xbe, 0xef] }));
        assert!(PgType::Bytea.to_bson("\\xabc").is_err());
    }

    #[test]
    fn arrays_parse_quotes_nulls_and_dimensions() {
        let text = PgType::Array(Box::new(PgType::Text));
        assert_eq!(b(text.clone(), r#"{a,"b c","d\"e",NULL,"NULL"}"#), Bson::Array(vec!["a".into(), "b c".into(), "d\"e".into(), Bson::Null, "NULL".into()]));
        let ints = PgType::Array(Box::new(PgType::Int32));
        assert_eq!(b(ints.clone(), "{{1,2},{3,4}}"), Bson::Array(vec![Bson::Array(vec![1.into(), 2.into()]), Bson::Array(vec![3.into(), 4.into()])]));
        assert_eq!(b(ints.clone(), "{}"), Bson::Array(vec![]));
        assert_eq!(b(ints.clone(), "[0:1]={5,6}"), Bson::Array(vec![5.into(), 6.into()]));
        assert!(ints.to_bson("{1,2").is_err());
        let stamps = PgType::Array(Box::new(PgType::Timestamptz));
        assert_eq!(b(stamps, r#"{"2024-01-01 00:00:00+00"}"#), Bson::Array(vec!["2024-01-01T00:00:00Z".into()]));
    }

    #[test]
    fn booleans_are_only_the_forms_postgresql_writes() {
        for (text, value) in [("t", true), ("f", false), ("true", true), ("false", false)] {
            assert_eq!(b(PgType::Bool, text), Bson::Boolean(value), "{text}");
        }
        for text in ["", "T", "F", "TRUE", "yes", "no", "1", "0", "on", "tru", " t", "t ", "maybe"] {
            let err = PgType::Bool.to_bson(text).unwrap_err();
            assert!(err.to_string().contains("not a boolean"), "{text:?}: {err}");
        }
        let bools = PgType::Array(Box::new(PgType::Bool));
        assert_eq!(b(bools.clone(), "{t,f,NULL}"), Bson::Array(vec![true.into(), false.into(), Bson::Null]));
        assert!(bools.to_bson("{t,yes}").unwrap_err().to_string().contains("not a boolean"));
    }

    #[test]
    fn a_bad_value_is_an_error_naming_its_table_and_column() {
        use crate::config::Namespace;
        use crate::source::postgres::table::{Table, TableColumn};
        let column = |name: &str, ty: PgType| TableColumn { name: name.into(), ty, type_sql: "x".into() };
        let table = Table {
            ns: Namespace::parse("public.flags").unwrap(),
            columns: vec![column("id", PgType::Int32), column("ok", PgType::Bool), column("grid", PgType::Array(Box::new(PgType::Int32)))],
            key: vec![0],
        };
        let row = |ok: &str, grid: &str| table.document(&[Some("1".into()), Some(ok.into()), Some(grid.into())]);
        assert_eq!(row("t", "{{1}}").unwrap().get_bool("ok"), Ok(true));
        let err = row("yes", "{1}").unwrap_err();
        assert!(err.message.contains("table public.flags, column ok: cannot read \"yes\" as Bool: not a boolean"), "{}", err.message);
        let deep = format!("{}1{}", "{".repeat(7), "}".repeat(7));
        let err = row("f", &deep).unwrap_err();
        assert!(err.message.contains("column grid") && err.message.contains("more than 6 nested levels"), "{}", err.message);
    }

    #[test]
    fn array_nesting_is_bounded_by_postgresql_dimensions() {
        let ints = PgType::Array(Box::new(PgType::Int32));
        let nested = |levels: usize| format!("{}7{}", "{".repeat(levels), "}".repeat(levels));
        let mut value = b(ints.clone(), &nested(MAX_ARRAY_DEPTH));
        for _ in 0..MAX_ARRAY_DEPTH {
            let Bson::Array(mut items) = value else { panic!("{value:?}") };
            assert_eq!(items.len(), 1);
            value = items.remove(0);
        }
        assert_eq!(value, Bson::Int32(7));
        let err = ints.to_bson(&nested(MAX_ARRAY_DEPTH + 1)).unwrap_err();
        assert!(err.to_string().contains("more than 6 nested levels"), "{err}");
        // Hostile text: a recursion per '{' would overflow the stack long before the end.
        assert!(parse_array(&"{".repeat(1_000_000)).is_err());
        assert!(parse_array(&nested(500_000)).is_err());
    }

    /// An array literal as PostgreSQL's `array_out` writes it: elements quoted when they must be.
    fn render(items: &[ArrayItem]) -> String {
        let element = |item: &ArrayItem| match item {
            ArrayItem::Null => "NULL".to_string(),
            ArrayItem::Nested(inner) => render(inner),
            ArrayItem::Text(t) if !t.is_empty() && !t.eq_ignore_ascii_case("NULL") && !t.contains(|c: char| "{},\"\\".contains(c) || c.is_whitespace()) => {
                t.clone()
            }
            ArrayItem::Text(t) => format!("\"{}\"", t.replace('\\', "\\\\").replace('"', "\\\"")),
        };
        format!("{{{}}}", items.iter().map(element).collect::<Vec<_>>().join(","))
    }

    fn arb_items() -> impl Strategy<Value = Vec<ArrayItem>> {
        let leaf = prop_oneof![Just(ArrayItem::Null), ".{0,12}".prop_map(ArrayItem::Text), "[a-z{}\",\\\\ ]{0,6}".prop_map(ArrayItem::Text)];
        // The top level plus up to five nested: PostgreSQL's six dimensions.
        let item = leaf.prop_recursive((MAX_ARRAY_DEPTH - 1) as u32, 64, 4, |inner| prop::collection::vec(inner, 1..4).prop_map(ArrayItem::Nested));
        prop::collection::vec(item, 0..5)
    }

    proptest! {
        #[test]
        fn arrays_as_postgresql_writes_them_read_back(items in arb_items()) {
            prop_assert_eq!(parse_array(&render(&items)), Ok(items));
        }

        #[test]
        fn any_text_is_read_or_refused_never_a_panic(text in "[{}\",\\\\a-c N]{0,64}") {
            if let Ok(items) = parse_array(&text) {
                prop_assert_eq!(parse_array(&render(&items)), Ok(items));
            }
        }

        #[test]
        fn a_boolean_is_one_of_four_texts(text in prop_oneof![any::<String>(), "[tfrueals]{1,5}"]) {
            let read = PgType::Bool.to_bson(&text).ok();
            let expected = boolean(&text).map(Bson::Boolean);
            prop_assert_eq!(read, expected);
            prop_assert_eq!(boolean(&text).is_some(), ["t", "f", "true", "false"].contains(&text.as_str()));
        }
    }

    #[test]
    fn types_come_from_oids() {
        assert_eq!(PgType::of_oid(1700, None), PgType::Numeric);
        assert_eq!(PgType::of_oid(2950, None), PgType::Text, "uuid");
        assert_eq!(PgType::of_oid(1007, Some(PgType::Int32)), PgType::Array(Box::new(PgType::Int32)));
        assert_eq!(PgType::of_oid(3802, None), PgType::Json);
    }
}
