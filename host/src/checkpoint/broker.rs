//! Checkpoints kept in the pipeline's broker ([`StateTable`]: a Redis hash,
//! a compacted Kafka topic, a Pulsar topic), so whichever host of the group reads a
//! partition on, on any machine, carries its state on. A stream's table
//! holds a field per partition, each a whole partition's checkpoint; the
//! stream's sent alerts are a table of their own.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::{Checkpoint, CheckpointMark, PartitionCheckpoint, StreamKey};
use clean_host_core::timestamp::now_ms;
use clean_host_quality::alert::RouterState;
use clean_host_quality::analysis::DetectorState;
use clean_host_stream::source::{ResumePosition, StateTable, STATE_TABLE_KEPT, STATE_VALUE_MAX};

/// How long the analysis thread waits for a broker's table to say which of
/// a window's alerts went out: not knowing in time, they go out (at least once).
const SENT_ASKED_WITHIN: std::time::Duration = std::time::Duration::from_secs(3);

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

/// `checkpoint` encoded in at most [`STATE_VALUE_MAX`] bytes, and the
/// detectors whose states were left out for it (the largest first), so one
/// detector's state stops no commit; those start cold from this checkpoint.
fn encode_within(checkpoint: &PartitionCheckpoint, taken_at_ms: i64) -> Result<(Vec<u8>, Vec<&DetectorState>)> {
    let bytes = encode(checkpoint, taken_at_ms)?;
    let mut over = bytes.len().saturating_sub(STATE_VALUE_MAX);
    if over == 0 {
        return Ok((bytes, Vec::new()));
    }
    let mut by_size: Vec<&DetectorState> = checkpoint.detectors.iter().collect();
    by_size.sort_by_key(|d| std::cmp::Reverse(d.state.len()));
    let mut left_out = Vec::new();
    for d in by_size {
        if over == 0 {
            break;
        }
        over = over.saturating_sub(d.state.len());
        left_out.push(d);
    }
    let detectors = checkpoint.detectors.iter().filter(|d| !left_out.iter().any(|l| l.name == d.name)).cloned().collect();
    let fitting = PartitionCheckpoint { position: checkpoint.position.clone(), next_seq: checkpoint.next_seq, detectors, router: checkpoint.router.clone() };
    Ok((encode(&fitting, taken_at_ms)?, left_out))
}

/// The header's bytes and what follows them.
fn header_bytes(bytes: &[u8]) -> Result<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<4>().context("shorter than its header's length")?;
    rest.split_at_checked(u32::from_le_bytes(*len) as usize).context("shorter than its header")
}

/// The header and what follows it.
fn split(bytes: &[u8]) -> Result<(Header, &[u8])> {
    let (header, states) = header_bytes(bytes)?;
    Ok((serde_json::from_slice(header)?, states))
}

/// Where a stored partition's checkpoint is: read from its header alone, so
/// a header of another version (more or other fields) still says it.
fn stored_mark(bytes: &[u8]) -> Result<CheckpointMark> {
    #[derive(Deserialize)]
    struct Stored {
        position: ResumePosition,
        next_seq: u64,
    }
    let stored: Stored = serde_json::from_slice(header_bytes(bytes)?.0)?;
    Ok(CheckpointMark { position: stored.position, next_seq: stored.next_seq })
}

fn decode(bytes: &[u8]) -> Result<(PartitionCheckpoint, i64)> {
    let (header, mut states) = split(bytes)?;
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
    /// Each detector of a tenant's pipeline's partition whose state was said
    /// to be left out of checkpoints (said once, not every checkpoint).
    left_out: Arc<Mutex<HashSet<String>>>,
}

/// The table of a stream's checkpoints, or (`kind` = `alerts-sent`) of its
/// sent alerts: tenant, pipeline and source as a JSON list, which no two
/// streams share.
fn table_of(kind: &str, key: &StreamKey) -> String {
    format!("{kind}:{}", serde_json::json!([key.tenant, key.pipeline, key.source]))
}

impl BrokerStore {
    pub(super) fn new(table: Box<dyn StateTable>) -> Self {
        BrokerStore { table: Arc::new(Mutex::new(table)), left_out: Arc::default() }
    }

    pub(super) fn name(&self) -> String {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).name()
    }

    /// Replace the checkpoint of each partition `checkpoint` names (but,
    /// `forward_only`, one stored further on by the partition's new owner).
    pub(super) fn write(&self, key: &StreamKey, checkpoint: &Checkpoint, forward_only: bool) -> Result<()> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let name = table_of("checkpoint", key);
        // Where each partition is stored (its header alone); one that cannot be read is written over.
        let mut stored = BTreeMap::new();
        if forward_only {
            for (field, value) in table.get_all(&name).with_context(|| format!("reading {}", table.name()))? {
                match field
                    .parse::<u32>()
                    .ok()
                    .filter(|p| checkpoint.partitions.contains_key(p))
                    .map(|p| (p, stored_mark(&value).map(|m| m.position.next_offset)))
                {
                    Some((partition, Ok(at))) => drop(stored.insert(partition, at)),
                    Some((partition, Err(e))) => {
                        tracing::warn!(
                            "pipeline {} partition {partition}: the checkpoint in {} is unreadable ({e:#}); written over",
                            key.pipeline,
                            table.name()
                        );
                    }
                    None => {}
                }
            }
        }
        let mut fields = Vec::with_capacity(checkpoint.partitions.len());
        for (partition, c) in &checkpoint.partitions {
            if stored.get(partition).is_some_and(|&at| at > c.position.next_offset) {
                continue;
            }
            let (value, left_out) = encode_within(c, checkpoint.taken_at_ms)?;
            for d in left_out {
                if self.left_out.lock().unwrap_or_else(|p| p.into_inner()).insert(format!("{}\0{}\0{partition}\0{}", key.tenant, key.pipeline, d.name)) {
                    tracing::warn!(
                        "pipeline {} partition {partition}: detector {}'s state ({} bytes) is left out of its checkpoints while they would be over {} MiB; it starts cold from them",
                        key.pipeline,
                        d.name,
                        d.state.len(),
                        STATE_VALUE_MAX >> 20
                    );
                }
            }
            fields.push((partition.to_string(), value));
        }
        table.put(&name, &fields).with_context(|| format!("storing a checkpoint in {}", table.name()))
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

    /// Where `partition`'s checkpoint is, read from its header alone (`None`:
    /// it has none; an error inside: it cannot be read).
    pub(super) fn mark_of(&self, key: &StreamKey, partition: u32) -> Result<Option<Result<CheckpointMark>>> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let value = table.get(&table_of("checkpoint", key), &partition.to_string())?;
        let name = table.name();
        Ok(value.map(|v| stored_mark(&v).with_context(|| format!("the checkpoint of pipeline {} partition {partition} in {name} is unreadable", key.pipeline))))
    }

    /// Which of the alerts went out: asked of this period's table and the
    /// one before, each read within [`SENT_ASKED_WITHIN`].
    pub(super) fn were_sent(&self, key: &StreamKey, sent: &[u64]) -> Result<Vec<bool>> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let fields: Vec<String> = sent.iter().map(|&s| sent_field(s)).collect();
        let mut found = vec![false; sent.len()];
        let period = sent_period(now_ms());
        for period in [period, period - 1] {
            let values = table.get_within(&sent_table(key, period), &fields, SENT_ASKED_WITHIN);
            let values = values.with_context(|| format!("asking {} whether alerts went out", table.name()))?;
            found.iter_mut().zip(values).for_each(|(found, value)| *found |= value.is_some());
        }
        Ok(found)
    }

    pub(super) fn record_sent(&self, key: &StreamKey, sent: &[u64]) -> Result<()> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_ms();
        let fields: Vec<(String, Vec<u8>)> = sent.iter().map(|&s| (sent_field(s), now.to_le_bytes().to_vec())).collect();
        let name = sent_table(key, sent_period(now));
        table.put(&name, &fields).with_context(|| format!("writing the alert ledger in {}", table.name()))
    }
}

/// The table of a stream's alerts sent in `period` ([`sent_period`]).
fn sent_table(key: &StreamKey, period: i64) -> String {
    table_of(&format!("alerts-sent-{period}"), key)
}

/// A sent alert's field: its ledger key in hex.
fn sent_field(sent: u64) -> String {
    format!("{sent:016x}")
}

/// The 30-day period a sent alert is kept under: a stream's sent alerts
/// are a table per period, asked of for two, so none grows for ever (the
/// broker drops a table 30 days after its last write).
fn sent_period(ms: i64) -> i64 {
    ms.div_euclid(STATE_TABLE_KEPT.as_millis() as i64)
}
