//! The windower with arbitrary specs, event times, read times and clock
//! ticks, i64's ends included. No panic or overflow; after the flush every
//! accepted record is in exactly one closed tumbling window, refused and
//! late ones in none, and windows come out numbered in order.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use clean_host_stream::decode::JsonDecoder;
use clean_host_stream::window::{ClosedWindow, EventTimeSpec, Placement, RecordMeta, WindowSpec, Windower};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Step {
    Push { event_time: Option<i64>, read_at_ms: i64 },
    Tick(i64),
}

#[derive(Debug, Arbitrary)]
struct Input {
    kind: u8,
    size: u16,
    lateness_ms: u32,
    max_future_ms: u32,
    earliest_ms: i64,
    steps: Vec<Step>,
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = Input::arbitrary(&mut Unstructured::new(data)) else { return };
    let size = i64::from(input.size.max(1));
    let spec = match input.kind % 3 {
        0 => WindowSpec::Count { size: size as usize, slide: size as usize },
        1 => WindowSpec::ProcessingTime { size_ms: size },
        _ => WindowSpec::EventTime(EventTimeSpec {
            size_ms: size,
            lateness_ms: i64::from(input.lateness_ms),
            max_future_ms: i64::from(input.max_future_ms),
            earliest_ms: input.earliest_ms,
        }),
    };
    let mut decoder = JsonDecoder::default();
    let mut windower = Windower::new(spec);
    let mut closed: Vec<ClosedWindow> = Vec::new();
    let mut accepted = 0u64;
    for (offset, step) in input.steps.into_iter().enumerate() {
        match step {
            Step::Push { event_time, read_at_ms } => {
                let record = decoder.decode(b"{\"v\": 1}").unwrap();
                let meta = RecordMeta { offset: offset as u64, hash: 0, event_time, read_at_ms };
                if windower.push(record, &meta, &mut closed) == Placement::Accepted {
                    accepted += 1;
                }
            }
            Step::Tick(now) => windower.tick(now, &mut closed),
        }
    }
    windower.flush(&mut closed);
    let rows: u64 = closed.iter().map(|w| w.buffer.rows() as u64).sum();
    assert_eq!(rows, accepted, "every accepted record in exactly one closed window");
    assert!(closed.windows(2).all(|w| w[0].bounds.seq + 1 == w[1].bounds.seq), "window numbers in order");
    for w in &closed {
        if let Some((start, end)) = w.bounds.time {
            assert!(start <= end);
        }
    }
});
