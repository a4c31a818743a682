//! Per-store resource limits: a memory cap over all of a plugin's memories
//! and tables (wasmtime's `StoreLimits` caps each memory on its own), caps
//! on how many core instances, memories and tables a store may hold, the
//! time budget per call (see the runtime's deadline), and each tenant's
//! budget over all its instances together (total memory, number of instances).

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmtime::{Engine, ResourceLimiter};

/// How often the engine's epoch advances; time budgets are rounded up to it.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits of one plugin instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
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

    /// Wall time a call may take.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// What one tenant's instances may use together.
#[derive(Debug)]
pub struct TenantBudget {
    pub tenant: String,
    total_bytes: usize,
    used_bytes: AtomicUsize,
    max_instances: u32,
    instances: AtomicU32,
}

impl TenantBudget {
    pub fn new(tenant: &str, total_memory_mib: u64, max_instances: u32) -> Self {
        TenantBudget {
            tenant: tenant.to_string(),
            total_bytes: (total_memory_mib as usize).saturating_mul(1 << 20),
            used_bytes: AtomicUsize::new(0),
            max_instances,
            instances: AtomicU32::new(0),
        }
    }

    /// A budget nothing shares (`plugin list --json` measurements, tests).
    pub fn unshared() -> Arc<Self> {
        Arc::new(TenantBudget::new("default", u64::MAX >> 20, u32::MAX))
    }

    pub fn total_mib(&self) -> u64 {
        (self.total_bytes >> 20) as u64
    }

    /// Linear memory all the tenant's live instances hold, in bytes.
    pub fn used_bytes(&self) -> usize {
        self.used_bytes.load(Ordering::Relaxed)
    }

    pub fn instances(&self) -> u32 {
        self.instances.load(Ordering::Relaxed)
    }

    /// Count one more live instance, if the tenant may have it.
    pub fn admit(self: &Arc<Self>) -> Result<InstanceTicket, String> {
        let admitted = self.instances.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max_instances).then_some(n + 1));
        match admitted {
            Ok(_) => Ok(InstanceTicket(self.clone())),
            Err(n) => Err(format!("tenant {} already has {n} instances (max_instances = {})", self.tenant, self.max_instances)),
        }
    }

    fn reserve(&self, bytes: usize) -> bool {
        self.used_bytes.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| used.checked_add(bytes).filter(|&next| next <= self.total_bytes)).is_ok()
    }

    fn release(&self, bytes: usize) {
        self.used_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// One live instance counted against its tenant; dropping it gives the slot back.
#[derive(Debug)]
pub struct InstanceTicket(Arc<TenantBudget>);

impl Drop for InstanceTicket {
    fn drop(&mut self) {
        self.0.instances.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Which cap stopped a memory growth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapHit {
    Instance,
    Tenant,
}

/// Sums every memory and table of a store against one cap and against its
/// tenant's budget, and remembers which cap stopped a growth (so a trap can
/// be reported as out of memory). The store's memory goes back to the tenant
/// when the store is dropped.
#[derive(Debug)]
pub struct MemoryCap {
    cap: usize,
    used: usize,
    budget: Arc<TenantBudget>,
    pub hit: Option<CapHit>,
}

impl MemoryCap {
    pub fn new(cap: usize, budget: Arc<TenantBudget>) -> Self {
        MemoryCap { cap, used: 0, budget, hit: None }
    }
}

impl MemoryCap {
    pub fn budget(&self) -> &TenantBudget {
        &self.budget
    }
}

impl Drop for MemoryCap {
    fn drop(&mut self) {
        self.budget.release(self.used);
    }
}

/// Bytes a table element is counted as (a pointer).
const TABLE_ELEMENT_BYTES: usize = 8;
/// Core instances one store may create (a component holds several: its
/// modules, the WASI adapter; interpreted guests a dozen or so).
pub const MAX_INSTANCES: usize = 64;
/// Memories all the store's core instances may define together.
pub const MAX_MEMORIES: usize = 16;
/// Tables all the store's core instances may define together.
pub const MAX_TABLES: usize = 64;

impl MemoryCap {
    /// Let one memory or table of the store go from `current` to `desired` bytes.
    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let next = (self.used - current.min(self.used)).saturating_add(desired);
        if next > self.cap {
            self.hit = Some(CapHit::Instance);
            return false;
        }
        if next > self.used && !self.budget.reserve(next - self.used) {
            self.hit = Some(CapHit::Tenant);
            return false;
        }
        self.budget.release(self.used.saturating_sub(next));
        self.used = next;
        true
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(self.grow(current, desired))
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(self.grow(current.saturating_mul(TABLE_ELEMENT_BYTES), desired.saturating_mul(TABLE_ELEMENT_BYTES)))
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped; a drop
/// ends its thread at once (a sleeping ticker held every exit up to a tick).
pub struct EpochTicker {
    /// Dropped to stop the ticker: its wait for the next tick ends then.
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: Engine) -> Self {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("epoch".into())
            .spawn(move || {
                while stopped.recv_timeout(EPOCH_TICK) == Err(crossbeam_channel::RecvTimeoutError::Timeout) {
                    engine.increment_epoch();
                }
            })
            .expect("spawn epoch thread");
        EpochTicker { stop: Some(stop), thread: Some(thread) }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Longest metric or column name a plugin's answer keeps, in bytes.
pub const MAX_NAME: usize = 128;

/// `text` cut to at most `max` bytes at a character boundary, ending in
/// `…` when something was cut.
pub fn cut(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut at = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    text.truncate(at);
    text.push('…');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_cap_counts_all_memories() {
        let mut cap = MemoryCap::new(100, TenantBudget::unshared());
        assert!(cap.memory_growing(0, 60, None).unwrap());
        assert!(cap.memory_growing(0, 30, None).unwrap());
        assert!(!cap.memory_growing(30, 50, None).unwrap());
        assert_eq!(cap.hit, Some(CapHit::Instance));
        assert!(cap.memory_growing(60, 70, None).unwrap());
    }

    #[test]
    fn tenant_budget_is_shared_and_given_back() {
        let budget = Arc::new(TenantBudget { total_bytes: 100, ..TenantBudget::new("t", 0, 2) });
        let mut a = MemoryCap::new(80, budget.clone());
        let mut b = MemoryCap::new(80, budget.clone());
        assert!(a.memory_growing(0, 70, None).unwrap());
        assert!(!b.memory_growing(0, 40, None).unwrap());
        assert_eq!(b.hit, Some(CapHit::Tenant));
        assert!(b.memory_growing(0, 30, None).unwrap());
        assert_eq!(budget.used_bytes(), 100);
        drop(a);
        assert_eq!(budget.used_bytes(), 30);
        let (t1, _t2) = (budget.admit().unwrap(), budget.admit().unwrap());
        assert!(budget.admit().unwrap_err().contains("max_instances = 2"));
        drop(t1);
        assert!(budget.admit().is_ok());
    }

    #[test]
    fn tables_count_against_the_cap() {
        let mut cap = MemoryCap::new(1 << 20, TenantBudget::unshared());
        assert!(cap.table_growing(0, 100_000, None).unwrap());
        assert!(!cap.table_growing(100_000, 200_000, None).unwrap(), "1.6 MB of table is over a 1 MiB cap");
        assert_eq!(cap.hit, Some(CapHit::Instance));
        assert!(!cap.memory_growing(0, 300_000, None).unwrap(), "the table's 800 kB count for the memories too");
    }

    #[test]
    fn deadline_rounds_up() {
        let l = Limits { memory_mib: 1, timeout_ms: 25 };
        assert_eq!(l.deadline_ticks(), 4);
    }
}
