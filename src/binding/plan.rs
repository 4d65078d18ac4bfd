//! `plan` and `apply` of a sync's options from JS: both resolve with the plan (its steps, whether
//! it is destructive, and its text for people); the work is `crate::plan`'s.

use napi::bindgen_prelude::*;
use napi_derive::napi;

use super::error::{js_error, promise};
use super::options::sync_config;
use crate::config::SyncConfig;
use crate::error::{SyncError, SyncResult};
use crate::plan::{apply, diff, observe, Plan};

fn config_of(env: &Env, options: Unknown) -> Result<SyncConfig> {
    unsafe { serde_json::Value::from_napi_value(env.raw(), options.raw()) }
        .map_err(|e| SyncError::config(format!("invalid options: {}", e.reason)))
        .and_then(sync_config)
        .map_err(|e| js_error(env, &e))
}

fn to_js(plan: &Plan) -> serde_json::Value {
    let mut value = serde_json::to_value(plan).expect("plans serialize");
    value["text"] = plan.render().into();
    value
}

/// What `applySync` would do for the sync of `options`.
#[napi(ts_return_type = "Promise<unknown>")]
#[cfg_attr(test, allow(dead_code))] // called from JS
pub fn plan_sync<'env>(env: &'env Env, #[napi(ts_arg_type = "SyncOptions")] options: Unknown) -> Result<PromiseRaw<'env, serde_json::Value>> {
    let config = config_of(env, options)?;
    promise(env, async move { Ok(to_js(&diff(&config, &observe(&config).await?))) })
}

/// Plans and carries out the plan of the sync of `options`; a destructive plan is refused
/// (`ERR_CONFIG`, before any change) unless `allowDestructive`.
#[napi(ts_return_type = "Promise<unknown>")]
#[cfg_attr(test, allow(dead_code))] // called from JS
pub fn apply_sync<'env>(
    env: &'env Env,
    #[napi(ts_arg_type = "SyncOptions")] options: Unknown,
    allow_destructive: bool,
) -> Result<PromiseRaw<'env, serde_json::Value>> {
    let config = config_of(env, options)?;
    promise(env, async move { apply_checked(config, allow_destructive).await })
}

async fn apply_checked(config: SyncConfig, allow_destructive: bool) -> SyncResult<serde_json::Value> {
    let plan = diff(&config, &observe(&config).await?);
    if plan.destructive && !allow_destructive {
        return Err(SyncError::config(format!(
            "the plan of \"{}\" holds destructive steps (re-copies or removals); allow them to apply it (--allow-destructive)\n{}",
            config.name,
            plan.render()
        )));
    }
    apply(&config, &plan).await?;
    Ok(to_js(&plan))
}
