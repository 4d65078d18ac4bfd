//! Elasticsearch / OpenSearch sink: versioned `_bulk` writes with per-item classification.

mod encoder;
mod error;
#[cfg(test)]
mod fake;
mod inspect;
mod response;
pub mod retry;
mod service;
mod task;
#[cfg(test)]
mod tests;

pub use encoder::encoded_len;
pub use error::EsError;
pub use inspect::IndexState;
pub use service::{EsSink, ServerInfo};
