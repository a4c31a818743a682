//! Says it reads what its config lists, then reports what each window
//! handed it as info findings: per column `values` (values it got) and
//! `rows` (the column's length as the SDK counts it), and `offsets`,
//! `record_hashes`, `event_times` (their lengths). `padding` adds that many made-up column
//! names to what it reads: past the host's limit, it must be refused.

use clean_host_sdk::{export_detector, parse_config, Analysis, Batch, BatchParts, ColumnValues, Detector, Finding, PluginInfo, Reads, Severity};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Batch parts as the WIT names them: `float64-values`, ..., `event-times`.
    parts: Vec<String>,
    columns: Vec<String>,
    padding: usize,
}

#[derive(Default)]
pub struct Reader {
    config: Config,
}

fn part(name: &str) -> Option<BatchParts> {
    Some(match name {
        "float64-values" => BatchParts::FLOAT64_VALUES,
        "int64-values" => BatchParts::INT64_VALUES,
        "boolean-values" => BatchParts::BOOLEAN_VALUES,
        "timestamp-values" => BatchParts::TIMESTAMP_VALUES,
        "text-values" => BatchParts::TEXT_VALUES,
        "offsets" => BatchParts::OFFSETS,
        "record-hashes" => BatchParts::RECORD_HASHES,
        "event-times" => BatchParts::EVENT_TIMES,
        _ => return None,
    })
}

fn info(metric: &str, column: Option<&str>, value: usize) -> Finding {
    Finding::new(metric, column, value as f64, 0.0, Severity::Info, String::new())
}

impl Detector for Reader {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "reader".into(),
            version: "0.0.1".into(),
            description: "Reports which parts of each window it was handed".into(),
            metrics: Vec::new(),
            config_schema: "{}".into(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        let config: Config = parse_config(config)?;
        if let Some(unknown) = config.parts.iter().find(|p| part(p).is_none()) {
            return Err(format!("no batch part {unknown}"));
        }
        self.config = config;
        Ok(())
    }

    fn reads(&self) -> Reads {
        let parts = self.config.parts.iter().filter_map(|p| part(p)).fold(BatchParts::empty(), |all, p| all | p);
        // Past the SDK's own cap (which would read everything): what a hostile plugin could answer.
        let padding = (0..self.config.padding).map(|i| format!("made-up-{i}"));
        Reads { parts, columns: self.config.columns.iter().cloned().chain(padding).collect() }
    }

    fn analyze(&mut self, batch: &Batch) -> Result<Analysis, String> {
        let mut out = Analysis::new();
        for column in &batch.columns {
            let values = match &column.values {
                ColumnValues::Float64(v) => v.len(),
                ColumnValues::Int64(v) | ColumnValues::Timestamp(v) => v.len(),
                ColumnValues::Boolean(v) => v.len(),
                ColumnValues::Text(s) => s.offsets.len().saturating_sub(1),
            };
            out.findings.push(info("values", Some(&column.name), values));
            out.findings.push(info("rows", Some(&column.name), column.len()));
        }
        out.findings.push(info("offsets", None, batch.offsets.len()));
        out.findings.push(info("record_hashes", None, batch.record_hashes.len()));
        out.findings.push(info("event_times", None, batch.event_times.len()));
        Ok(out)
    }
}

export_detector!(Reader);
