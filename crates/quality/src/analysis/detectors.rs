//! A pipeline's detectors: running them on a window, and following the
//! tenant's [`Catalog`] as plugins change.
//!
//! Each detector runs under the plugin lifecycle of the runtime
//! ([`Lifecycle`]: rebuild after a trap, quarantine, swap with state,
//! probation and rollback, shadow), behind its own lock, and the calls of
//! one window run in parallel. What this module adds is what a detector's
//! faults mean for a window: a call that faults becomes a `plugin_error`
//! finding, a quarantine a `plugin_quarantined` one and a rollback a
//! `plugin_rolled_back` one (both always alerted; a rollback also rolls the
//! tenant's catalog back for its other pipelines). The other detectors'
//! results for the window still count.
//!
//! Changes to the catalog are applied on the analysis thread between two
//! windows, so every window is analysed by exactly one version of each
//! detector. A shadow version sees every window the active one sees; its
//! findings are kept apart, never alerted, and compared with the active
//! version's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rayon::prelude::*;

use super::{plugin_finding, validate, Candidate, Catalog, CatalogEntry, FindingOrigin, HostFinding, WindowAnalysis};
use clean_host_core::bindings::{Analysis, Finding, MetricValue, Severity};
use clean_host_runtime::events::plugin_event;
use clean_host_runtime::lifecycle::{AfterFault, Build, Fault, Lifecycle, Owner};
use clean_host_runtime::{Analyzer, PluginFault, PluginStats, Window};
use tracing::Level;

/// The threads one tenant's detector calls run on. Each tenant has its own:
/// a plugin that holds a thread until its deadline (a sleep, a spin) slows
/// its own tenant only. They are apart from rayon's global pool, where
/// wasmtime compiles reloaded plugins, so a window never waits behind that.
pub fn tenant_call_pool(tenant: &str) -> Arc<rayon::ThreadPool> {
    let tenant = tenant.to_string();
    let pool = rayon::ThreadPoolBuilder::new().thread_name(move |i| format!("{tenant}-detectors-{i}")).build();
    Arc::new(pool.expect("start a detector thread pool"))
}

/// Which detectors of a tenant's catalog a pipeline runs, and with what config.
pub struct DetectorSet {
    pub catalog: Arc<Catalog>,
    /// The tenant's threads for detector calls.
    pub pool: Arc<rayon::ThreadPool>,
    /// Names to run (`None`: every detector of the catalog, also ones added later).
    pub selection: Option<Vec<String>>,
    /// The pipeline's config per detector; without one, the manifest's default applies.
    pub configs: BTreeMap<String, toml::Table>,
}

impl DetectorSet {
    fn wants(&self, name: &str) -> bool {
        self.selection.as_ref().is_none_or(|names| names.iter().any(|n| n == name))
    }

    /// The JSON handed to `configure()`.
    fn config_json(&self, name: &str, candidate: &Candidate) -> String {
        let table = self.configs.get(name).or(candidate.default_config.as_ref());
        table.map_or_else(|| "{}".to_string(), |t| serde_json::to_string(t).unwrap_or_else(|_| "{}".into()))
    }
}

/// What one detector said about one window.
#[derive(Default)]
struct DetectorResult {
    findings: Vec<HostFinding>,
    metrics: Vec<MetricValue>,
    shadow_findings: Vec<HostFinding>,
}

/// The findings of a window that two versions are compared on.
fn finding_keys(analysis: &Analysis) -> BTreeSet<(String, Option<String>, u8)> {
    analysis.findings.iter().map(|f| (f.metric.clone(), f.column.clone(), f.severity as u8)).collect()
}

fn host_finding(detector: &str, origin: FindingOrigin, metric: &str, severity: Severity, message: String, value: f64, threshold: f64) -> HostFinding {
    HostFinding { detector: detector.to_string(), origin, finding: plugin_finding(metric, severity, message, value, threshold) }
}

/// A detector's findings about the data.
fn data_findings(detector: &str, findings: Vec<Finding>) -> impl Iterator<Item = HostFinding> + '_ {
    findings.into_iter().map(move |finding| HostFinding { detector: detector.to_string(), origin: FindingOrigin::Data, finding })
}

fn push_answer(detector: &str, analysis: Analysis, into: &mut DetectorResult) {
    into.findings.extend(data_findings(detector, analysis.findings));
    into.metrics.extend(analysis.metrics);
}

/// One detector on one window, on the instances of the window's partition:
/// the active version (its faults become findings, a rollback also rolls the
/// tenant's catalog back), then the shadow, compared with it.
fn analyze(detector: &mut Lifecycle<Candidate>, window: &Arc<Window>, max_failures: u32, catalog: &Catalog) -> DetectorResult {
    let (rows, partition) = (window.batch().row_count, window.batch().info.partition);
    let call = |instance: &mut Box<dyn Analyzer>| {
        let mut analysis = instance.analyze(window)?;
        validate(&mut analysis, rows).map_err(PluginFault::InvalidOutput)?;
        Ok(analysis)
    };
    let name = detector.name().to_string();
    let mut out = DetectorResult::default();
    let mut active_keys = None;
    match detector.call(partition, call) {
        None => {}
        Some(Ok(analysis)) => {
            active_keys = Some(finding_keys(&analysis));
            push_answer(&name, analysis, &mut out);
        }
        Some(Err(Fault { fault, failures_in_row, then })) => {
            let (failures, max) = (f64::from(failures_in_row), f64::from(max_failures));
            let message = format!("plugin {name} {fault}");
            out.findings.push(host_finding(&name, FindingOrigin::PluginError, "plugin_error", Severity::Warning, message, failures, max));
            match then {
                AfterFault::Counted => {}
                AfterFault::Quarantined { message } => {
                    let finding = host_finding(&name, FindingOrigin::Quarantine, "plugin_quarantined", Severity::Critical, message, failures, max);
                    out.findings.push(finding);
                }
                AfterFault::RolledBack { bad, previous, message, retried } => {
                    catalog.roll_back(&name, &bad, &previous);
                    out.findings.push(host_finding(&name, FindingOrigin::Quarantine, "plugin_rolled_back", Severity::Critical, message, 1.0, 0.0));
                    // The window the new version failed on still gets analysed.
                    if let Ok(analysis) = retried {
                        push_answer(&name, analysis, &mut out);
                    }
                }
            }
        }
    }
    if let Some(analysis) = detector.call_shadow(partition, call) {
        if let Some(keys) = &active_keys {
            detector.compare(finding_keys(&analysis) == *keys);
        }
        out.shadow_findings.extend(data_findings(&name, analysis.findings));
    }
    out
}

/// One detector's state in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectorState {
    pub name: String,
    /// The version (and fingerprint) that gave the state.
    pub version: String,
    pub state: Vec<u8>,
}

/// The detectors of one pipeline: each runs an instance per partition of
/// the stream, so a partition's state is its own wherever it is analysed.
pub struct Detectors {
    pipeline: String,
    set: DetectorSet,
    running: RwLock<Vec<Mutex<Lifecycle<Candidate>>>>,
    /// The catalog generation the running detectors follow.
    seen: AtomicU64,
    max_failures: u32,
}

impl Detectors {
    /// One instance per chosen detector, each configured with its JSON config.
    /// A name that is not in the catalog, or a plugin that rejects its
    /// config, is an error naming it.
    pub fn new(pipeline: &str, set: DetectorSet, max_failures: u32) -> Result<Self, String> {
        let seen = set.catalog.generation();
        let entries = set.catalog.entries();
        let known = || entries.keys().cloned().collect::<Vec<_>>().join(", ");
        let names: Vec<String> = match &set.selection {
            Some(names) => names.clone(),
            None => entries.keys().cloned().collect(),
        };
        for name in &names {
            if !entries.contains_key(name) {
                return Err(format!("no plugin named '{name}' (have: {})", known()));
            }
        }
        for name in set.configs.keys() {
            if !names.contains(name) {
                return Err(format!("detector_config.{name} names no detector of the pipeline"));
            }
        }
        let mut detectors =
            Detectors { pipeline: pipeline.to_string(), set, running: RwLock::default(), seen: AtomicU64::new(seen), max_failures: max_failures.max(1) };
        let mut running = Vec::new();
        for name in names {
            let detector = detectors.start(&name, &entries[&name]).map_err(|f| format!("plugin {name}: {f}"))?;
            running.push(Mutex::new(detector));
        }
        detectors.running = RwLock::new(running);
        Ok(detectors)
    }

    fn start(&self, name: &str, entry: &CatalogEntry) -> Result<Lifecycle<Candidate>, PluginFault> {
        let owner = Owner { tenant: self.tenant().to_string(), pipeline: Some(self.pipeline.clone()) };
        let config = self.set.config_json(name, &entry.active);
        Lifecycle::start(name, owner, entry.active.clone(), config, entry.shadow.clone(), self.max_failures)
    }

    pub fn tenant(&self) -> &str {
        &self.set.catalog.tenant
    }

    /// Apply what changed in the catalog since the last window.
    fn follow_catalog(&self) -> Vec<HostFinding> {
        let generation = self.set.catalog.generation();
        if self.seen.swap(generation, Ordering::AcqRel) == generation {
            return Vec::new();
        }
        let entries = self.set.catalog.entries();
        let mut findings = Vec::new();
        let mut running = self.running.write().unwrap_or_else(|p| p.into_inner());
        running.retain(|detector| {
            let detector = detector.lock().unwrap_or_else(|p| p.into_inner());
            let name = detector.name();
            let kept = entries.contains_key(name);
            if !kept {
                let message = format!("pipeline {}: plugin {name} was removed from the plugins folder; it no longer runs", self.pipeline);
                plugin_event(Level::INFO, self.tenant(), Some(&self.pipeline), name, "removed", &message);
            }
            kept
        });
        for detector in running.iter() {
            let mut detector = detector.lock().unwrap_or_else(|p| p.into_inner());
            let entry = &entries[detector.name()];
            let config = self.set.config_json(detector.name(), &entry.active);
            if let Err(message) = detector.follow(&entry.active, entry.shadow.as_ref(), config) {
                let name = detector.name();
                findings.push(host_finding(name, FindingOrigin::PluginError, "plugin_reload_rejected", Severity::Warning, message, 1.0, 0.0));
            }
        }
        for (name, entry) in &entries {
            let present = running.iter().any(|s| s.lock().unwrap_or_else(|p| p.into_inner()).name() == name);
            if present || !self.set.wants(name) {
                continue;
            }
            match self.start(name, entry) {
                Ok(detector) => {
                    let message = format!("pipeline {}: plugin {name} {} added", self.pipeline, entry.active.label());
                    plugin_event(Level::INFO, self.tenant(), Some(&self.pipeline), name, "added", &message);
                    running.push(Mutex::new(detector));
                }
                Err(fault) => {
                    let message = format!("new plugin {name} could not start: {fault}");
                    plugin_event(Level::WARN, self.tenant(), Some(&self.pipeline), name, "rejected", &format!("pipeline {}: {message}", self.pipeline));
                    findings.push(host_finding(name, FindingOrigin::PluginError, "plugin_reload_rejected", Severity::Warning, message, 1.0, 0.0));
                }
            }
        }
        findings
    }

    pub fn analyze(&self, window: &Arc<Window>) -> WindowAnalysis {
        let mut out = WindowAnalysis { findings: self.follow_catalog(), ..Default::default() };
        let running = self.running.read().unwrap_or_else(|p| p.into_inner());
        let results: Vec<(DetectorResult, String)> = self.set.pool.install(|| {
            running
                .par_iter()
                .map(|detector| {
                    let mut detector = detector.lock().unwrap_or_else(|p| p.into_inner());
                    (analyze(&mut detector, window, self.max_failures, &self.set.catalog), detector.name().to_string())
                })
                .collect()
        });
        for (result, name) in results {
            out.findings.extend(result.findings);
            out.shadow_findings.extend(result.shadow_findings);
            out.metrics.extend(result.metrics.into_iter().map(|m| (name.clone(), m)));
        }
        out
    }

    /// Every running detector's state for `partition` as of the last window
    /// analysed. One that cannot give it is left out, and said: it starts
    /// cold on resume.
    pub fn checkpoint(&self, partition: u32) -> Vec<DetectorState> {
        let running = self.running.read().unwrap_or_else(|p| p.into_inner());
        let mut states = Vec::with_capacity(running.len());
        for detector in running.iter() {
            let mut detector = detector.lock().unwrap_or_else(|p| p.into_inner());
            let name = detector.name().to_string();
            match detector.checkpoint(partition) {
                Some(Ok((version, state))) => states.push(DetectorState { name, version, state }),
                Some(Err(fault)) => {
                    let message =
                        format!("pipeline {}: plugin {name} gave no state for the checkpoint ({fault}); it starts cold after a restart", self.pipeline);
                    plugin_event(Level::WARN, self.tenant(), Some(&self.pipeline), &name, "checkpoint_failed", &message);
                }
                None => {}
            }
        }
        states
    }

    /// Carry `partition` on from a checkpoint's `states`. Returns the
    /// detectors that start cold instead, each with why: not in the
    /// checkpoint (added since), or a version that refuses the state. A
    /// partition whose checkpoint has no state at all (no window of it was
    /// analysed) starts as it would have.
    pub fn resume(&self, partition: u32, states: &[DetectorState]) -> Vec<(String, String)> {
        if states.is_empty() {
            return Vec::new();
        }
        let running = self.running.read().unwrap_or_else(|p| p.into_inner());
        let mut cold = Vec::new();
        for detector in running.iter() {
            let mut detector = detector.lock().unwrap_or_else(|p| p.into_inner());
            let name = detector.name().to_string();
            match states.iter().find(|s| s.name == name) {
                None => cold.push((name, "not in the checkpoint".to_string())),
                Some(saved) => {
                    if let Err(fault) = detector.resume(partition, &saved.version, &saved.state) {
                        cold.push((name, format!("it refused the state of version {}: {fault}", saved.version)));
                    }
                }
            }
        }
        cold
    }

    /// `partitions` are read by another consumer now: their instances go.
    pub fn forget(&self, partitions: &[u32]) {
        let running = self.running.read().unwrap_or_else(|p| p.into_inner());
        for detector in running.iter() {
            let mut detector = detector.lock().unwrap_or_else(|p| p.into_inner());
            partitions.iter().for_each(|&p| detector.forget(p));
        }
    }

    pub fn stats(&self) -> Vec<PluginStats> {
        let running = self.running.read().unwrap_or_else(|p| p.into_inner());
        running.iter().flat_map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).stats()).collect()
    }
}

#[cfg(test)]
mod tests;
