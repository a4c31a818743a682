//! The `clean-host` command: settings from flags and config, then the
//! pipelines, the status line and the summary.

mod cli;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::json;

use clean_host::alert::{AlertLedger, Outputs, Router};
use clean_host::analysis::{DetectorSource, Detectors};
use clean_host::config::{self, ConfigFile, OutputFormat, PipelineConfig};
use clean_host::dead_letter::DeadLetters;
use clean_host::decode::message::MessageDecoder;
use clean_host::pipeline::{self, Counters, Pipeline, PipelineReport, Shared};
use clean_host::runtime::{load_dir, Plugin, Runtime, WasmDetector};
use clean_host::source::{self, config::BrokerUrl, SourceContext};
use cli::{Cli, Command, RunArgs};

/// Consecutive failed calls before a plugin is quarantined, unless configured.
const DEFAULT_MAX_FAILURES: u32 = 3;

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let config = settings(&cli)?;
    match cli.command {
        Some(Command::Generate { ref sink, partitions }) => generate(&config, sink.as_deref(), partitions),
        Some(Command::Plugins { json }) => list_plugins(&cli, &config, json),
        Some(Command::Check) => {
            let (runtime, plugins) = load_plugins(&cli, &config)?;
            let pipelines = build_pipelines(&cli, &config, &runtime, &plugins)?;
            println!("config ok: {} pipeline(s), {} plugin(s)", pipelines.len(), plugins.len());
            for p in &pipelines {
                println!("  {} <- {}: {} detector(s)", p.name, p.source.name(), p.detectors.stats().len());
            }
            Ok(())
        }
        None => monitor(&cli, &config),
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

fn load_plugins(cli: &Cli, config: &ConfigFile) -> Result<(Arc<Runtime>, Vec<Arc<Plugin>>)> {
    let runtime = Runtime::new(Some(data_dir(config).join("cache")))
        .map_err(|e| anyhow::anyhow!("starting the wasm runtime: {e:#}"))?;
    let plugins = load_dir(&runtime, &cli.plugins, config.limits)?;
    if plugins.is_empty() {
        bail!("no plugins (*.wasm) in {}; build the bundled ones with scripts/build", cli.plugins.display());
    }
    Ok((Arc::new(runtime), plugins))
}

/// A detector pipelines can choose, with the default config of its manifest.
type Candidate = (Arc<dyn DetectorSource>, Option<toml::Table>);

/// The detectors pipelines choose from: the loaded plugins (or, in a
/// benchmark build with `--native`, the same detectors as native code).
fn detector_sources(cli: &Cli, runtime: &Arc<Runtime>, plugins: &[Arc<Plugin>]) -> Result<Vec<Candidate>> {
    if cli.run.native {
        #[cfg(feature = "native-detectors")]
        return Ok(clean_host::native::detectors().into_iter().map(|d| (d, None)).collect());
        #[cfg(not(feature = "native-detectors"))]
        bail!("--native needs a build with --features native-detectors");
    }
    Ok(plugins
        .iter()
        .map(|pl| {
            let source: Arc<dyn DetectorSource> = Arc::new(WasmDetector { runtime: runtime.clone(), plugin: pl.clone() });
            (source, pl.manifest.config.clone())
        })
        .collect())
}

fn build_pipelines(cli: &Cli, config: &ConfigFile, runtime: &Arc<Runtime>, plugins: &[Arc<Plugin>]) -> Result<Vec<Pipeline>> {
    let max_failures = config.max_consecutive_failures.unwrap_or(DEFAULT_MAX_FAILURES);
    let sources = detector_sources(cli, runtime, plugins)?;
    let mut pipelines = Vec::new();
    for p in &config.pipelines {
        let chosen: Vec<&Candidate> = match &p.detectors {
            None => sources.iter().collect(),
            Some(names) => names
                .iter()
                .map(|n| {
                    sources.iter().find(|(s, _)| s.name() == n).with_context(|| {
                        let known: Vec<&str> = sources.iter().map(|(s, _)| s.name()).collect();
                        format!("pipeline '{}': no plugin named '{n}' (have: {})", p.name, known.join(", "))
                    })
                })
                .collect::<Result<_>>()?,
        };
        for name in p.detector_config.keys() {
            if !chosen.iter().any(|(s, _)| s.name() == name) {
                bail!("pipeline '{}': detector_config.{name} names no detector of the pipeline", p.name);
            }
        }
        let with_config =
            chosen.into_iter().map(|(s, default)| (s.clone(), p.detector_json(s.name(), default.as_ref()))).collect();
        let detectors = Detectors::new(with_config, max_failures)
            .map_err(|e| anyhow::anyhow!("pipeline '{}': {e}", p.name))?;
        let context = || format!("pipeline '{}'", p.name);
        let source = source::open(&p.source, &p.generator, &p.broker).with_context(context)?;
        let schema = match &p.broker.avro_schema {
            Some(path) => Some(std::fs::read_to_string(path).with_context(|| format!("reading Avro schema {}", path.display()))?),
            None => None,
        };
        let decoder = MessageDecoder::new(p.broker.format, p.broker.metadata.clone(), schema.as_deref())
            .map_err(anyhow::Error::msg)
            .with_context(context)?;
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
        pipelines.push(Pipeline {
            name: p.name.clone(),
            source,
            window: p.window_spec().map_err(anyhow::Error::msg)?,
            event_time_field: p.event_time_field.clone(),
            detectors,
            router: Router::new(&p.name, config.alerts.clone()),
            decoder,
            dead_letter_topic,
            findings_topic,
        });
    }
    Ok(pipelines)
}

fn monitor(cli: &Cli, config: &ConfigFile) -> Result<()> {
    let started = Instant::now();
    let (runtime, plugins) = load_plugins(cli, config)?;
    let pipelines = build_pipelines(cli, config, &runtime, &plugins)?;
    let format = config.output.format.unwrap_or(OutputFormat::Human);
    let dead_letter_path = cli.run.dead_letters.clone().unwrap_or_else(|| data_dir(config).join("dead-letters.jsonl"));
    let shared = Arc::new(Shared {
        outputs: Mutex::new(Outputs::new(format, config.output.file.as_deref(), config.output.windows_file.as_deref())?),
        dead_letters: Mutex::new(DeadLetters::new(&dead_letter_path)),
        counters: Counters::default(),
        stop: Default::default(),
        ledger: Mutex::new(AlertLedger::open(&data_dir(config).join("alerts-sent"))?),
        progress: Default::default(),
    });
    {
        let shared = shared.clone();
        ctrlc::set_handler(move || shared.stop.store(true, Ordering::Relaxed)).context("installing the Ctrl-C handler")?;
    }
    let status = (!cli.run.quiet && std::io::stderr().is_terminal()).then(|| status_line(shared.clone()));
    let reports: Vec<Result<PipelineReport>> = std::thread::scope(|scope| {
        let handles: Vec<_> = pipelines.into_iter().map(|p| scope.spawn(|| pipeline::run(p, &shared))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a pipeline thread panicked")))).collect()
    });
    if let Some((done, handle)) = status {
        done.store(true, Ordering::Relaxed);
        let _ = handle.join();
    }
    let reports = reports.into_iter().collect::<Result<Vec<_>>>()?;
    let c = &shared.counters;
    let dead = c.dead_letters.load(Ordering::Relaxed);
    let in_file = shared.dead_letters.lock().unwrap_or_else(|p| p.into_inner()).count;
    if in_file > 0 {
        eprintln!("{in_file} dead letter(s) in {}", dead_letter_path.display());
    }
    let seconds = started.elapsed().as_secs_f64();
    let records = c.records.load(Ordering::Relaxed);
    let plugins: Vec<serde_json::Value> = reports
        .iter()
        .flat_map(|r| {
            r.plugins.iter().map(move |p| {
                let mut v = serde_json::to_value(p).unwrap_or_default();
                v["pipeline"] = json!(r.name);
                v
            })
        })
        .collect();
    let summary = json!({
        "peak_rss_mib": peak_rss_mib(),
        "records": records,
        "dead_letters": dead,
        "late_records": c.late.load(Ordering::Relaxed),
        "windows": c.windows.load(Ordering::Relaxed),
        "alerts": c.alerts.load(Ordering::Relaxed),
        "replayed_alerts": c.replayed_alerts.load(Ordering::Relaxed),
        "broker_errors": shared.progress.broker_errors.load(Ordering::Relaxed),
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "records_per_second": (records as f64 / seconds.max(1e-9)).round(),
        "plugins": plugins,
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
            let c = &shared.counters;
            let records = c.records.load(Ordering::Relaxed);
            let rate = (records - last.1) as f64 / last.0.elapsed().as_secs_f64().max(1e-9);
            last = (Instant::now(), records);
            let (total, done) = (shared.progress.total.load(Ordering::Relaxed), shared.progress.done.load(Ordering::Relaxed));
            let percent = if total > 0 { format!("{:>5.1}%  ", (done as f64 * 100.0 / total as f64).min(100.0)) } else { String::new() };
            let errors = match shared.progress.broker_errors.load(Ordering::Relaxed) {
                0 => String::new(),
                n => format!("  {n} broker errors (reconnecting, see log)"),
            };
            eprint!(
                "\r\x1b[2K{percent}{:>7.1}s  {records} records  {:.0} rec/s  {} windows  {} alerts  {} dead letters{errors}",
                started.elapsed().as_secs_f64(),
                rate,
                c.windows.load(Ordering::Relaxed),
                c.alerts.load(Ordering::Relaxed),
                c.dead_letters.load(Ordering::Relaxed),
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

fn list_plugins(cli: &Cli, config: &ConfigFile, as_json: bool) -> Result<()> {
    let (runtime, plugins) = load_plugins(cli, config)?;
    for p in &plugins {
        let metrics: Vec<&str> = p.info.metrics.iter().map(|m| m.name.as_str()).collect();
        if as_json {
            let line = json!({
                "name": p.name, "version": p.info.version, "description": p.info.description,
                "metrics": metrics, "path": p.path, "sha256": p.hash,
                "memory_mib": p.limits.memory_mib, "timeout_ms": p.limits.timeout_ms,
                "bytes": std::fs::metadata(&p.path).map(|m| m.len()).unwrap_or(0),
                "load_ms": p.load_time.as_secs_f64() * 1000.0,
                "instantiate_us": instantiate_time(&runtime, p)?.as_micros() as u64,
            });
            println!("{line}");
        } else {
            println!("{:<14} {:<8} {}  [{}]", p.name, p.info.version, p.info.description, metrics.join(", "));
        }
    }
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
            let source::SourceEvent::Lines { data, .. } = event else { continue };
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
