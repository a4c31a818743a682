//! What of each window a detector reads, and the batch it is handed.
//!
//! Copying a window into a plugin costs about a microsecond a column, and
//! most detectors read few of its values: schema and completeness only the
//! names and row states, volume and freshness the times. A detector that
//! says what it reads (the WIT's optional `projection`) is handed a batch
//! without the rest. That batch is a [`BatchView`]: the window's own lists,
//! borrowed and lowered into the plugin from where they are, so leaving a
//! part out costs the host nothing.

use std::collections::HashSet;

use clean_host_core::bindings::{Batch, BatchParts, Column, ColumnValues, Reads, WindowInfo};
use wasmtime::component::{ComponentType, Lower};

use crate::{PluginFault, Window};

/// Most columns a detector may name in what it reads.
const MAX_NAMED_COLUMNS: usize = 1024;
/// Most bytes those names may take together.
const MAX_NAMED_BYTES: usize = 64 << 10;

/// What a detector reads of each window, when it reads less than all of it.
#[derive(Debug, PartialEq)]
pub struct Projection {
    parts: BatchParts,
    /// Columns read whatever their type.
    columns: HashSet<String>,
}

impl Projection {
    /// What a detector's `reads` said: `None` when that is everything.
    pub fn new(reads: Reads) -> Result<Option<Self>, PluginFault> {
        let bytes: usize = reads.columns.iter().map(String::len).sum();
        if reads.columns.len() > MAX_NAMED_COLUMNS || bytes > MAX_NAMED_BYTES {
            let message = format!("reads names {} columns of {bytes} bytes (at most {MAX_NAMED_COLUMNS}, {MAX_NAMED_BYTES} bytes)", reads.columns.len());
            return Err(PluginFault::InvalidOutput(message));
        }
        Ok((reads.parts != BatchParts::all()).then(|| Projection { parts: reads.parts, columns: reads.columns.into_iter().collect() }))
    }

    fn reads_values(&self, column: &Column) -> bool {
        self.parts.contains(values_part(&column.values)) || self.columns.contains(&column.name)
    }
}

/// A window's batch as one detector is handed it (the WIT's `batch`): the
/// window's lists, borrowed, with what the detector does not read left out.
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct BatchView<'a> {
    pub info: &'a WindowInfo,
    #[component(name = "row-count")]
    pub row_count: u32,
    pub columns: Vec<ColumnView<'a>>,
    /// Empty when not read, as are the two lists below.
    pub offsets: &'a [u64],
    #[component(name = "record-hashes")]
    pub record_hashes: &'a [u64],
    #[component(name = "event-times")]
    pub event_times: &'a [i64],
}

/// One column of a [`BatchView`] (the WIT's `column`).
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct ColumnView<'a> {
    pub name: &'a str,
    /// No values, of the column's type, when they are not read.
    pub values: ValuesView<'a>,
    /// Every row's state when the values are not read, even where the
    /// window has none (every row present).
    pub validity: &'a [u8],
}

/// A column's values (the WIT's `column-values`).
#[derive(ComponentType, Lower)]
#[component(variant)]
pub enum ValuesView<'a> {
    #[component(name = "float64")]
    Float64(&'a [f64]),
    #[component(name = "int64")]
    Int64(&'a [i64]),
    #[component(name = "boolean")]
    Boolean(&'a [bool]),
    #[component(name = "timestamp")]
    Timestamp(&'a [i64]),
    #[component(name = "text")]
    Text(TextView<'a>),
}

/// A text column's strings in one buffer (the WIT's `string-column`).
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct TextView<'a> {
    pub bytes: &'a [u8],
    pub offsets: &'a [u32],
}

impl<'a> BatchView<'a> {
    /// `window`'s batch as a detector that reads what `projection` says
    /// (everything, without one) is handed it.
    pub fn of(window: &'a Window, projection: Option<&Projection>) -> Self {
        let batch: &'a Batch = window.batch();
        let reads = |part: BatchParts| projection.is_none_or(|p| p.parts.contains(part));
        let columns = batch
            .columns
            .iter()
            .map(|column| match projection {
                Some(p) if !p.reads_values(column) => ColumnView {
                    name: &column.name,
                    values: ValuesView::none_like(&column.values),
                    validity: if column.validity.is_empty() { window.every_row_present() } else { &column.validity },
                },
                _ => ColumnView { name: &column.name, values: ValuesView::of(&column.values), validity: &column.validity },
            })
            .collect();
        BatchView {
            info: &batch.info,
            row_count: batch.row_count,
            columns,
            offsets: if reads(BatchParts::OFFSETS) { &batch.offsets } else { &[] },
            record_hashes: if reads(BatchParts::RECORD_HASHES) { &batch.record_hashes } else { &[] },
            event_times: if reads(BatchParts::EVENT_TIMES) { &batch.event_times } else { &[] },
        }
    }
}

impl<'a> ValuesView<'a> {
    fn of(values: &'a ColumnValues) -> Self {
        match values {
            ColumnValues::Float64(v) => ValuesView::Float64(v),
            ColumnValues::Int64(v) => ValuesView::Int64(v),
            ColumnValues::Boolean(v) => ValuesView::Boolean(v),
            ColumnValues::Timestamp(v) => ValuesView::Timestamp(v),
            ColumnValues::Text(s) => ValuesView::Text(TextView { bytes: &s.bytes, offsets: &s.offsets }),
        }
    }

    /// No values, of the same type.
    fn none_like(values: &ColumnValues) -> Self {
        match values {
            ColumnValues::Float64(_) => ValuesView::Float64(&[]),
            ColumnValues::Int64(_) => ValuesView::Int64(&[]),
            ColumnValues::Boolean(_) => ValuesView::Boolean(&[]),
            ColumnValues::Timestamp(_) => ValuesView::Timestamp(&[]),
            ColumnValues::Text(_) => ValuesView::Text(TextView { bytes: &[], offsets: &[] }),
        }
    }
}

/// The part of a batch a column's values are.
fn values_part(values: &ColumnValues) -> BatchParts {
    match values {
        ColumnValues::Float64(_) => BatchParts::FLOAT64_VALUES,
        ColumnValues::Int64(_) => BatchParts::INT64_VALUES,
        ColumnValues::Boolean(_) => BatchParts::BOOLEAN_VALUES,
        ColumnValues::Timestamp(_) => BatchParts::TIMESTAMP_VALUES,
        ColumnValues::Text(_) => BatchParts::TEXT_VALUES,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::tests::info;
    use clean_host_core::bindings::StringColumn;

    fn batch() -> Batch {
        let rows = 4;
        // Row states of their own but for `amount`'s (every row present).
        let column = |name: &str, values, validity: &[u8]| Column { name: name.into(), values, validity: validity.to_vec() };
        Batch {
            info: info(),
            row_count: rows,
            columns: vec![
                column("amount", ColumnValues::Float64(vec![1.5; 4]), &[]),
                column("qty", ColumnValues::Int64(vec![7; 4]), &[0, 0, 1, 0]),
                Column {
                    name: "status".into(),
                    values: ColumnValues::Text(StringColumn { bytes: b"okokokno".to_vec(), offsets: vec![0, 2, 4, 6, 8] }),
                    validity: vec![0, 1, 0, 2],
                },
                column("at", ColumnValues::Timestamp(vec![5; 4]), &[3, 0, 0, 0]),
            ],
            offsets: vec![0, 1, 2, 3],
            record_hashes: vec![9; 4],
            event_times: vec![5; 4],
        }
    }

    fn reads(parts: BatchParts, columns: &[&str]) -> Reads {
        Reads { parts, columns: columns.iter().map(|c| c.to_string()).collect() }
    }

    #[test]
    fn reading_everything_is_no_projection_and_too_many_names_are_refused() {
        assert_eq!(Projection::new(reads(BatchParts::all(), &["amount"])).unwrap(), None);
        let names: Vec<String> = (0..=MAX_NAMED_COLUMNS).map(|i| format!("c{i}")).collect();
        let error = Projection::new(Reads { parts: BatchParts::empty(), columns: names }).unwrap_err();
        assert!(error.to_string().contains("reads names 1025 columns of 4015 bytes (at most 1024, 65536 bytes)"), "{error}");
        let long = Reads { parts: BatchParts::empty(), columns: vec!["x".repeat(MAX_NAMED_BYTES + 1)] };
        assert!(Projection::new(long).is_err());
    }

    /// Whether `view` is the whole of `list` (not empty), where it is: nothing copied.
    fn borrows<T>(view: &[T], list: &[T]) -> bool {
        !list.is_empty() && std::ptr::eq(view, list)
    }

    fn values_of(view: &ValuesView) -> (*const u8, usize) {
        match view {
            ValuesView::Float64(v) => (v.as_ptr().cast(), v.len()),
            ValuesView::Int64(v) | ValuesView::Timestamp(v) => (v.as_ptr().cast(), v.len()),
            ValuesView::Boolean(v) => (v.as_ptr().cast(), v.len()),
            ValuesView::Text(s) => (s.bytes.as_ptr(), s.offsets.len()),
        }
    }

    #[test]
    fn what_is_not_read_is_left_out_and_row_states_stay() {
        let window = Window::new(batch());
        let b = window.batch();
        let p = Projection::new(reads(BatchParts::TIMESTAMP_VALUES | BatchParts::EVENT_TIMES, &["qty"])).unwrap().unwrap();
        let view = BatchView::of(&window, Some(&p));
        assert!(std::ptr::eq(view.info, &b.info) && view.row_count == 4);
        assert_eq!(view.columns.iter().map(|c| c.name).collect::<Vec<_>>(), ["amount", "qty", "status", "at"]);
        // Left out: no values of their type, every row's state.
        assert!(matches!(view.columns[0].values, ValuesView::Float64([])));
        assert_eq!(view.columns[0].validity, [0; 4]);
        assert!(matches!(&view.columns[2].values, ValuesView::Text(s) if s.bytes.is_empty() && s.offsets.is_empty()));
        assert!(borrows(view.columns[2].validity, &b.columns[2].validity));
        // Read: named, or of a type it reads, the window's own lists.
        for at in [1, 3] {
            let (ColumnValues::Int64(window_values) | ColumnValues::Timestamp(window_values)) = &b.columns[at].values else { unreachable!() };
            assert_eq!(values_of(&view.columns[at].values), (window_values.as_ptr().cast(), 4), "column {at}");
            assert!(borrows(view.columns[at].validity, &b.columns[at].validity));
        }
        assert!(view.offsets.is_empty() && view.record_hashes.is_empty() && borrows(view.event_times, &b.event_times));
        // However little it reads, even with every part left out.
        let none = Projection::new(reads(BatchParts::empty(), &[])).unwrap().unwrap();
        let view = BatchView::of(&window, Some(&none));
        assert!(view.columns.iter().all(|c| values_of(&c.values).1 == 0 && c.validity.len() == 4));
        assert!(view.event_times.is_empty());
    }

    #[test]
    fn without_a_projection_every_list_is_handed_where_it_is() {
        let window = Window::new(batch());
        let b = window.batch();
        let view = BatchView::of(&window, None);
        assert!(borrows(view.offsets, &b.offsets) && borrows(view.record_hashes, &b.record_hashes) && borrows(view.event_times, &b.event_times));
        for (view, column) in view.columns.iter().zip(&b.columns) {
            assert_eq!(view.name, column.name);
            assert!(borrows(view.validity, &column.validity) || (column.validity.is_empty() && view.validity.is_empty()), "{}", column.name);
        }
        let ColumnValues::Text(status) = &b.columns[2].values else { unreachable!() };
        assert!(matches!(&view.columns[2].values, ValuesView::Text(s) if borrows(s.bytes, &status.bytes) && borrows(s.offsets, &status.offsets)));
        let ColumnValues::Float64(amount) = &b.columns[0].values else { unreachable!() };
        assert!(matches!(view.columns[0].values, ValuesView::Float64(v) if borrows(v, amount)));
    }
}
