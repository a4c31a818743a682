//! Hot reload: a thread polls every tenant's plugin folder and keeps the
//! tenant's [`Catalog`] in line with it.
//!
//! Polling (size and modification time of each `.wasm` and its manifest,
//! then a content hash) sees only real changes, whatever wrote them, and
//! needs no platform file-event API. A changed file is compiled here, off the
//! hot path (the compile cache makes a file seen before cheap); only a file
//! that compiles and answers `describe()` reaches the catalog, so a broken
//! file never replaces a running version. Files in `DIR/shadow/` are shadow
//! versions of the detector of the same name. Alert handlers go to the
//! tenant's [`HandlerPlugins`] instead.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crossbeam_channel::RecvTimeoutError;

use crate::dispatch::handlers::HandlerPlugins;
use clean_host_quality::analysis::{Candidate, Catalog};
use clean_host_runtime::events::plugin_event;
use clean_host_runtime::wasm_files;
use clean_host_runtime::{Limits, LoadError, Plugin, Runtime, TenantBudget, WasmDetector};
use tracing::Level;

/// One tenant's folder and where its changes go.
pub struct TenantFolder {
    pub dir: PathBuf,
    pub limits: Limits,
    pub budget: Arc<TenantBudget>,
    pub catalog: Arc<Catalog>,
    pub handlers: Arc<HandlerPlugins>,
}

impl TenantFolder {
    pub fn shadow_dir(&self) -> PathBuf {
        self.dir.join("shadow")
    }
}

/// What a file looked like when last seen: (wasm, manifest) size and mtime.
type Stamp = [(u64, Option<SystemTime>); 2];

fn stamp(path: &Path) -> Stamp {
    let of = |p: &Path| std::fs::metadata(p).map_or((0, None), |m| (m.len(), m.modified().ok()));
    [of(path), of(&path.with_extension("toml"))]
}

/// What was loaded from each file.
struct Known {
    stamp: Stamp,
    /// The plugin name and fingerprint it provided (`None`: it failed to load).
    plugin: Option<(String, String)>,
}

/// Polls the folders until dropped.
pub struct Watcher {
    /// Dropped to stop the thread at once, not at its next poll.
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The files of a folder and what they hold, as the watcher tracks them.
pub struct FolderState {
    folder: TenantFolder,
    known: HashMap<PathBuf, Known>,
}

impl FolderState {
    /// Start from the plugins already loaded from `folder`.
    pub fn new(folder: TenantFolder, loaded: &[Arc<Plugin>]) -> Self {
        let known = loaded.iter().map(|p| (p.path.clone(), Known { stamp: stamp(&p.path), plugin: Some((p.name.clone(), p.fingerprint.clone())) })).collect();
        FolderState { folder, known }
    }

    fn files(&self) -> Vec<(PathBuf, bool)> {
        let list = |dir: &Path, shadow: bool| wasm_files(dir).unwrap_or_default().into_iter().map(move |p| (p, shadow));
        list(&self.folder.dir, false).chain(list(&self.folder.shadow_dir(), true)).collect()
    }

    /// Look once; apply every change in one catalog update.
    fn poll(&mut self, runtime: &Arc<Runtime>) {
        let files = self.files();
        let mut loaded: Vec<(Arc<Plugin>, bool)> = Vec::new();
        let mut gone: Vec<(String, bool)> = Vec::new();
        for (path, shadow) in &files {
            let now = stamp(path);
            if self.known.get(path).is_some_and(|k| k.stamp == now) {
                continue;
            }
            let previous = self.known.insert(path.clone(), Known { stamp: now, plugin: None }).and_then(|k| k.plugin);
            let tenant = &self.folder.budget.tenant;
            let loaded_file = runtime.load(path, self.folder.limits, &self.folder.budget).and_then(|plugin| {
                // Names stay unique, as at start: another file of the folder (not its shadow) has this one.
                // A file renamed in this poll is gone from `files`, not from `known` yet.
                let rival = |p: &PathBuf| p != path && p.parent() == path.parent() && files.iter().any(|(f, _)| f == p);
                let taken = self.known.iter().find(|(p, k)| rival(p) && k.plugin.as_ref().is_some_and(|(name, _)| *name == plugin.name));
                match taken {
                    Some((first, _)) => Err(LoadError::Duplicate { name: plugin.name, first: first.clone(), second: path.clone() }),
                    None => Ok(plugin),
                }
            });
            match loaded_file {
                Ok(plugin) if !plugin.is_detector() && *shadow => {
                    tracing::warn!("tenant {tenant}: {} is an alert handler; shadow runs are for detectors, so it is ignored", path.display());
                }
                Ok(plugin) if !plugin.is_detector() => {
                    plugin_event(
                        Level::INFO,
                        tenant,
                        None,
                        &plugin.name,
                        "loaded",
                        &format!("tenant {tenant}: alert handler {} {} loaded; it takes over before the next alert", plugin.name, plugin.info.version),
                    );
                    self.known.get_mut(path).expect("inserted above").plugin = Some((plugin.name.clone(), plugin.fingerprint.clone()));
                    self.folder.handlers.replace(Arc::new(plugin));
                }
                Ok(plugin) if self.folder.catalog.was_rolled_back(&plugin.name, &plugin.fingerprint) => {
                    tracing::warn!("tenant {tenant}: {} is the version of {} that was rolled back; not loaded again", path.display(), plugin.name);
                    self.known.get_mut(path).expect("inserted above").plugin = Some((plugin.name.clone(), plugin.fingerprint.clone()));
                }
                Ok(plugin) => {
                    let id = (plugin.name.clone(), plugin.fingerprint.clone());
                    if let Some((old_name, _)) = previous.filter(|(n, _)| *n != plugin.name) {
                        gone.push((old_name, *shadow));
                    }
                    self.known.get_mut(path).expect("inserted above").plugin = Some(id);
                    loaded.push((Arc::new(plugin), *shadow));
                }
                Err(e) => {
                    self.folder.catalog.rejected.fetch_add(1, Ordering::Relaxed);
                    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                    plugin_event(Level::WARN, tenant, None, &name, "rejected", &format!("tenant {tenant}: reload rejected, the running version stays: {e}"));
                    // Keep what it provided before: the running version stays.
                    self.known.get_mut(path).expect("inserted above").plugin = previous;
                }
            }
        }
        let present: Vec<&PathBuf> = files.iter().map(|(p, _)| p).collect();
        let removed: Vec<PathBuf> = self.known.keys().filter(|p| !present.contains(p)).cloned().collect();
        for path in removed {
            let shadow = path.parent() == Some(self.folder.shadow_dir().as_path());
            if let Some((name, _)) = self.known.remove(&path).and_then(|k| k.plugin) {
                gone.push((name, shadow));
            }
        }
        if loaded.is_empty() && gone.is_empty() {
            return;
        }
        let runtime = runtime.clone();
        self.folder.catalog.update(|entries| apply(entries, &runtime, loaded, gone));
    }
}

/// Apply loaded and removed files to the catalog entries.
fn apply(
    entries: &mut BTreeMap<String, clean_host_quality::analysis::CatalogEntry>,
    runtime: &Arc<Runtime>,
    loaded: Vec<(Arc<Plugin>, bool)>,
    gone: Vec<(String, bool)>,
) {
    let candidate =
        |plugin: &Arc<Plugin>| Candidate::new(Arc::new(WasmDetector { runtime: runtime.clone(), plugin: plugin.clone() }), plugin.manifest.config.clone());
    let loaded_names: Vec<(String, bool)> = loaded.iter().map(|(p, s)| (p.name.clone(), *s)).collect();
    for (plugin, shadow) in loaded {
        let tenant = plugin.tenant().to_string();
        match entries.get_mut(&plugin.name) {
            Some(entry) if shadow => {
                plugin_event(
                    Level::INFO,
                    &tenant,
                    None,
                    &plugin.name,
                    "shadow_loaded",
                    &format!("tenant {tenant}: {} {} loaded as shadow", plugin.name, plugin.info.version),
                );
                entry.shadow = Some(candidate(&plugin));
            }
            None if shadow => {
                tracing::warn!("tenant {tenant}: shadow {} has no active version of that name; ignored", plugin.path.display());
            }
            Some(entry) => {
                // A promoted shadow keeps its instances: same fingerprint.
                let next = match &entry.shadow {
                    Some(s) if s.source.fingerprint() == plugin.fingerprint => s.clone(),
                    _ => candidate(&plugin),
                };
                plugin_event(
                    Level::INFO,
                    &tenant,
                    None,
                    &plugin.name,
                    "loaded",
                    &format!("tenant {tenant}: {} {} loaded; pipelines switch at their next window", plugin.name, plugin.info.version),
                );
                entry.active = next;
            }
            None => {
                plugin_event(
                    Level::INFO,
                    &tenant,
                    None,
                    &plugin.name,
                    "added",
                    &format!("tenant {tenant}: new plugin {} {} loaded", plugin.name, plugin.info.version),
                );
                entries.insert(plugin.name.clone(), clean_host_quality::analysis::CatalogEntry { active: candidate(&plugin), shadow: None });
            }
        }
    }
    // Removals last: a promotion moves a shadow file onto the active one,
    // which took over the shadow's candidate above.
    for (name, shadow) in gone {
        let replaced = loaded_names.iter().any(|(n, s)| *n == name && *s == shadow);
        match entries.get_mut(&name) {
            Some(entry) if shadow && !replaced => entry.shadow = None,
            Some(_) if !replaced => {
                entries.remove(&name);
            }
            _ => {}
        }
    }
}

impl Watcher {
    pub fn start(runtime: Arc<Runtime>, mut folders: Vec<FolderState>, every: Duration) -> Self {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("plugin-watcher".into())
            .spawn(move || {
                while stopped.recv_timeout(every) == Err(RecvTimeoutError::Timeout) {
                    for folder in &mut folders {
                        folder.poll(&runtime);
                    }
                }
            })
            .expect("spawn the plugin watcher");
        Watcher { stop: Some(stop), thread: Some(thread) }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
