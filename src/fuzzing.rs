//! The option parsers of the Node.js layer, for the fuzz targets in `fuzz/` (everything else they
//! exercise is public already). Not an API: nothing outside `fuzz/` calls these.

use crate::config::SyncConfig;
use crate::error::SyncResult;

/// The options of `new MongoElasticSync(options)` (and of the CLI's config file) as the engine's
/// config; `ERR_CONFIG` naming the option's path.
pub fn sync_config(options: serde_json::Value) -> SyncResult<SyncConfig> {
    crate::binding::sync_config(options)
}

/// The names of a definition's syncs (`{ version?, syncs: { name: options } }`), once every one
/// is valid; `ERR_CONFIG` naming the path from the definition's root.
pub fn definition_names(definition: serde_json::Value) -> SyncResult<Vec<String>> {
    crate::binding::definition_names(definition)
}

/// Every top-level option name, as the options parser knows them (read from serde).
pub fn top_level_options() -> &'static [&'static str] {
    crate::binding::top_level_options()
}
