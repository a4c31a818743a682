//! Catalog changes applied between windows, with a detector whose state is a
//! window count and whose config can make it fail.

use super::*;
use clean_host_core::bindings::{Batch, Finding};
use clean_host_runtime::{DetectorSource, Status};

/// An answer of one `seen` finding of `value`.
fn seen_as(value: f64) -> Analysis {
    let seen =
        Finding { metric: "seen".into(), column: None, value, threshold: 0.0, severity: Severity::Info, message: String::new(), sample_rows: Vec::new() };
    Analysis { findings: vec![seen], metrics: Vec::new() }
}

struct Counting {
    count: u64,
    fail: bool,
}

impl Analyzer for Counting {
    fn analyze(&mut self, _window: &Arc<Window>) -> Result<Analysis, PluginFault> {
        if self.fail {
            return Err(PluginFault::Trap("boom".into()));
        }
        self.count += 1;
        Ok(seen_as(self.count as f64))
    }
    fn snapshot(&mut self) -> Result<Vec<u8>, PluginFault> {
        Ok(self.count.to_le_bytes().to_vec())
    }
    fn restore(&mut self, state: &[u8]) -> Result<(), PluginFault> {
        self.count = u64::from_le_bytes(state.try_into().map_err(|_| PluginFault::Guest("bad state".into()))?);
        Ok(())
    }
}

struct Source {
    build: String,
    fail: bool,
}

impl DetectorSource for Source {
    fn name(&self) -> &str {
        "counting"
    }
    fn version(&self) -> &str {
        "1.0"
    }
    fn fingerprint(&self) -> &str {
        &self.build
    }
    fn instantiate(&self, _config: &str) -> Result<Box<dyn Analyzer>, PluginFault> {
        Ok(Box::new(Counting { count: 0, fail: self.fail }))
    }
}

fn candidate(build: &str, fail: bool) -> Candidate {
    Candidate::new(Arc::new(Source { build: build.into(), fail }), None)
}

fn batch(seq: u64) -> Arc<Window> {
    let info = super::super::tests::info(seq);
    Window::new(Batch { info, row_count: 10, columns: Vec::new(), offsets: Vec::new(), record_hashes: Vec::new(), event_times: Vec::new() })
}

/// What the detectors say about `window`, once they answered.
fn answer(detectors: &Detectors, window: Arc<Window>) -> WindowAnalysis {
    detectors.submit(window, || {}).wait()
}

fn seen(findings: &[HostFinding]) -> Option<f64> {
    findings.iter().find(|f| f.finding.metric == "seen").map(|f| f.finding.value)
}

#[test]
fn swaps_hand_state_over_and_failures_roll_back() {
    let catalog = Catalog::new("t", BTreeMap::from([("counting".to_string(), CatalogEntry { active: candidate("a", false), shadow: None })]));
    let set = DetectorSet { catalog: catalog.clone(), pool: tenant_call_pool("t"), selection: None, configs: BTreeMap::new() };
    let detectors = Detectors::new("p", set, 3).unwrap();
    for seq in 0..3 {
        assert_eq!(seen(&answer(&detectors, batch(seq)).findings), Some(seq as f64 + 1.0));
    }
    catalog.update(|e| e.get_mut("counting").unwrap().active = candidate("b", false));
    assert_eq!(seen(&answer(&detectors, batch(3)).findings), Some(4.0), "b carries on from a's count");
    catalog.update(|e| e.get_mut("counting").unwrap().active = candidate("c", true));
    let window = answer(&detectors, batch(4));
    assert!(window.findings.iter().any(|f| f.finding.metric == "plugin_rolled_back" && f.origin == FindingOrigin::Quarantine));
    assert_eq!(seen(&window.findings), Some(5.0), "b analysed the window c failed on");
    assert_eq!(catalog.entries()["counting"].active.source.fingerprint(), "b");
    assert!(catalog.was_rolled_back("counting", "c"));
    let stats = detectors.stats();
    assert_eq!(stats.iter().map(|s| (s.fingerprint.as_str(), s.status)).collect::<Vec<_>>(), [("b", Status::Active), ("c", Status::RolledBack)]);
}

#[test]
fn shadows_are_compared_then_promoted() {
    let catalog = Catalog::new("t", BTreeMap::from([("counting".to_string(), CatalogEntry { active: candidate("a", false), shadow: None })]));
    let set = DetectorSet { catalog: catalog.clone(), pool: tenant_call_pool("t"), selection: None, configs: BTreeMap::new() };
    let detectors = Detectors::new("p", set, 3).unwrap();
    answer(&detectors, batch(0));
    catalog.update(|e| e.get_mut("counting").unwrap().shadow = Some(candidate("s", false)));
    for seq in 1..5 {
        let w = answer(&detectors, batch(seq));
        assert_eq!(seen(&w.findings), seen(&w.shadow_findings), "the shadow starts from the active state");
    }
    let shadow = detectors.stats().into_iter().find(|s| s.status == Status::Shadow).unwrap();
    assert_eq!((shadow.agreement, shadow.compared_windows), (Some(1.0), Some(4)));
    catalog.update(|e| {
        let entry = e.get_mut("counting").unwrap();
        entry.active = entry.shadow.take().unwrap();
    });
    let w = answer(&detectors, batch(5));
    assert_eq!((seen(&w.findings), w.shadow_findings.len()), (Some(6.0), 0));
    let stats = detectors.stats();
    assert_eq!((stats.len(), stats[0].fingerprint.as_str(), stats[0].reloads), (1, "s", 1));
}

#[test]
fn removed_detectors_leave_and_new_ones_join() {
    let catalog = Catalog::new("t", BTreeMap::from([("counting".to_string(), CatalogEntry { active: candidate("a", false), shadow: None })]));
    let set = DetectorSet { catalog: catalog.clone(), pool: tenant_call_pool("t"), selection: None, configs: BTreeMap::new() };
    let detectors = Detectors::new("p", set, 3).unwrap();
    catalog.update(|e| {
        e.clear();
    });
    assert!(answer(&detectors, batch(0)).findings.is_empty());
    assert!(detectors.stats().is_empty());
    catalog.update(|e| {
        e.insert("counting".into(), CatalogEntry { active: candidate("b", false), shadow: None });
    });
    assert_eq!(seen(&answer(&detectors, batch(1)).findings), Some(1.0));
}

#[test]
fn a_new_build_brings_a_quarantined_detector_back() {
    let catalog = Catalog::new("t", BTreeMap::from([("counting".to_string(), CatalogEntry { active: candidate("bad", true), shadow: None })]));
    let set = DetectorSet { catalog: catalog.clone(), pool: tenant_call_pool("t"), selection: None, configs: BTreeMap::new() };
    let detectors = Detectors::new("p", set, 2).unwrap();
    answer(&detectors, batch(0));
    let w = answer(&detectors, batch(1));
    assert!(w.findings.iter().any(|f| f.finding.metric == "plugin_quarantined"));
    catalog.update(|e| e.get_mut("counting").unwrap().active = candidate("fixed", false));
    assert_eq!(seen(&answer(&detectors, batch(2)).findings), Some(1.0));
    assert_eq!(detectors.stats()[0].status, Status::Active);
}

/// Holds every call until opened.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn pass(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// Notes the seq of every window it analyses (once past its gate, if it
/// has one), and says it as a `seen` finding; panics on window `panics_on`.
#[derive(Clone, Default)]
struct Recording {
    name: String,
    /// Its build (fingerprint): another is another version.
    build: String,
    seqs: Arc<Mutex<Vec<u64>>>,
    gate: Option<Arc<Gate>>,
    panics_on: Option<u64>,
}

impl Analyzer for Recording {
    fn analyze(&mut self, window: &Arc<Window>) -> Result<Analysis, PluginFault> {
        let seq = window.batch().info.seq;
        if let Some(gate) = &self.gate {
            gate.pass();
        }
        assert_ne!(Some(seq), self.panics_on, "a bug in the detector");
        self.seqs.lock().unwrap().push(seq);
        Ok(seen_as(seq as f64))
    }
    fn snapshot(&mut self) -> Result<Vec<u8>, PluginFault> {
        Ok((self.seqs.lock().unwrap().len() as u64).to_le_bytes().to_vec())
    }
    fn restore(&mut self, _state: &[u8]) -> Result<(), PluginFault> {
        Ok(())
    }
}

impl DetectorSource for Recording {
    fn name(&self) -> &str {
        &self.name
    }
    fn version(&self) -> &str {
        "1.0"
    }
    fn fingerprint(&self) -> &str {
        &self.build
    }
    fn instantiate(&self, _config: &str) -> Result<Box<dyn Analyzer>, PluginFault> {
        Ok(Box::new(self.clone()))
    }
}

fn entry(detector: &Recording) -> CatalogEntry {
    CatalogEntry { active: Candidate::new(Arc::new(detector.clone()), None), shadow: None }
}

/// A pipeline of `detectors`, on `pool`, and its catalog.
fn recording_on(pool: &Arc<rayon::ThreadPool>, detectors: &[&Recording]) -> (Arc<Catalog>, Detectors) {
    let catalog = Catalog::new("t", detectors.iter().map(|&d| (d.name.clone(), entry(d))).collect());
    let set = DetectorSet { catalog: catalog.clone(), pool: pool.clone(), selection: None, configs: BTreeMap::new() };
    (catalog, Detectors::new("p", set, 3).unwrap())
}

fn threads(n: usize) -> Arc<rayon::ThreadPool> {
    Arc::new(rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap())
}

/// A pipeline of `detectors`, on a pool of two threads (whatever the machine's cores).
fn recording(detectors: &[&Recording]) -> Detectors {
    recording_on(&threads(2), detectors).1
}

fn seqs(detector: &Recording) -> Vec<u64> {
    detector.seqs.lock().unwrap().clone()
}

#[test]
fn a_detector_moves_on_while_a_slower_one_holds_a_window() {
    let gate = Arc::new(Gate::default());
    // First in the pipeline's order, last to answer.
    let held = Recording { name: "a-held".into(), gate: Some(gate.clone()), ..Default::default() };
    let fast = Recording { name: "b-fast".into(), ..Default::default() };
    let detectors = recording(&[&held, &fast]);
    let pending: Vec<PendingWindow> = (0..4).map(|seq| detectors.submit(batch(seq), || {})).collect();
    let started = std::time::Instant::now();
    while seqs(&fast).len() < 4 && started.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(seqs(&fast), [0, 1, 2, 3], "fast took every window while held holds the first");
    assert!(seqs(&held).is_empty() && !pending[0].is_answered());
    gate.open();
    for (seq, window) in pending.into_iter().enumerate() {
        let findings = window.wait().findings;
        let said: Vec<(&str, f64)> = findings.iter().map(|f| (f.detector.as_str(), f.finding.value)).collect();
        assert_eq!(said, [("a-held", seq as f64), ("b-fast", seq as f64)], "answers in the detectors' order");
    }
    assert_eq!(seqs(&held), [0, 1, 2, 3], "each detector takes its windows in order");
}

/// Windows of a tenant's pipelines are answered in the order they were
/// handed over, whichever pipeline they are of: a detector that has more
/// windows queued does not keep the pool's thread for them.
#[test]
fn the_pool_takes_turns_between_pipelines_window_by_window() {
    let pool = threads(1);
    let (gate, order) = (Arc::new(Gate::default()), Arc::new(Mutex::new(Vec::new())));
    let a = Recording { name: "a".into(), seqs: order.clone(), gate: Some(gate.clone()), ..Default::default() };
    let b = Recording { name: "b".into(), seqs: order.clone(), ..Default::default() };
    let ((_, first), (_, second)) = (recording_on(&pool, &[&a]), recording_on(&pool, &[&b]));
    // The first pipeline's first window holds the thread; then each pipeline hands one over.
    let pending = [first.submit(batch(0), || {}), second.submit(batch(100), || {}), first.submit(batch(1), || {})];
    gate.open();
    pending.into_iter().for_each(|w| _ = w.wait());
    assert_eq!(*order.lock().unwrap(), [0, 100, 1]);
}

#[test]
fn a_catalog_change_waits_for_the_windows_handed_over_before() {
    let old = Recording { name: "d".into(), build: "old".into(), ..Default::default() };
    let new = Recording { name: "d".into(), build: "new".into(), ..Default::default() };
    let (catalog, detectors) = recording_on(&threads(2), &[&old]);
    // Told about window 0, its job waits: the detector is free, windows 1 and 2 wait for it.
    let told = Arc::new(Gate::default());
    let wait_for_told = told.clone();
    let mut pending = vec![detectors.submit(batch(0), move || wait_for_told.pass())];
    pending.extend((1..3).map(|seq| detectors.submit(batch(seq), || {})));
    catalog.update(|e| _ = e.insert("d".into(), entry(&new)));
    let teller = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        told.open();
    });
    let after = detectors.submit(batch(3), || {});
    assert!(pending.iter().all(PendingWindow::is_answered), "the change waited for them");
    assert_eq!(seen(&after.wait().findings), Some(3.0));
    assert_eq!((seqs(&old), seqs(&new)), (vec![0, 1, 2], vec![3]), "each window analysed by one version");
    teller.join().unwrap();
}

#[test]
fn a_pipeline_without_detectors_answers_at_once() {
    let detectors = recording(&[]);
    let told = Arc::new(AtomicU64::new(0));
    let count = told.clone();
    let pending = detectors.submit(batch(0), move || _ = count.fetch_add(1, Ordering::SeqCst));
    assert_eq!(told.load(Ordering::SeqCst), 1, "told before submit returned");
    assert!(pending.is_answered() && pending.wait().findings.is_empty());
}

#[test]
fn no_call_is_made_for_a_window_nobody_waits_for() {
    let gate = Arc::new(Gate::default());
    let held = Recording { name: "held".into(), gate: Some(gate.clone()), ..Default::default() };
    let detectors = recording(&[&held]);
    let first = detectors.submit(batch(0), || {});
    // Its pipeline failed: dropped unanswered.
    drop((detectors.submit(batch(1), || {}), detectors.submit(batch(2), || {})));
    gate.open();
    first.wait();
    detectors.checkpoint(0);
    assert_eq!(seqs(&held), [0]);
}

#[test]
fn a_checkpoint_is_taken_once_the_windows_handed_over_are_answered() {
    let counting = Recording { name: "counting".into(), ..Default::default() };
    let detectors = recording(&[&counting]);
    // Told about window 0, its job waits: the detector is free, windows 1 and 2 wait for it.
    let told = Arc::new(Gate::default());
    let wait_for_told = told.clone();
    let mut pending = vec![detectors.submit(batch(0), move || wait_for_told.pass())];
    pending.extend((1..3).map(|seq| detectors.submit(batch(seq), || {})));
    let teller = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        told.open();
    });
    let states = detectors.checkpoint(0);
    assert_eq!(states[0].state, 3u64.to_le_bytes(), "the state is as of the third window");
    assert!(pending.iter().all(PendingWindow::is_answered));
    teller.join().unwrap();
}

#[test]
fn a_detector_that_panics_panics_where_its_window_is_awaited() {
    let panics = Recording { name: "panics".into(), panics_on: Some(1), ..Default::default() };
    let detectors = recording(&[&panics]);
    let pending: Vec<PendingWindow> = (0..3).map(|seq| detectors.submit(batch(seq), || {})).collect();
    let waited: Vec<bool> = pending.into_iter().map(|w| std::panic::catch_unwind(AssertUnwindSafe(|| w.wait())).is_ok()).collect();
    assert_eq!(waited, [true, false, false], "the windows after it fail too");
    assert_eq!(seqs(&panics), [0], "no call after a panic");
}
