//! The Node.js binding: JS-facing types and conversions only; all sync logic lives in the engine.

mod definition;
mod error;
mod event;
mod http;
mod log_forward;
mod logging;
mod options;
#[cfg(test)]
mod options_props;
mod outputs;
mod parse;
mod plan;
mod postgres_options;
mod search;
mod secrets;
mod stats;
mod sync;
mod transform;
