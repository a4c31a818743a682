//! The bottom layer of clean-host: what every other layer speaks.
//!
//! The WIT contract's types, generated once (the batch a detector reads, the
//! findings and alerts it returns, one [`bindings::Severity`] for the whole
//! host, with the order and spelling config and outputs use), and time in
//! milliseconds since the epoch, and secrets named by an environment
//! variable. Nothing here does I/O.

pub mod bindings;
pub mod secret;
mod severity;
pub mod timestamp;
