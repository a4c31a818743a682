//! Drift: has a column's distribution moved away from its reference?
//!
//! The first `reference_windows` windows of a column are its reference,
//! held so that memory stays bounded however many rows they span: an even
//! [`ReferenceSample`] of at most `reference_values` per numeric column, a
//! frequent-items sketch (Apache DataSketches) per text or boolean column
//! (each offered at most [`NUMBERS_PER_WINDOW`] or [`CATEGORIES_PER_WINDOW`]
//! values per window). Then the reference is frozen into a 101-point
//! quantile grid or a table of category shares (or pinned in config, or
//! restored from state), and every later window is compared with it:
//!
//! - numeric columns: PSI over the reference's deciles, and the two-sample
//!   Kolmogorov-Smirnov distance;
//! - categorical columns: PSI and Pearson's chi-square over the reference's
//!   categories plus one bucket for all others.
//!
//! A column drifts only when the shift is large (PSI at least
//! `psi_threshold` over what noise alone gives, (k - 1) / n for k bins of n
//! values, or KS distance at least `ks_threshold`), significant (p below `alpha`), and
//! far out among the column's own statistics in the windows before (above
//! the far-out fence of its PSI or KS [`History`], taken on their cube
//! roots, as these statistics are skewed like chi-square, and above the level
//! 1 window in 50 reaches, for columns that move in bursts): the tests assume a window's
//! rows are independent draws, and real windows are not (an hour's
//! temperatures follow the weather), so a column is judged against how much
//! it usually moves, and only once [`JUDGE_AFTER`] windows showed that.
//! A numeric column also drifts when its median steps further between two
//! windows than it ever stepped (see [`level_step`]): an offset or unit
//! bug in a column that trends all day, where the reference alone cannot
//! tell the bug from the trend.
//! Columns whose reference has more than `max_categories` values (ids, free
//! text), timestamps, and numeric columns that move with time (epoch times,
//! counters, calendar parts: see [`TimeLikeColumns`]) are not judged. Every
//! other numeric column's mean is emitted as a metric, for the host's
//! control rules.
//!
//! The reference follows legitimate change (a trailing reference): the
//! windows since it was frozen make the next one, which takes over every
//! `refresh_windows` windows, so a slow seasonal change is followed, never
//! alerted. A drift lasting `NEW_NORMAL_AFTER` windows in a row (see
//! [`Departures`]) is a new normal: its own windows become the reference at
//! once. Windows of a shorter drift go into no reference. Pinned references
//! never change, and judge from the first window: they say what the column
//! should look like.

mod level_step;
mod reference_sample;
mod tests_of_fit;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use clean_host_sdk::bindings::clean_host::plugin::host::LogLevel;
use clean_host_sdk::distinct::{DistinctValues, ABSENT};
use clean_host_sdk::stats::{sorted_column, Departures, History};
use clean_host_sdk::time_like::TimeLikeColumns;
use clean_host_sdk::{
    decode_state, encode_state, export_detector, log, metric_info, parse_config, Analysis, Batch, BatchParts, ColumnValues, Detector, Finding, PluginInfo,
    Reads, Severity,
};
use datasketches::frequencies::{ErrorType, FrequentItemsSketch};
use serde::{Deserialize, Serialize};

use level_step::LevelSteps;
use reference_sample::ReferenceSample;
use tests_of_fit::{chi_square_p, ks_p, psi_and_chi_square, QuantileGrid};

/// Points in a learned numeric reference's quantile grid.
const GRID_POINTS: usize = 101;
/// Frequent-items map size while learning categories (a power of two).
const CATEGORY_MAP: usize = 1024;
/// Windows of a column's statistics known before it is judged: how much it
/// usually moves takes more windows to see than a rate's level.
const JUDGE_AFTER: usize = 20;
/// Values of a numeric column a window adds to the reference being learned,
/// at most (evenly spaced over its ranks): the cost of learning stays flat.
/// The tests take the reference's size as it is (the sample's count), so a
/// smaller sample costs a little power, not false alarms (a sample spread
/// over the ranks is closer to its window than as many random rows).
const NUMBERS_PER_WINDOW: usize = 250;
/// The same for a text or boolean column: more, as whether a column is a
/// category at all (few values, covering 95% of rows) is read off the sample.
const CATEGORIES_PER_WINDOW: usize = 500;

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Windows whose rows make a column's first reference.
    reference_windows: u32,
    /// Windows after which a learned reference is replaced by the windows
    /// since it was frozen (0: never).
    refresh_windows: u32,
    /// Per column: `true` never judges it (a clock), `false` always does
    /// (default: recognised by its values).
    time_like: BTreeMap<String, bool>,
    /// Only these columns (default: every numeric, boolean and text column).
    columns: Option<Vec<String>>,
    /// Equal-probability bins of a numeric column's PSI.
    bins: usize,
    /// PSI from which a column has drifted (0.1 is a slight shift, 0.25 a real one).
    psi_threshold: f64,
    /// KS distance from which a numeric column has drifted.
    ks_threshold: f64,
    /// Significance a shift must also reach (p-value below this).
    alpha: f64,
    /// Windows with fewer present values in a column do not judge it.
    min_rows: u32,
    /// Text columns with more distinct values than this in the reference are not judged.
    max_categories: usize,
    /// Values a numeric column's reference keeps at most while it is
    /// learned (8 bytes each): exact up to this many, an even sample of at
    /// least half as many beyond.
    reference_values: usize,
    /// References given in config instead of learned, by column.
    reference: BTreeMap<String, PinnedReference>,
}

impl Config {
    /// Whether the column `name` is judged.
    fn watches(&self, name: &str) -> bool {
        self.columns.as_ref().is_none_or(|c| c.iter().any(|n| n == name))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            reference_windows: 10,
            refresh_windows: 10,
            time_like: BTreeMap::new(),
            columns: None,
            bins: 10,
            psi_threshold: 0.25,
            ks_threshold: 0.15,
            alpha: 0.001,
            min_rows: 100,
            max_categories: 200,
            reference_values: 4096,
            reference: BTreeMap::new(),
        }
    }
}

/// A reference given in config: a numeric column's evenly spaced quantiles
/// (at least 2, ascending: min, ..., max), or a column's category shares.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PinnedReference {
    quantiles: Option<Vec<f64>>,
    frequencies: Option<BTreeMap<String, f64>>,
}

/// What a column is compared with.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Reference {
    Numeric {
        grid: QuantileGrid,
        rows: u64,
    },
    Categorical {
        shares: BTreeMap<String, f64>,
        rows: u64,
    },
    /// Too many distinct values to be a category.
    NotJudged,
}

/// Category -> bin: where a categorical reference's judge counts each value.
type CategoryBins = HashMap<Vec<u8>, usize, BuildHasherDefault<Fnv>>;

impl Reference {
    /// The bins of a categorical reference; `None` for any other.
    fn category_bins(&self) -> Option<CategoryBins> {
        match self {
            Reference::Categorical { shares, .. } => Some(shares.keys().enumerate().map(|(i, k)| (k.as_bytes().to_vec(), i)).collect()),
            _ => None,
        }
    }
}

/// A reference being learned.
enum Learning {
    Numeric(ReferenceSample),
    Categorical(FrequentItemsSketch<String>),
}

/// The next references of one column, being learned.
struct Candidate {
    /// The windows since the reference was frozen that did not drift.
    sketch: Learning,
    windows: u32,
    /// While the column drifts: the drift's own windows, a possible new normal.
    shift: Option<Learning>,
    drifting: Departures,
}

/// `Learning` as state: the frequent-items sketch as its own compact bytes.
#[derive(Serialize, Deserialize)]
enum SavedLearning {
    Numeric(ReferenceSample),
    Categorical(Vec<u8>),
}

#[derive(Serialize, Deserialize)]
struct SavedCandidate {
    sketch: SavedLearning,
    windows: u32,
    shift: Option<SavedLearning>,
    drifting: Departures,
}

/// How much a column's statistics usually move between windows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct Spread {
    psi: History,
    ks: History,
    steps: LevelSteps,
}

#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct SavedState {
    learning: BTreeMap<String, SavedCandidate>,
    reference: BTreeMap<String, Reference>,
    time: TimeLikeColumns,
    spreads: BTreeMap<String, Spread>,
}

#[derive(Default)]
pub struct Drift {
    config: Config,
    learning: BTreeMap<String, Candidate>,
    reference: BTreeMap<String, Reference>,
    /// Columns whose reference comes from config: never replaced.
    pinned: Vec<String>,
    time: TimeLikeColumns,
    spreads: BTreeMap<String, Spread>,
    /// Category -> bin, per categorical reference (kept with `reference`).
    bins: HashMap<String, CategoryBins>,
}

/// The kind of values a column holds in this window.
enum Values<'a> {
    /// A numeric column's present, finite values, ascending (sorted by the
    /// host, in wasm): all the tests of fit, the median and the sample read.
    Numbers(Vec<f64>),
    Categories(Tally<'a>),
}

/// A text or boolean column's window as counts of its distinct values: one
/// hash a row, where the reference's bins and the sketch being learned then
/// take one lookup or update per distinct value.
struct Tally<'a> {
    /// Each distinct value (UTF-8 bytes as the batch holds them, never
    /// decoded), its rows, and its rows in the even sample that is learned.
    counts: Vec<(&'a [u8], u64, u64)>,
    /// Present rows.
    rows: usize,
}

impl<'a> Tally<'a> {
    /// The counts of a text column's distinct values; every `step`-th
    /// present row goes into the sample.
    fn of_text(distinct: &'a DistinctValues) -> Self {
        let step = distinct.present.div_ceil(CATEGORIES_PER_WINDOW).max(1);
        let mut counts: Vec<(&[u8], u64, u64)> = distinct.iter().map(|(v, n)| (v, u64::from(n), 0)).collect();
        let mut sample = |at: u32| counts[at as usize].2 += 1;
        if distinct.present == distinct.row_values.len() {
            // Every row present: the sampled rows are read, not every row looked at.
            distinct.row_values.iter().step_by(step).for_each(|&at| sample(at));
        } else {
            distinct.row_values.iter().filter(|&&at| at != ABSENT).step_by(step).for_each(|&at| sample(at));
        }
        Tally { counts, rows: distinct.present }
    }

    /// The counts of a boolean column's `present` values, in the order the
    /// two values first appear; every `step`-th value goes into the sample.
    /// Counted by adding each value, not testing it: in wasm the one loop
    /// that tested each row for each count took 75 instructions a row.
    fn of_booleans(present: &[bool]) -> Self {
        let rows = present.len();
        let step = rows.div_ceil(CATEGORIES_PER_WINDOW).max(1);
        let trues = present.iter().filter(|&&v| v).count() as u64;
        let sampled_trues = present.iter().step_by(step).filter(|&&v| v).count() as u64;
        let sampled = rows.div_ceil(step) as u64;
        // By value (false, true): its rows, its sampled rows.
        let (count, sampled) = ([rows as u64 - trues, trues], [sampled - sampled_trues, sampled_trues]);
        let text = |v: usize| -> &'static [u8] { [b"false".as_slice(), b"true"][v] };
        let first = usize::from(present.first() == Some(&true));
        let counts = [first, 1 - first].into_iter().filter(|&v| count[v] > 0).map(|v| (text(v), count[v], sampled[v])).collect();
        Tally { counts, rows }
    }
}

/// Column `index` of `batch`; a text column's rows grouped by value are `distinct`.
fn values<'a>(batch: &Batch, index: usize, distinct: Option<&'a DistinctValues>) -> Option<Values<'a>> {
    let column = &batch.columns[index];
    Some(match &column.values {
        ColumnValues::Float64(_) | ColumnValues::Int64(_) => Values::Numbers(sorted_column(batch, index)?),
        ColumnValues::Boolean(v) if column.validity.is_empty() => Values::Categories(Tally::of_booleans(v)),
        ColumnValues::Boolean(v) => {
            let mut present = Vec::with_capacity(v.len());
            column.present_runs(v.len()).for_each(|run| present.extend_from_slice(&v[run]));
            Values::Categories(Tally::of_booleans(&present))
        }
        ColumnValues::Text(_) => Values::Categories(Tally::of_text(distinct?)),
        ColumnValues::Timestamp(_) => return None,
    })
}

/// Per-column memory of the sketches and references, in bytes.
#[derive(Debug)]
pub struct ColumnMemory {
    pub column: String,
    /// `learning` (a sketch) or `reference` (the frozen grid or shares).
    pub phase: &'static str,
    pub bytes: usize,
}

impl Learning {
    fn new(values: &Values, capacity: usize) -> Result<Self, String> {
        Ok(match values {
            Values::Numbers(_) => Learning::Numeric(ReferenceSample::new(capacity)),
            Values::Categories(_) => Learning::Categorical(FrequentItemsSketch::new(CATEGORY_MAP).map_err(|e| e.to_string())?),
        })
    }

    /// Add an even sample of `values`; false if they are of the other kind.
    fn add(&mut self, values: &Values) -> Result<bool, String> {
        match (self, values) {
            (Learning::Numeric(reference), Values::Numbers(sorted)) => reference.add_ranks(sorted, NUMBERS_PER_WINDOW),
            (Learning::Categorical(sketch), Values::Categories(tally)) => {
                for &(s, _, sampled) in tally.counts.iter().filter(|c| c.2 > 0) {
                    // Checked as UTF-8 first: the lossy path walks the bytes in chunks.
                    let text = std::str::from_utf8(s).map_or_else(|_| String::from_utf8_lossy(s), Cow::Borrowed);
                    sketch.update_with_count_ref(&*text, sampled);
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn save(&self) -> SavedLearning {
        match self {
            Learning::Numeric(s) => SavedLearning::Numeric(s.clone()),
            Learning::Categorical(s) => SavedLearning::Categorical(s.serialize()),
        }
    }

    fn load(saved: SavedLearning) -> Result<Self, String> {
        Ok(match saved {
            SavedLearning::Numeric(sample) => Learning::Numeric(sample),
            SavedLearning::Categorical(bytes) => Learning::Categorical(FrequentItemsSketch::deserialize(&bytes).map_err(|e| format!("invalid state: {e}"))?),
        })
    }

    fn freeze(&self, max_categories: usize) -> Result<Option<Reference>, String> {
        Ok(match self {
            Learning::Numeric(sample) => {
                sample.quantiles(GRID_POINTS).map(|grid| Reference::Numeric { grid: QuantileGrid { grid }, rows: sample.len() as u64 })
            }
            Learning::Categorical(sketch) => Some(categories(sketch, max_categories)),
        })
    }
}

impl Drift {
    /// Take a judged (or not yet judged) column's window into its next
    /// reference, and freeze that when it is due: the trailing one every
    /// `refresh_windows` windows, a drift's own once it lasted
    /// `NEW_NORMAL_AFTER` windows. A shorter drift leaves nothing behind.
    fn advance(&mut self, name: &str, values: &Values, drifted: bool) -> Result<(), String> {
        if self.pinned.iter().any(|p| p == name) {
            return Ok(());
        }
        let k = self.config.reference_values;
        let candidate = match self.learning.get_mut(name) {
            Some(c) => c,
            None => self.learning.entry(name.to_string()).or_insert(Candidate {
                sketch: Learning::new(values, k)?,
                windows: 0,
                shift: None,
                drifting: Departures::default(),
            }),
        };
        let frozen = if drifted {
            let shift = match &mut candidate.shift {
                Some(shift) => shift,
                None => candidate.shift.insert(Learning::new(values, k)?),
            };
            shift.add(values)?;
            if !candidate.drifting.observe(true) {
                return Ok(());
            }
            let shift = candidate.shift.take().expect("set above");
            *candidate = Candidate { sketch: Learning::new(values, k)?, windows: 0, shift: None, drifting: Departures::default() };
            shift
        } else {
            candidate.shift = None;
            candidate.drifting.observe(false);
            if !candidate.sketch.add(values)? {
                // The column changed kind (the schema detector's business): learn it anew.
                *candidate = Candidate { sketch: Learning::new(values, k)?, windows: 0, shift: None, drifting: Departures::default() };
                candidate.sketch.add(values)?;
                self.reference.remove(name);
                self.bins.remove(name);
            }
            candidate.windows += 1;
            let due = match self.reference.get(name) {
                None => candidate.windows >= self.config.reference_windows,
                Some(_) => self.config.refresh_windows > 0 && candidate.windows >= self.config.refresh_windows,
            };
            if !due {
                return Ok(());
            }
            std::mem::replace(&mut candidate.sketch, Learning::new(values, k)?)
        };
        if let Some(candidate) = self.learning.get_mut(name) {
            candidate.windows = 0;
        }
        if let Some(reference) = frozen.freeze(self.config.max_categories)? {
            match reference.category_bins() {
                Some(bins) => self.bins.insert(name.to_string(), bins),
                None => self.bins.remove(name),
            };
            self.reference.insert(name.to_string(), reference);
        }
        Ok(())
    }

    fn index_categories(&mut self) {
        self.bins = self.reference.iter().filter_map(|(name, r)| Some((name.clone(), r.category_bins()?))).collect();
    }

    /// The PSI and KS distance above which a column's window stands apart
    /// from its windows before; infinite until [`JUDGE_AFTER`] are known.
    fn usual(&self, name: &str) -> (f64, f64) {
        // A pinned reference is what the column should look like: judged at once.
        if self.pinned.iter().any(|p| p == name) {
            return (0.0, 0.0);
        }
        // The far-out fence; for a column that moves in bursts (rain: most
        // windows dry, some wet), also the level its bursts reach 1 in 50.
        let high = |h: &History| match (h.len() >= JUDGE_AFTER, h.far_out_skewed(), h.quantile(0.98)) {
            (true, Some(fence), Some(bursts)) => fence.max(bursts),
            _ => f64::INFINITY,
        };
        let Some(spread) = self.spreads.get(name) else {
            return (f64::INFINITY, f64::INFINITY);
        };
        (high(&spread.psi), high(&spread.ks))
    }

    /// Compare a column's window with its reference: whether it drifted,
    /// and its PSI and KS distance (when measured), for the column's spread.
    fn judge(&self, name: &str, values: &Values<'_>, out: &mut Analysis) -> (bool, Option<f64>, Option<f64>) {
        let c = &self.config;
        let Some(reference) = self.reference.get(name) else {
            return (false, None, None);
        };
        match (reference, values) {
            (Reference::Numeric { grid, rows }, Values::Numbers(v)) => {
                if v.len() < c.min_rows as usize {
                    return (false, None, None);
                }
                // At least 20 expected values per bin, so the chi-square test holds on small windows.
                let comparison = grid.compare(v, c.bins.min(v.len() / 20).max(2));
                let m = *rows as f64;
                let (psi, chi) = psi_and_chi_square(&comparison.observed, &comparison.expected, m);
                let psi_p = chi_square_p(chi, (comparison.observed.len() - 1) as f64);
                let ks = comparison.ks;
                let ks_pv = ks_p(ks, v.len() as f64, m);
                out.metric("psi", Some(name), psi);
                out.metric("ks_distance", Some(name), ks);
                let (psi_usual, ks_usual) = self.usual(name);
                // PSI over k bins of n values is about (k - 1) / n on noise alone.
                let psi_noise = (comparison.observed.len() - 1) as f64 / v.len() as f64;
                // Above what the column usually reaches by more than the noise
                // of one window of this size (KS: its 95% critical difference).
                let ks_noise = 1.36 * ((v.len() as f64 + m) / (v.len() as f64 * m)).sqrt();
                let psi_drift = psi >= c.psi_threshold + psi_noise && psi_p < c.alpha && psi > psi_usual + psi_noise;
                let ks_drift = ks >= c.ks_threshold && ks_pv < c.alpha && ks > ks_usual + ks_noise;
                if psi_drift || ks_drift {
                    let median = v[v.len() / 2];
                    let (metric, value, threshold) = if psi_drift { ("psi", psi, c.psi_threshold) } else { ("ks_distance", ks, c.ks_threshold) };
                    let severity = if value >= 2.0 * threshold { Severity::Critical } else { Severity::Warning };
                    let message = format!(
                        "{name} moved away from its reference: PSI {psi:.3} (p {}, usually up to {psi_usual:.3}), KS distance {ks:.3} (p {}, usually up to {ks_usual:.3}); median {median:.4} against {:.4}, over {} values against {rows}",
                        p(psi_p),
                        p(ks_pv),
                        grid.grid[grid.grid.len() / 2],
                        v.len()
                    );
                    out.findings.push(Finding::new(metric, Some(name), value, threshold, severity, message));
                }
                (psi_drift || ks_drift, Some(psi), Some(ks))
            }
            (Reference::Categorical { shares, rows }, Values::Categories(tally)) => {
                if tally.rows < c.min_rows as usize {
                    return (false, None, None);
                }
                let index = &self.bins[name];
                let n = tally.rows as f64;
                // The last bin holds every value the reference did not list, and
                // categories too rare to expect 5 values here (so chi-square holds).
                let other = shares.len();
                let bin_of: Vec<usize> = shares.values().enumerate().map(|(i, &e)| if e * n >= 5.0 { i } else { other }).collect();
                let mut observed = vec![0u64; other + 1];
                for &(s, count, _) in &tally.counts {
                    observed[index.get(s).map_or(other, |&i| bin_of[i])] += count;
                }
                let listed: f64 = shares.values().sum();
                let mut expected = vec![0.0; other + 1];
                for (i, &e) in shares.values().enumerate() {
                    expected[bin_of[i]] += e;
                }
                expected[other] += (1.0 - listed).max(0.0);
                // Pooled categories leave empty bins behind: not part of the test.
                let (tested_observed, tested_expected): (Vec<u64>, Vec<f64>) =
                    observed.iter().zip(&expected).filter(|(&o, &e)| o > 0 || e > 0.0).map(|(&o, &e)| (o, e)).unzip();
                let (psi, chi) = psi_and_chi_square(&tested_observed, &tested_expected, *rows as f64);
                let chi_p = chi_square_p(chi, tested_observed.len().saturating_sub(1) as f64);
                out.metric("psi", Some(name), psi);
                out.metric("chi_square", Some(name), chi);
                let psi_noise = tested_observed.len().saturating_sub(1) as f64 / n;
                if psi >= c.psi_threshold + psi_noise && chi_p < c.alpha && psi > self.usual(name).0 + psi_noise {
                    // The category whose share moved most.
                    let names = shares.keys().map(String::as_str).chain(["(other values)"]);
                    let moved = names
                        .zip(&observed)
                        .zip(&expected)
                        .map(|((k, &o), &e)| (k, o as f64 / n, e))
                        .max_by(|a, b| (a.1 - a.2).abs().total_cmp(&(b.1 - b.2).abs()))
                        .map(|(k, o, e)| format!("{k} {:.1}% against {:.1}%", o * 100.0, e * 100.0))
                        .unwrap_or_default();
                    let severity = if psi >= 2.0 * c.psi_threshold { Severity::Critical } else { Severity::Warning };
                    let message = format!(
                        "{name}'s categories moved away from its reference: PSI {psi:.3} (usually up to {:.3}), chi-square {chi:.1} (p {}); most moved: {moved}; over {} values against {rows}",
                        self.usual(name).0,
                        p(chi_p),
                        tally.rows
                    );
                    out.findings.push(Finding::new("psi", Some(name), psi, c.psi_threshold, severity, message));
                    return (true, Some(psi), None);
                }
                (false, Some(psi), None)
            }
            _ => (false, None, None),
        }
    }

    /// Memory each column's sketch or reference holds.
    pub fn memory(&self) -> Vec<ColumnMemory> {
        let strings = |m: &BTreeMap<String, f64>| m.keys().map(|k| k.len() + 24 + 8).sum::<usize>();
        let learning = self.learning.iter().map(|(name, c)| ColumnMemory {
            column: name.clone(),
            phase: "learning",
            bytes: match &c.sketch {
                Learning::Numeric(s) => s.bytes(),
                Learning::Categorical(s) => s.current_map_capacity() * (24 + 8) + s.num_active_items() * 16,
            },
        });
        let frozen = self.reference.iter().map(|(name, r)| ColumnMemory {
            column: name.clone(),
            phase: "reference",
            bytes: match r {
                Reference::Numeric { grid, .. } => grid.grid.len() * std::mem::size_of::<f64>(),
                Reference::Categorical { shares, .. } => strings(shares),
                Reference::NotJudged => 0,
            },
        });
        learning.chain(frozen).collect()
    }
}

/// FNV-1a: categories are short strings, and SipHash costs more than the rest of the lookup.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A p-value for a message.
fn p(p: f64) -> String {
    if p < 1e-4 {
        "< 0.0001".into()
    } else {
        format!("{p:.4}")
    }
}

/// A categorical reference from a learned frequent-items sketch, or
/// `NotJudged` when the values are too many to be categories.
fn categories(sketch: &FrequentItemsSketch<String>, max_categories: usize) -> Reference {
    let total = sketch.total_weight();
    let items = sketch.frequent_items(ErrorType::NoFalseNegatives);
    let covered: u64 = items.iter().take(max_categories).map(|r| r.estimate()).sum();
    // Values beyond the listed ones must be rare (under 5%), or this is no category.
    if total == 0 || items.len() > max_categories || (covered as f64) < 0.95 * total as f64 {
        return Reference::NotJudged;
    }
    let shares = items.iter().map(|r| (r.item().clone(), r.estimate() as f64 / total as f64)).collect();
    Reference::Categorical { shares, rows: total }
}

impl Detector for Drift {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "drift".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Distribution drift per column against a reference: PSI and Kolmogorov-Smirnov for numbers, PSI and chi-square for categories".into(),
            metrics: vec![
                metric_info("psi", "Population Stability Index of the column against its reference"),
                metric_info("ks_distance", "Largest gap between the column's and the reference's CDF"),
                metric_info("chi_square", "Pearson's chi-square of the column's categories against the reference's shares"),
                metric_info("mean", "Mean of a numeric column's present values"),
                metric_info("median_step", "How far a numeric column's median moved since the window before"),
            ],
            config_schema: r#"{"type":"object","properties":{"reference_windows":{"type":"integer"},"refresh_windows":{"type":"integer"},"time_like":{"type":"object","additionalProperties":{"type":"boolean"}},"columns":{"type":"array","items":{"type":"string"}},"bins":{"type":"integer"},"psi_threshold":{"type":"number"},"ks_threshold":{"type":"number"},"alpha":{"type":"number"},"min_rows":{"type":"integer"},"max_categories":{"type":"integer"},"reference_values":{"type":"integer"},"reference":{"type":"object","additionalProperties":{"type":"object","properties":{"quantiles":{"type":"array","items":{"type":"number"}},"frequencies":{"type":"object","additionalProperties":{"type":"number"}}}}}}}"#.into(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        let config: Config = parse_config(config)?;
        if config.bins < 2 || config.reference_windows == 0 || config.reference_values < 2 * GRID_POINTS {
            return Err(format!("need bins >= 2, reference_windows >= 1 and reference_values >= {}", 2 * GRID_POINTS));
        }
        if !(config.alpha > 0.0 && config.alpha < 1.0) || config.psi_threshold <= 0.0 || !(config.ks_threshold > 0.0 && config.ks_threshold < 1.0) {
            return Err("need 0 < alpha < 1, psi_threshold > 0 and 0 < ks_threshold < 1".into());
        }
        for (column, pinned) in &config.reference {
            let reference = match (&pinned.quantiles, &pinned.frequencies) {
                (Some(q), None) => {
                    if q.len() < 2 || q.iter().any(|v| !v.is_finite()) || q.windows(2).any(|w| w[0] > w[1]) {
                        return Err(format!("reference.{column}.quantiles must be at least 2 finite values in ascending order"));
                    }
                    // A pinned reference is exact: only the grid's resolution is uncertain.
                    Reference::Numeric { grid: QuantileGrid { grid: q.clone() }, rows: u64::MAX / 4 }
                }
                (None, Some(f)) => {
                    let sum: f64 = f.values().sum();
                    if f.is_empty() || f.values().any(|s| !s.is_finite() || *s < 0.0) || sum > 1.0 + 1e-9 {
                        return Err(format!("reference.{column}.frequencies must be shares >= 0 adding up to at most 1"));
                    }
                    Reference::Categorical { shares: f.clone(), rows: u64::MAX / 4 }
                }
                _ => return Err(format!("reference.{column} needs exactly one of quantiles or frequencies")),
            };
            self.reference.insert(column.clone(), reference);
            self.pinned.push(column.clone());
        }
        self.time.force(config.time_like.clone());
        self.config = config;
        self.index_categories();
        Ok(())
    }

    fn reads(&self) -> Reads {
        match &self.config.columns {
            Some(columns) => Reads::only(BatchParts::empty()).and_columns(columns.iter().cloned()),
            // Timestamps are never judged; text is read as the host groups it.
            None => Reads::only(BatchParts::FLOAT64_VALUES | BatchParts::INT64_VALUES | BatchParts::BOOLEAN_VALUES).and_grouped_text(),
        }
    }

    fn analyze(&mut self, batch: &Batch) -> Result<Analysis, String> {
        let mut out = Analysis::new();
        let config = &self.config;
        self.time.observe(batch, |name| config.watches(name));
        for (index, column) in batch.columns.iter().enumerate() {
            // Ids and free text, known not to be categories, are not even read.
            if !self.config.watches(&column.name) || matches!(self.reference.get(&column.name), Some(Reference::NotJudged)) {
                continue;
            }
            // Numbers that move with time are not read either.
            if matches!(column.values, ColumnValues::Float64(_) | ColumnValues::Int64(_)) && self.time.is_time_like(&column.name) {
                continue;
            }
            let distinct = DistinctValues::of(batch, index);
            let Some(values) = values(batch, index, distinct.as_ref()) else {
                continue;
            };
            if let Values::Numbers(sorted) = &values {
                if !sorted.is_empty() {
                    out.metric("mean", Some(&column.name), sorted.iter().sum::<f64>() / sorted.len() as f64);
                }
            }
            let (mut drifted, psi, ks) = self.judge(&column.name, &values, &mut out);
            if let Values::Numbers(sorted) = &values {
                let spread = self.spreads.entry(column.name.clone()).or_default();
                if let Some(step) = spread.steps.observe(sorted, self.config.min_rows as usize, JUDGE_AFTER) {
                    drifted = true;
                    let severity = if step.size >= 2.0 * step.usual { Severity::Critical } else { Severity::Warning };
                    let message = format!(
                        "{}'s median stepped from {:.4} to {:.4} in one window, further than it ever stepped (usually up to {:.4})",
                        column.name, step.from, step.to, step.usual
                    );
                    out.findings.push(Finding::new("median_step", Some(&column.name), step.size, step.usual, severity, message));
                }
            }
            if psi.is_some() || ks.is_some() {
                let spread = self.spreads.entry(column.name.clone()).or_default();
                psi.inspect(|&psi| spread.psi.push(psi, drifted));
                ks.inspect(|&ks| spread.ks.push(ks, drifted));
            }
            self.advance(&column.name, &values, drifted)?;
        }
        Ok(out)
    }

    fn snapshot(&self) -> Vec<u8> {
        let learning = self
            .learning
            .iter()
            .map(|(name, c)| {
                (
                    name.clone(),
                    SavedCandidate { sketch: c.sketch.save(), windows: c.windows, shift: c.shift.as_ref().map(Learning::save), drifting: c.drifting },
                )
            })
            .collect();
        encode_state(&SavedState { learning, reference: self.reference.clone(), time: self.time.clone(), spreads: self.spreads.clone() })
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        if state.is_empty() {
            return Ok(());
        }
        let saved: SavedState = match decode_state(state) {
            Ok(saved) => saved,
            Err(e) => {
                log(LogLevel::Warn, &format!("drift: the state handed over is not one this version reads ({e}); learning anew"));
                return Ok(());
            }
        };
        let mut learning = BTreeMap::new();
        for (name, c) in saved.learning {
            let shift = c.shift.map(Learning::load).transpose()?;
            learning.insert(name, Candidate { sketch: Learning::load(c.sketch)?, windows: c.windows, shift, drifting: c.drifting });
        }
        self.learning = learning;
        // Pinned references (from config) win over restored ones.
        for (name, r) in saved.reference {
            if !self.pinned.contains(&name) {
                self.reference.insert(name, r);
            }
        }
        self.time = saved.time;
        self.time.force(self.config.time_like.clone());
        self.spreads = saved.spreads;
        self.index_categories();
        Ok(())
    }
}

export_detector!(Drift);

#[cfg(test)]
mod tests;
