//! Elasticsearch / OpenSearch sink: versioned `_bulk` writes with per-item classification.

mod encoder;
mod response;
pub mod retry;
mod service;

pub use encoder::{encoded_len, Target};
pub use service::{EsSink, ServerInfo, WriteReport};
