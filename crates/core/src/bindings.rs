//! Host-side bindings of the WIT contract, generated once for the whole crate:
//! the detector world with its optional `projection` export (a detector's
//! exports are looked up one interface at a time, so a plugin without it
//! loads too), and the alert-handler world sharing its types.
//! Exports are async so a call can be bounded by its deadline even while the
//! guest waits inside a WASI host call; the host's own imports stay sync.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "projected-detector-plugin",
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
pub use clean_host::plugin::window;
pub use exports::clean_host::plugin::detector::{Guest as DetectorExports, GuestIndices as DetectorIndices};
pub use exports::clean_host::plugin::projection::{BatchParts, Guest as ProjectionExports, GuestIndices as ProjectionIndices, Reads};
pub use handler::{AlertHandlerPlugin, AlertHandlerPluginPre};

/// A row's state in a column's `validity`, as the contract numbers them.
pub mod row_state {
    pub const PRESENT: u8 = 0;
    pub const NULL: u8 = 1;
    pub const MISSING: u8 = 2;
    pub const WRONG_TYPE: u8 = 3;

    /// Whether `row` holds a value, by a column's `validity` (empty: every row does).
    pub fn is_present(validity: &[u8], row: usize) -> bool {
        validity.get(row).is_none_or(|&s| s == PRESENT)
    }

    /// The `values` whose row holds one, in two parts: those of the rows
    /// `validity` has a state for (read alongside the states, not each row
    /// through [`is_present`]), and the rows past it, every one present
    /// (states may end early; a column with every row present has none).
    /// Two parts, not one chained iterator, so a hot loop takes each whole.
    pub fn present_values<'a, T>(values: &'a [T], validity: &'a [u8]) -> (impl Iterator<Item = &'a T>, &'a [T]) {
        let (stated, rest) = values.split_at(validity.len().min(values.len()));
        (stated.iter().zip(validity).filter(|&(_, &state)| state == PRESENT).map(|(x, _)| x), rest)
    }
}
