//! `sync.setTransform(fn)`: a JS function as the engine's document transform.

use std::sync::Arc;

use futures::future::BoxFuture;
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use serde_json::Value;

use crate::transform::hook::{DocumentHook, HookContext, HookOutcome};

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
            let context = TransformContext { namespace: ctx.namespace, id: ctx.id, phase: ctx.phase.to_string() };
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
            let returned = receiver.await.map_err(|_| "the transform was not called (the process is exiting)".to_string())?;
            let value = match returned.map_err(|e| e.reason.clone())? {
                Returned::Promise(promise) => promise.await.map_err(|e| e.reason.clone())?,
                Returned::Value(value) => value,
            };
            Ok(match value {
                Value::Null => None,
                other => Some(other),
            })
        })
    }
}
