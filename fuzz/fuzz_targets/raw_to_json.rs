//! Arbitrary bytes as a raw BSON document into the raw converter, with options and field rules
//! chosen by the first byte. It must never panic, must write a JSON object, and must agree with
//! the `Document`-based converter whenever the bytes are a BSON document that one can read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mongo_elastic_sync::transform::{index_write, AddedValue, ConvertOptions, FieldRules, RawConverter, WriteOp};
use mongodb::bson::{Document, RawDocument};

fn setup(selector: u8) -> (ConvertOptions, FieldRules) {
    let keep_id_as = match selector & 0b11 {
        0 | 1 => None,
        2 => Some("mongo_id".to_owned()),
        _ => Some("a".to_owned()),
    };
    let options = ConvertOptions { decimal_as_number: selector & 0b100 != 0, keep_id_as };
    let paths = |list: &[&str]| list.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    let rules = match selector >> 3 {
        0 | 1 => FieldRules::default(),
        2 => FieldRules { include: paths(&["a", "b.c", "items.sku", ""]), ..Default::default() },
        3 => FieldRules { exclude: paths(&["a.b", "items.sku", "$date", ""]), ..Default::default() },
        4 => FieldRules {
            rename: vec![("a".into(), "x.y".into()), ("b.c".into(), "a".into()), ("x".into(), "b.c.d".into())],
            add: vec![("b.n".into(), AddedValue::Constant(serde_json::json!({"k": [1], "o": {}})))],
            ..Default::default()
        },
        5 => FieldRules { flatten: Some("_".into()), ..Default::default() },
        6 => FieldRules { include: paths(&["a", "b"]), exclude: paths(&["a.b"]), rename: vec![("b".into(), "a.b".into())], flatten: Some(".".into()), ..Default::default() },
        _ => FieldRules { exclude: paths(&["mongo_id"]), flatten: Some(String::new()), ..Default::default() },
    };
    (options, rules)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else { return };
    let Ok(doc) = RawDocument::from_bytes(bytes) else { return };
    let (options, rules) = setup(selector);
    let mut warnings = Vec::new();
    let raw = RawConverter::new(&options, &rules).index_write(doc, 1, &mut warnings);
    if let Ok(write) = &raw {
        let WriteOp::Index(body) = &write.op else { panic!("an index write") };
        let json: serde_json::Value = serde_json::from_slice(body).expect("valid JSON");
        assert!(json.is_object());
    }
    // Past the depth limit the reference (recursive, no limit) is not asked.
    if raw.as_ref().is_err_and(|r| r.reason.contains("nested deeper")) {
        return;
    }
    match Document::try_from(doc) {
        Ok(d) => {
            let mut reference_warnings = Vec::new();
            let reference = index_write(&d, 1, &options, &rules, &mut reference_warnings);
            assert_eq!(raw, reference);
            assert_eq!(warnings, reference_warnings);
        }
        Err(_) => assert!(raw.is_err_and(|r| r.reason.starts_with("document ") && r.document.is_none())),
    }
});

/// What every napi function of the engine is bound to in this binary (see build.rs).
#[no_mangle]
pub extern "C" fn fuzz_napi_unavailable() -> ! {
    std::process::abort()
}
