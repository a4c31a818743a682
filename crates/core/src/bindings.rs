//! Host-side bindings of the WIT contract, generated once for the whole crate:
//! the detector world, and the alert-handler world sharing its types.
//! Exports are async so a call can be bounded by its deadline even while the
//! guest waits inside a WASI host call; the host's own imports stay sync.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "detector-plugin",
    exports: { default: async },
});

/// The alert-handler world; its `types` and `host` are the detector world's.
pub mod handler {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "alert-handler-plugin",
        exports: { default: async },
        with: {
            "clean-host:plugin/types": super::clean_host::plugin::types,
            "clean-host:plugin/host": super::clean_host::plugin::host,
        },
    });
}

pub use clean_host::plugin::host::{Host, LogLevel};
pub use clean_host::plugin::types::{
    Alert, Analysis, Batch, Column, ColumnValues, Finding, MetricValue, PluginInfo, Severity, StringColumn, TimeBasis, WindowInfo, WindowKind,
};
pub use handler::{AlertHandlerPlugin, AlertHandlerPluginPre};
