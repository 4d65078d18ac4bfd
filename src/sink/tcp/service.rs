use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::crypto::{ring, verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;

use super::config::{TcpConfig, TcpTls};
use crate::error::{SyncError, SyncResult};
use crate::sink::record::{ndjson, Record, RecordTransport};

trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// The writing side of a connection; a task watches the reading side, since the receiver
/// sends nothing and closing is the only thing it can say. Writes into a connection the peer
/// already closed would otherwise succeed (into the kernel's buffer) and be lost.
struct Connection {
    writer: WriteHalf<Box<dyn Duplex>>,
    closed: Arc<AtomicBool>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Connection {
    fn new(stream: Box<dyn Duplex>) -> Self {
        let (mut reader, writer) = tokio::io::split(stream);
        let closed = Arc::new(AtomicBool::new(false));
        let flag = closed.clone();
        let watcher = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            // Whatever the receiver sends is ignored; end of stream or an error means closed.
            while let Ok(n) = reader.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            flag.store(true, Ordering::SeqCst);
        });
        Connection { writer, closed, watcher }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

pub struct TcpTransport {
    config: TcpConfig,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    connection: Option<Connection>,
    /// Recently sent batches, oldest first, at most `replay_bytes` in all (but the newest batch).
    replay: VecDeque<Vec<u8>>,
    replay_len: usize,
}

impl TcpTransport {
    pub fn new(config: TcpConfig) -> SyncResult<Self> {
        let tls = config.tls.as_ref().map(|t| tls_connector(&config.host, t)).transpose()?;
        Ok(TcpTransport { config, tls, state: Mutex::new(State::default()) })
    }

    async fn connect(&self) -> Result<Connection, String> {
        let address = (self.config.host.as_str(), self.config.port);
        let stream = tokio::time::timeout(self.config.connect_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| format!("no connection within {} ms", self.config.connect_timeout.as_millis()))?
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let stream: Box<dyn Duplex> = match &self.tls {
            None => Box::new(stream),
            Some((connector, name)) => {
                let tls = tokio::time::timeout(self.config.connect_timeout, connector.connect(name.clone(), stream))
                    .await
                    .map_err(|_| "TLS handshake timed out".to_string())?
                    .map_err(|e| format!("TLS handshake failed: {e}"))?;
                Box::new(tls)
            }
        };
        Ok(Connection::new(stream))
    }
}

#[async_trait]
impl RecordTransport for TcpTransport {
    fn describe(&self) -> String {
        format!("tcp {}:{}{}", self.config.host, self.config.port, if self.tls.is_some() { " (TLS)" } else { "" })
    }

    async fn open(&self) -> Result<(), String> {
        let connection = self.connect().await?;
        self.state.lock().await.connection = Some(connection);
        Ok(())
    }

    async fn send(&self, records: &[Record]) -> Result<(), String> {
        let batch = ndjson(records);
        let mut state = self.state.lock().await;
        if state.connection.as_ref().is_some_and(Connection::is_closed) {
            state.connection = None;
        }
        let result = async {
            if state.connection.is_none() {
                let mut connection = self.connect().await?;
                // What may have been lost with the previous connection goes again first.
                for earlier in &state.replay {
                    connection.writer.write_all(earlier).await.map_err(|e| e.to_string())?;
                }
                state.connection = Some(connection);
            }
            let connection = state.connection.as_mut().expect("connected above");
            connection.writer.write_all(&batch).await.map_err(|e| e.to_string())?;
            connection.writer.flush().await.map_err(|e| e.to_string())?;
            if connection.is_closed() {
                return Err("the receiver closed the connection".to_string());
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            state.connection = None;
            return Err(e);
        }
        state.replay_len += batch.len();
        state.replay.push_back(batch);
        while state.replay_len > self.config.replay_bytes && state.replay.len() > 1 {
            let dropped = state.replay.pop_front().expect("not empty");
            state.replay_len -= dropped.len();
        }
        Ok(())
    }
}

fn tls_connector(host: &str, tls: &TcpTls) -> SyncResult<(TlsConnector, ServerName<'static>)> {
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| SyncError::config(format!("tcp TLS: {e}")))?;
    let config = if !tls.reject_unauthorized {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider))).with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        match &tls.ca_file {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| SyncError::config(format!("tls.caFile: {} is not a PEM certificate file: {e}", path.display())))?;
                for cert in certs {
                    roots.add(cert).map_err(|e| SyncError::config(format!("tls.caFile: {}: {e}", path.display())))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    let name = tls.server_name.clone().unwrap_or_else(|| host.to_string());
    let server_name = ServerName::try_from(name.clone()).map_err(|_| SyncError::config(format!("tls.serverName: \"{name}\" is not a valid server name")))?;
    Ok((TlsConnector::from(Arc::new(config)), server_name))
}

/// For `rejectUnauthorized: false`: signatures are still checked, the certificate chain is not.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
