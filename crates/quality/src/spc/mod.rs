//! Statistical process control over the metrics detectors emit per window.
//!
//! A detector judges one window at a time, so a null rate creeping from 1% to
//! 3% over fifty windows never crosses its per-window limit. Here every
//! metric value (per partition, detector, metric and column) becomes a series
//! across windows, and control rules watch the series: EWMA and CUSUM, which
//! add up small departures, and the four Western Electric run rules.
//!
//! Each series first learns its mean and standard deviation over
//! `warmup_windows` windows (phase I), then keeps them fixed (phase II), so a
//! slow drift is not absorbed into the baseline: a null rate creeping up is
//! what the rules are for. A column's `mean` is another matter (summer is
//! warmer than winter): its in-control mean follows the series (`follow`,
//! default 0.1 per window for `mean`, 0 for the rest), so a season is
//! followed while a step still stands out. A value whose own detector
//! flagged it in that window is already alerted: it neither feeds a series
//! nor fires a rule. A series that was constant during warm-up has no spread
//! to measure departures in and is left unwatched unless its `sigma` is
//! configured.
//!
//! A departure alerts once: the rules that fire in the window where it is
//! first seen each give a signal, then the series stays quiet until it has
//! been back within one sigma of its mean for [`CALM_WINDOWS`] windows in a
//! row. A departure that has lasted [`NEW_NORMAL_WINDOWS`] windows and
//! settled (its last [`NEW_NORMAL_WINDOWS`] values show no trend) is a new
//! normal: their mean is the series' mean from then on, with the spread
//! learned before (or theirs, if wider), and the rules watch for departures
//! from that.

pub mod scenarios;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use clean_host_core::bindings::Severity;

/// One control rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Rule {
    /// Exponentially weighted moving average beyond its control limits.
    #[serde(rename = "ewma")]
    Ewma,
    /// Two-sided tabular CUSUM above its decision interval.
    #[serde(rename = "cusum")]
    Cusum,
    /// Western Electric 1: one point beyond 3 sigma.
    #[serde(rename = "beyond_3_sigma")]
    Beyond3Sigma,
    /// Western Electric 2: 2 of 3 successive points beyond 2 sigma, same side.
    #[serde(rename = "2_of_3_beyond_2_sigma")]
    TwoOfThreeBeyond2Sigma,
    /// Western Electric 3: 4 of 5 successive points beyond 1 sigma, same side.
    #[serde(rename = "4_of_5_beyond_1_sigma")]
    FourOfFiveBeyond1Sigma,
    /// Western Electric 4: 8 successive points on one side of the mean.
    #[serde(rename = "8_on_one_side")]
    EightOnOneSide,
}

impl Rule {
    pub const ALL: [Rule; 6] = [Rule::Ewma, Rule::Cusum, Rule::Beyond3Sigma, Rule::TwoOfThreeBeyond2Sigma, Rule::FourOfFiveBeyond1Sigma, Rule::EightOnOneSide];

    /// The name config and alerts use.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Ewma => "ewma",
            Rule::Cusum => "cusum",
            Rule::Beyond3Sigma => "beyond_3_sigma",
            Rule::TwoOfThreeBeyond2Sigma => "2_of_3_beyond_2_sigma",
            Rule::FourOfFiveBeyond1Sigma => "4_of_5_beyond_1_sigma",
            Rule::EightOnOneSide => "8_on_one_side",
        }
    }
}

/// Rule parameters; every field may be set globally or per metric.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpcMetricConfig {
    /// Watch this metric at all (default true).
    pub enabled: Option<bool>,
    /// Rules to apply (default `["ewma", "cusum"]`).
    pub rules: Option<Vec<Rule>>,
    /// The in-control mean; learned in warm-up when not set.
    pub mean: Option<f64>,
    /// The in-control standard deviation; learned in warm-up when not set.
    pub sigma: Option<f64>,
    /// EWMA weight of each new window, 0 < lambda <= 1 (default 0.2).
    pub ewma_lambda: Option<f64>,
    /// EWMA control limit in EWMA standard deviations (default 4.5).
    pub ewma_limit: Option<f64>,
    /// CUSUM allowance in sigmas: drift per window ignored (default 0.5).
    pub cusum_k: Option<f64>,
    /// CUSUM decision interval in sigmas (default 12).
    pub cusum_h: Option<f64>,
    /// Severity of this metric's SPC alerts (default warning).
    pub severity: Option<Severity>,
    /// How far the in-control mean moves toward each in-control value, 0..1
    /// (default 0.1 for `mean`, whose level may change with the seasons;
    /// 0, a fixed mean, for the rest).
    pub follow: Option<f64>,
}

/// `[alerts.spc]`: control rules over the per-window metrics.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpcConfig {
    /// Watch the per-window metrics across windows.
    pub enabled: bool,
    /// Windows each series learns its mean and standard deviation from.
    pub warmup_windows: u32,
    /// Metrics watched without a `metrics` entry of their own; `["*"]` for all.
    pub watch: Vec<String>,
    /// Settings for every metric without its own (`[alerts.spc.defaults]`).
    pub defaults: SpcMetricConfig,
    /// Overrides by metric name (`null_rate`, `quality_score`, ...).
    pub metrics: BTreeMap<String, SpcMetricConfig>,
}

impl Default for SpcConfig {
    fn default() -> Self {
        SpcConfig {
            enabled: true,
            warmup_windows: 100,
            watch: DEFAULT_WATCH.map(String::from).to_vec(),
            defaults: SpcMetricConfig::default(),
            metrics: BTreeMap::new(),
        }
    }
}

/// What is watched by default: the shares of bad rows and the quality
/// score, whose slow creep is the detectors' blind spot. Timing metrics (lag,
/// records per second) follow the host's speed when a backlog is replayed,
/// drift statistics are tests already, a column's `mean` moves with the
/// seasons on real data (the drift detector judges its distribution, against
/// how much it usually moves), and `outlier_rate` is measured against a
/// reference that follows the data; they are watched only when listed.
pub const DEFAULT_WATCH: [&str; 6] = ["null_rate", "duplicate_rate", "wrong_type_rate", "unexpected_value_rate", "rule_violation_rate", "quality_score"];

/// Windows in a row near the mean that end a departure.
pub const CALM_WINDOWS: u32 = 5;
/// Windows a departure lasts, without a trend, before it is the new normal.
pub const NEW_NORMAL_WINDOWS: u32 = 20;

/// Most series one pipeline watches; metrics past this are left unwatched.
pub const MAX_SERIES: usize = 10_000;

/// The settled parameters of one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Params {
    pub rules: Vec<Rule>,
    pub mean: Option<f64>,
    pub sigma: Option<f64>,
    pub ewma_lambda: f64,
    pub ewma_limit: f64,
    pub cusum_k: f64,
    pub cusum_h: f64,
    pub severity: Severity,
    pub warmup_windows: u32,
    pub follow: f64,
    /// A share of the window's rows (`*_rate`): its sigma is never below
    /// the binomial noise of the window's size.
    pub rate: bool,
}

/// How fast a `mean` series' in-control mean follows it, unless configured.
const MEAN_FOLLOW: f64 = 0.1;

impl SpcConfig {
    /// Whether `metric` is watched.
    pub fn watches(&self, metric: &str) -> bool {
        let own = self.metrics.get(metric);
        let listed = own.is_some() || self.watch.iter().any(|w| w == "*" || w == metric);
        self.enabled && own.and_then(|m| m.enabled).or(self.defaults.enabled).unwrap_or(listed)
    }

    /// Parameters for `metric`, or `None` when it is not watched.
    pub fn params(&self, metric: &str) -> Option<Params> {
        if !self.watches(metric) {
            return None;
        }
        let own = self.metrics.get(metric);
        let pick = |f: fn(&SpcMetricConfig) -> Option<f64>, default: f64| own.and_then(f).or(f(&self.defaults)).unwrap_or(default);
        Some(Params {
            rules: own.and_then(|m| m.rules.clone()).or(self.defaults.rules.clone()).unwrap_or(vec![Rule::Ewma, Rule::Cusum]),
            mean: own.and_then(|m| m.mean).or(self.defaults.mean),
            sigma: own.and_then(|m| m.sigma).or(self.defaults.sigma),
            ewma_lambda: pick(|m| m.ewma_lambda, 0.2),
            ewma_limit: pick(|m| m.ewma_limit, 4.5),
            cusum_k: pick(|m| m.cusum_k, 0.5),
            cusum_h: pick(|m| m.cusum_h, 12.0),
            severity: own.and_then(|m| m.severity).or(self.defaults.severity).unwrap_or(Severity::Warning),
            warmup_windows: self.warmup_windows,
            follow: pick(|m| m.follow, if metric == "mean" { MEAN_FOLLOW } else { 0.0 }),
            rate: metric.ends_with("_rate"),
        })
    }

    pub fn validate(&self) -> Result<(), String> {
        for (name, m) in std::iter::once(("(defaults)", &self.defaults)).chain(self.metrics.iter().map(|(k, v)| (k.as_str(), v))) {
            let bad = |what: &str| Err(format!("alerts.spc {name}: {what}"));
            if m.ewma_lambda.is_some_and(|l| !(l > 0.0 && l <= 1.0)) {
                return bad("ewma_lambda must be within (0, 1]");
            }
            if [m.ewma_limit, m.cusum_h, m.sigma].iter().flatten().any(|v| !(*v > 0.0 && v.is_finite())) {
                return bad("ewma_limit, cusum_h and sigma must be positive");
            }
            if m.cusum_k.is_some_and(|k| !(k >= 0.0 && k.is_finite())) || m.mean.is_some_and(|v| !v.is_finite()) {
                return bad("cusum_k must be 0 or more and mean finite");
            }
            if m.follow.is_some_and(|f| !(0.0..1.0).contains(&f)) {
                return bad("follow must be within [0, 1)");
            }
        }
        if self.warmup_windows < 2 && self.defaults.sigma.is_none() {
            return Err("alerts.spc.warmup_windows must be at least 2 to learn a standard deviation".into());
        }
        Ok(())
    }
}

/// A rule that fired on a series.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    pub rule: Rule,
    /// The statistic the rule judged: the EWMA, the CUSUM sum (in sigmas), or the value.
    pub statistic: f64,
    /// The control limit it crossed, in the statistic's units.
    pub limit: f64,
    pub mean: f64,
    pub sigma: f64,
    pub severity: Severity,
    /// What happened, for the alert message.
    pub detail: String,
}

/// What a series learns of its in-control behaviour: the mean and standard
/// deviation over warm-up, and the moving ranges of successive values, as a
/// Shewhart individuals chart does. Moving ranges keep learning in control:
/// a slow drift hardly changes the difference of neighbours, so they sharpen
/// the sigma without absorbing the drift. The larger of the two sigmas is
/// used, so a warm-up that happened to be calm does not make every later
/// window look like a departure.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Spread {
    n: u32,
    mean: f64,
    m2: f64,
    last: Option<f64>,
    ranges: u32,
    range_sum: f64,
}

/// E|X1 - X2| / sigma for independent normal X1, X2 (the d2 constant for n = 2).
const D2: f64 = 1.128;

impl Spread {
    fn push_range(&mut self, x: f64) {
        if let Some(last) = self.last {
            self.ranges += 1;
            self.range_sum += (x - last).abs();
        }
        self.last = Some(x);
    }

    /// A warm-up value (Welford's update).
    fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / f64::from(self.n);
        self.m2 += d * (x - self.mean);
        self.push_range(x);
    }

    fn sigma(&self) -> f64 {
        let warmup = if self.n < 2 { 0.0 } else { (self.m2 / f64::from(self.n - 1)).sqrt() };
        let ranges = if self.ranges == 0 { 0.0 } else { self.range_sum / f64::from(self.ranges) / D2 };
        warmup.max(ranges)
    }
}

/// One metric's series and the state of its rules.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Series {
    params: Params,
    learned: Spread,
    /// (mean, sigma) once learned or configured.
    baseline: Option<(f64, f64)>,
    /// Warm-up saw no spread and no sigma is configured: not watched.
    constant: bool,
    ewma: f64,
    /// Windows since the EWMA last started from the mean.
    ewma_age: u32,
    cusum_high: f64,
    cusum_low: f64,
    /// Standardised recent values for the run rules, newest last (at most 8).
    recent: VecDeque<f64>,
    /// A rule fired and the series has not been calm since.
    departed: bool,
    /// Windows since the departure began.
    departed_for: u32,
    /// The departure's last values, oldest first (at most [`NEW_NORMAL_WINDOWS`]).
    departure: VecDeque<f64>,
    /// Windows in a row within one sigma of the mean.
    calm: u32,
    /// After a new normal: the sigma it is watched with, whatever the moving
    /// ranges since say.
    sigma_floor: f64,
}

impl Series {
    pub fn new(params: Params) -> Self {
        let baseline = match (params.mean, params.sigma) {
            (Some(mean), Some(sigma)) => Some((mean, sigma)),
            _ => None,
        };
        let ewma = baseline.map_or(0.0, |b| b.0);
        Series {
            learned: Spread::default(),
            baseline,
            constant: false,
            ewma,
            ewma_age: 0,
            cusum_high: 0.0,
            cusum_low: 0.0,
            recent: VecDeque::new(),
            departed: false,
            departed_for: 0,
            departure: VecDeque::new(),
            calm: 0,
            sigma_floor: 0.0,
            params,
        }
    }

    /// Whether the rules apply yet (warm-up over and spread known).
    pub fn watching(&self) -> bool {
        self.baseline.is_some()
    }

    /// Take one window's value; the rules that fired on it.
    pub fn observe(&mut self, x: f64) -> Vec<Signal> {
        self.observe_in(x, None)
    }

    /// Take one value of a window of `rows` rows: a rate's sigma is at
    /// least the binomial noise of that size (one event in a small window
    /// of an almost-never series is noise, not a departure).
    pub fn observe_in(&mut self, x: f64, rows: Option<u32>) -> Vec<Signal> {
        if !x.is_finite() || self.constant {
            return Vec::new();
        }
        let Some((mean, configured_sigma)) = self.baseline else {
            self.learned.push(x);
            if self.learned.n >= self.params.warmup_windows.max(2) {
                self.learn();
            }
            return Vec::new();
        };
        let mut sigma = if self.params.sigma.is_some() { configured_sigma } else { self.learned.sigma().max(self.sigma_floor) };
        // (A one-row window has no binomial floor: its rate is 0 or 1.)
        if let (true, Some(n)) = (self.params.rate, rows.filter(|&n| n > 1)) {
            let n = f64::from(n);
            let p = mean.clamp(1.0 / n, 1.0 - 1.0 / n);
            sigma = sigma.max((p * (1.0 - p) / n).sqrt());
        }
        let p = &self.params;
        let z = (x - mean) / sigma;
        let mut fired = Vec::new();
        let mut signal = |rule: Rule, statistic: f64, limit: f64, detail: String| {
            fired.push(Signal { rule, statistic, limit, mean, sigma, severity: p.severity, detail });
        };

        self.ewma_age += 1;
        self.ewma = p.ewma_lambda * x + (1.0 - p.ewma_lambda) * self.ewma;
        let lambda = p.ewma_lambda;
        let spread = sigma * (lambda / (2.0 - lambda) * (1.0 - (1.0 - lambda).powi(2 * self.ewma_age as i32))).sqrt();
        let ewma_fired = p.rules.contains(&Rule::Ewma) && (self.ewma - mean).abs() > p.ewma_limit * spread;
        if ewma_fired {
            let limit = mean + p.ewma_limit * spread * (self.ewma - mean).signum();
            signal(Rule::Ewma, self.ewma, limit, format!("EWMA {} crossed its control limit {}", format_value(self.ewma), format_value(limit)));
        }

        self.cusum_high = (self.cusum_high + z - p.cusum_k).max(0.0);
        self.cusum_low = (self.cusum_low - z - p.cusum_k).max(0.0);
        let cusum_fired = p.rules.contains(&Rule::Cusum) && self.cusum_high.max(self.cusum_low) > p.cusum_h;
        if cusum_fired {
            let (sum, side) = if self.cusum_high >= self.cusum_low { (self.cusum_high, "above") } else { (self.cusum_low, "below") };
            signal(Rule::Cusum, sum, p.cusum_h, format!("CUSUM of departures {side} the mean reached {sum:.1} sigma (decision interval {})", p.cusum_h));
        }

        self.recent.push_back(z);
        if self.recent.len() > 8 {
            self.recent.pop_front();
        }
        let mut run_fired = false;
        for rule in [Rule::Beyond3Sigma, Rule::TwoOfThreeBeyond2Sigma, Rule::FourOfFiveBeyond1Sigma, Rule::EightOnOneSide] {
            if p.rules.contains(&rule) && run_rule(rule, &self.recent) {
                run_fired = true;
                let detail = match rule {
                    Rule::Beyond3Sigma => format!("one value beyond 3 sigma ({z:+.1} sigma)"),
                    Rule::TwoOfThreeBeyond2Sigma => "2 of the last 3 values beyond 2 sigma on one side".into(),
                    Rule::FourOfFiveBeyond1Sigma => "4 of the last 5 values beyond 1 sigma on one side".into(),
                    _ => "8 values in a row on one side of the mean".into(),
                };
                signal(rule, x, mean + z.signum() * zone(rule) * sigma, detail);
            }
        }

        // After a signal the fired statistics start over, so one departure
        // gives one alert and a lasting one re-alerts only after it builds up again.
        if ewma_fired {
            self.ewma = mean;
            self.ewma_age = 0;
        }
        if cusum_fired {
            self.cusum_high = 0.0;
            self.cusum_low = 0.0;
        }
        if run_fired {
            self.recent.clear();
        }
        if fired.is_empty() {
            self.learned.push_range(x);
            if p.follow > 0.0 && !self.departed {
                // The in-control mean follows the series; the EWMA moves with it.
                let step = p.follow * (x - mean);
                self.baseline = Some((mean + step, configured_sigma));
                self.ewma += step;
            }
        } else {
            self.learned.last = Some(x);
        }
        self.calm = if z.abs() < 1.0 { self.calm + 1 } else { 0 };
        if self.departed {
            self.departed = self.calm < CALM_WINDOWS;
            self.departed_for += 1;
            if self.departure.len() == NEW_NORMAL_WINDOWS as usize {
                self.departure.pop_front();
            }
            self.departure.push_back(x);
            if self.departed && self.departed_for >= NEW_NORMAL_WINDOWS && (self.params.mean.is_none() || self.params.sigma.is_none()) {
                self.settle(sigma);
            }
            return Vec::new();
        }
        self.departed = !fired.is_empty();
        (self.departed_for, self.departure) = (0, VecDeque::new());
        fired
    }

    /// A departure that has lasted: once its last values show no trend (their
    /// standard deviation under twice what their moving ranges say), their
    /// mean is the new normal, watched with the wider of `sigma` and theirs.
    fn settle(&mut self, sigma: f64) {
        let mut spread = Spread::default();
        self.departure.iter().for_each(|&x| spread.push(x));
        let trend_free = if spread.ranges == 0 { 0.0 } else { spread.range_sum / f64::from(spread.ranges) / D2 };
        let sd = if spread.n < 2 { 0.0 } else { (spread.m2 / f64::from(spread.n - 1)).sqrt() };
        if sd > 2.0 * trend_free.max(1e-12 * spread.mean.abs().max(1.0)) {
            return;
        }
        let mean = self.params.mean.unwrap_or(spread.mean);
        let sigma = self.params.sigma.unwrap_or(sigma.max(spread.sigma()).max(self.sigma_floor));
        *self = Series { baseline: Some((mean, sigma)), ewma: mean, sigma_floor: sigma, ..Series::new(self.params.clone()) };
    }

    fn learn(&mut self) {
        let mean = self.params.mean.unwrap_or(self.learned.mean);
        let sigma = self.params.sigma.unwrap_or(self.learned.sigma());
        if sigma <= 1e-12 * mean.abs().max(1.0) {
            self.constant = true;
            return;
        }
        self.baseline = Some((mean, sigma));
        self.ewma = mean;
    }
}

/// How far out, in sigmas, a run rule's zone starts.
fn zone(rule: Rule) -> f64 {
    match rule {
        Rule::Beyond3Sigma => 3.0,
        Rule::TwoOfThreeBeyond2Sigma => 2.0,
        Rule::FourOfFiveBeyond1Sigma => 1.0,
        _ => 0.0,
    }
}

/// Whether a Western Electric run rule holds on the newest values.
fn run_rule(rule: Rule, recent: &VecDeque<f64>) -> bool {
    let (window, needed) = match rule {
        Rule::Beyond3Sigma => (1, 1),
        Rule::TwoOfThreeBeyond2Sigma => (3, 2),
        Rule::FourOfFiveBeyond1Sigma => (5, 4),
        Rule::EightOnOneSide => (8, 8),
        Rule::Ewma | Rule::Cusum => return false,
    };
    if recent.len() < window {
        return false;
    }
    let last = recent.iter().rev().take(window);
    let limit = zone(rule);
    let above = last.clone().filter(|&&z| z > limit).count();
    let below = last.filter(|&&z| z < -limit).count();
    // The newest value must be one of them, or the rule fired a window earlier.
    let newest = recent[recent.len() - 1];
    (above >= needed && newest > limit) || (below >= needed && newest < -limit)
}

/// A value for a message: enough digits for rates and for counts.
pub fn format_value(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

/// Which series a metric value belongs to: (partition, detector, metric, column).
pub type SeriesKey = (u32, String, String, Option<String>);

/// A [`SeriesKey`] as a window's metric value names it: borrowed, made
/// owned only for a watched metric (most are not, and a window has tens).
#[derive(Debug, Clone, Copy)]
pub struct SeriesName<'a> {
    pub partition: u32,
    pub detector: &'a str,
    pub metric: &'a str,
    pub column: Option<&'a str>,
}

impl SeriesName<'_> {
    fn key(&self) -> SeriesKey {
        (self.partition, self.detector.to_string(), self.metric.to_string(), self.column.map(str::to_string))
    }
}

/// Every watched series of one pipeline, as a checkpoint keeps them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchState {
    series: Vec<(SeriesKey, Series)>,
}

/// Every watched series of one pipeline.
#[derive(Debug)]
pub struct Watch {
    config: SpcConfig,
    series: HashMap<SeriesKey, Series>,
    /// [`MAX_SERIES`] was reached and said so.
    full: bool,
}

impl Watch {
    pub fn new(config: SpcConfig) -> Self {
        Watch { config, series: HashMap::new(), full: false }
    }

    /// Feed one value; the rules that fired.
    pub fn observe(&mut self, name: SeriesName<'_>, value: f64) -> Vec<Signal> {
        self.observe_in(name, value, None)
    }

    /// Feed one value of a window of `rows` rows; the rules that fired.
    pub fn observe_in(&mut self, name: SeriesName<'_>, value: f64, rows: Option<u32>) -> Vec<Signal> {
        // An unwatched metric has no series: nothing to look up or build.
        if !self.config.watches(name.metric) {
            return Vec::new();
        }
        let key = name.key();
        if let Some(series) = self.series.get_mut(&key) {
            return series.observe_in(value, rows);
        }
        let Some(params) = self.config.params(&key.2) else {
            return Vec::new();
        };
        if self.series.len() >= MAX_SERIES {
            if !self.full {
                self.full = true;
                tracing::warn!("control rules watch {MAX_SERIES} series already; {} of {} and newer metrics are not watched", key.2, key.1);
            }
            return Vec::new();
        }
        self.series.entry(key).or_insert_with(|| Series::new(params)).observe_in(value, rows)
    }

    /// The series of `partition` as they stand, for its checkpoint.
    pub fn state(&self, partition: u32) -> WatchState {
        let mut series: Vec<(SeriesKey, Series)> = self.series.iter().filter(|(k, _)| k.0 == partition).map(|(k, s)| (k.clone(), s.clone())).collect();
        series.sort_by(|a, b| a.0.cmp(&b.0));
        WatchState { series }
    }

    /// Carry `partition` on from its checkpointed series, in place of the
    /// ones it had, under today's parameters: a metric no longer watched is
    /// left out, and one whose configured mean or sigma changed starts again
    /// from them.
    pub fn resume(&mut self, partition: u32, state: WatchState) {
        self.forget(partition);
        let room = MAX_SERIES.saturating_sub(self.series.len());
        let resumed: Vec<(SeriesKey, Series)> = state
            .series
            .into_iter()
            .filter(|(key, _)| key.0 == partition)
            .filter_map(|(key, mut series)| {
                let params = self.config.params(&key.2)?;
                if (params.mean, params.sigma) != (series.params.mean, series.params.sigma) {
                    return Some((key, Series::new(params)));
                }
                series.params = params;
                Some((key, series))
            })
            .take(room)
            .collect();
        self.series.extend(resumed);
    }

    /// `partition` is read by another consumer now: its series go.
    pub fn forget(&mut self, partition: u32) {
        self.series.retain(|k, _| k.0 != partition);
    }

    /// Series whose rules apply now (past warm-up, not constant).
    pub fn watching(&self) -> usize {
        self.series.values().filter(|s| s.watching()).count()
    }
}
