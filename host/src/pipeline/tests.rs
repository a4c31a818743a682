//! A pipeline driven end to end without a real source or plugin: a scripted
//! source sends lines or broker messages and records what it is told to
//! commit; a detector flags windows holding a negative `x`.

use std::collections::BTreeMap;

use super::*;
use crate::dispatch::OutputFormat;
use clean_host_core::bindings::{Analysis, ColumnValues, Finding, Severity};
use clean_host_quality::alert::AlertConfig;
use clean_host_quality::analysis::{tenant_call_pool, Candidate, Catalog, CatalogEntry, DetectorSet};
use clean_host_runtime::PluginFault;
use clean_host_runtime::{Analyzer, DetectorSource, Window};
use clean_host_stream::source::config::MessageFormat;
use clean_host_stream::source::{Message, ResumePosition, SourceError};
use tempfile::TempDir;

/// Sends its events, then (if it acknowledges) records every ack until the pipeline is done.
struct Scripted {
    events: Vec<SourceEvent>,
    acknowledges: bool,
    committed: Arc<Mutex<Vec<Ack>>>,
    /// A source that can resume: the positions it was told to resume at.
    resumed_at: Option<Arc<Mutex<BTreeMap<u32, ResumePosition>>>>,
    /// Its partitions move between consumers, as Kafka's do.
    moves: bool,
}

impl Source for Scripted {
    fn name(&self) -> String {
        "scripted".into()
    }
    fn acknowledges(&self) -> bool {
        self.acknowledges
    }
    fn checkpoint_id(&self) -> Option<String> {
        self.resumed_at.as_ref().map(|_| "scripted?group=g".into())
    }
    fn partitions_move(&self) -> bool {
        self.moves
    }
    fn resume_at(&mut self, positions: &BTreeMap<u32, ResumePosition>) -> Result<bool, SourceError> {
        let Some(at) = &self.resumed_at else { return Ok(false) };
        *at.lock().unwrap() = positions.clone();
        Ok(true)
    }
    fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        for event in self.events {
            let _ = ctx.events.send(event);
        }
        let committed = self.committed;
        ctx.finish(|ack| committed.lock().unwrap().push(ack));
        Ok(())
    }
}

/// Flags a window whose column `x` holds a negative number.
struct Negatives;

impl Analyzer for Negatives {
    fn analyze(&mut self, window: &Arc<Window>) -> Result<Analysis, PluginFault> {
        let batch = window.batch();
        let negative = match batch.columns.iter().find(|c| c.name == "x").map(|c| &c.values) {
            Some(ColumnValues::Int64(v)) => v.iter().filter(|&&x| x < 0).count(),
            _ => 0,
        };
        let findings = (negative > 0)
            .then(|| Finding {
                metric: "negatives".into(),
                column: Some("x".into()),
                value: negative as f64,
                threshold: 0.0,
                severity: Severity::Warning,
                message: format!("{negative} negative x"),
                sample_rows: Vec::new(),
            })
            .into_iter()
            .collect();
        Ok(Analysis { findings, metrics: Vec::new() })
    }
    fn snapshot(&mut self) -> Result<Vec<u8>, PluginFault> {
        Ok(Vec::new())
    }
    fn restore(&mut self, _state: &[u8]) -> Result<(), PluginFault> {
        Ok(())
    }
}

struct NegativesSource;

impl DetectorSource for NegativesSource {
    fn name(&self) -> &str {
        "negatives"
    }
    fn version(&self) -> &str {
        "1.0"
    }
    fn instantiate(&self, _config: &str) -> Result<Box<dyn Analyzer>, PluginFault> {
        Ok(Box::new(Negatives))
    }
}

/// A host's shared parts, writing into `dir`.
fn shared(dir: &TempDir, counters: &Arc<PipelineCounters>) -> Shared {
    Shared {
        outputs: Mutex::new(Outputs::new(OutputFormat::Json, None, Some(&dir.path().join("windows.jsonl"))).unwrap()),
        dead_letters: Mutex::new(DeadLetters::new(&dir.path().join("dead-letters.jsonl"))),
        pipelines: vec![counters.clone()],
        stop: Arc::default(),
        ledger: Mutex::new(AlertLedger::open(&dir.path().join("alerts-sent")).unwrap()),
        history: None,
        checkpoints: None,
    }
}

/// A pipeline of 50-record count windows over `events`, with the negatives detector.
fn pipeline(events: Vec<SourceEvent>, acknowledges: bool, committed: &Arc<Mutex<Vec<Ack>>>) -> Pipeline {
    let entry = CatalogEntry { active: Candidate::new(Arc::new(NegativesSource), None), shadow: None };
    let catalog = Catalog::new("t", BTreeMap::from([("negatives".to_string(), entry)]));
    let set = DetectorSet { catalog, pool: tenant_call_pool("t"), selection: None, configs: BTreeMap::new() };
    Pipeline {
        name: "p".into(),
        tenant: "t".into(),
        source: Box::new(Scripted { events, acknowledges, committed: committed.clone(), resumed_at: None, moves: false }),
        window: WindowSpec::Count { size: 50, slide: 50 },
        event_time_field: None,
        detectors: Arc::new(Detectors::new("p", set, 3).unwrap()),
        router: Router::new("p", AlertConfig::default()),
        handlers: None,
        decoder: MessageDecoder::new(MessageFormat::Json, Vec::new(), None, None).unwrap(),
        dead_letter_topic: None,
        findings_topic: None,
        counters: Arc::new(PipelineCounters::new("p", "t", 0.8)),
    }
}

/// Records `{"x": N}` for offsets `from..to`, `x` negative at `negative`.
fn messages(from: u64, to: u64, negative: u64) -> Vec<Message> {
    (from..to)
        .map(|offset| Message {
            offset,
            id: Some(Arc::from(format!("id-{offset}"))),
            payload: format!("{{\"x\": {}}}", if offset == negative { -1 } else { offset as i64 }).into_bytes().into(),
            key: None,
            timestamp_ms: None,
            headers: Vec::new(),
            fault: None,
        })
        .collect()
}

fn windows(dir: &TempDir) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.path().join("windows.jsonl")).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn lines_become_windows_and_bad_lines_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let mut data: Vec<u8> = Vec::new();
    for i in 0..120 {
        data.extend_from_slice(if i == 7 { b"{not json".to_vec() } else { format!("{{\"x\": {}}}", if i == 60 { -5 } else { i }).into_bytes() }.as_slice());
        data.push(b'\n');
    }
    let committed = Arc::default();
    let p = pipeline(vec![SourceEvent::Lines { partition: 0, first_offset: 0, data }], false, &committed);
    let counters = p.counters.clone();
    let shared = shared(&dir, &counters);
    let report = run(p, &shared).unwrap();
    // 119 records in windows of 50: 50, 50 and the 19 flushed at the end.
    assert_eq!((report.windows, counters.records.load(Ordering::Relaxed), counters.dead_letters.load(Ordering::Relaxed)), (3, 119, 1));
    let logged = windows(&dir);
    assert_eq!(logged.iter().map(|w| w["records"].as_u64().unwrap()).collect::<Vec<_>>(), [50, 50, 19]);
    // The bad line at offset 7 counts against the first window (1 of its 51
    // lines: over the 1% allowed); the negative x (line 60) alerts in the second.
    assert!(logged[0]["findings"].as_array().unwrap().iter().any(|f| f["metric"] == "dead_letter_rate"), "{}", logged[0]);
    assert_eq!(logged[1]["alerts"], 1);
    let dead = std::fs::read_to_string(dir.path().join("dead-letters.jsonl")).unwrap();
    assert!(dead.contains("\"line\":8") && dead.contains("{not json"), "{dead}");
    assert!(committed.lock().unwrap().is_empty(), "a file is not acknowledged");
}

#[test]
fn acks_wait_for_analysis_and_a_replay_does_not_alert_twice() {
    let dir = tempfile::tempdir().unwrap();
    let send = || vec![SourceEvent::Messages { partition: 0, messages: messages(0, 120, 75) }];
    let committed: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let p = pipeline(send(), true, &committed);
    let counters = p.counters.clone();
    let report = run(p, &shared(&dir, &counters)).unwrap();
    assert_eq!((report.windows, report.alerts), (3, 1));
    // Each ack comes after its windows, up to the records read; all of them by the end.
    let acks: Vec<u64> = committed.lock().unwrap().iter().map(|a| a.below).collect();
    assert!(acks.windows(2).all(|w| w[0] < w[1]) && acks.last() == Some(&120), "{acks:?}");
    assert!(acks.iter().all(|&b| b == 120 || b % 50 == 0), "{acks:?}");
    // The same records again (a restart before the commit landed): the window
    // still alerts, counted as replayed, but the alert is not sent again.
    let committed = Arc::default();
    let p = pipeline(send(), true, &committed);
    let counters = p.counters.clone();
    let report = run(p, &shared(&dir, &counters)).unwrap();
    assert_eq!((report.alerts, report.replayed_alerts), (0, 1));
}

#[test]
fn a_revoked_partition_drops_its_open_windows_unacknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let events = vec![
        SourceEvent::Messages { partition: 0, messages: messages(0, 70, u64::MAX) },
        SourceEvent::Messages { partition: 1, messages: messages(0, 60, 25) },
        SourceEvent::Revoked { partitions: vec![0] },
    ];
    let committed: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let p = pipeline(events, true, &committed);
    let counters = p.counters.clone();
    let report = run(p, &shared(&dir, &counters)).unwrap();
    // Partition 0: its first window (0..50) was analysed, its open one (50..70)
    // is its new owner's. Partition 1: one full window, and the rest flushed.
    let logged = windows(&dir);
    let per_partition = |p: u64| logged.iter().filter(|w| w["partition"] == p).map(|w| w["records"].as_u64().unwrap()).collect::<Vec<_>>();
    assert_eq!((per_partition(0), per_partition(1)), (vec![50], vec![50, 10]));
    assert_eq!(report.alerts, 1);
    let acks = committed.lock().unwrap();
    let last = |p: u32| acks.iter().filter(|a| a.partition == p).map(|a| a.below).max();
    assert_eq!((last(0), last(1)), (Some(50), Some(60)));
}

/// Counts the rows it has seen in all (its state) and says so every window.
struct RowCount(u64);

impl Analyzer for RowCount {
    fn analyze(&mut self, window: &Arc<Window>) -> Result<Analysis, PluginFault> {
        let batch = window.batch();
        self.0 += u64::from(batch.row_count);
        let finding = Finding {
            metric: "rows_so_far".into(),
            column: None,
            value: self.0 as f64,
            threshold: 0.0,
            severity: Severity::Info,
            message: format!("{} rows so far, window {}", self.0, batch.info.seq),
            sample_rows: Vec::new(),
        };
        Ok(Analysis { findings: vec![finding], metrics: Vec::new() })
    }
    fn snapshot(&mut self) -> Result<Vec<u8>, PluginFault> {
        Ok(self.0.to_le_bytes().to_vec())
    }
    fn restore(&mut self, state: &[u8]) -> Result<(), PluginFault> {
        self.0 = u64::from_le_bytes(state.try_into().map_err(|_| PluginFault::InvalidOutput("not a count".into()))?);
        Ok(())
    }
}

struct RowCountSource;

impl DetectorSource for RowCountSource {
    fn name(&self) -> &str {
        "row-count"
    }
    fn version(&self) -> &str {
        "1.0"
    }
    fn instantiate(&self, _config: &str) -> Result<Box<dyn Analyzer>, PluginFault> {
        Ok(Box::new(RowCount(0)))
    }
}

/// `messages(from, to)` of `partition`, none negative.
fn on(partition: u32, from: u64, to: u64) -> SourceEvent {
    SourceEvent::Messages { partition, messages: messages(from, to, u64::MAX) }
}

/// The row-count detector over `events`, from a source that can resume (and
/// says where it was told to).
fn resumable(events: Vec<SourceEvent>, resumed_at: &Arc<Mutex<BTreeMap<u32, ResumePosition>>>) -> Pipeline {
    let mut p = pipeline(Vec::new(), true, &Arc::default());
    p.source = Box::new(Scripted { events, acknowledges: true, committed: Arc::default(), resumed_at: Some(resumed_at.clone()), moves: false });
    let entry = CatalogEntry { active: Candidate::new(Arc::new(RowCountSource), None), shadow: None };
    let catalog = Catalog::new("t", BTreeMap::from([("row-count".to_string(), entry)]));
    let set = DetectorSet { catalog, pool: tenant_call_pool("t"), selection: None, configs: BTreeMap::new() };
    p.detectors = Arc::new(Detectors::new("p", set, 3).unwrap());
    p
}

/// What each window said: partition, seq, offsets and findings.
fn said(dir: &TempDir) -> Vec<String> {
    let mut said: Vec<String> =
        windows(dir).iter().map(|w| format!("{} {} {}..{} {}", w["partition"], w["seq"], w["first_offset"], w["last_offset"], w["findings"])).collect();
    said.sort();
    said
}

fn run_with_checkpoints(dir: &TempDir, p: Pipeline) -> PipelineReport {
    let counters = p.counters.clone();
    let store = CheckpointStore::open(&dir.path().join("checkpoints.db")).unwrap();
    let shared = Shared { checkpoints: Some(Checkpoints { file: store, in_broker: false, interval: Duration::ZERO }), ..shared(dir, &counters) };
    run(p, &shared).unwrap()
}

#[test]
fn a_restart_from_the_checkpoint_says_what_one_run_would_have() {
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let resumed_at = Arc::default();
    let whole = run_with_checkpoints(&one, resumable(vec![on(2, 0, 300)], &resumed_at));
    assert!(whole.resumed.is_none() && whole.windows == 6, "{whole:?}");
    // Stopped after 150 records (at a window's edge, so the
    // first run flushes no partial window), then started again.
    let first = run_with_checkpoints(&two, resumable(vec![on(2, 0, 150)], &resumed_at));
    assert!(first.resumed.is_none());
    let second = run_with_checkpoints(&two, resumable(vec![on(2, 150, 300)], &resumed_at));
    let resumed = second.resumed.as_ref().expect("resumed");
    // The next offset, and the broker's id of the last record analysed.
    let at = BTreeMap::from([(2, ResumePosition { next_offset: 150, after_id: Some("id-149".into()) })]);
    assert!(resumed.cold_detectors.is_empty() && resumed.positions == at, "{resumed:?}");
    assert_eq!(*resumed_at.lock().unwrap(), at);
    assert_eq!(said(&two), said(&one), "the state, the window numbers and the positions carried over");
    // Another stream under the same pipeline name starts cold.
    let mut other = resumable(vec![on(2, 0, 50)], &resumed_at);
    other.name = "q".into();
    assert!(run_with_checkpoints(&two, other).resumed.is_none());
}

/// Detectors run an instance per partition: what a partition's windows say
/// does not depend on the partitions read beside it or on how their records
/// interleave, and a restart resumes each partition from its own state.
#[test]
fn each_partition_is_analysed_with_its_own_state() {
    let resumed_at = Arc::default();
    let of = |said: Vec<String>, partition: &str| said.into_iter().filter(|w| w.starts_with(partition)).collect::<Vec<_>>();
    let alone = tempfile::tempdir().unwrap();
    run_with_checkpoints(&alone, resumable(vec![on(2, 0, 300)], &resumed_at));
    let mixed = tempfile::tempdir().unwrap();
    run_with_checkpoints(&mixed, resumable(vec![on(2, 0, 100), on(5, 0, 150), on(2, 100, 300), on(5, 150, 200)], &resumed_at));
    assert_eq!(of(said(&mixed), "2 "), said(&alone));
    let five = of(said(&mixed), "5 ");
    assert!(five.len() == 4 && five[0].contains("\"value\":50.0") && five[3].contains("\"value\":200.0"), "{five:?}");

    let restarted = tempfile::tempdir().unwrap();
    run_with_checkpoints(&restarted, resumable(vec![on(5, 0, 100), on(2, 0, 150)], &resumed_at));
    let second = run_with_checkpoints(&restarted, resumable(vec![on(2, 150, 300), on(5, 100, 200)], &resumed_at));
    assert_eq!(second.resumed.expect("resumed").positions.keys().copied().collect::<Vec<_>>(), [2, 5]);
    assert_eq!(said(&restarted), said(&mixed), "each partition carried on from its own state");
}

/// Where partitions move (Kafka), each carries on from its own checkpoint
/// when it arrives: records before the checkpoint that come again (from an
/// older commit) are not analysed again, and a partition read past its
/// checkpoint starts cold.
#[test]
fn a_partition_that_arrives_carries_on_from_its_own_checkpoint() {
    let resumed_at = Arc::default();
    let moving = |events: Vec<SourceEvent>| {
        let mut p = resumable(Vec::new(), &resumed_at);
        p.source = Box::new(Scripted { events, acknowledges: true, committed: Arc::default(), resumed_at: Some(resumed_at.clone()), moves: true });
        p
    };
    let whole = tempfile::tempdir().unwrap();
    run_with_checkpoints(&whole, moving(vec![on(2, 0, 300), on(5, 0, 100)]));
    let dir = tempfile::tempdir().unwrap();
    let first = run_with_checkpoints(&dir, moving(vec![on(2, 0, 150), on(5, 0, 100)]));
    assert_eq!((first.adopted_partitions, first.resumed.is_none()), (0, true));
    let second = run_with_checkpoints(&dir, moving(vec![on(2, 50, 300)]));
    assert_eq!(second.adopted_partitions, 1);
    assert_eq!(said(&dir), said(&whole), "partition 2 carried on from its checkpoint at 150, not from 50");
    let third = run_with_checkpoints(&dir, moving(vec![on(5, 150, 200)]));
    assert_eq!(third.adopted_partitions, 0, "partition 5 was read past its checkpoint at 100");
    let last = windows(&dir).pop().unwrap();
    assert_eq!((last["partition"].as_u64(), last["seq"].as_u64(), last["findings"][0]["value"].as_f64()), (Some(5), Some(0), Some(50.0)));
}

/// A checkpoint whose state cannot be read (another version's, a mangled
/// one) but whose position can: the partition starts cold there, its
/// windows numbered on from the checkpoint's, as the source numbers its
/// records on from it.
#[test]
fn a_partition_whose_state_cannot_be_read_starts_cold_at_its_checkpoint() {
    let resumed_at = Arc::default();
    let moving = |events: Vec<SourceEvent>| {
        let mut p = resumable(Vec::new(), &resumed_at);
        p.source = Box::new(Scripted { events, acknowledges: true, committed: Arc::default(), resumed_at: Some(resumed_at.clone()), moves: true });
        p
    };
    let whole = tempfile::tempdir().unwrap();
    run_with_checkpoints(&whole, moving(vec![on(2, 0, 300)]));
    let dir = tempfile::tempdir().unwrap();
    run_with_checkpoints(&dir, moving(vec![on(2, 0, 150)]));
    rusqlite::Connection::open(dir.path().join("checkpoints.db")).unwrap().execute("UPDATE partition_checkpoints SET router = '{not json'", []).unwrap();
    let second = run_with_checkpoints(&dir, moving(vec![on(2, 50, 300)]));
    assert_eq!(second.adopted_partitions, 0, "its state was not restored");
    let places = |dir: &TempDir| -> Vec<String> {
        windows(dir).iter().map(|w| format!("{} {} {}..{}", w["partition"], w["seq"], w["first_offset"], w["last_offset"])).collect()
    };
    assert_eq!(places(&dir), places(&whole), "windows numbered on from the checkpoint at 150, not from 50");
    assert_eq!(windows(&dir)[3]["findings"][0]["value"].as_f64(), Some(50.0), "the row count starts cold");
}

/// A cutter resumed at a checkpoint cuts nothing below it, and its first
/// cut names the broker id of the last record below (a later restart finds
/// the cut by it).
#[test]
fn a_resumed_cutter_cuts_on_from_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let counters = Arc::new(PipelineCounters::new("p", "t", 0.8));
    let shared = shared(&dir, &counters);
    let common = Common { pipeline: "p", source: "scripted", reader: "scripted", dead_letter_topic: None, shared: &shared, counters: &counters };
    let decoder = MessageDecoder::new(MessageFormat::Json, Vec::new(), None, None).unwrap();
    let mut cutter = Cutter::new(common, decoder, WindowSpec::Count { size: 50, slide: 50 }, None).unwrap();
    let at = ResumePosition { next_offset: 150, after_id: Some("id-149".into()) };
    cutter.resume(&BTreeMap::from([(2, at)]), &BTreeMap::from([(2, 3)]));
    let cuts = |cutter: &mut Cutter, from: u64, to: u64| -> Vec<(u64, u64, Option<String>)> {
        for m in messages(from, to, u64::MAX) {
            cutter.message(2, &m, 0).unwrap();
        }
        cutter
            .work()
            .into_iter()
            .flat_map(|w| match w {
                Work::Acks(cuts) => cuts.into_iter().map(|c| (c.ack.below, c.next_seq, c.after_id.map(|id| id.to_string()))).collect(),
                Work::Window(_) | Work::Adopt(..) | Work::Revoked(_) => Vec::new(),
            })
            .collect()
    };
    assert_eq!(cuts(&mut cutter, 150, 170), [], "nothing new is analysed below an open window");
    assert_eq!(cuts(&mut cutter, 170, 210), [(200, 4, Some("id-199".to_string()))]);
}

/// A checkpoint whose store panics (a bug in a client) loses that one:
/// the thread goes on storing the next, so acks still come and the
/// pipeline can finish.
#[test]
fn a_store_that_panics_stops_no_later_checkpoint() {
    let saver = analyst::Saver::start("orders").unwrap();
    let (taken_tx, taken_rx) = crossbeam_channel::bounded(1);
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let panicking: analyst::SaveJob = Box::new(move || {
        taken_tx.send(()).unwrap();
        panic!("a client's bug")
    });
    saver.hand(panicking);
    // Handed once the thread took the first (one job waits at most: a second would replace it).
    let wait = std::time::Duration::from_secs(10);
    assert_eq!(taken_rx.recv_timeout(wait), Ok(()));
    saver.hand(Box::new(move || done_tx.send(()).unwrap()));
    assert_eq!(done_rx.recv_timeout(wait), Ok(()));
}

#[test]
fn broker_ids_are_found_by_offset_whatever_order_they_came_in() {
    let mut ids = cutter::BrokerIds::default();
    for offset in [3, 4, 7] {
        ids.insert(offset, format!("id-{offset}").into());
    }
    // Behind the last: kept in offset order; again: the newer id wins.
    ids.insert(5, "id-5".into());
    ids.insert(4, "id-4b".into());
    assert_eq!(
        [3, 4, 5, 6, 7].map(|o| ids.get(o).map(|id| id.to_string())),
        [Some("id-3".into()), Some("id-4b".into()), Some("id-5".into()), None, Some("id-7".into())]
    );
    assert_eq!(ids.forget_below(6).as_deref(), Some("id-5"));
    assert_eq!(ids.get(5), None);
    assert_eq!(ids.forget_below(6), None, "nothing left below 6");
    assert_eq!(ids.forget_below(u64::MAX).as_deref(), Some("id-7"));
}

/// Holds its first window until told (10 s at most), so later windows are
/// with the detectors, and answered by the others, while it waits.
struct Held(Option<crossbeam_channel::Receiver<()>>);

impl Analyzer for Held {
    fn analyze(&mut self, _window: &Arc<Window>) -> Result<Analysis, PluginFault> {
        if let Some(go) = self.0.take() {
            let _ = go.recv_timeout(Duration::from_secs(10));
        }
        Ok(Analysis { findings: Vec::new(), metrics: Vec::new() })
    }
    fn snapshot(&mut self) -> Result<Vec<u8>, PluginFault> {
        Ok(Vec::new())
    }
    fn restore(&mut self, _state: &[u8]) -> Result<(), PluginFault> {
        Ok(())
    }
}

/// Counts rows; notes the count at every snapshot; tells `Held` to go
/// once it counted `go_at` rows, after `wait` (past the checkpoint interval).
struct Counted {
    rows: u64,
    go_at: u64,
    wait: Duration,
    go: Option<crossbeam_channel::Sender<()>>,
    snapshots: Arc<Mutex<Vec<u64>>>,
}

impl Analyzer for Counted {
    fn analyze(&mut self, window: &Arc<Window>) -> Result<Analysis, PluginFault> {
        self.rows += u64::from(window.batch().row_count);
        if self.rows == self.go_at {
            std::thread::sleep(self.wait);
            self.go.take().map(|go| go.send(()));
        }
        Ok(Analysis { findings: Vec::new(), metrics: Vec::new() })
    }
    fn snapshot(&mut self) -> Result<Vec<u8>, PluginFault> {
        self.snapshots.lock().unwrap().push(self.rows);
        Ok(self.rows.to_le_bytes().to_vec())
    }
    fn restore(&mut self, _state: &[u8]) -> Result<(), PluginFault> {
        Ok(())
    }
}

/// Makes one instance of an analyzer (the pipeline reads one partition).
struct Single(&'static str, Mutex<Option<Box<dyn Analyzer>>>);

impl DetectorSource for Single {
    fn name(&self) -> &str {
        self.0
    }
    fn version(&self) -> &str {
        "1.0"
    }
    fn instantiate(&self, _config: &str) -> Result<Box<dyn Analyzer>, PluginFault> {
        self.1.lock().unwrap().take().ok_or_else(|| PluginFault::Guest("one instance only".into()))
    }
}

/// The cuts of windows 0 and 1 come due while windows 1 and 2 are with
/// the detectors (and answered by one of them): no checkpoint is taken
/// there, as its state would be past its cut; the cut after window 2,
/// with nothing at the detectors, takes it, with the state of all 150 rows.
#[test]
fn no_checkpoint_is_taken_while_a_later_window_is_with_the_detectors() {
    let dir = tempfile::tempdir().unwrap();
    let interval = Duration::from_secs(1);
    let (go, held_until) = crossbeam_channel::bounded(1);
    let snapshots = Arc::new(Mutex::new(Vec::new()));
    let counted = Counted { rows: 0, go_at: 150, wait: interval + Duration::from_millis(100), go: Some(go), snapshots: snapshots.clone() };
    let source = |name: &'static str, analyzer: Box<dyn Analyzer>| CatalogEntry {
        active: Candidate::new(Arc::new(Single(name, Mutex::new(Some(analyzer)))), None),
        shadow: None,
    };
    let catalog = Catalog::new(
        "t",
        BTreeMap::from([("counted".to_string(), source("counted", Box::new(counted))), ("held".to_string(), source("held", Box::new(Held(Some(held_until)))))]),
    );
    let pool = Arc::new(rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap());
    let committed = Arc::default();
    let mut p = pipeline(Vec::new(), true, &committed);
    p.source = Box::new(Scripted {
        events: vec![on(0, 0, 50), on(0, 50, 100), on(0, 100, 150)],
        acknowledges: true,
        committed: committed.clone(),
        resumed_at: Some(Arc::default()),
        moves: false,
    });
    p.detectors = Arc::new(Detectors::new("p", DetectorSet { catalog, pool, selection: None, configs: BTreeMap::new() }, 3).unwrap());
    let store = CheckpointStore::open(&dir.path().join("checkpoints.db")).unwrap();
    let counters = p.counters.clone();
    let shared = Shared { checkpoints: Some(Checkpoints { file: store, in_broker: false, interval }), ..shared(&dir, &counters) };
    assert_eq!(run(p, &shared).unwrap().windows, 3);
    // Each checkpoint's state (the rows counted) is as of its cut: one at
    // 150; or, should the first cuts come only after the interval on a
    // loaded machine, one at 50 and one at 150 (whose acks may replace the
    // first's before they went out).
    let states = snapshots.lock().unwrap().clone();
    assert!(states == [150] || states == [50, 150], "states {states:?}");
    let cuts: Vec<u64> = committed.lock().unwrap().iter().map(|a| a.below).collect();
    assert!(cuts.last() == Some(&150) && cuts.iter().all(|c| states.contains(c)), "cuts {cuts:?}");
}
