//! The built-in alert outputs.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use super::Alert;
use crate::config::OutputFormat;

/// Where alerts are written: stdout in one format, optionally a JSON-lines file.
pub struct Outputs {
    format: OutputFormat,
    stdout: BufWriter<io::Stdout>,
    file: Option<BufWriter<File>>,
}

impl Outputs {
    pub fn new(format: OutputFormat, file: Option<&Path>) -> io::Result<Self> {
        let file = match file {
            Some(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                let f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot open alert file {}: {e}", path.display()))
                })?;
                Some(BufWriter::new(f))
            }
            None => None,
        };
        Ok(Outputs { format, stdout: BufWriter::new(io::stdout()), file })
    }

    pub fn emit(&mut self, alert: &Alert) -> io::Result<()> {
        let json = serde_json::to_string(alert).map_err(io::Error::other)?;
        match self.format {
            OutputFormat::Json => writeln!(self.stdout, "{json}")?,
            OutputFormat::Human => writeln!(self.stdout, "{}", human(alert))?,
        }
        if let Some(f) = &mut self.file {
            writeln!(f, "{json}")?;
        }
        Ok(())
    }

    /// Push everything out: called after each window, so an alert is never
    /// held back while the next window is read.
    pub fn flush(&mut self) -> io::Result<()> {
        self.stdout.flush()?;
        if let Some(f) = &mut self.file {
            f.flush()?;
        }
        Ok(())
    }
}

fn human(a: &Alert) -> String {
    let column = a.column.as_deref().map(|c| format!(" [{c}]")).unwrap_or_default();
    format!(
        "{:<8} {} window {} (offsets {}..={}, {} records): {}/{}{} = {:.4} (threshold {:.4}) — {}",
        a.severity.as_str().to_uppercase(),
        a.pipeline,
        a.window.seq,
        a.window.first_offset,
        a.window.last_offset,
        a.window.records,
        a.detector,
        a.metric,
        column,
        a.value,
        a.threshold,
        a.message
    )
}
