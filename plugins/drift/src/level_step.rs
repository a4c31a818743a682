//! A numeric column's level from one window to the next.
//!
//! A column that moves with the hours (humidity, a queue's depth) differs
//! from any trailing reference most of the time, so PSI and KS against the
//! reference cannot tell a slow trend from an offset bug. How far its median
//! steps between neighbouring windows can: a trend takes small steps, a unit
//! or offset error one step larger than the column ever took. A step is a
//! departure when it lies beyond the far-out fence of the steps before (on
//! cube roots, as for PSI), the level 1 step in 50 reaches, and the largest
//! step seen, and beyond three standard errors of the two medians. The way
//! back to the level before a departure, within [`NEW_NORMAL_AFTER`]
//! windows, is no step of its own; steps that far [`NEW_NORMAL_AFTER`]
//! windows in a row are ordinary from then on (the column jumps now). Columns
//! with fewer than [`MIN_DISTINCT`] distinct values in a window (flags,
//! small counts, mostly-zero rain) are not stepped: their medians jump
//! between a few values by nature.

use clean_host_sdk::stats::{sorted_median_mad, History, NEW_NORMAL_AFTER};
use serde::{Deserialize, Serialize};

/// Fewest distinct values a window needs for its median to be a level.
pub const MIN_DISTINCT: usize = 10;

/// One window's level.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Level {
    median: f64,
    /// Median absolute deviation.
    mad: f64,
    values: usize,
}

impl Level {
    /// Standard error of the median, from the MAD (normal data: 1.2533 σ / √n).
    fn error(&self) -> f64 {
        1.2533 * 1.4826 * self.mad / (self.values as f64).sqrt()
    }
}

/// A step past everything the column did before.
pub struct Step {
    pub from: f64,
    pub to: f64,
    pub size: f64,
    /// The largest step that would have been usual.
    pub usual: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LevelSteps {
    /// The previous window's level, if it had one.
    last: Option<Level>,
    /// Ordinary steps: departures are kept apart.
    steps: History,
    /// The level before the last departure, and windows held since.
    before: Option<(Level, u32)>,
    /// The steps of the departures in progress.
    departures: Vec<f64>,
}

impl LevelSteps {
    /// Take in a window's values, in ascending order: the step it took, if
    /// a departure. A window of fewer than `min_values` values has no level.
    /// `judge_after`: steps known before any is judged.
    pub fn observe(&mut self, sorted: &[f64], min_values: usize, judge_after: usize) -> Option<Step> {
        if sorted.len() < min_values || !has_distinct(sorted, MIN_DISTINCT) {
            self.last = None;
            return None;
        }
        let (median, mad) = sorted_median_mad(sorted);
        let level = Level { median, mad, values: sorted.len() };
        let last = self.last.replace(level)?;
        let size = (median - last.median).abs();
        let usual = match (self.steps.len() >= judge_after, self.steps.far_out_skewed(), self.steps.quantile(0.98), self.steps.quantile(1.0)) {
            (true, Some(fence), Some(p98), Some(largest)) => Some(fence.max(p98).max(largest)),
            _ => None,
        };
        // Beyond every usual step from `from`, and beyond the medians' noise.
        let beyond = |from: &Level| {
            let distance = (median - from.median).abs();
            usual.is_some_and(|usual| distance > usual && distance > 3.0 * level.error().hypot(from.error()))
        };
        let stepped = beyond(&last);
        if stepped && self.before.as_ref().is_some_and(|(before, _)| !beyond(before)) {
            // Back to the level before the departure: no step of its own.
            (self.before, self.departures) = (None, Vec::new());
            return None;
        }
        if !stepped {
            self.steps.push(size, false);
            self.departures.clear();
            if let Some((_, held)) = &mut self.before {
                *held += 1;
                if *held >= NEW_NORMAL_AFTER {
                    self.before = None;
                }
            }
            return None;
        }
        self.before.get_or_insert((last, 0)).1 = 0;
        self.departures.push(size);
        if self.departures.len() >= NEW_NORMAL_AFTER as usize {
            for step in std::mem::take(&mut self.departures) {
                self.steps.push(step, false);
            }
            self.before = None;
        }
        Some(Step { from: last.median, to: median, size, usual: usual.unwrap_or_default() })
    }
}

/// Whether `sorted` holds at least `k` distinct values: each found past
/// the last by halving, not by a walk over a column of a few values
/// (counts, flags) that each fill a tenth of it.
fn has_distinct(sorted: &[f64], k: usize) -> bool {
    let mut from = 0;
    for _ in 0..k {
        let Some(&value) = sorted.get(from) else {
            return false;
        };
        from += sorted[from..].partition_point(|&x| x == value);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use clean_host_sdk::testing::Rng;

    fn window(rng: &mut Rng, level: f64) -> Vec<f64> {
        let mut v: Vec<f64> = (0..100).map(|_| level + rng.normal()).collect();
        v.sort_unstable_by(f64::total_cmp);
        v
    }

    #[test]
    fn a_trend_is_quiet_and_an_offset_is_a_step() {
        let mut rng = Rng(9);
        let mut steps = LevelSteps::default();
        // A slow daily swing of +-10 in 1-unit steps, around 50.
        for i in 0..60 {
            let level = 50.0 + 10.0 * (i as f64 / 10.0).sin();
            assert!(steps.observe(&window(&mut rng, level), 50, 20).is_none(), "window {i}");
        }
        let level = 50.0 + 10.0 * 6.0f64.sin();
        let step = steps.observe(&window(&mut rng, level + 25.0), 50, 20).expect("an offset of 25");
        assert!((step.size - 25.0).abs() < 2.0 && step.usual < 5.0, "{} {}", step.size, step.usual);
        // The offset holds: no more steps; the way back is none either.
        assert!(steps.observe(&window(&mut rng, level + 25.5), 50, 20).is_none());
        assert!(steps.observe(&window(&mut rng, level + 0.5), 50, 20).is_none(), "the way back is no step");
        let level = 50.0 + 10.0 * 6.1f64.sin();
        assert!(steps.observe(&window(&mut rng, level + 25.0), 50, 20).is_some());
        assert!(steps.observe(&window(&mut rng, level), 50, 20).is_none(), "the way back from a one-window glitch");
    }

    #[test]
    fn distinct_values_are_counted_like_a_sorted_dedup() {
        let mut rng = Rng(3);
        for n in [0, 5, 9, 10, 11, 200] {
            for spread in [1, 3, 9, 10, 50] {
                let mut v: Vec<f64> = (0..n).map(|_| (rng.normal().abs() * spread as f64).floor()).chain([0.0, -0.0]).collect();
                v.sort_unstable_by(f64::total_cmp);
                let distinct = v.iter().fold(Vec::<f64>::new(), |mut seen, &x| {
                    if !seen.contains(&x) {
                        seen.push(x);
                    }
                    seen
                });
                assert_eq!(has_distinct(&v, MIN_DISTINCT), distinct.len() >= MIN_DISTINCT, "{v:?}");
            }
        }
    }

    #[test]
    fn few_distinct_values_are_not_stepped() {
        let mut steps = LevelSteps::default();
        for i in 0..40 {
            let flags: Vec<f64> = (0..100).map(|r| f64::from(u8::from(r >= if i == 39 { 10 } else { 90 }))).collect();
            assert!(steps.observe(&flags, 50, 20).is_none());
        }
    }
}
