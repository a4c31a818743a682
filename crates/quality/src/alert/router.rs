//! The router: which findings of a window become alerts (severity, per-metric
//! rules, confidence, cooldown, the window's quality alert) and the control
//! rules' signals across windows; see the parent module for the rules.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{Alert, AlertConfig, PriorAlert, ScoreBasis, WindowRef};
use crate::analysis::{is_sure, FindingOrigin, Score, WindowAnalysis};
use crate::spc::{format_value, SeriesName, Signal, Watch, WatchState};
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

/// Windows a key must be away before its next finding is a new departure.
/// A departure that comes back sooner is the same one flapping (a foggy
/// December's visibility: in, out for two windows, in again); separate
/// bursts a few windows apart still alert each (flights' cancellation days).
pub const REARM_WINDOWS: u64 = 3;

/// A key's cooldown, counted in routed windows of its partition.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// What decides a partition's alerts from one window to the next, as its
/// checkpoint keeps it: windows routed, cooldowns, the control rules' series.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouterState {
    windows: Vec<(u32, u64)>,
    cooldowns: Vec<(CooldownKey, Cooldown)>,
    watch: WatchState,
}

impl Router {
    pub fn max_dead_letter_rate(&self) -> f64 {
        self.config.max_dead_letter_rate
    }

    pub fn new(pipeline: &str, config: AlertConfig) -> Self {
        let watch = Watch::new(config.spc.clone());
        Router { config, pipeline: pipeline.to_string(), windows: HashMap::new(), cooldowns: HashMap::new(), suppressed: 0, unsure: 0, watch }
    }

    /// `partition`'s state as it stands, for its checkpoint.
    pub fn state(&self, partition: u32) -> RouterState {
        let windows = self.windows.get(&partition).map(|n| vec![(partition, *n)]).unwrap_or_default();
        let mut cooldowns: Vec<(CooldownKey, Cooldown)> =
            self.cooldowns.iter().filter(|(k, _)| k.0 == partition).map(|(k, c)| (k.clone(), c.clone())).collect();
        cooldowns.sort_by(|a, b| a.0.cmp(&b.0));
        RouterState { windows, cooldowns, watch: self.watch.state(partition) }
    }

    /// Carry `partition` on from its checkpointed state (the control rules
    /// under today's config), in place of what it had (series warmed from
    /// the history); the other partitions' state stays.
    pub fn resume(&mut self, partition: u32, state: RouterState) {
        self.forget(partition);
        self.windows.extend(state.windows.into_iter().filter(|(p, _)| *p == partition));
        self.cooldowns.extend(state.cooldowns.into_iter().filter(|(k, _)| k.0 == partition));
        self.watch.resume(partition, state.watch);
    }

    /// `partition` is read by another consumer now: its state goes.
    pub fn forget(&mut self, partition: u32) {
        self.windows.remove(&partition);
        self.cooldowns.retain(|k, _| k.0 != partition);
        self.watch.forget(partition);
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
            let name = SeriesName { partition, detector, metric, column: column.as_deref() };
            for signal in self.watch.observe_in(name, value, rows) {
                signals.push((detector.into(), metric.into(), column.clone(), value, signal));
            }
        }
        if let Some(score) = score {
            for signal in self.watch.observe(SeriesName { partition, detector: "host", metric: "quality_score", column: None }, score) {
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
