//! What a run reports about itself, as typed records: the summary printed
//! on stderr at the end, and the status file a running host rewrites every
//! second so that `clean-host plugin list` (another process) can show live
//! counters. One type each, shared by whoever writes and reads them, so a
//! field renamed on one side cannot silently vanish on the other.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::pipeline::PipelineReport;
use crate::tenant::TenantStatus;
use clean_host_runtime::PluginStats;

/// The last line a run prints on stderr: one JSON object.
#[derive(Debug, Serialize)]
pub struct RunSummary {
    /// Peak resident memory of the process (Linux only).
    pub peak_rss_mib: Option<f64>,
    pub records: u64,
    pub dead_letters: u64,
    /// Records behind the event-time watermark (dead letters too).
    pub late_records: u64,
    pub windows: u64,
    pub alerts: u64,
    /// Alerts grouped by window and column, as handlers get them.
    pub incidents: u64,
    /// Alerts of windows already alerted in an earlier run (not sent again).
    pub replayed_alerts: u64,
    pub broker_errors: u64,
    pub seconds: f64,
    /// CPU time the process used, user and system, all its threads (Linux
    /// only): over `seconds`, how many cores the run kept busy.
    pub cpu_seconds: Option<f64>,
    pub records_per_second: f64,
    /// `None` with the history turned off.
    pub history: Option<HistoryReport>,
    pub plugins: Vec<PluginStats>,
    pub tenants: Vec<TenantStatus>,
    pub pipelines: Vec<PipelineReport>,
}

/// What the run wrote to the history.
#[derive(Debug, Serialize)]
pub struct HistoryReport {
    pub path: PathBuf,
    pub windows: u64,
    /// Windows already in the history from an earlier run (kept once).
    pub replayed_windows: u64,
    /// Windows the writer could not keep up with and left out.
    pub dropped: u64,
    pub write_errors: u64,
}

/// `DATA_DIR/plugins-status.json`, rewritten every second while a host runs
/// (from the live stats, borrowed) and read by `clean-host plugin list`.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatusFile<'a> {
    /// The running host's process id.
    pub pid: u32,
    /// When it was written (Unix ms).
    pub updated_ms: i64,
    pub plugins: Cow<'a, [PluginStats]>,
    pub tenants: Cow<'a, [TenantStatus]>,
}

/// Status written longer ago than this, or by a process that is gone, is stale.
const STATUS_FRESH_MS: i64 = 5000;

impl StatusFile<'_> {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("plugins-status.json")
    }

    /// The status a host running with `data_dir` wrote, if one runs now.
    pub fn live(data_dir: &Path, now_ms: i64) -> Option<StatusFile<'static>> {
        let text = std::fs::read_to_string(Self::path(data_dir)).ok()?;
        let status: StatusFile = serde_json::from_str(&text).ok()?;
        let alive = Path::new(&format!("/proc/{}", status.pid)).exists();
        (alive && now_ms - status.updated_ms < STATUS_FRESH_MS).then_some(status)
    }
}
