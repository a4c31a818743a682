//! A tenant's alert-handler plugins, on a thread of their own.
//!
//! The analysis threads hand alerts over through a bounded queue and never
//! wait: when it is full the alert is still in the outputs, and the handlers'
//! copy is counted as not handled (and left out of the alert ledger, so a
//! replay hands it over again). Alerts a quarantined handler does not get and
//! alerts still queued when the drain at exit runs out of time are counted too. The handler thread calls each matching
//! handler in turn; a handler's requests go to the tenant's [`Egress`].
//! Faults are contained like a detector's: a trap rebuilds the instance, and
//! `max_failures` faults in a row quarantine the handler. A new build of a
//! handler's plugin (see [`HandlerPlugins`]) takes over before the next alert;
//! one that rejects its config leaves the running version in place.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};

use clean_host_core::bindings::Alert;
use clean_host_core::bindings::Severity;
use clean_host_runtime::egress::{join_within, Egress};
use clean_host_runtime::{CallCounters, PluginStats, Status};
use clean_host_runtime::{HandlerInstance, Plugin, Runtime};

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

/// One handler instance and its counters.
struct Handler {
    route: HandlerRoute,
    instance: Option<HandlerInstance>,
    status: Status,
    counters: CallCounters,
    reloads: u64,
}

impl Handler {
    /// Switch to the newest build of its plugin, if there is one that starts.
    fn follow(&mut self, plugins: &HandlerPlugins, runtime: &Runtime, egress: &Arc<Egress>) {
        let Some(newest) = plugins.get(&self.route.plugin.name) else { return };
        if newest.fingerprint == self.route.plugin.fingerprint {
            return;
        }
        let name = &newest.name;
        match runtime.instantiate_handler(&newest, &self.route.config, egress.clone()) {
            Ok(instance) => {
                tracing::info!("alert handler {name} {} -> {}", self.route.plugin.info.version, newest.info.version);
                self.route.plugin = newest;
                self.instance = Some(instance);
                self.status = Status::Active;
                self.counters.failures_in_row = 0;
                self.reloads += 1;
            }
            Err(fault) => tracing::warn!("alert handler {name}: the new build could not start ({fault}); the running one stays"),
        }
    }

    /// Whether its route takes `alert`, whatever the handler's status.
    fn routed(&self, alert: &Alert) -> bool {
        alert.severity >= self.route.min_severity && self.route.pipelines.as_ref().is_none_or(|p| p.contains(&alert.pipeline))
    }

    fn handle(&mut self, alert: &Alert, runtime: &Runtime, egress: &Arc<Egress>, max_failures: u32) {
        let started = Instant::now();
        let result = match &mut self.instance {
            Some(instance) => instance.handle(alert),
            None => runtime.instantiate_handler(&self.route.plugin, &self.route.config, egress.clone()).and_then(|mut fresh| {
                let handled = fresh.handle(alert);
                self.instance = Some(fresh);
                handled
            }),
        };
        self.counters.record(started.elapsed(), &result, &mut self.instance);
        if let Err(fault) = result {
            let name = &self.route.plugin.name;
            tracing::warn!("alert handler {name} {fault}");
            if self.counters.failures_in_row >= max_failures {
                tracing::warn!("alert handler {name} quarantined after {max_failures} failed calls in a row");
                self.status = Status::Quarantined;
                self.instance = None;
            }
        }
    }

    fn stats(&self) -> PluginStats {
        let plugin = &self.route.plugin;
        PluginStats {
            tenant: plugin.tenant().to_string(),
            name: plugin.name.clone(),
            kind: "alert-handler".into(),
            version: plugin.info.version.clone(),
            fingerprint: plugin.fingerprint.chars().take(12).collect(),
            reloads: self.reloads,
            ..self.counters.stats(self.status)
        }
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
            let instance = runtime
                .instantiate_handler(&route.plugin, &route.config, egress.clone())
                .map_err(|f| format!("tenant {tenant}: alert handler {}: {f}", route.plugin.name))?;
            handlers.push(Handler { route, instance: Some(instance), status: Status::Active, counters: CallCounters::default(), reloads: 0 });
        }
        let stats = Arc::new(Mutex::new(handlers.iter().map(Handler::stats).collect()));
        let unhandled = Arc::new(Unhandled::default());
        let (tx, rx) = bounded(ALERT_QUEUE);
        let thread = {
            let (stats, egress, unhandled, rx) = (stats.clone(), egress.clone(), unhandled.clone(), rx.clone());
            let run = move || run(handlers, rx, (&plugins, &runtime, &egress), max_failures.max(1), &stats, &unhandled);
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

fn run(
    mut handlers: Vec<Handler>,
    rx: Receiver<Alert>,
    (plugins, runtime, egress): (&HandlerPlugins, &Runtime, &Arc<Egress>),
    max_failures: u32,
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
            if handler.status == Status::Active {
                handler.handle(&alert, runtime, egress, max_failures);
            } else {
                unhandled.quarantined.fetch_add(1, Ordering::Relaxed);
            }
        }
        *stats.lock().unwrap_or_else(|p| p.into_inner()) = handlers.iter().map(Handler::stats).collect();
    }
}
