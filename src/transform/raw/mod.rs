//! Raw BSON → the JSON bytes of an Elasticsearch `_source` (and its `_id`), in one walk over the
//! raw elements: no `Document`, no `serde_json::Value` tree. The output is the same as
//! [`super::index_write`]'s for the `Document` that `Document::try_from(&RawDocument)` builds
//! (same JSON text and key order, same warnings, same `_id`, same rejections); the property tests
//! in `props.rs` check that on generated documents and field rules.
//!
//! Where it differs from today's pipeline, it is because of how the driver builds that
//! `Document`, not because of the conversion:
//! - The driver deserialises cursor batches with serde, which reads a sub-document whose first
//!   key looks like extended JSON (`{"$date": …}`, `{"$oid": …}`, `{"$numberLong": "7"}`…) as
//!   that typed value. Here a sub-document stays a sub-document, as stored.
//! - A document that is not valid BSON (e.g. a string that is not UTF-8, which the server can
//!   hold) fails the driver's whole batch; here only that document is rejected (a dead letter
//!   naming the path), and the others go on.
//!
//! Two rare shapes are handed to the `Document`-based converter (exact, only slower): a key that
//! occurs twice in one object (the last value wins, at the first one's place), and, without
//! field rules, a document field named like `keepIdAs` (converted with the rules' nodes).

mod tree;
mod walk;

#[cfg(test)]
mod bench;
#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

use mongodb::bson::{Bson, DateTime, Document, RawBsonRef, RawDocument};

use super::bson_to_json::{es_id, es_id_of_str};
use super::{describe_id, extended_json, ConvertOptions, ConvertWarning, DocumentWrite, FieldRules, Operation, Rejected, WriteOp};
use tree::Plan;
use walk::{Invalid, Seg, Walk};

/// Converts raw documents of one collection: its conversion options and field rules, prepared
/// once. Keep one per collection; [`index_write_raw`] prepares them on every call.
#[derive(Debug)]
pub struct RawConverter {
    options: ConvertOptions,
    fields: FieldRules,
    /// `None` without field rules: the fields are written as they are read.
    plan: Option<Plan>,
}

/// The walk's outcome before the `_id` is checked.
struct Converted<'a> {
    body: Vec<u8>,
    id: Option<RawBsonRef<'a>>,
}

enum Stop {
    Invalid(Invalid),
    /// Without rules, a field named like `keep_id_as`: the `_id` takes its place, so the fields
    /// are gathered as nodes.
    KeepIdClash,
}

impl From<Invalid> for Stop {
    fn from(invalid: Invalid) -> Self {
        Stop::Invalid(invalid)
    }
}

impl RawConverter {
    pub fn new(options: &ConvertOptions, fields: &FieldRules) -> Self {
        let plan = (!fields.is_empty()).then(|| Plan::new(fields));
        RawConverter { options: options.clone(), fields: fields.clone(), plan }
    }

    /// An index write of a whole raw document, as [`super::index_write`] makes of its `Document`.
    pub fn index_write(&self, doc: &RawDocument, version: i64, warnings: &mut Vec<ConvertWarning>) -> Result<DocumentWrite, Rejected> {
        self.index_write_at(doc, version, warnings, DateTime::now())
    }

    /// [`Self::index_write`] with `now` as the conversion time (`$syncedAt`).
    pub(crate) fn index_write_at(&self, doc: &RawDocument, version: i64, warnings: &mut Vec<ConvertWarning>, now: DateTime) -> Result<DocumentWrite, Rejected> {
        let mark = warnings.len();
        let converted = match self.convert(doc, warnings, now) {
            (Ok(converted), false) => converted,
            (Ok(_), true) => {
                warnings.truncate(mark);
                return self.by_document(doc, version, warnings, now);
            }
            (Err(invalid), _) => {
                warnings.truncate(mark);
                return Err(invalid_rejection(doc, &invalid));
            }
        };
        let rejected = |warnings: &mut Vec<ConvertWarning>, id: String, reason: String| {
            warnings.truncate(mark);
            let rejected = Rejected::new(id, reason);
            match Document::try_from(doc) {
                Ok(d) => rejected.with_document(extended_json(&d)),
                Err(_) => rejected,
            }
        };
        let Some(raw_id) = converted.id else {
            return Err(rejected(warnings, String::new(), "document has no _id".into()));
        };
        let id = match es_id_raw(raw_id) {
            Ok(id) => id,
            Err((described, reason)) => return Err(rejected(warnings, described, reason)),
        };
        Ok(DocumentWrite { id, routing: None, version, op: WriteOp::Index(converted.body), operation: Operation::Copy, position: None })
    }

    /// The walk, and whether it met a repeated key.
    fn convert<'a>(&'a self, doc: &'a RawDocument, warnings: &mut Vec<ConvertWarning>, now: DateTime) -> (Result<Converted<'a>, Invalid>, bool) {
        let mark = warnings.len();
        if self.plan.is_none() {
            let mut walk = Walk::new(&self.options, warnings);
            match stream(&mut walk, doc) {
                Ok(converted) => return (Ok(converted), walk.duplicate),
                Err(Stop::Invalid(invalid)) => return (Err(invalid), walk.duplicate),
                Err(Stop::KeepIdClash) => warnings.truncate(mark),
            }
        }
        static NO_RULES: std::sync::OnceLock<Plan> = std::sync::OnceLock::new();
        let plan = self.plan.as_ref().unwrap_or_else(|| NO_RULES.get_or_init(Plan::default));
        let mut walk = Walk::new(&self.options, warnings);
        let converted = with_rules(&mut walk, plan, doc, now);
        (converted, walk.duplicate)
    }

    /// The `Document`-based converter, for the shapes the walk leaves to it (see the module doc).
    fn by_document(&self, doc: &RawDocument, version: i64, warnings: &mut Vec<ConvertWarning>, now: DateTime) -> Result<DocumentWrite, Rejected> {
        match Document::try_from(doc) {
            Ok(d) => super::index_write_at(&d, version, &self.options, &self.fields, warnings, now),
            Err(error) => Err(invalid_rejection(doc, &Invalid { path: String::new(), reason: format!("not valid BSON: {error}") })),
        }
    }
}

/// An index write of a raw document: [`RawConverter::index_write`] with the rules prepared for
/// this one call.
pub fn index_write_raw(
    doc: &RawDocument,
    version: i64,
    options: &ConvertOptions,
    fields: &FieldRules,
    warnings: &mut Vec<ConvertWarning>,
) -> Result<DocumentWrite, Rejected> {
    RawConverter::new(options, fields).index_write(doc, version, warnings)
}

/// The routing value at a dotted `path` of a raw document, as [`super::routing_value`] finds it
/// in the `Document` (of a repeated key, the last value).
pub fn routing_value_raw(doc: &RawDocument, path: &str) -> Option<String> {
    let mut current = doc;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let value = current.iter().map_while(Result::ok).filter(|(key, _)| *key == part).last()?.1;
        if parts.peek().is_none() {
            return es_id_raw(value).ok();
        }
        current = match value {
            RawBsonRef::Document(child) => child,
            _ => return None,
        };
    }
    None
}

/// Without field rules: the top-level fields written as they are read, the `_id` apart (and
/// appended under `keep_id_as`).
fn stream<'a>(walk: &mut Walk<'a, '_>, doc: &'a RawDocument) -> Result<Converted<'a>, Stop> {
    let keep_id_as = walk.opts.keep_id_as.as_deref();
    let mut body = Vec::with_capacity(doc.as_bytes().len() + doc.as_bytes().len() / 4 + 16);
    body.push(b'{');
    let mut first = true;
    let mut id = None;
    let mark = walk.begin_object();
    for item in doc.iter_elements() {
        let (key, value) = walk.element(item)?;
        walk.seen_key(key);
        if key == "_id" {
            walk.path.push(Seg::Key(key));
            walk.validate(value)?;
            walk.path.pop();
            id = Some(value);
        } else if Some(key) == keep_id_as {
            return Err(Stop::KeepIdClash);
        } else {
            walk.field(&mut body, key, value, &mut first)?;
        }
    }
    walk.end_object(mark);
    if let (Some(field), Some(id)) = (keep_id_as, id) {
        // The reference converter checks no field name here: write it as `field` would, less
        // that check.
        let start = body.len();
        if !first {
            body.push(b',');
        }
        walk::write_json(&mut body, field);
        body.push(b':');
        walk.path.push(Seg::Key(field));
        if !walk.value(&mut body, id)? {
            body.truncate(start);
        }
        walk.path.pop();
    }
    body.push(b'}');
    Ok(Converted { body, id })
}

/// With field rules: the fields as nodes where a rule reaches, the rules applied, then written.
fn with_rules<'a>(walk: &mut Walk<'a, '_>, plan: &'a Plan, doc: &'a RawDocument, now: DateTime) -> Result<Converted<'a>, Invalid> {
    let mut scratch = Vec::with_capacity(doc.as_bytes().len() + doc.as_bytes().len() / 4 + 16);
    let (entries, id) = plan.root(walk, &mut scratch, doc)?;
    let entries = plan.apply(entries, &mut scratch, now);
    let mut body = Vec::with_capacity(scratch.len() + 16);
    tree::write_object(&mut body, &scratch, &entries);
    Ok(Converted { body, id })
}

/// The Elasticsearch `_id` of a raw `_id`, as [`es_id`] gives it; or its display form and why not.
fn es_id_raw(id: RawBsonRef<'_>) -> Result<String, (String, String)> {
    let bson = match id {
        RawBsonRef::ObjectId(oid) => return Ok(oid.to_hex()),
        RawBsonRef::String(s) => return es_id_of_str(s).map_err(|e| (describe_id(&Bson::String(s.to_owned())), e.to_string())),
        other => Bson::try_from(other).map_err(|e| (String::new(), format!("_id is not valid BSON: {e}")))?,
    };
    es_id(&bson).map_err(|e| (describe_id(&bson), e.to_string()))
}

/// A document that is not valid BSON: rejected with where and why, under its `_id` if that
/// can be read.
fn invalid_rejection(doc: &RawDocument, invalid: &Invalid) -> Rejected {
    let id = match doc.get("_id") {
        Ok(Some(id)) => Bson::try_from(id).map(|id| describe_id(&id)).unwrap_or_default(),
        _ => String::new(),
    };
    let reason = if invalid.path.is_empty() { format!("document {}", invalid.reason) } else { format!("document {} (at {})", invalid.reason, invalid.path) };
    Rejected::new(id, reason)
}
