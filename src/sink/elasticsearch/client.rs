//! The Elasticsearch client as the sink and the search API build it: the node URL (credentials
//! in it become basic auth), the auth header, TLS, timeouts and compression.

use elasticsearch::auth::{ClientCertificate, Credentials};
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::headers::{HeaderValue, AUTHORIZATION};
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::Elasticsearch;

use crate::config::{EsAuth, EsConfig, EsTls, Secret};
use crate::error::{ErrorCode, SyncError, SyncResult};
use crate::event::{EventBus, SyncEvent};

/// A client for `config`, and the node's URL without credentials (for messages). Fails with
/// `ERR_CONFIG` naming the bad field. Warnings (certificate checks off) go to `events`.
pub fn build_client(config: &EsConfig, events: &EventBus) -> SyncResult<(Elasticsearch, String)> {
    let mut url = url::Url::parse(&config.node).map_err(|e| SyncError::config(format!("elasticsearch.node: {e}")))?;
    // Credentials in the URL become basic auth, so the URL itself (which shows up in
    // transport errors) never carries them.
    let mut auth = config.auth.clone();
    if !url.username().is_empty() && matches!(auth, EsAuth::None) {
        auth = EsAuth::Basic { username: url.username().to_string(), password: Secret::new(url.password().unwrap_or("")) };
    }
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url.clone()))
        .disable_proxy()
        .enable_meta_header(false)
        .request_body_compression(config.compression)
        .timeout(config.request_timeout);
    // Auth goes in a header of its own, so that it combines with a client certificate
    // (which takes the client's one credentials slot).
    if let Some(value) = authorization(&auth) {
        let mut value =
            HeaderValue::from_str(&value).map_err(|_| SyncError::config("elasticsearch: credentials contain characters not allowed in an HTTP header"))?;
        value.set_sensitive(true);
        builder = builder.header(AUTHORIZATION, value);
    }
    builder = apply_tls(builder, &config.tls, events)?;
    let transport = builder.build().map_err(|e| SyncError::caused_by(ErrorCode::Config, "cannot build the Elasticsearch client", &e))?;
    Ok((Elasticsearch::new(transport), url.to_string()))
}

fn authorization(auth: &EsAuth) -> Option<String> {
    match auth {
        EsAuth::None => None,
        EsAuth::Basic { username, password } => {
            use base64::Engine;
            let pair = format!("{username}:{}", password.expose());
            Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair)))
        }
        EsAuth::ApiKey(key) => Some(format!("ApiKey {}", key.expose())),
        EsAuth::Bearer(token) => Some(format!("Bearer {}", token.expose())),
    }
}

/// Certificate verification and client certificates for HTTPS nodes.
fn apply_tls(mut builder: TransportBuilder, tls: &EsTls, events: &EventBus) -> SyncResult<TransportBuilder> {
    let read = |field: &str, path: &std::path::Path| {
        crate::config::read_option_file(&format!("elasticsearch.tls.{field}"), path, crate::config::MAX_CERTIFICATE_FILE, "a certificate or key")
    };
    if !tls.reject_unauthorized {
        events.emit(SyncEvent::Warning {
            namespace: String::new(),
            message: "elasticsearch.tls.rejectUnauthorized is false: the server's certificate is NOT verified".into(),
        });
        builder = builder.cert_validation(CertificateValidation::None);
    } else if let Some(ca) = &tls.ca_file {
        let pem = read("caFile", ca)?;
        let cert =
            Certificate::from_pem(&pem).map_err(|e| SyncError::config(format!("elasticsearch.tls.caFile: {} is not a PEM certificate: {e}", ca.display())))?;
        builder = builder.cert_validation(CertificateValidation::Full(cert));
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let mut pem = read("certFile", cert)?;
            pem.push(b'\n');
            pem.extend(read("keyFile", key)?);
            builder = builder.auth(Credentials::Certificate(ClientCertificate::Pem(pem)));
        }
        (None, None) => {}
        _ => return Err(SyncError::config("elasticsearch.tls: certFile and keyFile go together")),
    }
    Ok(builder)
}

/// A reply of the server to a JSON request (the search API and the Elasticsearch definition
/// store): its status and body (`Null` when empty, a string when it is not JSON).
pub struct JsonReply {
    pub status: u16,
    pub body: serde_json::Value,
}

impl JsonReply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The error's `type` (empty when none).
    pub fn error_type(&self) -> &str {
        self.body.pointer("/error/type").and_then(serde_json::Value::as_str).unwrap_or("")
    }

    /// The server's reason, for messages: the root cause's, else the error's, else the body.
    pub fn reason(&self) -> String {
        let root = self.body.pointer("/error/root_cause/0/reason").or_else(|| self.body.pointer("/error/reason")).or_else(|| self.body.get("error"));
        let reason = root.map_or_else(|| self.body.to_string(), |r| r.as_str().map_or_else(|| r.to_string(), str::to_string));
        format!("HTTP {}: {}", self.status, reason.chars().take(500).collect::<String>())
    }
}

/// Sends one request with a JSON body (if any) to `path` (from the root, e.g. `/index/_doc/1`)
/// and reads the reply whatever its status; `Err` is the transport's failure, as a cause chain.
pub async fn send_json(
    client: &Elasticsearch,
    method: elasticsearch::http::Method,
    path: &str,
    query: &[(&str, String)],
    body: Option<&serde_json::Value>,
) -> Result<JsonReply, String> {
    let body = body.map(|b| serde_json::to_vec(b).expect("JSON serializes"));
    let query = (!query.is_empty()).then_some(query);
    let response =
        client.send(method, path, elasticsearch::http::headers::HeaderMap::new(), query, body, None).await.map_err(|e| crate::error::cause_chain(&e))?;
    let status = response.status_code().as_u16();
    let bytes = response.bytes().await.map_err(|e| crate::error::cause_chain(&e))?;
    let body = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Ok(JsonReply { status, body })
}
