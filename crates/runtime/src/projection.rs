//! What of each window a detector reads, and the batch it is handed.
//!
//! Copying a window into a plugin costs about a microsecond a column, and
//! most detectors read few of its values: schema and completeness only the
//! names and row states, volume and freshness the times. A detector that
//! says what it reads (the WIT's optional `projection`) is handed a batch
//! without the rest. Cutting a batch down means copying what is kept, which
//! costs the host about what copying it into the plugin costs, so a batch is
//! cut only when the detector reads less than half of it.

use std::collections::HashSet;

use clean_host_core::bindings::row_state::PRESENT;
use clean_host_core::bindings::{Batch, BatchParts, Column, ColumnValues, Reads, StringColumn};

use crate::PluginFault;

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

    /// A per-row list, or an empty one when it is not read.
    fn list<T: Clone>(&self, part: BatchParts, values: &[T]) -> Vec<T> {
        if self.parts.contains(part) {
            values.to_vec()
        } else {
            Vec::new()
        }
    }

    fn reads_values(&self, column: &Column) -> bool {
        self.parts.contains(values_part(&column.values)) || self.columns.contains(&column.name)
    }

    /// `batch` without what the detector does not read, or `None` when it
    /// reads at least half of it (the whole batch is then cheaper to hand over).
    pub fn apply(&self, batch: &Batch) -> Option<Batch> {
        let rows = batch.row_count as usize;
        let lists = [
            (BatchParts::OFFSETS, 8 * batch.offsets.len()),
            (BatchParts::RECORD_HASHES, 8 * batch.record_hashes.len()),
            (BatchParts::EVENT_TIMES, 8 * batch.event_times.len()),
        ];
        let (mut kept, mut total) = (0, 0);
        for (part, bytes) in lists {
            total += bytes;
            kept += if self.parts.contains(part) { bytes } else { 0 };
        }
        let read: Vec<bool> = batch.columns.iter().map(|column| self.reads_values(column)).collect();
        for (column, &read) in batch.columns.iter().zip(&read) {
            let values = values_bytes(&column.values);
            total += values + column.validity.len();
            kept += if read { values + column.validity.len() } else { rows };
        }
        if 2 * kept >= total {
            return None;
        }
        Some(Batch {
            info: batch.info.clone(),
            row_count: batch.row_count,
            columns: batch
                .columns
                .iter()
                .zip(read)
                .map(|(column, read)| {
                    if read {
                        return column.clone();
                    }
                    Column {
                        name: column.name.clone(),
                        values: empty_like(&column.values),
                        validity: if column.validity.is_empty() { vec![PRESENT; rows] } else { column.validity.clone() },
                    }
                })
                .collect(),
            offsets: self.list(BatchParts::OFFSETS, &batch.offsets),
            record_hashes: self.list(BatchParts::RECORD_HASHES, &batch.record_hashes),
            event_times: self.list(BatchParts::EVENT_TIMES, &batch.event_times),
        })
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

/// Bytes a column's values take in a plugin's memory.
fn values_bytes(values: &ColumnValues) -> usize {
    match values {
        ColumnValues::Float64(v) => 8 * v.len(),
        ColumnValues::Int64(v) | ColumnValues::Timestamp(v) => 8 * v.len(),
        ColumnValues::Boolean(v) => v.len(),
        ColumnValues::Text(s) => s.bytes.len() + 4 * s.offsets.len(),
    }
}

/// No values, of the same type.
fn empty_like(values: &ColumnValues) -> ColumnValues {
    match values {
        ColumnValues::Float64(_) => ColumnValues::Float64(Vec::new()),
        ColumnValues::Int64(_) => ColumnValues::Int64(Vec::new()),
        ColumnValues::Boolean(_) => ColumnValues::Boolean(Vec::new()),
        ColumnValues::Timestamp(_) => ColumnValues::Timestamp(Vec::new()),
        ColumnValues::Text(_) => ColumnValues::Text(StringColumn { bytes: Vec::new(), offsets: Vec::new() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::tests::info;

    fn batch() -> Batch {
        let rows = 4;
        let column = |name: &str, values| Column { name: name.into(), values, validity: Vec::new() };
        Batch {
            info: info(),
            row_count: rows,
            columns: vec![
                column("amount", ColumnValues::Float64(vec![1.5; 4])),
                column("qty", ColumnValues::Int64(vec![7; 4])),
                Column {
                    name: "status".into(),
                    values: ColumnValues::Text(StringColumn { bytes: b"okokokno".to_vec(), offsets: vec![0, 2, 4, 6, 8] }),
                    validity: vec![0, 1, 0, 2],
                },
                column("at", ColumnValues::Timestamp(vec![5; 4])),
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

    /// The bindings' types do not compare; their debug forms do.
    fn same<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
        format!("{a:?}") == format!("{b:?}")
    }

    #[test]
    fn what_is_not_read_is_left_out_and_row_states_stay() {
        let b = batch();
        let p = Projection::new(reads(BatchParts::TIMESTAMP_VALUES | BatchParts::EVENT_TIMES, &["qty"])).unwrap().unwrap();
        let cut = p.apply(&b).expect("reads far less than half");
        assert!(same(&cut.info, &b.info) && cut.row_count == 4);
        assert_eq!(cut.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["amount", "qty", "status", "at"]);
        // Left out: no values of their type, every row's state.
        assert!(matches!(&cut.columns[0].values, ColumnValues::Float64(v) if v.is_empty()));
        assert_eq!(cut.columns[0].validity, [0; 4]);
        assert!(matches!(&cut.columns[2].values, ColumnValues::Text(s) if s.bytes.is_empty() && s.offsets.is_empty()));
        assert_eq!(cut.columns[2].validity, [0, 1, 0, 2]);
        // Read: named, or of a type it reads.
        assert!(same(&cut.columns[1], &b.columns[1]) && same(&cut.columns[3], &b.columns[3]));
        assert_eq!((cut.offsets.len(), cut.record_hashes.len(), cut.event_times), (0, 0, b.event_times));
    }

    #[test]
    fn a_batch_mostly_read_is_handed_over_whole() {
        let b = batch();
        let most = BatchParts::FLOAT64_VALUES | BatchParts::INT64_VALUES | BatchParts::TIMESTAMP_VALUES | BatchParts::RECORD_HASHES | BatchParts::EVENT_TIMES;
        assert!(Projection::new(reads(most, &[])).unwrap().unwrap().apply(&b).is_none());
        assert!(Projection::new(reads(BatchParts::empty(), &[])).unwrap().unwrap().apply(&b).is_some());
    }
}
