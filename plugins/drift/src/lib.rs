//! Drift: has a column's distribution moved away from its reference?
//!
//! The first `reference_windows` windows are the reference, held in
//! mergeable sketches from Apache DataSketches so memory stays bounded however
//! many rows they span: a KLL quantile sketch per numeric column, a
//! frequent-items sketch per text or boolean column. Then the reference is
//! frozen into a 101-point quantile grid or a table of category shares (or
//! pinned in config, or restored from state), and every later window is
//! compared with it:
//!
//! - numeric columns: PSI over the reference's deciles, and the two-sample
//!   Kolmogorov-Smirnov distance;
//! - categorical columns: PSI and Pearson's chi-square over the reference's
//!   categories plus one bucket for all others.
//!
//! A column drifts only when the shift is both large (PSI at least
//! `psi_threshold`, or KS distance at least `ks_threshold` after the
//! sketch's rank error is taken off) and significant (p below `alpha`), so
//! noisy but stationary data stays quiet and small windows do not flap.
//! Columns whose reference has more than `max_categories` values (ids, free
//! text) and timestamps are not judged. Every numeric column's mean is
//! emitted as a metric, for the host's control rules.

mod tests_of_fit;

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use clean_host_sdk::{
    decode_state, encode_state, export_detector, metric_info, parse_config, Analysis, Batch, Column, ColumnValues, Detector, Finding, PluginInfo, Severity,
    PRESENT,
};
use datasketches::common::SearchCriteria;
use datasketches::frequencies::{ErrorType, FrequentItemsSketch};
use datasketches::kll::{KllFloat, KllSketch};
use serde::{Deserialize, Serialize};

use tests_of_fit::{chi_square_p, ks_p, psi_and_chi_square, QuantileGrid};

/// Points in a learned numeric reference's quantile grid.
const GRID_POINTS: usize = 101;
/// Frequent-items map size while learning categories (a power of two).
const CATEGORY_MAP: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Windows whose rows make the reference.
    reference_windows: u32,
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
    /// KLL accuracy parameter: rank error about 1.65 / k (200: 1.3%).
    sketch_k: u16,
    /// References given in config instead of learned, by column.
    reference: BTreeMap<String, PinnedReference>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            reference_windows: 10,
            columns: None,
            bins: 10,
            psi_threshold: 0.25,
            ks_threshold: 0.15,
            alpha: 0.001,
            min_rows: 100,
            max_categories: 50,
            sketch_k: 200,
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
        /// The sketch's rank error, taken off the KS distance.
        rank_error: f64,
    },
    Categorical {
        shares: BTreeMap<String, f64>,
        rows: u64,
    },
    /// Too many distinct values to be a category.
    NotJudged,
}

/// A reference being learned.
enum Learning {
    Numeric(KllSketch<KllFloat<f64>>),
    Categorical(FrequentItemsSketch<String>),
}

/// `Learning` as state: the sketches' own compact bytes.
#[derive(Serialize, Deserialize)]
enum SavedLearning {
    Numeric(Vec<u8>),
    Categorical(Vec<u8>),
}

#[derive(Default, Serialize, Deserialize)]
struct SavedState {
    windows: u32,
    learning: BTreeMap<String, SavedLearning>,
    reference: BTreeMap<String, Reference>,
}

#[derive(Default)]
pub struct Drift {
    config: Config,
    /// Reference windows seen so far.
    windows: u32,
    learning: BTreeMap<String, Learning>,
    reference: BTreeMap<String, Reference>,
    /// Category -> bin, per categorical reference (rebuilt from `reference`).
    bins: HashMap<String, HashMap<Vec<u8>, usize, BuildHasherDefault<Fnv>>>,
}

/// The kind of values a column holds in this window.
enum Values<'a> {
    Numbers(Vec<f64>),
    /// UTF-8 bytes as the batch holds them: hashed, never decoded.
    Categories(Vec<&'a [u8]>),
}

fn values(column: &Column) -> Option<Values<'_>> {
    let present = |r: usize| column.validity.is_empty() || column.validity[r] == PRESENT;
    let rows = 0..column.len();
    Some(match &column.values {
        ColumnValues::Float64(v) => Values::Numbers(rows.filter(|&r| present(r)).map(|r| v[r]).filter(|x| x.is_finite()).collect()),
        ColumnValues::Int64(v) => Values::Numbers(rows.filter(|&r| present(r)).map(|r| v[r] as f64).collect()),
        ColumnValues::Boolean(v) => Values::Categories(rows.filter(|&r| present(r)).map(|r| if v[r] { &b"true"[..] } else { &b"false"[..] }).collect()),
        ColumnValues::Text(_) => Values::Categories(rows.filter(|&r| present(r)).map(|r| column.bytes(r)).collect()),
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

impl Drift {
    fn watched(&self, name: &str) -> bool {
        self.config.columns.as_ref().is_none_or(|c| c.iter().any(|n| n == name))
    }

    fn learn(&mut self, batch: &Batch) -> Result<(), String> {
        for column in &batch.columns {
            if self.reference.contains_key(&column.name) || !self.watched(&column.name) {
                continue;
            }
            let Some(values) = values(column) else { continue };
            let k = self.config.sketch_k;
            let entry = match self.learning.get_mut(&column.name) {
                Some(e) => e,
                None => {
                    let fresh = match values {
                        Values::Numbers(_) => Learning::Numeric(KllSketch::new(k).map_err(|e| e.to_string())?),
                        Values::Categories(_) => Learning::Categorical(FrequentItemsSketch::new(CATEGORY_MAP).map_err(|e| e.to_string())?),
                    };
                    self.learning.entry(column.name.clone()).or_insert(fresh)
                }
            };
            match (entry, values) {
                (Learning::Numeric(sketch), Values::Numbers(v)) => {
                    for x in v {
                        sketch.update(KllFloat::<f64>::new(x).map_err(|e| e.to_string())?);
                    }
                }
                (Learning::Categorical(sketch), Values::Categories(v)) => {
                    for s in v {
                        sketch.update_ref(&*String::from_utf8_lossy(s));
                    }
                }
                // The column changed type while learning: the schema detector's business.
                _ => {}
            }
        }
        self.windows += 1;
        if self.windows >= self.config.reference_windows {
            self.freeze()?;
        }
        Ok(())
    }

    /// Turn the learned sketches into references.
    fn freeze(&mut self) -> Result<(), String> {
        for (name, learning) in std::mem::take(&mut self.learning) {
            let reference = match learning {
                Learning::Numeric(sketch) => {
                    let ranks: Vec<f64> = (0..GRID_POINTS).map(|i| i as f64 / (GRID_POINTS - 1) as f64).collect();
                    let Some(grid) = sketch.quantiles(&ranks, SearchCriteria::Inclusive).map_err(|e| e.to_string())? else { continue };
                    Reference::Numeric {
                        grid: QuantileGrid { grid: grid.into_iter().map(KllFloat::into_inner).collect() },
                        rows: sketch.n(),
                        rank_error: sketch.normalized_rank_error(),
                    }
                }
                Learning::Categorical(sketch) => categories(&sketch, self.config.max_categories),
            };
            self.reference.insert(name, reference);
        }
        self.index_categories();
        Ok(())
    }

    fn index_categories(&mut self) {
        self.bins = self
            .reference
            .iter()
            .filter_map(|(name, r)| match r {
                Reference::Categorical { shares, .. } => Some((name.clone(), shares.keys().enumerate().map(|(i, k)| (k.as_bytes().to_vec(), i)).collect())),
                _ => None,
            })
            .collect();
    }

    fn judge(&self, name: &str, values: Values<'_>, out: &mut Analysis) {
        let c = &self.config;
        let Some(reference) = self.reference.get(name) else { return };
        match (reference, values) {
            (Reference::Numeric { grid, rows, rank_error }, Values::Numbers(mut v)) => {
                if v.len() < c.min_rows as usize {
                    return;
                }
                // At least 20 expected values per bin, so the chi-square test holds on small windows.
                let comparison = grid.compare(&v, c.bins.min(v.len() / 20).max(2));
                let m = *rows as f64;
                let (psi, chi) = psi_and_chi_square(&comparison.observed, &comparison.expected, m);
                let psi_p = chi_square_p(chi, (comparison.observed.len() - 1) as f64);
                let ks = comparison.ks;
                let ks_sure = (ks - rank_error).max(0.0);
                let ks_pv = ks_p(ks_sure, v.len() as f64, m);
                out.metric("psi", Some(name), psi);
                out.metric("ks_distance", Some(name), ks);
                let psi_drift = psi >= c.psi_threshold && psi_p < c.alpha;
                let ks_drift = ks_sure >= c.ks_threshold && ks_pv < c.alpha;
                if psi_drift || ks_drift {
                    let mid = v.len() / 2;
                    let median = *v.select_nth_unstable_by(mid, f64::total_cmp).1;
                    let (metric, value, threshold) = if psi_drift { ("psi", psi, c.psi_threshold) } else { ("ks_distance", ks, c.ks_threshold) };
                    let severity = if value >= 2.0 * threshold { Severity::Critical } else { Severity::Warning };
                    let message = format!(
                        "{name} moved away from its reference: PSI {psi:.3} (p {}), KS distance {ks:.3} (±{rank_error:.3} sketch error, p {}); median {median:.4} against {:.4}, over {} values against {rows}",
                        p(psi_p),
                        p(ks_pv),
                        grid.grid[grid.grid.len() / 2],
                        v.len()
                    );
                    out.findings.push(Finding::new(metric, Some(name), value, threshold, severity, message));
                }
            }
            (Reference::Categorical { shares, rows }, Values::Categories(v)) => {
                if v.len() < c.min_rows as usize {
                    return;
                }
                let index = &self.bins[name];
                let n = v.len() as f64;
                // The last bin holds every value the reference did not list, and
                // categories too rare to expect 5 values here (so chi-square holds).
                let other = shares.len();
                let bin_of: Vec<usize> = shares.values().enumerate().map(|(i, &e)| if e * n >= 5.0 { i } else { other }).collect();
                let mut observed = vec![0u64; other + 1];
                for s in &v {
                    observed[index.get(*s).map_or(other, |&i| bin_of[i])] += 1;
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
                if psi >= c.psi_threshold && chi_p < c.alpha {
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
                    let message = format!("{name}'s categories moved away from its reference: PSI {psi:.3}, chi-square {chi:.1} (p {}); most moved: {moved}; over {} values against {rows}", p(chi_p), v.len());
                    out.findings.push(Finding::new("psi", Some(name), psi, c.psi_threshold, severity, message));
                }
            }
            _ => {}
        }
    }

    /// Memory each column's sketch or reference holds.
    pub fn memory(&self) -> Vec<ColumnMemory> {
        let strings = |m: &BTreeMap<String, f64>| m.keys().map(|k| k.len() + 24 + 8).sum::<usize>();
        let learning = self.learning.iter().map(|(name, l)| ColumnMemory {
            column: name.clone(),
            phase: "learning",
            bytes: match l {
                Learning::Numeric(s) => s.num_retained() * std::mem::size_of::<f64>(),
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
            ],
            config_schema: r#"{"type":"object","properties":{"reference_windows":{"type":"integer"},"columns":{"type":"array","items":{"type":"string"}},"bins":{"type":"integer"},"psi_threshold":{"type":"number"},"ks_threshold":{"type":"number"},"alpha":{"type":"number"},"min_rows":{"type":"integer"},"max_categories":{"type":"integer"},"sketch_k":{"type":"integer"},"reference":{"type":"object","additionalProperties":{"type":"object","properties":{"quantiles":{"type":"array","items":{"type":"number"}},"frequencies":{"type":"object","additionalProperties":{"type":"number"}}}}}}}"#.into(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        let config: Config = parse_config(config)?;
        if config.bins < 2 || config.reference_windows == 0 || config.sketch_k < 8 {
            return Err("need bins >= 2, reference_windows >= 1 and sketch_k >= 8".into());
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
                    Reference::Numeric { grid: QuantileGrid { grid: q.clone() }, rows: u64::MAX / 4, rank_error: 0.0 }
                }
                (None, Some(f)) => {
                    let sum: f64 = f.values().sum();
                    if f.is_empty() || f.values().any(|s| !(*s >= 0.0)) || sum > 1.0 + 1e-9 {
                        return Err(format!("reference.{column}.frequencies must be shares >= 0 adding up to at most 1"));
                    }
                    Reference::Categorical { shares: f.clone(), rows: u64::MAX / 4 }
                }
                _ => return Err(format!("reference.{column} needs exactly one of quantiles or frequencies")),
            };
            self.reference.insert(column.clone(), reference);
        }
        self.config = config;
        self.index_categories();
        Ok(())
    }

    fn analyze(&mut self, batch: &Batch) -> Result<Analysis, String> {
        let mut out = Analysis::new();
        for column in batch.columns.iter().filter(|c| self.watched(&c.name)) {
            let numeric = matches!(column.values, ColumnValues::Float64(_) | ColumnValues::Int64(_));
            let judged = matches!(self.reference.get(&column.name), Some(Reference::Numeric { .. } | Reference::Categorical { .. }));
            // Text without a reference (ids, free text) is not even read.
            if !numeric && !judged {
                continue;
            }
            let Some(values) = values(column) else { continue };
            if let Values::Numbers(v) = &values {
                if !v.is_empty() {
                    out.metric("mean", Some(&column.name), v.iter().sum::<f64>() / v.len() as f64);
                }
            }
            self.judge(&column.name, values, &mut out);
        }
        if self.windows < self.config.reference_windows {
            self.learn(batch)?;
        }
        Ok(out)
    }

    fn snapshot(&self) -> Vec<u8> {
        let learning = self
            .learning
            .iter()
            .map(|(name, l)| {
                let saved = match l {
                    Learning::Numeric(s) => SavedLearning::Numeric(s.serialize()),
                    Learning::Categorical(s) => SavedLearning::Categorical(s.serialize()),
                };
                (name.clone(), saved)
            })
            .collect();
        encode_state(&SavedState { windows: self.windows, learning, reference: self.reference.clone() })
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        if state.is_empty() {
            return Ok(());
        }
        let saved: SavedState = decode_state(state)?;
        let mut learning = BTreeMap::new();
        for (name, s) in saved.learning {
            let l = match s {
                SavedLearning::Numeric(bytes) => Learning::Numeric(KllSketch::deserialize(&bytes).map_err(|e| format!("invalid state: {e}"))?),
                SavedLearning::Categorical(bytes) => {
                    Learning::Categorical(FrequentItemsSketch::deserialize(&bytes).map_err(|e| format!("invalid state: {e}"))?)
                }
            };
            learning.insert(name, l);
        }
        self.windows = saved.windows;
        self.learning = learning;
        // Pinned references (from config) win over restored ones.
        for (name, r) in saved.reference {
            self.reference.entry(name).or_insert(r);
        }
        self.index_categories();
        Ok(())
    }
}

export_detector!(Drift);

#[cfg(test)]
mod tests;
