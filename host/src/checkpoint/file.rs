//! Checkpoints kept in a SQLite file (WAL): the data dir's, or one that
//! the hosts of a group on one machine share.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension};

use super::{Checkpoint, CheckpointMark, PartitionCheckpoint, StoredCheckpoint, StoredState, StreamKey};
use clean_host_core::timestamp::now_ms;
use clean_host_quality::analysis::DetectorState;
use clean_host_stream::source::ResumePosition;

/// Checkpoints in a SQLite file: the hosts that share it (one machine)
/// share their checkpoints and the alert ledger.
#[derive(Clone)]
pub(super) struct FileStore {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

/// The layout of the file (`PRAGMA user_version`); checkpoints of the first
/// layout (one state per pipeline, before detectors ran per partition) are
/// dropped: those pipelines start cold once.
const LAYOUT: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS partition_checkpoints (
    tenant TEXT NOT NULL, pipeline TEXT NOT NULL, source TEXT NOT NULL, partition INTEGER NOT NULL,
    taken_at_ms INTEGER NOT NULL, position TEXT NOT NULL, next_seq INTEGER NOT NULL, router TEXT NOT NULL,
    PRIMARY KEY (tenant, pipeline, source, partition)
);
CREATE TABLE IF NOT EXISTS partition_states (
    tenant TEXT NOT NULL, pipeline TEXT NOT NULL, source TEXT NOT NULL, partition INTEGER NOT NULL,
    detector TEXT NOT NULL, version TEXT NOT NULL, state BLOB NOT NULL,
    PRIMARY KEY (tenant, pipeline, source, partition, detector)
);
CREATE TABLE IF NOT EXISTS alerts_sent (key INTEGER PRIMARY KEY, sent_at_ms INTEGER NOT NULL);
DROP TABLE IF EXISTS checkpoints;
DROP TABLE IF EXISTS checkpoint_states;";

/// How long a sent alert's key is kept in a shared ledger: replays come
/// within a session timeout and a checkpoint interval, not days later.
const SENT_KEPT_MS: i64 = 30 * 24 * 3_600_000;

impl FileStore {
    pub(super) fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let conn = Connection::open(path).with_context(|| format!("opening checkpoints {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        // WAL + NORMAL: a crashed process loses nothing committed.
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")?;
        let layout: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if layout != LAYOUT {
            conn.execute_batch(&format!("BEGIN; {SCHEMA} PRAGMA user_version = {LAYOUT}; COMMIT;"))
                .with_context(|| format!("checkpoints {}", path.display()))?;
        }
        conn.execute("DELETE FROM alerts_sent WHERE sent_at_ms < ?1", [now_ms() - SENT_KEPT_MS])?;
        Ok(FileStore { path: path.to_path_buf(), conn: Arc::new(Mutex::new(conn)) })
    }

    /// The store of another process (`plugin list`), only read: it creates
    /// and changes nothing.
    pub(super) fn read_only(path: &Path) -> Result<Self> {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).with_context(|| format!("opening checkpoints {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(FileStore { path: path.to_path_buf(), conn: Arc::new(Mutex::new(conn)) })
    }

    /// Replace the checkpoint of each partition `checkpoint` names, all of
    /// them or none (but, `forward_only`, a partition stored further on).
    pub(super) fn write(&self, key: &StreamKey, checkpoint: &Checkpoint, forward_only: bool) -> Result<()> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction()?;
        {
            let mut row = tx.prepare_cached(
                "INSERT INTO partition_checkpoints VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (tenant, pipeline, source, partition) DO UPDATE SET
                     taken_at_ms = excluded.taken_at_ms, position = excluded.position, next_seq = excluded.next_seq, router = excluded.router
                 WHERE NOT ?9 OR json_extract(excluded.position, '$.next_offset') >= json_extract(partition_checkpoints.position, '$.next_offset')",
            )?;
            let mut clear = tx.prepare_cached("DELETE FROM partition_states WHERE tenant = ?1 AND pipeline = ?2 AND source = ?3 AND partition = ?4")?;
            let mut state = tx.prepare_cached("INSERT INTO partition_states VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?;
            for (partition, c) in &checkpoint.partitions {
                let (position, router) = (serde_json::to_string(&c.position)?, serde_json::to_string(&c.router)?);
                let next_seq = i64::try_from(c.next_seq).context("a window number past i64")?;
                let row_params = params![key.tenant, key.pipeline, key.source, partition, checkpoint.taken_at_ms, position, next_seq, router, forward_only];
                if row.execute(row_params)? == 0 {
                    continue; // kept: further on
                }
                clear.execute(params![key.tenant, key.pipeline, key.source, partition])?;
                for d in &c.detectors {
                    state.execute(params![key.tenant, key.pipeline, key.source, partition, d.name, d.version, d.state])?;
                }
            }
        }
        tx.commit().with_context(|| format!("writing a checkpoint to {}", self.path.display()))
    }

    /// Drop the stream's checkpoint (it moved to the broker).
    pub(super) fn forget(&self, key: &StreamKey) -> Result<()> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction()?;
        for table in ["partition_checkpoints", "partition_states"] {
            tx.execute(&format!("DELETE FROM {table} WHERE tenant = ?1 AND pipeline = ?2 AND source = ?3"), params![key.tenant, key.pipeline, key.source])?;
        }
        tx.commit().with_context(|| format!("dropping a checkpoint from {}", self.path.display()))
    }

    /// Every stored checkpoint, by tenant, pipeline and source (a partition
    /// whose position cannot be read is said and left out).
    pub(super) fn list(&self) -> Result<Vec<StoredCheckpoint>> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let layout: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if layout < 2 {
            tracing::info!("the checkpoints in {} are of an older layout; the next run drops them", self.path.display());
            return Ok(Vec::new());
        }
        // One snapshot for both tables.
        let tx = conn.transaction()?;
        let mut listed: Vec<StoredCheckpoint> = Vec::new();
        let mut rows = tx.prepare(
            "SELECT tenant, pipeline, source, partition, taken_at_ms, position FROM partition_checkpoints ORDER BY tenant, pipeline, source, partition",
        )?;
        let rows = rows.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, u32>(3)?, r.get::<_, i64>(4)?, r.get::<_, String>(5)?))
        })?;
        for row in rows {
            let (tenant, pipeline, source, partition, taken_at_ms, position) = row?;
            let position: ResumePosition = match serde_json::from_str(&position) {
                Ok(position) => position,
                Err(e) => {
                    tracing::warn!("{}: {e}", self.unreadable(&pipeline, partition));
                    continue;
                }
            };
            match listed.last_mut().filter(|c| (&c.tenant, &c.pipeline, &c.source) == (&tenant, &pipeline, &source)) {
                Some(c) => {
                    c.positions.insert(partition, position);
                    c.taken_at_ms = c.taken_at_ms.min(taken_at_ms);
                }
                None => listed.push(StoredCheckpoint {
                    tenant,
                    pipeline,
                    source,
                    positions: BTreeMap::from([(partition, position)]),
                    taken_at_ms,
                    detectors: Vec::new(),
                }),
            }
        }
        let mut states = tx.prepare(
            "SELECT tenant, pipeline, source, detector, group_concat(DISTINCT version), sum(length(state)) FROM partition_states
             GROUP BY tenant, pipeline, source, detector ORDER BY detector",
        )?;
        let states = states.query_map([], |r| {
            let key = (r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?);
            Ok((key, StoredState { name: r.get(3)?, version: r.get(4)?, bytes: r.get::<_, i64>(5)?.max(0) as u64 }))
        })?;
        for state in states {
            let ((tenant, pipeline, source), state) = state?;
            if let Some(c) = listed.iter_mut().find(|c| (&c.tenant, &c.pipeline, &c.source) == (&tenant, &pipeline, &source)) {
                c.detectors.push(state);
            }
        }
        // Keys stored before logins were kept out of them may hold a password.
        for c in &mut listed {
            c.source = clean_host_stream::source::config::masked(&c.source);
        }
        Ok(listed)
    }

    /// Which of the alerts whose ledger keys are `sent` went out (the ledger
    /// the hosts sharing this file keep together).
    pub(super) fn were_sent(&self, sent: &[u64]) -> Result<Vec<bool>> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut query = conn.prepare_cached("SELECT 1 FROM alerts_sent WHERE key = ?1")?;
        sent.iter().map(|key| Ok(query.query_row([*key as i64], |_| Ok(())).optional()?.is_some())).collect()
    }

    /// Remember that the alerts whose ledger keys are `sent` went out.
    pub(super) fn record_sent(&self, sent: &[u64]) -> Result<()> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_ms();
        let tx = conn.transaction()?;
        for key in sent {
            tx.execute("INSERT OR REPLACE INTO alerts_sent VALUES (?1, ?2)", params![*key as i64, now])?;
        }
        tx.commit().with_context(|| format!("writing the shared alert ledger in {}", self.path.display()))
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    fn unreadable(&self, pipeline: &str, partition: u32) -> String {
        format!("the checkpoint of pipeline {pipeline} partition {partition} in {} is unreadable", self.path.display())
    }

    /// Where the stream's checkpoint is, without its state: per partition
    /// the position, and when the oldest was taken; `None` if it has none.
    pub(super) fn positions(&self, key: &StreamKey) -> Result<Option<(BTreeMap<u32, ResumePosition>, i64)>> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut rows =
            conn.prepare("SELECT partition, position, taken_at_ms FROM partition_checkpoints WHERE tenant = ?1 AND pipeline = ?2 AND source = ?3")?;
        let rows = rows
            .query_map(params![key.tenant, key.pipeline, key.source], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let Some(taken_at_ms) = rows.iter().map(|r| r.2).min() else {
            return Ok(None);
        };
        let mut positions = BTreeMap::new();
        for (partition, position, _) in rows {
            positions.insert(partition, serde_json::from_str(&position).with_context(|| self.unreadable(&key.pipeline, partition))?);
        }
        Ok(Some((positions, taken_at_ms)))
    }

    /// Where `partition`'s checkpoint is, without its state (`None`: it has
    /// none; an error inside: it cannot be read).
    pub(super) fn mark_of(&self, key: &StreamKey, partition: u32) -> Result<Option<Result<CheckpointMark>>> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let found: Option<(String, i64)> = conn
            .query_row(
                "SELECT position, next_seq FROM partition_checkpoints WHERE tenant = ?1 AND pipeline = ?2 AND source = ?3 AND partition = ?4",
                params![key.tenant, key.pipeline, key.source, partition],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(found.map(|(position, next_seq)| {
            let mark = || Ok::<_, anyhow::Error>(CheckpointMark { position: serde_json::from_str(&position)?, next_seq: u64::try_from(next_seq)? });
            mark().with_context(|| self.unreadable(&key.pipeline, partition))
        }))
    }

    /// The stream's partitions (one, or all), each with when it was taken.
    pub(super) fn read(&self, key: &StreamKey, only: Option<u32>) -> Result<BTreeMap<u32, (PartitionCheckpoint, i64)>> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction()?;
        // Without `only`, -1 matches every partition.
        let k = params![key.tenant, key.pipeline, key.source, only.map_or(-1, i64::from)];
        let unreadable = |partition: u32| self.unreadable(&key.pipeline, partition);
        let mut rows = tx.prepare(
            "SELECT partition, taken_at_ms, position, next_seq, router FROM partition_checkpoints
             WHERE tenant = ?1 AND pipeline = ?2 AND source = ?3 AND ?4 IN (-1, partition)",
        )?;
        let rows = rows
            .query_map(k, |r| Ok((r.get::<_, u32>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?, r.get::<_, String>(4)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut states = tx.prepare(
            "SELECT partition, detector, version, state FROM partition_states
             WHERE tenant = ?1 AND pipeline = ?2 AND source = ?3 AND ?4 IN (-1, partition) ORDER BY partition, detector",
        )?;
        let mut detectors: BTreeMap<u32, Vec<DetectorState>> = BTreeMap::new();
        for state in states.query_map(k, |r| Ok((r.get::<_, u32>(0)?, DetectorState { name: r.get(1)?, version: r.get(2)?, state: r.get(3)? })))? {
            let (partition, state) = state?;
            detectors.entry(partition).or_default().push(state);
        }
        let mut partitions = BTreeMap::new();
        for (partition, taken_at_ms, position, next_seq, router) in rows {
            let c = PartitionCheckpoint {
                position: serde_json::from_str(&position).with_context(|| unreadable(partition))?,
                next_seq: u64::try_from(next_seq).with_context(|| unreadable(partition))?,
                detectors: detectors.remove(&partition).unwrap_or_default(),
                router: serde_json::from_str(&router).with_context(|| unreadable(partition))?,
            };
            partitions.insert(partition, (c, taken_at_ms));
        }
        Ok(partitions)
    }
}
