use serde_json::json;

use super::*;
use crate::config::{CollectionConfig, Namespace};

fn collection(ns: &str, index: &str) -> CollectionConfig {
    CollectionConfig::new(index.into(), Namespace::parse(ns).unwrap())
}

fn config(collections: Vec<CollectionConfig>) -> SyncConfig {
    SyncConfig { name: "shop".into(), collections, ..SyncConfig::default() }
}

fn exists(conflict: Option<&str>, added: &[&str]) -> IndexState {
    IndexState::Exists { conflict: conflict.map(str::to_string), added: added.iter().map(|s| s.to_string()).collect() }
}

#[test]
fn each_kind_of_change_gets_its_step() {
    let orders = collection("shop.orders", "orders");
    let mut users = collection("shop.users", "users");
    users.fields.exclude = vec!["password".into()];
    let carts = collection("shop.carts", "carts");
    let items = collection("shop.items", "items");
    let fresh = collection("shop.fresh", "fresh");
    let cfg = config(vec![orders.clone(), users.clone(), carts.clone(), items.clone(), fresh]);
    let observed = Observed {
        checkpoints: ["shop.orders", "shop.users", "shop.carts", "shop.items", "shop.gone"].map(String::from).to_vec(),
        applied: [("shop.orders", fingerprint(&orders)), ("shop.users", fingerprint(&collection("shop.users", "users"))), ("shop.carts", fingerprint(&carts))]
            .map(|(k, v)| (k.to_string(), v))
            .into(),
        indices: [
            ("orders", exists(Some("maps \"total\" as keyword, not long"), &[])),
            ("users", exists(None, &[])),
            ("carts", exists(None, &["note"])),
            ("items", exists(None, &[])),
            ("fresh", IndexState::Missing),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .into(),
        ..Observed::default()
    };
    let plan = diff(&cfg, &observed);
    let rules = "field rules, filter, conversion, pipeline or routing changed".to_string();
    assert_eq!(
        plan.steps,
        [
            Step::Recopy { namespace: "shop.orders".into(), index: "orders".into(), reason: "mappings: \"orders\" maps \"total\" as keyword, not long".into() },
            Step::Recopy { namespace: "shop.users".into(), index: "users".into(), reason: rules },
            Step::MapFields { namespace: "shop.carts".into(), index: "carts".into(), fields: vec!["note".into()] },
            Step::Unchanged { namespace: "shop.items".into(), index: "items".into() },
            Step::Copy { namespace: "shop.fresh".into(), index: "fresh".into() },
            Step::Remove { namespace: "shop.gone".into() },
        ]
    );
    assert!(plan.destructive);
    let text = plan.render();
    assert!(text.starts_with("sync \"shop\":\n  ! re-copy   shop.orders → orders: mappings:"), "{text}");
    assert!(text.ends_with("5 to change, 3 destructive\n"), "{text}");
    let json = serde_json::to_value(&plan).unwrap();
    assert_eq!(json["steps"][2], json!({ "kind": "mapFields", "namespace": "shop.carts", "index": "carts", "fields": ["note"] }));
}

#[test]
fn nothing_changed_is_not_destructive_and_discovered_collections_are_not_removed() {
    let items = collection("shop.items", "items");
    let mut cfg = config(vec![items.clone()]);
    cfg.discovery = Some(crate::config::Discovery { include: vec![regex::Regex::new("^(?:shop\\.new_.*)$").unwrap()], ..Default::default() });
    let observed = Observed {
        checkpoints: vec!["shop.items".into(), "shop.new_a".into()],
        applied: [("shop.items".to_string(), fingerprint(&items))].into(),
        indices: [("items".to_string(), exists(None, &[]))].into(),
        ..Observed::default()
    };
    let plan = diff(&cfg, &observed);
    assert_eq!(plan.steps, [Step::Unchanged { namespace: "shop.items".into(), index: "items".into() }]);
    assert!(!plan.destructive);
    assert_eq!(plan.render(), "sync \"shop\":\n    unchanged shop.items → items\n0 to change, 0 destructive\n");
}

fn setting(key: &str, from: Option<&str>, to: &str, dynamic: bool) -> SettingChange {
    SettingChange { key: key.into(), from: from.map(str::to_string), to: to.into(), dynamic }
}

/// The plan compared mappings only: a changed analyzer, shard count or refresh interval, or a
/// new alias, planned "unchanged" and was never applied to the existing index.
#[test]
fn settings_and_aliases_are_planned_static_ones_as_a_recopy() {
    let [tuned, sharded, aliased, plain] =
        [("shop.tuned", "tuned"), ("shop.sharded", "sharded"), ("shop.aliased", "aliased"), ("shop.plain", "plain")].map(|(ns, i)| collection(ns, i));
    let cfg = config(vec![tuned.clone(), sharded.clone(), aliased.clone(), plain.clone()]);
    let refresh = setting("index.refresh_interval", Some("1s"), "5s", true);
    let shards = setting("index.number_of_shards", Some("1"), "2", false);
    let observed = Observed {
        checkpoints: ["shop.tuned", "shop.sharded", "shop.aliased", "shop.plain"].map(String::from).to_vec(),
        applied: [&tuned, &sharded, &aliased, &plain].map(|c| (c.namespace.to_string(), fingerprint(c))).into(),
        indices: [("tuned", exists(None, &["note"])), ("sharded", exists(None, &[])), ("aliased", exists(None, &[])), ("plain", exists(None, &[]))]
            .map(|(k, v)| (k.to_string(), v))
            .into(),
        setups: [
            ("tuned", IndexSetup { settings: vec![refresh.clone()], missing_alias: None }),
            ("sharded", IndexSetup { settings: vec![refresh.clone(), shards], missing_alias: None }),
            ("aliased", IndexSetup { settings: vec![], missing_alias: Some("shop-aliased".into()) }),
            ("plain", IndexSetup::default()),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .into(),
    };
    let plan = diff(&cfg, &observed);
    assert_eq!(
        plan.steps,
        [
            Step::UpdateIndex { namespace: "shop.tuned".into(), index: "tuned".into(), settings: vec![refresh], alias: None, fields: vec!["note".into()] },
            Step::Recopy {
                namespace: "shop.sharded".into(),
                index: "sharded".into(),
                reason: "settings: index.number_of_shards 1 → 2 (static: only a new index takes them)".into()
            },
            Step::UpdateIndex {
                namespace: "shop.aliased".into(),
                index: "aliased".into(),
                settings: vec![],
                alias: Some("shop-aliased".into()),
                fields: vec![]
            },
            Step::Unchanged { namespace: "shop.plain".into(), index: "plain".into() },
        ]
    );
    assert!(plan.destructive, "the static setting needs a re-copy");
    let text = plan.render();
    assert!(text.contains("  ~ update    shop.tuned → tuned: settings index.refresh_interval 1s → 5s; new fields note\n"), "{text}");
    assert!(text.contains("  ~ update    shop.aliased → aliased: alias \"shop-aliased\" added\n"), "{text}");
    let json = serde_json::to_value(&plan).unwrap();
    assert_eq!(
        json["steps"][0],
        json!({ "kind": "updateIndex", "namespace": "shop.tuned", "index": "tuned", "alias": null, "fields": ["note"],
            "settings": [{ "key": "index.refresh_interval", "from": "1s", "to": "5s", "dynamic": true }] })
    );
}
