//! Option trees as the CLI, definition files and the JS API hand them to the strict options
//! parser. The first byte chooses how the rest is read: as JSON or YAML text, as the options of
//! one sync (`new MongoElasticSync(options)`, the CLI's config file) or as a definition of several
//! (`{ version, syncs: { name: options } }`). Text that is not JSON/YAML is JavaScript's to refuse
//! and is passed over. For every tree: no panic, and either a config that the engine accepts
//! (it validates, `SyncEngine::new` takes it, its Elasticsearch client builds or fails with
//! `ERR_CONFIG`) or `ERR_CONFIG` whose message begins with the path of an option and a colon.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mongo_elastic_sync::error::{ErrorCode, SyncError};
use mongo_elastic_sync::event::EventBus;
use mongo_elastic_sync::fuzzing::{definition_names, sync_config, top_level_options};
use mongo_elastic_sync::pipeline::SyncEngine;
use mongo_elastic_sync::sink::elasticsearch::build_client;
use serde_json::Value;

/// What an error's path may begin with besides a top-level option (or a key the tree gave).
const OTHER_ROOTS: &[&str] = &["options"];

fn top_keys(tree: &Value) -> Vec<&str> {
    tree.as_object().map(|m| m.keys().map(String::as_str).collect()).unwrap_or_default()
}

/// An options error: `ERR_CONFIG`, `<path>: <what is wrong>`, the path rooted at an option
/// (one of `roots`, or a key the tree gave).
fn check_error(e: &SyncError, roots: &[&str], tree: &Value) {
    assert_eq!(e.code, ErrorCode::Config, "{}", e.message);
    let rooted = |root: &str| e.message.strip_prefix(root).is_some_and(|rest| rest.starts_with([':', '.', '[']));
    let names_path = roots.iter().copied().chain(top_keys(tree)).any(rooted);
    assert!(names_path && e.message.contains(": "), "{:?} does not begin with an option's path\n(tree {tree})", e.message);
}

fn check_options(tree: Value) {
    match sync_config(tree.clone()) {
        Ok(config) => {
            assert!(!config.name.is_empty());
            config.validate().expect("an accepted config validates");
            if let Some(es) = &config.elasticsearch {
                if let Err(e) = build_client(es, &EventBus::default()) {
                    assert_eq!(e.code, ErrorCode::Config, "{}", e.message);
                }
            }
            SyncEngine::new(config).expect("the engine takes an accepted config");
        }
        Err(e) => check_error(&e, &[top_level_options(), OTHER_ROOTS].concat(), &tree),
    }
}

fn check_definition(tree: Value) {
    match definition_names(tree.clone()) {
        Ok(names) => {
            let syncs = tree["syncs"].as_object().expect("a definition with syncs");
            assert_eq!(names.len(), syncs.len());
            for name in names {
                let mut options = syncs[&name].clone();
                options["name"] = Value::String(name.clone());
                sync_config(options).expect("each sync of an accepted definition is valid");
            }
        }
        Err(e) => check_error(&e, &["definition", "syncs", "version", "options"], &tree),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, text)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(text) else { return };
    let tree: Value = match if mode & 1 == 0 { serde_json::from_str(text).ok() } else { serde_yaml::from_str(text).ok() } {
        Some(tree) => tree,
        None => return,
    };
    if mode & 2 == 0 {
        check_options(tree);
    } else {
        check_definition(tree);
    }
});

/// What every napi function of the engine is bound to in this binary (see build.rs).
#[no_mangle]
pub extern "C" fn fuzz_napi_unavailable() -> ! {
    std::process::abort()
}
