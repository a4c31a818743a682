//! A tenant as the host runs it: its plugin folder loaded into a catalog,
//! its budget, and its alert handlers with their egress.
//!
//! Isolation comes from structure: a pipeline belongs to one tenant and
//! runs only instances made from that tenant's folder, each in a store of
//! its own charged to the tenant's budget; a tenant's handlers receive only
//! its own pipelines' alerts and can reach only its own destinations.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::alert::handlers::{HandlerPlugins, HandlerRoute, Handlers};
use crate::analysis::{Candidate, Catalog, CatalogEntry};
use crate::config::{TenantConfig, DEFAULT_TENANT};
use crate::egress::Egress;
use crate::runtime::reload::{FolderState, TenantFolder};
use crate::runtime::{load_dir, Limits, LoadError, Plugin, Runtime, TenantBudget, WasmDetector};

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
    pub fn load(
        runtime: &Arc<Runtime>,
        plugins: &Path,
        config: &TenantConfig,
        defaults: Limits,
        mut broken: Option<&mut Vec<LoadError>>,
    ) -> Result<Tenant> {
        let name = config.name.as_str();
        let dir = folder(plugins, name);
        if !dir.is_dir() {
            bail!("tenant {name}: plugin folder {} does not exist", dir.display());
        }
        let limits = Limits {
            memory_mib: config.limits.memory_mib.unwrap_or(defaults.memory_mib),
            timeout_ms: config.limits.timeout_ms.unwrap_or(defaults.timeout_ms),
        };
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
        Ok(Tenant { config: config.clone(), dir, limits, budget, plugins: loaded, shadows, catalog, handler_plugins })
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
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
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
        let handlers =
            Handlers::start(routes, self.handler_plugins.clone(), runtime.clone(), egress, max_failures).map_err(anyhow::Error::msg)?;
        Ok(Some(handlers))
    }
}
