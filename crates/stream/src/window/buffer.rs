//! A window's records, stored column by column as they arrive.
//!
//! Each field keeps one cell per row (kind, number bits, end of its text), so
//! closing the window is a pass per column: infer the type from this window's
//! values, then make the column's lists from its cells (a text column's bytes
//! are used as they are). A JSON line or message (with its metadata
//! columns) is written straight into the cells ([`ValueSink`]) when its
//! window is known before it is read (a tumbling count window, no event
//! time); elsewhere a decoded [`Record`] is pushed.

use std::sync::Arc;

use crate::decode::{FieldNames, Kind, Record, ValueSink};
use clean_host_core::bindings::row_state::{present_values, MISSING, NULL, PRESENT, WRONG_TYPE};
use clean_host_core::bindings::{Batch, Column, ColumnValues, StringColumn, WindowInfo, WindowKind};
use clean_host_core::{short_bytes, timestamp};

/// Text columns become timestamps when at least this share of values parse as one.
const TIMESTAMP_SHARE: f64 = 0.9;

/// Timestamp columns that count as event time when the pipeline names none.
const WELL_KNOWN_TIME_FIELDS: [&str; 6] = ["ts", "timestamp", "event_time", "@timestamp", "time", "created_at"];

/// Earliest and latest value of the first well-known timestamp column.
fn well_known_time_bounds(columns: &[Column]) -> Option<(i64, i64)> {
    columns.iter().filter(|c| WELL_KNOWN_TIME_FIELDS.contains(&c.name.as_str())).find_map(|c| match &c.values {
        ColumnValues::Timestamp(v) => {
            let (stated, rest) = present_values(v, &c.validity);
            let (min, max) = stated.chain(rest).fold((i64::MAX, i64::MIN), |(lo, hi), &t| (lo.min(t), hi.max(t)));
            (min <= max).then_some((min, max))
        }
        _ => None,
    })
}

/// What the host knows of a record besides its fields.
#[derive(Debug, Clone, Copy)]
pub struct RecordMeta {
    pub offset: u64,
    pub hash: u64,
    pub event_time: Option<i64>,
    pub read_at_ms: i64,
}

/// One row of a field: what its value is, its number's bits, and where
/// its text ends in the field's text.
#[derive(Debug, Clone, Copy)]
struct Cell {
    bits: u64,
    text_end: u32,
    kind: Kind,
}

/// A field's rows, one cell each: adding a value is one store.
#[derive(Debug)]
struct FieldColumn {
    cells: Vec<Cell>,
    text: Vec<u8>,
    counts: [u32; 6],
}

impl FieldColumn {
    /// A column sized for `rows` rows and `text` bytes of text.
    fn with_capacity(rows: usize, text: usize) -> Self {
        FieldColumn { cells: Vec::with_capacity(rows), text: Vec::with_capacity(text), counts: [0; 6] }
    }

    fn pad_to(&mut self, rows: usize) {
        let missing = rows.saturating_sub(self.cells.len());
        let cell = Cell { bits: 0, text_end: self.text.len() as u32, kind: Kind::Missing };
        self.cells.resize(rows.max(self.cells.len()), cell);
        self.counts[Kind::Missing as usize] += missing as u32;
    }

    /// A row's value; its text is what `text` got since the row before's.
    #[inline]
    fn push(&mut self, kind: Kind, bits: u64) {
        self.cells.push(Cell { bits, text_end: self.text.len() as u32, kind });
        self.counts[kind as usize] += 1;
    }

    /// Drop the rows from `rows` on (at most one) and the text past the rest.
    fn truncate(&mut self, rows: usize) {
        if let Some(cell) = self.cells.get(rows..).and_then(|past| past.first()) {
            self.counts[cell.kind as usize] -= 1;
            self.cells.truncate(rows);
        }
        self.text.truncate(self.cells.last().map_or(0, |cell| cell.text_end as usize));
    }

    /// Row `row`'s text.
    fn text_of(&self, row: usize) -> &[u8] {
        let start = if row == 0 { 0 } else { self.cells[row - 1].text_end as usize };
        &self.text[start..self.cells[row].text_end as usize]
    }

    fn into_column(self, name: &str) -> Column {
        let c = self.counts;
        let numbers = c[Kind::Int as usize] + c[Kind::Float as usize];
        let (texts, bools) = (c[Kind::Text as usize], c[Kind::Bool as usize]);
        // Row states, or none when every row holds a value of the column's
        // type (`present` of them: known from the counts, not looked for).
        let validity_for = |cells: &[Cell], present: u32, ok: &dyn Fn(Kind) -> bool| -> Vec<u8> {
            if present as usize == cells.len() {
                return Vec::new();
            }
            cells
                .iter()
                .map(|cell| match cell.kind {
                    Kind::Missing => MISSING,
                    Kind::Null => NULL,
                    k if ok(k) => PRESENT,
                    _ => WRONG_TYPE,
                })
                .collect()
        };
        if numbers >= texts && numbers >= bools && numbers > 0 {
            let validity = validity_for(&self.cells, numbers, &|k| matches!(k, Kind::Int | Kind::Float));
            let values = if c[Kind::Float as usize] > 0 {
                let floats = self
                    .cells
                    .iter()
                    .map(|cell| match cell.kind {
                        Kind::Int => cell.bits as i64 as f64,
                        Kind::Float => f64::from_bits(cell.bits),
                        _ => 0.0,
                    })
                    .collect();
                ColumnValues::Float64(floats)
            } else {
                let ints = self.cells.iter().map(|cell| if cell.kind == Kind::Int { cell.bits as i64 } else { 0 }).collect();
                ColumnValues::Int64(ints)
            };
            return Column { name: name.to_string(), values, validity };
        }
        if bools > texts {
            let validity = validity_for(&self.cells, bools, &|k| k == Kind::Bool);
            let values = self.cells.iter().map(|cell| cell.kind == Kind::Bool && cell.bits == 1).collect();
            return Column { name: name.to_string(), values: ColumnValues::Boolean(values), validity };
        }
        if let Some(column) = self.timestamps(name) {
            return column;
        }
        let validity = validity_for(&self.cells, texts, &|k| k == Kind::Text);
        let offsets = std::iter::once(0).chain(self.cells.iter().map(|cell| cell.text_end)).collect();
        Column { name: name.to_string(), values: ColumnValues::Text(StringColumn { bytes: self.text, offsets }), validity }
    }

    /// The column as timestamps, if its text is (almost) all RFC 3339 times.
    fn timestamps(&self, name: &str) -> Option<Column> {
        let text_rows = self.counts[Kind::Text as usize] as usize;
        let first = self.cells.iter().position(|cell| cell.kind == Kind::Text)?;
        if !timestamp::looks_like(self.text_of(first)) {
            return None;
        }
        let mut values = vec![0i64; self.cells.len()];
        let mut validity = vec![PRESENT; self.cells.len()];
        let mut parsed = 0;
        let mut times = timestamp::TimeParser::default();
        for (row, cell) in self.cells.iter().enumerate() {
            validity[row] = match cell.kind {
                Kind::Missing => MISSING,
                Kind::Null => NULL,
                Kind::Text => match times.parse_ms(self.text_of(row)) {
                    Some(ms) => {
                        values[row] = ms;
                        parsed += 1;
                        PRESENT
                    }
                    None => WRONG_TYPE,
                },
                _ => WRONG_TYPE,
            };
        }
        if (parsed as f64) < TIMESTAMP_SHARE * text_rows as f64 {
            return None;
        }
        if validity.iter().all(|&s| s == PRESENT) {
            validity.clear();
        }
        Some(Column { name: name.to_string(), values: ColumnValues::Timestamp(values), validity })
    }
}

/// How large a window's buffers grew, by field: the next window's start
/// at that size, rather than growing (and copying) from empty again.
#[derive(Debug, Default, Clone)]
pub struct Shape {
    rows: usize,
    /// Text bytes per field id.
    text: Vec<usize>,
    /// Rows a window of this stream may size for up front (a count window's size).
    max_rows: usize,
}

/// The records of one open window.
#[derive(Debug, Default)]
pub struct WindowBuffer {
    /// What this window's columns are sized for when they first appear.
    shape: Shape,
    rows: usize,
    /// Indexed by field id.
    fields: Vec<Option<FieldColumn>>,
    /// Field ids in the order they first appeared in this window.
    order: Vec<u32>,
    /// How many of `order` had appeared before the row being written: the
    /// others were made by it, and go if it is abandoned.
    order_before_row: usize,
    /// Where a repeated key's later text values are unescaped, to be
    /// dropped (the first value wins; plain ones are not copied at all).
    repeated: Vec<u8>,
    offsets: Vec<u64>,
    hashes: Vec<u64>,
    event_times: Vec<i64>,
    has_event_times: bool,
    first_read_ms: i64,
    last_read_ms: i64,
}

/// A closed window's place and time bounds, decided by the window manager.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub seq: u64,
    pub kind: WindowKind,
    /// Given for time windows; `None` for count windows (bounds come from the records).
    pub time: Option<(i64, i64)>,
    pub event_time: bool,
}

impl WindowBuffer {
    /// An empty window whose buffers start at the size of `shape`'s.
    pub fn shaped(shape: &Shape) -> Self {
        let rows = shape.rows;
        WindowBuffer {
            shape: shape.clone(),
            offsets: Vec::with_capacity(rows),
            hashes: Vec::with_capacity(rows),
            event_times: Vec::with_capacity(rows),
            ..WindowBuffer::default()
        }
    }

    /// How large this window's buffers are now, scaled down to at most
    /// `max_rows` rows: a burst window must not size every later one.
    pub fn shape(&self, max_rows: usize) -> Shape {
        let scale = |n: usize| if self.rows > max_rows { (n as u128 * max_rows as u128 / self.rows as u128) as usize } else { n };
        let text = self.fields.iter().map(|f| f.as_ref().map_or(0, |f| scale(f.text.len()))).collect();
        Shape { rows: self.rows.min(max_rows), text, max_rows }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The offset of the first record pushed (the lowest: offsets grow).
    pub fn first_offset(&self) -> Option<u64> {
        self.offsets.first().copied()
    }

    /// A decoded record as the next row.
    pub fn push(&mut self, record: &Record, meta: &RecordMeta) {
        for v in &record.values {
            self.with_row_column(v.field, |column| {
                let start = v.text.0 as usize;
                short_bytes::extend(&mut column.text, &record.text[start..], v.text.1 as usize - start);
                column.push(v.kind, v.bits);
            });
        }
        self.finish_row(meta);
    }

    /// Whether field `field`'s column takes a value in the row being
    /// written: made when new (sized as the last window's) and padded to
    /// that row; not when the row has a value of it already (a repeated
    /// key: the first value wins).
    #[cold]
    fn open_column(&mut self, field: u32) -> bool {
        let (id, row) = (field as usize, self.rows);
        if id >= self.fields.len() {
            self.fields.resize_with(id + 1, || None);
        }
        let column = self.fields[id].get_or_insert_with(|| {
            self.order.push(field);
            // A little room past the last window's size: one more row, a longer value.
            let text = self.shape.text.get(id).map_or(0, |&bytes| bytes + bytes / 8);
            FieldColumn::with_capacity((self.shape.rows + self.shape.rows / 8).min(self.shape.max_rows), text)
        });
        if column.cells.len() > row {
            return false;
        }
        column.pad_to(row);
        true
    }

    /// `add` a value to field `field`'s column, unless the row being
    /// written has one (see [`WindowBuffer::open_column`]). The usual case,
    /// a column there with every row before this one, is tested in line;
    /// a column opened is that case on the second pass, so `add` is called
    /// in one place.
    #[inline(always)]
    fn with_row_column(&mut self, field: u32, add: impl FnOnce(&mut FieldColumn)) {
        let row = self.rows;
        loop {
            if let Some(Some(column)) = self.fields.get_mut(field as usize) {
                if column.cells.len() == row {
                    return add(column);
                }
            }
            if !self.open_column(field) {
                return;
            }
        }
    }

    /// The row whose values were written ([`ValueSink`]) is complete.
    #[inline]
    pub fn finish_row(&mut self, meta: &RecordMeta) {
        let row = self.rows;
        if row == 0 {
            self.first_read_ms = meta.read_at_ms;
        }
        self.last_read_ms = meta.read_at_ms;
        self.offsets.push(meta.offset);
        self.hashes.push(meta.hash);
        self.has_event_times |= meta.event_time.is_some();
        self.event_times.push(meta.event_time.unwrap_or(meta.read_at_ms));
        self.rows += 1;
        self.order_before_row = self.order.len();
    }

    /// Forget what a decoder wrote of a row it then failed on: its values,
    /// and the columns it made. A pass over the window's columns, for a
    /// line that is a dead letter.
    pub fn abandon_row(&mut self) {
        for id in self.order.drain(self.order_before_row..) {
            self.fields[id as usize] = None;
        }
        for &id in &self.order {
            if let Some(column) = &mut self.fields[id as usize] {
                column.truncate(self.rows);
            }
        }
    }

    /// The columnar batch of this window.
    pub fn into_batch(self, names: &FieldNames, pipeline: &str, source: &str, partition: u32, bounds: Bounds, closed_at_ms: i64) -> Batch {
        self.named(names).into_batch(pipeline, source, partition, bounds, closed_at_ms)
    }

    /// This window with its columns' names, to be made into a batch away
    /// from the decoder that keeps the names.
    pub fn named(self, names: &FieldNames) -> NamedWindow {
        let names = self.order.iter().map(|&id| names.shared_name(id)).collect();
        let offsets = (self.offsets.iter().copied().min().unwrap_or(0), self.offsets.iter().copied().max().unwrap_or(0));
        NamedWindow { buffer: self, names, offsets }
    }
}

/// A decoder writes the next row straight into the columns, then
/// [`WindowBuffer::finish_row`] (or [`WindowBuffer::abandon_row`]).
impl ValueSink for WindowBuffer {
    fn text_buffer(&mut self, field: u32) -> &mut Vec<u8> {
        if !self.open_column(field) {
            self.repeated.clear();
            return &mut self.repeated;
        }
        &mut self.fields[field as usize].as_mut().expect("open").text
    }

    #[inline(always)]
    /// (A column's cells keep where its text ends: `start` is not needed.)
    fn value(&mut self, field: u32, kind: Kind, bits: u64, _start: usize) {
        self.with_row_column(field, |column| column.push(kind, bits));
    }

    #[inline(always)]
    fn text(&mut self, field: u32, write: impl FnOnce(&mut Vec<u8>)) {
        self.with_row_column(field, |column| {
            write(&mut column.text);
            column.push(Kind::Text, 0);
        });
    }
}

/// A closed window's buffer and its columns' names (in the order the
/// columns first appeared): building its columns (types inferred, values
/// converted, times parsed) is left to whichever thread takes it, not the
/// one decoding the next records.
#[derive(Debug)]
pub struct NamedWindow {
    buffer: WindowBuffer,
    names: Vec<Arc<str>>,
    /// The lowest and highest offset of its records.
    offsets: (u64, u64),
}

impl NamedWindow {
    /// The lowest and highest offset of its records (the batch's first and last).
    pub fn offsets(&self) -> (u64, u64) {
        self.offsets
    }

    /// The columnar batch of this window.
    pub fn into_batch(self, pipeline: &str, source: &str, partition: u32, bounds: Bounds, closed_at_ms: i64) -> Batch {
        let NamedWindow { buffer: this, names, offsets: (first_offset, last_offset) } = self;
        let rows = this.rows;
        let mut fields = this.fields;
        let columns: Vec<Column> = this
            .order
            .iter()
            .zip(&names)
            .filter_map(|(&id, name)| {
                let mut column = fields[id as usize].take()?;
                column.pad_to(rows);
                Some(column.into_column(name))
            })
            .collect();
        let event_times = if this.has_event_times { this.event_times } else { Vec::new() };
        let (start_ms, end_ms, event_basis) = match bounds.time {
            Some((s, e)) => (s, e, bounds.event_time),
            None if !event_times.is_empty() => {
                let min = event_times.iter().copied().min().unwrap_or(0);
                (min, event_times.iter().copied().max().unwrap_or(0), true)
            }
            None => match well_known_time_bounds(&columns) {
                Some((min, max)) => (min, max, true),
                None => (this.first_read_ms, this.last_read_ms, false),
            },
        };
        Batch {
            info: WindowInfo {
                pipeline: pipeline.to_string(),
                source: source.to_string(),
                partition,
                kind: bounds.kind,
                start_ms,
                end_ms,
                time_basis: if event_basis { clean_host_core::bindings::TimeBasis::Event } else { clean_host_core::bindings::TimeBasis::Processing },
                closed_at_ms,
                first_offset,
                last_offset,
                seq: bounds.seq,
            },
            row_count: rows as u32,
            columns,
            offsets: this.offsets,
            record_hashes: this.hashes,
            event_times,
        }
    }
}
