//! Connections to PostgreSQL: SQL sessions (tokio-postgres, TLS through rustls) and replication
//! sessions (pgwire-replication), both from the one URI, in UTC with ISO dates so that values
//! read the same in the copy and in the stream; and errors as engine errors.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use pgwire_replication::{PgWireError, ReplicationConfig, TlsConfig};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, Config};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::PostgresConfig;
use crate::error::{ErrorCode, SyncError, SyncResult};

/// Session settings that fix the text form of values.
pub const SESSION_OPTIONS: &str = "-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=postgres -c extra_float_digits=3";

/// The parsed URI (its credentials are never printed: `Config`'s Debug redacts the password)
/// and the CA to trust, if given.
#[derive(Clone)]
pub struct PgTarget {
    config: Config,
    ca_file: Option<PathBuf>,
    /// The client certificate and key files, when the server requires one.
    client_cert: Option<(PathBuf, PathBuf)>,
}

impl PgTarget {
    pub fn parse(uri: &str) -> SyncResult<Self> {
        let mut config = Config::from_str(uri).map_err(|e| SyncError::config(format!("postgres.uri: {e}")))?;
        config.options(SESSION_OPTIONS).application_name("mongo-elastic-sync");
        Ok(PgTarget { config, ca_file: None, client_cert: None })
    }

    /// The URI and the TLS options of `postgres`.
    pub fn new(pg: &PostgresConfig) -> SyncResult<Self> {
        let mut target = Self::parse(pg.uri.expose())?;
        if let Some(ca) = &pg.tls.ca_file {
            if !ca.is_file() {
                return Err(SyncError::config(format!("postgres.tls.caFile: {} is not a readable file", ca.display())));
            }
            target.ca_file = Some(ca.clone());
        }
        target.client_cert = match (&pg.tls.cert_file, &pg.tls.key_file) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => return Err(SyncError::config("postgres.tls: certFile and keyFile go together")),
        };
        if target.tls() {
            target.tls_config()?;
        }
        Ok(target)
    }

    /// TLS is used: `sslmode=require`, or a CA or a client certificate given.
    fn tls(&self) -> bool {
        self.ca_file.is_some() || self.client_cert.is_some() || !matches!(self.config.get_ssl_mode(), SslMode::Disable | SslMode::Prefer)
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
        let failed = |e: tokio_postgres::Error| self.connect_error(e);
        // TLS with `sslmode=require` or a CA given, the server's certificate verified against
        // that CA (else the public roots); `prefer` (the default) and `disable` connect without.
        if !self.tls() {
            let (client, connection) = self.config.connect(tokio_postgres::NoTls).await.map_err(failed)?;
            tokio::spawn(async move { connection.await.ok() });
            return Ok(client);
        }
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(self.tls_config()?);
        let mut config = self.config.clone();
        config.ssl_mode(SslMode::Require);
        let (client, connection) = config.connect(tls).await.map_err(failed)?;
        tokio::spawn(async move { connection.await.ok() });
        Ok(client)
    }

    /// A failed connection: a certificate that does not verify says which CA was used.
    fn connect_error(&self, e: tokio_postgres::Error) -> SyncError {
        let mut err = pg_error(&format!("cannot connect to PostgreSQL at {}", self.describe()), &e);
        if err.message.contains("invalid peer certificate") {
            let trusted = self.ca_file.as_ref().map_or("the public roots (postgres.tls.caFile to trust another CA)".to_string(), |ca| {
                format!("the CA in postgres.tls.caFile ({})", ca.display())
            });
            err.message = format!(
                "{}: the server's TLS certificate is not trusted: it does not chain to {trusted}, or does not name {}",
                err.message,
                self.host_port().0
            );
        }
        err
    }

    /// A replication session on `slot`, streaming `publication`.
    pub fn replication(&self, slot: &str, publication: &str) -> ReplicationConfig {
        let (host, port) = self.host_port();
        let password = self.config.get_password().map(|p| String::from_utf8_lossy(p).into_owned()).unwrap_or_default();
        // Verified as the SQL sessions are: against the CA given, else the public roots. The
        // replication client builds its TLS with the process's default crypto provider: ring,
        // as everywhere else here (an error means one is installed already).
        if self.tls() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let tls = match (self.tls(), &self.client_cert) {
            (false, _) => TlsConfig::disabled(),
            (true, None) => TlsConfig::verify_full(self.ca_file.clone()).with_sni_hostname(host.clone()),
            (true, Some((cert, key))) => TlsConfig::verify_full(self.ca_file.clone()).with_sni_hostname(host.clone()).with_client_cert(cert, key),
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

impl PgTarget {
    /// The SQL sessions' TLS: the CA's roots (else the public ones), and the client certificate.
    fn tls_config(&self) -> SyncResult<rustls::ClientConfig> {
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots(self.ca_file.as_deref())?);
        let Some((cert_file, key_file)) = &self.client_cert else { return Ok(builder.with_no_client_auth()) };
        let (chain, key) = client_identity(cert_file, key_file)?;
        let unfit = |e: rustls::Error| SyncError::config(format!("postgres.tls.keyFile: {} does not fit postgres.tls.certFile: {e}", key_file.display()));
        builder.with_client_auth_cert(chain, key).map_err(unfit)
    }
}

/// The client certificate chain of `cert` and the private key of `key` (PEM files). Messages
/// name the files, never their contents.
fn client_identity(cert: &Path, key: &Path) -> SyncResult<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let pem = crate::config::read_option_file("postgres.tls.certFile", cert, crate::config::MAX_CERTIFICATE_FILE, "a certificate file")?;
    let chain = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().unwrap_or_default();
    if chain.is_empty() {
        return Err(SyncError::config(format!("postgres.tls.certFile: {} is not a PEM certificate file", cert.display())));
    }
    let pem = crate::config::read_option_file("postgres.tls.keyFile", key, crate::config::MAX_CERTIFICATE_FILE, "a key file")?;
    let key = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|_| SyncError::config(format!("postgres.tls.keyFile: {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", key.display())))?;
    Ok((chain, key))
}

/// The roots to trust: the certificates of `ca_file`, else the public roots.
fn roots(ca_file: Option<&Path>) -> SyncResult<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let unreadable =
                |e: &dyn std::fmt::Display| SyncError::config(format!("postgres.tls.caFile: {} is not a PEM certificate file: {e}", path.display()));
            let pem = crate::config::read_option_file("postgres.tls.caFile", path, crate::config::MAX_CERTIFICATE_FILE, "a certificate file")?;
            let certs = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().map_err(|e| unreadable(&e))?;
            if certs.is_empty() {
                return Err(unreadable(&"no certificate in it"));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| unreadable(&e))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(roots)
}

/// A SQL error as an engine error: refused connections and lost sessions are worth retrying
/// (`ERR_POSTGRES_UNREACHABLE`), other server errors are not (`ERR_POSTGRES`).
pub fn pg_error(context: &str, e: &tokio_postgres::Error) -> SyncError {
    let (code, detail) = match e.as_db_error() {
        // 28xxx: authentication; 3D000: no such database; 57P0x: shutting down; 55006: a slot
        // still held by a session that is ending.
        Some(db) if db.code().code().starts_with("28") || ["3D000", "55006"].contains(&db.code().code()) || db.code().code().starts_with("57P") => {
            (ErrorCode::PostgresUnreachable, format!("{} ({})", db.message(), db.code().code()))
        }
        Some(db) => (ErrorCode::Postgres, format!("{} ({})", db.message(), db.code().code())),
        None => (ErrorCode::PostgresUnreachable, crate::error::cause_chain(e)),
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
        ErrorCode::PostgresUnreachable
    } else {
        ErrorCode::Postgres
    };
    SyncError::new(code, format!("{context}: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_server_out_of_reach_is_postgres_unreachable_and_names_no_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let target = PgTarget::parse(&format!("postgres://app:hunter2-secret@127.0.0.1:{port}/shop?connect_timeout=5")).unwrap();
        let err = target.connect().await.unwrap_err();
        assert_eq!(err.code, ErrorCode::PostgresUnreachable, "{err}");
        assert!(err.to_string().starts_with("ERR_POSTGRES_UNREACHABLE: cannot connect to PostgreSQL at 127.0.0.1:"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
