//! The `clean-host` command: settings from flags and config, then the
//! pipelines, the status line and the summary.

mod cli;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::json;

use clean_host::alert::handlers::Handlers;
use clean_host::alert::{AlertLedger, Outputs, Router};
use clean_host::analysis::{DetectorSet, DetectorSource, Detectors, PluginStats, Status};
use clean_host::config::{self, ConfigFile, OutputFormat, PipelineConfig};
use clean_host::dead_letter::DeadLetters;
use clean_host::decode::message::MessageDecoder;
use clean_host::history::{History, HistoryReader};
use clean_host::http::{self, ApiState, LiveStatus};
use clean_host::logging::PluginEventSink;
use clean_host::pipeline::{self, total, Pipeline, PipelineCounters, PipelineReport, Shared};
use clean_host::runtime::reload::Watcher;
use clean_host::runtime::{write_atomically, LoadError, Plugin, Runtime, WasmDetector};
use clean_host::source::{self, config::BrokerUrl, SourceContext};
use clean_host::tenant::{self, Tenant, TenantStatus};
use cli::{AuthorCommand, Cli, Command, PluginCommand, RunArgs};

/// Consecutive failed calls before a plugin is quarantined, unless configured.
const DEFAULT_MAX_FAILURES: u32 = 3;
/// How often the plugin folders are checked for changes.
const RELOAD_POLL: Duration = Duration::from_millis(250);
/// How often the running host rewrites `DATA_DIR/plugins-status.json`.
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// How long handlers and deliveries may take to drain at exit.
const HANDLER_GRACE: Duration = Duration::from_secs(10);

fn main() {
    let cli = Cli::parse();
    let events = match clean_host::logging::init(cli.log_format, cli.log_level.as_deref()) {
        Ok(events) => events,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(cli, &events) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli, events: &PluginEventSink) -> Result<()> {
    let config = settings(&cli)?;
    match cli.command {
        Some(Command::Generate { ref sink, partitions }) => generate(&config, sink.as_deref(), partitions),
        Some(Command::Plugins { json, command: None }) => list_plugins(&cli, &config, json),
        Some(Command::Plugin { command: AuthorCommand::New { ref name, lang, ref dir } }) => {
            let dir = dir.clone().unwrap_or_else(|| PathBuf::from(name));
            for file in clean_host::scaffold::new_project(name, lang, &dir)? {
                println!("created {}", file.display());
            }
            println!("build it with: clean-host plugin build {} --plugins {}", dir.display(), cli.plugins.display());
            Ok(())
        }
        Some(Command::Plugin { command: AuthorCommand::Build { ref path } }) => {
            let built = clean_host::scaffold::build(path, &cli.plugins)?;
            println!("built {}", built.display());
            Ok(())
        }
        Some(Command::Plugins { command: Some(PluginCommand::Promote { ref name, ref tenant }), .. }) => promote(&cli, name, tenant),
        Some(Command::Check) => {
            let (runtime, tenants) = load_tenants(&cli, &config, None)?;
            let pipelines = build_pipelines(&config, &tenants, &BTreeMap::new())?;
            for t in &tenants {
                t.start_handlers(&runtime, max_failures(&config))?.inspect(|h| h.finish(HANDLER_GRACE));
            }
            let plugins: usize = tenants.iter().map(|t| t.plugins.len()).sum();
            println!("config ok: {} pipeline(s), {} tenant(s), {plugins} plugin(s)", pipelines.len(), tenants.len());
            for p in &pipelines {
                println!("  {} ({}) <- {}: {} detector(s)", p.name, p.tenant, p.source.name(), p.detectors.stats().len());
            }
            Ok(())
        }
        None => monitor(&cli, &config, events),
    }
}

/// The config file (or the defaults) with command-line overrides applied.
fn settings(cli: &Cli) -> Result<ConfigFile> {
    let mut config = match &cli.config {
        Some(path) => ConfigFile::load(path)?,
        None => ConfigFile::default(),
    };
    let args: &RunArgs = &cli.run;
    if config.pipelines.is_empty() {
        config.pipelines.push(PipelineConfig::from_source(args.source.as_deref().unwrap_or("generator")));
    } else if let Some(source) = &args.source {
        if config.pipelines.len() > 1 {
            bail!("--source needs a config with a single pipeline ({} has {})", display(&cli.config), config.pipelines.len());
        }
        config.pipelines[0].source = source.clone();
    }
    for p in &mut config.pipelines {
        if let Some(size) = args.window {
            p.window.kind = config::WindowKind::Count;
            p.window.size = size;
            p.window.slide = None;
        }
        if let Some(field) = &args.event_time {
            p.event_time_field = Some(field.clone());
        }
        p.broker.until_end |= args.until_end;
        let g = &mut p.generator;
        g.records = args.records.or(g.records);
        g.rate = args.rate.or(g.rate);
        g.seed = args.seed.unwrap_or(g.seed);
        if !args.inject.is_empty() {
            g.inject = args.inject.clone();
        }
    }
    if let Some(format) = args.format {
        config.output.format = Some(format);
    }
    if args.alerts_file.is_some() {
        config.output.file = args.alerts_file.clone();
    }
    if args.windows_file.is_some() {
        config.output.windows_file = args.windows_file.clone();
    }
    if args.data_dir.is_some() {
        config.data_dir = args.data_dir.clone();
    }
    config.validate().map_err(|e| anyhow::anyhow!("{}: {e}", display(&cli.config)))?;
    Ok(config)
}

fn display(path: &Option<PathBuf>) -> String {
    path.as_ref().map_or_else(|| "command line".into(), |p| p.display().to_string())
}

fn data_dir(config: &ConfigFile) -> PathBuf {
    config.data_dir.clone().unwrap_or_else(|| PathBuf::from("clean-data"))
}

fn max_failures(config: &ConfigFile) -> u32 {
    config.max_consecutive_failures.unwrap_or(DEFAULT_MAX_FAILURES)
}

/// The runtime and every tenant with its plugins loaded (or, in a benchmark
/// build with `--native`, the bundled detectors as native code). Files that
/// do not load are an error, or, given `broken`, are put there (listings).
fn load_tenants(cli: &Cli, config: &ConfigFile, mut broken: Option<&mut Vec<(String, LoadError)>>) -> Result<(Arc<Runtime>, Vec<Tenant>)> {
    let runtime = Arc::new(Runtime::new(Some(&data_dir(config))).map_err(|e| anyhow::anyhow!("starting the wasm runtime: {e:#}"))?);
    if !cli.plugins.is_dir() {
        bail!("plugin folder {} does not exist; build the bundled plugins with scripts/build", cli.plugins.display());
    }
    let mut tenants = Vec::new();
    for t in config.all_tenants() {
        if cli.run.native {
            #[cfg(feature = "native-detectors")]
            tenants.push(Tenant::native(&t, clean_host::native::detectors().into_iter().map(|d| clean_host::analysis::Candidate::new(d, None)).collect()));
            #[cfg(not(feature = "native-detectors"))]
            bail!("--native needs a build with --features native-detectors");
        } else {
            let mut errors = Vec::new();
            let lenient = broken.is_some().then_some(&mut errors);
            tenants.push(Tenant::load(&runtime, &cli.plugins, &t, config.limits, lenient)?);
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

fn build_pipelines(config: &ConfigFile, tenants: &[Tenant], handlers: &BTreeMap<String, Arc<Handlers>>) -> Result<Vec<Pipeline>> {
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
        let decoder = MessageDecoder::new(p.broker.format, p.broker.metadata.clone(), schema.as_deref())
            .map_err(anyhow::Error::msg)
            .with_context(context)?
            .with_max_fields(p.max_fields);
        let dead_letter_topic = source.dead_letter_sink().with_context(context)?;
        let findings_topic = match BrokerUrl::parse(&p.source) {
            Ok(url) => match p.broker.merged(&url)?.findings_topic {
                Some(topic) => {
                    let sink_url = format!("{}://{}/{topic}", url.scheme, url.hosts);
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

/// Per plugin and per tenant: what the summary and the status file show.
fn plugin_report(
    detectors: &[Arc<Detectors>],
    handlers: &BTreeMap<String, Arc<Handlers>>,
    tenants: &[Tenant],
    pipelines: &[Arc<PipelineCounters>],
) -> (Vec<PluginStats>, Vec<TenantStatus>) {
    let mut plugins: Vec<PluginStats> = detectors.iter().flat_map(|d| d.stats()).collect();
    plugins.extend(handlers.values().flat_map(|h| h.stats()));
    let tenants = tenants
        .iter()
        .map(|t| {
            let history_dropped = pipelines.iter().filter(|p| p.tenant == t.name()).map(|p| p.history_dropped.load(Ordering::Relaxed)).sum();
            t.status(handlers.get(t.name()).map(|h| &**h), history_dropped)
        })
        .collect();
    (plugins, tenants)
}

/// Rewrite the status file `clean-host plugins` reads while the host runs.
fn write_status(path: &std::path::Path, plugins: &[PluginStats], tenants: &[TenantStatus]) {
    let status = json!({ "pid": std::process::id(), "updated_ms": pipeline::now_ms(), "plugins": plugins, "tenants": tenants });
    if let Err(e) = write_atomically(path, status.to_string().as_bytes()) {
        tracing::warn!("cannot write {}: {e}", path.display());
    }
}

/// Per pipeline, records per second since the last sample.
struct RateMeter {
    last: Instant,
    records: BTreeMap<String, u64>,
}

impl RateMeter {
    fn sample(&mut self, pipelines: &[Arc<PipelineCounters>]) -> BTreeMap<String, f64> {
        let seconds = self.last.elapsed().as_secs_f64().max(1e-3);
        self.last = Instant::now();
        pipelines
            .iter()
            .map(|p| {
                let now = p.records.load(Ordering::Relaxed);
                let before = self.records.insert(p.pipeline.clone(), now).unwrap_or(0);
                (p.pipeline.clone(), ((now - before) as f64 / seconds).round())
            })
            .collect()
    }
}

/// Give each pipeline's control rules the windows the history kept from
/// earlier runs, so a restart does not start their baselines over.
fn warm_control_rules(pipelines: &mut [Pipeline], history: &Path) -> Result<()> {
    let reader = HistoryReader::open(history)?;
    for p in pipelines {
        let past = reader.past_windows(&p.tenant, &p.name, p.router.warm_windows()).with_context(|| format!("reading {}", history.display()))?;
        if !past.is_empty() {
            p.router.warm(&past);
            tracing::info!("pipeline {}: control rules picked up {} windows from the history", p.name, past.len());
        }
    }
    Ok(())
}

/// The HTTP server, with a token per tenant.
fn start_http(
    config: &ConfigFile,
    addr: &str,
    pipelines: Vec<Arc<PipelineCounters>>,
    live: Arc<RwLock<LiveStatus>>,
    history: Option<&History>,
) -> Result<http::Server> {
    let token_dir = data_dir(config).join("api-tokens");
    let mut tokens = Vec::new();
    for t in config.all_tenants() {
        tokens.push((http::tenant_token(t.api_token.as_deref(), &token_dir, &t.name)?, t.name.clone()));
    }
    let reader = match history {
        Some(h) => Some(HistoryReader::open(&h.path)?),
        None => None,
    };
    let server = http::serve(addr, ApiState::new(tokens, pipelines, live, reader)?)?;
    tracing::info!(
        "dashboard, API and /metrics on http://{}/ (bearer token per tenant; those not set in the config are in {})",
        server.addr,
        token_dir.display()
    );
    Ok(server)
}

fn monitor(cli: &Cli, config: &ConfigFile, events: &PluginEventSink) -> Result<()> {
    let started = Instant::now();
    let (runtime, tenants) = load_tenants(cli, config, None)?;
    let mut handlers = BTreeMap::new();
    for t in &tenants {
        if let Some(h) = t.start_handlers(&runtime, max_failures(config))? {
            handlers.insert(t.name().to_string(), h);
        }
    }
    let mut pipelines = build_pipelines(config, &tenants, &handlers)?;
    let detectors: Vec<Arc<Detectors>> = pipelines.iter().map(|p| p.detectors.clone()).collect();
    let counters: Vec<Arc<PipelineCounters>> = pipelines.iter().map(|p| p.counters.clone()).collect();
    let history = match config.history.enabled {
        true => {
            let path = config.history.path.clone().unwrap_or_else(|| data_dir(config).join("history.db"));
            let (history, writer) = History::start(&path, &config.history)?;
            events.connect(history.clone());
            warm_control_rules(&mut pipelines, &history.path)?;
            Some((history, writer))
        }
        false => None,
    };
    let live = Arc::new(RwLock::new(LiveStatus::default()));
    let listen = cli.run.listen.clone().or_else(|| config.http.listen.clone());
    let server = match &listen {
        Some(addr) => Some(start_http(config, addr, counters.clone(), live.clone(), history.as_ref().map(|(h, _)| h))?),
        None => None,
    };
    let watcher = (!cli.run.native).then(|| Watcher::start(runtime.clone(), tenants.iter().map(Tenant::folder_state).collect(), RELOAD_POLL));
    let format = config.output.format.unwrap_or(OutputFormat::Human);
    let dead_letter_path = cli.run.dead_letters.clone().unwrap_or_else(|| data_dir(config).join("dead-letters.jsonl"));
    let shared = Arc::new(Shared {
        outputs: Mutex::new(Outputs::new(format, config.output.file.as_deref(), config.output.windows_file.as_deref())?),
        dead_letters: Mutex::new(DeadLetters::new(&dead_letter_path)),
        pipelines: counters.clone(),
        stop: Default::default(),
        ledger: Mutex::new(AlertLedger::open(&data_dir(config).join("alerts-sent"))?),
        history: history.as_ref().map(|(h, _)| h.clone()),
    });
    {
        let shared = shared.clone();
        ctrlc::set_handler(move || shared.stop.store(true, Ordering::Relaxed)).context("installing the Ctrl-C handler")?;
    }
    let status = (!cli.run.quiet && std::io::stderr().is_terminal()).then(|| status_line(shared.clone()));
    let status_path = data_dir(config).join("plugins-status.json");
    let running = std::sync::atomic::AtomicBool::new(true);
    let reports: Vec<Result<PipelineReport>> = std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut meter = RateMeter { last: Instant::now(), records: BTreeMap::new() };
            while running.load(Ordering::Relaxed) {
                let (plugins, tenants) = plugin_report(&detectors, &handlers, &tenants, &counters);
                write_status(&status_path, &plugins, &tenants);
                let rates = meter.sample(&counters);
                *live.write().unwrap_or_else(|p| p.into_inner()) = LiveStatus { plugins, tenants, rates };
                let next = Instant::now() + STATUS_EVERY;
                while running.load(Ordering::Relaxed) && Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        });
        let handles: Vec<_> = pipelines.into_iter().map(|p| scope.spawn(|| pipeline::run(p, &shared))).collect();
        let reports = handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a pipeline thread panicked")))).collect();
        running.store(false, Ordering::Relaxed);
        reports
    });
    drop(watcher);
    for h in handlers.values() {
        h.finish(HANDLER_GRACE);
    }
    drop(server);
    if let Some((done, handle)) = status {
        done.store(true, Ordering::Relaxed);
        let _ = handle.join();
    }
    let history_report = history.map(|(history, writer)| {
        writer.finish();
        let s = &history.stats;
        json!({
            "path": history.path,
            "windows": s.windows.load(Ordering::Relaxed),
            "replayed_windows": s.duplicate_windows.load(Ordering::Relaxed),
            "dropped": total(&counters, |c| &c.history_dropped),
            "write_errors": s.write_errors.load(Ordering::Relaxed),
        })
    });
    let reports = reports.into_iter().collect::<Result<Vec<_>>>()?;
    let (plugins, tenant_report) = plugin_report(&detectors, &handlers, &tenants, &counters);
    write_status(&status_path, &plugins, &tenant_report);
    let in_file = shared.dead_letters.lock().unwrap_or_else(|p| p.into_inner()).count;
    if in_file > 0 {
        tracing::info!("{in_file} dead letter(s) in {}", dead_letter_path.display());
    }
    let seconds = started.elapsed().as_secs_f64();
    let records = total(&counters, |c| &c.records);
    let summary = json!({
        "peak_rss_mib": peak_rss_mib(),
        "records": records,
        "dead_letters": total(&counters, |c| &c.dead_letters),
        "late_records": total(&counters, |c| &c.late),
        "windows": total(&counters, |c| &c.windows),
        "alerts": total(&counters, |c| &c.alerts),
        "incidents": total(&counters, |c| &c.incidents),
        "replayed_alerts": total(&counters, |c| &c.replayed_alerts),
        "broker_errors": total(&counters, |c| &c.progress.broker_errors),
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "records_per_second": (records as f64 / seconds.max(1e-9)).round(),
        "history": history_report,
        "plugins": plugins,
        "tenants": tenant_report,
        "pipelines": reports,
    });
    eprintln!("{summary}");
    Ok(())
}

/// The process's peak resident memory (Linux), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some((kib / 1024.0 * 10.0).round() / 10.0)
}

/// Redraws one status line on stderr every half second until told to stop.
fn status_line(shared: Arc<Shared>) -> (Arc<std::sync::atomic::AtomicBool>, std::thread::JoinHandle<()>) {
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    let handle = std::thread::spawn(move || {
        let started = Instant::now();
        let mut last = (Instant::now(), 0u64);
        while !flag.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(500));
            let c = &shared.pipelines;
            let records = total(c, |c| &c.records);
            let rate = (records - last.1) as f64 / last.0.elapsed().as_secs_f64().max(1e-9);
            last = (Instant::now(), records);
            let (backlog, done) = (total(c, |c| &c.progress.total), total(c, |c| &c.progress.done));
            let percent = if backlog > 0 { format!("{:>5.1}%  ", (done as f64 * 100.0 / backlog as f64).min(100.0)) } else { String::new() };
            let errors = match total(c, |c| &c.progress.broker_errors) {
                0 => String::new(),
                n => format!("  {n} broker errors (reconnecting, see log)"),
            };
            eprint!(
                "\r\x1b[2K{percent}{:>7.1}s  {records} records  {:.0} rec/s  {} windows  {} alerts  {} dead letters{errors}",
                started.elapsed().as_secs_f64(),
                rate,
                total(c, |c| &c.windows),
                total(c, |c| &c.alerts),
                total(c, |c| &c.dead_letters),
            );
            let _ = std::io::stderr().flush();
        }
        eprint!("\r\x1b[2K");
    });
    (done, handle)
}

/// Median time to instantiate and configure `plugin`, over a few tries.
fn instantiate_time(runtime: &Arc<Runtime>, plugin: &Arc<Plugin>) -> Result<Duration> {
    let source = WasmDetector { runtime: runtime.clone(), plugin: plugin.clone() };
    let mut times = Vec::new();
    for _ in 0..11 {
        let started = Instant::now();
        source.instantiate("{}").map_err(|f| anyhow::anyhow!("plugin {}: {f}", plugin.name))?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// The running host's plugin counters, if one writes to this data dir now.
fn live_status(config: &ConfigFile) -> Vec<PluginStats> {
    let path = data_dir(config).join("plugins-status.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Vec::new();
    };
    let Ok(status) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Vec::new();
    };
    let alive = status["pid"].as_u64().is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
    let fresh = status["updated_ms"].as_i64().is_some_and(|t| pipeline::now_ms() - t < 5000);
    if !(alive && fresh) {
        return Vec::new();
    }
    serde_json::from_value(status["plugins"].clone()).unwrap_or_default()
}

fn list_plugins(cli: &Cli, config: &ConfigFile, as_json: bool) -> Result<()> {
    let mut broken = Vec::new();
    let (runtime, tenants) = load_tenants(cli, config, Some(&mut broken))?;
    let live = live_status(config);
    if !as_json {
        println!(
            "{:<10} {:<14} {:<8} {:<13} {:<12} {:>8} {:>6} {:>7} {:>8} {:>8}  DESCRIPTION",
            "TENANT", "NAME", "VERSION", "KIND", "STATUS", "CALLS", "ERRORS", "RELOADS", "P50_US", "P99_US"
        );
    }
    for t in &tenants {
        let plugins = t.plugins.iter().map(|p| (p, false)).chain(t.shadows.iter().map(|p| (p, true)));
        for (p, shadow) in plugins {
            let kind = if p.is_detector() { "detector" } else { "alert-handler" };
            let mine: Vec<&PluginStats> = live
                .iter()
                .filter(|s| s.tenant == t.name() && s.name == p.name && p.fingerprint.starts_with(&s.fingerprint) && (s.status == Status::Shadow) == shadow)
                .collect();
            let status = match mine.first() {
                Some(s) => serde_json::to_value(s.status)?.as_str().unwrap_or_default().to_string(),
                None if shadow => "shadow".into(),
                None => "active".into(),
            };
            let calls: u64 = mine.iter().map(|s| s.calls).sum();
            let errors: u64 = mine.iter().map(|s| s.errors).sum();
            let reloads: u64 = mine.iter().map(|s| s.reloads).sum();
            let p50 = mine.iter().map(|s| s.call_p50_us).max().unwrap_or(0);
            let p99 = mine.iter().map(|s| s.call_p99_us).max().unwrap_or(0);
            let metrics: Vec<&str> = p.info.metrics.iter().map(|m| m.name.as_str()).collect();
            if as_json {
                let mut line = json!({
                    "tenant": t.name(), "name": p.name, "kind": kind, "version": p.info.version, "status": status,
                    "description": p.info.description, "metrics": metrics, "path": p.path, "sha256": p.hash,
                    "memory_mib": p.limits.memory_mib, "timeout_ms": p.limits.timeout_ms,
                    "bytes": std::fs::metadata(&p.path).map(|m| m.len()).unwrap_or(0),
                    "load_ms": p.load_time.as_secs_f64() * 1000.0,
                    "running": !mine.is_empty(), "calls": calls, "errors": errors, "reloads": reloads,
                    "call_p50_us": p50, "call_p99_us": p99,
                });
                if p.is_detector() {
                    line["instantiate_us"] = json!(instantiate_time(&runtime, p)?.as_micros() as u64);
                }
                println!("{line}");
            } else {
                println!(
                    "{:<10} {:<14} {:<8} {:<13} {:<12} {calls:>8} {errors:>6} {reloads:>7} {p50:>8} {p99:>8}  {} [{}]",
                    t.name(),
                    p.name,
                    p.info.version,
                    kind,
                    status,
                    p.info.description,
                    metrics.join(", ")
                );
            }
        }
    }
    // Files that do not load: listed with why, so a broken deploy is visible.
    for (tenant, error) in &broken {
        if as_json {
            println!("{}", json!({ "tenant": tenant, "status": "rejected", "error": error.to_string() }));
        } else {
            println!("{tenant:<10} {:<14} {:<8} {:<13} {:<12}  {error}", "-", "-", "-", "rejected");
        }
    }
    Ok(())
}

/// Make a tenant's shadow version of `name` the active one: move
/// `shadow/NAME.wasm` (and its manifest) over `NAME.wasm`. A running host
/// sees the change and hands the shadow's instances over at the next window.
fn promote(cli: &Cli, name: &str, tenant: &str) -> Result<()> {
    let dir = tenant::folder(&cli.plugins, tenant);
    let shadow = dir.join("shadow").join(format!("{name}.wasm"));
    if !shadow.is_file() {
        bail!("no shadow version {} to promote", shadow.display());
    }
    let manifest = shadow.with_extension("toml");
    if manifest.is_file() {
        std::fs::rename(&manifest, dir.join(format!("{name}.toml"))).with_context(|| format!("moving {}", manifest.display()))?;
    }
    std::fs::rename(&shadow, dir.join(format!("{name}.wasm"))).with_context(|| format!("moving {}", shadow.display()))?;
    println!("promoted {} to {}", shadow.display(), dir.join(format!("{name}.wasm")).display());
    Ok(())
}

/// Generated records to stdout, or produced to `sink` (one message per record).
fn generate(config: &ConfigFile, sink: Option<&str>, partitions: i32) -> Result<()> {
    let [p] = config.pipelines.as_slice() else { bail!("generate uses one pipeline's generator settings") };
    if p.generator.records.is_none() {
        bail!("generate needs --records N");
    }
    let source = source::open("generator", &p.generator, &p.broker)?;
    let mut sink = match sink {
        Some(url) => Some(source::open_sink(url, &p.broker, partitions).with_context(|| format!("sink {url}"))?),
        None => None,
    };
    let (tx, rx) = crossbeam_channel::bounded(16);
    let writer = std::thread::spawn(move || -> Result<u64> {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let mut produced = 0u64;
        for event in rx {
            let source::SourceEvent::Lines { data, .. } = event else {
                continue;
            };
            match &mut sink {
                Some(sink) => {
                    for line in data.strip_suffix(b"\n").unwrap_or(&data).split(|&b| b == b'\n') {
                        sink.send("", line)?;
                        produced += 1;
                    }
                }
                None => out.write_all(&data)?,
            }
        }
        if let Some(sink) = &mut sink {
            sink.flush()?;
            eprintln!("produced {produced} records to {}", sink.name());
        }
        out.flush()?;
        Ok(produced)
    });
    source.run(SourceContext::detached(tx))?;
    writer.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    Ok(())
}
