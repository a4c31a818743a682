//! Dead letters: every line that could not become a record, with where it
//! was and why, appended as JSON lines to a file. Nothing is dropped silently.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Raw bytes kept per dead letter.
const RAW_BYTES: usize = 4096;

#[derive(Serialize)]
struct Entry<'a> {
    pipeline: &'a str,
    source: &'a str,
    partition: u32,
    /// 0-based, like window offsets.
    offset: u64,
    /// 1-based line number, for people.
    line: u64,
    reason: &'a str,
    bytes: u64,
    raw: String,
    truncated: bool,
}

/// Where a bad line came from.
pub struct Origin<'a> {
    pub pipeline: &'a str,
    pub source: &'a str,
    pub partition: u32,
    pub offset: u64,
}

/// The dead-letter file, created on the first dead letter.
pub struct DeadLetters {
    path: PathBuf,
    file: Option<BufWriter<File>>,
    pub count: u64,
}

impl DeadLetters {
    pub fn new(path: &Path) -> Self {
        DeadLetters { path: path.to_path_buf(), file: None, count: 0 }
    }

    pub fn write(&mut self, origin: &Origin, reason: &str, raw: &[u8], bytes: u64) -> io::Result<()> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot open dead-letter file {}: {e}", self.path.display()))
            })?;
            self.file = Some(BufWriter::new(file));
        }
        let kept = &raw[..raw.len().min(RAW_BYTES)];
        let entry = Entry {
            pipeline: origin.pipeline,
            source: origin.source,
            partition: origin.partition,
            offset: origin.offset,
            line: origin.offset + 1,
            reason,
            bytes,
            raw: String::from_utf8_lossy(kept).into_owned(),
            truncated: (kept.len() as u64) < bytes,
        };
        let file = self.file.as_mut().expect("opened above");
        serde_json::to_writer(&mut *file, &entry).map_err(io::Error::other)?;
        file.write_all(b"\n")?;
        self.count += 1;
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}
