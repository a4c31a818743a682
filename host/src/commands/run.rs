//! The run (no command): every pipeline on its own thread, plugin folders
//! followed, the status file and the live status refreshed each second, an
//! optional HTTP server and terminal status line, and at the end the drain
//! and the summary.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossbeam_channel::{RecvTimeoutError, Sender};

use clean_host::checkpoint::{CheckpointStore, Checkpoints};
use clean_host::config::ConfigFile;
use clean_host::dispatch::handlers::Handlers;
use clean_host::dispatch::OutputFormat;
use clean_host::dispatch::{AlertLedger, Outputs};
use clean_host::history::{History, HistoryError, HistoryReader, HistoryWriter};
use clean_host::http::{self, ApiState, LiveStatus};
use clean_host::logging::PluginEventSink;
use clean_host::pipeline::{self, total, Pipeline, PipelineCounters, PipelineReport, Shared};
use clean_host::reload::Watcher;
use clean_host::report::{HistoryReport, RunSummary, StatusFile};
use clean_host::tenant::{Tenant, TenantStatus};
use clean_host_core::timestamp;
use clean_host_quality::analysis::Detectors;
use clean_host_runtime::write_atomically;
use clean_host_runtime::PluginStats;
use clean_host_stream::dead_letter::DeadLetters;

use super::assembly::{build_pipelines, config_name, data_dir, load_tenants, max_failures, settings, HANDLER_GRACE};
use crate::cli::{GlobalArgs, RunArgs};

/// The history file being opened beside the plugins' loading. A start
/// that fails before using it (a broken plugin) has still opened (or made)
/// the file; it waits for the opening and closes it again, so no thread is
/// left writing the file as the process exits.
struct HistoryOpening(Option<std::thread::JoinHandle<Result<(History, HistoryWriter), HistoryError>>>);

impl Drop for HistoryOpening {
    fn drop(&mut self) {
        if let Some(Ok(Ok((_history, writer)))) = self.0.take().map(|opening| opening.join()) {
            writer.finish();
        }
    }
}

/// How often the plugin folders are checked for changes.
const RELOAD_POLL: Duration = Duration::from_millis(250);
/// How often the running host rewrites its status file.
const STATUS_EVERY: Duration = Duration::from_secs(1);

pub fn run(g: &GlobalArgs, args: &RunArgs, events: &PluginEventSink) -> Result<()> {
    let config = settings(g, args.default_source(), |config| args.apply(config, &config_name(g)))?;
    let started = Instant::now();
    // A new history file takes several syncs to make: done while the plugins load.
    let mut history_opening = HistoryOpening(config.history.enabled.then(|| {
        let path = config.history.path.clone().unwrap_or_else(|| data_dir(&config).join("history.db"));
        let history_config = config.history.clone();
        std::thread::spawn(move || History::start(&path, &history_config))
    }));
    let (runtime, tenants) = load_tenants(&g.plugins, &config, args.native, None)?;
    let mut handlers = BTreeMap::new();
    for t in &tenants {
        if let Some(h) = t.start_handlers(&runtime, max_failures(&config))? {
            handlers.insert(t.name().to_string(), h);
        }
    }
    let mut pipelines = build_pipelines(&config, &tenants, &handlers)?;
    let detectors: Vec<Arc<Detectors>> = pipelines.iter().map(|p| p.detectors.clone()).collect();
    let counters: Vec<Arc<PipelineCounters>> = pipelines.iter().map(|p| p.counters.clone()).collect();
    let history = match history_opening.0.take() {
        Some(opening) => {
            let (history, writer) = opening.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
            events.connect(history.clone());
            warm_control_rules(&mut pipelines, &history.path)?;
            Some((history, writer))
        }
        None => None,
    };
    let live = Arc::new(RwLock::new(LiveStatus::default()));
    // Set on Ctrl-C or SIGTERM: the pipelines stop reading, and /readyz says so.
    let stop = Arc::new(AtomicBool::new(false));
    let listen = args.listen.clone().or_else(|| config.http.listen.clone());
    let server = match &listen {
        Some(addr) => Some(start_http(&config, addr, counters.clone(), live.clone(), history.as_ref().map(|(h, _)| h), stop.clone())?),
        None => None,
    };
    let watcher = (!args.native).then(|| Watcher::start(runtime.clone(), tenants.iter().map(Tenant::folder_state).collect(), RELOAD_POLL));
    let format = config.output.format.unwrap_or(OutputFormat::Human);
    let dead_letter_path = args.dead_letters.clone().unwrap_or_else(|| data_dir(&config).join("dead-letters.jsonl"));
    let checkpoints = match config.checkpoints.enabled {
        true => Some(Checkpoints {
            file: CheckpointStore::open(&config.checkpoints.file(&data_dir(&config)))?,
            in_broker: config.checkpoints.in_broker,
            interval: config.checkpoints.interval(),
        }),
        false => None,
    };
    let ledger = AlertLedger::open(&data_dir(&config).join("alerts-sent"))?;
    let shared = Arc::new(Shared {
        outputs: Mutex::new(Outputs::new(format, config.output.file.as_deref(), config.output.windows_file.as_deref())?),
        dead_letters: Mutex::new(DeadLetters::new(&dead_letter_path)),
        pipelines: counters.clone(),
        stop,
        ledger: Mutex::new(ledger),
        history: history.as_ref().map(|(h, _)| h.clone()),
        checkpoints,
    });
    {
        let shared = shared.clone();
        ctrlc::set_handler(move || shared.stop.store(true, Ordering::Relaxed)).context("installing the Ctrl-C handler")?;
    }
    let status = (!args.quiet && std::io::stderr().is_terminal()).then(|| status_line(shared.clone()));
    let status_path = StatusFile::path(&data_dir(&config));
    // Dropped when the pipelines are done: the status writer stops at once.
    let (stop_status, status_stopped) = crossbeam_channel::bounded::<()>(0);
    let reports: Vec<Result<PipelineReport>> = std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut meter = RateMeter { last: Instant::now(), records: BTreeMap::new() };
            loop {
                let (plugins, tenants) = plugin_report(&detectors, &handlers, &tenants, &counters);
                write_status(&status_path, &plugins, &tenants);
                let rates = meter.sample(&counters);
                *live.write().unwrap_or_else(|p| p.into_inner()) = LiveStatus { plugins, tenants, rates };
                if status_stopped.recv_timeout(STATUS_EVERY) != Err(RecvTimeoutError::Timeout) {
                    break;
                }
            }
        });
        // Named for what it does, decoding most of all (in `top -H`, perf, /proc).
        let spawn = |p: pipeline::Pipeline| std::thread::Builder::new().name(format!("{}-pipeline", p.name)).spawn_scoped(scope, || pipeline::run(p, &shared));
        let handles: Vec<_> = pipelines.into_iter().map(spawn).collect();
        let reports = handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a pipeline thread panicked"))),
                Err(e) => Err(anyhow::anyhow!("starting a pipeline thread: {e}")),
            })
            .collect();
        drop(stop_status);
        reports
    });
    drop(watcher);
    for h in handlers.values() {
        h.finish(HANDLER_GRACE);
    }
    drop(server);
    if let Some((stop, handle)) = status {
        drop(stop);
        let _ = handle.join();
    }
    let history = history.map(|(history, writer)| {
        writer.finish();
        let s = &history.stats;
        HistoryReport {
            path: history.path.clone(),
            windows: s.windows.load(Ordering::Relaxed),
            replayed_windows: s.duplicate_windows.load(Ordering::Relaxed),
            dropped: total(&counters, |c| &c.history_dropped),
            write_errors: s.write_errors.load(Ordering::Relaxed),
        }
    });
    let mut pipelines = reports.into_iter().collect::<Result<Vec<_>>>()?;
    // Checkpoints are stored by the history's writer, done only now.
    for (report, c) in pipelines.iter_mut().zip(&counters) {
        report.checkpoints = c.checkpoints.load(Ordering::Relaxed);
        report.checkpoint_bytes = c.checkpoint_bytes.load(Ordering::Relaxed);
    }
    let (plugins, tenants) = plugin_report(&detectors, &handlers, &tenants, &counters);
    write_status(&status_path, &plugins, &tenants);
    let in_file = shared.dead_letters.lock().unwrap_or_else(|p| p.into_inner()).count;
    if in_file > 0 {
        tracing::info!("{in_file} dead letter(s) in {}", dead_letter_path.display());
    }
    let seconds = started.elapsed().as_secs_f64();
    let records = total(&counters, |c| &c.records);
    let summary = RunSummary {
        peak_rss_mib: peak_rss_mib(),
        records,
        dead_letters: total(&counters, |c| &c.dead_letters),
        late_records: total(&counters, |c| &c.late),
        windows: total(&counters, |c| &c.windows),
        alerts: total(&counters, |c| &c.alerts),
        incidents: total(&counters, |c| &c.incidents),
        replayed_alerts: total(&counters, |c| &c.replayed_alerts),
        broker_errors: total(&counters, |c| &c.progress.broker_errors),
        seconds: (seconds * 1000.0).round() / 1000.0,
        cpu_seconds: cpu_seconds(),
        records_per_second: (records as f64 / seconds.max(1e-9)).round(),
        history,
        plugins,
        tenants,
        pipelines,
    };
    eprintln!("{}", serde_json::to_string(&summary)?);
    Ok(())
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

/// Rewrite the status file `clean-host plugin list` reads while the host runs.
fn write_status(path: &Path, plugins: &[PluginStats], tenants: &[TenantStatus]) {
    let status = StatusFile { pid: std::process::id(), updated_ms: timestamp::now_ms(), plugins: plugins.into(), tenants: tenants.into() };
    let written = serde_json::to_vec(&status).map_err(std::io::Error::other).and_then(|bytes| write_atomically(path, &bytes, 0o666));
    if let Err(e) = written {
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
/// earlier runs of the same stream (tenant, pipeline and source), so a
/// restart does not start their baselines over and another stream does not
/// inherit them.
fn warm_control_rules(pipelines: &mut [Pipeline], history: &Path) -> Result<()> {
    let reader = HistoryReader::open(history)?;
    for p in pipelines {
        let source = p.source.name();
        let past = reader.past_windows(&p.tenant, &p.name, &source, p.router.warm_windows()).with_context(|| format!("reading {}", history.display()))?;
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
    draining: Arc<AtomicBool>,
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
    let server = http::serve(addr, ApiState::new(tokens, pipelines, live, reader, draining)?)?;
    tracing::info!(
        "dashboard, API and /metrics on http://{}/ (bearer token per tenant; those not set in the config are in {})",
        server.addr,
        token_dir.display()
    );
    Ok(server)
}

/// The process's peak resident memory (Linux), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some((kib / 1024.0 * 10.0).round() / 10.0)
}

/// The process's CPU time so far, user and system (Linux), in seconds.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |field: usize| fields.get(field - 3)?.parse::<u64>().ok();
    // /proc counts in USER_HZ, 100 a second on Linux whatever the kernel's own tick.
    Some((ticks(14)? + ticks(15)?) as f64 / 100.0)
}

/// Redraws one status line on stderr every half second until told to stop.
/// Dropping the sender it returns stops it at once.
fn status_line(shared: Arc<Shared>) -> (Sender<()>, std::thread::JoinHandle<()>) {
    let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    let handle = std::thread::spawn(move || {
        let started = Instant::now();
        let mut last = (Instant::now(), 0u64);
        while stopped.recv_timeout(Duration::from_millis(500)) == Err(RecvTimeoutError::Timeout) {
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
    (stop, handle)
}
