//! Per-store resource limits: a memory cap over all of a plugin's memories
//! (wasmtime's `StoreLimits` caps each memory on its own), and the time budget
//! per call, enforced with epoch interruption.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use wasmtime::{Engine, ResourceLimiter};

/// How often the engine's epoch advances; time budgets are rounded up to it.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits of one plugin instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Linear memory of all the instance's memories together, in MiB.
    pub memory_mib: u64,
    /// Wall time one call may take, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for Limits {
    /// Room for interpreted guests (componentize-py needs tens of MiB and a few
    /// ms per 1000-row call) while a runaway plugin is still stopped quickly.
    fn default() -> Self {
        Limits { memory_mib: 256, timeout_ms: 2000 }
    }
}

impl Limits {
    pub fn memory_bytes(&self) -> usize {
        (self.memory_mib as usize).saturating_mul(1 << 20)
    }

    /// Epoch ticks a call may run for.
    pub fn deadline_ticks(&self) -> u64 {
        self.timeout_ms.div_ceil(EPOCH_TICK.as_millis() as u64) + 1
    }
}

/// Sums every memory of a store against one cap, and remembers whether the
/// cap was what stopped a growth (so a trap can be reported as out of memory).
#[derive(Debug)]
pub struct MemoryCap {
    cap: usize,
    used: usize,
    pub hit: bool,
}

impl MemoryCap {
    pub fn new(cap: usize) -> Self {
        MemoryCap { cap, used: 0, hit: false }
    }
}

/// Most table elements an instance may have.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let next = self.used - current.min(self.used) + desired;
        if next > self.cap {
            self.hit = true;
            return Ok(false);
        }
        self.used = next;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawn epoch thread");
        EpochTicker { stop, thread: Some(thread) }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_cap_counts_all_memories() {
        let mut cap = MemoryCap::new(100);
        assert!(cap.memory_growing(0, 60, None).unwrap());
        assert!(cap.memory_growing(0, 30, None).unwrap());
        assert!(!cap.memory_growing(30, 50, None).unwrap());
        assert!(cap.hit);
        assert!(cap.memory_growing(60, 70, None).unwrap());
    }

    #[test]
    fn deadline_rounds_up() {
        let l = Limits { memory_mib: 1, timeout_ms: 25 };
        assert_eq!(l.deadline_ticks(), 4);
    }
}
