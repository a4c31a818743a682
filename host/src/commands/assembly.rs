//! From flags and config to running parts: the config with the command
//! line's overrides, every tenant with its plugins loaded, and each
//! pipeline put together (source, decoder, windows, detectors, alert
//! router, handlers, dead-letter and findings topics).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use clean_host::config::{self, ConfigFile, PipelineConfig};
use clean_host::dispatch::handlers::Handlers;
use clean_host::pipeline::{Pipeline, PipelineCounters};
use clean_host::tenant::Tenant;
use clean_host_quality::alert::Router;
use clean_host_quality::analysis::{DetectorSet, Detectors};
use clean_host_runtime::{LoadError, Runtime};
use clean_host_stream::decode::message::MessageDecoder;
use clean_host_stream::source::{self, config::BrokerUrl};

use crate::cli::{GeneratorArgs, GlobalArgs, RunArgs};

/// Consecutive failed calls before a plugin is quarantined, unless configured.
const DEFAULT_MAX_FAILURES: u32 = 3;
/// How long handlers and deliveries may take to drain at exit.
pub const HANDLER_GRACE: Duration = Duration::from_secs(10);

/// The config file (or the defaults: one pipeline reading `default_source`)
/// with `overrides` from the command line, `--data-dir` and `--plugin-cache`, validated.
pub fn settings(g: &GlobalArgs, default_source: &str, overrides: impl FnOnce(&mut ConfigFile) -> Result<()>) -> Result<ConfigFile> {
    let mut config = match &g.config {
        Some(path) => ConfigFile::load(path)?,
        None => ConfigFile::default(),
    };
    if config.pipelines.is_empty() {
        config.pipelines.push(PipelineConfig::from_source(default_source));
    }
    overrides(&mut config)?;
    if g.data_dir.is_some() {
        config.data_dir = g.data_dir.clone();
    }
    if g.plugin_cache.is_some() {
        config.plugin_cache = g.plugin_cache.clone();
    }
    config.validate().map_err(|e| anyhow::anyhow!("{}: {e}", config_name(g)))?;
    Ok(config)
}

/// The config file's path, or "command line" when there is none.
pub fn config_name(g: &GlobalArgs) -> String {
    g.config.as_ref().map_or_else(|| "command line".into(), |p| p.display().to_string())
}

impl RunArgs {
    /// The pipeline a run reads when the config names none.
    pub fn default_source(&self) -> &str {
        self.source.as_deref().unwrap_or("generator")
    }

    /// The run's flags over the config's settings.
    pub fn apply(&self, config: &mut ConfigFile, config_name: &str) -> Result<()> {
        if let Some(source) = &self.source {
            if config.pipelines.len() > 1 {
                bail!("--source needs a config with a single pipeline ({config_name} has {})", config.pipelines.len());
            }
            config.pipelines[0].source = source.clone();
        }
        for p in &mut config.pipelines {
            if let Some(size) = self.window {
                p.window.kind = config::WindowKind::Count;
                p.window.size = size;
                p.window.slide = None;
            }
            if let Some(field) = &self.event_time {
                p.event_time_field = Some(field.clone());
            }
            p.broker.until_end |= self.until_end;
            self.generator.apply(p);
        }
        if let Some(format) = self.format {
            config.output.format = Some(format);
        }
        if self.alerts_file.is_some() {
            config.output.file = self.alerts_file.clone();
        }
        if self.windows_file.is_some() {
            config.output.windows_file = self.windows_file.clone();
        }
        Ok(())
    }
}

impl GeneratorArgs {
    /// The generator flags over a pipeline's generator settings.
    pub fn apply(&self, p: &mut PipelineConfig) {
        let g = &mut p.generator;
        g.records = self.records.or(g.records);
        g.rate = self.rate.or(g.rate);
        g.seed = self.seed.unwrap_or(g.seed);
        g.delivery_lag_ms = self.delivery_lag_ms.unwrap_or(g.delivery_lag_ms);
        if !self.inject.is_empty() {
            g.inject = self.inject.clone();
        }
    }
}

pub fn data_dir(config: &ConfigFile) -> PathBuf {
    config.data_dir.clone().unwrap_or_else(|| PathBuf::from("clean-data"))
}

pub fn max_failures(config: &ConfigFile) -> u32 {
    config.max_consecutive_failures.unwrap_or(DEFAULT_MAX_FAILURES)
}

/// The runtime and every tenant with its plugins loaded (or, in a benchmark
/// build with `native`, the bundled detectors as native code). Files that
/// do not load are an error, or, given `broken`, are put there (listings).
pub fn load_tenants(
    plugins: &Path,
    config: &ConfigFile,
    native: bool,
    mut broken: Option<&mut Vec<(String, LoadError)>>,
) -> Result<(Arc<Runtime>, Vec<Tenant>)> {
    let runtime =
        Arc::new(Runtime::new(Some(&data_dir(config)), config.plugin_cache.as_deref()).map_err(|e| anyhow::anyhow!("starting the wasm runtime: {e:#}"))?);
    if !plugins.is_dir() {
        bail!("plugin folder {} does not exist; build the bundled plugins with scripts/build", plugins.display());
    }
    let mut tenants = Vec::new();
    for t in config.all_tenants() {
        if native {
            #[cfg(feature = "native-detectors")]
            tenants
                .push(Tenant::native(&t, clean_host::native::detectors().into_iter().map(|d| clean_host_quality::analysis::Candidate::new(d, None)).collect()));
            #[cfg(not(feature = "native-detectors"))]
            bail!("--native needs a build with --features native-detectors");
        } else {
            let mut errors = Vec::new();
            let lenient = broken.is_some().then_some(&mut errors);
            tenants.push(Tenant::load(&runtime, plugins, &t, config.limits, lenient)?);
            if let Some(broken) = broken.as_deref_mut() {
                broken.extend(errors.into_iter().map(|e| (t.name.clone(), e)));
            }
        }
    }
    // A listing shows folders without detectors (all of them rejected, say) as they are.
    for p in config.pipelines.iter().filter(|_| broken.is_none()) {
        let t = tenants.iter().find(|t| t.name() == p.tenant_name()).expect("validated: every pipeline's tenant exists");
        if t.catalog.entries().is_empty() {
            bail!("no plugins (*.wasm detectors) in {} for pipeline '{}'; build the bundled ones with scripts/build", t.dir.display(), p.name);
        }
    }
    Ok((runtime, tenants))
}

/// Each configured pipeline, put together from its tenant's plugins and handlers.
pub fn build_pipelines(config: &ConfigFile, tenants: &[Tenant], handlers: &BTreeMap<String, Arc<Handlers>>) -> Result<Vec<Pipeline>> {
    let mut pipelines = Vec::new();
    for p in &config.pipelines {
        let context = || format!("pipeline '{}'", p.name);
        let tenant = tenants.iter().find(|t| t.name() == p.tenant_name()).expect("validated: every pipeline's tenant exists");
        let set =
            DetectorSet { catalog: tenant.catalog.clone(), pool: tenant.call_pool.clone(), selection: p.detectors.clone(), configs: p.detector_config.clone() };
        let detectors = Detectors::new(&p.name, set, max_failures(config)).map_err(|e| anyhow::anyhow!("pipeline '{}': {e}", p.name))?;
        let source = source::open(&p.source, &p.generator, &p.broker).with_context(context)?;
        let schema = match &p.broker.avro_schema {
            Some(path) => Some(std::fs::read_to_string(path).with_context(|| format!("reading Avro schema {}", path.display()))?),
            None => None,
        };
        let decoder = MessageDecoder::new(p.broker.format, p.broker.metadata.clone(), schema.as_deref(), p.broker.registry.as_ref())
            .map_err(anyhow::Error::msg)
            .with_context(context)?
            .with_max_fields(p.max_fields);
        let dead_letter_topic = source.dead_letter_sink().with_context(context)?;
        let findings_topic = match BrokerUrl::parse(&p.source) {
            Ok(url) => match p.broker.merged(&url)?.findings_topic {
                Some(topic) => {
                    let sink_url = format!("{}://{}/{topic}", url.scheme, url.address());
                    Some(source::open_sink(&sink_url, &p.broker, 1).with_context(context)?)
                }
                None => None,
            },
            Err(_) if p.broker.findings_topic.is_some() => bail!("pipeline '{}': findings_topic needs a broker source", p.name),
            Err(_) => None,
        };
        let alerts = tenant.config.alerts.clone().unwrap_or_else(|| config.alerts.clone());
        pipelines.push(Pipeline {
            counters: Arc::new(PipelineCounters::new(&p.name, tenant.name(), alerts.quality_threshold)),
            name: p.name.clone(),
            tenant: tenant.name().to_string(),
            source,
            window: p.window_spec().map_err(anyhow::Error::msg)?,
            event_time_field: p.event_time_field.clone(),
            detectors: Arc::new(detectors),
            router: Router::new(&p.name, alerts),
            handlers: handlers.get(tenant.name()).cloned(),
            decoder,
            dead_letter_topic,
            findings_topic,
        });
    }
    Ok(pipelines)
}
