//! Finding, compiling and describing the plugins of a folder.
//!
//! Every `NAME.wasm` in the folder is a plugin, a detector or an alert
//! handler (told apart by the world it exports); an optional `NAME.toml`
//! beside it (the manifest) sets its limits and default config. A plugin is
//! loaded only if it compiles, instantiates within its limits and answers
//! `describe()`: a broken file is reported by name, never half-loaded.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use wasmtime::Store;

use super::bindings::{AlertHandlerPluginPre, DetectorPluginPre, PluginInfo};
use super::{call_plugin, content_hash, Limits, PluginFault, PluginState, Runtime, TenantBudget};

/// What may stand beside a plugin in `NAME.toml`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Linear memory cap for each instance, in MiB (at most the tenant's).
    pub memory_mib: Option<u64>,
    /// Wall-time budget of one call, in milliseconds (at most the tenant's).
    pub timeout_ms: Option<u64>,
    /// Config handed to `configure()` unless a pipeline gives its own.
    pub config: Option<toml::Table>,
}

/// Which world a plugin exports, linked and ready to instantiate.
pub enum PluginKind {
    Detector(DetectorPluginPre<PluginState>),
    AlertHandler(AlertHandlerPluginPre<PluginState>),
}

/// A compiled, described plugin, ready to instantiate.
pub struct Plugin {
    pub name: String,
    pub path: PathBuf,
    /// SHA-256 of the `.wasm` file.
    pub hash: String,
    /// Hash of the `.wasm`'s hash and its manifest: tells builds (and
    /// manifests) apart; what a reload compares.
    pub fingerprint: String,
    pub info: PluginInfo,
    pub limits: Limits,
    pub manifest: Manifest,
    /// The tenant whose budget its instances count against.
    pub budget: Arc<TenantBudget>,
    /// Time to compile (or load from the cache) and describe it.
    pub load_time: std::time::Duration,
    pub kind: PluginKind,
}

impl Plugin {
    pub fn tenant(&self) -> &str {
        &self.budget.tenant
    }

    pub fn is_detector(&self) -> bool {
        matches!(self.kind, PluginKind::Detector(_))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read plugin folder {path}: {source}")]
    Folder { path: PathBuf, source: std::io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a usable component: {message}")]
    Compile { path: PathBuf, message: String },
    #[error("{path}: describe() failed: {fault}")]
    Describe { path: PathBuf, fault: PluginFault },
    #[error("bad manifest {path}: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error("two plugins are named '{name}': {first} and {second}")]
    Duplicate { name: String, first: PathBuf, second: PathBuf },
}

impl Runtime {
    /// Compile and describe one `.wasm` file of a tenant whose instances get
    /// `defaults` (a manifest may lower them, never raise them).
    pub fn load(&self, path: &Path, defaults: Limits, budget: &Arc<TenantBudget>) -> Result<Plugin, LoadError> {
        let started = std::time::Instant::now();
        let manifest_path = path.with_extension("toml");
        let (manifest, manifest_text) = read_manifest(&manifest_path)?;
        let limits = Limits {
            memory_mib: manifest.memory_mib.unwrap_or(defaults.memory_mib),
            timeout_ms: manifest.timeout_ms.unwrap_or(defaults.timeout_ms),
        };
        if limits.memory_mib > defaults.memory_mib || limits.timeout_ms > defaults.timeout_ms {
            let message = format!(
                "asks for {} MiB and {} ms per call; tenant {} allows {} MiB and {} ms",
                limits.memory_mib, limits.timeout_ms, budget.tenant, defaults.memory_mib, defaults.timeout_ms
            );
            return Err(LoadError::Manifest { path: manifest_path, message });
        }
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read { path: path.into(), source })?;
        let compile_error = |e: wasmtime::Error| LoadError::Compile { path: path.into(), message: format!("{e:#}") };
        let hash = content_hash(&bytes);
        let component = self.cache.component(&self.engine, &hash, &bytes).map_err(compile_error)?;
        let pre = self.linker.instantiate_pre(&component).map_err(compile_error)?;
        let kind = match DetectorPluginPre::new(pre.clone()) {
            Ok(pre) => PluginKind::Detector(pre),
            Err(detector_error) => match AlertHandlerPluginPre::new(pre) {
                Ok(pre) => PluginKind::AlertHandler(pre),
                Err(_) => return Err(compile_error(detector_error.context("exports neither a detector nor an alert handler"))),
            },
        };
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let info = self.describe(&kind, &stem, &limits, budget).map_err(|fault| LoadError::Describe { path: path.into(), fault })?;
        let name = if info.name.trim().is_empty() { stem } else { info.name.clone() };
        let fingerprint = content_hash(format!("{hash}\n{manifest_text}").as_bytes());
        Ok(Plugin { name, path: path.into(), hash, fingerprint, info, limits, manifest, budget: budget.clone(), load_time: started.elapsed(), kind })
    }

    fn describe(&self, kind: &PluginKind, name: &str, limits: &Limits, budget: &Arc<TenantBudget>) -> Result<PluginInfo, PluginFault> {
        let mut store: Store<PluginState> = self.store(name, limits, budget, None);
        store.set_epoch_deadline(limits.deadline_ticks());
        let fault = |e, store: &Store<PluginState>| super::classify(e, store, limits);
        match kind {
            PluginKind::Detector(pre) => {
                let b = pre.instantiate(&mut store).map_err(|e| fault(e, &store))?;
                call_plugin(&mut store, &b, name, *limits, |b, s| b.clean_host_plugin_detector().call_describe(s).map(Ok))
            }
            PluginKind::AlertHandler(pre) => {
                let b = pre.instantiate(&mut store).map_err(|e| fault(e, &store))?;
                call_plugin(&mut store, &b, name, *limits, |b, s| b.clean_host_plugin_alert_handler().call_describe(s).map(Ok))
            }
        }
    }
}

fn read_manifest(path: &Path) -> Result<(Manifest, String), LoadError> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text)
            .map(|m| (m, text))
            .map_err(|e| LoadError::Manifest { path: path.into(), message: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((Manifest::default(), String::new())),
        Err(source) => Err(LoadError::Read { path: path.into(), source }),
    }
}

/// The `.wasm` files directly in `dir`, sorted (none when `dir` does not exist).
pub fn wasm_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let folder_error = |source| LoadError::Folder { path: dir.into(), source };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(folder_error(e)),
    };
    let mut paths: Vec<PathBuf> = entries.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>().map_err(folder_error)?;
    paths.retain(|p| p.extension().is_some_and(|e| e == "wasm") && p.is_file());
    paths.sort();
    Ok(paths)
}

/// Every plugin in `dir`, sorted by name. A file that does not load is an
/// error, or, given `broken`, is put there and skipped (for listings).
pub fn load_dir(
    runtime: &Runtime,
    dir: &Path,
    defaults: Limits,
    budget: &Arc<TenantBudget>,
    mut broken: Option<&mut Vec<LoadError>>,
) -> Result<Vec<Arc<Plugin>>, LoadError> {
    let mut plugins: Vec<Arc<Plugin>> = Vec::new();
    for path in wasm_files(dir)? {
        let loaded = runtime.load(&path, defaults, budget).and_then(|plugin| match plugins.iter().find(|p| p.name == plugin.name) {
            Some(first) => Err(LoadError::Duplicate { name: plugin.name, first: first.path.clone(), second: path.clone() }),
            None => Ok(plugin),
        });
        match (loaded, broken.as_deref_mut()) {
            (Ok(plugin), _) => plugins.push(Arc::new(plugin)),
            (Err(e), Some(broken)) => broken.push(e),
            (Err(e), None) => return Err(e),
        }
    }
    plugins.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(plugins)
}
