//! The `logger` option: the engine's `tracing` records forwarded to a JS function (the package
//! calls the user's pino/winston-style logger with them), per sync, with secrets redacted.
//!
//! Each sync runs its `start()`/`stop()` inside a span carrying its instance number, and the
//! engine's tasks inherit it, so a record goes to the logger of the sync it comes from; a record
//! outside any sync goes to every logger. Forwarding never blocks the engine: records wait in a
//! bounded queue for the JS thread, and when it is full they are dropped and counted (the next
//! record delivered is preceded by a `warn` record saying how many were lost).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, LazyLock, RwLock};

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{span, Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::dynamic_filter_fn;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::config::redact_uri;

/// The span a sync's work runs in; its `instance` field routes records to that sync's logger.
pub const SPAN_NAME: &str = "sync";
/// Only the engine's own records are forwarded (not those of the drivers it uses).
const TARGET: &str = "mongo_elastic_sync";
/// Records waiting for the JS thread, per logger; beyond this they are dropped and counted.
const QUEUE: usize = 1024;

#[napi(string_enum = "lowercase")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    /// Higher is more verbose: ERROR 1 … TRACE 5 (0 is "off").
    fn rank(self) -> u8 {
        match self {
            LogLevel::Error => 1,
            LogLevel::Warn => 2,
            LogLevel::Info => 3,
            LogLevel::Debug => 4,
            LogLevel::Trace => 5,
        }
    }
}

impl From<&Level> for LogLevel {
    fn from(level: &Level) -> Self {
        match *level {
            Level::ERROR => LogLevel::Error,
            Level::WARN => LogLevel::Warn,
            Level::INFO => LogLevel::Info,
            Level::DEBUG => LogLevel::Debug,
            Level::TRACE => LogLevel::Trace,
        }
    }
}

/// One engine log record, as the `logger` option's function receives it.
#[napi(object)]
#[derive(Clone)]
pub struct LogRecord {
    pub level: LogLevel,
    /// The Rust module that logged it, e.g. `mongo_elastic_sync::event`.
    pub target: String,
    pub message: String,
    /// The record's structured fields (`namespace`, `attempt`, …), secrets redacted, and `sync`:
    /// the `name` of the sync it comes from (absent for records of no sync).
    #[napi(ts_type = "Record<string, unknown>")]
    pub fields: Value,
}

type LogCallback = ThreadsafeFunction<LogRecord, (), LogRecord, Status, false, true, QUEUE>;

struct Forwarder {
    callback: LogCallback,
    level: LogLevel,
    dropped: AtomicU64,
}

impl Forwarder {
    fn send(&self, record: LogRecord) {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let message = format!("{dropped} log record(s) dropped: the logger fell behind the engine");
            let notice = LogRecord { level: LogLevel::Warn, target: TARGET.to_string(), message, fields: Value::Object(Map::new()) };
            if self.callback.call(notice, ThreadsafeFunctionCallMode::NonBlocking) != Status::Ok {
                self.dropped.fetch_add(dropped, Ordering::Relaxed);
            }
        }
        if self.callback.call(record, ThreadsafeFunctionCallMode::NonBlocking) == Status::QueueFull {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

static FORWARDERS: LazyLock<RwLock<HashMap<u64, Arc<Forwarder>>>> = LazyLock::new(Default::default);
/// The most verbose level any registered logger wants (a `LogLevel::rank`; 0: none).
static MAX_RANK: AtomicU8 = AtomicU8::new(0);

fn update_max_rank(forwarders: &HashMap<u64, Arc<Forwarder>>) {
    MAX_RANK.store(forwarders.values().map(|f| f.level.rank()).max().unwrap_or(0), Ordering::Relaxed);
}

/// Sends the records of sync `instance` (and those of no sync) at `level` or above to `callback`.
pub fn register(instance: u64, callback: Function<LogRecord, ()>, level: LogLevel) -> Result<()> {
    let callback: LogCallback = callback.build_threadsafe_function().callee_handled::<false>().weak::<true>().max_queue_size::<QUEUE>().build()?;
    let mut forwarders = FORWARDERS.write().expect("forwarders lock");
    forwarders.insert(instance, Arc::new(Forwarder { callback, level, dropped: AtomicU64::new(0) }));
    update_max_rank(&forwarders);
    Ok(())
}

pub fn unregister(instance: u64) {
    let mut forwarders = FORWARDERS.write().expect("forwarders lock");
    if forwarders.remove(&instance).is_some() {
        update_max_rank(&forwarders);
    }
}

/// The span to run a sync's work in, so that its records reach its logger.
pub fn sync_span(instance: u64, name: &str) -> tracing::Span {
    tracing::info_span!(target: "mongo_elastic_sync", SPAN_NAME, instance, name)
}

/// The `tracing` layer that forwards records to the registered loggers.
pub fn layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    ForwardLayer.with_filter(dynamic_filter_fn(|meta, _| wanted(meta)))
}

fn wanted(meta: &Metadata<'_>) -> bool {
    if !meta.target().starts_with(TARGET) {
        return false;
    }
    (meta.is_span() && meta.name() == SPAN_NAME) || LogLevel::from(meta.level()).rank() <= MAX_RANK.load(Ordering::Relaxed)
}

struct ForwardLayer;

/// The sync a span stands for: its instance number and `name`.
struct Instance(u64, String);

impl<S> Layer<S> for ForwardLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != SPAN_NAME {
            return;
        }
        let mut fields = FieldMap::default();
        attrs.record(&mut fields);
        let name = fields.fields.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        if let (Some(instance), Some(span)) = (fields.fields.get("instance").and_then(Value::as_u64), ctx.span(id)) {
            span.extensions_mut().insert(Instance(instance, name));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let level = LogLevel::from(event.metadata().level());
        let sync = ctx.event_scope(event).and_then(|scope| scope.from_root().find_map(|span| span.extensions().get::<Instance>().map(|i| (i.0, i.1.clone()))));
        let targets: Vec<Arc<Forwarder>> = {
            let forwarders = FORWARDERS.read().expect("forwarders lock");
            match &sync {
                Some((instance, _)) => forwarders.get(instance).cloned().into_iter().collect(),
                None => forwarders.values().cloned().collect(),
            }
        };
        let targets: Vec<_> = targets.into_iter().filter(|f| level.rank() <= f.level.rank()).collect();
        if targets.is_empty() {
            return;
        }
        let mut fields = FieldMap::default();
        event.record(&mut fields);
        if let Some((_, name)) = sync {
            fields.fields.insert("sync".into(), Value::String(name));
        }
        let record = LogRecord { level, target: event.metadata().target().to_string(), message: fields.message, fields: Value::Object(fields.fields) };
        for forwarder in targets {
            forwarder.send(record.clone());
        }
    }
}

/// A record's fields as JSON, its `message` apart, secrets redacted.
#[derive(Default)]
struct FieldMap {
    message: String,
    fields: Map<String, Value>,
}

impl FieldMap {
    fn put(&mut self, field: &Field, value: Value) {
        let value = if is_secret_name(field.name()) { Value::String("[redacted]".into()) } else { value };
        self.fields.insert(field.name().to_string(), value);
    }
}

impl Visit for FieldMap {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = redact_text(value);
        } else {
            self.put(field, Value::String(redact_text(value)));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
}

fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase().replace(['_', '-'], "");
    ["password", "passwd", "secret", "token", "apikey", "authorization", "credential"].iter().any(|s| name.contains(s))
}

/// Credentials in URIs (`scheme://user:pass@host`) anywhere in a text become `user:***`.
fn redact_text(text: &str) -> String {
    if !text.contains("://") {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        // The URI starts after the last separator before its scheme and ends at the next one.
        let start = rest[..at].rfind(|c: char| c.is_whitespace() || "\"'(<=,".contains(c)).map_or(0, |i| i + 1);
        let end = rest[at..].find(|c: char| c.is_whitespace() || "\"')>,".contains(c)).map_or(rest.len(), |i| at + i);
        out.push_str(&rest[..start]);
        out.push_str(&redact_uri(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_uris_are_redacted_wherever_they_are() {
        assert_eq!(
            redact_text("cannot connect to mongodb://app:s3cret@db:27017/?replicaSet=rs0 (refused), also \"https://u:p@es:9200\""),
            "cannot connect to mongodb://app:***@db:27017/?replicaSet=rs0 (refused), also \"https://u:***@es:9200\""
        );
        assert_eq!(redact_text("no uri here: a://b without credentials"), "no uri here: a://b without credentials");
    }

    #[test]
    fn secret_looking_fields_are_redacted() {
        for name in ["password", "api_key", "apiKey", "bearer_token", "Authorization", "credentials_file", "client_secret"] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in ["namespace", "attempt", "delay_ms", "version", "index"] {
            assert!(!is_secret_name(name), "{name}");
        }
    }

    fn event_at(target: &'static str, level: Level) -> Metadata<'static> {
        Metadata::new("e", target, level, None, None, None, tracing::field::FieldSet::new(&[], NOOP_CALLSITE), tracing::metadata::Kind::EVENT)
    }

    #[test]
    fn only_the_engines_records_at_a_wanted_level_are_forwarded() {
        let (info, debug) = (event_at("mongo_elastic_sync::event", Level::INFO), event_at("mongo_elastic_sync::event", Level::DEBUG));
        MAX_RANK.store(0, Ordering::Relaxed);
        assert!(!wanted(&info), "no logger: nothing forwarded");
        MAX_RANK.store(LogLevel::Info.rank(), Ordering::Relaxed);
        assert!(wanted(&info) && !wanted(&debug));
        assert!(!wanted(&event_at("hyper::proto", Level::INFO)), "records of the drivers stay out");
        MAX_RANK.store(LogLevel::Warn.rank(), Ordering::Relaxed);
        assert!(!wanted(&info), "a warn logger gets no info records");
        MAX_RANK.store(0, Ordering::Relaxed);
    }

    struct NoopCallsite;
    impl tracing::callsite::Callsite for NoopCallsite {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &Metadata<'_> {
            unimplemented!("not called by the filter")
        }
    }
    static NOOP: NoopCallsite = NoopCallsite;
    const NOOP_CALLSITE: tracing::callsite::Identifier = tracing::callsite::Identifier(&NOOP);
}
