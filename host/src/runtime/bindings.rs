//! Host-side bindings of the WIT contract, generated once for the whole crate.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "detector-plugin",
});

pub use clean_host::plugin::host::{Host, LogLevel};
pub use clean_host::plugin::types::{
    Analysis, Batch, Column, ColumnValues, Finding, MetricValue, PluginInfo, Severity, StringColumn,
    TimeBasis, WindowInfo, WindowKind,
};
