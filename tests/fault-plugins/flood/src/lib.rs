//! Answers every window with a gigantic output: 100 000 findings.

use clean_host_sdk::{export_detector, Analysis, Batch, Detector, Finding, PluginInfo, Severity};

#[derive(Default)]
pub struct Flood;

impl Detector for Flood {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "flood".into(),
            version: "0.0.1".into(),
            description: "Returns 100 000 findings per window".into(),
            metrics: Vec::new(),
            config_schema: "{}".into(),
        }
    }

    fn analyze(&mut self, _batch: &Batch) -> Result<Analysis, String> {
        let mut analysis = Analysis::new();
        for i in 0..100_000 {
            analysis.findings.push(Finding::new("flood", None, i as f64, 0.0, Severity::Critical, "x".repeat(100)));
        }
        Ok(analysis)
    }
}

export_detector!(Flood);
