//! A tenant as the host runs it: its plugin folder loaded into a catalog,
//! its budget, and its alert handlers with their egress.
//!
//! Isolation comes from structure: a pipeline belongs to one tenant and
//! runs only instances made from that tenant's folder, each in a store of
//! its own charged to the tenant's budget; a tenant's handlers receive only
//! its own pipelines' alerts and can reach only its own destinations.

mod config;

pub use config::{HandlerConfig, TenantConfig, TenantLimits, DEFAULT_TENANT};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::dispatch::handlers::{HandlerPlugins, HandlerRoute, Handlers};
use crate::reload::{FolderState, TenantFolder};
use clean_host_quality::analysis::{tenant_call_pool, Candidate, Catalog, CatalogEntry};
use clean_host_runtime::egress::{Egress, EgressStats};
use clean_host_runtime::{load_dir, Limits, LoadError, Plugin, Runtime, TenantBudget, WasmDetector};

pub struct Tenant {
    pub config: TenantConfig,
    pub dir: PathBuf,
    pub limits: Limits,
    pub budget: Arc<TenantBudget>,
    /// Detectors and alert handlers of its folder.
    pub plugins: Vec<Arc<Plugin>>,
    /// Shadow versions from `DIR/shadow/`.
    pub shadows: Vec<Arc<Plugin>>,
    pub catalog: Arc<Catalog>,
    /// Its alert-handler plugins, kept current by the folder watcher.
    pub handler_plugins: Arc<HandlerPlugins>,
    /// The threads its detector calls run on.
    pub call_pool: Arc<rayon::ThreadPool>,
}

/// What a tenant's instances use and what its alert delivery came to, as
/// the summary, the status file, the API and `/metrics` show it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TenantStatus {
    pub name: String,
    pub instances: u32,
    pub memory_mib: f64,
    pub rejected_reloads: u64,
    /// Windows of its pipelines the history could not take (its queue was full).
    pub history_dropped_windows: u64,
    /// Alerts its handlers did not handle, by why (tenants with handlers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts_not_handled: Option<NotHandled>,
    /// Its handlers' outbound requests (tenants with handlers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressStats>,
}

/// Alerts a tenant's handlers did not handle, by why; each is still in the
/// outputs and the history.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct NotHandled {
    /// The handlers' queue was full.
    pub queue_full: u64,
    /// The handler their route names was quarantined.
    pub quarantined: u64,
    /// Still queued when the drain at exit ran out of time.
    pub at_exit: u64,
}

impl NotHandled {
    pub fn total(&self) -> u64 {
        self.queue_full + self.quarantined + self.at_exit
    }
}

/// A tenant's plugin folder: the plugins folder itself for `default`.
pub fn folder(plugins: &Path, tenant: &str) -> PathBuf {
    if tenant == DEFAULT_TENANT {
        plugins.to_path_buf()
    } else {
        plugins.join(tenant)
    }
}

impl Tenant {
    /// Load the tenant's folder. A broken file is an error at start, or,
    /// given `broken`, is put there and skipped (for listings).
    pub fn load(runtime: &Arc<Runtime>, plugins: &Path, config: &TenantConfig, defaults: Limits, mut broken: Option<&mut Vec<LoadError>>) -> Result<Tenant> {
        let name = config.name.as_str();
        let dir = folder(plugins, name);
        if !dir.is_dir() {
            bail!("tenant {name}: plugin folder {} does not exist", dir.display());
        }
        let limits =
            Limits { memory_mib: config.limits.memory_mib.unwrap_or(defaults.memory_mib), timeout_ms: config.limits.timeout_ms.unwrap_or(defaults.timeout_ms) };
        let budget = Arc::new(TenantBudget::new(name, config.limits.total_memory_mib, config.limits.max_instances));
        let loaded = load_dir(runtime, &dir, limits, &budget, broken.as_deref_mut()).with_context(|| format!("tenant {name}"))?;
        let shadows = load_dir(runtime, &dir.join("shadow"), limits, &budget, broken).with_context(|| format!("tenant {name}: shadow versions"))?;
        let mut entries = BTreeMap::new();
        for p in loaded.iter().filter(|p| p.is_detector()) {
            let candidate = |p: &Arc<Plugin>| Candidate::new(Arc::new(WasmDetector { runtime: runtime.clone(), plugin: p.clone() }), p.manifest.config.clone());
            let shadow = shadows.iter().find(|s| s.name == p.name).map(candidate);
            entries.insert(p.name.clone(), CatalogEntry { active: candidate(p), shadow });
        }
        if let Some(orphan) = shadows.iter().find(|s| !entries.contains_key(&s.name)) {
            bail!("tenant {name}: shadow {} has no active detector of that name", orphan.path.display());
        }
        let catalog = Catalog::new(name, entries);
        let handler_plugins = HandlerPlugins::new(loaded.iter().filter(|p| !p.is_detector()).cloned());
        let call_pool = tenant_call_pool(name);
        Ok(Tenant { config: config.clone(), dir, limits, budget, plugins: loaded, shadows, catalog, handler_plugins, call_pool })
    }

    /// A tenant whose detectors are native code (benchmark builds, `--native`).
    pub fn native(config: &TenantConfig, detectors: Vec<Candidate>) -> Tenant {
        let entries = detectors.into_iter().map(|c| (c.source.name().to_string(), CatalogEntry { active: c, shadow: None })).collect();
        Tenant {
            config: config.clone(),
            dir: PathBuf::new(),
            limits: Limits::default(),
            budget: TenantBudget::unshared(),
            plugins: Vec::new(),
            shadows: Vec::new(),
            catalog: Catalog::new(&config.name, entries),
            handler_plugins: HandlerPlugins::new([]),
            call_pool: tenant_call_pool(&config.name),
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Its status now, with its handlers' counters and its pipelines' history drops.
    pub fn status(&self, handlers: Option<&Handlers>, history_dropped_windows: u64) -> TenantStatus {
        use std::sync::atomic::Ordering::Relaxed;
        TenantStatus {
            name: self.name().to_string(),
            instances: self.budget.instances(),
            memory_mib: (self.budget.used_bytes() as f64 / (1 << 20) as f64 * 10.0).round() / 10.0,
            rejected_reloads: self.catalog.rejected.load(Relaxed),
            history_dropped_windows,
            alerts_not_handled: handlers.map(|h| NotHandled {
                queue_full: h.unhandled.queue_full.load(Relaxed),
                quarantined: h.unhandled.quarantined.load(Relaxed),
                at_exit: h.unhandled.at_exit.load(Relaxed),
            }),
            egress: handlers.map(|h| (*h.egress.stats).clone()),
        }
    }

    /// What the folder watcher needs to follow this tenant's folder.
    pub fn folder_state(&self) -> FolderState {
        let folder = TenantFolder {
            dir: self.dir.clone(),
            limits: self.limits,
            budget: self.budget.clone(),
            catalog: self.catalog.clone(),
            handlers: self.handler_plugins.clone(),
        };
        let loaded: Vec<Arc<Plugin>> = self.plugins.iter().chain(&self.shadows).cloned().collect();
        FolderState::new(folder, &loaded)
    }

    /// Start its egress and alert handlers (`None` when it has no handlers).
    pub fn start_handlers(&self, runtime: &Arc<Runtime>, max_failures: u32) -> Result<Option<Arc<Handlers>>> {
        if self.config.handlers.is_empty() {
            return Ok(None);
        }
        let name = self.name();
        let mut routes = Vec::new();
        for h in &self.config.handlers {
            let plugin = self.plugins.iter().find(|p| p.name == h.plugin && !p.is_detector()).with_context(|| {
                let have: Vec<&str> = self.plugins.iter().filter(|p| !p.is_detector()).map(|p| p.name.as_str()).collect();
                format!("tenant {name}: no alert-handler plugin named '{}' in {} (have: {})", h.plugin, self.dir.display(), have.join(", "))
            })?;
            routes.push(HandlerRoute {
                plugin: plugin.clone(),
                config: serde_json::to_string(&h.config)?,
                min_severity: h.min_severity,
                pipelines: h.pipelines.clone(),
            });
        }
        let egress = Egress::start(name, &self.config.egress).map_err(anyhow::Error::msg)?;
        let handlers = Handlers::start(routes, self.handler_plugins.clone(), runtime.clone(), egress, max_failures).map_err(anyhow::Error::msg)?;
        Ok(Some(handlers))
    }
}
