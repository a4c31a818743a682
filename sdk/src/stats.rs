//! Small robust statistics the bundled detectors share: quantiles, baseline
//! rates with a binomial noise allowance, bounded samples, EWMA.

use serde::{Deserialize, Serialize};

use crate::Batch;

/// The `q` quantile (0..=1) of `values`; NaN when empty.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    quantiles(values, &[q])[0]
}

/// The `qs` quantiles (each 0..=1, between neighbouring ranks as
/// [`sorted_quantile`] takes them) of `values` (no NaN); NaN when empty.
/// Selected together over integer keys (comparing floats cost volume two
/// fifths of its time in wasm), or read off values already in order.
pub fn quantiles(values: &[f64], qs: &[f64]) -> Vec<f64> {
    if values.is_empty() {
        return vec![f64::NAN; qs.len()];
    }
    let mut keys: Vec<u64> = values.iter().copied().map(ordered_key).collect();
    key_quantiles(&mut keys, qs, from_ordered_key)
}

/// Where the first of `values` that `holds` is false for is. Eight values a
/// pass, tested with no branch between them: in wasm each pass of a loop
/// checks whether the call must be interrupted, and stores and reloads the
/// loop's floats around that check, which costs more than a test.
pub fn first_failing(values: &[f64], holds: impl Fn(f64) -> bool) -> Option<usize> {
    let mut from = 0;
    for chunk in values.chunks_exact(8) {
        if !chunk.iter().fold(true, |all, &x| all & holds(x)) {
            break;
        }
        from += 8;
    }
    values[from..].iter().position(|&x| !holds(x)).map(|at| from + at)
}

/// `values` in ascending [`f64::total_cmp`] order, sorted as integers that
/// order like the floats: in wasm, comparing integers costs a third of
/// comparing the floats with `total_cmp`. The stable sort merges ascending
/// runs in its input (drift's reference sample is mostly made of them).
pub fn sorted(values: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut keys: Vec<u64> = values.into_iter().map(ordered_key).collect();
    keys.sort();
    keys.into_iter().map(from_ordered_key).collect()
}

/// The present, finite values of numeric column `index` of `batch`, in
/// ascending order; `None` for a column of another type, one whose values
/// were not handed over, or an index past the last. For the batch `analyze`
/// was handed, in wasm, the host sorts it, once a window for every detector
/// that asks (the WIT's `window.sorted`, since 0.1.2), natively several
/// times faster than a plugin can; natively, or for any other batch (one of
/// the plugin's own making, a changed copy), they are [`sorted`] here.
pub fn sorted_column(batch: &Batch, index: usize) -> Option<Vec<f64>> {
    let column = batch.columns.get(index)?;
    let view = column.numeric()?;
    // Values the detector does not read are not handed over: nothing to sort.
    if view.handed() < column.len() {
        return None;
    }
    #[cfg(target_arch = "wasm32")]
    if crate::is_handed(batch) {
        if let Some(host) = crate::bindings::clean_host::plugin::window::sorted(index as u32) {
            return Some(host);
        }
    }
    Some(sorted(view.present().map(|(_, x)| x)))
}

/// A float as an integer in the float's total order.
fn ordered_key(x: f64) -> u64 {
    let bits = x.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    }
}

/// The float of an [`ordered_key`].
fn from_ordered_key(key: u64) -> f64 {
    f64::from_bits(if key >> 63 == 1 { key & !(1 << 63) } else { !key })
}

/// The `qs` quantiles of the floats `value` maps `keys` (not empty) to,
/// reordering the keys unless they are in order (or in reverse) already.
fn key_quantiles(keys: &mut [u64], qs: &[f64], value: impl Fn(u64) -> f64) -> Vec<f64> {
    let last = keys.len() - 1;
    let place = |q: f64| {
        let pos = q.clamp(0.0, 1.0) * last as f64;
        (pos.floor() as usize, pos - pos.floor())
    };
    let mut ranks: Vec<usize> = qs.iter().flat_map(|&q| [place(q).0, (place(q).0 + 1).min(last)]).collect();
    ranks.sort_unstable();
    ranks.dedup();
    // Nothing to select when in order either way (a window's times, its lags).
    if keys.is_sorted_by(|a, b| a >= b) {
        keys.reverse();
    }
    if !keys.is_sorted() {
        select_ranks(keys, &ranks);
    }
    qs.iter()
        .map(|&q| {
            let (lo, frac) = place(q);
            let lo_v = value(keys[lo]);
            if frac == 0.0 || lo == last {
                lo_v
            } else {
                lo_v + (value(keys[lo + 1]) - lo_v) * frac
            }
        })
        .collect()
}

/// Puts the key of each rank of `ranks` (ascending, distinct) where sorting
/// would: a selection at the middle one, then each side for its own ranks.
fn select_ranks(keys: &mut [u64], ranks: &[usize]) {
    let Some(&rank) = ranks.get(ranks.len() / 2) else {
        return;
    };
    let (below, _, above) = keys.select_nth_unstable(rank);
    select_ranks(below, &ranks[..ranks.len() / 2]);
    let after: Vec<usize> = ranks[ranks.len() / 2 + 1..].iter().map(|r| r - rank - 1).collect();
    select_ranks(above, &after);
}

/// Median and median absolute deviation of values already in ascending
/// order, without a copy: the deviations below and above the median are two
/// ascending runs, and the MAD's rank among them is found by a binary search
/// over how many come from each.
pub fn sorted_median_mad(sorted: &[f64]) -> (f64, f64) {
    if sorted.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let median = sorted_quantile(sorted, 0.5, |x| x);
    let split = sorted.partition_point(|&x| x < median);
    let below = |i: usize| median - sorted[split - 1 - i];
    let above = |i: usize| sorted[split + i] - median;
    let deviation = |k: usize| kth_of_two(k, (split, below), (sorted.len() - split, above));
    let pos = 0.5 * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let lo_v = deviation(lo + 1);
    let frac = pos - lo as f64;
    let mad = if frac == 0.0 { lo_v } else { lo_v + (deviation(lo + 2) - lo_v) * frac };
    (median, mad)
}

/// The `k`-th smallest (from 1, at most both lengths together) of two
/// ascending runs, each its length and its `i`-th value: the first `i` of
/// one and `k - i` of the other are the `k` smallest for the least `i`
/// whose next of the other is not above the `i`-th of the one.
fn kth_of_two(k: usize, (a_len, a): (usize, impl Fn(usize) -> f64), (b_len, b): (usize, impl Fn(usize) -> f64)) -> f64 {
    let (mut lo, mut hi) = (k.saturating_sub(b_len), k.min(a_len));
    while lo < hi {
        let i = (lo + hi) / 2;
        if b(k - i - 1) <= a(i) {
            hi = i;
        } else {
            lo = i + 1;
        }
    }
    let from_a = if lo > 0 { a(lo - 1) } else { f64::NEG_INFINITY };
    let from_b = if k > lo { b(k - lo - 1) } else { f64::NEG_INFINITY };
    // A comparison, not f64::max: that is a libm call in wasm.
    if from_a > from_b {
        from_a
    } else {
        from_b
    }
}

/// Window values a [`History`] keeps: its memory of the ordinary spread.
pub const HISTORY_WINDOWS: usize = 200;
/// Windows of history below which the spread is not trusted yet.
pub const MIN_HISTORY: usize = 12;
/// Windows in a row above the limit after which the new level is the normal one.
pub const NEW_NORMAL_AFTER: u32 = 5;

/// Windows in a row that departed from the usual: [`NEW_NORMAL_AFTER`] of
/// them make the departure the new normal. Kept in state as a plain count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Departures(u32);

impl Departures {
    /// Count one window. True when it makes the departure the new normal;
    /// then the count starts again (as it does after a window that did not depart).
    pub fn observe(&mut self, departed: bool) -> bool {
        self.0 = if departed { self.0 + 1 } else { 0 };
        let lasted = self.0 >= NEW_NORMAL_AFTER;
        if lasted {
            self.0 = 0;
        }
        lasted
    }
}

/// A statistic's values in the last [`HISTORY_WINDOWS`] windows, and how
/// far out a new one must be to stand apart from them.
///
/// Real streams are overdispersed: one day has 0.5% nulls, the next 6%;
/// hourly weather makes a window's temperatures differ from last week's far
/// more than sampling noise says. So a window is judged against the spread
/// the windows themselves show: Tukey's far-out fence, Q3 + 3 IQR, which a
/// few incidents among them do not move (they are kept: a burst flagged
/// once, rain, is part of what the column does). A departure that lasts
/// [`NEW_NORMAL_AFTER`] windows is a new normal: the history restarts from
/// those windows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(from = "SavedHistory", into = "SavedHistory")]
pub struct History {
    values: std::collections::VecDeque<f64>,
    departures: Departures,
    /// The same values in order (total order), kept as they come and go: a
    /// detector asks for several quantiles of each history every window.
    sorted: Vec<f64>,
}

/// A [`History`] as state: its values in the order they came.
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct SavedHistory {
    values: std::collections::VecDeque<f64>,
    departures: Departures,
}

impl From<SavedHistory> for History {
    fn from(saved: SavedHistory) -> Self {
        let values: std::collections::VecDeque<f64> = saved.values.into_iter().filter(|v| !v.is_nan()).collect();
        let sorted = sorted(values.iter().copied());
        History { values, departures: saved.departures, sorted }
    }
}

impl From<History> for SavedHistory {
    fn from(history: History) -> Self {
        SavedHistory { values: history.values, departures: history.departures }
    }
}

/// The `q` quantile of `sorted` (ascending as [`sorted`] leaves values, no
/// NaN) after `f` (non-decreasing) maps each value: the same as [`quantile`]
/// of the mapped values, without sorting them.
pub fn sorted_quantile(sorted: &[f64], q: f64, f: impl Fn(f64) -> f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let (lo_v, frac) = (f(sorted[lo]), pos - lo as f64);
    match sorted.get(lo + 1) {
        Some(&hi) if frac != 0.0 => lo_v + (f(hi) - lo_v) * frac,
        _ => lo_v,
    }
}

impl History {
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The median value (NaN when empty).
    pub fn median(&self) -> f64 {
        sorted_quantile(&self.sorted, 0.5, |x| x)
    }

    /// Q3 + 3 IQR of the values, once [`MIN_HISTORY`] are known.
    pub fn far_out(&self) -> Option<f64> {
        self.fences(3.0).map(|(_, high)| high)
    }

    /// Q1 - k IQR and Q3 + k IQR of the values (Tukey's fences: k = 1.5
    /// inner, 3 far out), once [`MIN_HISTORY`] are known.
    pub fn fences(&self, k: f64) -> Option<(f64, f64)> {
        if self.values.len() < MIN_HISTORY {
            return None;
        }
        let (q1, q3) = (sorted_quantile(&self.sorted, 0.25, |x| x), sorted_quantile(&self.sorted, 0.75, |x| x));
        Some((q1 - k * (q3 - q1), q3 + k * (q3 - q1)))
    }

    /// The far-out fence of a positive, right-skewed statistic (PSI,
    /// chi-square, a distance): Q3 + 3 IQR of the cube roots, which make
    /// chi-square-like values about normal (Wilson-Hilferty), cubed back.
    pub fn far_out_skewed(&self) -> Option<f64> {
        if self.values.len() < MIN_HISTORY {
            return None;
        }
        let root = |x: f64| x.max(0.0).cbrt();
        let (q1, q3) = (sorted_quantile(&self.sorted, 0.25, root), sorted_quantile(&self.sorted, 0.75, root));
        Some((q3 + 3.0 * (q3 - q1)).powi(3))
    }

    /// The `q` quantile of the values, once [`MIN_HISTORY`] are known.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        (self.values.len() >= MIN_HISTORY).then(|| sorted_quantile(&self.sorted, q, |x| x))
    }

    /// Take in a window's value (a NaN says nothing: left out) and whether it departed.
    pub fn push(&mut self, value: f64, departed: bool) {
        if !value.is_nan() {
            if self.values.len() == HISTORY_WINDOWS {
                let oldest = self.values.pop_front().expect("full");
                if let Ok(at) = self.sorted.binary_search_by(|x| x.total_cmp(&oldest)) {
                    self.sorted.remove(at);
                }
            }
            self.values.push_back(value);
            let at = self.sorted.partition_point(|x| x.total_cmp(&value).is_lt());
            self.sorted.insert(at, value);
        }
        if self.departures.observe(departed) {
            let keep = self.values.len().saturating_sub(NEW_NORMAL_AFTER as usize);
            self.values.drain(..keep);
            self.sorted = sorted(self.values.iter().copied());
        }
    }
}

/// A rate (nulls per row, duplicates per row, ...) as it usually is between
/// windows, and the limit above which a window's rate is a real departure:
/// the far-out fence of the windows' own rates ([`History`]), never below
/// the binomial noise of the window's size nor the median plus
/// `min_increase`. Nothing is judged until [`MIN_HISTORY`] windows are known,
/// unless a `prior` stands in for them (a rate known to be 0 while learning).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RateBaseline {
    rates: History,
    /// The rate to assume before any window is known.
    prior: Option<f64>,
}

impl RateBaseline {
    /// A baseline that assumes `rate` until windows say otherwise.
    pub fn with_prior(rate: f64) -> Self {
        RateBaseline { prior: Some(rate), ..RateBaseline::default() }
    }

    /// Take in one window's rate while learning (never a departure).
    pub fn observe(&mut self, events: usize, trials: usize) {
        self.push(events as f64 / trials.max(1) as f64, false);
    }

    /// The usual rate: the median window rate (or the prior).
    pub fn rate(&self) -> f64 {
        if self.rates.is_empty() {
            return self.prior.unwrap_or(0.0);
        }
        self.rates.median()
    }

    /// Highest rate in a window of `n` rows that is still ordinary (1, so
    /// nothing is judged, until [`MIN_HISTORY`] windows or a prior are known).
    pub fn upper_limit(&self, n: usize, min_increase: f64) -> f64 {
        if self.rates.len() < MIN_HISTORY && self.prior.is_none() {
            return 1.0;
        }
        let p = self.rate();
        let noise = p + 4.0 * (p * (1.0 - p) / n.max(1) as f64).sqrt();
        let limit = noise.max(p + min_increase).max(self.rates.far_out().unwrap_or(0.0));
        limit.min(1.0)
    }

    /// Take in a judged window's rate and whether it departed.
    pub fn push(&mut self, rate: f64, departed: bool) {
        self.rates.push(rate, departed);
    }
}

/// A uniform sample of at most `capacity` values from a stream (reservoir
/// sampling with a fixed seed, so runs repeat). Once full, it draws how many
/// values to pass over before the next one it keeps (Li's Algorithm L): a
/// value passed over costs a few comparisons, no draw.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reservoir {
    pub values: Vec<f64>,
    pub seen: u64,
    pub capacity: usize,
    rng: u64,
    /// The count of values seen at which the next one is kept (0: not drawn yet).
    #[serde(default)]
    keep_at: u64,
    /// The largest of the kept values' random keys (Algorithm L's W).
    #[serde(default)]
    top_key: f64,
}

impl Reservoir {
    pub fn new(capacity: usize) -> Self {
        Reservoir { values: Vec::new(), seen: 0, capacity, rng: 0x9E37_79B9_7F4A_7C15, keep_at: 0, top_key: 0.0 }
    }

    pub fn push(&mut self, value: f64) {
        self.push_noting(value, &mut |_, _| {});
    }

    /// [`Reservoir::push`], calling `kept(replaced, value)` if `value` is
    /// kept, `replaced` the value whose place it took (`None` while filling).
    fn push_noting(&mut self, value: f64, kept: &mut impl FnMut(Option<f64>, f64)) {
        self.seen += 1;
        if self.capacity == 0 {
            return;
        }
        if self.values.len() < self.capacity {
            self.values.push(value);
            kept(None, value);
            return;
        }
        if self.keep_at < self.seen {
            // Just filled, or state with no keep ahead (written before
            // `keep_at` was, or damaged): draw on from here.
            self.top_key = self.fresh_top_key();
            self.keep_at = self.seen - 1;
            self.draw_gap();
        }
        if self.seen == self.keep_at {
            let slot = (self.next_u64() % self.capacity as u64) as usize;
            kept(Some(std::mem::replace(&mut self.values[slot], value)), value);
            self.top_key *= self.largest_key();
            if !(self.top_key > 0.0 && self.top_key < 1.0) {
                // Only damaged state gets here (a key is in (0, 1)).
                self.top_key = self.fresh_top_key();
            }
            self.draw_gap();
        }
    }

    /// Offer `values` in order: the same as [`Reservoir::push`] of each, but
    /// the values the sample passes over are skipped, not offered one by one.
    pub fn extend(&mut self, values: &[f64]) {
        self.extend_noting(values, |_, _| {});
    }

    /// [`Reservoir::extend`], calling `kept(replaced, value)` for each value
    /// the sample keeps: how a copy of the sample kept in
    /// another form (sorted, say) follows it without looking at all of it.
    pub fn extend_noting(&mut self, values: &[f64], mut kept: impl FnMut(Option<f64>, f64)) {
        let mut rest = values;
        while !rest.is_empty() {
            // Values passed over before the next one kept (none while filling,
            // or when the next keep is not drawn yet: `push` draws it).
            let passed = if self.values.len() < self.capacity || self.keep_at <= self.seen { 0 } else { self.keep_at - self.seen - 1 };
            if passed >= rest.len() as u64 {
                self.seen += rest.len() as u64;
                return;
            }
            self.seen += passed;
            self.push_noting(rest[passed as usize], &mut kept);
            rest = &rest[passed as usize + 1..];
        }
    }

    /// The top key of `capacity` kept of `seen - 1`: exact just filled, else its mean.
    fn fresh_top_key(&mut self) -> f64 {
        self.largest_key() * (self.capacity as f64 + 1.0) / self.seen as f64
    }

    /// The largest of `capacity` uniform keys: u^(1 / capacity).
    fn largest_key(&mut self) -> f64 {
        (self.uniform().ln() / self.capacity as f64).exp()
    }

    /// Moves `keep_at` past the values whose keys are above the top key.
    fn draw_gap(&mut self) {
        let passed = (self.uniform().ln() / (-self.top_key).ln_1p()).floor();
        // A gap beyond u64 (a top key of almost 0) saturates: nothing more is kept.
        self.keep_at = self.keep_at.saturating_add(passed as u64).saturating_add(1);
    }

    /// xorshift64*.
    fn next_u64(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in (0, 1), never either end (52 bits and a half: exact).
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 12) as f64 + 0.5) / (1u64 << 52) as f64
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
    fn a_history_answers_as_sorting_its_values_would() {
        let mut rng = crate::testing::Rng(3);
        let mut h = History::default();
        for i in 0..600 {
            let departed = i % 300 >= 294;
            h.push(if departed { 50.0 + rng.uniform() } else { rng.uniform() * rng.uniform() }, departed);
            let restored: History = serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
            for h in [&h, &restored] {
                let v: Vec<f64> = h.values.iter().copied().collect();
                assert_eq!(h.median().to_bits(), quantile(&v, 0.5).to_bits());
                if h.len() >= MIN_HISTORY {
                    assert_eq!(h.quantile(0.98), Some(quantile(&v, 0.98)));
                    let roots: Vec<f64> = h.values.iter().map(|x| x.max(0.0).cbrt()).collect();
                    let (q1, q3) = (quantile(&roots, 0.25), quantile(&roots, 0.75));
                    assert_eq!(h.far_out_skewed(), Some((q3 + 3.0 * (q3 - q1)).powi(3)));
                }
            }
        }
        assert!(h.len() <= HISTORY_WINDOWS && h.sorted.len() == h.len());
    }

    #[test]
    fn a_departure_is_the_new_normal_only_once_it_lasts() {
        let mut d = Departures::default();
        let run = |d: &mut Departures, n: u32, departed: bool| (0..n).map(|_| d.observe(departed)).collect::<Vec<_>>();
        assert!(run(&mut d, NEW_NORMAL_AFTER - 1, true).iter().all(|&x| !x));
        assert!(!d.observe(false), "one usual window ends the departure");
        assert_eq!(run(&mut d, NEW_NORMAL_AFTER, true).last(), Some(&true));
        assert_eq!(d, Departures::default(), "and counting starts again");
        d.observe(true);
        assert_eq!(serde_json::to_string(&d).unwrap(), "1", "kept in state as a plain count");
    }

    #[test]
    fn quantiles_interpolate_between_the_ranks_sorting_gives() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 1.0), 4.0);
        assert!((quantile(&v, 0.5) - 2.5).abs() < 1e-12);
        assert!(quantile(&[], 0.5).is_nan() && quantiles(&[], &[0.1, 0.9]).iter().all(|q| q.is_nan()));
        let mut rng = crate::testing::Rng(5);
        let qs = [0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0];
        for case in 0..100 {
            // Ties and both zeros in every other case; shuffled, in order and in reverse.
            let draw = |rng: &mut crate::testing::Rng| if case % 2 == 0 { (rng.normal() * 2.0).round() * -rng.normal().signum() } else { rng.normal() };
            let shuffled: Vec<f64> = (0..1 + case * 13).map(|_| draw(&mut rng)).collect();
            let in_order = sorted(shuffled.iter().copied());
            let reversed: Vec<f64> = in_order.iter().rev().copied().collect();
            let expected: Vec<u64> = qs.iter().map(|&q| sorted_quantile(&in_order, q, |x| x).to_bits()).collect();
            for values in [&shuffled, &in_order, &reversed] {
                let got: Vec<u64> = quantiles(values, &qs).iter().map(|q| q.to_bits()).collect();
                assert_eq!(got, expected, "case {case}");
            }
        }
    }

    #[test]
    fn sorted_is_total_cmp_order() {
        let mut rng = crate::testing::Rng(9);
        let mut v: Vec<f64> = (0..500).map(|_| rng.normal() * 10f64.powi((rng.uniform() * 40.0) as i32 - 20)).collect();
        let subnormal = f64::MIN_POSITIVE / 4.0;
        v.extend([0.0, -0.0, f64::INFINITY, f64::NEG_INFINITY, subnormal, -subnormal, f64::MAX, f64::MIN, 1.0, 1.0, f64::NAN, -f64::NAN]);
        let mut expected = v.clone();
        expected.sort_unstable_by(f64::total_cmp);
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<u64>>();
        assert_eq!(bits(&sorted(v)), bits(&expected));
    }

    #[test]
    fn a_columns_sorted_values_are_its_present_finite_ones() {
        let batch = crate::testing::BatchBuilder::new(0)
            .float("f", &[Some(2.5), None, Some(f64::NAN), Some(-1.0), Some(f64::INFINITY), Some(-0.0)])
            .int("i", &[Some(3), Some(-7), None, Some(3), Some(0), Some(9)])
            .text("t", &[Some("a"); 6])
            .build();
        let bits = |v: Vec<f64>| v.iter().map(|x| x.to_bits()).collect::<Vec<u64>>();
        assert_eq!(bits(sorted_column(&batch, 0).unwrap()), bits(vec![-1.0, -0.0, 2.5]));
        assert_eq!(sorted_column(&batch, 1).unwrap(), [-7.0, 0.0, 3.0, 3.0, 9.0]);
        assert!(sorted_column(&batch, 2).is_none() && sorted_column(&batch, 3).is_none(), "text; no such column");
        // A column the detector does not read: its rows' states without values.
        let mut projected = batch.clone();
        projected.columns[1].values = crate::ColumnValues::Int64(Vec::new());
        assert!(sorted_column(&projected, 1).is_none());
    }

    #[test]
    fn first_failing_is_the_first_position_a_test_fails_at() {
        let mut rng = crate::testing::Rng(13);
        for len in 0..40 {
            for fail_share in [0.0, 0.05, 0.5, 1.0] {
                let values: Vec<f64> = (0..len).map(|_| if rng.uniform() < fail_share { f64::NAN } else { rng.normal() }).collect();
                assert_eq!(first_failing(&values, f64::is_finite), values.iter().position(|x| !x.is_finite()), "{values:?}");
                assert_eq!(first_failing(&values, |x| x < 1.0), values.iter().position(|&x| x >= 1.0 || x.is_nan()), "{values:?}");
            }
        }
    }

    /// The median and MAD read off sorted values without a copy are those
    /// of the deviations sorted, to the bit; quantiles selected from values
    /// in any order are those read off them sorted.
    #[test]
    fn sorted_statistics_are_those_of_the_values_sorted() {
        let mut rng = crate::testing::Rng(5);
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<u64>>();
        for n in (1..=12).chain([100, 101, 1000, 4096]).flat_map(|n| [n; 8]) {
            for ties in [false, true] {
                let mut v: Vec<f64> = (0..n).map(|_| if ties { (rng.normal() * 2.0).round() } else { rng.normal().exp() }).collect();
                v.sort_unstable_by(f64::total_cmp);
                let (median, mad) = sorted_median_mad(&v);
                let mut deviations: Vec<f64> = v.iter().map(|&x| (x - median).abs()).collect();
                deviations.sort_unstable_by(f64::total_cmp);
                assert_eq!(bits(&[median, mad]), bits(&[sorted_quantile(&v, 0.5, |x| x), sorted_quantile(&deviations, 0.5, |x| x)]), "{v:?}");
                let mut shuffled = v.clone();
                shuffled.reverse();
                shuffled.rotate_left(n / 3);
                let qs = [0.0, 0.01, 0.25, 0.5, 0.75, 0.99, 1.0];
                let expected: Vec<f64> = qs.iter().map(|&q| sorted_quantile(&v, q, |x| x)).collect();
                assert_eq!(bits(&quantiles(&shuffled, &qs)), bits(&expected), "{v:?}");
            }
        }
        assert!(sorted_median_mad(&[]).0.is_nan() && sorted_median_mad(&[]).1.is_nan());
    }

    #[test]
    fn median_mad_of_known_values() {
        let mut v = [9.0, 1.0, 2.0, 6.0, 2.0, 4.0, 1.0];
        v.sort_unstable_by(f64::total_cmp);
        assert_eq!(sorted_median_mad(&v), (2.0, 1.0));
    }

    #[test]
    fn rate_limit_allows_noise_but_not_jumps() {
        let mut b = RateBaseline::default();
        for _ in 0..MIN_HISTORY {
            b.observe(10, 1000);
        }
        assert!((b.rate() - 0.01).abs() < 1e-12);
        let limit = b.upper_limit(1000, 0.02);
        assert!(limit > 0.025 && limit < 0.05, "{limit}");
    }

    /// Overdispersion: a rate that wanders between 0.5% and 6% from window
    /// to window is ordinary at 6% and far out at 20%.
    #[test]
    fn rate_limit_follows_the_real_spread_between_windows() {
        let mut b = RateBaseline::default();
        let mut x = 0.37_f64;
        for _ in 0..40 {
            x = (x * 7.31 + 0.113).fract();
            b.observe((1000.0 * (0.005 + 0.055 * x)) as usize, 1000);
        }
        let limit = b.upper_limit(1000, 0.05);
        assert!(limit > 0.06 && limit < 0.2, "{limit}");
        // Binomial noise alone around the median (about 3%) would give under 5%.
        assert!(b.rate() + 4.0 * (b.rate() * (1.0 - b.rate()) / 1000.0).sqrt() < 0.06);
    }

    #[test]
    fn a_lasting_departure_becomes_the_new_normal() {
        let mut b = RateBaseline::default();
        for _ in 0..50 {
            b.observe(10, 1000);
        }
        let mut departed = 0;
        for _ in 0..20 {
            let limit = b.upper_limit(1000, 0.05);
            let rate = 0.3;
            departed += u32::from(rate > limit);
            b.push(rate, rate > limit);
        }
        assert_eq!(departed, NEW_NORMAL_AFTER, "quiet once the new level is the normal one");
        assert!((b.rate() - 0.3).abs() < 1e-12);
        // A prior stands in until windows are known; without one, nothing is judged.
        let fresh = RateBaseline::with_prior(0.01);
        assert!(fresh.upper_limit(1000, 0.02) < 0.05);
        assert_eq!(RateBaseline::default().upper_limit(1000, 0.02), 1.0);
    }

    #[test]
    fn reservoir_is_bounded_and_uniform_over_everything_offered() {
        let mut r = Reservoir::new(1000);
        for i in 0..200_000 {
            r.push(i as f64);
        }
        assert_eq!((r.values.len(), r.seen), (1000, 200_000));
        let fifths = |r: &Reservoir| (0..5).map(|f| r.values.iter().filter(|&&v| (v / 40_000.0) as usize == f).count()).collect::<Vec<_>>();
        // 200 expected in each fifth, binomial standard deviation 12.6.
        assert!(fifths(&r).iter().all(|&n| (150..=250).contains(&n)), "{:?}", fifths(&r));
        let mut kept: Vec<f64> = r.values.clone();
        kept.sort_by(f64::total_cmp);
        kept.dedup();
        assert_eq!(kept.len(), 1000, "a value kept twice");
        // Resumed from its state, it samples on as it would have.
        let mut resumed: Reservoir = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        for i in 200_000..400_000 {
            r.push(i as f64);
            resumed.push(i as f64);
        }
        assert_eq!(r.values, resumed.values);
        // State written before the skips were kept (no keep_at) goes on uniformly too.
        let mut old = Reservoir::new(1000);
        (0..200_000).for_each(|i| old.push(i as f64));
        let mut text: serde_json::Value = serde_json::to_value(&old).unwrap();
        text.as_object_mut().unwrap().retain(|field, _| field != "keep_at" && field != "top_key");
        let mut old: Reservoir = serde_json::from_value(text).unwrap();
        assert_eq!((old.keep_at, old.top_key), (0, 0.0));
        (200_000..400_000).for_each(|i| old.push(-1.0 - i as f64));
        let newer = old.values.iter().filter(|&&v| v < 0.0).count();
        assert!((430..=570).contains(&newer), "{newer} of 1000 from the second half");
        let mut small = Reservoir::new(0);
        small.push(1.0);
        assert!(small.values.is_empty());
    }

    #[test]
    fn offering_a_slice_is_offering_each_of_its_values() {
        let mut rng = crate::testing::Rng(11);
        for capacity in [0, 1, 7, 100] {
            let (mut one_by_one, mut in_slices) = (Reservoir::new(capacity), Reservoir::new(capacity));
            // Slices of every length from empty to many times the capacity.
            for len in (0..40).chain([500, 3000]) {
                let values: Vec<f64> = (0..len).map(|_| rng.uniform()).collect();
                values.iter().for_each(|&v| one_by_one.push(v));
                in_slices.extend(&values);
                assert_eq!(serde_json::to_string(&in_slices).unwrap(), serde_json::to_string(&one_by_one).unwrap(), "capacity {capacity}, slice of {len}");
            }
        }
    }

    /// The notes of the values kept, applied to a copy (each replaced value
    /// swapped for the one kept), give the sample, through filling and
    /// replacing; and the sample is the one `extend` keeps.
    #[test]
    fn noted_changes_remake_the_sample() {
        let mut rng = crate::testing::Rng(13);
        for capacity in [0, 1, 7, 100] {
            let (mut noted, mut plain, mut copy) = (Reservoir::new(capacity), Reservoir::new(capacity), Vec::new());
            for len in (0..40).chain([500, 3000]) {
                // Few distinct values: a replaced value is found by its bits among its ties.
                let values: Vec<f64> = (0..len).map(|_| (rng.uniform() * 20.0).floor()).collect();
                noted.extend_noting(&values, |replaced, value| match replaced {
                    None => copy.push(value),
                    Some(old) => {
                        let at = copy.iter().position(|v: &f64| v.to_bits() == old.to_bits()).expect("a replaced value was kept");
                        copy[at] = value;
                    }
                });
                plain.extend(&values);
                let (mut a, mut b) = (copy.clone(), noted.values.clone());
                a.sort_by(f64::total_cmp);
                b.sort_by(f64::total_cmp);
                assert_eq!(a, b, "capacity {capacity}, slice of {len}");
                assert_eq!(noted.values, plain.values);
            }
        }
    }

    #[test]
    fn damaged_state_samples_on_uniformly() {
        let mut r = Reservoir::new(1000);
        (0..200_000).for_each(|i| r.push(i as f64));
        // A next keep already passed, a top key out of (0, 1): a hand-edited
        // or corrupt snapshot. The sample neither freezes nor takes every value.
        for (keep_at, top_key) in [(Some(5), None), (Some(199_999), None), (None, Some(5.0)), (None, Some(-1.0)), (None, Some(0.0)), (Some(3), Some(1.0))] {
            let mut text: serde_json::Value = serde_json::to_value(&r).unwrap();
            let fields = text.as_object_mut().unwrap();
            keep_at.inspect(|&k| _ = fields.insert("keep_at".into(), k.into()));
            top_key.inspect(|&k| _ = fields.insert("top_key".into(), k.into()));
            let mut damaged: Reservoir = serde_json::from_value(text).unwrap();
            (200_000..400_000).for_each(|i| damaged.push(-1.0 - i as f64));
            let newer = damaged.values.iter().filter(|&&v| v < 0.0).count();
            assert!((430..=570).contains(&newer), "keep_at {keep_at:?}, top_key {top_key:?}: {newer} of 1000 from the second half");
        }
    }

    #[test]
    fn every_value_offered_is_kept_as_often() {
        // k of n kept: each value, the first past a full sample included, in k / n of the runs.
        for (k, n) in [(1, 5), (3, 12), (8, 40)] {
            let runs = 4000;
            let mut kept = vec![0u32; n];
            for seed in 1..=runs {
                let mut r = Reservoir::new(k);
                r.rng = (seed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                (0..n).for_each(|i| r.push(i as f64));
                r.values.iter().for_each(|&v| kept[v as usize] += 1);
            }
            let expected = f64::from(runs) * k as f64 / n as f64;
            let sd = (expected * (1.0 - k as f64 / n as f64)).sqrt();
            assert!(kept.iter().all(|&c| (f64::from(c) - expected).abs() < 4.5 * sd), "k {k}, n {n}: {kept:?} (expected {expected:.0} each)");
        }
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
