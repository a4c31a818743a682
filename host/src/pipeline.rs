//! One pipeline end to end: source -> decode -> windows -> detectors -> alerts.
//!
//! Three threads: the source reads blocks of lines; this thread decodes them
//! into windows and builds each closed window's batch; the analysis thread
//! runs the detectors and routes alerts, one window at a time and in order.
//! A bounded channel between the last two keeps memory flat when analysis
//! is the slower side.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use crossbeam_channel::{bounded, RecvTimeoutError};
use serde::Serialize;

use crate::alert::{Outputs, Router};
use crate::analysis::{dead_letter_finding, quality_score, Detectors, PluginStats};
use crate::dead_letter::{DeadLetters, Origin};
use crate::decode::{self, JsonDecoder};
use crate::runtime::bindings::Batch;
use crate::source::{Source, SourceEvent, MAX_LINE_BYTES};
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
}

/// Running totals over all pipelines, read by the status line.
#[derive(Default)]
pub struct Counters {
    pub records: AtomicU64,
    pub dead_letters: AtomicU64,
    pub late: AtomicU64,
    pub windows: AtomicU64,
    pub alerts: AtomicU64,
}

/// What pipelines share: outputs, dead letters, counters, the stop flag.
pub struct Shared {
    pub outputs: Mutex<Outputs>,
    pub dead_letters: Mutex<DeadLetters>,
    pub counters: Counters,
    /// Set on Ctrl-C: stop reading, analyse what was read, report.
    pub stop: AtomicBool,
}

/// A pipeline ready to run.
pub struct Pipeline {
    pub name: String,
    pub source: Box<dyn Source>,
    pub window: WindowSpec,
    pub event_time_field: Option<String>,
    pub detectors: Detectors,
    pub router: Router,
}

#[derive(Debug, Serialize)]
pub struct PipelineReport {
    pub name: String,
    pub windows: u64,
    pub alerts: u64,
    pub suppressed_alerts: u64,
    pub min_score: f64,
    pub mean_score: f64,
    #[serde(skip)]
    pub plugins: Vec<PluginStats>,
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Decodes lines and cuts windows for one pipeline.
struct Cutter<'a> {
    pipeline: &'a str,
    source: &'a str,
    decoder: JsonDecoder,
    event_field: Option<(u32, String)>,
    spec: WindowSpec,
    windowers: HashMap<u32, Windower>,
    /// Closed windows with their partition and dead letters.
    closed: Vec<(u32, u64, ClosedWindow)>,
    scratch: Vec<ClosedWindow>,
    /// Dead letters per partition not yet attributed to a window.
    dead_since_window: HashMap<u32, u64>,
    shared: &'a Shared,
}

impl Cutter<'_> {
    fn dead_letter(&mut self, partition: u32, offset: u64, reason: &str, raw: &[u8], bytes: u64) -> Result<()> {
        let origin = Origin { pipeline: self.pipeline, source: self.source, partition, offset };
        let mut dl = self.shared.dead_letters.lock().unwrap_or_else(|p| p.into_inner());
        dl.write(&origin, reason, raw, bytes).context("writing a dead letter")?;
        self.shared.counters.dead_letters.fetch_add(1, Ordering::Relaxed);
        *self.dead_since_window.entry(partition).or_default() += 1;
        Ok(())
    }

    fn line(&mut self, partition: u32, offset: u64, line: &[u8], read_at_ms: i64) -> Result<()> {
        if line.len() > MAX_LINE_BYTES {
            let reason = format!("line of {} bytes is over the {} MiB limit", line.len(), MAX_LINE_BYTES >> 20);
            return self.dead_letter(partition, offset, &reason, line, line.len() as u64);
        }
        let hash = xxhash_rust::xxh3::xxh3_64(line);
        let record = match self.decoder.decode(line) {
            Ok(r) => r,
            Err(e) => return self.dead_letter(partition, offset, &e.to_string(), line, line.len() as u64),
        };
        let event_time = self.event_field.as_ref().and_then(|(id, _)| record.get(*id).and_then(|v| decode::event_time(record, v)));
        let meta = RecordMeta { offset, hash, event_time, read_at_ms };
        let windower = self.windowers.entry(partition).or_insert_with(|| Windower::new(self.spec));
        let placement = windower.push(record, &meta, &mut self.scratch);
        take_closed(&mut self.scratch, &mut self.dead_since_window, &mut self.closed, partition);
        match placement {
            Placement::Accepted => {
                self.shared.counters.records.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Placement::Late => {
                self.shared.counters.late.fetch_add(1, Ordering::Relaxed);
                self.dead_letter(partition, offset, "late: its event-time window had already closed", line, line.len() as u64)
            }
            Placement::NoEventTime => {
                let field = self.event_field.as_ref().map_or("", |(_, f)| f.as_str());
                let reason = format!("no usable event time in field '{field}'");
                self.dead_letter(partition, offset, &reason, line, line.len() as u64)
            }
        }
    }

    /// Let time pass (`flush`: end of input) for every partition's windows.
    fn close_windows(&mut self, flush: bool) {
        let now = now_ms();
        for (&partition, windower) in self.windowers.iter_mut() {
            if flush {
                windower.flush(&mut self.scratch);
            } else {
                windower.tick(now, &mut self.scratch);
            }
            take_closed(&mut self.scratch, &mut self.dead_since_window, &mut self.closed, partition);
        }
    }

    fn batches(&mut self) -> Vec<ClosedBatch> {
        let closed_at = now_ms();
        let fields = &self.decoder.fields;
        self.closed
            .drain(..)
            .map(|(partition, dead_letters, w)| ClosedBatch {
                batch: w.buffer.into_batch(fields, self.pipeline, self.source, partition, w.bounds, closed_at),
                dead_letters,
            })
            .collect()
    }
}

/// Move the windows a partition just closed to `closed`; the partition's dead
/// letters so far belong to the first of them.
fn take_closed(scratch: &mut Vec<ClosedWindow>, dead: &mut HashMap<u32, u64>, closed: &mut Vec<(u32, u64, ClosedWindow)>, partition: u32) {
    for w in scratch.drain(..) {
        closed.push((partition, dead.remove(&partition).unwrap_or(0), w));
    }
}

/// Run `pipeline` until its source ends (or Ctrl-C), then report.
pub fn run(pipeline: Pipeline, shared: &Shared) -> Result<PipelineReport> {
    let Pipeline { name, source, window, event_time_field, detectors, mut router } = pipeline;
    let source_name = source.name();
    let (line_tx, line_rx) = bounded::<SourceEvent>(16);
    let (batch_tx, batch_rx) = bounded::<ClosedBatch>(WINDOW_QUEUE);
    let max_dead_letter_rate = router.max_dead_letter_rate();

    std::thread::scope(|scope| -> Result<PipelineReport> {
        let reader = std::thread::Builder::new()
            .name(format!("{name}-source"))
            .spawn(move || source.run(&line_tx))
            .context("starting the source thread")?;

        let analysis = scope.spawn(|| -> Result<PipelineReport> {
            let (mut windows, mut alerts, mut min_score, mut score_sum) = (0u64, 0u64, 1.0f64, 0.0f64);
            for ClosedBatch { batch, dead_letters } in batch_rx {
                let mut result = detectors.analyze(&batch);
                result.findings.extend(dead_letter_finding(dead_letters, batch.row_count, max_dead_letter_rate));
                let score = quality_score(&result.findings);
                let routed = router.route(&batch.info, batch.row_count, &result.findings, score);
                {
                    let mut out = shared.outputs.lock().unwrap_or_else(|p| p.into_inner());
                    for alert in &routed {
                        out.emit(alert).context("writing an alert")?;
                    }
                    out.flush().context("writing alerts")?;
                }
                windows += 1;
                alerts += routed.len() as u64;
                min_score = min_score.min(score);
                score_sum += score;
                shared.counters.windows.fetch_add(1, Ordering::Relaxed);
                shared.counters.alerts.fetch_add(routed.len() as u64, Ordering::Relaxed);
            }
            Ok(PipelineReport {
                name: name.clone(),
                windows,
                alerts,
                suppressed_alerts: router.suppressed,
                min_score,
                mean_score: if windows == 0 { 1.0 } else { score_sum / windows as f64 },
                plugins: detectors.stats(),
            })
        });

        let mut cutter = Cutter {
            pipeline: &name,
            source: &source_name,
            event_field: None,
            decoder: JsonDecoder::default(),
            spec: window,
            windowers: HashMap::new(),
            closed: Vec::new(),
            scratch: Vec::new(),
            dead_since_window: HashMap::new(),
            shared,
        };
        cutter.event_field = event_time_field.map(|f| (cutter.decoder.fields.intern(&f), f));
        let mut decode_result = Ok(());
        while !shared.stop.load(Ordering::Relaxed) {
            let event = match line_rx.recv_timeout(IDLE_TICK) {
                Ok(e) => e,
                Err(RecvTimeoutError::Timeout) => {
                    cutter.close_windows(false);
                    for b in cutter.batches() {
                        if batch_tx.send(b).is_err() {
                            break;
                        }
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let step = match event {
                SourceEvent::Lines { partition, first_offset, data } => {
                    let read_at = now_ms();
                    let body = data.strip_suffix(b"\n").unwrap_or(&data);
                    body.split(|&b| b == b'\n')
                        .enumerate()
                        .try_for_each(|(i, line)| cutter.line(partition, first_offset + i as u64, line, read_at))
                }
                SourceEvent::Oversized { partition, offset, bytes } => {
                    let reason = format!("line of {bytes} bytes is over the {} MiB limit", MAX_LINE_BYTES >> 20);
                    cutter.dead_letter(partition, offset, &reason, b"", bytes)
                }
            };
            if let Err(e) = step {
                decode_result = Err(e);
                break;
            }
            let batches = cutter.batches();
            if batches.into_iter().any(|b| batch_tx.send(b).is_err()) {
                break; // the analysis thread failed; its error is reported below
            }
        }
        drop(line_rx);
        cutter.close_windows(true);
        for b in cutter.batches() {
            let _ = batch_tx.send(b);
        }
        drop(batch_tx);
        let report = analysis.join().map_err(|_| anyhow::anyhow!("the analysis thread of {name} panicked"))??;
        decode_result?;
        shared.dead_letters.lock().unwrap_or_else(|p| p.into_inner()).flush().context("writing dead letters")?;
        if !shared.stop.load(Ordering::Relaxed) {
            reader.join().map_err(|_| anyhow::anyhow!("the source thread of {name} panicked"))?.with_context(|| format!("source of pipeline {name}"))?;
        }
        Ok(report)
    })
}
