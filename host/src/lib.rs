//! clean-host: a data-quality monitor for streams whose checks are
//! sandboxed WebAssembly components.
//!
//! The library is the whole host; the binary's commands only turn flags and
//! config into pipelines. It is a library so benchmarks can reach the hot
//! path (the decoder).

pub mod alert;
pub mod analysis;
pub mod config;
pub mod dead_letter;
pub mod decode;
pub mod egress;
pub mod history;
pub mod http;
pub mod logging;
#[cfg(feature = "native-detectors")]
pub mod native;
pub mod pipeline;
pub mod report;
pub mod runtime;
pub mod scaffold;
pub mod source;
pub mod spc;
#[cfg(test)]
mod temp_dir;
pub mod tenant;
pub mod timestamp;
pub mod window;
