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

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::analysis::{is_sure, FindingOrigin, HostFinding, Score, WindowAnalysis};
use crate::spc::{format_value, Signal, SpcConfig, Watch};
use clean_host_core::bindings::{Severity, WindowInfo};
use clean_host_stream::source::Position;

/// What the control rules need of a window analysed before a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct PastWindow {
    pub partition: u32,
    pub score: f64,
    /// The top of the score's interval (the score, for windows written before intervals were kept).
    pub score_high: f64,
    /// (detector, metric, column, value) of every metric value.
    pub metrics: Vec<(String, String, Option<String>, f64)>,
    /// (detector, metric, column) of every finding (shadow findings aside).
    pub flagged: Vec<(String, String, Option<String>)>,
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
    pub severity: Option<Severity>,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
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

/// Windows a key must be away before its next finding is a new departure.
/// A departure that comes back sooner is the same one flapping (a foggy
/// December's visibility: in, out for two windows, in again); separate
/// bursts a few windows apart still alert each (flights' cancellation days).
pub const REARM_WINDOWS: u64 = 3;

/// A key's cooldown, counted in routed windows of its partition.
struct Cooldown {
    /// The count at its last alert.
    alerted: u64,
    /// The alert that started it.
    started_by: PriorAlert,
    /// The count when the key was last seen.
    seen: u64,
}

/// What the cooldown says about an alert.
enum Gate {
    Send,
    Escalated(PriorAlert),
    Quiet,
}

/// Routes one pipeline's findings; keeps the cooldown state.
pub struct Router {
    config: AlertConfig,
    pipeline: String,
    /// Windows routed so far, per partition.
    windows: HashMap<u32, u64>,
    /// Per key: its cooldown.
    cooldowns: HashMap<CooldownKey, Cooldown>,
    /// Alerts the cooldown held back.
    pub suppressed: u64,
    /// Unsure findings (interval across the threshold) not alerted.
    pub unsure: u64,
    watch: Watch,
}

/// (partition, detector, metric or metric/rule, column)
type CooldownKey = (u32, String, String, Option<String>);

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

impl Router {
    pub fn max_dead_letter_rate(&self) -> f64 {
        self.config.max_dead_letter_rate
    }

    pub fn new(pipeline: &str, config: AlertConfig) -> Self {
        let watch = Watch::new(config.spc.clone());
        Router { config, pipeline: pipeline.to_string(), windows: HashMap::new(), cooldowns: HashMap::new(), suppressed: 0, unsure: 0, watch }
    }

    /// Metric series the control rules watch now.
    pub fn watched_series(&self) -> usize {
        self.watch.watching()
    }

    /// The minimum rows for findings to be sure of (`alerts.min_rows`).
    pub fn min_rows(&self) -> u32 {
        self.config.min_rows
    }

    /// Whether an alert for `key` (of `severity`, `value` against
    /// `threshold`, in window `seq`) goes out: outside its cooldown, or worse
    /// than the alert that started it (which then starts a new one).
    fn gate(&mut self, key: CooldownKey, severity: Severity, (value, threshold): (f64, f64), seq: u64) -> Gate {
        let now = self.windows.get(&key.0).copied().unwrap_or(0);
        let this = PriorAlert { severity, value, threshold, window: seq };
        let gate = match self.cooldowns.get_mut(&key) {
            Some(c) if now - c.alerted < self.config.cooldown_windows && now - c.seen <= REARM_WINDOWS => {
                c.seen = now;
                if !c.started_by.worse(severity, value, threshold) {
                    self.suppressed += 1;
                    return Gate::Quiet;
                }
                Gate::Escalated(c.started_by)
            }
            _ => Gate::Send,
        };
        self.cooldowns.insert(key, Cooldown { alerted: now, started_by: this, seen: now });
        gate
    }

    /// The alerts for one analysed window.
    pub fn route(&mut self, info: &WindowInfo, (first, last): (&Position, &Position), analysis: &WindowAnalysis, score: &Score) -> Vec<Alert> {
        let partition = info.partition;
        let window = WindowRef::new(info, (first, last), score.rows);
        let pipeline = self.pipeline.clone();
        let alert = |detector: &str, metric: &str, column: Option<&String>, severity: Severity| Alert {
            pipeline: pipeline.clone(),
            detector: detector.into(),
            metric: metric.into(),
            column: column.cloned(),
            value: 0.0,
            threshold: 0.0,
            severity,
            message: String::new(),
            window: window.clone(),
            sample_rows: Vec::new(),
            score: score.value,
            score_interval: [score.low, score.high],
            low_confidence: false,
            rule: None,
            escalated_from: None,
        };
        let mut alerts = Vec::new();
        // A data finding not quieted by the cooldown or as unsure: news about the window.
        let mut news = false;
        for f in &analysis.findings {
            let finding = &f.finding;
            let rule = self.config.metrics.get(&finding.metric).cloned().unwrap_or_default();
            let severity = rule.severity.unwrap_or(finding.severity);
            let quarantine = f.origin == FindingOrigin::Quarantine;
            let wanted = quarantine
                || (severity >= self.config.min_severity
                    && !rule.mute
                    && rule.above.is_none_or(|a| finding.value > a)
                    && rule.below.is_none_or(|b| finding.value < b));
            if !wanted {
                news |= f.origin == FindingOrigin::Data;
                continue;
            }
            let low_confidence = f.origin == FindingOrigin::Data && !is_sure(finding, score.rows, self.config.min_rows);
            if low_confidence && !self.config.alert_low_confidence {
                self.unsure += 1;
                continue;
            }
            let threshold = rule.above.or(rule.below).unwrap_or(finding.threshold);
            let key = (partition, f.detector.clone(), finding.metric.clone(), finding.column.clone());
            let escalated_from = match self.gate(key, severity, (finding.value, threshold), info.seq) {
                Gate::Quiet => continue,
                Gate::Send => None,
                Gate::Escalated(from) => Some(from),
            };
            let mut message = finding.message.clone();
            if low_confidence {
                message += &format!(" ({})", score.caveat());
            }
            if let Some(from) = &escalated_from {
                message += &format!(" (escalated from {} {} in window {})", from.severity.as_str(), format_value(from.value), from.window);
            }
            news |= f.origin == FindingOrigin::Data;
            alerts.push(Alert {
                value: finding.value,
                threshold,
                message,
                sample_rows: finding.sample_rows.clone(),
                low_confidence,
                escalated_from,
                ..alert(&f.detector, &finding.metric, finding.column.as_ref(), severity)
            });
        }
        let threshold = self.config.quality_threshold;
        let quality_alert = self.below_threshold(score.value, score.high);
        // The score's interval reaches the threshold: not sure it is below.
        let unsure_quality = score.high >= threshold;
        if !news {
            // Only findings the cooldown quieted or unsure ones: nothing new to say.
        } else if quality_alert && unsure_quality && !self.config.alert_low_confidence {
            self.unsure += 1;
        } else if quality_alert {
            let severity = if score.value < threshold / 2.0 { Severity::Critical } else { Severity::Warning };
            let gate = self.gate((partition, "host".into(), "quality_score".into(), None), severity, (score.value, threshold), info.seq);
            if let Gate::Send | Gate::Escalated(_) = gate {
                let worst: Vec<String> =
                    analysis.findings.iter().filter(|f| f.origin == FindingOrigin::Data).map(|f| format!("{}/{}", f.detector, f.finding.metric)).collect();
                let mut message = format!("window quality {:.2} is below {threshold:.2} ({})", score.value, worst.join(", "));
                if unsure_quality {
                    message += &format!(" ({})", score.caveat());
                }
                let escalated_from = match gate {
                    Gate::Escalated(from) => Some(from),
                    _ => None,
                };
                if let Some(from) = &escalated_from {
                    message += &format!(" (escalated from {} in window {})", format_value(from.value), from.window);
                }
                alerts.push(Alert {
                    value: score.value,
                    threshold,
                    message,
                    low_confidence: unsure_quality,
                    escalated_from,
                    ..alert("host", "quality_score", None, severity)
                });
            }
        }

        let metrics = analysis.metrics.iter().map(|(d, m)| (d.as_str(), m.metric.as_str(), &m.column, m.value));
        let flagged = |detector: &str, metric: &str, column: &Option<String>| {
            analysis.findings.iter().any(|f| f.detector == detector && f.finding.metric == metric && &f.finding.column == column)
        };
        let signals = self.watch_window(partition, metrics, flagged, (!quality_alert).then_some(score.value), Some(score.rows));
        for (detector, metric, column, value, signal) in signals {
            let key = (partition, detector.clone(), format!("{metric}/{}", signal.rule.as_str()), column.clone());
            if signal.severity < self.config.min_severity {
                continue;
            }
            let escalated_from = match self.gate(key, signal.severity, (signal.statistic, signal.limit), info.seq) {
                Gate::Quiet => continue,
                Gate::Send => None,
                Gate::Escalated(from) => Some(from),
            };
            let about = match &column {
                Some(c) => format!("{metric} of {c}"),
                None => metric.clone(),
            };
            alerts.push(Alert {
                value: signal.statistic,
                threshold: signal.limit,
                message: format!(
                    "{about} is {}, drifting from its usual {} (sigma {}): {} [{}]",
                    format_value(value),
                    format_value(signal.mean),
                    format_value(signal.sigma),
                    signal.detail,
                    signal.rule.as_str()
                ),
                rule: Some(signal.rule.as_str()),
                escalated_from,
                ..alert(&detector, &metric, column.as_ref(), signal.severity)
            });
        }
        *self.windows.entry(partition).or_default() += 1;
        alerts
    }

    /// Whether a score (`value`, up to `high`) is below `quality_threshold`, by `score_basis`.
    fn below_threshold(&self, value: f64, high: f64) -> bool {
        let judged = match self.config.score_basis {
            ScoreBasis::Interval => high,
            ScoreBasis::Point => value,
        };
        judged < self.config.quality_threshold
    }

    /// Across windows: each metric value joins its series, unless its own
    /// detector flagged it in this window (then it has alerted already); so
    /// does the score, unless it raised its own alert. The rules that fired.
    fn watch_window<'a>(
        &mut self,
        partition: u32,
        metrics: impl Iterator<Item = (&'a str, &'a str, &'a Option<String>, f64)>,
        flagged: impl Fn(&str, &str, &Option<String>) -> bool,
        score: Option<f64>,
        rows: Option<u32>,
    ) -> Vec<(String, String, Option<String>, f64, Signal)> {
        let mut signals = Vec::new();
        for (detector, metric, column, value) in metrics {
            if flagged(detector, metric, column) {
                continue;
            }
            for signal in self.watch.observe_in((partition, detector.into(), metric.into(), column.clone()), value, rows) {
                signals.push((detector.into(), metric.into(), column.clone(), value, signal));
            }
        }
        if let Some(score) = score {
            for signal in self.watch.observe((partition, "host".into(), "quality_score".into(), None), score) {
                signals.push(("host".into(), "quality_score".into(), None, score, signal));
            }
        }
        signals
    }

    /// How many past windows [`Router::warm`] wants: two warm-ups' worth.
    pub fn warm_windows(&self) -> u32 {
        if self.config.spc.enabled {
            2 * self.config.spc.warmup_windows
        } else {
            0
        }
    }

    /// Feed the control rules the windows analysed before a restart (oldest
    /// first), so they need not learn their baselines again. Nothing alerts.
    pub fn warm(&mut self, past: &[PastWindow]) {
        for w in past {
            let metrics = w.metrics.iter().map(|(d, m, c, v)| (d.as_str(), m.as_str(), c, *v));
            let flagged = |d: &str, m: &str, c: &Option<String>| w.flagged.iter().any(|f| f.0 == d && f.1 == m && &f.2 == c);
            let quality_alert = self.below_threshold(w.score, w.score_high);
            self.watch_window(w.partition, metrics, flagged, (!quality_alert).then_some(w.score), None);
        }
    }
}
