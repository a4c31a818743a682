//! Running a pipeline's detectors on a closed window.
//!
//! Each detector instance sits behind its own lock and the calls of one
//! window run in parallel. A call that faults becomes a `plugin_error`
//! finding; a trap also throws the instance away, and the next call rebuilds
//! it from the last snapshot of its state. After `max_failures` faults in a
//! row the plugin is quarantined and a `plugin_quarantined` finding (always
//! alerted) says so. The other detectors' results for the window still count.

#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::Serialize;

use crate::runtime::bindings::{Analysis, Batch, Finding, MetricValue, Severity};
use crate::runtime::PluginFault;

/// One configured detector instance, whatever runs it.
pub trait Analyzer: Send {
    fn analyze(&mut self, batch: &Batch) -> Result<Analysis, PluginFault>;
    fn snapshot(&mut self) -> Result<Vec<u8>, PluginFault>;
    fn restore(&mut self, state: &[u8]) -> Result<(), PluginFault>;
}

/// Makes instances of one detector: a wasm plugin, or native code for the benchmark.
pub trait DetectorSource: Send + Sync {
    fn name(&self) -> &str;
    fn version(&self) -> &str;
    /// A fresh instance, configured with `config` (JSON).
    fn instantiate(&self, config: &str) -> Result<Box<dyn Analyzer>, PluginFault>;
}

/// Most findings one call may return.
pub const MAX_FINDINGS: usize = 1000;
/// Most metric values one call may return.
pub const MAX_METRICS: usize = 10_000;
/// Most sample rows per finding (the WIT contract's bound).
pub const MAX_SAMPLE_ROWS: usize = 20;
/// Longest finding message kept, in bytes.
const MAX_MESSAGE: usize = 4096;
/// Successful calls between two snapshots of a detector's state...
const SNAPSHOT_EVERY: u32 = 50;
/// ...and at least this much time, so a large state is not copied on every window.
const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);
/// Call durations kept per plugin for the percentiles.
const TIMING_SAMPLES: usize = 1024;

/// Where a finding comes from: the data, or the host about a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingOrigin {
    Data,
    PluginError,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Active,
    Quarantined,
}

/// A plugin's counters, as the summary reports them.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStats {
    pub name: String,
    pub version: String,
    pub status: Status,
    pub calls: u64,
    pub errors: u64,
    pub rebuilds: u64,
    pub call_p50_us: u32,
    pub call_p99_us: u32,
}

struct Slot {
    source: Arc<dyn DetectorSource>,
    config: String,
    instance: Option<Box<dyn Analyzer>>,
    snapshot: Option<Vec<u8>>,
    since_snapshot: u32,
    snapshot_at: Instant,
    status: Status,
    failures_in_row: u32,
    calls: u64,
    errors: u64,
    rebuilds: u64,
    timings_us: Vec<u32>,
}

/// The detector instances of one pipeline.
pub struct Detectors {
    slots: Vec<Mutex<Slot>>,
    max_failures: u32,
}

/// Penalty of one data finding in the quality score.
fn penalty(severity: Severity) -> f64 {
    match severity {
        Severity::Info => 0.0,
        Severity::Warning => 0.1,
        Severity::Critical => 0.3,
    }
}

/// The window's quality score: the product of `1 - penalty` over its data
/// findings (warning 0.1, critical 0.3; plugin faults do not count), so 1.0
/// is a clean window, one critical finding gives 0.7 and one warning 0.9.
pub fn quality_score(findings: &[HostFinding]) -> f64 {
    findings
        .iter()
        .filter(|f| f.origin == FindingOrigin::Data)
        .map(|f| 1.0 - penalty(f.finding.severity))
        .product()
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

/// Check a plugin's answer against the batch it was given; trim long messages.
pub fn validate(analysis: &mut Analysis, rows: u32) -> Result<(), String> {
    if analysis.findings.len() > MAX_FINDINGS {
        return Err(format!("{} findings (at most {MAX_FINDINGS})", analysis.findings.len()));
    }
    if analysis.metrics.len() > MAX_METRICS {
        return Err(format!("{} metric values (at most {MAX_METRICS})", analysis.metrics.len()));
    }
    for f in &mut analysis.findings {
        if f.metric.is_empty() || f.metric.len() > 128 {
            return Err(format!("a finding's metric name is empty or too long ({} bytes)", f.metric.len()));
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
        if f.message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !f.message.is_char_boundary(cut) {
                cut -= 1;
            }
            f.message.truncate(cut);
        }
    }
    analysis.metrics.retain(|m| !m.value.is_nan());
    Ok(())
}

fn plugin_finding(metric: &str, severity: Severity, message: String, value: f64, threshold: f64) -> Finding {
    Finding { metric: metric.into(), column: None, value, threshold, severity, message, sample_rows: Vec::new() }
}

impl Slot {
    fn instance(&mut self) -> Result<&mut Box<dyn Analyzer>, PluginFault> {
        if self.instance.is_none() {
            let mut fresh = self.source.instantiate(&self.config)?;
            if let Some(state) = &self.snapshot {
                fresh.restore(state)?;
            }
            self.instance = Some(fresh);
        }
        Ok(self.instance.as_mut().expect("just set"))
    }

    fn try_analyze(&mut self, batch: &Batch) -> Result<Analysis, PluginFault> {
        let mut analysis = self.instance()?.analyze(batch)?;
        validate(&mut analysis, batch.row_count).map_err(PluginFault::InvalidOutput)?;
        self.since_snapshot += 1;
        if self.since_snapshot >= SNAPSHOT_EVERY && self.snapshot_at.elapsed() >= SNAPSHOT_INTERVAL {
            self.snapshot = Some(self.instance()?.snapshot()?);
            self.since_snapshot = 0;
            self.snapshot_at = Instant::now();
        }
        Ok(analysis)
    }

    fn analyze(&mut self, batch: &Batch, max_failures: u32) -> (Vec<HostFinding>, Vec<MetricValue>) {
        if self.status == Status::Quarantined {
            return (Vec::new(), Vec::new());
        }
        let started = Instant::now();
        let result = self.try_analyze(batch);
        let micros = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
        if self.timings_us.len() < TIMING_SAMPLES {
            self.timings_us.push(micros);
        } else {
            self.timings_us[(self.calls as usize) % TIMING_SAMPLES] = micros;
        }
        self.calls += 1;
        let name = self.source.name().to_string();
        match result {
            Ok(analysis) => {
                self.failures_in_row = 0;
                let findings = analysis
                    .findings
                    .into_iter()
                    .map(|finding| HostFinding { detector: name.clone(), origin: FindingOrigin::Data, finding })
                    .collect();
                (findings, analysis.metrics)
            }
            Err(fault) => {
                self.errors += 1;
                self.failures_in_row += 1;
                if fault.needs_rebuild() && self.instance.take().is_some() {
                    self.rebuilds += 1;
                }
                let mut findings = vec![HostFinding {
                    detector: name.clone(),
                    origin: FindingOrigin::PluginError,
                    finding: plugin_finding(
                        "plugin_error",
                        Severity::Warning,
                        format!("plugin {name} {fault}"),
                        self.failures_in_row as f64,
                        max_failures as f64,
                    ),
                }];
                if self.failures_in_row >= max_failures {
                    self.status = Status::Quarantined;
                    self.instance = None;
                    findings.push(HostFinding {
                        detector: name.clone(),
                        origin: FindingOrigin::Quarantine,
                        finding: plugin_finding(
                            "plugin_quarantined",
                            Severity::Critical,
                            format!("plugin {name} quarantined after {max_failures} failed calls in a row; last: {fault}"),
                            self.failures_in_row as f64,
                            max_failures as f64,
                        ),
                    });
                }
                (findings, Vec::new())
            }
        }
    }

    fn stats(&self) -> PluginStats {
        let mut t = self.timings_us.clone();
        t.sort_unstable();
        let pct = |q: f64| t.get(((t.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0);
        PluginStats {
            name: self.source.name().to_string(),
            version: self.source.version().to_string(),
            status: self.status,
            calls: self.calls,
            errors: self.errors,
            rebuilds: self.rebuilds,
            call_p50_us: pct(0.5),
            call_p99_us: pct(0.99),
        }
    }
}

impl Detectors {
    /// One instance per plugin, each configured with its JSON config. A plugin
    /// that rejects its config is an error naming it.
    pub fn new(sources: Vec<(Arc<dyn DetectorSource>, String)>, max_failures: u32) -> Result<Self, String> {
        let mut slots = Vec::new();
        for (source, config) in sources {
            let instance = source.instantiate(&config).map_err(|f| format!("plugin {}: {f}", source.name()))?;
            slots.push(Mutex::new(Slot {
                source,
                config,
                instance: Some(instance),
                snapshot: None,
                since_snapshot: 0,
                snapshot_at: Instant::now(),
                status: Status::Active,
                failures_in_row: 0,
                calls: 0,
                errors: 0,
                rebuilds: 0,
                timings_us: Vec::new(),
            }));
        }
        Ok(Detectors { slots, max_failures: max_failures.max(1) })
    }

    pub fn analyze(&self, batch: &Batch) -> WindowAnalysis {
        let results: Vec<(Vec<HostFinding>, Vec<MetricValue>, String)> = self
            .slots
            .par_iter()
            .map(|slot| {
                let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
                let (f, m) = slot.analyze(batch, self.max_failures);
                (f, m, slot.source.name().to_string())
            })
            .collect();
        let mut out = WindowAnalysis::default();
        for (findings, metrics, name) in results {
            out.findings.extend(findings);
            out.metrics.extend(metrics.into_iter().map(|m| (name.clone(), m)));
        }
        out
    }

    pub fn stats(&self) -> Vec<PluginStats> {
        self.slots.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).stats()).collect()
    }
}
