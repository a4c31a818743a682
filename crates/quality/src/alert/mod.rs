//! From findings to alerts: thresholds, severities, confidence, cooldown and
//! incidents. Where the alerts then go is the host's (its `dispatch`).
//!
//! A finding becomes an alert when its severity reaches `min_severity`, any
//! per-metric rule agrees, it is sure (its rate's interval over the window's
//! rows lies past its threshold; unsure findings lower the score and stay in
//! the history, and alert only with `alert_low_confidence`), and the same
//! (pipeline, partition, detector, metric, column) is not in its cooldown:
//! after an alert, the key stays quiet while it keeps coming back, for at
//! most `cooldown_windows` windows of that partition; once it has been away
//! for [`REARM_WINDOWS`] windows, its next finding is a new departure and
//! alerts. Nor does the cooldown hide an escalation: a higher severity, or
//! a value at least twice as far past its threshold as the alert that
//! started the cooldown, alerts again. A window whose
//! quality score falls below `quality_threshold` raises one more alert of its
//! own (metric `quality_score`), unless every data finding behind it was
//! quieted (by the cooldown, or as unsure: it would repeat them), and by
//! default only when the whole interval of the score is below it, so a small
//! window's noise does not page anyone.
//!
//! One fault often trips several rules at once (an outlier burst: the
//! outlier rate, and EWMA and CUSUM on the column's mean). The alerts of one
//! window about one column are one incident ([`incidents`]); so are a window's alerts
//! about no column. Outputs and the history keep every alert; alert handlers
//! get one per incident.
//!
//! Across windows, the control rules of [`crate::spc`] watch the metrics and
//! the score; a rule that fires raises an alert that names it (`rule`).

mod router;
mod summary;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spc::{format_value, SpcConfig};
use clean_host_core::bindings::{Severity, WindowInfo};
use clean_host_stream::source::Position;

pub use router::{PastWindow, Router, RouterState, REARM_WINDOWS};
pub use summary::{FindingSummary, WindowSummary};

/// Overrides for one metric.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricRule {
    /// Alert only when the finding's value is above this.
    pub above: Option<f64>,
    /// Alert only when the finding's value is below this.
    pub below: Option<f64>,
    /// Severity to use instead of the detector's.
    pub severity: Option<Severity>,
    /// Never alert on this metric (its findings still lower the score).
    pub mute: bool,
}

/// How findings become alerts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertConfig {
    /// A window scoring below this raises a `quality_score` alert.
    pub quality_threshold: f64,
    /// Findings below this severity never alert.
    pub min_severity: Severity,
    /// Windows during which the same detector, metric and column stay quiet after an alert.
    pub cooldown_windows: u64,
    /// Share of a window's lines that may be undecodable before the host reports it.
    pub max_dead_letter_rate: f64,
    /// Per-metric rules, by metric name.
    pub metrics: BTreeMap<String, MetricRule>,
    /// Windows with fewer rows give low-confidence findings that are not
    /// rates (a rate is judged by its interval instead); default 20.
    pub min_rows: u32,
    /// What `quality_threshold` is compared with: `interval` (the score's upper bound) or `point`.
    pub score_basis: ScoreBasis,
    /// Control rules across windows (`[alerts.spc]`).
    pub spc: SpcConfig,
    /// Also alert on findings that are not sure (their interval crosses the
    /// threshold); by default they only lower the score.
    pub alert_low_confidence: bool,
}

/// Which score a window's quality alert is judged on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreBasis {
    /// Alert only when even the score's upper bound is below the threshold.
    Interval,
    /// Alert when the point estimate is below the threshold.
    Point,
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            quality_threshold: 0.8,
            min_severity: Severity::Warning,
            cooldown_windows: 10,
            max_dead_letter_rate: 0.01,
            metrics: BTreeMap::new(),
            min_rows: 20,
            score_basis: ScoreBasis::Interval,
            spc: SpcConfig::default(),
            alert_low_confidence: false,
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
        self.spc.validate()
    }
}

/// Which window: the one identity of an analysed window that alerts, the
/// window log, the history and the API all carry.
#[derive(Debug, Clone, PartialEq, Serialize)]
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

impl WindowRef {
    /// Window `info`, from `first` to `last`, of `records` records.
    pub fn new(info: &WindowInfo, (first, last): (&Position, &Position), records: u32) -> Self {
        WindowRef {
            seq: info.seq,
            partition: info.partition,
            first_offset: first.clone(),
            last_offset: last.clone(),
            records,
            start_ms: info.start_ms,
            end_ms: info.end_ms,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub pipeline: String,
    pub detector: String,
    pub metric: String,
    pub column: Option<String>,
    pub value: f64,
    pub threshold: f64,
    pub severity: Severity,
    pub message: String,
    pub window: WindowRef,
    pub sample_rows: Vec<u32>,
    /// The window's quality score.
    pub score: f64,
    /// The score's interval (lowest and highest the data supports).
    pub score_interval: [f64; 2],
    /// The finding rests on too little data to be sure of (see the message).
    pub low_confidence: bool,
    /// The control rule that fired, for alerts about a metric across windows
    /// (then `value` is the rule's statistic and `threshold` its limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<&'static str>,
    /// It came during a cooldown because it got worse: the alert it escalated from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escalated_from: Option<PriorAlert>,
}

/// An alert a key raised: the one that started its cooldown, and what a
/// worse one, escalating, names.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PriorAlert {
    pub severity: Severity,
    pub value: f64,
    pub threshold: f64,
    /// Its window's `seq`.
    pub window: u64,
}

impl PriorAlert {
    /// Whether an alert of `severity`, `value` past `threshold` is worse
    /// than this one: more severe, or twice as far past its threshold.
    fn worse(&self, severity: Severity, value: f64, threshold: f64) -> bool {
        let excess = self.value - self.threshold;
        let now = value - threshold;
        severity > self.severity || (excess != 0.0 && now.signum() == excess.signum() && now.abs() >= 2.0 * excess.abs())
    }
}

/// The incidents among one window's alerts, as lists of indices into
/// `alerts`: one per column, one for the alerts about no column, in the order
/// they first appear. The window's `quality_score` alert, which only sums the
/// others up, joins the first incident when there is another.
pub fn incidents(alerts: &[Alert]) -> Vec<Vec<usize>> {
    let summary = |a: &Alert| a.detector == "host" && a.metric == "quality_score" && a.rule.is_none();
    let mut groups: Vec<(Option<&str>, Vec<usize>)> = Vec::new();
    for (i, a) in alerts.iter().enumerate().filter(|(_, a)| !summary(a)) {
        let column = a.column.as_deref();
        match groups.iter_mut().find(|(c, _)| *c == column) {
            Some((_, members)) => members.push(i),
            None => groups.push((column, vec![i])),
        }
    }
    for (i, _) in alerts.iter().enumerate().filter(|(_, a)| summary(a)) {
        match groups.first_mut() {
            Some((_, members)) => members.push(i),
            None => groups.push((None, vec![i])),
        }
    }
    groups.into_iter().map(|(_, members)| members).collect()
}

impl Alert {
    /// One incident (`members`, indices into `alerts`) as one alert for the
    /// handlers: its most severe alert, whose message also names the others.
    pub fn incident(alerts: &[Alert], members: &[usize], window: &WindowInfo) -> clean_host_core::bindings::Alert {
        let lead = *members.iter().max_by_key(|&&i| (alerts[i].severity, std::cmp::Reverse(i))).expect("an incident has an alert");
        let mut handed = alerts[lead].for_handlers(window);
        let others: Vec<String> = members
            .iter()
            .filter(|&&i| i != lead)
            .map(|&i| {
                let a = &alerts[i];
                let rule = a.rule.map(|r| format!(" ({r})")).unwrap_or_default();
                format!("{}/{}{rule} {} ({})", a.detector, a.metric, format_value(a.value), a.severity.as_str())
            })
            .collect();
        if !others.is_empty() {
            handed.message += &format!("; with it in this window: {}", others.join(", "));
        }
        handed
    }

    /// The alert as the WIT contract hands it to alert-handler plugins.
    pub fn for_handlers(&self, window: &WindowInfo) -> clean_host_core::bindings::Alert {
        clean_host_core::bindings::Alert {
            pipeline: self.pipeline.clone(),
            detector: self.detector.clone(),
            metric: self.metric.clone(),
            column: self.column.clone(),
            value: self.value,
            threshold: self.threshold,
            severity: self.severity,
            message: self.message.clone(),
            window: window.clone(),
            records: self.window.records,
        }
    }
}
