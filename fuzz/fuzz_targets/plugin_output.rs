//! Arbitrary plugin answers through the host's validation. No panic; an
//! answer it accepts keeps only cut names and messages, finite values and
//! sample rows inside the window.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use clean_host_core::bindings::{Analysis, Finding, MetricValue, Severity};
use clean_host_quality::analysis::{validate, MAX_FINDINGS, MAX_SAMPLE_ROWS};
use clean_host_runtime::MAX_NAME;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct RawFinding {
    metric: String,
    column: Option<String>,
    value: f64,
    threshold: f64,
    severity: u8,
    message: String,
    sample_rows: Vec<u32>,
}

#[derive(Debug, Arbitrary)]
struct Input {
    rows: u32,
    findings: Vec<RawFinding>,
    metrics: Vec<(String, Option<String>, f64)>,
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = Input::arbitrary(&mut Unstructured::new(data)) else { return };
    let severities = [Severity::Info, Severity::Warning, Severity::Critical];
    let findings = input
        .findings
        .into_iter()
        .map(|f| Finding {
            metric: f.metric,
            column: f.column,
            value: f.value,
            threshold: f.threshold,
            severity: severities[usize::from(f.severity) % 3],
            message: f.message,
            sample_rows: f.sample_rows,
        })
        .collect();
    let metrics = input.metrics.into_iter().map(|(metric, column, value)| MetricValue { metric, column, value }).collect();
    let mut analysis = Analysis { findings, metrics };
    if validate(&mut analysis, input.rows).is_ok() {
        assert!(analysis.findings.len() <= MAX_FINDINGS);
        for f in &analysis.findings {
            assert!(!f.metric.is_empty() && f.metric.len() <= MAX_NAME && f.column.as_ref().is_none_or(|c| c.len() <= MAX_NAME));
            assert!(!f.value.is_nan() && !f.threshold.is_nan() && f.message.len() <= 4096);
            assert!(f.sample_rows.len() <= MAX_SAMPLE_ROWS && f.sample_rows.iter().all(|&r| r < input.rows));
        }
        assert!(analysis.metrics.iter().all(|m| !m.value.is_nan() && m.metric.len() <= MAX_NAME));
    }
});
