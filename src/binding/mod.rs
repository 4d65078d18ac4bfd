//! The Node.js binding: JS-facing types and conversions only; all sync logic lives in the engine.

mod definition;
mod defstore;
mod error;
mod event;
mod fields;
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
mod strict;
mod sync;
mod transform;

// For `crate::fuzzing` (the fuzz targets).
pub(crate) use definition::definition_names;
pub(crate) use fields::top_level_options;
pub(crate) use options::sync_config;
