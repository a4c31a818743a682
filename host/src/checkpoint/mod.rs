//! Checkpoints: the state that decides a pipeline's alerts, kept with the
//! positions it belongs to, so a restart (a deploy, a `kill -9`) carries on
//! as if the process had never stopped: no window learned twice or skipped,
//! the same alerts.
//!
//! A checkpoint is taken on the analysis thread between two windows, once
//! every window below the positions it names has been analysed: each
//! detector's snapshot, the router's cooldowns and control-rule series, and
//! per partition the next offset to read and the next window's number. It is
//! stored only once the history holds those windows, and the source commits
//! the positions only once it is stored, so the stored checkpoint is never
//! behind the broker's committed positions; the broker's commits wait for
//! checkpoints (every `interval_ms`). On start, a pipeline whose source can
//! resume there (Kafka moves its group's offsets, Redis and Pulsar ack what
//! comes again up to the checkpoint) restores the state; one that another
//! consumer carried past is stale, and the pipeline starts cold and says so.
//!
//! Exact for count windows. Time windows resume with a fresh watermark and
//! clock, as any restart of them does.
//!
//! Kept in `DATA_DIR/checkpoints.db` (SQLite, WAL), one per tenant, pipeline,
//! source and consumer group: another stream under the same pipeline name,
//! or another group reading the same topic, never inherits it.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use clean_host_quality::alert::RouterState;
use clean_host_quality::analysis::DetectorState;
use clean_host_stream::source::ResumePosition;

/// The checkpoints' file in the data dir.
pub const CHECKPOINTS_FILE: &str = "checkpoints.db";

/// `[checkpoints]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Checkpoint broker pipelines whose source can resume at a position (Kafka; Redis with
    /// `consumer=`; Pulsar exclusive or failover).
    pub enabled: bool,
    /// How often a checkpoint is taken; the broker's commits follow it.
    pub interval_ms: u64,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig { enabled: true, interval_ms: 5_000 }
    }
}

impl CheckpointConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.interval_ms == 0 || self.interval_ms > 3_600_000 {
            return Err("checkpoints.interval_ms must be between 1 and 3600000".into());
        }
        Ok(())
    }

    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }
}

/// Whose checkpoint: one stream of one pipeline of one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamKey {
    pub tenant: String,
    pub pipeline: String,
    /// The source and the consumer whose positions these are
    /// ([`Source::checkpoint_id`](clean_host_stream::source::Source::checkpoint_id)).
    pub source: String,
}

/// One pipeline's state at one cut of its stream.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Per partition: where to read on.
    pub positions: BTreeMap<u32, ResumePosition>,
    /// Per partition: the number of the next window.
    pub next_seqs: BTreeMap<u32, u64>,
    pub detectors: Vec<DetectorState>,
    pub router: RouterState,
    pub taken_at_ms: i64,
}

impl Checkpoint {
    /// Bytes of detector state it carries.
    pub fn state_bytes(&self) -> usize {
        self.detectors.iter().map(|d| d.state.len()).sum()
    }
}

/// What a stored checkpoint names, without its state (`plugin list`).
#[derive(Debug, Clone, Serialize)]
pub struct StoredCheckpoint {
    pub tenant: String,
    pub pipeline: String,
    pub source: String,
    pub positions: BTreeMap<u32, ResumePosition>,
    pub taken_at_ms: i64,
    /// Each detector's state in it.
    pub detectors: Vec<StoredState>,
}

/// One detector's state in a stored checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct StoredState {
    pub name: String,
    pub version: String,
    pub bytes: u64,
}

/// The checkpoints of every pipeline of a host, shared by their threads.
#[derive(Clone)]
pub struct CheckpointStore {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS checkpoints (
    tenant TEXT NOT NULL, pipeline TEXT NOT NULL, source TEXT NOT NULL,
    taken_at_ms INTEGER NOT NULL,
    positions TEXT NOT NULL, next_seqs TEXT NOT NULL, router TEXT NOT NULL,
    PRIMARY KEY (tenant, pipeline, source)
);
CREATE TABLE IF NOT EXISTS checkpoint_states (
    tenant TEXT NOT NULL, pipeline TEXT NOT NULL, source TEXT NOT NULL,
    detector TEXT NOT NULL, version TEXT NOT NULL, state BLOB NOT NULL,
    PRIMARY KEY (tenant, pipeline, source, detector)
);";

impl CheckpointStore {
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let conn = Connection::open(path).with_context(|| format!("opening checkpoints {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        // WAL + NORMAL: a crashed process loses nothing committed.
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")?;
        conn.execute_batch(SCHEMA).with_context(|| format!("checkpoints {}", path.display()))?;
        Ok(CheckpointStore { path: path.to_path_buf(), conn: Arc::new(Mutex::new(conn)) })
    }

    /// The store of another process (`plugin list`), only read: it creates
    /// and changes nothing.
    pub fn read_only(path: &Path) -> Result<Self> {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).with_context(|| format!("opening checkpoints {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(CheckpointStore { path: path.to_path_buf(), conn: Arc::new(Mutex::new(conn)) })
    }

    /// Replace the stream's checkpoint with `checkpoint`, all of it or nothing.
    pub fn save(&self, key: &StreamKey, checkpoint: &Checkpoint) -> Result<()> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction()?;
        let k = params![key.tenant, key.pipeline, key.source];
        tx.execute(
            "INSERT OR REPLACE INTO checkpoints VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                key.tenant,
                key.pipeline,
                key.source,
                checkpoint.taken_at_ms,
                serde_json::to_string(&checkpoint.positions)?,
                serde_json::to_string(&checkpoint.next_seqs)?,
                serde_json::to_string(&checkpoint.router)?
            ],
        )?;
        tx.execute("DELETE FROM checkpoint_states WHERE tenant = ?1 AND pipeline = ?2 AND source = ?3", k)?;
        {
            let mut insert = tx.prepare_cached("INSERT INTO checkpoint_states VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
            for d in &checkpoint.detectors {
                insert.execute(params![key.tenant, key.pipeline, key.source, d.name, d.version, d.state])?;
            }
        }
        tx.commit().with_context(|| format!("writing a checkpoint to {}", self.path.display()))
    }

    /// Every stored checkpoint, by tenant, pipeline and source (one that
    /// cannot be read is said and left out).
    pub fn list(&self) -> Result<Vec<StoredCheckpoint>> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        // One snapshot for both tables.
        let tx = conn.transaction()?;
        let mut rows = tx.prepare("SELECT tenant, pipeline, source, taken_at_ms, positions FROM checkpoints ORDER BY tenant, pipeline, source")?;
        let mut listed = rows
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?, r.get::<_, String>(4)?)))?
            .filter_map(|row| {
                let (tenant, pipeline, source, taken_at_ms, positions) = match row {
                    Ok(row) => row,
                    Err(e) => return Some(Err(e)),
                };
                match serde_json::from_str(&positions) {
                    Ok(positions) => Some(Ok(StoredCheckpoint { tenant, pipeline, source, positions, taken_at_ms, detectors: Vec::new() })),
                    Err(e) => {
                        tracing::warn!("the checkpoint of pipeline {pipeline} in {} is unreadable: {e}", self.path.display());
                        None
                    }
                }
            })
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut states = tx.prepare("SELECT tenant, pipeline, source, detector, version, length(state) FROM checkpoint_states ORDER BY detector")?;
        let states = states.query_map([], |r| {
            let key = (r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?);
            Ok((key, StoredState { name: r.get(3)?, version: r.get(4)?, bytes: r.get(5)? }))
        })?;
        for state in states {
            let ((tenant, pipeline, source), state) = state?;
            if let Some(c) = listed.iter_mut().find(|c| (&c.tenant, &c.pipeline, &c.source) == (&tenant, &pipeline, &source)) {
                c.detectors.push(state);
            }
        }
        Ok(listed)
    }

    /// The stream's checkpoint, if it has one.
    pub fn load(&self, key: &StreamKey) -> Result<Option<Checkpoint>> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let k = params![key.tenant, key.pipeline, key.source];
        let row = conn
            .query_row("SELECT taken_at_ms, positions, next_seqs, router FROM checkpoints WHERE tenant = ?1 AND pipeline = ?2 AND source = ?3", k, |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
            })
            .optional()?;
        let Some((taken_at_ms, positions, next_seqs, router)) = row else {
            return Ok(None);
        };
        let unreadable = || format!("the checkpoint of pipeline {} in {} is unreadable", key.pipeline, self.path.display());
        let mut states = conn.prepare("SELECT detector, version, state FROM checkpoint_states WHERE tenant = ?1 AND pipeline = ?2 AND source = ?3")?;
        let detectors =
            states.query_map(k, |r| Ok(DetectorState { name: r.get(0)?, version: r.get(1)?, state: r.get(2)? }))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Some(Checkpoint {
            positions: serde_json::from_str(&positions).with_context(unreadable)?,
            next_seqs: serde_json::from_str(&next_seqs).with_context(unreadable)?,
            detectors,
            router: serde_json::from_str(&router).with_context(unreadable)?,
            taken_at_ms,
        }))
    }
}
