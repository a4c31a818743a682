//! Each detector of a plugins folder alone, as wasm, on one thread: the time
//! of its `analyze` calls over the windows of a JSON-lines file, without the
//! rest of a pipeline sharing the cores (the host's own call times include
//! waiting for one). `detector-bench FILE PLUGINS [WINDOWS] [ROWS] [PASSES]`
//! prints one JSON line per detector: p50, p99 and mean µs per call, the
//! medians over the passes (3 unless given), each a fresh instance over every
//! window.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clean_host_core::bindings::{Batch, WindowKind};
use clean_host_runtime::{load_dir, Analyzer, Limits, Runtime, TenantBudget, Window};
use clean_host_stream::decode::JsonDecoder;
use clean_host_stream::window::{Bounds, RecordMeta, WindowBuffer};

/// The file's first `windows` windows of `rows` records, as the host builds them.
fn windows(file: &Path, windows: usize, rows: usize) -> Result<Vec<Batch>> {
    let text = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let mut decoder = JsonDecoder::default();
    let mut window = WindowBuffer::default();
    let mut batches = Vec::new();
    for (offset, line) in text.split(|&b| b == b'\n').enumerate().filter(|(_, l)| !l.is_empty()) {
        let record = decoder.decode(line).with_context(|| format!("line {}", offset + 1))?;
        let meta = RecordMeta { offset: offset as u64, hash: xxhash_rust::xxh3::xxh3_64(line), event_time: None, read_at_ms: 0 };
        window.push(record, &meta);
        if window.rows() == rows {
            let bounds = Bounds { seq: batches.len() as u64, kind: WindowKind::Count, time: None, event_time: false };
            batches.push(std::mem::take(&mut window).into_batch(&decoder.fields, "bench", "file", 0, bounds, 0));
            if batches.len() == windows {
                break;
            }
        }
    }
    if batches.is_empty() {
        bail!("{} holds fewer than {rows} records", file.display());
    }
    Ok(batches)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, file, plugins, rest @ ..] = args.as_slice() else {
        bail!("usage: detector-bench FILE PLUGINS [WINDOWS] [ROWS] [PASSES]");
    };
    let count = |i: usize, default: usize| rest.get(i).map_or(Ok(default), |n| n.parse::<usize>().context("a count"));
    let batches = windows(Path::new(file), count(0, 300)?, count(1, 1000)?)?;
    let passes = count(2, 3)?.max(1);
    let runtime = Arc::new(Runtime::new(None, None).map_err(|e| anyhow::anyhow!("{e:#}"))?);
    let budget = Arc::new(TenantBudget::new("bench", 4096, 64));
    for plugin in load_dir(&runtime, Path::new(plugins), Limits::default(), &budget, None)?.into_iter().filter(|p| p.is_detector()) {
        let (mut p50s, mut p99s, mut means) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..passes {
            let mut instance = runtime.instantiate(&plugin, "{}").map_err(|e| anyhow::anyhow!("{}: {e}", plugin.name))?;
            let mut calls: Vec<f64> = Vec::with_capacity(batches.len());
            for batch in &batches {
                // A window of its own each call: what the host works out of a
                // window for its detectors is made within the call that asks first.
                let window = Window::new(batch.clone());
                let started = Instant::now();
                black_box(instance.analyze(&window).map_err(|e| anyhow::anyhow!("{}: {e}", plugin.name))?);
                calls.push(started.elapsed().as_secs_f64() * 1e6);
            }
            means.push(calls.iter().sum::<f64>() / calls.len() as f64);
            calls.sort_by(f64::total_cmp);
            p50s.push(calls[calls.len() / 2]);
            p99s.push(calls[(calls.len() * 99 / 100).min(calls.len() - 1)]);
        }
        let line = serde_json::json!({
            "detector": plugin.name,
            "windows": batches.len(),
            "p50_us": median(p50s).round(),
            "p99_us": median(p99s).round(),
            "mean_us": median(means).round(),
        });
        println!("{line}");
    }
    Ok(())
}
