//! NATS JetStream: every record published to a subject derived from its namespace, with a
//! `Nats-Msg-Id` so that JetStream drops what a restart publishes again.

mod config;
mod service;

pub use config::{NatsAuth, NatsConfig};
pub use service::{NatsError, NatsTransport};
