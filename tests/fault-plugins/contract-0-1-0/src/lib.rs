//! A detector built against the contract as released in 0.1.0 (its WIT kept
//! beside it as it was, without the SDK): hosts of later 0.1.x versions must
//! load it as it is and hand it whole windows. Each window it says, as info
//! findings, how many values each column brought (`values`) and how many
//! record hashes (`record_hashes`).

wit_bindgen::generate!({ path: "wit", world: "detector-plugin" });

use clean_host::plugin::types::{Analysis, Batch, ColumnValues, Finding, PluginInfo, Severity};
use exports::clean_host::plugin::detector::Guest;

struct Contract010;

fn info(metric: &str, column: Option<&str>, value: usize) -> Finding {
    Finding {
        metric: metric.into(),
        column: column.map(Into::into),
        value: value as f64,
        threshold: 0.0,
        severity: Severity::Info,
        message: String::new(),
        sample_rows: Vec::new(),
    }
}

impl Guest for Contract010 {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "contract-0-1-0".into(),
            version: "0.0.1".into(),
            description: "Built for the 0.1.0 contract".into(),
            metrics: Vec::new(),
            config_schema: "{}".into(),
        }
    }

    fn configure(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn analyze(batch: Batch) -> Result<Analysis, String> {
        let mut findings: Vec<Finding> = batch
            .columns
            .iter()
            .map(|c| {
                let values = match &c.values {
                    ColumnValues::Float64(v) => v.len(),
                    ColumnValues::Int64(v) | ColumnValues::Timestamp(v) => v.len(),
                    ColumnValues::Boolean(v) => v.len(),
                    ColumnValues::Text(s) => s.offsets.len().saturating_sub(1),
                };
                info("values", Some(&c.name), values)
            })
            .collect();
        findings.push(info("record_hashes", None, batch.record_hashes.len()));
        Ok(Analysis { findings, metrics: Vec::new() })
    }

    fn snapshot() -> Vec<u8> {
        Vec::new()
    }

    fn restore(_state: Vec<u8>) -> Result<(), String> {
        Ok(())
    }
}

export!(Contract010);
