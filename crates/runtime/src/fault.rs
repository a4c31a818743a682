//! What a call into a plugin can come to instead of an answer: whatever the
//! plugin does, the host gets one of these back, never a crash.

/// Why a call into a plugin did not return a usable answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PluginFault {
    #[error("timed out after {ms} ms")]
    Timeout { ms: u64 },
    #[error("exceeded its memory limit of {mib} MiB")]
    MemoryLimit { mib: u64 },
    #[error("exceeded tenant {tenant}'s memory budget of {mib} MiB")]
    TenantMemory { tenant: String, mib: u64 },
    #[error("over its tenant's budget: {0}")]
    Budget(String),
    #[error("trapped: {0}")]
    Trap(String),
    /// The plugin returned an error of its own; the instance is still sound.
    #[error("returned an error: {0}")]
    Guest(String),
    #[error("returned invalid output: {0}")]
    InvalidOutput(String),
    #[error("could not be instantiated: {0}")]
    Instantiate(String),
}

impl PluginFault {
    /// Traps leave an instance in an unknown state: it must be rebuilt.
    pub fn needs_rebuild(&self) -> bool {
        !matches!(self, PluginFault::Guest(_) | PluginFault::InvalidOutput(_))
    }
}
