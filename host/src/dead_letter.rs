//! Dead letters: every line or message that could not become a record, with
//! where it was and why, appended as JSON lines to a file, or produced to a
//! dead-letter topic on the source's own broker. Nothing is dropped silently.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::source::{Position, Sink, SourceError};

/// Raw bytes kept per dead letter.
const RAW_BYTES: usize = 4096;

#[derive(Serialize)]
struct Entry<'a> {
    pipeline: &'a str,
    source: &'a str,
    partition: u32,
    /// 0-based line offset, or the broker's position.
    offset: &'a Position,
    /// 1-based line number, for people (files only).
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u64>,
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
    /// The broker's position; `None` for lines of a file.
    pub position: Option<Position>,
}

impl Origin<'_> {
    fn entry<'a>(&'a self, position: &'a Position, reason: &'a str, raw: &[u8], bytes: u64) -> Entry<'a> {
        let kept = &raw[..raw.len().min(RAW_BYTES)];
        Entry {
            pipeline: self.pipeline,
            source: self.source,
            partition: self.partition,
            offset: position,
            line: self.position.is_none().then_some(self.offset + 1),
            reason,
            bytes,
            raw: String::from_utf8_lossy(kept).into_owned(),
            truncated: (kept.len() as u64) < bytes,
        }
    }
}

/// Dead letters of a broker source, produced to a topic on the same broker.
pub struct DeadLetterTopic {
    pub sink: Box<dyn Sink>,
    pub count: u64,
}

impl DeadLetterTopic {
    pub fn write(&mut self, origin: &Origin, reason: &str, raw: &[u8], bytes: u64) -> Result<(), SourceError> {
        let position = origin.position.clone().unwrap_or(Position::Offset(origin.offset));
        let entry = origin.entry(&position, reason, raw, bytes);
        let json = serde_json::to_vec(&entry).map_err(|e| SourceError::Broker(e.to_string()))?;
        self.sink.send(&format!("{}/{}", origin.partition, position), &json)?;
        self.count += 1;
        Ok(())
    }
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
        let position = origin.position.clone().unwrap_or(Position::Offset(origin.offset));
        let entry = origin.entry(&position, reason, raw, bytes);
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
