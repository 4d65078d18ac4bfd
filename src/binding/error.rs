//! Engine errors as JS `Error`s with a stable string `code`.

use std::future::Future;

use napi::bindgen_prelude::*;

use crate::error::{SyncError, SyncResult};

/// A JS `Error` whose `code` is the engine's code (e.g. `ERR_CONFIG`); napi throws or rejects
/// with exactly this object.
pub fn js_error(env: &Env, err: &SyncError) -> napi::Error {
    let build = || -> Result<napi::Error> {
        let mut object = env.create_error(napi::Error::new(Status::GenericFailure, err.message.clone()))?;
        object.set_named_property("code", err.code.as_str())?;
        Ok(napi::Error::from(object.to_unknown()))
    };
    build().unwrap_or_else(|e| e)
}

/// Runs an engine future and settles a JS promise with its result, errors carrying their code.
pub fn promise<T, F>(env: &Env, fut: F) -> Result<PromiseRaw<'_, T>>
where
    T: ToNapiValue + Send + 'static,
    F: Future<Output = SyncResult<T>> + Send + 'static,
{
    env.spawn_future_with_callback(async move { Ok(fut.await) }, |env, result| result.map_err(|e| js_error(env, &e)))
}
