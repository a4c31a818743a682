//! One pipeline end to end: source -> decode -> windows -> detectors -> alerts.
//!
//! Three threads: the source reads blocks of lines; this thread decodes them
//! into windows (this thread is the busiest); the analysis thread builds
//! each closed window's batch, hands it to the detectors (which run on the
//! tenant's pool, a few windows at once) and routes alerts, window by window
//! in order.
//! A bounded channel between the last two keeps memory flat when analysis
//! is the slower side.
//!
//! At-least-once: the decode thread knows, per partition, the lowest offset
//! still held by an open window; once it rises, an [`Ack`] follows the closed
//! windows on the same channel, so the analysis thread passes it back to the
//! source only after those windows were analysed, their alerts written and
//! the dead letters stored. A revoked partition's open windows are dropped
//! and never acknowledged: its new owner reads them again, and its state
//! goes (where partitions move, it comes back from the partition's
//! checkpoint with the partition). Where the source
//! can resume at a position, acks wait for a [`checkpoint`](crate::checkpoint)
//! of the state as of the same cut, and a start resumes from it.

mod analyst;
mod cutter;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossbeam_channel::{bounded, RecvTimeoutError};
use serde::Serialize;

use crate::checkpoint::{CheckpointStore, Checkpoints, PartitionCheckpoint, StreamKey};
use crate::dispatch::handlers::Handlers;
use crate::dispatch::{AlertLedger, Outputs};
use crate::history::History;
use analyst::{Analyst, Checkpointer};
use clean_host_core::scheduling::run_as_batch_work;
use clean_host_core::timestamp::now_ms;
use clean_host_quality::alert::Router;
use clean_host_quality::analysis::Detectors;
use clean_host_runtime::PluginStats;
use clean_host_stream::dead_letter::{DeadLetterTopic, DeadLetters};
use clean_host_stream::decode::message::MessageDecoder;
use clean_host_stream::source::{lines, Ack, CheckpointLookup, Position, Progress, ResumePosition, Sink, Source, SourceContext, SourceEvent, MAX_LINE_BYTES};
use clean_host_stream::window::{Bounds, NamedWindow, WindowSpec};
use cutter::Cutter;

/// Closed windows waiting for analysis.
const WINDOW_QUEUE: usize = 4;
/// How long the decoder waits for input before letting time windows close.
const IDLE_TICK: Duration = Duration::from_millis(200);

/// A closed window for the analysis thread, which builds its batch, and the
/// lines of its partition that became dead letters since the window before
/// it closed.
struct WindowWork {
    window: NamedWindow,
    bounds: Bounds,
    partition: u32,
    closed_at_ms: i64,
    dead_letters: u64,
    /// The broker positions of the first and last offsets.
    first: Position,
    last: Position,
}

/// What both sides of a running pipeline have in common.
#[derive(Clone, Copy)]
struct Common<'a> {
    pipeline: &'a str,
    /// The source's name, in dead letters and alerts.
    source: &'a str,
    /// The source and its consumer group ([`Source::reader`]): the alert
    /// ledger's key.
    reader: &'a str,
    /// Broker sources: dead letters go here instead of the file.
    dead_letter_topic: Option<&'a Mutex<DeadLetterTopic>>,
    shared: &'a Shared,
    counters: &'a PipelineCounters,
}

/// Where a partition's stream may be cut: every record below the ack is in
/// a window handed over before it, and the next window is `next_seq`.
#[derive(Debug, Clone)]
struct Cut {
    ack: Ack,
    next_seq: u64,
    /// The broker's id of the last record below the cut, if ids are not offsets.
    after_id: Option<Arc<str>>,
}

/// What the decode thread hands the analysis thread, in order.
enum Work {
    Window(Box<WindowWork>),
    /// Send these acks to the source once everything before them is done.
    Acks(Vec<Cut>),
    /// A partition arrived and carries on from its checkpoint, loaded in
    /// the time given (its windows follow).
    Adopt(u32, Box<PartitionCheckpoint>, Duration),
    /// These partitions are read by another consumer now.
    Revoked(Vec<u32>),
}

/// One pipeline's running totals: the status line, the summary, `/metrics`
/// and the HTTP API read them while it runs.
pub struct PipelineCounters {
    pub pipeline: String,
    pub tenant: String,
    /// The alert rules' `quality_threshold`, for charts.
    pub quality_threshold: f64,
    pub records: AtomicU64,
    pub dead_letters: AtomicU64,
    pub late: AtomicU64,
    pub windows: AtomicU64,
    pub alerts: AtomicU64,
    /// Incidents: a window's alerts about one column (or about no column) count once.
    pub incidents: AtomicU64,
    /// Alerts by severity: info, warning, critical.
    pub alerts_by_severity: [AtomicU64; 3],
    /// Alerts not sent again because a replay met their window.
    pub replayed_alerts: AtomicU64,
    /// Windows the history could not take because its queue was full.
    pub history_dropped: AtomicU64,
    /// Checkpoints stored, the detector state the last one carried and
    /// when it was taken (epoch ms; 0: none yet).
    pub checkpoints: AtomicU64,
    pub checkpoint_bytes: AtomicU64,
    pub checkpoint_taken_ms: AtomicU64,
    /// The last window's quality score, as f64 bits (NaN before the first).
    last_score: AtomicU64,
    /// Where the pipeline is with its source, as a [`Reading`].
    reading: AtomicU8,
    /// The source's backlog, reads and broker errors.
    pub progress: Arc<Progress>,
}

impl PipelineCounters {
    pub fn new(pipeline: &str, tenant: &str, quality_threshold: f64) -> Self {
        PipelineCounters {
            pipeline: pipeline.into(),
            tenant: tenant.into(),
            quality_threshold,
            records: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            late: AtomicU64::new(0),
            windows: AtomicU64::new(0),
            alerts: AtomicU64::new(0),
            incidents: AtomicU64::new(0),
            alerts_by_severity: Default::default(),
            replayed_alerts: AtomicU64::new(0),
            history_dropped: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            checkpoint_bytes: AtomicU64::new(0),
            checkpoint_taken_ms: AtomicU64::new(0),
            last_score: AtomicU64::new(f64::NAN.to_bits()),
            reading: AtomicU8::new(Reading::NotYet as u8),
            progress: Arc::default(),
        }
    }

    pub fn reading(&self) -> Reading {
        match self.reading.load(Ordering::Relaxed) {
            x if x == Reading::Yes as u8 => Reading::Yes,
            x if x == Reading::Done as u8 => Reading::Done,
            x if x == Reading::Failed as u8 => Reading::Failed,
            _ => Reading::NotYet,
        }
    }

    pub fn set_reading(&self, reading: Reading) {
        self.reading.store(reading as u8, Ordering::Relaxed);
    }

    /// The last window's quality score, if a window was analysed.
    pub fn last_score(&self) -> Option<f64> {
        Some(f64::from_bits(self.last_score.load(Ordering::Relaxed))).filter(|s| !s.is_nan())
    }

    /// Records on the broker not read yet, as last measured (0 for files and the generator).
    pub fn lag(&self) -> u64 {
        self.progress.lag.load(Ordering::Relaxed)
    }
}

/// Where a pipeline is with its source (for `/readyz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Opened, not read yet: resuming from its checkpoint, or not started.
    NotYet,
    Yes,
    /// Read to its end (a file, `--until-end`) and analysed.
    Done,
    /// Stopped on an error (in the summary and the log).
    Failed,
}

/// One counter summed over every pipeline.
pub fn total(pipelines: &[Arc<PipelineCounters>], counter: impl Fn(&PipelineCounters) -> &AtomicU64) -> u64 {
    pipelines.iter().map(|p| counter(p).load(Ordering::Relaxed)).sum()
}

/// What pipelines share: outputs, dead letters, the history, the stop flag.
pub struct Shared {
    pub outputs: Mutex<Outputs>,
    pub dead_letters: Mutex<DeadLetters>,
    /// Every pipeline's counters.
    pub pipelines: Vec<Arc<PipelineCounters>>,
    /// Set on Ctrl-C: stop reading, analyse what was read, report.
    pub stop: Arc<AtomicBool>,
    /// Alerts already sent for broker windows, so a replay does not repeat them.
    pub ledger: Mutex<AlertLedger>,
    pub history: Option<History>,
    /// Checkpoints of pipelines whose source can resume.
    pub checkpoints: Option<Checkpoints>,
}

/// A pipeline ready to run.
pub struct Pipeline {
    pub name: String,
    pub source: Box<dyn Source>,
    pub window: WindowSpec,
    pub event_time_field: Option<String>,
    pub tenant: String,
    pub detectors: Arc<Detectors>,
    pub router: Router,
    /// The tenant's alert handlers, if it has any.
    pub handlers: Option<Arc<Handlers>>,
    pub decoder: MessageDecoder,
    /// Dead letters go here instead of the file (broker sources).
    pub dead_letter_topic: Option<Box<dyn Sink>>,
    /// Every alert and every window's findings are also produced here.
    pub findings_topic: Option<Box<dyn Sink>>,
    pub counters: Arc<PipelineCounters>,
}

#[derive(Debug, Serialize)]
pub struct PipelineReport {
    pub name: String,
    pub tenant: String,
    pub windows: u64,
    pub alerts: u64,
    pub incidents: u64,
    pub suppressed_alerts: u64,
    /// Unsure findings (interval across the threshold) kept from alerting.
    pub unsure_findings: u64,
    pub replayed_alerts: u64,
    /// How it carried on from a checkpoint (`null`: it started cold).
    pub resumed: Option<Resumed>,
    /// Partitions that carried on from their checkpoint as they arrived
    /// (Kafka: at the start, after a rebalance, taking over a host's).
    pub adopted_partitions: u64,
    /// Checkpoints stored, and the detector state the last one carried.
    pub checkpoints: u64,
    pub checkpoint_bytes: u64,
    /// Metric series the control rules watch (past warm-up, not constant).
    pub watched_series: usize,
    pub min_score: f64,
    pub mean_score: f64,
    #[serde(skip)]
    pub plugins: Vec<PluginStats>,
}

/// Run `pipeline` until its source ends (or Ctrl-C), then report.
pub fn run(pipeline: Pipeline, shared: &Shared) -> Result<PipelineReport> {
    /// Failed unless the run says otherwise: a panic says nothing.
    struct Outcome(Arc<PipelineCounters>);
    impl Drop for Outcome {
        fn drop(&mut self) {
            if self.0.reading() != Reading::Done {
                self.0.set_reading(Reading::Failed);
            }
        }
    }
    let outcome = Outcome(pipeline.counters.clone());
    let name = pipeline.name.clone();
    // Its source, analysis and checkpoint threads, started from here, too.
    if let Err(e) = run_as_batch_work() {
        tracing::debug!("pipeline {name}: runs in the normal scheduling class: {e}");
    }
    let report = read_and_analyse(pipeline, shared);
    match &report {
        Ok(_) => outcome.0.set_reading(Reading::Done),
        // Said now: the other pipelines may run on for days.
        Err(e) => tracing::error!("pipeline {name} stopped: {e:#}"),
    }
    report
}

fn read_and_analyse(pipeline: Pipeline, shared: &Shared) -> Result<PipelineReport> {
    let Pipeline { name, tenant, mut source, window, event_time_field, detectors, mut router, handlers, decoder, dead_letter_topic, findings_topic, counters } =
        pipeline;
    let (source_name, reader_id) = (source.name(), source.reader());
    let acknowledges = source.acknowledges();
    let checkpoint_id = source.checkpoint_id().filter(|_| acknowledges);
    let checkpoints = match shared.checkpoints.as_ref().filter(|_| checkpoint_id.is_some()) {
        Some(c) => Some((c.store_for(&*source).with_context(|| format!("pipeline {name}"))?, c.interval)),
        None => None,
    };
    let key = StreamKey { tenant, pipeline: name.clone(), source: checkpoint_id.unwrap_or_default() };
    let (line_tx, line_rx) = bounded::<SourceEvent>(16);
    let (work_tx, work_rx) = bounded::<Work>(WINDOW_QUEUE);
    let (ack_tx, ack_rx) = crossbeam_channel::unbounded::<Ack>();
    let dead_letter_topic = dead_letter_topic.map(|sink| Mutex::new(DeadLetterTopic { sink, count: 0 }));

    let common =
        Common { pipeline: &name, source: &source_name, reader: &reader_id, dead_letter_topic: dead_letter_topic.as_ref(), shared, counters: &counters };
    let mut cutter = Cutter::new(common, decoder, window, event_time_field)?;
    let resumed = match &checkpoints {
        Some((store, _)) if source.partitions_move() => adopt_as_they_come(&key, store, &mut *source, &mut cutter)?,
        Some((store, _)) => resume(&key, store, &mut *source, &detectors, &mut router, &mut cutter)?,
        None => None,
    };
    if let Some(resumed) = &resumed {
        counters.checkpoint_taken_ms.store(resumed.taken_at_ms.max(0) as u64, Ordering::Relaxed);
    }
    let forward_only = cutter.adopts();
    let checkpoint_of = match &checkpoints {
        Some((store, _)) if forward_only => Some(position_lookup(store.clone(), key.clone())),
        _ => None,
    };
    let checkpointer = checkpoints
        .map(|(store, interval)| Checkpointer::new(store, key, interval, forward_only, counters.clone()))
        .transpose()
        .with_context(|| format!("pipeline {name}: starting its checkpoint thread"))?;
    std::thread::scope(|scope| -> Result<PipelineReport> {
        let ctx = SourceContext { events: line_tx, acks: ack_rx, stop: shared.stop.clone(), progress: counters.progress.clone(), checkpoint_of };
        let reader = std::thread::Builder::new().name(format!("{name}-source")).spawn(move || source.run(ctx)).context("starting the source thread")?;
        counters.set_reading(Reading::Yes);

        let analyst = Analyst::new(common, &detectors, router, handlers, acknowledges, ack_tx, findings_topic).checkpointed(checkpointer);
        let analysis = scope.spawn(move || -> Result<PipelineReport> {
            let mut analyst = analyst;
            let answered = analyst.answered();
            loop {
                crossbeam_channel::select! {
                    recv(work_rx) -> work => match work {
                        Ok(work) => analyst.take(work)?,
                        Err(_) => break,
                    },
                    recv(answered) -> _ => analyst.route_answered()?,
                }
            }
            analyst.finish()?;
            let (mut report, adoptions) = analyst.report();
            report.resumed = resumed.map(|r| Resumed {
                cold_detectors: [r.cold_detectors, adoptions.cold_detectors].concat(),
                restore_ms: ((r.restore_ms + adoptions.restore_ms) * 10.0).round() / 10.0,
                ..r
            });
            Ok(report)
        });

        let mut decode_result = Ok(());
        while !shared.stop.load(Ordering::Relaxed) {
            let event = match line_rx.recv_timeout(IDLE_TICK) {
                Ok(e) => e,
                Err(RecvTimeoutError::Timeout) => {
                    cutter.close_windows(false);
                    if cutter.work().into_iter().any(|w| work_tx.send(w).is_err()) {
                        break;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let read_at = now_ms();
            let mut revoked = None;
            let step = match event {
                SourceEvent::Lines { partition, first_offset, data } => {
                    let mut next = first_offset;
                    let result = lines(&data).try_for_each(|line| {
                        next += 1;
                        cutter.line(partition, next - 1, line, read_at)
                    });
                    cutter.read_up_to(partition, next);
                    result
                }
                SourceEvent::Oversized { partition, offset, bytes } => {
                    cutter.read_up_to(partition, offset + 1);
                    let reason = format!("line of {bytes} bytes is over the {} MiB limit", MAX_LINE_BYTES >> 20);
                    cutter.dead_letter(partition, offset, None, &reason, b"", bytes)
                }
                SourceEvent::Messages { partition, messages } => messages.iter().try_for_each(|m| cutter.message(partition, m, read_at)),
                SourceEvent::Arrived { partition, from } => {
                    cutter.arrive(partition, from);
                    Ok(())
                }
                SourceEvent::Revoked { partitions } => {
                    cutter.revoke(&partitions);
                    // Their state goes only where it comes back from their checkpoints.
                    revoked = cutter.adopts().then_some(Work::Revoked(partitions));
                    Ok(())
                }
            };
            if let Err(e) = step {
                decode_result = Err(e);
                break;
            }
            // A revocation follows the partitions' last windows.
            if cutter.work().into_iter().chain(revoked).any(|w| work_tx.send(w).is_err()) {
                break; // the analysis thread failed; its error is reported below
            }
        }
        drop(line_rx);
        cutter.close_windows(true);
        for w in cutter.work() {
            let _ = work_tx.send(w);
        }
        drop(work_tx);
        let report = analysis.join().map_err(|_| anyhow::anyhow!("the analysis thread of {name} panicked"))??;
        decode_result?;
        shared.dead_letters.lock().unwrap_or_else(|p| p.into_inner()).flush().context("writing dead letters")?;
        if let Some(topic) = &dead_letter_topic {
            let mut topic = topic.lock().unwrap_or_else(|p| p.into_inner());
            topic.sink.flush().context("storing dead letters")?;
            if topic.count > 0 {
                tracing::info!("{} dead letter(s) produced to {}", topic.count, topic.sink.name());
            }
        }
        // Stdin may block in a read after Ctrl-C; a broker source returns once its acks are done.
        if acknowledges || !shared.stop.load(Ordering::Relaxed) {
            reader.join().map_err(|_| anyhow::anyhow!("the source thread of {name} panicked"))?.with_context(|| format!("source of pipeline {name}"))?;
        }
        Ok(report)
    })
}

/// Carry `partition`'s detectors and alert state on from `checkpoint`. The
/// detectors that start cold there all the same, each with why (and said).
fn restore_partition(pipeline: &str, partition: u32, checkpoint: PartitionCheckpoint, detectors: &Detectors, router: &mut Router) -> Vec<String> {
    let cold = detectors.resume(partition, &checkpoint.detectors);
    router.resume(partition, checkpoint.router);
    cold.into_iter()
        .map(|(name, why)| {
            tracing::warn!("pipeline {pipeline}: detector {name} on partition {partition}: {why}; it starts cold there");
            format!("{name} (partition {partition}): {why}")
        })
        .collect()
}

/// How a pipeline carried on from its checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct Resumed {
    /// Per partition, where it resumed (where partitions move, the
    /// checkpoint's positions: each partition carries on as it arrives).
    pub positions: BTreeMap<u32, ResumePosition>,
    /// When the checkpoint was taken (epoch ms), and how old it was.
    pub taken_at_ms: i64,
    pub age_s: f64,
    /// Loading the checkpoint, moving the source and restoring the state
    /// (where partitions move: loading and restoring each as it arrived).
    pub restore_ms: f64,
    /// Detectors that started cold all the same, each with why.
    pub cold_detectors: Vec<String>,
}

/// Where partitions move between the consumers of a group: check that the
/// stream's checkpoint fits the source (not a run started elsewhere, not a
/// topic made again), then let each partition carry on from its own
/// checkpoint, as stored then, when it arrives (the cutter looks it up).
fn adopt_as_they_come(key: &StreamKey, store: &CheckpointStore, source: &mut dyn Source, cutter: &mut Cutter) -> Result<Option<Resumed>> {
    let started = Instant::now();
    let pipeline = &key.pipeline;
    let stored = match store.positions(key) {
        Ok(stored) => stored,
        Err(e) => {
            tracing::warn!("pipeline {pipeline}: {e:#}; it starts cold");
            return Ok(None);
        }
    };
    let positions = stored.as_ref().map(|(positions, _)| positions.clone()).unwrap_or_default();
    if !source.resume_at(&positions).with_context(|| format!("pipeline {pipeline}: resuming at its checkpoint"))? {
        tracing::warn!("pipeline {pipeline}: its checkpoint does not fit the stream (the run starts elsewhere, or the topic was made again); it starts cold");
        return Ok(None);
    }
    cutter.adopt_from(store.clone(), key.clone());
    let Some((_, taken_at_ms)) = stored else {
        return Ok(None);
    };
    let age_s = (now_ms() - taken_at_ms) as f64 / 1000.0;
    let restore_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(Some(Resumed { positions, taken_at_ms, age_s, restore_ms, cold_detectors: Vec::new() }))
}

/// Where each partition's checkpoint stands when asked: the latest any
/// host of the group stored (an unreadable one is none; a broker that
/// cannot be asked is an error).
fn position_lookup(store: CheckpointStore, key: StreamKey) -> CheckpointLookup {
    Box::new(move |partition| match store.mark_of(&key, partition) {
        Ok(found) => Ok(found.map(|mark| mark.position)),
        Err(e) => Err(format!("pipeline {}: partition {partition}'s checkpoint: {e:#}", key.pipeline)),
    })
}

/// Carry on from the stream's checkpoint if there is one and the source can
/// start at its positions. A checkpoint that cannot be read or used is said,
/// and the pipeline starts cold (`None`).
fn resume(
    key: &StreamKey,
    store: &CheckpointStore,
    source: &mut dyn Source,
    detectors: &Detectors,
    router: &mut Router,
    cutter: &mut Cutter,
) -> Result<Option<Resumed>> {
    let started = Instant::now();
    let pipeline = &key.pipeline;
    let checkpoint = match store.load(key) {
        Ok(Some(checkpoint)) => checkpoint,
        Ok(None) => return Ok(None),
        Err(e) => {
            tracing::warn!("pipeline {pipeline}: {e:#}; it starts cold");
            return Ok(None);
        }
    };
    let positions = checkpoint.positions();
    if !source.resume_at(&positions).with_context(|| format!("pipeline {pipeline}: resuming at its checkpoint"))? {
        tracing::warn!("pipeline {pipeline}: its checkpoint does not fit the stream (read past it, or the run starts elsewhere); it starts cold");
        return Ok(None);
    }
    let mut cold_detectors = Vec::new();
    let mut next_seqs = BTreeMap::new();
    for (partition, state) in checkpoint.partitions {
        next_seqs.insert(partition, state.next_seq);
        cold_detectors.extend(restore_partition(pipeline, partition, state, detectors, router));
    }
    cutter.resume(&positions, &next_seqs);
    let age_s = (now_ms() - checkpoint.taken_at_ms) as f64 / 1000.0;
    tracing::info!("pipeline {pipeline}: resumed from its checkpoint of {age_s:.1} s ago at positions {positions:?}");
    let restore_ms = (started.elapsed().as_secs_f64() * 1e4).round() / 10.0;
    Ok(Some(Resumed { positions, taken_at_ms: checkpoint.taken_at_ms, age_s, restore_ms, cold_detectors }))
}
