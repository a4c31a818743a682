//! Window manager: turns a partition's records into closed windows.
//!
//! Count windows (tumbling, or sliding with `slide < size`) close on size;
//! processing-time windows close when the wall clock passes their end (also
//! on idle ticks, so a quiet source still yields empty windows); event-time
//! windows close when the watermark (largest event time seen minus the allowed
//! lateness) passes their end, and a record for a window that has already
//! closed is late: counted and handed back to the caller, never dropped
//! silently. At end of input every window with unanalysed records is flushed.
//!
//! A bad clock must not stop a partition: an event time further ahead of the
//! host's clock than `max_future_ms`, or before the `earliest_ms` floor, is
//! refused (the caller dead-letters it), and the watermark follows the median
//! of the last [`WATERMARK_SPAN`] event times, so a few records far ahead of
//! the rest cannot make the stream behind them late.

mod buffer;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};

pub use buffer::{Bounds, NamedWindow, RecordMeta, Shape, WindowBuffer};

use crate::decode::Record;
use clean_host_core::bindings::WindowKind;

/// The start of the `size_ms` window that holds `ms`: the multiple of it at
/// or below, or the earliest time there is when that multiple is before it
/// (a clock or an event time near the start of `i64`).
fn aligned(ms: i64, size_ms: i64) -> i64 {
    ms.div_euclid(size_ms).saturating_mul(size_ms)
}

/// How a pipeline cuts its stream into windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSpec {
    /// Every `size` records, a new one every `slide` records (`slide == size`:
    /// tumbling; a `slide` of 0 counts as 1).
    Count { size: usize, slide: usize },
    /// Wall-clock windows of `size_ms`, aligned to multiples of it.
    ProcessingTime { size_ms: i64 },
    /// Event-time windows of `size_ms`, closed once the watermark passes them.
    EventTime(EventTimeSpec),
}

/// How event-time windows are cut, and which event times are believable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTimeSpec {
    pub size_ms: i64,
    /// How far behind the watermark a record may be and still join its window.
    pub lateness_ms: i64,
    /// Event times more than this ahead of the host's clock are refused.
    pub max_future_ms: i64,
    /// Event times before this (ms since the epoch) are refused.
    pub earliest_ms: i64,
}

/// Most empty processing-time windows one idle gap yields.
pub const MAX_IDLE_WINDOWS: u32 = 1000;

/// Most rows a new window's buffers are sized for up front (from the last
/// window's size); past it they grow as they fill.
const SHAPE_ROWS: usize = 16_384;

/// Event times the watermark is the median of.
pub const WATERMARK_SPAN: usize = 9;

/// A window ready for analysis.
#[derive(Debug)]
pub struct ClosedWindow {
    pub buffer: WindowBuffer,
    pub bounds: Bounds,
}

/// What happened to a pushed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Accepted,
    /// Its event-time window had already closed.
    Late,
    /// An event-time pipeline got a record without a usable event time.
    NoEventTime,
    /// Its event time is not believable: it is dead-lettered, never windowed.
    BadEventTime(BadEventTime),
}

/// Why an event time was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadEventTime {
    /// `time` is more than `max_future_ms` ahead of the host clock `now`.
    Future { time: i64, now: i64, max_future_ms: i64 },
    /// `time` is before the floor `earliest_ms`.
    TooEarly { time: i64, earliest_ms: i64 },
}

impl std::fmt::Display for BadEventTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let time = |ms: i64| {
            let mut out = Vec::new();
            clean_host_core::timestamp::format_ms(ms, &mut out);
            String::from_utf8_lossy(&out).into_owned()
        };
        match *self {
            BadEventTime::Future { time: t, now, max_future_ms } => {
                write!(f, "event time {t} ms ({}) is more than {max_future_ms} ms ahead of the host clock ({}; window.max_future_ms)", time(t), time(now))
            }
            BadEventTime::TooEarly { time: t, earliest_ms } => {
                write!(f, "event time {t} ms ({}) is before {} (window.earliest_event_time)", time(t), time(earliest_ms))
            }
        }
    }
}

/// The windows of one partition.
#[derive(Debug)]
pub struct Windower {
    spec: WindowSpec,
    next_seq: u64,
    /// Count and processing-time windows, oldest first, with their start (record index or ms).
    open: VecDeque<(i64, WindowBuffer)>,
    /// Event-time windows by start.
    by_time: BTreeMap<i64, WindowBuffer>,
    records: u64,
    /// Count windows: records to come before the next one opens (0: it
    /// opens with the next record). Counted down, not a division a record.
    until_open: u64,
    /// The last event times, for the watermark.
    recent_times: VecDeque<i64>,
    /// The median of `recent_times` at its highest so far.
    stream_time: i64,
    /// The size of the last window with records: new windows start at it.
    shape: Shape,
    /// Event-time windows ending at or before this have closed; for count
    /// windows, the records before this index have been in a closed window.
    closed_until: i64,
}

impl Windower {
    pub fn new(spec: WindowSpec) -> Self {
        Windower {
            spec,
            next_seq: 0,
            open: VecDeque::new(),
            by_time: BTreeMap::new(),
            records: 0,
            until_open: 0,
            recent_times: VecDeque::with_capacity(WATERMARK_SPAN),
            stream_time: i64::MIN,
            shape: Shape::default(),
            closed_until: i64::MIN,
        }
    }

    fn close(&mut self, buffer: WindowBuffer, time: Option<(i64, i64)>, out: &mut Vec<ClosedWindow>) {
        if buffer.rows() > 0 {
            // Count windows hold `size` rows at most; time windows have no
            // bound, and several may be open: a burst sizes none past SHAPE_ROWS.
            let max_rows = match self.spec {
                WindowSpec::Count { size, .. } => size.min(SHAPE_ROWS),
                _ => SHAPE_ROWS,
            };
            self.shape = buffer.shape(max_rows);
        }
        let kind = match self.spec {
            WindowSpec::Count { .. } => WindowKind::Count,
            WindowSpec::ProcessingTime { .. } => WindowKind::ProcessingTime,
            WindowSpec::EventTime(_) => WindowKind::EventTime,
        };
        let event_time = kind == WindowKind::EventTime;
        out.push(ClosedWindow { buffer, bounds: Bounds { seq: self.next_seq, kind, time, event_time } });
        self.next_seq += 1;
    }

    pub fn push(&mut self, record: &Record, meta: &RecordMeta, out: &mut Vec<ClosedWindow>) -> Placement {
        match self.spec {
            WindowSpec::Count { size, slide } => {
                self.open_when_due(slide);
                for (_, buffer) in self.open.iter_mut() {
                    buffer.push(record, meta);
                }
                self.counted(size, out);
            }
            WindowSpec::ProcessingTime { size_ms } => {
                self.tick(meta.read_at_ms, out);
                if self.open.is_empty() {
                    self.open.push_back((aligned(meta.read_at_ms, size_ms), WindowBuffer::shaped(&self.shape)));
                }
                self.open[0].1.push(record, meta);
            }
            WindowSpec::EventTime(spec) => {
                let Some(t) = meta.event_time else { return Placement::NoEventTime };
                if t < spec.earliest_ms {
                    return Placement::BadEventTime(BadEventTime::TooEarly { time: t, earliest_ms: spec.earliest_ms });
                }
                if t.saturating_sub(meta.read_at_ms) > spec.max_future_ms {
                    let bad = BadEventTime::Future { time: t, now: meta.read_at_ms, max_future_ms: spec.max_future_ms };
                    return Placement::BadEventTime(bad);
                }
                let size_ms = spec.size_ms;
                let start = aligned(t, size_ms);
                if start.saturating_add(size_ms) <= self.closed_until {
                    return Placement::Late;
                }
                self.by_time.entry(start).or_insert_with(|| WindowBuffer::shaped(&self.shape)).push(record, meta);
                self.advance_stream_time(t);
                let watermark = self.stream_time.saturating_sub(spec.lateness_ms);
                while let Some(entry) = self.by_time.first_entry() {
                    let start = *entry.key();
                    let end = start.saturating_add(size_ms);
                    if end > watermark {
                        break;
                    }
                    let buffer = entry.remove();
                    self.closed_until = self.closed_until.max(end);
                    self.close(buffer, Some((start, end)), out);
                }
            }
        }
        Placement::Accepted
    }

    /// The window the next record goes into, when it is one window that
    /// does not depend on the record: a tumbling count window's (opened if
    /// due, and left open, empty, should the record fail to decode). A
    /// decoder writes the record straight into its columns
    /// ([`crate::decode::ValueSink`]), then [`Windower::finish_row`] (or
    /// [`WindowBuffer::abandon_row`]). Other windows take a decoded
    /// [`Record`] ([`Windower::push`]): a sliding window's record goes into
    /// several, a time window's where its time says. A caller whose records
    /// carry event times takes that path for every window: the time is read
    /// from the record.
    #[inline]
    pub fn next_row(&mut self) -> Option<&mut WindowBuffer> {
        let WindowSpec::Count { size, slide } = self.spec else {
            return None;
        };
        if slide.max(1) != size {
            return None;
        }
        self.open_when_due(slide);
        self.open.front_mut().map(|(_, buffer)| buffer)
    }

    /// The record written into [`Windower::next_row`]'s window is whole.
    #[inline]
    pub fn finish_row(&mut self, meta: &RecordMeta, out: &mut Vec<ClosedWindow>) -> Placement {
        let (WindowSpec::Count { size, .. }, Some((_, buffer))) = (self.spec, self.open.front_mut()) else {
            unreachable!("next_row gave a count window's buffer");
        };
        buffer.finish_row(meta);
        self.counted(size, out);
        Placement::Accepted
    }

    /// Count windows: open the next one if it opens with the next record.
    #[inline]
    fn open_when_due(&mut self, slide: usize) {
        if self.until_open == 0 {
            self.open.push_back((self.records as i64, WindowBuffer::shaped(&self.shape)));
            self.until_open = (slide as u64).max(1);
        }
    }

    /// Count windows: a record went into the open ones; close those it filled.
    #[inline]
    fn counted(&mut self, size: usize, out: &mut Vec<ClosedWindow>) {
        self.until_open -= 1;
        self.records += 1;
        while self.open.front().is_some_and(|(_, b)| b.rows() >= size) {
            let (start, buffer) = self.open.pop_front().expect("checked above");
            self.closed_until = start + size as i64;
            self.close(buffer, None, out);
        }
    }

    /// Take `t` into the recent event times; the stream time becomes their
    /// median if that is later.
    fn advance_stream_time(&mut self, t: i64) {
        if self.recent_times.len() == WATERMARK_SPAN {
            self.recent_times.pop_front();
        }
        self.recent_times.push_back(t);
        if t <= self.stream_time {
            return;
        }
        let mut times = [i64::MIN; WATERMARK_SPAN];
        for (slot, &time) in times.iter_mut().zip(&self.recent_times) {
            *slot = time;
        }
        let n = self.recent_times.len();
        // The lower median: with two times, one far ahead does not count.
        let median = *times[..n].select_nth_unstable((n - 1) / 2).1;
        self.stream_time = self.stream_time.max(median);
    }

    /// The number the next window to close gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Number windows from `seq` on: a partition resumed from a checkpoint
    /// carries on its count.
    pub fn resume_seq(&mut self, seq: u64) {
        self.next_seq = seq;
    }

    /// The lowest offset held by an open window: every record of the
    /// partition below it is in a closed window (or was never windowed).
    pub fn min_open_offset(&self) -> Option<u64> {
        let open = self.open.iter().map(|(_, b)| b);
        open.chain(self.by_time.values()).filter_map(WindowBuffer::first_offset).min()
    }

    /// Close processing-time windows that ended before `now_ms`, empty ones
    /// included (at most [`MAX_IDLE_WINDOWS`] for one gap: a clock that jumps
    /// ahead by years must not flood the analysis with empty windows).
    pub fn tick(&mut self, now_ms: i64, out: &mut Vec<ClosedWindow>) {
        let WindowSpec::ProcessingTime { size_ms } = self.spec else { return };
        if let Some(&(start, _)) = self.open.front() {
            let end = start.saturating_add(size_ms);
            if now_ms >= end {
                let (start, buffer) = self.open.pop_front().expect("checked above");
                self.close(buffer, Some((start, end)), out);
                // Idle periods still produce (empty) windows, one per period.
                let now_start = aligned(now_ms, size_ms);
                let mut next = end;
                let mut idle = 0;
                while next < now_start && idle < MAX_IDLE_WINDOWS {
                    self.close(WindowBuffer::default(), Some((next, next.saturating_add(size_ms))), out);
                    next = next.saturating_add(size_ms);
                    idle += 1;
                }
                self.open.push_back((now_start, WindowBuffer::shaped(&self.shape)));
            }
        }
    }

    /// End of input: close what holds records not yet analysed.
    pub fn flush(&mut self, out: &mut Vec<ClosedWindow>) {
        match self.spec {
            WindowSpec::Count { .. } => {
                // The oldest open window holds every record the others hold;
                // one `next_row` opened for a line that then failed holds none.
                if let Some((_, buffer)) = self.open.pop_front() {
                    if self.records as i64 > self.closed_until && buffer.rows() > 0 {
                        self.close(buffer, None, out);
                    }
                }
                self.open.clear();
            }
            WindowSpec::ProcessingTime { size_ms } => {
                if let Some((start, buffer)) = self.open.pop_front() {
                    if buffer.rows() > 0 {
                        self.close(buffer, Some((start, start.saturating_add(size_ms))), out);
                    }
                }
            }
            WindowSpec::EventTime(spec) => {
                while let Some((start, buffer)) = self.by_time.pop_first() {
                    let end = start.saturating_add(spec.size_ms);
                    self.closed_until = self.closed_until.max(end);
                    self.close(buffer, Some((start, end)), out);
                }
            }
        }
    }
}
