//! Completeness: the share of null or missing values per column.
//!
//! With no config it learns each column's usual null rate over the first
//! windows and flags a window whose rate is far above the rates of the
//! windows before (see [`RateBaseline`]: their real spread, the binomial
//! noise of the window's size and a minimum step), so a rare null in a clean
//! stream stays quiet and a column whose nulls wander day to day does too.
//! `max_null_rate` pins a limit per column.

use std::collections::BTreeMap;

use clean_host_sdk::stats::RateBaseline;
use clean_host_sdk::{
    decode_state, encode_state, export_detector, metric_info, parse_config, Analysis, Batch, BatchParts, Detector, Finding, PluginInfo, Reads, Severity,
    MISSING, NULL,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Windows used to learn each column's usual null rate.
    warmup_windows: u32,
    /// Smallest rise over the learned rate that counts as a departure.
    min_increase: f64,
    /// Fewest null rows that can make a finding.
    min_count: usize,
    /// Fixed limits per column; these columns skip learning.
    max_null_rate: BTreeMap<String, f64>,
}

impl Default for Config {
    fn default() -> Self {
        Config { warmup_windows: 5, min_increase: 0.05, min_count: 5, max_null_rate: BTreeMap::new() }
    }
}

#[derive(Default, Serialize, Deserialize)]
struct State {
    windows: u32,
    baselines: BTreeMap<String, RateBaseline>,
}

#[derive(Default)]
pub struct Completeness {
    config: Config,
    state: State,
}

impl Detector for Completeness {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "completeness".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Null and missing values per column against a learned or fixed rate".into(),
            metrics: vec![metric_info("null_rate", "Share of rows where the column is null or missing")],
            config_schema: r#"{"type":"object","properties":{"warmup_windows":{"type":"integer"},"min_increase":{"type":"number"},"min_count":{"type":"integer"},"max_null_rate":{"type":"object","additionalProperties":{"type":"number"}}}}"#.into(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        self.config = parse_config(config)?;
        Ok(())
    }

    fn reads(&self) -> Reads {
        // Row states only.
        Reads::only(BatchParts::empty())
    }

    fn analyze(&mut self, batch: &Batch) -> Result<Analysis, String> {
        let mut out = Analysis::new();
        let rows = batch.row_count as usize;
        if rows == 0 {
            return Ok(out);
        }
        let learning = self.state.windows < self.config.warmup_windows;
        for column in &batch.columns {
            let absent = column.count(NULL) + column.count(MISSING);
            let rate = absent as f64 / rows as f64;
            out.metric("null_rate", Some(&column.name), rate);
            let limit = match self.config.max_null_rate.get(&column.name) {
                Some(&fixed) => fixed,
                None if learning => {
                    self.state.baselines.entry(column.name.clone()).or_default().observe(absent, rows);
                    continue;
                }
                None => match self.state.baselines.get_mut(&column.name) {
                    Some(b) => {
                        let limit = b.upper_limit(rows, self.config.min_increase);
                        b.push(rate, rate > limit && absent >= self.config.min_count);
                        limit
                    }
                    // A field the baseline never saw: the schema detector reports it.
                    None => continue,
                },
            };
            if rate > limit && absent >= self.config.min_count {
                let severity = if rate >= 0.5 { Severity::Critical } else { Severity::Warning };
                let rows_hit = (0..rows).filter(|&r| matches!(column.state(r), NULL | MISSING));
                out.findings.push(
                    Finding::new(
                        "null_rate",
                        Some(&column.name),
                        rate,
                        limit,
                        severity,
                        format!(
                            "{:.1}% of '{}' is null or missing ({absent} of {rows} rows), above the limit of {:.1}%",
                            rate * 100.0,
                            column.name,
                            limit * 100.0
                        ),
                    )
                    .with_rows(rows_hit.map(|r| r as u32)),
                );
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

export_detector!(Completeness);

#[cfg(test)]
mod tests {
    use super::*;
    use clean_host_sdk::stats::MIN_HISTORY;
    use clean_host_sdk::testing::{BatchBuilder, Rng};

    #[test]
    fn resumes_from_its_snapshot_exactly() {
        let windows = clean_host_sdk::testing::realistic_windows(7, 60, 500);
        clean_host_sdk::testing::assert_restore_equivalent::<Completeness>("{}", &windows, (3..60).step_by(7));
    }

    #[test]
    fn reads_all_it_analyses() {
        let windows = clean_host_sdk::testing::realistic_windows(7, 60, 500);
        clean_host_sdk::testing::assert_reads_suffice::<Completeness>("{}", &windows);
    }

    fn window(seq: u64, rng: &mut Rng, null_rate: f64) -> Batch {
        let values: Vec<Option<f64>> = (0..1000).map(|_| if rng.uniform() < null_rate { None } else { Some(rng.normal()) }).collect();
        BatchBuilder::new(seq).float("amount", &values).build()
    }

    #[test]
    fn rare_nulls_stay_quiet_and_a_burst_is_flagged() {
        let mut d = Completeness::default();
        d.configure("{}").unwrap();
        let mut rng = Rng(7);
        for seq in 0..200 {
            let a = d.analyze(&window(seq, &mut rng, 0.01)).unwrap();
            assert!(a.findings.is_empty(), "window {seq}: {:?}", a.findings);
        }
        let a = d.analyze(&window(200, &mut rng, 0.3)).unwrap();
        assert_eq!(a.findings.len(), 1);
        let f = &a.findings[0];
        assert_eq!(f.column.as_deref(), Some("amount"));
        assert!(f.value > 0.25 && f.severity == Severity::Warning);
        assert!(!f.sample_rows.is_empty());
    }

    #[test]
    fn fixed_limit_applies_from_the_first_window() {
        let mut d = Completeness::default();
        d.configure(r#"{"max_null_rate": {"amount": 0.001}}"#).unwrap();
        let a = d.analyze(&window(0, &mut Rng(1), 0.02)).unwrap();
        assert_eq!(a.findings.len(), 1);
    }

    #[test]
    fn state_survives_snapshot_and_restore() {
        let mut d = Completeness::default();
        let mut rng = Rng(3);
        for seq in 0..MIN_HISTORY as u64 {
            d.analyze(&window(seq, &mut rng, 0.0)).unwrap();
        }
        let mut e = Completeness::default();
        e.restore(&d.snapshot()).unwrap();
        assert_eq!(e.analyze(&window(MIN_HISTORY as u64, &mut rng, 0.5)).unwrap().findings.len(), 1);
    }

    /// Overdispersed nulls: a rate wandering between 0.5% and 6% from window
    /// to window stays quiet at 6% and alerts at 20%.
    #[test]
    fn a_wandering_null_rate_is_quiet_at_its_usual_highs_and_loud_far_above() {
        let mut d = Completeness::default();
        let mut rng = Rng(21);
        for seq in 0..60 {
            let rate = 0.005 + 0.055 * rng.uniform();
            let a = d.analyze(&window(seq, &mut rng, rate)).unwrap();
            assert!(a.findings.is_empty(), "window {seq} at {rate:.3}: {:?}", a.findings);
        }
        assert!(d.analyze(&window(60, &mut rng, 0.06)).unwrap().findings.is_empty());
        assert_eq!(d.analyze(&window(61, &mut rng, 0.2)).unwrap().findings.len(), 1);
    }

    #[test]
    fn bad_config_is_an_error() {
        let mut d = Completeness::default();
        assert!(d.configure(r#"{"warmup": 3}"#).unwrap_err().contains("unknown field"));
    }
}
