use std::time::Duration;

use async_nats::jetstream::{self, context::Context};
use async_nats::{ConnectOptions, HeaderMap};
use async_trait::async_trait;
use futures::future::try_join_all;
use std::future::IntoFuture;
use tokio::sync::OnceCell;

use super::config::{NatsAuth, NatsConfig};
use crate::config::redact_uri;
use crate::error::cause_chain;
use crate::sink::record::{Record, RecordTransport};

pub struct NatsTransport {
    config: NatsConfig,
    jetstream: OnceCell<Context>,
}

impl NatsTransport {
    pub fn new(config: NatsConfig) -> Self {
        NatsTransport { config, jetstream: OnceCell::new() }
    }

    async fn connect(&self) -> Result<Context, String> {
        let mut options = match &self.config.auth {
            NatsAuth::None => ConnectOptions::new(),
            NatsAuth::Token(token) => ConnectOptions::with_token(token.expose().to_string()),
            NatsAuth::UserPassword { username, password } => ConnectOptions::with_user_and_password(username.clone(), password.expose().to_string()),
            NatsAuth::CredentialsFile(path) => ConnectOptions::with_credentials_file(path.clone())
                .await
                .map_err(|e| format!("cannot read the credentials file {}: {}", path.display(), cause_chain(&e)))?,
        };
        options = options.name("mongo-elastic-sync").connection_timeout(Duration::from_secs(10));
        let client = options.connect(self.config.url.expose()).await.map_err(|e| cause_chain(&e))?;
        let context = jetstream::new(client);
        if self.config.create_stream {
            let stream = jetstream::stream::Config { name: self.config.stream.clone(), subjects: vec![self.config.stream_subjects()], ..Default::default() };
            context.get_or_create_stream(stream).await.map_err(|e| format!("cannot create the stream \"{}\": {}", self.config.stream, cause_chain(&e)))?;
        } else {
            context
                .get_stream(&self.config.stream)
                .await
                .map_err(|e| format!("the stream \"{}\" is not there (createStream is false): {}", self.config.stream, cause_chain(&e)))?;
        }
        Ok(context)
    }
}

/// Bytes a record takes on the wire as the client counts them against `max_payload`: the
/// header block ("NATS/1.0\r\n", "Nats-Msg-Id: <key>\r\n", "\r\n") and the payload.
fn message_size(record: &Record) -> usize {
    "NATS/1.0\r\n".len() + "Nats-Msg-Id".len() + ": \r\n".len() + record.key.len() + "\r\n".len() + record.line.len()
}

#[async_trait]
impl RecordTransport for NatsTransport {
    fn describe(&self) -> String {
        format!("nats {} stream {}", redact_uri(self.config.url.expose()), self.config.stream)
    }

    async fn open(&self) -> Result<(), String> {
        self.jetstream.get_or_try_init(|| self.connect()).await.map(drop)
    }

    /// A message over the server's `max_payload` (1 MiB by default) is refused by the client
    /// every time: the record is dead-lettered rather than retried forever.
    fn refuses(&self, record: &Record) -> Option<String> {
        let max_payload = self.jetstream.get()?.client().max_payload();
        let size = message_size(record);
        (size > max_payload).then(|| format!("the record is {size} bytes with its headers, over the server's max_payload of {max_payload}"))
    }

    /// Publishes every record, then waits for all of JetStream's acknowledgements. The client
    /// reconnects by itself; an unacknowledged batch is published again, with the same ids.
    async fn send(&self, records: &[Record]) -> Result<(), String> {
        let context = self.jetstream.get_or_try_init(|| self.connect()).await?;
        let mut acks = Vec::with_capacity(records.len());
        for record in records {
            let mut headers = HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, record.key.as_str());
            let subject = self.config.subject_for(&record.namespace, &record.index);
            let ack =
                context.publish_with_headers(subject, headers, record.line.clone().into()).await.map_err(|e| format!("publish failed: {}", cause_chain(&e)))?;
            acks.push(ack.into_future());
        }
        try_join_all(acks).await.map_err(|e| format!("JetStream did not acknowledge: {}", cause_chain(&e)))?;
        Ok(())
    }
}
