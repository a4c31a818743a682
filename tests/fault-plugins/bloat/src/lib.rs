//! Answers with everything as large as it can: a 4 MiB description and
//! metric list in `describe()`, and per window (config `what`) a 4 MiB
//! error, findings and metrics with 1 MiB names, 200 log lines of 64 KiB, or a
//! 96 MiB snapshot. The host must cut or refuse each before keeping it.

use clean_host_sdk::bindings::clean_host::plugin::host::LogLevel;
use clean_host_sdk::{export_detector, log, parse_config, Analysis, Batch, Detector, Finding, MetricInfo, PluginInfo, Severity};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    what: String,
}

#[derive(Default)]
pub struct Bloat {
    config: Config,
}

fn huge(bytes: usize) -> String {
    "é".repeat(bytes / 2)
}

impl Detector for Bloat {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "bloat".into(),
            version: huge(1 << 20),
            description: huge(4 << 20),
            metrics: (0..10_000).map(|i| MetricInfo { name: format!("{i}{}", huge(1000)), description: huge(1000) }).collect(),
            config_schema: huge(1 << 20),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        self.config = parse_config(config)?;
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        match self.config.what.as_str() {
            "snapshot" => vec![7; 96 << 20],
            _ => Vec::new(),
        }
    }

    fn analyze(&mut self, _batch: &Batch) -> Result<Analysis, String> {
        let mut out = Analysis::new();
        match self.config.what.as_str() {
            "error" => return Err(huge(4 << 20)),
            "names" => {
                let name = huge(1 << 20);
                out.findings.push(Finding::new(&name, Some(&name), 1.0, 0.0, Severity::Info, huge(4 << 20)));
                out.metric(&name, Some(&name), 1.0);
            }
            "logs" => {
                for _ in 0..200 {
                    log(LogLevel::Warn, &huge(64 << 10));
                }
            }
            _ => {}
        }
        Ok(out)
    }
}

export_detector!(Bloat);
