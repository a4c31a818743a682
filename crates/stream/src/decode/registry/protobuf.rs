//! Protobuf bodies: the schema's `.proto` text (and the files it imports,
//! from its references) compiled once, then each body decoded as the message
//! its indexes name and flattened like JSON: nested messages to dotted names,
//! `google.protobuf.Timestamp` to epoch ms, wrapper types to their value,
//! repeated fields and maps as JSON text, enums by name. A proto3 scalar
//! holds its default when unset (the wire cannot tell); a field with
//! presence that is unset is null, or left out when it is one of a oneof.

use std::collections::HashMap;

use prost_reflect::{DescriptorPool, DynamicMessage, FieldDescriptor, MessageDescriptor, ReflectMessage, Value};

use crate::decode::avro::Varint;
use crate::decode::{DecodeError, FieldNames, Kind, Record, ValueSink, MAX_DEPTH};

/// The name the schema's own file is compiled under.
const MAIN_FILE: &str = "clean-host-registry-schema.proto";
/// Most message indexes a body may name (nesting levels).
const MAX_INDEXES: usize = 32;

/// A compiled Protobuf schema.
pub struct ProtobufSchema {
    /// The file's top-level messages in declaration order.
    messages: Vec<MessageDescriptor>,
}

/// `.proto` files by name: the registry's references.
struct Files(HashMap<String, String>);

impl protox::file::FileResolver for Files {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        match self.0.get(name) {
            Some(source) => protox::file::File::from_source(name, source),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

impl ProtobufSchema {
    /// Compiles `source`, importing from `imports` (name, text) and the well-known types.
    pub fn compile(source: &str, imports: Vec<(&str, &str)>) -> Result<Self, String> {
        let mut files: HashMap<String, String> = imports.into_iter().map(|(name, text)| (name.to_string(), text.to_string())).collect();
        files.insert(MAIN_FILE.into(), source.into());
        let mut resolver = protox::file::ChainFileResolver::new();
        resolver.add(Files(files));
        resolver.add(protox::file::GoogleFileResolver::new());
        let mut compiler = protox::Compiler::with_file_resolver(resolver);
        compiler.open_file(MAIN_FILE).map_err(|e| format!("invalid Protobuf schema: {e}"))?;
        let pool: DescriptorPool = compiler.descriptor_pool();
        let file = pool.get_file_by_name(MAIN_FILE).ok_or("invalid Protobuf schema: nothing compiled")?;
        let messages: Vec<MessageDescriptor> = file.messages().collect();
        if messages.is_empty() {
            return Err("the Protobuf schema declares no message".into());
        }
        Ok(ProtobufSchema { messages })
    }

    /// Decodes a body (message indexes, then the message) into `record`.
    pub fn decode(&self, body: &[u8], names: &mut FieldNames, record: &mut Record) -> Result<(), DecodeError> {
        let (indexes, rest) = message_indexes(body)?;
        let descriptor = self.message_at(&indexes)?;
        let message = DynamicMessage::decode(descriptor, rest).map_err(|e| DecodeError::Body { format: "Protobuf", reason: e.to_string() })?;
        let mut prefix = String::new();
        message_fields(&message, &mut prefix, names, record, 0)
    }

    fn message_at(&self, indexes: &[usize]) -> Result<MessageDescriptor, DecodeError> {
        let missing = || DecodeError::Registry(format!("the message indexes {indexes:?} name no message of the schema"));
        let mut message = self.messages.get(indexes.first().copied().unwrap_or(0)).ok_or_else(missing)?.clone();
        for &i in indexes.iter().skip(1) {
            // Declared messages only, as the serializers count them: not a map field's entry type.
            let child = message.child_messages().filter(|m| !m.is_map_entry()).nth(i).ok_or_else(missing)?;
            message = child;
        }
        Ok(message)
    }
}

/// The message indexes before a body (zigzag varints: a count, then each
/// index; a count of 0 means the first message), and what follows them.
fn message_indexes(body: &[u8]) -> Result<(Vec<usize>, &[u8]), DecodeError> {
    let mut rest = body;
    let count = zigzag(&mut rest)?;
    if count < 0 || count as usize > MAX_INDEXES {
        return Err(DecodeError::Registry(format!("a Protobuf body claims {count} message indexes")));
    }
    let mut indexes = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let index = zigzag(&mut rest)?;
        indexes.push(usize::try_from(index).map_err(|_| DecodeError::Registry(format!("a negative message index ({index})")))?);
    }
    Ok((indexes, rest))
}

fn zigzag(bytes: &mut &[u8]) -> Result<i64, DecodeError> {
    crate::decode::avro::zigzag(bytes).map_err(|e| {
        DecodeError::Registry(match e {
            Varint::CutShort => "the Protobuf message indexes are cut short".into(),
            Varint::TooLong => "a Protobuf message index is longer than 10 bytes".into(),
        })
    })
}

fn message_fields(message: &DynamicMessage, prefix: &mut String, names: &mut FieldNames, record: &mut Record, depth: usize) -> Result<(), DecodeError> {
    for field in message.descriptor().fields() {
        let len = prefix.len();
        if !prefix.is_empty() {
            prefix.push('.');
        }
        prefix.push_str(field.name());
        if field.supports_presence() && !message.has_field(&field) {
            let in_oneof = field.containing_oneof().is_some_and(|o| !o.is_synthetic());
            if !in_oneof {
                record.push_scalar(names.intern(prefix)?, Kind::Null, 0);
            }
        } else {
            field_value(&field, &message.get_field(&field), prefix, names, record, depth)?;
        }
        prefix.truncate(len);
    }
    Ok(())
}

fn field_value(
    field: &FieldDescriptor,
    value: &Value,
    name: &mut String,
    names: &mut FieldNames,
    record: &mut Record,
    depth: usize,
) -> Result<(), DecodeError> {
    let id = names.intern(name)?;
    match value {
        Value::Bool(b) => record.push_scalar(id, Kind::Bool, *b as u64),
        Value::I32(i) => record.push_scalar(id, Kind::Int, i64::from(*i) as u64),
        Value::I64(i) => record.push_scalar(id, Kind::Int, *i as u64),
        Value::U32(u) => record.push_scalar(id, Kind::Int, u64::from(*u)),
        Value::U64(u) if *u <= i64::MAX as u64 => record.push_scalar(id, Kind::Int, *u),
        Value::U64(u) => record.push_scalar(id, Kind::Float, (*u as f64).to_bits()),
        Value::F32(f) => record.push_scalar(id, Kind::Float, f64::from(*f).to_bits()),
        Value::F64(f) => record.push_scalar(id, Kind::Float, f.to_bits()),
        Value::String(s) => record.push_text(id, s.as_bytes()),
        Value::Bytes(b) => record.push_text(id, crate::dead_letter::base64(b).as_bytes()),
        Value::EnumNumber(n) => match field.kind().as_enum().and_then(|e| e.get_value(*n)) {
            Some(v) => record.push_text(id, v.name().as_bytes()),
            None => record.push_scalar(id, Kind::Int, i64::from(*n) as u64),
        },
        Value::Message(m) => match m.descriptor().full_name() {
            "google.protobuf.Timestamp" => {
                let get = |n: &str| m.get_field_by_name(n).and_then(|v| v.as_i64().or(v.as_i32().map(i64::from))).unwrap_or(0);
                record.push_scalar(id, Kind::Int, get("seconds").saturating_mul(1000).saturating_add(get("nanos") / 1_000_000) as u64)
            }
            wrapper if wrapper.starts_with("google.protobuf.") && wrapper.ends_with("Value") && m.descriptor().fields().len() == 1 => {
                let inner = m.descriptor().fields().next().expect("one field");
                field_value(&inner, &m.get_field(&inner), name, names, record, depth + 1)?
            }
            _ if depth < MAX_DEPTH => message_fields(m, name, names, record, depth + 1)?,
            _ => record.push_text(id, json(field, value).to_string().as_bytes()),
        },
        Value::List(_) | Value::Map(_) => record.push_text(id, json(field, value).to_string().as_bytes()),
    }
    Ok(())
}

/// A value as JSON, for repeated fields, maps and messages nested too deep.
fn json(field: &FieldDescriptor, value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Value::Bool(b) => J::Bool(*b),
        Value::I32(i) => J::from(*i),
        Value::I64(i) => J::from(*i),
        Value::U32(u) => J::from(*u),
        Value::U64(u) => J::from(*u),
        Value::F32(f) => J::from(f64::from(*f)),
        Value::F64(f) => J::from(*f),
        Value::String(s) => J::String(s.clone()),
        Value::Bytes(b) => J::String(crate::dead_letter::base64(b)),
        Value::EnumNumber(n) => match field.kind().as_enum().and_then(|e| e.get_value(*n)) {
            Some(v) => J::String(v.name().to_string()),
            None => J::from(*n),
        },
        Value::Message(m) => J::Object(m.fields().map(|(f, v)| (f.name().to_string(), json(&f, v))).collect()),
        Value::List(items) => J::Array(items.iter().map(|v| json(field, v)).collect()),
        Value::Map(entries) => {
            let value_field = field.kind().as_message().map(|entry| entry.map_entry_value_field());
            J::Object(
                entries
                    .iter()
                    .map(|(k, v)| {
                        let key = match k {
                            prost_reflect::MapKey::Bool(b) => b.to_string(),
                            prost_reflect::MapKey::I32(i) => i.to_string(),
                            prost_reflect::MapKey::I64(i) => i.to_string(),
                            prost_reflect::MapKey::U32(u) => u.to_string(),
                            prost_reflect::MapKey::U64(u) => u.to_string(),
                            prost_reflect::MapKey::String(s) => s.clone(),
                        };
                        (key, value_field.as_ref().map_or(J::Null, |f| json(f, v)))
                    })
                    .collect(),
            )
        }
    }
}
