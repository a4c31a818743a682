//! Plugin events (`loaded`, `swapped`, `added`, `removed`, `rejected`,
//! `promoted`, `shadow_loaded`, `shadow_started`, `rolled_back`,
//! `rollback_failed`, `quarantined`, `shadow_quarantined`): logged through
//! `tracing` with one target and the
//! fields `tenant`, `pipeline`, `plugin` and `event`, so whatever layer
//! keeps logs (the host's history) finds every one of them, whichever part
//! of the host raised it.

use tracing::Level;

/// The target plugin events are logged with.
pub const PLUGIN_EVENT: &str = "plugin_event";

/// Log something that happened to a plugin.
pub fn plugin_event(level: Level, tenant: &str, pipeline: Option<&str>, plugin: &str, event: &str, message: &str) {
    match level {
        Level::ERROR | Level::WARN => tracing::warn!(target: PLUGIN_EVENT, tenant, pipeline, plugin, event, "{message}"),
        _ => tracing::info!(target: PLUGIN_EVENT, tenant, pipeline, plugin, event, "{message}"),
    }
}
