//! A text column's window as its distinct values.
//!
//! Category checks (drift's shares, validity's value sets) do their work
//! once per distinct value, not once per row, when the rows have first been
//! grouped by value. In wasm the host groups them for the batch `analyze`
//! was handed (the WIT's `window.distinct`, since 0.1.2): once a window for
//! every detector that asks, in native code, which cost drift and validity
//! a sixth of their time each when every plugin did it itself. Natively
//! (unit tests, the benchmark's native detectors), and for any other batch,
//! they are grouped here, to the same result: one probe of a small
//! open-addressing table a row, keyed by the value's length and its first
//! and last eight bytes, which for values up to 16 bytes (codes, countries,
//! statuses) is the value itself; longer values are also keyed by a hash of
//! all their bytes, and compare their bytes on a key match.

use crate::{Batch, Column, ColumnValues, StringColumn, PRESENT};

/// A row with no value (null, missing or of the wrong type) in [`DistinctValues::row_values`].
pub const ABSENT: u32 = u32::MAX;

/// A text column's distinct present values, their counts and each row's value.
#[derive(Debug)]
pub struct DistinctValues {
    /// Each distinct value (its UTF-8 bytes as the batch holds them, never
    /// decoded), in order of first appearance: see [`DistinctValues::value`].
    values: StringColumn,
    /// How many rows hold each value.
    pub counts: Vec<u32>,
    /// Per row: the index of its value, or [`ABSENT`].
    pub row_values: Vec<u32>,
    /// Rows with a value.
    pub present: usize,
}

/// A value's exact key when it is at most 16 bytes long: its length and two
/// words that together cover every byte. Longer values also carry a hash of
/// all their bytes: ids and addresses that differ only in the middle
/// (`u12345@example.com`) must not share one probe sequence.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    len: usize,
    first: u64,
    last: u64,
    whole: u64,
}

impl Key {
    fn of(b: &[u8]) -> Key {
        let n = b.len();
        let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let half = |at: usize| u64::from(u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes")));
        let (first, last) = match n {
            8.. => (word(0), word(n - 8)),
            4..=7 => (half(0), half(n - 4)),
            1..=3 => (u64::from(b[0]) | u64::from(b[n / 2]) << 8 | u64::from(b[n - 1]) << 16, 0),
            0 => (0, 0),
        };
        let whole = match n {
            17.. => b.chunks(8).fold(0u64, |h, chunk| {
                let mut word = [0u8; 8];
                word[..chunk.len()].copy_from_slice(chunk);
                (h ^ u64::from_le_bytes(word)).wrapping_mul(0x1000_0000_01B3).rotate_left(23)
            }),
            _ => 0,
        };
        Key { len: n, first, last, whole }
    }

    fn hash(self) -> u64 {
        let h = self.first.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ self.last.rotate_left(31).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
            ^ self.whole.wrapping_mul(0xD6E8_FEB8_6659_FD93)
            ^ self.len as u64;
        (h ^ (h >> 29)).wrapping_mul(0x1656_67B1_9E37_79F9)
    }

    /// Whether the key alone tells two values apart or equal.
    fn is_exact(self) -> bool {
        self.len <= 16
    }
}

impl DistinctValues {
    /// Column `index` of `batch` grouped by value: by the host for the batch
    /// `analyze` was handed, in wasm, whether or not its values were handed
    /// over (see [`crate::Reads::and_grouped_text`]); else here, from its
    /// values. `None` for an index past the last column, a column of another
    /// type, or one the host did not group whose values were left out.
    pub fn of(batch: &Batch, index: usize) -> Option<Self> {
        let column = batch.columns.get(index)?;
        let ColumnValues::Text(text) = &column.values else {
            return None;
        };
        #[cfg(target_arch = "wasm32")]
        if crate::is_handed(batch) {
            if let Some(d) = crate::bindings::clean_host::plugin::window::distinct(index as u32) {
                let present = d.counts.iter().map(|&n| n as usize).sum();
                return Some(DistinctValues { values: d.values, counts: d.counts, row_values: d.rows, present });
            }
        }
        if text.offsets.len() != column.len() + 1 {
            return None;
        }
        Some(Self::grouped(column))
    }

    /// Distinct values.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The bytes of distinct value `i`.
    pub fn value(&self, i: usize) -> &[u8] {
        let (start, end) = (self.values.offsets[i] as usize, self.values.offsets[i + 1] as usize);
        &self.values.bytes[start..end]
    }

    /// Each distinct value and how many rows hold it, in order of first appearance.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], u32)> + '_ {
        self.counts.iter().enumerate().map(|(i, &n)| (self.value(i), n))
    }

    /// A text column grouped here, in the guest.
    fn grouped(column: &Column) -> Self {
        let ColumnValues::Text(text) = &column.values else {
            unreachable!("checked by the caller");
        };
        let rows = column.len();
        let mut values = StringColumn { bytes: Vec::new(), offsets: vec![0] };
        let mut counts: Vec<u32> = Vec::new();
        let mut keys: Vec<Key> = Vec::new();
        let mut row_values = vec![ABSENT; rows];
        // Slots hold an index into `counts` plus one (0: empty); at most half full.
        let mut bits = 4;
        let mut slots = vec![0u32; 1 << bits];
        let mut present = 0;
        for (row, at) in row_values.iter_mut().enumerate() {
            if column.validity.get(row).is_some_and(|&s| s != PRESENT) {
                continue;
            }
            let (a, b) = (text.offsets[row] as usize, text.offsets[row + 1] as usize);
            let value = text.bytes.get(a..b).unwrap_or_default();
            present += 1;
            let key = Key::of(value);
            let mask = slots.len() - 1;
            let mut slot = (key.hash() >> (64 - bits)) as usize;
            let index = loop {
                match slots[slot] {
                    0 => {
                        values.bytes.extend_from_slice(value);
                        values.offsets.push(values.bytes.len() as u32);
                        counts.push(0);
                        keys.push(key);
                        slots[slot] = counts.len() as u32;
                        break counts.len() - 1;
                    }
                    taken => {
                        let i = taken as usize - 1;
                        let seen = &values.bytes[values.offsets[i] as usize..values.offsets[i + 1] as usize];
                        if keys[i] == key && (key.is_exact() || seen == value) {
                            break i;
                        }
                        slot = (slot + 1) & mask;
                    }
                }
            };
            counts[index] += 1;
            *at = index as u32;
            if counts.len() * 2 > slots.len() {
                bits += 1;
                slots = vec![0u32; 1 << bits];
                for (i, key) in keys.iter().enumerate() {
                    let mut slot = (key.hash() >> (64 - bits)) as usize;
                    while slots[slot] != 0 {
                        slot = (slot + 1) & (slots.len() - 1);
                    }
                    slots[slot] = i as u32 + 1;
                }
            }
        }
        DistinctValues { values, counts, row_values, present }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{BatchBuilder, Rng};
    use std::collections::BTreeMap;

    /// Counts as a plain map gives them.
    fn counted(column: &Column) -> BTreeMap<Vec<u8>, u32> {
        let mut counts = BTreeMap::new();
        (0..column.len()).filter(|&r| column.is_present(r)).for_each(|r| *counts.entry(column.bytes(r).to_vec()).or_default() += 1);
        counts
    }

    #[test]
    fn groups_rows_as_a_map_would_for_every_length() {
        // Values of every length from 0 to 40 bytes that differ in one byte
        // only (first, middle or last), so a key that missed a byte would merge them.
        let mut rng = Rng(3);
        let mut texts = Vec::new();
        for len in 0..=40usize {
            let base: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            texts.push(base.clone());
            for at in [0, len / 2, len.saturating_sub(1)] {
                if len > 0 {
                    let mut v = base.clone();
                    v[at] = b'Z';
                    texts.push(v);
                }
            }
        }
        let rows: Vec<String> = (0..5000).map(|_| String::from_utf8(texts[(rng.uniform() * texts.len() as f64) as usize].clone()).unwrap()).collect();
        let cells: Vec<Option<&str>> = rows.iter().enumerate().map(|(i, s)| (i % 13 != 0).then_some(s.as_str())).collect();
        let batch = BatchBuilder::new(0).text("t", &cells).build();
        let column = &batch.columns[0];
        let distinct = DistinctValues::of(&batch, 0).unwrap();
        let ours: BTreeMap<Vec<u8>, u32> = distinct.iter().map(|(v, n)| (v.to_vec(), n)).collect();
        assert_eq!(ours, counted(column));
        assert_eq!(ours.len(), distinct.len(), "a value listed twice");
        assert_eq!(distinct.present, column.count(PRESENT));
        for (row, &at) in distinct.row_values.iter().enumerate() {
            match column.is_present(row) {
                true => assert_eq!(distinct.value(at as usize), column.bytes(row)),
                false => assert_eq!(at, ABSENT),
            }
        }
    }

    #[test]
    fn many_distinct_values_grow_the_table() {
        let rows: Vec<String> = (0..20_000).map(|i| format!("id-{}", i % 7919)).collect();
        let cells: Vec<Option<&str>> = rows.iter().map(|s| Some(s.as_str())).collect();
        let batch = BatchBuilder::new(0).text("id", &cells).build();
        let distinct = DistinctValues::of(&batch, 0).unwrap();
        assert_eq!(distinct.len(), 7919);
        assert!(distinct.iter().all(|(_, n)| n == 2 || n == 3));
        assert_eq!(distinct.present, 20_000);
    }

    #[test]
    fn long_values_that_differ_only_in_the_middle_stay_apart() {
        let rows: Vec<String> = (0..3000).map(|i| format!("user-{:06}-of-the-same-domain.example.com", i % 1500)).collect();
        let cells: Vec<Option<&str>> = rows.iter().map(|s| Some(s.as_str())).collect();
        let batch = BatchBuilder::new(0).text("email", &cells).build();
        let distinct = DistinctValues::of(&batch, 0).unwrap();
        assert_eq!(distinct.len(), 1500);
        assert!(distinct.iter().all(|(_, n)| n == 2));
        let keys: std::collections::BTreeSet<u64> = distinct.iter().map(|(v, _)| Key::of(v).hash()).collect();
        // Each fold step of the whole-value hash can be undone: values that
        // differ in one 8-byte chunk never share a hash.
        assert_eq!(keys.len(), 1500);
    }

    /// Natively; in wasm the host groups it.
    #[test]
    fn a_column_whose_values_were_left_out_has_none_natively() {
        let mut batch = BatchBuilder::new(0).text("t", &[Some("a"), None, Some("b")]).build();
        batch.columns[0].values = ColumnValues::Text(StringColumn { bytes: Vec::new(), offsets: Vec::new() });
        assert_eq!(batch.columns[0].len(), 3, "the row states are still there");
        assert!(DistinctValues::of(&batch, 0).is_none());
    }

    #[test]
    fn other_types_have_none() {
        let batch = BatchBuilder::new(0).int("n", &[Some(1)]).build();
        assert!(DistinctValues::of(&batch, 0).is_none() && DistinctValues::of(&batch, 1).is_none());
    }
}
