//! Small robust statistics the bundled detectors share: quantiles, baseline
//! rates with a binomial noise allowance, bounded samples, EWMA.

use serde::{Deserialize, Serialize};

/// The `q` quantile (0..=1) of `values`, reordering them; NaN when empty.
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (values.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let (_, lo_v, upper) = values.select_nth_unstable_by(lo, f64::total_cmp);
    let lo_v = *lo_v;
    let frac = pos - lo as f64;
    if frac == 0.0 || upper.is_empty() {
        return lo_v;
    }
    let hi_v = upper.iter().copied().fold(f64::INFINITY, f64::min);
    lo_v + (hi_v - lo_v) * frac
}

/// Median and median absolute deviation of `values` (reordered).
pub fn median_mad(values: &mut [f64]) -> (f64, f64) {
    let median = quantile(values, 0.5);
    for v in values.iter_mut() {
        *v = (*v - median).abs();
    }
    (median, quantile(values, 0.5))
}

/// A rate (nulls per row, duplicates per row, ...) learned over warm-up windows,
/// with the limit above which a window's rate is a real departure and not noise.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RateBaseline {
    pub events: f64,
    pub trials: f64,
    pub windows: u32,
}

impl RateBaseline {
    pub fn observe(&mut self, events: usize, trials: usize) {
        self.events += events as f64;
        self.trials += trials as f64;
        self.windows += 1;
    }

    pub fn rate(&self) -> f64 {
        if self.trials == 0.0 {
            0.0
        } else {
            self.events / self.trials
        }
    }

    /// Highest rate in a window of `n` rows that is still ordinary: the baseline
    /// plus the larger of `min_increase` and four binomial standard deviations.
    pub fn upper_limit(&self, n: usize, min_increase: f64) -> f64 {
        let p = self.rate();
        let sd = (p * (1.0 - p) / n.max(1) as f64).sqrt();
        (p + min_increase.max(4.0 * sd)).min(1.0)
    }
}

/// A uniform sample of at most `capacity` values from a stream (reservoir
/// sampling with a fixed seed, so runs repeat).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reservoir {
    pub values: Vec<f64>,
    pub seen: u64,
    pub capacity: usize,
    rng: u64,
}

impl Reservoir {
    pub fn new(capacity: usize) -> Self {
        Reservoir { values: Vec::new(), seen: 0, capacity, rng: 0x9E37_79B9_7F4A_7C15 }
    }

    pub fn push(&mut self, value: f64) {
        self.seen += 1;
        if self.values.len() < self.capacity {
            self.values.push(value);
            return;
        }
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) % self.seen;
        if (r as usize) < self.capacity {
            self.values[r as usize] = value;
        }
    }
}

/// Exponentially weighted mean and variance.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ewma {
    pub mean: f64,
    pub variance: f64,
    pub count: u64,
}

impl Ewma {
    pub fn update(&mut self, value: f64, alpha: f64) {
        if self.count == 0 {
            self.mean = value;
            self.variance = 0.0;
        } else {
            let diff = value - self.mean;
            let incr = alpha * diff;
            self.mean += incr;
            self.variance = (1.0 - alpha) * (self.variance + diff * incr);
        }
        self.count += 1;
    }

    pub fn std_dev(&self) -> f64 {
        self.variance.sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate() {
        let mut v = vec![4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&mut v, 0.0), 1.0);
        assert_eq!(quantile(&mut v, 1.0), 4.0);
        assert!((quantile(&mut v, 0.5) - 2.5).abs() < 1e-12);
        assert!(quantile(&mut [], 0.5).is_nan());
    }

    #[test]
    fn median_mad_of_known_values() {
        let mut v = vec![1.0, 1.0, 2.0, 2.0, 4.0, 6.0, 9.0];
        let (m, mad) = median_mad(&mut v);
        assert_eq!(m, 2.0);
        assert_eq!(mad, 1.0);
    }

    #[test]
    fn rate_limit_allows_noise_but_not_jumps() {
        let mut b = RateBaseline::default();
        for _ in 0..5 {
            b.observe(10, 1000);
        }
        assert!((b.rate() - 0.01).abs() < 1e-12);
        let limit = b.upper_limit(1000, 0.02);
        assert!(limit > 0.025 && limit < 0.05, "{limit}");
    }

    #[test]
    fn reservoir_is_bounded() {
        let mut r = Reservoir::new(100);
        for i in 0..10_000 {
            r.push(i as f64);
        }
        assert_eq!(r.values.len(), 100);
        assert_eq!(r.seen, 10_000);
        assert!(r.values.iter().any(|&v| v > 1000.0));
    }

    #[test]
    fn ewma_tracks_mean() {
        let mut e = Ewma::default();
        for _ in 0..200 {
            e.update(10.0, 0.1);
        }
        assert!((e.mean - 10.0).abs() < 1e-9);
        assert!(e.std_dev() < 1e-9);
    }
}
