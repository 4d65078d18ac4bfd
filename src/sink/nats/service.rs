use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, context::Context, context::PublishAckFuture};
use async_nats::{ConnectOptions, HeaderMap};
use async_trait::async_trait;
use futures::future::join_all;
use std::future::IntoFuture;
use tokio::sync::OnceCell;

use super::config::{NatsAuth, NatsConfig};
use crate::config::redact_uri;
use crate::error::cause_chain;
use crate::sink::record::{Progress, Record, RecordTransport};

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot read the credentials file {}: {cause}", path.display())]
    Credentials { path: PathBuf, cause: String },
    #[error("{0}")]
    Connect(String),
    #[error("cannot create the stream \"{stream}\": {cause}")]
    CreateStream { stream: String, cause: String },
    #[error("the stream \"{stream}\" is not there (createStream is false): {cause}")]
    NoStream { stream: String, cause: String },
    #[error("publish failed: {0}")]
    Publish(String),
    #[error("JetStream did not acknowledge: {0}")]
    Ack(String),
}

pub struct NatsTransport {
    config: NatsConfig,
    jetstream: OnceCell<Context>,
}

/// How far a batch got across its attempts.
#[derive(Debug, Default)]
pub struct Published {
    /// Leading records JetStream acknowledged.
    delivered: usize,
    /// Records after the first unacknowledged one were published, so JetStream may hold some of
    /// them ahead of it.
    ahead: bool,
    /// Per record: how many times it was published again under a new id, because an earlier
    /// record landed after it.
    reissued: Vec<u32>,
}

impl Progress for Published {
    fn delivered(&self) -> usize {
        self.delivered
    }
}

impl NatsTransport {
    pub fn new(config: NatsConfig) -> Self {
        NatsTransport { config, jetstream: OnceCell::new() }
    }

    async fn connect(&self) -> Result<Context, NatsError> {
        let mut options = match &self.config.auth {
            NatsAuth::None => ConnectOptions::new(),
            NatsAuth::Token(token) => ConnectOptions::with_token(token.expose().to_string()),
            NatsAuth::UserPassword { username, password } => ConnectOptions::with_user_and_password(username.clone(), password.expose().to_string()),
            NatsAuth::CredentialsFile(path) => {
                ConnectOptions::with_credentials_file(path.clone()).await.map_err(|e| NatsError::Credentials { path: path.clone(), cause: cause_chain(&e) })?
            }
        };
        options = options.name("mongo-elastic-sync").connection_timeout(Duration::from_secs(10));
        let client = options.connect(self.config.servers()).await.map_err(|e| NatsError::Connect(cause_chain(&e)))?;
        let context = jetstream::new(client);
        let stream = self.config.stream.clone();
        if self.config.create_stream {
            let config = jetstream::stream::Config { name: stream.clone(), subjects: vec![self.config.stream_subjects()], ..Default::default() };
            context.get_or_create_stream(config).await.map_err(|e| NatsError::CreateStream { stream, cause: cause_chain(&e) })?;
        } else {
            context.get_stream(&stream).await.map_err(|e| NatsError::NoStream { stream, cause: cause_chain(&e) })?;
        }
        Ok(context)
    }

    /// Publishes one record under its id (a new one once it was `reissued`); the future
    /// resolves with JetStream's acknowledgement.
    async fn publish(&self, context: &Context, record: &Record, reissued: u32) -> Result<PublishAckFuture, NatsError> {
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, message_id(record, reissued).as_str());
        let subject = self.config.subject_for(&record.namespace, &record.index);
        context.publish_with_headers(subject, headers, record.line.clone().into()).await.map_err(|e| NatsError::Publish(cause_chain(&e)))
    }

    /// The first record not acknowledged, alone. If JetStream had not stored it before, the
    /// records after it that it did store are now ahead of it: they are published again, under
    /// new ids (so that they are not dropped as duplicates), to land after it.
    async fn publish_first_alone(&self, context: &Context, records: &[Record], progress: &mut Published) -> Result<(), NatsError> {
        let i = progress.delivered;
        let ack = self.publish(context, &records[i], progress.reissued[i]).await?.await.map_err(|e| NatsError::Ack(cause_chain(&e)))?;
        progress.delivered += 1;
        progress.ahead = false;
        if !ack.duplicate {
            progress.reissued[i + 1..].iter_mut().for_each(|n| *n += 1);
        }
        Ok(())
    }

    /// Publishes the records not yet acknowledged, all at once, then waits for the
    /// acknowledgements; notes in `progress` how far they got.
    async fn publish_rest(&self, context: &Context, records: &[Record], progress: &mut Published) -> Result<(), NatsError> {
        let start = progress.delivered;
        let mut acks = Vec::with_capacity(records.len() - start);
        let mut unsent = None;
        for (record, reissued) in records[start..].iter().zip(&progress.reissued[start..]) {
            match self.publish(context, record, *reissued).await {
                Ok(ack) => acks.push(ack.into_future()),
                Err(e) => {
                    unsent = Some(e);
                    break;
                }
            }
        }
        let published = acks.len();
        let mut failed = None;
        for (k, ack) in join_all(acks).await.into_iter().enumerate() {
            match ack {
                Ok(_) if failed.is_none() => progress.delivered += 1,
                Ok(_) => {}
                Err(e) => {
                    failed.get_or_insert((k, NatsError::Ack(cause_chain(&e))));
                }
            }
        }
        match (failed, unsent) {
            (Some((k, e)), _) => {
                progress.ahead = k + 1 < published;
                Err(e)
            }
            (None, Some(e)) => Err(e),
            (None, None) => Ok(()),
        }
    }
}

/// A record's `Nats-Msg-Id`: its key, and how often it was published again under a new id.
fn message_id(record: &Record, reissued: u32) -> String {
    match reissued {
        0 => record.key.clone(),
        n => format!("{}~{n}", record.key),
    }
}

/// Bytes a record takes on the wire as the client counts them against `max_payload`: the
/// header block ("NATS/1.0\r\n", "Nats-Msg-Id: <id>\r\n", "\r\n") and the payload, with room for
/// the id of a record published again.
fn message_size(record: &Record) -> usize {
    "NATS/1.0\r\n".len() + "Nats-Msg-Id".len() + ": \r\n".len() + record.key.len() + "~4294967295".len() + "\r\n".len() + record.line.len()
}

#[async_trait]
impl RecordTransport for NatsTransport {
    type Error = NatsError;
    type Progress = Published;

    fn describe(&self) -> String {
        format!("nats {} stream {}", redact_uri(self.config.url.expose()), self.config.stream)
    }

    async fn open(&self) -> Result<(), NatsError> {
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
    /// reconnects by itself; what was not acknowledged is published again, with the same ids
    /// (JetStream drops what it already holds), and in order: see [`Published`].
    async fn send(&self, records: &[Record], progress: &mut Published) -> Result<(), NatsError> {
        let context = self.jetstream.get_or_try_init(|| self.connect()).await?;
        progress.reissued.resize(records.len(), 0);
        if progress.ahead {
            self.publish_first_alone(context, records, progress).await?;
        }
        self.publish_rest(context, records, progress).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn nats_url() -> String {
        std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
    }

    fn record(key: &str, size: usize) -> Record {
        Record {
            namespace: "db.c".into(),
            index: "c".into(),
            key: key.into(),
            line: format!("{{\"k\":\"{key}\",\"pad\":\"{}\"}}", "x".repeat(size)).into_bytes(),
        }
    }

    /// The keys of the stream's messages, in stream order.
    async fn stream_keys(js: &Context, stream: &str) -> Vec<String> {
        let mut stream = js.get_stream(stream).await.unwrap();
        let last = stream.info().await.unwrap().state.last_sequence;
        let mut keys = Vec::new();
        for seq in 1..=last {
            let message = stream.get_raw_message(seq).await.unwrap();
            let line: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
            keys.push(line["k"].as_str().unwrap().to_string());
        }
        keys
    }

    #[tokio::test]
    async fn a_record_retried_after_a_partial_publish_lands_before_the_later_ones_again() {
        let unique = format!("{}{}", std::process::id(), std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
        let stream = format!("MES_ORDER_{unique}");
        let config = NatsConfig {
            url: Secret::new(nats_url()),
            subject: format!("mes-order-{unique}.{{db}}.{{coll}}"),
            stream: stream.clone(),
            create_stream: true,
            auth: NatsAuth::None,
        };
        let nats = NatsTransport::new(config);
        nats.open().await.unwrap_or_else(|e| panic!("this test needs NATS with JetStream at {} (NATS_URL): {e}", nats_url()));
        let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
        let limit = |max_message_size: i32| {
            let js = js.clone();
            let stream = stream.clone();
            async move {
                let mut config = js.get_stream(&stream).await.unwrap().cached_info().config.clone();
                config.max_message_size = max_message_size;
                js.update_stream(&config).await.unwrap();
            }
        };
        // JetStream refuses the middle record for its size and stores the one after it.
        limit(300).await;
        let records = [record("a", 10), record("big", 400), record("c", 10)];
        let mut progress = Published::default();
        let err = nats.send(&records, &mut progress).await.unwrap_err();
        assert!(err.to_string().contains("JetStream did not acknowledge"), "{err}");
        assert_eq!(progress.delivered(), 1);
        assert_eq!(stream_keys(&js, &stream).await, ["a", "c"]);
        // Once it is accepted, the retried record lands after "c": "c" comes again after it.
        limit(-1).await;
        nats.send(&records, &mut progress).await.unwrap();
        assert_eq!(stream_keys(&js, &stream).await, ["a", "c", "big", "c"]);
        // Retried again (a lost acknowledgement), nothing more lands.
        nats.send(&records, &mut Published { reissued: progress.reissued.clone(), ..Published::default() }).await.unwrap();
        assert_eq!(stream_keys(&js, &stream).await, ["a", "c", "big", "c"]);
        js.delete_stream(&stream).await.unwrap();
    }
}
