//! From findings to alerts: thresholds, severities, cooldown, and the
//! built-in outputs (human lines or JSON lines on stdout, a JSON-lines file).
//!
//! A finding becomes an alert when its severity reaches `min_severity`, any
//! per-metric rule agrees, and the same (pipeline, partition, detector,
//! metric, column) has not alerted in the last `cooldown_windows` windows of
//! that partition. A window whose
//! quality score falls below `quality_threshold` raises one more alert of its
//! own (metric `quality_score`).

pub mod handlers;
mod ledger;
mod output;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

pub use ledger::AlertLedger;
pub use output::Outputs;

use crate::analysis::{FindingOrigin, HostFinding};
use crate::runtime::bindings::{Severity, WindowInfo};
use crate::source::Position;

/// Severity as config and outputs spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warning,
    Critical,
}

impl From<Severity> for Level {
    fn from(s: Severity) -> Self {
        match s {
            Severity::Info => Level::Info,
            Severity::Warning => Level::Warning,
            Severity::Critical => Level::Critical,
        }
    }
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }
}

/// Overrides for one metric.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricRule {
    /// Alert only when the finding's value is above this.
    pub above: Option<f64>,
    /// Alert only when the finding's value is below this.
    pub below: Option<f64>,
    /// Severity to use instead of the detector's.
    pub severity: Option<Level>,
    /// Never alert on this metric (its findings still lower the score).
    pub mute: bool,
}

/// How findings become alerts.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertConfig {
    /// A window scoring below this raises a `quality_score` alert.
    pub quality_threshold: f64,
    /// Findings below this severity never alert.
    pub min_severity: Level,
    /// Windows during which the same detector, metric and column stay quiet after an alert.
    pub cooldown_windows: u64,
    /// Share of a window's lines that may be undecodable before the host reports it.
    pub max_dead_letter_rate: f64,
    /// Per-metric rules, by metric name.
    pub metrics: BTreeMap<String, MetricRule>,
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            quality_threshold: 0.8,
            min_severity: Level::Warning,
            cooldown_windows: 10,
            max_dead_letter_rate: 0.01,
            metrics: BTreeMap::new(),
        }
    }
}

impl AlertConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.quality_threshold) {
            return Err(format!("alerts.quality_threshold must be within 0..1, not {}", self.quality_threshold));
        }
        if !(0.0..=1.0).contains(&self.max_dead_letter_rate) {
            return Err(format!("alerts.max_dead_letter_rate must be within 0..1, not {}", self.max_dead_letter_rate));
        }
        Ok(())
    }
}

/// Which window an alert is about.
#[derive(Debug, Clone, Serialize)]
pub struct WindowRef {
    pub seq: u64,
    pub partition: u32,
    /// The broker's position (a number or an id string); for files, the line offset.
    pub first_offset: Position,
    pub last_offset: Position,
    pub records: u32,
    pub start_ms: i64,
    pub end_ms: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub pipeline: String,
    pub detector: String,
    pub metric: String,
    pub column: Option<String>,
    pub value: f64,
    pub threshold: f64,
    pub severity: Level,
    pub message: String,
    pub window: WindowRef,
    pub sample_rows: Vec<u32>,
    /// The window's quality score.
    pub score: f64,
}

/// Routes one pipeline's findings; keeps the cooldown state.
pub struct Router {
    config: AlertConfig,
    pipeline: String,
    /// Windows routed so far, per partition.
    windows: HashMap<u32, u64>,
    last_alert: HashMap<CooldownKey, u64>,
    pub suppressed: u64,
}

/// (partition, detector, metric, column)
type CooldownKey = (u32, String, String, Option<String>);

/// One analysed window, for the window log and the findings topic.
#[derive(Debug, Serialize)]
pub struct WindowSummary<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub pipeline: &'a str,
    pub partition: u32,
    pub seq: u64,
    pub first_offset: &'a Position,
    pub last_offset: &'a Position,
    pub records: u32,
    pub start_ms: i64,
    pub end_ms: i64,
    pub score: f64,
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
    pub severity: Level,
}

impl<'a> WindowSummary<'a> {
    pub fn new(
        pipeline: &'a str,
        info: &WindowInfo,
        (first, last): (&'a Position, &'a Position),
        records: u32,
        score: f64,
        findings: &'a [HostFinding],
        alerts: usize,
    ) -> Self {
        WindowSummary {
            kind: "window",
            pipeline,
            partition: info.partition,
            seq: info.seq,
            first_offset: first,
            last_offset: last,
            records,
            start_ms: info.start_ms,
            end_ms: info.end_ms,
            score,
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
            severity: f.finding.severity.into(),
        }
    }
}

impl Alert {
    /// The alert as the WIT contract hands it to alert-handler plugins.
    pub fn for_handlers(&self, window: &WindowInfo) -> crate::runtime::bindings::Alert {
        crate::runtime::bindings::Alert {
            pipeline: self.pipeline.clone(),
            detector: self.detector.clone(),
            metric: self.metric.clone(),
            column: self.column.clone(),
            value: self.value,
            threshold: self.threshold,
            severity: match self.severity {
                Level::Info => Severity::Info,
                Level::Warning => Severity::Warning,
                Level::Critical => Severity::Critical,
            },
            message: self.message.clone(),
            window: window.clone(),
            records: self.window.records,
        }
    }
}

impl Router {
    pub fn max_dead_letter_rate(&self) -> f64 {
        self.config.max_dead_letter_rate
    }

    pub fn new(pipeline: &str, config: AlertConfig) -> Self {
        Router { config, pipeline: pipeline.to_string(), windows: HashMap::new(), last_alert: HashMap::new(), suppressed: 0 }
    }

    fn cooled_down(&mut self, key: CooldownKey) -> bool {
        let now = self.windows.get(&key.0).copied().unwrap_or(0);
        match self.last_alert.get(&key) {
            Some(&last) if now - last < self.config.cooldown_windows => {
                self.suppressed += 1;
                false
            }
            _ => {
                self.last_alert.insert(key, now);
                true
            }
        }
    }

    /// The alerts for one analysed window.
    pub fn route(&mut self, info: &WindowInfo, (first, last): (&Position, &Position), records: u32, findings: &[HostFinding], score: f64) -> Vec<Alert> {
        let partition = info.partition;
        let window = WindowRef {
            seq: info.seq,
            partition,
            first_offset: first.clone(),
            last_offset: last.clone(),
            records,
            start_ms: info.start_ms,
            end_ms: info.end_ms,
        };
        let mut alerts = Vec::new();
        for f in findings {
            let finding = &f.finding;
            let rule = self.config.metrics.get(&finding.metric).cloned().unwrap_or_default();
            let severity = rule.severity.unwrap_or(finding.severity.into());
            let quarantine = f.origin == FindingOrigin::Quarantine;
            let wanted = quarantine
                || (severity >= self.config.min_severity
                    && !rule.mute
                    && rule.above.is_none_or(|a| finding.value > a)
                    && rule.below.is_none_or(|b| finding.value < b));
            if !wanted || !self.cooled_down((partition, f.detector.clone(), finding.metric.clone(), finding.column.clone())) {
                continue;
            }
            alerts.push(Alert {
                pipeline: self.pipeline.clone(),
                detector: f.detector.clone(),
                metric: finding.metric.clone(),
                column: finding.column.clone(),
                value: finding.value,
                threshold: rule.above.or(rule.below).unwrap_or(finding.threshold),
                severity,
                message: finding.message.clone(),
                window: window.clone(),
                sample_rows: finding.sample_rows.clone(),
                score,
            });
        }
        if score < self.config.quality_threshold && self.cooled_down((partition, "host".into(), "quality_score".into(), None)) {
            let worst: Vec<String> = findings
                .iter()
                .filter(|f| f.origin == FindingOrigin::Data)
                .map(|f| format!("{}/{}", f.detector, f.finding.metric))
                .collect();
            alerts.push(Alert {
                pipeline: self.pipeline.clone(),
                detector: "host".into(),
                metric: "quality_score".into(),
                column: None,
                value: score,
                threshold: self.config.quality_threshold,
                severity: if score < self.config.quality_threshold / 2.0 { Level::Critical } else { Level::Warning },
                message: format!("window quality {score:.2} is below {:.2} ({})", self.config.quality_threshold, worst.join(", ")),
                window,
                sample_rows: Vec::new(),
                score,
            });
        }
        *self.windows.entry(partition).or_default() += 1;
        alerts
    }
}
