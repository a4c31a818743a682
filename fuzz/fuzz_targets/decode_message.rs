//! Broker messages with arbitrary payloads, keys, ids and headers, decoded
//! as JSON or as text with every metadata column. No panic; a decoded
//! record's values name known fields, and a pipeline never holds more
//! distinct field names than its cap, whatever the headers are called.
#![no_main]

use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use clean_host_stream::decode::message::MessageDecoder;
use clean_host_stream::source::config::{MessageFormat, MetadataColumn};
use clean_host_stream::source::Message;
use libfuzzer_sys::fuzz_target;

const MAX_FIELDS: usize = 32;

#[derive(Debug, Arbitrary)]
struct Input {
    text: bool,
    messages: Vec<(Vec<u8>, Option<Vec<u8>>, Option<String>, Option<i64>, Vec<(String, Vec<u8>)>)>,
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = Input::arbitrary(&mut Unstructured::new(data)) else { return };
    let format = if input.text { MessageFormat::String } else { MessageFormat::Json };
    let metadata = vec![MetadataColumn::Key, MetadataColumn::Partition, MetadataColumn::Offset, MetadataColumn::Timestamp, MetadataColumn::Headers];
    let mut decoder = MessageDecoder::new(format, metadata, None, None).unwrap().with_max_fields(MAX_FIELDS);
    for (offset, (payload, key, id, timestamp_ms, headers)) in input.messages.into_iter().enumerate() {
        let message =
            Message { offset: offset as u64, id: id.map(Arc::from), payload: payload.into(), key: key.map(Into::into), timestamp_ms, headers, fault: None };
        match decoder.decode(offset as u32, &message) {
            Ok(record) => {
                for v in &record.values {
                    assert!((v.field as usize) < MAX_FIELDS);
                    assert!(v.text.0 <= v.text.1 && v.text.1 as usize <= record.text.len());
                }
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
});
