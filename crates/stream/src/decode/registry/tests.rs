use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::*;
use crate::decode::message::MessageDecoder;
use crate::decode::tests::shown;
use crate::decode::Record;
use crate::source::config::MessageFormat;
use crate::source::Message;

/// A registry in memory that counts what it was asked.
#[derive(Clone, Default)]
struct Fake {
    answers: Arc<Mutex<HashMap<String, String>>>,
    asked: Arc<Mutex<Vec<String>>>,
}

impl Fake {
    fn with(self, path: &str, answer: serde_json::Value) -> Self {
        self.answers.lock().unwrap().insert(path.into(), answer.to_string());
        self
    }
    fn asked(&self, path: &str) -> usize {
        self.asked.lock().unwrap().iter().filter(|p| *p == path).count()
    }
}

impl RegistryApi for Fake {
    fn get(&self, path: &str) -> Result<String, Unanswered> {
        self.asked.lock().unwrap().push(path.into());
        let path = path.strip_suffix("?deleted=true").unwrap_or(path);
        self.answers.lock().unwrap().get(path).cloned().ok_or_else(|| Unanswered::Refused(format!("the registry has no {path} (404)")))
    }
}

/// A registry that never answers.
struct Down;

impl RegistryApi for Down {
    fn get(&self, _: &str) -> Result<String, Unanswered> {
        Err(Unanswered::Unreachable("connection failed".into()))
    }
}

fn framed(id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend(id.to_be_bytes());
    out.extend(body);
    out
}

/// Decodes `payload` with `registry` and shows the record as (name, value) pairs.
fn decoded(registry: SchemaRegistry, payloads: &[Vec<u8>]) -> Vec<Result<Vec<(String, String)>, String>> {
    let mut d = MessageDecoder::new(MessageFormat::Json, vec![], None, None).unwrap().with_registry(registry);
    payloads
        .iter()
        .map(|payload| {
            let message = Message { offset: 0, id: None, payload: payload.clone().into(), key: None, timestamp_ms: None, headers: vec![], fault: None };
            let record = d.decode(0, &message).map_err(|e| e.to_string())?;
            let record = Record { values: record.values.clone(), text: record.text.clone() };
            Ok(shown(&d.json.fields, &record))
        })
        .collect()
}

fn pairs(want: &[(&str, &str)]) -> Vec<(String, String)> {
    want.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

const ORDER_AVRO: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
    {"name":"id","type":"long"},{"name":"amount","type":["null","double"]},{"name":"geo","type":"shop.Geo"}]}"#;
const GEO_AVRO: &str = r#"{"type":"record","name":"Geo","namespace":"shop","fields":[{"name":"country","type":"string"}]}"#;

/// An `Order` of [`ORDER_AVRO`], written by apache-avro.
fn order_avro() -> Vec<u8> {
    let (schema, refs) = apache_avro::Schema::parse_str_with_list(ORDER_AVRO, [GEO_AVRO]).unwrap();
    let mut value = apache_avro::types::Record::new(&schema).unwrap();
    value.put("id", 42i64);
    value.put("amount", apache_avro::types::Value::Union(0, Box::new(apache_avro::types::Value::Null)));
    value.put("geo", apache_avro::types::Value::Record(vec![("country".into(), "DE".into())]));
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&schema).schemata(refs.iter().chain([&schema]).collect()).unwrap().build().unwrap();
    writer.write_value_to_vec(value).unwrap()
}

#[test]
fn avro_with_a_referenced_type_json_and_bad_framing() {
    let fake = Fake::default()
        .with("/schemas/ids/7", serde_json::json!({"schema": ORDER_AVRO, "references": [{"name": "shop.Geo", "subject": "geo value", "version": 2}]}))
        .with("/subjects/geo%20value/versions/2", serde_json::json!({"subject": "geo value", "version": 2, "id": 6, "schema": GEO_AVRO}))
        .with("/schemas/ids/8", serde_json::json!({"schemaType": "JSON", "schema": "{\"type\":\"object\"}"}));
    let avro = order_avro();
    let got = decoded(
        SchemaRegistry::with_api(Box::new(fake.clone())),
        &[
            framed(7, &avro),
            framed(8, br#"{"a":1,"b":{"c":"x"}}"#),
            framed(7, &avro),
            framed(7, &avro[..1]),
            b"{\"a\":1}".to_vec(),
            vec![0, 0, 7],
            framed(99, b"{}"),
            framed(7, &[&avro[..], &[0]].concat()),
            framed(7, &avro[..avro.len() - 3]),
        ],
    );
    assert_eq!(got[0], Ok(pairs(&[("id", "42"), ("amount", "Null"), ("geo.country", "DE")])));
    assert_eq!(got[1], Ok(pairs(&[("a", "1"), ("b.c", "x")])));
    assert_eq!(got[2], got[0]);
    assert!(got[3].as_ref().unwrap_err().starts_with("invalid Avro message: cut short"), "{got:?}");
    assert!(got[4].as_ref().unwrap_err().contains("the first byte is 0x7b, not the framing's 0"), "{got:?}");
    assert!(got[5].as_ref().unwrap_err().contains("3 bytes, fewer than the framing's 5"), "{got:?}");
    assert_eq!(got[6], Err("schema registry: schema 99: the registry has no /schemas/ids/99 (404)".into()));
    assert_eq!(got[7], Err("invalid Avro message: 1 bytes after the datum".into()));
    assert!(got[8].as_ref().unwrap_err().starts_with("invalid Avro message: cut short"), "a datum cut at a union reads as no nulls: {got:?}");
    assert_eq!(fake.asked("/schemas/ids/7"), 1, "a schema is fetched once");
}

#[test]
fn a_failed_fetch_is_not_asked_again_at_once() {
    let fake = Fake::default();
    let mut registry = SchemaRegistry::with_api(Box::new(fake.clone()));
    for _ in 0..100 {
        assert!(registry.schema(5).is_err());
    }
    assert_eq!(fake.asked("/schemas/ids/5"), 1);
}

/// A registry that cannot be reached is not asked again for any id for a
/// while: an outage costs one request, not one per message.
#[test]
fn an_unreachable_registry_is_not_asked_per_message() {
    let mut registry = SchemaRegistry::with_api(Box::new(Down));
    assert!(registry.schema(1).err().unwrap().to_string().contains("connection failed"));
    let again = registry.schema(2).err().unwrap().to_string();
    assert!(again.contains("not asked for, the registry was unreachable") && again.contains("connection failed"), "{again}");
}

#[test]
fn unknown_types_and_broken_answers_are_reasons() {
    let fake = Fake::default()
        .with("/schemas/ids/1", serde_json::json!({"schemaType": "THRIFT", "schema": "x"}))
        .with("/schemas/ids/2", serde_json::json!({"nope": 1}))
        .with("/schemas/ids/3", serde_json::json!({"schema": "{\"type\":"}))
        .with("/schemas/ids/4", serde_json::json!({"schemaType": "PROTOBUF", "schema": "syntax = \"proto3\"; message {"}))
        .with("/schemas/ids/5", serde_json::json!({"schema": "\"long\"", "references": [{"name": "a", "subject": "loop", "version": 1}]}))
        .with(
            "/subjects/loop/versions/1",
            serde_json::json!({"schema": r#"{"type":"record","name":"a","fields":[]}"#, "references": [{"name": "a", "subject": "loop", "version": 1}]}),
        );
    let mut registry = SchemaRegistry::with_api(Box::new(fake));
    let reason = |r: &mut SchemaRegistry, id| r.schema(id).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(reason(&mut registry, 1).contains("THRIFT is not one this host reads"), "{}", reason(&mut registry, 1));
    assert!(reason(&mut registry, 2).contains("is not a schema"));
    assert!(reason(&mut registry, 3).contains("invalid Avro schema"));
    assert!(reason(&mut registry, 4).contains("invalid Protobuf schema"));
    // A reference to itself is fetched once, not for ever.
    assert!(registry.schema(5).is_ok(), "{}", reason(&mut registry, 5));
}

const ORDER_PROTO: &str = r#"
syntax = "proto3";
package shop;
import "google/protobuf/timestamp.proto";
import "geo.proto";
message Ping { int32 n = 1; }
message Order {
  enum Status { NEW = 0; PAID = 1; }
  message Line { string sku = 1; }
  int64 id = 1;
  optional double amount = 2;
  Status status = 3;
  shop.Geo geo = 4;
  google.protobuf.Timestamp ts = 5;
  repeated Line lines = 6;
  map<string, int32> tags = 7;
  oneof contact { string email = 8; string phone = 9; }
  uint64 big = 10;
  bytes raw = 11;
}
"#;
const GEO_PROTO: &str = r#"syntax = "proto3"; package shop; message Geo { string country = 1; }"#;

/// Protobuf wire encoding, for the tests only.
fn key(field: u32, wire: u32, out: &mut Vec<u8>) {
    varint(u64::from(field << 3 | wire), out)
}
fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}
fn bytes_field(field: u32, bytes: &[u8], out: &mut Vec<u8>) {
    key(field, 2, out);
    varint(bytes.len() as u64, out);
    out.extend(bytes);
}

/// An `Order` of [`ORDER_PROTO`] with every kind of field set.
fn encoded_order() -> Vec<u8> {
    let mut order = Vec::new();
    key(1, 0, &mut order);
    varint(42, &mut order);
    key(3, 0, &mut order);
    varint(1, &mut order);
    let mut geo = Vec::new();
    bytes_field(1, b"DE", &mut geo);
    bytes_field(4, &geo, &mut order);
    let mut ts = Vec::new();
    key(1, 0, &mut ts);
    varint(1_700_000_000, &mut ts);
    key(2, 0, &mut ts);
    varint(250_000_000, &mut ts);
    bytes_field(5, &ts, &mut order);
    let mut line = Vec::new();
    bytes_field(1, b"A-1", &mut line);
    bytes_field(6, &line, &mut order);
    let mut tag = Vec::new();
    bytes_field(1, b"vip", &mut tag);
    key(2, 0, &mut tag);
    varint(3, &mut tag);
    bytes_field(7, &tag, &mut order);
    bytes_field(8, b"a@b.c", &mut order);
    key(10, 0, &mut order);
    varint(u64::MAX, &mut order);
    bytes_field(11, &[0xff, 0], &mut order);
    order
}

fn order_registry() -> SchemaRegistry {
    let fake = Fake::default()
        .with(
            "/schemas/ids/3",
            serde_json::json!({"schemaType": "PROTOBUF", "schema": ORDER_PROTO, "references": [{"name": "geo.proto", "subject": "geo", "version": 1}]}),
        )
        .with("/subjects/geo/versions/1", serde_json::json!({"schemaType": "PROTOBUF", "schema": GEO_PROTO}))
        .with("/schemas/ids/7", serde_json::json!({"schema": ORDER_AVRO, "references": [{"name": "shop.Geo", "subject": "geo value", "version": 2}]}))
        .with("/subjects/geo%20value/versions/2", serde_json::json!({"schema": GEO_AVRO}));
    SchemaRegistry::with_api(Box::new(fake))
}

/// Valid messages cut, bit-flipped and spliced at random: each decodes or
/// is a reason, never a panic, and names stay within the pipeline's cap.
#[test]
fn mangled_messages_are_reasons_not_panics() {
    let mut d = MessageDecoder::new(MessageFormat::Json, vec![], None, None).unwrap().with_registry(order_registry()).with_max_fields(64);
    let mut as_order = vec![2, 2];
    as_order.extend(encoded_order());
    let seeds = [framed(3, &as_order), framed(7, &order_avro())];
    let mut rng = fastrand::Rng::with_seed(7);
    let (mut decoded, mut refused) = (0, 0);
    for _ in 0..20_000 {
        let mut payload = seeds[rng.usize(..seeds.len())].clone();
        for _ in 0..rng.usize(1..4) {
            match rng.u8(..3) {
                0 => payload.truncate(rng.usize(..=payload.len())),
                1 if !payload.is_empty() => {
                    let at = rng.usize(..payload.len());
                    payload[at] ^= 1 << rng.u8(..8);
                }
                _ => {
                    let at = rng.usize(..=payload.len());
                    payload.splice(at..at, (0..rng.usize(..8)).map(|_| rng.u8(..)));
                }
            }
        }
        let message = Message { offset: 0, id: None, payload: payload.into(), key: None, timestamp_ms: None, headers: vec![], fault: None };
        match d.decode(0, &message) {
            Ok(record) => {
                assert!(record.values.iter().all(|v| (v.field as usize) < 64));
                decoded += 1;
            }
            Err(e) => {
                let reason = e.to_string();
                assert!(
                    ["invalid Avro message: ", "invalid Protobuf message: ", "schema registry: ", "invalid JSON", "a new field name"]
                        .iter()
                        .any(|p| reason.starts_with(p)),
                    "{reason}"
                );
                refused += 1;
            }
        }
    }
    assert!(decoded > 100 && refused > 100, "decoded {decoded}, refused {refused}");
}

#[test]
fn protobuf_messages_by_index_with_imports_and_well_known_types() {
    let order = encoded_order();
    // Indexes [1] (count 1, index 1: zigzag 2, 2) name Order; [0] (a lone 0) names Ping.
    let mut as_order = vec![2, 2];
    as_order.extend(&order);
    let got =
        decoded(order_registry(), &[framed(3, &as_order), framed(3, &[0, 8, 5]), framed(3, &[2, 20, 8, 5]), framed(3, &[2, 2, 0xff]), framed(3, &[0x80])]);
    let want = [
        ("id", "42"),
        ("amount", "Null"),
        ("status", "PAID"),
        ("geo.country", "DE"),
        ("ts", "1700000000250"),
        ("lines", r#"[{"sku":"A-1"}]"#),
        ("tags", r#"{"vip":3}"#),
        ("email", "a@b.c"),
        ("big", "18446744073709552000"),
        ("raw", "/wA="),
    ];
    assert_eq!(got[0], Ok(pairs(&want)));
    assert_eq!(got[1], Ok(pairs(&[("n", "5")])));
    assert!(got[2].as_ref().unwrap_err().contains("name no message"), "{got:?}");
    assert!(got[3].as_ref().unwrap_err().contains("Protobuf"), "{got:?}");
    assert!(got[4].as_ref().unwrap_err().contains("cut short"), "{got:?}");
}

/// A recursive schema lets the data decide the nesting: a list of a million
/// links in 1 MB would overflow the decode thread's stack inside apache-avro
/// (an abort, not an error). Past the nesting limit it is a dead letter; a
/// type that contains itself with no way out fails on any message.
#[test]
fn nesting_past_the_limit_is_a_dead_letter_not_a_stack_overflow() {
    let list = r#"{"type":"record","name":"Link","fields":[{"name":"v","type":"int"},{"name":"next","type":["null","Link"]}]}"#;
    let endless = r#"{"type":"record","name":"R","fields":[{"name":"r","type":"R"}]}"#;
    let fake = Fake::default().with("/schemas/ids/1", serde_json::json!({"schema": list})).with("/schemas/ids/2", serde_json::json!({"schema": endless}));
    // Each link: v = 1 (zigzag 2), then union branch 1 (zigzag 2); the last one's next is null.
    let links = |n: usize| [[2u8, 2].repeat(n), vec![2, 0]].concat();
    let (three, deep) = (framed(1, &links(2)), framed(1, &links(1_000_000)));
    let got = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || decoded(SchemaRegistry::with_api(Box::new(fake)), &[three, deep, framed(2, &[])]))
        .unwrap()
        .join()
        .expect("no stack overflow");
    assert_eq!(got[0], Ok(pairs(&[("v", "1"), ("next.v", "1"), ("next.next.v", "1"), ("next.next.next", "Null")])));
    let too_deep = "invalid Avro message: records, arrays and maps nested deeper than 64 levels";
    assert_eq!((got[1].clone(), got[2].clone()), (Err(too_deep.into()), Err(too_deep.into())));
}

/// Nested message indexes count declared messages only, as the serializers
/// do: a map field's entry type, which the compiler adds, is not one.
#[test]
fn nested_indexes_pass_over_map_entry_types() {
    let proto = "syntax = \"proto3\"; message Outer { map<string, int32> tags = 1; message Inner { int32 n = 1; } }";
    let fake = Fake::default().with("/schemas/ids/4", serde_json::json!({"schemaType": "PROTOBUF", "schema": proto}));
    // Indexes [0, 0]: count 2 (zigzag 4), 0, 0 -> Outer.Inner, then n = 5.
    let got = decoded(SchemaRegistry::with_api(Box::new(fake)), &[framed(4, &[4, 0, 0, 8, 5])]);
    assert_eq!(got[0], Ok(pairs(&[("n", "5")])));
}

/// Named fixed-size logical types (decimal, uuid, duration) may be used
/// again by name, as any named type; sixty links of a list are within bounds.
#[test]
fn named_logical_types_and_sixty_links_decode() {
    let money = r#"{"type":"record","name":"Price","fields":[
        {"name":"a","type":{"type":"fixed","name":"Money","size":2,"logicalType":"decimal","precision":4,"scale":2}},
        {"name":"b","type":"Money"}]}"#;
    let list = r#"{"type":"record","name":"Link","fields":[{"name":"v","type":"int"},{"name":"next","type":["null","Link"]}]}"#;
    let fake = Fake::default().with("/schemas/ids/1", serde_json::json!({"schema": money})).with("/schemas/ids/2", serde_json::json!({"schema": list}));
    let sixty = [[2u8, 2].repeat(59), vec![2, 0]].concat();
    let got = decoded(SchemaRegistry::with_api(Box::new(fake)), &[framed(1, &[0, 1, 0, 2]), framed(2, &sixty)]);
    assert!(got[0].is_ok(), "{got:?}");
    // Flattened to the names' depth limit, the rest as JSON text: all sixty links there.
    let fields = got[1].as_ref().unwrap();
    let links = fields.iter().filter(|(name, _)| name.ends_with('v')).count() + fields.last().unwrap().1.matches("\"v\":1").count();
    assert_eq!(links, 60, "{fields:?}");
}
