//! Broker messages to records: the payload as JSON, as one text column, as
//! an Avro datum, or in a schema registry's framing, plus the metadata
//! columns a pipeline asked for.

#[cfg(feature = "registry")]
use super::registry::{Schema, SchemaRegistry};
use super::{DecodeError, FieldValue, JsonDecoder, Kind, Record};
use crate::source::config::{MessageFormat, MetadataColumn, RegistryOptions};
use crate::source::Message;

impl Record {
    pub fn clear(&mut self) {
        self.values.clear();
        self.text.clear();
    }

    pub fn push_text(&mut self, field: u32, text: &[u8]) {
        let start = self.text.len() as u32;
        self.text.extend_from_slice(text);
        self.values.push(FieldValue { field, kind: Kind::Text, bits: 0, text: (start, self.text.len() as u32) });
    }

    pub fn push_scalar(&mut self, field: u32, kind: Kind, bits: u64) {
        self.values.push(FieldValue { field, kind, bits, text: (0, 0) });
    }
}

/// Longest Avro string or bytes, and most items in one array or map block.
/// An Avro length is a number in the payload that the decoder reserves
/// room for before reading what follows: a 13-byte message claiming a map
/// of 500 million entries would ask for 43 GB. Past this, the message is a
/// dead letter with the reason. The limit is the process's (the Avro crate
/// keeps one), set before the first datum is read.
#[cfg(feature = "avro")]
pub const MAX_AVRO_LENGTH: usize = 1 << 20;

/// Decodes one pipeline's messages.
pub struct MessageDecoder {
    pub json: JsonDecoder,
    format: MessageFormat,
    metadata: Vec<MetadataColumn>,
    #[cfg(feature = "avro")]
    avro: Option<apache_avro::Schema>,
    #[cfg(feature = "registry")]
    registry: Option<SchemaRegistry>,
    /// The record when the payload is not JSON.
    record: Record,
}

impl MessageDecoder {
    /// `avro_schema` is the schema file's text, needed for [`MessageFormat::Avro`];
    /// `registry` is needed for [`MessageFormat::Registry`].
    pub fn new(format: MessageFormat, metadata: Vec<MetadataColumn>, avro_schema: Option<&str>, registry: Option<&RegistryOptions>) -> Result<Self, String> {
        #[cfg(feature = "avro")]
        let avro = match (format, avro_schema) {
            (MessageFormat::Avro, Some(text)) => {
                apache_avro::util::max_allocation_bytes(MAX_AVRO_LENGTH);
                Some(apache_avro::Schema::parse_str(text).map_err(|e| format!("invalid Avro schema: {e}"))?)
            }
            (MessageFormat::Avro, None) => return Err("format avro needs a schema file".into()),
            _ => None,
        };
        #[cfg(not(feature = "avro"))]
        if format == MessageFormat::Avro {
            let _ = avro_schema;
            return Err("this build has no avro support (cargo feature avro)".into());
        }
        #[cfg(feature = "registry")]
        let registry = match (format, registry) {
            (MessageFormat::Registry, Some(options)) => Some(SchemaRegistry::connect(options)?),
            (MessageFormat::Registry, None) => return Err("format registry needs [pipelines.broker.registry] with its url".into()),
            _ => None,
        };
        #[cfg(not(feature = "registry"))]
        if format == MessageFormat::Registry {
            let _ = registry;
            return Err("this build has no schema registry support (cargo feature registry)".into());
        }
        Ok(MessageDecoder {
            json: JsonDecoder::default(),
            format,
            metadata,
            #[cfg(feature = "avro")]
            avro,
            #[cfg(feature = "registry")]
            registry,
            record: Record::default(),
        })
    }

    /// Decode messages in the registry's framing, with `registry`'s schemas.
    #[cfg(feature = "registry")]
    pub fn with_registry(mut self, registry: SchemaRegistry) -> Self {
        self.format = MessageFormat::Registry;
        self.registry = Some(registry);
        self
    }

    /// Refuse records that would bring the pipeline past `max` distinct field names.
    pub fn with_max_fields(mut self, max: usize) -> Self {
        self.json.fields = super::FieldNames::with_limit(max);
        self
    }

    pub fn decode(&mut self, partition: u32, message: &Message) -> Result<&Record, DecodeError> {
        let (fields, record) = match self.format {
            MessageFormat::Json => {
                self.json.decode(&message.payload)?;
                self.json.parts_mut()
            }
            MessageFormat::String => {
                self.record.clear();
                let field = self.json.fields.intern("value")?;
                self.record.push_text(field, &message.payload);
                (&mut self.json.fields, &mut self.record)
            }
            MessageFormat::Avro => {
                self.record.clear();
                #[cfg(feature = "avro")]
                avro_datum(self.avro.as_ref().expect("checked in new"), &[], &message.payload, &mut self.json.fields, &mut self.record)?;
                (&mut self.json.fields, &mut self.record)
            }
            MessageFormat::Registry => {
                #[cfg(feature = "registry")]
                {
                    let (id, body) = SchemaRegistry::unframe(&message.payload)?;
                    let schema = self.registry.as_mut().expect("checked in new").schema(id)?;
                    self.record.clear();
                    match &*schema {
                        Schema::Json => {
                            self.json.decode(body)?;
                            self.json.parts_mut()
                        }
                        Schema::Avro { schema, references } => {
                            avro_datum(schema, references, body, &mut self.json.fields, &mut self.record)?;
                            (&mut self.json.fields, &mut self.record)
                        }
                        Schema::Protobuf(schema) => {
                            schema.decode(body, &mut self.json.fields, &mut self.record)?;
                            (&mut self.json.fields, &mut self.record)
                        }
                    }
                }
                #[cfg(not(feature = "registry"))]
                unreachable!("refused in new")
            }
        };
        for column in &self.metadata {
            match column {
                MetadataColumn::Key => {
                    if let Some(key) = &message.key {
                        record.push_text(fields.intern("_key")?, key);
                    }
                }
                MetadataColumn::Partition => record.push_scalar(fields.intern("_partition")?, Kind::Int, partition as u64),
                MetadataColumn::Offset => match &message.id {
                    Some(id) => record.push_text(fields.intern("_offset")?, id.as_bytes()),
                    None => record.push_scalar(fields.intern("_offset")?, Kind::Int, message.offset),
                },
                MetadataColumn::Timestamp => {
                    if let Some(ms) = message.timestamp_ms {
                        record.push_scalar(fields.intern("_timestamp")?, Kind::Int, ms as u64);
                    }
                }
                MetadataColumn::Headers => {
                    for (name, value) in &message.headers {
                        record.push_text(fields.intern(&format!("_header.{name}"))?, value);
                    }
                }
            }
        }
        Ok(record)
    }
}

/// One Avro datum written with `schema` (whose named types may be in
/// `references`) as the record's fields.
#[cfg(feature = "avro")]
fn avro_datum(
    schema: &apache_avro::Schema,
    references: &[apache_avro::Schema],
    body: &[u8],
    names: &mut super::FieldNames,
    record: &mut Record,
) -> Result<(), DecodeError> {
    use apache_avro::reader::datum::GenericDatumReader;
    let reader = if references.is_empty() {
        GenericDatumReader::builder(schema).build()
    } else {
        GenericDatumReader::builder(schema).writer_schemata(references.iter().chain([schema]).collect()).and_then(|b| b.build())
    };
    let value = reader.and_then(|r| r.read_value(&mut &body[..])).map_err(|e| DecodeError::Body { format: "Avro", reason: e.to_string() })?;
    let mut name = String::new();
    match value {
        apache_avro::types::Value::Record(fields) => avro_fields(fields, &mut name, names, record, 0),
        other => avro_value("value".into(), other, names, record, 0),
    }
}

/// A record's fields as dotted names; records nested deeper than
/// `MAX_DEPTH` (a recursive schema) are kept as JSON text.
#[cfg(feature = "avro")]
fn avro_fields(
    fields: Vec<(String, apache_avro::types::Value)>,
    prefix: &mut String,
    names: &mut super::FieldNames,
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
            apache_avro::types::Value::Record(inner) if depth < super::MAX_DEPTH => avro_fields(inner, prefix, names, record, depth + 1)?,
            other => avro_value(prefix.clone(), other, names, record, depth + 1)?,
        }
        prefix.truncate(len);
    }
    Ok(())
}

#[cfg(feature = "avro")]
fn avro_value(name: String, value: apache_avro::types::Value, names: &mut super::FieldNames, record: &mut Record, depth: usize) -> Result<(), DecodeError> {
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
                V::Record(fields) if depth < super::MAX_DEPTH => {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: &[u8]) -> Message {
        Message {
            offset: 7,
            id: None,
            payload: payload.to_vec(),
            key: Some(b"k1".to_vec()),
            timestamp_ms: Some(1_700_000_000_000),
            headers: vec![("origin".into(), b"eu".to_vec())],
            fault: None,
        }
    }

    fn fields(d: &MessageDecoder, r: &Record) -> Vec<(String, String)> {
        r.values
            .iter()
            .map(|v| {
                let shown = match v.kind {
                    Kind::Text => String::from_utf8_lossy(r.text_of(v)).into_owned(),
                    Kind::Int => (v.bits as i64).to_string(),
                    Kind::Float => f64::from_bits(v.bits).to_string(),
                    k => format!("{k:?}"),
                };
                (d.json.fields.name(v.field).to_string(), shown)
            })
            .collect()
    }

    #[test]
    fn json_with_metadata_columns() {
        let meta = vec![MetadataColumn::Key, MetadataColumn::Partition, MetadataColumn::Offset, MetadataColumn::Timestamp, MetadataColumn::Headers];
        let mut d = MessageDecoder::new(MessageFormat::Json, meta, None, None).unwrap();
        let r = d.decode(3, &message(br#"{"a":1}"#)).unwrap();
        let r = Record { values: r.values.clone(), text: r.text.clone() };
        let got = fields(&d, &r);
        let want = [("a", "1"), ("_key", "k1"), ("_partition", "3"), ("_offset", "7"), ("_timestamp", "1700000000000"), ("_header.origin", "eu")];
        assert_eq!(got, want.map(|(a, b)| (a.to_string(), b.to_string())));
        assert!(d.decode(0, &message(b"not json")).is_err());
    }

    #[test]
    fn plain_strings() {
        let mut d = MessageDecoder::new(MessageFormat::String, vec![], None, None).unwrap();
        let r = d.decode(0, &message(b"hello")).unwrap();
        let r = Record { values: r.values.clone(), text: r.text.clone() };
        assert_eq!(fields(&d, &r), vec![("value".to_string(), "hello".to_string())]);
    }

    #[cfg(feature = "avro")]
    #[test]
    fn avro_datums_with_a_schema() {
        let schema_text = r#"{"type":"record","name":"Order","fields":[
            {"name":"id","type":"long"},{"name":"amount","type":["null","double"]},
            {"name":"geo","type":{"type":"record","name":"Geo","fields":[{"name":"country","type":"string"}]}}]}"#;
        let schema = apache_avro::Schema::parse_str(schema_text).unwrap();
        let mut value = apache_avro::types::Record::new(&schema).unwrap();
        value.put("id", 42i64);
        value.put("amount", apache_avro::types::Value::Union(1, Box::new(apache_avro::types::Value::Double(9.5))));
        value.put("geo", apache_avro::types::Value::Record(vec![("country".into(), "DE".into())]));
        let bytes = apache_avro::writer::datum::GenericDatumWriter::builder(&schema).build().unwrap().write_value_to_vec(value).unwrap();
        let mut d = MessageDecoder::new(MessageFormat::Avro, vec![], Some(schema_text), None).unwrap();
        let r = d.decode(0, &message(&bytes)).unwrap();
        let r = Record { values: r.values.clone(), text: r.text.clone() };
        let want = [("id", "42"), ("amount", "9.5"), ("geo.country", "DE")];
        assert_eq!(fields(&d, &r), want.map(|(a, b)| (a.to_string(), b.to_string())));
        let err = d.decode(0, &message(&[0xff, 0xff, 0xff])).unwrap_err();
        assert!(err.to_string().contains("Avro"), "{err}");
        assert!(MessageDecoder::new(MessageFormat::Avro, vec![], Some("{nope"), None).is_err());
    }

    /// Found by `scripts/fuzz decode_avro`: 13 bytes whose map claims
    /// hundreds of millions of entries aborted the process asking for 43 GB.
    #[cfg(feature = "avro")]
    #[test]
    fn an_avro_length_past_the_limit_is_a_dead_letter_not_an_abort() {
        let schema = r#"{"type":"record","name":"E","fields":[{"name":"id","type":"long"},{"name":"attrs","type":{"type":"map","values":"int"}}]}"#;
        let mut d = MessageDecoder::new(MessageFormat::Avro, vec![], Some(schema), None).unwrap();
        // id 0, then a map block of 2^29 entries (zigzag varint) and nothing more.
        let err = d.decode(0, &message(&[0x00, 0x80, 0x80, 0x80, 0x80, 0x04])).unwrap_err();
        assert!(err.to_string().contains("Avro"), "{err}");
        // A string past the limit too.
        let schema = r#"{"type":"record","name":"S","fields":[{"name":"s","type":"string"}]}"#;
        let mut d = MessageDecoder::new(MessageFormat::Avro, vec![], Some(schema), None).unwrap();
        let err = d.decode(0, &message(&[0x80, 0x80, 0x80, 0x02])).unwrap_err();
        assert!(err.to_string().contains("Avro"), "{err}");
    }
}
