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
    /// The bytes as text, when they are UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    raw: Option<String>,
    /// The bytes in base64 when they are not UTF-8, so none is lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_base64: Option<String>,
    /// Only the first 4 KiB are kept.
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
            raw: std::str::from_utf8(kept).ok().map(str::to_string),
            raw_base64: std::str::from_utf8(kept).is_err().then(|| base64(kept)),
            truncated: (kept.len() as u64) < bytes,
        }
    }
}

/// Standard base64 with padding.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() { ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
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
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot open dead-letter file {}: {e}", self.path.display())))?;
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

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(&[0x00, 0xff, 0xfe, 0x01]), "AP/+AQ==");
    }
}
