//! The analysis side of a pipeline: each closed window through the
//! detectors, its score and alerts, the outputs, the history, the handlers
//! and the findings topic, then the acks the windows before them allow
//! (with a checkpoint, where the source resumes from one).
//!
//! Up to [`WINDOWS_IN_DETECTORS`] windows are with the detectors at once,
//! so a detector done with one window starts on the next while a slower
//! one finishes; windows are routed, and acks released, in the order they
//! came. A checkpoint is taken only when no window is with the detectors,
//! so the state it holds is as of its cut.

use std::collections::{BTreeMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use super::{restore_partition, Common, Cut, PipelineCounters, PipelineReport, WindowWork, Work};
use crate::checkpoint::{Checkpoint, CheckpointStore, PartitionCheckpoint, StreamKey};
use crate::dispatch::handlers::Handlers;
use crate::dispatch::AlertKey;
use crate::history::{AlertRow, FindingRow, MetricRow, WindowRecord};
use clean_host_core::bindings::MetricValue;
use clean_host_core::timestamp::now_ms;
use clean_host_quality::alert::{incidents, Alert, FindingSummary, Router, WindowSummary};
use clean_host_quality::analysis::{dead_letter_finding, quality_score, Detectors, HostFinding, PendingWindow};
use clean_host_runtime::Window;
use clean_host_stream::source::{Ack, Position, ResumePosition, Sink};

/// Windows with the detectors at once, at most.
const WINDOWS_IN_DETECTORS: usize = 4;

/// Work the pipeline's checkpoint thread does, in order.
pub(super) type SaveJob = Box<dyn FnOnce() + Send>;

/// Where one pipeline's checkpoints go, and who counts them.
#[derive(Clone)]
struct CheckpointTarget {
    store: CheckpointStore,
    key: StreamKey,
    /// Partitions move between hosts: a stored position further on stays.
    forward_only: bool,
    counters: Arc<PipelineCounters>,
    /// The pipeline's own thread that stores them (then sends their acks),
    /// so a slow broker holds up no other pipeline's history.
    saver: Saver,
}

/// The queue of a pipeline's checkpoint thread. One checkpoint waits at
/// most: a newer one replaces it, as it names every partition's latest cut
/// and its acks cover the older's (a partition revoked since is committed
/// by no one), so a slow broker costs no memory. The thread ends once no
/// job can come.
#[derive(Clone)]
pub(super) struct Saver {
    tx: crossbeam_channel::Sender<SaveJob>,
    rx: crossbeam_channel::Receiver<SaveJob>,
}

impl Saver {
    pub(super) fn start(pipeline: &str) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded::<SaveJob>(1);
        let jobs = rx.clone();
        let name = pipeline.to_string();
        let run = move || {
            for job in jobs {
                // A store that panics (a bug) loses that checkpoint only: its acks are held
                // back (the records replay), and the thread goes on with the next.
                if std::panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
                    tracing::error!("pipeline {name}: storing a checkpoint panicked; its positions are not committed");
                }
            }
        };
        std::thread::Builder::new().name(format!("{pipeline}-checkpoints")).spawn(run)?;
        Ok(Saver { tx, rx })
    }

    /// Queue `job`, in place of the one waiting if any.
    pub(super) fn hand(&self, mut job: SaveJob) {
        loop {
            match self.tx.try_send(job) {
                Ok(()) => return,
                Err(crossbeam_channel::TrySendError::Full(again)) => {
                    drop(self.rx.try_recv()); // superseded
                    job = again;
                }
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => return,
            }
        }
    }
}

impl CheckpointTarget {
    /// Which of a window's alerts went out from any host keeping its
    /// checkpoints here, asked once; where that cannot be asked, none did,
    /// and they go out (at least once).
    fn were_sent(&self, alerts: &[AlertKey]) -> Vec<bool> {
        let keys: Vec<u64> = alerts.iter().map(|a| a.0).collect();
        self.store.were_sent(&self.key, &keys).unwrap_or_else(|e| {
            tracing::warn!("pipeline {}: {e:#}; the alerts go out", self.key.pipeline);
            vec![false; keys.len()]
        })
    }

    /// Remember where its checkpoints are that the alerts went out, in one
    /// write (this host's own ledger has them even if that fails).
    fn record_sent(&self, alerts: &[AlertKey]) {
        let keys: Vec<u64> = alerts.iter().map(|a| a.0).collect();
        if let Err(e) = self.store.record_sent(&self.key, &keys) {
            tracing::warn!("pipeline {}: {e:#}; another host may send the alerts again", self.key.pipeline);
        }
    }

    /// Store `checkpoint`; false (and said) if it could not be.
    fn save(&self, checkpoint: &Checkpoint) -> bool {
        let started = Instant::now();
        let saved = match self.forward_only {
            true => self.store.advance(&self.key, checkpoint),
            false => self.store.save(&self.key, checkpoint),
        };
        if let Err(e) = saved {
            tracing::error!("pipeline {}: {e:#}; its positions are not committed", self.key.pipeline);
            return false;
        }
        let (pipeline, bytes) = (&self.key.pipeline, checkpoint.state_bytes());
        tracing::debug!("pipeline {pipeline}: checkpoint of {bytes} bytes at {:?} stored in {:?}", checkpoint.positions(), started.elapsed());
        self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.counters.checkpoint_bytes.store(checkpoint.state_bytes() as u64, Ordering::Relaxed);
        self.counters.checkpoint_taken_ms.store(checkpoint.taken_at_ms.max(0) as u64, Ordering::Relaxed);
        true
    }
}

/// How the partitions that carried on from their checkpoints as they
/// arrived were taken up.
#[derive(Default)]
pub(super) struct Adoptions {
    pub(super) partitions: u64,
    /// Loading and restoring them, in all.
    pub(super) restore_ms: f64,
    /// Detectors that started cold on them all the same, each with why.
    pub(super) cold_detectors: Vec<String>,
}

/// Checkpoints of one pipeline: the cuts since the last one wait for the
/// next, which is taken every `interval`.
pub(super) struct Checkpointer {
    target: CheckpointTarget,
    interval: Duration,
    last: Instant,
    /// Per partition, its latest cut: every checkpoint names them all, so
    /// one that could not be stored leaves no partition behind.
    cuts: BTreeMap<u32, Cut>,
    /// Cuts came since the last checkpoint.
    pending: bool,
}

impl Checkpointer {
    pub(super) fn new(
        store: CheckpointStore,
        key: StreamKey,
        interval: Duration,
        forward_only: bool,
        counters: Arc<PipelineCounters>,
    ) -> std::io::Result<Self> {
        let saver = Saver::start(&key.pipeline)?;
        let target = CheckpointTarget { store, key, forward_only, counters, saver };
        Ok(Checkpointer { target, interval, last: Instant::now(), cuts: BTreeMap::new(), pending: false })
    }

    fn is_due(&self) -> bool {
        self.last.elapsed() >= self.interval
    }
}

/// What waits for the detectors' answers, in the order it came.
enum Waiting {
    Window(Box<Analysing>),
    /// Acks for the windows before them.
    Acks(Vec<Cut>),
}

/// A window with the detectors, and what its routing needs besides.
struct Analysing {
    pending: PendingWindow,
    dead_letters: u64,
    first: Position,
    last: Position,
}

/// The analysis side of a pipeline: detectors, alerts, outputs, acks.
pub(super) struct Analyst<'a> {
    common: Common<'a>,
    detectors: &'a Detectors,
    router: Router,
    handlers: Option<Arc<Handlers>>,
    max_dead_letter_rate: f64,
    /// Broker sources: remember sent alerts, acknowledge.
    acknowledges: bool,
    ack_tx: crossbeam_channel::Sender<Ack>,
    findings_topic: Option<Box<dyn Sink>>,
    checkpointer: Option<Checkpointer>,
    waiting: VecDeque<Waiting>,
    /// The detectors' threads say on this that a window was answered.
    answered_tx: crossbeam_channel::Sender<()>,
    answered_rx: crossbeam_channel::Receiver<()>,
    windows: u64,
    alerts: u64,
    incidents: u64,
    replayed: u64,
    adoptions: Adoptions,
    min_score: f64,
    score_sum: f64,
}

impl<'a> Analyst<'a> {
    pub(super) fn new(
        common: Common<'a>,
        detectors: &'a Detectors,
        router: Router,
        handlers: Option<Arc<Handlers>>,
        acknowledges: bool,
        ack_tx: crossbeam_channel::Sender<Ack>,
        findings_topic: Option<Box<dyn Sink>>,
    ) -> Self {
        let max_dead_letter_rate = router.max_dead_letter_rate();
        let (answered_tx, answered_rx) = crossbeam_channel::unbounded();
        Analyst {
            common,
            detectors,
            router,
            handlers,
            max_dead_letter_rate,
            acknowledges,
            ack_tx,
            findings_topic,
            checkpointer: None,
            waiting: VecDeque::new(),
            answered_tx,
            answered_rx,
            windows: 0,
            alerts: 0,
            incidents: 0,
            replayed: 0,
            adoptions: Adoptions::default(),
            min_score: 1.0,
            score_sum: 0.0,
        }
    }

    /// Acks wait for checkpoints taken by `checkpointer`.
    pub(super) fn checkpointed(self, checkpointer: Option<Checkpointer>) -> Self {
        Analyst { checkpointer, ..self }
    }

    /// Where the detectors say that a window was answered: then
    /// [`route_answered`](Self::route_answered).
    pub(super) fn answered(&self) -> crossbeam_channel::Receiver<()> {
        self.answered_rx.clone()
    }

    /// The decode thread's next piece of work. A partition that arrives
    /// or leaves waits for the windows before it.
    pub(super) fn take(&mut self, work: Work) -> Result<()> {
        match work {
            Work::Window(closed) => self.submit(*closed),
            Work::Acks(cuts) => self.queue_acks(cuts),
            Work::Adopt(partition, checkpoint, loaded_in) => {
                self.drain()?;
                self.adopt(partition, *checkpoint, loaded_in);
                Ok(())
            }
            Work::Revoked(partitions) => {
                self.drain()?;
                self.revoke(&partitions);
                Ok(())
            }
        }
    }

    /// Hand a closed window to the detectors, once fewer than
    /// [`WINDOWS_IN_DETECTORS`] are there.
    fn submit(&mut self, closed: WindowWork) -> Result<()> {
        while self.windows_waiting() >= WINDOWS_IN_DETECTORS {
            self.route_next()?;
        }
        let WindowWork { window, bounds, partition, closed_at_ms, dead_letters, first, last } = closed;
        let window = Window::new(window.into_batch(self.common.pipeline, self.common.source, partition, bounds, closed_at_ms));
        let tell = self.answered_tx.clone();
        let pending = self.detectors.submit(window, move || _ = tell.send(()));
        self.waiting.push_back(Waiting::Window(Box::new(Analysing { pending, dead_letters, first, last })));
        self.route_answered()
    }

    fn windows_waiting(&self) -> usize {
        self.waiting.iter().filter(|w| matches!(w, Waiting::Window(_))).count()
    }

    /// Route the oldest window (once answered) or release the oldest acks.
    fn route_next(&mut self) -> Result<()> {
        match self.waiting.pop_front() {
            Some(Waiting::Window(analysing)) => self.route(*analysing),
            Some(Waiting::Acks(cuts)) => self.acks(cuts),
            None => Ok(()),
        }
    }

    /// Route the answered windows at the front, and the acks after them.
    pub(super) fn route_answered(&mut self) -> Result<()> {
        while let Some(oldest) = self.waiting.front() {
            if matches!(oldest, Waiting::Window(w) if !w.pending.is_answered()) {
                break;
            }
            self.route_next()?;
        }
        Ok(())
    }

    /// Route everything waiting.
    fn drain(&mut self) -> Result<()> {
        while !self.waiting.is_empty() {
            self.route_next()?;
        }
        Ok(())
    }

    /// Acks go after the windows before them. Where a checkpoint is due
    /// they wait for those windows here, so that no later window is with
    /// the detectors when it is taken, and it covers every cut so far.
    fn queue_acks(&mut self, cuts: Vec<Cut>) -> Result<()> {
        if !self.acknowledges {
            return Ok(());
        }
        self.waiting.push_back(Waiting::Acks(cuts));
        match self.checkpointer.as_ref().is_some_and(Checkpointer::is_due) {
            true => self.drain(),
            false => self.route_answered(),
        }
    }

    /// A window the detectors answered: its score, alerts, outputs and history.
    fn route(&mut self, analysing: Analysing) -> Result<()> {
        let Analysing { pending, dead_letters, first, last } = analysing;
        let window = pending.window().clone();
        let mut result = pending.wait();
        let batch = window.batch();
        result.findings.extend(dead_letter_finding(dead_letters, batch.row_count, self.max_dead_letter_rate));
        let score = quality_score(&result.findings, batch.row_count, self.router.min_rows());
        let mut routed = self.router.route(&batch.info, (&first, &last), &result, &score);
        let tenant = self.detectors.tenant();
        // Each routed alert's ledger key, beside it (only where acks are kept).
        let mut keys: Vec<AlertKey> = Vec::new();
        if self.acknowledges {
            let before = routed.len();
            keys = routed.iter().map(|a| AlertKey::new(tenant, self.common.reader, a)).collect();
            let mut sent: Vec<bool> = {
                let ledger = self.common.shared.ledger.lock().unwrap_or_else(|p| p.into_inner());
                keys.iter().map(|&key| ledger.was_sent(key)).collect()
            };
            // Where checkpoints are kept (asked without the host's ledger held: it may be a broker).
            if let Some(target) = self.checkpointer.as_ref().map(|c| &c.target).filter(|_| sent.contains(&false)) {
                let unknown: Vec<AlertKey> = keys.iter().zip(&sent).filter(|(_, &sent)| !sent).map(|(&key, _)| key).collect();
                let mut there = target.were_sent(&unknown).into_iter();
                sent.iter_mut().filter(|sent| !**sent).for_each(|sent| *sent = there.next().unwrap_or(false));
            }
            (routed, keys) = routed.into_iter().zip(keys).zip(sent).filter(|(_, sent)| !sent).map(|(pair, _)| pair).unzip();
            let replayed = (before - routed.len()) as u64;
            self.replayed += replayed;
            self.common.counters.replayed_alerts.fetch_add(replayed, Ordering::Relaxed);
        }
        let mut summary = WindowSummary::new(self.common.pipeline, &batch.info, (&first, &last), &score, &result.findings, routed.len());
        summary.shadow_findings = result.shadow_findings.iter().map(FindingSummary::from).collect();
        if let Some(history) = &self.common.shared.history {
            let findings = (&result.findings[..], &result.shadow_findings[..]);
            let record = history_record((self.detectors.tenant(), self.common.source), &summary, findings, std::mem::take(&mut result.metrics), &routed);
            if !history.window(record) {
                self.common.counters.history_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        {
            let mut out = self.common.shared.outputs.lock().unwrap_or_else(|p| p.into_inner());
            for alert in &routed {
                out.emit(alert).context("writing an alert")?;
            }
            out.window(&summary).context("writing the window log")?;
            out.flush().context("writing alerts")?;
        }
        // Handlers get one alert per incident; whether their queue took each
        // alert (all of them, without handlers).
        let incidents = incidents(&routed);
        let mut taken = vec![true; routed.len()];
        if let Some(handlers) = &self.handlers {
            for members in &incidents {
                let took = handlers.send(Alert::incident(&routed, members, &batch.info));
                members.iter().for_each(|&i| taken[i] = took);
            }
        }
        if let Some(topic) = &mut self.findings_topic {
            let key = format!("{}/{}", self.common.pipeline, batch.info.partition);
            if !result.findings.is_empty() {
                topic.send(&key, &serde_json::to_vec(&summary)?).context("producing findings")?;
            }
            for alert in &routed {
                let message = TopicAlert { kind: "alert", alert };
                topic.send(&key, &serde_json::to_vec(&message)?).context("producing an alert")?;
            }
        }
        if self.acknowledges {
            // Only now, once out: an alert that did not get out is sent again on replay.
            let sent: Vec<AlertKey> = keys.iter().zip(&taken).filter(|(_, taken)| **taken).map(|(&key, _)| key).collect();
            {
                let mut ledger = self.common.shared.ledger.lock().unwrap_or_else(|p| p.into_inner());
                for &key in &sent {
                    ledger.record(key).context("writing the alert ledger")?;
                }
                ledger.flush().context("writing the alert ledger")?;
            }
            if let Some(target) = self.checkpointer.as_ref().map(|c| &c.target).filter(|_| !sent.is_empty()) {
                target.record_sent(&sent);
            }
        }
        self.windows += 1;
        self.alerts += routed.len() as u64;
        self.incidents += incidents.len() as u64;
        self.min_score = self.min_score.min(score.value);
        self.score_sum += score.value;
        let c = self.common.counters;
        c.windows.fetch_add(1, Ordering::Relaxed);
        c.alerts.fetch_add(routed.len() as u64, Ordering::Relaxed);
        c.incidents.fetch_add(incidents.len() as u64, Ordering::Relaxed);
        for alert in &routed {
            c.alerts_by_severity[alert.severity as usize].fetch_add(1, Ordering::Relaxed);
        }
        c.last_score.store(score.value.to_bits(), Ordering::Relaxed);
        Ok(())
    }

    /// Everything before these cuts is analysed and written: make what was
    /// produced durable, then let the source commit (with a checkpoint,
    /// once one covers them).
    fn acks(&mut self, cuts: Vec<Cut>) -> Result<()> {
        let Some(checkpointer) = &mut self.checkpointer else {
            self.flush_topics()?;
            let acks = cuts.iter().map(|c| c.ack).collect();
            self.release(acks, None);
            return Ok(());
        };
        checkpointer.cuts.extend(cuts.into_iter().map(|c| (c.ack.partition, c)));
        checkpointer.pending = true;
        // With a later window at the detectors the state is past these cuts,
        // and later cuts are better covered: the last of them takes it.
        if checkpointer.is_due() && self.waiting.is_empty() {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// `partition` carries on from `checkpoint` (loaded in `loaded_in`): its
    /// detectors' state and its alert state (its windows and cut follow).
    fn adopt(&mut self, partition: u32, checkpoint: PartitionCheckpoint, loaded_in: Duration) {
        let started = Instant::now();
        let cold = restore_partition(self.common.pipeline, partition, checkpoint, self.detectors, &mut self.router);
        self.adoptions.cold_detectors.extend(cold);
        self.adoptions.partitions += 1;
        self.adoptions.restore_ms += (loaded_in + started.elapsed()).as_secs_f64() * 1000.0;
    }

    /// `partitions` are read by another consumer now: their state goes, and
    /// so does a cut waiting for a checkpoint (their last checkpoint and
    /// commit stay, for whoever reads them next).
    fn revoke(&mut self, partitions: &[u32]) {
        if let Some(checkpointer) = &mut self.checkpointer {
            partitions.iter().for_each(|p| _ = checkpointer.cuts.remove(p));
        }
        self.detectors.forget(partitions);
        partitions.iter().for_each(|&p| self.router.forget(p));
    }

    /// The input ended or the run stops: the windows with the detectors
    /// are routed, and the cuts still waiting get their checkpoint.
    pub(super) fn finish(&mut self) -> Result<()> {
        self.drain()?;
        if self.checkpointer.as_ref().is_some_and(|c| c.pending) {
            self.checkpoint()?;
        }
        // Nothing more comes: the last windows (and the acks waiting on them)
        // need not linger, and the history's log can go into its file now.
        if let Some(history) = &self.common.shared.history {
            history.flush();
        }
        Ok(())
    }

    /// Take a checkpoint at the pending cuts, as of the last window analysed.
    fn checkpoint(&mut self) -> Result<()> {
        self.flush_topics()?;
        let checkpointer = self.checkpointer.as_mut().expect("checkpointing");
        (checkpointer.last, checkpointer.pending) = (Instant::now(), false);
        if checkpointer.cuts.is_empty() {
            return Ok(()); // every partition with a cut was revoked
        }
        let cuts = &checkpointer.cuts;
        let partitions = cuts
            .values()
            .map(|c| {
                let partition = c.ack.partition;
                let position = ResumePosition { next_offset: c.ack.below, after_id: c.after_id.as_deref().map(str::to_string) };
                let state = PartitionCheckpoint {
                    position,
                    next_seq: c.next_seq,
                    detectors: self.detectors.checkpoint(partition),
                    router: self.router.state(partition),
                };
                (partition, state)
            })
            .collect();
        let checkpoint = Checkpoint { partitions, taken_at_ms: now_ms() };
        let acks = cuts.values().map(|c| c.ack).collect();
        let target = checkpointer.target.clone();
        self.release(acks, Some((target, checkpoint)));
        Ok(())
    }

    /// What was produced for the windows so far is stored by the brokers.
    fn flush_topics(&mut self) -> Result<()> {
        if let Some(topic) = self.common.dead_letter_topic {
            topic.lock().unwrap_or_else(|p| p.into_inner()).sink.flush().context("storing dead letters")?;
        }
        if let Some(topic) = &mut self.findings_topic {
            topic.flush().context("storing findings")?;
        }
        Ok(())
    }

    /// Store `checkpoint`, then hand `acks` to the source, once the history
    /// holds the windows before them. A checkpoint that cannot be stored
    /// holds its acks back: those records replay, with the last stored one.
    fn release(&self, acks: Vec<Ack>, checkpoint: Option<(CheckpointTarget, Checkpoint)>) {
        let tx = self.ack_tx.clone();
        let saver = checkpoint.as_ref().map(|(target, _)| target.saver.clone());
        let send = move || {
            if let Some((target, checkpoint)) = checkpoint {
                if !target.save(&checkpoint) {
                    return;
                }
            }
            // The source may have stopped; then its records replay.
            for ack in acks {
                let _ = tx.send(ack);
            }
        };
        // A checkpoint is stored on the pipeline's checkpoint thread.
        let job: SaveJob = match saver {
            Some(saver) => Box::new(move || saver.hand(Box::new(send))),
            None => Box::new(send),
        };
        match &self.common.shared.history {
            // A full queue drops them: the next ones cover the same positions.
            Some(history) => {
                history.after_commit(job);
            }
            None => job(),
        }
    }

    /// Its totals, and how the partitions it took up as they arrived did.
    pub(super) fn report(self) -> (PipelineReport, Adoptions) {
        let report = PipelineReport {
            name: self.common.pipeline.to_string(),
            tenant: self.detectors.tenant().to_string(),
            windows: self.windows,
            alerts: self.alerts,
            incidents: self.incidents,
            suppressed_alerts: self.router.suppressed,
            unsure_findings: self.router.unsure,
            replayed_alerts: self.replayed,
            resumed: None,
            adopted_partitions: self.adoptions.partitions,
            checkpoints: self.common.counters.checkpoints.load(Ordering::Relaxed),
            checkpoint_bytes: self.common.counters.checkpoint_bytes.load(Ordering::Relaxed),
            watched_series: self.router.watched_series(),
            min_score: self.min_score,
            mean_score: if self.windows == 0 { 1.0 } else { self.score_sum / self.windows as f64 },
            plugins: self.detectors.stats(),
        };
        (report, self.adoptions)
    }
}

/// An alert on the findings topic, told apart from the windows there by its `type`.
#[derive(Serialize)]
struct TopicAlert<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    alert: &'a Alert,
}

/// What the history keeps of an analysed window: its findings (the active
/// versions' and the shadows'), and its metric values, which the analysis is
/// done with by then: moved rather than copied (three strings a value, tens
/// of values a window).
fn history_record(
    (tenant, source): (&str, &str),
    summary: &WindowSummary,
    (findings, shadow_findings): (&[HostFinding], &[HostFinding]),
    metrics: Vec<(String, MetricValue)>,
    alerts: &[Alert],
) -> WindowRecord {
    let findings = findings.iter().map(|f| (f, false)).chain(shadow_findings.iter().map(|f| (f, true)));
    WindowRecord {
        tenant: tenant.into(),
        pipeline: summary.pipeline.into(),
        source: source.into(),
        window: summary.window.clone(),
        analysed_ms: now_ms(),
        score: summary.score,
        score_interval: summary.score_interval,
        findings: findings
            .map(|(f, shadow)| FindingRow {
                detector: f.detector.clone(),
                metric: f.finding.metric.clone(),
                column: f.finding.column.clone(),
                value: f.finding.value,
                threshold: f.finding.threshold,
                severity: f.finding.severity,
                message: f.finding.message.clone(),
                shadow,
            })
            .collect(),
        metrics: metrics.into_iter().map(|(detector, m)| MetricRow { detector, metric: m.metric, column: m.column, value: m.value }).collect(),
        alerts: alerts
            .iter()
            .map(|a| AlertRow {
                detector: a.detector.clone(),
                metric: a.metric.clone(),
                column: a.column.clone(),
                value: a.value,
                threshold: a.threshold,
                severity: a.severity,
                message: a.message.clone(),
                rule: a.rule.map(str::to_string),
                low_confidence: a.low_confidence,
            })
            .collect(),
    }
}
