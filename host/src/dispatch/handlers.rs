//! A tenant's alert-handler plugins, on a thread of their own.
//!
//! The analysis threads hand alerts over through a bounded queue and never
//! wait: when it is full the alert is still in the outputs, and the handlers'
//! copy is counted as not handled (and left out of the alert ledger, so a
//! replay hands it over again). Alerts a quarantined handler does not get and
//! alerts still queued when the drain at exit runs out of time are counted
//! too. The handler thread calls each matching handler in turn; a handler's
//! requests go to the tenant's [`Egress`].
//!
//! Each handler runs under the same plugin lifecycle as a detector
//! ([`Lifecycle`]): a trap rebuilds the instance, `max_failures` faults in a
//! row quarantine it, a new build of its plugin (see [`HandlerPlugins`])
//! takes over before the next alert and is on probation, rolled back if it
//! fails on its first alerts, and one that rejects its config leaves the
//! running build in place; each change is a plugin event. Handlers keep no
//! state and run no shadow (a shadow would send its requests too).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};

use clean_host_core::bindings::{Alert, Severity};
use clean_host_runtime::egress::{join_within, Egress};
use clean_host_runtime::lifecycle::{AfterFault, Build, Fault, Lifecycle, Owner};
use clean_host_runtime::{HandlerInstance, Plugin, PluginFault, PluginStats, Runtime};

/// Alerts waiting for the handlers, at most.
const ALERT_QUEUE: usize = 1000;

/// A tenant's alert-handler plugins by name, as the folder watcher last saw them.
pub struct HandlerPlugins {
    generation: AtomicU64,
    plugins: Mutex<BTreeMap<String, Arc<Plugin>>>,
}

impl HandlerPlugins {
    pub fn new(plugins: impl IntoIterator<Item = Arc<Plugin>>) -> Arc<Self> {
        let plugins = plugins.into_iter().map(|p| (p.name.clone(), p)).collect();
        Arc::new(HandlerPlugins { generation: AtomicU64::new(0), plugins: Mutex::new(plugins) })
    }

    /// A new build of a handler plugin was loaded.
    pub fn replace(&self, plugin: Arc<Plugin>) {
        self.plugins.lock().unwrap_or_else(|p| p.into_inner()).insert(plugin.name.clone(), plugin);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.plugins.lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }
}

/// Which alerts one handler gets, and its config.
pub struct HandlerRoute {
    pub plugin: Arc<Plugin>,
    /// JSON for `configure()`.
    pub config: String,
    pub min_severity: Severity,
    /// Only these pipelines' alerts (`None`: all the tenant's).
    pub pipelines: Option<Vec<String>>,
}

/// A handler plugin's build, as the plugin lifecycle starts it.
#[derive(Clone)]
struct HandlerBuild {
    plugin: Arc<Plugin>,
    runtime: Arc<Runtime>,
    egress: Arc<Egress>,
}

impl Build for HandlerBuild {
    type Instance = HandlerInstance;
    const KIND: &'static str = "alert-handler";
    const NOUN: &'static str = "alert handler";

    fn version(&self) -> &str {
        &self.plugin.info.version
    }

    fn fingerprint(&self) -> &str {
        &self.plugin.fingerprint
    }

    fn start(&self, config: &str) -> Result<HandlerInstance, PluginFault> {
        self.runtime.instantiate_handler(&self.plugin, config, self.egress.clone())
    }
}

/// One handler: its route and its plugin's lifecycle.
struct Handler {
    route: HandlerRoute,
    lifecycle: Lifecycle<HandlerBuild>,
}

impl Handler {
    /// Switch to the newest build of its plugin, if there is one that starts.
    fn follow(&mut self, plugins: &HandlerPlugins, runtime: &Arc<Runtime>, egress: &Arc<Egress>) {
        let Some(plugin) = plugins.get(&self.route.plugin.name) else { return };
        let newest = HandlerBuild { plugin, runtime: runtime.clone(), egress: egress.clone() };
        // A build that cannot take over is logged as a plugin event; the running one stays.
        let _ = self.lifecycle.follow(&newest, None, self.route.config.clone());
    }

    /// Whether its route takes `alert`, whatever the handler's status.
    fn routed(&self, alert: &Alert) -> bool {
        alert.severity >= self.route.min_severity && self.route.pipelines.as_ref().is_none_or(|p| p.contains(&alert.pipeline))
    }

    /// Hand `alert` over; false if the handler no longer runs (quarantined).
    fn handle(&mut self, alert: &Alert) -> bool {
        let Some(result) = self.lifecycle.call(0, |instance| instance.handle(alert)) else { return false };
        if let Err(Fault { fault, then, .. }) = result {
            let name = self.lifecycle.name();
            tracing::warn!("alert handler {name} {fault}");
            if let AfterFault::RolledBack { retried: Err(again), .. } = then {
                tracing::warn!("alert handler {name} (the build rolled back to) {again}");
            }
        }
        true
    }
}

/// Alerts the handlers of a tenant did not handle, by why.
#[derive(Debug, Default)]
pub struct Unhandled {
    /// Their queue was full when the alert came.
    pub queue_full: AtomicU64,
    /// A handler their route sends them to was quarantined.
    pub quarantined: AtomicU64,
    /// Still queued when the drain at exit ran out of time.
    pub at_exit: AtomicU64,
}

/// One tenant's alert handlers and their queue.
pub struct Handlers {
    tenant: String,
    queue: Mutex<Option<Sender<Alert>>>,
    /// The queue's other end, to count what is left in it at exit.
    pending: Receiver<Alert>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    stats: Arc<Mutex<Vec<PluginStats>>>,
    pub unhandled: Arc<Unhandled>,
    pub egress: Arc<Egress>,
}

impl Handlers {
    /// Instantiate and configure every handler (a config it rejects is an
    /// error naming it), then start the handler thread.
    pub fn start(
        routes: Vec<HandlerRoute>,
        plugins: Arc<HandlerPlugins>,
        runtime: Arc<Runtime>,
        egress: Arc<Egress>,
        max_failures: u32,
    ) -> Result<Arc<Self>, String> {
        let tenant = egress.tenant().to_string();
        let mut handlers = Vec::new();
        for route in routes {
            let build = HandlerBuild { plugin: route.plugin.clone(), runtime: runtime.clone(), egress: egress.clone() };
            let owner = Owner { tenant: tenant.clone(), pipeline: None };
            let lifecycle = Lifecycle::start(&route.plugin.name, owner, build, route.config.clone(), None, max_failures)
                .map_err(|f| format!("tenant {tenant}: alert handler {}: {f}", route.plugin.name))?;
            handlers.push(Handler { route, lifecycle });
        }
        let stats = Arc::new(Mutex::new(stats_of(&handlers)));
        let unhandled = Arc::new(Unhandled::default());
        let (tx, rx) = bounded(ALERT_QUEUE);
        let thread = {
            let (stats, egress, unhandled, rx) = (stats.clone(), egress.clone(), unhandled.clone(), rx.clone());
            let run = move || run(handlers, rx, (&plugins, &runtime, &egress), &stats, &unhandled);
            std::thread::Builder::new()
                .name(format!("{tenant}-handlers"))
                .spawn(run)
                .map_err(|e| format!("tenant {tenant}: starting the alert handlers: {e}"))?
        };
        Ok(Arc::new(Handlers { tenant, queue: Mutex::new(Some(tx)), pending: rx, thread: Mutex::new(Some(thread)), stats, unhandled, egress }))
    }

    /// Hand an alert over without waiting; false if the queue did not take it.
    pub fn send(&self, alert: Alert) -> bool {
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        match queue.as_ref().map(|tx| tx.try_send(alert).is_ok()) {
            Some(true) => true,
            _ => {
                let missed = self.unhandled.queue_full.fetch_add(1, Ordering::Relaxed) + 1;
                if missed.is_power_of_two() {
                    tracing::warn!("tenant {}: alert handlers are behind; {missed} alert(s) not handed to them so far", self.tenant);
                }
                false
            }
        }
    }

    /// Let the handlers finish the queued alerts and the deliveries finish,
    /// within `grace` each; count the alerts left in the queue.
    pub fn finish(&self, grace: Duration) {
        drop(self.queue.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            if !join_within(thread, grace) {
                let left = self.pending.len() as u64;
                self.unhandled.at_exit.fetch_add(left, Ordering::Relaxed);
                tracing::warn!("tenant {}: alert handlers still busy at exit; {left} queued alert(s) not handled", self.tenant);
            }
        }
        self.egress.finish(grace);
    }

    pub fn stats(&self) -> Vec<PluginStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn stats_of(handlers: &[Handler]) -> Vec<PluginStats> {
    handlers.iter().flat_map(|h| h.lifecycle.stats()).collect()
}

fn run(
    mut handlers: Vec<Handler>,
    rx: Receiver<Alert>,
    (plugins, runtime, egress): (&HandlerPlugins, &Arc<Runtime>, &Arc<Egress>),
    stats: &Mutex<Vec<PluginStats>>,
    unhandled: &Unhandled,
) {
    let mut seen = plugins.generation.load(Ordering::Acquire);
    while let Ok(alert) = rx.recv() {
        let generation = plugins.generation.load(Ordering::Acquire);
        if generation != seen {
            seen = generation;
            for handler in &mut handlers {
                handler.follow(plugins, runtime, egress);
            }
        }
        for handler in handlers.iter_mut().filter(|h| h.routed(&alert)) {
            if !handler.handle(&alert) {
                unhandled.quarantined.fetch_add(1, Ordering::Relaxed);
            }
        }
        *stats.lock().unwrap_or_else(|p| p.into_inner()) = stats_of(&handlers);
    }
}
