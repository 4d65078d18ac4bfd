//! Elasticsearch / OpenSearch sink: versioned `_bulk` writes with per-item classification.

mod encoder;
mod error;
mod response;
pub mod retry;
mod service;

pub use encoder::encoded_len;
pub use error::EsError;
pub use service::{EsSink, ServerInfo};
