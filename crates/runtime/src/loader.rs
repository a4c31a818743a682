//! Finding, compiling and describing the plugins of a folder.
//!
//! Every `NAME.wasm` in the folder is a plugin, a detector or an alert
//! handler (told apart by the world it exports); an optional `NAME.toml`
//! beside it (the manifest) sets its limits and default config. A plugin is
//! loaded only if it compiles, instantiates within its limits and answers
//! `describe()`: a broken file is reported by name, never half-loaded.
//!
//! Tenants write these folders, so nothing in them is trusted: symbolic
//! links and anything else that is not a regular file are refused (a link
//! could make the host read any file it can), files are opened without
//! following links or blocking on a FIFO, sizes are capped, and no error
//! quotes a file's content.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use wasmtime::component::InstancePre;
use wasmtime::Store;

use super::{call_plugin, content_hash, cut, start, take_turn, Limits, PluginFault, PluginState, Runtime, TenantBudget};
use clean_host_core::bindings::{AlertHandlerPluginPre, DetectorExports, DetectorIndices, PluginInfo, ProjectionExports, ProjectionIndices};

/// What may stand beside a plugin in `NAME.toml`.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
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
    Detector(DetectorPre),
    AlertHandler(AlertHandlerPluginPre<PluginState>),
}

/// A detector, linked, its exports looked up once.
pub struct DetectorPre {
    instance: InstancePre<PluginState>,
    detector: DetectorIndices,
    /// Its `projection` export, when it says what it reads.
    projection: Option<ProjectionIndices>,
}

// The contract's interfaces a plugin exports, named without their version.
const DETECTOR_INTERFACE: &str = "clean-host:plugin/detector";
const PROJECTION_INTERFACE: &str = "clean-host:plugin/projection";
const ALERT_HANDLER_INTERFACE: &str = "clean-host:plugin/alert-handler";

impl DetectorPre {
    /// `Ok(None)` when the component exports no detector (maybe an alert
    /// handler). An interface it exports but not as the contract has it is an
    /// error: its author must hear of it, not find the plugin taken for
    /// something else or every window handed whole.
    fn new(instance: InstancePre<PluginState>) -> wasmtime::Result<Option<Self>> {
        let detector = match DetectorIndices::new(&instance) {
            Ok(detector) => detector,
            Err(e) if exports_interface(&instance, DETECTOR_INTERFACE) => return Err(e.context("its detector export is not the contract's")),
            Err(_) => return Ok(None),
        };
        let projection = match ProjectionIndices::new(&instance) {
            Ok(projection) => Some(projection),
            Err(e) if exports_interface(&instance, PROJECTION_INTERFACE) => return Err(e.context("its projection export is not the contract's")),
            Err(_) => None,
        };
        Ok(Some(DetectorPre { instance, detector, projection }))
    }

    /// A new instance in `store`: its detector, and its projection when it has one.
    pub(crate) async fn instantiate(&self, store: &mut Store<PluginState>) -> wasmtime::Result<(DetectorExports, Option<ProjectionExports>)> {
        let instance = self.instance.instantiate_async(&mut *store).await?;
        let detector = self.detector.load(&mut *store, &instance)?;
        let projection = self.projection.as_ref().map(|p| p.load(&mut *store, &instance)).transpose()?;
        Ok((detector, projection))
    }
}

/// Whether a component exports some version of `interface`, compatible with
/// the host's or not (the lookup error then names the version the host wants).
fn exports_interface(instance: &InstancePre<PluginState>, interface: &str) -> bool {
    instance.component().component_type().exports(instance.engine()).any(|(name, _)| name.split('@').next() == Some(interface))
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
    /// Time to compile (or load from the cache) and describe it, not
    /// counting waits for another plugin's compile or describe.
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

/// Largest `.wasm` file loaded.
const MAX_PLUGIN_BYTES: u64 = 256 << 20;
/// Largest manifest read.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read plugin folder {path}: {source}")]
    Folder { path: PathBuf, source: std::io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is {what}; plugin folders take regular files only")]
    NotRegular { path: PathBuf, what: &'static str },
    #[error("{path} has {bytes} bytes, over the {limit} MiB limit")]
    TooLarge { path: PathBuf, bytes: u64, limit: u64 },
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
        let limits = Limits { memory_mib: manifest.memory_mib.unwrap_or(defaults.memory_mib), timeout_ms: manifest.timeout_ms.unwrap_or(defaults.timeout_ms) };
        if limits.memory_mib > defaults.memory_mib || limits.timeout_ms > defaults.timeout_ms {
            let message = format!(
                "asks for {} MiB and {} ms per call; tenant {} allows {} MiB and {} ms",
                limits.memory_mib, limits.timeout_ms, budget.tenant, defaults.memory_mib, defaults.timeout_ms
            );
            return Err(LoadError::Manifest { path: manifest_path, message });
        }
        let bytes = read_regular(path, MAX_PLUGIN_BYTES)?.ok_or_else(|| LoadError::Read { path: path.into(), source: std::io::ErrorKind::NotFound.into() })?;
        let compile_error = |e: wasmtime::Error| LoadError::Compile { path: path.into(), message: format!("{e:#}") };
        if !bytes.starts_with(b"\0asm") {
            // wasmtime's own error would quote the first bytes.
            return Err(LoadError::Compile { path: path.into(), message: "not a WebAssembly file (no \\0asm header)".into() });
        }
        let hash = content_hash(&bytes);
        let (component, waited_to_compile) = self.cache.component(&self.engine, &hash, &bytes).map_err(compile_error)?;
        let pre = self.linker.instantiate_pre(&component).map_err(compile_error)?;
        let kind = match DetectorPre::new(pre.clone()).map_err(compile_error)? {
            Some(pre) => PluginKind::Detector(pre),
            None => match AlertHandlerPluginPre::new(pre.clone()) {
                Ok(pre) => PluginKind::AlertHandler(pre),
                Err(e) if exports_interface(&pre, ALERT_HANDLER_INTERFACE) => {
                    return Err(compile_error(e.context("its alert-handler export is not the contract's")))
                }
                Err(_) => {
                    let message = format!("exports neither a detector ({DETECTOR_INTERFACE}) nor an alert handler ({ALERT_HANDLER_INTERFACE})");
                    return Err(compile_error(wasmtime::Error::msg(message)));
                }
            },
        };
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let (turn, waited_to_describe) = take_turn(&self.describing);
        let info = self.describe(&kind, &stem, &limits, budget).map_err(|fault| LoadError::Describe { path: path.into(), fault })?;
        drop(turn);
        let name = if info.name.trim().is_empty() { stem } else { info.name.clone() };
        let fingerprint = content_hash(format!("{hash}\n{manifest_text}").as_bytes());
        // Its own work: waiting for another plugin's turn is not part of it.
        let load_time = started.elapsed().saturating_sub(waited_to_compile + waited_to_describe);
        Ok(Plugin { name, path: path.into(), hash, fingerprint, info, limits, manifest, budget: budget.clone(), load_time, kind })
    }

    fn describe(&self, kind: &PluginKind, name: &str, limits: &Limits, budget: &Arc<TenantBudget>) -> Result<PluginInfo, PluginFault> {
        let mut store: Store<PluginState> = self.store(name, limits, budget, None);
        let mut info = match kind {
            PluginKind::Detector(pre) => {
                let (b, _) = start(&mut store, limits, async |s| pre.instantiate(s).await)?;
                call_plugin(&mut store, &b, name, *limits, async |b, s| b.call_describe(s).await.map(Ok))?
            }
            PluginKind::AlertHandler(pre) => {
                let b = start(&mut store, limits, async |s| pre.instantiate_async(s).await)?;
                call_plugin(&mut store, &b, name, *limits, async |b, s| b.clean_host_plugin_alert_handler().call_describe(s).await.map(Ok))?
            }
        };
        cut_info(&mut info);
        Ok(info)
    }
}

/// Longest plugin name or version kept, in bytes.
const MAX_LABEL: usize = 64;
/// Longest description kept, in bytes.
const MAX_DESCRIPTION: usize = 1024;
/// Most metrics a plugin may describe.
const MAX_DESCRIBED_METRICS: usize = 256;
/// Longest config schema kept, in bytes.
const MAX_CONFIG_SCHEMA: usize = 64 << 10;

/// What `describe()` said, cut to sizes the host keeps and prints.
fn cut_info(info: &mut PluginInfo) {
    cut(&mut info.name, MAX_LABEL);
    cut(&mut info.version, MAX_LABEL);
    cut(&mut info.description, MAX_DESCRIPTION);
    info.metrics.truncate(MAX_DESCRIBED_METRICS);
    for m in &mut info.metrics {
        cut(&mut m.name, super::MAX_NAME);
        cut(&mut m.description, MAX_DESCRIPTION);
    }
    if info.config_schema.len() > MAX_CONFIG_SCHEMA {
        // Cut JSON is no schema.
        info.config_schema = "{}".into();
    }
}

fn read_manifest(path: &Path) -> Result<(Manifest, String), LoadError> {
    let Some(bytes) = read_regular(path, MAX_MANIFEST_BYTES)? else {
        return Ok((Manifest::default(), String::new()));
    };
    let bad = |message: String| LoadError::Manifest { path: path.into(), message };
    let text = String::from_utf8(bytes).map_err(|e| bad(format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to())))?;
    let manifest = toml::from_str(&text).map_err(|e| bad(manifest_error(&text, &e)))?;
    Ok((manifest, text))
}

/// Where and what, with no name or value from the file: the parser's
/// `` `...` `` and `"..."` parts become `…`.
fn manifest_error(text: &str, e: &toml::de::Error) -> String {
    let mut message = String::new();
    let mut open: Option<char> = None;
    for c in e.message().chars() {
        match open {
            Some(q) if c == q => {
                message.push('…');
                open = None;
            }
            Some(_) => {}
            None if c == '`' || c == '"' => open = Some(c),
            None => message.push(c),
        }
    }
    if open.is_some() {
        message.push('…');
    }
    match e.span() {
        Some(span) => format!("line {}: {message}", text[..span.start.min(text.len())].matches('\n').count() + 1),
        None => message,
    }
}

/// The bytes of the regular file `path` (`None` if there is none), read
/// without following a symbolic link or blocking on a FIFO, at most `limit`.
fn read_regular(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, LoadError> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let read_error = |source| LoadError::Read { path: path.into(), source };
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path);
    let file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // O_NOFOLLOW on a link: ELOOP.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(LoadError::NotRegular { path: path.into(), what: "a symbolic link" }),
        Err(e) => return Err(read_error(e)),
    };
    let meta = file.metadata().map_err(read_error)?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = match () {
            _ if kind.is_dir() => "a directory",
            _ if kind.is_fifo() => "a FIFO",
            _ if kind.is_socket() => "a socket",
            _ if kind.is_block_device() || kind.is_char_device() => "a device",
            _ => "not a regular file",
        };
        return Err(LoadError::NotRegular { path: path.into(), what });
    }
    if meta.len() > limit {
        return Err(LoadError::TooLarge { path: path.into(), bytes: meta.len(), limit: limit >> 20 });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1).read_to_end(&mut bytes).map_err(read_error)?;
    if bytes.len() as u64 > limit {
        return Err(LoadError::TooLarge { path: path.into(), bytes: bytes.len() as u64, limit: limit >> 20 });
    }
    Ok(Some(bytes))
}

/// The `.wasm` entries directly in `dir`, sorted (none when `dir` does not
/// exist or is a symbolic link). Entries that are not regular files are
/// listed too, so that loading them says why they are refused.
pub fn wasm_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let folder_error = |source| LoadError::Folder { path: dir.into(), source };
    if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) && dir.file_name().is_some_and(|n| n == "shadow") {
        tracing::warn!("{} is a symbolic link; shadow versions are read from a real folder only", dir.display());
        return Ok(Vec::new());
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(folder_error(e)),
    };
    let mut paths: Vec<PathBuf> = entries.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>().map_err(folder_error)?;
    paths.retain(|p| p.extension().is_some_and(|e| e == "wasm"));
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
    let paths = wasm_files(dir)?;
    let mut plugins: Vec<Arc<Plugin>> = Vec::new();
    for (path, loaded) in paths.iter().zip(load_all(runtime, &paths, defaults, budget)) {
        let loaded = loaded.and_then(|plugin| match plugins.iter().find(|p| p.name == plugin.name) {
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

/// Threads a folder's plugins are loaded on at most.
const LOADERS: usize = 2;

/// [`Runtime::load`] of each of `paths`, in their order, on up to
/// [`LOADERS`] threads: a start from compiled plugins (reading, checking,
/// deserializing) takes about two thirds as long. Compiles take turns (see
/// the cache), and so do `describe()` calls (two would count twice against
/// the tenant's budget): a first start holds one compile's memory at a time,
/// as on one thread. Every path is loaded even after a fault, so that which
/// fault stops a start does not depend on which thread came first.
fn load_all(runtime: &Runtime, paths: &[PathBuf], defaults: Limits, budget: &Arc<TenantBudget>) -> Vec<Result<Plugin, LoadError>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(LOADERS).min(paths.len());
    if threads <= 1 {
        return paths.iter().map(|path| runtime.load(path, defaults, budget)).collect();
    }
    // Largest first: the last one to start should be quick.
    let mut order: Vec<usize> = (0..paths.len()).collect();
    order.sort_by_cached_key(|&at| std::cmp::Reverse(std::fs::symlink_metadata(&paths[at]).map_or(0, |m| m.len())));
    let next = AtomicUsize::new(0);
    let load_some = || {
        let mut loaded = Vec::new();
        while let Some(&at) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
            loaded.push((at, runtime.load(&paths[at], defaults, budget)));
        }
        loaded
    };
    let mut loaded: Vec<(usize, Result<Plugin, LoadError>)> = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(load_some)).collect();
        let mut loaded = load_some();
        for helper in helpers {
            loaded.extend(helper.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        }
        loaded
    });
    loaded.sort_by_key(|(at, _)| *at);
    loaded.into_iter().map(|(_, result)| result).collect()
}
