//! A Kafka topic in the schema registry's wire format, the way most company
//! topics are written: the same generated orders, each one Avro, Protobuf
//! or JSON Schema framed with its schema id, read with `format = "registry"`
//! and the registry's password from the environment. The host must see the
//! records a plain JSON topic of the same orders gives (same windows, same
//! findings), fetch each schema once, make the undecodable messages dead
//! letters with their reasons, and show the password nowhere.

use std::collections::BTreeMap;
use std::time::Duration;

use clean_host_tests::brokers::*;
use clean_host_tests::registry::Registry;
use clean_host_tests::Sandbox;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message};
use serde_json::{json, Value};

const PASSWORD: &str = "s3cret-9d2";
/// `Basic` and base64 of `monitor:s3cret-9d2`.
const AUTHORIZATION: &str = "Basic bW9uaXRvcjpzM2NyZXQtOWQy";

const ORDER_AVRO: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
    {"name":"event_id","type":["null","string"]},{"name":"ts","type":["null","string"]},
    {"name":"user_id","type":["null","long"]},{"name":"country","type":["null","string"]},
    {"name":"device","type":["null","string"]},{"name":"amount","type":["null","double"]},
    {"name":"currency","type":["null","string"]},{"name":"items","type":["null","long"]},
    {"name":"status","type":["null","string"]},{"name":"email","type":["null","string"]},
    {"name":"geo","type":["null","shop.Geo"]}]}"#;
const GEO_AVRO: &str = r#"{"type":"record","name":"Geo","namespace":"shop","fields":[{"name":"lat","type":"double"},{"name":"lon","type":"double"}]}"#;
const ORDER_PROTO: &str = r#"syntax = "proto3";
package shop;
import "geo.proto";
message Order {
  optional string event_id = 1; optional string ts = 2; optional int64 user_id = 3;
  optional string country = 4; optional string device = 5; optional double amount = 6;
  optional string currency = 7; optional int64 items = 8; optional string status = 9;
  optional string email = 10; Geo geo = 11;
}"#;
const GEO_PROTO: &str = r#"syntax = "proto3"; package shop; message Geo { double lat = 1; double lon = 2; }"#;
/// The order fields in the schemas' order.
const FIELDS: [&str; 11] = ["event_id", "ts", "user_id", "country", "device", "amount", "currency", "items", "status", "email", "geo"];

fn registry() -> Registry {
    let answers = BTreeMap::from([
        ("/schemas/ids/1".to_string(), json!({"schema": ORDER_AVRO, "references": [{"name": "shop.Geo", "subject": "shop.Geo", "version": 1}]})),
        ("/subjects/shop.Geo/versions/1".into(), json!({"subject": "shop.Geo", "version": 1, "id": 2, "schema": GEO_AVRO})),
        (
            "/schemas/ids/3".into(),
            json!({"schemaType": "PROTOBUF", "schema": ORDER_PROTO, "references": [{"name": "geo.proto", "subject": "geo.proto", "version": 1}]}),
        ),
        ("/subjects/geo.proto/versions/1".into(), json!({"subject": "geo.proto", "version": 1, "id": 4, "schemaType": "PROTOBUF", "schema": GEO_PROTO})),
        ("/schemas/ids/5".into(), json!({"schemaType": "JSON", "schema": r#"{"type":"object"}"#})),
    ]);
    Registry::start(answers, AUTHORIZATION)
}

fn framed(id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend(id.to_be_bytes());
    out.extend(body);
    out
}

fn avro(order: &Value) -> Vec<u8> {
    use apache_avro::types::Value as A;
    let (schema, references) = apache_avro::Schema::parse_str_with_list(ORDER_AVRO, [GEO_AVRO]).unwrap();
    let fields = FIELDS
        .iter()
        .map(|&name| {
            let v = &order[name];
            let value = match v {
                Value::Null => A::Union(0, Box::new(A::Null)),
                Value::String(s) => A::Union(1, Box::new(A::String(s.clone()))),
                Value::Number(n) if n.is_i64() => A::Union(1, Box::new(A::Long(n.as_i64().unwrap()))),
                Value::Number(n) => A::Union(1, Box::new(A::Double(n.as_f64().unwrap()))),
                Value::Object(geo) => A::Union(1, Box::new(A::Record(["lat", "lon"].map(|k| (k.to_string(), A::Double(geo[k].as_f64().unwrap()))).to_vec()))),
                other => panic!("{name}: {other} has no Avro type here"),
            };
            (name.to_string(), value)
        })
        .collect();
    let writer =
        apache_avro::writer::datum::GenericDatumWriter::builder(&schema).schemata(references.iter().chain([&schema]).collect()).unwrap().build().unwrap();
    writer.write_value_to_vec(A::Record(fields)).unwrap()
}

/// Protobuf wire encoding of an order (unset where the order has null).
fn protobuf(order: &Value) -> Vec<u8> {
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn field(number: u64, value: &Value, out: &mut Vec<u8>) {
        match value {
            Value::Null => {}
            Value::String(s) => {
                varint(number << 3 | 2, out);
                varint(s.len() as u64, out);
                out.extend(s.as_bytes());
            }
            Value::Number(n) if n.is_i64() => {
                varint(number << 3, out);
                varint(n.as_i64().unwrap() as u64, out);
            }
            Value::Number(n) => {
                varint(number << 3 | 1, out);
                out.extend(n.as_f64().unwrap().to_le_bytes());
            }
            Value::Object(geo) => {
                let mut inner = Vec::new();
                field(1, &json!(geo["lat"].as_f64().unwrap() + 0.0), &mut inner);
                field(2, &json!(geo["lon"].as_f64().unwrap() + 0.0), &mut inner);
                varint(number << 3 | 2, out);
                varint(inner.len() as u64, out);
                out.extend(inner);
            }
            other => panic!("{other} has no Protobuf type here"),
        }
    }
    // Message indexes: a lone 0, the schema's first message.
    let mut out = vec![0];
    for (i, name) in FIELDS.iter().enumerate() {
        field(i as u64 + 1, &order[name], &mut out);
    }
    out
}

fn produce_payloads(topic: &str, payloads: &[Vec<u8>]) {
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", broker("KAFKA")).create().expect("a Kafka producer");
    for payload in payloads {
        loop {
            match producer.send(BaseRecord::<(), [u8]>::to(topic).payload(payload)) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => panic!("producing to {topic}: {e}"),
            }
        }
    }
    producer.flush(Duration::from_secs(30)).expect("every message delivered");
}

/// Every message of `topic` as JSON (the dead letters).
fn read_all(topic: &str, expected: usize) -> Vec<Value> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker("KAFKA"))
        .set("group.id", fresh("reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("a consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while out.len() < expected && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            out.push(serde_json::from_slice(m.payload().unwrap_or_default()).expect("a dead letter is JSON"));
        }
    }
    out
}

/// The findings of each window of a window log, freshness left out (it
/// judges records against the wall clock, which no two runs share).
fn findings_by_window(windows: &[Value]) -> Vec<(u64, u64, Vec<String>)> {
    windows
        .iter()
        .map(|w| {
            let mut findings: Vec<String> = w["findings"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|f| f["detector"] != "freshness")
                .map(|f| format!("{} {} {} {}", f["detector"], f["metric"], f["column"], f["value"]))
                .collect();
            findings.sort();
            (w["seq"].as_u64().unwrap(), w["records"].as_u64().unwrap(), findings)
        })
        .collect()
}

#[test]
fn kafka_schema_registry_topic_reads_as_its_json_twin() {
    let s = Sandbox::with_bundled();
    let registry = registry();
    let orders_file = s.generate("orders.jsonl", 20_000, &["nulls@15000+1000"]);
    let orders: Vec<Value> = std::fs::read_to_string(orders_file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (framed_topic, json_topic) = (fresh("registry"), fresh("registry-twin"));
    let mut payloads: Vec<Vec<u8>> = orders
        .iter()
        .enumerate()
        .map(|(i, order)| match i % 3 {
            0 => framed(1, &avro(order)),
            1 => framed(3, &protobuf(order)),
            _ => framed(5, order.to_string().as_bytes()),
        })
        .collect();
    // Four that cannot be records, each for its own reason.
    let bad = [framed(99, b"{}"), b"{\"plain\":\"json\"}".to_vec(), framed(1, &[0x02]), framed(3, &[0, 0x0a, 0xff])];
    payloads.extend(bad.iter().cloned());
    produce_payloads(&framed_topic, &payloads);
    produce_payloads(&json_topic, &orders.iter().map(|o| o.to_string().into_bytes()).collect::<Vec<_>>());

    let config = s.write(
        "registry.toml",
        format!(
            "[[pipelines]]\nname = \"orders\"\nsource = \"{}/{framed_topic}?group=g\"\n\
             [pipelines.broker]\nformat = \"registry\"\n\
             [pipelines.broker.registry]\nurl = \"{}\"\nusername = \"monitor\"\npassword = \"env:CLEAN_HOST_TEST_REGISTRY_PASSWORD\"\n",
            kafka(),
            registry.url
        ),
    );
    let log = s.path("framed.jsonl");
    let run = s.run_with_env(
        &["--config", config.to_str().unwrap(), "--until-end", "--format", "json", "--window", "1000", "--windows-file", log.to_str().unwrap()],
        &[("CLEAN_HOST_TEST_REGISTRY_PASSWORD", PASSWORD)],
    );
    run.assert_ok();
    let summary = run.summary();
    assert_eq!((summary["records"].as_u64(), summary["dead_letters"].as_u64()), (Some(20_000), Some(4)), "{}", run.stderr);
    let twin = until_end(&s, &format!("{}/{json_topic}?group=g", kafka()), "twin.jsonl");
    assert_eq!(twin.summary()["records"].as_u64(), Some(20_000), "{}", twin.stderr);
    let (framed_windows, twin_windows) = (findings_by_window(&windows(&log)), findings_by_window(&windows(&s.path("twin.jsonl"))));
    assert_eq!(framed_windows.len(), 20);
    assert_eq!(framed_windows, twin_windows, "the framed topic's windows differ from its JSON twin's");
    let nulls = run.alerts().into_iter().filter(|a| a["detector"] == "completeness").map(|a| a["window"]["seq"].as_u64()).collect::<Vec<_>>();
    assert!(!nulls.is_empty() && nulls.iter().all(|seq| *seq == Some(15)), "completeness alerts: {nulls:?}");

    for path in ["/schemas/ids/1", "/schemas/ids/3", "/schemas/ids/5", "/subjects/shop.Geo/versions/1", "/subjects/geo.proto/versions/1"] {
        assert_eq!(registry.asked(path), 1, "{path} is fetched once");
    }
    let mut reasons: Vec<String> = read_all(&format!("{framed_topic}-dead-letters"), 4).iter().map(|d| d["reason"].as_str().unwrap().to_string()).collect();
    reasons.sort();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    for (reason, want) in reasons.iter().zip([
        "invalid Avro message",
        "invalid Protobuf message",
        "no schema id: the first byte is 0x7b",
        "schema 99: the registry has no /schemas/ids/99 (404)",
    ]) {
        assert!(reason.contains(want), "{reason} (wanted {want})");
    }
    assert!(!format!("{}{}", run.stdout, run.stderr).contains(PASSWORD), "the password shows in the output");

    // A wrong password: every message is a dead letter saying why, none is lost.
    let refused_topic = fresh("refused");
    let asked_before = registry.asked("/schemas/ids/1");
    let wrong_config = s.write(
        "wrong.toml",
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("?group=g", "?group=g2")
            .replace("format = \"registry\"", &format!("format = \"registry\"\ndead_letter_topic = \"{refused_topic}\"")),
    );
    let wrong =
        s.run_with_env(&["--config", wrong_config.to_str().unwrap(), "--until-end", "--format", "json"], &[("CLEAN_HOST_TEST_REGISTRY_PASSWORD", "wrong")]);
    wrong.assert_ok();
    assert_eq!((wrong.summary()["records"].as_u64(), wrong.summary()["dead_letters"].as_u64()), (Some(0), Some(20_004)), "{}", wrong.stderr);
    let asked = registry.asked("/schemas/ids/1") - asked_before;
    let seconds = wrong.summary()["seconds"].as_f64().unwrap();
    assert!(asked >= 1 && asked <= 1 + (seconds / 10.0) as usize, "asked {asked} times in {seconds} s: a refused id is asked for again only every 10 s");
    let refused = read_all(&refused_topic, 1);
    assert!(refused[0]["reason"].as_str().unwrap().contains("the registry refused /schemas/ids/1 (401): check username and password"), "{refused:?}");
}
