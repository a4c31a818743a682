//! Build batches by hand in a detector's unit tests.

use crate::{Batch, Column, ColumnValues, StringColumn, TimeBasis, WindowInfo, WindowKind, NULL, PRESENT};

/// A batch under construction; every column must have the same number of rows.
pub struct BatchBuilder {
    batch: Batch,
}

impl BatchBuilder {
    /// An empty window `seq` of pipeline "test".
    pub fn new(seq: u64) -> Self {
        BatchBuilder {
            batch: Batch {
                info: WindowInfo {
                    pipeline: "test".into(),
                    source: "test".into(),
                    partition: 0,
                    kind: WindowKind::Count,
                    start_ms: 0,
                    end_ms: 0,
                    time_basis: TimeBasis::Processing,
                    closed_at_ms: 0,
                    first_offset: 0,
                    last_offset: 0,
                    seq,
                },
                row_count: 0,
                columns: Vec::new(),
                offsets: Vec::new(),
                record_hashes: Vec::new(),
                event_times: Vec::new(),
            },
        }
    }

    fn push(mut self, name: &str, values: ColumnValues, validity: Vec<u8>) -> Self {
        let column = Column { name: name.into(), values, validity };
        let rows = column.len() as u32;
        assert!(self.batch.columns.is_empty() || self.batch.row_count == rows, "column {name} has {rows} rows, the batch {}", self.batch.row_count);
        self.batch.row_count = rows;
        self.batch.columns.push(column);
        self
    }

    /// A float column; `None` is a null.
    pub fn float(self, name: &str, values: &[Option<f64>]) -> Self {
        let validity = validity_of(values);
        self.push(name, ColumnValues::Float64(values.iter().map(|v| v.unwrap_or(0.0)).collect()), validity)
    }

    /// An integer column; `None` is a null.
    pub fn int(self, name: &str, values: &[Option<i64>]) -> Self {
        let validity = validity_of(values);
        self.push(name, ColumnValues::Int64(values.iter().map(|v| v.unwrap_or(0)).collect()), validity)
    }

    /// A timestamp column (ms since the epoch); `None` is a null.
    pub fn timestamp(self, name: &str, values: &[Option<i64>]) -> Self {
        let validity = validity_of(values);
        self.push(name, ColumnValues::Timestamp(values.iter().map(|v| v.unwrap_or(0)).collect()), validity)
    }

    /// A text column; `None` is a null.
    pub fn text(self, name: &str, values: &[Option<&str>]) -> Self {
        let validity = validity_of(values);
        let mut bytes = Vec::new();
        let mut offsets = vec![0u32];
        for v in values {
            bytes.extend_from_slice(v.unwrap_or("").as_bytes());
            offsets.push(bytes.len() as u32);
        }
        self.push(name, ColumnValues::Text(StringColumn { bytes, offsets }), validity)
    }

    /// Set one row's validity state in the last column added (e.g. `MISSING`).
    pub fn mark(mut self, row: usize, state: u8) -> Self {
        let rows = self.batch.row_count as usize;
        let column = self.batch.columns.last_mut().expect("add a column first");
        if column.validity.is_empty() {
            column.validity = vec![PRESENT; rows];
        }
        column.validity[row] = state;
        self
    }

    /// A time window `[start_ms, end_ms)` of `kind`.
    pub fn time_window(mut self, kind: WindowKind, start_ms: i64, end_ms: i64) -> Self {
        self.batch.info.kind = kind;
        self.batch.info.start_ms = start_ms;
        self.batch.info.end_ms = end_ms;
        self
    }

    /// Per-row record hashes and offsets.
    pub fn records(mut self, hashes: &[u64], offsets: &[u64]) -> Self {
        self.batch.record_hashes = hashes.to_vec();
        self.batch.offsets = offsets.to_vec();
        self.batch.row_count = hashes.len() as u32;
        self
    }

    /// Per-row event times, and the window bounds taken from them.
    pub fn event_times(mut self, times: &[i64], closed_at_ms: i64) -> Self {
        self.batch.event_times = times.to_vec();
        self.batch.info.time_basis = TimeBasis::Event;
        self.batch.info.start_ms = times.iter().copied().min().unwrap_or(0);
        self.batch.info.end_ms = times.iter().copied().max().unwrap_or(0);
        self.batch.info.closed_at_ms = closed_at_ms;
        self.batch.row_count = times.len() as u32;
        self
    }

    pub fn build(self) -> Batch {
        self.batch
    }
}

fn validity_of<T>(values: &[Option<T>]) -> Vec<u8> {
    if values.iter().all(Option::is_some) {
        Vec::new()
    } else {
        values.iter().map(|v| if v.is_some() { PRESENT } else { NULL }).collect()
    }
}

/// A tiny seeded random source for test data (SplitMix64).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}
