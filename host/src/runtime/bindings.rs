//! Host-side bindings of the WIT contract, generated once for the whole crate:
//! the detector world, and the alert-handler world sharing its types.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "detector-plugin",
});

/// The alert-handler world; its `types` and `host` are the detector world's.
pub mod handler {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "alert-handler-plugin",
        with: {
            "clean-host:plugin/types": super::clean_host::plugin::types,
            "clean-host:plugin/host": super::clean_host::plugin::host,
        },
    });
}

pub use clean_host::plugin::host::{Host, LogLevel};
pub use clean_host::plugin::types::{
    Alert, Analysis, Batch, Column, ColumnValues, Finding, MetricValue, PluginInfo, Severity, StringColumn,
    TimeBasis, WindowInfo, WindowKind,
};
pub use handler::{AlertHandlerPlugin, AlertHandlerPluginPre};
