//! A window's quality score, and how sure it is.
//!
//! The score is the product of `1 - penalty` over the window's data findings
//! (warning 0.1, critical 0.3; plugin faults do not count). A finding on 40
//! rows says less than one on 40,000, so each finding is also judged for
//! confidence: a rate (a metric named `*_rate`, a share of the window's rows)
//! gets a 95% Wilson interval, and the finding is sure only when that whole
//! interval is past its threshold. Any other finding is sure when the window
//! has at least `min_rows` rows. The score's interval runs from the point
//! estimate (every finding real) to the score of the sure findings alone.

use serde::Serialize;

use super::{FindingOrigin, HostFinding};
use clean_host_core::bindings::{Finding, Severity};

/// z for a two-sided 95% interval.
const Z95: f64 = 1.959_964;

/// Penalty of one data finding in the quality score.
fn penalty(severity: Severity) -> f64 {
    match severity {
        Severity::Info => 0.0,
        Severity::Warning => 0.1,
        Severity::Critical => 0.3,
    }
}

/// The Wilson score interval of a proportion `rate` observed over `n` trials.
pub fn wilson(rate: f64, n: u32, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let n = f64::from(n);
    let p = rate.clamp(0.0, 1.0);
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Whether the data behind `finding` (over `rows` rows) is enough to be sure of it.
pub fn is_sure(finding: &Finding, rows: u32, min_rows: u32) -> bool {
    let rate = finding.metric.ends_with("_rate") && (0.0..=1.0).contains(&finding.value);
    if !rate {
        return rows >= min_rows;
    }
    let (low, high) = wilson(finding.value, rows, Z95);
    if finding.value >= finding.threshold {
        low > finding.threshold
    } else {
        high < finding.threshold
    }
}

/// A window's quality score with its interval and sample size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Score {
    /// Every data finding counted.
    pub value: f64,
    /// The lowest score the data supports (every finding real): `value`.
    pub low: f64,
    /// The highest: only the findings the data is sure of.
    pub high: f64,
    /// Rows the score rests on.
    pub rows: u32,
}

impl Score {
    /// How an alert or a log line says that some finding rests on too
    /// little data to be sure of.
    pub fn caveat(&self) -> String {
        format!("low confidence: {} rows, score between {:.2} and {:.2}", self.rows, self.low, self.high)
    }
}

/// The quality score of a window of `rows` rows with these findings.
pub fn quality_score(findings: &[HostFinding], rows: u32, min_rows: u32) -> Score {
    let (mut value, mut high) = (1.0, 1.0);
    for f in findings.iter().filter(|f| f.origin == FindingOrigin::Data) {
        let keep = 1.0 - penalty(f.finding.severity);
        value *= keep;
        if is_sure(&f.finding, rows, min_rows) {
            high *= keep;
        }
    }
    Score { value, low: value, high, rows }
}
