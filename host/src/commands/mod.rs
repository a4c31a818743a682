//! One module per command. `main.rs` only parses and dispatches; what the
//! commands share, turning flags and config into tenants and pipelines, is
//! in [`assembly`], the one place a pipeline is put together.

mod assembly;
pub mod check;
pub mod generate;
pub mod plugin;
pub mod run;
