//! The TOML config file and how command-line flags override it.
//!
//! Everything has a default, so no file at all is a valid config: the
//! embedded generator feeding every detector in the plugins folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::CheckpointConfig;
use crate::dispatch::OutputConfig;
use crate::history::HistoryConfig;
use crate::http::HttpConfig;
use crate::tenant::{TenantConfig, DEFAULT_TENANT};
use clean_host_quality::alert::AlertConfig;
use clean_host_runtime::Limits;
use clean_host_stream::source::generator::GeneratorConfig;
use clean_host_stream::source::BrokerOptions;
use clean_host_stream::window::{EventTimeSpec, WindowSpec};

mod interpolate;
mod shown;
#[cfg(test)]
mod tests;

/// The whole config file.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigFile {
    /// Where dead letters and (unless `plugin_cache`) compiled plugins go (default `clean-data`).
    pub data_dir: Option<PathBuf>,
    /// Where compiled plugins go instead, with a key of their own (`cache.key`
    /// beside `cache/`), for hosts of one user to share (default: the data dir).
    pub plugin_cache: Option<PathBuf>,
    /// Limits for every plugin instance (a plugin's manifest may override them).
    pub limits: Limits,
    /// Consecutive failed calls after which a plugin is quarantined.
    pub max_consecutive_failures: Option<u32>,
    /// Which findings become alerts: thresholds, cooldown, control rules.
    pub alerts: AlertConfig,
    /// Where alerts and analysed windows are written.
    pub output: OutputConfig,
    /// The history store of windows, findings, alerts and plugin events.
    pub history: HistoryConfig,
    /// Detector and alert state kept with the broker's committed positions.
    pub checkpoints: CheckpointConfig,
    /// The HTTP API, `/metrics` and the dashboard.
    pub http: HttpConfig,
    /// Teams sharing the host; a pipeline without `tenant` belongs to `default`.
    pub tenants: Vec<TenantConfig>,
    /// The streams to watch (none: one pipeline `default` from `--source`).
    pub pipelines: Vec<PipelineConfig>,
}

/// One stream to watch.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Names the pipeline in alerts.
    pub name: String,
    /// The tenant it belongs to (default `default`).
    #[serde(default)]
    pub tenant: Option<String>,
    /// A JSON-lines file, `-` for standard input, `generator`, or a broker URL:
    /// `kafka://host:port[,host:port]/topic`, `pulsar://host:port/tenant/namespace/topic`,
    /// `redis://host:port/stream` (query parameters as in docs/operating.md).
    pub source: String,
    /// Field holding each record's event time (epoch ms or s, or RFC 3339).
    #[serde(default)]
    pub event_time_field: Option<String>,
    /// How its records are cut into windows.
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
    /// Distinct field names the pipeline keeps; a record bringing a new one
    /// past this is a dead letter.
    #[serde(default = "PipelineConfig::default_max_fields")]
    pub max_fields: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WindowKind {
    Count,
    Time,
    EventTime,
}

/// How the pipeline cuts its stream into windows.
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// Event-time windows: a record stamped more than this ahead of the
    /// host's clock is a dead letter (default one hour; at most a year).
    pub max_future_ms: i64,
    /// Event-time windows: a record stamped before this RFC 3339 time is a
    /// dead letter (default `2000-01-01T00:00:00Z`).
    pub earliest_event_time: String,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            kind: WindowKind::Count,
            size: 1000,
            slide: None,
            duration_ms: None,
            lateness_ms: 0,
            max_future_ms: 3_600_000,
            earliest_event_time: "2000-01-01T00:00:00Z".into(),
        }
    }
}

/// Longest `window.max_future_ms`, `duration_ms` and `lateness_ms`: a year.
const MAX_WINDOW_SPAN_MS: i64 = 366 * 86_400_000;

/// A config that cannot be used, with what is wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

impl ConfigFile {
    /// The file at `path`, its `${VAR}` references taken from the environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let variable = |name: &str| match std::env::var(name) {
            Ok(value) => Ok(Some(value)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err("is not UTF-8".to_string()),
        };
        let parse = |text: &str| Self::parse(&interpolate::interpolate(text, variable)?);
        parse(&text).map_err(|message| ConfigError::Parse { path: path.into(), message })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let config: ConfigFile = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
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
            if p.max_fields == 0 {
                return Err(format!("pipeline '{}': max_fields must be above 0", p.name));
            }
            p.generator.validate().map_err(|e| format!("pipeline '{}': generator: {e}", p.name))?;
        }
        self.alerts.validate()?;
        self.history.validate()?;
        self.checkpoints.validate()?;
        if self.limits.memory_mib == 0 || self.limits.timeout_ms == 0 {
            return Err("limits.memory_mib and limits.timeout_ms must be above 0".into());
        }
        let mut tenants = std::collections::BTreeSet::new();
        for t in &self.tenants {
            let valid = !t.name.is_empty() && t.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid || t.name == "shadow" {
                return Err(format!("tenant name '{}' must be letters, digits, '-' or '_' (and not 'shadow')", t.name));
            }
            if !tenants.insert(t.name.as_str()) {
                return Err(format!("two tenants are named '{}'", t.name));
            }
            if let Some(alerts) = &t.alerts {
                alerts.validate().map_err(|e| format!("tenant {}: {e}", t.name))?;
            }
            let l = &t.limits;
            if l.memory_mib == Some(0) || l.timeout_ms == Some(0) || l.max_instances == 0 || l.total_memory_mib == 0 {
                return Err(format!("tenant {}: limits must be above 0", t.name));
            }
        }
        for p in &self.pipelines {
            let tenant = p.tenant_name();
            if tenant != DEFAULT_TENANT && !tenants.contains(tenant) {
                return Err(format!("pipeline '{}': tenant '{tenant}' is not declared in [[tenants]]", p.name));
            }
        }
        Ok(())
    }

    /// Every tenant: those declared, and `default` (declared or not).
    pub fn all_tenants(&self) -> Vec<TenantConfig> {
        let mut all = self.tenants.clone();
        if !all.iter().any(|t| t.name == DEFAULT_TENANT) {
            all.insert(0, TenantConfig::new(DEFAULT_TENANT));
        }
        all
    }
}

/// Where and what, without quoting the offending line: config files may
/// hold secrets (webhook URLs, keys), and errors go to logs.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => format!("line {}: {}", text[..span.start.min(text.len())].matches('\n').count() + 1, e.message()),
        None => e.message().to_string(),
    }
}

impl PipelineConfig {
    /// The pipeline a bare `--source` (or nothing: the generator) stands for.
    pub fn from_source(source: &str) -> Self {
        let generated = source == "generator";
        PipelineConfig {
            name: "default".into(),
            tenant: None,
            source: source.into(),
            event_time_field: generated.then(|| "ts".into()),
            window: WindowConfig::default(),
            detectors: None,
            detector_config: BTreeMap::new(),
            generator: GeneratorConfig::default(),
            broker: BrokerOptions::default(),
            max_fields: Self::default_max_fields(),
        }
    }

    fn default_max_fields() -> usize {
        clean_host_stream::decode::DEFAULT_MAX_FIELDS
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
                if size_ms <= 0 || w.lateness_ms < 0 || size_ms > MAX_WINDOW_SPAN_MS || w.lateness_ms > MAX_WINDOW_SPAN_MS {
                    return Err("window.duration_ms must be above 0 and window.lateness_ms not negative, both at most a year".into());
                }
                if w.kind == WindowKind::Time {
                    return Ok(WindowSpec::ProcessingTime { size_ms });
                }
                if self.event_time_field.is_none() {
                    return Err("event-time windows need event_time_field".into());
                }
                if !(0..=MAX_WINDOW_SPAN_MS).contains(&w.max_future_ms) {
                    return Err(format!("window.max_future_ms ({}) must be between 0 and a year", w.max_future_ms));
                }
                let earliest_ms = clean_host_core::timestamp::parse_ms(w.earliest_event_time.as_bytes())
                    .ok_or_else(|| format!("window.earliest_event_time ({}) is not an RFC 3339 time like 2000-01-01T00:00:00Z", w.earliest_event_time))?;
                let spec = EventTimeSpec { size_ms, lateness_ms: w.lateness_ms, max_future_ms: w.max_future_ms, earliest_ms };
                Ok(WindowSpec::EventTime(spec))
            }
        }
    }

    pub fn tenant_name(&self) -> &str {
        self.tenant.as_deref().unwrap_or(DEFAULT_TENANT)
    }
}
