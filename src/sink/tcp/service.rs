use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
    end: Arc<AtomicU8>,
    watcher: tokio::task::JoinHandle<()>,
}

/// How the receiver's side of a connection ended (`Connection::end`).
const OPEN: u8 = 0;
/// A clean end of stream: the receiver closed after reading.
const ENDED: u8 = 1;
/// A reset or error: a receiver closing with unread data resets, so some may be lost.
const BROKEN: u8 = 2;

/// What ending a connection showed about the lines written into it.
#[derive(Debug, PartialEq, Eq)]
enum Goodbye {
    /// The receiver answered our end with its own: it read everything before closing.
    Confirmed,
    /// The receiver had closed first, or reset the connection: recent lines may be lost.
    Lost,
    /// No answer within the time allowed.
    Unanswered,
}

impl Connection {
    fn new(stream: Box<dyn Duplex>) -> Self {
        let (mut reader, writer) = tokio::io::split(stream);
        let end = Arc::new(AtomicU8::new(OPEN));
        let flag = end.clone();
        let watcher = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            // Whatever the receiver sends is ignored; end of stream or an error means closed.
            let how = loop {
                match reader.read(&mut buf).await {
                    Ok(0) => break ENDED,
                    Ok(_) => {}
                    Err(_) => break BROKEN,
                }
            };
            flag.store(how, Ordering::SeqCst);
        });
        Connection { writer, end, watcher }
    }

    fn is_closed(&self) -> bool {
        self.end.load(Ordering::SeqCst) != OPEN
    }

    /// Writes all of `buf` and flushes it, failing when the receiver takes no bytes for
    /// `timeout` (it accepted the connection but does not read): a wait with no end otherwise.
    async fn write(&mut self, buf: &[u8], timeout: Duration) -> Result<(), TcpError> {
        let mut written = 0;
        while written < buf.len() {
            match tokio::time::timeout(timeout, self.writer.write(&buf[written..])).await {
                Err(_) => return Err(TcpError::Stalled(timeout)),
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok(0)) => return Err(TcpError::WriteZero),
                Ok(Ok(n)) => written += n,
            }
        }
        Ok(tokio::time::timeout(timeout, self.writer.flush()).await.map_err(|_| TcpError::Stalled(timeout))??)
    }

    /// Ends our side and waits, up to `wait`, for the receiver to end its own. Logstash's tcp
    /// input (like most line receivers) closes when it reads the end of a stream, so a clean end
    /// in answer means every line before ours was read.
    async fn finish(mut self, wait: Duration) -> Goodbye {
        if self.is_closed() {
            return Goodbye::Lost;
        }
        // Ending a TLS stream writes, and a receiver that does not read can hold that up too.
        match tokio::time::timeout(wait, self.writer.shutdown()).await {
            Err(_) => return Goodbye::Unanswered,
            Ok(Err(_)) => return Goodbye::Lost,
            Ok(Ok(())) => {}
        }
        if tokio::time::timeout(wait, &mut self.watcher).await.is_err() {
            return Goodbye::Unanswered;
        }
        match self.end.load(Ordering::SeqCst) {
            ENDED => Goodbye::Confirmed,
            _ => Goodbye::Lost,
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TcpError {
    #[error("no connection within {} ms", .0.as_millis())]
    ConnectTimeout(Duration),
    #[error("TLS handshake timed out")]
    TlsTimeout,
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] std::io::Error),
    /// The receiver accepted the connection but takes no bytes.
    #[error("the receiver took no bytes for {} ms", .0.as_millis())]
    Stalled(Duration),
    #[error("the connection takes no more bytes")]
    WriteZero,
    #[error("the receiver closed the connection")]
    Closed,
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(
        "the receiver closed the connection after the last lines were written, and the {bytes} most recent bytes of lines could not be sent again: {cause}"
    )]
    ReplayFailed {
        bytes: usize,
        #[source]
        cause: Box<TcpError>,
    },
    #[error("the receiver closed the connection after the last lines were written, and the {bytes} most recent bytes of lines were sent again, but the receiver closed that connection too before reading them")]
    ReplayUnread { bytes: usize },
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

    async fn connect(&self) -> Result<Connection, TcpError> {
        let address = (self.config.host.as_str(), self.config.port);
        let wait = self.config.connect_timeout;
        let stream = tokio::time::timeout(wait, TcpStream::connect(address)).await.map_err(|_| TcpError::ConnectTimeout(wait))??;
        let _ = stream.set_nodelay(true);
        let stream: Box<dyn Duplex> = match &self.tls {
            None => Box::new(stream),
            Some((connector, name)) => {
                let tls =
                    tokio::time::timeout(wait, connector.connect(name.clone(), stream)).await.map_err(|_| TcpError::TlsTimeout)?.map_err(TcpError::Tls)?;
                Box::new(tls)
            }
        };
        Ok(Connection::new(stream))
    }

    /// A new connection, into which what may have been lost with the previous one goes first.
    async fn reconnect(&self, replay: &VecDeque<Vec<u8>>) -> Result<Connection, TcpError> {
        let mut connection = self.connect().await?;
        for earlier in replay {
            connection.write(earlier, self.config.write_timeout).await?;
        }
        Ok(connection)
    }
}

#[async_trait]
impl RecordTransport for TcpTransport {
    type Error = TcpError;
    type Progress = ();

    fn describe(&self) -> String {
        format!("tcp {}:{}{}", self.config.host, self.config.port, if self.tls.is_some() { " (TLS)" } else { "" })
    }

    async fn open(&self) -> Result<(), TcpError> {
        let connection = self.connect().await?;
        self.state.lock().await.connection = Some(connection);
        Ok(())
    }

    async fn send(&self, records: &[Record], _: &mut ()) -> Result<(), TcpError> {
        let batch = ndjson(records);
        let mut state = self.state.lock().await;
        if state.connection.as_ref().is_some_and(Connection::is_closed) {
            state.connection = None;
        }
        let result = async {
            if state.connection.is_none() {
                state.connection = Some(self.reconnect(&state.replay).await?);
            }
            let connection = state.connection.as_mut().expect("connected above");
            connection.write(&batch, self.config.write_timeout).await?;
            if connection.is_closed() {
                return Err(TcpError::Closed);
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

    /// Ends the connection and checks that the receiver read it. If the receiver went away after
    /// the last lines were written (no later write noticed it), they may be lost: the recent
    /// lines are sent once more on a new connection, as after any reconnect.
    async fn close(&self) -> Result<(), TcpError> {
        let mut state = self.state.lock().await;
        let Some(connection) = state.connection.take() else {
            return Ok(());
        };
        let wait = self.config.connect_timeout;
        match connection.finish(wait).await {
            Goodbye::Confirmed | Goodbye::Unanswered => return Ok(()),
            Goodbye::Lost => {}
        }
        let bytes = state.replay_len;
        let again = self.reconnect(&state.replay).await.map_err(|cause| TcpError::ReplayFailed { bytes, cause: Box::new(cause) })?;
        match again.finish(wait).await {
            Goodbye::Lost => Err(TcpError::ReplayUnread { bytes }),
            Goodbye::Confirmed | Goodbye::Unanswered => Ok(()),
        }
    }
}

fn tls_connector(host: &str, tls: &TcpTls) -> SyncResult<(TlsConnector, ServerName<'static>)> {
    let provider = Arc::new(ring::default_provider());
    let builder =
        ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().map_err(|e| SyncError::config(format!("tcp TLS: {e}")))?;
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

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;

    fn record(i: usize) -> Record {
        Record { namespace: "db.c".into(), index: "c".into(), key: i.to_string(), line: format!("{{\"n\":{i}}}").into_bytes() }
    }

    fn transport(port: u16) -> TcpTransport {
        transport_with(port, TcpConfig::DEFAULT_WRITE_TIMEOUT)
    }

    fn transport_with(port: u16, write_timeout: Duration) -> TcpTransport {
        let config = TcpConfig {
            host: "127.0.0.1".into(),
            port,
            tls: None,
            connect_timeout: Duration::from_secs(2),
            write_timeout,
            replay_bytes: TcpConfig::DEFAULT_REPLAY_BYTES,
        };
        TcpTransport::new(config).unwrap()
    }

    /// Reads a connection to its end (then closes it, as Logstash does), returning what came.
    async fn read_all(listener: &TcpListener) -> String {
        let reading = async {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut text = String::new();
            socket.read_to_string(&mut text).await.unwrap();
            text
        };
        tokio::time::timeout(Duration::from_secs(5), reading).await.expect("a connection that ends within 5 s")
    }

    #[tokio::test]
    async fn close_is_confirmed_by_a_receiver_that_read_everything() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = transport(listener.local_addr().unwrap().port());
        tcp.open().await.unwrap();
        let reader = async { read_all(&listener).await };
        let sender = async {
            tcp.send(&[record(1), record(2)], &mut ()).await.unwrap();
            tcp.close().await
        };
        let (text, closed) = tokio::join!(reader, sender);
        assert!(closed.is_ok(), "{closed:?}");
        assert_eq!(text, "{\"n\":1}\n{\"n\":2}\n");
        // Nothing was sent again: no second connection is waiting.
        assert!(tokio::time::timeout(Duration::from_millis(200), listener.accept()).await.is_err());
    }

    #[tokio::test]
    async fn close_sends_again_what_a_receiver_reset_without_reading() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = transport(listener.local_addr().unwrap().port());
        tcp.open().await.unwrap();
        let (first, _) = listener.accept().await.unwrap();
        tcp.send(&[record(1)], &mut ()).await.unwrap();
        tcp.send(&[record(2)], &mut ()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Closing with unread data resets the connection: the lines never reached the receiver.
        drop(first);
        let (text, closed) = tokio::join!(read_all(&listener), tcp.close());
        assert!(closed.is_ok(), "{closed:?}");
        assert_eq!(text, "{\"n\":1}\n{\"n\":2}\n");
    }

    #[tokio::test]
    async fn close_fails_naming_the_loss_when_the_receiver_is_gone() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = transport(listener.local_addr().unwrap().port());
        tcp.open().await.unwrap();
        let (first, _) = listener.accept().await.unwrap();
        tcp.send(&[record(1)], &mut ()).await.unwrap();
        drop(first);
        drop(listener);
        let err = tcp.close().await.unwrap_err().to_string();
        assert!(err.contains("could not be sent again"), "{err}");
        assert!(err.contains("8 most recent bytes"), "{err}");
    }

    /// 32 MiB of lines: more than the kernel buffers a connection nobody reads.
    fn flood() -> Vec<Record> {
        (0..64).map(|i| Record { namespace: "db.c".into(), index: "c".into(), key: i.to_string(), line: vec![b'x'; 512 * 1024] }).collect()
    }

    #[tokio::test]
    async fn a_receiver_that_accepts_and_never_reads_cannot_block_a_write() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = transport_with(listener.local_addr().unwrap().port(), Duration::from_millis(300));
        tcp.open().await.unwrap();
        let (_silent, _) = listener.accept().await.unwrap();
        let sent = tokio::time::timeout(Duration::from_secs(20), tcp.send(&flood(), &mut ())).await.expect("the write gives up instead of waiting for good");
        let err = sent.unwrap_err().to_string();
        assert!(err.contains("took no bytes for 300 ms"), "{err}");
        assert!(matches!(tokio::time::timeout(Duration::from_secs(5), tcp.close()).await, Ok(Ok(()))));
    }

    #[tokio::test]
    async fn a_stop_while_the_receiver_never_reads_ends_the_sink() {
        use crate::config::RetryConfig;
        use crate::event::EventBus;
        use crate::retry::Flow;
        use crate::sink::record::RecordSink;
        use crate::sink::{Sink, SinkContext, Target};
        use crate::stats::Stats;
        use crate::transform::{DocumentWrite, Operation, WriteOp};

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let retry = RetryConfig { max_attempts: None, initial_delay: Duration::from_millis(10), max_delay: Duration::from_millis(50) };
        let ctx = SinkContext { retry, events: EventBus::default(), stats: std::sync::Arc::new(Stats::default()), cancel: Default::default() };
        let tcp = transport_with(listener.local_addr().unwrap().port(), Duration::from_millis(300));
        tcp.open().await.unwrap();
        let (_silent, _) = listener.accept().await.unwrap();
        let sink = RecordSink::new(tcp, &ctx);
        let big = |i: usize| DocumentWrite {
            id: i.to_string(),
            routing: None,
            version: 1,
            op: WriteOp::Index(format!("{{\"blob\":\"{}\"}}", "x".repeat(512 * 1024)).into_bytes()),
            operation: Operation::Insert,
            position: None,
        };
        let stop = async {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            ctx.cancel.cancel();
        };
        let target = Target::index("c");
        let writing = sink.write("db.c", &target, (0..64).map(big).collect());
        let (written, ()) = tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(writing, stop) }).await.expect("the stop ends it");
        assert!(matches!(written, Ok(Flow::Stopped)));
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), sink.close()).await.map(|r| r.is_ok()), Ok(true));
    }
}
