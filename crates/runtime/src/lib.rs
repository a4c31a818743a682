//! The WebAssembly runtime: one engine, one store per plugin instance.
//!
//! Plugins are components of the `detector-plugin` or `alert-handler-plugin`
//! world. Each instance gets a WASI context that grants nothing (no files,
//! sockets, environment, args or stdio; both clocks frozen at zero, since time
//! reaches a plugin only through the batch), a memory cap over all its
//! memories and tables charged to its tenant's budget, caps on its number of
//! instances, tables and memories, and a deadline on every call. An alert
//! handler may also ask its tenant's [`Egress`] to send. Whatever a plugin
//! does, the host gets a [`PluginFault`] back, never a crash.
//!
//! The deadline holds whatever the guest does. Wasm code that runs too long
//! is stopped by epoch interruption; a guest that waits inside a WASI host
//! call (a sleep, a `poll` on a timer or a stream) is not running wasm, so
//! every call runs as a future under a timeout of the same length, and the
//! timeout drops it, which ends the host call and unwinds the guest. The
//! alternative, trapping every capability that can block, would have to
//! track each WASI interface that ever blocks and would break guests that
//! poll with a zero timeout; cancelling the future bounds them all. Calls
//! run on the calling thread, inside a small tokio runtime of that thread
//! (WASI's timers need one); a sync call costs the same (one fiber stack per
//! store, reused by its calls).

mod cache;
pub mod egress;
pub mod events;
mod fault;
mod files;
mod host_key;
pub mod lifecycle;
mod limits;
mod loader;
mod projection;
mod stats;
mod window;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker, ResourceTable, TypedFunc};
use wasmtime::{Config, Engine, Store, Trap};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::egress::Egress;
pub use cache::content_hash;
use clean_host_core::bindings::{self, Alert, AlertHandlerPlugin, Analysis, DetectorExports, LogLevel, ProjectedDetectorPlugin};
pub use fault::PluginFault;
pub use files::write_atomically;
use host_key::HostKey;
pub use limits::{cut, InstanceTicket, Limits, TenantBudget, MAX_NAME};
use limits::{CapHit, EpochTicker, MemoryCap};
pub use loader::{load_dir, wasm_files, DetectorPre, LoadError, Manifest, Plugin, PluginKind};
pub use projection::{BatchView, ColumnView, Projection, TextView, ValuesView};
pub use stats::{PluginStats, Status};
pub use window::Window;

/// Most log lines one call may write; the rest are counted, not printed.
const LOG_LINES_PER_CALL: u32 = 100;
/// Longest log line kept, in bytes.
const LOG_LINE_BYTES: usize = 1024;
/// Longest error string of a plugin kept, in bytes.
const MAX_ERROR_BYTES: usize = 1024;
/// Host-side resources (pollables, streams) one store may hold at once.
const MAX_RESOURCES: usize = 10_000;
/// Largest state a detector's `snapshot()` may hand over.
pub const MAX_SNAPSHOT_BYTES: usize = 64 << 20;

/// One configured detector instance, whatever runs it.
pub trait Analyzer: Send {
    fn analyze(&mut self, window: &Arc<Window>) -> Result<Analysis, PluginFault>;
    fn snapshot(&mut self) -> Result<Vec<u8>, PluginFault>;
    fn restore(&mut self, state: &[u8]) -> Result<(), PluginFault>;
}

/// Makes instances of one detector: a wasm plugin, or native code for the benchmark.
pub trait DetectorSource: Send + Sync {
    fn name(&self) -> &str;
    fn version(&self) -> &str;
    /// Tells two builds apart even when their versions agree (a content hash).
    fn fingerprint(&self) -> &str {
        self.version()
    }
    /// A fresh instance, configured with `config` (JSON).
    fn instantiate(&self, config: &str) -> Result<Box<dyn Analyzer>, PluginFault>;
}

/// A clock that always reads zero.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// The data of one plugin's store.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    memory: MemoryCap,
    plugin: String,
    log_lines: u32,
    /// Where an alert handler's requests go (`None` for detectors).
    egress: Option<Arc<Egress>>,
    /// The window a detector is analysing, during `analyze` only.
    window: Option<Arc<Window>>,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// The `types` interface has no functions; its (empty) host trait still needs an impl.
impl bindings::clean_host::plugin::types::Host for PluginState {}

impl bindings::Host for PluginState {
    fn log(&mut self, level: LogLevel, message: String) {
        self.log_lines += 1;
        if self.log_lines > LOG_LINES_PER_CALL {
            return;
        }
        let mut message = message;
        cut(&mut message, LOG_LINE_BYTES);
        let (plugin, message) = (&self.plugin, message.escape_debug());
        match level {
            LogLevel::Debug => tracing::debug!(plugin, "plugin {plugin}: {message}"),
            LogLevel::Info => tracing::info!(plugin, "plugin {plugin}: {message}"),
            LogLevel::Warn => tracing::warn!(plugin, "plugin {plugin}: {message}"),
            LogLevel::Error => tracing::error!(plugin, "plugin {plugin}: {message}"),
        }
    }
}

impl bindings::window::Host for PluginState {
    fn distinct(&mut self, column: u32) -> Option<bindings::window::DistinctValues> {
        self.window.as_ref()?.distinct_values(column).cloned()
    }

    fn sorted(&mut self, column: u32) -> Option<Vec<f64>> {
        self.window.as_ref()?.sorted_values(column).map(<[f64]>::to_vec)
    }
}

impl bindings::handler::clean_host::plugin::egress::Host for PluginState {
    fn post(&mut self, destination: String, content_type: String, body: Vec<u8>) -> Result<(), String> {
        match &self.egress {
            Some(egress) => egress.post(&self.plugin, &destination, &content_type, body),
            None => Err("this plugin may not send anything".into()),
        }
    }
}

/// `turn` taken, and how long taking it waited (on another plugin's compile
/// or describe: time that is not the waiting plugin's own load).
fn take_turn(turn: &std::sync::Mutex<()>) -> (std::sync::MutexGuard<'_, ()>, Duration) {
    let asked = std::time::Instant::now();
    let taken = turn.lock().unwrap_or_else(|p| p.into_inner());
    (taken, asked.elapsed())
}

/// The engine, the linker every plugin is linked with, the compile cache,
/// the host's key, and the turn plugins being loaded take to describe themselves.
pub struct Runtime {
    engine: Engine,
    linker: Linker<PluginState>,
    cache: cache::ComponentCache,
    key: HostKey,
    /// Held while a plugin being loaded answers `describe()`: plugins
    /// loaded side by side would otherwise hold two instances of one
    /// tenant's budget at once, and a tenant sized for one would fail at random.
    describing: std::sync::Mutex<()>,
    _ticker: EpochTicker,
}

impl Runtime {
    /// `data_dir`: whose [`HostKey`] seeds the plugins' hash maps (`None`:
    /// a key for this process only). `cache_dir`: where compiled plugins
    /// are kept between runs, in `cache/`, signed with that folder's own
    /// key (`None`: the data dir; neither: compiled at every start). Hosts
    /// of one user may share it, so that a new one compiles nothing.
    pub fn new(data_dir: Option<&Path>, cache_dir: Option<&Path>) -> wasmtime::Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true).epoch_interruption(true).max_wasm_stack(1 << 20);
        // One function at a time: compiling on both cores took the default
        // run's peak RSS on a fresh clone to 92-98 MiB (the aim is at most
        // 100), one at a time to 83. A cold compile takes ~1.6x as long, once
        // per plugin build, and a plugin rebuilt while the host runs takes
        // one core from the pipelines, not both.
        config.parallel_compilation(false);
        // For profiling plugins with perf (docs/plugin-guide.md): names their functions.
        if std::env::var_os("CLEAN_HOST_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        // wasip2 guests import wasi:cli and friends even when unused; the
        // context below makes every one of them grant nothing. The async
        // linker lets a call's timeout cancel a guest waiting in one of them.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        ProjectedDetectorPlugin::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)?;
        bindings::handler::clean_host::plugin::egress::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)?;
        let cache_dir = cache_dir.or(data_dir);
        let own = data_dir.map(|dir| (dir, HostKey::in_dir(dir)));
        // The cache is signed with its folder's key: the data dir's, unless it has a folder of its own.
        let signed = match (cache_dir, &own) {
            (Some(dir), Some((data, own))) if dir == *data => own.as_ref().ok().map(|key| (dir, key.clone())),
            (Some(dir), _) => match HostKey::in_dir(dir) {
                Ok(key) => Some((dir, key)),
                Err(reason) => {
                    tracing::warn!("compiled plugins are not cached: {reason}");
                    None
                }
            },
            (None, _) => None,
        };
        let key = match own {
            Some((_, Ok(key))) => key,
            Some((dir, Err(reason))) => {
                let also = if cache_dir == Some(dir) { "compiled plugins are not cached, and " } else { "" };
                tracing::warn!("{also}detectors' hash seeds differ at each start: {reason}");
                HostKey::random().map_err(wasmtime::Error::msg)?
            }
            None => HostKey::random().map_err(wasmtime::Error::msg)?,
        };
        // Each writer's temporary names are its own, so none is ever written over: what a
        // killed one left is swept, in the data dir and in a cache folder this host trusts.
        let trusted = signed.as_ref().map(|(dir, _)| *dir).filter(|dir| Some(*dir) != data_dir);
        let compiled = signed.as_ref().map(|(dir, _)| dir.join("cache"));
        let swept: usize = [data_dir, trusted, compiled.as_deref()].into_iter().flatten().map(files::sweep_left_behind).sum();
        if swept > 0 {
            tracing::info!("removed {swept} temporary file(s) that hosts killed mid-write left behind");
        }
        let cache = cache::ComponentCache::new(&engine, signed);
        let ticker = EpochTicker::start(engine.clone());
        Ok(Runtime { engine, linker, cache, key, describing: std::sync::Mutex::new(()), _ticker: ticker })
    }

    fn store(&self, plugin: &str, limits: &Limits, budget: &Arc<TenantBudget>, egress: Option<Arc<Egress>>) -> Store<PluginState> {
        let wasi = WasiCtxBuilder::new()
            .insecure_random_seed(self.key.seed(plugin))
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let mut table = ResourceTable::new();
        // Host-side objects (pollables, streams) a guest may hold at once.
        table.set_max_capacity(MAX_RESOURCES);
        let state = PluginState {
            wasi,
            table,
            memory: MemoryCap::new(limits.memory_bytes(), budget.clone()),
            plugin: plugin.to_string(),
            log_lines: 0,
            egress,
            window: None,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.memory);
        store.epoch_deadline_trap();
        store
    }

    /// A fresh detector instance of `plugin`, configured with `config` (JSON).
    pub fn instantiate(&self, plugin: &Arc<Plugin>, config: &str) -> Result<DetectorInstance, PluginFault> {
        let PluginKind::Detector(pre) = &plugin.kind else {
            return Err(PluginFault::Instantiate(format!("{} is an alert handler, not a detector", plugin.name)));
        };
        let ticket = plugin.budget.admit().map_err(PluginFault::Budget)?;
        let mut store = self.store(&plugin.name, &plugin.limits, &plugin.budget, None);
        let (bindings, projection) = start(&mut store, &plugin.limits, async |s| pre.instantiate(s).await)?;
        let analyze = bindings
            .func_analyze()
            .func()
            .typed(&store)
            .map_err(|e| PluginFault::Instantiate(format!("its analyze does not take the contract's batch: {e}")))?;
        let mut instance = DetectorInstance { store, bindings, analyze, projection: None, plugin: plugin.clone(), _ticket: ticket };
        instance.call(async |b, s| b.call_configure(s, config).await)?;
        if let Some(p) = projection {
            let reads = call_plugin(&mut instance.store, &p, &plugin.name, plugin.limits, async |p, s| p.call_what_it_reads(s).await.map(Ok))?;
            instance.projection = Projection::new(reads)?;
        }
        Ok(instance)
    }

    /// A fresh alert-handler instance of `plugin`, configured with `config`
    /// (JSON), whose requests go to `egress`.
    pub fn instantiate_handler(&self, plugin: &Arc<Plugin>, config: &str, egress: Arc<Egress>) -> Result<HandlerInstance, PluginFault> {
        let PluginKind::AlertHandler(pre) = &plugin.kind else {
            return Err(PluginFault::Instantiate(format!("{} is a detector, not an alert handler", plugin.name)));
        };
        let ticket = plugin.budget.admit().map_err(PluginFault::Budget)?;
        let mut store = self.store(&plugin.name, &plugin.limits, &plugin.budget, Some(egress));
        let bindings = start(&mut store, &plugin.limits, async |s| pre.instantiate_async(s).await)?;
        let mut instance = HandlerInstance { store, bindings, plugin: plugin.clone(), _ticket: ticket };
        instance.call(async |b, s| b.clean_host_plugin_alert_handler().call_configure(s, config).await)?;
        Ok(instance)
    }
}

/// Instantiate a plugin in `store` under its deadline.
fn start<T>(
    store: &mut Store<PluginState>,
    limits: &Limits,
    instantiate: impl AsyncFnOnce(&mut Store<PluginState>) -> wasmtime::Result<T>,
) -> Result<T, PluginFault> {
    store.set_epoch_deadline(limits.deadline_ticks());
    match within(limits.timeout(), instantiate(&mut *store)) {
        Some(Ok(bindings)) => Ok(bindings),
        Some(Err(e)) => Err(instantiate_fault(e, store, limits)),
        None => Err(PluginFault::Instantiate(format!("timed out after {} ms", limits.timeout_ms))),
    }
}

/// `future` run to its end on this thread, or `None` once `timeout` passed
/// (the future is dropped then, which cancels what it was waiting for).
fn within<F: Future>(timeout: std::time::Duration, future: F) -> Option<F::Output> {
    thread_local! {
        static TIMERS: tokio::runtime::Runtime =
            tokio::runtime::Builder::new_current_thread().enable_time().build().expect("start a timer runtime");
    }
    TIMERS.with(|runtime| runtime.block_on(async { tokio::time::timeout(timeout, future).await.ok() }))
}

fn instantiate_fault(error: wasmtime::Error, store: &Store<PluginState>, limits: &Limits) -> PluginFault {
    match classify(error, store, limits) {
        PluginFault::Trap(m) => PluginFault::Instantiate(m),
        other => other,
    }
}

/// Turn a wasmtime error from a call into what happened.
fn classify(error: wasmtime::Error, store: &Store<PluginState>, limits: &Limits) -> PluginFault {
    let memory = &store.data().memory;
    match memory.hit {
        Some(CapHit::Instance) => return PluginFault::MemoryLimit { mib: limits.memory_mib },
        Some(CapHit::Tenant) => return PluginFault::TenantMemory { tenant: memory.budget().tenant.clone(), mib: memory.budget().total_mib() },
        None => {}
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => PluginFault::Timeout { ms: limits.timeout_ms },
        Some(trap) => PluginFault::Trap(trap.to_string()),
        None => PluginFault::Trap(format!("{error:#}")),
    }
}

/// One detector instance serving one pipeline: a store and its bindings.
pub struct DetectorInstance {
    store: Store<PluginState>,
    bindings: DetectorExports,
    /// Its `analyze`, handed a window's lists where they are (type-checked
    /// when instantiated, as `bindings` are).
    analyze: TypedFunc<(BatchView<'static>,), (Result<Analysis, String>,)>,
    /// What it reads of a window, when it said it reads less than all.
    projection: Option<Projection>,
    plugin: Arc<Plugin>,
    _ticket: InstanceTicket,
}

/// One alert-handler instance serving one route of a tenant.
pub struct HandlerInstance {
    store: Store<PluginState>,
    bindings: AlertHandlerPlugin,
    plugin: Arc<Plugin>,
    _ticket: InstanceTicket,
}

/// A loaded plugin as a source of detector instances.
pub struct WasmDetector {
    pub runtime: Arc<Runtime>,
    pub plugin: Arc<Plugin>,
}

impl DetectorSource for WasmDetector {
    fn name(&self) -> &str {
        &self.plugin.name
    }

    fn version(&self) -> &str {
        &self.plugin.info.version
    }

    fn fingerprint(&self) -> &str {
        &self.plugin.fingerprint
    }

    fn instantiate(&self, config: &str) -> Result<Box<dyn Analyzer>, PluginFault> {
        Ok(Box::new(self.runtime.instantiate(&self.plugin, config)?))
    }
}

/// One call into a plugin under its time budget, with its log lines
/// counted and its error string cut.
fn call_plugin<B, R>(
    store: &mut Store<PluginState>,
    bindings: &B,
    name: &str,
    limits: Limits,
    f: impl AsyncFnOnce(&B, &mut Store<PluginState>) -> wasmtime::Result<Result<R, String>>,
) -> Result<R, PluginFault> {
    store.set_epoch_deadline(limits.deadline_ticks());
    let state = store.data_mut();
    state.log_lines = 0;
    // Only a growth refused during this call explains this call's trap.
    state.memory.hit = None;
    let result = within(limits.timeout(), f(bindings, &mut *store));
    let dropped = store.data().log_lines.saturating_sub(LOG_LINES_PER_CALL);
    if dropped > 0 {
        tracing::warn!("plugin {name}: {dropped} more log lines in one call were dropped");
    }
    match result {
        Some(Ok(Ok(r))) => Ok(r),
        Some(Ok(Err(mut message))) => {
            cut(&mut message, MAX_ERROR_BYTES);
            Err(PluginFault::Guest(message))
        }
        Some(Err(e)) => Err(classify(e, store, &limits)),
        None => Err(PluginFault::Timeout { ms: limits.timeout_ms }),
    }
}

impl DetectorInstance {
    fn call<R>(&mut self, f: impl AsyncFnOnce(&DetectorExports, &mut Store<PluginState>) -> wasmtime::Result<Result<R, String>>) -> Result<R, PluginFault> {
        call_plugin(&mut self.store, &self.bindings, &self.plugin.name, self.plugin.limits, f)
    }
}

impl HandlerInstance {
    fn call<R>(&mut self, f: impl AsyncFnOnce(&AlertHandlerPlugin, &mut Store<PluginState>) -> wasmtime::Result<Result<R, String>>) -> Result<R, PluginFault> {
        call_plugin(&mut self.store, &self.bindings, &self.plugin.name, self.plugin.limits, f)
    }

    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// Hand one alert to the handler.
    pub fn handle(&mut self, alert: &Alert) -> Result<(), PluginFault> {
        self.call(async |b, s| b.clean_host_plugin_alert_handler().call_handle(s, alert).await)
    }
}

impl Analyzer for DetectorInstance {
    fn analyze(&mut self, window: &Arc<Window>) -> Result<Analysis, PluginFault> {
        let batch = BatchView::of(window, self.projection.as_ref());
        let analyze: TypedFunc<(BatchView<'_>,), _> = self.analyze;
        self.store.data_mut().window = Some(window.clone());
        let analysis = self.call(async |_, s| analyze.call_async(s, (batch,)).await.map(|(analysis,)| analysis));
        self.store.data_mut().window = None;
        analysis
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, PluginFault> {
        let state = self.call(async |b, s| b.call_snapshot(s).await.map(Ok))?;
        if state.len() > MAX_SNAPSHOT_BYTES {
            return Err(PluginFault::InvalidOutput(format!("a snapshot of {} bytes (at most {} MiB)", state.len(), MAX_SNAPSHOT_BYTES >> 20)));
        }
        Ok(state)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), PluginFault> {
        self.call(async |b, s| b.call_restore(s, state).await)
    }
}
