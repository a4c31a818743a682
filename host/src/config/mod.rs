//! The TOML config file and how command-line flags override it.
//!
//! Everything has a default, so no file at all is a valid config: the
//! embedded generator feeding every detector in the plugins folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::alert::AlertConfig;
use crate::runtime::Limits;
use crate::source::BrokerOptions;
use crate::source::generator::GeneratorConfig;
use crate::window::WindowSpec;

#[cfg(test)]
mod tests;

/// The whole config file.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigFile {
    /// Where dead letters and the compiled-plugin cache go (default `clean-data`).
    pub data_dir: Option<PathBuf>,
    /// Limits for every plugin instance (a plugin's manifest may override them).
    pub limits: Limits,
    /// Consecutive failed calls after which a plugin is quarantined.
    pub max_consecutive_failures: Option<u32>,
    pub alerts: AlertConfig,
    pub output: OutputConfig,
    pub pipelines: Vec<PipelineConfig>,
}

/// Where alerts go besides the terminal.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputConfig {
    /// `human` (default) or `json` lines on stdout.
    pub format: Option<OutputFormat>,
    /// Also append every alert as a JSON line to this file.
    pub file: Option<PathBuf>,
    /// Append one JSON line per analysed window (offsets, records, score, findings) to this file.
    pub windows_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    Human,
    Json,
}

/// One stream to watch.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Names the pipeline in alerts.
    pub name: String,
    /// A JSON-lines file, `-` for standard input, `generator`, or a broker URL:
    /// `kafka://host:port[,host:port]/topic`, `pulsar://host:port/tenant/namespace/topic`,
    /// `redis://host:port/stream` (query parameters as in the README).
    pub source: String,
    /// Field holding each record's event time (epoch ms or s, or RFC 3339).
    #[serde(default)]
    pub event_time_field: Option<String>,
    #[serde(default)]
    pub window: WindowConfig,
    /// Detectors to run, by name (default: every plugin in the folder).
    #[serde(default)]
    pub detectors: Option<Vec<String>>,
    /// Config per detector, handed to its `configure()` as JSON.
    #[serde(default)]
    pub detector_config: BTreeMap<String, toml::Table>,
    /// Settings of the built-in generator when `source = "generator"`.
    #[serde(default)]
    pub generator: GeneratorConfig,
    /// Settings of a broker source (group, format, dead-letter topic, librdkafka properties...).
    #[serde(default)]
    pub broker: BrokerOptions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WindowKind {
    Count,
    Time,
    EventTime,
}

/// How the pipeline cuts its stream into windows.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WindowConfig {
    /// `count`, `time` (processing time) or `event-time`.
    pub kind: WindowKind,
    /// Records per count window.
    pub size: usize,
    /// Records between the starts of two count windows (default: `size`, tumbling).
    pub slide: Option<usize>,
    /// Length of a time or event-time window, in milliseconds.
    pub duration_ms: Option<i64>,
    /// How late (in event time) a record may arrive and still join its window.
    pub lateness_ms: i64,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig { kind: WindowKind::Count, size: 1000, slide: None, duration_ms: None, lateness_ms: 0 }
    }
}

/// A config that cannot be used, with what is wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::parse(&text).map_err(|message| ConfigError::Parse { path: path.into(), message })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let config: ConfigFile = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        for p in &self.pipelines {
            if p.name.trim().is_empty() {
                return Err("a pipeline has an empty name".into());
            }
            if !names.insert(&p.name) {
                return Err(format!("two pipelines are named '{}'", p.name));
            }
            p.window_spec().map_err(|e| format!("pipeline '{}': {e}", p.name))?;
            p.generator.validate().map_err(|e| format!("pipeline '{}': generator: {e}", p.name))?;
        }
        self.alerts.validate()?;
        if self.limits.memory_mib == 0 || self.limits.timeout_ms == 0 {
            return Err("limits.memory_mib and limits.timeout_ms must be above 0".into());
        }
        Ok(())
    }
}

impl PipelineConfig {
    /// The pipeline a bare `--source` (or nothing: the generator) stands for.
    pub fn from_source(source: &str) -> Self {
        let generated = source == "generator";
        PipelineConfig {
            name: "default".into(),
            source: source.into(),
            event_time_field: generated.then(|| "ts".into()),
            window: WindowConfig::default(),
            detectors: None,
            detector_config: BTreeMap::new(),
            generator: GeneratorConfig::default(),
            broker: BrokerOptions::default(),
        }
    }

    pub fn window_spec(&self) -> Result<WindowSpec, String> {
        let w = &self.window;
        match w.kind {
            WindowKind::Count => {
                let slide = w.slide.unwrap_or(w.size);
                if w.size == 0 || slide == 0 || slide > w.size {
                    return Err(format!("window.size ({}) and window.slide ({slide}) must be above 0, slide at most size", w.size));
                }
                Ok(WindowSpec::Count { size: w.size, slide })
            }
            WindowKind::Time | WindowKind::EventTime => {
                let size_ms = w.duration_ms.ok_or("time windows need window.duration_ms")?;
                if size_ms <= 0 || w.lateness_ms < 0 {
                    return Err("window.duration_ms must be above 0 and window.lateness_ms not negative".into());
                }
                if w.kind == WindowKind::Time {
                    return Ok(WindowSpec::ProcessingTime { size_ms });
                }
                if self.event_time_field.is_none() {
                    return Err("event-time windows need event_time_field".into());
                }
                Ok(WindowSpec::EventTime { size_ms, lateness_ms: w.lateness_ms })
            }
        }
    }

    /// The JSON handed to a detector's `configure()`.
    pub fn detector_json(&self, detector: &str, manifest_default: Option<&toml::Table>) -> String {
        let table = self.detector_config.get(detector).or(manifest_default);
        table.map_or_else(|| "{}".to_string(), |t| serde_json::to_string(t).unwrap_or_else(|_| "{}".into()))
    }
}
