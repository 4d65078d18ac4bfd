//! NDJSON over TCP (Logstash's `json_lines` codec), optionally TLS, reconnecting with backoff.

mod config;
mod service;

pub use config::{TcpConfig, TcpTls};
pub use service::TcpTransport;
