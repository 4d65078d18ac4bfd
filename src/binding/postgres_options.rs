//! The options of a PostgreSQL source: `postgres: { uri, … }` instead of `mongo`, and `tables`
//! instead of `collections` (the same entries, keyed by `table: "schema.table"`).

use std::fmt;

use napi_derive::napi;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::options::{credential, ms, path, CollectionEntry, CollectionOptions};
use crate::config::{PollConfig, PostgresConfig, PostgresTls};
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
    /// TLS settings beyond the URI's `sslmode`.
    pub tls: Option<PostgresTlsOptions>,
    /// Follow changes by polling a timestamp column, where logical replication is not allowed
    /// (no slot, no publication; deletes are not seen).
    pub poll: Option<PollOptions>,
}

#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostgresTlsOptions {
    /// PEM file of the CA(s) to trust: TLS is then used whatever `sslmode` says, and the
    /// server's certificate must chain to one of them and name the host.
    pub ca_file: Option<String>,
    /// PEM client certificate, for servers that require one (with `keyFile`); TLS is then used.
    pub cert_file: Option<String>,
    /// PEM private key of `certFile` (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<String>,
}

#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PollOptions {
    /// A `timestamptz` or `timestamp` column that every insert and update sets, e.g. `'updated_at'`.
    pub column: String,
    /// Wait between polls once nothing is left to read (default 1000).
    pub interval_ms: Option<u32>,
    /// Rows whose column is less than this old wait for a later poll, so that a transaction
    /// committing within it after writing the column is not passed over (default 1000).
    pub settle_ms: Option<u32>,
}

impl PostgresOptions {
    pub fn into_config(self) -> SyncResult<PostgresConfig> {
        let uri = credential("postgres", "uri", self.uri, self.uri_file)?.ok_or_else(|| SyncError::config("postgres.uri: required (or postgres.uriFile)"))?;
        let defaults = PostgresConfig::new(uri);
        Ok(PostgresConfig {
            publication: self.publication,
            slot_prefix: self.slot_prefix.unwrap_or(defaults.slot_prefix.clone()),
            checkpoint_table: self.checkpoint_table.unwrap_or(defaults.checkpoint_table.clone()),
            tls: self.tls.map_or(defaults.tls.clone(), |t| PostgresTls { ca_file: path(t.ca_file), cert_file: path(t.cert_file), key_file: path(t.key_file) }),
            poll: self.poll.map(|p| {
                let poll = PollConfig::new(p.column);
                PollConfig { interval: p.interval_ms.map_or(poll.interval, ms), settle: p.settle_ms.map_or(poll.settle, ms), ..poll }
            }),
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
