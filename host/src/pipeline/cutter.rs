//! The decode side of a pipeline: lines and messages to records, records to
//! windows per partition, bad input to dead letters, and the bookkeeping of
//! which offsets every partition may acknowledge once its closed windows
//! are analysed.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};

use super::{Common, Cut, WindowWork, Work};
use crate::checkpoint::{CheckpointStore, PartitionCheckpoint, StreamKey};
use clean_host_core::timestamp::{now_ms, TimeParser};
use clean_host_stream::dead_letter::Origin;
use clean_host_stream::decode::message::MessageDecoder;
use clean_host_stream::decode::{self, DecodeError, Record};
use clean_host_stream::source::{Ack, Message, Position, ResumePosition, MAX_LINE_BYTES};
use clean_host_stream::window::{ClosedWindow, Placement, RecordMeta, WindowBuffer, WindowSpec, Windower};

/// One partition's windows and how far it has been acknowledged.
struct PartitionState {
    windower: Windower,
    /// One past the last offset read.
    next_offset: u64,
    acked_below: u64,
    /// Broker ids of offsets not yet acknowledged (sources whose ids are not offsets).
    ids: BrokerIds,
    /// Dead letters not yet attributed to a window.
    dead_since_window: u64,
}

impl PartitionState {
    fn new(spec: WindowSpec) -> Self {
        PartitionState { windower: Windower::new(spec), next_offset: 0, acked_below: 0, ids: BrokerIds::default(), dead_since_window: 0 }
    }
}

/// Broker ids by offset. Offsets arrive in rising order, so the ids are a
/// queue, searched by offset: a message costs a push, not a tree insert.
#[derive(Default)]
pub(super) struct BrokerIds(VecDeque<(u64, Arc<str>)>);

impl BrokerIds {
    pub(super) fn insert(&mut self, offset: u64, id: Arc<str>) {
        match self.0.back() {
            Some(&(last, _)) if last >= offset => match self.search(offset) {
                Ok(at) => self.0[at].1 = id,
                Err(at) => self.0.insert(at, (offset, id)),
            },
            _ => self.0.push_back((offset, id)),
        }
    }

    fn search(&self, offset: u64) -> Result<usize, usize> {
        self.0.binary_search_by_key(&offset, |&(o, _)| o)
    }

    pub(super) fn get(&self, offset: u64) -> Option<&Arc<str>> {
        self.search(offset).ok().map(|at| &self.0[at].1)
    }

    /// Forget the ids of offsets below `below`: the last of them, if any.
    pub(super) fn forget_below(&mut self, below: u64) -> Option<Arc<str>> {
        let n = self.0.partition_point(|&(o, _)| o < below);
        self.0.drain(..n).next_back().map(|(_, id)| id)
    }
}

/// Decodes lines and messages and cuts windows for one pipeline.
pub(super) struct Cutter<'a> {
    common: Common<'a>,
    decoder: MessageDecoder,
    event_field: Option<(u32, String)>,
    /// Reads the event field's times one after another (they mostly repeat
    /// the date and time of day of the one before).
    times: TimeParser,
    spec: WindowSpec,
    /// By partition: a tree, as a record's lookup among a few small keys
    /// costs less there than hashing it.
    partitions: BTreeMap<u32, PartitionState>,
    /// Closed windows with their partition and dead letters.
    closed: Vec<(u32, u64, ClosedWindow)>,
    scratch: Vec<ClosedWindow>,
    /// Where partitions move: where a partition that arrives looks up its
    /// checkpoint.
    adoption: Option<(CheckpointStore, StreamKey)>,
    /// Partitions that arrived and carry on from their checkpoints, to hand
    /// over before their windows.
    adopted: Vec<Work>,
    /// Records placed in windows since `work` last added them to the
    /// pipeline's counter (one atomic add a block, not a record).
    accepted: u64,
}

/// The state of `partition`, created on its first record.
fn partition_state(partitions: &mut BTreeMap<u32, PartitionState>, spec: WindowSpec, partition: u32) -> &mut PartitionState {
    partitions.entry(partition).or_insert_with(|| PartitionState::new(spec))
}

impl<'a> Cutter<'a> {
    /// A cutter with no partition seen yet; `event_field`: the field whose
    /// value is each record's event time.
    pub(super) fn new(common: Common<'a>, mut decoder: MessageDecoder, spec: WindowSpec, event_field: Option<String>) -> Result<Self> {
        let event_field = match event_field {
            Some(field) => Some((decoder.json.fields.intern(&field).context("naming the event-time field")?, field)),
            None => None,
        };
        Ok(Cutter {
            common,
            decoder,
            event_field,
            times: TimeParser::default(),
            spec,
            partitions: BTreeMap::new(),
            closed: Vec::new(),
            scratch: Vec::new(),
            adoption: None,
            adopted: Vec::new(),
            accepted: 0,
        })
    }

    /// Each partition that arrives carries on from its checkpoint in `store`.
    pub(super) fn adopt_from(&mut self, store: CheckpointStore, key: StreamKey) {
        self.adoption = Some((store, key));
    }

    /// Whether partitions carry on from their checkpoints as they arrive.
    pub(super) fn adopts(&self) -> bool {
        self.adoption.is_some()
    }

    /// `partition` arrived, read from `from` on: it carries on from its
    /// checkpoint, the latest any consumer of the group stored, unless it
    /// has none or was read past it (then it starts cold). `None`: no
    /// checkpoint applies, and it starts cold.
    pub(super) fn arrive(&mut self, partition: u32, from: Option<u64>) {
        if self.partitions.contains_key(&partition) {
            return;
        }
        let started = Instant::now();
        if let Some((checkpoint, at, next_seq)) = from.and_then(|from| self.checkpoint_of(partition, from)) {
            self.carry_on(partition, at, next_seq);
            if let Some(checkpoint) = checkpoint {
                self.adopted.push(Work::Adopt(partition, Box::new(checkpoint), started.elapsed()));
            }
        }
        self.partition(partition);
    }

    /// The checkpoint `partition` carries on from when read from `from`,
    /// its position and next window's number (said either way). `None`
    /// inside when its state cannot be read: the source numbers on from
    /// its position all the same, so the partition starts cold there.
    fn checkpoint_of(&self, partition: u32, from: u64) -> Option<(Option<PartitionCheckpoint>, u64, u64)> {
        let (store, key) = self.adoption.as_ref()?;
        let pipeline = self.common.pipeline;
        let (checkpoint, taken_at_ms) = match store.load_partition(key, partition) {
            Ok(found) => found?,
            Err(e) => {
                let mark = store.mark_of(key, partition).ok().flatten()?;
                let at = mark.position.next_offset;
                tracing::warn!("pipeline {pipeline}: {e:#}; partition {partition} starts cold at its offset {at}");
                return (from <= at).then_some((None, at, mark.next_seq));
            }
        };
        let at = checkpoint.position.next_offset;
        if from > at {
            tracing::warn!("pipeline {pipeline}: partition {partition} was read past its checkpoint (at {at}, now {from}); it starts cold");
            return None;
        }
        let age_s = (now_ms() - taken_at_ms) as f64 / 1000.0;
        tracing::info!("pipeline {pipeline}: partition {partition} resumed from its checkpoint of {age_s:.1} s ago at offset {at}");
        let next_seq = checkpoint.next_seq;
        Some((Some(checkpoint), at, next_seq))
    }

    /// Carry `partition` on at `next_offset`: everything below it
    /// acknowledged already (so the next cut names the last record below
    /// it), its windows numbered on from `next_seq`.
    fn carry_on(&mut self, partition: u32, next_offset: u64, next_seq: u64) {
        let state = self.partition(partition);
        (state.next_offset, state.acked_below) = (next_offset, next_offset);
        state.windower.resume_seq(next_seq);
    }

    fn partition(&mut self, partition: u32) -> &mut PartitionState {
        partition_state(&mut self.partitions, self.spec, partition)
    }

    /// Everything of `partition` below `next` was read (lines: each became a
    /// record or a dead letter).
    pub(super) fn read_up_to(&mut self, partition: u32, next: u64) {
        self.partition(partition).next_offset = next;
    }

    pub(super) fn dead_letter(&mut self, partition: u32, offset: u64, position: Option<Position>, reason: &str, raw: &[u8], bytes: u64) -> Result<()> {
        let origin = Origin { pipeline: self.common.pipeline, source: self.common.source, partition, offset, position };
        match self.common.dead_letter_topic {
            Some(topic) => {
                let mut topic = topic.lock().unwrap_or_else(|p| p.into_inner());
                topic.write(&origin, reason, raw, bytes).context("producing a dead letter")?;
            }
            None => {
                let mut dl = self.common.shared.dead_letters.lock().unwrap_or_else(|p| p.into_inner());
                dl.write(&origin, reason, raw, bytes).context("writing a dead letter")?;
            }
        }
        self.common.counters.dead_letters.fetch_add(1, Ordering::Relaxed);
        self.partition(partition).dead_since_window += 1;
        Ok(())
    }

    pub(super) fn line(&mut self, partition: u32, offset: u64, line: &[u8], read_at_ms: i64) -> Result<()> {
        if line.len() > MAX_LINE_BYTES {
            let reason = format!("line of {} bytes is over the {} MiB limit", line.len(), MAX_LINE_BYTES >> 20);
            return self.dead_letter(partition, offset, None, &reason, line, line.len() as u64);
        }
        match self.decode_into_windows(partition, offset, Input::Line(line), read_at_ms) {
            Ok(placement) => self.placed(partition, offset, None, placement, line),
            Err(e) => self.dead_letter(partition, offset, None, &e.to_string(), line, line.len() as u64),
        }
    }

    /// Decode a line or message into its partition's windows: straight into
    /// a window's columns where the window does not depend on the record (a
    /// tumbling count window, no event time) and its format allows, else
    /// into a record first.
    fn decode_into_windows(&mut self, partition: u32, offset: u64, input: Input<'_>, read_at_ms: i64) -> Result<Placement, DecodeError> {
        let windower = &mut partition_state(&mut self.partitions, self.spec, partition).windower;
        let straight = self.event_field.is_none() && input.decodes_straight(&self.decoder);
        let window = if straight { windower.next_row() } else { None };
        if let Some(window) = window {
            if let Err(e) = input.decode_into(&mut self.decoder, partition, window) {
                window.abandon_row();
                return Err(e);
            }
            return Ok(windower.finish_row(&record_meta(None, offset, input.raw(), read_at_ms), &mut self.scratch));
        }
        let record = input.decode(&mut self.decoder, partition)?;
        let meta = record_meta(event_time(record, &self.event_field, &mut self.times), offset, input.raw(), read_at_ms);
        Ok(windower.push(record, &meta, &mut self.scratch))
    }

    pub(super) fn message(&mut self, partition: u32, message: &Message, read_at_ms: i64) -> Result<()> {
        let offset = message.offset;
        self.arrive(partition, Some(offset));
        let state = self.partition(partition);
        if offset < state.acked_below {
            // Analysed before the checkpoint it carries on from.
            return Ok(());
        }
        state.next_offset = offset + 1;
        if let Some(id) = &message.id {
            state.ids.insert(offset, id.clone());
        }
        if let Some(reason) = &message.fault {
            let bytes = message.payload.len() as u64;
            return self.dead_letter(partition, offset, Some(message.position()), reason, &message.payload, bytes);
        }
        if message.payload.len() > MAX_LINE_BYTES {
            let bytes = message.payload.len();
            let reason = format!("message of {bytes} bytes is over the {} MiB limit", MAX_LINE_BYTES >> 20);
            return self.dead_letter(partition, offset, Some(message.position()), &reason, b"", bytes as u64);
        }
        match self.decode_into_windows(partition, offset, Input::Message(message), read_at_ms) {
            Ok(placement) => self.placed(partition, offset, Some(message.position()), placement, &message.payload),
            Err(e) => {
                let bytes = message.payload.len() as u64;
                self.dead_letter(partition, offset, Some(message.position()), &e.to_string(), &message.payload, bytes)
            }
        }
    }

    fn placed(&mut self, partition: u32, offset: u64, position: Option<Position>, placement: Placement, raw: &[u8]) -> Result<()> {
        self.take_closed(partition);
        match placement {
            Placement::Accepted => {
                self.accepted += 1;
                Ok(())
            }
            Placement::Late => {
                self.common.counters.late.fetch_add(1, Ordering::Relaxed);
                let reason = "late: its event-time window had already closed";
                self.dead_letter(partition, offset, position, reason, raw, raw.len() as u64)
            }
            Placement::NoEventTime => {
                let field = self.event_field.as_ref().map_or("", |(_, f)| f.as_str());
                let reason = format!("no usable event time in field '{field}'");
                self.dead_letter(partition, offset, position, &reason, raw, raw.len() as u64)
            }
            Placement::BadEventTime(bad) => self.dead_letter(partition, offset, position, &bad.to_string(), raw, raw.len() as u64),
        }
    }

    /// Move the windows a partition just closed to `closed`; the partition's
    /// dead letters so far belong to the first of them.
    fn take_closed(&mut self, partition: u32) {
        for w in self.scratch.drain(..) {
            let state = self.partitions.get_mut(&partition).expect("a partition closes only its own windows");
            self.closed.push((partition, std::mem::take(&mut state.dead_since_window), w));
        }
    }

    /// Let time pass (`flush`: end of input) for every partition's windows.
    pub(super) fn close_windows(&mut self, flush: bool) {
        let now = now_ms();
        let partitions: Vec<u32> = self.partitions.keys().copied().collect();
        for partition in partitions {
            let state = self.partitions.get_mut(&partition).expect("listed above");
            if flush {
                state.windower.flush(&mut self.scratch);
            } else {
                state.windower.tick(now, &mut self.scratch);
            }
            self.take_closed(partition);
        }
    }

    /// Carry each partition on from a checkpoint ([`Cutter::carry_on`]).
    pub(super) fn resume(&mut self, positions: &BTreeMap<u32, ResumePosition>, next_seqs: &BTreeMap<u32, u64>) {
        for (&partition, at) in positions {
            self.carry_on(partition, at.next_offset, next_seqs.get(&partition).copied().unwrap_or(0));
        }
    }

    /// A rebalance took these partitions away: forget their open windows.
    pub(super) fn revoke(&mut self, partitions: &[u32]) {
        for p in partitions {
            self.partitions.remove(p);
        }
    }

    fn batches(&mut self) -> Vec<Work> {
        let closed_at_ms = now_ms();
        let fields = &self.decoder.json.fields;
        let partitions = &self.partitions;
        self.closed
            .drain(..)
            .map(|(partition, dead_letters, w)| {
                let window = w.buffer.named(fields);
                let position = |offset: u64| match partitions.get(&partition).and_then(|s| s.ids.get(offset)) {
                    Some(id) => Position::Id(id.clone()),
                    None => Position::Offset(offset),
                };
                let (first, last) = window.offsets();
                let (first, last) = (position(first), position(last));
                Work::Window(Box::new(WindowWork { window, bounds: w.bounds, partition, closed_at_ms, dead_letters, first, last }))
            })
            .collect()
    }

    /// Acks for partitions whose lowest unanalysed offset has risen.
    fn acks(&mut self) -> Option<Work> {
        let mut cuts = Vec::new();
        for (&partition, state) in self.partitions.iter_mut() {
            let below = state.windower.min_open_offset().unwrap_or(state.next_offset);
            if below > state.acked_below {
                state.acked_below = below;
                let after_id = state.ids.forget_below(below);
                cuts.push(Cut { ack: Ack { partition, below }, next_seq: state.windower.next_seq(), after_id });
            }
        }
        (!cuts.is_empty()).then_some(Work::Acks(cuts))
    }

    /// The closed windows, then the acks they allow.
    pub(super) fn work(&mut self) -> Vec<Work> {
        self.common.counters.records.fetch_add(std::mem::take(&mut self.accepted), Ordering::Relaxed);
        let mut work = std::mem::take(&mut self.adopted);
        work.extend(self.batches());
        work.extend(self.acks());
        work
    }
}

/// What [`Cutter::decode_into_windows`] decodes.
#[derive(Clone, Copy)]
enum Input<'a> {
    Line(&'a [u8]),
    Message(&'a Message),
}

impl<'a> Input<'a> {
    /// Its bytes as read (what its record's hash is of).
    fn raw(self) -> &'a [u8] {
        match self {
            Input::Line(line) => line,
            Input::Message(message) => &message.payload,
        }
    }

    /// Whether its format is decoded straight into a window's columns.
    fn decodes_straight(self, decoder: &MessageDecoder) -> bool {
        match self {
            Input::Line(_) => true,
            Input::Message(_) => decoder.decodes_straight(),
        }
    }

    fn decode_into(self, decoder: &mut MessageDecoder, partition: u32, window: &mut WindowBuffer) -> Result<(), DecodeError> {
        match self {
            Input::Line(line) => decoder.json.decode_into(line, window),
            Input::Message(message) => decoder.decode_into(partition, message, window),
        }
    }

    fn decode(self, decoder: &mut MessageDecoder, partition: u32) -> Result<&Record, DecodeError> {
        match self {
            Input::Line(line) => decoder.json.decode(line),
            Input::Message(message) => decoder.decode(partition, message),
        }
    }
}

/// The record's value of the pipeline's event-time field, as a time.
fn event_time(record: &Record, event_field: &Option<(u32, String)>, times: &mut TimeParser) -> Option<i64> {
    event_field.as_ref().and_then(|(id, _)| record.get(*id).and_then(|v| decode::event_time(record, v, times)))
}

fn record_meta(event_time: Option<i64>, offset: u64, raw: &[u8], read_at_ms: i64) -> RecordMeta {
    RecordMeta { offset, hash: xxhash_rust::xxh3::xxh3_64(raw), event_time, read_at_ms }
}
