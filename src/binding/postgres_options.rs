//! The options of a PostgreSQL source: `postgres: { uri, … }` instead of `mongo`, and `tables`
//! instead of `collections` (the same entries, keyed by `table: "schema.table"`).

use std::fmt;

use napi_derive::napi;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::options::{credential, CollectionEntry, CollectionOptions};
use crate::config::PostgresConfig;
use crate::error::{SyncError, SyncResult};

#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostgresOptions {
    /// `postgres://user:password@host:port/database` (`?sslmode=require` for TLS). The user needs
    /// the `REPLICATION` attribute (or to be the tables' owner and a superuser) to stream.
    pub uri: Option<String>,
    /// A file holding the URI (e.g. a mounted secret); its trailing line break is dropped.
    pub uri_file: Option<String>,
    /// An existing publication covering the tables; default: `mes_<name>`, created (or
    /// extended with missing tables) by the sync.
    pub publication: Option<String>,
    /// Prefix of the replication slots, one per table (default `'mes_'`).
    pub slot_prefix: Option<String>,
    /// Where checkpoints are kept, `"schema.table"` (default `'public.mongo_elastic_sync_checkpoints'`).
    pub checkpoint_table: Option<String>,
}

impl PostgresOptions {
    pub fn into_config(self) -> SyncResult<PostgresConfig> {
        let uri = credential("postgres", "uri", self.uri, self.uri_file)?.ok_or_else(|| SyncError::config("postgres.uri: required (or postgres.uriFile)"))?;
        let defaults = PostgresConfig::new(uri);
        Ok(PostgresConfig {
            publication: self.publication,
            slot_prefix: self.slot_prefix.unwrap_or(defaults.slot_prefix.clone()),
            checkpoint_table: self.checkpoint_table.unwrap_or(defaults.checkpoint_table.clone()),
            ..defaults
        })
    }
}

/// A `tables` entry: `"schema.table"`, or the options of a `collections` entry with `table`
/// in place of `namespace` (and no `filter`).
pub struct TableEntry(pub CollectionEntry);

impl<'de> Deserialize<'de> for TableEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = TableEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a \"schema.table\" string or an object of table options")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TableEntry, E> {
                Ok(TableEntry(CollectionEntry::Name(v.to_string())))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TableEntry, A::Error> {
                let mut fields = serde_json::Map::new();
                while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
                    match key.as_str() {
                        "namespace" => return Err(de::Error::custom("unknown field `namespace` (a table entry names its table with `table`)")),
                        "filter" => return Err(de::Error::custom("`filter` is not supported for PostgreSQL tables (use a transform returning null)")),
                        "table" => fields.insert("namespace".into(), value),
                        _ => fields.insert(key, value),
                    };
                }
                if !fields.contains_key("namespace") {
                    return Err(de::Error::missing_field("table"));
                }
                let options = CollectionOptions::deserialize(serde_json::Value::Object(fields)).map_err(de::Error::custom)?;
                Ok(TableEntry(CollectionEntry::Options(Box::new(options))))
            }
        }
        d.deserialize_any(EntryVisitor)
    }
}
