//! `clean-host generate`: the generator's records as JSON lines on stdout
//! (a fixture for `--source`), or produced to a broker topic or stream.

use std::io::Write;

use anyhow::{bail, Context, Result};

use clean_host_stream::source::{self, lines, SourceContext, SourceEvent};

use super::assembly::settings;
use crate::cli::{GeneratorArgs, GlobalArgs};

/// Generated records to stdout, or produced to `sink` (one message per record).
pub fn generate(g: &GlobalArgs, generator: &GeneratorArgs, sink: Option<&str>, partitions: i32) -> Result<()> {
    let config = settings(g, "generator", |config| {
        config.pipelines.iter_mut().for_each(|p| generator.apply(p));
        Ok(())
    })?;
    let [p] = config.pipelines.as_slice() else { bail!("generate uses one pipeline's generator settings") };
    if p.generator.records.is_none() {
        bail!("generate needs --records N");
    }
    let source = source::open("generator", &p.generator, &p.broker)?;
    let mut sink = match sink {
        Some(url) => Some(source::open_sink(url, &p.broker, partitions).with_context(|| format!("sink {}", source::config::masked(url)))?),
        None => None,
    };
    let (tx, rx) = crossbeam_channel::bounded(16);
    let writer = std::thread::spawn(move || -> Result<u64> {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let mut produced = 0u64;
        for event in rx {
            let SourceEvent::Lines { data, .. } = event else {
                continue;
            };
            match &mut sink {
                Some(sink) => {
                    for line in lines(&data) {
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
