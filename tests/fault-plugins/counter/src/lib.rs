//! Counts the windows it has seen, in state that survives reloads, and says
//! so in one info finding per window (`seen`, message = its config's label).
//! A reload test reads the count across versions: no gap, no repeat.
//! `fail = true` makes it fail every window (for rollback tests).

use clean_host_sdk::{export_detector, parse_config, Analysis, Batch, Detector, Finding, PluginInfo, Severity};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    label: String,
    fail: bool,
}

#[derive(Default)]
pub struct Counter {
    config: Config,
    windows: u64,
}

impl Detector for Counter {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "counter".into(),
            version: "0.0.1".into(),
            description: "Counts windows across reloads".into(),
            metrics: Vec::new(),
            config_schema: "{}".into(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        self.config = parse_config(config)?;
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        self.windows.to_le_bytes().to_vec()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        self.windows = u64::from_le_bytes(state.try_into().map_err(|_| "bad state".to_string())?);
        Ok(())
    }

    fn analyze(&mut self, _batch: &Batch) -> Result<Analysis, String> {
        if self.config.fail {
            panic!("version {} fails every window", self.config.label);
        }
        self.windows += 1;
        let mut out = Analysis::new();
        out.findings.push(Finding::new("seen", None, self.windows as f64, 0.0, Severity::Info, self.config.label.clone()));
        Ok(out)
    }
}

export_detector!(Counter);
