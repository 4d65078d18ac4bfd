//! The MongoDB client: URI options, TLS beyond the URI, pool size, and a first ping so that a
//! wrong address fails `start()` at once.

use std::time::Duration;

use mongodb::options::{ClientOptions, Tls, TlsOptions};
use mongodb::Client;

use super::error::mongo_error;
use crate::config::{redact_uri, MongoTls, SyncConfig};
use crate::error::{cause_chain, ErrorCode, SyncError, SyncResult};
use crate::event::{EventBus, SyncEvent};

/// Connections to MongoDB when the URI sets no `maxPoolSize`: room for about this many
/// collections' change streams, copy readers and checkpoint writes, plus one per listed collection
/// with a stream of its own (see [`default_pool_size`]).
const DEFAULT_MAX_POOL_SIZE: u32 = 100;

/// The pool when the URI sets none: [`DEFAULT_MAX_POOL_SIZE`] plus one connection per listed
/// collection that keeps a getMore waiting on a connection of its own, that is, not one of a
/// database with more listed collections than `mongo.databaseStreamThreshold` (those share one
/// stream). A thousand collections read through one stream would otherwise let their checkpoint
/// saves, all due together after a change in each, open a thousand connections at once
/// (measured: ~935, the server then too slow to renew the lease; README, "Benchmarks").
pub fn default_pool_size(config: &SyncConfig) -> u32 {
    let mut per_db: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
    for c in &config.collections {
        *per_db.entry(c.namespace.db.as_str()).or_default() += 1;
    }
    let own_streams: u32 = per_db.values().filter(|n| **n as usize <= config.mongo.database_stream_threshold).sum();
    DEFAULT_MAX_POOL_SIZE + own_streams
}

pub async fn connect(config: &SyncConfig, events: &EventBus) -> SyncResult<Client> {
    let uri = config.mongo.uri.expose();
    let unreachable = |msg: String| SyncError::new(ErrorCode::MongoUnreachable, format!("cannot connect to MongoDB at {}: {msg}", redact_uri(uri)));
    let mut options = ClientOptions::parse(uri).await.map_err(|e| unreachable(cause_chain(&e)))?;
    if let Some(tls) = &config.mongo.tls {
        apply_tls(&mut options, tls, events)?;
    }
    options.server_selection_timeout.get_or_insert(Duration::from_secs(10));
    options.connect_timeout.get_or_insert(Duration::from_secs(10));
    // Every collection with a stream of its own keeps a getMore waiting on a connection; with the
    // driver's 10, collections past the tenth would wait their turn (seen as +500 ms latency).
    options.max_pool_size.get_or_insert(default_pool_size(config));
    options.app_name.get_or_insert_with(|| "mongo-elastic-sync".to_string());
    let client = Client::with_options(options).map_err(|e| unreachable(cause_chain(&e)))?;
    client.database("admin").run_command(mongodb::bson::doc! {"ping": 1}).await.map_err(|e| unreachable(mongo_error("ping failed", &e).message))?;
    Ok(client)
}

/// `mongo.tls` over (and overriding) the URI's TLS options.
fn apply_tls(options: &mut ClientOptions, tls: &MongoTls, events: &EventBus) -> SyncResult<()> {
    for (field, file) in [("caFile", &tls.ca_file), ("certKeyFile", &tls.cert_key_file)] {
        if let Some(path) = file.as_ref().filter(|p| !p.is_file()) {
            return Err(SyncError::config(format!("mongo.tls.{field}: {} is not a readable file", path.display())));
        }
    }
    if tls.allow_invalid_certificates {
        events.emit(SyncEvent::Warning {
            namespace: String::new(),
            message: "mongo.tls.allowInvalidCertificates is true: the server's certificate is NOT verified".into(),
        });
    }
    let mut tls_options = match options.tls.take() {
        Some(Tls::Enabled(existing)) => existing,
        _ => TlsOptions::default(),
    };
    tls_options.ca_file_path = tls.ca_file.clone().or(tls_options.ca_file_path);
    tls_options.cert_key_file_path = tls.cert_key_file.clone().or(tls_options.cert_key_file_path);
    if tls.allow_invalid_certificates {
        tls_options.allow_invalid_certificates = Some(true);
    }
    options.tls = Some(Tls::Enabled(tls_options));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::config;

    /// Collections of a database past the threshold share one stream: they add no connection
    /// each to the pool (a thousand of them once opened ~935 for their checkpoint saves).
    #[test]
    fn only_collections_with_a_stream_of_their_own_enlarge_the_pool() {
        let many: Vec<String> = (0..1000).map(|i| format!("big.c{i}")).collect();
        let few = ["small.a", "small.b"];
        let names: Vec<&str> = many.iter().map(String::as_str).chain(few).collect();
        let mut shared = config(&names);
        shared.mongo.database_stream_threshold = 50;
        assert_eq!(default_pool_size(&shared), DEFAULT_MAX_POOL_SIZE + 2);
        shared.mongo.database_stream_threshold = 1000;
        assert_eq!(default_pool_size(&shared), DEFAULT_MAX_POOL_SIZE + 1002, "1,000 is not past a threshold of 1,000");
    }
}
