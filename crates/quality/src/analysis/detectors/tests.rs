//! Catalog changes applied between windows, with a detector whose state is a
//! window count and whose config can make it fail.

use super::*;
use clean_host_core::bindings::{Batch, Finding};
use clean_host_runtime::{DetectorSource, Status};

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
        let seen = Finding {
            metric: "seen".into(),
            column: None,
            value: self.count as f64,
            threshold: 0.0,
            severity: Severity::Info,
            message: String::new(),
            sample_rows: Vec::new(),
        };
        Ok(Analysis { findings: vec![seen], metrics: Vec::new() })
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

fn seen(findings: &[HostFinding]) -> Option<f64> {
    findings.iter().find(|f| f.finding.metric == "seen").map(|f| f.finding.value)
}

#[test]
fn swaps_hand_state_over_and_failures_roll_back() {
    let catalog = Catalog::new("t", BTreeMap::from([("counting".to_string(), CatalogEntry { active: candidate("a", false), shadow: None })]));
    let set = DetectorSet { catalog: catalog.clone(), pool: tenant_call_pool("t"), selection: None, configs: BTreeMap::new() };
    let detectors = Detectors::new("p", set, 3).unwrap();
    for seq in 0..3 {
        assert_eq!(seen(&detectors.analyze(&batch(seq)).findings), Some(seq as f64 + 1.0));
    }
    catalog.update(|e| e.get_mut("counting").unwrap().active = candidate("b", false));
    assert_eq!(seen(&detectors.analyze(&batch(3)).findings), Some(4.0), "b carries on from a's count");
    catalog.update(|e| e.get_mut("counting").unwrap().active = candidate("c", true));
    let window = detectors.analyze(&batch(4));
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
    detectors.analyze(&batch(0));
    catalog.update(|e| e.get_mut("counting").unwrap().shadow = Some(candidate("s", false)));
    for seq in 1..5 {
        let w = detectors.analyze(&batch(seq));
        assert_eq!(seen(&w.findings), seen(&w.shadow_findings), "the shadow starts from the active state");
    }
    let shadow = detectors.stats().into_iter().find(|s| s.status == Status::Shadow).unwrap();
    assert_eq!((shadow.agreement, shadow.compared_windows), (Some(1.0), Some(4)));
    catalog.update(|e| {
        let entry = e.get_mut("counting").unwrap();
        entry.active = entry.shadow.take().unwrap();
    });
    let w = detectors.analyze(&batch(5));
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
    assert!(detectors.analyze(&batch(0)).findings.is_empty());
    assert!(detectors.stats().is_empty());
    catalog.update(|e| {
        e.insert("counting".into(), CatalogEntry { active: candidate("b", false), shadow: None });
    });
    assert_eq!(seen(&detectors.analyze(&batch(1)).findings), Some(1.0));
}

#[test]
fn a_new_build_brings_a_quarantined_detector_back() {
    let catalog = Catalog::new("t", BTreeMap::from([("counting".to_string(), CatalogEntry { active: candidate("bad", true), shadow: None })]));
    let set = DetectorSet { catalog: catalog.clone(), pool: tenant_call_pool("t"), selection: None, configs: BTreeMap::new() };
    let detectors = Detectors::new("p", set, 2).unwrap();
    detectors.analyze(&batch(0));
    let w = detectors.analyze(&batch(1));
    assert!(w.findings.iter().any(|f| f.finding.metric == "plugin_quarantined"));
    catalog.update(|e| e.get_mut("counting").unwrap().active = candidate("fixed", false));
    assert_eq!(seen(&detectors.analyze(&batch(2)).findings), Some(1.0));
    assert_eq!(detectors.stats()[0].status, Status::Active);
}
