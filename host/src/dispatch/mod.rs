//! Where routed alerts go: the built-in outputs, the ledger that remembers
//! which broker windows' alerts went out, and the tenants' alert handlers.
//! The quality side decides what alerts; this module is its I/O.

pub mod handlers;
mod ledger;
mod output;

pub use ledger::{AlertKey, AlertLedger};
pub use output::{OutputConfig, OutputFormat, Outputs};
