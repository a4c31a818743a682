//! Avro datums to records. A datum is walked once against its schema here
//! before apache-avro reads it, within bounds apache-avro does not keep: it
//! recurses as deep as the data says (a recursive schema lets a small
//! message overflow the decode thread's stack, which no error handling
//! survives), reads a boolean or a union index at the end of the input as
//! null (a cut message would decode), loops over as many items of a
//! zero-byte type as a block claims, and ignores bytes after the datum. The
//! walk makes each of those a dead letter with its reason.

use std::collections::HashMap;

use apache_avro::schema::{DecimalSchema, InnerDecimalSchema, Name, NamespaceRef, UuidSchema};
use apache_avro::Schema;

use super::{DecodeError, FieldNames, Kind, Record, ValueSink, MAX_DEPTH};

/// Longest Avro string or bytes, and most items in one datum's arrays and
/// maps. An Avro length is a number in the payload that the decoder
/// reserves room for before reading what follows: a 13-byte message
/// claiming a map of 500 million entries would ask for 43 GB. Past this, the
/// message is a dead letter with the reason. The Avro crate keeps the same
/// limit for the process, set before the first datum is read.
pub const MAX_AVRO_LENGTH: usize = 1 << 20;
/// Records, arrays and maps nested in one datum.
const MAX_NESTING: usize = 64;

/// A writer's schema, with the named types it uses from other schemas.
pub struct AvroSchema {
    schema: Schema,
    /// Each after those it uses.
    references: Vec<Schema>,
    /// Every named type, by its full name, for the walk.
    named: HashMap<Name, Schema>,
}

impl AvroSchema {
    /// `text`, whose named types may be defined in `references` (texts too).
    pub fn parse(text: &str, references: &[&str]) -> Result<Self, String> {
        apache_avro::util::max_allocation_bytes(MAX_AVRO_LENGTH);
        let (schema, references) = apache_avro::Schema::parse_str_with_list(text, references).map_err(|e| format!("invalid Avro schema: {e}"))?;
        let mut named = HashMap::new();
        for s in references.iter().chain([&schema]) {
            collect_named(s, None, &mut named);
        }
        Ok(AvroSchema { schema, references, named })
    }

    /// One datum as the record's fields.
    pub fn decode(&self, body: &[u8], names: &mut FieldNames, record: &mut Record) -> Result<(), DecodeError> {
        let invalid = |reason: String| DecodeError::Body { format: "Avro", reason };
        let mut walk = Walk { named: &self.named, rest: body, items: 0 };
        walk.datum(&self.schema, None, 0).map_err(invalid)?;
        if !walk.rest.is_empty() {
            return Err(invalid(format!("{} bytes after the datum", walk.rest.len())));
        }
        use apache_avro::reader::datum::GenericDatumReader;
        let reader = if self.references.is_empty() {
            GenericDatumReader::builder(&self.schema).build()
        } else {
            GenericDatumReader::builder(&self.schema).writer_schemata(self.references.iter().chain([&self.schema]).collect()).and_then(|b| b.build())
        };
        let value = reader.and_then(|r| r.read_value(&mut &body[..])).map_err(|e| invalid(e.to_string()))?;
        let mut name = String::new();
        match value {
            apache_avro::types::Value::Record(fields) => avro_fields(fields, &mut name, names, record, 0),
            other => avro_value("value".into(), other, names, record, 0),
        }
    }
}

/// The named types defined in `schema`, by full name.
fn collect_named(schema: &Schema, namespace: NamespaceRef, named: &mut HashMap<Name, Schema>) {
    match schema {
        Schema::Record(r) => {
            let full = r.name.fully_qualified_name(namespace).into_owned();
            for field in &r.fields {
                collect_named(&field.schema, full.namespace(), named);
            }
            named.insert(full, schema.clone());
        }
        Schema::Enum(e) => {
            named.insert(e.name.fully_qualified_name(namespace).into_owned(), schema.clone());
        }
        Schema::Fixed(f)
        | Schema::Duration(f)
        | Schema::Uuid(UuidSchema::Fixed(f))
        | Schema::Decimal(DecimalSchema { inner: InnerDecimalSchema::Fixed(f), .. }) => {
            named.insert(f.name.fully_qualified_name(namespace).into_owned(), schema.clone());
        }
        Schema::Array(a) => collect_named(&a.items, namespace, named),
        Schema::Map(m) => collect_named(&m.types, namespace, named),
        Schema::Union(u) => u.variants().iter().for_each(|v| collect_named(v, namespace, named)),
        _ => {}
    }
}

/// Why a zigzag varint could not be read.
pub(crate) enum Varint {
    CutShort,
    TooLong,
}

/// A zigzag varint of at most 10 bytes taken off the front of `bytes`: an
/// Avro int or long, and the registry framing's Protobuf message indexes.
pub(crate) fn zigzag(bytes: &mut &[u8]) -> Result<i64, Varint> {
    let mut value: u64 = 0;
    for shift in (0..70).step_by(7) {
        let (&byte, rest) = bytes.split_first().ok_or(Varint::CutShort)?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f).checked_shl(shift).unwrap_or(0);
        if byte & 0x80 == 0 {
            return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
    Err(Varint::TooLong)
}

/// A datum's bytes walked against its schema, reading nothing into memory.
struct Walk<'a> {
    named: &'a HashMap<Name, Schema>,
    rest: &'a [u8],
    /// Array and map items so far.
    items: usize,
}

impl Walk<'_> {
    /// `depth` counts the records, arrays and maps around `schema` (a union or a reference adds none).
    fn datum(&mut self, schema: &Schema, namespace: NamespaceRef, depth: usize) -> Result<(), String> {
        if depth > MAX_NESTING {
            return Err(format!("records, arrays and maps nested deeper than {MAX_NESTING} levels"));
        }
        match schema {
            Schema::Null => Ok(()),
            Schema::Boolean => match self.take(1)? {
                [0 | 1] => Ok(()),
                [b] => Err(format!("a boolean of {b}")),
                _ => unreachable!("took one byte"),
            },
            Schema::Int
            | Schema::Long
            | Schema::Enum(_)
            | Schema::Date
            | Schema::TimeMillis
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => self.long().map(drop),
            Schema::Float => self.take(4).map(drop),
            Schema::Double => self.take(8).map(drop),
            Schema::Bytes
            | Schema::String
            | Schema::BigDecimal
            | Schema::Uuid(UuidSchema::Bytes | UuidSchema::String)
            | Schema::Decimal(DecimalSchema { inner: InnerDecimalSchema::Bytes, .. }) => {
                let length = self.length()?;
                self.take(length).map(drop)
            }
            Schema::Fixed(f)
            | Schema::Duration(f)
            | Schema::Uuid(UuidSchema::Fixed(f))
            | Schema::Decimal(DecimalSchema { inner: InnerDecimalSchema::Fixed(f), .. }) => self.take(f.size).map(drop),
            Schema::Array(a) => self.blocks(|walk| walk.datum(&a.items, namespace, depth + 1)),
            Schema::Map(m) => self.blocks(|walk| {
                let key = walk.length()?;
                walk.take(key)?;
                walk.datum(&m.types, namespace, depth + 1)
            }),
            Schema::Union(u) => {
                let index = self.long()?;
                let variant =
                    usize::try_from(index).ok().and_then(|i| u.variants().get(i)).ok_or_else(|| format!("union branch {index} of {}", u.variants().len()))?;
                self.datum(variant, namespace, depth)
            }
            Schema::Record(r) => {
                let full = r.name.fully_qualified_name(namespace);
                r.fields.iter().try_for_each(|field| self.datum(&field.schema, full.namespace(), depth + 1))
            }
            Schema::Ref { name } => {
                let full = name.fully_qualified_name(namespace);
                let named = self.named.get(&*full).ok_or_else(|| format!("the schema has no type {}", full.fullname(None)))?;
                self.datum(named, full.namespace(), depth)
            }
        }
    }

    /// Array or map blocks: a count (negative: then its size in bytes), items, until a count of 0.
    fn blocks(&mut self, mut item: impl FnMut(&mut Self) -> Result<(), String>) -> Result<(), String> {
        loop {
            let count = self.long()?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                self.long()?;
            }
            self.items = self.items.saturating_add(count.unsigned_abs().try_into().unwrap_or(usize::MAX));
            if self.items > MAX_AVRO_LENGTH {
                return Err(format!("more than {MAX_AVRO_LENGTH} array or map items"));
            }
            for _ in 0..count.unsigned_abs() {
                item(self)?;
            }
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if n > self.rest.len() {
            return Err(format!("cut short: {n} bytes wanted, {} left", self.rest.len()));
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    fn long(&mut self) -> Result<i64, String> {
        zigzag(&mut self.rest).map_err(|e| match e {
            Varint::CutShort => "cut short: a number wanted, no byte left".to_string(),
            Varint::TooLong => "a number longer than 10 bytes".to_string(),
        })
    }

    /// A string's or bytes' length, within [`MAX_AVRO_LENGTH`].
    fn length(&mut self) -> Result<usize, String> {
        let length = self.long()?;
        match usize::try_from(length) {
            Ok(n) if n <= MAX_AVRO_LENGTH => Ok(n),
            _ => Err(format!("a length of {length}")),
        }
    }
}

/// A record's fields as dotted names; records nested deeper than
/// `MAX_DEPTH` (a recursive schema) are kept as JSON text.
fn avro_fields(
    fields: Vec<(String, apache_avro::types::Value)>,
    prefix: &mut String,
    names: &mut FieldNames,
    record: &mut Record,
    depth: usize,
) -> Result<(), DecodeError> {
    for (field, value) in fields {
        let len = prefix.len();
        if !prefix.is_empty() {
            prefix.push('.');
        }
        prefix.push_str(&field);
        match value {
            apache_avro::types::Value::Record(inner) if depth < MAX_DEPTH => avro_fields(inner, prefix, names, record, depth + 1)?,
            other => avro_value(prefix.clone(), other, names, record, depth + 1)?,
        }
        prefix.truncate(len);
    }
    Ok(())
}

fn avro_value(name: String, value: apache_avro::types::Value, names: &mut FieldNames, record: &mut Record, depth: usize) -> Result<(), DecodeError> {
    use apache_avro::types::Value as V;
    let field = names.intern(&name)?;
    match value {
        V::Null => record.push_scalar(field, Kind::Null, 0),
        V::Boolean(b) => record.push_scalar(field, Kind::Bool, b as u64),
        V::Int(i) | V::Date(i) | V::TimeMillis(i) => record.push_scalar(field, Kind::Int, i as i64 as u64),
        V::Long(i) | V::TimestampMillis(i) | V::TimeMicros(i) | V::LocalTimestampMillis(i) => record.push_scalar(field, Kind::Int, i as u64),
        V::TimestampMicros(i) | V::LocalTimestampMicros(i) => record.push_scalar(field, Kind::Int, (i / 1000) as u64),
        V::Float(f) => record.push_scalar(field, Kind::Float, (f as f64).to_bits()),
        V::Double(f) => record.push_scalar(field, Kind::Float, f.to_bits()),
        V::String(s) | V::Enum(_, s) => record.push_text(field, s.as_bytes()),
        V::Union(_, inner) => {
            // The union's branch is invisible to the record: only its value counts.
            record.values.retain(|v| v.field != field);
            match *inner {
                V::Record(fields) if depth < MAX_DEPTH => {
                    let mut prefix = name;
                    avro_fields(fields, &mut prefix, names, record, depth + 1)?
                }
                other => avro_value(name, other, names, record, depth + 1)?,
            }
        }
        other => {
            let text = serde_json::Value::try_from(other).map(|v| v.to_string()).unwrap_or_default();
            record.push_text(field, text.as_bytes())
        }
    }
    Ok(())
}
