//! JSON-lines files and standard input.

#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::{self, Read};

use super::{Source, SourceContext, SourceError, SourceEvent, MAX_LINE_BYTES};

/// Bytes read per system call.
const READ_BLOCK: usize = 256 << 10;

pub struct LineReader {
    name: String,
    input: Box<dyn Read + Send>,
    /// A regular file has its data at hand: a block is read whole, into
    /// memory not zeroed first. A pipe is read as its data comes, never
    /// waiting to fill a block.
    whole_blocks: bool,
    max_line: usize,
}

impl LineReader {
    pub fn open(path: &str) -> io::Result<Self> {
        let file = File::open(path).map_err(|e| io::Error::new(e.kind(), format!("cannot open source {path}: {e}")))?;
        // A named pipe (or /dev/stdin) is read as a pipe.
        let whole_blocks = file.metadata().is_ok_and(|m| m.is_file());
        Ok(LineReader { name: path.to_string(), input: Box::new(file), whole_blocks, max_line: MAX_LINE_BYTES })
    }

    pub fn stdin() -> Self {
        LineReader { name: "stdin".into(), input: Box::new(io::stdin()), whole_blocks: false, max_line: MAX_LINE_BYTES }
    }

    #[cfg(test)]
    fn from_reader(input: impl Read + Send + 'static, whole_blocks: bool, max_line: usize) -> Self {
        LineReader { name: "test".into(), input: Box::new(input), whole_blocks, max_line }
    }

    /// Read up to a block onto the end of `pending`: how many bytes (0 at the end).
    fn read_block(&mut self, pending: &mut Vec<u8>) -> io::Result<usize> {
        if self.whole_blocks {
            pending.reserve(READ_BLOCK);
            return (&mut self.input).take(READ_BLOCK as u64).read_to_end(pending);
        }
        let filled = pending.len();
        pending.resize(filled + READ_BLOCK, 0);
        let read = loop {
            match self.input.read(&mut pending[filled..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        pending.truncate(filled + *read.as_ref().unwrap_or(&0));
        read
    }
}

impl Source for LineReader {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn run(mut self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let tx = &ctx.events;
        // Read straight into the block that will be sent; only the partial
        // last line is copied into the next one.
        let mut pending: Vec<u8> = Vec::new();
        let mut offset = 0u64;
        // Bytes of an oversized line seen so far, while skipping to its end.
        let mut skipping: Option<u64> = None;
        let send = |event: SourceEvent| tx.send(event).is_ok();
        loop {
            let n = self.read_block(&mut pending).map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", self.name)))?;
            if n == 0 {
                break;
            }
            if let Some(bytes) = skipping {
                match memchr::memchr(b'\n', &pending) {
                    None => {
                        skipping = Some(bytes + pending.len() as u64);
                        pending.clear();
                        continue;
                    }
                    Some(pos) => {
                        if !send(SourceEvent::Oversized { partition: 0, offset, bytes: bytes + pos as u64 }) {
                            return Ok(());
                        }
                        offset += 1;
                        skipping = None;
                        pending.drain(..=pos);
                    }
                }
            }
            if let Some(last) = memchr::memrchr(b'\n', &pending) {
                let tail = pending[last + 1..].to_vec();
                pending.truncate(last + 1);
                let lines = memchr::memchr_iter(b'\n', &pending).count() as u64;
                let block = std::mem::replace(&mut pending, tail);
                if !send(SourceEvent::Lines { partition: 0, first_offset: offset, data: block }) {
                    return Ok(());
                }
                offset += lines;
            }
            if pending.len() > self.max_line {
                skipping = Some(pending.len() as u64);
                pending.clear();
            }
        }
        if let Some(bytes) = skipping {
            send(SourceEvent::Oversized { partition: 0, offset, bytes });
        } else if !pending.is_empty() {
            pending.push(b'\n');
            send(SourceEvent::Lines { partition: 0, first_offset: offset, data: pending });
        }
        Ok(())
    }
}
