//! JSON lines to records.
//!
//! A line becomes a flat list of (field id, value): nested objects are
//! flattened to dotted names (`geo.lat`), arrays are kept as their JSON text.
//! Field names are interned per pipeline; the common case of records with the
//! same fields in the same order costs one string compare per field. Nothing
//! here decides types: that happens per window, when columns are built.

use std::collections::HashMap;
use std::sync::Arc;

use clean_host_core::short_bytes;
use clean_host_core::timestamp::TimeParser;

#[cfg(feature = "avro")]
pub mod avro;
mod json;
pub mod message;
#[cfg(feature = "registry")]
pub mod registry;
#[cfg(test)]
mod tests;

/// Objects nested deeper than this are kept as JSON text.
const MAX_DEPTH: usize = 16;
/// Distinct field names one pipeline keeps, unless configured.
pub const DEFAULT_MAX_FIELDS: usize = 10_000;

/// What a value is, as stored per row in a window's columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Missing = 0,
    Null = 1,
    Bool = 2,
    Int = 3,
    Float = 4,
    Text = 5,
}

/// One decoded value: numbers and booleans in `bits`, text in the record's buffer.
#[derive(Debug, Clone, Copy)]
pub struct FieldValue {
    pub field: u32,
    pub kind: Kind,
    /// `i64` / `f64` bits, or 0 / 1 for booleans.
    pub bits: u64,
    pub text: (u32, u32),
}

/// A decoded record, reused from line to line.
#[derive(Debug, Default)]
pub struct Record {
    pub values: Vec<FieldValue>,
    pub text: Vec<u8>,
}

impl Record {
    pub fn text_of(&self, v: &FieldValue) -> &[u8] {
        &self.text[v.text.0 as usize..v.text.1 as usize]
    }

    pub fn get(&self, field: u32) -> Option<&FieldValue> {
        self.values.iter().find(|v| v.field == field)
    }
}

/// Where a decoder writes a record's values as it reads them: a [`Record`],
/// or a window's columns (one copy of each value, not one into a record
/// and another into the columns).
pub trait ValueSink {
    /// The buffer a text value of `field` is written onto, at its end; it
    /// may be asked for again (the same buffer) before the value is ended
    /// by `value(field, Kind::Text, ..)`, with no other value in between.
    fn text_buffer(&mut self, field: u32) -> &mut Vec<u8>;
    /// A value of `field`; a text one (`Kind::Text`) is what its buffer got
    /// from `start` on.
    fn value(&mut self, field: u32, kind: Kind, bits: u64, start: usize);

    /// A text value of `field` that `write` appends to its buffer whole.
    #[inline(always)]
    fn text(&mut self, field: u32, write: impl FnOnce(&mut Vec<u8>)) {
        let out = self.text_buffer(field);
        let start = out.len();
        write(out);
        self.value(field, Kind::Text, 0, start);
    }

    /// A text value of `field` that is at hand whole.
    #[inline(always)]
    fn push_text(&mut self, field: u32, text: &[u8]) {
        self.text(field, |out| out.extend_from_slice(text));
    }

    /// A number, boolean or null of `field`.
    #[inline(always)]
    fn push_scalar(&mut self, field: u32, kind: Kind, bits: u64) {
        self.value(field, kind, bits, 0);
    }
}

impl ValueSink for Record {
    #[inline]
    fn text_buffer(&mut self, _field: u32) -> &mut Vec<u8> {
        &mut self.text
    }

    #[inline]
    fn value(&mut self, field: u32, kind: Kind, bits: u64, start: usize) {
        let text = if kind == Kind::Text { (start as u32, self.text.len() as u32) } else { (0, 0) };
        self.values.push(FieldValue { field, kind, bits, text });
    }
}

/// Why a line could not be decoded; it goes to the dead letters with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty line")]
    Empty,
    #[error("invalid JSON: {0}")]
    Syntax(String),
    #[error("not a JSON object but {0}")]
    NotAnObject(&'static str),
    #[error("binary data, not a JSON line: byte 0x{byte:02x} at byte {at}")]
    Binary { at: usize, byte: u8 },
    #[error("truncated: the line ends after {bytes} bytes, inside its JSON object")]
    Truncated { bytes: usize },
    #[error("invalid {format} message: {reason}")]
    Body { format: &'static str, reason: String },
    #[error("schema registry: {0}")]
    Registry(String),
    #[error("a new field name, but the pipeline already has {limit} distinct field names (max_fields)")]
    TooManyFields { limit: usize },
}

/// Field names of one pipeline, each with a stable small id. Data decides
/// the names, so their number is capped: past `limit`, a record with a new
/// name is refused rather than growing every window's columns for good.
#[derive(Debug)]
pub struct FieldNames {
    /// Each name once, shared by the lists below.
    names: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, u32>,
    /// The fields by position in the records before (each place as the
    /// last record that reached it had it): the fast paths compare a key
    /// with the name or key beside its id, not one looked up by the id. At
    /// most `limit` places are kept (repeated keys make places, not names).
    last_order: Vec<Place>,
    limit: usize,
}

/// A field where the previous record had it.
#[derive(Debug)]
struct Place {
    id: u32,
    name: Arc<str>,
    /// The key as a line writes it at the top level, its closing quote and
    /// the colon after (`name":`), when the key is the name as it stands:
    /// no dot (a nested field's name joins its objects' keys) and nothing
    /// JSON escapes.
    token: Option<Box<[u8]>>,
}

impl Place {
    fn new(id: u32, name: Arc<str>) -> Self {
        let plain = name.bytes().all(|c| c >= 0x20 && !matches!(c, b'.' | b'"' | b'\\'));
        let token = plain.then(|| [name.as_bytes(), b"\":"].concat().into_boxed_slice());
        Place { id, name, token }
    }
}

impl Default for FieldNames {
    fn default() -> Self {
        FieldNames::with_limit(DEFAULT_MAX_FIELDS)
    }
}

impl FieldNames {
    pub fn with_limit(limit: usize) -> Self {
        FieldNames { names: Vec::new(), ids: HashMap::new(), last_order: Vec::new(), limit }
    }

    /// The name of `id`, shared (one count up, no copy).
    pub fn shared_name(&self, id: u32) -> Arc<str> {
        self.names[id as usize].clone()
    }

    /// The id of `name`, interning it if new and there is room.
    pub fn intern(&mut self, name: &str) -> Result<u32, DecodeError> {
        if let Some(&id) = self.ids.get(name) {
            return Ok(id);
        }
        if self.names.len() >= self.limit {
            return Err(DecodeError::TooManyFields { limit: self.limit });
        }
        let id = self.names.len() as u32;
        let name: Arc<str> = name.into();
        self.names.push(name.clone());
        self.ids.insert(name, id);
        Ok(id)
    }

    /// The id of the field named `name` (UTF-8 not yet checked) at `position` in a record.
    #[inline]
    fn id_at(&mut self, position: usize, name: &[u8]) -> Result<u32, DecodeError> {
        match self.last_order.get(position) {
            Some(place) if short_bytes::equal(place.name.as_bytes(), name) => Ok(place.id),
            _ => self.id_at_anew(position, name),
        }
    }

    /// The field of the top-level key that `after_quote` (a line from just
    /// after a key's opening quote) starts with, and the bytes its key, the
    /// closing quote and the colon take, when that key is the one the
    /// previous record had at `position`; `None`: the key is read the slow way.
    #[inline]
    fn key_at(&self, position: usize, after_quote: &[u8]) -> Option<(u32, usize)> {
        let place = self.last_order.get(position)?;
        let token = place.token.as_deref()?;
        let found = after_quote.get(..token.len())?;
        short_bytes::equal(found, token).then_some((place.id, token.len()))
    }

    /// [`FieldNames::id_at`] for a key not where the previous record had it.
    #[cold]
    fn id_at_anew(&mut self, position: usize, name: &[u8]) -> Result<u32, DecodeError> {
        let name = std::str::from_utf8(name).map_err(|e| DecodeError::Syntax(format!("a key is not valid UTF-8 (byte {} of it)", e.valid_up_to())))?;
        let id = self.intern(name)?;
        let place = || Place::new(id, self.names[id as usize].clone());
        if position < self.last_order.len() {
            self.last_order[position] = place();
        } else if position == self.last_order.len() && position < self.limit {
            self.last_order.push(place());
        }
        Ok(id)
    }
}

/// Decodes JSON lines of one pipeline.
#[derive(Debug, Default)]
pub struct JsonDecoder {
    pub fields: FieldNames,
    record: Record,
    /// The dotted name of the field being parsed.
    name: Vec<u8>,
}

impl JsonDecoder {
    pub fn decode(&mut self, line: &[u8]) -> Result<&Record, DecodeError> {
        self.record.values.clear();
        self.record.text.clear();
        let mut record = std::mem::take(&mut self.record);
        let decoded = self.decode_into(line, &mut record);
        self.record = record;
        decoded.map(|()| &self.record)
    }

    /// Decode `line` into `sink`. An error leaves in it the values read
    /// before the error: the sink's to drop.
    pub fn decode_into(&mut self, line: &[u8], sink: &mut impl ValueSink) -> Result<(), DecodeError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.name.clear();
        json::Parser::new(line, &mut self.fields, sink, &mut self.name).parse_line()
    }

    /// The field names and the record of the last `decode`, for adding columns to it.
    fn parts_mut(&mut self) -> (&mut FieldNames, &mut Record) {
        (&mut self.fields, &mut self.record)
    }
}

/// An event time from a decoded value: epoch milliseconds (numbers above
/// 10^11; smaller numbers are seconds) or an RFC 3339 string, read by
/// `times`, the parser of the stream's times one after another.
pub fn event_time(record: &Record, value: &FieldValue, times: &mut TimeParser) -> Option<i64> {
    match value.kind {
        Kind::Int => {
            let v = value.bits as i64;
            Some(if v.abs() < 100_000_000_000 { v * 1000 } else { v })
        }
        Kind::Float => {
            let v = f64::from_bits(value.bits);
            v.is_finite().then(|| if v.abs() < 1e11 { (v * 1000.0) as i64 } else { v as i64 })
        }
        Kind::Text => times.parse_ms(record.text_of(value)),
        _ => None,
    }
}
