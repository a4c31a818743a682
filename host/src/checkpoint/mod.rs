//! Checkpoints: the state that decides a pipeline's alerts, kept with the
//! positions it belongs to, so a restart (a deploy, a `kill -9`) carries on
//! as if the process had never stopped: no window learned twice or skipped,
//! the same alerts.
//!
//! A checkpoint is taken on the analysis thread between two windows, once
//! every window below the positions it names has been analysed: per
//! partition, each detector's snapshot (detectors run an instance per
//! partition), the router's cooldowns and control-rule series of that
//! partition, the next offset to read and the next window's number. It is
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
//! Broker pipelines keep them in their broker ([`broker`]: a Redis hash, a
//! compacted Kafka topic, a Pulsar topic), so any host of the group, on any machine,
//! resumes a partition with its state; other pipelines, and broker ones
//! with `in_broker = false`, in `DATA_DIR/checkpoints.db` ([`file`]). One
//! per tenant, pipeline, source and consumer group, and partition: another
//! stream under the same pipeline name, or another group reading the same
//! topic, never inherits it, and a partition's checkpoint is whole without
//! the others'.

mod broker;
mod file;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use broker::BrokerStore;
use clean_host_quality::alert::RouterState;
use clean_host_quality::analysis::DetectorState;
use clean_host_stream::source::{ResumePosition, Source, StateTable};
use file::FileStore;

/// The checkpoints' file in the data dir.
const CHECKPOINTS_FILE: &str = "checkpoints.db";

/// `[checkpoints]` in the config file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Checkpoint broker pipelines whose source can resume at a position (Kafka; Redis with
    /// `consumer=`; Pulsar exclusive or failover).
    pub enabled: bool,
    /// Keep them in the pipeline's broker (Kafka: a compacted topic; Redis: a hash per
    /// stream; Pulsar: a topic; named by the broker table's `state_table`), so any host of
    /// the group resumes from them; false keeps them in `path`.
    pub in_broker: bool,
    /// How often a checkpoint is taken; the broker's commits follow it.
    pub interval_ms: u64,
    /// Where they are kept when not in the broker (default `DATA_DIR/checkpoints.db`).
    /// Hosts of one consumer group on one machine that share this file carry each
    /// other's partitions on with their state after a rebalance or a crash
    /// (SQLite in WAL mode: not over a network file system).
    pub path: Option<PathBuf>,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig { enabled: true, in_broker: true, interval_ms: 5_000, path: None }
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

    /// The checkpoints' file of a host whose data dir is `data_dir`.
    pub fn file(&self, data_dir: &Path) -> PathBuf {
        self.path.clone().unwrap_or_else(|| data_dir.join(CHECKPOINTS_FILE))
    }
}

/// Where a host's pipelines keep their checkpoints, and how often.
pub struct Checkpoints {
    /// The file of those not kept in their broker.
    pub file: CheckpointStore,
    /// Broker pipelines keep them in their broker where it keeps tables.
    pub in_broker: bool,
    pub interval: Duration,
}

impl Checkpoints {
    /// Where the pipeline reading `source` keeps its checkpoints.
    pub fn store_for(&self, source: &dyn Source) -> Result<CheckpointStore> {
        if !self.in_broker {
            return Ok(self.file.clone());
        }
        let table = source
            .state_table()
            .with_context(|| format!("{}: opening the table its checkpoints are kept in (or set [checkpoints] in_broker = false)", source.name()))?;
        Ok(match (table, &self.file.0) {
            (Some(table), Place::File(before)) => CheckpointStore(Place::Broker { broker: BrokerStore::new(table), before: before.clone() }),
            _ => self.file.clone(),
        })
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

/// One partition's state at one cut of its stream: all that decides its
/// alerts from there on, so whichever host reads it on carries on alone.
#[derive(Debug, Clone)]
pub struct PartitionCheckpoint {
    /// Where to read on.
    pub position: ResumePosition,
    /// The number of its next window.
    pub next_seq: u64,
    /// Each detector's state for this partition.
    pub detectors: Vec<DetectorState>,
    /// Its cooldowns and control-rule series.
    pub router: RouterState,
}

/// Where a partition's checkpoint stands, read without its state.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointMark {
    pub position: ResumePosition,
    /// The number of its next window.
    pub next_seq: u64,
}

/// One pipeline's state at one cut of its stream, partition by partition.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub partitions: BTreeMap<u32, PartitionCheckpoint>,
    /// When it was taken (the oldest partition's, for one loaded).
    pub taken_at_ms: i64,
}

impl Checkpoint {
    /// The partitions' checkpoints as read, each with when it was taken, as
    /// one (taken when the oldest was); `None` if there are none.
    fn of(partitions: BTreeMap<u32, (PartitionCheckpoint, i64)>) -> Option<Checkpoint> {
        let taken_at_ms = partitions.values().map(|(_, taken_at_ms)| *taken_at_ms).min()?;
        Some(Checkpoint { partitions: partitions.into_iter().map(|(p, (c, _))| (p, c)).collect(), taken_at_ms })
    }

    /// Per partition, where to read on.
    pub fn positions(&self) -> BTreeMap<u32, ResumePosition> {
        self.partitions.iter().map(|(p, c)| (*p, c.position.clone())).collect()
    }

    /// Bytes of detector state it carries.
    pub fn state_bytes(&self) -> usize {
        self.partitions.values().flat_map(|c| &c.detectors).map(|d| d.state.len()).sum()
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
    /// Each detector's state in it, over all partitions.
    pub detectors: Vec<StoredState>,
}

impl StoredCheckpoint {
    /// What the checkpoint of `stream` kept in a broker's `table` names, if
    /// it has one (`plugin list`: no host needs to run).
    pub fn in_broker(table: Box<dyn StateTable>, stream: &StreamKey) -> Result<Option<StoredCheckpoint>> {
        let Some(checkpoint) = Checkpoint::of(BrokerStore::new(table).read(stream, None)?) else {
            return Ok(None);
        };
        let mut detectors: BTreeMap<&str, (BTreeSet<&str>, u64)> = BTreeMap::new();
        for d in checkpoint.partitions.values().flat_map(|c| &c.detectors) {
            let (versions, bytes) = detectors.entry(&d.name).or_default();
            versions.insert(&d.version);
            *bytes += d.state.len() as u64;
        }
        let detectors = detectors
            .into_iter()
            .map(|(name, (versions, bytes))| StoredState { name: name.to_string(), version: versions.into_iter().collect::<Vec<_>>().join(","), bytes })
            .collect();
        Ok(Some(StoredCheckpoint {
            tenant: stream.tenant.clone(),
            pipeline: stream.pipeline.clone(),
            source: clean_host_stream::source::config::masked(&stream.source),
            positions: checkpoint.positions(),
            taken_at_ms: checkpoint.taken_at_ms,
            detectors,
        }))
    }
}

/// One detector's state in a stored checkpoint, over all partitions.
#[derive(Debug, Clone, Serialize)]
pub struct StoredState {
    pub name: String,
    /// The versions that gave it (comma-separated when partitions differ).
    pub version: String,
    pub bytes: u64,
}

/// Where a pipeline's checkpoints are kept: a file, or its broker.
#[derive(Clone)]
pub struct CheckpointStore(Place);

#[derive(Clone)]
enum Place {
    File(FileStore),
    /// In the broker; a stream it has nothing of yet reads what the file
    /// kept before checkpoints moved to the broker (on an upgrade), dropped
    /// from the file once the broker has the stream's first checkpoint.
    Broker {
        broker: BrokerStore,
        before: FileStore,
    },
}

impl CheckpointStore {
    /// The checkpoints in the SQLite file at `path` (created if need be).
    pub fn open(path: &Path) -> Result<Self> {
        Ok(CheckpointStore(Place::File(FileStore::open(path)?)))
    }

    /// The file of another process (`plugin list`), only read: it creates
    /// and changes nothing.
    pub fn read_only(path: &Path) -> Result<Self> {
        Ok(CheckpointStore(Place::File(FileStore::read_only(path)?)))
    }

    /// The checkpoints a broker keeps in `table`, and those `before` kept
    /// until they moved there.
    pub fn in_broker(table: Box<dyn StateTable>, before: &Path) -> Result<Self> {
        Ok(CheckpointStore(Place::Broker { broker: BrokerStore::new(table), before: FileStore::open(before)? }))
    }

    /// Where it is, for messages.
    pub fn name(&self) -> String {
        match &self.0 {
            Place::File(f) => f.path().display().to_string(),
            Place::Broker { broker, .. } => broker.name(),
        }
    }

    /// Replace the checkpoint of each partition `checkpoint` names; other
    /// partitions' stay.
    pub fn save(&self, key: &StreamKey, checkpoint: &Checkpoint) -> Result<()> {
        self.write(key, checkpoint, false)
    }

    /// As [`CheckpointStore::save`], where partitions move between hosts: a
    /// partition whose stored position is further on keeps it (its new
    /// owner stored it after this host lost the partition).
    pub fn advance(&self, key: &StreamKey, checkpoint: &Checkpoint) -> Result<()> {
        self.write(key, checkpoint, true)
    }

    fn write(&self, key: &StreamKey, checkpoint: &Checkpoint, forward_only: bool) -> Result<()> {
        match &self.0 {
            Place::File(f) => f.write(key, checkpoint, forward_only),
            Place::Broker { broker, before } => {
                broker.write(key, checkpoint, forward_only)?;
                // The file's checkpoint is read once, until the broker has one: never again after.
                before.forget(key)
            }
        }
    }

    /// Every checkpoint in a file, by tenant, pipeline and source (a
    /// partition whose position cannot be read is said and left out); a
    /// broker's are listed by [`StoredCheckpoint::in_broker`], per stream.
    pub fn list(&self) -> Result<Vec<StoredCheckpoint>> {
        match &self.0 {
            Place::File(f) => f.list(),
            Place::Broker { .. } => Ok(Vec::new()),
        }
    }

    /// Which of the alerts of `stream` whose ledger keys are `sent` went out
    /// (from any host that keeps its checkpoints here): one question for all.
    pub fn were_sent(&self, stream: &StreamKey, sent: &[u64]) -> Result<Vec<bool>> {
        match &self.0 {
            _ if sent.is_empty() => Ok(Vec::new()),
            Place::File(f) => f.were_sent(sent),
            Place::Broker { broker, before } => {
                let (there, here) = (broker.were_sent(stream, sent)?, before.were_sent(sent)?);
                Ok(there.into_iter().zip(here).map(|(there, here)| there || here).collect())
            }
        }
    }

    /// Remember that the alerts of `stream` whose ledger keys are `sent` went out.
    pub fn record_sent(&self, stream: &StreamKey, sent: &[u64]) -> Result<()> {
        match &self.0 {
            _ if sent.is_empty() => Ok(()),
            Place::File(f) => f.record_sent(sent),
            Place::Broker { broker, .. } => broker.record_sent(stream, sent),
        }
    }

    /// The stream's checkpoint, every partition it has one for; `None` if none.
    pub fn load(&self, key: &StreamKey) -> Result<Option<Checkpoint>> {
        Ok(Checkpoint::of(self.read(key, None)?))
    }

    /// Where the stream's checkpoint is, without its state: per partition
    /// the position, and when the oldest was taken; `None` if it has none.
    pub fn positions(&self, key: &StreamKey) -> Result<Option<(BTreeMap<u32, ResumePosition>, i64)>> {
        match &self.0 {
            Place::File(f) => f.positions(key),
            Place::Broker { .. } => Ok(self.load(key)?.map(|c| (c.positions(), c.taken_at_ms))),
        }
    }

    /// Where `partition`'s checkpoint is, without its state: the latest any
    /// host of the group stored. One that cannot be read is said and is none
    /// (the next is written over it).
    pub fn mark_of(&self, key: &StreamKey, partition: u32) -> Result<Option<CheckpointMark>> {
        let found = match &self.0 {
            Place::File(f) => f.mark_of(key, partition)?,
            Place::Broker { broker, before } => match broker.mark_of(key, partition)? {
                Some(found) => Some(found),
                None => before.mark_of(key, partition)?,
            },
        };
        Ok(found.and_then(|mark| mark.inspect_err(|e| tracing::warn!("{e:#}")).ok()))
    }

    /// One partition's checkpoint and when it was taken, if it has one: the
    /// latest, whichever host of the group stored it.
    pub fn load_partition(&self, key: &StreamKey, partition: u32) -> Result<Option<(PartitionCheckpoint, i64)>> {
        Ok(self.read(key, Some(partition))?.remove(&partition))
    }

    fn read(&self, key: &StreamKey, only: Option<u32>) -> Result<BTreeMap<u32, (PartitionCheckpoint, i64)>> {
        match &self.0 {
            Place::File(f) => f.read(key, only),
            Place::Broker { broker, before } => {
                let found = broker.read(key, only)?;
                if !found.is_empty() {
                    return Ok(found);
                }
                let kept_before = before.read(key, only)?;
                if !kept_before.is_empty() {
                    tracing::info!(
                        "pipeline {}: carrying on from the checkpoint kept in {} before checkpoints moved to the broker",
                        key.pipeline,
                        before.path().display()
                    );
                }
                Ok(kept_before)
            }
        }
    }
}
