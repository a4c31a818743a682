//! Arbitrary payloads in the schema registry's framing, against a registry
//! holding an Avro (recursive), a Protobuf (nested, recursive, repeated, map, oneof,
//! well-known types) and a JSON schema. No panic, no stack overflow; a
//! message either decodes or gets a reason, and field names stay capped.
#![no_main]

use clean_host_stream::decode::message::MessageDecoder;
use clean_host_stream::decode::registry::{RegistryApi, SchemaRegistry, Unanswered};
use clean_host_stream::source::config::MessageFormat;
use clean_host_stream::source::Message;
use libfuzzer_sys::fuzz_target;

const PROTO: &str = r#"syntax = "proto3";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";
message Event {
  message Node { int32 v = 1; Node next = 2; repeated Node children = 3; }
  enum Kind { A = 0; B = 1; }
  int64 id = 1; optional string name = 2; Kind kind = 3; repeated double xs = 4;
  map<string, Node> nodes = 5; Node root = 6; google.protobuf.Timestamp ts = 7;
  google.protobuf.Int64Value wrapped = 8; oneof contact { string email = 9; bytes raw = 10; }
  uint64 big = 11; sint32 small = 12; fixed64 f = 13; float g = 14; bool b = 15;
}"#;

struct Fixed;

impl RegistryApi for Fixed {
    fn get(&self, path: &str) -> Result<String, Unanswered> {
        let answer = match path {
            "/schemas/ids/1" => {
                serde_json::json!({"schema": r#"{"type":"record","name":"E","fields":[{"name":"id","type":"long"},{"name":"tags","type":{"type":"map","values":"string"}},{"name":"next","type":["null","E"]}]}"#})
            }
            "/schemas/ids/2" => serde_json::json!({"schemaType": "PROTOBUF", "schema": PROTO}),
            "/schemas/ids/3" => serde_json::json!({"schemaType": "JSON", "schema": "{}"}),
            _ => return Err(Unanswered::Refused(format!("the registry has no {path} (404)"))),
        };
        Ok(answer.to_string())
    }
}

fuzz_target!(|data: &[u8]| {
    let registry = SchemaRegistry::with_api(Box::new(Fixed));
    let mut decoder = MessageDecoder::new(MessageFormat::Json, Vec::new(), None, None).unwrap().with_registry(registry).with_max_fields(64);
    let message = Message { offset: 0, id: None, payload: data.to_vec().into(), key: None, timestamp_ms: None, headers: Vec::new(), fault: None };
    match decoder.decode(0, &message) {
        Ok(record) => assert!(record.values.iter().all(|v| (v.field as usize) < 64)),
        Err(e) => {
            let reason = e.to_string();
            assert!(
                [
                    "invalid Avro message: ",
                    "invalid Protobuf message: ",
                    "schema registry: ",
                    "invalid JSON",
                    "a new field name",
                    "not a JSON object",
                    "binary data",
                    "truncated",
                    "empty line"
                ]
                .iter()
                .any(|p| reason.starts_with(p)),
                "{reason}"
            );
        }
    }
});
