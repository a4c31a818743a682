//! The decode stage on generated order events: clean-host's parser alone and
//! with window columns built, next to the DOM parsers of sonic-rs and
//! serde_json (which only parse: they would still have to be walked into
//! columns). Prints a Markdown table of medians.
//!
//!     cargo run --release -p clean-host-bench --bin decode-bench

use std::hint::black_box;
use std::time::Instant;

use clean_host_stream::decode::JsonDecoder;
use clean_host_stream::source::generator::{Generator, GeneratorConfig};
use clean_host_stream::source::{Source, SourceContext, SourceEvent};
use clean_host_stream::window::{RecordMeta, WindowSpec, Windower};

const RECORDS: u64 = 200_000;
const RUNS: usize = 7;

fn lines() -> Vec<Vec<u8>> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let config = GeneratorConfig { records: Some(RECORDS), ..Default::default() };
    Box::new(Generator::new(config)).run(SourceContext::detached(tx)).expect("generate");
    rx.iter()
        .flat_map(|e| match e {
            SourceEvent::Lines { data, .. } => data.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect::<Vec<_>>(),
            _ => Vec::new(),
        })
        .collect()
}

/// Flatten a sonic-rs object into (field id, number, text length), as the
/// first version of the decoder did before the one-pass parser replaced it.
fn walk(v: &sonic_rs::Value, path: &mut String, names: &mut clean_host_stream::decode::FieldNames, out: &mut Vec<(u32, f64, usize)>) {
    use sonic_rs::{JsonContainerTrait, JsonValueTrait};
    let Some(object) = v.as_object() else { return };
    for (k, v) in object.iter() {
        let len = path.len();
        if len > 0 {
            path.push('.');
        }
        path.push_str(k);
        if v.is_object() {
            walk(v, path, names, out);
        } else {
            let number = v.as_f64().unwrap_or(0.0);
            if let Ok(id) = names.intern(path) {
                out.push((id, number, v.as_str().map_or(0, str::len)));
            }
        }
        path.truncate(len);
    }
}

/// Median records per second of `RUNS` passes of `f` over `lines`.
fn measure(lines: &[Vec<u8>], mut f: impl FnMut(&[Vec<u8>])) -> f64 {
    let mut rates: Vec<f64> = (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            f(lines);
            lines.len() as f64 / started.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[RUNS / 2]
}

fn main() {
    let lines = lines();
    let bytes: usize = lines.iter().map(Vec::len).sum();
    let mut results = Vec::new();

    results.push((
        "clean-host parser (fields of a record)",
        measure(&lines, |ls| {
            let mut d = JsonDecoder::default();
            for l in ls {
                black_box(d.decode(l).expect("valid").values.len());
            }
        }),
    ));
    results.push((
        "clean-host parser + window columns (the whole decode stage)",
        measure(&lines, |ls| {
            let mut d = JsonDecoder::default();
            let mut windower = Windower::new(WindowSpec::Count { size: 1000, slide: 1000 });
            let mut closed = Vec::new();
            for (i, l) in ls.iter().enumerate() {
                // As a pipeline does: each line straight into its window's columns.
                let window = windower.next_row().expect("a tumbling count window");
                d.decode_into(l, window).expect("valid");
                windower.finish_row(&RecordMeta { offset: i as u64, hash: 0, event_time: None, read_at_ms: 0 }, &mut closed);
                for w in closed.drain(..) {
                    black_box(w.buffer.into_batch(&d.fields, "p", "s", 0, w.bounds, 0));
                }
            }
        }),
    ));
    results.push((
        "sonic-rs DOM (sonic_rs::Value)",
        measure(&lines, |ls| {
            for l in ls {
                black_box(sonic_rs::from_slice::<sonic_rs::Value>(l).expect("valid"));
            }
        }),
    ));
    results.push((
        "sonic-rs DOM walked into fields (hashed name lookup)",
        measure(&lines, |ls| {
            let mut names = clean_host_stream::decode::FieldNames::default();
            let mut fields: Vec<(u32, f64, usize)> = Vec::new();
            let mut path = String::new();
            for l in ls {
                let dom: sonic_rs::Value = sonic_rs::from_slice(l).expect("valid");
                fields.clear();
                walk(&dom, &mut path, &mut names, &mut fields);
                black_box(fields.len());
            }
        }),
    ));
    results.push((
        "serde_json DOM (serde_json::Value)",
        measure(&lines, |ls| {
            for l in ls {
                black_box(serde_json::from_slice::<serde_json::Value>(l).expect("valid"));
            }
        }),
    ));

    println!("## Decoding (one core)\n");
    println!(
        "{} generated order events, {:.0} bytes each on average; median of {RUNS} passes. Command: `cargo run --release -p clean-host-bench --bin decode-bench`.\n",
        lines.len(),
        bytes as f64 / lines.len() as f64
    );
    println!("| decoder | records/s | MB/s | vs clean-host parser |");
    println!("|---|---:|---:|---:|");
    let ours = results[0].1;
    for (name, rate) in &results {
        let mb = rate * bytes as f64 / lines.len() as f64 / 1e6;
        println!("| {name} | {rate:.0} | {mb:.0} | {:.2}x |", rate / ours);
    }
}
