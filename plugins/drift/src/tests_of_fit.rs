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
/// the KS distance.
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
    ///
    /// The reference CDF is piecewise linear between grid points and
    /// right-continuous where they repeat (a value many rows share), so at a
    /// grid point `j` (the first of its repeats, the last being `r`) it is
    /// `j / last` just below and `r / last` at it. The window's CDF there is
    /// its values below `g[j]`, and those at it too: counted by one walk up
    /// the window alongside the grid (n / grid values a grid point: ten in a
    /// window of 1000, where two binary searches took twenty dependent loads).
    pub fn compare(&self, sorted: &[f64], bins: usize) -> Comparison {
        let g = &self.grid;
        let last = (g.len() - 1) as f64;
        let n = sorted.len() as f64;
        let edges = self.edges(bins);
        let (mut observed, mut expected) = (Vec::with_capacity(edges.len() + 1), Vec::with_capacity(edges.len() + 1));
        let (mut ks, mut binned, mut cdf_binned) = (0.0f64, 0, 0.0);
        let mut next_edge = edges.iter().peekable();
        // Values at or below the grid point before: the walk goes on from them.
        let mut seen = 0;
        let mut j = 0;
        while j < g.len() {
            let x = g[j];
            let r = j + g[j..].iter().take_while(|&&v| v == x).count() - 1;
            let below = seen + leading(&sorted[seen..], |v| v < x);
            seen = below + leading(&sorted[below..], |v| v == x);
            let cdf = r as f64 / last;
            // Compared, not f64::max: that is a libm call in wasm.
            for gap in [(j as f64 / last - below as f64 / n).abs(), (cdf - seen as f64 / n).abs()] {
                if gap > ks {
                    ks = gap;
                }
            }
            if next_edge.peek() == Some(&&x) {
                next_edge.next();
                observed.push((seen - binned) as u64);
                expected.push(cdf - cdf_binned);
                (binned, cdf_binned) = (seen, cdf);
            }
            j = r + 1;
        }
        observed.push((sorted.len() - binned) as u64);
        expected.push(1.0 - cdf_binned);
        Comparison { observed, expected, ks }
    }
}

/// How many values from the start of `sorted` (ascending) `holds` is true
/// of, it being true of a prefix: eight are passed over at once while the
/// eighth holds, where in wasm a test a value cost most of the walk.
fn leading(sorted: &[f64], holds: impl Fn(f64) -> bool) -> usize {
    let mut n = 0;
    while n + 8 <= sorted.len() && holds(sorted[n + 7]) {
        n += 8;
    }
    n + sorted[n..].iter().take_while(|&&v| holds(v)).count()
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
    use clean_host_sdk::testing::Rng;

    fn uniform_grid() -> QuantileGrid {
        QuantileGrid { grid: (0..=100).map(|i| f64::from(i) / 100.0).collect() }
    }

    /// The reference CDF at `x` by its definition: linear between grid
    /// points, right-continuous where they repeat; `strictly`: just below `x`.
    fn grid_cdf(g: &[f64], x: f64, strictly: bool) -> f64 {
        let last = (g.len() - 1) as f64;
        let at_or_below = g.iter().filter(|&&v| if strictly { v < x } else { v <= x }).count();
        match at_or_below {
            0 => 0.0,
            k if k == g.len() => 1.0,
            // At a grid point (only when not strictly below it).
            k if g[k - 1] == x => (k - 1) as f64 / last,
            k => ((k - 1) as f64 + (x - g[k - 1]) / (g[k] - g[k - 1])) / last,
        }
    }

    #[test]
    fn ks_and_bins_are_what_the_cdfs_give_at_every_grid_point() {
        let mut rng = Rng(3);
        for case in 0..200 {
            // Grids and windows with and without repeated values, and windows
            // reaching beyond the grid on either side.
            let ties = case % 2 == 0;
            let draw = |rng: &mut Rng| if ties { (rng.normal() * 2.0).round() } else { rng.normal() };
            let mut grid: Vec<f64> = (0..101).map(|_| draw(&mut rng)).collect();
            grid.sort_unstable_by(f64::total_cmp);
            let shift = f64::from(case % 5) - 2.0;
            let mut window: Vec<f64> = (0..1 + case * 7).map(|_| draw(&mut rng) + shift).collect();
            window.sort_unstable_by(f64::total_cmp);
            let c = QuantileGrid { grid: grid.clone() }.compare(&window, 10);
            let n = window.len() as f64;
            let share = |strictly: bool, x: f64| window.iter().filter(|&&v| if strictly { v < x } else { v <= x }).count() as f64 / n;
            let ks = grid.iter().flat_map(|&x| [(grid_cdf(&grid, x, true) - share(true, x)).abs(), (grid_cdf(&grid, x, false) - share(false, x)).abs()]);
            assert_eq!(c.ks, ks.fold(0.0, f64::max), "case {case}");
            let edges = QuantileGrid { grid: grid.clone() }.edges(10);
            let mut cuts: Vec<(u64, f64)> = edges.iter().map(|&x| (window.iter().filter(|&&v| v <= x).count() as u64, grid_cdf(&grid, x, false))).collect();
            cuts.push((window.len() as u64, 1.0));
            let observed: Vec<u64> = cuts.iter().scan(0, |before, &(at, _)| Some(at - std::mem::replace(before, at))).collect();
            assert_eq!(c.observed, observed, "case {case}");
            let expected: Vec<f64> = cuts.iter().scan(0.0, |before, &(_, cdf)| Some(cdf - std::mem::replace(before, cdf))).collect();
            assert_eq!(c.expected, expected, "case {case}");
        }
    }

    #[test]
    fn leading_counts_the_prefix_a_test_holds_for() {
        for len in 0..40 {
            let sorted: Vec<f64> = (0..len).map(|i| f64::from(i / 3)).collect();
            for x in [-1.0, 0.0, 2.0, 7.0, 20.0] {
                let below = leading(&sorted, |v| v < x);
                assert_eq!(below, sorted.iter().filter(|&&v| v < x).count(), "{len} {x}");
                assert_eq!(leading(&sorted[below..], |v| v == x), sorted.iter().filter(|&&v| v == x).count(), "{len} {x}");
            }
        }
    }

    #[test]
    fn edges_are_the_quantiles_without_repeats() {
        let ties = QuantileGrid { grid: (0..=100).map(|i| if i <= 40 { 1.0 } else { 2.0 }).collect() };
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
