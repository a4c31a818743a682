//! Typed, zero-copy reads of a batch's columns.

use crate::stats::first_failing;
use crate::{Batch, Column, ColumnValues};

/// Row states in [`Column::validity`], as the WIT contract numbers them.
pub const PRESENT: u8 = 0;
pub const NULL: u8 = 1;
pub const MISSING: u8 = 2;
pub const WRONG_TYPE: u8 = 3;

/// One cell of a column, borrowed from the batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    Null,
    Missing,
    WrongType,
    Float(f64),
    Int(i64),
    Bool(bool),
    Time(i64),
    Text(&'a str),
}

impl Column {
    /// Rows in the column (the batch's row count), also when the detector
    /// does not read its values (see [`crate::Reads`]): they are then left
    /// out, and the row states are always there.
    pub fn len(&self) -> usize {
        let values = match &self.values {
            ColumnValues::Float64(v) => v.len(),
            ColumnValues::Int64(v) | ColumnValues::Timestamp(v) => v.len(),
            ColumnValues::Boolean(v) => v.len(),
            ColumnValues::Text(s) => s.offsets.len().saturating_sub(1),
        };
        values.max(self.validity.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The row's state: [`PRESENT`], [`NULL`], [`MISSING`] or [`WRONG_TYPE`].
    pub fn state(&self, row: usize) -> u8 {
        self.validity.get(row).copied().unwrap_or(PRESENT)
    }

    pub fn is_present(&self, row: usize) -> bool {
        self.state(row) == PRESENT
    }

    /// The runs of present rows among the first `rows` (the values handed
    /// over), in order: the whole column when none is absent. So a caller
    /// can take a run's values at once (`extend_from_slice`), not row by
    /// row: in wasm a loop over rows costs several times a copy.
    pub fn present_runs(&self, rows: usize) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        let states = &self.validity[..self.validity.len().min(rows)];
        let mut from = 0;
        std::iter::from_fn(move || {
            let run = present_run(states, from, rows);
            from = run.end;
            (!run.is_empty()).then_some(run)
        })
    }

    /// How many rows are in `state`.
    pub fn count(&self, state: u8) -> usize {
        if self.validity.is_empty() {
            return if state == PRESENT { self.len() } else { 0 };
        }
        // Eight row states at a time: a byte of `x` is 0 exactly where a row
        // is in `state`, and the sum below sets its high bit everywhere else.
        const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
        let spread = u64::from(state) * 0x0101_0101_0101_0101;
        let in_state = |word: u64| {
            let x = word ^ spread;
            (!(((x & LOW7) + LOW7) | x | LOW7)).count_ones() as usize
        };
        let word = |bytes: &[u8]| u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
        // A block of 32 rows all PRESENT (0), as the states of a column whose
        // values are left out usually are, is told by one test.
        let mut blocks = self.validity.chunks_exact(32);
        let mut n = 0;
        for block in &mut blocks {
            let words = [word(&block[..8]), word(&block[8..16]), word(&block[16..24]), word(&block[24..])];
            n += match words[0] | words[1] | words[2] | words[3] {
                0 if state == PRESENT => 32,
                0 => 0,
                _ => words.into_iter().map(in_state).sum(),
            };
        }
        let mut chunks = blocks.remainder().chunks_exact(8);
        for chunk in &mut chunks {
            n += in_state(word(chunk));
        }
        n + chunks.remainder().iter().filter(|&&s| s == state).count()
    }

    /// The column's type as the WIT names it.
    pub fn type_name(&self) -> &'static str {
        match &self.values {
            ColumnValues::Float64(_) => "float64",
            ColumnValues::Int64(_) => "int64",
            ColumnValues::Boolean(_) => "boolean",
            ColumnValues::Timestamp(_) => "timestamp",
            ColumnValues::Text(_) => "text",
        }
    }

    /// The string at `row` of a text column ("" for other types or absent rows).
    pub fn text(&self, row: usize) -> &str {
        std::str::from_utf8(self.bytes(row)).unwrap_or("")
    }

    /// The UTF-8 bytes at `row` of a text column, unchecked and uncopied: the
    /// fastest way to compare or hash strings.
    pub fn bytes(&self, row: usize) -> &[u8] {
        match &self.values {
            ColumnValues::Text(s) => {
                let (a, b) = (s.offsets[row] as usize, s.offsets[row + 1] as usize);
                s.bytes.get(a..b).unwrap_or_default()
            }
            _ => &[],
        }
    }

    pub fn cell(&self, row: usize) -> Cell<'_> {
        match self.state(row) {
            NULL => return Cell::Null,
            MISSING => return Cell::Missing,
            WRONG_TYPE => return Cell::WrongType,
            _ => {}
        }
        match &self.values {
            ColumnValues::Float64(v) => Cell::Float(v[row]),
            ColumnValues::Int64(v) => Cell::Int(v[row]),
            ColumnValues::Boolean(v) => Cell::Bool(v[row]),
            ColumnValues::Timestamp(v) => Cell::Time(v[row]),
            ColumnValues::Text(_) => Cell::Text(self.text(row)),
        }
    }

    /// Numbers as `f64`, for float and integer columns only.
    pub fn numeric(&self) -> Option<NumericView<'_>> {
        match &self.values {
            ColumnValues::Float64(_) | ColumnValues::Int64(_) => Some(NumericView { column: self }),
            _ => None,
        }
    }
}

/// A float or integer column read as `f64`.
#[derive(Clone, Copy)]
pub struct NumericView<'a> {
    column: &'a Column,
}

impl<'a> NumericView<'a> {
    pub fn get(&self, row: usize) -> f64 {
        match &self.column.values {
            ColumnValues::Float64(v) => v[row],
            ColumnValues::Int64(v) => v[row] as f64,
            _ => f64::NAN,
        }
    }

    /// Values handed over: none when the detector does not read the column's.
    pub(crate) fn handed(&self) -> usize {
        match &self.column.values {
            ColumnValues::Float64(v) => v.len(),
            ColumnValues::Int64(v) => v.len(),
            _ => 0,
        }
    }

    /// `(row, value)` of every present, finite value (a row past the end of
    /// the row states is present, as in [`Column::state`]).
    pub fn present(self) -> impl Iterator<Item = (u32, f64)> + 'a {
        let column = self.column;
        (0..self.handed()).filter(move |&r| column.is_present(r)).map(move |r| (r as u32, self.get(r))).filter(|(_, v)| v.is_finite())
    }

    /// [`NumericView::present`] into `rows` and `values` (cleared first),
    /// buffers a detector keeps from column to column. Each run of present
    /// rows (the whole column when none is absent) with every value finite,
    /// the usual case, is copied at once, not row by row: in wasm a loop
    /// over rows costs several times a copy.
    pub fn present_into(self, rows: &mut Vec<u32>, values: &mut Vec<f64>) {
        rows.clear();
        values.clear();
        for run in self.column.present_runs(self.handed()) {
            let whole = |rows: &mut Vec<u32>| rows.extend(run.start as u32..run.end as u32);
            match &self.column.values {
                ColumnValues::Float64(v) if first_failing(&v[run.clone()], f64::is_finite).is_none() => {
                    values.extend_from_slice(&v[run.clone()]);
                    whole(rows);
                }
                // A NaN or an infinity in the run: its finite values one by one.
                ColumnValues::Float64(v) => {
                    for (row, &x) in run.clone().zip(&v[run.clone()]).filter(|(_, x)| x.is_finite()) {
                        rows.push(row as u32);
                        values.push(x);
                    }
                }
                ColumnValues::Int64(v) => {
                    values.extend(v[run.clone()].iter().map(|&x| x as f64));
                    whole(rows);
                }
                _ => {}
            }
        }
    }
}

/// The first run of present rows from row `from` on, of `len` rows whose
/// `states` may end early (the rows past them are present); empty at the end.
fn present_run(states: &[u8], from: usize, len: usize) -> std::ops::Range<usize> {
    let absent = |r: usize| states.get(r).is_some_and(|&s| s != PRESENT);
    let mut start = from;
    while start < len && absent(start) {
        start += 1;
    }
    let mut end = start;
    // Eight states at a time while they are all PRESENT.
    while let Some(word) = states.get(end..end + 8) {
        if u64::from_le_bytes(word.try_into().expect("8 bytes")) != u64::from_le_bytes([PRESENT; 8]) {
            break;
        }
        end += 8;
    }
    while states.get(end) == Some(&PRESENT) {
        end += 1;
    }
    if end == states.len() {
        end = len;
    }
    start..end
}

impl Batch {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}
