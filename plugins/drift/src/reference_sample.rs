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

    pub fn add(&mut self, x: f64) {
        // A power of two: a mask, not a division (at least 1, whatever state says).
        if self.offered & (self.stride.max(1) - 1) == 0 {
            self.kept.push(x);
            if self.kept.len() >= self.capacity {
                let mut position = 0;
                self.kept.retain(|_| {
                    position += 1;
                    position % 2 == 1
                });
                self.stride *= 2;
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
