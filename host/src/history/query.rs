//! Reading the history back, always for one tenant: the HTTP API's pages
//! of windows, findings, alerts and plugin events.
//!
//! Each tenant reads through a connection of its own, and a query that runs
//! longer than [`QUERY_TIME_LIMIT`] is interrupted: one tenant's heavy
//! queries wait for each other, never for another tenant's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, Row};
use serde::Serialize;

use clean_host_core::bindings::Severity;
use clean_host_quality::alert::{PastWindow, WindowRef};
use clean_host_stream::source::Position;

use super::{metric_values, open, AlertRow, FindingRow, HistoryError};

/// Which rows: one tenant's, optionally one pipeline's, within a time range,
/// newest first, `limit` at a time from `cursor` (the last page's `next_cursor`).
#[derive(Debug, Clone)]
pub struct Filter {
    pub tenant: String,
    pub pipeline: Option<String>,
    /// Unix milliseconds, inclusive.
    pub from_ms: Option<i64>,
    /// Unix milliseconds, exclusive.
    pub to_ms: Option<i64>,
    pub limit: u32,
    /// Only rows with an id below this.
    pub cursor: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub next_cursor: Option<i64>,
}

/// An analysed window as the API serves it.
#[derive(Debug, Serialize)]
pub struct WindowView {
    pub id: i64,
    pub pipeline: String,
    #[serde(flatten)]
    pub window: WindowRef,
    pub analysed_ms: i64,
    pub score: f64,
    pub alerts: u32,
    /// The score's interval (absent for windows written before it was kept).
    pub score_low: Option<f64>,
    pub score_high: Option<f64>,
}

/// A stored finding and where it was.
#[derive(Debug, Serialize)]
pub struct FindingView {
    pub id: i64,
    pub window_id: i64,
    pub pipeline: String,
    pub seq: u64,
    pub analysed_ms: i64,
    #[serde(flatten)]
    pub finding: FindingRow,
}

/// A stored alert and where it was.
#[derive(Debug, Serialize)]
pub struct AlertView {
    pub id: i64,
    pub window_id: i64,
    pub pipeline: String,
    pub partition: u32,
    pub seq: u64,
    pub at_ms: i64,
    #[serde(flatten)]
    pub alert: AlertRow,
    /// The window's quality score.
    pub score: f64,
    /// Everything the detectors found in that window.
    pub findings: Vec<FindingView>,
}

#[derive(Debug, Serialize)]
pub struct PluginEventView {
    pub id: i64,
    pub pipeline: Option<String>,
    pub plugin: String,
    pub event: String,
    pub message: String,
    pub at_ms: i64,
}

/// Longest a history query may run before it is interrupted.
pub const QUERY_TIME_LIMIT: Duration = Duration::from_secs(5);
/// SQLite steps between two looks at the clock.
const STEPS_PER_CHECK: i32 = 10_000;

/// Read connections, one per tenant (WAL: reads never wait for the writer).
pub struct HistoryReader {
    path: PathBuf,
    conns: Mutex<HashMap<String, Arc<Mutex<Connection>>>>,
}

/// Whether `e` is a query stopped at [`QUERY_TIME_LIMIT`].
pub fn timed_out(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted)
}

/// The shared WHERE clause: ?1 tenant, ?2 pipeline, ?3 from, ?4 to, ?5 cursor, ?6 limit.
fn scope(id: &str, pipeline: &str, time: &str, tenant: &str) -> String {
    format!(
        "{tenant} = ?1 AND (?2 IS NULL OR {pipeline} = ?2) AND (?3 IS NULL OR {time} >= ?3) AND (?4 IS NULL OR {time} < ?4)
         AND (?5 IS NULL OR {id} < ?5) ORDER BY {id} DESC LIMIT ?6"
    )
}

/// One page of `select` (which ends in a [`scope`] clause) for `f`.
fn page<T>(conn: &Connection, select: &str, f: &Filter, row: impl FnMut(&Row) -> rusqlite::Result<T>, id: impl Fn(&T) -> i64) -> rusqlite::Result<Page<T>> {
    let mut stmt = conn.prepare_cached(select)?;
    let items = stmt.query_map(params![f.tenant, f.pipeline, f.from_ms, f.to_ms, f.cursor, f.limit], row)?.collect::<rusqlite::Result<Vec<_>>>()?;
    let next_cursor = if items.len() as u32 == f.limit { items.last().map(id) } else { None };
    Ok(Page { items, next_cursor })
}

fn finding(row: &Row) -> rusqlite::Result<FindingView> {
    Ok(FindingView {
        id: row.get(0)?,
        window_id: row.get(1)?,
        pipeline: row.get(2)?,
        seq: row.get::<_, i64>(3)? as u64,
        analysed_ms: row.get(4)?,
        finding: FindingRow {
            detector: row.get(5)?,
            metric: row.get(6)?,
            column: row.get(7)?,
            value: row.get(8)?,
            threshold: row.get(9)?,
            severity: severity(row, 10)?,
            message: row.get(11)?,
            shadow: row.get(12)?,
        },
    })
}

/// Column `idx` of `row` as the severity it spells.
fn severity(row: &Row, idx: usize) -> rusqlite::Result<Severity> {
    let name: String = row.get(idx)?;
    Severity::from_name(&name).ok_or_else(|| {
        let error = format!("not a severity: {name:?}");
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, error.into())
    })
}

const FINDING_COLUMNS: &str =
    "f.id, f.window_id, w.pipeline, w.seq, w.analysed_ms, f.detector, f.metric, f.column_name, f.value, f.threshold, f.severity, f.message, f.shadow";

impl HistoryReader {
    pub fn open(path: &Path) -> Result<Self, HistoryError> {
        // A first open says now, not at the first query, if the file is unusable.
        open(path)?;
        Ok(HistoryReader { path: path.to_path_buf(), conns: Mutex::new(HashMap::new()) })
    }

    /// Run `query` on `tenant`'s connection, interrupted after [`QUERY_TIME_LIMIT`].
    fn with_conn<R>(&self, tenant: &str, query: impl FnOnce(&Connection) -> rusqlite::Result<R>) -> rusqlite::Result<R> {
        let conn = {
            let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
            match conns.get(tenant) {
                Some(conn) => conn.clone(),
                None => {
                    let conn = open(&self.path).map_err(|e| match e {
                        HistoryError::Sqlite { source, .. } => source,
                        other => rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN), Some(other.to_string())),
                    })?;
                    conns.entry(tenant.to_string()).or_insert_with(|| Arc::new(Mutex::new(conn))).clone()
                }
            }
        };
        let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = Instant::now() + QUERY_TIME_LIMIT;
        conn.progress_handler(STEPS_PER_CHECK, Some(move || Instant::now() > deadline))?;
        let result = query(&conn);
        conn.progress_handler(STEPS_PER_CHECK, None::<fn() -> bool>)?;
        result
    }

    pub fn windows(&self, f: &Filter) -> rusqlite::Result<Page<WindowView>> {
        let select = format!(
            "SELECT id, pipeline, partition, seq, first_offset, last_offset, records, start_ms, end_ms, analysed_ms, score, alerts, score_low, score_high
             FROM windows WHERE {}",
            scope("id", "pipeline", "analysed_ms", "tenant")
        );
        let row = |r: &Row| {
            Ok(WindowView {
                id: r.get(0)?,
                pipeline: r.get(1)?,
                window: WindowRef {
                    partition: r.get(2)?,
                    seq: r.get::<_, i64>(3)? as u64,
                    first_offset: Position::from_text(&r.get::<_, String>(4)?),
                    last_offset: Position::from_text(&r.get::<_, String>(5)?),
                    records: r.get(6)?,
                    start_ms: r.get(7)?,
                    end_ms: r.get(8)?,
                },
                analysed_ms: r.get(9)?,
                score: r.get(10)?,
                alerts: r.get(11)?,
                score_low: r.get(12)?,
                score_high: r.get(13)?,
            })
        };
        self.with_conn(&f.tenant, |conn| page(conn, &select, f, row, |w| w.id))
    }

    pub fn findings(&self, f: &Filter) -> rusqlite::Result<Page<FindingView>> {
        let select = format!(
            "SELECT {FINDING_COLUMNS} FROM findings f JOIN windows w ON w.id = f.window_id WHERE {}",
            scope("f.id", "w.pipeline", "w.analysed_ms", "w.tenant")
        );
        self.with_conn(&f.tenant, |conn| page(conn, &select, f, finding, |x| x.id))
    }

    /// Alerts, each with every finding of its window.
    pub fn alerts(&self, f: &Filter) -> rusqlite::Result<Page<AlertView>> {
        self.with_conn(&f.tenant, |conn| Self::alerts_on(conn, f))
    }

    fn alerts_on(conn: &Connection, f: &Filter) -> rusqlite::Result<Page<AlertView>> {
        let select = format!(
            "SELECT a.id, a.window_id, a.pipeline, w.partition, w.seq, a.at_ms, a.detector, a.metric, a.column_name, a.value, a.threshold, a.severity, a.message, w.score, a.rule, a.low_confidence
             FROM alerts a JOIN windows w ON w.id = a.window_id WHERE {}",
            scope("a.id", "a.pipeline", "a.at_ms", "a.tenant")
        );
        let mut page = page(
            conn,
            &select,
            f,
            |r| {
                Ok(AlertView {
                    id: r.get(0)?,
                    window_id: r.get(1)?,
                    pipeline: r.get(2)?,
                    partition: r.get(3)?,
                    seq: r.get::<_, i64>(4)? as u64,
                    at_ms: r.get(5)?,
                    alert: AlertRow {
                        detector: r.get(6)?,
                        metric: r.get(7)?,
                        column: r.get(8)?,
                        value: r.get(9)?,
                        threshold: r.get(10)?,
                        severity: severity(r, 11)?,
                        message: r.get(12)?,
                        rule: r.get(14)?,
                        low_confidence: r.get::<_, Option<bool>>(15)?.unwrap_or(false),
                    },
                    score: r.get(13)?,
                    findings: Vec::new(),
                })
            },
            |a| a.id,
        )?;
        let mut of_window = conn
            .prepare_cached(&format!("SELECT {FINDING_COLUMNS} FROM findings f JOIN windows w ON w.id = f.window_id WHERE f.window_id = ?1 ORDER BY f.id"))?;
        for alert in &mut page.items {
            alert.findings = of_window.query_map([alert.window_id], finding)?.collect::<rusqlite::Result<Vec<_>>>()?;
        }
        Ok(page)
    }

    /// The last `windows` windows of a pipeline, oldest first.
    pub fn past_windows(&self, tenant: &str, pipeline: &str, source: &str, windows: u32) -> rusqlite::Result<Vec<PastWindow>> {
        self.with_conn(tenant, |conn| Self::past_windows_on(conn, (tenant, pipeline, source), windows))
    }

    fn past_windows_on(conn: &Connection, (tenant, pipeline, source): (&str, &str, &str), windows: u32) -> rusqlite::Result<Vec<PastWindow>> {
        let mut recent = conn.prepare_cached(
            "SELECT id, partition, score, score_high, metrics FROM windows WHERE tenant = ?1 AND pipeline = ?2 AND source = ?3 ORDER BY id DESC LIMIT ?4",
        )?;
        let mut metrics = conn.prepare_cached("SELECT detector, metric, column_name, value FROM metric_values WHERE window_id = ?1")?;
        let mut findings = conn.prepare_cached("SELECT detector, metric, column_name FROM findings WHERE window_id = ?1 AND shadow = 0")?;
        let rows = recent
            .query_map(params![tenant, pipeline, source, windows], |r| {
                Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get::<_, f64>(2)?, r.get::<_, Option<f64>>(3)?, r.get::<_, Option<Vec<u8>>>(4)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut past = Vec::with_capacity(rows.len());
        for (id, partition, score, score_high, blob) in rows.into_iter().rev() {
            past.push(PastWindow {
                partition,
                score,
                score_high: score_high.unwrap_or(score),
                metrics: match blob {
                    // Only a warm start rests on it: a bad blob costs that window's values, not the start.
                    Some(blob) => metric_values::decode(&blob).unwrap_or_else(|e| {
                        tracing::warn!("history: window {id} of pipeline {pipeline}: {e}; its metric values are left out of the warm start");
                        Vec::new()
                    }),
                    // A window written before metric values were kept in one blob.
                    None => metrics.query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect::<rusqlite::Result<_>>()?,
                },
                flagged: findings.query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<rusqlite::Result<_>>()?,
            });
        }
        Ok(past)
    }

    pub fn plugin_events(&self, f: &Filter) -> rusqlite::Result<Page<PluginEventView>> {
        let select = format!("SELECT id, pipeline, plugin, event, message, at_ms FROM plugin_events WHERE {}", scope("id", "pipeline", "at_ms", "tenant"));
        let row =
            |r: &Row| Ok(PluginEventView { id: r.get(0)?, pipeline: r.get(1)?, plugin: r.get(2)?, event: r.get(3)?, message: r.get(4)?, at_ms: r.get(5)? });
        self.with_conn(&f.tenant, |conn| page(conn, &select, f, row, |e| e.id))
    }
}
