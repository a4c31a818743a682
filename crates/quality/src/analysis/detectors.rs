//! A pipeline's detector instances: running them on a window, containing
//! their faults, and following the tenant's [`Catalog`] as plugins change.
//!
//! Each detector instance sits behind its own lock and the calls of one
//! window run in parallel. A call that faults becomes a `plugin_error`
//! finding; a trap also throws the instance away, and the next call rebuilds
//! it from the last snapshot of its state. After `max_failures` faults in a
//! row the plugin is quarantined and a `plugin_quarantined` finding (always
//! alerted) says so. The other detectors' results for the window still count.
//!
//! Changes to the catalog are applied on the analysis thread between two
//! windows, so every window is analysed by exactly one version of each
//! detector. A new version takes over the old one's `snapshot()` through
//! `restore()` and is on probation for its first windows: if it faults then,
//! the old version comes back with the state it handed over, analyses the
//! same window, and a `plugin_rolled_back` finding (always alerted) says so.
//! A shadow version sees every window the active one sees; its findings are
//! kept apart, never alerted, and compared with the active version's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use super::{plugin_finding, validate, Candidate, Catalog, CatalogEntry, FindingOrigin, HostFinding, WindowAnalysis};
use clean_host_core::bindings::{Analysis, Batch, MetricValue, Severity};
use clean_host_runtime::events::plugin_event;
use clean_host_runtime::{Analyzer, CallCounters, PluginFault, PluginStats, Status};
use tracing::Level;

/// Successful calls between two snapshots of a detector's state...
const SNAPSHOT_EVERY: u32 = 50;
/// ...and at least this much time, so a large state is not copied on every window.
const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);
/// Windows a new version must get through without a fault to stay.
pub const PROBATION_WINDOWS: u32 = 5;

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

/// One version of a detector with its instance and counters.
struct Version {
    candidate: Candidate,
    instance: Option<Box<dyn Analyzer>>,
    snapshot: Option<Vec<u8>>,
    since_snapshot: u32,
    snapshot_at: Instant,
    status: Status,
    counters: CallCounters,
}

impl Version {
    /// A configured instance of `candidate`, carrying on from `state`.
    fn start(candidate: Candidate, config: &str, state: Option<Vec<u8>>, status: Status) -> Result<Self, PluginFault> {
        let mut instance = candidate.source.instantiate(config)?;
        if let Some(state) = &state {
            instance.restore(state)?;
        }
        Ok(Version {
            candidate,
            instance: Some(instance),
            snapshot: state,
            since_snapshot: 0,
            snapshot_at: Instant::now(),
            status,
            counters: CallCounters::default(),
        })
    }

    fn version(&self) -> String {
        self.candidate.label()
    }

    /// Its state now, to hand to a successor: a fresh snapshot when the
    /// instance can give one, else the last one taken.
    fn current_state(&mut self) -> Option<Vec<u8>> {
        if let Some(instance) = &mut self.instance {
            if let Ok(state) = instance.snapshot() {
                return Some(state);
            }
        }
        self.snapshot.clone()
    }

    fn try_analyze(&mut self, batch: &Batch, config: &str) -> Result<Analysis, PluginFault> {
        if self.instance.is_none() {
            let mut fresh = self.candidate.source.instantiate(config)?;
            if let Some(state) = &self.snapshot {
                fresh.restore(state)?;
            }
            self.instance = Some(fresh);
        }
        let instance = self.instance.as_mut().expect("just set");
        let mut analysis = instance.analyze(batch)?;
        validate(&mut analysis, batch.row_count).map_err(PluginFault::InvalidOutput)?;
        self.since_snapshot += 1;
        if self.since_snapshot >= SNAPSHOT_EVERY && self.snapshot_at.elapsed() >= SNAPSHOT_INTERVAL {
            self.snapshot = Some(instance.snapshot()?);
            self.since_snapshot = 0;
            self.snapshot_at = Instant::now();
        }
        Ok(analysis)
    }

    /// One window, timed and counted; a trap throws the instance away.
    fn run(&mut self, batch: &Batch, config: &str) -> Result<Analysis, PluginFault> {
        let started = Instant::now();
        let result = self.try_analyze(batch, config);
        self.counters.record(started.elapsed(), &result, &mut self.instance);
        result
    }

    fn stats(&self, tenant: &str, pipeline: &str, name: &str, reloads: u64) -> PluginStats {
        PluginStats {
            tenant: tenant.to_string(),
            pipeline: pipeline.to_string(),
            name: name.to_string(),
            kind: "detector".into(),
            version: self.candidate.source.version().to_string(),
            fingerprint: self.candidate.source.fingerprint().chars().take(12).collect(),
            reloads,
            ..self.counters.stats(self.status)
        }
    }
}

/// One detector of a pipeline: the active version, maybe a shadow, and
/// while a new version is on probation, the one it replaced.
struct Slot {
    name: String,
    config: String,
    active: Version,
    shadow: Option<Version>,
    /// The version before the last swap, its config and its state then.
    previous: Option<(Candidate, String, Option<Vec<u8>>)>,
    probation: u32,
    reloads: u64,
    /// Versions that were rolled back, with their last counters.
    retired: Vec<Version>,
    compared: u64,
    agreed: u64,
}

/// What one detector said about one window.
#[derive(Default)]
struct SlotResult {
    findings: Vec<HostFinding>,
    metrics: Vec<MetricValue>,
    shadow_findings: Vec<HostFinding>,
}

/// The findings of a window that two versions are compared on.
fn finding_keys(analysis: &Analysis) -> BTreeSet<(String, Option<String>, u8)> {
    analysis.findings.iter().map(|f| (f.metric.clone(), f.column.clone(), f.severity as u8)).collect()
}

impl Slot {
    fn host_finding(&self, origin: FindingOrigin, metric: &str, severity: Severity, message: String, value: f64, threshold: f64) -> HostFinding {
        HostFinding { detector: self.name.clone(), origin, finding: plugin_finding(metric, severity, message, value, threshold) }
    }

    fn data(&self, analysis: Analysis, into: &mut SlotResult) {
        let name = &self.name;
        into.findings.extend(analysis.findings.into_iter().map(|finding| HostFinding { detector: name.clone(), origin: FindingOrigin::Data, finding }));
        into.metrics.extend(analysis.metrics);
    }

    fn analyze(&mut self, batch: &Batch, max_failures: u32, catalog: &Catalog) -> SlotResult {
        let mut out = SlotResult::default();
        let mut active_keys = None;
        if self.active.status == Status::Active {
            match self.active.run(batch, &self.config) {
                Ok(analysis) => {
                    if self.probation > 0 {
                        self.probation -= 1;
                        if self.probation == 0 {
                            self.previous = None;
                        }
                    }
                    active_keys = Some(finding_keys(&analysis));
                    self.data(analysis, &mut out);
                }
                Err(fault) => self.active_failed(batch, fault, max_failures, catalog, &mut out),
            }
        }
        if let Some(shadow) = &mut self.shadow {
            if shadow.status == Status::Shadow {
                match shadow.run(batch, &self.config) {
                    Ok(analysis) => {
                        if let Some(keys) = &active_keys {
                            self.compared += 1;
                            self.agreed += u64::from(finding_keys(&analysis) == *keys);
                        }
                        let name = &self.name;
                        out.shadow_findings.extend(analysis.findings.into_iter().map(|finding| HostFinding {
                            detector: name.clone(),
                            origin: FindingOrigin::Data,
                            finding,
                        }));
                    }
                    Err(fault) => {
                        tracing::warn!("plugin {} (shadow {}) {fault}", self.name, shadow.version());
                        if shadow.counters.failures_in_row >= max_failures {
                            tracing::warn!("plugin {} (shadow {}) quarantined after {max_failures} failed calls in a row", self.name, shadow.version());
                            shadow.status = Status::Quarantined;
                            shadow.instance = None;
                        }
                    }
                }
            }
        }
        out
    }

    fn active_failed(&mut self, batch: &Batch, fault: PluginFault, max_failures: u32, catalog: &Catalog, out: &mut SlotResult) {
        let name = self.name.clone();
        let version = self.active.version();
        let failures = self.active.counters.failures_in_row as f64;
        out.findings.push(self.host_finding(
            FindingOrigin::PluginError,
            "plugin_error",
            Severity::Warning,
            format!("plugin {name} {fault}"),
            failures,
            max_failures as f64,
        ));
        if self.probation > 0 {
            if let Some((previous, config, state)) = self.previous.take() {
                self.probation = 0;
                match Version::start(previous.clone(), &config, state, Status::Active) {
                    Ok(restored) => {
                        self.config = config;
                        let mut bad = std::mem::replace(&mut self.active, restored);
                        bad.status = Status::RolledBack;
                        bad.instance = None;
                        catalog.roll_back(&name, &bad.candidate, &previous);
                        self.reloads += 1;
                        let message =
                            format!("plugin {name} version {version} failed on its first windows ({fault}); rolled back to version {}", self.active.version());
                        out.findings.push(self.host_finding(FindingOrigin::Quarantine, "plugin_rolled_back", Severity::Critical, message, 1.0, 0.0));
                        self.retired.push(bad);
                        // The window the new version failed on still gets analysed.
                        if let Ok(analysis) = self.active.run(batch, &self.config) {
                            self.data(analysis, out);
                        }
                        return;
                    }
                    Err(e) => tracing::error!("plugin {name}: cannot roll back to version {}: {e}", previous.label()),
                }
            }
        }
        if self.active.counters.failures_in_row >= max_failures {
            self.active.status = Status::Quarantined;
            self.active.instance = None;
            out.findings.push(self.host_finding(
                FindingOrigin::Quarantine,
                "plugin_quarantined",
                Severity::Critical,
                format!("plugin {name} quarantined after {max_failures} failed calls in a row; last: {fault}"),
                failures,
                max_failures as f64,
            ));
        }
    }

    /// Bring this detector in line with its catalog entry.
    fn follow(&mut self, entry: &CatalogEntry, config: String, (tenant, pipeline): (&str, &str), findings: &mut Vec<HostFinding>) {
        let name = self.name.clone();
        if !entry.active.same_version(&self.active.candidate) {
            let started = Instant::now();
            let state = self.active.current_state();
            let promoted = self.shadow.take_if(|s| s.candidate.same_version(&entry.active));
            let next = match promoted {
                Some(mut shadow) => {
                    shadow.status = Status::Active;
                    shadow.counters.failures_in_row = 0;
                    let message = format!("pipeline {pipeline}: plugin {name} shadow version {} promoted (it keeps its own state)", shadow.version());
                    plugin_event(Level::INFO, tenant, Some(pipeline), &name, "promoted", &message);
                    Ok(shadow)
                }
                None => Version::start(entry.active.clone(), &config, state.clone(), Status::Active),
            };
            match next {
                Ok(next) => {
                    let message = format!(
                        "pipeline {pipeline}: plugin {name} {} -> {} at a window boundary ({} bytes of state handed over in {:.1} ms)",
                        self.active.version(),
                        next.version(),
                        state.as_ref().map_or(0, Vec::len),
                        started.elapsed().as_secs_f64() * 1000.0
                    );
                    plugin_event(Level::INFO, tenant, Some(pipeline), &name, "swapped", &message);
                    let old = std::mem::replace(&mut self.active, next);
                    let old_config = std::mem::replace(&mut self.config, config);
                    // A quarantined version is no place to roll back to.
                    self.previous = (old.status != Status::Quarantined).then_some((old.candidate, old_config, state));
                    self.probation = PROBATION_WINDOWS;
                    self.reloads += 1;
                }
                Err(fault) => {
                    let message = format!(
                        "plugin {name} version {} could not take over ({fault}); version {} keeps running",
                        entry.active.label(),
                        self.active.version()
                    );
                    plugin_event(Level::WARN, tenant, Some(pipeline), &name, "rejected", &format!("pipeline {pipeline}: {message}"));
                    findings.push(self.host_finding(FindingOrigin::PluginError, "plugin_reload_rejected", Severity::Warning, message, 1.0, 0.0));
                }
            }
        }
        match (&entry.shadow, &self.shadow) {
            (None, Some(_)) => self.shadow = None,
            (Some(wanted), current) if current.as_ref().is_none_or(|s| !s.candidate.same_version(wanted)) => {
                let state = self.active.current_state();
                match Version::start(wanted.clone(), &self.config, state, Status::Shadow) {
                    Ok(shadow) => {
                        let message = format!("pipeline {pipeline}: plugin {name} version {} runs in shadow", shadow.version());
                        plugin_event(Level::INFO, tenant, Some(pipeline), &name, "shadow_started", &message);
                        self.shadow = Some(shadow);
                        (self.compared, self.agreed) = (0, 0);
                    }
                    Err(fault) => tracing::warn!("pipeline {pipeline}: shadow of plugin {name} could not start: {fault}"),
                }
            }
            _ => {}
        }
    }

    fn stats(&self, tenant: &str, pipeline: &str) -> Vec<PluginStats> {
        let mut all = vec![self.active.stats(tenant, pipeline, &self.name, self.reloads)];
        if let Some(shadow) = &self.shadow {
            let mut s = shadow.stats(tenant, pipeline, &self.name, 0);
            s.agreement = Some(if self.compared == 0 { 1.0 } else { self.agreed as f64 / self.compared as f64 });
            s.compared_windows = Some(self.compared);
            all.push(s);
        }
        all.extend(self.retired.iter().map(|v| v.stats(tenant, pipeline, &self.name, 0)));
        all
    }
}

/// The detector instances of one pipeline.
pub struct Detectors {
    pipeline: String,
    set: DetectorSet,
    slots: RwLock<Vec<Mutex<Slot>>>,
    /// The catalog generation the slots follow.
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
        let mut slots = Vec::new();
        for name in names {
            let entry = &entries[&name];
            let slot = Self::slot(&set, &name, entry).map_err(|f| format!("plugin {name}: {f}"))?;
            slots.push(Mutex::new(slot));
        }
        Ok(Detectors { pipeline: pipeline.to_string(), set, slots: RwLock::new(slots), seen: AtomicU64::new(seen), max_failures: max_failures.max(1) })
    }

    fn slot(set: &DetectorSet, name: &str, entry: &CatalogEntry) -> Result<Slot, PluginFault> {
        let config = set.config_json(name, &entry.active);
        let active = Version::start(entry.active.clone(), &config, None, Status::Active)?;
        let mut slot = Slot {
            name: name.to_string(),
            config,
            active,
            shadow: None,
            previous: None,
            probation: 0,
            reloads: 0,
            retired: Vec::new(),
            compared: 0,
            agreed: 0,
        };
        if let Some(shadow) = &entry.shadow {
            match Version::start(shadow.clone(), &slot.config, None, Status::Shadow) {
                Ok(v) => slot.shadow = Some(v),
                Err(fault) => tracing::warn!("shadow of plugin {name} could not start: {fault}"),
            }
        }
        Ok(slot)
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
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        slots.retain(|slot| {
            let name = &slot.lock().unwrap_or_else(|p| p.into_inner()).name;
            let kept = entries.contains_key(name);
            if !kept {
                let message = format!("pipeline {}: plugin {name} was removed from the plugins folder; it no longer runs", self.pipeline);
                plugin_event(Level::INFO, self.tenant(), Some(&self.pipeline), name, "removed", &message);
            }
            kept
        });
        for slot in slots.iter() {
            let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
            let entry = &entries[&slot.name];
            let config = self.set.config_json(&slot.name, &entry.active);
            slot.follow(entry, config, (self.tenant(), &self.pipeline), &mut findings);
        }
        for (name, entry) in &entries {
            let present = slots.iter().any(|s| s.lock().unwrap_or_else(|p| p.into_inner()).name == *name);
            if present || !self.set.wants(name) {
                continue;
            }
            match Self::slot(&self.set, name, entry) {
                Ok(slot) => {
                    let message = format!("pipeline {}: plugin {name} {} added", self.pipeline, entry.active.label());
                    plugin_event(Level::INFO, self.tenant(), Some(&self.pipeline), name, "added", &message);
                    slots.push(Mutex::new(slot));
                }
                Err(fault) => {
                    let message = format!("new plugin {name} could not start: {fault}");
                    plugin_event(Level::WARN, self.tenant(), Some(&self.pipeline), name, "rejected", &format!("pipeline {}: {message}", self.pipeline));
                    let finding = plugin_finding("plugin_reload_rejected", Severity::Warning, message, 1.0, 0.0);
                    findings.push(HostFinding { detector: name.clone(), origin: FindingOrigin::PluginError, finding });
                }
            }
        }
        findings
    }

    pub fn analyze(&self, batch: &Batch) -> WindowAnalysis {
        let mut out = WindowAnalysis { findings: self.follow_catalog(), ..Default::default() };
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        let results: Vec<(SlotResult, String)> = self.set.pool.install(|| {
            slots
                .par_iter()
                .map(|slot| {
                    let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
                    (slot.analyze(batch, self.max_failures, &self.set.catalog), slot.name.clone())
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

    pub fn stats(&self) -> Vec<PluginStats> {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        slots.iter().flat_map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).stats(self.tenant(), &self.pipeline)).collect()
    }
}

#[cfg(test)]
mod tests;
