//! The two-sample statistics drift is judged by: the Population Stability
//! Index with its chi-square test, and the Kolmogorov-Smirnov distance with
//! its p-value, each against a fixed reference.

/// A numeric reference: evenly spaced quantiles (`grid[i]` is the value at
/// rank `i / (len - 1)`), which is all PSI and KS need of a distribution.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QuantileGrid {
    pub grid: Vec<f64>,
}

impl QuantileGrid {
    /// The reference CDF at `x`: piecewise linear between grid points, and
    /// right-continuous where grid points repeat (a value many rows share).
    pub fn cdf(&self, x: f64) -> f64 {
        let g = &self.grid;
        let last = g.len() - 1;
        // Grid points at or below x.
        let at_or_below = g.partition_point(|&v| v <= x);
        if at_or_below == 0 {
            return 0.0;
        }
        let j = at_or_below - 1;
        if j == last {
            return 1.0;
        }
        let (lo, hi) = (g[j], g[j + 1]);
        let frac = if hi > lo { (x - lo) / (hi - lo) } else { 0.0 };
        (j as f64 + frac) / last as f64
    }

    /// The reference CDF just below `x`: where values repeat, the rank
    /// before the first of them.
    pub fn cdf_below(&self, x: f64) -> f64 {
        let g = &self.grid;
        let below = g.partition_point(|&v| v < x);
        if below == 0 {
            return 0.0;
        }
        if below == g.len() {
            return 1.0;
        }
        let (lo, hi) = (g[below - 1], g[below]);
        ((below - 1) as f64 + (x - lo) / (hi - lo)) / (g.len() - 1) as f64
    }

    /// PSI bin edges: the reference's `bins`-quantiles, without repeats.
    pub fn edges(&self, bins: usize) -> Vec<f64> {
        let last = self.grid.len() - 1;
        let mut edges: Vec<f64> = (1..bins).map(|k| self.grid[(k * last + bins / 2) / bins]).collect();
        edges.dedup();
        edges
    }
}

/// PSI and Pearson's chi-square of `observed` counts against `expected` shares.
///
/// Shares are floored at half a count of their sample (`n` observed rows,
/// `m` reference rows), so an empty bin weighs heavily but not infinitely.
pub fn psi_and_chi_square(observed: &[u64], expected: &[f64], m: f64) -> (f64, f64) {
    let n: u64 = observed.iter().sum();
    let n = n as f64;
    let (mut psi, mut chi) = (0.0, 0.0);
    for (&o, &e) in observed.iter().zip(expected) {
        let a = (o as f64 / n).max(0.5 / n);
        let e = e.max(0.5 / m);
        psi += (a - e) * (a / e).ln();
        chi += (o as f64 / n - e).powi(2) / e;
    }
    // The reference is a sample too: n * m / (n + m) is the effective size.
    (psi, chi * n * m / (n + m))
}

/// Upper-tail probability of a chi-square with `df` degrees of freedom
/// (Wilson-Hilferty: within a few percent of exact for df >= 2 in the tail
/// that matters here).
pub fn chi_square_p(x: f64, df: f64) -> f64 {
    if df <= 0.0 {
        return 1.0;
    }
    let v = 2.0 / (9.0 * df);
    let z = ((x / df).cbrt() - (1.0 - v)) / v.sqrt();
    normal_upper_tail(z)
}

/// P(Z > z) for a standard normal (Abramowitz and Stegun 7.1.26, error < 1.5e-7).
pub fn normal_upper_tail(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erfc = poly * (-x * x).exp();
    if z >= 0.0 {
        erfc / 2.0
    } else {
        1.0 - erfc / 2.0
    }
}

/// A window's values laid on a reference grid: the bin counts for PSI and
/// the KS distance, from one merge of the sorted values with the grid.
#[derive(Debug)]
pub struct Comparison {
    /// Values per PSI bin (cut at the reference's `bins`-quantiles).
    pub observed: Vec<u64>,
    /// The reference's share of each bin.
    pub expected: Vec<f64>,
    /// The largest gap between the reference CDF and the window's, at the
    /// grid points (just below and at each): the two-sample Kolmogorov-Smirnov
    /// distance, to within the grid's resolution.
    pub ks: f64,
}

impl QuantileGrid {
    /// `sorted`: the window's values in ascending order.
    pub fn compare(&self, sorted: &[f64], bins: usize) -> Comparison {
        let g = &self.grid;
        // below[j]: values strictly between g[j-1] and g[j]; equal[j]: values equal to g[j]
        // (only at the first of repeated grid points).
        let (mut below, mut equal) = (vec![0u64; g.len() + 1], vec![0u64; g.len()]);
        // Grid points below the value: they only grow, as the values do.
        let mut p = 0;
        for &x in sorted {
            while p < g.len() && g[p] < x {
                p += 1;
            }
            if p < g.len() && g[p] == x {
                equal[p] += 1
            } else {
                below[p] += 1
            }
        }
        let n = sorted.len() as f64;
        let edges = self.edges(bins);
        let (mut observed, mut expected) = (Vec::with_capacity(edges.len() + 1), Vec::with_capacity(edges.len() + 1));
        let (mut ks, mut seen, mut binned, mut cdf_binned) = (0.0f64, 0u64, 0u64, 0.0);
        let mut next_edge = edges.iter().peekable();
        for j in 0..g.len() {
            if j > 0 && g[j] == g[j - 1] {
                continue;
            }
            seen += below[j];
            ks = ks.max((self.cdf_below(g[j]) - seen as f64 / n).abs());
            seen += equal[j];
            let cdf = self.cdf(g[j]);
            ks = ks.max((cdf - seen as f64 / n).abs());
            if next_edge.peek() == Some(&&g[j]) {
                next_edge.next();
                observed.push(seen - binned);
                expected.push(cdf - cdf_binned);
                (binned, cdf_binned) = (seen, cdf);
            }
        }
        observed.push(sorted.len() as u64 - binned);
        expected.push(1.0 - cdf_binned);
        Comparison { observed, expected, ks }
    }
}

/// P-value of a KS distance `d` between samples of `n` and `m` rows
/// (the Kolmogorov distribution with Stephens' small-sample correction).
pub fn ks_p(d: f64, n: f64, m: f64) -> f64 {
    let ne = n * m / (n + m);
    let lambda = (ne.sqrt() + 0.12 + 0.11 / ne.sqrt()) * d;
    if lambda < 0.2 {
        return 1.0;
    }
    // The terms fall off as exp(-2 k² λ²): past 1e-17 they change nothing.
    let mut sum = 0.0;
    for k in 1..=100 {
        let k = f64::from(k);
        let term = (-2.0 * k * k * lambda * lambda).exp();
        sum += if k as u32 % 2 == 1 { term } else { -term };
        if term < 1e-17 {
            break;
        }
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uniform_grid() -> QuantileGrid {
        QuantileGrid { grid: (0..=100).map(|i| f64::from(i) / 100.0).collect() }
    }

    #[test]
    fn grid_cdf_interpolates_and_handles_ties() {
        let g = uniform_grid();
        assert_eq!((g.cdf(-1.0), g.cdf(0.255), g.cdf(2.0)), (0.0, 0.255, 1.0));
        // 40% of rows are 1, then 2s.
        let ties = QuantileGrid { grid: (0..=100).map(|i| if i <= 40 { 1.0 } else { 2.0 }).collect() };
        assert_eq!((ties.cdf(1.0), ties.cdf(2.0)), (0.4, 1.0));
        assert!((ties.cdf(1.5) - 0.405).abs() < 1e-12, "linear between the last 1 and the first 2");
        assert_eq!((ties.cdf_below(1.0), ties.cdf_below(2.0), ties.cdf_below(3.0)), (0.0, 0.41, 1.0));
        assert_eq!(uniform_grid().cdf_below(0.255), 0.255);
        assert_eq!(ties.edges(10), [1.0, 2.0]);
        assert_eq!(uniform_grid().edges(4), [0.25, 0.5, 0.75]);
    }

    #[test]
    fn p_values_match_tables() {
        // chi-square 9 df: 21.67 is the 1% point, 27.88 the 0.1% point.
        assert!((chi_square_p(21.67, 9.0) - 0.01).abs() < 0.001, "{}", chi_square_p(21.67, 9.0));
        assert!((chi_square_p(27.88, 9.0) - 0.001).abs() < 0.0002, "{}", chi_square_p(27.88, 9.0));
        assert!((normal_upper_tail(1.959964) - 0.025).abs() < 1e-6);
        // KS: lambda 1.36 is the 5% point, 1.95 the 0.1% point.
        let n = 1e6;
        assert!((ks_p(1.358 / (n / 2.0f64).sqrt(), n, n) - 0.05).abs() < 0.002);
        assert!((ks_p(1.949 / (n / 2.0f64).sqrt(), n, n) - 0.001).abs() < 0.0003);
    }

    #[test]
    fn discrete_values_compare_like_with_like() {
        // Values 1..=6 equally often, and a sample of exactly that.
        let g = QuantileGrid { grid: (0..=120).map(|i| f64::from((i * 6 / 121) + 1)).collect() };
        let sample: Vec<f64> = (0..600).map(|i| f64::from(i / 100 + 1)).collect();
        let c = g.compare(&sample, 10);
        assert!(c.ks < 0.02, "{c:?}");
        assert_eq!(c.observed.iter().sum::<u64>(), 600);
        assert!(psi_and_chi_square(&c.observed, &c.expected, 1e6).0 < 0.01, "{c:?}");
    }

    #[test]
    fn a_shifted_sample_is_far_in_ks_and_psi() {
        let g = uniform_grid();
        let same: Vec<f64> = (0..1000).map(|i| (f64::from(i) + 0.5) / 1000.0).collect();
        let c = g.compare(&same, 10);
        assert!(c.ks < 0.002, "{c:?}");
        assert_eq!(c.observed, [100; 10]);
        assert!(c.expected.iter().all(|e| (e - 0.1).abs() < 1e-9), "{c:?}");
        let shifted: Vec<f64> = same.iter().map(|x| x * 0.5 + 0.5).collect();
        let c = g.compare(&shifted, 10);
        assert!((c.ks - 0.5).abs() < 0.002, "{c:?}");
        assert_eq!(c.observed, [0, 0, 0, 0, 0, 200, 200, 200, 200, 200]);
        // Below the reference's minimum and above its maximum.
        assert!((g.compare(&[-1.0; 10], 10).ks - 1.0).abs() < 1e-12);
        assert_eq!(g.compare(&[2.0; 10], 10).observed[9], 10);
    }

    #[test]
    fn psi_is_zero_for_equal_shares_and_grows_with_the_shift() {
        let (psi, chi) = psi_and_chi_square(&[100, 100, 100, 100], &[0.25; 4], 1e6);
        assert!(psi.abs() < 1e-12 && chi.abs() < 1e-9);
        let (psi, chi) = psi_and_chi_square(&[250, 50, 50, 50], &[0.25; 4], 1e6);
        // (0.625-0.25)ln(2.5) + 3 (0.125-0.25)ln(0.5)
        assert!((psi - (0.375 * 2.5f64.ln() + 3.0 * 0.125 * 2f64.ln())).abs() < 1e-9, "{psi}");
        assert!(chi > 200.0);
    }
}
