//! Running a pipeline's detectors on a closed window: what a detector is to
//! the host, how its answer is checked, and the window's quality score.
//! [`Detectors`] runs them; [`Catalog`] says which versions should run;
//! [`Score`] is what a window's findings add up to.

mod catalog;
mod detectors;
mod score;
#[cfg(test)]
pub(crate) mod tests;

pub use catalog::{Candidate, Catalog, CatalogEntry};
use clean_host_core::bindings::{Analysis, Finding, MetricValue, Severity};
use clean_host_runtime::{cut, MAX_NAME};
pub use detectors::{tenant_call_pool, DetectorSet, DetectorState, Detectors, PendingWindow};
pub use score::{is_sure, quality_score, wilson, Score};

/// Most findings one call may return.
pub const MAX_FINDINGS: usize = 1000;
/// Most metric values one call may return.
pub const MAX_METRICS: usize = 10_000;
/// Most sample rows per finding (the WIT contract's bound).
pub const MAX_SAMPLE_ROWS: usize = 20;
/// Longest finding message kept, in bytes.
const MAX_MESSAGE: usize = 4096;

/// Where a finding comes from: the data, or the host about a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingOrigin {
    Data,
    PluginError,
    /// A plugin was quarantined or rolled back: always alerted.
    Quarantine,
}

#[derive(Debug, Clone)]
pub struct HostFinding {
    pub detector: String,
    pub origin: FindingOrigin,
    pub finding: Finding,
}

/// Everything the detectors said about one window.
#[derive(Debug, Default)]
pub struct WindowAnalysis {
    pub findings: Vec<HostFinding>,
    pub metrics: Vec<(String, MetricValue)>,
    /// What shadow versions found: recorded, never alerted.
    pub shadow_findings: Vec<HostFinding>,
}

/// The host's own finding about a window: more of its lines were undecodable
/// (dead letters) than `max_rate` of all the lines it spans.
pub fn dead_letter_finding(dead: u64, rows: u32, max_rate: f64) -> Option<HostFinding> {
    let rate = dead as f64 / (dead + u64::from(rows)).max(1) as f64;
    (dead > 0 && rate > max_rate).then(|| HostFinding {
        detector: "host".into(),
        origin: FindingOrigin::Data,
        finding: Finding {
            metric: "dead_letter_rate".into(),
            column: None,
            value: rate,
            threshold: max_rate,
            severity: if rate > 0.2 { Severity::Critical } else { Severity::Warning },
            message: format!("{dead} lines since the previous window could not be decoded ({:.1}%); see the dead letters", rate * 100.0),
            sample_rows: Vec::new(),
        },
    })
}

/// Check a plugin's answer against the batch it was given; cut long
/// messages and names (a name that ends in `…` was cut).
pub fn validate(analysis: &mut Analysis, rows: u32) -> Result<(), String> {
    if analysis.findings.len() > MAX_FINDINGS {
        return Err(format!("{} findings (at most {MAX_FINDINGS})", analysis.findings.len()));
    }
    if analysis.metrics.len() > MAX_METRICS {
        return Err(format!("{} metric values (at most {MAX_METRICS})", analysis.metrics.len()));
    }
    for f in &mut analysis.findings {
        if f.metric.is_empty() {
            return Err("a finding has an empty metric name".into());
        }
        cut(&mut f.metric, MAX_NAME);
        if let Some(column) = &mut f.column {
            cut(column, MAX_NAME);
        }
        if f.value.is_nan() || f.threshold.is_nan() {
            return Err(format!("finding '{}' has a NaN value or threshold", f.metric));
        }
        if f.sample_rows.len() > MAX_SAMPLE_ROWS {
            return Err(format!("finding '{}' has {} sample rows (at most {MAX_SAMPLE_ROWS})", f.metric, f.sample_rows.len()));
        }
        if let Some(&row) = f.sample_rows.iter().find(|&&r| r >= rows) {
            return Err(format!("finding '{}' names row {row} of a {rows}-row window", f.metric));
        }
        cut(&mut f.message, MAX_MESSAGE);
    }
    analysis.metrics.retain(|m| !m.value.is_nan() && !m.metric.is_empty());
    for m in &mut analysis.metrics {
        cut(&mut m.metric, MAX_NAME);
        if let Some(column) = &mut m.column {
            cut(column, MAX_NAME);
        }
    }
    Ok(())
}

pub(crate) fn plugin_finding(metric: &str, severity: Severity, message: String, value: f64, threshold: f64) -> Finding {
    Finding { metric: metric.into(), column: None, value, threshold, severity, message, sample_rows: Vec::new() }
}
