//! Checkpoints kept in the pipeline's broker ([`StateTable`]: a Redis hash,
//! a compacted Kafka topic), so whichever host of the group reads a
//! partition on, on any machine, carries its state on. A stream's table
//! holds a field per partition, each a whole partition's checkpoint; the
//! stream's sent alerts are a table of their own.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::{Checkpoint, PartitionCheckpoint, StreamKey};
use clean_host_core::timestamp::now_ms;
use clean_host_quality::alert::RouterState;
use clean_host_quality::analysis::DetectorState;
use clean_host_stream::source::{ResumePosition, StateTable};

/// A partition's checkpoint as stored: this header (JSON, its length first
/// as 4 bytes little-endian), then each detector's state, in its order.
#[derive(Serialize, Deserialize)]
struct Header {
    taken_at_ms: i64,
    position: ResumePosition,
    next_seq: u64,
    router: RouterState,
    /// Each detector's name, version and the length of its state.
    detectors: Vec<(String, String, usize)>,
}

fn encode(checkpoint: &PartitionCheckpoint, taken_at_ms: i64) -> Result<Vec<u8>> {
    let header = Header {
        taken_at_ms,
        position: checkpoint.position.clone(),
        next_seq: checkpoint.next_seq,
        router: checkpoint.router.clone(),
        detectors: checkpoint.detectors.iter().map(|d| (d.name.clone(), d.version.clone(), d.state.len())).collect(),
    };
    let header = serde_json::to_vec(&header)?;
    let mut bytes = Vec::with_capacity(4 + header.len() + checkpoint.detectors.iter().map(|d| d.state.len()).sum::<usize>());
    bytes.extend_from_slice(&u32::try_from(header.len()).context("a checkpoint header over 4 GiB")?.to_le_bytes());
    bytes.extend_from_slice(&header);
    for d in &checkpoint.detectors {
        bytes.extend_from_slice(&d.state);
    }
    Ok(bytes)
}

fn decode(bytes: &[u8]) -> Result<(PartitionCheckpoint, i64)> {
    let (len, rest) = bytes.split_first_chunk::<4>().context("shorter than its header's length")?;
    let (header, mut states) = rest.split_at_checked(u32::from_le_bytes(*len) as usize).context("shorter than its header")?;
    let header: Header = serde_json::from_slice(header)?;
    let mut detectors = Vec::with_capacity(header.detectors.len());
    for (name, version, len) in header.detectors {
        let (state, rest) = states.split_at_checked(len).with_context(|| format!("shorter than detector {name}'s state"))?;
        detectors.push(DetectorState { name, version, state: state.to_vec() });
        states = rest;
    }
    anyhow::ensure!(states.is_empty(), "{} bytes after its last state", states.len());
    let checkpoint = PartitionCheckpoint { position: header.position, next_seq: header.next_seq, detectors, router: header.router };
    Ok((checkpoint, header.taken_at_ms))
}

/// The checkpoints of the pipelines that read one broker (one per pipeline:
/// it shares the pipeline's broker settings and credentials).
#[derive(Clone)]
pub(super) struct BrokerStore {
    table: Arc<Mutex<Box<dyn StateTable>>>,
}

/// The table of a stream's checkpoints, or (`kind` = `alerts-sent`) of its
/// sent alerts: tenant, pipeline and source as a JSON list, which no two
/// streams share.
fn table_of(kind: &str, key: &StreamKey) -> String {
    format!("{kind}:{}", serde_json::json!([key.tenant, key.pipeline, key.source]))
}

impl BrokerStore {
    pub(super) fn new(table: Box<dyn StateTable>) -> Self {
        BrokerStore { table: Arc::new(Mutex::new(table)) }
    }

    pub(super) fn name(&self) -> String {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).name()
    }

    /// Replace the checkpoint of each partition `checkpoint` names (but,
    /// `forward_only`, one stored further on by the partition's new owner).
    pub(super) fn write(&self, key: &StreamKey, checkpoint: &Checkpoint, forward_only: bool) -> Result<()> {
        let stored = match forward_only {
            true => self.read(key, None)?,
            false => BTreeMap::new(),
        };
        let mut fields = Vec::with_capacity(checkpoint.partitions.len());
        for (partition, c) in &checkpoint.partitions {
            if stored.get(partition).is_some_and(|(s, _)| s.position.next_offset > c.position.next_offset) {
                continue;
            }
            fields.push((partition.to_string(), encode(c, checkpoint.taken_at_ms)?));
        }
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.put(&table_of("checkpoint", key), &fields).with_context(|| format!("storing a checkpoint in {}", table.name()))
    }

    /// The stream's partitions (one, or all), each with when it was taken.
    pub(super) fn read(&self, key: &StreamKey, only: Option<u32>) -> Result<BTreeMap<u32, (PartitionCheckpoint, i64)>> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let name = table_of("checkpoint", key);
        let fields = match only {
            Some(partition) => table.get(&name, &partition.to_string())?.map(|v| (partition.to_string(), v)).into_iter().collect(),
            None => table.get_all(&name)?,
        };
        let mut partitions = BTreeMap::new();
        for (field, value) in fields {
            let unreadable = || format!("the checkpoint of pipeline {} partition {field} in {} is unreadable", key.pipeline, table.name());
            let partition: u32 = field.parse().with_context(unreadable)?;
            partitions.insert(partition, decode(&value).with_context(unreadable)?);
        }
        Ok(partitions)
    }

    pub(super) fn was_sent(&self, key: &StreamKey, sent: u64) -> Result<bool> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let found = table.get(&table_of("alerts-sent", key), &format!("{sent:016x}"));
        Ok(found.with_context(|| format!("asking {} whether an alert went out", table.name()))?.is_some())
    }

    pub(super) fn record_sent(&self, key: &StreamKey, sent: u64) -> Result<()> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let field = (format!("{sent:016x}"), now_ms().to_le_bytes().to_vec());
        table.put(&table_of("alerts-sent", key), &[field]).with_context(|| format!("writing the alert ledger in {}", table.name()))
    }
}
