//! NDJSON files for Filebeat or any log shipper: appended, rotated by size and age, fsynced
//! before a batch counts as written.

mod config;
mod service;

pub use config::{FileConfig, FsyncPolicy};
pub use service::FileTransport;
