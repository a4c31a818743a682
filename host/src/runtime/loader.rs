//! Finding, compiling and describing the plugins of a folder.
//!
//! Every `NAME.wasm` in the folder is a plugin; an optional `NAME.toml` beside
//! it (the manifest) sets its limits and default config. A plugin is loaded
//! only if it compiles, instantiates within its limits and answers
//! `describe()`: a broken file is reported by name, never half-loaded.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::bindings::{DetectorPluginPre, PluginInfo};
use super::{content_hash, Limits, PluginFault, PluginState, Runtime};

/// What may stand beside a plugin in `NAME.toml`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Linear memory cap for each instance, in MiB.
    pub memory_mib: Option<u64>,
    /// Wall-time budget of one call, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Config handed to `configure()` unless a pipeline gives its own.
    pub config: Option<toml::Table>,
}

/// A compiled, described plugin, ready to instantiate.
pub struct Plugin {
    pub name: String,
    pub path: PathBuf,
    pub hash: String,
    pub info: PluginInfo,
    pub limits: Limits,
    pub manifest: Manifest,
    /// Time to compile (or load from the cache) and describe it.
    pub load_time: std::time::Duration,
    pub(super) pre: DetectorPluginPre<PluginState>,
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
    /// Compile and describe one `.wasm` file.
    pub fn load(&self, path: &Path, defaults: Limits) -> Result<Plugin, LoadError> {
        let started = std::time::Instant::now();
        let manifest = read_manifest(&path.with_extension("toml"))?;
        let limits = Limits {
            memory_mib: manifest.memory_mib.unwrap_or(defaults.memory_mib),
            timeout_ms: manifest.timeout_ms.unwrap_or(defaults.timeout_ms),
        };
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read { path: path.into(), source })?;
        let hash = content_hash(&bytes);
        let compile_error = |e: wasmtime::Error| LoadError::Compile { path: path.into(), message: format!("{e:#}") };
        let component = self.cache.component(&self.engine, &hash, &bytes).map_err(compile_error)?;
        let pre = self.linker.instantiate_pre(&component).map_err(compile_error)?;
        let pre = DetectorPluginPre::new(pre).map_err(compile_error)?;
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let info = self.describe(&pre, &stem, &limits).map_err(|fault| LoadError::Describe { path: path.into(), fault })?;
        let name = if info.name.trim().is_empty() { stem } else { info.name.clone() };
        Ok(Plugin { name, path: path.into(), hash, info, limits, manifest, load_time: started.elapsed(), pre })
    }
}

fn read_manifest(path: &Path) -> Result<Manifest, LoadError> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|e| LoadError::Manifest { path: path.into(), message: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
        Err(source) => Err(LoadError::Read { path: path.into(), source }),
    }
}

/// Every plugin in `dir`, sorted by name.
pub fn load_dir(runtime: &Runtime, dir: &Path, defaults: Limits) -> Result<Vec<Arc<Plugin>>, LoadError> {
    let folder_error = |source| LoadError::Folder { path: dir.into(), source };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(folder_error)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(folder_error)?;
    paths.retain(|p| p.extension().is_some_and(|e| e == "wasm") && p.is_file());
    paths.sort();
    let mut plugins: Vec<Arc<Plugin>> = Vec::new();
    for path in paths {
        let plugin = runtime.load(&path, defaults)?;
        if let Some(first) = plugins.iter().find(|p| p.name == plugin.name) {
            return Err(LoadError::Duplicate { name: plugin.name, first: first.path.clone(), second: path });
        }
        plugins.push(Arc::new(plugin));
    }
    plugins.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(plugins)
}
