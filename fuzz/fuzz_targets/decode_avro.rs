//! Arbitrary bytes as Avro datums of a schema with every shape the decoder
//! flattens: nested records, unions, enums, arrays, maps, and a recursive
//! record whose depth the data decides. No panic, no stack overflow; a
//! datum either decodes or gets a reason, and field names stay capped.
#![no_main]

use clean_host_stream::decode::message::MessageDecoder;
use clean_host_stream::source::config::MessageFormat;
use clean_host_stream::source::Message;
use libfuzzer_sys::fuzz_target;

const SCHEMA: &str = r#"{
  "type": "record", "name": "Event", "fields": [
    {"name": "id", "type": "long"},
    {"name": "name", "type": ["null", "string"]},
    {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B", "C"]}},
    {"name": "amount", "type": ["null", "double", "float"]},
    {"name": "tags", "type": {"type": "array", "items": "string"}},
    {"name": "attrs", "type": {"type": "map", "values": "int"}},
    {"name": "geo", "type": {"type": "record", "name": "Geo", "fields": [{"name": "lat", "type": "double"}, {"name": "ok", "type": "boolean"}]}},
    {"name": "next", "type": ["null", {"type": "record", "name": "Node", "fields": [
      {"name": "v", "type": "int"}, {"name": "next", "type": ["null", "Node"]}]}]}
  ]}"#;

fuzz_target!(|data: &[u8]| {
    let mut decoder = MessageDecoder::new(MessageFormat::Avro, Vec::new(), Some(SCHEMA), None).unwrap().with_max_fields(64);
    let message = Message { offset: 0, id: None, payload: data.to_vec().into(), key: None, timestamp_ms: None, headers: Vec::new(), fault: None };
    match decoder.decode(0, &message) {
        Ok(record) => assert!(record.values.iter().all(|v| (v.field as usize) < 64)),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
