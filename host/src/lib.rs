//! clean-host: a data-quality monitor for streams whose checks are
//! sandboxed WebAssembly components.
//!
//! This crate is the top layer: the config file, tenants and their budgets,
//! the pipeline threads that join the stream side (`clean-host-stream`) to
//! the quality side (`clean-host-quality`) over the plugin runtime
//! (`clean-host-runtime`), and everything that keeps or serves what they
//! found: the history, logs, alert outputs and handlers, the HTTP API. The
//! binary's commands only turn flags and config into pipelines.

pub mod checkpoint;
pub mod config;
pub mod dispatch;
pub mod history;
pub mod http;
pub mod logging;
#[cfg(feature = "native-detectors")]
pub mod native;
pub mod pipeline;
pub mod reload;
pub mod report;
pub mod scaffold;
pub mod tenant;
