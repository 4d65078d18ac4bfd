//! Elasticsearch / OpenSearch sink: versioned `_bulk` writes with per-item classification.

pub mod adaptive;
mod client;
mod encoder;
mod error;
#[cfg(test)]
mod fake;
mod inspect;
mod response;
#[cfg(test)]
mod response_props;
pub mod retry;
mod service;
mod setup;
mod task;
#[cfg(test)]
mod tests;

pub use client::{build_client, send_json, JsonReply};
pub use encoder::encoded_len;
pub use error::EsError;
pub use inspect::IndexState;
pub use response::{read_bulk_reply, BulkReply, ItemOutcome, Reply};
pub use service::{EsSink, ServerInfo};
pub use setup::{IndexSetup, SettingChange};
