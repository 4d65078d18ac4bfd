//! Connections to PostgreSQL: SQL sessions (tokio-postgres, TLS through rustls) and replication
//! sessions (pgwire-replication), both from the one URI, in UTC with ISO dates so that values
//! read the same in the copy and in the stream; and errors as engine errors.

use std::str::FromStr;
use std::sync::Arc;

use pgwire_replication::{PgWireError, ReplicationConfig, TlsConfig};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, Config};

use crate::error::{ErrorCode, SyncError, SyncResult};

/// Session settings that fix the text form of values.
pub const SESSION_OPTIONS: &str = "-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=postgres -c extra_float_digits=3";

/// The parsed URI (its credentials are never printed: `Config`'s Debug redacts the password).
#[derive(Clone)]
pub struct PgTarget {
    config: Config,
}

impl PgTarget {
    pub fn parse(uri: &str) -> SyncResult<Self> {
        let mut config = Config::from_str(uri).map_err(|e| SyncError::config(format!("postgres.uri: {e}")))?;
        config.options(SESSION_OPTIONS).application_name("mongo-elastic-sync");
        Ok(PgTarget { config })
    }

    fn host_port(&self) -> (String, u16) {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        (host, self.config.get_ports().first().copied().unwrap_or(5432))
    }

    /// Where, for messages: host, port and database (no user, no password).
    pub fn describe(&self) -> String {
        let (host, port) = self.host_port();
        format!("{host}:{port}/{}", self.config.get_dbname().unwrap_or("postgres"))
    }

    /// A SQL session; its connection runs on its own task until the client is dropped.
    pub async fn connect(&self) -> SyncResult<Client> {
        let failed = |e: tokio_postgres::Error| pg_error(&format!("cannot connect to PostgreSQL at {}", self.describe()), &e);
        // TLS with `sslmode=require`, the server's certificate verified against the public
        // roots; `prefer` (the default) and `disable` connect without TLS.
        let (client, connection) = match self.config.get_ssl_mode() {
            SslMode::Disable | SslMode::Prefer => {
                let (client, connection) = self.config.connect(tokio_postgres::NoTls).await.map_err(failed)?;
                tokio::spawn(async move { connection.await.ok() });
                return Ok(client);
            }
            _ => self.config.connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls_config())).await.map_err(failed)?,
        };
        tokio::spawn(async move { connection.await.ok() });
        Ok(client)
    }

    /// A replication session on `slot`, streaming `publication`.
    pub fn replication(&self, slot: &str, publication: &str) -> ReplicationConfig {
        let (host, port) = self.host_port();
        let password = self.config.get_password().map(|p| String::from_utf8_lossy(p).into_owned()).unwrap_or_default();
        let tls = match self.config.get_ssl_mode() {
            SslMode::Require => TlsConfig::require(),
            _ => TlsConfig::disabled(),
        };
        ReplicationConfig::new(host, self.config.get_user().unwrap_or("postgres"), password, self.config.get_dbname().unwrap_or("postgres"), slot, publication)
            .with_port(port)
            .with_tls(tls)
            .with_options(SESSION_OPTIONS)
            .with_application_name("mongo-elastic-sync")
            .with_max_message_size(256 * 1024 * 1024)
            .with_buffer_size(1024)
    }
}

/// One SQL session shared by its users, connected again once lost.
pub struct SharedClient {
    target: PgTarget,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
}

impl SharedClient {
    pub fn new(target: PgTarget, client: Option<Client>) -> Self {
        SharedClient { target, client: tokio::sync::Mutex::new(client.map(Arc::new)) }
    }

    pub async fn get(&self) -> SyncResult<Arc<Client>> {
        let mut client = self.client.lock().await;
        match &*client {
            Some(c) if !c.is_closed() => Ok(c.clone()),
            _ => {
                let c = Arc::new(self.target.connect().await?);
                *client = Some(c.clone());
                Ok(c)
            }
        }
    }
}

fn tls_config() -> rustls::ClientConfig {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// A SQL error as an engine error: refused connections and lost sessions are worth retrying
/// (`ERR_MONGO_UNREACHABLE`, the source's code), other server errors are not (`ERR_MONGO`).
pub fn pg_error(context: &str, e: &tokio_postgres::Error) -> SyncError {
    let (code, detail) = match e.as_db_error() {
        // 28xxx: authentication; 3D000: no such database; 57P0x: shutting down; 55006: a slot
        // still held by a session that is ending.
        Some(db) if db.code().code().starts_with("28") || ["3D000", "55006"].contains(&db.code().code()) || db.code().code().starts_with("57P") => {
            (ErrorCode::MongoUnreachable, format!("{} ({})", db.message(), db.code().code()))
        }
        Some(db) => (ErrorCode::Mongo, format!("{} ({})", db.message(), db.code().code())),
        None => (ErrorCode::MongoUnreachable, crate::error::cause_chain(e)),
    };
    SyncError::new(code, format!("{context}: {detail}"))
}

/// A replication session's error as an engine error: a slot that is gone, or whose WAL was
/// removed, is lost history.
pub fn wire_error(context: &str, e: &PgWireError) -> SyncError {
    let text = e.to_string();
    let lost = ["can no longer get changes from replication slot", "has already been removed", "This slot has been invalidated"];
    let code = if lost.iter().any(|l| text.contains(l)) || (text.contains("replication slot") && text.contains("does not exist")) {
        ErrorCode::HistoryLost
    } else if e.is_io() || e.is_auth() || e.is_tls() || e.is_transient() || text.contains("is active for PID") {
        ErrorCode::MongoUnreachable
    } else {
        ErrorCode::Mongo
    };
    SyncError::new(code, format!("{context}: {text}"))
}
