//! The quality side of clean-host: from a window's batch to its alerts.
//!
//! [`analysis`] runs a pipeline's detectors on a window and checks their
//! answers, [`spc`] watches metrics across windows with control rules, and
//! [`alert`] decides which findings page someone (severity, confidence,
//! cooldown, incidents). No files, sockets or databases: the host binary
//! stores and delivers what this crate decides.

pub mod alert;
pub mod analysis;
pub mod spc;
