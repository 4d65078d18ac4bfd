//! Property tests of the options parser: generated option trees (a valid, full one with random
//! parts replaced by arbitrary JSON, removed, or joined by unknown keys; and wholly arbitrary
//! trees) never panic, and give either a config that passes its own validation or an
//! `ERR_CONFIG` whose message starts with the path of an option.
//!
//! `cargo test binding::options_props` runs the default case count; for a longer run:
//! `PROPTEST_CASES=20000 cargo test --release binding::options_props`.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::options::sync_config;
use super::top_level_options;
use crate::error::ErrorCode;

/// What an error's path may start with besides a top-level option (or an unknown key given).
const OTHER_ROOTS: &[&str] = &["options"];

/// A valid tree using most options (no file paths that exist, no network at parse time); the
/// same file seeds the config fuzz target (`fuzz/seeds/make_seeds.py`).
fn base() -> Value {
    serde_json::from_str(include_str!("testdata/options-full.json")).expect("testdata/options-full.json is JSON")
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u32>().prop_map(Value::from),
        (-1e30f64..1e30).prop_map(Value::from),
        "[a-zA-Z0-9_.$:/{}\\\\ -]{0,12}".prop_map(Value::String),
        prop_oneof![Just("mongodb://h/?replicaSet=r"), Just("http://h:1"), Just("a.b"), Just("{coll}"), Just("")].prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-zA-Z]{1,10}", inner), 0..4).prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// One change to the tree: at the node reached by following `steps` (each an index into the
/// node's children, modulo their count), replace it, remove it, or add an unknown key to it.
#[derive(Debug, Clone)]
enum Edit {
    Replace(Vec<usize>, Value),
    Remove(Vec<usize>),
    AddKey(Vec<usize>, String, Value),
}

fn arb_edit() -> impl Strategy<Value = Edit> {
    let steps = prop::collection::vec(any::<usize>(), 1..5);
    prop_oneof![
        (steps.clone(), arb_json()).prop_map(|(s, v)| Edit::Replace(s, v)),
        steps.clone().prop_map(Edit::Remove),
        (steps, "[a-zA-Z]{1,12}", arb_json()).prop_map(|(s, k, v)| Edit::AddKey(s, k, v)),
    ]
}

fn child(node: &mut Value, step: usize) -> Option<&mut Value> {
    match node {
        Value::Object(map) if !map.is_empty() => {
            let n = map.len();
            map.values_mut().nth(step % n)
        }
        Value::Array(items) if !items.is_empty() => {
            let n = items.len();
            items.get_mut(step % n)
        }
        _ => None,
    }
}

fn apply(tree: &mut Value, edit: &Edit) {
    let steps = match edit {
        Edit::Replace(s, _) | Edit::Remove(s) | Edit::AddKey(s, _, _) => s,
    };
    // Walk to the parent of the last step (stopping early at a leaf).
    let mut node = tree;
    for &step in &steps[..steps.len() - 1] {
        if child(node, step).is_none() {
            break;
        }
        node = child(node, step).expect("checked");
    }
    let last = steps[steps.len() - 1];
    match edit {
        Edit::Replace(_, value) => {
            if let Some(target) = child(node, last) {
                *target = value.clone();
            }
        }
        Edit::Remove(_) => match node {
            Value::Object(map) if !map.is_empty() => {
                let key = map.keys().nth(last % map.len()).cloned().expect("in range");
                map.remove(&key);
            }
            Value::Array(items) if !items.is_empty() => {
                let n = items.len();
                items.remove(last % n);
            }
            _ => {}
        },
        Edit::AddKey(_, key, value) => {
            if let Value::Object(map) = node {
                map.insert(key.clone(), value.clone());
            }
        }
    }
}

/// The property: no panic; a config that validates, or `ERR_CONFIG` naming an option's path.
fn check(tree: Value) -> Result<(), TestCaseError> {
    let top_keys: Vec<String> = tree.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    match sync_config(tree.clone()) {
        Ok(config) => {
            prop_assert!(config.validate().is_ok(), "an accepted config validates");
            prop_assert!(!config.name.is_empty());
        }
        Err(e) => {
            prop_assert_eq!(e.code, ErrorCode::Config, "{}", e.message);
            let head = e.message.split([':', '.', '[', ' ']).next().unwrap_or_default();
            let names_path = top_level_options().contains(&head) || OTHER_ROOTS.contains(&head) || top_keys.iter().any(|k| k == head);
            prop_assert!(names_path, "the error names an option's path: {:?}\n(tree {})", e.message, tree);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn edited_valid_trees_give_a_config_or_a_path_error(edits in prop::collection::vec(arb_edit(), 1..4)) {
        let mut tree = base();
        for edit in &edits {
            apply(&mut tree, edit);
        }
        check(tree)?;
    }

    #[test]
    fn arbitrary_trees_give_a_config_or_a_path_error(tree in arb_json()) {
        check(tree)?;
    }
}

#[test]
fn the_base_tree_is_valid() {
    sync_config(base()).expect("the base options are valid");
}

/// Found by the properties: an array where an object belongs read as serde's positional struct
/// form ("invalid length 0, expected struct SyncOptions with 19 elements").
#[test]
fn an_array_for_an_object_is_named_as_such() {
    let message = |tree: Value| match sync_config(tree) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.message,
    };
    assert_eq!(message(json!([])), "options: must be an object, not an array");
    assert_eq!(message(json!(["", []])), "options: must be an object, not an array");
    assert_eq!(message(json!("x")), "options: must be an object, not a string");
    let mut tree = base();
    tree["batch"] = json!([10]);
    assert_eq!(message(tree), "batch: must be an object, not an array");
    let mut tree = base();
    tree["collections"][1]["fields"] = json!([]);
    assert_eq!(message(tree), "collections[1].fields: must be an object, not an array");
}
