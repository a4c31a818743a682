//! A reservoir sample's values in ascending order, followed as it changes.
//!
//! Every `refresh_windows` windows a column's reference is learned again
//! from the sample of its calm windows (4096 values): its percentiles, median
//! and MAD. Selecting those ranks afresh took 45% of this detector's
//! instructions over 2,000 windows of orders, while after the first windows
//! the sample takes in a few dozen values a window. So a sorted copy is
//! kept: the values kept and those they replaced are noted, and merged into
//! it when it is read next.

use clean_host_sdk::stats::sorted;

/// A sample's values in ascending [`f64::total_cmp`] order.
#[derive(Debug, Clone, Default)]
pub struct SortedSample {
    /// As of the last read; `None` when not known (sorted afresh when read).
    sorted: Option<Vec<f64>>,
    /// Values the sample kept since, and the values they took the place of.
    added: Vec<f64>,
    removed: Vec<f64>,
}

impl SortedSample {
    /// Of a sample's `values`, sorted now.
    pub fn of(values: &[f64]) -> Self {
        SortedSample { sorted: Some(sorted(values.iter().copied())), ..SortedSample::default() }
    }

    /// The sample kept `value`, in place of `replaced` (`None` while it filled).
    pub fn note(&mut self, replaced: Option<f64>, value: f64) {
        let Some(sorted) = &self.sorted else {
            return;
        };
        // Changes to a quarter of the values or more (the first refreshes,
        // a sample still filling): sorting afresh costs no more than merging.
        if self.added.len() >= (sorted.len() / 4).max(64) {
            self.forget();
            return;
        }
        self.added.push(value);
        self.removed.extend(replaced);
    }

    /// Sorted afresh when read next.
    fn forget(&mut self) {
        self.sorted = None;
        self.added.clear();
        self.removed.clear();
    }

    /// `values`, the sample as the notes since the last read left it, in ascending order.
    pub fn read(&mut self, values: &[f64]) -> &[f64] {
        let known = match self.sorted.take() {
            Some(copy) if self.added.is_empty() && self.removed.is_empty() => Some(copy),
            Some(copy) => merged(&copy, &mut self.added, &mut self.removed),
            None => None,
        };
        // Notes that do not add up (a change not noted) are not trusted.
        let ascending = known.filter(|k| k.len() == values.len()).unwrap_or_else(|| sorted(values.iter().copied()));
        self.added.clear();
        self.removed.clear();
        self.sorted.insert(ascending)
    }
}

/// `ascending` with `added` merged in and `removed` taken out (a value equal
/// to each, in bits); `None` if one is not there. Each change is found by a
/// binary search and the values between changes are copied whole: a few
/// dozen changes to 4096 values cost a fraction of a pass comparing each.
fn merged(ascending: &[f64], added: &mut Vec<f64>, removed: &mut Vec<f64>) -> Option<Vec<f64>> {
    *added = sorted(added.iter().copied());
    *removed = sorted(removed.iter().copied());
    cancel_common(added, removed);
    let mut out = Vec::with_capacity((ascending.len() + added.len()).saturating_sub(removed.len()));
    let (mut from, mut added, mut removed) = (0, added.iter().peekable(), removed.iter().peekable());
    loop {
        // The lower of the next value to add and the next to take out.
        let (value, add) = match (added.peek(), removed.peek()) {
            (Some(&&x), Some(&&z)) if x.total_cmp(&z).is_lt() => (x, true),
            (_, Some(&&z)) => (z, false),
            (Some(&&x), None) => (x, true),
            (None, None) => break,
        };
        let at = from + ascending[from..].partition_point(|v| v.total_cmp(&value).is_lt());
        out.extend_from_slice(&ascending[from..at]);
        from = at;
        if add {
            out.push(value);
            added.next();
        } else {
            if ascending.get(at).is_none_or(|v| v.total_cmp(&value).is_ne()) {
                return None;
            }
            from += 1;
            removed.next();
        }
    }
    out.extend_from_slice(&ascending[from..]);
    Some(out)
}

/// Takes out of both (each ascending) the values they share: a value kept
/// and replaced again since the last read, in the sorted copy neither time.
fn cancel_common(added: &mut Vec<f64>, removed: &mut Vec<f64>) {
    let (mut a, mut r, mut kept_a, mut kept_r) = (0, 0, 0, 0);
    while a < added.len() && r < removed.len() {
        match added[a].total_cmp(&removed[r]) {
            std::cmp::Ordering::Equal => (a, r) = (a + 1, r + 1),
            std::cmp::Ordering::Less => {
                added[kept_a] = added[a];
                (a, kept_a) = (a + 1, kept_a + 1);
            }
            std::cmp::Ordering::Greater => {
                removed[kept_r] = removed[r];
                (r, kept_r) = (r + 1, kept_r + 1);
            }
        }
    }
    added.copy_within(a.., kept_a);
    added.truncate(kept_a + added.len() - a);
    removed.copy_within(r.., kept_r);
    removed.truncate(kept_r + removed.len() - r);
}

#[cfg(test)]
mod tests {
    use super::*;
    use clean_host_sdk::stats::Reservoir;

    fn bits(values: &[f64]) -> Vec<u64> {
        values.iter().map(|x| x.to_bits()).collect()
    }

    /// Through a reservoir filling and then replacing values (with ties,
    /// signed zeros, infinities), reads now and then: always the sample sorted.
    #[test]
    fn follows_a_reservoir_as_sorting_it_would() {
        let mut x = 17u64;
        let mut next = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            x >> 11
        };
        for capacity in [1, 50, 4096] {
            let (mut sample, mut sorted) = (Reservoir::new(capacity), SortedSample::default());
            sorted.read(&sample.values);
            for window in 0..300 {
                let values: Vec<f64> = (0..(next() % 1500) as usize)
                    .map(|_| match next() % 50 {
                        0 => -0.0,
                        1 => f64::INFINITY,
                        2 => f64::NEG_INFINITY,
                        3..=20 => (next() % 7) as f64,
                        _ => (next() % 1_000_000) as f64 / 7.0 - 50_000.0,
                    })
                    .collect();
                sample.extend_noting(&values, |replaced, value| sorted.note(replaced, value));
                if window % 7 == 0 || window < 5 {
                    let mut expected = sample.values.clone();
                    expected.sort_unstable_by(f64::total_cmp);
                    assert_eq!(bits(sorted.read(&sample.values)), bits(&expected), "capacity {capacity}, window {window}");
                }
                if window == 150 {
                    // A new sample (a new normal taking over), sorted anew.
                    sample = Reservoir::new(capacity);
                    sample.extend(&values);
                    sorted = SortedSample::of(&sample.values);
                }
                if window == 220 {
                    // More changes than a quarter of the values: sorted afresh when read.
                    (0..capacity.max(64) + 1).for_each(|i| sorted.note(None, i as f64));
                    sample.values.clear();
                    sample.values.extend((0..capacity.max(64) + 1).map(|i| i as f64));
                }
            }
        }
    }

    /// Notes that do not add up are not trusted: the values are sorted afresh.
    #[test]
    fn notes_that_do_not_match_the_values_are_not_trusted() {
        let mut sorted = SortedSample::default();
        sorted.read(&[3.0, 1.0, 2.0]);
        sorted.note(Some(9.0), 4.0);
        assert_eq!(sorted.read(&[3.0, 1.0, 4.0]), [1.0, 3.0, 4.0]);
        sorted.note(None, 5.0);
        sorted.note(None, 6.0);
        assert_eq!(sorted.read(&[3.0, 1.0, 4.0, 5.0]), [1.0, 3.0, 4.0, 5.0]);
    }
}
