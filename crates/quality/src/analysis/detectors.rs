//! A pipeline's detectors: running them on a window, and following the
//! tenant's [`Catalog`] as plugins change.
//!
//! Each detector runs under the plugin lifecycle of the runtime
//! ([`Lifecycle`]: rebuild after a trap, quarantine, swap with state,
//! probation and rollback, shadow) as a [`RunningDetector`]: it answers the
//! pipeline's windows in order, one call at a time, on the tenant's pool.
//! A window goes to every detector at once and is answered when the last
//! one answers; a detector done with it moves on to the next window
//! without waiting for a slower one, so no pool thread idles behind the
//! slowest call of a window while windows wait.
//! What this module adds is what a detector's
//! faults mean for a window: a call that faults becomes a `plugin_error`
//! finding, a quarantine a `plugin_quarantined` one and a rollback a
//! `plugin_rolled_back` one (both always alerted; a rollback also rolls the
//! tenant's catalog back for its other pipelines). The other detectors'
//! results for the window still count.
//!
//! Changes to the catalog are applied on the analysis thread between two
//! windows, once every window handed over before was answered, so every
//! window is analysed by exactly one version of each detector; so are
//! checkpoints and restores, so a state is as of the last window handed
//! over. A shadow version sees every window the active one sees; its
//! findings are kept apart, never alerted, and compared with the active
//! version's.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};

use super::{plugin_finding, validate, Candidate, Catalog, CatalogEntry, FindingOrigin, HostFinding, WindowAnalysis};
use clean_host_core::bindings::{Analysis, Finding, MetricValue, Severity};
use clean_host_core::scheduling::run_as_batch_work;
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
    let pool = rayon::ThreadPoolBuilder::new()
        .thread_name(move |i| format!("{tenant}-detectors-{i}"))
        .start_handler(|_| {
            if let Err(e) = run_as_batch_work() {
                tracing::debug!("a detector thread runs in the normal scheduling class: {e}");
            }
        })
        .build();
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

/// A lock, whatever a panic left behind it (a detector's panic is reported
/// through the window it was answering).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// One detector of a pipeline and the windows waiting for it, answered in
/// order, one call at a time. Every window handed over is a job of its own
/// on the tenant's pool, in the order handed over with every other
/// pipeline's: a job that finds the detector busy leaves its window to the
/// job that holds it, which takes it next. So the pool's threads take turns
/// between a tenant's pipelines window by window, and a detector never
/// waits for another one of its pipeline.
struct RunningDetector {
    detector: Mutex<Lifecycle<Candidate>>,
    queue: Mutex<DetectorQueue>,
    catalog: Arc<Catalog>,
    max_failures: u32,
}

#[derive(Default)]
struct DetectorQueue {
    windows: VecDeque<(Arc<InFlight>, usize)>,
    /// A job is answering this detector's windows.
    taken: bool,
    /// Jobs that found it taken: their windows are the holder's to answer.
    left_to_holder: usize,
    /// A call panicked: later windows are not handed to the detector.
    panicked: bool,
}

impl RunningDetector {
    fn new(detector: Lifecycle<Candidate>, catalog: Arc<Catalog>, max_failures: u32) -> Arc<Self> {
        Arc::new(RunningDetector { detector: Mutex::new(detector), queue: Mutex::default(), catalog, max_failures })
    }

    /// Queue `window`, whose answer goes into `slot`, and its job.
    fn hand(self: &Arc<Self>, window: &Arc<InFlight>, slot: usize, pool: &rayon::ThreadPool) {
        lock(&self.queue).windows.push_back((window.clone(), slot));
        let detector = self.clone();
        pool.spawn(move || detector.answer_next());
    }

    /// One window's job: answer the oldest window, and the windows of the
    /// jobs that came meanwhile; or, with the detector taken, leave it to
    /// the job that holds it.
    fn answer_next(&self) {
        {
            let mut queue = lock(&self.queue);
            if queue.taken {
                queue.left_to_holder += 1;
                return;
            }
            queue.taken = true;
        }
        loop {
            let (window, slot, panicked) = {
                let mut queue = lock(&self.queue);
                let (window, slot) = queue.windows.pop_front().expect("a window for every job");
                (window, slot, queue.panicked)
            };
            let answer = if window.abandoned.load(Ordering::Acquire) {
                // Its pipeline stopped waiting (it failed): nothing reads the answer.
                Ok((DetectorResult::default(), String::new()))
            } else if panicked {
                Err(Box::new("an earlier call of this detector panicked") as Box<dyn Any + Send>)
            } else {
                let answer = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    let mut detector = lock(&self.detector);
                    (analyze(&mut detector, &window.window, self.max_failures, &self.catalog), detector.name().to_string())
                }));
                lock(&self.queue).panicked |= answer.is_err();
                answer
            };
            window.answer(slot, answer);
            let mut queue = lock(&self.queue);
            if queue.left_to_holder == 0 {
                queue.taken = false;
                return;
            }
            queue.left_to_holder -= 1;
        }
    }
}

/// How many windows handed to the detectors are not answered yet.
#[derive(Default)]
struct Outstanding {
    windows: Mutex<usize>,
    none_left: Condvar,
}

impl Outstanding {
    fn add(&self) {
        *lock(&self.windows) += 1;
    }

    fn answered(&self) {
        let mut windows = lock(&self.windows);
        *windows -= 1;
        if *windows == 0 {
            self.none_left.notify_all();
        }
    }

    /// Block until every window handed over was answered.
    fn wait(&self) {
        let mut windows = lock(&self.windows);
        while *windows > 0 {
            windows = self.none_left.wait(windows).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// A detector's answer about one window, or the panic that took its place.
type Answer = Result<(DetectorResult, String), Box<dyn Any + Send>>;

/// A window with the detectors, and their answers as they come.
struct InFlight {
    window: Arc<Window>,
    answers: Mutex<Answers>,
    all_answered: Condvar,
    /// Told once the last detector answered.
    on_answered: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    outstanding: Arc<Outstanding>,
    /// Its [`PendingWindow`] was dropped unanswered: no call is made for it.
    abandoned: AtomicBool,
}

struct Answers {
    /// In the order of the pipeline's detectors.
    results: Vec<Option<(DetectorResult, String)>>,
    left: usize,
    panic: Option<Box<dyn Any + Send>>,
}

impl InFlight {
    fn answer(&self, slot: usize, answer: Answer) {
        let last = {
            let mut answers = lock(&self.answers);
            match answer {
                Ok(result) => answers.results[slot] = Some(result),
                Err(panic) => _ = answers.panic.get_or_insert(panic),
            }
            answers.left -= 1;
            answers.left == 0
        };
        if last {
            self.all_answered.notify_all();
            self.outstanding.answered();
            self.tell_answered();
        }
    }

    fn tell_answered(&self) {
        if let Some(tell) = lock(&self.on_answered).take() {
            tell();
        }
    }
}

/// A window handed to the detectors ([`Detectors::submit`]). Dropped
/// before they answered (its pipeline failed), the calls still to come
/// for it are not made.
pub struct PendingWindow {
    in_flight: Arc<InFlight>,
    /// What following the catalog before it found.
    catalog_findings: Vec<HostFinding>,
}

impl PendingWindow {
    pub fn window(&self) -> &Arc<Window> {
        &self.in_flight.window
    }

    /// Every detector answered: [`wait`](Self::wait) returns at once.
    pub fn is_answered(&self) -> bool {
        lock(&self.in_flight.answers).left == 0
    }

    /// What the detectors said, in the order of the pipeline's detectors. A
    /// detector that panicked panics here, on the caller's thread.
    pub fn wait(mut self) -> WindowAnalysis {
        let mut answers = lock(&self.in_flight.answers);
        while answers.left > 0 {
            answers = self.in_flight.all_answered.wait(answers).unwrap_or_else(|p| p.into_inner());
        }
        if let Some(panic) = answers.panic.take() {
            drop(answers);
            std::panic::resume_unwind(panic);
        }
        let mut out = WindowAnalysis { findings: std::mem::take(&mut self.catalog_findings), ..Default::default() };
        for (result, name) in answers.results.drain(..).flatten() {
            out.findings.extend(result.findings);
            out.shadow_findings.extend(result.shadow_findings);
            out.metrics.extend(result.metrics.into_iter().map(|m| (name.clone(), m)));
        }
        out
    }
}

impl Drop for PendingWindow {
    fn drop(&mut self) {
        self.in_flight.abandoned.store(true, Ordering::Release);
    }
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
    running: RwLock<Vec<Arc<RunningDetector>>>,
    /// The catalog generation the running detectors follow.
    seen: AtomicU64,
    max_failures: u32,
    outstanding: Arc<Outstanding>,
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
        let mut detectors = Detectors {
            pipeline: pipeline.to_string(),
            set,
            running: RwLock::default(),
            seen: AtomicU64::new(seen),
            max_failures: max_failures.max(1),
            outstanding: Arc::default(),
        };
        let mut running = Vec::new();
        for name in names {
            running.push(detectors.start(&name, &entries[&name]).map_err(|f| format!("plugin {name}: {f}"))?);
        }
        detectors.running = RwLock::new(running);
        Ok(detectors)
    }

    fn start(&self, name: &str, entry: &CatalogEntry) -> Result<Arc<RunningDetector>, PluginFault> {
        let owner = Owner { tenant: self.tenant().to_string(), pipeline: Some(self.pipeline.clone()) };
        let config = self.set.config_json(name, &entry.active);
        let detector = Lifecycle::start(name, owner, entry.active.clone(), config, entry.shadow.clone(), self.max_failures)?;
        Ok(RunningDetector::new(detector, self.set.catalog.clone(), self.max_failures))
    }

    pub fn tenant(&self) -> &str {
        &self.set.catalog.tenant
    }

    /// Apply what changed in the catalog since the last window, once the
    /// windows handed over before are answered.
    fn follow_catalog(&self) -> Vec<HostFinding> {
        let generation = self.set.catalog.generation();
        if self.seen.load(Ordering::Acquire) == generation {
            return Vec::new();
        }
        self.outstanding.wait();
        self.seen.store(generation, Ordering::Release);
        let entries = self.set.catalog.entries();
        let mut findings = Vec::new();
        let mut running = self.running.write().unwrap_or_else(|p| p.into_inner());
        running.retain(|running| {
            let detector = lock(&running.detector);
            let name = detector.name();
            let kept = entries.contains_key(name);
            if !kept {
                let message = format!("pipeline {}: plugin {name} was removed from the plugins folder; it no longer runs", self.pipeline);
                plugin_event(Level::INFO, self.tenant(), Some(&self.pipeline), name, "removed", &message);
            }
            kept
        });
        for running in running.iter() {
            let mut detector = lock(&running.detector);
            let entry = &entries[detector.name()];
            let config = self.set.config_json(detector.name(), &entry.active);
            if let Err(message) = detector.follow(&entry.active, entry.shadow.as_ref(), config) {
                let name = detector.name();
                findings.push(host_finding(name, FindingOrigin::PluginError, "plugin_reload_rejected", Severity::Warning, message, 1.0, 0.0));
            }
        }
        for (name, entry) in &entries {
            let present = running.iter().any(|running| lock(&running.detector).name() == name);
            if present || !self.set.wants(name) {
                continue;
            }
            match self.start(name, entry) {
                Ok(detector) => {
                    let message = format!("pipeline {}: plugin {name} {} added", self.pipeline, entry.active.label());
                    plugin_event(Level::INFO, self.tenant(), Some(&self.pipeline), name, "added", &message);
                    running.push(detector);
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

    /// Hand `window` to every detector, after the windows handed over
    /// before; `on_answered` is called once they all answered it (on a pool
    /// thread, or at once on this one when the pipeline has no detector).
    pub fn submit(&self, window: Arc<Window>, on_answered: impl FnOnce() + Send + 'static) -> PendingWindow {
        let catalog_findings = self.follow_catalog();
        let running = self.running.read().unwrap_or_else(|p| p.into_inner());
        let answers = Answers { results: (0..running.len()).map(|_| None).collect(), left: running.len(), panic: None };
        let in_flight = Arc::new(InFlight {
            window,
            answers: Mutex::new(answers),
            all_answered: Condvar::new(),
            on_answered: Mutex::new(Some(Box::new(on_answered))),
            outstanding: self.outstanding.clone(),
            abandoned: AtomicBool::new(false),
        });
        if running.is_empty() {
            in_flight.tell_answered();
        } else {
            self.outstanding.add();
            for (slot, detector) in running.iter().enumerate() {
                detector.hand(&in_flight, slot, &self.set.pool);
            }
        }
        PendingWindow { in_flight, catalog_findings }
    }

    /// Every running detector's state for `partition` as of the last window
    /// analysed. One that cannot give it is left out, and said: it starts
    /// cold on resume.
    pub fn checkpoint(&self, partition: u32) -> Vec<DetectorState> {
        self.outstanding.wait();
        let running = self.running.read().unwrap_or_else(|p| p.into_inner());
        let mut states = Vec::with_capacity(running.len());
        for running in running.iter() {
            let mut detector = lock(&running.detector);
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
        self.outstanding.wait();
        let running = self.running.read().unwrap_or_else(|p| p.into_inner());
        let mut cold = Vec::new();
        for running in running.iter() {
            let mut detector = lock(&running.detector);
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
        self.outstanding.wait();
        let running = self.running.read().unwrap_or_else(|p| p.into_inner());
        for running in running.iter() {
            let mut detector = lock(&running.detector);
            partitions.iter().for_each(|&p| detector.forget(p));
        }
    }

    pub fn stats(&self) -> Vec<PluginStats> {
        let running = self.running.read().unwrap_or_else(|p| p.into_inner());
        running.iter().flat_map(|running| lock(&running.detector).stats()).collect()
    }
}

#[cfg(test)]
mod tests;
