//! Outliers: values far from a numeric column's usual distribution.
//!
//! A value is an outlier when both its robust z-score (distance from the
//! reference median in units of 1.4826 x MAD) passes `z_threshold` and it
//! lies outside the reference's `iqr_k` x IQR fences. The reference is learned
//! from a bounded sample of the first windows, together with the share of
//! outliers it already holds (a skewed price column has some); a window is
//! flagged when its outlier rate rises clearly above that share. Columns that
//! only grow (sequence numbers, times as numbers) are not scored.

use std::collections::BTreeMap;

use clean_host_sdk::stats::{median_mad, quantile, RateBaseline, Reservoir};
use clean_host_sdk::{
    decode_state, encode_state, export_detector, metric_info, parse_config, Analysis, Batch, Detector, Finding, NumericView, PluginInfo, Severity,
};
use serde::{Deserialize, Serialize};

const SAMPLE_SIZE: usize = 4096;

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Windows used to learn each column's reference distribution.
    warmup_windows: u32,
    /// Robust z-score above which a value may be an outlier.
    z_threshold: f64,
    /// IQR multiple for the fences outside which a value may be an outlier.
    iqr_k: f64,
    /// Smallest rise in the outlier rate that counts as a departure.
    min_increase: f64,
    /// Fewest outliers that can make a finding.
    min_count: usize,
    /// Only these columns (all numeric columns when empty).
    columns: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config { warmup_windows: 5, z_threshold: 3.5, iqr_k: 3.0, min_increase: 0.02, min_count: 5, columns: Vec::new() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reference {
    median: f64,
    scale: f64,
    low_fence: f64,
    high_fence: f64,
    rate: RateBaseline,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum ColumnState {
    Learning {
        sample: Reservoir,
        sorted_windows: u32,
        windows: u32,
    },
    Scored(Reference),
    /// Monotonic or constant: no distribution to compare against.
    Skipped,
}

#[derive(Default, Serialize, Deserialize)]
struct State {
    windows: u32,
    columns: BTreeMap<String, ColumnState>,
}

#[derive(Default)]
pub struct Outliers {
    config: Config,
    state: State,
}

/// True when at least 95% of consecutive present values do not decrease.
fn mostly_increasing(values: &[f64]) -> bool {
    if values.len() < 10 {
        return false;
    }
    let rising = values.windows(2).filter(|w| w[1] >= w[0]).count();
    rising as f64 >= 0.95 * (values.len() - 1) as f64
}

impl Reference {
    fn learn(sample: &[f64], config: &Config) -> Option<Reference> {
        let mut v = sample.to_vec();
        let q1 = quantile(&mut v, 0.25);
        let q3 = quantile(&mut v, 0.75);
        let (median, mad) = median_mad(&mut v);
        let iqr = q3 - q1;
        if mad <= 0.0 || iqr <= 0.0 {
            return None;
        }
        let mut reference =
            Reference { median, scale: 1.4826 * mad, low_fence: q1 - config.iqr_k * iqr, high_fence: q3 + config.iqr_k * iqr, rate: RateBaseline::default() };
        let outliers = sample.iter().filter(|&&x| reference.is_outlier(x, config)).count();
        reference.rate.observe(outliers, sample.len());
        Some(reference)
    }

    fn is_outlier(&self, x: f64, config: &Config) -> bool {
        (x < self.low_fence || x > self.high_fence) && ((x - self.median) / self.scale).abs() > config.z_threshold
    }
}

impl Outliers {
    fn analyze_column(&mut self, name: &str, view: NumericView, out: &mut Analysis) {
        let values: Vec<(u32, f64)> = view.present().collect();
        let config = &self.config;
        let state = self.state.columns.entry(name.to_string()).or_insert_with(|| ColumnState::Learning {
            sample: Reservoir::new(SAMPLE_SIZE),
            sorted_windows: 0,
            windows: 0,
        });
        match state {
            ColumnState::Learning { sample, sorted_windows, windows } => {
                let plain: Vec<f64> = values.iter().map(|&(_, v)| v).collect();
                if mostly_increasing(&plain) {
                    *sorted_windows += 1;
                }
                plain.iter().for_each(|&v| sample.push(v));
                *windows += 1;
                if *windows >= config.warmup_windows {
                    *state = if *sorted_windows * 2 > *windows || sample.values.len() < 50 {
                        ColumnState::Skipped
                    } else {
                        Reference::learn(&sample.values, config).map_or(ColumnState::Skipped, ColumnState::Scored)
                    };
                }
            }
            ColumnState::Scored(reference) => {
                if values.is_empty() {
                    return;
                }
                let plain: Vec<f64> = values.iter().map(|&(_, v)| v).collect();
                if mostly_increasing(&plain) {
                    return;
                }
                let hits: Vec<(u32, f64)> = values.iter().copied().filter(|&(_, x)| reference.is_outlier(x, config)).collect();
                let rate = hits.len() as f64 / values.len() as f64;
                out.metric("outlier_rate", Some(name), rate);
                let limit = reference.rate.upper_limit(values.len(), config.min_increase);
                if rate > limit && hits.len() >= config.min_count {
                    let extreme =
                        hits.iter().map(|&(_, x)| x).max_by(|a, b| (a - reference.median).abs().total_cmp(&(b - reference.median).abs())).unwrap_or(f64::NAN);
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
            metrics: vec![metric_info("outlier_rate", "Share of a numeric column's values that are outliers")],
            config_schema: r#"{"type":"object","properties":{"warmup_windows":{"type":"integer"},"z_threshold":{"type":"number"},"iqr_k":{"type":"number"},"min_increase":{"type":"number"},"min_count":{"type":"integer"},"columns":{"type":"array","items":{"type":"string"}}}}"#.into(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        let config: Config = parse_config(config)?;
        if config.z_threshold <= 0.0 || config.iqr_k <= 0.0 {
            return Err("z_threshold and iqr_k must be positive".into());
        }
        self.config = config;
        Ok(())
    }

    fn analyze(&mut self, batch: &Batch) -> Result<Analysis, String> {
        let mut out = Analysis::new();
        for column in &batch.columns {
            if !self.config.columns.is_empty() && !self.config.columns.contains(&column.name) {
                continue;
            }
            if let Some(view) = column.numeric() {
                self.analyze_column(&column.name, view, &mut out);
            }
        }
        self.state.windows += 1;
        Ok(out)
    }

    fn snapshot(&self) -> Vec<u8> {
        encode_state(&self.state)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        self.state = decode_state(state)?;
        Ok(())
    }
}

export_detector!(Outliers);

#[cfg(test)]
mod tests {
    use super::*;
    use clean_host_sdk::testing::{BatchBuilder, Rng};

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

    #[test]
    fn injected_spikes_are_flagged_with_rows() {
        let mut d = Outliers::default();
        d.configure("{}").unwrap();
        let mut rng = Rng(5);
        for seq in 0..5 {
            d.analyze(&window(seq, &mut rng, 0.0)).unwrap();
        }
        let a = d.analyze(&window(5, &mut rng, 0.05)).unwrap();
        assert_eq!(a.findings.len(), 1, "{:?}", a.findings);
        let f = &a.findings[0];
        assert_eq!(f.column.as_deref(), Some("price"));
        assert!(f.value > 0.03);
        assert!(!f.sample_rows.is_empty());
    }

    #[test]
    fn a_shifted_distribution_is_critical() {
        let mut d = Outliers::default();
        let mut rng = Rng(9);
        for seq in 0..5 {
            d.analyze(&window(seq, &mut rng, 0.0)).unwrap();
        }
        let a = d.analyze(&window(5, &mut rng, 1.0)).unwrap();
        assert_eq!(a.findings[0].severity, Severity::Critical);
    }

    #[test]
    fn bad_thresholds_are_rejected() {
        assert!(Outliers::default().configure(r#"{"z_threshold": -1}"#).is_err());
    }
}
