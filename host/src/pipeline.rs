//! One pipeline end to end: source -> decode -> windows -> detectors -> alerts.
//!
//! Three threads: the source reads blocks of lines; this thread decodes them
//! into windows and builds each closed window's batch; the analysis thread
//! runs the detectors and routes alerts, one window at a time and in order.
//! A bounded channel between the last two keeps memory flat when analysis
//! is the slower side.
//!
//! At-least-once: the decode thread knows, per partition, the lowest offset
//! still held by an open window; once it rises, an [`Ack`] follows the closed
//! windows on the same channel, so the analysis thread passes it back to the
//! source only after those windows were analysed, their alerts written and
//! the dead letters stored. A revoked partition's open windows are dropped
//! and never acknowledged: its new owner reads them again.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use crossbeam_channel::{bounded, RecvTimeoutError};
use serde::Serialize;

use crate::alert::handlers::Handlers;
use crate::alert::{incidents, Alert, AlertKey, AlertLedger, FindingSummary, Level, Outputs, Router, WindowSummary};
use crate::analysis::{dead_letter_finding, quality_score, Detectors, FindingOrigin, PluginStats, WindowAnalysis};
use crate::dead_letter::{DeadLetterTopic, DeadLetters, Origin};
use crate::decode::message::MessageDecoder;
use crate::decode::{self, Record};
use crate::history::{AlertRow, FindingRow, History, MetricRow, WindowRecord};
use crate::logging::plugin_event;
use crate::runtime::bindings::Batch;
use crate::source::{Ack, Message, Position, Progress, Sink, Source, SourceContext, SourceEvent, MAX_LINE_BYTES};
use crate::window::{ClosedWindow, Placement, RecordMeta, WindowSpec, Windower};

/// Closed windows waiting for analysis.
const WINDOW_QUEUE: usize = 4;
/// How long the decoder waits for input before letting time windows close.
const IDLE_TICK: Duration = Duration::from_millis(200);

/// A closed window and the lines of its partition that became dead letters
/// since the window before it closed.
struct ClosedBatch {
    batch: Batch,
    dead_letters: u64,
    /// The broker positions of the first and last offsets.
    first: Position,
    last: Position,
}

/// What the decode thread hands the analysis thread, in order.
enum Work {
    Window(Box<ClosedBatch>),
    /// Send these to the source once everything before them is done.
    Acks(Vec<Ack>),
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
    /// The last window's quality score, as f64 bits (NaN before the first).
    last_score: AtomicU64,
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
            last_score: AtomicU64::new(f64::NAN.to_bits()),
            progress: Arc::default(),
        }
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
    /// Metric series the control rules watch (past warm-up, not constant).
    pub watched_series: usize,
    pub min_score: f64,
    pub mean_score: f64,
    #[serde(skip)]
    pub plugins: Vec<PluginStats>,
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// One partition's windows and how far it has been acknowledged.
struct PartitionState {
    windower: Windower,
    /// One past the last offset read.
    next_offset: u64,
    acked_below: u64,
    /// Broker ids of offsets not yet acknowledged (sources whose ids are not offsets).
    ids: BTreeMap<u64, Arc<str>>,
    /// Dead letters not yet attributed to a window.
    dead_since_window: u64,
}

impl PartitionState {
    fn new(spec: WindowSpec) -> Self {
        PartitionState { windower: Windower::new(spec), next_offset: 0, acked_below: 0, ids: BTreeMap::new(), dead_since_window: 0 }
    }
}

/// Decodes lines and messages and cuts windows for one pipeline.
struct Cutter<'a> {
    pipeline: &'a str,
    source: &'a str,
    decoder: MessageDecoder,
    event_field: Option<(u32, String)>,
    spec: WindowSpec,
    partitions: HashMap<u32, PartitionState>,
    /// Closed windows with their partition and dead letters.
    closed: Vec<(u32, u64, ClosedWindow)>,
    scratch: Vec<ClosedWindow>,
    dead_letter_topic: Option<&'a Mutex<DeadLetterTopic>>,
    shared: &'a Shared,
    counters: &'a PipelineCounters,
}

/// The state of `partition`, created on its first record.
fn partition_state(partitions: &mut HashMap<u32, PartitionState>, spec: WindowSpec, partition: u32) -> &mut PartitionState {
    partitions.entry(partition).or_insert_with(|| PartitionState::new(spec))
}

impl Cutter<'_> {
    fn partition(&mut self, partition: u32) -> &mut PartitionState {
        partition_state(&mut self.partitions, self.spec, partition)
    }

    fn dead_letter(&mut self, partition: u32, offset: u64, position: Option<Position>, reason: &str, raw: &[u8], bytes: u64) -> Result<()> {
        let origin = Origin { pipeline: self.pipeline, source: self.source, partition, offset, position };
        match self.dead_letter_topic {
            Some(topic) => {
                let mut topic = topic.lock().unwrap_or_else(|p| p.into_inner());
                topic.write(&origin, reason, raw, bytes).context("producing a dead letter")?;
            }
            None => {
                let mut dl = self.shared.dead_letters.lock().unwrap_or_else(|p| p.into_inner());
                dl.write(&origin, reason, raw, bytes).context("writing a dead letter")?;
            }
        }
        self.counters.dead_letters.fetch_add(1, Ordering::Relaxed);
        self.partition(partition).dead_since_window += 1;
        Ok(())
    }

    fn line(&mut self, partition: u32, offset: u64, line: &[u8], read_at_ms: i64) -> Result<()> {
        if line.len() > MAX_LINE_BYTES {
            let reason = format!("line of {} bytes is over the {} MiB limit", line.len(), MAX_LINE_BYTES >> 20);
            return self.dead_letter(partition, offset, None, &reason, line, line.len() as u64);
        }
        let placement = match self.decoder.json.decode(line) {
            Ok(record) => {
                let meta = record_meta(record, &self.event_field, offset, line, read_at_ms);
                let state = partition_state(&mut self.partitions, self.spec, partition);
                state.windower.push(record, &meta, &mut self.scratch)
            }
            Err(e) => return self.dead_letter(partition, offset, None, &e.to_string(), line, line.len() as u64),
        };
        self.placed(partition, offset, None, placement, line)
    }

    fn message(&mut self, partition: u32, message: &Message, read_at_ms: i64) -> Result<()> {
        let offset = message.offset;
        let state = self.partition(partition);
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
        let placement = match self.decoder.decode(partition, message) {
            Ok(record) => {
                let meta = record_meta(record, &self.event_field, offset, &message.payload, read_at_ms);
                let state = self.partitions.get_mut(&partition).expect("created above");
                state.windower.push(record, &meta, &mut self.scratch)
            }
            Err(e) => {
                let bytes = message.payload.len() as u64;
                return self.dead_letter(partition, offset, Some(message.position()), &e.to_string(), &message.payload, bytes);
            }
        };
        self.placed(partition, offset, Some(message.position()), placement, &message.payload)
    }

    fn placed(&mut self, partition: u32, offset: u64, position: Option<Position>, placement: Placement, raw: &[u8]) -> Result<()> {
        self.take_closed(partition);
        match placement {
            Placement::Accepted => {
                self.counters.records.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Placement::Late => {
                self.counters.late.fetch_add(1, Ordering::Relaxed);
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
    fn close_windows(&mut self, flush: bool) {
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

    /// A rebalance took these partitions away: forget their open windows.
    fn revoke(&mut self, partitions: &[u32]) {
        for p in partitions {
            self.partitions.remove(p);
        }
    }

    fn batches(&mut self) -> Vec<Work> {
        let closed_at = now_ms();
        let fields = &self.decoder.json.fields;
        let partitions = &self.partitions;
        self.closed
            .drain(..)
            .map(|(partition, dead_letters, w)| {
                let batch = w.buffer.into_batch(fields, self.pipeline, self.source, partition, w.bounds, closed_at);
                let position = |offset: u64| match partitions.get(&partition).and_then(|s| s.ids.get(&offset)) {
                    Some(id) => Position::Id(id.clone()),
                    None => Position::Offset(offset),
                };
                let (first, last) = (position(batch.info.first_offset), position(batch.info.last_offset));
                Work::Window(Box::new(ClosedBatch { batch, dead_letters, first, last }))
            })
            .collect()
    }

    /// Acks for partitions whose lowest unanalysed offset has risen.
    fn acks(&mut self) -> Option<Work> {
        let mut acks = Vec::new();
        for (&partition, state) in self.partitions.iter_mut() {
            let below = state.windower.min_open_offset().unwrap_or(state.next_offset);
            if below > state.acked_below {
                state.acked_below = below;
                state.ids = state.ids.split_off(&below);
                acks.push(Ack { partition, below });
            }
        }
        (!acks.is_empty()).then_some(Work::Acks(acks))
    }

    /// The closed windows, then the acks they allow.
    fn work(&mut self) -> Vec<Work> {
        let mut work = self.batches();
        work.extend(self.acks());
        work
    }
}

fn record_meta(record: &Record, event_field: &Option<(u32, String)>, offset: u64, raw: &[u8], read_at_ms: i64) -> RecordMeta {
    let hash = xxhash_rust::xxh3::xxh3_64(raw);
    let event_time = event_field.as_ref().and_then(|(id, _)| record.get(*id).and_then(|v| decode::event_time(record, v)));
    RecordMeta { offset, hash, event_time, read_at_ms }
}

/// The analysis side of a pipeline: detectors, alerts, outputs, acks.
struct Analyst<'a> {
    name: &'a str,
    source: &'a str,
    detectors: &'a Detectors,
    router: Router,
    handlers: Option<Arc<Handlers>>,
    max_dead_letter_rate: f64,
    /// Broker sources: remember sent alerts, acknowledge.
    acknowledges: bool,
    ack_tx: crossbeam_channel::Sender<Ack>,
    dead_letter_topic: Option<&'a Mutex<DeadLetterTopic>>,
    findings_topic: Option<Box<dyn Sink>>,
    shared: &'a Shared,
    counters: &'a PipelineCounters,
    windows: u64,
    alerts: u64,
    incidents: u64,
    replayed: u64,
    min_score: f64,
    score_sum: f64,
}

impl Analyst<'_> {
    fn window(&mut self, closed: ClosedBatch) -> Result<()> {
        let ClosedBatch { batch, dead_letters, first, last } = closed;
        let mut result = self.detectors.analyze(&batch);
        result.findings.extend(dead_letter_finding(dead_letters, batch.row_count, self.max_dead_letter_rate));
        let score = quality_score(&result.findings, batch.row_count, self.router.min_rows());
        for f in result.findings.iter().filter(|f| f.origin == FindingOrigin::Quarantine) {
            let event = f.finding.metric.trim_start_matches("plugin_");
            plugin_event(tracing::Level::WARN, self.detectors.tenant(), Some(self.name), &f.detector, event, &f.finding.message);
        }
        let mut routed = self.router.route(&batch.info, (&first, &last), &result, &score);
        let tenant = self.detectors.tenant();
        if self.acknowledges {
            let ledger = self.shared.ledger.lock().unwrap_or_else(|p| p.into_inner());
            let before = routed.len();
            routed.retain(|a| !ledger.was_sent(AlertKey::new(tenant, self.source, a)));
            let replayed = (before - routed.len()) as u64;
            self.replayed += replayed;
            self.counters.replayed_alerts.fetch_add(replayed, Ordering::Relaxed);
        }
        let mut summary = WindowSummary::new(self.name, &batch.info, (&first, &last), &score, &result.findings, routed.len());
        summary.shadow_findings = result.shadow_findings.iter().map(FindingSummary::from).collect();
        if let Some(history) = &self.shared.history {
            if !history.window(history_record(self.detectors.tenant(), &summary, &result, &routed)) {
                self.counters.history_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        {
            let mut out = self.shared.outputs.lock().unwrap_or_else(|p| p.into_inner());
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
            let key = format!("{}/{}", self.name, batch.info.partition);
            if !result.findings.is_empty() {
                topic.send(&key, &serde_json::to_vec(&summary)?).context("producing findings")?;
            }
            for alert in &routed {
                let mut value = serde_json::to_value(alert)?;
                value["type"] = "alert".into();
                topic.send(&key, &serde_json::to_vec(&value)?).context("producing an alert")?;
            }
        }
        if self.acknowledges {
            // Only now, once out: an alert that did not get out is sent again on replay.
            let mut ledger = self.shared.ledger.lock().unwrap_or_else(|p| p.into_inner());
            for alert in routed.iter().zip(&taken).filter(|(_, taken)| **taken).map(|(a, _)| a) {
                ledger.record(AlertKey::new(tenant, self.source, alert)).context("writing the alert ledger")?;
            }
            ledger.flush().context("writing the alert ledger")?;
        }
        self.windows += 1;
        self.alerts += routed.len() as u64;
        self.incidents += incidents.len() as u64;
        self.min_score = self.min_score.min(score.value);
        self.score_sum += score.value;
        let c = self.counters;
        c.windows.fetch_add(1, Ordering::Relaxed);
        c.alerts.fetch_add(routed.len() as u64, Ordering::Relaxed);
        c.incidents.fetch_add(incidents.len() as u64, Ordering::Relaxed);
        for alert in &routed {
            c.alerts_by_severity[alert.severity as usize].fetch_add(1, Ordering::Relaxed);
        }
        c.last_score.store(score.value.to_bits(), Ordering::Relaxed);
        Ok(())
    }

    /// Everything before these acks is analysed and written: make what was
    /// produced durable, then let the source commit.
    fn acks(&mut self, acks: Vec<Ack>) -> Result<()> {
        if !self.acknowledges {
            return Ok(());
        }
        if let Some(topic) = self.dead_letter_topic {
            topic.lock().unwrap_or_else(|p| p.into_inner()).sink.flush().context("storing dead letters")?;
        }
        if let Some(topic) = &mut self.findings_topic {
            topic.flush().context("storing findings")?;
        }
        // The source may have stopped; then its records replay.
        match &self.shared.history {
            // After the windows before them are in the history.
            Some(history) => {
                let tx = self.ack_tx.clone();
                history.after_commit(Box::new(move || {
                    for ack in acks {
                        let _ = tx.send(ack);
                    }
                }));
            }
            None => {
                for ack in acks {
                    let _ = self.ack_tx.send(ack);
                }
            }
        }
        Ok(())
    }

    fn report(self) -> PipelineReport {
        PipelineReport {
            name: self.name.to_string(),
            tenant: self.detectors.tenant().to_string(),
            windows: self.windows,
            alerts: self.alerts,
            incidents: self.incidents,
            suppressed_alerts: self.router.suppressed,
            unsure_findings: self.router.unsure,
            replayed_alerts: self.replayed,
            watched_series: self.router.watched_series(),
            min_score: self.min_score,
            mean_score: if self.windows == 0 { 1.0 } else { self.score_sum / self.windows as f64 },
            plugins: self.detectors.stats(),
        }
    }
}

/// What the history keeps of an analysed window.
fn history_record(tenant: &str, summary: &WindowSummary, analysis: &WindowAnalysis, alerts: &[Alert]) -> WindowRecord {
    let findings = analysis.findings.iter().map(|f| (f, false)).chain(analysis.shadow_findings.iter().map(|f| (f, true)));
    WindowRecord {
        tenant: tenant.into(),
        pipeline: summary.pipeline.into(),
        partition: summary.partition,
        seq: summary.seq,
        first_offset: summary.first_offset.to_string(),
        last_offset: summary.last_offset.to_string(),
        records: summary.records,
        start_ms: summary.start_ms,
        end_ms: summary.end_ms,
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
                severity: Level::from(f.finding.severity).as_str(),
                message: f.finding.message.clone(),
                shadow,
            })
            .collect(),
        metrics: analysis
            .metrics
            .iter()
            .map(|(detector, m)| MetricRow { detector: detector.clone(), metric: m.metric.clone(), column: m.column.clone(), value: m.value })
            .collect(),
        alerts: alerts
            .iter()
            .map(|a| AlertRow {
                detector: a.detector.clone(),
                metric: a.metric.clone(),
                column: a.column.clone(),
                value: a.value,
                threshold: a.threshold,
                severity: a.severity.as_str(),
                message: a.message.clone(),
                rule: a.rule,
                low_confidence: a.low_confidence,
            })
            .collect(),
    }
}

/// Run `pipeline` until its source ends (or Ctrl-C), then report.
pub fn run(pipeline: Pipeline, shared: &Shared) -> Result<PipelineReport> {
    let Pipeline { name, tenant: _, source, window, event_time_field, detectors, router, handlers, decoder, dead_letter_topic, findings_topic, counters } =
        pipeline;
    let source_name = source.name();
    let acknowledges = source.acknowledges();
    let (line_tx, line_rx) = bounded::<SourceEvent>(16);
    let (work_tx, work_rx) = bounded::<Work>(WINDOW_QUEUE);
    let (ack_tx, ack_rx) = crossbeam_channel::unbounded::<Ack>();
    let dead_letter_topic = dead_letter_topic.map(|sink| Mutex::new(DeadLetterTopic { sink, count: 0 }));

    std::thread::scope(|scope| -> Result<PipelineReport> {
        let ctx = SourceContext { events: line_tx, acks: ack_rx, stop: shared.stop.clone(), progress: counters.progress.clone() };
        let reader = std::thread::Builder::new().name(format!("{name}-source")).spawn(move || source.run(ctx)).context("starting the source thread")?;

        let analyst = Analyst {
            name: &name,
            source: &source_name,
            detectors: &detectors,
            max_dead_letter_rate: router.max_dead_letter_rate(),
            router,
            handlers,
            acknowledges,
            ack_tx,
            dead_letter_topic: dead_letter_topic.as_ref(),
            findings_topic,
            shared,
            counters: &counters,
            windows: 0,
            alerts: 0,
            incidents: 0,
            replayed: 0,
            min_score: 1.0,
            score_sum: 0.0,
        };
        let analysis = scope.spawn(move || -> Result<PipelineReport> {
            let mut analyst = analyst;
            for work in work_rx {
                match work {
                    Work::Window(closed) => analyst.window(*closed)?,
                    Work::Acks(acks) => analyst.acks(acks)?,
                }
            }
            Ok(analyst.report())
        });

        let mut cutter = Cutter {
            pipeline: &name,
            source: &source_name,
            event_field: None,
            decoder,
            spec: window,
            partitions: HashMap::new(),
            closed: Vec::new(),
            scratch: Vec::new(),
            dead_letter_topic: dead_letter_topic.as_ref(),
            shared,
            counters: &counters,
        };
        if let Some(field) = event_time_field {
            let id = cutter.decoder.json.fields.intern(&field).context("naming the event-time field")?;
            cutter.event_field = Some((id, field));
        }
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
            let step = match event {
                SourceEvent::Lines { partition, first_offset, data } => {
                    let body = data.strip_suffix(b"\n").unwrap_or(&data);
                    let mut next = first_offset;
                    let result = body.split(|&b| b == b'\n').try_for_each(|line| {
                        next += 1;
                        cutter.line(partition, next - 1, line, read_at)
                    });
                    cutter.partition(partition).next_offset = next;
                    result
                }
                SourceEvent::Oversized { partition, offset, bytes } => {
                    cutter.partition(partition).next_offset = offset + 1;
                    let reason = format!("line of {bytes} bytes is over the {} MiB limit", MAX_LINE_BYTES >> 20);
                    cutter.dead_letter(partition, offset, None, &reason, b"", bytes)
                }
                SourceEvent::Messages { partition, messages } => messages.iter().try_for_each(|m| cutter.message(partition, m, read_at)),
                SourceEvent::Revoked { partitions } => {
                    cutter.revoke(&partitions);
                    Ok(())
                }
            };
            if let Err(e) = step {
                decode_result = Err(e);
                break;
            }
            if cutter.work().into_iter().any(|w| work_tx.send(w).is_err()) {
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
