//! The bottom layer of clean-host: what every other layer speaks.
//!
//! The WIT contract's types, generated once (the batch a detector reads, the
//! findings and alerts it returns, one [`bindings::Severity`] for the whole
//! host, with the order and spelling config and outputs use), and time in
//! milliseconds since the epoch, secrets named by an environment variable,
//! the words for an HTTP client's errors, the short byte strings' equality
//! the hot paths share, and the scheduling class of the threads that do the
//! bulk work. Nothing here does I/O.

pub mod bindings;
#[cfg(feature = "http")]
pub mod http_error;
pub mod scheduling;
pub mod secret;
mod severity;
pub mod short_bytes;
pub mod timestamp;
