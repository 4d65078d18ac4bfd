//! The `outputs` option: one typed object per output kind, chosen by its `type`, checked field by
//! field (unknown keys are errors) like the rest of the options.

use std::path::PathBuf;
use std::time::Duration;

use napi_derive::napi;
use serde::{Deserialize, Deserializer};

use super::options::{credential, ms};
use super::parse::parse_nested;
use crate::config::{OutputConfig, Secret};
use crate::error::{SyncError, SyncResult};
use crate::sink::file::{FileConfig, FsyncPolicy};
use crate::sink::nats::{NatsAuth, NatsConfig};
use crate::sink::tcp::{TcpConfig, TcpTls};

/// Applies the changes to Elasticsearch/OpenSearch, using the top-level `elasticsearch` options.
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ElasticsearchOutput {
    #[napi(js_name = "type", ts_type = "'elasticsearch'")]
    #[serde(rename = "type")]
    #[allow(dead_code)] // the TS union's discriminant, already read to choose this type
    pub kind: String,
}

/// NDJSON change records appended to a file, rotated to `<path>.<n>` (for Filebeat and other shippers).
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileOutput {
    #[napi(js_name = "type", ts_type = "'file'")]
    #[serde(rename = "type")]
    #[allow(dead_code)] // the TS union's discriminant, already read to choose this type
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
    pub fsync: Option<FsyncOption>,
}

/// `fsync` of a file output.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub enum FsyncOption {
    Batch,
    Never,
}

impl From<FsyncOption> for FsyncPolicy {
    fn from(option: FsyncOption) -> Self {
        match option {
            FsyncOption::Batch => FsyncPolicy::Batch,
            FsyncOption::Never => FsyncPolicy::Never,
        }
    }
}

/// NDJSON change records on standard output.
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StdoutOutput {
    #[napi(js_name = "type", ts_type = "'stdout'")]
    #[serde(rename = "type")]
    #[allow(dead_code)] // the TS union's discriminant, already read to choose this type
    pub kind: String,
}

/// NDJSON change records over TCP (Logstash `tcp` input with the `json_lines` codec).
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpOutput {
    #[napi(js_name = "type", ts_type = "'tcp'")]
    #[serde(rename = "type")]
    #[allow(dead_code)] // the TS union's discriminant, already read to choose this type
    pub kind: String,
    pub host: String,
    pub port: f64,
    pub tls: Option<TcpTlsOptions>,
    /// Default 10000.
    pub connect_timeout_ms: Option<u32>,
    /// Recent bytes sent again after a reconnection, since TCP does not acknowledge (default 4 MiB).
    pub replay_bytes: Option<u32>,
}

#[napi(object, object_from_js = false, object_to_js = false)]
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
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NatsOutput {
    #[napi(js_name = "type", ts_type = "'nats'")]
    #[serde(rename = "type")]
    #[allow(dead_code)] // the TS union's discriminant, already read to choose this type
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
    /// A file holding the token (e.g. a mounted secret).
    pub token_file: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// A file holding the password.
    pub password_file: Option<String>,
    /// A `.creds` file (JWT and NKey seed).
    pub credentials_file: Option<String>,
}

/// One entry of `outputs`.
pub enum OutputOptions {
    Elasticsearch,
    Stdout,
    File(FileOutput),
    Tcp(TcpOutput),
    Nats(NatsOutput),
}

const TYPES: &str = "'elasticsearch', 'file', 'stdout', 'tcp', 'nats'";

impl<'de> Deserialize<'de> for OutputOptions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = serde_json::Value::deserialize(d)?;
        let kind = match value.get("type") {
            Some(serde_json::Value::String(kind)) => kind.clone(),
            Some(_) => return Err(D::Error::custom(format!("type: must be one of {TYPES}"))),
            None if value.is_object() => return Err(D::Error::missing_field("type")),
            None => return Err(D::Error::custom(format!("must be an object with a `type` (one of {TYPES})"))),
        };
        Ok(match kind.as_str() {
            "elasticsearch" => parse_nested::<ElasticsearchOutput, _>(value).map(|_| OutputOptions::Elasticsearch)?,
            "stdout" => parse_nested::<StdoutOutput, _>(value).map(|_| OutputOptions::Stdout)?,
            "file" => OutputOptions::File(parse_nested(value)?),
            "tcp" => OutputOptions::Tcp(parse_nested(value)?),
            "nats" => OutputOptions::Nats(parse_nested(value)?),
            other => return Err(D::Error::unknown_variant(other, &["elasticsearch", "file", "stdout", "tcp", "nats"])),
        })
    }
}

/// A number given where a whole number from `min` to `max` is expected.
fn whole(at: &str, value: Option<f64>, min: f64, max: f64) -> SyncResult<Option<f64>> {
    match value {
        Some(n) if n.fract() != 0.0 || n < min || n > max => Err(SyncError::config(format!("{at}: {n} is not a whole number from {min} to {max}"))),
        other => Ok(other),
    }
}

impl OutputOptions {
    /// The output's config; `at` (`outputs[i]`) names it in errors.
    pub fn into_config(self, at: &str) -> SyncResult<OutputConfig> {
        Ok(match self {
            OutputOptions::Elasticsearch => OutputConfig::Elasticsearch,
            OutputOptions::Stdout => OutputConfig::Stdout,
            OutputOptions::File(o) => OutputConfig::File(o.into_config(at)?),
            OutputOptions::Tcp(o) => OutputConfig::Tcp(o.into_config(at)?),
            OutputOptions::Nats(o) => OutputConfig::Nats(o.into_config(at)?),
        })
    }
}

impl FileOutput {
    fn into_config(self, at: &str) -> SyncResult<FileConfig> {
        Ok(FileConfig {
            path: PathBuf::from(self.path),
            rotate_bytes: whole(&format!("{at}.rotateBytes"), self.rotate_bytes, 1.0, 2f64.powi(53))?.map_or(FileConfig::DEFAULT_ROTATE_BYTES, |n| n as u64),
            rotate_every: whole(&format!("{at}.rotateSeconds"), self.rotate_seconds, 0.0, 1e9)?.filter(|s| *s > 0.0).map(Duration::from_secs_f64),
            keep_files: self.keep_files.map_or(FileConfig::DEFAULT_KEEP_FILES, |n| n as usize),
            fsync: self.fsync.map_or(FsyncPolicy::default(), FsyncPolicy::from),
        })
    }
}

impl TcpOutput {
    fn into_config(self, at: &str) -> SyncResult<TcpConfig> {
        let port = whole(&format!("{at}.port"), Some(self.port), 1.0, 65535.0)?.unwrap_or_default() as u16;
        Ok(TcpConfig {
            host: self.host,
            port,
            tls: self.tls.map(|t| TcpTls {
                ca_file: t.ca_file.map(PathBuf::from),
                reject_unauthorized: t.reject_unauthorized.unwrap_or(TcpTls::default().reject_unauthorized),
                server_name: t.server_name,
            }),
            connect_timeout: self.connect_timeout_ms.map_or(TcpConfig::DEFAULT_CONNECT_TIMEOUT, |v| ms(v.max(1))),
            replay_bytes: self.replay_bytes.map_or(TcpConfig::DEFAULT_REPLAY_BYTES, |n| n as usize),
        })
    }
}

impl NatsOutput {
    fn into_config(self, at: &str) -> SyncResult<NatsConfig> {
        let token = credential(at, "token", self.token, self.token_file)?;
        let password = credential(at, "password", self.password, self.password_file)?;
        let auth = match (token, self.username, password, self.credentials_file) {
            (None, None, None, None) => NatsAuth::None,
            (Some(token), None, None, None) => NatsAuth::Token(token),
            (None, Some(username), password, None) => NatsAuth::UserPassword { username, password: password.unwrap_or_default() },
            (None, None, None, Some(file)) => NatsAuth::CredentialsFile(PathBuf::from(file)),
            (None, None, Some(_), None) => return Err(SyncError::config(format!("{at}.password: given without username"))),
            _ => return Err(SyncError::config(format!("{at}: give only one of token, username/password or credentialsFile"))),
        };
        Ok(NatsConfig {
            url: Secret::new(self.url),
            subject: self.subject.unwrap_or_else(|| NatsConfig::DEFAULT_SUBJECT.into()),
            stream: self.stream.unwrap_or_else(|| NatsConfig::DEFAULT_STREAM.into()),
            create_stream: self.create_stream.unwrap_or(NatsConfig::DEFAULT_CREATE_STREAM),
            auth,
        })
    }
}
