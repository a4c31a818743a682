//! Broker messages to records: the payload as JSON, as one text column, as
//! an Avro datum, or in a schema registry's framing, plus the metadata
//! columns a pipeline asked for.

#[cfg(feature = "avro")]
use super::avro::AvroSchema;
#[cfg(feature = "registry")]
use super::registry::{Schema, SchemaRegistry};
use super::{DecodeError, FieldNames, JsonDecoder, Kind, Record, ValueSink};
use crate::source::config::{MessageFormat, MetadataColumn, RegistryOptions};
use crate::source::Message;

impl Record {
    pub fn clear(&mut self) {
        self.values.clear();
        self.text.clear();
    }
}

/// Decodes one pipeline's messages.
pub struct MessageDecoder {
    pub json: JsonDecoder,
    format: MessageFormat,
    metadata: Vec<MetadataColumn>,
    #[cfg(feature = "avro")]
    avro: Option<AvroSchema>,
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
            (MessageFormat::Avro, Some(text)) => Some(AvroSchema::parse(text, &[])?),
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

    /// Whether [`MessageDecoder::decode_into`] takes this pipeline's
    /// messages: JSON payloads, whose values go straight where they are put.
    pub fn decodes_straight(&self) -> bool {
        self.format == MessageFormat::Json
    }

    /// A JSON message (see [`MessageDecoder::decodes_straight`]) and its
    /// metadata columns into `sink`. An error leaves in it the values read
    /// before the error: the sink's to drop.
    pub fn decode_into(&mut self, partition: u32, message: &Message, sink: &mut impl ValueSink) -> Result<(), DecodeError> {
        debug_assert!(self.decodes_straight());
        self.json.decode_into(&message.payload, sink)?;
        metadata_columns(&self.metadata, partition, message, &mut self.json.fields, sink)
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
                self.avro.as_ref().expect("checked in new").decode(&message.payload, &mut self.json.fields, &mut self.record)?;
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
                        Schema::Avro(schema) => {
                            schema.decode(body, &mut self.json.fields, &mut self.record)?;
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
        metadata_columns(&self.metadata, partition, message, fields, record)?;
        Ok(record)
    }
}

/// The metadata columns a pipeline asked for, of `message`, into `sink`.
fn metadata_columns(
    metadata: &[MetadataColumn],
    partition: u32,
    message: &Message,
    fields: &mut FieldNames,
    sink: &mut impl ValueSink,
) -> Result<(), DecodeError> {
    for column in metadata {
        match column {
            MetadataColumn::Key => {
                if let Some(key) = &message.key {
                    sink.push_text(fields.intern("_key")?, key);
                }
            }
            MetadataColumn::Partition => sink.push_scalar(fields.intern("_partition")?, Kind::Int, partition as u64),
            MetadataColumn::Offset => match &message.id {
                Some(id) => sink.push_text(fields.intern("_offset")?, id.as_bytes()),
                None => sink.push_scalar(fields.intern("_offset")?, Kind::Int, message.offset),
            },
            MetadataColumn::Timestamp => {
                if let Some(ms) = message.timestamp_ms {
                    sink.push_scalar(fields.intern("_timestamp")?, Kind::Int, ms as u64);
                }
            }
            MetadataColumn::Headers => {
                for (name, value) in &message.headers {
                    sink.push_text(fields.intern(&format!("_header.{name}"))?, value);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tests::shown;
    use bytes::Bytes;

    fn message(payload: &[u8]) -> Message {
        Message {
            offset: 7,
            id: None,
            payload: payload.to_vec().into(),
            key: Some(Bytes::from_static(b"k1")),
            timestamp_ms: Some(1_700_000_000_000),
            headers: vec![("origin".into(), b"eu".to_vec())],
            fault: None,
        }
    }

    #[test]
    fn json_with_metadata_columns() {
        let meta = vec![MetadataColumn::Key, MetadataColumn::Partition, MetadataColumn::Offset, MetadataColumn::Timestamp, MetadataColumn::Headers];
        let mut d = MessageDecoder::new(MessageFormat::Json, meta, None, None).unwrap();
        let r = d.decode(3, &message(br#"{"a":1}"#)).unwrap();
        let r = Record { values: r.values.clone(), text: r.text.clone() };
        let got = shown(&d.json.fields, &r);
        let want = [("a", "1"), ("_key", "k1"), ("_partition", "3"), ("_offset", "7"), ("_timestamp", "1700000000000"), ("_header.origin", "eu")];
        assert_eq!(got, want.map(|(a, b)| (a.to_string(), b.to_string())));
        assert!(d.decode(0, &message(b"not json")).is_err());
    }

    /// JSON messages and their metadata columns written straight into a
    /// window make the batch their records pushed make; a payload that
    /// fails part way, or whose metadata column is one name too many,
    /// leaves nothing behind.
    #[test]
    fn json_messages_straight_into_a_window_batch_as_records() {
        use crate::window::{Bounds, RecordMeta, WindowBuffer};
        use clean_host_core::bindings::WindowKind;
        let meta = vec![MetadataColumn::Key, MetadataColumn::Partition, MetadataColumn::Offset, MetadataColumn::Timestamp, MetadataColumn::Headers];
        let payloads: [&[u8]; 5] = [br#"{"a":1,"b":"x"}"#, br#"{"a":2,"new":"cut"#, br#"{"b":"y","a":"z"}"#, b"not json", br#"{"a":3,"c":4}"#];
        let bounds = Bounds { seq: 0, kind: WindowKind::Count, time: None, event_time: false };
        let batch = |straight: bool| {
            let mut d = MessageDecoder::new(MessageFormat::Json, meta.clone(), None, None).unwrap();
            assert!(d.decodes_straight());
            let mut window = WindowBuffer::default();
            for (i, payload) in payloads.iter().enumerate() {
                let m = message(payload);
                let row = RecordMeta { offset: i as u64, hash: 0, event_time: None, read_at_ms: 0 };
                if straight {
                    match d.decode_into(3, &m, &mut window) {
                        Ok(()) => window.finish_row(&row),
                        Err(_) => window.abandon_row(),
                    }
                } else if let Ok(record) = d.decode(3, &m) {
                    window.push(record, &row);
                }
            }
            format!("{:?}", window.into_batch(&d.json.fields, "p", "s", 3, bounds, 0))
        };
        let pushed = batch(false);
        assert!(pushed.contains("row-count: 3") && pushed.contains("_header.origin"), "{pushed}");
        assert_eq!(batch(true), pushed);
        // A payload that decodes, then a header's name one past the limit: the payload's values go too.
        let mut d = MessageDecoder::new(MessageFormat::Json, vec![MetadataColumn::Headers], None, None).unwrap().with_max_fields(1);
        let mut window = WindowBuffer::default();
        assert_eq!(d.decode_into(0, &message(br#"{"a":1}"#), &mut window), Err(DecodeError::TooManyFields { limit: 1 }));
        window.abandon_row();
        assert!(d.decode(0, &message(br#"{"a":1}"#)).is_err());
        let batch = window.into_batch(&d.json.fields, "p", "s", 0, bounds, 0);
        assert!(batch.row_count == 0 && batch.columns.is_empty(), "{batch:?}");
        let text = MessageDecoder::new(MessageFormat::String, Vec::new(), None, None).unwrap();
        assert!(!text.decodes_straight());
    }

    #[test]
    fn plain_strings() {
        let mut d = MessageDecoder::new(MessageFormat::String, vec![], None, None).unwrap();
        let r = d.decode(0, &message(b"hello")).unwrap();
        let r = Record { values: r.values.clone(), text: r.text.clone() };
        assert_eq!(shown(&d.json.fields, &r), vec![("value".to_string(), "hello".to_string())]);
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
        assert_eq!(shown(&d.json.fields, &r), want.map(|(a, b)| (a.to_string(), b.to_string())));
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
