//! Outliers: values far from a numeric column's usual distribution.
//!
//! A value is an outlier when both its robust z-score (distance from the
//! reference median in units of 1.4826 x MAD) passes `z_threshold` and it
//! lies outside the reference's `iqr_k` x IQR fences. A value is extreme
//! when it lies both `extreme_factor` times further from the median than the
//! reference's 1st or 99th percentile and twice as far as the farthest value
//! the column ever held on that side (a heavy tail reaches far, but not
//! suddenly twice as far): even one such value (a unit error, a sentinel, a
//! broken sensor) is a finding of its own (`extreme_values`). The reference is learned
//! from a bounded sample of the first windows, together with the share of
//! outliers it already holds (a skewed price column has some); a window is
//! flagged when its outlier rate rises clearly above the rates of the windows
//! before (their real spread, not binomial noise alone: see `RateBaseline`).
//! Columns that move with time (epoch times, counters, calendar parts: see
//! `TimeLikeColumns`) are not scored.
//!
//! The reference follows legitimate change: every `refresh_windows` windows
//! it is learned again from a uniform sample of every window so far that did
//! not depart, so its fences widen to hold the seasons (July is not an
//! outlier of January once both are in the sample), and a departure lasting
//! `NEW_NORMAL_AFTER` windows is learned at once from its own windows. (So
//! the outlier rate's meaning moves with the reference: the host's control
//! rules do not watch it unless asked.)

mod sorted_sample;

use std::collections::BTreeMap;

use clean_host_sdk::bindings::clean_host::plugin::host::LogLevel;
use clean_host_sdk::stats::{first_failing, sorted_median_mad, sorted_quantile, Departures, Ewma, RateBaseline, Reservoir};
use clean_host_sdk::time_like::TimeLikeColumns;
use clean_host_sdk::{
    decode_state, encode_state, export_detector, log, metric_info, parse_config, Analysis, Batch, BatchParts, Detector, Finding, NumericView, PluginInfo,
    Reads, Severity,
};
use serde::{Deserialize, Serialize};

use sorted_sample::SortedSample;

const SAMPLE_SIZE: usize = 4096;
/// Fewest outliers that make a finding, unless the window is small.
const MIN_COUNT: usize = 5;
/// Weight of a window in the mean rate of calm windows (about the last 50).
const CALM_ALPHA: f64 = 0.02;
/// How many times the farthest value ever seen an extreme one lies from the median.
const BEYOND_FARTHEST: f64 = 2.0;

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Windows used to learn each column's reference distribution.
    warmup_windows: u32,
    /// Windows after which the reference is learned again from a sample of
    /// the windows since (0: never).
    refresh_windows: u32,
    /// Robust z-score above which a value may be an outlier.
    z_threshold: f64,
    /// IQR multiple for the fences outside which a value may be an outlier.
    iqr_k: f64,
    /// Smallest rise in the outlier rate that counts as a departure.
    min_increase: f64,
    /// Fewest outliers that can make a finding (default: 5; in a window of
    /// 40 values or fewer, also a tenth of them rounded up, at least 3, when
    /// the column's usual rate gives that many less than once in 10,000
    /// windows: 4 impossible values among 30 are a departure).
    min_count: Option<usize>,
    /// Only these columns (all numeric columns when empty).
    columns: Vec<String>,
    /// How many times the distance from the median to the 1st or 99th
    /// percentile a value must lie from the median to be extreme (0: off).
    extreme_factor: f64,
    /// Per column: `true` never scores it (a clock), `false` always does
    /// (default: recognised by its values).
    time_like: BTreeMap<String, bool>,
}

impl Config {
    /// Whether `hits` outliers among `n` values can make a finding, where
    /// `usual` is the column's mean outlier rate in calm windows (none yet:
    /// 5 are wanted). In a small window the rate's own limit says little
    /// (most windows of 30 hold no outlier, so it is `min_increase`, which
    /// one outlier passes): fewer than 5 count only when chance alone would
    /// rarely give them.
    fn enough(&self, hits: usize, n: usize, usual: Option<f64>) -> bool {
        match self.min_count {
            Some(min) => hits >= min,
            None => hits >= MIN_COUNT || usual.is_some_and(|p| hits >= n.div_ceil(10).max(3) && binomial_tail(hits, n, p) < 1e-4),
        }
    }
}

/// P(X >= k) for X ~ Binomial(n, p): one minus the terms below k.
fn binomial_tail(k: usize, n: usize, p: f64) -> f64 {
    if k == 0 || p >= 1.0 {
        return 1.0;
    }
    let p = p.max(0.0);
    let (mut term, mut below) = ((1.0 - p).powi(n as i32), 0.0);
    for i in 0..k.min(n + 1) {
        below += term;
        // C(n, i + 1) p^(i + 1) (1 - p)^(n - i - 1) from the term of i.
        term *= (n - i) as f64 / (i + 1) as f64 * p / (1.0 - p);
    }
    (1.0 - below).max(0.0)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            warmup_windows: 10,
            refresh_windows: 10,
            z_threshold: 3.5,
            iqr_k: 3.0,
            min_increase: 0.02,
            min_count: None,
            columns: Vec::new(),
            extreme_factor: 10.0,
            time_like: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reference {
    median: f64,
    scale: f64,
    /// Outside these a value may be an outlier. "None" is `f64::MIN` or
    /// `f64::MAX`, never infinite: state is JSON, which has no infinity.
    low_fence: f64,
    high_fence: f64,
    /// Beyond these (and twice the farthest value seen) a value is extreme.
    extreme_low: f64,
    extreme_high: f64,
    rate: RateBaseline,
}

/// The farthest values a column held, below and above its median, in
/// windows that did not depart (extreme values left out).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Range {
    low: f64,
    high: f64,
}

impl Range {
    fn of(values: &[f64]) -> Self {
        let mut range = Range { low: f64::MAX, high: f64::MIN };
        values.iter().for_each(|&x| range.widen(x));
        range
    }

    /// Comparisons, not f64::min/max (libm calls in wasm); a NaN widens nothing.
    fn widen(&mut self, x: f64) {
        if x < self.low {
            self.low = x;
        }
        if x > self.high {
            self.high = x;
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum ColumnState {
    Learning {
        sample: Reservoir,
        windows: u32,
    },
    Scored {
        reference: Reference,
        seen: Range,
        /// A sample of every window so far that did not depart: the next reference.
        next: Reservoir,
        /// `next`'s values in order, followed as it changes.
        #[serde(skip)]
        next_sorted: Box<SortedSample>,
        windows: u32,
        /// While the column departs: the departure's own windows, a possible new normal.
        shift: Option<Box<Reservoir>>,
        departing: Departures,
        /// The mean outlier rate of the windows that did not depart: what
        /// chance gives (departures left out, which the rate's median and
        /// fences shrug off and a mean does not).
        #[serde(default)]
        calm: Ewma,
    },
    /// Constant, or nearly: no spread to measure distances in.
    Skipped,
}

#[derive(Default, Serialize, Deserialize)]
struct State {
    columns: BTreeMap<String, ColumnState>,
    #[serde(default)]
    time: TimeLikeColumns,
}

/// Where the first of `values` outside `low..=high` is. A function of its
/// own, not inlined into the caller: there, every pass of the loop stored
/// and reloaded several of the caller's floats around the loop's
/// interruption check.
#[inline(never)]
fn first_outside(values: &[f64], (low, high): (f64, f64)) -> Option<usize> {
    first_failing(values, |x| (x >= low) & (x <= high))
}

#[derive(Default)]
pub struct Outliers {
    config: Config,
    state: State,
    /// A column's present rows and values in this window (buffers kept
    /// from column to column).
    rows: Vec<u32>,
    values: Vec<f64>,
}

impl Reference {
    /// From a sample's values in ascending order.
    fn learn(ascending: &[f64], config: &Config) -> Option<Reference> {
        let [q01, q1, q3, q99] = [0.01, 0.25, 0.75, 0.99].map(|q| sorted_quantile(ascending, q, |x| x));
        let (median, mad) = sorted_median_mad(ascending);
        if q99 <= q01 {
            return None;
        }
        let iqr = q3 - q1;
        let e = config.extreme_factor;
        // Both tails or none: a column with its median at one end (a cost
        // mostly 0) has a tail too heavy to call any value extreme.
        let (extreme_low, extreme_high) =
            if e > 0.0 && median > q01 && q99 > median { (median - e * (median - q01), median + e * (q99 - median)) } else { (f64::MIN, f64::MAX) };
        // Mostly one value (a cost that is usually 0): no spread for the
        // outlier rate, only the extreme values.
        let (low_fence, high_fence) = if mad > 0.0 && iqr > 0.0 { (q1 - config.iqr_k * iqr, q3 + config.iqr_k * iqr) } else { (f64::MIN, f64::MAX) };
        let reference =
            Reference { median, scale: (1.4826 * mad).max(f64::MIN_POSITIVE), low_fence, high_fence, extreme_low, extreme_high, rate: RateBaseline::default() };
        Some(reference)
    }

    fn is_outlier(&self, x: f64, config: &Config) -> bool {
        (x < self.low_fence || x > self.high_fence) && ((x - self.median) / self.scale).abs() > config.z_threshold
    }

    /// The value of `values` (row, value) farthest from the median (NaN when none).
    fn farthest(&self, values: &[(u32, f64)]) -> f64 {
        values.iter().map(|&(_, x)| x).max_by(|a, b| (a - self.median).abs().total_cmp(&(b - self.median).abs())).unwrap_or(f64::NAN)
    }

    /// Where a value is none of the three things a window's values are
    /// tested for (an outlier, extreme by `bounds`, outside `seen`): inside
    /// the fences, `bounds`' low and high and `seen`, whichever is tightest.
    /// Most values are, and are passed by this one test. A NaN bound, which
    /// no value is beyond, narrows nothing.
    fn quiet(&self, bounds: &Extremes, seen: &Range) -> (f64, f64) {
        let (mut low, mut high) = (f64::NEG_INFINITY, f64::INFINITY);
        for (l, h) in [(self.low_fence, self.high_fence), (bounds.low, bounds.high), (seen.low, seen.high)] {
            // Compared, not f64::max/min: libm calls in wasm.
            if l > low {
                low = l;
            }
            if h < high {
                high = h;
            }
        }
        (low, high)
    }

    /// Where values are extreme, the farthest seen being `seen`.
    fn extreme_bounds(&self, seen: &Range) -> Extremes {
        let beyond = |farthest: f64| BEYOND_FARTHEST * (farthest - self.median).abs();
        Extremes { median: self.median, low: self.extreme_low, beyond_low: beyond(seen.low), high: self.extreme_high, beyond_high: beyond(seen.high) }
    }
}

/// A reference's bounds for extreme values, worked out once for a window's
/// values (and again when its range widens) rather than once a value: below
/// `low` and further than `beyond_low` below the median, or the same above.
struct Extremes {
    median: f64,
    low: f64,
    beyond_low: f64,
    high: f64,
    beyond_high: f64,
}

impl Extremes {
    fn holds(&self, x: f64) -> bool {
        (x < self.low && self.median - x > self.beyond_low) || (x > self.high && x - self.median > self.beyond_high)
    }
}

impl Outliers {
    fn analyze_column(&mut self, name: &str, view: NumericView, out: &mut Analysis) {
        let config = &self.config;
        let state = self.state.columns.entry(name.to_string()).or_insert_with(|| ColumnState::Learning { sample: Reservoir::new(SAMPLE_SIZE), windows: 0 });
        if matches!(state, ColumnState::Skipped) {
            return;
        }
        let (rows, values) = (&mut self.rows, &mut self.values);
        view.present_into(rows, values);
        match state {
            ColumnState::Learning { sample, windows } => {
                sample.extend(values);
                *windows += 1;
                if *windows >= config.warmup_windows {
                    let mut next_sorted = Box::new(SortedSample::of(&sample.values));
                    *state = match Reference::learn(next_sorted.read(&sample.values), config) {
                        Some(reference) if sample.values.len() >= 50 => ColumnState::Scored {
                            reference,
                            seen: Range::of(&sample.values),
                            next: sample.clone(),
                            next_sorted,
                            windows: 0,
                            shift: None,
                            departing: Departures::default(),
                            calm: Ewma::default(),
                        },
                        _ => ColumnState::Skipped,
                    };
                }
            }
            ColumnState::Scored { reference, seen, next, next_sorted, windows, shift, departing, calm } => {
                if values.is_empty() {
                    return;
                }
                // One pass: the outliers and extreme values with their rows,
                // and the values outside the range seen so far, the only ones
                // that may widen it; a value inside the quiet interval is
                // none of them, and passed by one test.
                let bounds = reference.extreme_bounds(seen);
                let (mut hits, mut extremes, mut outside) = (Vec::new(), Vec::new(), Vec::new());
                let quiet = reference.quiet(&bounds, seen);
                let mut from = 0;
                while let Some(at) = first_outside(&values[from..], quiet) {
                    let (row, x) = (rows[from + at], values[from + at]);
                    from += at + 1;
                    if reference.is_outlier(x, config) {
                        hits.push((row, x));
                    }
                    if bounds.holds(x) {
                        extremes.push((row, x));
                    }
                    if x < seen.low || x > seen.high {
                        outside.push(x);
                    }
                }
                let rate = hits.len() as f64 / values.len() as f64;
                out.metric("outlier_rate", Some(name), rate);
                let limit = reference.rate.upper_limit(values.len(), config.min_increase);
                let departed = rate > limit && config.enough(hits.len(), values.len(), (calm.count > 0).then_some(calm.mean));
                reference.rate.push(rate, departed);
                if departed {
                    let extreme = reference.farthest(&hits);
                    let severity = if rate > 0.2 { Severity::Critical } else { Severity::Warning };
                    out.findings.push(
                        Finding::new(
                            "outlier_rate",
                            Some(name),
                            rate,
                            limit,
                            severity,
                            format!(
                                "{} of {} values of '{name}' are outliers ({:.1}%, usual {:.1}%); most extreme {extreme}, usual median {:.4}",
                                hits.len(),
                                values.len(),
                                rate * 100.0,
                                reference.rate.rate() * 100.0,
                                reference.median
                            ),
                        )
                        .with_rows(hits.iter().map(|&(r, _)| r)),
                    );
                }
                out.metric("extreme_values", Some(name), extremes.len() as f64);
                // Its own finding in a departing window too: the rate's may
                // not be sure over the window's rows, and these values are.
                if !extremes.is_empty() {
                    let worst = reference.farthest(&extremes);
                    out.findings.push(
                        Finding::new(
                            "extreme_values",
                            Some(name),
                            extremes.len() as f64,
                            0.0,
                            Severity::Warning,
                            format!(
                                "{} value(s) of '{name}' far beyond anything usual: {worst} (usual median {:.4}; extreme below {:.4} or above {:.4})",
                                extremes.len(),
                                reference.median,
                                reference.extreme_low,
                                reference.extreme_high
                            ),
                        )
                        .with_rows(extremes.iter().map(|&(r, _)| r)),
                    );
                }
                // The next reference: the windows that did not depart, or a
                // departure's own once it lasted; a shorter one leaves nothing behind.
                if departed {
                    let sample = shift.get_or_insert_with(|| Box::new(Reservoir::new(SAMPLE_SIZE)));
                    sample.extend(values);
                    if departing.observe(true) {
                        let sample = *shift.take().expect("set above");
                        **next_sorted = SortedSample::of(&sample.values);
                        if let Some(fresh) = Reference::learn(next_sorted.read(&sample.values), config).filter(|_| sample.values.len() >= 50) {
                            (*reference, *seen) = (fresh, Range::of(&sample.values));
                        }
                        // The new normal is all there is to sample from now on.
                        (*next, *windows) = (sample, 0);
                    }
                } else {
                    *shift = None;
                    departing.observe(false);
                    calm.update(rate, CALM_ALPHA);
                    next.extend_noting(values, |replaced, value| next_sorted.note(replaced, value));
                    // A value widens the range unless it is extreme by the
                    // range as the values before it left it; one inside the
                    // range cannot widen it.
                    let mut bounds = bounds;
                    for x in outside {
                        if (x < seen.low || x > seen.high) && !bounds.holds(x) {
                            seen.widen(x);
                            bounds = reference.extreme_bounds(seen);
                        }
                    }
                    *windows += 1;
                    if config.refresh_windows > 0 && *windows >= config.refresh_windows {
                        if let Some(mut fresh) = Reference::learn(next_sorted.read(&next.values), config).filter(|_| next.values.len() >= 50) {
                            // The spread of past outlier rates still says how much they move.
                            fresh.rate = reference.rate.clone();
                            *reference = fresh;
                        }
                        *windows = 0;
                    }
                }
            }
            ColumnState::Skipped => {}
        }
    }
}

impl Detector for Outliers {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "outliers".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Robust z-score (median/MAD) and IQR outliers per numeric column against a learned reference".into(),
            metrics: vec![
                metric_info("outlier_rate", "Share of a numeric column's values that are outliers"),
                metric_info("extreme_values", "Values of a numeric column far beyond anything usual (extreme_factor)"),
            ],
            config_schema: r#"{"type":"object","properties":{"warmup_windows":{"type":"integer"},"refresh_windows":{"type":"integer"},"z_threshold":{"type":"number"},"iqr_k":{"type":"number"},"min_increase":{"type":"number"},"min_count":{"type":"integer"},"columns":{"type":"array","items":{"type":"string"}},"extreme_factor":{"type":"number"},"time_like":{"type":"object","additionalProperties":{"type":"boolean"}}}}"#.into(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        let config: Config = parse_config(config)?;
        if config.z_threshold <= 0.0 || config.iqr_k <= 0.0 || config.extreme_factor < 0.0 {
            return Err("z_threshold and iqr_k must be positive, extreme_factor not negative".into());
        }
        self.state.time.force(config.time_like.clone());
        self.config = config;
        Ok(())
    }

    fn reads(&self) -> Reads {
        if self.config.columns.is_empty() {
            Reads::only(BatchParts::FLOAT64_VALUES | BatchParts::INT64_VALUES)
        } else {
            Reads::only(BatchParts::empty()).and_columns(self.config.columns.iter().cloned())
        }
    }

    fn analyze(&mut self, batch: &Batch) -> Result<Analysis, String> {
        let mut out = Analysis::new();
        let columns = &self.config.columns;
        self.state.time.observe(batch, |name| columns.is_empty() || columns.iter().any(|c| c == name));
        for column in &batch.columns {
            if !self.config.columns.is_empty() && !self.config.columns.contains(&column.name) {
                continue;
            }
            if self.state.time.is_time_like(&column.name) {
                continue;
            }
            if let Some(view) = column.numeric() {
                self.analyze_column(&column.name, view, &mut out);
            }
        }
        Ok(out)
    }

    fn snapshot(&self) -> Vec<u8> {
        encode_state(&self.state)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        self.state = decode_state(state).unwrap_or_else(|e| {
            log(LogLevel::Warn, &format!("outliers: the state handed over is not one this version reads ({e}); learning anew"));
            State::default()
        });
        self.state.time.force(self.config.time_like.clone());
        Ok(())
    }
}

export_detector!(Outliers);

#[cfg(test)]
mod tests {
    use super::*;
    use clean_host_sdk::stats::sorted;
    use clean_host_sdk::testing::{BatchBuilder, Rng};
    use clean_host_sdk::ColumnValues;

    #[test]
    fn resumes_from_its_snapshot_exactly() {
        let windows = clean_host_sdk::testing::realistic_windows(7, 60, 500);
        clean_host_sdk::testing::assert_restore_equivalent::<Outliers>("{}", &windows, (3..60).step_by(7));
    }

    #[test]
    fn reads_all_it_analyses() {
        let windows = clean_host_sdk::testing::realistic_windows(7, 60, 500);
        clean_host_sdk::testing::assert_reads_suffice::<Outliers>("{}", &windows);
        clean_host_sdk::testing::assert_reads_suffice::<Outliers>(r#"{"columns": ["amount"]}"#, &windows);
    }

    /// Log-normal prices (heavily skewed), a sequence id, small integer counts.
    fn window(seq: u64, rng: &mut Rng, spikes: f64) -> Batch {
        let n = 1000;
        let price: Vec<Option<f64>> = (0..n)
            .map(|_| {
                let p = (3.0 + 0.9 * rng.normal()).exp();
                Some(if rng.uniform() < spikes { p * 1000.0 } else { p })
            })
            .collect();
        let ids: Vec<Option<i64>> = (0..n).map(|i| Some((seq * n + i) as i64)).collect();
        let items: Vec<Option<i64>> = (0..n).map(|_| Some(1 + (rng.uniform() * 4.0) as i64)).collect();
        BatchBuilder::new(seq).float("price", &price).int("id", &ids).int("items", &items).build()
    }

    #[test]
    fn skewed_clean_data_is_quiet_for_many_windows() {
        let mut d = Outliers::default();
        d.configure("{}").unwrap();
        let mut rng = Rng(11);
        for seq in 0..300 {
            let a = d.analyze(&window(seq, &mut rng, 0.0)).unwrap();
            assert!(a.findings.is_empty(), "window {seq}: {:?}", a.findings);
        }
    }

    /// A detector past its reference (10 windows) and the spread of its
    /// outlier rates (12 more), and the generator that fed it.
    fn warmed(seed: u64) -> (Outliers, Rng) {
        let mut d = Outliers::default();
        d.configure("{}").unwrap();
        let mut rng = Rng(seed);
        for seq in 0..30 {
            d.analyze(&window(seq, &mut rng, 0.0)).unwrap();
        }
        (d, rng)
    }

    #[test]
    fn injected_spikes_are_flagged_with_rows() {
        let (mut d, mut rng) = warmed(5);
        let a = d.analyze(&window(30, &mut rng, 0.05)).unwrap();
        let metrics: Vec<&str> = a.findings.iter().map(|f| f.metric.as_str()).collect();
        // Prices 1000 times their usual are also extreme: a finding of their
        // own, as the rate's finding may not be sure over the window's rows.
        assert_eq!(metrics, ["outlier_rate", "extreme_values"], "{:?}", a.findings);
        for f in &a.findings {
            assert_eq!(f.column.as_deref(), Some("price"));
            assert!(!f.sample_rows.is_empty());
        }
        assert!(a.findings[0].value > 0.03);
        assert!(a.findings[1].value >= 20.0, "{:?}", a.findings[1]);
    }

    #[test]
    fn outliers_short_of_extreme_are_one_finding() {
        let (mut d, mut rng) = warmed(5);
        // 8% of prices at 400: past the fences (median about 20), nowhere near extreme.
        let mut batch = window(30, &mut rng, 0.0);
        let ColumnValues::Float64(price) = &mut batch.columns[0].values else { unreachable!() };
        price.iter_mut().step_by(12).for_each(|p| *p = 400.0);
        let a = d.analyze(&batch).unwrap();
        let metrics: Vec<&str> = a.findings.iter().map(|f| f.metric.as_str()).collect();
        assert_eq!(metrics, ["outlier_rate"], "{:?}", a.findings);
    }

    /// Findings of a window of `rows` values around 100 with `high` of them
    /// at 200 (past the fences, nowhere near extreme), after 60 windows with
    /// one such value in every `every`-th.
    fn small_windows(config: &str, rows: usize, every: usize, high: usize) -> Vec<String> {
        let mut d = Outliers::default();
        d.configure(config).unwrap();
        let mut rng = Rng(4);
        let mut analyze = |seq: u64, high: usize| {
            let values: Vec<Option<f64>> = (0..rows).map(|i| Some(if i < high { 200.0 } else { 100.0 + 10.0 * rng.normal() })).collect();
            d.analyze(&BatchBuilder::new(seq).float("level", &values).build()).unwrap()
        };
        for seq in 0..60 {
            let a = analyze(seq, usize::from(seq as usize % every == every - 1));
            assert!(a.findings.is_empty(), "window {seq}: {:?}", a.findings);
        }
        analyze(60, high).findings.iter().map(|f| f.metric.clone()).collect()
    }

    #[test]
    fn a_small_window_departs_on_fewer_outliers_than_chance_gives() {
        // 3 of 30 where there never was one: a departure.
        assert_eq!(small_windows("{}", 30, usize::MAX, 3), ["outlier_rate"]);
        // Where one window in 5 holds one, 3 come by chance once in ~1000 windows: not yet.
        assert!(small_windows("{}", 30, 5, 3).is_empty());
        assert_eq!(small_windows("{}", 30, 5, 4), ["outlier_rate"]);
        // A min_count given is kept; windows of 50 values and more want 5.
        assert!(small_windows(r#"{"min_count": 5}"#, 30, usize::MAX, 4).is_empty());
        assert!(small_windows("{}", 60, usize::MAX, 4).is_empty());
        assert_eq!(small_windows("{}", 60, usize::MAX, 5), ["outlier_rate"]);
    }

    #[test]
    fn binomial_tails_are_exact() {
        // P(X >= 2) for Binomial(3, 0.5) is 4/8; P(X >= 0) is 1; nothing to gain at p 0.
        assert!((binomial_tail(2, 3, 0.5) - 0.5).abs() < 1e-12);
        assert_eq!(binomial_tail(0, 30, 0.1), 1.0);
        assert_eq!(binomial_tail(3, 30, 0.0), 0.0);
        assert_eq!(binomial_tail(3, 30, 1.0), 1.0);
        // 1 - (0.99^30 + 30 0.01 0.99^29 + 435 0.01^2 0.99^28)
        let p: f64 = 0.01;
        let below = 0.99f64.powi(30) + 30.0 * p * 0.99f64.powi(29) + 435.0 * p * p * 0.99f64.powi(28);
        assert!((binomial_tail(3, 30, p) - (1.0 - below)).abs() < 1e-12);
    }

    #[test]
    fn a_shifted_distribution_is_critical() {
        let (mut d, mut rng) = warmed(9);
        let a = d.analyze(&window(30, &mut rng, 1.0)).unwrap();
        assert_eq!(a.findings[0].severity, Severity::Critical);
    }

    /// A cost that is mostly 0 has no outlier fences; its state still
    /// round-trips, so a reload or restart keeps what was learned.
    #[test]
    fn state_without_fences_survives_a_restore() {
        let mut d = Outliers::default();
        d.configure("{}").unwrap();
        let mut rng = Rng(3);
        let cost = |rng: &mut Rng| -> Vec<Option<f64>> { (0..1000).map(|_| Some(if rng.uniform() < 0.02 { 50.0 * rng.uniform() } else { 0.0 })).collect() };
        for seq in 0..30 {
            d.analyze(&BatchBuilder::new(seq).float("cost", &cost(&mut rng)).build()).unwrap();
        }
        let state = d.snapshot();
        let mut again = Outliers::default();
        again.configure("{}").unwrap();
        again.restore(&state).unwrap();
        let (a, b) = (String::from_utf8(again.snapshot()).unwrap(), String::from_utf8(state).unwrap());
        assert_eq!(a, b, "the restored state differs");
        // The restored detector goes on as the first would have.
        let values = cost(&mut rng);
        let (a, b) = (
            d.analyze(&BatchBuilder::new(30).float("cost", &values).build()).unwrap(),
            again.analyze(&BatchBuilder::new(30).float("cost", &values).build()).unwrap(),
        );
        assert_eq!(format!("{:?}", a.metrics), format!("{:?}", b.metrics));
    }

    #[test]
    fn first_outside_is_the_first_value_out_of_bounds() {
        let mut rng = Rng(9);
        for len in 0..40 {
            for out_share in [0.0, 0.02, 0.3] {
                let values: Vec<f64> = (0..len).map(|_| if rng.uniform() < out_share { 5.0 * rng.normal() } else { rng.uniform() }).collect();
                // Bounds the values sit on, and NaN bounds: nothing is inside
                // them, so every value is looked at closely.
                for bounds in [(0.0, 1.0), (-1.0, 0.5), (values.first().copied().unwrap_or(0.0), 1.0), (f64::NAN, 1.0), (0.0, f64::NAN)] {
                    let want = values.iter().position(|&x| x < bounds.0 || x > bounds.1 || bounds.0.is_nan() || bounds.1.is_nan());
                    assert_eq!(first_outside(&values, bounds), want, "{values:?} {bounds:?}");
                }
            }
        }
    }

    #[test]
    fn a_quiet_value_is_no_outlier_not_extreme_and_inside_the_range_seen() {
        let mut rng = Rng(21);
        let config = Config::default();
        let mut quiet_values = 0;
        for case in 0..400 {
            let sample: Vec<f64> = (0..200).map(|_| if case % 3 == 0 { (rng.normal() * 3.0).round() } else { (rng.normal() + 2.0).exp() }).collect();
            let Some(mut reference) = Reference::learn(&sorted(sample.iter().copied()), &config) else { continue };
            // Fences and extreme bounds of every kind: learned, none (f64::MIN
            // and f64::MAX), NaN; ranges seen inside, around or apart from them.
            let odd = [f64::NAN, f64::MIN, f64::MAX, 0.0, reference.median];
            match case % 5 {
                1 => reference.low_fence = odd[case / 5 % 5],
                2 => reference.high_fence = odd[case / 5 % 5],
                3 => (reference.extreme_low, reference.extreme_high) = (odd[case / 5 % 5], odd[(case / 25) % 5]),
                _ => {}
            }
            let (a, b) = (reference.median + 10.0 * rng.normal(), reference.median + 10.0 * rng.normal());
            let seen = if case % 7 == 0 { Range::of(&sample) } else { Range { low: a.min(b), high: if case % 11 == 0 { a.min(b) - 1.0 } else { a.max(b) } } };
            let bounds = reference.extreme_bounds(&seen);
            let (low, high) = reference.quiet(&bounds, &seen);
            let edges = [low, high, reference.low_fence, reference.high_fence, seen.low, seen.high, bounds.low, bounds.high];
            let xs = sample.iter().copied().chain(edges.iter().flat_map(|&e| [e, e.next_down(), e.next_up()])).filter(|x| x.is_finite());
            for x in xs.filter(|&x| x >= low && x <= high) {
                quiet_values += 1;
                assert!(!reference.is_outlier(x, &config), "case {case}: {x} is quiet and an outlier");
                assert!(!bounds.holds(x), "case {case}: {x} is quiet and extreme");
                assert!(x >= seen.low && x <= seen.high, "case {case}: {x} is quiet and outside the range seen");
            }
        }
        assert!(quiet_values > 10_000, "only {quiet_values} quiet values were tested");
    }

    #[test]
    fn bad_thresholds_are_rejected() {
        assert!(Outliers::default().configure(r#"{"z_threshold": -1}"#).is_err());
    }
}
