//! The history store: every analysed window with its quality score, metric
//! values and findings, every alert and every plugin event, in one SQLite
//! file (`DATA_DIR/history.db`), kept for `retention_hours`.
//!
//! Analysis never waits on the disk. Pipelines hand their records to a
//! bounded queue with `try_send`; one writer thread drains it and writes
//! whatever has piled up, and what comes within [`LINGER`] of it, in one
//! transaction (a commit per window, about 1 ms apart, cost the file run of
//! `scripts/bench` 4% of its throughput). The writer sleeps while it
//! lingers: a window queued meanwhile does not wake it (woken for each, it
//! took a third more CPU and ten times the switches); a flush, a stop or a
//! queue half full does. A pipeline at the end of its input says so
//! ([`History::flush`]): what it queued is committed without lingering, and
//! the log is moved into the file (at most once a second) while its source
//! commits its last positions, not at the exit. If the disk falls so far
//! behind that the queue is full, the record is not written and the
//! pipeline's `history_dropped` counter says so (summary and `/metrics`).
//!
//! Acknowledgements to the source pass through the same queue
//! ([`History::after_commit`]): a broker position is committed only once the
//! windows before it are in the file, so a `kill -9` loses no window from
//! the history either. If the queue is full the acks are left out; the next
//! ones cover the same positions (acks are cumulative).
//!
//! A window analysed again after a restart (a broker replays from its last
//! commit) has the same tenant, pipeline, source, partition and offsets: it
//! is kept once, as first written. Another source under the same pipeline
//! name (another file) has windows of its own. The file is in WAL mode, so a `kill -9` loses at most
//! the transaction being written, and readers (the HTTP API) never block
//! the writer.

mod metric_values;
mod query;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clean_host_core::bindings::Severity;
use clean_host_core::scheduling::run_as_batch_work;
use clean_host_quality::alert::WindowRef;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

pub use query::{timed_out, Filter, HistoryReader, Page, QUERY_TIME_LIMIT};

/// `[history]` in the config file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Keep a history at all.
    pub enabled: bool,
    /// The SQLite file (default `DATA_DIR/history.db`).
    pub path: Option<PathBuf>,
    /// Windows, alerts and plugin events older than this are deleted.
    pub retention_hours: u64,
    /// Records waiting for the writer before new ones are dropped (and counted).
    pub queue: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig { enabled: true, path: None, retention_hours: 24 * 7, queue: 10_000 }
    }
}

impl HistoryConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.retention_hours == 0 || self.queue == 0 {
            return Err("history.retention_hours and history.queue must be above 0".into());
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history {path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("history {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// One finding as stored, and as the API serves it (with where it was).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FindingRow {
    pub detector: String,
    pub metric: String,
    pub column: Option<String>,
    pub value: f64,
    pub threshold: f64,
    pub severity: Severity,
    pub message: String,
    /// Found by a shadow version: recorded, never alerted.
    pub shadow: bool,
}

/// One measured value as stored.
#[derive(Debug, Clone)]
pub struct MetricRow {
    pub detector: String,
    pub metric: String,
    pub column: Option<String>,
    pub value: f64,
}

/// One alert as stored (its window is the record it comes with), and as
/// the API serves it (with where it was).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRow {
    pub detector: String,
    pub metric: String,
    pub column: Option<String>,
    pub value: f64,
    pub threshold: f64,
    pub severity: Severity,
    pub message: String,
    /// The control rule that fired, for alerts across windows.
    pub rule: Option<String>,
    pub low_confidence: bool,
}

/// An analysed window and everything found in it.
#[derive(Debug, Clone)]
pub struct WindowRecord {
    pub tenant: String,
    pub pipeline: String,
    /// The stream the window is of: a file path or a broker URL.
    pub source: String,
    pub window: WindowRef,
    pub analysed_ms: i64,
    pub score: f64,
    /// Lowest and highest score the data supports.
    pub score_interval: [f64; 2],
    pub findings: Vec<FindingRow>,
    pub metrics: Vec<MetricRow>,
    pub alerts: Vec<AlertRow>,
}

/// Something that happened to a plugin (the events of
/// [`clean_host_runtime::events`]).
#[derive(Debug, Clone)]
pub struct PluginEvent {
    pub tenant: String,
    pub pipeline: Option<String>,
    pub plugin: String,
    pub event: String,
    pub message: String,
    pub at_ms: i64,
}

enum Entry {
    Window(Box<WindowRecord>),
    Plugin(PluginEvent),
    /// Run once everything before it is committed.
    AfterCommit(Box<dyn FnOnce() + Send>),
    /// Commit what came before without waiting for more: its sender is done.
    Flush,
    /// Write what came before, then end the writer.
    Stop,
}

/// What the writer has done, for the summary.
#[derive(Debug, Default)]
pub struct HistoryStats {
    pub windows: AtomicU64,
    pub duplicate_windows: AtomicU64,
    pub write_errors: AtomicU64,
}

/// The sending side: cheap to clone, never blocks.
#[derive(Clone)]
pub struct History {
    tx: Sender<Entry>,
    /// The writer thread, woken for what should not linger.
    writer: std::thread::Thread,
    pub path: PathBuf,
    pub stats: Arc<HistoryStats>,
}

/// The writer thread; `finish` writes what is queued and stops it.
pub struct HistoryWriter {
    tx: Sender<Entry>,
    handle: JoinHandle<()>,
}

/// The windows table, by whatever name: a window is known by its tenant,
/// pipeline and source (file path or broker URL), partition and offsets.
const WINDOWS_TABLE: &str = "(
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    partition INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    first_offset TEXT NOT NULL,
    last_offset TEXT NOT NULL,
    records INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    analysed_ms INTEGER NOT NULL,
    score REAL NOT NULL,
    alerts INTEGER NOT NULL,
    score_low REAL,
    score_high REAL,
    metrics BLOB,
    UNIQUE (tenant, pipeline, source, partition, first_offset, last_offset)
)";

const SCHEMA: &str = "
CREATE INDEX IF NOT EXISTS windows_by_tenant_time ON windows (tenant, analysed_ms);
CREATE INDEX IF NOT EXISTS windows_by_time ON windows (analysed_ms);
CREATE TABLE IF NOT EXISTS findings (
    id INTEGER PRIMARY KEY,
    window_id INTEGER NOT NULL REFERENCES windows (id) ON DELETE CASCADE,
    detector TEXT NOT NULL,
    metric TEXT NOT NULL,
    column_name TEXT,
    value REAL NOT NULL,
    threshold REAL NOT NULL,
    severity TEXT NOT NULL,
    message TEXT NOT NULL,
    shadow INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS findings_by_window ON findings (window_id);
-- Metric values of windows written before they were kept in windows.metrics.
CREATE TABLE IF NOT EXISTS metric_values (
    window_id INTEGER NOT NULL REFERENCES windows (id) ON DELETE CASCADE,
    detector TEXT NOT NULL,
    metric TEXT NOT NULL,
    column_name TEXT,
    value REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS metric_values_by_window ON metric_values (window_id);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    window_id INTEGER NOT NULL REFERENCES windows (id) ON DELETE CASCADE,
    tenant TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    detector TEXT NOT NULL,
    metric TEXT NOT NULL,
    column_name TEXT,
    value REAL NOT NULL,
    threshold REAL NOT NULL,
    severity TEXT NOT NULL,
    message TEXT NOT NULL,
    rule TEXT,
    low_confidence INTEGER
);
CREATE INDEX IF NOT EXISTS alerts_by_tenant_time ON alerts (tenant, at_ms);
CREATE TABLE IF NOT EXISTS plugin_events (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    pipeline TEXT,
    plugin TEXT NOT NULL,
    event TEXT NOT NULL,
    message TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS plugin_events_by_tenant_time ON plugin_events (tenant, at_ms);
";

/// Columns added since the first schema, for files an older version made
/// (their old rows read as NULL).
const ADDED_COLUMNS: [(&str, &str, &str); 5] = [
    ("windows", "score_low", "REAL"),
    ("windows", "score_high", "REAL"),
    ("windows", "metrics", "BLOB"),
    ("alerts", "rule", "TEXT"),
    ("alerts", "low_confidence", "INTEGER"),
];

fn add_columns(conn: &Connection) -> rusqlite::Result<()> {
    for (table, column, kind) in ADDED_COLUMNS {
        let exists = conn.prepare(&format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"))?.exists([column])?;
        if !exists {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))?;
        }
    }
    Ok(())
}

/// How often old rows are deleted.
const RETENTION_EVERY: Duration = Duration::from_secs(60);
/// How long the writer gathers records after the first before it commits
/// them (unless a flush or the stop comes first).
const LINGER: Duration = Duration::from_millis(20);
/// The log is moved into the file on a flush at most this often.
const LOG_MOVE_EVERY: Duration = Duration::from_secs(1);
/// Queue entries (windows, plugin events, callbacks) one transaction takes at most.
const BATCH_MAX: usize = 5_000;

fn open(path: &Path) -> Result<Connection, HistoryError> {
    let sqlite = |source| HistoryError::Sqlite { path: path.into(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| HistoryError::Io { path: dir.into(), source })?;
    }
    let mut conn = Connection::open(path).map_err(sqlite)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(sqlite)?;
    // WAL + NORMAL: a crashed process loses nothing committed; readers never block the writer.
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;").map_err(sqlite)?;
    conn.execute_batch(&format!("CREATE TABLE IF NOT EXISTS windows {WINDOWS_TABLE}; {SCHEMA}")).map_err(sqlite)?;
    add_columns(&conn).map_err(sqlite)?;
    key_windows_by_source(&mut conn).map_err(sqlite)?;
    Ok(conn)
}

/// A file from before windows were known by their source kept one window
/// per (pipeline, partition, offsets): another file's windows at the same
/// offsets looked like replays and were not kept. SQLite cannot change a
/// table's key in place, so the table is made again (its rows keep their
/// ids, so findings and alerts keep their windows) with an empty source,
/// and its indexes with it.
fn key_windows_by_source(conn: &mut Connection) -> rusqlite::Result<()> {
    let keyed = |conn: &Connection| conn.prepare("SELECT 1 FROM pragma_table_info('windows') WHERE name = 'source'")?.exists([]);
    if keyed(conn)? {
        return Ok(());
    }
    // Not `metrics`: a file from before sources were kept has no blobs.
    let columns =
        "id, tenant, pipeline, partition, seq, first_offset, last_offset, records, start_ms, end_ms, analysed_ms, score, alerts, score_low, score_high";
    conn.execute_batch("PRAGMA foreign_keys = OFF;")?;
    // Holding the write lock, look again: another process may have converted it meanwhile.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    if keyed(&tx)? {
        drop(tx);
        return conn.execute_batch("PRAGMA foreign_keys = ON;");
    }
    tx.execute_batch(&format!(
        "CREATE TABLE windows_keyed {WINDOWS_TABLE};
         INSERT INTO windows_keyed ({columns}) SELECT {columns} FROM windows;
         DROP TABLE windows;
         ALTER TABLE windows_keyed RENAME TO windows;
         {SCHEMA}"
    ))?;
    tx.commit()?;
    conn.execute_batch("PRAGMA foreign_keys = ON;")
}

impl History {
    /// Open (or create) the store and start its writer thread.
    pub fn start(path: &Path, config: &HistoryConfig) -> Result<(History, HistoryWriter), HistoryError> {
        let mut conn = open(path)?;
        let retention_ms = (config.retention_hours * 3_600_000) as i64;
        delete_old(&conn, retention_ms).map_err(|source| HistoryError::Sqlite { path: path.into(), source })?;
        let (tx, rx) = crossbeam_channel::bounded(config.queue);
        let stats = Arc::new(HistoryStats::default());
        let writer_stats = stats.clone();
        let handle = std::thread::Builder::new()
            .name("history".into())
            .spawn(move || write_loop(&mut conn, &rx, &writer_stats, retention_ms))
            .map_err(|source| HistoryError::Io { path: path.into(), source })?;
        Ok((History { tx: tx.clone(), writer: handle.thread().clone(), path: path.into(), stats }, HistoryWriter { tx, handle }))
    }

    /// Queue a window; false if the queue is full (the caller counts it).
    pub fn window(&self, record: WindowRecord) -> bool {
        self.send(Entry::Window(Box::new(record)))
    }

    pub fn plugin_event(&self, event: PluginEvent) -> bool {
        self.send(Entry::Plugin(event))
    }

    /// Run `f` on the writer once everything queued before it is committed;
    /// false (and `f` dropped) if the queue is full.
    pub fn after_commit(&self, f: Box<dyn FnOnce() + Send>) -> bool {
        self.send(Entry::AfterCommit(f))
    }

    /// Commit what is queued without lingering for more, then move the log
    /// into the file: a pipeline at the end of its input (its last acks
    /// wait on that commit). Left out if the queue is full: the batch then
    /// lingers as any other.
    pub fn flush(&self) {
        self.send(Entry::Flush);
    }

    /// Queue `entry`, waking the writer where [`wakes`] says so.
    fn send(&self, entry: Entry) -> bool {
        let flush = matches!(entry, Entry::Flush);
        match self.tx.try_send(entry) {
            Ok(()) => {
                if wakes(flush, self.tx.len(), self.tx.capacity().unwrap_or(usize::MAX)) {
                    self.writer.unpark();
                }
                true
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

impl HistoryWriter {
    /// Write everything queued so far, then stop the writer.
    pub fn finish(self) {
        let _ = self.tx.send(Entry::Stop);
        self.handle.thread().unpark();
        let _ = self.handle.join();
    }
}

fn write_loop(conn: &mut Connection, rx: &Receiver<Entry>, stats: &HistoryStats, retention_ms: i64) {
    if let Err(e) = run_as_batch_work() {
        tracing::debug!("history: the writer runs in the normal scheduling class: {e}");
    }
    let mut last_cleanup = Instant::now();
    let (mut log_move_due, mut last_log_move) = (false, None::<Instant>);
    loop {
        let mut batch = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(first) => gather(first, rx, LINGER),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Vec::new(),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        };
        let stop = batch.iter().position(|e| matches!(e, Entry::Stop));
        let flushed = matches!(batch.last(), Some(Entry::Flush));
        if let Some(at) = stop {
            batch.truncate(at);
        }
        if !batch.is_empty() {
            match write_batch(conn, &batch, stats) {
                Ok(()) => {
                    for entry in batch {
                        if let Entry::AfterCommit(f) = entry {
                            f();
                        }
                    }
                }
                // Callbacks (acks) are dropped: their records are read again after a restart.
                Err(e) => {
                    stats.write_errors.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    tracing::error!("history: cannot write {} record(s): {e}", batch.len());
                }
            }
        }
        if stop.is_some() {
            return;
        }
        // A pipeline's input ended: its last pages go from the log into the
        // file now, while its source commits its acks, not at the exit; for
        // pipelines ending one after another, once a second.
        log_move_due |= flushed;
        if log_move_due && last_log_move.is_none_or(|t| t.elapsed() >= LOG_MOVE_EVERY) {
            (log_move_due, last_log_move) = (false, Some(Instant::now()));
            if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)") {
                tracing::warn!("history: cannot move the log into the file: {e}");
            }
        }
        if last_cleanup.elapsed() >= RETENTION_EVERY {
            last_cleanup = Instant::now();
            if let Err(e) = delete_old(conn, retention_ms) {
                tracing::error!("history: cannot delete old rows: {e}");
            }
        }
    }
}

/// Whether an entry just queued (a flush or not; `queued` waiting of at
/// most `capacity`) wakes the writer lingering asleep: a flush is not kept
/// waiting, and a queue half full (or holding a whole batch) should not
/// fill while the writer sleeps.
fn wakes(flush: bool, queued: usize, capacity: usize) -> bool {
    flush || queued >= (capacity / 2).min(BATCH_MAX)
}

/// `first` and what comes within `linger` of it, for one transaction: a
/// commit writes out every page it touched (the tables' last pages and
/// their indexes'), more than a window's own rows. The writer sleeps while
/// it lingers and takes what queued up when it wakes ([`History::send`]
/// wakes it early). A `Stop` or `Flush` ends the batch at once.
fn gather(first: Entry, rx: &Receiver<Entry>, linger: Duration) -> Vec<Entry> {
    let mut batch = vec![first];
    let deadline = Instant::now() + linger;
    let ended = |batch: &[Entry]| batch.len() >= BATCH_MAX || matches!(batch.last(), Some(Entry::Stop | Entry::Flush));
    while !ended(&batch) {
        while let Ok(entry) = rx.try_recv() {
            batch.push(entry);
            if ended(&batch) {
                return batch;
            }
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::park_timeout(deadline - now);
    }
    batch
}

fn write_batch(conn: &mut Connection, batch: &[Entry], stats: &HistoryStats) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let (mut written, mut duplicates) = (0, 0);
    {
        let mut window = tx.prepare_cached(
            "INSERT OR IGNORE INTO windows (tenant, pipeline, source, partition, seq, first_offset, last_offset, records, start_ms, end_ms, analysed_ms, score, alerts, score_low, score_high, metrics)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        )?;
        let mut finding = tx.prepare_cached(
            "INSERT INTO findings (window_id, detector, metric, column_name, value, threshold, severity, message, shadow) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        let mut alert = tx.prepare_cached(
            "INSERT INTO alerts (window_id, tenant, pipeline, at_ms, detector, metric, column_name, value, threshold, severity, message, rule, low_confidence)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?;
        let mut plugin = tx.prepare_cached("INSERT INTO plugin_events (tenant, pipeline, plugin, event, message, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
        for entry in batch {
            match entry {
                Entry::Window(w) => {
                    let inserted = window.execute(params![
                        w.tenant,
                        w.pipeline,
                        w.source,
                        w.window.partition,
                        w.window.seq as i64,
                        w.window.first_offset.to_string(),
                        w.window.last_offset.to_string(),
                        w.window.records,
                        w.window.start_ms,
                        w.window.end_ms,
                        w.analysed_ms,
                        w.score,
                        w.alerts.len() as i64,
                        w.score_interval[0],
                        w.score_interval[1],
                        metric_values::encode(&w.metrics)
                    ])?;
                    if inserted == 0 {
                        duplicates += 1; // a replayed window: kept as first written
                        continue;
                    }
                    written += 1;
                    let id = tx.last_insert_rowid();
                    for f in &w.findings {
                        finding.execute(params![id, f.detector, f.metric, f.column, f.value, f.threshold, f.severity.as_str(), f.message, f.shadow])?;
                    }
                    for a in &w.alerts {
                        alert.execute(params![
                            id,
                            w.tenant,
                            w.pipeline,
                            w.analysed_ms,
                            a.detector,
                            a.metric,
                            a.column,
                            a.value,
                            a.threshold,
                            a.severity.as_str(),
                            a.message,
                            a.rule,
                            a.low_confidence
                        ])?;
                    }
                }
                Entry::Plugin(e) => {
                    plugin.execute(params![e.tenant, e.pipeline, e.plugin, e.event, e.message, e.at_ms])?;
                }
                Entry::AfterCommit(_) | Entry::Flush | Entry::Stop => {}
            }
        }
    }
    tx.commit()?;
    stats.windows.fetch_add(written, Ordering::Relaxed);
    stats.duplicate_windows.fetch_add(duplicates, Ordering::Relaxed);
    Ok(())
}

/// Delete what is older than the retention (windows take their findings,
/// metric values and alerts with them).
fn delete_old(conn: &Connection, retention_ms: i64) -> rusqlite::Result<()> {
    let cutoff = clean_host_core::timestamp::now_ms() - retention_ms;
    conn.execute("DELETE FROM windows WHERE analysed_ms < ?1", [cutoff])?;
    conn.execute("DELETE FROM plugin_events WHERE at_ms < ?1", [cutoff])?;
    Ok(())
}
