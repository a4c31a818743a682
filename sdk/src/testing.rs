//! Build batches by hand in a detector's unit tests.

use crate::{
    Batch, BatchParts, Column, ColumnValues, Detector, Reads, StringColumn, TimeBasis, WindowInfo, WindowKind, MAX_NAMED_BYTES, MAX_NAMED_COLUMNS, NULL,
    PRESENT,
};

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

    /// A boolean column; `None` is a null.
    pub fn boolean(self, name: &str, values: &[Option<bool>]) -> Self {
        let validity = validity_of(values);
        self.push(name, ColumnValues::Boolean(values.iter().map(|v| v.unwrap_or(false)).collect()), validity)
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

/// A stream of `windows` windows of `rows` order-like records that moves
/// the way real streams do, for tests that need every kind of state a
/// detector keeps: event times that advance (the last tenth late by an
/// hour), repeated records from the middle on, a log-normal `amount` that
/// doubles in the last third, an integer `items`, a `country` that meets a
/// new value halfway, an `email` with a few nulls, a boolean `paid`, a
/// `shipped_at` time with a few nulls and, for a tenth of the windows, a
/// missing `coupon` column that otherwise holds text.
pub fn realistic_windows(seed: u64, windows: usize, rows: usize) -> Vec<Batch> {
    const COUNTRIES: [&str; 5] = ["US", "DE", "GB", "FR", "JP"];
    let mut rng = Rng(seed);
    let mut time = 1_764_000_000_000i64;
    let mut hashes_seen: Vec<u64> = Vec::new();
    (0..windows)
        .map(|w| {
            let late = w * 10 >= windows * 9;
            let (mut times, mut hashes, mut offsets) = (Vec::new(), Vec::new(), Vec::new());
            let (mut amount, mut items, mut country, mut email) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let (mut emails, mut paid, mut shipped_at) = (Vec::new(), Vec::new(), Vec::new());
            for r in 0..rows {
                time += (rng.uniform() * 20.0) as i64;
                times.push(if late { time - 3_600_000 } else { time });
                offsets.push((w * rows + r) as u64);
                let repeat = w * 2 >= windows && rng.uniform() < 0.05 && !hashes_seen.is_empty();
                let hash = if repeat { hashes_seen[(rng.uniform() * hashes_seen.len() as f64) as usize] } else { rng.next_u64() };
                hashes_seen.push(hash);
                hashes.push(hash);
                let scale = if w * 3 >= windows * 2 { 2.0 } else { 1.0 };
                amount.push(Some(scale * (3.2 + 0.9 * rng.normal()).exp()));
                items.push(Some(1 + (rng.uniform() * 6.0) as i64));
                let pick = (rng.uniform() * rng.uniform() * 5.0) as usize;
                country.push(if w * 2 >= windows && rng.uniform() < 0.1 { "XX" } else { COUNTRIES[pick] });
                emails.push(format!("u{}@example.com", rng.next_u64() % 100_000));
                paid.push(Some(rng.uniform() < 0.8));
                shipped_at.push((r % 53 != 0).then(|| time + (rng.uniform() * 86_400_000.0) as i64));
            }
            for (r, e) in emails.iter().enumerate() {
                email.push(if r % 97 == 0 { None } else { Some(e.as_str()) });
            }
            let country: Vec<Option<&str>> = country.into_iter().map(Some).collect();
            let mut batch = BatchBuilder::new(w as u64)
                .records(&hashes, &offsets)
                .event_times(&times, time + 50)
                .float("amount", &amount)
                .int("items", &items)
                .text("country", &country)
                .text("email", &email)
                .boolean("paid", &paid)
                .timestamp("shipped_at", &shipped_at);
            if w % 10 != 3 {
                let coupons: Vec<Option<&str>> = (0..rows).map(|r| if r % 3 == 0 { Some("SAVE10") } else { None }).collect();
                batch = batch.text("coupon", &coupons);
            }
            let mut batch = batch.build();
            batch.info.first_offset = offsets[0];
            batch.info.last_offset = offsets[rows - 1];
            batch
        })
        .collect()
}

/// Panics unless `D` resumes from its own snapshot exactly: for every `k`
/// in `cuts`, an instance that analysed `windows[..k]`, snapshotted and was
/// restored into a fresh one (both configured with `config`) answers the
/// windows after `k` as one that analysed them all in one go. That is what
/// a restart, a reload or a partition moving to another host relies on.
pub fn assert_restore_equivalent<D: Detector>(config: &str, windows: &[Batch], cuts: impl IntoIterator<Item = usize>) {
    let fresh = || {
        let mut d = D::default();
        d.configure(config).unwrap_or_else(|e| panic!("config {config}: {e}"));
        d
    };
    // The Debug form compares every field, floats to the last bit.
    let answers = |d: &mut D, windows: &[Batch]| -> Vec<String> { windows.iter().map(|w| format!("{:?}", d.analyze(w))).collect() };
    let expected = answers(&mut fresh(), windows);
    for k in cuts {
        let mut before = fresh();
        answers(&mut before, &windows[..k]);
        let state = before.snapshot();
        let mut after = fresh();
        after.restore(&state).unwrap_or_else(|e| panic!("restore after window {k}: {e}"));
        for (i, (got, want)) in answers(&mut after, &windows[k..]).iter().zip(&expected[k..]).enumerate() {
            assert_eq!(got, want, "window {} differs when restored after window {k}", k + i);
        }
    }
}

/// `batch` as the host hands it to a detector that says it `reads` this:
/// a column whose values are not read keeps its name and row states but no
/// values, a per-row list not read is empty.
/// A `reads` the host would refuse (past [`MAX_NAMED_COLUMNS`] names or
/// [`MAX_NAMED_BYTES`] of them) panics.
pub fn as_handed(batch: &Batch, reads: &Reads) -> Batch {
    let bytes: usize = reads.columns.iter().map(String::len).sum();
    assert!(reads.columns.len() <= MAX_NAMED_COLUMNS && bytes <= MAX_NAMED_BYTES, "the host refuses reads of {} names, {bytes} bytes", reads.columns.len());
    let rows = batch.row_count as usize;
    fn list<T: Clone>(reads: &Reads, part: BatchParts, values: &[T]) -> Vec<T> {
        if reads.parts.contains(part) {
            values.to_vec()
        } else {
            Vec::new()
        }
    }
    let columns = batch
        .columns
        .iter()
        .map(|column| {
            let (part, empty) = match &column.values {
                ColumnValues::Float64(_) => (BatchParts::FLOAT64_VALUES, ColumnValues::Float64(Vec::new())),
                ColumnValues::Int64(_) => (BatchParts::INT64_VALUES, ColumnValues::Int64(Vec::new())),
                ColumnValues::Boolean(_) => (BatchParts::BOOLEAN_VALUES, ColumnValues::Boolean(Vec::new())),
                ColumnValues::Timestamp(_) => (BatchParts::TIMESTAMP_VALUES, ColumnValues::Timestamp(Vec::new())),
                ColumnValues::Text(_) => (BatchParts::TEXT_VALUES, ColumnValues::Text(StringColumn { bytes: Vec::new(), offsets: Vec::new() })),
            };
            if reads.parts.contains(part) || reads.columns.contains(&column.name) {
                return column.clone();
            }
            let validity = if column.validity.is_empty() { vec![PRESENT; rows] } else { column.validity.clone() };
            Column { name: column.name.clone(), values: empty, validity }
        })
        .collect();
    Batch {
        info: batch.info.clone(),
        row_count: batch.row_count,
        columns,
        offsets: list(reads, BatchParts::OFFSETS, &batch.offsets),
        record_hashes: list(reads, BatchParts::RECORD_HASHES, &batch.record_hashes),
        event_times: list(reads, BatchParts::EVENT_TIMES, &batch.event_times),
    }
}

/// Panics unless `D`, configured with `config`, says it reads everything
/// it reads: an instance handed each window as the host cuts it for what
/// [`Detector::reads`] names ([`as_handed`]) answers every window, and
/// snapshots its state at the end, as one handed the whole windows. A
/// left-out value it indexes panics here, as it would trap in the host.
pub fn assert_reads_suffice<D: Detector>(config: &str, windows: &[Batch]) {
    let fresh = || {
        let mut d = D::default();
        d.configure(config).unwrap_or_else(|e| panic!("config {config}: {e}"));
        d
    };
    let (mut whole, mut cut) = (fresh(), fresh());
    let reads = cut.reads();
    for (i, window) in windows.iter().enumerate() {
        // The Debug form compares every field, floats to the last bit.
        let want = format!("{:?}", whole.analyze(window));
        let got = format!("{:?}", cut.analyze(&as_handed(window, &reads)));
        assert_eq!(got, want, "window {i} differs when cut to what {config} reads ({reads:?})");
    }
    assert!(whole.snapshot() == cut.snapshot(), "the state after the windows differs when they are cut to what {config} reads");
}
