//! A numeric reference being learned: an even sample of the values offered,
//! bounded, and the same every time the same values are offered.
//!
//! The KLL sketch this replaces decided each compaction by a coin from a
//! generator seeded per process that its saved state did not carry, so a
//! detector restored from a snapshot froze another reference than one that
//! ran straight through, and judged later windows differently. Here every
//! `stride`-th value offered is kept; when `capacity` are kept, every other
//! one is dropped and the stride doubles. The sample stays evenly spread over
//! everything offered, exact until it first fills and at least half the
//! capacity after.

use clean_host_sdk::stats::sorted;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReferenceSample {
    /// The values kept, in the order offered.
    kept: Vec<f64>,
    /// Every `stride`-th value offered is kept (a power of two).
    stride: u64,
    /// Values offered so far.
    offered: u64,
    /// Values kept at most.
    capacity: usize,
}

impl ReferenceSample {
    /// An empty sample keeping at most `capacity` (at least 2) values.
    pub fn new(capacity: usize) -> Self {
        ReferenceSample { kept: Vec::new(), stride: 1, offered: 0, capacity: capacity.max(2) }
    }

    /// Offer a window's values at `count` evenly spaced ranks of `sorted`
    /// (ascending), each the middle of its share of them: closer to the
    /// window than as many of its rows. They are offered round from a rank
    /// drawn from the count offered so far: once the sample keeps every
    /// stride-th value, the ranks a window keeps are spread over it at
    /// random, not climbing window by window (which would tie the sample's
    /// tails to the windows' order, and a trend would widen it).
    pub fn add_ranks(&mut self, sorted: &[f64], count: usize) {
        let step = sorted.len().div_ceil(count.max(1)).max(1);
        let first = step / 2;
        let picks = sorted.len().saturating_sub(first).div_ceil(step);
        if picks == 0 {
            return;
        }
        let start = (mixed(self.offered) % picks as u64) as usize;
        let pick = |k: usize| sorted[first + k * step];
        // Every value kept, none dropped (the usual case): one extend,
        // without the tests of the thinning path or for room at each value.
        // The room is made first as pushes would make it (doubling), so
        // the sample's memory stays as bounded as its capacity.
        if self.stride <= 1 && self.kept.len() + picks < self.capacity {
            let mut room = self.kept.capacity();
            while room < self.kept.len() + picks {
                room = (room * 2).max(4);
            }
            self.kept.reserve_exact(room - self.kept.len());
            self.kept.extend((start..picks).chain(0..start).map(pick));
            self.offered += picks as u64;
            return;
        }
        for k in start..picks {
            self.add(pick(k));
        }
        for k in 0..start {
            self.add(pick(k));
        }
    }

    fn add(&mut self, x: f64) {
        // A power of two: a mask, not a division (damaged state's 0 taken as 1).
        let stride = self.stride.max(1);
        if self.offered & (stride - 1) == 0 {
            self.kept.push(x);
            if self.kept.len() >= self.capacity {
                let mut position = 0;
                self.kept.retain(|_| {
                    position += 1;
                    position % 2 == 1
                });
                self.stride = stride * 2;
            }
        }
        self.offered += 1;
    }

    /// Values kept: the reference's size as the tests of fit take it.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// Memory held, in bytes.
    pub fn bytes(&self) -> usize {
        self.kept.capacity() * std::mem::size_of::<f64>()
    }

    /// `points` (at least 2) evenly spaced quantiles, from the minimum to the
    /// maximum: at rank r, the smallest value with at least a share r of the
    /// sample at or below it. None while empty.
    pub fn quantiles(&self, points: usize) -> Option<Vec<f64>> {
        if self.kept.is_empty() {
            return None;
        }
        let sorted = sorted(self.kept.iter().copied());
        let m = sorted.len();
        let last = points.max(2) - 1;
        Some((0..=last).map(|i| sorted[(i * m).div_ceil(last).saturating_sub(1).min(m - 1)]).collect())
    }
}

/// SplitMix64's finaliser: every bit of `x` moves every bit of the result,
/// so counts in step give starts in no order.
fn mixed(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_until_full_then_even_over_everything_offered() {
        let mut s = ReferenceSample::new(100);
        (0..100).for_each(|i| s.add(f64::from(i)));
        // Full at the 100th: every other value kept, from the first.
        assert_eq!(s.len(), 50);
        assert_eq!(s.kept[..3], [0.0, 2.0, 4.0]);
        (100..1000).for_each(|i| s.add(f64::from(i)));
        // Still evenly spaced over all 1000 offered.
        let gaps: Vec<f64> = s.kept.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|&g| g == gaps[0]), "{gaps:?}");
        assert!(s.len() >= 50 && s.len() < 100 && *s.kept.last().unwrap() >= 900.0, "{:?}", s.kept);
    }

    #[test]
    fn a_window_offers_its_middle_ranks() {
        let mut s = ReferenceSample::new(1000);
        let window: Vec<f64> = (0..1000).map(f64::from).collect();
        s.add_ranks(&window, 250);
        let mut kept = s.kept.clone();
        kept.sort_by(f64::total_cmp);
        assert_eq!(kept, (0..250).map(|k| f64::from(2 + 4 * k)).collect::<Vec<_>>());
        s.add_ranks(&window[..3], 250);
        s.add_ranks(&[], 250);
        assert_eq!(s.len(), 253, "a short window offers all it has");
    }

    /// Once the sample is thinned to fewer values than a window offers, the
    /// ranks kept from window after window wander at random, not upwards.
    #[test]
    fn a_thinned_sample_keeps_ranks_that_do_not_climb() {
        let mut s = ReferenceSample::new(202);
        let window: Vec<f64> = (0..1000).map(f64::from).collect();
        (0..400).for_each(|_| s.add_ranks(&window, 250));
        assert!(s.stride >= 256, "about one value a window: stride {}", s.stride);
        let rises = s.kept.windows(2).filter(|w| w[1] > w[0]).count() as f64 / (s.len() - 1) as f64;
        assert!((0.35..0.65).contains(&rises), "{rises} of neighbours rise");
    }

    /// The picks a window offers, kept all at once while nothing is
    /// dropped, are kept as offering them one by one keeps them, through
    /// the sample filling and thinning.
    #[test]
    fn ranks_kept_at_once_are_those_kept_one_by_one() {
        for capacity in [2, 7, 100, 260, 1000, 4096] {
            let (mut s, mut one_by_one) = (ReferenceSample::new(capacity), ReferenceSample::new(capacity));
            for len in [0u32, 1, 3, 999, 9, 1000, 1001, 250, 40, 1000, 7, 1000, 1000, 600] {
                let window: Vec<f64> = (0..len).map(|i| f64::from(i) * 0.5).collect();
                s.add_ranks(&window, 250);
                let step = window.len().div_ceil(250).max(1);
                let picks = window.len().saturating_sub(step / 2).div_ceil(step);
                if picks > 0 {
                    let start = (mixed(one_by_one.offered) % picks as u64) as usize;
                    (0..picks).for_each(|k| one_by_one.add(window[step / 2 + (start + k) % picks * step]));
                }
                assert_eq!((&s.kept, s.stride, s.offered), (&one_by_one.kept, one_by_one.stride, one_by_one.offered), "capacity {capacity}");
                assert_eq!(s.kept.capacity(), one_by_one.kept.capacity(), "grown as pushes grow it: capacity {capacity}, window of {len}");
            }
        }
    }

    #[test]
    fn quantiles_are_values_at_their_ranks() {
        let mut s = ReferenceSample::new(1000);
        assert!(s.quantiles(5).is_none());
        [5.0, 1.0, 4.0, 2.0, 3.0].into_iter().for_each(|x| s.add(x));
        assert_eq!(s.quantiles(5).unwrap(), [1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(s.quantiles(3).unwrap(), [1.0, 3.0, 5.0]);
        let mut ties = ReferenceSample::new(1000);
        (0..100).for_each(|i| ties.add(if i < 40 { 1.0 } else { 2.0 }));
        let grid = ties.quantiles(101).unwrap();
        assert_eq!((grid[40], grid[41]), (1.0, 2.0));
    }
}
