//! One lifecycle for every plugin, detector or alert handler alike.
//!
//! A plugin runs under its name as one active [`Version`] (a build, a
//! configured instance per partition and its counters) and, optionally, a
//! shadow version that makes the same calls but whose answers are only
//! compared:
//! - a call that traps throws its partition's instance away, and the next
//!   call rebuilds it from the last snapshot of that partition's state;
//! - `max_failures` faults in a row quarantine the version;
//! - a new build takes over between two calls with the old one's state
//!   (`snapshot()`, then `restore()`) and is on probation for its first
//!   [`PROBATION_CALLS`] calls: a fault then brings the old build back with
//!   the state it handed over, and that one makes the same call again. A
//!   build that was rolled back is not taken again;
//! - every change is a plugin event ([`crate::events`]), so the log and the
//!   history tell the same story whatever the kind of plugin.
//!
//! What differs by kind is its [`Build`]: how to start an instance and
//! whether it has state. Detectors turn the outcomes into findings (the
//! quality side); alert handlers have no state and run no shadow.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tracing::Level;

use crate::events::plugin_event;
use crate::fault::PluginFault;
use crate::stats::{CallCounters, PluginStats, Status};

/// Successful calls between two snapshots of a plugin's state...
const SNAPSHOT_EVERY: u32 = 50;
/// ...and at least this much time, so a large state is not copied on every call.
const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);
/// Calls a new build must get through without a fault to stay.
pub const PROBATION_CALLS: u32 = 5;

/// One build of a plugin, as the lifecycle runs it.
pub trait Build: Clone + Send {
    type Instance: Send;
    /// As the stats name the kind: `detector` or `alert-handler`.
    const KIND: &'static str;
    /// As messages name one: `plugin` or `alert handler`.
    const NOUN: &'static str;

    fn version(&self) -> &str;
    /// Tells two builds apart even when their versions agree (a content hash).
    fn fingerprint(&self) -> &str;
    /// A fresh instance, configured with `config` (JSON).
    fn start(&self, config: &str) -> Result<Self::Instance, PluginFault>;
    /// The instance's state, if the kind keeps any.
    fn snapshot(_instance: &mut Self::Instance) -> Option<Result<Vec<u8>, PluginFault>> {
        None
    }
    fn restore(_instance: &mut Self::Instance, _state: &[u8]) -> Result<(), PluginFault> {
        Ok(())
    }

    /// Its version and, when that is not all, the start of its fingerprint.
    fn label(&self) -> String {
        let (version, fingerprint) = (self.version(), self.fingerprint());
        if fingerprint == version {
            version.to_string()
        } else {
            format!("{version} ({})", fingerprint.chars().take(8).collect::<String>())
        }
    }

    fn same_version(&self, other: &Self) -> bool {
        self.fingerprint() == other.fingerprint()
    }
}

/// Per partition, the state a version had (`None`: none taken yet).
type States = BTreeMap<u32, Option<Vec<u8>>>;

/// One partition's instance of a version, and the snapshot it is rebuilt
/// from after a trap.
struct Lane<I> {
    instance: Option<I>,
    snapshot: Option<Vec<u8>>,
    since_snapshot: u32,
    snapshot_at: Instant,
}

impl<I> Lane<I> {
    fn new(instance: Option<I>, snapshot: Option<Vec<u8>>) -> Self {
        Lane { instance, snapshot, since_snapshot: 0, snapshot_at: Instant::now() }
    }
}

/// One build with its counters and an instance per partition it has seen:
/// a partition's state never mixes with another's, so a partition that
/// moves to another host carries exactly its own state there.
pub struct Version<B: Build> {
    build: B,
    lanes: BTreeMap<u32, Lane<B::Instance>>,
    /// A configured instance not yet given a partition: the one that
    /// checked the config, kept for the first partition to come.
    spare: Option<B::Instance>,
    status: Status,
    counters: CallCounters,
}

impl<B: Build> Version<B> {
    /// `build` configured with `config`, carrying on from each partition's
    /// state in `states` (with none, one instance checks the config).
    fn start(build: B, config: &str, states: States, status: Status) -> Result<Self, PluginFault> {
        let mut version = Version { build, lanes: BTreeMap::new(), spare: None, status, counters: CallCounters::default() };
        if states.is_empty() {
            version.spare = Some(version.build.start(config)?);
        }
        for (partition, state) in states {
            let instance = version.fresh(config, state.as_deref())?;
            version.lanes.insert(partition, Lane::new(Some(instance), state));
        }
        Ok(version)
    }

    /// A configured instance carrying on from `state`: the spare if there is one.
    fn fresh(&mut self, config: &str, state: Option<&[u8]>) -> Result<B::Instance, PluginFault> {
        let mut instance = match self.spare.take() {
            Some(spare) => spare,
            None => self.build.start(config)?,
        };
        if let Some(state) = state {
            B::restore(&mut instance, state)?;
        }
        Ok(instance)
    }

    /// Each partition's state now, to hand to a successor: a fresh snapshot
    /// when the instance can give one, else the last one taken.
    fn current_states(&mut self) -> States {
        let mut states = BTreeMap::new();
        for (partition, lane) in &mut self.lanes {
            let state = match lane.instance.as_mut().map(B::snapshot) {
                Some(Some(Ok(state))) => Some(state),
                _ => lane.snapshot.clone(),
            };
            states.insert(*partition, state);
        }
        states
    }

    fn try_call<T>(&mut self, partition: u32, config: &str, f: &mut impl FnMut(&mut B::Instance) -> Result<T, PluginFault>) -> Result<T, PluginFault> {
        if self.lanes.get(&partition).is_none_or(|lane| lane.instance.is_none()) {
            let snapshot = self.lanes.get(&partition).and_then(|lane| lane.snapshot.clone());
            let instance = self.fresh(config, snapshot.as_deref())?;
            self.lanes.entry(partition).or_insert_with(|| Lane::new(None, snapshot)).instance = Some(instance);
        }
        let lane = self.lanes.get_mut(&partition).expect("just set");
        let instance = lane.instance.as_mut().expect("just set");
        let answer = f(instance)?;
        lane.since_snapshot += 1;
        if lane.since_snapshot >= SNAPSHOT_EVERY && lane.snapshot_at.elapsed() >= SNAPSHOT_INTERVAL {
            if let Some(state) = B::snapshot(instance) {
                lane.snapshot = Some(state?);
            }
            lane.since_snapshot = 0;
            lane.snapshot_at = Instant::now();
        }
        Ok(answer)
    }

    /// One call on `partition`'s instance, timed and counted; a trap throws
    /// that instance away.
    fn call<T>(&mut self, partition: u32, config: &str, f: &mut impl FnMut(&mut B::Instance) -> Result<T, PluginFault>) -> Result<T, PluginFault> {
        let started = Instant::now();
        let result = self.try_call(partition, config, f);
        let mut instance = self.lanes.get_mut(&partition).and_then(|lane| lane.instance.take());
        self.counters.record(started.elapsed(), &result, &mut instance);
        if let Some(lane) = self.lanes.get_mut(&partition) {
            lane.instance = instance;
        }
        result
    }

    /// It no longer runs.
    fn stop(&mut self, status: Status) {
        self.status = status;
        self.spare = None;
        self.lanes.values_mut().for_each(|lane| lane.instance = None);
    }
}

/// A fault of the active version, and what the lifecycle did about it.
pub struct Fault<B, T> {
    pub fault: PluginFault,
    pub failures_in_row: u32,
    pub then: AfterFault<B, T>,
}

pub enum AfterFault<B, T> {
    /// Counted; the version keeps running.
    Counted,
    /// Too many faults in a row: the version no longer runs.
    Quarantined { message: String },
    /// A build on probation failed: `previous` is active again and made the
    /// same call (`retried`).
    RolledBack { bad: B, previous: B, message: String, retried: Result<T, PluginFault> },
}

/// Who a plugin runs for, as stats and events name it.
#[derive(Debug, Clone)]
pub struct Owner {
    pub tenant: String,
    /// The pipeline of a detector; alert handlers serve the whole tenant.
    pub pipeline: Option<String>,
}

/// Everything that runs under one plugin name for one owner.
pub struct Lifecycle<B: Build> {
    name: String,
    owner: Owner,
    config: String,
    max_failures: u32,
    active: Version<B>,
    shadow: Option<Version<B>>,
    /// The build before the last swap, its config and its states then.
    previous: Option<(B, String, States)>,
    probation: u32,
    reloads: u64,
    /// Builds that were rolled back, with their last counters.
    retired: Vec<Version<B>>,
    compared: u64,
    agreed: u64,
}

impl<B: Build> Lifecycle<B> {
    /// A configured instance of `build` (a config it rejects is the error),
    /// and of `shadow` beside it if that one starts.
    pub fn start(name: &str, owner: Owner, build: B, config: String, shadow: Option<B>, max_failures: u32) -> Result<Self, PluginFault> {
        let active = Version::start(build, &config, BTreeMap::new(), Status::Active)?;
        let mut lifecycle = Lifecycle {
            name: name.to_string(),
            owner,
            config,
            max_failures: max_failures.max(1),
            active,
            shadow: None,
            previous: None,
            probation: 0,
            reloads: 0,
            retired: Vec::new(),
            compared: 0,
            agreed: 0,
        };
        // A shadow present from the start starts from nothing, like the active one.
        if let Some(shadow) = shadow {
            match Version::start(shadow, &lifecycle.config, BTreeMap::new(), Status::Shadow) {
                Ok(shadow) => lifecycle.shadow = Some(shadow),
                Err(fault) => tracing::warn!("{}shadow of {} {name} could not start: {fault}", lifecycle.scope(), B::NOUN),
            }
        }
        Ok(lifecycle)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `pipeline P: ` for a detector, nothing for an alert handler.
    fn scope(&self) -> String {
        self.owner.pipeline.as_ref().map_or_else(String::new, |p| format!("pipeline {p}: "))
    }

    fn event(&self, level: Level, event: &str, message: &str) {
        plugin_event(level, &self.owner.tenant, self.owner.pipeline.as_deref(), &self.name, event, message);
    }

    /// Call the active version's instance for `partition` (plugins that
    /// serve no partition, like alert handlers, use one, 0); `None` when it
    /// no longer runs (quarantined).
    pub fn call<T>(&mut self, partition: u32, mut f: impl FnMut(&mut B::Instance) -> Result<T, PluginFault>) -> Option<Result<T, Fault<B, T>>> {
        if self.active.status != Status::Active {
            return None;
        }
        match self.active.call(partition, &self.config, &mut f) {
            Ok(answer) => {
                if self.probation > 0 {
                    self.probation -= 1;
                    if self.probation == 0 {
                        self.previous = None;
                    }
                }
                Some(Ok(answer))
            }
            Err(fault) => Some(Err(self.active_failed(partition, fault, &mut f))),
        }
    }

    fn active_failed<T>(&mut self, partition: u32, fault: PluginFault, f: &mut impl FnMut(&mut B::Instance) -> Result<T, PluginFault>) -> Fault<B, T> {
        let (noun, name) = (B::NOUN, self.name.clone());
        let failures_in_row = self.active.counters.failures_in_row;
        if let Some((previous, config, states)) = self.previous.take().filter(|_| self.probation > 0) {
            self.probation = 0;
            match Version::start(previous.clone(), &config, states, Status::Active) {
                Ok(restored) => {
                    self.config = config;
                    let mut bad = std::mem::replace(&mut self.active, restored);
                    bad.stop(Status::RolledBack);
                    // Kept for its counters only.
                    bad.lanes.clear();
                    self.reloads += 1;
                    let (bad_label, back) = (bad.build.label(), previous.label());
                    let message = format!("{noun} {name} version {bad_label} failed on its first calls ({fault}); rolled back to version {back}");
                    self.event(Level::WARN, "rolled_back", &format!("{}{message}", self.scope()));
                    let bad_build = bad.build.clone();
                    self.retired.push(bad);
                    let retried = self.active.call(partition, &self.config, f);
                    return Fault { fault, failures_in_row, then: AfterFault::RolledBack { bad: bad_build, previous, message, retried } };
                }
                Err(e) => {
                    let message = format!("{noun} {name}: cannot roll back to version {}: {e}", previous.label());
                    self.event(Level::ERROR, "rollback_failed", &format!("{}{message}", self.scope()));
                }
            }
        }
        if failures_in_row >= self.max_failures {
            self.active.stop(Status::Quarantined);
            let message = format!("{noun} {name} quarantined after {} failed calls in a row; last: {fault}", self.max_failures);
            self.event(Level::WARN, "quarantined", &format!("{}{message}", self.scope()));
            return Fault { fault, failures_in_row, then: AfterFault::Quarantined { message } };
        }
        Fault { fault, failures_in_row, then: AfterFault::Counted }
    }

    /// Call the shadow version's instance for `partition`, if one runs; its
    /// faults are logged and counted, and quarantine it like the active one's.
    pub fn call_shadow<T>(&mut self, partition: u32, mut f: impl FnMut(&mut B::Instance) -> Result<T, PluginFault>) -> Option<T> {
        let shadow = self.shadow.as_mut().filter(|s| s.status == Status::Shadow)?;
        match shadow.call(partition, &self.config, &mut f) {
            Ok(answer) => Some(answer),
            Err(fault) => {
                let (noun, name, version) = (B::NOUN, &self.name, shadow.build.label());
                tracing::warn!("{noun} {name} (shadow {version}) {fault}");
                if shadow.counters.failures_in_row >= self.max_failures {
                    shadow.stop(Status::Quarantined);
                    let message = format!("{noun} {name} (shadow {version}) quarantined after {} failed calls in a row", self.max_failures);
                    self.event(Level::WARN, "shadow_quarantined", &format!("{}{message}", self.scope()));
                }
                None
            }
        }
    }

    /// Count one call the shadow and the active version both answered.
    pub fn compare(&mut self, agreed: bool) {
        self.compared += 1;
        self.agreed += u64::from(agreed);
    }

    /// Bring the active build in line with `wanted` (configured with
    /// `config`) and the shadow with `shadow`. Err: the message of a build
    /// that could not take over; the running one stays.
    pub fn follow(&mut self, wanted: &B, shadow: Option<&B>, config: String) -> Result<(), String> {
        let (noun, name, scope) = (B::NOUN, self.name.clone(), self.scope());
        let mut outcome = Ok(());
        let rolled_back = self.retired.iter().any(|v| v.build.same_version(wanted));
        if rolled_back && !wanted.same_version(&self.active.build) {
            tracing::info!("{scope}{noun} {name} version {} was rolled back; it does not take over again", wanted.label());
        } else if !wanted.same_version(&self.active.build) {
            let started = Instant::now();
            let states = self.active.current_states();
            let next = match self.shadow.take_if(|s| s.build.same_version(wanted)) {
                Some(mut promoted) => {
                    promoted.status = Status::Active;
                    promoted.counters.failures_in_row = 0;
                    let message = format!("{scope}{noun} {name} shadow version {} promoted (it keeps its own state)", promoted.build.label());
                    self.event(Level::INFO, "promoted", &message);
                    Ok(promoted)
                }
                None => Version::start(wanted.clone(), &config, states.clone(), Status::Active),
            };
            match next {
                Ok(next) => {
                    let ms = started.elapsed().as_secs_f64() * 1000.0;
                    let bytes: usize = states.values().flatten().map(Vec::len).sum();
                    let handed = match states.values().flatten().count() {
                        0 => format!("no state to hand over; {ms:.1} ms"),
                        1 => format!("{bytes} bytes of state handed over in {ms:.1} ms"),
                        n => format!("{bytes} bytes of state of {n} partitions handed over in {ms:.1} ms"),
                    };
                    let (from, to) = (self.active.build.label(), next.build.label());
                    let message = format!("{scope}{noun} {name} {from} -> {to} between two calls ({handed})");
                    self.event(Level::INFO, "swapped", &message);
                    let old = std::mem::replace(&mut self.active, next);
                    let old_config = std::mem::replace(&mut self.config, config);
                    // A quarantined version is no place to roll back to.
                    self.previous = (old.status != Status::Quarantined).then_some((old.build, old_config, states));
                    self.probation = PROBATION_CALLS;
                    self.reloads += 1;
                }
                Err(fault) => {
                    let (tried, running) = (wanted.label(), self.active.build.label());
                    let message = format!("{noun} {name} version {tried} could not take over ({fault}); version {running} keeps running");
                    self.event(Level::WARN, "rejected", &format!("{scope}{message}"));
                    outcome = Err(message);
                }
            }
        }
        match (shadow, &self.shadow) {
            (None, Some(_)) => self.shadow = None,
            (Some(wanted), current) if current.as_ref().is_none_or(|s| !s.build.same_version(wanted)) => self.start_shadow(wanted.clone()),
            _ => {}
        }
        outcome
    }

    /// Start `build` as the shadow, from the active version's state.
    fn start_shadow(&mut self, build: B) {
        let (noun, name, scope) = (B::NOUN, self.name.clone(), self.scope());
        let states = self.active.current_states();
        let label = build.label();
        match Version::start(build, &self.config, states, Status::Shadow) {
            Ok(shadow) => {
                self.event(Level::INFO, "shadow_started", &format!("{scope}{noun} {name} version {label} runs in shadow"));
                self.shadow = Some(shadow);
                (self.compared, self.agreed) = (0, 0);
            }
            Err(fault) => tracing::warn!("{scope}shadow {label} of {noun} {name} could not start: {fault}"),
        }
    }

    /// The active version's label and `partition`'s state as of its last
    /// call, for a checkpoint: `None` when it keeps no state, no longer runs
    /// or never saw the partition. An instance thrown away by a trap gives
    /// the state it is rebuilt from.
    pub fn checkpoint(&mut self, partition: u32) -> Option<Result<(String, Vec<u8>), PluginFault>> {
        if self.active.status != Status::Active {
            return None;
        }
        let label = self.active.build.label();
        let lane = self.active.lanes.get_mut(&partition)?;
        let state = match lane.instance.as_mut() {
            Some(instance) => B::snapshot(instance)?,
            None => Ok(lane.snapshot.clone().unwrap_or_default()),
        };
        Some(state.map(|state| (label, state)))
    }

    /// Carry `partition` on from a checkpoint's `state` (taken by version
    /// `label`): a fresh instance restored from it replaces the partition's.
    /// A version that refuses the state starts the partition afresh, and the
    /// fault says why.
    pub fn resume(&mut self, partition: u32, label: &str, state: &[u8]) -> Result<(), PluginFault> {
        self.active.lanes.remove(&partition);
        let instance = self.active.fresh(&self.config, Some(state))?;
        self.active.lanes.insert(partition, Lane::new(Some(instance), Some(state.to_vec())));
        let now = self.active.build.label();
        if now != label {
            let message = format!("{}{} {} version {now} carries on from the checkpoint of version {label}", self.scope(), B::NOUN, self.name);
            self.event(Level::INFO, "restored", &message);
        }
        Ok(())
    }

    /// `partition` is read elsewhere now: its instances and states go.
    pub fn forget(&mut self, partition: u32) {
        self.active.lanes.remove(&partition);
        if let Some(shadow) = &mut self.shadow {
            shadow.lanes.remove(&partition);
        }
        if let Some((_, _, states)) = &mut self.previous {
            states.remove(&partition);
        }
    }

    /// The active version's stats, then the shadow's and the rolled-back ones'.
    pub fn stats(&self) -> Vec<PluginStats> {
        let mut all = vec![self.stats_of(&self.active, self.reloads)];
        if let Some(shadow) = &self.shadow {
            let agreement = if self.compared == 0 { 1.0 } else { self.agreed as f64 / self.compared as f64 };
            all.push(PluginStats { agreement: Some(agreement), compared_windows: Some(self.compared), ..self.stats_of(shadow, 0) });
        }
        all.extend(self.retired.iter().map(|v| self.stats_of(v, 0)));
        all
    }

    fn stats_of(&self, version: &Version<B>, reloads: u64) -> PluginStats {
        PluginStats {
            tenant: self.owner.tenant.clone(),
            pipeline: self.owner.pipeline.clone().unwrap_or_default(),
            name: self.name.clone(),
            kind: B::KIND.into(),
            version: version.build.version().to_string(),
            fingerprint: version.build.fingerprint().chars().take(12).collect(),
            reloads,
            ..version.counters.stats(version.status)
        }
    }
}

#[cfg(test)]
mod tests;
