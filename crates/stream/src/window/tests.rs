use super::*;
use crate::decode::{DecodeError, FieldNames, JsonDecoder};
use clean_host_core::bindings::{Batch, ColumnValues, TimeBasis};

/// Pushes `{"v": i}` records with the given event times (ms) and read times.
struct Feed {
    decoder: JsonDecoder,
    windower: Windower,
    closed: Vec<ClosedWindow>,
    offset: u64,
}

impl Feed {
    fn new(spec: WindowSpec) -> Self {
        Feed { decoder: JsonDecoder::default(), windower: Windower::new(spec), closed: Vec::new(), offset: 0 }
    }

    fn push(&mut self, event_time: Option<i64>, read_at_ms: i64) -> Placement {
        let line = format!(r#"{{"v": {}}}"#, self.offset);
        let record = self.decoder.decode(line.as_bytes()).unwrap();
        let meta = RecordMeta { offset: self.offset, hash: self.offset, event_time, read_at_ms };
        self.offset += 1;
        self.windower.push(record, &meta, &mut self.closed)
    }

    fn batches(&mut self) -> Vec<Batch> {
        let names: &FieldNames = &self.decoder.fields;
        self.closed.drain(..).map(|w| w.buffer.into_batch(names, "p", "s", 0, w.bounds, 0)).collect()
    }
}

fn offsets(batches: &[Batch]) -> Vec<(u64, u64, u64)> {
    batches.iter().map(|b| (b.info.seq, b.info.first_offset, b.info.last_offset)).collect()
}

#[test]
fn count_tumbling_closes_on_size_and_flushes_the_rest() {
    let mut f = Feed::new(WindowSpec::Count { size: 4, slide: 4 });
    for _ in 0..10 {
        assert_eq!(f.push(None, 0), Placement::Accepted);
    }
    f.windower.flush(&mut f.closed);
    let b = f.batches();
    assert_eq!(offsets(&b), [(0, 0, 3), (1, 4, 7), (2, 8, 9)]);
    assert_eq!(b[2].row_count, 2);
    match &b[0].columns[0].values {
        ColumnValues::Int64(v) => assert_eq!(v, &[0, 1, 2, 3]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn count_sliding_overlaps_and_flush_adds_only_unseen_records() {
    let mut f = Feed::new(WindowSpec::Count { size: 4, slide: 2 });
    for _ in 0..8 {
        f.push(None, 0);
    }
    f.windower.flush(&mut f.closed);
    assert_eq!(offsets(&f.batches()), [(0, 0, 3), (1, 2, 5), (2, 4, 7)]);
    for _ in 0..3 {
        f.push(None, 0);
    }
    f.windower.flush(&mut f.closed);
    assert_eq!(offsets(&f.batches()), [(3, 8, 10)]);
}

#[test]
fn processing_time_windows_close_on_the_clock_with_empty_idle_windows() {
    let mut f = Feed::new(WindowSpec::ProcessingTime { size_ms: 1000 });
    f.push(None, 100);
    f.push(None, 900);
    f.push(None, 1100);
    f.windower.tick(3500, &mut f.closed);
    let b = f.batches();
    let bounds: Vec<(i64, i64, u32)> = b.iter().map(|b| (b.info.start_ms, b.info.end_ms, b.row_count)).collect();
    assert_eq!(bounds, [(0, 1000, 2), (1000, 2000, 1), (2000, 3000, 0)]);
    assert_eq!(b[0].info.time_basis, TimeBasis::Processing);
}

/// Event-time windows of `size_ms` that believe any time from 0 to a day ahead.
fn event_time(size_ms: i64, lateness_ms: i64) -> WindowSpec {
    WindowSpec::EventTime(EventTimeSpec { size_ms, lateness_ms, max_future_ms: 86_400_000, earliest_ms: 0 })
}

#[test]
fn event_time_windows_wait_for_the_watermark_and_count_late_records() {
    let mut f = Feed::new(event_time(1000, 500));
    f.push(Some(100), 0);
    f.push(Some(1200), 0);
    f.push(Some(900), 0); // out of order but within lateness: window 0 is still open
    for t in [1600, 1700, 1800] {
        f.push(Some(t), 0);
    }
    assert!(f.closed.is_empty(), "the median of the recent times (1200) minus lateness is 700");
    f.push(Some(1900), 0); // median 1600: watermark 1100 closes window [0, 1000)
    assert_eq!(f.closed.len(), 1);
    assert_eq!(f.push(Some(50), 0), Placement::Late);
    assert_eq!(f.push(None, 0), Placement::NoEventTime);
    f.windower.flush(&mut f.closed);
    let b = f.batches();
    let got: Vec<(u64, i64, u32)> = b.iter().map(|b| (b.info.seq, b.info.start_ms, b.row_count)).collect();
    assert_eq!(got, [(0, 0, 2), (1, 1000, 5)]);
    assert_eq!(b[0].event_times, [100, 900]);
    assert_eq!(b[0].info.time_basis, TimeBasis::Event);
}

/// A bad clock on a few records cannot move the watermark past the rest of
/// the stream: they wait in their own window; nothing behind them is late.
#[test]
fn records_far_ahead_do_not_make_the_stream_late() {
    let mut f = Feed::new(event_time(1000, 0));
    let now = 1_700_000_000_000;
    for i in 0..30_000i64 {
        let t = if i % 7919 == 5000 { now + 50 * 60_000 } else { now - 3_600_000 + i * 10 };
        assert_eq!(f.push(Some(t), now), Placement::Accepted, "record {i}");
    }
    let closed: u32 = f.batches().iter().map(|b| b.row_count).sum();
    assert!(closed >= 29_000, "only {closed} records in closed windows");
    f.windower.flush(&mut f.closed);
    let far = f.batches().into_iter().filter(|b| b.info.start_ms > now).map(|b| b.row_count).sum::<u32>();
    assert_eq!(far, 4, "the four records from the future wait in a window of their own");
}

#[test]
fn unbelievable_event_times_are_refused_not_windowed() {
    let now = 1_700_000_000_000;
    let spec = EventTimeSpec { size_ms: 60_000, lateness_ms: 0, max_future_ms: 3_600_000, earliest_ms: 946_684_800_000 };
    let mut f = Feed::new(WindowSpec::EventTime(spec));
    assert_eq!(f.push(Some(now), now), Placement::Accepted);
    for t in [i64::MAX, 253_402_300_799_000, now + 3_600_001] {
        assert!(matches!(f.push(Some(t), now), Placement::BadEventTime(BadEventTime::Future { .. })), "{t}");
    }
    for t in [i64::MIN, -1, 0, 946_684_799_999] {
        assert!(matches!(f.push(Some(t), now), Placement::BadEventTime(BadEventTime::TooEarly { .. })), "{t}");
    }
    assert_eq!(f.push(Some(now + 3_600_000), now), Placement::Accepted);
    let reason = BadEventTime::Future { time: 253_402_300_799_000, now, max_future_ms: 3_600_000 }.to_string();
    assert!(reason.contains("9999-12-31T23:59:59.000Z") && reason.contains("max_future_ms"), "{reason}");
    f.windower.flush(&mut f.closed);
    assert_eq!(f.batches().iter().map(|b| b.row_count).sum::<u32>(), 2);
}

#[test]
fn a_clock_jump_yields_a_bounded_number_of_idle_windows() {
    let mut f = Feed::new(WindowSpec::ProcessingTime { size_ms: 1000 });
    f.push(None, 1_700_000_000_000);
    f.windower.tick(i64::MAX - 5, &mut f.closed);
    assert_eq!(f.closed.len(), 1 + MAX_IDLE_WINDOWS as usize);
    f.windower.tick(i64::MAX, &mut f.closed);
}

#[test]
fn times_at_the_start_of_the_clock_get_windows_that_hold_them() {
    // Found by fuzzing: the multiple of the window size below such a time
    // overflowed (a panic in debug builds, a window far in the future here).
    let earliest = i64::MIN + 5;
    let mut f = Feed::new(WindowSpec::ProcessingTime { size_ms: 1000 });
    f.push(None, earliest);
    f.windower.tick(earliest + 10_000, &mut f.closed);
    let spec = EventTimeSpec { size_ms: 1000, lateness_ms: 0, max_future_ms: i64::MAX, earliest_ms: i64::MIN };
    let mut e = Feed::new(WindowSpec::EventTime(spec));
    assert_eq!(e.push(Some(earliest), 0), Placement::Accepted);
    e.windower.flush(&mut e.closed);
    for feed in [&mut f, &mut e] {
        let (start, end) = feed.closed[0].bounds.time.expect("a time window");
        assert!(start <= earliest && earliest < end, "{start}..{end} holds {earliest}");
    }
}

fn one_window(lines: &[&str]) -> Batch {
    let mut decoder = JsonDecoder::default();
    let mut windower = Windower::new(WindowSpec::Count { size: 1000, slide: 1000 });
    let mut closed = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let record = decoder.decode(line.as_bytes()).unwrap();
        let meta = RecordMeta { offset: i as u64, hash: i as u64, event_time: None, read_at_ms: 0 };
        windower.push(record, &meta, &mut closed);
    }
    windower.flush(&mut closed);
    let w = closed.pop().unwrap();
    w.buffer.into_batch(&decoder.fields, "p", "s", 0, w.bounds, 0)
}

fn column<'a>(b: &'a Batch, name: &str) -> &'a clean_host_core::bindings::Column {
    b.columns.iter().find(|c| c.name == name).unwrap()
}

#[test]
fn column_types_are_inferred_per_window_and_strays_marked() {
    let b = one_window(&[
        r#"{"n": 1, "f": 1, "s": "a", "t": "2026-01-01T00:00:00Z", "b": true}"#,
        r#"{"n": 2, "f": 2.5, "s": "b", "t": "2026-01-01T00:00:01.500Z", "b": false}"#,
        r#"{"n": "three", "f": null, "s": 7, "t": "soon", "x": 1}"#,
    ]);
    let n = column(&b, "n");
    assert!(matches!(&n.values, ColumnValues::Int64(v) if v[..2] == [1, 2]));
    assert_eq!(n.validity, [0, 0, 3]);
    let f = column(&b, "f");
    assert!(matches!(&f.values, ColumnValues::Float64(v) if v[..2] == [1.0, 2.5]));
    assert_eq!(f.validity, [0, 0, 1]);
    let s = column(&b, "s");
    match &s.values {
        ColumnValues::Text(t) => assert_eq!((t.bytes.as_slice(), t.offsets.as_slice()), (&b"ab"[..], &[0, 1, 2, 2][..])),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.validity, [0, 0, 3]);
    // Under 90% of the values parse as times: still text.
    assert!(matches!(column(&b, "t").values, ColumnValues::Text(_)));
    assert_eq!(column(&b, "b").validity, [0, 0, 2]);
    assert_eq!(column(&b, "x").validity, [2, 2, 0]);
}

#[test]
fn time_strings_make_a_timestamp_column_and_event_time_bounds() {
    let mut lines: Vec<String> = (0..10).map(|i| format!(r#"{{"ts": "2026-01-01T00:00:0{i}.500Z"}}"#)).collect();
    lines.push(r#"{"ts": "soon"}"#.into());
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let b = one_window(&refs);
    let t = column(&b, "ts");
    assert!(matches!(&t.values, ColumnValues::Timestamp(v) if v[9] - v[0] == 9000), "{t:?}");
    assert_eq!(t.validity[9..], [0, 3]);
    // A time column with a well-known name gives the window its event-time bounds.
    assert_eq!(b.info.time_basis, TimeBasis::Event);
    assert_eq!(b.info.end_ms - b.info.start_ms, 9000);
}

#[test]
fn rows_without_a_value_take_no_text_wherever_they_are() {
    // Missing before the first value, null and a number between, missing after the last.
    let b = one_window(&[
        r#"{"x": 1}"#,
        r#"{"x": 2}"#,
        r#"{"s": "ab", "t": "2026-01-01T00:00:01Z"}"#,
        r#"{"s": null, "t": null}"#,
        r#"{"s": 5, "t": "2026-01-01T00:00:03Z"}"#,
        r#"{"s": "cde", "t": "2026-01-01T00:00:04Z"}"#,
        r#"{"x": 3}"#,
    ]);
    let s = column(&b, "s");
    let ColumnValues::Text(text) = &s.values else { panic!("{s:?}") };
    assert_eq!((text.bytes.as_slice(), text.offsets.as_slice()), (&b"abcde"[..], &[0, 0, 0, 2, 2, 2, 5, 5][..]));
    assert_eq!(s.validity, [2, 2, 0, 1, 3, 0, 2]);
    let t = column(&b, "t");
    assert!(matches!(&t.values, ColumnValues::Timestamp(v) if v[2..6] == [1_767_225_601_000, 0, 1_767_225_603_000, 1_767_225_604_000]), "{t:?}");
    assert_eq!(t.validity, [2, 2, 0, 1, 0, 0, 2]);
}

#[test]
fn a_named_window_is_built_without_the_decoder() {
    let mut decoder = JsonDecoder::default();
    let mut windower = Windower::new(WindowSpec::Count { size: 3, slide: 3 });
    let mut closed = Vec::new();
    for (i, line) in [r#"{"a": 1, "b": "x"}"#, r#"{"b": "y", "c": true}"#, r#"{"a": 3}"#].iter().enumerate() {
        let record = decoder.decode(line.as_bytes()).unwrap();
        windower.push(record, &RecordMeta { offset: 10 + i as u64, hash: 0, event_time: None, read_at_ms: 0 }, &mut closed);
    }
    let w = closed.pop().unwrap();
    let named = w.buffer.named(&decoder.fields);
    assert_eq!(named.offsets(), (10, 12));
    drop(decoder);
    let b = std::thread::spawn(move || named.into_batch("p", "s", 0, w.bounds, 0)).join().unwrap();
    assert_eq!(b.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
    assert_eq!((b.info.first_offset, b.info.last_offset, b.row_count), (10, 12, 3));
    assert_eq!(column(&b, "c").validity, [2, 0, 2]);
}

#[test]
fn a_repeated_key_keeps_the_first_value() {
    let b = one_window(&[r#"{"a": 1, "a": 2}"#, r#"{"a": 3}"#]);
    assert!(matches!(&column(&b, "a").values, ColumnValues::Int64(v) if v == &[1, 3]));
}

/// What the pipeline may acknowledge: everything below the lowest offset
/// still held by an open window.
#[test]
fn min_open_offset_is_the_commit_point() {
    let mut f = Feed::new(WindowSpec::Count { size: 4, slide: 2 });
    assert_eq!(f.windower.min_open_offset(), None);
    for _ in 0..5 {
        f.push(None, 0);
    }
    // Windows [0..4) closed; [2..6) and [4..8) are open.
    assert_eq!(f.windower.min_open_offset(), Some(2));
    let mut e = Feed::new(event_time(10, 0));
    e.push(Some(25), 0); // offset 0 -> window [20, 30)
    e.push(Some(5), 0); // offset 1 -> window [0, 10)
    assert_eq!(e.windower.min_open_offset(), Some(0));
    for t in [31, 32, 33] {
        e.push(Some(t), 0); // the median of 25, 5, 31, 32, 33 is 31: both close
    }
    assert_eq!(e.windower.min_open_offset(), Some(2));
}

#[test]
fn a_window_sized_like_the_last_holds_only_its_own_columns() {
    // The second window meets fields in another order and lacks some of the
    // first's: starting at the first's size must not add or reorder columns.
    let mut decoder = JsonDecoder::default();
    let mut windower = Windower::new(WindowSpec::Count { size: 3, slide: 3 });
    let mut closed = Vec::new();
    let lines = [
        r#"{"a": 1, "b": "x", "c": true}"#,
        r#"{"a": 2, "b": "yy"}"#,
        r#"{"a": 3, "c": false}"#,
        r#"{"d": 1.5, "b": "long text"}"#,
        r#"{"b": "z"}"#,
        r#"{"d": 2.5}"#,
    ];
    for (i, line) in lines.iter().enumerate() {
        let record = decoder.decode(line.as_bytes()).unwrap();
        windower.push(record, &RecordMeta { offset: i as u64, hash: i as u64, event_time: None, read_at_ms: 0 }, &mut closed);
    }
    let batches: Vec<Batch> = closed.drain(..).map(|w| w.buffer.into_batch(&decoder.fields, "p", "s", 0, w.bounds, 0)).collect();
    let names = |b: &Batch| b.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&batches[0]), ["a", "b", "c"]);
    assert_eq!(names(&batches[1]), ["d", "b"]);
    let ColumnValues::Text(b) = &column(&batches[1], "b").values else { panic!("text") };
    assert_eq!((b.bytes.as_slice(), b.offsets.as_slice()), (&b"long textz"[..], &[0, 9, 10, 10][..]));
    assert_eq!(column(&batches[1], "b").validity, [0, 0, 2]);
}

#[test]
fn a_burst_window_does_not_size_every_later_one() {
    // 50,000 records in one processing-time second, then one in the next:
    // the small window starts at most SHAPE_ROWS rows large, not 50,000.
    let mut f = Feed::new(WindowSpec::ProcessingTime { size_ms: 1000 });
    for _ in 0..50_000 {
        f.push(None, 500);
    }
    f.push(None, 1500);
    f.windower.flush(&mut f.closed);
    let batches = f.batches();
    assert_eq!(batches.iter().map(|b| b.row_count).collect::<Vec<_>>(), [50_000, 1]);
    assert!(batches[1].offsets.capacity() <= SHAPE_ROWS && batches[1].record_hashes.capacity() <= SHAPE_ROWS, "{}", batches[1].offsets.capacity());
}

/// The batches `lines` make in tumbling count windows of `size`, decoded
/// straight into the columns or into records pushed, by a decoder that
/// keeps at most `max_fields` names; and what each line decoded to.
fn batches_of(lines: &[&str], size: usize, max_fields: usize, straight: bool) -> (Vec<String>, Vec<Result<(), DecodeError>>) {
    let mut decoder = JsonDecoder::default();
    decoder.fields = FieldNames::with_limit(max_fields);
    let mut windower = Windower::new(WindowSpec::Count { size, slide: size });
    let (mut closed, mut decoded) = (Vec::new(), Vec::new());
    for (i, line) in lines.iter().enumerate() {
        let meta = RecordMeta { offset: i as u64, hash: i as u64, event_time: None, read_at_ms: i as i64 };
        if straight {
            let window = windower.next_row().expect("a tumbling count window");
            let result = decoder.decode_into(line.as_bytes(), window);
            match result {
                Ok(()) => assert_eq!(windower.finish_row(&meta, &mut closed), Placement::Accepted),
                Err(_) => window.abandon_row(),
            }
            decoded.push(result);
        } else {
            let result = decoder.decode(line.as_bytes()).map(|record| assert_eq!(windower.push(record, &meta, &mut closed), Placement::Accepted));
            decoded.push(result);
        }
    }
    windower.flush(&mut closed);
    let batches = closed.into_iter().map(|w| format!("{:?}", w.buffer.into_batch(&decoder.fields, "p", "s", 0, w.bounds, 0))).collect();
    (batches, decoded)
}

/// Lines a decoder writes straight into a tumbling window's columns make
/// the batches (and errors) their records make pushed one by one: nested
/// objects, arrays, escapes, repeated keys, fields that come and go or
/// change type, and lines that fail part way (first of all, after new
/// fields, inside a string, after a repeated key), whose values and new
/// columns go with them, a field they made coming back later in its place.
#[test]
fn rows_written_straight_into_columns_batch_as_records_pushed() {
    let lines = [
        r#"{"first": "fails", "x": tru}"#,
        r#"{"a": 1, "b": "x", "c": true}"#,
        r#"{"a": 2.5, "b": "y\n\u00e9", "d": null}"#,
        r#"{"a": 3, "a": "again", "b": "z", "b": "w\t"}"#,
        r#"{"b": "w", "b": "repeated", "e": [1, {"x": 2}], "geo": {"lat": 1.5, "lon": -2}}"#,
        r#"{"new": 1, "newer": "partial", "a": }"#,
        r#"{"a": 4, "b": "unterminated"#,
        r#"{"b": "café", "a": "text now", "geo": {"lat": "north"}}"#,
        "not json",
        r#"{"a": 5, "b": "v\ud800", "fresh": 1}"#,
        r#"{"a": 6, "b": "b", "b": "ok\"", "c": false"#,
        "{}",
        r#"{"a": 7, "deep": {"er": {"est": "x"}}, "oops"}"#,
        r#"{"ts": "2026-12-07T06:01:33.769Z", "a": 8, "c": false, "e": [], "b": ""}"#,
        r#"{"a": 9, "d": "now text", "newer": "back", "x": 10}"#,
    ];
    for size in [1, 3, 4, 1000] {
        let (pushed, errors) = batches_of(&lines, size, 1000, false);
        assert_eq!(errors.iter().filter(|r| r.is_ok()).count(), 8);
        assert_eq!(pushed.len(), 8usize.div_ceil(size), "windows of {size}: {pushed:#?}");
        assert_eq!(batches_of(&lines, size, 1000, true), (pushed, errors), "windows of {size}");
    }
}

/// Past the pipeline's field limit a line fails where it meets a new name,
/// decoded straight or not, and leaves no column behind; input that never
/// decodes leaves no window, not even the one opened for it.
#[test]
fn rows_written_straight_fail_as_records_do_at_the_field_limit_and_leave_nothing() {
    let lines = [r#"{"a": 1, "b": 2}"#, r#"{"a": 3, "c": "over", "b": 4}"#, r#"{"b": 5, "a": 6}"#, r#"{"d": {"e": 1}}"#];
    for size in [1, 2, 10] {
        let (pushed, errors) = batches_of(&lines, size, 2, false);
        assert!(matches!(errors[1], Err(DecodeError::TooManyFields { limit: 2 })), "{errors:?}");
        assert_eq!(batches_of(&lines, size, 2, true), (pushed, errors));
    }
    let failing = ["nope", r#"{"a": }"#, r#"{"b": "cut"#];
    for size in [1, 1000] {
        let (straight, errors) = batches_of(&failing, size, 1000, true);
        assert!(straight.is_empty() && errors.iter().all(Result::is_err), "{straight:?}");
        assert_eq!(batches_of(&failing, size, 1000, false), (straight, errors));
    }
}

/// Only a tumbling count window is one a record's decoder can write into
/// before it is decoded.
#[test]
fn only_tumbling_count_windows_take_rows_straight() {
    assert!(Windower::new(WindowSpec::Count { size: 4, slide: 4 }).next_row().is_some());
    assert!(Windower::new(WindowSpec::Count { size: 1, slide: 0 }).next_row().is_some());
    assert!(Windower::new(WindowSpec::Count { size: 4, slide: 2 }).next_row().is_none());
    assert!(Windower::new(WindowSpec::Count { size: 4, slide: 8 }).next_row().is_none());
    assert!(Windower::new(WindowSpec::ProcessingTime { size_ms: 1000 }).next_row().is_none());
    assert!(Windower::new(event_time(1000, 0)).next_row().is_none());
}
