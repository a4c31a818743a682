//! `[[tenants]]` in the config file: a team, its budgets, alert rules,
//! egress and alert handlers.

use clean_host_core::bindings::Severity;
use clean_host_quality::alert::AlertConfig;
use clean_host_runtime::egress::EgressConfig;
use serde::{Deserialize, Serialize};

/// The tenant a pipeline belongs to when it names none; its plugins are the
/// `.wasm` files directly in the plugins folder.
pub const DEFAULT_TENANT: &str = "default";

/// One team: its plugins (`PLUGINS/<name>/`, or PLUGINS itself for
/// `default`), budgets, alert rules, alert handlers and egress allow list.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Letters, digits, `-` and `_`; also the name of its plugin folder.
    pub name: String,
    /// Its memory and instance budgets.
    #[serde(default)]
    pub limits: TenantLimits,
    /// Alert rules of its pipelines (default: the top-level `[alerts]`).
    #[serde(default)]
    pub alerts: Option<AlertConfig>,
    /// Where its alert handlers may send, and how.
    #[serde(default)]
    pub egress: EgressConfig,
    /// Alert-handler plugins that receive its pipelines' alerts.
    #[serde(default)]
    pub handlers: Vec<HandlerConfig>,
    /// Bearer token for its HTTP API and `/metrics` (may be `env:VAR`;
    /// default: a random one kept in `DATA_DIR/api-tokens/NAME`).
    #[serde(default)]
    pub api_token: Option<String>,
}

impl TenantConfig {
    pub fn new(name: &str) -> Self {
        TenantConfig {
            name: name.into(),
            limits: TenantLimits::default(),
            alerts: None,
            egress: EgressConfig::default(),
            handlers: Vec::new(),
            api_token: None,
        }
    }
}

/// What a tenant's plugin instances may use.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantLimits {
    /// Linear memory per instance, in MiB (default: the top-level `limits`).
    pub memory_mib: Option<u64>,
    /// Wall time per call, in milliseconds (default: the top-level `limits`).
    pub timeout_ms: Option<u64>,
    /// Live plugin instances at once: detectors (one per partition read) and
    /// their shadows of all its pipelines, and its handlers.
    pub max_instances: u32,
    /// Linear memory of all its instances together, in MiB.
    pub total_memory_mib: u64,
}

impl Default for TenantLimits {
    fn default() -> Self {
        TenantLimits { memory_mib: None, timeout_ms: None, max_instances: 1024, total_memory_mib: 4096 }
    }
}

/// One alert handler of a tenant.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerConfig {
    /// The handler plugin's name, from the tenant's plugin folder.
    pub plugin: String,
    /// Alerts below this severity are not handed to it.
    #[serde(default = "HandlerConfig::default_severity")]
    pub min_severity: Severity,
    /// Only alerts of these pipelines (default: all the tenant's).
    #[serde(default)]
    pub pipelines: Option<Vec<String>>,
    /// Handed to its `configure()` as JSON (e.g. `destination = "ops-slack"`).
    #[serde(default)]
    pub config: toml::Table,
}

impl HandlerConfig {
    fn default_severity() -> Severity {
        Severity::Warning
    }
}
