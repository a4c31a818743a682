//! A closed window as detectors are handed it: its batch, and what the host
//! works out of it once for every detector that asks (the WIT's `window`
//! import, since 0.1.2).
//!
//! Grouping a text column's rows by value and sorting a numeric column cost
//! a detector in wasm several times what they cost here, and drift and
//! validity both group the same category columns every window. Each summary
//! is made on the first ask, by whichever detector's thread asks first (the
//! others wait for it), and then copied into every plugin that asks.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, LazyLock, OnceLock};

use clean_host_core::bindings::row_state::{is_present, present_values, PRESENT};
use clean_host_core::bindings::window::DistinctValues;
use clean_host_core::bindings::{Batch, ColumnValues, StringColumn};
use clean_host_core::short_bytes;

/// In [`DistinctValues::rows`]: a row with no value.
const ABSENT: u32 = u32::MAX;

/// One window's batch and its summaries, shared by the calls that analyse it.
pub struct Window {
    batch: Batch,
    /// Per column, made on the first ask.
    distinct: Vec<OnceLock<Option<DistinctValues>>>,
    sorted: Vec<OnceLock<Option<Vec<f64>>>>,
    /// Every row present: the row states of a column that has none, for
    /// detectors handed its states without its values.
    every_row_present: OnceLock<Vec<u8>>,
}

impl Window {
    pub fn new(batch: Batch) -> Arc<Self> {
        let columns = batch.columns.len();
        Arc::new(Window {
            batch,
            distinct: (0..columns).map(|_| OnceLock::new()).collect(),
            sorted: (0..columns).map(|_| OnceLock::new()).collect(),
            every_row_present: OnceLock::new(),
        })
    }

    pub fn batch(&self) -> &Batch {
        &self.batch
    }

    /// A row state for each row, each of them present.
    pub fn every_row_present(&self) -> &[u8] {
        self.every_row_present.get_or_init(|| vec![PRESENT; self.batch.row_count as usize])
    }

    /// Text column `column` grouped by value; `None` for other columns.
    pub fn distinct_values(&self, column: u32) -> Option<&DistinctValues> {
        let at = column as usize;
        self.distinct.get(at)?.get_or_init(|| distinct_values(&self.batch, at)).as_ref()
    }

    /// The present, finite values of numeric column `column`, ascending.
    pub fn sorted_values(&self, column: u32) -> Option<&[f64]> {
        let at = column as usize;
        self.sorted.get(at)?.get_or_init(|| sorted_values(&self.batch, at)).as_deref()
    }
}

fn distinct_values(batch: &Batch, at: usize) -> Option<DistinctValues> {
    let column = &batch.columns[at];
    let ColumnValues::Text(text) = &column.values else {
        return None;
    };
    let rows = text.offsets.len().saturating_sub(1);
    // Values of up to 7 bytes (codes, countries, statuses) are keyed by one
    // integer: no byte string hashed or compared. Longer ones by their bytes.
    let mut short: HashMap<u64, u32, SeededHash> = HashMap::with_hasher(SeededHash);
    // In front of it, each short value's place as last seen, by a few bits
    // of the value: a window's categories find theirs after their first row
    // (values made to share those bits only fall back to the map).
    let mut recent = [(NO_SHORT_KEY, 0u32); SHORT_SLOTS];
    let mut index: HashMap<Value, u32, SeededHash> = HashMap::with_hasher(SeededHash);
    let mut values = StringColumn { bytes: Vec::new(), offsets: vec![0] };
    let mut of_rows = Vec::with_capacity(rows);
    // Each row's value from where it starts to where the next one does.
    let ends = text.offsets.get(1..).unwrap_or_default();
    for (row, (&start, &end)) in text.offsets.iter().zip(ends).enumerate() {
        if !is_present(&column.validity, row) {
            of_rows.push(ABSENT);
            continue;
        }
        let (start, end) = (start as usize, end as usize);
        let bytes = || text.bytes.get(start..end).unwrap_or_default();
        // The next value's place, should this one be new.
        let next = values.offsets.len() as u32 - 1;
        let at = match short_key(&text.bytes, start, end) {
            Some(key) => {
                let slot = &mut recent[slot_of(key)];
                if slot.0 == key {
                    slot.1
                } else {
                    let at = *short.entry(key).or_insert(next);
                    *slot = (key, at);
                    at
                }
            }
            None => *index.entry(Value(bytes())).or_insert(next),
        };
        if at == next {
            values.bytes.extend_from_slice(bytes());
            values.offsets.push(values.bytes.len() as u32);
        }
        of_rows.push(at);
    }
    // Counted apart: the loop above keeps fewer values in registers.
    let mut counts = vec![0u32; values.offsets.len() - 1];
    for &at in &of_rows {
        // An absent row (`ABSENT`) is past every value: none to count.
        if let Some(count) = counts.get_mut(at as usize) {
            *count += 1;
        }
    }
    Some(DistinctValues { values, counts, rows: of_rows })
}

/// Places remembered in front of the short values' map (a power of two).
const SHORT_SLOTS: usize = 64;
/// No [`short_key`]: its top byte, a length, is at most 7.
const NO_SHORT_KEY: u64 = u64::MAX;
const _: () = assert!(NO_SHORT_KEY >> 56 > 7 && SHORT_SLOTS.is_power_of_two() && SHORT_SLOTS >= 2);

/// The remembered place of a [`short_key`]: the top bits of its product
/// with 2^64 / phi (Fibonacci hashing), which every byte of it moves.
fn slot_of(key: u64) -> usize {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SHORT_SLOTS.trailing_zeros())) as usize
}

/// The value at `all[start..end]`, when it has at most 7 bytes, as one
/// integer: its bytes in the low ones (the rest zero) and its length in the
/// top one, so that no two such values share a key; `None` for a longer
/// value. Read in place as one word masked to its length; copied into one
/// within eight bytes of the end (out of range: as the empty value).
#[inline]
fn short_key(all: &[u8], start: usize, end: usize) -> Option<u64> {
    let n = end.wrapping_sub(start);
    let word = match all.get(start..start.saturating_add(8)) {
        Some(word) if n <= 7 => u64::from_le_bytes(word.try_into().expect("8 bytes")) & ((1u64 << (8 * n)) - 1),
        _ => return short_key_copied(all.get(start..end).unwrap_or_default()),
    };
    Some(word | (n as u64) << 56)
}

/// [`short_key`] of `bytes` copied into a zeroed word.
fn short_key_copied(bytes: &[u8]) -> Option<u64> {
    let n = bytes.len();
    if n > 7 {
        return None;
    }
    let mut word = [0; 8];
    word[..n].copy_from_slice(bytes);
    Some(u64::from_le_bytes(word) | (n as u64) << 56)
}

/// A text value of 8 bytes or more as a map key: up to 16 compared inline
/// ([`short_bytes::equal`]), not by a call to `memcmp`, which cost more than
/// the hash.
#[derive(Clone, Copy)]
struct Value<'a>(&'a [u8]);

impl PartialEq for Value<'_> {
    fn eq(&self, other: &Self) -> bool {
        short_bytes::equal(self.0, other.0)
    }
}

impl Eq for Value<'_> {}

impl std::hash::Hash for Value<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0);
    }
}

/// Hashes the data's values, seeded per process: a byte string with
/// one-shot XXH3 (its streaming hasher sets up a state of hundreds of bytes
/// per value), a [`short_key`] by one multiply with another per-process
/// number, the product's halves folded (as foldhash does).
#[derive(Clone, Copy)]
struct SeededHash;

impl BuildHasher for SeededHash {
    type Hasher = SeededHasher;

    fn build_hasher(&self) -> SeededHasher {
        SeededHasher(*SEED)
    }
}

struct SeededHasher(u64);

impl Hasher for SeededHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }

    fn write_u64(&mut self, key: u64) {
        let product = u128::from(key ^ self.0) * u128::from(*MULTIPLIER);
        self.0 = product as u64 ^ (product >> 64) as u64;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Per process: the values hashed are the data's, and may be chosen to collide.
static SEED: LazyLock<u64> = LazyLock::new(|| RandomState::new().hash_one(0u8));
/// Per process too, and odd: no bit of the key is multiplied away.
static MULTIPLIER: LazyLock<u64> = LazyLock::new(|| RandomState::new().hash_one(1u8) | 1);

fn sorted_values(batch: &Batch, at: usize) -> Option<Vec<f64>> {
    let column = &batch.columns[at];
    // As integers that order like the floats (`f64::total_cmp`'s order):
    // sorting those takes about half the time.
    let key = |x: f64| ordered(x.to_bits());
    let mut keys: Vec<u64> = Vec::with_capacity(batch.row_count as usize);
    let finite = |x: &&f64| x.is_finite();
    match &column.values {
        ColumnValues::Float64(v) => {
            let (stated, rest) = present_values(v, &column.validity);
            keys.extend(stated.filter(finite).map(|&x| key(x)));
            keys.extend(rest.iter().filter(finite).map(|&x| key(x)));
        }
        ColumnValues::Int64(v) => {
            let (stated, rest) = present_values(v, &column.validity);
            keys.extend(stated.map(|&x| key(x as f64)));
            keys.extend(rest.iter().map(|&x| key(x as f64)));
        }
        _ => return None,
    }
    keys.sort_unstable_by_key(|&k| k as i64);
    Some(keys.into_iter().map(|k| f64::from_bits(ordered(k))).collect())
}

/// A float's bits as an integer that orders (as i64) like the float does
/// under `f64::total_cmp`, and back: negatives' bits but the sign flipped.
fn ordered(bits: u64) -> u64 {
    bits ^ ((((bits as i64) >> 63) as u64) >> 1)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use clean_host_core::bindings::{Column, TimeBasis, WindowInfo, WindowKind};

    /// Where the unit tests' windows sit.
    pub(crate) fn info() -> WindowInfo {
        WindowInfo {
            pipeline: "p".into(),
            source: "s".into(),
            partition: 0,
            kind: WindowKind::Count,
            start_ms: 0,
            end_ms: 1,
            time_basis: TimeBasis::Event,
            closed_at_ms: 2,
            first_offset: 0,
            last_offset: 4,
            seq: 0,
        }
    }

    fn batch(columns: Vec<Column>) -> Batch {
        Batch { info: info(), row_count: 5, columns, offsets: Vec::new(), record_hashes: Vec::new(), event_times: Vec::new() }
    }

    fn text(values: &[&str], validity: Vec<u8>) -> Column {
        let mut column = StringColumn { bytes: Vec::new(), offsets: vec![0] };
        for v in values {
            column.bytes.extend_from_slice(v.as_bytes());
            column.offsets.push(column.bytes.len() as u32);
        }
        Column { name: "t".into(), values: ColumnValues::Text(column), validity }
    }

    #[test]
    fn text_is_grouped_by_value_in_order_of_first_appearance() {
        let window = Window::new(batch(vec![text(&["b", "a", "", "b", "a"], vec![0, 0, 1, 0, 0]), text(&["x"; 5], Vec::new())]));
        let d = window.distinct_values(0).unwrap();
        assert_eq!((&d.values.bytes[..], &d.values.offsets[..]), (&b"ba"[..], &[0, 1, 2][..]));
        assert_eq!((&d.counts[..], &d.rows[..]), (&[2, 2][..], &[0, 1, ABSENT, 0, 1][..]));
        let all_present = window.distinct_values(1).unwrap();
        assert_eq!((&all_present.counts[..], &all_present.rows[..]), (&[5][..], &[0; 5][..]));
        assert!(window.distinct_values(2).is_none() && window.sorted_values(0).is_none(), "no such column; not numeric");
    }

    /// Values of every length up to 24 bytes (short ones are keyed by an
    /// integer or compare inline), differing in one byte or in length only
    /// (runs of one byte, zeros and high bytes too), group as their bytes do.
    #[test]
    fn values_of_every_length_group_as_their_bytes() {
        let mut values = std::collections::BTreeSet::new();
        for n in 0..=24u8 {
            let v: Vec<u8> = (0..n).map(|i| b'a' + i).collect();
            for at in 0..v.len() {
                let mut w = v.clone();
                w[at] = b'Z';
                values.insert(w);
            }
            values.insert([v.clone(), vec![0]].concat());
            values.insert(v);
            for b in [0, b'a', 0xff] {
                values.insert(vec![b; usize::from(n)]);
            }
        }
        let values: Vec<Vec<u8>> = values.into_iter().collect();
        let rows: Vec<&[u8]> = values.iter().chain(values.iter().rev()).map(Vec::as_slice).collect();
        let mut column = StringColumn { bytes: Vec::new(), offsets: vec![0] };
        for v in &rows {
            column.bytes.extend_from_slice(v);
            column.offsets.push(column.bytes.len() as u32);
        }
        let mut b = batch(vec![Column { name: "t".into(), values: ColumnValues::Text(column), validity: Vec::new() }]);
        b.row_count = rows.len() as u32;
        let d = distinct_values(&b, 0).unwrap();
        let unique: std::collections::BTreeSet<&[u8]> = rows.iter().copied().collect();
        assert_eq!(d.counts.len(), unique.len());
        assert!(d.counts.iter().all(|&n| n == 2), "each value twice: {:?}", d.counts);
        for (row, v) in rows.iter().enumerate() {
            let at = d.rows[row] as usize;
            assert_eq!(&d.values.bytes[d.values.offsets[at] as usize..d.values.offsets[at + 1] as usize], *v, "row {row}");
        }
    }

    #[test]
    fn a_short_value_keys_the_same_read_in_place_or_at_the_end() {
        // Each value of 0 to 9 bytes (none of them zero) once with eight
        // bytes after it, and once as the column's last row.
        for n in 0..=9u8 {
            let value: Vec<u8> = (0..n).map(|i| 0x81 + 17 * i).collect();
            let rows: [&[u8]; 3] = [&value, b"filler of eight+", &value];
            let mut column = StringColumn { bytes: Vec::new(), offsets: vec![0] };
            for v in rows {
                column.bytes.extend_from_slice(v);
                column.offsets.push(column.bytes.len() as u32);
            }
            let mut b = batch(vec![Column { name: "t".into(), values: ColumnValues::Text(column), validity: Vec::new() }]);
            b.row_count = 3;
            let d = distinct_values(&b, 0).unwrap();
            assert_eq!((d.counts.as_slice(), d.rows.as_slice()), ([2, 1].as_slice(), [0, 1, 0].as_slice()), "{n} bytes");
        }
        // Eight bytes at the end are no short value: these two differ.
        let column = StringColumn { bytes: b"abcdefghabcdefg`".to_vec(), offsets: vec![0, 8, 16] };
        let mut b = batch(vec![Column { name: "t".into(), values: ColumnValues::Text(column), validity: Vec::new() }]);
        b.row_count = 2;
        assert_eq!(distinct_values(&b, 0).unwrap().counts, [1, 1]);
    }

    /// More short values than the places remembered in front of their map,
    /// coming round again and again (each place taken by turns): every row
    /// still names its own value.
    #[test]
    fn short_values_that_share_a_remembered_place_keep_their_own() {
        let values: Vec<String> = (0..4 * SHORT_SLOTS).map(|i| format!("{i:03}")).collect();
        let rows: Vec<&str> = (0..5).flat_map(|_| values.iter().map(String::as_str)).collect();
        let mut b = batch(vec![text(&rows, Vec::new())]);
        b.row_count = rows.len() as u32;
        let d = distinct_values(&b, 0).unwrap();
        assert_eq!(d.counts, vec![5; values.len()]);
        for (row, v) in rows.iter().enumerate() {
            let at = d.rows[row] as usize;
            assert_eq!(&d.values.bytes[d.values.offsets[at] as usize..d.values.offsets[at + 1] as usize], v.as_bytes(), "row {row}");
        }
        // The empty value's key is 0: no place starts out holding it.
        let empty_second = distinct_values(&batch(vec![text(&["a", "", "a", ""], Vec::new())]), 0).unwrap();
        assert_eq!((&empty_second.counts[..], &empty_second.rows[..]), (&[2, 2][..], &[0, 1, 0, 1][..]));
    }

    #[test]
    fn numbers_are_their_present_finite_values_ascending() {
        let float = Column { name: "f".into(), values: ColumnValues::Float64(vec![2.5, f64::NAN, -1.0, f64::INFINITY, 0.0]), validity: vec![0, 0, 0, 0, 1] };
        let int = Column { name: "i".into(), values: ColumnValues::Int64(vec![3, -7, 3, 0, 9]), validity: Vec::new() };
        // Every row present (no row states); row states that end early (a
        // row past them is present, a NaN there still left out) or run on
        // past the values.
        let all_floats = Column { name: "g".into(), values: ColumnValues::Float64(vec![f64::NEG_INFINITY, 1.5, -0.0, f64::NAN, -3.0]), validity: Vec::new() };
        let some_ints = Column { name: "j".into(), values: ColumnValues::Int64(vec![4, -2, 8, 1, 0]), validity: vec![0, 2, 0, 3] };
        let short_states = Column { name: "h".into(), values: ColumnValues::Float64(vec![2.0, 9.0, -5.0, f64::NAN, 7.5]), validity: vec![0, 1] };
        let long_states = Column { name: "k".into(), values: ColumnValues::Int64(vec![5, 6]), validity: vec![1, 0, 0, 0] };
        let window = Window::new(batch(vec![float, int, text(&["a"; 5], Vec::new()), all_floats, some_ints, short_states, long_states]));
        assert_eq!(window.sorted_values(0).unwrap(), [-1.0, 2.5]);
        assert_eq!(window.sorted_values(1).unwrap(), [-7.0, 0.0, 3.0, 3.0, 9.0]);
        assert!(window.sorted_values(2).is_none() && window.distinct_values(0).is_none());
        let bits = |values: &[f64]| values.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(window.sorted_values(3).unwrap()), bits(&[-3.0, -0.0, 1.5]));
        assert_eq!(window.sorted_values(4).unwrap(), [0.0, 4.0, 8.0]);
        assert_eq!(window.sorted_values(5).unwrap(), [-5.0, 2.0, 7.5]);
        assert_eq!(window.sorted_values(6).unwrap(), [6.0]);
    }
}
