//! Window manager: turns a partition's records into closed windows.
//!
//! Count windows (tumbling, or sliding with `slide < size`) close on size;
//! processing-time windows close when the wall clock passes their end (also
//! on idle ticks, so a quiet source still yields empty windows); event-time
//! windows close when the watermark (largest event time seen minus the allowed
//! lateness) passes their end, and a record for a window that has already
//! closed is late: counted and handed back to the caller, never dropped
//! silently. At end of input every window with unanalysed records is flushed.

mod buffer;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};

pub use buffer::{Bounds, RecordMeta, WindowBuffer};

use crate::decode::Record;
use crate::runtime::bindings::WindowKind;

/// How a pipeline cuts its stream into windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSpec {
    /// Every `size` records, a new one every `slide` records (`slide == size`: tumbling).
    Count { size: usize, slide: usize },
    /// Wall-clock windows of `size_ms`, aligned to multiples of it.
    ProcessingTime { size_ms: i64 },
    /// Event-time windows of `size_ms`, closed once the watermark passes them.
    EventTime { size_ms: i64, lateness_ms: i64 },
}

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
    max_event_time: i64,
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
            max_event_time: i64::MIN,
            closed_until: i64::MIN,
        }
    }

    fn close(&mut self, buffer: WindowBuffer, time: Option<(i64, i64)>, out: &mut Vec<ClosedWindow>) {
        let kind = match self.spec {
            WindowSpec::Count { .. } => WindowKind::Count,
            WindowSpec::ProcessingTime { .. } => WindowKind::ProcessingTime,
            WindowSpec::EventTime { .. } => WindowKind::EventTime,
        };
        let event_time = kind == WindowKind::EventTime;
        out.push(ClosedWindow { buffer, bounds: Bounds { seq: self.next_seq, kind, time, event_time } });
        self.next_seq += 1;
    }

    pub fn push(&mut self, record: &Record, meta: &RecordMeta, out: &mut Vec<ClosedWindow>) -> Placement {
        match self.spec {
            WindowSpec::Count { size, slide } => {
                if self.records.is_multiple_of(slide as u64) {
                    self.open.push_back((self.records as i64, WindowBuffer::default()));
                }
                for (_, buffer) in self.open.iter_mut() {
                    buffer.push(record, meta);
                }
                self.records += 1;
                while self.open.front().is_some_and(|(_, b)| b.rows() >= size) {
                    let (start, buffer) = self.open.pop_front().expect("checked above");
                    self.closed_until = start + size as i64;
                    self.close(buffer, None, out);
                }
            }
            WindowSpec::ProcessingTime { size_ms } => {
                self.tick(meta.read_at_ms, out);
                if self.open.is_empty() {
                    self.open.push_back((meta.read_at_ms.div_euclid(size_ms) * size_ms, WindowBuffer::default()));
                }
                self.open[0].1.push(record, meta);
            }
            WindowSpec::EventTime { size_ms, lateness_ms } => {
                let Some(t) = meta.event_time else { return Placement::NoEventTime };
                let start = t.div_euclid(size_ms) * size_ms;
                if start + size_ms <= self.closed_until {
                    return Placement::Late;
                }
                self.by_time.entry(start).or_default().push(record, meta);
                self.max_event_time = self.max_event_time.max(t);
                let watermark = self.max_event_time.saturating_sub(lateness_ms);
                while let Some(entry) = self.by_time.first_entry() {
                    let start = *entry.key();
                    if start + size_ms > watermark {
                        break;
                    }
                    let buffer = entry.remove();
                    self.closed_until = self.closed_until.max(start + size_ms);
                    self.close(buffer, Some((start, start + size_ms)), out);
                }
            }
        }
        Placement::Accepted
    }

    /// The lowest offset held by an open window: every record of the
    /// partition below it is in a closed window (or was never windowed).
    pub fn min_open_offset(&self) -> Option<u64> {
        let open = self.open.iter().map(|(_, b)| b);
        open.chain(self.by_time.values()).filter_map(WindowBuffer::first_offset).min()
    }

    /// Close processing-time windows that ended before `now_ms`, empty ones included.
    pub fn tick(&mut self, now_ms: i64, out: &mut Vec<ClosedWindow>) {
        let WindowSpec::ProcessingTime { size_ms } = self.spec else { return };
        if let Some(&(start, _)) = self.open.front() {
            if now_ms >= start + size_ms {
                let (start, buffer) = self.open.pop_front().expect("checked above");
                self.close(buffer, Some((start, start + size_ms)), out);
                // Idle periods still produce (empty) windows, one per period.
                let now_start = now_ms.div_euclid(size_ms) * size_ms;
                let mut next = start + size_ms;
                while next < now_start {
                    self.close(WindowBuffer::default(), Some((next, next + size_ms)), out);
                    next += size_ms;
                }
                self.open.push_back((now_start, WindowBuffer::default()));
            }
        }
    }

    /// End of input: close what holds records not yet analysed.
    pub fn flush(&mut self, out: &mut Vec<ClosedWindow>) {
        match self.spec {
            WindowSpec::Count { .. } => {
                // The oldest open window holds every record the others hold.
                if let Some((_, buffer)) = self.open.pop_front() {
                    if self.records as i64 > self.closed_until {
                        self.close(buffer, None, out);
                    }
                }
                self.open.clear();
            }
            WindowSpec::ProcessingTime { size_ms } => {
                if let Some((start, buffer)) = self.open.pop_front() {
                    if buffer.rows() > 0 {
                        self.close(buffer, Some((start, start + size_ms)), out);
                    }
                }
            }
            WindowSpec::EventTime { size_ms, .. } => {
                while let Some((start, buffer)) = self.by_time.pop_first() {
                    self.closed_until = self.closed_until.max(start + size_ms);
                    self.close(buffer, Some((start, start + size_ms)), out);
                }
            }
        }
    }
}
