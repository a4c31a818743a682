//! `clean-host plugin list|promote|new|build`: what is in the plugin
//! folders (with a running host's live counters), making a shadow version
//! the active one, and writing new plugins.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use clean_host::checkpoint::{CheckpointStore, StoredCheckpoint, StreamKey};
use clean_host::config::PipelineConfig;
use clean_host::report::StatusFile;
use clean_host::tenant;
use clean_host_core::timestamp;
use clean_host_runtime::{DetectorSource, PluginStats, Status};
use clean_host_runtime::{Plugin, Runtime, WasmDetector};
use clean_host_stream::source;

use super::assembly::{data_dir, load_tenants, settings};
use crate::cli::{GlobalArgs, PluginCommand};

pub fn plugin(g: &GlobalArgs, command: &PluginCommand) -> Result<()> {
    match command {
        PluginCommand::List { json } => list(g, *json),
        PluginCommand::Promote { name, tenant } => promote(g, name, tenant),
        PluginCommand::New { name, lang, dir } => {
            let dir = dir.clone().unwrap_or_else(|| PathBuf::from(name));
            for file in clean_host::scaffold::new_project(name, *lang, &dir)? {
                println!("created {}", file.display());
            }
            println!("build it with: clean-host plugin build {} --plugins {}", dir.display(), g.plugins.display());
            Ok(())
        }
        PluginCommand::Build { path } => {
            let built = clean_host::scaffold::build(path, &g.plugins)?;
            println!("built {}", built.display());
            Ok(())
        }
    }
}

/// One plugin as `plugin list --json` prints it.
#[derive(Serialize)]
struct Listing<'a> {
    tenant: &'a str,
    name: &'a str,
    /// `detector` or `alert-handler`.
    kind: &'static str,
    version: &'a str,
    status: &'static str,
    description: &'a str,
    metrics: Vec<&'a str>,
    path: &'a std::path::Path,
    sha256: &'a str,
    memory_mib: u64,
    timeout_ms: u64,
    bytes: u64,
    load_ms: f64,
    /// Whether a running host reports counters for it now.
    running: bool,
    calls: u64,
    errors: u64,
    reloads: u64,
    call_p50_us: u32,
    call_p99_us: u32,
    /// Median time to instantiate and configure it (detectors).
    #[serde(skip_serializing_if = "Option::is_none")]
    instantiate_us: Option<u64>,
}

/// A checkpoint kept in the data dir or a broker, as `--json` lists it.
#[derive(Serialize)]
struct CheckpointListing<'a> {
    /// `checkpoint`.
    kind: &'static str,
    #[serde(flatten)]
    checkpoint: &'a StoredCheckpoint,
    age_s: f64,
    state_bytes: u64,
}

/// A file in a plugin folder that does not load, and why.
#[derive(Serialize)]
struct Rejected<'a> {
    tenant: &'a str,
    status: &'static str,
    error: String,
}

fn list(g: &GlobalArgs, as_json: bool) -> Result<()> {
    let config = settings(g, "generator", |_| Ok(()))?;
    let mut broken = Vec::new();
    let (runtime, tenants) = load_tenants(&g.plugins, &config, false, Some(&mut broken))?;
    let live = StatusFile::live(&data_dir(&config), timestamp::now_ms()).map(|s| s.plugins.into_owned()).unwrap_or_default();
    if !as_json {
        println!(
            "{:<10} {:<14} {:<8} {:<13} {:<12} {:>8} {:>6} {:>7} {:>8} {:>8}  DESCRIPTION",
            "TENANT", "NAME", "VERSION", "KIND", "STATUS", "CALLS", "ERRORS", "RELOADS", "P50_US", "P99_US"
        );
    }
    for t in &tenants {
        let plugins = t.plugins.iter().map(|p| (p, false)).chain(t.shadows.iter().map(|p| (p, true)));
        for (p, shadow) in plugins {
            let mine: Vec<&PluginStats> = live
                .iter()
                .filter(|s| s.tenant == t.name() && s.name == p.name && p.fingerprint.starts_with(&s.fingerprint) && (s.status == Status::Shadow) == shadow)
                .collect();
            let status = match mine.first() {
                Some(s) => s.status.as_str(),
                None if shadow => Status::Shadow.as_str(),
                None => Status::Active.as_str(),
            };
            let line = Listing {
                tenant: t.name(),
                name: &p.name,
                kind: if p.is_detector() { "detector" } else { "alert-handler" },
                version: &p.info.version,
                status,
                description: &p.info.description,
                metrics: p.info.metrics.iter().map(|m| m.name.as_str()).collect(),
                path: &p.path,
                sha256: &p.hash,
                memory_mib: p.limits.memory_mib,
                timeout_ms: p.limits.timeout_ms,
                bytes: std::fs::metadata(&p.path).map(|m| m.len()).unwrap_or(0),
                load_ms: p.load_time.as_secs_f64() * 1000.0,
                running: !mine.is_empty(),
                calls: mine.iter().map(|s| s.calls).sum(),
                errors: mine.iter().map(|s| s.errors).sum(),
                reloads: mine.iter().map(|s| s.reloads).sum(),
                call_p50_us: mine.iter().map(|s| s.call_p50_us).max().unwrap_or(0),
                call_p99_us: mine.iter().map(|s| s.call_p99_us).max().unwrap_or(0),
                instantiate_us: None,
            };
            if as_json {
                let instantiate_us = match p.is_detector() {
                    true => Some(instantiate_time(&runtime, p)?.as_micros() as u64),
                    false => None,
                };
                println!("{}", serde_json::to_string(&Listing { instantiate_us, ..line })?);
            } else {
                println!(
                    "{:<10} {:<14} {:<8} {:<13} {:<12} {:>8} {:>6} {:>7} {:>8} {:>8}  {} [{}]",
                    line.tenant,
                    line.name,
                    line.version,
                    line.kind,
                    line.status,
                    line.calls,
                    line.errors,
                    line.reloads,
                    line.call_p50_us,
                    line.call_p99_us,
                    line.description,
                    line.metrics.join(", ")
                );
            }
        }
    }
    // Files that do not load: listed with why, so a broken deploy is visible.
    for (tenant, error) in &broken {
        if as_json {
            println!("{}", serde_json::to_string(&Rejected { tenant, status: "rejected", error: error.to_string() })?);
        } else {
            println!("{tenant:<10} {:<14} {:<8} {:<13} {:<12}  {error}", "-", "-", "-", "rejected");
        }
    }
    let file = config.checkpoints.file(&data_dir(&config));
    let mut stored = match file.exists() {
        true => CheckpointStore::read_only(&file).and_then(|store| store.list()).unwrap_or_else(|e| {
            tracing::warn!("the checkpoints in {} are not listed: {e:#}", file.display());
            Vec::new()
        }),
        false => Vec::new(),
    };
    if config.checkpoints.enabled && config.checkpoints.in_broker {
        stored.extend(kept_in_brokers(&config.pipelines));
    }
    list_checkpoints(&stored, as_json)
}

/// How long `plugin list` waits for the brokers' checkpoints.
const BROKERS_ASKED_FOR: Duration = Duration::from_secs(15);

/// The checkpoints the brokers of `pipelines` keep for them, all asked at
/// once; those not read within [`BROKERS_ASKED_FOR`] are said, not listed.
fn kept_in_brokers(pipelines: &[PipelineConfig]) -> Vec<StoredCheckpoint> {
    let (tx, rx) = crossbeam_channel::unbounded();
    for (i, p) in pipelines.iter().enumerate() {
        let (tx, p) = (tx.clone(), p.clone());
        // Not joined: a broker that hangs is left behind when the command ends.
        let _ = std::thread::Builder::new().name(format!("list-{}", p.name)).spawn(move || _ = tx.send((i, kept_in_broker(&p))));
    }
    drop(tx);
    let deadline = Instant::now() + BROKERS_ASKED_FOR;
    let mut answered = vec![false; pipelines.len()];
    let mut stored = Vec::new();
    while let Ok((i, found)) = rx.recv_deadline(deadline) {
        answered[i] = true;
        stored.extend(found);
    }
    for (p, _) in pipelines.iter().zip(answered).filter(|(_, answered)| !answered) {
        tracing::warn!(
            "pipeline {} of tenant {}: its broker did not answer within {BROKERS_ASKED_FOR:?}; its checkpoints are not listed",
            p.name,
            p.tenant_name()
        );
    }
    stored
}

/// The checkpoint the broker of pipeline `p` keeps for it, if any (one
/// that cannot be read is said, and not listed).
fn kept_in_broker(p: &PipelineConfig) -> Option<StoredCheckpoint> {
    let found = source::checkpoint_home(&p.source, &p.broker).map_err(anyhow::Error::from).and_then(|home| {
        let Some(home) = home else { return Ok(None) };
        let stream = StreamKey { tenant: p.tenant_name().to_string(), pipeline: p.name.clone(), source: home.id };
        StoredCheckpoint::in_broker(home.table, &stream)
    });
    found.unwrap_or_else(|e| {
        tracing::warn!("pipeline {} of tenant {}: the checkpoints in its broker are not listed: {e:#}", p.name, p.tenant_name());
        None
    })
}

/// The checkpoints a restart would resume from: whose, where, how old and
/// how much state each detector keeps in them.
fn list_checkpoints(stored: &[StoredCheckpoint], as_json: bool) -> Result<()> {
    if !as_json && !stored.is_empty() {
        println!("\n{:<10} {:<14} {:>8} {:>12}  SOURCE AT POSITIONS [STATE PER DETECTOR]", "TENANT", "CHECKPOINT OF", "AGE_S", "STATE_BYTES");
    }
    let now = timestamp::now_ms();
    for c in stored {
        let age_s = (now - c.taken_at_ms) as f64 / 1000.0;
        let state_bytes = c.detectors.iter().map(|d| d.bytes).sum();
        if as_json {
            println!("{}", serde_json::to_string(&CheckpointListing { kind: "checkpoint", checkpoint: c, age_s, state_bytes })?);
            continue;
        }
        let positions: Vec<String> = c
            .positions
            .iter()
            .map(|(p, at)| match &at.after_id {
                Some(id) => format!("{p}:after {id}"),
                None => format!("{p}:{}", at.next_offset),
            })
            .collect();
        let detectors: Vec<String> = c.detectors.iter().map(|d| format!("{} {} B", d.name, d.bytes)).collect();
        println!("{:<10} {:<14} {age_s:>8.1} {state_bytes:>12}  {} at {} [{}]", c.tenant, c.pipeline, c.source, positions.join(" "), detectors.join(", "));
    }
    Ok(())
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

/// Make a tenant's shadow version of `name` the active one: move
/// `shadow/NAME.wasm` (and its manifest) over `NAME.wasm`. A running host
/// sees the change and hands the shadow's instances over at the next window.
fn promote(g: &GlobalArgs, name: &str, tenant: &str) -> Result<()> {
    let dir = tenant::folder(&g.plugins, tenant);
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
