//! The detectors a tenant's pipelines may run right now, by name: the active
//! version of each and, optionally, a shadow version beside it.
//!
//! The folder watcher writes it; each pipeline's analysis thread reads it
//! between two windows and brings its instances in line. A generation
//! counter makes that check one atomic load per window.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use clean_host_runtime::lifecycle::Build;
use clean_host_runtime::{Analyzer, DetectorSource, PluginFault};

/// One version of a detector, with the default config of its manifest.
#[derive(Clone)]
pub struct Candidate {
    pub source: Arc<dyn DetectorSource>,
    pub default_config: Option<toml::Table>,
}

impl Candidate {
    pub fn new(source: Arc<dyn DetectorSource>, default_config: Option<toml::Table>) -> Self {
        Candidate { source, default_config }
    }
}

impl Build for Candidate {
    type Instance = Box<dyn Analyzer>;
    const KIND: &'static str = "detector";
    const NOUN: &'static str = "plugin";

    fn version(&self) -> &str {
        self.source.version()
    }

    fn fingerprint(&self) -> &str {
        self.source.fingerprint()
    }

    fn start(&self, config: &str) -> Result<Box<dyn Analyzer>, PluginFault> {
        self.source.instantiate(config)
    }

    fn snapshot(instance: &mut Box<dyn Analyzer>) -> Option<Result<Vec<u8>, PluginFault>> {
        Some(instance.snapshot())
    }

    fn restore(instance: &mut Box<dyn Analyzer>, state: &[u8]) -> Result<(), PluginFault> {
        instance.restore(state)
    }
}

/// What runs under one name.
#[derive(Clone)]
pub struct CatalogEntry {
    pub active: Candidate,
    /// A version that sees the same windows but never alerts.
    pub shadow: Option<Candidate>,
}

pub struct Catalog {
    pub tenant: String,
    generation: AtomicU64,
    entries: Mutex<BTreeMap<String, CatalogEntry>>,
    /// (name, fingerprint) of versions that were rolled back: not loaded again
    /// until their file changes.
    rolled_back: Mutex<BTreeSet<(String, String)>>,
    /// Files that failed to load during a reload.
    pub rejected: AtomicU64,
}

impl Catalog {
    pub fn new(tenant: &str, entries: BTreeMap<String, CatalogEntry>) -> Arc<Self> {
        Arc::new(Catalog {
            tenant: tenant.to_string(),
            generation: AtomicU64::new(0),
            entries: Mutex::new(entries),
            rolled_back: Mutex::new(BTreeSet::new()),
            rejected: AtomicU64::new(0),
        })
    }

    /// Changes every time an entry does.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn entries(&self) -> BTreeMap<String, CatalogEntry> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Change entries in one step, so a reader never sees half a change.
    pub fn update(&self, change: impl FnOnce(&mut BTreeMap<String, CatalogEntry>)) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut entries);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn was_rolled_back(&self, name: &str, fingerprint: &str) -> bool {
        self.rolled_back.lock().unwrap_or_else(|p| p.into_inner()).contains(&(name.to_string(), fingerprint.to_string()))
    }

    /// `bad` failed on its first windows: make `previous` active again for
    /// every pipeline of the tenant, and refuse `bad` from now on.
    pub fn roll_back(&self, name: &str, bad: &Candidate, previous: &Candidate) {
        self.rolled_back.lock().unwrap_or_else(|p| p.into_inner()).insert((name.to_string(), bad.source.fingerprint().to_string()));
        self.update(|entries| {
            if let Some(entry) = entries.get_mut(name) {
                if entry.active.same_version(bad) {
                    entry.active = previous.clone();
                }
            }
        });
    }
}
