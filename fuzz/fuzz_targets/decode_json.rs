//! JSON lines -> records -> a window's columns. Any input: no panic, every
//! line either decodes or gets a reason, a line the decoder accepts is JSON
//! (serde_json agrees) and an object, it decodes to the same fields (or
//! error) after the lines before it as in a decoder of its own (which has
//! no places of earlier keys to match), every text value reads as the same
//! time (or none) to the one parser a window's times share as to a fresh
//! one, and the batch has one row per accepted line in every column. The
//! same lines decoded straight into a window's columns (a failing one's
//! values dropped again) make the same batch.
#![no_main]

use clean_host_core::bindings::{ColumnValues, WindowKind};
use clean_host_core::timestamp::{parse_ms, TimeParser};
use clean_host_stream::decode::{DecodeError, FieldNames, JsonDecoder, Record};
use clean_host_stream::window::{Bounds, RecordMeta, WindowBuffer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut decoder = JsonDecoder::default();
    let mut window = WindowBuffer::default();
    let (mut straight_decoder, mut straight) = (JsonDecoder::default(), WindowBuffer::default());
    let mut accepted = 0;
    let mut times = TimeParser::default();
    for (i, line) in data.split(|&b| b == b'\n').enumerate() {
        let mut fresh = JsonDecoder::default();
        let alone = fresh.decode(line).map(owned).map(|r| fields(&fresh.fields, &r));
        let decoded = decoder.decode(line).map(owned);
        let meta = RecordMeta { offset: i as u64, hash: i as u64, event_time: None, read_at_ms: 0 };
        match straight_decoder.decode_into(line, &mut straight) {
            Ok(()) => straight.finish_row(&meta),
            Err(e) => {
                assert_eq!(decoded.as_ref().err(), Some(&e), "{:?} decoded straight", String::from_utf8_lossy(line));
                straight.abandon_row();
            }
        }
        // Past the field limit only the decoder that met the names before refuses new ones.
        if !matches!(decoded, Err(DecodeError::TooManyFields { .. })) {
            assert_eq!(
                decoded.as_ref().map(|r| fields(&decoder.fields, r)).map_err(Clone::clone),
                alone,
                "{:?} after the lines before it",
                String::from_utf8_lossy(line)
            );
        }
        match decoded {
            Ok(record) => {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let parsed: Result<serde_json::Value, _> = serde_json::from_slice(line);
                assert!(
                    matches!(parsed, Ok(serde_json::Value::Object(_))) || parsed.as_ref().is_err_and(|e| e.to_string().contains("out of range")),
                    "accepted a line serde_json calls {parsed:?}: {:?}",
                    String::from_utf8_lossy(line)
                );
                for value in &record.values {
                    let text = record.text_of(value);
                    assert_eq!(times.parse_ms(text), parse_ms(text), "{:?} after the times before it", String::from_utf8_lossy(text));
                }
                window.push(&record, &meta);
                accepted += 1;
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    let bounds = Bounds { seq: 0, kind: WindowKind::Count, time: None, event_time: false };
    let batch = window.into_batch(&decoder.fields, "fuzz", "fuzz", 0, bounds, 0);
    let straight = straight.into_batch(&straight_decoder.fields, "fuzz", "fuzz", 0, bounds, 0);
    assert_eq!(format!("{straight:?}"), format!("{batch:?}"), "decoded straight into the columns");
    assert_eq!(batch.row_count as usize, accepted);
    for column in &batch.columns {
        assert!(column.validity.is_empty() || column.validity.len() == accepted, "column {}: validity per row", column.name);
        let rows = match &column.values {
            ColumnValues::Float64(v) => v.len(),
            ColumnValues::Int64(v) | ColumnValues::Timestamp(v) => v.len(),
            ColumnValues::Boolean(v) => v.len(),
            ColumnValues::Text(t) => {
                assert!(t.offsets.windows(2).all(|w| w[0] <= w[1]), "column {}: offsets go back", column.name);
                assert!(t.offsets.last().is_none_or(|&end| end as usize <= t.bytes.len()), "column {}: offsets past the bytes", column.name);
                t.offsets.len().saturating_sub(1)
            }
        };
        assert_eq!(rows, accepted, "column {}: one value per row", column.name);
    }
});

/// A record's fields by name: (name, kind, bits, text).
fn fields(names: &FieldNames, record: &Record) -> Vec<(String, String, u64, Vec<u8>)> {
    record.values.iter().map(|v| (names.shared_name(v.field).to_string(), format!("{:?}", v.kind), v.bits, record.text_of(v).to_vec())).collect()
}

fn owned(record: &Record) -> Record {
    Record { values: record.values.clone(), text: record.text.clone() }
}
