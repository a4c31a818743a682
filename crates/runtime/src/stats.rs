//! What a plugin's calls came to, counted the same way for detectors and
//! alert handlers: calls, errors, rebuilds after a trap, faults in a row,
//! the median and p99 of the last call durations, and the time of all calls.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fault::PluginFault;

/// Call durations kept per plugin for the percentiles.
const TIMING_SAMPLES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Active,
    Shadow,
    Quarantined,
    RolledBack,
}

impl Status {
    /// As the summary and the listings spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Shadow => "shadow",
            Status::Quarantined => "quarantined",
            Status::RolledBack => "rolled-back",
        }
    }
}

/// The last call durations of a plugin, for the median and p99.
#[derive(Debug, Default, Clone)]
struct CallTimes {
    micros: Vec<u32>,
    next: usize,
}

impl CallTimes {
    fn record(&mut self, took: Duration) {
        let micros = took.as_micros().min(u32::MAX as u128) as u32;
        if self.micros.len() < TIMING_SAMPLES {
            self.micros.push(micros);
        } else {
            self.micros[self.next] = micros;
            self.next = (self.next + 1) % TIMING_SAMPLES;
        }
    }

    /// (median, p99) in microseconds.
    fn percentiles(&self) -> (u32, u32) {
        let mut t = self.micros.clone();
        t.sort_unstable();
        let pct = |q: f64| t.get(((t.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0);
        (pct(0.5), pct(0.99))
    }
}

/// What a plugin's calls came to: the counters detectors and alert handlers share.
#[derive(Debug, Default)]
pub struct CallCounters {
    pub calls: u64,
    pub errors: u64,
    /// Instances rebuilt after a trap.
    pub rebuilds: u64,
    pub failures_in_row: u32,
    times: CallTimes,
    /// Every call's time added up.
    total: Duration,
}

impl CallCounters {
    /// Count one call that took `took`. A fault that leaves the instance
    /// unsound takes it out of `instance`, so the next call rebuilds it.
    pub fn record<T, I>(&mut self, took: Duration, result: &Result<T, PluginFault>, instance: &mut Option<I>) {
        self.times.record(took);
        self.total += took;
        self.calls += 1;
        match result {
            Ok(_) => self.failures_in_row = 0,
            Err(fault) => {
                self.errors += 1;
                self.failures_in_row += 1;
                if fault.needs_rebuild() && instance.take().is_some() {
                    self.rebuilds += 1;
                }
            }
        }
    }

    /// The counters as stats of a plugin in `status`; the caller says which plugin.
    pub fn stats(&self, status: Status) -> PluginStats {
        let (p50, p99) = self.times.percentiles();
        PluginStats {
            tenant: String::new(),
            pipeline: String::new(),
            name: String::new(),
            kind: String::new(),
            version: String::new(),
            fingerprint: String::new(),
            status,
            calls: self.calls,
            errors: self.errors,
            rebuilds: self.rebuilds,
            reloads: 0,
            call_p50_us: p50,
            call_p99_us: p99,
            call_seconds: self.total.as_secs_f64(),
            agreement: None,
            compared_windows: None,
        }
    }
}

/// A plugin's counters, as the summary and `clean-host plugin list` report them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginStats {
    pub tenant: String,
    pub pipeline: String,
    pub name: String,
    /// `detector` or `alert-handler`.
    pub kind: String,
    pub version: String,
    /// Start of the plugin's fingerprint: tells builds of one version apart.
    pub fingerprint: String,
    pub status: Status,
    pub calls: u64,
    pub errors: u64,
    /// Instances rebuilt after a trap.
    pub rebuilds: u64,
    /// Versions swapped in (reloads, promotions, rollbacks).
    pub reloads: u64,
    pub call_p50_us: u32,
    pub call_p99_us: u32,
    /// Every call's time added up, in seconds.
    #[serde(default)]
    pub call_seconds: f64,
    /// Shadow versions: share of compared windows whose findings matched the active version's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agreement: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compared_windows: Option<u64>,
}
