//! One pass over raw BSON elements, writing JSON bytes: the value conversions of
//! [`super::super::bson_to_json`] (same text, same warnings at the same paths), without building
//! `Bson` or `serde_json::Value` values.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use mongodb::bson::raw::Error as RawError;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{Bson, RawArray, RawBinaryRef, RawBsonRef, RawDocument};
use serde::Serialize;

use crate::transform::bson_to_json::{self as reference, MAX_RFC3339_MILLIS, MIN_RFC3339_MILLIS};
use crate::transform::{ConvertOptions, ConvertWarning};

/// A document (or a part of it) that is not valid BSON, or nested too deep: where, and why.
#[derive(Debug)]
pub(super) struct Invalid {
    pub path: String,
    pub reason: String,
}

/// Objects and arrays nested deeper than this are rejected: the walk recurses, and MongoDB
/// itself stores no document deeper than 200 levels (`maxBSONDepth`). Stays well inside a
/// 2 MiB thread stack.
pub(super) const MAX_DEPTH: usize = 256;

/// One step of the path of the value being converted.
#[derive(Debug, Clone, Copy)]
pub(super) enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// The state of one document's conversion.
pub(super) struct Walk<'a, 'w> {
    pub opts: &'a ConvertOptions,
    pub warnings: &'w mut Vec<ConvertWarning>,
    pub path: Vec<Seg<'a>>,
    /// Key hashes of the objects being written (a stack: each object checks its own slice).
    hashes: Vec<u64>,
    /// A key seen twice in one object: the result must come from the `Document`-based converter,
    /// which keeps the last value at the first key's position.
    pub duplicate: bool,
}

impl<'a, 'w> Walk<'a, 'w> {
    pub fn new(opts: &'a ConvertOptions, warnings: &'w mut Vec<ConvertWarning>) -> Self {
        Walk { opts, warnings, path: Vec::with_capacity(8), hashes: Vec::with_capacity(64), duplicate: false }
    }

    /// The path as the reference converter spells it: keys and indexes joined by dots, a leading
    /// empty segment left out (`child_path("", key)` is `key`).
    pub fn path_string(&self) -> String {
        let mut out = String::new();
        for seg in &self.path {
            if !out.is_empty() {
                out.push('.');
            }
            match seg {
                Seg::Key(key) => out.push_str(key),
                Seg::Index(i) => out.push_str(&i.to_string()),
            }
        }
        out
    }

    pub fn warn(&mut self, reason: String) {
        let path = self.path_string();
        self.warnings.push(ConvertWarning { path, reason });
    }

    pub fn invalid(&self, error: RawError) -> Invalid {
        Invalid { path: self.path_string(), reason: format!("not valid BSON: {error}") }
    }

    /// Before going down into an object or array (the path ends at it).
    pub fn check_depth(&self) -> Result<(), Invalid> {
        if self.path.len() > MAX_DEPTH {
            return Err(Invalid { path: self.path_string(), reason: format!("objects and arrays nested deeper than {MAX_DEPTH} levels") });
        }
        Ok(())
    }

    /// Starts a new object's key set; pair with [`Self::end_object`].
    pub fn begin_object(&self) -> usize {
        self.hashes.len()
    }

    pub fn seen_key(&mut self, key: &str) {
        self.hashes.push(key_hash(key));
    }

    /// Flags a repeated key among those seen since `mark` (a hash collision flags it too: the
    /// fallback is exact, only slower).
    pub fn end_object(&mut self, mark: usize) {
        let keys = &mut self.hashes[mark..];
        if keys.len() > 1 {
            keys.sort_unstable();
            if keys.windows(2).any(|w| w[0] == w[1]) {
                self.duplicate = true;
            }
        }
        self.hashes.truncate(mark);
    }

    /// The elements of `doc`, each with its value read (and so checked) or the error at its path.
    pub fn element(&self, item: Result<mongodb::bson::raw::RawElement<'a>, RawError>) -> Result<(&'a str, RawBsonRef<'a>), Invalid> {
        let element = item.map_err(|e| self.invalid(e))?;
        let key = element.key();
        element.value().map(|value| (key, value)).map_err(|e| Invalid { path: join(&self.path_string(), key), reason: format!("not valid BSON: {e}") })
    }

    /// Writes `"key":value` (with a leading comma unless `*first`); a dropped value writes nothing.
    pub fn field(&mut self, out: &mut Vec<u8>, key: &'a str, value: RawBsonRef<'a>, first: &mut bool) -> Result<(), Invalid> {
        let start = out.len();
        if !*first {
            out.push(b',');
        }
        write_json(out, key);
        out.push(b':');
        self.path.push(Seg::Key(key));
        let kept = self.value(out, value);
        if matches!(kept, Ok(true)) {
            *first = false;
            if reference::is_rejected_key(key) {
                self.warn(reference::rejected_key(key));
            }
        } else {
            out.truncate(start);
        }
        self.path.pop();
        kept.map(drop)
    }

    /// Writes one value; `Ok(false)` means "drop the field" (nothing written).
    pub fn value(&mut self, out: &mut Vec<u8>, value: RawBsonRef<'a>) -> Result<bool, Invalid> {
        match value {
            RawBsonRef::Document(doc) => self.document(out, doc)?,
            RawBsonRef::Array(items) => self.array(out, items)?,
            RawBsonRef::ObjectId(oid) => {
                out.push(b'"');
                write_hex(out, &oid.bytes());
                out.push(b'"');
            }
            RawBsonRef::DateTime(dt) if write_date(out, dt.timestamp_millis()) => {}
            RawBsonRef::Int32(n) => write_json(out, &n),
            RawBsonRef::Int64(n) => write_json(out, &n),
            RawBsonRef::Double(f) if f.is_finite() => write_json(out, &f),
            RawBsonRef::Decimal128(d) if !self.opts.decimal_as_number => write_decimal(out, d),
            RawBsonRef::Binary(bin) => write_binary(out, bin),
            RawBsonRef::Symbol(s) | RawBsonRef::String(s) | RawBsonRef::JavaScriptCode(s) => write_json(out, s),
            RawBsonRef::Null | RawBsonRef::Undefined => out.extend_from_slice(b"null"),
            RawBsonRef::Boolean(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
            RawBsonRef::MaxKey => out.extend_from_slice(b"\"MaxKey\""),
            RawBsonRef::MinKey => out.extend_from_slice(b"\"MinKey\""),
            other => return self.rare_value(out, other),
        }
        Ok(true)
    }

    /// The values that warn or allocate, apart so that the recursive [`Self::value`] keeps a
    /// small stack frame.
    #[inline(never)]
    fn rare_value(&mut self, out: &mut Vec<u8>, value: RawBsonRef<'a>) -> Result<bool, Invalid> {
        match value {
            RawBsonRef::DateTime(dt) => {
                let millis = dt.timestamp_millis();
                self.warn(reference::date_out_of_range(millis));
                write_json(out, &millis);
            }
            RawBsonRef::Double(f) => {
                self.warn(reference::non_finite_double(f));
                return Ok(false);
            }
            RawBsonRef::Decimal128(d) => {
                let text = d.to_string();
                match text.parse::<f64>() {
                    Ok(f) if f.is_finite() => write_json(out, &f),
                    _ => {
                        self.warn(reference::non_finite_decimal(&text));
                        return Ok(false);
                    }
                }
            }
            RawBsonRef::Timestamp(ts) => {
                out.extend_from_slice(b"{\"t\":");
                write_json(out, &ts.time);
                out.extend_from_slice(b",\"i\":");
                write_json(out, &ts.increment);
                out.push(b'}');
            }
            RawBsonRef::RegularExpression(re) => {
                // As `Bson` has it: the options' characters sorted.
                let mut options: Vec<char> = re.options.chars().collect();
                options.sort_unstable();
                let options: String = options.into_iter().collect();
                write_json(out, &format!("/{}/{}", re.pattern, options));
            }
            RawBsonRef::JavaScriptCodeWithScope(cws) => {
                self.validate_document(cws.scope)?;
                self.warn(reference::CODE_SCOPE_DROPPED.to_owned());
                write_json(out, cws.code);
            }
            // DbPointer's fields are private; its extended JSON is the only public view.
            RawBsonRef::DbPointer(_) => {
                let bson = Bson::try_from(value).map_err(|e| self.invalid(e))?;
                write_json(out, &bson.into_canonical_extjson().to_string());
            }
            // The common values are written by `value`.
            other => return self.value(out, other),
        }
        Ok(true)
    }

    fn document(&mut self, out: &mut Vec<u8>, doc: &'a RawDocument) -> Result<(), Invalid> {
        self.check_depth()?;
        out.push(b'{');
        let mark = self.begin_object();
        let mut first = true;
        for item in doc.iter_elements() {
            let (key, value) = self.element(item)?;
            self.seen_key(key);
            self.field(out, key, value, &mut first)?;
        }
        self.end_object(mark);
        out.push(b'}');
        Ok(())
    }

    fn array(&mut self, out: &mut Vec<u8>, items: &'a RawArray) -> Result<(), Invalid> {
        self.check_depth()?;
        out.push(b'[');
        for (i, item) in self.array_doc(items)?.iter_elements().enumerate() {
            let (_, value) = self.element(item)?;
            self.path.push(Seg::Index(i));
            if i > 0 {
                out.push(b',');
            }
            if !self.value(out, value)? {
                out.extend_from_slice(b"null");
            }
            self.path.pop();
        }
        out.push(b']');
        Ok(())
    }

    /// An array as the document it is stored as (keys "0", "1"…, which are not read).
    pub fn array_doc(&self, items: &'a RawArray) -> Result<&'a RawDocument, Invalid> {
        RawDocument::from_bytes(items.as_bytes()).map_err(|e| self.invalid(e))
    }

    /// Reads every element below `value` (what building a `Document` would), writing nothing.
    pub fn validate(&mut self, value: RawBsonRef<'a>) -> Result<(), Invalid> {
        match value {
            RawBsonRef::Document(doc) => self.validate_document(doc),
            RawBsonRef::Array(items) => self.validate_document(self.array_doc(items)?),
            RawBsonRef::JavaScriptCodeWithScope(cws) => self.validate_document(cws.scope),
            _ => Ok(()),
        }
    }

    fn validate_document(&mut self, doc: &'a RawDocument) -> Result<(), Invalid> {
        self.check_depth()?;
        for item in doc.iter_elements() {
            let (key, value) = self.element(item)?;
            self.path.push(Seg::Key(key));
            self.validate(value)?;
            self.path.pop();
        }
        Ok(())
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// FNV-1a: keys are short, and a collision only costs the exact fallback.
fn key_hash(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Serialises with serde_json, so strings, integers and doubles are spelt exactly as
/// `serde_json::to_vec` spells the reference converter's `Value`s.
pub(super) fn write_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing to a Vec cannot fail, and every type passed here serialises.
    let written = serde_json::to_writer(&mut *out, value);
    debug_assert!(written.is_ok());
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn write_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0xf)]);
    }
}

#[inline(never)]
fn write_decimal(out: &mut Vec<u8>, d: mongodb::bson::Decimal128) {
    write_json(out, &d.to_string());
}

fn write_binary(out: &mut Vec<u8>, bin: RawBinaryRef<'_>) {
    out.push(b'"');
    match (bin.subtype, bin.bytes.len()) {
        // UuidOld in stored byte order, as the reference converter.
        (BinarySubtype::Uuid | BinarySubtype::UuidOld, 16) => {
            for (i, range) in [0..4, 4..6, 6..8, 8..10, 10..16].into_iter().enumerate() {
                if i > 0 {
                    out.push(b'-');
                }
                write_hex(out, &bin.bytes[range]);
            }
        }
        _ => {
            let start = out.len();
            out.resize(start + base64::encoded_len(bin.bytes.len(), true).unwrap_or(0), 0);
            let written = BASE64.encode_slice(bin.bytes, &mut out[start..]).unwrap_or(0);
            out.truncate(start + written);
        }
    }
    out.push(b'"');
}

/// `"YYYY-MM-DDTHH:MM:SS.mmmZ"` for years 0000–9999 (what the reference converter gets from
/// bson's RFC 3339 formatting); `false`, writing nothing, outside them.
pub(super) fn write_date(out: &mut Vec<u8>, millis: i64) -> bool {
    if !(MIN_RFC3339_MILLIS..=MAX_RFC3339_MILLIS).contains(&millis) {
        return false;
    }
    let seconds = millis.div_euclid(1000);
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let second_of_day = seconds.rem_euclid(86_400);
    let fields =
        [(year, 4), (month, 2), (day, 2), (second_of_day / 3600, 2), (second_of_day / 60 % 60, 2), (second_of_day % 60, 2), (millis.rem_euclid(1000), 3)];
    out.push(b'"');
    for (i, (value, width)) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(b" --T::."[i]);
        }
        write_digits(out, value, width);
    }
    out.extend_from_slice(b"Z\"");
    true
}

fn write_digits(out: &mut Vec<u8>, value: i64, width: u32) {
    for place in (0..width).rev() {
        // `value` is in 0..10^width here; the digit is 0..=9.
        out.push(b'0' + (value / 10_i64.pow(place) % 10) as u8);
    }
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}
