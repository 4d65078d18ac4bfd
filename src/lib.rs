//! mongo-elastic-sync: MongoDB → Elasticsearch sync engine.
//!
//! The engine (source → transform → sink, with checkpoints beside, run by the pipeline) has no
//! napi dependency; `binding` is the thin Node.js layer over it.

pub mod checkpoint;
pub mod config;
pub mod coordination;
pub mod defstore;
pub mod error;
pub mod event;
pub mod monitor;
pub mod pipeline;
pub mod plan;
pub mod retry;
pub mod search;
pub mod secrets;
pub mod sink;
pub mod source;
pub mod stats;
pub mod transform;

#[cfg(test)]
mod testkit;

mod binding;
#[doc(hidden)]
pub mod fuzzing;
