use std::path::PathBuf;
use std::time::Duration;

use crate::error::{SyncError, SyncResult};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpConfig {
    pub host: String,
    pub port: u16,
    pub tls: Option<TcpTls>,
    pub connect_timeout: Duration,
    /// The most recent bytes sent, kept to be sent again after a reconnection: TCP does not
    /// acknowledge what the receiver processed, so what was in flight when a connection broke
    /// is repeated (records are idempotent for an external-versioned consumer).
    pub replay_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpTls {
    /// PEM CA certificate(s) to trust instead of the public roots.
    pub ca_file: Option<PathBuf>,
    /// `false` skips certificate verification (a warning is emitted). Never in production.
    pub reject_unauthorized: bool,
    /// The name to verify the certificate against (default: `host`).
    pub server_name: Option<String>,
}

impl Default for TcpTls {
    fn default() -> Self {
        TcpTls { ca_file: None, reject_unauthorized: true, server_name: None }
    }
}

impl TcpConfig {
    pub const DEFAULT_REPLAY_BYTES: usize = 4 * 1024 * 1024;
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

    pub fn validate(&self, field: &str) -> SyncResult<()> {
        if self.host.trim().is_empty() {
            return Err(SyncError::config(format!("{field}.host: must not be empty")));
        }
        if self.port == 0 {
            return Err(SyncError::config(format!("{field}.port: must be between 1 and 65535")));
        }
        if let Some(ca) = self.tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
            if !ca.is_file() {
                return Err(SyncError::config(format!("{field}.tls.caFile: {} is not a readable file", ca.display())));
            }
        }
        Ok(())
    }
}
