//! The built-in alert outputs.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use clean_host_quality::alert::{Alert, WindowSummary};

/// Where alerts go besides the terminal.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputConfig {
    /// `human` (default) or `json` lines on stdout.
    pub format: Option<OutputFormat>,
    /// Also append every alert as a JSON line to this file.
    pub file: Option<PathBuf>,
    /// Append one JSON line per analysed window (offsets, records, score, findings) to this file.
    pub windows_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    Human,
    Json,
}

/// Where alerts are written: stdout in one format, optionally a JSON-lines
/// file; and the window log, one JSON line per analysed window.
pub struct Outputs {
    format: OutputFormat,
    stdout: BufWriter<io::Stdout>,
    file: Option<BufWriter<File>>,
    windows: Option<BufWriter<File>>,
}

fn append(path: Option<&Path>, what: &str) -> io::Result<Option<BufWriter<File>>> {
    let Some(path) = path else { return Ok(None) };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open {what} {}: {e}", path.display())))?;
    Ok(Some(BufWriter::new(f)))
}

impl Outputs {
    pub fn new(format: OutputFormat, file: Option<&Path>, windows: Option<&Path>) -> io::Result<Self> {
        Ok(Outputs { format, stdout: BufWriter::new(io::stdout()), file: append(file, "alert file")?, windows: append(windows, "window log")? })
    }

    /// Log an analysed window, if a window log is kept.
    pub fn window(&mut self, summary: &WindowSummary) -> io::Result<()> {
        if let Some(f) = &mut self.windows {
            serde_json::to_writer(&mut *f, summary).map_err(io::Error::other)?;
            f.write_all(b"\n")?;
        }
        Ok(())
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
        if let Some(f) = &mut self.windows {
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
