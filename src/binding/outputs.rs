//! The `outputs` option: one typed object per output kind, checked field by field.

use std::path::PathBuf;
use std::time::Duration;

use napi_derive::napi;
use serde::Deserialize;

use crate::config::{OutputConfig, Secret};
use crate::error::{SyncError, SyncResult};
use crate::sink::file::{FileConfig, FsyncPolicy};
use crate::sink::nats::{NatsAuth, NatsConfig};
use crate::sink::tcp::{TcpConfig, TcpTls};

/// Applies the changes to Elasticsearch/OpenSearch, using the top-level `elasticsearch` options.
#[napi(object)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ElasticsearchOutput {
    #[napi(js_name = "type", ts_type = "'elasticsearch'")]
    #[serde(rename = "type")]
    pub kind: String,
}

/// NDJSON change records appended to a file, rotated to `<path>.<n>` (for Filebeat and other shippers).
#[napi(object)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileOutput {
    #[napi(js_name = "type", ts_type = "'file'")]
    #[serde(rename = "type")]
    pub kind: String,
    pub path: String,
    /// Rotate when the file reaches this size (default 100 MiB).
    pub rotate_bytes: Option<f64>,
    /// Rotate a non-empty file this many seconds after it was started (default: size only).
    pub rotate_seconds: Option<f64>,
    /// Rotated files kept (default 5).
    pub keep_files: Option<u32>,
    /// `'batch'` (default): fsync before a batch counts as written; `'never'`: leave it to the OS.
    #[napi(ts_type = "'batch' | 'never'")]
    pub fsync: Option<String>,
}

/// NDJSON change records on standard output.
#[napi(object)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StdoutOutput {
    #[napi(js_name = "type", ts_type = "'stdout'")]
    #[serde(rename = "type")]
    pub kind: String,
}

/// NDJSON change records over TCP (Logstash `tcp` input with the `json_lines` codec).
#[napi(object)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpOutput {
    #[napi(js_name = "type", ts_type = "'tcp'")]
    #[serde(rename = "type")]
    pub kind: String,
    pub host: String,
    pub port: f64,
    pub tls: Option<TcpTlsOptions>,
    /// Default 10000.
    pub connect_timeout_ms: Option<u32>,
    /// The longest a write waits for the receiver to take more bytes (default 30000).
    pub write_timeout_ms: Option<u32>,
    /// Recent bytes sent again after a reconnection, since TCP does not acknowledge (default 4 MiB).
    pub replay_bytes: Option<u32>,
}

#[napi(object)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpTlsOptions {
    /// PEM CA certificate(s) to trust instead of the public roots.
    pub ca_file: Option<String>,
    /// `false` skips certificate verification (a warning is emitted). Never in production.
    pub reject_unauthorized: Option<bool>,
    /// Name the certificate must carry (default: `host`).
    pub server_name: Option<String>,
}

/// Change records published to NATS JetStream, deduplicated by `Nats-Msg-Id`.
#[napi(object)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NatsOutput {
    #[napi(js_name = "type", ts_type = "'nats'")]
    #[serde(rename = "type")]
    pub kind: String,
    /// e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// Subject template with `{db}`, `{coll}`, `{index}` (default `'mongo.{db}.{coll}'`).
    pub subject: Option<String>,
    /// JetStream stream (default `'MONGO_ELASTIC_SYNC'`).
    pub stream: Option<String>,
    /// Create the stream over the template's subjects if absent (default true).
    pub create_stream: Option<bool>,
    pub token: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// A `.creds` file (JWT and NKey seed).
    pub credentials_file: Option<String>,
}

/// Converts the JS `outputs` array (default: Elasticsearch only).
pub fn outputs_config(outputs: Option<Vec<serde_json::Value>>) -> SyncResult<Vec<OutputConfig>> {
    let Some(outputs) = outputs else { return Ok(vec![OutputConfig::Elasticsearch]) };
    outputs.into_iter().enumerate().map(|(i, value)| output_config(&format!("outputs[{i}]"), value)).collect()
}

pub(super) fn parse<T: for<'de> Deserialize<'de>>(field: &str, value: serde_json::Value) -> SyncResult<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." { field.to_string() } else { format!("{field}.{path}") };
        SyncError::config(format!("{at}: {}", e.inner()))
    })
}

fn output_config(field: &str, value: serde_json::Value) -> SyncResult<OutputConfig> {
    let kind = value.get("type").and_then(|t| t.as_str()).map(str::to_string);
    let whole = |v: Option<f64>, what: &str, min: f64, max: f64| -> SyncResult<Option<f64>> {
        match v {
            Some(n) if n.fract() != 0.0 || n < min || n > max => {
                Err(SyncError::config(format!("{field}.{what}: {n} is not a whole number from {min} to {max}")))
            }
            other => Ok(other),
        }
    };
    Ok(match kind.as_deref() {
        Some("elasticsearch") => {
            parse::<ElasticsearchOutput>(field, value)?;
            OutputConfig::Elasticsearch
        }
        Some("stdout") => {
            parse::<StdoutOutput>(field, value)?;
            OutputConfig::Stdout
        }
        Some("file") => {
            let o: FileOutput = parse(field, value)?;
            OutputConfig::File(FileConfig {
                path: PathBuf::from(o.path),
                rotate_bytes: whole(o.rotate_bytes, "rotateBytes", 1.0, 2f64.powi(53))?.map_or(FileConfig::DEFAULT_ROTATE_BYTES, |n| n as u64),
                rotate_every: whole(o.rotate_seconds, "rotateSeconds", 0.0, 1e9)?.filter(|s| *s > 0.0).map(Duration::from_secs_f64),
                keep_files: o.keep_files.map_or(FileConfig::DEFAULT_KEEP_FILES, |n| n as usize),
                fsync: match o.fsync.as_deref() {
                    None | Some("batch") => FsyncPolicy::Batch,
                    Some("never") => FsyncPolicy::Never,
                    Some(other) => return Err(SyncError::config(format!("{field}.fsync: \"{other}\" is not one of 'batch', 'never'"))),
                },
            })
        }
        Some("tcp") => {
            let o: TcpOutput = parse(field, value)?;
            let port = whole(Some(o.port), "port", 1.0, 65535.0)?.expect("given") as u16;
            OutputConfig::Tcp(TcpConfig {
                host: o.host,
                port,
                tls: o.tls.map(|t| TcpTls {
                    ca_file: t.ca_file.map(PathBuf::from),
                    reject_unauthorized: t.reject_unauthorized.unwrap_or(true),
                    server_name: t.server_name,
                }),
                connect_timeout: Duration::from_millis(o.connect_timeout_ms.unwrap_or(10_000).max(1) as u64),
                write_timeout: o.write_timeout_ms.map_or(TcpConfig::DEFAULT_WRITE_TIMEOUT, |ms| Duration::from_millis(ms.max(1) as u64)),
                replay_bytes: o.replay_bytes.map_or(TcpConfig::DEFAULT_REPLAY_BYTES, |n| n as usize),
            })
        }
        Some("nats") => {
            let o: NatsOutput = parse(field, value)?;
            let auth = match (o.token, o.username, o.password, o.credentials_file) {
                (None, None, None, None) => NatsAuth::None,
                (Some(token), None, None, None) => NatsAuth::Token(Secret::new(token)),
                (None, Some(username), password, None) => NatsAuth::UserPassword { username, password: Secret::new(password.unwrap_or_default()) },
                (None, None, None, Some(file)) => NatsAuth::CredentialsFile(PathBuf::from(file)),
                (None, None, Some(_), None) => return Err(SyncError::config(format!("{field}.password: given without username"))),
                _ => return Err(SyncError::config(format!("{field}: give only one of token, username/password or credentialsFile"))),
            };
            OutputConfig::Nats(NatsConfig {
                url: Secret::new(o.url),
                subject: o.subject.unwrap_or_else(|| NatsConfig::DEFAULT_SUBJECT.into()),
                stream: o.stream.unwrap_or_else(|| NatsConfig::DEFAULT_STREAM.into()),
                create_stream: o.create_stream.unwrap_or(true),
                auth,
            })
        }
        Some(other) => return Err(SyncError::config(format!("{field}.type: \"{other}\" is not one of 'elasticsearch', 'file', 'stdout', 'tcp', 'nats'"))),
        None => return Err(SyncError::config(format!("{field}.type: missing (one of 'elasticsearch', 'file', 'stdout', 'tcp', 'nats')"))),
    })
}
