//! One analysed window as the window log and the findings topic carry it:
//! its identity, score and what was found, without messages or samples.

use serde::Serialize;

use super::WindowRef;
use crate::analysis::{HostFinding, Score};
use clean_host_core::bindings::{Severity, WindowInfo};
use clean_host_stream::source::Position;

/// One analysed window, for the window log and the findings topic.
#[derive(Debug, Serialize)]
pub struct WindowSummary<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub pipeline: &'a str,
    #[serde(flatten)]
    pub window: WindowRef,
    pub score: f64,
    /// Lowest and highest score the data supports.
    pub score_interval: [f64; 2],
    pub alerts: usize,
    pub findings: Vec<FindingSummary<'a>>,
    /// What shadow versions of detectors found (never alerted).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shadow_findings: Vec<FindingSummary<'a>>,
}

#[derive(Debug, Serialize)]
pub struct FindingSummary<'a> {
    pub detector: &'a str,
    pub metric: &'a str,
    pub column: Option<&'a str>,
    pub value: f64,
    pub severity: Severity,
}

impl<'a> WindowSummary<'a> {
    pub fn new(pipeline: &'a str, info: &WindowInfo, positions: (&Position, &Position), score: &Score, findings: &'a [HostFinding], alerts: usize) -> Self {
        WindowSummary {
            kind: "window",
            pipeline,
            window: WindowRef::new(info, positions, score.rows),
            score: score.value,
            score_interval: [score.low, score.high],
            alerts,
            findings: findings.iter().map(FindingSummary::from).collect(),
            shadow_findings: Vec::new(),
        }
    }
}

impl<'a> From<&'a HostFinding> for FindingSummary<'a> {
    fn from(f: &'a HostFinding) -> Self {
        FindingSummary {
            detector: &f.detector,
            metric: &f.finding.metric,
            column: f.finding.column.as_deref(),
            value: f.finding.value,
            severity: f.finding.severity,
        }
    }
}
