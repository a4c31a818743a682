//! {{name}}: flags a window where a column is mostly absent (null or
//! missing). Change `analyze` to check what matters to you; `cargo test
//! --target x86_64-unknown-linux-gnu` runs the test below natively. Once it
//! reads only some of a window (this one: row states), say so in
//! `Detector::reads` and the host copies only that into it.

use clean_host_sdk::{export_detector, metric_info, parse_config, Analysis, Batch, Detector, Finding, PluginInfo, Severity, MISSING, NULL};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Share of a column's rows that may be null or missing.
    max_absent_share: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config { max_absent_share: 0.5 }
    }
}

#[derive(Default)]
pub struct Plugin {
    config: Config,
}

impl Detector for Plugin {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "{{name}}".into(),
            version: "0.1.0".into(),
            description: "Columns that are mostly null or missing".into(),
            metrics: vec![metric_info("absent_share", "Share of a column's rows that are null or missing")],
            config_schema: "{}".into(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        self.config = parse_config(config)?;
        Ok(())
    }

    fn analyze(&mut self, batch: &Batch) -> Result<Analysis, String> {
        let mut out = Analysis::new();
        for column in &batch.columns {
            let absent = column.count(NULL) + column.count(MISSING);
            let share = absent as f64 / batch.row_count.max(1) as f64;
            out.metric("absent_share", Some(&column.name), share);
            if share > self.config.max_absent_share {
                let message = format!("{:.0}% of '{}' is null or missing", share * 100.0, column.name);
                out.findings.push(Finding::new("absent_share", Some(&column.name), share, self.config.max_absent_share, Severity::Warning, message));
            }
        }
        Ok(out)
    }
}

export_detector!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use clean_host_sdk::testing::BatchBuilder;

    #[test]
    fn a_mostly_null_column_is_flagged() {
        let mut d = Plugin::default();
        d.configure("{}").unwrap();
        let batch = BatchBuilder::new(4).float("amount", &[Some(1.0), None, None, None]).build();
        let out = d.analyze(&batch).unwrap();
        assert_eq!(out.findings.len(), 1);
    }
}
