//! `sync.setTransform(fn)`: a JS function as the engine's document transform.

use std::sync::Arc;

use futures::future::BoxFuture;
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use serde_json::Value;

use crate::transform::hook::{DocumentHook, HookContext, HookError, HookOutcome};

/// What a transform is told about the document it gets.
#[napi(object)]
pub struct TransformContext {
    /// `"db.collection"` the document comes from.
    pub namespace: String,
    /// Its Elasticsearch `_id`.
    pub id: String,
    #[napi(ts_type = "'copy' | 'stream'")]
    pub phase: String,
}

pub type TransformArgs = FnArgs<(Value, TransformContext)>;
/// Read on the JS thread: a plain value or a promise of one.
pub type TransformReturn = Unknown<'static>;
type TransformFn = ThreadsafeFunction<TransformArgs, TransformReturn, TransformArgs, Status, false, true, 0>;

/// What the JS function gave back, now safe to move off the JS thread.
enum Returned {
    Value(Value),
    Promise(Promise<Value>),
}

/// Calls the JS function from the engine's threads; its errors and rejections become reasons.
pub struct JsTransform {
    function: Arc<TransformFn>,
}

impl JsTransform {
    pub fn new(function: Function<TransformArgs, TransformReturn>) -> Result<Self> {
        let function = function.build_threadsafe_function().callee_handled::<false>().weak::<true>().build()?;
        Ok(JsTransform { function: Arc::new(function) })
    }
}

impl DocumentHook for JsTransform {
    fn call(&self, doc: Value, ctx: HookContext) -> BoxFuture<'static, HookOutcome> {
        let function = self.function.clone();
        Box::pin(async move {
            let context = TransformContext { namespace: ctx.namespace, id: ctx.id, phase: ctx.phase.as_str().to_string() };
            let (sender, receiver) = tokio::sync::oneshot::channel::<Result<Returned>>();
            function.call_with_return_value(
                (doc, context).into(),
                ThreadsafeFunctionCallMode::Blocking,
                move |returned: Result<Unknown<'static>>, env: Env| {
                    let read = returned.and_then(|value| {
                        if value.is_promise()? {
                            Ok(Returned::Promise(unsafe { Promise::from_napi_value(env.raw(), value.raw())? }))
                        } else {
                            Ok(Returned::Value(unsafe { Value::from_napi_value(env.raw(), value.raw())? }))
                        }
                    });
                    let _ = sender.send(read);
                    Ok(())
                },
            );
            let returned = receiver.await.map_err(|_| HookError::NotCalled("the process is exiting"))?;
            let value = match returned.map_err(|e| HookError::Threw(e.reason.clone()))? {
                Returned::Promise(promise) => promise.await.map_err(|e| HookError::Threw(e.reason.clone()))?,
                Returned::Value(value) => value,
            };
            Ok(match value {
                Value::Null => None,
                mut other => {
                    integers_as_integers(&mut other);
                    Some(other)
                }
            })
        })
    }
}

/// JS has one number type, and napi reads an integral number past the 32-bit range back as a
/// float (`5000000000.0`), which would make Elasticsearch map a new field as `float`. Every
/// integral number JS can hold exactly becomes an integer again (bigger ones come back as
/// BigInt, which napi reads exactly).
fn integers_as_integers(value: &mut Value) {
    const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;
    match value {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|f| n.is_f64() && f.fract() == 0.0 && f.abs() <= MAX_SAFE_INTEGER) {
                *n = serde_json::Number::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integers_as_integers),
        Value::Object(map) => map.values_mut().for_each(integers_as_integers),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn integral_numbers_from_js_are_integers() {
        let mut doc =
            json!({ "mid": 5000000000.0, "neg": -5000000000.0, "f": 1.5, "edge": 9007199254740992.0, "nested": [{ "n": 4294967296.0 }], "s": "5000000000.0" });
        integers_as_integers(&mut doc);
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            r#"{"mid":5000000000,"neg":-5000000000,"f":1.5,"edge":9007199254740992.0,"nested":[{"n":4294967296}],"s":"5000000000.0"}"#
        );
    }
}
